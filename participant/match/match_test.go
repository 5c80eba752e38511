package match

import (
	"math"
	"strings"
	"testing"

	qhinv1 "github.com/openqhin/openqhin/proto/qhin/v1"
)

// robert is the person most comparison tests compare against.
func robert() *qhinv1.Demographics {
	return demo("Robert James", "O'Connell", "1980-04-12", "male", "02139", "617-555-0123")
}

// with returns a copy of robert changed by edit.
func with(edit func(d *qhinv1.Demographics)) *qhinv1.Demographics {
	d := robert()
	edit(d)
	return d
}

// ellenP1 and ellenP2 are one woman's registrations at two members: a typo
// in her given name, a hyphen in her family name at one of them, a move and
// her phone written differently.
func ellenP1() *qhinv1.Demographics {
	return &qhinv1.Demographics{Given: "Ellen Marie", Family: "Vasquez-Whitford", BirthDate: "1958-11-23", Gender: "female",
		Phone: "773-555-0188", Address: &qhinv1.Address{Lines: []string{"12 Elm St"}, City: "Chicago", State: "IL", PostalCode: "60614"}}
}

func ellenP2() *qhinv1.Demographics {
	return &qhinv1.Demographics{Given: "Elen", Family: "Vasquez Whitford", BirthDate: "1958-11-23", Gender: "female",
		Phone: "(773) 555-0188", Address: &qhinv1.Address{City: "Chicago", State: "IL", PostalCode: "60657"}}
}

// compareBoth compares a and b both ways under the default model and checks
// what every comparison must satisfy: symmetric, a probability in [0, 1]
// that agrees with the weight, a Score of 0 unless a field beyond the names
// agreed.
func compareBoth(t *testing.T, a, b *qhinv1.Demographics) Pair {
	t.Helper()
	ra, rb := Normalize(a), Normalize(b)
	p, q := DefaultModel().Compare(ra, rb), DefaultModel().Compare(rb, ra)
	if p != q {
		t.Fatalf("not symmetric:\n%+v\n%+v", p, q)
	}
	if p.Probability < 0 || p.Probability > 1 || math.IsNaN(p.Probability) {
		t.Fatalf("probability %v", p.Probability)
	}
	if math.Abs(p.Probability-1/(1+math.Exp2(-p.Weight))) > 1e-12 {
		t.Fatalf("probability %v does not follow from weight %v", p.Probability, p.Weight)
	}
	if !p.Identified && (p.Score() != 0 || p.Decision != NonMatch) {
		t.Fatalf("a pair agreeing on names only scores %v, decision %v", p.Score(), p.Decision)
	}
	if Score(ra, rb) != p.Score() || SamePerson(ra, rb) != (p.Decision == Match) {
		t.Fatalf("Score and SamePerson disagree with Compare")
	}
	return p
}

func explain(p Pair) string {
	s := ""
	for f := range NumFields {
		if l := p.Levels[f]; l != Missing {
			s += " " + f.String() + "=" + Levels(f)[l]
		}
	}
	return s
}

