package e2e

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/openqhin/openqhin/broker"
)

// A person no synthetic population holds.
var newcomer = map[string]any{
	"resourceType": "Patient", "id": "feed-0001",
	"name":   []any{map[string]any{"use": "official", "family": "Quackenbush", "given": []any{"Zephyrine", "Odile"}}},
	"gender": "female", "birthDate": "1971-04-05",
	"telecom": []any{map[string]any{"system": "phone", "value": "555-0142"}},
	"address": []any{map[string]any{"line": []any{"7 Larkspur Ln"}, "city": "Fairview", "state": "OR", "postalCode": "97024"}},
}

// feedBundle is a transaction Bundle: the newcomer, a note of theirs as a
// DocumentReference with its Binary, and whatever extra entries follow.
func feedBundle(t *testing.T, note string, extra ...any) []byte {
	t.Helper()
	entries := []any{
		map[string]any{"fullUrl": "urn:uuid:0d6b7b1e-0000-4000-8000-000000000001", "resource": newcomer,
			"request": map[string]any{"method": "PUT", "url": "Patient/feed-0001"}},
		map[string]any{"fullUrl": "urn:uuid:0d6b7b1e-0000-4000-8000-000000000002", "resource": map[string]any{
			"resourceType": "DocumentReference", "id": "feed-0001-note-1", "status": "current",
			"type":    map[string]any{"coding": []any{map[string]any{"system": "http://loinc.org", "code": "11506-3", "display": "Progress note"}}},
			"subject": map[string]any{"reference": "urn:uuid:0d6b7b1e-0000-4000-8000-000000000001"},
			"date":    "2026-03-01T10:00:00Z", "description": "Progress note",
			"content": []any{map[string]any{"attachment": map[string]any{"contentType": "text/plain", "url": "urn:uuid:0d6b7b1e-0000-4000-8000-000000000003"}}},
		}, "request": map[string]any{"method": "POST", "url": "DocumentReference"}},
		map[string]any{"fullUrl": "urn:uuid:0d6b7b1e-0000-4000-8000-000000000003", "resource": map[string]any{
			"resourceType": "Binary", "contentType": "text/plain", "data": base64.StdEncoding.EncodeToString([]byte(note)),
		}, "request": map[string]any{"method": "POST", "url": "Binary"}},
	}
	b, err := json.Marshal(map[string]any{"resourceType": "Bundle", "type": "transaction", "entry": append(entries, extra...)})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

var newcomerQuery = url.Values{"family": {"Quackenbush"}, "given": {"Zephyrine Odile"}, "birthdate": {"1971-04-05"}, "gender": {"female"}}

// counts returns what participant j holds.
func counts(t *testing.T, n *Network, j int) string {
	t.Helper()
	np, nd, err := n.Participants[j].Server.Counts()
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%d patients, %d documents", np, nd)
}

// TestFHIR_LiveFeed writes into a running participant through its facade
// while another member's EHR keeps searching: a transaction Bundle adds a
// patient with a document (the next discovery finds them, and the note
// reads back), PUT replaces their demographics, DELETE removes them. A
// transaction with one bad entry, and every malformed write, changes
// nothing.
func TestFHIR_LiveFeed(t *testing.T) {
	n, logs := startNetwork(t, Options{Participants: 3, FHIR: true})
	if _, err := n.SeedSynthetic(callCtx(t), 100, 1, nil); err != nil {
		t.Fatal(err)
	}
	ehr1, ehr2 := newFHIREHR(t, n, 0), newFHIREHR(t, n, 1)
	if got := ehr1.do("GET", "/Patient?"+newcomerQuery.Encode(), nil).want(t, "before the feed", 200, ""); path(got.json, "total") != float64(0) {
		t.Fatalf("the newcomer is found before the feed: %s", got.body)
	}

	// Searches keep running at p1 while p2's EHR writes.
	var (
		stop    = make(chan struct{})
		wg      sync.WaitGroup
		queries atomic.Int64
		failed  atomic.Value
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			req, _ := http.NewRequest("GET", ehr1.base+"/Patient?"+newcomerQuery.Encode(), nil)
			req.Header = ehr1.headers.Clone()
			resp, err := ehr1.client.Do(req)
			if err != nil {
				failed.Store(err.Error())
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				failed.Store(fmt.Sprintf("status %d", resp.StatusCode))
				return
			}
			queries.Add(1)
		}
	}()

	before := counts(t, n, 1)
	// One bad entry (a Binary without its content type) and nothing is
	// written, neither the patient nor the good document.
	bad := feedBundle(t, "never stored", map[string]any{"resource": map[string]any{
		"resourceType": "DocumentReference", "id": "feed-0001-note-2", "status": "current",
		"subject": map[string]any{"reference": "Patient/feed-0001"},
		"content": []any{map[string]any{"attachment": map[string]any{"url": "Binary/b2"}}},
	}}, map[string]any{"resource": map[string]any{"resourceType": "Binary", "id": "b2", "data": "aGVsbG8="}})
	ehr2.do("POST", "/", bad).want(t, "transaction with a bad entry", 400, "has no contentType")
	if got := counts(t, n, 1); got != before {
		t.Fatalf("a failed transaction changed p2: %s, was %s", got, before)
	}

	note := "Seen for a sprained ankle. Plan: rest, ice."
	resp := ehr2.do("POST", "/", feedBundle(t, note)).want(t, "transaction", 200, "")
	if resp.json["type"] != "transaction-response" || path(resp.json, "entry", 0, "response", "status") != "201 Created" ||
		path(resp.json, "entry", 0, "response", "location") != "Patient/feed-0001" {
		t.Fatalf("transaction response: %s", resp.body)
	}
	found := ehr1.do("GET", "/Patient?"+newcomerQuery.Encode(), nil).want(t, "after the feed", 200, "")
	m := matchEntries(found.json)
	if len(m) != 1 || str(path(m[0], "resource", "identifier", 0, "value")) != "p2/feed-0001" {
		t.Fatalf("the next discovery does not find the newcomer at p2: %s", found.body)
	}
	docs := ehr1.do("GET", "/DocumentReference?patient="+str(path(m[0], "resource", "id")), nil).want(t, "newcomer's documents", 200, "")
	dm := matchEntries(docs.json)
	if len(dm) != 1 {
		t.Fatalf("newcomer's documents: %s", docs.body)
	}
	if got := ehr1.do("GET", str(path(dm[0], "resource", "content", 0, "attachment", "url")), nil).want(t, "newcomer's note", 200, ""); string(got.body) != note {
		t.Fatalf("note reads back as %q", got.body)
	}

	// PUT replaces the demographics: a new family name is found, and the
	// matcher forgets the old one.
	moved := map[string]any{}
	for k, v := range newcomer {
		moved[k] = v
	}
	moved["name"] = []any{map[string]any{"use": "official", "family": "Featherstonehaugh", "given": []any{"Zephyrine", "Odile"}}}
	body, _ := json.Marshal(moved)
	ehr2.do("PUT", "/Patient/feed-0001", body).want(t, "put", 200, "")
	q := url.Values{"family": {"Featherstonehaugh"}, "given": {"Zephyrine Odile"}, "birthdate": {"1971-04-05"}, "gender": {"female"}}
	if got := ehr1.do("GET", "/Patient?"+q.Encode(), nil).want(t, "after put", 200, ""); len(matchEntries(got.json)) != 1 {
		t.Fatalf("the new name is not found: %s", got.body)
	}
	got := ehr1.do("GET", "/Patient?"+newcomerQuery.Encode(), nil).want(t, "old name after put", 200, "")
	for _, e := range matchEntries(got.json) {
		if path(e, "search", "extension", 0, "valueCode") == "certain" {
			t.Errorf("the old name is still a certain match after the PUT: %s", got.body)
		}
	}

	// DELETE removes the patient and the note.
	ehr2.do("DELETE", "/Patient/feed-0001", nil).want(t, "delete", 200, "")
	if got := counts(t, n, 1); got != before {
		t.Errorf("after the delete p2 holds %s, want %s as before", got, before)
	}
	if got := ehr1.do("GET", "/Patient?"+q.Encode(), nil).want(t, "after delete", 200, ""); len(matchEntries(got.json)) != 0 {
		t.Errorf("the deleted patient is still found: %s", got.body)
	}
	ehr2.do("DELETE", "/Patient/feed-0001", nil).want(t, "delete again", 404, "no such patient")

	close(stop)
	wg.Wait()
	if f := failed.Load(); f != nil {
		t.Fatalf("a search failed while the feed wrote: %v", f)
	}
	t.Logf("%d searches ran while the feed wrote", queries.Load())

	// Malformed writes: each refused with the right status, nothing
	// written.
	before = counts(t, n, 1)
	if ok, _ := n.Participants[0].Server.HasPatient("p1-000001"); !ok {
		t.Fatal("p1 holds no p1-000001 to name")
	}
	foreign := feedBundle(t, "x")
	foreign = []byte(strings.Replace(string(foreign), `"reference":"urn:uuid:0d6b7b1e-0000-4000-8000-000000000001"`, `"reference":"Patient/p1-000001"`, 1))
	patientBody, _ := json.Marshal(newcomer)
	for _, c := range []struct {
		name, method, path, ctype string
		body                      []byte
		status                    int
		says                      string
	}{
		{"malformed JSON", "POST", "/", "application/fhir+json", []byte(`{"resourceType": "Bundle", "type": "transaction", "entry": [`), 400, "not valid JSON"},
		{"a Patient posted as a transaction", "POST", "/", "application/fhir+json", patientBody, 400, "not a FHIR Bundle: resourceType is Patient"},
		{"a batch", "POST", "/", "application/fhir+json", []byte(strings.Replace(string(feedBundle(t, "x")), `"type":"transaction"`, `"type":"batch"`, 1)), 400, "Bundle.type: must be transaction"},
		{"a document of another member's patient", "POST", "/", "application/fhir+json", foreign, 400, "references neither a Patient in this bundle nor one this member holds"},
		{"PUT of another id", "PUT", "/Patient/feed-0002", "application/fhir+json", patientBody, 400, "Patient.id: must equal the id in the URL"},
		{"PUT of an Observation", "PUT", "/Patient/feed-0001", "application/fhir+json", []byte(`{"resourceType":"Observation","id":"feed-0001"}`), 400, "resourceType: must be Patient"},
		{"PUT of XML", "PUT", "/Patient/feed-0001", "application/xml", []byte(`<Patient/>`), 415, "Content-Type: must be one of"},
		{"a bad birth date", "PUT", "/Patient/feed-0001", "application/fhir+json", []byte(strings.Replace(string(patientBody), "1971-04-05", "1971-13-05", 1)), 400, "birthDate is not a FHIR date"},
		{"an unknown interaction", "POST", "/Observation", "application/fhir+json", []byte(`{}`), 404, "does not support the interaction"},
	} {
		t.Run(c.name, func(t *testing.T) {
			ehr2.do(c.method, c.path, c.body, "Content-Type", c.ctype).want(t, c.name, c.status, c.says)
		})
	}

	// A 100 MB Bundle: refused from its Content-Length before it is read,
	// or, sent without one, once the cap is passed.
	for _, chunked := range []bool{false, true} {
		const size = 100 << 20
		var body io.Reader = io.LimitReader(zeros{}, size)
		req, _ := http.NewRequest("POST", ehr2.base+"/", body)
		if chunked {
			req.ContentLength = -1
		} else {
			req.ContentLength = size
		}
		req.Header = ehr2.headers.Clone()
		req.Header.Set("Content-Type", "application/fhir+json")
		start := time.Now()
		resp, err := ehr2.client.Do(req)
		if err != nil {
			t.Fatalf("100 MB bundle (chunked %v): %v", chunked, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusRequestEntityTooLarge || !strings.Contains(string(b), "larger than this server accepts") {
			t.Errorf("100 MB bundle (chunked %v): status %d: %s", chunked, resp.StatusCode, b)
		}
		t.Logf("100 MB bundle (chunked %v): %d after %v", chunked, resp.StatusCode, time.Since(start).Round(time.Millisecond))
	}
	if got := counts(t, n, 1); got != before {
		t.Errorf("malformed writes changed p2: %s, was %s", got, before)
	}

	ehr1.seen.validate(t)
	ehr2.seen.validate(t)
	for _, phi := range []string{"Quackenbush", "Featherstonehaugh", "1971-04-05", "555-0142", "Larkspur"} {
		if containsValue(logs.String(), phi) {
			t.Errorf("the logs hold %q", phi)
		}
	}
}

// zeros is an endless source of spaces: JSON whitespace.
type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = ' '
	}
	return len(p), nil
}

