package match

import (
	"strings"
	"unicode"
	"unicode/utf8"

	"golang.org/x/text/unicode/norm"

	qhinv1 "github.com/openqhin/openqhin/proto/qhin/v1"
)

// Record is a person's demographics in the normalized form that a [Model]
// compares. The zero value of a field means "unknown"; unknown fields take
// no part in a comparison. Build one with [Normalize].
type Record struct {
	// Given holds the given names as tokens, first name first: lowercase
	// letters and digits without diacritics or apostrophes, titles (Mr,
	// Dr, Sir) and suffixes (Jr, III, 1st) left out ("Dr. José-María" →
	// ["jose" "maria"], "O'Neil" → ["oneil"]).
	Given []string
	// Family is the family name in the same form, its parts separated by
	// one space: a hyphen counts as a space ("Vasquez-Whitford" →
	// "vasquez whitford"), and comparisons also try the parts joined.
	Family string
	// BirthYear, BirthMonth and BirthDay are the birth date as written,
	// or all zero. They need not form a calendar date: a record that says
	// 1961-02-30 keeps it, so that a typo still compares digit by digit.
	BirthYear, BirthMonth, BirthDay int
	// Gender is "male", "female", "other" or "" when unknown.
	Gender string
	// PostalCode holds the letters and digits of the postal code,
	// lowercase, at most 10; a US ZIP+4 is cut to its ZIP code
	// ("02139-4307" → "02139", "SW1A 1AA" → "sw1a1aa").
	PostalCode string
	// Phone is the number in E.164 form ("+17735550188"), or the digits
	// of a local number of 7 to 9 digits without its area code
	// ("5550188"), or "" when unknown.
	Phone string
	// Street is the first address line, lowercase, with USPS
	// abbreviations for street types, directions and unit designators
	// ("12 North Elm Street" → "12 n elm st").
	Street string
	// City is the city in the same form as names, with st/ft/mt spelled
	// out ("St. Louis" → "saint louis").
	City string
	// State is the two-letter USPS code of a US state or territory
	// ("Illinois" → "il"), or another state or province as a name.
	State string
}

// HasBirthDate reports whether r holds a birth date.
func (r Record) HasBirthDate() bool { return r.BirthYear != 0 }

// CanonicalFirstName returns the first given name with a common nickname
// resolved ("bob" → "robert"), or "" when r has no given name. Blocking keys
// and record-locator tokens use it; comparisons use the full nickname table.
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
	addr := d.GetAddress()
	r.Given = givenTokens(d.GetGiven())
	r.Family = normalizeFamily(d.GetFamily())
	r.BirthYear, r.BirthMonth, r.BirthDay = parseBirthDate(d.GetBirthDate())
	r.Gender = normalizeGender(d.GetGender())
	r.PostalCode = normalizePostalCode(addr.GetPostalCode())
	r.Phone = normalizePhone(d.GetPhone(), phoneRegion(addr.GetCountry()))
	if lines := addr.GetLines(); len(lines) > 0 {
		r.Street = normalizeStreet(lines[0])
	}
	r.City = normalizeCity(addr.GetCity())
	r.State = normalizeState(addr.GetState())
	return r
}