func TestCompare_SamePersonIsAMatch(t *testing.T) {
	for _, tc := range []struct {
		name string
		a, b *qhinv1.Demographics
	}{
		{"Identical", robert(), robert()},
		{"EllenMarieVasquezWhitford", ellenP1(), ellenP2()},
		{"MarriedNameWithEverythingElseAgreeing",
			demo("Maria Elena", "Garcia", "1975-01-30", "female", "02139", "617-555-0199"),
			demo("Maria Elena", "Whitaker", "1975-01-30", "female", "02139", "617-555-0199")},
		{"TypoInFamilyName", robert(), with(func(d *qhinv1.Demographics) { d.Family = "O'Connel" })},
		{"TransposedLettersInFamilyName", robert(), with(func(d *qhinv1.Demographics) { d.Family = "OConnlel" })},
		{"Nickname", robert(), with(func(d *qhinv1.Demographics) { d.Given = "Bob" })},
		{"NicknameFromTheTable", robert(), with(func(d *qhinv1.Demographics) { d.Given = "Hob" })},
		{"TypoInGivenName", robert(), with(func(d *qhinv1.Demographics) { d.Given = "Robret" })},
		{"OneEditInShortGivenName",
			demo("Amy", "Okafor", "1990-07-01", "female", "60614", "773-555-0101"),
			demo("Ami", "Okafor", "1990-07-01", "female", "60614", "773-555-0101")},
		{"UnknownNicknameButEverythingElseAgrees", robert(), with(func(d *qhinv1.Demographics) { d.Given = "Skip" })},
		{"BirthDateTwoDigitsOffButEverythingElseAgrees", robert(), with(func(d *qhinv1.Demographics) { d.BirthDate = "1980-07-19" })},
		{"MovedAddress", robert(), with(func(d *qhinv1.Demographics) { d.Address.PostalCode = "94110"; d.Address.Lines = []string{"9 Oak Ave"} })},
		{"MovedAndNoPhone", robert(), with(func(d *qhinv1.Demographics) { d.Address.PostalCode = "94110"; d.Phone = "" })},
		{"MissingPhone", robert(), with(func(d *qhinv1.Demographics) { d.Phone = "" })},
		{"MissingAddress", robert(), with(func(d *qhinv1.Demographics) { d.Address = nil })},
		{"UnknownGender", robert(), with(func(d *qhinv1.Demographics) { d.Gender = "unknown" })},
		{"PhoneWrittenDifferently", robert(), with(func(d *qhinv1.Demographics) { d.Phone = "+1 (617) 555 0123" })},
		{"ZIPPlus4", robert(), with(func(d *qhinv1.Demographics) { d.Address.PostalCode = "02139-4307" })},
		{"PostalCodeDigitsTransposed", robert(), with(func(d *qhinv1.Demographics) { d.Address.PostalCode = "02193" })},
		{"BirthDayTypo", robert(), with(func(d *qhinv1.Demographics) { d.BirthDate = "1980-04-13" })},
		{"BirthYearTypo", robert(), with(func(d *qhinv1.Demographics) { d.BirthDate = "1990-04-12" })},
		{"BirthDigitsSwapped", robert(), with(func(d *qhinv1.Demographics) { d.BirthDate = "1980-04-21" })},
		{"BirthDayAndMonthSwapped", robert(), with(func(d *qhinv1.Demographics) { d.BirthDate = "1980-12-04" })},
		{"NamesSwapped", robert(), with(func(d *qhinv1.Demographics) { d.Given, d.Family = "O'Connell", "Robert" })},
		{"NoMiddleName", robert(), with(func(d *qhinv1.Demographics) { d.Given = "Robert" })},
		{"UppercaseWithoutPunctuation", robert(), with(func(d *qhinv1.Demographics) { d.Given, d.Family = "ROBERT", "OCONNELL" })},
		{"TitlesAndSuffixes", robert(), with(func(d *qhinv1.Demographics) { d.Given, d.Family = "Mr. Robert James", "O'Connell Jr." })},
		{"BornBefore1900",
			demo("Hannah", "Whitcombe", "1852-03-12", "female", "02139", "617-555-0177"),
			demo("Hanna", "Whitcombe", "1852-03-12", "female", "02139", "617-555-0177")},
		{"Diacritics",
			demo("Agustín", "Ordóñez", "1975-01-30", "male", "02139", ""),
			demo("AGUSTIN", "ORDONEZ", "1975-01-30", "male", "02139", "")},
		{"OneOfTwoFamilyNames",
			demo("Lucía", "García López", "1975-01-30", "female", "02139", "617-555-0142"),
			demo("Lucia", "Garcia", "1975-01-30", "female", "02139", "617-555-0142")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := compareBoth(t, tc.a, tc.b)
			if p.Decision != Match {
				t.Errorf("decision %v (probability %.4f, weight %.1f):%s, want match", p.Decision, p.Probability, p.Weight, explain(p))
			}
		})
	}
}

