package match

import (
	"math"
	"testing"

	qhinv1 "github.com/openqhin/openqhin/proto/qhin/v1"
)

// robert is the person most Score tests compare against.
func robert() *qhinv1.Demographics {
	return demo("Robert James", "O'Connell", "1980-04-12", "male", "02139", "617-555-0123")
}

// with returns a copy of robert changed by edit.
func with(edit func(d *qhinv1.Demographics)) *qhinv1.Demographics {
	d := robert()
	edit(d)
	return d
}

func TestScore_SamePersonReachesThreshold(t *testing.T) {
	for _, tc := range []struct {
		name string
		a, b *qhinv1.Demographics
	}{
		{"Identical", robert(), robert()},
		{"TypoInFamilyName", robert(), with(func(d *qhinv1.Demographics) { d.Family = "O'Connel" })},
		{"TransposedLettersInFamilyName", robert(), with(func(d *qhinv1.Demographics) { d.Family = "OConnlel" })},
		{"Nickname", robert(), with(func(d *qhinv1.Demographics) { d.Given = "Bob" })},
		{"TypoInGivenName", robert(), with(func(d *qhinv1.Demographics) { d.Given = "Robret" })},
		{"MovedAddress", robert(), with(func(d *qhinv1.Demographics) { d.Address.PostalCode = "94110" })},
		{"MissingPhone", robert(), with(func(d *qhinv1.Demographics) { d.Phone = "" })},
		{"MissingAddress", robert(), with(func(d *qhinv1.Demographics) { d.Address = nil })},
		{"UnknownGender", robert(), with(func(d *qhinv1.Demographics) { d.Gender = "unknown" })},
		{"PhoneWrittenDifferently", robert(), with(func(d *qhinv1.Demographics) { d.Phone = "+1 (617) 555 0123" })},
		{"ZIPPlus4", robert(), with(func(d *qhinv1.Demographics) { d.Address.PostalCode = "02139-4307" })},
		{"BirthDayTypo", robert(), with(func(d *qhinv1.Demographics) { d.BirthDate = "1980-04-13" })},
		{"BirthYearTypo", robert(), with(func(d *qhinv1.Demographics) { d.BirthDate = "1990-04-12" })},
		{"BirthDigitsSwapped", robert(), with(func(d *qhinv1.Demographics) { d.BirthDate = "1980-04-21" })},
		{"BirthDayAndMonthSwapped", robert(), with(func(d *qhinv1.Demographics) { d.BirthDate = "1980-12-04" })},
		{"NamesSwapped", robert(), with(func(d *qhinv1.Demographics) { d.Given, d.Family = "O'Connell", "Robert" })},
		{"NoMiddleName", robert(), with(func(d *qhinv1.Demographics) { d.Given = "Robert" })},
		{"UppercaseWithoutPunctuation", robert(), with(func(d *qhinv1.Demographics) { d.Given, d.Family = "ROBERT", "OCONNELL" })},
		{"Diacritics",
			demo("Agustín", "Ordóñez", "1975-01-30", "male", "", ""),
			demo("AGUSTIN", "ORDONEZ", "1975-01-30", "male", "", "")},
		{"MiddleNameUsedAsFirstName",
			demo("José María", "García", "1975-01-30", "female", "02139", ""),
			demo("María", "García", "1975-01-30", "female", "02139", "")},
		{"OneOfTwoFamilyNames",
			demo("Lucía", "García López", "1975-01-30", "female", "02139", ""),
			demo("Lucia", "Garcia", "1975-01-30", "female", "02139", "")},
		{"NicknameVariantSpelling",
			demo("Katie", "Smith", "1990-07-01", "female", "", "555-0123"),
			demo("Catherine", "Smith", "1990-07-01", "female", "", "555-0123")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := checkScore(t, tc.a, tc.b)
			if s < DefaultThreshold {
				t.Errorf("Score = %.3f, want >= DefaultThreshold %.2f", s, DefaultThreshold)
			}
		})
	}
}

