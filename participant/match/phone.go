package match

import (
	"strings"

	"github.com/nyaruka/phonenumbers"
)

// defaultPhoneRegion is the region a phone number without a country code is
// read in when the address names no country: the network is a US one.
const defaultPhoneRegion = "US"

// phoneRegion returns the ISO 3166 region to read phone numbers of an
// address in: the address's country when it is a two-letter code or the
// United States, otherwise defaultPhoneRegion.
func phoneRegion(country string) string {
	c := strings.ToUpper(strings.TrimSpace(country))
	switch c {
	case "", "US", "USA", "UNITED STATES", "UNITED STATES OF AMERICA":
		return defaultPhoneRegion
	}
	if len(c) == 2 && c[0] >= 'A' && c[0] <= 'Z' && c[1] >= 'A' && c[1] <= 'Z' {
		return c
	}
	return defaultPhoneRegion
}

// nanpRegions share country code 1 and ten-digit national numbers.
var nanpRegions = map[string]bool{
	"US": true, "CA": true, "PR": true, "VI": true, "GU": true, "AS": true, "MP": true,
	"AG": true, "AI": true, "BB": true, "BM": true, "BS": true, "DM": true, "DO": true, "GD": true,
	"JM": true, "KN": true, "KY": true, "LC": true, "MS": true, "SX": true, "TC": true, "TT": true, "VC": true, "VG": true,
}

// normalizePhone writes a phone number in E.164 form ("+17735550188"),
// reading a number without a country code in region. A number of 7 to 9
// digits without a country code is a local number and keeps its digits
// ("555-0188" → "5550188"); fewer than 7 or more than 15 digits is no
// number (""). An extension ("x12", "ext. 12") is dropped. North American
// numbers are written directly; others go through libphonenumber's rules
// (nyaruka/phonenumbers), which know each country's trunk prefix ("020 7946
// 0018" in GB → "+442079460018"). It is idempotent.
func normalizePhone(p, region string) string {
	main, digits, plus := phoneDigits(p)
	n := len(digits)
	if n < 7 || n > 15 {
		return ""
	}
	nanp := nanpRegions[region]
	switch {
	case plus && digits[0] == '1' && n == 11:
		return "+" + digits
	case !plus && nanp && n == 10:
		return "+1" + digits
	case !plus && nanp && n == 11 && digits[0] == '1':
		return "+" + digits
	case !plus && n <= 9:
		if nanp {
			return digits
		}
	}
	num, err := phonenumbers.Parse(main, region)
	if err == nil {
		if e := phonenumbers.Format(num, phonenumbers.E164); len(e) >= 8 && len(e) <= 16 && isE164(e) {
			return e
		}
	}
	if plus {
		return "+" + digits
	}
	return digits
}

// phoneDigits returns the part of p before any extension, its ASCII digits,
// and whether a + came before the first digit. An extension starts at the
// first letter that follows at least seven digits.
func phoneDigits(p string) (main, digits string, plus bool) {
	var b [16]byte
	n, seen := 0, 0
	end := len(p)
	for i := 0; i < len(p); i++ {
		c := p[i]
		switch {
		case c >= '0' && c <= '9':
			if n < len(b) {
				b[n] = c
				n++
			} else {
				n = len(b) // too many: no number
			}
			seen++
		case c == '+' && seen == 0:
			plus = true
		case (c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z') && seen >= 7:
			end = i
			i = len(p)
		}
	}
	if seen > 15 {
		return "", "", false
	}
	return p[:end], string(b[:n]), plus
}

// isE164 reports whether s is + and digits.
func isE164(s string) bool {
	if s == "" || s[0] != '+' {
		return false
	}
	for i := 1; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}
