package match

import (
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"golang.org/x/text/unicode/norm"

	qhinv1 "github.com/openqhin/openqhin/proto/qhin/v1"
)

// Record is a person's demographics in the normalized form that [Score] and
// [Index] compare. The zero value of a field means "unknown"; unknown fields
// take no part in a comparison. Build one with [Normalize].
type Record struct {
	// Given holds the given names as tokens, first name first: lowercase
	// letters and digits, without diacritics, apostrophes or hyphens
	// ("José María" → ["jose" "maria"], "O'Neil" → ["oneil"]).
	Given []string
	// Family is the family name in the same form, inner spaces collapsed to
	// one and generational suffixes (jr, sr, ii, iii, iv) dropped.
	Family string
	// BirthYear, BirthMonth and BirthDay form a real calendar date, or are
	// all zero.
	BirthYear, BirthMonth, BirthDay int
	// Gender is "male", "female", "other" or "" when unknown.
	Gender string
	// PostalCode is the first five letters or digits of the postal code,
	// lowercase ("02139-4307" → "02139").
	PostalCode string
	// Phone is the last ten digits of the phone number, or "" when it has
	// fewer than seven digits.
	Phone string
}

// HasBirthDate reports whether r holds a birth date.
func (r Record) HasBirthDate() bool { return r.BirthYear != 0 }

// CanonicalFirstName returns the first given name in canonical form, with
// nicknames resolved ("bob" → "robert"), or "" when r has no given name.
func (r Record) CanonicalFirstName() string {
	if len(r.Given) == 0 {
		return ""
	}
	return canonicalGiven(r.Given[0])
}

// first returns the first given name, or "".
func (r Record) first() string {
	if len(r.Given) == 0 {
		return ""
	}
	return r.Given[0]
}

// Normalize turns wire demographics into a [Record]. It accepts anything: a
// value it cannot interpret (a malformed date, a phone without enough
// digits) becomes unknown rather than an error. Run [Validate] first where
// the input must be complete. A nil d gives the zero Record.
func Normalize(d *qhinv1.Demographics) Record {
	var r Record
	if d == nil {
		return r
	}
	if given := normalizeName(d.GetGiven()); given != "" {
		r.Given = strings.Split(given, " ")
	}
	r.Family = dropSuffixes(normalizeName(d.GetFamily()))
	r.BirthYear, r.BirthMonth, r.BirthDay, _ = parseDate(d.GetBirthDate())
	r.Gender = normalizeGender(d.GetGender())
	r.PostalCode = normalizePostalCode(d.GetAddress().GetPostalCode())
	r.Phone = normalizePhone(d.GetPhone())
	return r
}

// normalizeName lowercases s, folds it to base letters (NFKD, then drops
// nonspacing marks and folds a few letters that have no decomposition, such
// as ø and ß), removes apostrophes and hyphens, turns every other run of
// non-letters and non-digits into one space and trims the ends.
// It is idempotent.
func normalizeName(s string) string {
	ascii := true
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			ascii = false
			break
		}
	}
	if !ascii {
		// NFKD also maps compatibility forms (ligatures, full-width
		// letters) to their plain letters.
		s = norm.NFKD.String(s)
	}
	var b strings.Builder
	b.Grow(len(s))
	space := false // a separator is pending
	for _, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9':
		case r >= 'A' && r <= 'Z':
			r += 'a' - 'A'
		case isJoiner(r), unicode.Is(unicode.Mn, r):
			continue
		case isNameRune(r):
			r = unicode.ToLower(r)
			if f, ok := letterFolds[r]; ok {
				if space && b.Len() > 0 {
					b.WriteByte(' ')
				}
				space = false
				b.WriteString(f)
				continue
			}
			if !isNameRune(r) {
				// Lowercasing can leave the letter categories
				// (rare); treat it as a separator to stay
				// idempotent.
				space = true
				continue
			}
		default:
			space = true
			continue
		}
		if space && b.Len() > 0 {
			b.WriteByte(' ')
		}
		space = false
		b.WriteRune(r)
	}
	return truncateName(b.String())
}

// maxNameBytes bounds a normalized name, and with it the cost of comparing
// two names (Jaro-Winkler is quadratic in the worst case).
const maxNameBytes = 4 * maxNameRunes

// truncateName cuts a normalized name to at most maxNameBytes on a rune
// boundary, without a trailing space.
func truncateName(s string) string {
	if len(s) <= maxNameBytes {
		return s
	}
	i := maxNameBytes
	for i > 0 && !utf8.RuneStart(s[i]) {
		i--
	}
	return strings.TrimRight(s[:i], " ")
}

