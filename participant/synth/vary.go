package synth

import (
	"math/rand/v2"
	"slices"
	"strings"
	"time"
	"unicode"

	qhinv1 "github.com/openqhin/openqhin/proto/qhin/v1"
)

// Variation is a set of ways in which a registration's demographics differ
// from the person's true ones.
type Variation uint8

// The variations a registration can carry. Every registration keeps at
// least the name or the birth date exact, so the person stays findable.
const (
	// FamilyTypo is one keying error in the family name: two adjacent
	// letters swapped, a letter dropped or a letter doubled. The first
	// letter is never touched.
	FamilyTypo Variation = 1 << iota
	// GivenTypo is one keying error, as in FamilyTypo, in the first given
	// name.
	GivenTypo
	// Nickname replaces the first given name with a short form
	// (Robert → Bob, Elizabeth → Liz).
	Nickname
	// NoMiddleName leaves out the middle name.
	NoMiddleName
	// MovedAddress is a different street address, in the same city or
	// another one.
	MovedAddress
	// NoPhone leaves out the phone number.
	NoPhone
	// BirthDateTypo is a birth date with day and month transposed or one
	// digit wrong. It never comes with a name variation.
	BirthDateTypo
)

// NameVariations are the variations that change the name.
const NameVariations = FamilyTypo | GivenTypo | Nickname | NoMiddleName

var variationNames = [...]string{
	"family-typo", "given-typo", "nickname", "no-middle-name", "moved-address", "no-phone", "birth-date-typo",
}

// Has reports whether v includes every variation in x.
func (v Variation) Has(x Variation) bool { return v&x == x }

// String lists the variations in v, joined by "+", or returns "none".
func (v Variation) String() string {
	if v == 0 {
		return "none"
	}
	var parts []string
	for i, name := range variationNames {
		if v&(1<<i) != 0 {
			parts = append(parts, name)
		}
	}
	if rest := v &^ (1<<len(variationNames) - 1); rest != 0 {
		parts = append(parts, "unknown")
	}
	return strings.Join(parts, "+")
}

// Probabilities of the variation model, per registration after a person's
// first.
const (
	pUnchanged     = 0.2  // a copy of the true demographics
	pBirthDateTypo = 0.03 // a birth date typo, and no name variation
)

// variationWeights are the relative odds of the variations drawn for a
// registration that is neither unchanged nor a birth date typo.
var variationWeights = [...]struct {
	v Variation
	w int
}{
	{FamilyTypo, 12}, {GivenTypo, 10}, {Nickname, 20}, {NoMiddleName, 12}, {MovedAddress, 35}, {NoPhone, 15},
}

// chooseVariations draws the variations of one registration of p after its
// first: none, a birth date typo with perhaps a move or no phone, or one to
// three of the other variations.
func (g *generator) chooseVariations(p *person) Variation {
	rng := g.rng
	if rng.Float64() < pUnchanged {
		return 0
	}
	if rng.Float64() < pBirthDateTypo {
		v := BirthDateTypo
		if rng.Float64() < 0.3 {
			v |= MovedAddress
		}
		if rng.Float64() < 0.2 {
			v |= NoPhone
		}
		return v
	}
	n := 1
	switch r := rng.Float64(); {
	case r < 0.05:
		n = 3
	case r < 0.3:
		n = 2
	}
	var v Variation
	for range n {
		total := 0
		for _, c := range variationWeights {
			if canAdd(p, v, c.v) {
				total += c.w
			}
		}
		if total == 0 {
			break
		}
		x := rng.IntN(total)
		for _, c := range variationWeights {
			if !canAdd(p, v, c.v) {
				continue
			}
			if x < c.w {
				v |= c.v
				break
			}
			x -= c.w
		}
	}
	return v
}

// canAdd reports whether x may join v for p: once only, a nickname and a
// typo never on the same given name, no missing middle name without one.
func canAdd(p *person, v, x Variation) bool {
	if v&x != 0 {
		return false
	}
	switch x {
	case GivenTypo:
		return v&Nickname == 0
	case Nickname:
		return v&GivenTypo == 0 && len(nicknames[p.first]) > 0
	case NoMiddleName:
		return p.middle != ""
	}
	return true
}