func TestCompare_DifferentPeopleAreNotMatches(t *testing.T) {
	for _, tc := range []struct {
		name string
		a, b *qhinv1.Demographics
	}{
		// A bare common name with a gender is no evidence, however
		// alike: "John Murray" links nobody on its own.
		{"BareCommonNameAndGender",
			&qhinv1.Demographics{Given: "John", Family: "Murray", Gender: "male"},
			&qhinv1.Demographics{Given: "John", Family: "Murray", Gender: "male"}},
		{"BareNameWithTitleWords",
			&qhinv1.Demographics{Given: "Sir John", Family: "Murray, 1st Bt.", Gender: "male"},
			&qhinv1.Demographics{Given: "John", Family: "Murray", Gender: "male"}},
		{"BareRareName",
			&qhinv1.Demographics{Given: "Zebulon", Family: "Quigley-Arbuthnot"},
			&qhinv1.Demographics{Given: "Zebulon", Family: "Quigley-Arbuthnot"}},
		{"ShareOnlyCommonFamilyName",
			demo("John", "Smith", "1980-04-12", "male", "02139", "617-555-0123"),
			demo("Mary", "Smith", "1955-11-03", "female", "73301", "512-555-0456")},
		{"ShareFamilyNameAndBirthYear",
			demo("John", "Smith", "1980-04-12", "male", "02139", ""),
			demo("Peter", "Smith", "1980-09-25", "male", "73301", "")},
		{"TwinsOfDifferentGenderLivingApart",
			demo("John", "O'Connell", "1980-04-12", "male", "02139", "617-555-0123"),
			demo("Mary", "O'Connell", "1980-04-12", "female", "94110", "415-555-0456")},
		{"SameNameBornFarApart",
			demo("Maria", "Garcia", "1950-04-12", "female", "", ""),
			demo("Maria", "Garcia", "1981-04-12", "female", "", "")},
		{"SameNameSameYearOtherwiseDifferent",
			demo("Maria", "Garcia", "1980-04-12", "female", "90001", "213-555-0100"),
			demo("Maria", "Garcia", "1980-08-30", "female", "10001", "212-555-0199")},
		{"SameBirthAndAddressNoName",
			demo("", "", "1980-04-12", "male", "02139", "617-555-0123"),
			demo("Ann", "Lee", "1980-04-12", "female", "02139", "617-555-0123")},
		{"NothingKnown", &qhinv1.Demographics{}, &qhinv1.Demographics{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := compareBoth(t, tc.a, tc.b)
			if p.Decision == Match {
				t.Errorf("decision match (probability %.4f, weight %.1f):%s", p.Probability, p.Weight, explain(p))
			}
		})
	}
}

// TestCompare_GenderIsNoEvidence checks that agreeing on gender adds
// nothing and disagreeing subtracts.
func TestCompare_GenderIsNoEvidence(t *testing.T) {
	same := DefaultModel().Compare(Normalize(robert()), Normalize(robert()))
	noGender := DefaultModel().Compare(Normalize(robert()), Normalize(with(func(d *qhinv1.Demographics) { d.Gender = "" })))
	other := DefaultModel().Compare(Normalize(robert()), Normalize(with(func(d *qhinv1.Demographics) { d.Gender = "female" })))
	if same.Weights[FieldGender] != 0 || same.Weight != noGender.Weight {
		t.Errorf("agreeing gender weighs %v (total %v vs %v without gender), want 0", same.Weights[FieldGender], same.Weight, noGender.Weight)
	}
	if other.Weights[FieldGender] >= 0 {
		t.Errorf("disagreeing gender weighs %v, want < 0", other.Weights[FieldGender])
	}
}

// TestCompare_OneReplacedFieldCostsBoundedWeight checks that a field
// replaced wholesale costs at most log2(0.01) bits, whatever training saw.
func TestCompare_OneReplacedFieldCostsBoundedWeight(t *testing.T) {
	m := DefaultModel()
	for f := range NumFields {
		last := Level(len(Levels(f)) - 1)
		if w := m.Weight(f, last); w < math.Log2(minDifferentM)-1e-9 {
			t.Errorf("%s different weighs %.2f bits, want >= %.2f", f, w, math.Log2(minDifferentM))
		}
	}
}

