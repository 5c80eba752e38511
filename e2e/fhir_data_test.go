package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/openqhin/openqhin/participant/ccda"
	"github.com/openqhin/openqhin/participant/fhir"
	qhinv1 "github.com/openqhin/openqhin/proto/qhin/v1"
)

// sharedData returns ../shared/data/NAME, or skips the test.
func sharedData(t *testing.T, name string) string {
	t.Helper()
	dir := filepath.Join("..", "..", "shared", "data", name)
	if _, err := os.Stat(dir); err != nil {
		t.Skipf("%s is absent", dir)
	}
	return dir
}

// bundlePatient returns the id and demographics of a bundle's Patient.
func bundlePatient(b []byte) (string, *qhinv1.Demographics, bool) {
	var bundle struct {
		Entry []struct {
			Resource json.RawMessage `json:"resource"`
		} `json:"entry"`
	}
	if json.Unmarshal(b, &bundle) != nil {
		return "", nil, false
	}
	for _, e := range bundle.Entry {
		if id, d, err := fhir.ParsePatient(e.Resource); err == nil {
			return id, d, true
		}
	}
	return "", nil, false
}

// typo makes the i-th kind of registration error in d: letters swapped,
// dropped or replaced in a name, a digit of the birth date changed.
func typo(i int, d *qhinv1.Demographics) *qhinv1.Demographics {
	out := &qhinv1.Demographics{Given: d.Given, Family: d.Family, BirthDate: d.BirthDate, Gender: d.Gender}
	swap := func(s string) string {
		r := []rune(s)
		if len(r) > 3 {
			r[1], r[2] = r[2], r[1]
		}
		return string(r)
	}
	drop := func(s string) string {
		r := []rune(s)
		if len(r) > 3 {
			r = append(r[:2], r[3:]...)
		}
		return string(r)
	}
	replace := func(s string) string {
		r := []rune(s)
		if len(r) > 2 {
			if r[len(r)-1] == 'e' {
				r[len(r)-1] = 'a'
			} else {
				r[len(r)-1] = 'e'
			}
		}
		return string(r)
	}
	switch i % 5 {
	case 0:
		out.Family = swap(d.Family)
	case 1:
		out.Given = drop(d.Given)
	case 2:
		out.Family = replace(d.Family)
	case 3:
		// The day's last digit, kept a real date.
		if b := []byte(d.BirthDate); len(b) == 10 && b[9] != '9' && b[8] != '3' && !(string(b[5:7]) == "02" && b[8] == '2') {
			b[9]++
			out.BirthDate = string(b)
		}
	case 4:
		out.Given, out.Family = swap(d.Given), drop(d.Family)
	}
	return out
}

