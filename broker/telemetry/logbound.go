package telemetry

import (
	"fmt"
	"log/slog"
)

// Bounds of one log record. Nodes log ids, codes and counts; a value longer
// than MaxLogValue is a bug or an attack, and is withheld rather than
// written, so that no caller can fill a log with its text.
const (
	MaxLogValue  = 1 << 10
	MaxLogRecord = 8 << 10
)

// BoundRecord returns r unchanged when its message and every attribute value
// are at most MaxLogValue bytes and together at most MaxLogRecord; otherwise
// a copy in which each longer value is replaced by a note of its length, and
// the attributes past MaxLogRecord by a note of how many were dropped.
func BoundRecord(r slog.Record) slog.Record {
	total, fits := len(r.Message), len(r.Message) <= MaxLogValue
	r.Attrs(func(a slog.Attr) bool {
		n, ok := attrSize(a)
		total += n
		fits = fits && ok && total <= MaxLogRecord
		return fits
	})
	if fits {
		return r
	}
	msg := r.Message
	if len(msg) > MaxLogValue {
		msg = withheld(len(msg))
	}
	out := slog.NewRecord(r.Time, r.Level, msg, r.PC)
	budget, dropped := MaxLogRecord-len(msg), 0
	r.Attrs(func(a slog.Attr) bool {
		a = boundAttr(a)
		n, _ := attrSize(a)
		if n > budget {
			dropped++
			return true
		}
		budget -= n
		out.AddAttrs(a)
		return true
	})
	if dropped > 0 {
		out.AddAttrs(slog.Int("log_attrs_dropped", dropped))
	}
	return out
}

func withheld(n int) string {
	return fmt.Sprintf("[%d bytes withheld: longer than a log value may be]", n)
}

// attrSize is about how many bytes a renders to, and whether every value in
// it is within MaxLogValue.
func attrSize(a slog.Attr) (int, bool) {
	v := a.Value.Resolve()
	switch v.Kind() {
	case slog.KindGroup:
		n, ok := len(a.Key), true
		for _, g := range v.Group() {
			m, gok := attrSize(g)
			n, ok = n+m, ok && gok
		}
		return n, ok
	case slog.KindString:
		return len(a.Key) + len(v.String()), len(v.String()) <= MaxLogValue
	case slog.KindAny:
		s := fmt.Sprint(v.Any())
		return len(a.Key) + len(s), len(s) <= MaxLogValue
	}
	return len(a.Key) + 24, true
}

// boundAttr withholds the values of a that are over MaxLogValue.
func boundAttr(a slog.Attr) slog.Attr {
	v := a.Value.Resolve()
	switch v.Kind() {
	case slog.KindGroup:
		g := v.Group()
		out := make([]any, len(g))
		for i, ga := range g {
			out[i] = boundAttr(ga)
		}
		return slog.Group(a.Key, out...)
	case slog.KindString:
		if n := len(v.String()); n > MaxLogValue {
			return slog.String(a.Key, withheld(n))
		}
	case slog.KindAny:
		if s := fmt.Sprint(v.Any()); len(s) > MaxLogValue {
			return slog.String(a.Key, withheld(len(s)))
		}
	}
	return slog.Attr{Key: a.Key, Value: v}
}
