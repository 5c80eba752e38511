package match

import (
	"errors"
	"strings"
	"testing"
	"time"

	qhinv1 "github.com/openqhin/openqhin/proto/qhin/v1"
)

// validNow is the clock of the Validate tests.
var validNow = time.Date(2025, 6, 15, 12, 0, 0, 0, time.UTC)

// validDemo returns demographics that pass Validate.
func validDemo() *qhinv1.Demographics {
	return demo("José María", "Ordóñez", "1980-04-12", "male", "02139-4307", "+1 (617) 555-0123")
}

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		name      string
		edit      func(d *qhinv1.Demographics) // nil for a nil *Demographics
		wantField string                       // "" for valid
		wantMsg   string
	}{
		{"ValidPasses", func(d *qhinv1.Demographics) {}, "", ""},
		{"NilIsRequired", nil, "demographics", "demographics: required"},
		{"MissingGiven", func(d *qhinv1.Demographics) { d.Given = "" }, "demographics.given", "demographics.given: required"},
		{"BlankGiven", func(d *qhinv1.Demographics) { d.Given = "   " }, "demographics.given", "demographics.given: required"},
		{"GivenWithoutLetters", func(d *qhinv1.Demographics) { d.Given = "12345" }, "demographics.given", "demographics.given: must contain a letter"},
		{"GivenTooLong", func(d *qhinv1.Demographics) { d.Given = strings.Repeat("é", 101) }, "demographics.given", "demographics.given: must be at most 100 characters"},
		{"GivenOf100Characters", func(d *qhinv1.Demographics) { d.Given = strings.Repeat("é", 100) }, "", ""},
		{"MissingFamily", func(d *qhinv1.Demographics) { d.Family = "" }, "demographics.family", "demographics.family: required"},
		{"FamilyOfPunctuation", func(d *qhinv1.Demographics) { d.Family = "'-." }, "demographics.family", "demographics.family: must contain a letter"},
		{"MissingBirthDate", func(d *qhinv1.Demographics) { d.BirthDate = "" }, "demographics.birth_date", "demographics.birth_date: required"},
		{"BirthDateWrongFormat", func(d *qhinv1.Demographics) { d.BirthDate = "04/12/1980" }, "demographics.birth_date", "demographics.birth_date: must be a date as YYYY-MM-DD"},
		{"BirthDateCompactForm", func(d *qhinv1.Demographics) { d.BirthDate = "19800412" }, "demographics.birth_date", "demographics.birth_date: must be a date as YYYY-MM-DD"},
		{"BirthDateWithTime", func(d *qhinv1.Demographics) { d.BirthDate = "1980-04-12T00:00" }, "demographics.birth_date", "demographics.birth_date: must be a date as YYYY-MM-DD"},
		{"BirthDateNotRealDate", func(d *qhinv1.Demographics) { d.BirthDate = "1981-02-29" }, "demographics.birth_date", "demographics.birth_date: must be a real calendar date"},
		{"BirthDateMonth13", func(d *qhinv1.Demographics) { d.BirthDate = "1981-13-01" }, "demographics.birth_date", "demographics.birth_date: must be a real calendar date"},
		{"BirthDateLeapDay", func(d *qhinv1.Demographics) { d.BirthDate = "2000-02-29" }, "", ""},
		{"BirthDateBeforeGregorianCalendar", func(d *qhinv1.Demographics) { d.BirthDate = "1582-12-31" }, "demographics.birth_date", "demographics.birth_date: must not be before 1583-01-01"},
		{"BirthDateIn1583", func(d *qhinv1.Demographics) { d.BirthDate = "1583-01-01" }, "", ""},
		{"BirthDateOfDeceasedBornBefore1900", func(d *qhinv1.Demographics) { d.BirthDate = "1850-03-12" }, "", ""},
		{"BirthDateToday", func(d *qhinv1.Demographics) { d.BirthDate = "2025-06-15" }, "", ""},
		{"BirthDateTomorrowInUTCPlus14", func(d *qhinv1.Demographics) { d.BirthDate = "2025-06-16" }, "", ""},
		{"BirthDateInFuture", func(d *qhinv1.Demographics) { d.BirthDate = "2025-06-17" }, "demographics.birth_date", "demographics.birth_date: must not be in the future"},
		{"MissingGender", func(d *qhinv1.Demographics) { d.Gender = "" }, "demographics.gender", "demographics.gender: required"},
		{"GenderUnknownIsValid", func(d *qhinv1.Demographics) { d.Gender = "unknown" }, "", ""},
		{"GenderNotFHIRCode", func(d *qhinv1.Demographics) { d.Gender = "M" }, "demographics.gender", "demographics.gender: must be one of male, female, other, unknown"},
		{"NoAddressIsValid", func(d *qhinv1.Demographics) { d.Address = nil }, "", ""},
		{"PostalCodeAbsentIsValid", func(d *qhinv1.Demographics) { d.Address.PostalCode = "" }, "", ""},
		{"PostalCodeZIP5", func(d *qhinv1.Demographics) { d.Address.PostalCode = "02139" }, "", ""},
		{"PostalCodeZIP9", func(d *qhinv1.Demographics) { d.Address.PostalCode = "021394307" }, "", ""},
		{"PostalCodeUK", func(d *qhinv1.Demographics) { d.Address.PostalCode = "SW1A 1AA" }, "", ""},
		{"PostalCodeAustralian", func(d *qhinv1.Demographics) { d.Address.PostalCode = "4011" }, "", ""},
		{"PostalCodeTooLong", func(d *qhinv1.Demographics) { d.Address.PostalCode = "12345678901" }, "demographics.address.postal_code", "demographics.address.postal_code: must be a postal code of at most 10 letters, digits, spaces or hyphens, with a digit"},
		{"PostalCodeNotACode", func(d *qhinv1.Demographics) { d.Address.PostalCode = "Main St" }, "demographics.address.postal_code", "demographics.address.postal_code: must be a postal code of at most 10 letters, digits, spaces or hyphens, with a digit"},
		{"PostalCodeSymbols", func(d *qhinv1.Demographics) { d.Address.PostalCode = "021#39" }, "demographics.address.postal_code", "demographics.address.postal_code: must be a postal code of at most 10 letters, digits, spaces or hyphens, with a digit"},
		{"PostalCodeUSNeedsZIP", func(d *qhinv1.Demographics) { d.Address.Country = "US"; d.Address.PostalCode = "4011" }, "demographics.address.postal_code", "demographics.address.postal_code: must be a US ZIP code of 5 or 9 digits"},
		{"PostalCodeUSZIPPlus4", func(d *qhinv1.Demographics) { d.Address.Country = "USA"; d.Address.PostalCode = "02139-4307" }, "", ""},
		{"PhoneAbsentIsValid", func(d *qhinv1.Demographics) { d.Phone = "" }, "", ""},
		{"PhoneSevenDigits", func(d *qhinv1.Demographics) { d.Phone = "555-0123" }, "", ""},
		{"PhoneWithExtension", func(d *qhinv1.Demographics) { d.Phone = "617-555-0123 ext. 45" }, "", ""},
		{"PhoneTooShort", func(d *qhinv1.Demographics) { d.Phone = "555-012" }, "demographics.phone", "demographics.phone: must have 7 to 15 digits"},
		{"PhoneTooLong", func(d *qhinv1.Demographics) { d.Phone = "+1 617 555 0123 4567 8" }, "demographics.phone", "demographics.phone: must have 7 to 15 digits"},
		{"PhoneTooLongText", func(d *qhinv1.Demographics) { d.Phone = "617 555 0123" + strings.Repeat(" ", 40) + "." }, "demographics.phone", "demographics.phone: must be at most 40 characters"},
		{"PhoneWithLetters", func(d *qhinv1.Demographics) { d.Phone = "call 6175550123" }, "demographics.phone", "demographics.phone: must hold only digits, spaces and + ( ) - . before any extension"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var d *qhinv1.Demographics
			if tc.edit != nil {
				d = validDemo()
				tc.edit(d)
			}
			err := validateAt(d, validNow)
			if tc.wantField == "" {
				if err != nil {
					t.Fatalf("validateAt() = %v, want nil", err)
				}
				return
			}
			var fe *FieldError
			if !errors.As(err, &fe) {
				t.Fatalf("validateAt() = %v (%T), want *FieldError", err, err)
			}
			if fe.Field != tc.wantField {
				t.Errorf("Field = %q, want %q", fe.Field, tc.wantField)
			}
			if err.Error() != tc.wantMsg {
				t.Errorf("Error() = %q, want %q", err.Error(), tc.wantMsg)
			}
			assertNoPHI(t, err, d)
		})
	}
}

