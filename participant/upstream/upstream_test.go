package upstream

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/openqhin/openqhin/participant"
	"github.com/openqhin/openqhin/participant/store"
	qhinv1 "github.com/openqhin/openqhin/proto/qhin/v1"
)

const note = "Seen for a cough. Plan: fluids."

// fhirServer is a small FHIR server without $match: Patient searches,
// DocumentReference searches and reads, Binary reads.
func fhirServer(t *testing.T, slow time.Duration, huge bool) (*httptest.Server, *atomic.Int64) {
	t.Helper()
	var searches atomic.Int64
	sum := sha256.Sum256([]byte(note))
	mux := http.NewServeMux()
	mux.HandleFunc("POST /Patient/$match", func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "no such operation", http.StatusNotFound)
	})
	mux.HandleFunc("GET /Patient", func(w http.ResponseWriter, r *http.Request) {
		searches.Add(1)
		time.Sleep(slow)
		w.Header().Set("Content-Type", "application/fhir+json")
		if huge {
			fmt.Fprintf(w, `{"resourceType":"Bundle","type":"searchset","entry":[{"resource":{"resourceType":"Patient","id":"x","name":[{"family":"%s"}]}}]}`, strings.Repeat("x", 2<<20))
			return
		}
		q := r.URL.Query()
		if q.Get("birthdate") != "1961-02-03" {
			fmt.Fprint(w, `{"resourceType":"Bundle","type":"searchset","entry":[]}`)
			return
		}
		fmt.Fprint(w, `{"resourceType":"Bundle","type":"searchset","entry":[{"resource":{"resourceType":"Patient","id":"pt-1",
			"name":[{"family":"Lindqvist","given":["Astrid"]}],"gender":"female","birthDate":"1961-02-03",
			"address":[{"postalCode":"55401"}],"telecom":[{"system":"phone","value":"612-555-0100"}]}}]}`)
	})
	mux.HandleFunc("GET /DocumentReference", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/fhir+json")
		if r.URL.Query().Get("patient") != "pt-1" {
			fmt.Fprint(w, `{"resourceType":"Bundle","type":"searchset"}`)
			return
		}
		fmt.Fprint(w, `{"resourceType":"Bundle","type":"searchset","entry":[
			{"resource":{"resourceType":"DocumentReference","id":"d1","date":"2025-01-02T03:04:05Z","type":{"coding":[{"code":"11506-3","display":"Progress note"}]},
			 "content":[{"attachment":{"contentType":"text/plain","url":"Binary/b1"}}]}},
			{"resource":{"resourceType":"DocumentReference","id":"d2","date":"2020-01-01","type":{"coding":[{"code":"11506-3"}]},
			 "content":[{"attachment":{"contentType":"text/plain","url":"https://elsewhere.example/Binary/b9"}}]}}]}`)
	})
	mux.HandleFunc("GET /DocumentReference/{id}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/fhir+json")
		switch r.PathValue("id") {
		case "d1":
			fmt.Fprintf(w, `{"resourceType":"DocumentReference","id":"d1","content":[{"attachment":{"contentType":"text/plain","url":"Binary/b1"}}]}`)
		case "d2":
			fmt.Fprint(w, `{"resourceType":"DocumentReference","id":"d2","content":[{"attachment":{"contentType":"text/plain","url":"https://elsewhere.example/Binary/b9"}}]}`)
		case "d3": // states its size and SHA-256: streamed straight through
			fmt.Fprintf(w, `{"resourceType":"DocumentReference","id":"d3","content":[{"attachment":{"contentType":"text/plain","url":"Binary/b1","size":%d,
				"extension":[{"url":"http://hl7.org/fhir/StructureDefinition/alternate-hash","extension":[{"url":"hash","valueString":"%s"}]}]}}]}`, len(note), hex.EncodeToString(sum[:]))
		case "d4": // inline data
			fmt.Fprintf(w, `{"resourceType":"DocumentReference","id":"d4","content":[{"attachment":{"contentType":"text/plain","data":"%s"}}]}`, base64.StdEncoding.EncodeToString([]byte(note)))
		default:
			http.NotFound(w, r)
		}
	})
	mux.HandleFunc("GET /Binary/b1", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		fmt.Fprint(w, note)
	})
	s := httptest.NewServer(mux)
	t.Cleanup(s.Close)
	return s, &searches
}

