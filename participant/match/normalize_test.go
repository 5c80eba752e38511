package match

import (
	"slices"
	"strings"
	"testing"

	qhinv1 "github.com/openqhin/openqhin/proto/qhin/v1"
)

// demo builds wire demographics for tests.
func demo(given, family, birth, gender, postal, phone string) *qhinv1.Demographics {
	d := &qhinv1.Demographics{Given: given, Family: family, BirthDate: birth, Gender: gender, Phone: phone}
	if postal != "" {
		d.Address = &qhinv1.Address{Lines: []string{"1 Main St"}, City: "Boston", State: "MA", PostalCode: postal}
	}
	return d
}

func TestNormalize_Names(t *testing.T) {
	for _, tc := range []struct {
		name, given, family string
		wantGiven           []string
		wantFamily          string
	}{
		{"StripsDiacritics", "Agustín", "Ordóñez", []string{"agustin"}, "ordonez"},
		{"SplitsGivenNamesIntoTokens", "  José   María ", "García López", []string{"jose", "maria"}, "garcia lopez"},
		{"RemovesApostrophes", "D'Angelo", "O'Connell", []string{"dangelo"}, "oconnell"},
		{"RemovesTypographicApostrophes", "Ma’ria", "O’Brien", []string{"maria"}, "obrien"},
		{"RemovesHyphensInsideNames", "Mary-Jane", "Smith-Jones", []string{"maryjane"}, "smithjones"},
		{"Lowercases", "JOHN", "MacDONALD", []string{"john"}, "macdonald"},
		{"FoldsLettersWithoutDecomposition", "Søren", "Strauß", []string{"soren"}, "strauss"},
		{"FoldsPolishL", "Łukasz", "Wałęsa", []string{"lukasz"}, "walesa"},
		{"FoldsFullWidthLetters", "Ｊｏｈｎ", "ＳＭＩＴＨ", []string{"john"}, "smith"},
		{"PunctuationSeparatesTokens", "J.R.", "St. John", []string{"j", "r"}, "st john"},
		{"DropsGenerationalSuffix", "Martin", "Luther King Jr.", []string{"martin"}, "luther king"},
		{"KeepsSuffixAlone", "Ann", "Sr", []string{"ann"}, "sr"},
		{"KeepsNonLatinLetters", "Ольга", "李", []string{"ольга"}, "李"},
		{"EmptyIsUnknown", " ", "'-", nil, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := Normalize(&qhinv1.Demographics{Given: tc.given, Family: tc.family})
			if !slices.Equal(r.Given, tc.wantGiven) {
				t.Errorf("Given = %q, want %q", r.Given, tc.wantGiven)
			}
			if r.Family != tc.wantFamily {
				t.Errorf("Family = %q, want %q", r.Family, tc.wantFamily)
			}
		})
	}
}

func TestNormalize_BoundsNameLength(t *testing.T) {
	long := strings.Repeat("ab ", 10000) + strings.Repeat("é", 10000)
	r := Normalize(&qhinv1.Demographics{Given: long, Family: long})
	if n := len(r.Family); n > maxNameBytes || n < maxNameBytes-3 {
		t.Errorf("len(Family) = %d, want at most %d and close to it", n, maxNameBytes)
	}
	if n := len(strings.Join(r.Given, " ")); n > maxNameBytes {
		t.Errorf("given names hold %d bytes, want at most %d", n, maxNameBytes)
	}
	if strings.HasSuffix(r.Family, " ") || normalizeName(r.Family) != r.Family {
		t.Errorf("truncated name %q is not normalized", r.Family)
	}
}