func TestCompare_TermFrequencyWeighsCommonNamesLess(t *testing.T) {
	var tf TermFrequencies
	for range 3000 {
		tf.Add(Normalize(demo("John", "Smith", "1970-01-01", "male", "", "")))
	}
	for range 7000 {
		tf.Add(Normalize(demo("Zebulon", "Quigley", "1970-01-01", "male", "", "")))
		tf.Add(Normalize(demo("Other", "Person", "1971-01-01", "male", "", "")))
	}
	tf.Add(Normalize(demo("Ezekiel", "Farquharson", "1970-01-01", "male", "", "")))
	cmp := func(given, family string) Pair {
		a := prepare(Normalize(demo(given, family, "1970-01-01", "male", "", "")))
		b := a
		return DefaultModel().compare(&a, &b, &tf)
	}
	common, rare := cmp("John", "Smith"), cmp("Ezekiel", "Farquharson")
	if common.Weights[FieldFamily] >= rare.Weights[FieldFamily] || common.Weights[FieldGiven] >= rare.Weights[FieldGiven] {
		t.Errorf("common name weighs given %.1f family %.1f, rare %.1f %.1f: want common < rare",
			common.Weights[FieldGiven], common.Weights[FieldFamily], rare.Weights[FieldGiven], rare.Weights[FieldFamily])
	}
	// A small index keeps the model's average weights.
	var small TermFrequencies
	small.Add(Normalize(demo("John", "Smith", "1970-01-01", "male", "", "")))
	a := prepare(Normalize(demo("John", "Smith", "1970-01-01", "male", "", "")))
	p, base := DefaultModel().compare(&a, &a, &small), DefaultModel().compare(&a, &a, nil)
	if d := math.Abs(p.Weights[FieldFamily] - base.Weights[FieldFamily]); d > 1 {
		t.Errorf("a one-record index moves the family weight by %.2f bits, want under 1", d)
	}
}

