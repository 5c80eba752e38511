package synth

import (
	"bytes"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"google.golang.org/protobuf/types/known/timestamppb"

	qhinv1 "github.com/openqhin/openqhin/proto/qhin/v1"
)

// Content types of generated documents.
const (
	ContentTypeFHIR = "application/fhir+json"
	ContentTypeText = "text/plain"
)

// documents draws 0..maxDocs documents for reg, created between the
// registration's birth date and now, at most docYears before now.
func (g *generator) documents(p *person, reg *Registration) []Document {
	if g.maxDocs <= 0 {
		return nil
	}
	n := g.rng.IntN(g.maxDocs + 1)
	if n == 0 {
		return nil
	}
	born := p.birth
	if reg.Variations.Has(BirthDateTypo) {
		if t, err := time.Parse(time.DateOnly, reg.Demographics.BirthDate); err == nil && t.After(born) {
			born = t
		}
	}
	end := g.now.Unix()
	start := max(born.Unix()+3600, g.now.AddDate(-docYears, 0, 0).Unix())
	g.times = g.times[:0]
	for range n {
		g.times = append(g.times, start+g.rng.Int64N(end-start))
	}
	slices.Sort(g.times)

	docs := make([]Document, n)
	for k, sec := range g.times {
		created := time.Unix(sec, 0).UTC()
		dt := &docTypes[g.rng.IntN(len(docTypes))]
		age := yearsBetween(born, created)
		specialty := "Pediatrics"
		if age >= 18 {
			specialty = specialties[g.rng.IntN(len(specialties))]
		}
		c1 := g.pickCondition(p, age)
		c2 := c1
		if g.rng.IntN(2) == 0 {
			c2 = g.pickCondition(p, age)
		}
		b := append(g.buf[:0], reg.PatientID...)
		b = append(b, "-doc-"...)
		b = appendPadded(b, k+1, 0)
		id := string(b)
		nt := note{
			id:        id,
			reg:       reg,
			dt:        dt,
			title:     dt.display + " - " + specialty,
			specialty: specialty,
			created:   created,
			author:    g.clinician(),
			conds:     []*condition{c1},
			status:    []string{statusPhrases[g.rng.IntN(len(statusPhrases))]},
			plan:      planPhrases[g.rng.IntN(len(planPhrases))],
		}
		if c2 != c1 {
			nt.conds = append(nt.conds, c2)
			nt.status = append(nt.status, statusPhrases[g.rng.IntN(len(statusPhrases))])
		}
		contentType := ContentTypeText
		var content []byte
		if g.rng.Float64() < pFHIR {
			contentType = ContentTypeFHIR
			content = g.fhirComposition(&nt)
		} else {
			content = g.textNote(&nt)
		}
		docs[k] = Document{
			Meta: &qhinv1.DocumentMetadata{
				Id:                  id,
				Patient:             &qhinv1.PatientLink{ParticipantId: reg.ParticipantID, PatientId: reg.PatientID},
				TypeCode:            dt.code,
				TypeDisplay:         dt.display,
				Title:               nt.title,
				Created:             timestamppb.New(created),
				ContentType:         contentType,
				SourceParticipantId: reg.ParticipantID,
				SecurityLabels:      labelsOf(&nt),
			},
			Content: content,
		}
	}
	return docs
}

// pickCondition draws one of p's conditions that applies at age or, when
// none does yet, an acute one.
func (g *generator) pickCondition(p *person, age int) *condition {
	var fit [maxConditions]*condition
	n := 0
	for _, c := range p.conds {
		if c != nil && age >= c.minAge {
			fit[n] = c
			n++
		}
	}
	if n == 0 {
		return &conditions[g.rng.IntN(acuteConditions)]
	}
	return fit[g.rng.IntN(n)]
}

// clinician draws the name of a document's author.
func (g *generator) clinician() string {
	names := femaleNames
	if g.rng.IntN(2) == 0 {
		names = maleNames
	}
	return "Dr. " + pickSkewed(g.rng, names) + " " + pickSkewed(g.rng, familyNames)
}

// yearsBetween returns the age in whole years on day to of someone born on
// from.
func yearsBetween(from, to time.Time) int {
	y := to.Year() - from.Year()
	if to.YearDay() < from.YearDay() {
		y--
	}
	return max(y, 0)
}

// note is what one document says, whatever its format.
type note struct {
	id, title, specialty string
	reg                  *Registration
	dt                   *docType
	created              time.Time
	author               string
	conds                []*condition
	status               []string
	plan                 string
}

