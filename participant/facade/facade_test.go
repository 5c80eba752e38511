package facade

import (
	"errors"
	"net/http/httptest"
	"testing"
	"time"

	qhinv1 "github.com/openqhin/openqhin/proto/qhin/v1"
)

func TestDocumentFilter(t *testing.T) {
	day := func(s string) time.Time { t, _ := time.Parse("2006-01-02", s); return t }
	for _, c := range []struct {
		query        string
		since, until time.Time
		types        int
		none         bool
		err          string
	}{
		{query: "date=ge2020-01-01", since: day("2020-01-01")},
		{query: "date=gt2020-01", since: day("2020-02-01")},
		{query: "date=lt2021", until: day("2021-01-01")},
		{query: "date=le2020-12-31", until: day("2021-01-01")},
		{query: "date=2020-05-05", since: day("2020-05-05"), until: day("2020-05-06")},
		{query: "date=ge2020-01-01&date=lt2020-02-01", since: day("2020-01-01"), until: day("2020-02-01")},
		{query: "date=ge2021-01-01&date=lt2020-01-01", since: day("2021-01-01"), until: day("2020-01-01"), none: true},
		{query: "type=http://loinc.org|11506-3,18842-5", types: 2},
		{query: "type=http://snomed.info/sct|123", err: "LOINC"},
		{query: "category=clinical-note"},
		{query: "category=http://hl7.org/fhir/us/core/CodeSystem/us-core-documentreference-category|clinical-note"},
		{query: "category=imaging", none: true},
		{query: "date=sa2020-01-01", err: "prefix"},
		{query: "date=yesterday", err: "FHIR date"},
	} {
		t.Run(c.query, func(t *testing.T) {
			q, err := newSearch(httptest.NewRequest("GET", "/DocumentReference?"+c.query, nil), documentParams...)
			if err != nil {
				t.Fatal(err)
			}
			f, none, err := q.documentFilter()
			if c.err != "" {
				var p *problem
				if !errors.As(err, &p) || p.status != 400 || !containsText(p.msg, c.err) {
					t.Fatalf("err = %v, want a 400 saying %q", err, c.err)
				}
				return
			}
			if err != nil || !f.Since.Equal(c.since) || !f.Until.Equal(c.until) || len(f.TypeCodes) != c.types || none != c.none {
				t.Errorf("filter %+v none %v err %v; want since %v until %v types %d none %v", f, none, err, c.since, c.until, c.types, c.none)
			}
		})
	}
}

func containsText(s, sub string) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return true
		}
	}
	return false
}

func TestSearch_UnknownParametersIgnoredOrRefused(t *testing.T) {
	r := httptest.NewRequest("GET", "/Patient?family=Black&_elements=name&weird%3Cx%3E=1", nil)
	q, err := newSearch(r, patientParams...)
	if err != nil {
		t.Fatal(err)
	}
	q.get("family")
	if got := q.selfURL("https://h", "/Patient"); got != "https://h/Patient?family=Black" {
		t.Errorf("self link %q", got)
	}
	r.Header.Set("Prefer", "respond-async, handling=strict")
	_, err = newSearch(r, patientParams...)
	var p *problem
	if !errors.As(err, &p) || p.status != 400 {
		t.Fatalf("strict: %v", err)
	}
	if containsText(p.msg, "<x>") {
		t.Errorf("strict error echoes a parameter that is no name: %q", p.msg)
	}
	for _, v := range []string{"0", "1001", "x"} {
		q, _ := newSearch(httptest.NewRequest("GET", "/Patient?_count="+v, nil), patientParams...)
		if _, err := q.count(10); err == nil {
			t.Errorf("_count=%s accepted", v)
		}
	}
}

func TestHandles_ExpireBindAndEvict(t *testing.T) {
	hs := newHandles(time.Minute, 2)
	now := time.Unix(1000, 0)
	hs.now = func() time.Time { return now }
	a := hs.add(&handle{kind: kindPerson, owner: "T-TREAT\x00u1"})
	if _, p := hs.get(a.id, kindPerson, "T-TREAT\x00u1", "patient"); p != nil {
		t.Fatalf("own handle: %v", p)
	}
	if _, p := hs.get(a.id, kindPerson, "T-PYMNT\x00u1", "patient"); p == nil || p.status != 403 {
		t.Errorf("another purpose: %v, want 403", p)
	}
	if _, p := hs.get(a.id, kindDocument, "T-TREAT\x00u1", "Binary.id"); p == nil || p.status != 404 {
		t.Errorf("another kind: %v, want 404", p)
	}
	now = now.Add(2 * time.Minute)
	if _, p := hs.get(a.id, kindPerson, "T-TREAT\x00u1", "patient"); p == nil || p.status != 404 {
		t.Errorf("expired: %v, want 404", p)
	}
	b := hs.add(&handle{kind: kindPerson, owner: "o"})
	hs.add(&handle{kind: kindPerson, owner: "o"})
	hs.add(&handle{kind: kindPerson, owner: "o"})
	if _, p := hs.get(b.id, kindPerson, "o", "patient"); p == nil {
		t.Error("the oldest handle outlived the cap")
	}
	if len(a.id) != 32 || !validID(a.id) {
		t.Errorf("id %q is not a 32-character FHIR id", a.id)
	}
}

func validID(s string) bool {
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9') {
			return false
		}
	}
	return true
}

func TestCaller_Scopes(t *testing.T) {
	for _, c := range []struct {
		scopes []string
		typ    string
		write  bool
		want   bool
	}{
		{nil, "Patient", true, true},
		{[]string{}, "Patient", false, false},
		{[]string{"system/Patient.read"}, "Patient", false, true},
		{[]string{"system/Patient.read"}, "Patient", true, false},
		{[]string{"system/*.rs"}, "Binary", false, true},
		{[]string{"system/Patient.cud"}, "Patient", true, true},
		{[]string{"patient/Patient.read"}, "Patient", false, false},
		{[]string{"system/Binary.r"}, "Patient", false, false},
		{[]string{"user/*.*"}, "DocumentReference", true, true},
	} {
		cl := &caller{requester: &qhinv1.Requester{}, scopes: c.scopes}
		if got := cl.allows(c.typ, c.write); got != c.want {
			t.Errorf("scopes %v allow %s (write %v) = %v, want %v", c.scopes, c.typ, c.write, got, c.want)
		}
	}
}

func TestMatchRequest(t *testing.T) {
	for _, c := range []struct {
		body, err string
	}{
		{`{"resourceType":"Parameters","parameter":[{"name":"resource","resource":{"resourceType":"Patient","birthDate":"1959-10-02"}},{"name":"count","valueInteger":3}]}`, ""},
		{`{"resourceType":"Patient","gender":"female"}`, ""},
		{`{"resourceType":"Observation"}`, "must be a Parameters resource"},
		{`{"resourceType":"Parameters","parameter":[]}`, "resource: required"},
		{`{"resourceType":"Parameters","parameter":[{"name":"resource","resource":{"resourceType":"Patient"}},{"name":"count","valueInteger":0}]}`, "count: must be"},
		{`{"resourceType":"Parameters","parameter":[{"name":"resource","resource":{"resourceType":"Patient","gender":"f"}}]}`, "gender is not"},
		{`{"resourceType":`, "not valid JSON"},
	} {
		_, _, _, err := matchRequest([]byte(c.body))
		if (c.err == "") != (err == nil) || (err != nil && !containsText(err.Error(), c.err)) {
			t.Errorf("%s: %v, want %q", c.body, err, c.err)
		}
	}
}
