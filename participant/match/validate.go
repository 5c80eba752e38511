package match

import (
	"strings"
	"time"
	"unicode/utf8"

	qhinv1 "github.com/openqhin/openqhin/proto/qhin/v1"
)

// FieldError reports a demographics field that a discovery query cannot
// use. It names the field by its wire path and says what is wrong in words
// fixed by this package: it never holds the submitted value, which is PHI,
// so it is safe to log and to return to the caller (as gRPC
// InvalidArgument).
type FieldError struct {
	// Field is the wire path of the field, for example
	// "demographics.birth_date".
	Field string
	// Reason says what the field must be, for example "required".
	Reason string
}

// Error returns "field: reason".
func (e *FieldError) Error() string { return e.Field + ": " + e.Reason }

// Wire paths of the validated fields.
const (
	fieldDemographics = "demographics"
	fieldGiven        = "demographics.given"
	fieldFamily       = "demographics.family"
	fieldBirthDate    = "demographics.birth_date"
	fieldGender       = "demographics.gender"
	fieldPostalCode   = "demographics.address.postal_code"
	fieldPhone        = "demographics.phone"
)

// Reasons. Every FieldError carries one of these fixed texts.
const (
	reasonRequired    = "required"
	reasonName        = "must contain a letter"
	reasonNameLength  = "must be at most 100 characters"
	reasonDateFormat  = "must be a date as YYYY-MM-DD"
	reasonDateReal    = "must be a real calendar date"
	reasonDateFuture  = "must not be in the future"
	reasonDateTooOld  = "must not be before 1583-01-01"
	reasonGender      = "must be one of male, female, other, unknown"
	reasonUSZip       = "must be a US ZIP code of 5 or 9 digits"
	reasonPostalCode  = "must be a postal code of at most 10 letters, digits, spaces or hyphens, with a digit"
	reasonPhoneDigits = "must have 7 to 15 digits"
	reasonPhoneChars  = "must hold only digits, spaces and + ( ) - . before any extension"
	reasonPhoneLength = "must be at most 40 characters"
)

// EarliestBirthYear is the first year a query's birth date may fall in:
// 1583, the first full year of the Gregorian calendar, in which every date
// on the wire is read. Earlier dates cannot be compared without knowing
// which calendar wrote them. Registries of deceased persons and archives
// hold people born long before 1900, so no later bound is set; records
// (stored, imported, evaluated) are compared whatever their year.
const EarliestBirthYear = 1583

// maxNameRunes is the longest given or family name a query may carry.
const maxNameRunes = 100

// Validate checks demographics for a patient discovery query: given,
// family, birth_date and gender are required; birth_date must be a real
// date as YYYY-MM-DD, not in the future and not before 1583 (see
// [EarliestBirthYear]); gender must be
// a FHIR administrative gender code; address.postal_code and phone, when
// present, must look like a postal code and a phone number. Names are
// limited to 100 characters, which also bounds the cost of scoring. It returns nil
// or the first problem as a [*FieldError].
func Validate(d *qhinv1.Demographics) error {
	return validateAt(d, time.Now())
}

// validateAt is Validate with the current time as a parameter.
func validateAt(d *qhinv1.Demographics, now time.Time) error {
	if d == nil {
		return &FieldError{Field: fieldDemographics, Reason: reasonRequired}
	}
	for _, f := range []struct{ field, value string }{
		{fieldGiven, d.GetGiven()},
		{fieldFamily, d.GetFamily()},
	} {
		if strings.TrimSpace(f.value) == "" {
			return &FieldError{Field: f.field, Reason: reasonRequired}
		}
		if utf8.RuneCountInString(f.value) > maxNameRunes {
			return &FieldError{Field: f.field, Reason: reasonNameLength}
		}
		if !hasLetter(normalizeName(f.value)) {
			return &FieldError{Field: f.field, Reason: reasonName}
		}
	}
	if err := validateBirthDate(d.GetBirthDate(), now); err != nil {
		return err
	}
	switch d.GetGender() {
	case "male", "female", "other", "unknown":
	case "":
		return &FieldError{Field: fieldGender, Reason: reasonRequired}
	default:
		return &FieldError{Field: fieldGender, Reason: reasonGender}
	}
	if p := strings.TrimSpace(d.GetAddress().GetPostalCode()); p != "" {
		if reason := checkPostalCode(p, d.GetAddress().GetCountry()); reason != "" {
			return &FieldError{Field: fieldPostalCode, Reason: reason}
		}
	}
	if p := strings.TrimSpace(d.GetPhone()); p != "" {
		if reason := checkPhone(p); reason != "" {
			return &FieldError{Field: fieldPhone, Reason: reason}
		}
	}
	return nil
}

