// Package sizes caps the size of every string and repeated field of a
// message, before anything else looks at it. A broker checks each Gateway
// request, and each piece of a member's answer, against one set of Limits;
// a member checks the brokers' requests the same way.
//
// The check walks the message's descriptor, so a field added to the API is
// capped the day it is added. A field is capped by its kind:
//
//   - links and patient_ids (the patients a document query names): Links items;
//   - any other repeated field: ListItems items;
//   - id, *_id, sha256 and purpose_of_use: IDBytes bytes;
//   - any other string: TextBytes bytes;
//   - google.protobuf.Timestamp and Duration must be valid (a year within
//     0001-9999; a duration of at most 10,000 years).
//
// The error names the field by its wire path ("links[3].patient_id") and
// the rule it broke, never the value: it is safe to return and to log.
package sizes

import (
	"fmt"
	"strconv"
	"strings"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Defaults of Limits fields left zero.
const (
	DefaultIDBytes   = 128
	DefaultTextBytes = 512
	DefaultListItems = 32
	DefaultLinks     = 1000
)

// Limits cap fields by kind. Zero fields take the defaults.
type Limits struct {
	// IDBytes caps ids, codes and digests.
	IDBytes int
	// TextBytes caps every other string: names, address lines, titles.
	TextBytes int
	// ListItems caps a repeated field: identifiers, address lines, type
	// codes.
	ListItems int
	// Links caps the patients one document query names.
	Links int
}

// WithDefaults returns l with every zero field set to its default.
func (l Limits) WithDefaults() Limits {
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&l.IDBytes, DefaultIDBytes)
	def(&l.TextBytes, DefaultTextBytes)
	def(&l.ListItems, DefaultListItems)
	def(&l.Links, DefaultLinks)
	return l
}

// Error is a field over its limit: the field's wire path and the rule, in
// words fixed by this package.
type Error struct {
	Field string
	Rule  string
}

// Error returns "field: rule".
func (e *Error) Error() string { return e.Field + ": " + e.Rule }

// Check returns an *Error for the first field of m, in field order, that
// breaks a limit, or nil. A repeated field's length is checked before its
// items.
func Check(m proto.Message, l Limits) error {
	if m == nil {
		return nil
	}
	return check(m.ProtoReflect(), l.WithDefaults(), nil)
}

// step is one element of a field path, kept as a chain so that a path is
// only spelled out for an error.
type step struct {
	parent *step
	name   protoreflect.Name
	index  int // list index, or -1
}

func (s *step) String() string {
	var parts []string
	for ; s != nil; s = s.parent {
		p := string(s.name)
		if s.index >= 0 {
			p += "[" + strconv.Itoa(s.index) + "]"
		}
		parts = append(parts, p)
	}
	for i, j := 0, len(parts)-1; i < j; i, j = i+1, j-1 {
		parts[i], parts[j] = parts[j], parts[i]
	}
	return strings.Join(parts, ".")
}

func check(m protoreflect.Message, l Limits, at *step) error {
	switch m.Descriptor().FullName() {
	case "google.protobuf.Timestamp":
		if ts, ok := m.Interface().(*timestamppb.Timestamp); ok && ts.CheckValid() != nil {
			return &Error{Field: at.String(), Rule: "must be a valid timestamp (years 0001 to 9999)"}
		}
		return nil
	case "google.protobuf.Duration":
		if d, ok := m.Interface().(*durationpb.Duration); ok && d.CheckValid() != nil {
			return &Error{Field: at.String(), Rule: "must be a valid duration"}
		}
		return nil
	}
	fields := m.Descriptor().Fields()
	for i := 0; i < fields.Len(); i++ {
		fd := fields.Get(i)
		if !m.Has(fd) {
			continue
		}
		here := &step{parent: at, name: fd.Name(), index: -1}
		switch {
		case fd.IsList():
			list := m.Get(fd).List()
			if max := listLimit(fd, l); list.Len() > max {
				return &Error{Field: here.String(), Rule: fmt.Sprintf("must hold at most %d items", max)}
			}
			for j := 0; j < list.Len(); j++ {
				if err := checkValue(fd, list.Get(j), l, &step{parent: at, name: fd.Name(), index: j}); err != nil {
					return err
				}
			}
		case fd.IsMap():
			mp := m.Get(fd).Map()
			if mp.Len() > l.ListItems {
				return &Error{Field: here.String(), Rule: fmt.Sprintf("must hold at most %d entries", l.ListItems)}
			}
			var err error
			mp.Range(func(k protoreflect.MapKey, v protoreflect.Value) bool {
				if fd.MapKey().Kind() == protoreflect.StringKind && len(k.String()) > l.IDBytes {
					err = &Error{Field: here.String(), Rule: fmt.Sprintf("keys must be at most %d bytes", l.IDBytes)}
				} else {
					err = checkValue(fd.MapValue(), v, l, here)
				}
				return err == nil
			})
			if err != nil {
				return err
			}
		default:
			if err := checkValue(fd, m.Get(fd), l, here); err != nil {
				return err
			}
		}
	}
	return nil
}

func checkValue(fd protoreflect.FieldDescriptor, v protoreflect.Value, l Limits, at *step) error {
	switch fd.Kind() {
	case protoreflect.StringKind:
		if max := stringLimit(fd, l); len(v.String()) > max {
			return &Error{Field: at.String(), Rule: fmt.Sprintf("must be at most %d bytes", max)}
		}
	case protoreflect.MessageKind, protoreflect.GroupKind:
		return check(v.Message(), l, at)
	}
	return nil
}

func listLimit(fd protoreflect.FieldDescriptor, l Limits) int {
	switch fd.Name() {
	case "links", "patient_ids":
		return l.Links
	}
	return l.ListItems
}

func stringLimit(fd protoreflect.FieldDescriptor, l Limits) int {
	name := string(fd.Name())
	switch {
	case name == "id", strings.HasSuffix(name, "_id"), strings.HasSuffix(name, "_ids"),
		name == "sha256", name == "purpose_of_use":
		return l.IDBytes
	}
	return l.TextBytes
}
