package e2e

import (
	"bytes"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	qhinv1 "github.com/openqhin/openqhin/proto/qhin/v1"
)

// fhirEHR is an EHR talking to a participant's FHIR facade over HTTPS,
// trusting the network's CA.
type fhirEHR struct {
	t       *testing.T
	base    string
	client  *http.Client
	headers http.Header
	seen    *fhirCollector
}

func newFHIREHR(t *testing.T, n *Network, j int) *fhirEHR {
	t.Helper()
	pool := x509.NewCertPool()
	pool.AddCert(n.CA.Certificate())
	h := http.Header{}
	h.Set("X-Purpose-Of-Use", "T-TREAT")
	h.Set("X-Requester-Id", "1234567893")
	h.Set("X-Requester-Name", "Dr. Test")
	return &fhirEHR{t: t, base: n.Participants[j].FHIRURL, headers: h, seen: &fhirCollector{},
		client: &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}}
}

// fhirResp is an answer of the facade.
type fhirResp struct {
	status int
	header http.Header
	body   []byte
	json   map[string]any
}

// do makes a request; extra headers replace the EHR's (an empty value
// removes one). FHIR JSON answers are kept for validation.
func (e *fhirEHR) do(method, path string, body []byte, extra ...string) fhirResp {
	e.t.Helper()
	u := path
	if !strings.HasPrefix(path, "http") {
		u = e.base + path
	}
	req, err := http.NewRequest(method, u, bytes.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	req.Header = e.headers.Clone()
	if body != nil {
		req.Header.Set("Content-Type", "application/fhir+json")
	}
	for i := 0; i+1 < len(extra); i += 2 {
		if extra[i+1] == "" {
			req.Header.Del(extra[i])
		} else {
			req.Header.Set(extra[i], extra[i+1])
		}
	}
	resp, err := e.client.Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatalf("%s %s: read: %v", method, path, err)
	}
	r := fhirResp{status: resp.StatusCode, header: resp.Header, body: b}
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "application/fhir+json") {
		if err := json.Unmarshal(b, &r.json); err != nil {
			e.t.Fatalf("%s %s: answer is not JSON: %v", method, path, err)
		}
		e.seen.add(method+" "+path, b)
	}
	return r
}

// want fails unless the answer has the status and, for an error, is an
// OperationOutcome whose issue says want.
func (r fhirResp) want(t *testing.T, phase string, status int, text string) fhirResp {
	t.Helper()
	if r.status != status {
		t.Fatalf("phase %q: status %d, want %d: %s", phase, r.status, status, r.body)
	}
	if status >= 400 {
		if r.json["resourceType"] != "OperationOutcome" {
			t.Fatalf("phase %q: error answer is not an OperationOutcome: %s", phase, r.body)
		}
		if !strings.Contains(string(r.body), text) {
			t.Fatalf("phase %q: OperationOutcome does not say %q: %s", phase, text, r.body)
		}
	}
	return r
}

// path reads a value out of decoded JSON: keys and array indexes.
func path(v any, keys ...any) any {
	for _, k := range keys {
		switch k := k.(type) {
		case string:
			m, ok := v.(map[string]any)
			if !ok {
				return nil
			}
			v = m[k]
		case int:
			a, ok := v.([]any)
			if !ok || k >= len(a) {
				return nil
			}
			v = a[k]
		}
	}
	return v
}

func str(v any) string { s, _ := v.(string); return s }

// matchEntries returns the entries of a searchset in search mode match.
func matchEntries(b map[string]any) []any {
	var out []any
	entries, _ := path(b, "entry").([]any)
	for _, e := range entries {
		if path(e, "search", "mode") == "match" {
			out = append(out, e)
		}
	}
	return out
}

func linkOf(b map[string]any, rel string) string {
	links, _ := path(b, "link").([]any)
	for _, l := range links {
		if path(l, "relation") == rel {
			return str(path(l, "url"))
		}
	}
	return ""
}

func patientQuery(d *qhinv1.Demographics) url.Values {
	return url.Values{"family": {d.Family}, "given": {d.Given}, "birthdate": {d.BirthDate}, "gender": {d.Gender}}
}