func TestNormalize_NicknamesResolveToCanonicalName(t *testing.T) {
	for _, tc := range []struct{ given, want string }{
		{"Bob", "robert"}, {"Robbie", "robert"}, {"Robert", "robert"},
		{"Bill", "william"}, {"Billy", "william"}, {"Will", "william"},
		{"Liz", "elizabeth"}, {"Betty", "elizabeth"}, {"Eliza", "elizabeth"},
		{"Jimmy", "james"}, {"Mike", "michael"}, {"Katie", "katherine"}, {"Catherine", "katherine"},
		{"Tom", "thomas"}, {"Rick", "richard"}, {"Peggy", "margaret"}, {"Susie", "susan"},
		{"Joe", "joseph"}, {"Tony", "anthony"}, {"Chris", "christopher"}, {"Danny", "daniel"},
		{"Dave", "david"}, {"Jenny", "jennifer"}, {"Pepe", "jose"},
		{"Bob Lee", "robert"},      // only the first given name
		{"Agustín", "agustin"},     // not a nickname: itself
		{"", ""},                   // unknown
		{"Ｂｏｂ", "robert"},          // normalized before the lookup
		{"María José", "maria"},    // not a nickname
		{"JIM-BOB", "jimbob"},      // one name once the hyphen is gone
		{"  katie  ", "katherine"}, // spaces
	} {
		t.Run(tc.given, func(t *testing.T) {
			r := Normalize(&qhinv1.Demographics{Given: tc.given})
			if got := r.CanonicalFirstName(); got != tc.want {
				t.Errorf("CanonicalFirstName() = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestNormalize_NicknameTableIsNormalized(t *testing.T) {
	for nick, canon := range nicknames {
		if normalizeName(nick) != nick || normalizeName(canon) != canon {
			t.Errorf("entry %q → %q is not in normalized form", nick, canon)
		}
		if _, ok := nicknames[canon]; ok {
			t.Errorf("canonical name %q of %q is itself a nickname", canon, nick)
		}
	}
}

func TestNormalize_Phone(t *testing.T) {
	for _, tc := range []struct{ name, phone, want string }{
		{"KeepsTenDigits", "(617) 555-0123", "6175550123"},
		{"DropsCountryCode", "+1 617 555 0123", "6175550123"},
		{"KeepsLastTenOfInternational", "+44 20 7946 0958", "2079460958"},
		{"DropsExtension", "617.555.0123 ext. 45", "6175550123"},
		{"DropsShortExtension", "6175550123x45", "6175550123"},
		{"KeepsLocalNumber", "555-0123", "5550123"},
		{"TooFewDigitsIsUnknown", "12345", ""},
		{"IgnoresLettersBeforeDigits", "tel:+16175550123", "6175550123"},
		{"EmptyIsUnknown", "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Normalize(&qhinv1.Demographics{Phone: tc.phone}).Phone; got != tc.want {
				t.Errorf("Phone = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestNormalize_PostalCode(t *testing.T) {
	for _, tc := range []struct{ name, postal, want string }{
		{"KeepsZIP", "02139", "02139"},
		{"TruncatesZIPPlus4", "02139-4307", "02139"},
		{"TruncatesNineDigits", "021394307", "02139"},
		{"KeepsShortCode", "4011", "4011"},
		{"LowercasesAndDropsSpaces", "SW1A 1AA", "sw1a1"},
		{"TrimsSpaces", " 02139 ", "02139"},
		{"EmptyIsUnknown", "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := &qhinv1.Demographics{Address: &qhinv1.Address{PostalCode: tc.postal}}
			if got := Normalize(d).PostalCode; got != tc.want {
				t.Errorf("PostalCode = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestNormalize_BirthDate(t *testing.T) {
	for _, tc := range []struct {
		name, birth string
		y, m, d     int
	}{
		{"ParsesWireForm", "1980-04-12", 1980, 4, 12},
		{"ParsesCompactForm", "19800412", 1980, 4, 12},
		{"AcceptsLeapDay", "1980-02-29", 1980, 2, 29},
		{"RejectsNonLeapDay", "1981-02-29", 0, 0, 0},
		{"RejectsMonth13", "1980-13-01", 0, 0, 0},
		{"RejectsDay0", "1980-01-00", 0, 0, 0},
		{"RejectsUnpaddedFields", "1980-4-12", 0, 0, 0},
		{"RejectsOtherFormats", "04/12/1980", 0, 0, 0},
		{"RejectsYear0", "0000-01-01", 0, 0, 0},
		{"EmptyIsUnknown", "", 0, 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := Normalize(&qhinv1.Demographics{BirthDate: tc.birth})
			if r.BirthYear != tc.y || r.BirthMonth != tc.m || r.BirthDay != tc.d {
				t.Errorf("birth = %d-%d-%d, want %d-%d-%d", r.BirthYear, r.BirthMonth, r.BirthDay, tc.y, tc.m, tc.d)
			}
			if r.HasBirthDate() != (tc.y != 0) {
				t.Errorf("HasBirthDate() = %v", r.HasBirthDate())
			}
		})
	}
}

func TestNormalize_Gender(t *testing.T) {
	for _, tc := range []struct{ gender, want string }{
		{"male", "male"}, {"Female", "female"}, {"other", "other"}, {"F", "female"},
		{"unknown", ""}, {"", ""}, {"x", ""},
	} {
		if got := Normalize(&qhinv1.Demographics{Gender: tc.gender}).Gender; got != tc.want {
			t.Errorf("gender %q: got %q, want %q", tc.gender, got, tc.want)
		}
	}
}

func TestNormalize_NilIsZeroRecord(t *testing.T) {
	r := Normalize(nil)
	if r.Given != nil || r.Family != "" || r.HasBirthDate() || r.Gender != "" || r.PostalCode != "" || r.Phone != "" {
		t.Errorf("Normalize(nil) = %+v, want zero Record", r)
	}
}
