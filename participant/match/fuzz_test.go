package match

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"

	qhinv1 "github.com/openqhin/openqhin/proto/qhin/v1"
)

// FuzzNormalize feeds arbitrary demographics to Validate, Normalize and
// Score. None may panic; Validate's errors carry only fixed texts;
// normalizing a Record's own fields again changes nothing; a score is in
// [0, 1], symmetric, and 1 for a record against itself when it has enough
// fields to be matched at all.
func FuzzNormalize(f *testing.F) {
	f.Add("José María", "Ordóñez", "1980-04-12", "male", "02139-4307", "+1 (617) 555-0123")
	f.Add("Bob", "O'Connell Jr.", "19800229", "F", "SW1A 1AA", "617.555.0123 x45")
	f.Add("  ", "-'", "1981-02-29", "unknown", "", "12")
	f.Add("Ｊｏｈｎ", "Strauß-Ørsted", "0000-00-00", "other", "ab", "tel:5550123")
	f.Add("ß\u0301", "\xff\xfe", "2000-1-01", "", "\u00e9", "١٢٣٤٥٦٧")
	other := Normalize(robert())
	f.Fuzz(func(t *testing.T, given, family, birth, gender, postal, phone string) {
		d := &qhinv1.Demographics{Given: given, Family: family, BirthDate: birth, Gender: gender,
			Phone: phone, Address: &qhinv1.Address{PostalCode: postal}}

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
		if again := Normalize(wire(r)); !recordsEqual(again, r) {
			t.Fatalf("normalizing %+v again gave %+v", r, again)
		}
		for _, s := range []string{r.Family, r.PostalCode, r.Phone, r.CanonicalFirstName()} {
			if !utf8.ValidString(s) {
				t.Fatalf("normalized field %q is not valid UTF-8", s)
			}
		}

		self := Score(r, r)
		if r.matchable() && self != 1 {
			t.Fatalf("Score(r, r) = %v for %+v, want 1", self, r)
		}
		if self < 0 || self > 1 {
			t.Fatalf("Score(r, r) = %v", self)
		}
		s1, s2 := Score(r, other), Score(other, r)
		if s1 != s2 || s1 < 0 || s1 > 1 {
			t.Fatalf("Score(r, other) = %v, Score(other, r) = %v", s1, s2)
		}
		_ = blockKeys(r, nil)
	})
}

// matchable reports whether r has a name and fields of total weight at least
// minEvidence, which is what a record needs to score 1 against itself.
func (r Record) matchable() bool {
	w := 0.0
	if r.Family != "" {
		w += weightFamily
	}
	if len(r.Given) > 0 {
		w += weightGiven
	}
	if w == 0 {
		return false
	}
	if r.HasBirthDate() {
		w += weightBirthDate
	}
	if r.Gender != "" {
		w += weightGender
	}
	if r.PostalCode != "" {
		w += weightPostal
	}
	if r.Phone != "" {
		w += weightPhone
	}
	return w >= minEvidence
}

// wire turns a Record back into wire demographics.
func wire(r Record) *qhinv1.Demographics {
	d := &qhinv1.Demographics{
		Given:   strings.Join(r.Given, " "),
		Family:  r.Family,
		Gender:  r.Gender,
		Phone:   r.Phone,
		Address: &qhinv1.Address{PostalCode: r.PostalCode},
	}
	if r.HasBirthDate() {
		d.BirthDate = fmt.Sprintf("%04d-%02d-%02d", r.BirthYear, r.BirthMonth, r.BirthDay)
	}
	return d
}

func recordsEqual(a, b Record) bool {
	return slices.Equal(a.Given, b.Given) && a.Family == b.Family && a.BirthYear == b.BirthYear &&
		a.BirthMonth == b.BirthMonth && a.BirthDay == b.BirthDay && a.Gender == b.Gender &&
		a.PostalCode == b.PostalCode && a.Phone == b.Phone
}
