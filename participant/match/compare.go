package match

import (
	"slices"
	"strings"
)

// Field is one compared demographic field.
type Field uint8

// The compared fields, in the order of a [Pair]'s levels.
const (
	FieldGiven Field = iota
	FieldFamily
	FieldBirthDate
	FieldGender
	FieldPostalCode
	FieldPhone
	FieldStreet
	FieldCity
	FieldState
	// NumFields is the number of compared fields.
	NumFields
)

var fieldNames = [NumFields]string{"given", "family", "birth_date", "gender", "postal_code", "phone", "address", "city", "state"}

// String returns the field's name as explanations and model files write it:
// given, family, birth_date, gender, postal_code, phone, address, city,
// state.
func (f Field) String() string {
	if f < NumFields {
		return fieldNames[f]
	}
	return "unknown"
}

// Level is the outcome of comparing one field of two records: an index into
// the field's levels ([Levels]), 0 the closest agreement, or [Missing].
type Level int8

// Missing is the level of a field that one of the records lacks; it weighs
// nothing either way.
const Missing Level = -1

// fieldLevels names the comparison levels of each field, closest first. The
// last level of every field is "different".
var fieldLevels = [NumFields][]string{
	FieldGiven:      {"exact", "nickname", "typo", "close", "phonetic", "initial", "different"},
	FieldFamily:     {"exact", "typo", "part", "close", "phonetic", "different"},
	FieldBirthDate:  {"exact", "typo", "within_1y", "within_10y", "different"},
	FieldGender:     {"same", "different"},
	FieldPostalCode: {"exact", "typo", "district", "different"},
	FieldPhone:      {"exact", "local", "typo", "different"},
	FieldStreet:     {"exact", "close", "similar", "different"},
	FieldCity:       {"exact", "close", "different"},
	FieldState:      {"exact", "different"},
}

// Levels returns the names of a field's comparison levels, closest first:
//
//	given        exact · nickname · typo · close · phonetic · initial · different
//	family       exact · typo · part · close · phonetic · different
//	birth_date   exact · typo · within_1y · within_10y · different
//	gender       same · different
//	postal_code  exact · typo · district · different
//	phone        exact · local · typo · different
//	address      exact · close · similar · different
//	city         exact · close · different
//	state        exact · different
//
// Exact means equal after normalization; typo one edit (a letter or digit
// inserted, dropped, replaced, or two adjacent ones swapped) or a
// Jaro-Winkler similarity of at least 0.92; close a Jaro-Winkler similarity
// of at least 0.88 (for given names also: one side's first name is the
// other's middle name); phonetic the same NYSIIS code; part one family name
// is a part of the other's compound name; initial a given name written as
// its initial. A birth date typo is one digit wrong, two adjacent digits
// swapped, or day and month swapped. Postal codes in the same district share
// their first three characters; phones are local when their last seven
// digits agree; addresses are close with the same house number and a close
// street, similar with a Jaro-Winkler similarity of at least 0.85 over the
// line.
func Levels(f Field) []string {
	if f >= NumFields {
		return nil
	}
	return fieldLevels[f]
}

// Similarity bands of the levels.
const (
	typoJW    = 0.92
	closeJW   = 0.88
	similarJW = 0.85
)

// prepared is a record with the derived keys its comparisons use, computed
// once.
type prepared struct {
	Record
	givenJoined  string   // given names joined without spaces
	familyJoined string   // family name parts joined without spaces
	givenCode    string   // NYSIIS of the first given name
	canonical    string   // the first given name, nickname resolved
	nicknames    []string // nickname pairs of the first given name (shared)
	familyCode   string   // NYSIIS of the joined family name
	birth        [8]byte
	birthDays    int    // days since 0001-01-01 of the birth date, clamped to a calendar date
	streetNum    string // house number
	streetName   string // the rest of the street line, without spaces
}

func prepare(r Record) prepared {
	p := prepared{Record: r}
	if len(r.Given) > 0 {
		p.givenJoined = r.Given[0]
		if len(r.Given) > 1 {
			p.givenJoined = strings.Join(r.Given, "")
		}
		p.givenCode = nysiis(r.Given[0])
		p.canonical = canonicalGiven(r.Given[0])
		p.nicknames = nicknameRelation[r.Given[0]]
	}
	if r.Family != "" {
		p.familyJoined = r.Family
		if strings.IndexByte(r.Family, ' ') >= 0 {
			p.familyJoined = strings.ReplaceAll(r.Family, " ", "")
		}
		p.familyCode = nysiis(p.familyJoined)
	}
	if r.HasBirthDate() {
		p.birth = dateDigits(r.BirthYear, r.BirthMonth, r.BirthDay)
		p.birthDays = civilDays(r.BirthYear, r.BirthMonth, r.BirthDay)
	}
	var rest string
	p.streetNum, rest = streetNumber(r.Street)
	p.streetName = strings.ReplaceAll(rest, " ", "")
	return p
}

