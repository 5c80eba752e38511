package match

import (
	"context"
	"errors"
	"strings"
	"testing"
)

func TestReadCSV_BadInputNamesLineAndColumn(t *testing.T) {
	long := strings.Repeat("x", 10*1024)
	for _, tc := range []struct {
		name, data, want string
	}{
		{"Empty", "", "line 1: no header"},
		{"NoTruthColumn", "id,given\n1,Ann\n", "line 1: the header has no truth column"},
		{"RepeatedColumn", "truth,given,given\na,b,c\n", "line 1, column 3: column given repeats column 2"},
		{"MissingField", "truth,given,family\na,Ann,Lee\nb,Bo\n", "line 3: a different number of fields than the header"},
		{"ExtraField", "truth,given\na,Ann\nb,Bo,Lee\n", "line 3: a different number of fields than the header"},
		{"UnterminatedQuote", "truth,given\na,\"Ann\n", "line 2, byte"},
		{"BareQuote", "truth,given\na,An\"n\n", "line 2, byte 5: bare \" in non-quoted-field"},
		{"NotUTF8", "truth,given,family\na,Ann,\xffLee\n", "line 2, column 3 (family): not valid UTF-8"},
		{"TenKilobyteName", "truth,given\na," + long + "\n", "line 2, column 2 (given): longer than 1024 bytes"},
		{"EmptyTruth", "given,truth\nAnn, \n", "line 2, column 2 (truth): required"},
		{"EmptyID", "id,truth\n,a\n", "line 2, column 1 (id): required when the file has an id column"},
		{"RepeatedID", "id,truth\n7,a\n7,b\n", "line 3, column 1 (id): same id as line 2"},
		{"ErrorAfterQuotedNewline", "truth,given\n\"a\",\"two\nlines\"\nb,\xff\n", "line 4, column 2 (given): not valid UTF-8"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ReadCSV(strings.NewReader(tc.data))
			if !errors.Is(err, ErrCSV) {
				t.Fatalf("ReadCSV error %v, want ErrCSV", err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q, want it to contain %q", err, tc.want)
			}
			for _, v := range []string{"Ann", "Lee", "Bo", long[:20]} {
				if strings.Contains(err.Error(), v) {
					t.Errorf("error %q holds the value %q", err, v)
				}
			}
		})
	}
}

func TestReadCSV_ReadsKnownColumnsAndIgnoresOthers(t *testing.T) {
	data := "\ufeffID, Truth ,given,family,birth_date,gender,postal_code,phone,address_line,city,state,email\n" +
		"r1,p1,\"Ellen Marie\",Vasquez-Whitford,1958-11-23,female,60614,773-555-0188,12 Elm Street,Chicago,Illinois,e@x\n" +
		"r2,p1,Elen,\"Vasquez\nWhitford\",18501123,F,60657,(773) 555-0188,,chicago,IL,\n" +
		"r3,p2,Ann,Lee,1961-02-30,,,,,,,\n"
	recs, err := ReadCSV(strings.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 3 {
		t.Fatalf("read %d records, want 3", len(recs))
	}
	r := recs[0]
	if r.ID != "r1" || r.Truth != "p1" || r.Line != 2 || r.Record.Family != "vasquez whitford" || r.Record.Street != "12 elm st" ||
		r.Record.State != "il" || r.Record.Phone != "+17735550188" || r.Record.Gender != "female" {
		t.Errorf("first record %+v", r)
	}
	if r := recs[1]; r.Line != 3 || r.Record.Family != "vasquez whitford" || r.Record.BirthYear != 1850 {
		t.Errorf("a quoted newline is a space and an 1850 birth date is kept: %+v", r)
	}
	if r := recs[2]; r.Line != 5 || r.Record.BirthMonth != 2 || r.Record.BirthDay != 30 {
		t.Errorf("an impossible date is kept as written: %+v", r)
	}
}

func TestEvaluate_CountsPairsAgainstTruth(t *testing.T) {
	data := "id,truth,given,family,birth_date,postal_code,phone\n" +
		"1,a,Ellen,Vasquez-Whitford,1958-11-23,60614,773-555-0188\n" +
		"2,a,Elen,Vasquez Whitford,1958-11-23,60657,(773) 555-0188\n" +
		"3,a,Ellen,Vasquez,1958-11-23,60614,773-555-0188\n" +
		"4,b,John,Murray,,,\n" +
		"5,c,John,Murray,,,\n" +
		"6,d,Mary,Smith,1970-01-01,02139,617-555-0100\n"
	recs, err := ReadCSV(strings.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	res, err := Evaluate(context.Background(), recs, nil, EvalOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if res.PairsTrue != 3 || res.PairsFound != 3 || res.PairsCorrect != 3 || res.Precision != 1 || res.Recall != 1 || res.F1 != 1 {
		t.Errorf("result %+v, want Ellen's 3 pairs found and John Murray's strangers apart", res)
	}
	// Linking the first three against the rest: pairs across only.
	res, err = Evaluate(context.Background(), recs[:2], recs[2:], EvalOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if res.PairsTrue != 2 || res.PairsCorrect != 2 || res.PairsFound != 2 {
		t.Errorf("link result %+v, want 2 true pairs across, both found", res)
	}
}
