// Package purpose is the one table of TEFCA exchange purposes the network
// accepts (Exchange Purposes SOP, code system 2.16.840.1.113883.3.7204.1.5.2.1).
// The SOP is revised from time to time: change the table, nothing else.
package purpose

import (
	"errors"
	"fmt"
	"slices"
)

// CodeSystem is the OID of the TEFCA exchange purpose code system.
const CodeSystem = "2.16.840.1.113883.3.7204.1.5.2.1"

// Duty is what the Exchange Purposes SOP asks of a responder.
type Duty string

// Responder duties.
const (
	Must   Duty = "must"
	Should Duty = "should"
	May    Duty = "may"
)

// Purpose is one exchange purpose.
type Purpose struct {
	Code    string
	Display string
	Duty    Duty
	// PushOnly purposes travel as messages, never as queries.
	PushOnly bool
}

// table lists every purpose; the order is the SOP's.
var table = []Purpose{
	{Code: "T-TREAT", Display: "Treatment", Duty: Should},
	{Code: "T-TRTMNT", Display: "TEFCA Required Treatment", Duty: Must},
	{Code: "T-PYMNT", Display: "Payment", Duty: May},
	{Code: "T-HCO", Display: "Health care operations", Duty: Should},
	{Code: "T-HCO-CC", Display: "Care coordination", Duty: Should},
	{Code: "T-HCO-HED", Display: "HEDIS reporting", Duty: Should},
	{Code: "T-HCO-QAI", Display: "Quality assessment and improvement", Duty: Should},
	{Code: "T-HCO-POP", Display: "Population-based activities", Duty: Should},
	{Code: "T-HCO-PTSAFETY", Display: "Patient safety", Duty: Should},
	{Code: "T-HCO-PERF", Display: "Performance evaluation", Duty: Should},
	{Code: "T-PH", Display: "Public health", Duty: Should},
	{Code: "T-PH-ECR", Display: "Electronic case reporting", Duty: Should, PushOnly: true},
	{Code: "T-PH-ELR", Display: "Electronic lab reporting", Duty: Should, PushOnly: true},
	{Code: "T-IAS", Display: "Individual access services", Duty: Must},
	{Code: "T-GOVDTRM", Display: "Government benefits determination", Duty: Should},
	{Code: "T-GOVDTRM-SSD", Display: "Social Security disability determination", Duty: Should},
	{Code: "T-GOVDTRM-ACP", Display: "Social Security disability determination (authorization)", Duty: Should},
}

// Lookup returns the purpose with the code.
func Lookup(code string) (Purpose, bool) {
	i := slices.IndexFunc(table, func(p Purpose) bool { return p.Code == code })
	if i < 0 {
		return Purpose{}, false
	}
	return table[i], true
}

// All returns every purpose, in the SOP's order.
func All() []Purpose { return slices.Clone(table) }

// ValidateQuery checks that code names a purpose a query may carry. The
// error says what is wrong in fixed words: it never repeats the code, which
// is the caller's text until it is known to be in the table.
func ValidateQuery(code string) error {
	if code == "" {
		return errors.New("required; use a TEFCA exchange purpose code such as T-TRTMNT")
	}
	p, ok := Lookup(code)
	if !ok {
		return errUnknown
	}
	if p.PushOnly {
		return fmt.Errorf("%s is a push-only purpose and cannot be used for a query", p.Code)
	}
	return nil
}

var errUnknown = errors.New("unknown exchange purpose code (TEFCA Exchange Purposes SOP, code system " + CodeSystem + ")")

// Validate checks that code names a known purpose.
func Validate(code string) error {
	if _, ok := Lookup(code); !ok {
		return errUnknown
	}
	return nil
}

// Permits reports whether a member's purpose list allows code; an empty list
// allows every purpose.
func Permits(list []string, code string) bool {
	return len(list) == 0 || slices.Contains(list, code)
}