// TestValidate_ErrorNeverHoldsSubmittedValue submits distinctive invalid
// values in every field and checks that no error text holds any of them.
func TestValidate_ErrorNeverHoldsSubmittedValue(t *testing.T) {
	for _, edit := range []func(d *qhinv1.Demographics){
		func(d *qhinv1.Demographics) { d.Given = "4242424242" },
		func(d *qhinv1.Demographics) { d.Family = "31415926" },
		func(d *qhinv1.Demographics) { d.Family = "...." },
		func(d *qhinv1.Demographics) { d.BirthDate = "Zebulon-1980" },
		func(d *qhinv1.Demographics) { d.BirthDate = "1977-02-30" },
		func(d *qhinv1.Demographics) { d.BirthDate = "1512-07-04" },
		func(d *qhinv1.Demographics) { d.BirthDate = "2999-07-04" },
		func(d *qhinv1.Demographics) { d.Gender = "Zebulon" },
		func(d *qhinv1.Demographics) { d.Address.PostalCode = "Zebulon St 12" },
		func(d *qhinv1.Demographics) { d.Address.Country = "US"; d.Address.PostalCode = "98765-43" },
		func(d *qhinv1.Demographics) { d.Phone = "Zebulon 555" },
		func(d *qhinv1.Demographics) { d.Phone = "98765" },
	} {
		d := validDemo()
		edit(d)
		err := validateAt(d, validNow)
		if err == nil {
			t.Errorf("validateAt(%v) = nil, want an error", d)
			continue
		}
		assertNoPHI(t, err, d)
	}
}

