// Package ccda reads the header of an HL7 C-CDA R2.1 document (a CCD, a
// discharge summary, a referral note, …): the document's id, type, title and
// time, and its patient's demographics from recordTarget/patientRole. A
// participant imports such a document as a document of that patient.
//
// The reader is encoding/xml in strict mode: it expands no entity beyond
// XML's five predefined ones and fetches nothing, so neither external
// entities (XXE) nor entity expansion (billion laughs) can reach it; callers
// cap the document's size before parsing. Errors name the element and the
// rule, never a value.
package ccda

import (
	"bytes"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	qhinv1 "github.com/openqhin/openqhin/proto/qhin/v1"
)

// Namespace is the namespace of CDA documents.
const Namespace = "urn:hl7-org:v3"

// ErrNotCDA is the problem of an XML document that is not a CDA
// ClinicalDocument.
var ErrNotCDA = errors.New("not an HL7 CDA document")

// OIDs the reader knows.
const (
	oidLOINC = "2.16.840.1.113883.6.1"
	oidSSN   = "2.16.840.1.113883.4.1"
)

// Document is what a participant keeps of a C-CDA document's header.
type Document struct {
	// ID is the document's id (ClinicalDocument/id), root and extension.
	ID InstanceID
	// TypeCode and TypeDisplay are the document's LOINC type
	// (ClinicalDocument/code), for example 34133-9.
	TypeCode, TypeDisplay string
	Title                 string
	// Effective is when the document was created (effectiveTime), UTC; zero
	// when it has none.
	Effective time.Time
	// PatientIDs are the patient's ids (recordTarget/patientRole/id), in
	// document order.
	PatientIDs []InstanceID
	// Patient holds the patient's demographics, identifiers included.
	Patient *qhinv1.Demographics
}

// InstanceID is an HL7 v3 II: an OID and, within it, an extension.
type InstanceID struct {
	Root, Extension string
}

type ii struct {
	Root       string `xml:"root,attr"`
	Extension  string `xml:"extension,attr"`
	NullFlavor string `xml:"nullFlavor,attr"`
}

type cd struct {
	Code        string `xml:"code,attr"`
	CodeSystem  string `xml:"codeSystem,attr"`
	DisplayName string `xml:"displayName,attr"`
	NullFlavor  string `xml:"nullFlavor,attr"`
}

type ts struct {
	Value string `xml:"value,attr"`
}

type part struct {
	Qualifier string `xml:"qualifier,attr"`
	Text      string `xml:",chardata"`
}

type name struct {
	Use    string `xml:"use,attr"`
	Given  []part `xml:"given"`
	Family []part `xml:"family"`
}

type addr struct {
	Use    string   `xml:"use,attr"`
	Lines  []string `xml:"streetAddressLine"`
	City   string   `xml:"city"`
	State  string   `xml:"state"`
	Postal string   `xml:"postalCode"`
	Cntry  string   `xml:"country"`
}

type telecom struct {
	Value string `xml:"value,attr"`
	Use   string `xml:"use,attr"`
}

type clinicalDocument struct {
	XMLName       xml.Name
	ID            ii     `xml:"id"`
	Code          cd     `xml:"code"`
	Title         string `xml:"title"`
	EffectiveTime ts     `xml:"effectiveTime"`
	RecordTarget  []struct {
		PatientRole struct {
			IDs     []ii      `xml:"id"`
			Addr    []addr    `xml:"addr"`
			Telecom []telecom `xml:"telecom"`
			Patient struct {
				Names     []name `xml:"name"`
				Gender    cd     `xml:"administrativeGenderCode"`
				BirthTime ts     `xml:"birthTime"`
			} `xml:"patient"`
		} `xml:"patientRole"`
	} `xml:"recordTarget"`
}

