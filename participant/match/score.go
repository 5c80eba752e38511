package match

import (
	"strings"

	"github.com/hbollon/go-edlib"

	qhinv1 "github.com/openqhin/openqhin/proto/qhin/v1"
)

// Thresholds on [Score].
const (
	// DefaultThreshold is the lowest score of a candidate that a responder
	// returns for a discovery query.
	DefaultThreshold = 0.85
	// SamePersonThreshold is the lowest score at which the broker treats
	// two candidates from different members as the same person. It is
	// higher than DefaultThreshold: a wrong merge shows one person's
	// records as another's, a missed merge only shows a person twice.
	SamePersonThreshold = 0.90
)

// Weights of the fields in a score. A field missing on either side takes no
// part: the score is the weighted mean over the fields both sides have.
const (
	weightFamily    = 0.25
	weightGiven     = 0.20
	weightBirthDate = 0.30
	weightGender    = 0.05
	weightPostal    = 0.10
	weightPhone     = 0.10
)

// Tuning of the field similarities (see DESIGN.md).
const (
	// familyFloor and givenFloor: a Jaro-Winkler similarity below them is
	// a different name and counts 0. Given names are short and differ by
	// one letter between siblings ("mark", "mary"), so they need more.
	familyFloor = 0.80
	givenFloor  = 0.90
	// middleNameSim: one side's first name is the other's middle name
	// ("josé maría" and "maría").
	middleNameSim = 0.85
	// compoundFamilySim: one family name is a part of the other
	// ("garcía lópez" and "garcía").
	compoundFamilySim = 0.85
	// swappedNames scales the name similarities when given and family
	// names were entered the wrong way round.
	swappedNames = 0.90
	// Birth date similarities: one digit wrong, two adjacent digits
	// swapped, or day and month swapped; same year and month only.
	birthTypoSim      = 0.70
	birthYearMonthSim = 0.30
	// farBirthCap caps the score of records whose birth years are more
	// than one year apart (not a typo): they are different people however
	// alike the names.
	farBirthCap = 0.50
	// minEvidence is the least total weight a score divides by, so that a
	// comparison on one or two fields (a name and a gender) cannot reach
	// a threshold on its own.
	minEvidence = 0.55
)

// Score returns how likely it is that a and b are the same person, in
// [0, 1]: the weighted mean of field similarities over the fields both
// records have (family name 0.25 and first given name 0.20 by
// Jaro-Winkler; birth date 0.30; gender 0.05; postal code 0.10; phone
// 0.10). Records that share no name field score 0, records whose birth
// years are far apart score at most 0.5, and records with little in common
// to compare are scored as if the missing weight had disagreed.
// Score is symmetric.
func Score(a, b Record) float64 {
	hasFamily := a.Family != "" && b.Family != ""
	hasGiven := len(a.Given) > 0 && len(b.Given) > 0
	if !hasFamily && !hasGiven {
		return 0
	}
	var fam, giv float64
	if hasFamily {
		fam = familySim(a.Family, b.Family)
	}
	if hasGiven {
		giv = givenSim(a.Given, b.Given)
	}
	if hasFamily && hasGiven && fam < 1 && giv < 1 {
		// Given and family names entered the wrong way round on one side.
		sf := swappedNames * familySim(a.Family, b.first())
		sg := swappedNames * firstNameSim(a.first(), b.Family)
		if sf+sg > fam+giv {
			fam, giv = sf, sg
		}
	}

	var sum, weight float64
	if hasFamily {
		sum += weightFamily * fam
		weight += weightFamily
	}
	if hasGiven {
		sum += weightGiven * giv
		weight += weightGiven
	}
	far := false
	if a.HasBirthDate() && b.HasBirthDate() {
		s, typo := birthSim(a, b)
		sum += weightBirthDate * s
		weight += weightBirthDate
		far = !typo && absInt(a.BirthYear-b.BirthYear) > 1
	}
	if a.Gender != "" && b.Gender != "" {
		if a.Gender == b.Gender {
			sum += weightGender
		}
		weight += weightGender
	}
	if a.PostalCode != "" && b.PostalCode != "" {
		if a.PostalCode == b.PostalCode {
			sum += weightPostal
		}
		weight += weightPostal
	}
	if a.Phone != "" && b.Phone != "" {
		if phoneEqual(a.Phone, b.Phone) {
			sum += weightPhone
		}
		weight += weightPhone
	}
	score := sum / max(weight, minEvidence)
	if far {
		score = min(score, farBirthCap)
	}
	return min(max(score, 0), 1)
}