// levels compares two prepared records field by field.
func levels(a, b *prepared) [NumFields]Level {
	var l [NumFields]Level
	l[FieldGiven], l[FieldFamily] = nameLevels(a, b)
	l[FieldBirthDate] = birthLevel(a, b)
	l[FieldGender] = Missing
	if a.Gender != "" && b.Gender != "" {
		l[FieldGender] = boolLevel(a.Gender == b.Gender)
	}
	l[FieldPostalCode] = postalLevel(a.PostalCode, b.PostalCode)
	l[FieldPhone] = phoneLevel(a.Phone, b.Phone)
	l[FieldStreet] = streetLevel(a, b)
	l[FieldCity] = cityLevel(a.City, b.City)
	l[FieldState] = Missing
	if a.State != "" && b.State != "" {
		l[FieldState] = boolLevel(a.State == b.State)
	}
	return l
}

func boolLevel(equal bool) Level {
	if equal {
		return 0
	}
	return 1
}

// nameLevels compares the given and family names, and crosswise when they
// look swapped (a given name entered as the family name, or the other way
// round): when neither name agrees straight and one agrees crosswise at
// least as a typo, the better crosswise level stands for the given name and
// the worse for the family name, which keeps the comparison symmetric.
func nameLevels(a, b *prepared) (given, family Level) {
	given, family = Missing, Missing
	if len(a.Given) > 0 && len(b.Given) > 0 {
		given = givenLevel(a, b)
	}
	if a.Family != "" && b.Family != "" {
		family = familyLevel(a.Family, b.Family, a.familyJoined, b.familyJoined, a.familyCode, b.familyCode)
	}
	const givenPhonetic, familyPhonetic = 4, 4
	if len(a.Given) == 0 || len(b.Given) == 0 || a.Family == "" || b.Family == "" ||
		given < givenPhonetic || family < familyPhonetic {
		return given, family
	}
	// Crosswise agreement this close (exact or a typo) keeps the first
	// letter in all but rare cases; skip the comparison otherwise.
	if a.first()[0] != b.familyJoined[0] && a.familyJoined[0] != b.first()[0] {
		return given, family
	}
	x := familyLevel(a.first(), b.Family, a.first(), b.familyJoined, a.givenCode, b.familyCode)
	y := familyLevel(a.Family, b.first(), a.familyJoined, b.first(), a.familyCode, b.givenCode)
	lo, hi := min(x, y), max(x, y)
	if lo > 1 {
		return given, family
	}
	// Family levels exact, typo map to the given name's exact, typo.
	cg := Level(0)
	if lo == 1 {
		cg = 2
	}
	return cg, hi
}

// givenLevel compares the given names of two records that both have some.
func givenLevel(a, b *prepared) Level {
	fa, fb := a.Given[0], b.Given[0]
	switch {
	case fa == fb || a.givenJoined == b.givenJoined:
		return 0
	case slices.Contains(a.nicknames, fb) || a.canonical == b.canonical:
		return 1
	}
	jw := jaroWinkler(fa, fb)
	switch {
	case jw >= typoJW || oneEdit(fa, fb):
		return 2
	case jw >= closeJW || hasToken(a.Given[1:], fb) || hasToken(b.Given[1:], fa):
		return 3
	case a.givenCode != "" && a.givenCode == b.givenCode:
		return 4
	case (len(fa) == 1 || len(fb) == 1) && fa[0] == fb[0]:
		return 5
	}
	return 6
}

func hasToken(toks []string, t string) bool {
	for _, x := range toks {
		if x == t {
			return true
		}
	}
	return false
}

// familyLevel compares two family names (a and b as normalized, aj and bj
// their parts joined, ac and bc their NYSIIS codes).
func familyLevel(a, b, aj, bj, ac, bc string) Level {
	if aj == bj {
		return 0
	}
	if oneEdit(aj, bj) {
		return 1
	}
	jw := jaroWinkler(aj, bj)
	switch {
	case jw >= typoJW:
		return 1
	case shareSurname(a, b):
		return 2
	case jw >= closeJW:
		return 3
	case ac != "" && ac == bc:
		return 4
	}
	return 5
}

// surnameParticles are family-name tokens too common to identify anyone.
var surnameParticles = map[string]bool{
	"de": true, "del": true, "della": true, "la": true, "las": true, "los": true, "y": true, "e": true,
	"da": true, "das": true, "do": true, "dos": true, "di": true, "du": true, "le": true,
	"van": true, "von": true, "der": true, "den": true, "ten": true, "ter": true, "st": true, "bin": true, "al": true,
	"mc": true, "mac": true, "o": true,
}