// Parse reads a C-CDA document's header. data is the whole document; the
// caller bounds its size.
func Parse(data []byte) (*Document, error) {
	dec := xml.NewDecoder(bytes.NewReader(data))
	dec.Strict = true
	dec.Entity = nil // only XML's predefined entities
	var doc clinicalDocument
	if err := dec.Decode(&doc); err != nil {
		return nil, xmlProblem(err)
	}
	if doc.XMLName.Local != "ClinicalDocument" || doc.XMLName.Space != Namespace {
		return nil, fmt.Errorf("%w: the root element is not ClinicalDocument in %s", ErrNotCDA, Namespace)
	}
	for { // only comments, processing instructions and space may follow
		tok, err := dec.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, xmlProblem(err)
		}
		switch t := tok.(type) {
		case xml.Comment, xml.ProcInst:
		case xml.CharData:
			if len(bytes.TrimSpace(t)) > 0 {
				return nil, errors.New("not valid XML: content after the ClinicalDocument")
			}
		default:
			return nil, errors.New("not valid XML: content after the ClinicalDocument")
		}
	}

	out := &Document{
		ID:          InstanceID{Root: doc.ID.Root, Extension: doc.ID.Extension},
		TypeCode:    doc.Code.Code,
		TypeDisplay: strings.TrimSpace(doc.Code.DisplayName),
		Title:       strings.Join(strings.Fields(doc.Title), " "),
	}
	if out.ID.Root == "" {
		return nil, errors.New("ClinicalDocument/id: required, with a root")
	}
	if out.TypeCode == "" {
		return nil, errors.New("ClinicalDocument/code: required")
	}
	if doc.Code.CodeSystem != "" && doc.Code.CodeSystem != oidLOINC {
		return nil, errors.New("ClinicalDocument/code: must be a LOINC code (codeSystem 2.16.840.1.113883.6.1)")
	}
	if out.Title == "" {
		out.Title = out.TypeDisplay
	}
	if v := doc.EffectiveTime.Value; v != "" {
		t, err := ParseTS(v)
		if err != nil {
			return nil, fmt.Errorf("ClinicalDocument/effectiveTime: %w", err)
		}
		out.Effective = t
	}
	if len(doc.RecordTarget) == 0 {
		return nil, errors.New("recordTarget: required (the document's patient)")
	}
	role := doc.RecordTarget[0].PatientRole
	d := &qhinv1.Demographics{}
	for _, id := range role.IDs {
		if id.Root == "" || id.NullFlavor != "" {
			continue
		}
		out.PatientIDs = append(out.PatientIDs, InstanceID{Root: id.Root, Extension: id.Extension})
		if id.Extension != "" {
			typ := ""
			if id.Root == oidSSN {
				typ = "SS"
			}
			d.Identifiers = append(d.Identifiers, &qhinv1.Identifier{System: "urn:oid:" + id.Root, Value: id.Extension, Type: typ})
		}
	}
	if len(out.PatientIDs) == 0 {
		return nil, errors.New("recordTarget/patientRole/id: required")
	}
	p := role.Patient
	if n := pickName(p.Names); n != nil {
		var given []string
		for _, g := range n.Given {
			if g.Qualifier == "CL" { // a call-me name, not the legal one
				continue
			}
			if s := strings.Join(strings.Fields(g.Text), " "); s != "" {
				given = append(given, s)
			}
		}
		d.Given = strings.Join(given, " ")
		for _, f := range n.Family {
			if s := strings.Join(strings.Fields(f.Text), " "); s != "" {
				d.Family = s
				break
			}
		}
	}
	switch p.Gender.Code {
	case "M":
		d.Gender = "male"
	case "F":
		d.Gender = "female"
	case "UN":
		d.Gender = "other"
	default:
		if p.Gender.NullFlavor != "" {
			d.Gender = "unknown"
		}
	}
	if v := p.BirthTime.Value; v != "" {
		b, err := birthDate(v)
		if err != nil {
			return nil, fmt.Errorf("recordTarget/patientRole/patient/birthTime: %w", err)
		}
		d.BirthDate = b
	}
	if a := pickAddr(role.Addr); a != nil {
		var lines []string
		for _, l := range a.Lines {
			if s := strings.Join(strings.Fields(l), " "); s != "" {
				lines = append(lines, s)
			}
		}
		d.Address = &qhinv1.Address{Lines: lines, City: strings.TrimSpace(a.City), State: strings.TrimSpace(a.State),
			PostalCode: strings.TrimSpace(a.Postal), Country: strings.TrimSpace(a.Cntry)}
	}
	for _, t := range role.Telecom {
		if v, ok := strings.CutPrefix(t.Value, "tel:"); ok && v != "" {
			d.Phone = v
			break
		}
	}
	out.Patient = d
	return out, nil
}

