package facade

import (
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/openqhin/openqhin/participant/store"
)

// search is a search request's parameters: those the facade understands are
// taken (and repeated in the self link), the others ignored and left out of
// it, as FHIR servers do, or refused under "Prefer: handling=strict".
type search struct {
	q      url.Values
	used   url.Values
	known  map[string]bool
	strict bool
}

func newSearch(r *http.Request, known ...string) (*search, error) {
	s := &search{q: r.URL.Query(), used: url.Values{}, known: map[string]bool{"_format": true}}
	for _, k := range known {
		s.known[k] = true
	}
	for _, p := range r.Header.Values("Prefer") {
		for _, part := range strings.Split(p, ",") {
			if strings.TrimSpace(part) == "handling=strict" {
				s.strict = true
			}
		}
	}
	for k := range s.q {
		if !s.known[k] {
			if s.strict {
				// The parameter's name is the caller's text, but a name,
				// not a value: it is safe to say which one is unknown
				// when it looks like a parameter name.
				name := "a search parameter"
				if paramName(k) {
					name = "search parameter " + k
				}
				return nil, badRequest(k, name+": not supported by this server (Prefer: handling=strict); GET /metadata lists the supported ones")
			}
			continue
		}
	}
	return s, nil
}

// paramName reports whether k looks like a FHIR search parameter name,
// possibly with a modifier.
func paramName(k string) bool {
	if len(k) == 0 || len(k) > 64 {
		return false
	}
	for _, r := range k {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == ':' || r == '.') {
			return false
		}
	}
	return true
}

// all returns every value of parameter k, marking it used.
func (s *search) all(k string) []string {
	v := s.q[k]
	if len(v) > 0 {
		s.used[k] = v
	}
	return v
}

// get returns the first value of k.
func (s *search) get(k string) string {
	if v := s.all(k); len(v) > 0 {
		return v[0]
	}
	return ""
}

// count reads _count: def when absent, 1..MaxCount.
func (s *search) count(def int) (int, error) {
	v := s.get("_count")
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > MaxCount {
		return 0, badRequest("_count", "_count: must be a whole number from 1 to "+strconv.Itoa(MaxCount))
	}
	return n, nil
}

// selfURL is the search's self link: the path with the parameters used.
func (s *search) selfURL(base, path string) string {
	if len(s.used) == 0 {
		return base + path
	}
	return base + path + "?" + s.used.Encode()
}

// tokens reads a token parameter's values (comma-separated, repeatable):
// [system|]code pairs.
func (s *search) tokens(k string) []token {
	var out []token
	for _, v := range s.all(k) {
		for _, t := range strings.Split(v, ",") {
			sys, code, ok := strings.Cut(t, "|")
			if !ok {
				sys, code = "", t
			}
			if code = strings.TrimSpace(code); code != "" {
				out = append(out, token{system: sys, code: code, hasSystem: ok})
			}
		}
	}
	return out
}

type token struct {
	system, code string
	hasSystem    bool
}

// documentFilter reads the type, date and category parameters of a
// DocumentReference search. none is set when the category asked for cannot
// match (every document here is a clinical note).
func (s *search) documentFilter() (f store.Filter, none bool, err error) {
	for _, t := range s.tokens("type") {
		if t.hasSystem && t.system != "" && t.system != loincSystem {
			return f, false, badRequest("type", "type: document types are LOINC codes (system "+loincSystem+")")
		}
		f.TypeCodes = append(f.TypeCodes, t.code)
	}
	for _, v := range s.all("date") {
		prefix, value := "eq", v
		if len(v) > 2 && v[0] >= 'a' && v[0] <= 'z' {
			prefix, value = v[:2], v[2:]
		}
		start, end, ok := dateRange(value)
		if !ok {
			return f, false, badRequest("date", "date: must be a FHIR date or dateTime, optionally after ge, gt, le, lt or eq")
		}
		var since, until time.Time
		switch prefix {
		case "eq":
			since, until = start, end
		case "ge":
			since = start
		case "gt":
			since = end
		case "le":
			until = end
		case "lt":
			until = start
		default:
			return f, false, badRequest("date", "date: the prefix must be ge, gt, le, lt or eq")
		}
		if !since.IsZero() && since.After(f.Since) {
			f.Since = since
		}
		if !until.IsZero() && (f.Until.IsZero() || until.Before(f.Until)) {
			f.Until = until
		}
	}
	if cats := s.tokens("category"); len(cats) > 0 {
		none = true
		for _, c := range cats {
			if c.code == categoryCode && (!c.hasSystem || c.system == "" || c.system == categorySystem) {
				none = false
			}
		}
	}
	if !f.Since.IsZero() && !f.Until.IsZero() && !f.Since.Before(f.Until) {
		none = true
	}
	return f, none, nil
}

// dateRange returns the instants a FHIR date or dateTime covers: [start,
// end).
func dateRange(v string) (start, end time.Time, ok bool) {
	for _, l := range []struct {
		layout string
		next   func(time.Time) time.Time
	}{
		{"2006", func(t time.Time) time.Time { return t.AddDate(1, 0, 0) }},
		{"2006-01", func(t time.Time) time.Time { return t.AddDate(0, 1, 0) }},
		{"2006-01-02", func(t time.Time) time.Time { return t.AddDate(0, 0, 1) }},
		{time.RFC3339, func(t time.Time) time.Time { return t.Add(time.Second) }},
		{time.RFC3339Nano, func(t time.Time) time.Time { return t.Add(time.Nanosecond) }},
	} {
		if t, err := time.Parse(l.layout, v); err == nil {
			return t.UTC(), l.next(t).UTC(), true
		}
	}
	return time.Time{}, time.Time{}, false
}
