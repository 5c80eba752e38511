package participant

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/openqhin/openqhin/broker/purpose"
	qhinv1 "github.com/openqhin/openqhin/proto/qhin/v1"
)

// A member's own restrictions, enforced by its Responder on top of whatever
// the network's consent allows: documents carrying security labels, and
// patients the member restricted locally. Each is decided here, in one
// function.

// unrestrictedLabels are the HL7 v3 confidentiality codes (code system
// 2.16.840.1.113883.5.25) that ask for no more than ordinary handling:
// unrestricted, low, moderate, normal. Every other label (R restricted, V
// very restricted, and the ActCode sensitivity codes such as ETH substance
// use under 42 CFR Part 2, HIV, PSY psychiatry, SDV sexual and domestic
// violence, or any code this table does not know) withholds a document
// unless the member's policy allows the label for the query's purpose.
var unrestrictedLabels = []string{"U", "L", "M", "N"}

// LabelPolicy is a member's policy for labelled documents: for each label,
// the purposes (a purpose list: codes covering the codes that refine them,
// or "all") that may see documents carrying it. The zero policy allows no
// label for any purpose: labelled documents are withheld, failing closed —
// a Part 2 record needs the patient's written consent, which the member
// states by allowing the label.
type LabelPolicy map[string][]string

// ParseLabelPolicy reads rules of the form LABEL=PURPOSE[,PURPOSE…]
// (qhin-participant --allow-label); a label given twice adds purposes.
// Errors name the rule by position, never its text.
func ParseLabelPolicy(rules []string) (LabelPolicy, error) {
	p := LabelPolicy{}
	for i, rule := range rules {
		label, list, ok := strings.Cut(rule, "=")
		if !ok {
			return nil, fmt.Errorf("label rule %d: want LABEL=PURPOSE[,PURPOSE...]", i+1)
		}
		if err := checkLabel(label); err != nil {
			return nil, fmt.Errorf("label rule %d: label: %w", i+1, err)
		}
		if slices.Contains(unrestrictedLabels, label) {
			return nil, fmt.Errorf("label rule %d: label: %s never withholds a document (only U, L, M, N do not)", i+1, label)
		}
		var purposes []string
		for _, c := range strings.Split(list, ",") {
			if c = strings.TrimSpace(c); c != "" && !slices.Contains(p[label], c) && !slices.Contains(purposes, c) {
				purposes = append(purposes, c)
			}
		}
		purposes = append(p[label], purposes...)
		if len(purposes) == 0 {
			return nil, fmt.Errorf("label rule %d: purpose: at least one is required", i+1)
		}
		if j, err := purpose.ValidateList(purposes); err != nil {
			return nil, fmt.Errorf("label rule %d: purpose %d: %w", i+1, j+1, err)
		}
		p[label] = purposes
	}
	return p, nil
}

// checkLabel accepts a security label code: 1 to 32 letters, digits, '-'
// or '_'.
func checkLabel(l string) error {
	if l == "" || len(l) > 32 {
		return errors.New("must be 1 to 32 characters")
	}
	for _, r := range l {
		if !(r >= 'A' && r <= 'Z' || r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
			return errors.New("only letters, digits, '-' and '_'")
		}
	}
	return nil
}

// Withholds reports whether a document carrying labels is withheld from a
// query of purposeCode: some label other than U, L, M or N is not allowed
// for the purpose by the policy.
func (p LabelPolicy) Withholds(labels []string, purposeCode string) bool {
	for _, l := range labels {
		if slices.Contains(unrestrictedLabels, l) {
			continue
		}
		if !purpose.Permits(p[l], purposeCode) {
			return true
		}
	}
	return false
}

// restrictionWithholds reports whether a member's local restriction of a
// patient (nil for none) withholds the patient from a query of
// purposeCode: a restriction without purposes covers all exchange.
func restrictionWithholds(r *qhinv1.Restriction, purposeCode string) bool {
	if r == nil {
		return false
	}
	return len(r.Purposes) == 0 || purpose.Permits(r.Purposes, purposeCode)
}