func TestLevels(t *testing.T) {
	lv := func(a, b *qhinv1.Demographics, f Field) string {
		pa, pb := prepare(Normalize(a)), prepare(Normalize(b))
		l := levels(&pa, &pb)[f]
		if l == Missing {
			return "missing"
		}
		return Levels(f)[l]
	}
	g := func(given string) *qhinv1.Demographics { return &qhinv1.Demographics{Given: given} }
	fam := func(family string) *qhinv1.Demographics { return &qhinv1.Demographics{Family: family} }
	dob := func(s string) *qhinv1.Demographics { return &qhinv1.Demographics{BirthDate: s} }
	zip := func(s string) *qhinv1.Demographics {
		return &qhinv1.Demographics{Address: &qhinv1.Address{PostalCode: s}}
	}
	ph := func(s string) *qhinv1.Demographics { return &qhinv1.Demographics{Phone: s} }
	st := func(s string) *qhinv1.Demographics {
		return &qhinv1.Demographics{Address: &qhinv1.Address{Lines: []string{s}}}
	}
	for _, tc := range []struct {
		name string
		a, b *qhinv1.Demographics
		f    Field
		want string
	}{
		{"GivenExact", g("Ellen"), g("ELLEN"), FieldGiven, "exact"},
		{"GivenJoinedEqual", g("Mary Ann"), g("Maryann"), FieldGiven, "exact"},
		{"GivenNickname", g("Peggy"), g("Margaret"), FieldGiven, "nickname"},
		{"GivenShortTypo", g("Amy"), g("Ami"), FieldGiven, "typo"},
		{"GivenOneLetterDropped", g("Ellen"), g("Elen"), FieldGiven, "typo"},
		{"GivenMiddleAsFirst", g("Jose Maria"), g("Maria"), FieldGiven, "close"},
		{"GivenPhonetic", g("Philip"), g("Filip"), FieldGiven, "phonetic"},
		{"GivenInitial", g("J"), g("John"), FieldGiven, "initial"},
		{"GivenDifferent", g("John"), g("Mary"), FieldGiven, "different"},
		{"GivenMissing", g(""), g("Mary"), FieldGiven, "missing"},
		{"FamilyHyphenSpaceJoined", fam("Vasquez-Whitford"), fam("VasquezWhitford"), FieldFamily, "exact"},
		{"FamilyTypo", fam("Whitford"), fam("Whitfrod"), FieldFamily, "typo"},
		{"FamilyPart", fam("Vasquez-Whitford"), fam("Whitford"), FieldFamily, "part"},
		{"FamilyDifferent", fam("Garcia"), fam("Whitaker"), FieldFamily, "different"},
		{"BirthExact", dob("1958-11-23"), dob("19581123"), FieldBirthDate, "exact"},
		{"BirthOneDigit", dob("1958-11-23"), dob("1958-11-28"), FieldBirthDate, "typo"},
		{"BirthAdjacentSwap", dob("1958-11-23"), dob("1985-11-23"), FieldBirthDate, "typo"},
		{"BirthDayMonthSwap", dob("1958-11-03"), dob("1958-03-11"), FieldBirthDate, "typo"},
		{"BirthWithinYear", dob("1958-11-23"), dob("1959-02-01"), FieldBirthDate, "within_1y"},
		{"BirthWithinDecade", dob("1958-11-23"), dob("1964-02-01"), FieldBirthDate, "within_10y"},
		{"BirthFar", dob("1958-11-23"), dob("1985-02-01"), FieldBirthDate, "different"},
		{"BirthBefore1900", dob("1852-03-12"), dob("1852-03-12"), FieldBirthDate, "exact"},
		{"BirthImpossibleDateStillComparesByDigits", dob("1961-02-30"), dob("1961-02-20"), FieldBirthDate, "typo"},
		{"PostalExact", zip("60614"), zip("60614-1234"), FieldPostalCode, "exact"},
		{"PostalTransposed", zip("60614"), zip("60641"), FieldPostalCode, "typo"},
		{"PostalDistrict", zip("60614"), zip("60657"), FieldPostalCode, "district"},
		{"PostalDifferent", zip("60614"), zip("94110"), FieldPostalCode, "different"},
		{"PhoneExact", ph("773-555-0188"), ph("(773) 555-0188"), FieldPhone, "exact"},
		{"PhoneLocal", ph("773-555-0188"), ph("555-0188"), FieldPhone, "local"},
		{"PhoneTypo", ph("773-555-0188"), ph("773-555-0189"), FieldPhone, "typo"},
		{"PhoneAreaTypo", ph("773-555-0188"), ph("774-555-0188"), FieldPhone, "local"},
		{"PhoneDigitTypo", ph("773-555-0188"), ph("773-545-0188"), FieldPhone, "typo"},
		{"StreetAbbreviated", st("12 Elm Street"), st("12 ELM ST."), FieldStreet, "exact"},
		{"StreetGlued", st("15 Balfour Crescent"), st("15 balfourcrescent"), FieldStreet, "close"},
		{"StreetOtherNumber", st("8 Sturt Avenue"), st("50 Sturt Ave"), FieldStreet, "similar"},
		{"StreetDifferent", st("8 Sturt Avenue"), st("12 Elm St"), FieldStreet, "different"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := lv(tc.a, tc.b, tc.f); got != tc.want {
				t.Errorf("%s level = %s, want %s", tc.f, got, tc.want)
			}
		})
	}
}

func TestPair_ExplanationNamesFieldsAndLevelsOnly(t *testing.T) {
	p := DefaultModel().Compare(Normalize(ellenP1()), Normalize(ellenP2()))
	e := p.Explanation()
	if e.Decision != qhinv1.MatchDecision_MATCH_DECISION_MATCH || e.MatchWeight != p.Weight {
		t.Errorf("explanation %v, want a match of weight %v", e, p.Weight)
	}
	got := map[string]string{}
	for _, f := range e.Fields {
		got[f.Field] = f.Level
	}
	want := map[string]string{"given": "typo", "family": "exact", "birth_date": "exact", "gender": "same",
		"postal_code": "district", "phone": "exact", "city": "exact", "state": "exact"}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("field %s level %q, want %q", k, got[k], v)
		}
	}
	if _, ok := got["address"]; ok {
		t.Error("address explained though one record has none")
	}
	for _, v := range []string{"ellen", "vasquez", "1958", "773", "60614", "elm"} {
		if strings.Contains(strings.ToLower(e.String()), v) {
			t.Errorf("explanation holds the value %q", v)
		}
	}
}