// shareSurname reports whether two family names, one of several parts, have
// a part in common that is not a particle ("garcia lopez" and "garcia").
func shareSurname(a, b string) bool {
	if strings.IndexByte(a, ' ') < 0 && strings.IndexByte(b, ' ') < 0 {
		return false
	}
	for ta := range strings.FieldsSeq(a) {
		if len(ta) < 2 || surnameParticles[ta] {
			continue
		}
		for tb := range strings.FieldsSeq(b) {
			if ta == tb {
				return true
			}
		}
	}
	return false
}

// birthLevel compares birth dates.
func birthLevel(a, b *prepared) Level {
	if !a.HasBirthDate() || !b.HasBirthDate() {
		return Missing
	}
	if a.birth == b.birth {
		return 0
	}
	if a.BirthYear == b.BirthYear && a.BirthMonth == b.BirthDay && a.BirthDay == b.BirthMonth {
		return 1 // day and month swapped
	}
	diff, first := 0, -1
	for i := range a.birth {
		if a.birth[i] != b.birth[i] {
			if first < 0 {
				first = i
			}
			diff++
		}
	}
	if diff == 1 || diff == 2 && first+1 < len(a.birth) && a.birth[first] == b.birth[first+1] && a.birth[first+1] == b.birth[first] {
		return 1
	}
	days := absInt(a.birthDays - b.birthDays)
	switch {
	case days <= 366:
		return 2
	case days <= 3653:
		return 3
	}
	return 4
}

// dateDigits returns a date as the digits of YYYYMMDD.
func dateDigits(y, m, d int) [8]byte {
	return [8]byte{
		byte(y / 1000 % 10), byte(y / 100 % 10), byte(y / 10 % 10), byte(y % 10),
		byte(m / 10 % 10), byte(m % 10), byte(d / 10 % 10), byte(d % 10),
	}
}

// civilDays returns the days from 0001-01-01 to a date of the proleptic
// Gregorian calendar, with the month clamped to 1-12 and the day to the
// month's length, so that a date as written (1961-02-30) still has a place.
func civilDays(y, m, d int) int {
	m = min(max(m, 1), 12)
	d = min(max(d, 1), daysIn(y, m))
	// Howard Hinnant's days_from_civil, shifted to start in year 1.
	if m <= 2 {
		y--
	}
	era := y / 400
	yoe := y - era*400
	mp := (m + 9) % 12
	doy := (153*mp+2)/5 + d - 1
	doe := yoe*365 + yoe/4 - yoe/100 + doy
	return era*146097 + doe
}

// postalLevel compares postal codes.
func postalLevel(a, b string) Level {
	switch {
	case a == "" || b == "":
		return Missing
	case a == b:
		return 0
	case len(a) == len(b) && oneEdit(a, b):
		return 1
	case len(a) >= 3 && len(b) >= 3 && a[:3] == b[:3]:
		return 2
	}
	return 3
}

// phoneLevel compares phone numbers.
func phoneLevel(a, b string) Level {
	if a == "" || b == "" {
		return Missing
	}
	if a == b {
		return 0
	}
	da, db := strings.TrimPrefix(a, "+"), strings.TrimPrefix(b, "+")
	if len(da) >= 7 && len(db) >= 7 && da[len(da)-7:] == db[len(db)-7:] {
		return 1
	}
	if len(da) == len(db) && oneEdit(da, db) {
		return 2
	}
	return 3
}

// streetLevel compares first address lines.
func streetLevel(a, b *prepared) Level {
	if a.Street == "" || b.Street == "" {
		return Missing
	}
	if a.Street == b.Street {
		return 0
	}
	// The street's name is compared without its spaces, which keying
	// errors add and drop ("balfourcrescent", "merfield pl").
	same := a.streetName != "" && b.streetName != "" &&
		(a.streetName == b.streetName || jaroWinkler(a.streetName, b.streetName) >= closeJW)
	switch {
	case same && a.streetNum != "" && a.streetNum == b.streetNum:
		return 1
	case same, jaroWinkler(a.Street, b.Street) >= similarJW:
		return 2
	}
	return 3
}

// cityLevel compares cities.
func cityLevel(a, b string) Level {
	switch {
	case a == "" || b == "":
		return Missing
	case a == b:
		return 0
	case oneEdit(a, b) || jaroWinkler(a, b) >= typoJW:
		return 1
	}
	return 2
}

func absInt(x int) int {
	if x < 0 {
		return -x
	}
	return x
}