// TestFHIR_LiveFeedPublishesLocatorTokens: with a linkage key, a patient the
// EHR writes through the facade has its record-locator tokens published
// before long, and the facade's own searches carry tokens: with the brokers
// routing targeted-only (no broadcast), another member's search finds the
// newcomer only through the locator. A DELETE withdraws the tokens.
func TestFHIR_LiveFeedPublishesLocatorTokens(t *testing.T) {
	n, _ := startNetwork(t, Options{Participants: 3, FHIR: true, LinkageKey: newKey(t), Routing: broker.RoutingTargetedOnly})
	ehr1, ehr2 := newFHIREHR(t, n, 0), newFHIREHR(t, n, 1)
	search := func(phase string) []any {
		t.Helper()
		return matchEntries(ehr1.do("GET", "/Patient?"+newcomerQuery.Encode(), nil).want(t, phase, 200, "").json)
	}
	if got := search("before the feed"); len(got) != 0 {
		t.Fatalf("the newcomer is found before the feed: %v", got)
	}
	ehr2.do("POST", "/", feedBundle(t, "a note")).want(t, "transaction", 200, "")
	waitLocator(t, n, "tokens of the fed patient")
	got := search("after the feed")
	if len(got) != 1 || str(path(got[0], "resource", "identifier", 0, "value")) != "p2/feed-0001" {
		t.Fatalf("phase %q: a targeted-only search does not find the newcomer at p2: %v", "after the feed", got)
	}
	ehr2.do("DELETE", "/Patient/feed-0001", nil).want(t, "delete", 200, "")
	waitLocator(t, n, "tokens of the deleted patient withdrawn")
	if got := search("after the delete"); len(got) != 0 {
		t.Fatalf("phase %q: the deleted patient is still found: %v", "after the delete", got)
	}
}
