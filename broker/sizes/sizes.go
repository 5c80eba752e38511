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
	w := walker{limits: l.WithDefaults()}
	return w.message(m.ProtoReflect())
}

// walker checks one message. path is the field path to where it is, kept
// as a stack so that a path is only spelled out for an error.
type walker struct {
	limits Limits
	path   []step
}

type step struct {
	name  protoreflect.Name
	index int // list index, or -1
}

func (w *walker) fail(rule string) error {
	var b strings.Builder
	for i, s := range w.path {
		if i > 0 {
			b.WriteByte('.')
		}
		b.WriteString(string(s.name))
		if s.index >= 0 {
			b.WriteByte('[')
			b.WriteString(strconv.Itoa(s.index))
			b.WriteByte(']')
		}
	}
	return &Error{Field: b.String(), Rule: rule}
}

func (w *walker) message(m protoreflect.Message) error {
	switch m.Descriptor().FullName() {
	case "google.protobuf.Timestamp":
		if ts, ok := m.Interface().(*timestamppb.Timestamp); ok && ts.CheckValid() != nil {
			return w.fail("must be a valid timestamp (years 0001 to 9999)")
		}
		return nil
	case "google.protobuf.Duration":
		if d, ok := m.Interface().(*durationpb.Duration); ok && d.CheckValid() != nil {
			return w.fail("must be a valid duration")
		}
		return nil
	}
	fields := m.Descriptor().Fields()
	for i := 0; i < fields.Len(); i++ {
		fd := fields.Get(i)
		if !m.Has(fd) {
			continue
		}
		w.path = append(w.path, step{name: fd.Name(), index: -1})
		if err := w.field(m, fd); err != nil {
			return err
		}
		w.path = w.path[:len(w.path)-1]
	}
	return nil
}

func (w *walker) field(m protoreflect.Message, fd protoreflect.FieldDescriptor) error {
	switch {
	case fd.IsList():
		list := m.Get(fd).List()
		if max := listLimit(fd, w.limits); list.Len() > max {
			return w.fail(fmt.Sprintf("must hold at most %d items", max))
		}
		top := len(w.path) - 1
		for j := 0; j < list.Len(); j++ {
			w.path[top].index = j
			if err := w.value(fd, list.Get(j)); err != nil {
				return err
			}
		}
		w.path[top].index = -1
	case fd.IsMap():
		mp := m.Get(fd).Map()
		if mp.Len() > w.limits.ListItems {
			return w.fail(fmt.Sprintf("must hold at most %d entries", w.limits.ListItems))
		}
		var err error
		mp.Range(func(k protoreflect.MapKey, v protoreflect.Value) bool {
			if fd.MapKey().Kind() == protoreflect.StringKind && len(k.String()) > w.limits.IDBytes {
				err = w.fail(fmt.Sprintf("keys must be at most %d bytes", w.limits.IDBytes))
			} else {
				err = w.value(fd.MapValue(), v)
			}
			return err == nil
		})
		return err
	default:
		return w.value(fd, m.Get(fd))
	}
	return nil
}

func (w *walker) value(fd protoreflect.FieldDescriptor, v protoreflect.Value) error {
	switch fd.Kind() {
	case protoreflect.StringKind:
		if max := stringLimit(fd, w.limits); len(v.String()) > max {
			return w.fail(fmt.Sprintf("must be at most %d bytes", max))
		}
	case protoreflect.MessageKind, protoreflect.GroupKind:
		return w.message(v.Message())
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