// fhirComposition renders n as a compact FHIR R4 Composition in JSON.
func (g *generator) fhirComposition(n *note) []byte {
	d := n.reg.Demographics
	b := append(g.buf[:0], `{"resourceType":"Composition","id":`...)
	b = appendJSON(b, n.id)
	b = append(b, `,"status":"final","type":{"coding":[{"system":"http://loinc.org","code":`...)
	b = appendJSON(b, n.dt.code)
	b = append(b, `,"display":`...)
	b = appendJSON(b, n.dt.display)
	b = append(b, `}]},"subject":{"reference":`...)
	b = appendJSON(b, "Patient/"+n.reg.PatientID)
	b = append(b, `,"display":`...)
	b = appendJSON(b, d.Given+" "+d.Family)
	b = append(b, `},"date":"`...)
	b = n.created.AppendFormat(b, time.RFC3339)
	b = append(b, `","author":[{"display":`...)
	b = appendJSON(b, n.author)
	b = append(b, `}],"title":`...)
	b = appendJSON(b, n.title)
	b = append(b, `,"custodian":{"display":`...)
	b = appendJSON(b, n.reg.ParticipantID)
	b = append(b, `},"section":[{"title":"Problems","code":{"coding":[{"system":"http://loinc.org","code":"11450-4","display":"Problem list - Reported"}]},"text":{"status":"generated","div":`...)
	div := append(g.div[:0], `<div xmlns="http://www.w3.org/1999/xhtml"><ul>`...)
	for i, c := range n.conds {
		div = append(div, "<li>"...)
		div = append(div, c.display...)
		div = append(div, " (SNOMED CT "...)
		div = append(div, c.snomed...)
		div = append(div, "): "...)
		div = append(div, n.status[i]...)
		div = append(div, "</li>"...)
	}
	div = append(div, "</ul></div>"...)
	b = appendJSON(b, string(div))
	b = append(b, `},"entry":[`...)
	for i, c := range n.conds {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"display":`...)
		b = appendJSON(b, c.display)
		b = append(b, '}')
	}
	b = append(b, `]},{"title":"Assessment and plan","code":{"coding":[{"system":"http://loinc.org","code":"51847-2","display":"Evaluation + Plan note"}]},"text":{"status":"generated","div":`...)
	div = append(div[:0], `<div xmlns="http://www.w3.org/1999/xhtml"><p>`...)
	div = append(div, d.Given...)
	div = append(div, ' ')
	div = append(div, d.Family...)
	div = append(div, ", born "...)
	div = append(div, d.BirthDate...)
	div = append(div, ", seen in "...)
	div = append(div, n.specialty...)
	div = append(div, ". "...)
	div = append(div, n.plan...)
	div = append(div, "</p></div>"...)
	b = appendJSON(b, string(div))
	b = append(b, `}}]}`...)
	g.buf, g.div = b, div
	return bytes.Clone(b)
}

// textNote renders n as a plain text clinical note.
func (g *generator) textNote(n *note) []byte {
	d := n.reg.Demographics
	b := append(g.buf[:0], n.title...)
	b = append(b, "\nPatient: "...)
	b = append(b, d.Given...)
	b = append(b, ' ')
	b = append(b, d.Family...)
	b = append(b, "\nDOB: "...)
	b = append(b, d.BirthDate...)
	b = append(b, "    Sex: "...)
	b = append(b, d.Gender...)
	b = append(b, "    MRN: "...)
	b = append(b, n.reg.PatientID...)
	b = append(b, "\nDate: "...)
	b = n.created.AppendFormat(b, "2006-01-02 15:04 MST")
	b = append(b, "\nAuthor: "...)
	b = append(b, n.author...)
	b = append(b, "\nFacility: "...)
	b = append(b, n.reg.ParticipantID...)
	b = append(b, "\n\nAssessment:\n"...)
	for i, c := range n.conds {
		b = appendPadded(b, i+1, 0)
		b = append(b, ". "...)
		b = append(b, c.display...)
		b = append(b, " (ICD-10-CM "...)
		b = append(b, c.icd10...)
		b = append(b, "): "...)
		b = append(b, n.status[i]...)
		b = append(b, ".\n"...)
	}
	b = append(b, "\nPlan: "...)
	b = append(b, n.plan...)
	b = append(b, '\n')
	g.buf = b
	return bytes.Clone(b)
}

// appendJSON appends s as a JSON string.
func appendJSON(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c >= utf8.RuneSelf {
			r, size := utf8.DecodeRuneInString(s[i:])
			if r == utf8.RuneError && size == 1 {
				b = append(b, `\ufffd`...)
			} else {
				b = append(b, s[i:i+size]...)
			}
			i += size
			continue
		}
		switch {
		case c == '"' || c == '\\':
			b = append(b, '\\', c)
		case c < 0x20:
			b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
		default:
			b = append(b, c)
		}
		i++
	}
	return append(b, '"')
}

// labelsOf labels a few notes sensitive, as a member's EHR would, so that a
// network of synthetic members shows its members' label policies at work:
// a behavioral health note about a mental disorder (ICD-10 chapter F) is
// PSY (HL7 v3 ActCode: psychiatry information sensitivity). It draws no
// random number, so the population stays what its seed makes it.
func labelsOf(nt *note) []string {
	if nt.specialty != "Behavioral Health" {
		return nil
	}
	for _, c := range nt.conds {
		if strings.HasPrefix(c.icd10, "F") {
			return []string{"PSY"}
		}
	}
	return nil
}