func TestScore_DifferentPeopleStayBelowThreshold(t *testing.T) {
	for _, tc := range []struct {
		name string
		a, b *qhinv1.Demographics
		max  float64 // the score must also be at most this
	}{
		{"ShareOnlyCommonFamilyName",
			demo("John", "Smith", "1980-04-12", "male", "02139", "617-555-0123"),
			demo("Mary", "Smith", "1955-11-03", "female", "73301", "512-555-0456"), 0.3},
		{"ShareFamilyNameAndBirthYear",
			demo("John", "Smith", "1980-04-12", "male", "02139", ""),
			demo("Peter", "Smith", "1980-09-25", "male", "73301", ""), DefaultThreshold},
		{"TwinsOfDifferentGender",
			demo("John", "O'Connell", "1980-04-12", "male", "02139", "617-555-0123"),
			demo("Mary", "O'Connell", "1980-04-12", "female", "02139", "617-555-0123"), DefaultThreshold},
		{"TwinsOfSameGender",
			demo("John", "O'Connell", "1980-04-12", "male", "02139", "617-555-0123"),
			demo("James", "O'Connell", "1980-04-12", "male", "02139", "617-555-0123"), DefaultThreshold},
		{"TwinsWithNamesOneLetterApart",
			demo("Mark", "O'Connell", "1980-04-12", "male", "02139", "617-555-0123"),
			demo("Mary", "O'Connell", "1980-04-12", "female", "02139", "617-555-0123"), DefaultThreshold},
		{"TwinsWithoutPhone",
			demo("John", "O'Connell", "1980-04-12", "male", "02139", ""),
			demo("Jacob", "O'Connell", "1980-04-12", "male", "02139", ""), DefaultThreshold},
		{"FatherAndSonOfSameName",
			demo("Robert", "O'Connell", "1955-04-12", "male", "02139", "617-555-0123"),
			demo("Robert", "O'Connell", "1980-09-30", "male", "02139", "617-555-0123"), farBirthCap},
		{"SameNameBornFarApart",
			demo("Maria", "Garcia", "1950-04-12", "female", "", ""),
			demo("Maria", "Garcia", "1981-04-12", "female", "", ""), farBirthCap},
		{"SameNameSameYearOtherwiseDifferent",
			demo("Maria", "Garcia", "1980-04-12", "female", "90001", "213-555-0100"),
			demo("Maria", "Garcia", "1980-08-30", "female", "10001", "212-555-0199"), DefaultThreshold},
		{"SameNameNothingElse",
			demo("Maria", "Garcia", "", "", "", ""),
			demo("Maria", "Garcia", "", "", "", ""), DefaultThreshold},
		{"SameBirthAndAddressNoName",
			demo("", "", "1980-04-12", "male", "02139", "617-555-0123"),
			demo("", "", "1980-04-12", "male", "02139", "617-555-0123"), 0},
		{"NothingKnown", &qhinv1.Demographics{}, &qhinv1.Demographics{}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := checkScore(t, tc.a, tc.b)
			if s >= DefaultThreshold {
				t.Errorf("Score = %.3f, want < DefaultThreshold %.2f", s, DefaultThreshold)
			}
			if s > tc.max {
				t.Errorf("Score = %.3f, want <= %.2f", s, tc.max)
			}
		})
	}
}

// checkScore scores a and b both ways and checks the properties every score
// has: in [0, 1], symmetric, equal to ScoreDemographics.
func checkScore(t *testing.T, a, b *qhinv1.Demographics) float64 {
	t.Helper()
	ra, rb := Normalize(a), Normalize(b)
	s := Score(ra, rb)
	if s < 0 || s > 1 || math.IsNaN(s) {
		t.Fatalf("Score = %v, want a number in [0, 1]", s)
	}
	if back := Score(rb, ra); back != s {
		t.Errorf("Score(a, b) = %v but Score(b, a) = %v", s, back)
	}
	if sd := ScoreDemographics(a, b); sd != s {
		t.Errorf("ScoreDemographics = %v, Score = %v", sd, s)
	}
	t.Logf("score %.3f", s)
	return s
}

func TestScore_IdenticalRecordsScoreOne(t *testing.T) {
	for _, d := range []*qhinv1.Demographics{
		robert(),
		demo("Ann", "Lee", "1990-01-01", "", "", ""),
		demo("Ann", "Lee", "", "", "02139", ""),
	} {
		r := Normalize(d)
		if s := Score(r, r); s != 1 {
			t.Errorf("Score(r, r) = %v for %+v, want 1", s, r)
		}
	}
}

func TestScore_BirthDateSimilarity(t *testing.T) {
	for _, tc := range []struct {
		name, a, b string
		want       float64
		typo       bool
	}{
		{"Exact", "1980-04-12", "1980-04-12", 1, false},
		{"OneDigitInDay", "1980-04-12", "1980-04-19", birthTypoSim, true},
		{"OneDigitInYear", "1980-04-12", "1970-04-12", birthTypoSim, true},
		{"AdjacentDigitsSwapped", "1980-04-12", "1908-04-12", birthTypoSim, true},
		{"DayAndMonthSwapped", "1980-04-12", "1980-12-04", birthTypoSim, true},
		{"SameYearAndMonth", "1980-04-12", "1980-04-28", birthYearMonthSim, false},
		{"SameYearOnly", "1980-04-12", "1980-09-28", 0, false},
		{"Different", "1980-04-12", "1955-09-28", 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := Normalize(&qhinv1.Demographics{BirthDate: tc.a})
			b := Normalize(&qhinv1.Demographics{BirthDate: tc.b})
			got, typo := birthSim(a, b)
			if got != tc.want || typo != tc.typo {
				t.Errorf("birthSim = %v, %v; want %v, %v", got, typo, tc.want, tc.typo)
			}
		})
	}
}

func TestThresholds_SamePersonIsStricter(t *testing.T) {
	if SamePersonThreshold < DefaultThreshold || SamePersonThreshold > 1 || DefaultThreshold <= farBirthCap {
		t.Errorf("DefaultThreshold %v, SamePersonThreshold %v, farBirthCap %v out of order",
			DefaultThreshold, SamePersonThreshold, farBirthCap)
	}
}