// givenTokens normalizes given names into tokens without titles and
// suffixes.
func givenTokens(s string) []string {
	n := normalizeName(s)
	if n == "" {
		return nil
	}
	toks := strings.Split(n, " ")
	out := toks[:0]
	for _, t := range toks {
		if !nameTitles[t] && !isNameSuffix(t) {
			out = append(out, t)
		}
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

// normalizeFamily normalizes a family name: tokens without suffixes and
// titles, unless nothing else is left.
func normalizeFamily(s string) string {
	n := normalizeName(s)
	if !strings.Contains(n, " ") {
		return n
	}
	toks := strings.Split(n, " ")
	out := make([]string, 0, len(toks))
	for _, t := range toks {
		if !nameTitles[t] && !isNameSuffix(t) {
			out = append(out, t)
		}
	}
	if len(out) == 0 {
		return n
	}
	return strings.Join(out, " ")
}

// normalizeName lowercases s, folds it to base letters (NFKD, then drops
// nonspacing marks and folds a few letters that have no decomposition, such
// as ø and ß), removes apostrophes, turns every other run of non-letters
// and non-digits (hyphens included) into one space and trims the ends. It is
// idempotent.
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
		case isApostrophe(r), unicode.Is(unicode.Mn, r):
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

// isApostrophe reports whether r is an apostrophe, which is removed from
// names without leaving a space ("O'Connell" → "oconnell").
func isApostrophe(r rune) bool {
	switch r {
	case '\'', '`', '\u00b4', '\u2018', '\u2019', '\u02bc', '\u02b9':
		return true
	}
	return false
}

// letterFolds spells letters that Unicode does not decompose into a base
// letter plus marks.
var letterFolds = map[rune]string{
	'ß': "ss", 'æ': "ae", 'œ': "oe", 'ø': "o", 'ł': "l", 'đ': "d", 'ð': "d", 'þ': "th", 'ı': "i", 'ħ': "h",
}

// nameTitles are honorifics and titles left out of names: they say nothing
// about who a person is, and "Sir" or "Dr" in front of a common name must not
// make two strangers look alike.
var nameTitles = map[string]bool{
	"mr": true, "mrs": true, "ms": true, "miss": true, "mx": true, "dr": true, "sir": true, "dame": true,
	"lord": true, "lady": true, "rev": true, "revd": true, "reverend": true, "prof": true, "professor": true,
	"hon": true, "honourable": true, "honorable": true, "fr": true, "father": true, "sister": true, "brother": true,
}

// nameSuffixes are generational suffixes, honours and degrees left out of
// names.
var nameSuffixes = map[string]bool{
	"jr": true, "jnr": true, "junior": true, "sr": true, "snr": true, "senior": true,
	"ii": true, "iii": true, "iv": true, "esq": true, "bt": true, "bart": true, "baronet": true,
	"md": true, "phd": true, "dds": true, "kbe": true, "obe": true, "mbe": true, "cbe": true,
}

// isNameSuffix reports whether a normalized token is a suffix: one of
// nameSuffixes or an ordinal written with digits ("1st", "3rd", "14th").
func isNameSuffix(t string) bool {
	if nameSuffixes[t] {
		return true
	}
	if len(t) < 3 {
		return false
	}
	i := 0
	for i < len(t) && t[i] >= '0' && t[i] <= '9' {
		i++
	}
	if i == 0 {
		return false
	}
	switch t[i:] {
	case "st", "nd", "rd", "th":
		return true
	}
	return false
}

// parseBirthDate reads a birth date written as YYYY-MM-DD (the wire form,
// also with / or . between the parts) or YYYYMMDD (HL7 and C-CDA), as
// written: any eight digits with a year other than 0000, whether or not the
// calendar has that day. Anything else is unknown (all zero).
func parseBirthDate(s string) (year, month, day int) {
	s = strings.TrimSpace(s)
	var digits [8]byte
	switch {
	case len(s) == 10 && s[4] == s[7] && (s[4] == '-' || s[4] == '/' || s[4] == '.'):
		copy(digits[0:4], s[0:4])
		copy(digits[4:6], s[5:7])
		copy(digits[6:8], s[8:10])
	case len(s) == 8:
		copy(digits[:], s)
	default:
		return 0, 0, 0
	}
	var n [8]int
	for i, c := range digits {
		if c < '0' || c > '9' {
			return 0, 0, 0
		}
		n[i] = int(c - '0')
	}
	year = n[0]*1000 + n[1]*100 + n[2]*10 + n[3]
	if year == 0 {
		return 0, 0, 0
	}
	return year, n[4]*10 + n[5], n[6]*10 + n[7]
}

// isCalendarDate reports whether year, month and day form a day of the
// proleptic Gregorian calendar.
func isCalendarDate(year, month, day int) bool {
	return year >= 1 && month >= 1 && month <= 12 && day >= 1 && day <= daysIn(year, month)
}

// daysIn returns the number of days in a month of the proleptic Gregorian
// calendar.
func daysIn(year, month int) int {
	switch month {
	case 4, 6, 9, 11:
		return 30
	case 2:
		if year%4 == 0 && (year%100 != 0 || year%400 == 0) {
			return 29
		}
		return 28
	}
	return 31
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

// maxPostalCode bounds a normalized postal code.
const maxPostalCode = 10

// normalizePostalCode keeps the letters and digits of a postal code,
// lowercased, at most 10 of them; a US ZIP+4 (nine digits) becomes its
// five-digit ZIP code. It is idempotent.
func normalizePostalCode(p string) string {
	var buf [maxPostalCode]byte
	n, digits := 0, 0
	for i := 0; i < len(p) && n < len(buf); i++ {
		c := p[i]
		switch {
		case c >= '0' && c <= '9':
			digits++
		case c >= 'a' && c <= 'z':
		case c >= 'A' && c <= 'Z':
			c += 'a' - 'A'
		default:
			continue
		}
		buf[n] = c
		n++
	}
	if n == 9 && digits == 9 {
		n = 5
	}
	return string(buf[:n])
}

// normalizeCity normalizes a city name and spells out the abbreviations of
// saint, fort and mount.
func normalizeCity(s string) string {
	n := normalizeName(s)
	if n == "" {
		return ""
	}
	toks := strings.Split(n, " ")
	changed := false
	for i, t := range toks {
		if long, ok := cityWords[t]; ok {
			toks[i] = long
			changed = true
		}
	}
	if !changed {
		return n
	}
	return truncateName(strings.Join(toks, " "))
}

var cityWords = map[string]string{"st": "saint", "ste": "sainte", "ft": "fort", "mt": "mount", "pt": "point"}

// normalizeState turns a US state or territory's name into its USPS code;
// any other state is normalized like a name.
func normalizeState(s string) string {
	n := normalizeName(s)
	if code, ok := usStates[n]; ok {
		return code
	}
	return n
}