// TestFHIR_SyntheaAndCCDAThroughTheFeed feeds every public Synthea bundle
// and every C-CDA example through p2's facade, then looks 20 of the Synthea
// patients up from p1 with $match, each with a typo made by the test, and
// reports how many the network finds.
func TestFHIR_SyntheaAndCCDAThroughTheFeed(t *testing.T) {
	synthea := sharedData(t, "synthea")
	n, logs := startNetwork(t, Options{Brokers: 1, Participants: 2, FHIR: true})
	feed, ehr := newFHIREHR(t, n, 1), newFHIREHR(t, n, 0)

	files, _ := filepath.Glob(filepath.Join(synthea, "*.json"))
	sort.Strings(files)
	type person struct {
		id string
		d  *qhinv1.Demographics
	}
	var people []person
	imported, refused := 0, map[string]int{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		r := feed.do("POST", "/", b)
		switch r.status {
		case 200:
			imported++
			if id, d, ok := bundlePatient(b); ok {
				people = append(people, person{id, d})
			}
		case 400:
			refused[str(path(r.json, "issue", 0, "diagnostics"))]++
		default:
			t.Fatalf("%s: status %d: %.300s", filepath.Base(f), r.status, r.body)
		}
	}
	t.Logf("Synthea: %d of %d bundles imported through the facade; refused: %v", imported, len(files), refused)
	if imported+refused["bundle holds no Patient resource"] != len(files) || len(people) < 20 {
		t.Fatalf("want every bundle with a Patient imported and only those without refused: %d imported, refused %v", imported, refused)
	}

	found := 0
	var missed []string
	for i := 0; i < 20; i++ {
		p := people[i*len(people)/20]
		q := typo(i, p.d)
		params, _ := json.Marshal(map[string]any{"resourceType": "Parameters", "parameter": []any{
			map[string]any{"name": "resource", "resource": map[string]any{"resourceType": "Patient",
				"name": []any{map[string]any{"family": q.Family, "given": strings.Fields(q.Given)}}, "birthDate": q.BirthDate, "gender": q.Gender}},
			map[string]any{"name": "count", "valueInteger": 5},
		}})
		r := ehr.do("POST", "/Patient/$match", params).want(t, "$match", 200, "")
		hit := false
		for _, e := range matchEntries(r.json) {
			for _, id := range path(e, "resource", "identifier").([]any) {
				if path(id, "value") == "p2/"+p.id {
					hit = true
				}
			}
		}
		if hit {
			found++
		} else {
			missed = append(missed, fmt.Sprintf("typo kind %d", i%5))
		}
	}
	t.Logf("Synthea: $match with a typo found %d of 20 patients (missed: %v)", found, missed)
	if found < 16 {
		t.Errorf("$match found only %d of 20 patients with one typo each", found)
	}

	// Every C-CDA example imports as a document of its patient.
	docs, _ := filepath.Glob(filepath.Join(sharedData(t, "ccda"), "*.[xX][mM][lL]"))
	if len(docs) != 12 {
		t.Fatalf("want the 12 C-CDA examples, have %d", len(docs))
	}
	before, beforeDocs, _ := n.Participants[1].Server.Counts()
	patients := map[string]*qhinv1.Demographics{}
	docIDs := map[string]bool{}
	// holder is each document id's patient: the last document imported
	// under an id replaces the earlier ones, and may be another patient's.
	// A patient's demographics are those of the last document naming them.
	holder := map[string]string{}
	for _, f := range docs {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		r := feed.do("POST", "/", b, "Content-Type", "application/xml")
		if r.status != 200 || r.header.Get("X-Documents-Written") != "1" {
			t.Fatalf("%s: status %d: %.300s", filepath.Base(f), r.status, r.body)
		}
		doc, err := ccda.Parse(b)
		if err != nil {
			t.Fatal(err)
		}
		patients[doc.PatientIDs[0].Root+"|"+doc.PatientIDs[0].Extension] = doc.Patient
		docIDs[doc.ID.Root+"|"+doc.ID.Extension] = true
		holder[doc.ID.Root+"|"+doc.ID.Extension] = doc.PatientIDs[0].Root + "|" + doc.PatientIDs[0].Extension
	}
	after, nd, _ := n.Participants[1].Server.Counts()
	// The examples reuse document ids: a document with the id of an
	// earlier one replaces it, as ClinicalDocument/id is unique by
	// definition.
	t.Logf("C-CDA: 12 documents (%d distinct ids) of %d patient(s) imported through the facade", len(docIDs), len(patients))
	if after-before != len(patients) || nd-beforeDocs != len(docIDs) {
		t.Errorf("C-CDA import added %d patients and %d documents, want %d and %d", after-before, nd-beforeDocs, len(patients), len(docIDs))
	}
	// A patient who holds a document is found from p1, with their
	// documents. Several examples register the same person under
	// different ids (one record each at p2); the person found is one of
	// them, so the patient checked is one whose demographics no other
	// record shares.
	same := map[string]int{}
	key := func(d *qhinv1.Demographics) string {
		return d.Given + "|" + d.Family + "|" + d.BirthDate + "|" + d.Gender
	}
	checked := false
	for _, d := range patients {
		same[key(d)]++
	}
	for _, pid := range holder {
		d := patients[pid]
		if same[key(d)] > 1 {
			continue
		}
		checked = true
		q := patientQuery(d)
		r := ehr.do("GET", "/Patient?"+q.Encode(), nil).want(t, "C-CDA patient", 200, "")
		m := matchEntries(r.json)
		if len(m) == 0 {
			t.Fatalf("the C-CDA patient is not found: %s", r.body)
		}
		list := ehr.do("GET", "/DocumentReference?patient="+str(path(m[0], "resource", "id")), nil).want(t, "C-CDA documents", 200, "")
		if len(matchEntries(list.json)) == 0 || path(matchEntries(list.json)[0], "resource", "content", 0, "attachment", "contentType") != "text/xml" {
			t.Errorf("the C-CDA patient's documents: %s", list.body)
		}
		break
	}
	if !checked {
		t.Errorf("every C-CDA patient holding a document shares its demographics with another record: none checked")
	}
	ehr.seen.validate(t)
	for _, p := range people[:20] {
		if containsValue(logs.String(), p.d.Family) && len(p.d.Family) > 4 {
			t.Errorf("the logs hold a family name of the Synthea data")
			break
		}
	}
}
