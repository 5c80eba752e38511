// Package purpose is the one table of TEFCA exchange purposes the network
// accepts (Exchange Purposes SOP, code system 2.16.840.1.113883.3.7204.1.5.2.1),
// and the one place that decides what a member's purpose list allows.
//
// The table is data, table.json, with a version: the SOP is revised from
// time to time; change the file (and its version), nothing else. Each purpose
// has a responder duty: required (a member must answer; one that declines is
// reported, as possible information blocking), optional (a member answers
// if it lists the purpose), or push-only (sent as a message, never a query).
//
// Purpose lists are default deny: an empty list allows nothing, the single
// entry "all" allows every purpose, and a listed code allows itself and its
// sub-codes (T-HCO allows T-HCO-CC).
package purpose

import (
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
)

// CodeSystem is the OID of the TEFCA exchange purpose code system.
const CodeSystem = "2.16.840.1.113883.3.7204.1.5.2.1"

// Everything is the purpose list entry that allows every purpose.
const Everything = "all"

// Duty is what the Exchange Purposes SOP asks of a responder.
type Duty string

// Responder duties.
const (
	// Required purposes must be answered by every member that holds records.
	Required Duty = "required"
	// Optional purposes are answered by the members that list them.
	Optional Duty = "optional"
	// PushOnly purposes travel as messages, never as queries.
	PushOnly Duty = "push-only"
)

// Purpose is one exchange purpose.
type Purpose struct {
	Code    string `json:"code"`
	Display string `json:"display"`
	// Parent is the code this one refines, if any.
	Parent string `json:"parent,omitempty"`
	Duty   Duty   `json:"duty"`
}

// Queryable reports whether a query may carry the purpose.
func (p Purpose) Queryable() bool { return p.Duty != PushOnly }

//go:embed table.json
var tableJSON []byte

// Table is the versioned table of purposes.
type Table struct {
	Version    string    `json:"version"`
	Source     string    `json:"source"`
	CodeSystem string    `json:"codeSystem"`
	Purposes   []Purpose `json:"purposes"`
}

var table = mustLoad(tableJSON)

// mustLoad parses and checks the embedded table; a broken table stops the
// program at start, never at a query.
func mustLoad(b []byte) Table {
	t, err := parse(b)
	if err != nil {
		panic("purpose: table.json: " + err.Error())
	}
	return t
}

func parse(b []byte) (Table, error) {
	var t Table
	if err := json.Unmarshal(b, &t); err != nil {
		return t, err
	}
	if t.Version == "" || t.CodeSystem != CodeSystem || len(t.Purposes) == 0 {
		return t, errors.New("needs a version, the TEFCA code system and purposes")
	}
	seen := map[string]bool{}
	for _, p := range t.Purposes {
		switch {
		case p.Code == "" || p.Code == Everything || p.Display == "":
			return t, fmt.Errorf("purpose %q: needs a code and a name", p.Code)
		case seen[p.Code]:
			return t, fmt.Errorf("purpose %s listed twice", p.Code)
		case p.Duty != Required && p.Duty != Optional && p.Duty != PushOnly:
			return t, fmt.Errorf("purpose %s: duty must be required, optional or push-only", p.Code)
		case p.Parent != "" && !seen[p.Parent]:
			return t, fmt.Errorf("purpose %s: parent %s must be listed before it", p.Code, p.Parent)
		}
		seen[p.Code] = true
	}
	return t, nil
}

// Version is the table's version.
func Version() string { return table.Version }

// Source names where the table's codes come from.
func Source() string { return table.Source }

// Lookup returns the purpose with the code.
func Lookup(code string) (Purpose, bool) {
	i := slices.IndexFunc(table.Purposes, func(p Purpose) bool { return p.Code == code })
	if i < 0 {
		return Purpose{}, false
	}
	return table.Purposes[i], true
}

// All returns every purpose, in the table's order.
func All() []Purpose { return slices.Clone(table.Purposes) }

// IsRequired reports whether members must answer queries of the purpose.
func IsRequired(code string) bool {
	p, ok := Lookup(code)
	return ok && p.Duty == Required
}

var errUnknown = errors.New("unknown exchange purpose code (TEFCA Exchange Purposes SOP, code system " + CodeSystem + ")")

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
	if !p.Queryable() {
		return fmt.Errorf("%s is a push-only purpose and cannot be used for a query", p.Code)
	}
	return nil
}

// Validate checks that code names a known purpose.
func Validate(code string) error {
	if _, ok := Lookup(code); !ok {
		return errUnknown
	}
	return nil
}

// ValidateList checks a member's purpose list: queryable codes, each once,
// or the single entry "all". It returns the index of the first bad entry.
func ValidateList(list []string) (int, error) {
	for i, c := range list {
		if c == Everything {
			if len(list) != 1 {
				return i, errors.New(`"all" must be the only entry of the list`)
			}
			return 0, nil
		}
		if err := ValidateQuery(c); err != nil {
			return i, err
		}
		if slices.Contains(list[:i], c) {
			return i, errors.New("listed twice")
		}
	}
	return 0, nil
}

// Permits reports whether a member's purpose list allows code: the list
// holds "all", the code, or a code it refines. An empty list allows
// nothing.
func Permits(list []string, code string) bool {
	if len(list) == 0 {
		return false
	}
	if list[0] == Everything {
		return true
	}
	for c := code; c != ""; {
		if slices.Contains(list, c) {
			return true
		}
		p, ok := Lookup(c)
		if !ok {
			return false
		}
		c = p.Parent
	}
	return false
}

// Describe renders a purpose list for people: "all", "none" or the codes.
func Describe(list []string) string {
	switch {
	case len(list) == 0:
		return "none"
	case list[0] == Everything:
		return Everything
	}
	out := list[0]
	for _, c := range list[1:] {
		out += "," + c
	}
	return out
}
