package ccda

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const minimal = `<?xml version="1.0" encoding="UTF-8"?>
<ClinicalDocument xmlns="urn:hl7-org:v3" xmlns:sdtc="urn:hl7-org:sdtc">
  <id root="2.16.840.1.113883.19.5" extension="DOC-1"/>
  <code code="18842-5" codeSystem="2.16.840.1.113883.6.1" displayName="Discharge Summary"/>
  <title>Discharge  Summary</title>
  <effectiveTime value="20240102103000-0500"/>
  <recordTarget><patientRole>
    <id root="2.16.840.1.113883.19.5.1" extension="MRN-77"/>
    <id root="2.16.840.1.113883.4.1" extension="123-45-6789"/>
    <addr use="WP"><city>Elsewhere</city></addr>
    <addr use="HP"><streetAddressLine>12 Elm St</streetAddressLine><city>Springfield</city><state>IL</state><postalCode>62704</postalCode><country>US</country></addr>
    <telecom value="mailto:x@example.org"/>
    <telecom value="tel:+1(555)555-0101" use="HP"/>
    <patient>
      <name use="SRCH"><given>Searchy</given><family>Other</family></name>
      <name use="L"><given>Mary</given><given qualifier="CL">Molly</given><given>Ann</given><family>O'Hara</family></name>
      <administrativeGenderCode code="F" codeSystem="2.16.840.1.113883.5.1"/>
      <birthTime value="19800315"/>
    </patient>
  </patientRole></recordTarget>
  <component><structuredBody/></component>
</ClinicalDocument>
`

func TestParse_Header(t *testing.T) {
	d, err := Parse([]byte(minimal))
	if err != nil {
		t.Fatal(err)
	}
	p := d.Patient
	checks := []struct{ name, got, want string }{
		{"document id", d.ID.Root + "|" + d.ID.Extension, "2.16.840.1.113883.19.5|DOC-1"},
		{"type", d.TypeCode + " " + d.TypeDisplay, "18842-5 Discharge Summary"},
		{"title", d.Title, "Discharge Summary"},
		{"effective", d.Effective.Format(time.RFC3339), "2024-01-02T15:30:00Z"},
		{"given (legal name, call-me name left out)", p.Given, "Mary Ann"},
		{"family", p.Family, "O'Hara"},
		{"gender", p.Gender, "female"},
		{"birth date", p.BirthDate, "1980-03-15"},
		{"home address", strings.Join(p.Address.Lines, ",") + " " + p.Address.City + " " + p.Address.State + " " + p.Address.PostalCode, "12 Elm St Springfield IL 62704"},
		{"phone", p.Phone, "+1(555)555-0101"},
		{"first patient id", d.PatientIDs[0].Extension, "MRN-77"},
		{"ssn type", p.Identifiers[1].Type + " " + p.Identifiers[1].System, "SS urn:oid:2.16.840.1.113883.4.1"},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %q, want %q", c.name, c.got, c.want)
		}
	}
}

func TestParse_Refuses(t *testing.T) {
	for _, c := range []struct{ name, doc, want string }{
		{"not XML", `José O'Hara, 1980-03-15`, "not valid XML"},
		{"truncated", minimal[:400], "not valid XML"},
		{"another root", `<Patient xmlns="urn:hl7-org:v3"/>`, "not an HL7 CDA document"},
		{"CDA without namespace", `<ClinicalDocument/>`, "not an HL7 CDA document"},
		{"content after the document", minimal + "<x/>", "content after the ClinicalDocument"},
		{"external entity (XXE)", `<?xml version="1.0"?><!DOCTYPE d [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>` +
			strings.Replace(minimal[strings.Index(minimal, "<ClinicalDocument"):], "<title>Discharge  Summary</title>", "<title>&xxe;</title>", 1), "entities are not expanded"},
		{"entity expansion", `<?xml version="1.0"?><!DOCTYPE d [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]>` +
			strings.Replace(minimal[strings.Index(minimal, "<ClinicalDocument"):], "<title>Discharge  Summary</title>", "<title>&b;</title>", 1), "entities are not expanded"},
		{"no document id", strings.Replace(minimal, `<id root="2.16.840.1.113883.19.5" extension="DOC-1"/>`, "", 1), "ClinicalDocument/id: required"},
		{"not LOINC", strings.Replace(minimal, `codeSystem="2.16.840.1.113883.6.1"`, `codeSystem="1.2.3"`, 1), "must be a LOINC code"},
		{"no patient", strings.Replace(strings.Replace(minimal, "<recordTarget>", "<x>", 1), "</recordTarget>", "</x>", 1), "recordTarget: required"},
		{"bad birth time", strings.Replace(minimal, "19800315", "1980-03-15", 1), "birthTime: not an HL7 timestamp"},
		{"impossible birth time", strings.Replace(minimal, "19800315", "19800231", 1), "birthTime: not a real date"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := Parse([]byte(c.doc))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Parse = %v, want an error with %q", err, c.want)
			}
			for _, phi := range []string{"O'Hara", "19800315", "MRN-77", "passwd"} {
				if strings.Contains(err.Error(), phi) {
					t.Errorf("error %q echoes %q", err, phi)
				}
			}
		})
	}
}

// TestParse_PublicSamples reads every HL7 C-CDA example in ../shared/data.
func TestParse_PublicSamples(t *testing.T) {
	files, _ := filepath.Glob(filepath.Join("..", "..", "..", "shared", "data", "ccda", "*.[xX][mM][lL]"))
	if len(files) == 0 {
		t.Skip("../shared/data/ccda is absent")
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		d, err := Parse(b)
		if err != nil {
			t.Errorf("%s: %v", filepath.Base(f), err)
			continue
		}
		if d.Patient.Family == "" || d.Patient.BirthDate == "" || d.TypeCode == "" || d.Effective.IsZero() {
			t.Errorf("%s: incomplete header: type %q, effective %v, family set %v, birth date set %v",
				filepath.Base(f), d.TypeCode, d.Effective, d.Patient.Family != "", d.Patient.BirthDate != "")
		}
	}
	t.Logf("read %d C-CDA documents", len(files))
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(minimal))
	f.Add([]byte(`<ClinicalDocument xmlns="urn:hl7-org:v3"><recordTarget/></ClinicalDocument>`))
	f.Fuzz(func(t *testing.T, b []byte) {
		d, err := Parse(b)
		if err == nil && (d.Patient == nil || len(d.PatientIDs) == 0) {
			t.Fatal("a parsed document without its patient")
		}
	})
}
