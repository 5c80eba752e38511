package fhir

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strings"
	"time"
)

// entry is one resource of a bundle, decoded only as far as its type and id.
type entry struct {
	index   int // position in Bundle.entry, for messages
	fullURL string
	typ     string
	id      string
	raw     json.RawMessage
	latest  time.Time // the latest time the resource records
	hasTime bool      // whether it records any
	// method and url are the entry's request in a transaction: PUT,
	// POST or DELETE, and "Type/id" or "Type". A DELETE has no resource.
	method, url string
}

// decodeBundle streams through a Bundle and returns its type and the entries
// that hold a resource or a DELETE request.
func decodeBundle(data []byte) (string, []entry, error) {
	var bundleType string
	entries, err := decodeBundleInto(data, &bundleType)
	return bundleType, entries, err
}

func decodeBundleInto(data []byte, bundleType *string) ([]entry, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	tok, err := dec.Token()
	if err != nil {
		return nil, jsonProblem("", err)
	}
	if tok != json.Delim('{') {
		return nil, fmt.Errorf("%w: the file is not a JSON object", ErrNotBundle)
	}
	var (
		resourceType string
		entries      []entry
	)
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, jsonProblem("", err)
		}
		switch tok {
		case "resourceType":
			if err := dec.Decode(&resourceType); err != nil {
				return nil, jsonProblem("resourceType", err)
			}
			if resourceType != "Bundle" {
				return nil, notBundle(resourceType)
			}
		case "type":
			if err := dec.Decode(bundleType); err != nil {
				return nil, jsonProblem("type", err)
			}
		case "entry":
			if entries, err = decodeEntries(dec); err != nil {
				return nil, err
			}
		default:
			var skip json.RawMessage
			if err := dec.Decode(&skip); err != nil {
				return nil, jsonProblem("", err)
			}
		}
	}
	if _, err := dec.Token(); err != nil { // the closing brace
		return nil, jsonProblem("", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("not valid JSON: data after the Bundle")
	}
	if resourceType != "Bundle" {
		return nil, notBundle(resourceType)
	}
	return entries, nil
}

var typeName = regexp.MustCompile(`^[A-Za-z]{1,64}$`)

func notBundle(resourceType string) error {
	switch {
	case resourceType == "":
		return fmt.Errorf("%w: no resourceType", ErrNotBundle)
	case typeName.MatchString(resourceType):
		return fmt.Errorf("%w: resourceType is %s", ErrNotBundle, resourceType)
	default:
		return fmt.Errorf("%w: resourceType is not a FHIR type name", ErrNotBundle)
	}
}

func decodeEntries(dec *json.Decoder) ([]entry, error) {
	tok, err := dec.Token()
	if err != nil {
		return nil, jsonProblem("entry", err)
	}
	if tok == nil { // "entry": null
		return nil, nil
	}
	if tok != json.Delim('[') {
		return nil, errors.New("entry is not an array")
	}
	var entries []entry
	for i := 0; dec.More(); i++ {
		var e struct {
			FullURL  string          `json:"fullUrl"`
			Resource json.RawMessage `json:"resource"`
			Request  *struct {
				Method string `json:"method"`
				URL    string `json:"url"`
			} `json:"request"`
		}
		if err := dec.Decode(&e); err != nil {
			return nil, jsonProblem(fmt.Sprintf("entry[%d]", i), err)
		}
		var method, url string
		if e.Request != nil {
			method, url = e.Request.Method, e.Request.URL
		}
		if len(e.Resource) == 0 || string(e.Resource) == "null" {
			if method == "DELETE" {
				typ, id, _ := strings.Cut(url, "/")
				entries = append(entries, entry{index: i, typ: typ, id: id, method: method, url: url})
			}
			continue // a request or response without a resource
		}
		var head resourceHead
		if err := json.Unmarshal(e.Resource, &head); err != nil {
			return nil, jsonProblem(fmt.Sprintf("entry[%d].resource", i), err)
		}
		if head.ResourceType == "" {
			return nil, fmt.Errorf("entry[%d]: resource has no resourceType", i)
		}
		latest, hasTime := head.latestTime()
		entries = append(entries, entry{
			index: i, fullURL: e.FullURL, typ: head.ResourceType, id: head.ID, raw: e.Resource,
			latest: latest, hasTime: hasTime, method: method, url: url,
		})
	}
	if _, err := dec.Token(); err != nil { // the closing bracket
		return nil, jsonProblem("entry", err)
	}
	return entries, nil
}

// jsonProblem describes a decoding error without quoting the input: the
// standard messages can hold a piece of it (a number, a character).
func jsonProblem(where string, err error) error {
	if where != "" {
		where = " in " + where
	}
	var (
		syn *json.SyntaxError
		typ *json.UnmarshalTypeError
	)
	switch {
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return fmt.Errorf("not valid JSON: unexpected end of data%s", where)
	case errors.As(err, &syn):
		return fmt.Errorf("not valid JSON: syntax error at byte %d%s", syn.Offset, where)
	case errors.As(err, &typ):
		kind, _, _ := strings.Cut(typ.Value, " ") // "number 5" → "number"
		field := typ.Field
		if field == "" {
			field = "value"
		}
		if !fieldPath.MatchString(field) {
			field = "a field"
		}
		return fmt.Errorf("unexpected JSON %s for %s%s", kind, field, where)
	default:
		return fmt.Errorf("not valid JSON%s", where)
	}
}

