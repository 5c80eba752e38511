package match

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"

	qhinv1 "github.com/openqhin/openqhin/proto/qhin/v1"
)

// FuzzNormalize feeds arbitrary demographics to Validate and Normalize.
// Neither may panic; Validate's errors carry only fixed texts; a Record's
// fields are valid UTF-8 and bounded; normalizing a Record's own fields
// again changes nothing.
func FuzzNormalize(f *testing.F) {
	f.Add("José María", "Ordóñez", "1980-04-12", "male", "02139-4307", "+1 (617) 555-0123", "12 Elm Street", "St. Louis", "Missouri")
	f.Add("Bob", "O'Connell Jr.", "19800229", "F", "SW1A 1AA", "617.555.0123 x45", "", "", "")
	f.Add("  ", "-'", "1981-02-30", "unknown", "", "12", "Apt #4", "", "IL")
	f.Add("Ｊｏｈｎ", "Strauß-Ørsted", "0000-00-00", "other", "ab", "tel:5550123", "٣ شارع", "東京", "")
	f.Add("ß\u0301", "\xff\xfe", "2000-1-01", "", "\u00e9", "١٢٣٤٥٦٧", "\x00", "😀", "😀")
	f.Add("Sir John", "Murray, 1st Bt.", "1850/03/12", "m", "60614", "+44 (0)20 7946 0958", "400 North Lake Shore Drive", "Chicago", "il")
	f.Add(strings.Repeat("a", 10000), strings.Repeat("é-", 5000), "9999-99-99", "", strings.Repeat("9", 100), strings.Repeat("+1", 50), strings.Repeat("st ", 1000), "", "")
	f.Fuzz(func(t *testing.T, given, family, birth, gender, postal, phone, street, city, state string) {
		d := &qhinv1.Demographics{Given: given, Family: family, BirthDate: birth, Gender: gender, Phone: phone,
			Address: &qhinv1.Address{Lines: []string{street}, City: city, State: state, PostalCode: postal}}
		if err := validateAt(d, validNow); err != nil {
			var fe *FieldError
			if !errors.As(err, &fe) {
				t.Fatalf("Validate error %v is %T, want *FieldError", err, err)
			}
			if !knownReasons[fe.Reason] || !strings.HasPrefix(fe.Field, "demographics") ||
				err.Error() != fe.Field+": "+fe.Reason {
				t.Fatalf("Validate error %q is not made of fixed texts", err)
			}
		}
		r := Normalize(d)
		for _, g := range r.Given {
			if g == "" || g != normalizeName(g) || strings.Contains(g, " ") {
				t.Fatalf("given token %q is not normalized", g)
			}
		}
		for _, s := range []string{r.Family, r.PostalCode, r.Phone, r.Street, r.City, r.State, r.CanonicalFirstName()} {
			if !utf8.ValidString(s) || len(s) > maxNameBytes {
				t.Fatalf("normalized field %q is not valid UTF-8 or too long", s)
			}
		}
		if again := Normalize(wire(r)); !recordsEqual(again, r) {
			t.Fatalf("normalizing %+v again gave %+v", r, again)
		}
		_ = blockKeysOf(r)
		// Tokens are a function of the normalized record: normalizing
		// again changes none of them.
		toks := fuzzKey.Tokens(r)
		if len(toks) > MaxTokens || shared(toks, fuzzKey.Tokens(Normalize(wire(r)))) != len(toks) {
			t.Fatalf("tokens of %+v change when normalized again, or are too many", r)
		}
	})
}

var fuzzKey, _ = NewLinkageKey(make([]byte, MinLinkageKeyBytes))

