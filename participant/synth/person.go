package synth

import (
	"slices"
	"time"

	qhinv1 "github.com/openqhin/openqhin/proto/qhin/v1"
)

// person is the truth about one generated human being. Its strings are
// shared by every registration built from it; they are never modified.
type person struct {
	id            string
	female        bool
	first, middle string
	family        string
	given         string // first and middle, space separated
	birth         time.Time
	birthDate     string // birth as YYYY-MM-DD
	addr          address
	phone         string
	ssn           string // empty when the person has none
	// conds is the person's problem list, shared by all their documents;
	// nil entries are unused.
	conds [maxConditions]*condition
}

// maxConditions bounds a person's problem list.
const maxConditions = 3

// address is a postal address in the United States.
type address struct {
	line1, line2 string
	place        *place
	postalCode   string
}

// newPerson fills p with person i, drawing from g.rng.
func (g *generator) newPerson(p *person, i int) {
	rng := g.rng
	b := append(g.buf[:0], "person-"...)
	b = appendPadded(b, i+1, 7)
	p.id = string(b)

	p.female = rng.Float64() < pFemale
	names := maleNames
	if p.female {
		names = femaleNames
	}
	p.first = pickSkewed(rng, names)
	p.middle = ""
	if rng.Float64() < pMiddleName {
		for p.middle == "" || p.middle == p.first {
			p.middle = names[rng.IntN(len(names))]
		}
		p.given = p.first + " " + p.middle
	} else {
		p.given = p.first
	}
	p.family = pickSkewed(rng, familyNames)

	// Age: a five-year band by census weight, then a uniform day in it.
	x := rng.Float64() * g.bandCum[len(g.bandCum)-1]
	band := 0
	for band < len(g.bandCum)-1 && x >= g.bandCum[band] {
		band++
	}
	lo, hi := max(g.bandDays[band], 1), g.bandDays[band+1]
	ageDays := lo + rng.Int64N(hi-lo)
	p.birth = time.Unix((g.today-ageDays)*secondsPerDay, 0).UTC()
	p.birthDate = string(p.birth.AppendFormat(g.buf[:0], time.DateOnly))

	p.addr = g.newAddress()
	p.phone = g.newPhone()

	p.ssn = ""
	if rng.Float64() < pHasSSN {
		p.ssn = g.ssn(i)
	}

	// One to three conditions plausible at the person's age today.
	age := yearsBetween(p.birth, g.now)
	p.conds = [maxConditions]*condition{}
	for k := range 1 + rng.IntN(maxConditions) {
		c := &conditions[rng.IntN(len(conditions))]
		if age >= c.minAge && !slices.Contains(p.conds[:k], c) {
			p.conds[k] = c
		}
	}
}

// newAddress draws a street address in one of the places.
func (g *generator) newAddress() address {
	rng := g.rng
	// House numbers: mostly small, some up to five digits.
	house := 1 + rng.IntN(9999)
	if rng.IntN(4) == 0 {
		house = 100 + rng.IntN(29900)
	}
	b := appendPadded(g.buf[:0], house, 0)
	b = append(b, ' ')
	if rng.Float64() < pDirection {
		b = append(b, streetDirections[rng.IntN(len(streetDirections))]...)
		b = append(b, ' ')
	}
	b = append(b, streetNames[rng.IntN(len(streetNames))]...)
	b = append(b, ' ')
	b = append(b, streetSuffixes[rng.IntN(len(streetSuffixes))]...)
	a := address{line1: string(b)}
	if rng.Float64() < pSecondLine {
		b = g.buf[:0]
		if rng.IntN(2) == 0 {
			b = append(b, "Apt "...)
			b = appendPadded(b, 1+rng.IntN(40), 0)
			b = append(b, byte('A'+rng.IntN(6)))
		} else {
			b = append(b, "Unit "...)
			b = appendPadded(b, 1+rng.IntN(400), 0)
		}
		a.line2 = string(b)
	}
	a.place = &places[rng.IntN(len(places))]
	b = append(g.buf[:0], a.place.zip3...)
	b = appendPadded(b, rng.IntN(100), 2)
	a.postalCode = string(b)
	return a
}

// proto returns a as a freshly allocated wire Address.
func (a *address) proto() *qhinv1.Address {
	lines := []string{a.line1}
	if a.line2 != "" {
		lines = append(lines, a.line2)
	}
	return &qhinv1.Address{
		Lines:      lines,
		City:       a.place.city,
		State:      a.place.state,
		PostalCode: a.postalCode,
		Country:    "US",
	}
}

// newPhone draws a number of the form 555-NXX-XXXX.
func (g *generator) newPhone() string {
	b := append(g.buf[:0], "555-"...)
	b = appendPadded(b, 200+g.rng.IntN(800), 3)
	b = append(b, '-')
	b = appendPadded(b, g.rng.IntN(10000), 4)
	return string(b)
}

// SSNs are 9AA-GG-SSSS with area 900..999 (never issued), group 01..99 and
// serial 0001..9999: ssnSpace numbers in all.
const (
	ssnPerArea = 99 * 9999
	ssnSpace   = 100 * ssnPerArea
	// ssnStride is near ssnSpace/φ, so consecutive persons get unrelated
	// numbers, and shares no factor with ssnSpace (2, 3, 5, 11, 101), so
	// i → i·ssnStride mod ssnSpace is a bijection.
	ssnStride = 61_179_247
)

// ssn returns person i's SSN: a bijection of i, so no two of the first
// ssnSpace (about 99 million) persons share one.
func (g *generator) ssn(i int) string {
	x := (uint64(i)%ssnSpace*ssnStride + g.ssnOff) % ssnSpace
	area, rest := 900+x/ssnPerArea, x%ssnPerArea
	group, serial := 1+rest/9999, 1+rest%9999
	b := appendPadded(g.buf[:0], int(area), 3)
	b = append(b, '-')
	b = appendPadded(b, int(group), 2)
	b = append(b, '-')
	b = appendPadded(b, int(serial), 4)
	return string(b)
}