// pickName returns the legal name (use L), else the first.
func pickName(ns []name) *name {
	for i := range ns {
		if ns[i].Use == "L" {
			return &ns[i]
		}
	}
	if len(ns) > 0 {
		return &ns[0]
	}
	return nil
}

// pickAddr returns the primary home address (use HP or H), else the first.
func pickAddr(as []addr) *addr {
	for i := range as {
		if as[i].Use == "HP" || as[i].Use == "H" {
			return &as[i]
		}
	}
	if len(as) > 0 {
		return &as[0]
	}
	return nil
}

// ParseTS reads an HL7 v3 TS: YYYY[MM[DD[HH[MM[SS[.S…]]]]]][+/-ZZZZ]. A
// time without a zone is taken as UTC.
func ParseTS(v string) (time.Time, error) {
	digits, zone := v, ""
	if i := strings.IndexAny(v, "+-"); i >= 0 {
		digits, zone = v[:i], v[i:]
	}
	if i := strings.IndexByte(digits, '.'); i >= 0 {
		digits = digits[:i] // fractions of a second are dropped
	}
	layouts := map[int]string{4: "2006", 6: "200601", 8: "20060102", 10: "2006010215", 12: "200601021504", 14: "20060102150405"}
	layout, ok := layouts[len(digits)]
	if !ok || strings.Trim(digits, "0123456789") != "" {
		return time.Time{}, errors.New("not an HL7 timestamp (YYYYMMDDHHMMSS±ZZZZ)")
	}
	if zone != "" {
		if len(zone) != 5 || strings.Trim(zone[1:], "0123456789") != "" {
			return time.Time{}, errors.New("not an HL7 timestamp zone (±ZZZZ)")
		}
		layout += "-0700"
		digits += zone
	}
	t, err := time.Parse(layout, digits)
	if err != nil {
		return time.Time{}, errors.New("not a real date and time")
	}
	return t.UTC(), nil
}

// birthDate turns an HL7 TS into a FHIR date (YYYY, YYYY-MM or YYYY-MM-DD).
func birthDate(v string) (string, error) {
	if _, err := ParseTS(v); err != nil {
		return "", err
	}
	switch d := v[:min(len(v), 8)]; len(d) {
	case 8:
		return d[:4] + "-" + d[4:6] + "-" + d[6:], nil
	case 6:
		return d[:4] + "-" + d[4:], nil
	default:
		return d[:4], nil
	}
}

// xmlProblem describes an XML error without quoting the input.
func xmlProblem(err error) error {
	var syn *xml.SyntaxError
	switch {
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return errors.New("not valid XML: unexpected end of data")
	case errors.As(err, &syn):
		// The message may quote the input (an entity's name, a tag);
		// only the line is kept.
		if strings.Contains(syn.Msg, "entity") {
			return fmt.Errorf("not valid XML: line %d: an entity that is not one of XML's own (entities are not expanded)", syn.Line)
		}
		return fmt.Errorf("not valid XML: syntax error on line %d", syn.Line)
	default:
		return errors.New("not valid XML")
	}
}