// FuzzCompare compares arbitrary records with each other and with a fixed
// one. Comparing may not panic; it is symmetric; probabilities are in
// [0, 1]; a record with a name and a birth date matches itself.
func FuzzCompare(f *testing.F) {
	f.Add("Ellen Marie", "Vasquez-Whitford", "1958-11-23", "female", "60614", "773-555-0188", "12 Elm St", "Elen", "Vasquez Whitford", "1958-11-23", "60657", "(773) 555-0188")
	f.Add("", "", "", "", "", "", "", "John", "Murray", "", "", "")
	f.Add("a", "b", "1961-02-30", "x", "1", "1234567", "1", "b", "a", "1961-30-02", "2", "7654321")
	f.Add("李", "王", "19800101", "m", "", "", "", "李", "王", "19800101", "", "")
	other := Normalize(robert())
	f.Fuzz(func(t *testing.T, g1, f1, b1, s1, z1, p1, st1, g2, f2, b2, z2, p2 string) {
		a := Normalize(&qhinv1.Demographics{Given: g1, Family: f1, BirthDate: b1, Gender: s1, Phone: p1,
			Address: &qhinv1.Address{Lines: []string{st1}, PostalCode: z1}})
		b := Normalize(&qhinv1.Demographics{Given: g2, Family: f2, BirthDate: b2, Gender: s1, Phone: p2,
			Address: &qhinv1.Address{Lines: []string{st1}, PostalCode: z2}})
		m := DefaultModel()
		for _, pair := range [][2]Record{{a, b}, {a, other}, {a, a}} {
			x, y := m.Compare(pair[0], pair[1]), m.Compare(pair[1], pair[0])
			if x != y {
				t.Fatalf("not symmetric:\n%+v\n%+v", x, y)
			}
			if math.IsNaN(x.Probability) || x.Probability < 0 || x.Probability > 1 || x.Score() < 0 || x.Score() > 1 {
				t.Fatalf("probability %v score %v", x.Probability, x.Score())
			}
		}
		self := m.Compare(a, a)
		if len(a.Given) > 0 && a.Family != "" && a.HasBirthDate() && self.Levels[FieldBirthDate] == 0 && self.Decision != Match {
			t.Fatalf("a named record with a birth date does not match itself: %+v", self)
		}
	})
}

// FuzzReadCSV reads arbitrary bytes as an evaluation file. It may not
// panic; an error wraps ErrCSV, names a line, and holds no field of the
// input.
func FuzzReadCSV(f *testing.F) {
	f.Add([]byte("id,truth,given,family,birth_date\n1,a,Ellen,Vasquez,1958-11-23\n2,a,Elen,Vasquez,1958-11-23\n"))
	f.Add([]byte("truth,given\n\"a\",\"multi\nline\"\n"))
	f.Add([]byte("truth,given\na,\"unterminated\n"))
	f.Add([]byte("id,truth\n1,a\n1,b\n"))
	f.Add([]byte("given\nx\n"))
	f.Add([]byte("\ufefftruth,GIVEN , extra\na,b,c\nb,c\n"))
	f.Add([]byte("truth,given\na,\xff\xfe\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		recs, err := ReadCSV(bytes.NewReader(data))
		if err != nil {
			if !errors.Is(err, ErrCSV) {
				t.Fatalf("error %v does not wrap ErrCSV", err)
			}
			if !strings.Contains(err.Error(), "line ") && !strings.Contains(err.Error(), "bad evaluation file: ") {
				t.Fatalf("error %q names no line", err)
			}
			return
		}
		for _, r := range recs {
			if r.Truth == "" || r.ID == "" || r.Line < 2 {
				t.Fatalf("record %+v lacks truth, id or line", r)
			}
		}
	})
}

func blockKeysOf(r Record) []uint64 { return BlockingKeys(r, nil) }

// wire turns a Record back into wire demographics.
func wire(r Record) *qhinv1.Demographics {
	d := &qhinv1.Demographics{
		Given:   strings.Join(r.Given, " "),
		Family:  r.Family,
		Gender:  r.Gender,
		Phone:   r.Phone,
		Address: &qhinv1.Address{PostalCode: r.PostalCode, City: r.City, State: r.State},
	}
	if r.Street != "" {
		d.Address.Lines = []string{r.Street}
	}
	if r.HasBirthDate() {
		d.BirthDate = fmt.Sprintf("%04d%02d%02d", r.BirthYear, r.BirthMonth, r.BirthDay)
	}
	return d
}

func recordsEqual(a, b Record) bool {
	return slices.Equal(a.Given, b.Given) && a.Family == b.Family && a.BirthYear == b.BirthYear &&
		a.BirthMonth == b.BirthMonth && a.BirthDay == b.BirthDay && a.Gender == b.Gender &&
		a.PostalCode == b.PostalCode && a.Phone == b.Phone && a.Street == b.Street && a.City == b.City && a.State == b.State
}