// TestFHIR_FindAPersonListAndReadDocuments walks an EHR's path through p1's
// facade: the capability statement, a Patient search and $match that find
// the person p2 and p3 hold, the person's documents page by page, and each
// document's bytes, raw and as a Binary resource, checked against the
// SHA-256 the DocumentReference carries. Every answer is FHIR R4.
func TestFHIR_FindAPersonListAndReadDocuments(t *testing.T) {
	n, logs := startNetwork(t, Options{Participants: 3, FHIR: true})
	if _, err := n.SeedSynthetic(callCtx(t), 300, 1, nil); err != nil {
		t.Fatal(err)
	}
	d, err := examplePerson(n.Participants[1].Server.Store(), n.Participants[2].Server.Store())
	if err != nil || d == nil {
		t.Fatalf("example person: %v", err)
	}
	ehr := newFHIREHR(t, n, 0)

	cs := ehr.do("GET", "/metadata", nil, "X-Purpose-Of-Use", "").want(t, "metadata", 200, "")
	if cs.json["resourceType"] != "CapabilityStatement" || cs.json["fhirVersion"] != "4.0.1" {
		t.Fatalf("metadata: %s", cs.body)
	}
	types := map[string]bool{}
	for _, r := range path(cs.json, "rest", 0, "resource").([]any) {
		types[str(path(r, "type"))] = true
	}
	if !types["Patient"] || !types["DocumentReference"] || !types["Binary"] || !strings.Contains(string(cs.body), "Patient-match") {
		t.Errorf("metadata lists %v", types)
	}

	// A search, with a parameter the facade does not know: ignored, and
	// left out of the self link.
	q := patientQuery(d)
	q.Set("_elements", "name")
	found := ehr.do("GET", "/Patient?"+q.Encode(), nil).want(t, "patient search", 200, "")
	if found.json["type"] != "searchset" || path(found.json, "total") != float64(1) {
		t.Fatalf("patient search: want a searchset of one person: %s", found.body)
	}
	if self := linkOf(found.json, "self"); strings.Contains(self, "_elements") || !strings.Contains(self, "family=") {
		t.Errorf("self link %q: want the parameters used, without the ignored one", self)
	}
	person := matchEntries(found.json)[0]
	if path(person, "resource", "resourceType") != "Patient" || path(person, "search", "score").(float64) < 0.9 ||
		path(person, "search", "extension", 0, "url") != "http://hl7.org/fhir/StructureDefinition/match-grade" ||
		path(person, "search", "extension", 0, "valueCode") != "certain" {
		t.Fatalf("person entry: %v", person)
	}
	systems := map[string]bool{}
	for _, id := range path(person, "resource", "identifier").([]any) {
		systems[str(path(id, "system"))] = str(path(id, "value")) != ""
	}
	if !systems["spiffe://qhin.test/participant/p2"] || !systems["spiffe://qhin.test/participant/p3"] {
		t.Errorf("person's identifiers: want a link at p2 and p3: %v", path(person, "resource", "identifier"))
	}
	if path(person, "resource", "name", 0, "family") != d.Family || path(person, "resource", "birthDate") != d.BirthDate {
		t.Errorf("person's demographics: %v", path(person, "resource"))
	}
	personID := str(path(person, "resource", "id"))

	// $match finds the same person; onlyCertainMatches and count are read.
	params, _ := json.Marshal(map[string]any{"resourceType": "Parameters", "parameter": []any{
		map[string]any{"name": "resource", "resource": map[string]any{"resourceType": "Patient",
			"name": []any{map[string]any{"family": d.Family, "given": strings.Fields(d.Given)}}, "birthDate": d.BirthDate, "gender": d.Gender}},
		map[string]any{"name": "onlyCertainMatches", "valueBoolean": true},
		map[string]any{"name": "count", "valueInteger": 5},
	}})
	matched := ehr.do("POST", "/Patient/$match", params).want(t, "$match", 200, "")
	if m := matchEntries(matched.json); len(m) != 1 || len(path(m[0], "resource", "identifier").([]any)) != 2 {
		t.Fatalf("$match: want one certain person with two links: %s", matched.body)
	}
	// The person can be read back by id.
	if r := ehr.do("GET", "/Patient/"+personID, nil).want(t, "read person", 200, ""); r.json["id"] != personID {
		t.Errorf("read person: %s", r.body)
	}

	// Documents, one per page: follow next until it ends.
	var docs []any
	next := "/DocumentReference?patient=" + personID + "&_count=1"
	total := -1.0
	for pages := 0; next != ""; pages++ {
		if pages > 20 {
			t.Fatal("paging does not end")
		}
		pg := ehr.do("GET", next, nil).want(t, "documents page", 200, "")
		if total < 0 {
			total = path(pg.json, "total").(float64)
		}
		m := matchEntries(pg.json)
		if len(m) > 1 {
			t.Fatalf("a page of _count=1 holds %d documents", len(m))
		}
		docs = append(docs, m...)
		next = linkOf(pg.json, "next")
	}
	if total < 2 || len(docs) != int(total) {
		t.Fatalf("paged through %d documents of total %v; want all, at least 2 (the person is held at two members)", len(docs), total)
	}
	for _, doc := range docs {
		res := path(doc, "resource")
		att := path(res, "content", 0, "attachment")
		binURL := str(path(att, "url"))
		if path(res, "resourceType") != "DocumentReference" || path(res, "subject", "reference") != "Patient/"+personID ||
			!strings.HasPrefix(binURL, n.Participants[0].FHIRURL+"/Binary/") || path(att, "size").(float64) <= 0 {
			t.Fatalf("document entry: %v", res)
		}
		wantSum := str(path(att, "extension", 0, "extension", 1, "valueString"))
		raw := ehr.do("GET", binURL, nil).want(t, "binary", 200, "")
		if sum := sha256.Sum256(raw.body); hex.EncodeToString(sum[:]) != wantSum || wantSum == "" {
			t.Fatalf("binary sha256 %x, DocumentReference says %q", sum, wantSum)
		}
		if raw.header.Get("Content-Type") != str(path(att, "contentType")) {
			t.Errorf("binary Content-Type %q, DocumentReference says %q", raw.header.Get("Content-Type"), path(att, "contentType"))
		}
		wrapped := ehr.do("GET", binURL, nil, "Accept", "application/fhir+json").want(t, "binary as FHIR", 200, "")
		data, err := base64.StdEncoding.DecodeString(str(wrapped.json["data"]))
		if wrapped.json["resourceType"] != "Binary" || err != nil || !bytes.Equal(data, raw.body) {
			t.Fatalf("Binary resource: data decodes to %d bytes (%v), want the %d raw bytes", len(data), err, len(raw.body))
		}
	}

	// Another purpose may not use the person's id; an id the facade did
	// not give out is unknown, even a real patient id of a member.
	ehr.do("GET", "/DocumentReference?patient="+personID, nil, "X-Purpose-Of-Use", "T-PYMNT").want(t, "id of another purpose", 403, "another purpose")
	ehr.do("GET", "/DocumentReference?patient=p2-000004", nil).want(t, "another member's patient id", 404, "unknown or expired id")

	ehr.seen.validate(t)
	for _, phi := range []string{d.Family, d.BirthDate} {
		if containsValue(logs.String(), phi) {
			t.Errorf("the logs hold the patient's %q", phi)
		}
	}
}