// assertNoPHI fails if the text of err holds any value of d.
func assertNoPHI(t *testing.T, err error, d *qhinv1.Demographics) {
	t.Helper()
	msg := strings.ToLower(err.Error())
	values := []string{d.GetGiven(), d.GetFamily(), d.GetBirthDate(), d.GetGender(), d.GetPhone(),
		d.GetAddress().GetPostalCode(), d.GetAddress().GetCity()}
	values = append(values, d.GetAddress().GetLines()...)
	for _, v := range values {
		v = strings.ToLower(strings.TrimSpace(v))
		// Values of a few characters ("m", "...") may occur in any text.
		if len(v) >= 4 && strings.Contains(msg, v) {
			t.Errorf("error %q holds a submitted value", err)
		}
	}
	var fe *FieldError
	if errors.As(err, &fe) && !knownReasons[fe.Reason] {
		t.Errorf("error %q has a reason that is not one of the fixed texts", err)
	}
}

// knownReasons are the fixed texts a FieldError may carry.
var knownReasons = map[string]bool{
	reasonRequired: true, reasonName: true, reasonDateFormat: true, reasonDateReal: true,
	reasonDateFuture: true, reasonDateTooOld: true, reasonGender: true, reasonUSZip: true,
	reasonPostalCode: true, reasonPhoneDigits: true, reasonPhoneChars: true,
	reasonNameLength: true, reasonPhoneLength: true,
}

func TestValidate_UsesCurrentTime(t *testing.T) {
	d := validDemo()
	d.BirthDate = time.Now().UTC().AddDate(0, 0, 3).Format(time.DateOnly)
	if err := Validate(d); err == nil || !strings.Contains(err.Error(), "future") {
		t.Errorf("Validate(birth date in 3 days) = %v, want a future-date error", err)
	}
	if err := Validate(validDemo()); err != nil {
		t.Errorf("Validate(valid) = %v", err)
	}
}