var astrid = &qhinv1.Demographics{Given: "Astrid", Family: "Lindkvist", BirthDate: "1961-02-03", Gender: "female", Phone: "612-555-0100"}

func TestRecords_SearchesWhereThereIsNoMatch(t *testing.T) {
	srv, searches := fhirServer(t, 0, false)
	r, err := New(Config{URL: srv.URL, SpoolDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	cands, err := r.Discover(ctx, astrid, 0.5, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(cands) != 1 || cands[0].PatientId != "pt-1" || cands[0].Score < 0.9 || cands[0].Explanation == nil {
		t.Fatalf("candidates %v: want pt-1 found by the given-name search despite the family-name typo", cands)
	}
	if searches.Load() != 2 {
		t.Errorf("%d searches, want 2 (family and given name, each with the birth date)", searches.Load())
	}

	docs, err := r.Documents(ctx, []string{"pt-1"}, store.Filter{Since: time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)})
	if err != nil || len(docs) != 1 || docs[0].Id != "d1" || docs[0].TypeCode != "11506-3" {
		t.Fatalf("documents since 2024: %v, %v", docs, err)
	}

	sum := sha256.Sum256([]byte(note))
	for _, id := range []string{"d1", "d3", "d4"} {
		var header *qhinv1.DocumentMetadata
		var got []byte
		err := r.StreamDocument(ctx, id, func(m *qhinv1.DocumentMetadata) error { header = m; return nil },
			func(b []byte) error { got = append(got, b...); return nil })
		if err != nil || string(got) != note || header.Sha256 != hex.EncodeToString(sum[:]) || header.Size != int64(len(note)) {
			t.Errorf("document %s: %q, header %v, %v", id, got, header, err)
		}
	}
	err = r.StreamDocument(ctx, "d2", func(*qhinv1.DocumentMetadata) error { return nil }, func([]byte) error { return nil })
	if err == nil || !strings.Contains(err.Error(), "not on the upstream server") {
		t.Errorf("an attachment on another server: %v", err)
	}
	if err := r.StreamDocument(ctx, "nope", nil, nil); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("unknown document: %v, want ErrNotFound", err)
	}
}

func TestRecords_DeadlineAndSizeCapsAndNoURLInErrors(t *testing.T) {
	slow, _ := fhirServer(t, 2*time.Second, false)
	r, _ := New(Config{URL: slow.URL, Timeout: 100 * time.Millisecond})
	start := time.Now()
	_, err := r.Discover(context.Background(), astrid, 0.5, 10)
	if !errors.Is(err, participant.ErrUnreachable) {
		t.Fatalf("slow upstream: %v, want ErrUnreachable", err)
	}
	if time.Since(start) > 1500*time.Millisecond {
		t.Errorf("the call took %v, past its deadline", time.Since(start))
	}
	for _, phi := range []string{"Lindkvist", "1961", slow.URL} {
		if strings.Contains(err.Error(), phi) {
			t.Errorf("error %q holds %q", err, phi)
		}
	}

	huge, _ := fhirServer(t, 0, true)
	r, _ = New(Config{URL: huge.URL, MaxResponseBytes: 1 << 20})
	if _, err := r.Discover(context.Background(), astrid, 0.5, 10); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Errorf("a 2 MiB answer with a 1 MiB cap: %v", err)
	}
	if _, err := New(Config{URL: "ftp://x"}); err == nil {
		t.Error("an ftp URL was taken")
	}
}
