package main

import (
	"strings"
	"testing"
)

func TestPersonFlags_Check(t *testing.T) {
	person := personFlags{given: "Doris", family: "Black"}
	for _, tc := range []struct {
		name string
		p    personFlags
		c    consentFlags
		want string // a word of the error; "" for none
	}{
		{"by patient", personFlags{}, consentFlags{as: "p1", patient: "p1-1"}, ""},
		{"by demographics", person, consentFlags{}, ""},
		{"neither", personFlags{}, consentFlags{as: "p1"}, "--patient is required"},
		{"both: --patient", person, consentFlags{patient: "p1-1"}, "not both"},
		{"both: --as", person, consentFlags{as: "p1"}, "not both"},
		{"both: --participant", person, consentFlags{participant: "p2"}, "not both"},
	} {
		err := tc.p.check(&tc.c)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: %v, want none", tc.name, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s: %v, want an error saying %q", tc.name, err, tc.want)
		}
	}
}