// ScoreDemographics normalizes a and b and scores them with [Score].
func ScoreDemographics(a, b *qhinv1.Demographics) float64 {
	return Score(Normalize(a), Normalize(b))
}

// jaroWinkler returns the Jaro-Winkler similarity of x and y, with its
// arguments in a fixed order so that the result is symmetric.
func jaroWinkler(x, y string) float64 {
	if x == y {
		return 1
	}
	if x > y {
		x, y = y, x
	}
	return float64(edlib.JaroWinklerSimilarity(x, y))
}

// familySim compares two normalized family names.
func familySim(a, b string) float64 {
	if a == b {
		return 1
	}
	s := jaroWinkler(a, b)
	if s < familyFloor {
		s = 0
	}
	if s < compoundFamilySim && shareSurname(a, b) {
		s = compoundFamilySim
	}
	return s
}

// surnameParticles are family-name tokens too common to identify anyone.
var surnameParticles = map[string]bool{
	"de": true, "del": true, "della": true, "la": true, "las": true, "los": true, "y": true, "e": true,
	"da": true, "das": true, "do": true, "dos": true, "di": true, "du": true, "le": true,
	"van": true, "von": true, "der": true, "den": true, "ten": true, "ter": true, "st": true, "bin": true, "al": true,
}

// shareSurname reports whether two family names of several tokens have a
// token in common that is not a particle ("garcia lopez" and "garcia").
func shareSurname(a, b string) bool {
	if !strings.Contains(a, " ") && !strings.Contains(b, " ") {
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

// givenSim compares two lists of normalized given names: mostly the first
// names, and a first name that is the other side's middle name.
func givenSim(a, b []string) float64 {
	fa, fb := a[0], b[0]
	s := firstNameSim(fa, fb)
	if s < middleNameSim && (hasGivenName(a[1:], fb) || hasGivenName(b[1:], fa)) {
		s = middleNameSim
	}
	return s
}

// firstNameSim compares two normalized given names, as written and in
// canonical (nickname-resolved) form.
func firstNameSim(a, b string) float64 {
	if a == b {
		return 1
	}
	ca, cb := canonicalGiven(a), canonicalGiven(b)
	if ca == cb {
		return 1
	}
	s := jaroWinkler(a, b)
	if ca != a || cb != b {
		s = max(s, jaroWinkler(ca, cb))
	}
	if s < givenFloor {
		s = 0
	}
	return s
}

// hasGivenName reports whether names holds name, as written or in canonical
// form.
func hasGivenName(names []string, name string) bool {
	if len(names) == 0 {
		return false
	}
	canon := canonicalGiven(name)
	for _, n := range names {
		if n == name || canonicalGiven(n) == canon {
			return true
		}
	}
	return false
}

// birthSim compares the birth dates of a and b, which both have one. typo
// reports whether they differ by one digit, two adjacent digits swapped, or
// day and month swapped.
func birthSim(a, b Record) (sim float64, typo bool) {
	if a.BirthYear == b.BirthYear && a.BirthMonth == b.BirthMonth && a.BirthDay == b.BirthDay {
		return 1, false
	}
	if a.BirthYear == b.BirthYear && a.BirthMonth == b.BirthDay && a.BirthDay == b.BirthMonth {
		return birthTypoSim, true
	}
	da, db := dateDigits(a), dateDigits(b)
	diff, first := 0, -1
	for i := range da {
		if da[i] != db[i] {
			if first < 0 {
				first = i
			}
			diff++
		}
	}
	if diff == 1 || diff == 2 && first+1 < len(da) && da[first] == db[first+1] && da[first+1] == db[first] {
		return birthTypoSim, true
	}
	if a.BirthYear == b.BirthYear && a.BirthMonth == b.BirthMonth {
		return birthYearMonthSim, false
	}
	return 0, false
}

// dateDigits returns the birth date of r as the digits of YYYYMMDD.
func dateDigits(r Record) [8]byte {
	y, m, d := r.BirthYear, r.BirthMonth, r.BirthDay
	return [8]byte{
		byte(y / 1000 % 10), byte(y / 100 % 10), byte(y / 10 % 10), byte(y % 10),
		byte(m / 10 % 10), byte(m % 10), byte(d / 10 % 10), byte(d % 10),
	}
}

// phoneEqual reports whether two normalized phone numbers are the same
// number: equal, or one is the local part (at least seven digits) of the
// other.
func phoneEqual(a, b string) bool {
	if len(a) > len(b) {
		a, b = b, a
	}
	return strings.HasSuffix(b, a)
}

func absInt(x int) int {
	if x < 0 {
		return -x
	}
	return x
}