// isNameRune reports whether r is kept in a normalized name: a letter, a
// digit or a spacing mark (the vowel signs of Indic scripts).
func isNameRune(r rune) bool {
	return unicode.IsLetter(r) || unicode.IsDigit(r) || unicode.Is(unicode.Mc, r)
}

// isJoiner reports whether r is an apostrophe or a hyphen, which are removed
// from names without leaving a space ("O'Connell" → "oconnell").
func isJoiner(r rune) bool {
	switch r {
	case '\'', '`', '\u00b4', '\u2018', '\u2019', '\u02bc', '\u02b9', // apostrophes
		'-', '\u2010', '\u2011', '\u2012', '\u2013', '\u2014', '\u2212': // hyphens and dashes
		return true
	}
	return false
}

// letterFolds spells letters that Unicode does not decompose into a base
// letter plus marks.
var letterFolds = map[rune]string{
	'ß': "ss", 'æ': "ae", 'œ': "oe", 'ø': "o", 'ł': "l", 'đ': "d", 'ð': "d", 'þ': "th", 'ı': "i", 'ħ': "h",
}

// nameSuffixes are generational suffixes dropped from family names.
var nameSuffixes = map[string]bool{"jr": true, "sr": true, "ii": true, "iii": true, "iv": true}

// dropSuffixes removes trailing generational suffixes from a normalized
// family name, keeping at least one token.
func dropSuffixes(family string) string {
	for {
		i := strings.LastIndexByte(family, ' ')
		if i < 0 || !nameSuffixes[family[i+1:]] {
			return family
		}
		family = family[:i]
	}
}

// parseDate parses a date written as YYYY-MM-DD (the wire form) or YYYYMMDD
// (HL7 and C-CDA) and reports whether it is a real calendar date.
func parseDate(s string) (year, month, day int, ok bool) {
	s = strings.TrimSpace(s)
	switch {
	case len(s) == 10 && s[4] == '-' && s[7] == '-':
		s = s[0:4] + s[5:7] + s[8:10]
	case len(s) == 8:
	default:
		return 0, 0, 0, false
	}
	var n [8]int
	for i := range 8 {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, 0, 0, false
		}
		n[i] = int(c - '0')
	}
	year = n[0]*1000 + n[1]*100 + n[2]*10 + n[3]
	month = n[4]*10 + n[5]
	day = n[6]*10 + n[7]
	if year == 0 || month < 1 || month > 12 || day < 1 || day > daysIn(year, month) {
		return 0, 0, 0, false
	}
	return year, month, day, true
}

// daysIn returns the number of days in a month of the proleptic Gregorian
// calendar.
func daysIn(year, month int) int {
	return time.Date(year, time.Month(month)+1, 0, 0, 0, 0, 0, time.UTC).Day()
}

// normalizeGender maps FHIR administrative gender (and the common one-letter
// codes) to "male", "female" or "other"; anything else is unknown ("").
func normalizeGender(g string) string {
	switch strings.ToLower(strings.TrimSpace(g)) {
	case "male", "m":
		return "male"
	case "female", "f":
		return "female"
	case "other", "o":
		return "other"
	}
	return ""
}

// normalizePostalCode keeps the first five letters or digits of a postal
// code, lowercased: the US ZIP code of a ZIP+4, the outward code and more of
// a UK or Canadian code.
func normalizePostalCode(p string) string {
	var buf [5]byte
	n := 0
	for i := 0; i < len(p) && n < len(buf); i++ {
		c := p[i]
		switch {
		case c >= '0' && c <= '9', c >= 'a' && c <= 'z':
		case c >= 'A' && c <= 'Z':
			c += 'a' - 'A'
		default:
			continue
		}
		buf[n] = c
		n++
	}
	return string(buf[:n])
}

// normalizePhone keeps the last ten digits of a phone number. Digits after
// a letter that follows seven digits (an extension: "x12", "ext. 12") are
// ignored, and a number with fewer than seven digits is unknown.
func normalizePhone(p string) string {
	var buf [10]byte
	n := 0
	forEachPhoneDigit(p, func(c byte) {
		if n == len(buf) {
			copy(buf[:], buf[1:])
			n--
		}
		buf[n] = c
		n++
	})
	if n < 7 {
		return ""
	}
	return string(buf[:n])
}

// forEachPhoneDigit calls fn with each ASCII digit of p up to the first
// letter that follows at least seven digits, which starts an extension.
func forEachPhoneDigit(p string, fn func(c byte)) {
	n := 0
	for i := 0; i < len(p); i++ {
		c := p[i]
		switch {
		case c >= '0' && c <= '9':
			fn(c)
			n++
		case (c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z') && n >= 7:
			return
		}
	}
}