// hasLetter reports whether a normalized name holds a letter.
func hasLetter(s string) bool {
	for _, r := range s {
		if r < '0' || r > '9' {
			return true // normalized names hold only letters, digits, marks and spaces
		}
	}
	return false
}

// validateBirthDate checks a wire birth date.
func validateBirthDate(s string, now time.Time) error {
	if s == "" {
		return &FieldError{Field: fieldBirthDate, Reason: reasonRequired}
	}
	if len(s) != 10 || s[4] != '-' || s[7] != '-' {
		return &FieldError{Field: fieldBirthDate, Reason: reasonDateFormat}
	}
	for i := range len(s) {
		if i != 4 && i != 7 && (s[i] < '0' || s[i] > '9') {
			return &FieldError{Field: fieldBirthDate, Reason: reasonDateFormat}
		}
	}
	y, m, d := parseBirthDate(s)
	if !isCalendarDate(y, m, d) {
		return &FieldError{Field: fieldBirthDate, Reason: reasonDateReal}
	}
	if y < EarliestBirthYear {
		return &FieldError{Field: fieldBirthDate, Reason: reasonDateTooOld}
	}
	// A birth date is a local date: accept today's date in the
	// easternmost time zone (UTC+14).
	latest := now.UTC().Add(14 * time.Hour)
	ly, lm, ld := latest.Date()
	if y*10000+m*100+d > ly*10000+int(lm)*100+ld {
		return &FieldError{Field: fieldBirthDate, Reason: reasonDateFuture}
	}
	return nil
}

// checkPostalCode returns why p is not a postal code, or "".
func checkPostalCode(p, country string) string {
	switch strings.ToUpper(strings.TrimSpace(country)) {
	case "US", "USA", "UNITED STATES", "UNITED STATES OF AMERICA":
		if !isUSZip(p) {
			return reasonUSZip
		}
		return ""
	}
	if len(p) > 10 {
		return reasonPostalCode
	}
	digits := 0
	for i := 0; i < len(p); i++ {
		c := p[i]
		switch {
		case c >= '0' && c <= '9':
			digits++
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c == ' ', c == '-':
		default:
			return reasonPostalCode
		}
	}
	if digits == 0 {
		return reasonPostalCode
	}
	return ""
}

// isUSZip reports whether p is a ZIP code (12345) or ZIP+4 (12345-6789 or
// 123456789).
func isUSZip(p string) bool {
	if len(p) == 10 && p[5] == '-' {
		p = p[:5] + p[6:]
	}
	if len(p) != 5 && len(p) != 9 {
		return false
	}
	for i := 0; i < len(p); i++ {
		if p[i] < '0' || p[i] > '9' {
			return false
		}
	}
	return true
}

// checkPhone returns why p is not a phone number, or "".
func checkPhone(p string) string {
	if len(p) > 40 {
		return reasonPhoneLength
	}
	n := 0
	for i := 0; i < len(p); i++ {
		c := p[i]
		switch {
		case c >= '0' && c <= '9':
			n++
		case c == ' ', c == '+', c == '(', c == ')', c == '-', c == '.':
		case (c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z') && n >= 7:
			// An extension ("x12", "ext. 12") ends the number.
			i = len(p)
		default:
			return reasonPhoneChars
		}
	}
	if n < 7 || n > 15 {
		return reasonPhoneDigits
	}
	return ""
}
