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
		{"HyphenSeparatesParts", "Mary-Jane", "Vasquez-Whitford", []string{"mary", "jane"}, "vasquez whitford"},
		{"DropsTitles", "Dr. John", "Murray", []string{"john"}, "murray"},
		{"DropsTitlesAndHonours", "Sir John", "Murray, Bt.", []string{"john"}, "murray"},
		{"DropsOrdinals", "Henry 1st", "Percy 9th", []string{"henry"}, "percy"},
		{"TitleAloneIsUnknown", "Sir", "Lord", nil, "lord"},
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
		{"JIM-BOB", "james"},       // the hyphen separates two names
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
	for nick, canon := range canonicalNames {
		if normalizeName(nick) != nick || normalizeName(canon) != canon {
			t.Errorf("entry %q → %q is not in normalized form", nick, canon)
		}
		if _, ok := canonicalNames[canon]; ok {
			t.Errorf("canonical name %q of %q is itself a nickname", canon, nick)
		}
	}
}

// TestNicknames_DocumentedTable checks pairs of data/nicknames.csv, read
// both ways, and names it does not pair.
func TestNicknames_DocumentedTable(t *testing.T) {
	if n := len(nicknameRelation); n < 1500 {
		t.Fatalf("nickname relation holds %d names, want the whole table (over 1500)", n)
	}
	for _, p := range [][2]string{
		{"bill", "william"}, {"william", "bill"}, {"peggy", "margaret"}, {"jack", "john"}, {"ted", "edward"},
		{"ted", "theodore"}, {"liz", "elizabeth"}, {"sally", "sarah"}, {"dick", "richard"}, {"hank", "henry"},
		{"pepe", "jose"}, {"gus", "augustus"}, {"polly", "mary"}, {"ellen", "helen"},
	} {
		if !isNickname(p[0], p[1]) {
			t.Errorf("isNickname(%q, %q) = false, want true", p[0], p[1])
		}
	}
	for _, p := range [][2]string{{"john", "mary"}, {"mark", "mary"}, {"robert", "robert"}, {"ellen", "elen"}} {
		if isNickname(p[0], p[1]) {
			t.Errorf("isNickname(%q, %q) = true, want false", p[0], p[1])
		}
	}
	for name, rel := range nicknameRelation {
		if normalizeName(name) != name {
			t.Errorf("name %q is not normalized", name)
		}
		for _, o := range rel {
			if !isNickname(o, name) {
				t.Errorf("relation is not symmetric: %q → %q", name, o)
			}
		}
	}
}

func TestNormalize_Phone(t *testing.T) {
	for _, tc := range []struct{ name, phone, want string }{
		{"NorthAmericanToE164", "(617) 555-0123", "+16175550123"},
		{"SameNumberWrittenOtherwise", "773-555-0188", "+17735550188"},
		{"KeepsCountryCode", "+1 617 555 0123", "+16175550123"},
		{"ElevenDigitsWithTrunkOne", "1-617-555-0123", "+16175550123"},
		{"International", "+44 20 7946 0958", "+442079460958"},
		{"InternationalWithTrunkZero", "+44 (0)20 7946 0958", "+442079460958"},
		{"NationalNumberOfAddressCountry", "020 7946 0958|GB", "+442079460958"},
		{"DropsExtension", "617.555.0123 ext. 45", "+16175550123"},
		{"DropsShortExtension", "6175550123x45", "+16175550123"},
		{"KeepsLocalNumber", "555-0123", "5550123"},
		{"TooFewDigitsIsUnknown", "12345", ""},
		{"TooManyDigitsIsUnknown", "1234567890123456", ""},
		{"IgnoresLettersBeforeDigits", "tel:+16175550123", "+16175550123"},
		{"EmptyIsUnknown", "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			phone, country, _ := strings.Cut(tc.phone, "|")
			d := &qhinv1.Demographics{Phone: phone, Address: &qhinv1.Address{Country: country}}
			got := Normalize(d).Phone
			if got != tc.want {
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
		{"LowercasesAndDropsSpaces", "SW1A 1AA", "sw1a1aa"},
		{"BoundsLength", "1234567890ABCDEF", "1234567890"},
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
		{"KeepsImpossibleDayAsWritten", "1981-02-29", 1981, 2, 29},
		{"KeepsMonth13AsWritten", "1980-13-01", 1980, 13, 1},
		{"KeepsDay0AsWritten", "1980-01-00", 1980, 1, 0},
		{"KeepsEarlyYears", "1850-03-12", 1850, 3, 12},
		{"ParsesSlashes", "1980/04/12", 1980, 4, 12},
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

func TestNormalize_Address(t *testing.T) {
	for _, tc := range []struct {
		name             string
		addr             *qhinv1.Address
		street, city, st string
	}{
		{"StreetSuffix", &qhinv1.Address{Lines: []string{"12 Elm Street"}}, "12 elm st", "", ""},
		{"AbbreviationKept", &qhinv1.Address{Lines: []string{"12 Elm St."}}, "12 elm st", "", ""},
		{"DirectionAndUnit", &qhinv1.Address{Lines: []string{"400 North Lake Shore Drive, Apartment 4B"}}, "400 n lake shore dr apt 4b", "", ""},
		{"Variants", &qhinv1.Address{Lines: []string{"7 Wallaby Av"}}, "7 wallaby ave", "", ""},
		{"OnlyFirstLine", &qhinv1.Address{Lines: []string{"1 Main St", "Unit 3"}}, "1 main st", "", ""},
		{"CitySaint", &qhinv1.Address{City: "St. Louis", State: "Missouri"}, "", "saint louis", "mo"},
		{"StateCode", &qhinv1.Address{City: "Chicago", State: "IL"}, "", "chicago", "il"},
		{"ForeignState", &qhinv1.Address{City: "Sydney", State: "NSW"}, "", "sydney", "nsw"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := Normalize(&qhinv1.Demographics{Address: tc.addr})
			if r.Street != tc.street || r.City != tc.city || r.State != tc.st {
				t.Errorf("street %q city %q state %q, want %q %q %q", r.Street, r.City, r.State, tc.street, tc.city, tc.st)
			}
		})
	}
}
