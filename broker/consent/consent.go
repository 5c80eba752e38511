// Package consent decides what a patient's consent directive allows. It is
// the one place that decision is made: brokers call it for every record a
// query would disclose, and its table of cases is its test.
package consent

import (
	"errors"
	"fmt"
	"slices"

	"github.com/openqhin/openqhin/broker/purpose"
	qhinv1 "github.com/openqhin/openqhin/proto/qhin/v1"
)

// Decision is what a directive says of one query.
type Decision int

const (
	// Permit: the directive allows the purpose (or there is none).
	Permit Decision = iota
	// Deny: the directive refuses the purpose.
	Deny
	// Emergency: the directive refuses the purpose, but the query is an
	// emergency treatment access and the directive allows the override.
	Emergency
)

func (d Decision) String() string {
	switch d {
	case Permit:
		return "permit"
	case Deny:
		return "deny"
	case Emergency:
		return "emergency"
	}
	return fmt.Sprintf("Decision(%d)", int(d))
}

// Discloses reports whether the record may be disclosed.
func (d Decision) Discloses() bool { return d != Deny }

// Decide applies a directive to a query of the purpose. A nil directive
// permits. The most specific entry naming the purpose or a code it refines
// decides; without one, opt_out refuses. A refusal turns into Emergency
// when the query is an emergency access (validated by ValidateEmergency)
// and the directive allows the override.
func Decide(d *qhinv1.ConsentDirective, code string, emergency bool) Decision {
	if d == nil {
		return Permit
	}
	deny := d.OptOut
	for c := code; c != ""; {
		if slices.Contains(d.AllowedPurposes, c) {
			deny = false
			break
		}
		if slices.Contains(d.DeniedPurposes, c) {
			deny = true
			break
		}
		p, ok := purpose.Lookup(c)
		if !ok {
			break
		}
		c = p.Parent
	}
	switch {
	case !deny:
		return Permit
	case emergency && d.EmergencyOverride && IsTreatment(code):
		return Emergency
	default:
		return Deny
	}
}

// IsTreatment reports whether a purpose is treatment (T-TREAT or a code
// refining it, such as T-TRTMNT): the only purposes an emergency access
// may carry.
func IsTreatment(code string) bool { return purpose.Permits([]string{"T-TREAT"}, code) }

// ValidateEmergency checks a query's emergency declaration. It returns the
// field at fault and the rule, in fixed words.
func ValidateEmergency(code string, emergency bool, reason string) (field string, err error) {
	switch {
	case !emergency && reason != "":
		return "emergency_reason", errors.New("only with emergency set")
	case !emergency:
		return "", nil
	case !IsTreatment(code):
		return "emergency", errors.New("only treatment queries (T-TRTMNT, T-TREAT) may declare emergency access")
	case reason == "":
		return "emergency_reason", errors.New("required with emergency: why the emergency access is needed")
	}
	return "", nil
}

// ValidatePurposes checks the purposes of a directive: known codes, each
// once. It returns the index of the first bad one.
func ValidatePurposes(list []string) (int, error) {
	for i, c := range list {
		if err := purpose.Validate(c); err != nil {
			return i, err
		}
		if slices.Contains(list[:i], c) {
			return i, errors.New("listed twice")
		}
	}
	return 0, nil
}