var fieldPath = regexp.MustCompile(`^[A-Za-z0-9_.\[\]]{1,200}$`)

// FHIR R4 structures, only the fields the importer reads.

type coding struct {
	System  string `json:"system"`
	Code    string `json:"code"`
	Display string `json:"display"`
}

type codeableConcept struct {
	Coding []coding `json:"coding"`
	Text   string   `json:"text"`
}

type reference struct {
	Reference string `json:"reference"`
}

type meta struct {
	LastUpdated string `json:"lastUpdated"`
	// Security are the resource's security labels (HL7 v3 confidentiality
	// and sensitivity codes, e.g. R, ETH, HIV).
	Security []coding `json:"security"`
}

type humanName struct {
	Use    string   `json:"use"`
	Family string   `json:"family"`
	Given  []string `json:"given"`
}

type contactPoint struct {
	System string `json:"system"`
	Value  string `json:"value"`
}

type address struct {
	Line       []string `json:"line"`
	City       string   `json:"city"`
	State      string   `json:"state"`
	PostalCode string   `json:"postalCode"`
	Country    string   `json:"country"`
}

type identifier struct {
	Type   codeableConcept `json:"type"`
	System string          `json:"system"`
	Value  string          `json:"value"`
}

type patientResource struct {
	ID         string         `json:"id"`
	Name       []humanName    `json:"name"`
	Telecom    []contactPoint `json:"telecom"`
	Gender     string         `json:"gender"`
	BirthDate  string         `json:"birthDate"`
	Address    []address      `json:"address"`
	Identifier []identifier   `json:"identifier"`
}

type attachment struct {
	ContentType string  `json:"contentType"`
	Data        *string `json:"data"`
	URL         string  `json:"url"`
	Title       string  `json:"title"`
	Creation    string  `json:"creation"`
}

type documentReference struct {
	ID          string          `json:"id"`
	Meta        meta            `json:"meta"`
	Subject     reference       `json:"subject"`
	Type        codeableConcept `json:"type"`
	Description string          `json:"description"`
	Date        string          `json:"date"`
	// SecurityLabel labels the document's content (as meta.security
	// labels the resource); a member's policy reads both.
	SecurityLabel []codeableConcept `json:"securityLabel"`
	Content       []struct {
		Attachment attachment `json:"attachment"`
	} `json:"content"`
}

type binaryResource struct {
	ID          string  `json:"id"`
	ContentType string  `json:"contentType"`
	Data        *string `json:"data"`
}

// parseTime reads a FHIR instant, dateTime or date.
func parseTime(s string) (time.Time, bool) {
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02", "2006-01", "2006"} {
		if t, err := time.Parse(layout, s); err == nil {
			return t.UTC(), true
		}
	}
	return time.Time{}, false
}

// resourceHead is what the importer reads of every resource: its type and
// id, and the top-level fields of R4 resources that say when something
// happened or was recorded (dateTimes, instants, Periods and meta).
type resourceHead struct {
	ResourceType string `json:"resourceType"`
	ID           string `json:"id"`

	Meta               json.RawMessage `json:"meta"`
	Period             json.RawMessage `json:"period"`
	BillablePeriod     json.RawMessage `json:"billablePeriod"`
	PerformedPeriod    json.RawMessage `json:"performedPeriod"`
	EffectivePeriod    json.RawMessage `json:"effectivePeriod"`
	EffectiveDateTime  json.RawMessage `json:"effectiveDateTime"`
	EffectiveInstant   json.RawMessage `json:"effectiveInstant"`
	Issued             json.RawMessage `json:"issued"`
	OnsetDateTime      json.RawMessage `json:"onsetDateTime"`
	AbatementDateTime  json.RawMessage `json:"abatementDateTime"`
	RecordedDate       json.RawMessage `json:"recordedDate"`
	OccurrenceDateTime json.RawMessage `json:"occurrenceDateTime"`
	PerformedDateTime  json.RawMessage `json:"performedDateTime"`
	AuthoredOn         json.RawMessage `json:"authoredOn"`
	Created            json.RawMessage `json:"created"`
	Date               json.RawMessage `json:"date"`
	Started            json.RawMessage `json:"started"`
}

// latestTime returns the latest of the times the resource records, if it
// has any. Values of an unexpected shape are ignored.
func (h *resourceHead) latestTime() (time.Time, bool) {
	var (
		latest time.Time
		found  bool
	)
	consider := func(s string) {
		if t, ok := parseTime(s); ok && (!found || t.After(latest)) {
			latest, found = t, true
		}
	}
	for _, v := range []json.RawMessage{
		h.Meta, h.Period, h.BillablePeriod, h.PerformedPeriod, h.EffectivePeriod,
		h.EffectiveDateTime, h.EffectiveInstant, h.Issued, h.OnsetDateTime,
		h.AbatementDateTime, h.RecordedDate, h.OccurrenceDateTime,
		h.PerformedDateTime, h.AuthoredOn, h.Created, h.Date, h.Started,
	} {
		if len(v) == 0 {
			continue
		}
		var s string
		if json.Unmarshal(v, &s) == nil {
			consider(s)
			continue
		}
		var obj struct {
			Start, End, LastUpdated string // Period; meta
		}
		if json.Unmarshal(v, &obj) == nil {
			consider(obj.Start)
			consider(obj.End)
			consider(obj.LastUpdated)
		}
	}
	return latest, found
}