// demographics builds p's demographics with variations v, without
// identifiers. It returns the variations it could apply, which may be fewer
// than v (a name too short for a typo).
func (g *generator) demographics(p *person, v Variation) (*qhinv1.Demographics, Variation) {
	var applied Variation
	first, middle, family, given := p.first, p.middle, p.family, p.given
	if v.Has(Nickname) {
		if nicks := nicknames[first]; len(nicks) > 0 {
			first = nicks[g.rng.IntN(len(nicks))]
			applied |= Nickname
		}
	}
	if v.Has(GivenTypo) {
		if s, ok := typo(g.rng, first); ok {
			first = s
			applied |= GivenTypo
		}
	}
	if v.Has(NoMiddleName) && middle != "" {
		middle = ""
		applied |= NoMiddleName
	}
	if applied != 0 {
		given = first
		if middle != "" {
			given = first + " " + middle
		}
	}
	if v.Has(FamilyTypo) {
		if s, ok := typo(g.rng, family); ok {
			family = s
			applied |= FamilyTypo
		}
	}
	birthDate := p.birthDate
	if v.Has(BirthDateTypo) && applied&NameVariations == 0 {
		if s, ok := g.birthTypo(p.birth); ok {
			birthDate = s
			applied |= BirthDateTypo
		}
	}
	addr := &p.addr
	if v.Has(MovedAddress) {
		moved := g.moveAddress(&p.addr)
		addr = &moved
		applied |= MovedAddress
	}
	phone := p.phone
	if v.Has(NoPhone) {
		phone = ""
		applied |= NoPhone
	}
	gender := "male"
	if p.female {
		gender = "female"
	}
	return &qhinv1.Demographics{
		Given:     given,
		Family:    family,
		BirthDate: birthDate,
		Gender:    gender,
		Address:   addr.proto(),
		Phone:     phone,
	}, applied
}

// moveAddress draws a new street address for someone living at old: in the
// same city half of the time.
func (g *generator) moveAddress(old *address) address {
	for {
		a := g.newAddress()
		if g.rng.IntN(2) == 0 {
			a.place, a.postalCode = old.place, old.postalCode
		}
		if a.line1 != old.line1 {
			return a
		}
	}
}

// typo returns s with one keying error: two adjacent letters swapped, a
// letter dropped or a letter doubled. Only lowercase letters after the first
// character are touched, so the initial and the capitals stay, as they
// usually do in practice. It reports false for a name too short to vary.
func typo(rng *rand.Rand, s string) (string, bool) {
	r := []rune(s)
	if len(r) < 2 {
		return "", false
	}
	for range 32 {
		i := 1 + rng.IntN(len(r)-1)
		if !unicode.IsLower(r[i]) {
			continue
		}
		switch rng.IntN(3) {
		case 0:
			if i+1 >= len(r) || !unicode.IsLower(r[i+1]) || r[i] == r[i+1] {
				continue
			}
			r[i], r[i+1] = r[i+1], r[i]
			return string(r), true
		case 1:
			if len(r) < 3 {
				continue
			}
			return string(slices.Delete(r, i, i+1)), true
		default:
			return string(slices.Insert(r, i, r[i])), true
		}
	}
	return "", false
}

// birthTypo returns birth as YYYY-MM-DD with day and month transposed or one
// digit of the year's last two, the month or the day wrong; the result is a
// valid date in the range of birth dates (before today, at most maxAgeYears
// ago). It reports false if it found none.
func (g *generator) birthTypo(birth time.Time) (string, bool) {
	y, m, d := birth.Date()
	if d <= 12 && d != int(m) && g.rng.IntN(2) == 0 {
		t := time.Date(y, time.Month(d), int(m), 0, 0, 0, 0, time.UTC)
		if g.bornInRange(t) {
			return t.Format(time.DateOnly), true
		}
	}
	var digits [8]byte
	birth.AppendFormat(digits[:0], "20060102")
	for range 32 {
		alt := digits
		pos := 2 + g.rng.IntN(6)
		alt[pos] = byte('0' + g.rng.IntN(10))
		if alt == digits {
			continue
		}
		y2 := atoi(alt[0:4])
		m2, d2 := atoi(alt[4:6]), atoi(alt[6:8])
		if m2 < 1 || m2 > 12 || d2 < 1 {
			continue
		}
		t := time.Date(y2, time.Month(m2), d2, 0, 0, 0, 0, time.UTC)
		if t.Day() != d2 || !g.bornInRange(t) {
			continue
		}
		return t.Format(time.DateOnly), true
	}
	return "", false
}

// bornInRange reports whether t is a possible birth date: before today and
// less than maxAgeYears ago.
func (g *generator) bornInRange(t time.Time) bool {
	age := g.today - unixDay(t)
	return age >= 1 && age < g.bandDays[len(g.bandDays)-1]
}

// atoi parses ASCII digits.
func atoi(b []byte) int {
	n := 0
	for _, c := range b {
		n = n*10 + int(c-'0')
	}
	return n
}
