package e2e

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	qhinv1 "github.com/openqhin/openqhin/proto/qhin/v1"
)

// BenchmarkFHIRBinary retrieves one 256 MiB document through p1's FHIR
// facade (its bytes, and a FHIR Binary whose base64 is encoded as it
// streams) and through the Gateway directly, from p2, checking the SHA-256
// of every retrieval. It reports MiB/s and the process's peak HeapInuse
// above the heap before the retrieval (the whole network runs in this
// process):
//
//	go test -run '^$' -bench FHIRBinary -benchtime 3x ./e2e/
func BenchmarkFHIRBinary(b *testing.B) {
	const size = 256 << 20
	n, _ := startNetwork(&testing.T{}, Options{Brokers: 1, Participants: 2, FHIR: true})
	b.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		n.Stop(ctx)
	})
	ctx := context.Background()
	holder := n.Participants[1].Server
	d := &qhinv1.Demographics{Given: "Bench", Family: "Markham", BirthDate: "1970-01-01", Gender: "other"}
	if err := holder.PutPatient(ctx, "bench-patient", d); err != nil {
		b.Fatal(err)
	}
	h := sha256.New()
	content := io.TeeReader(io.LimitReader(rand.NewChaCha8([32]byte{'f', 'h', 'i', 'r'}), size), h)
	if _, err := holder.PutDocument(ctx, &qhinv1.DocumentMetadata{Id: "bench-doc", Patient: &qhinv1.PatientLink{PatientId: "bench-patient"},
		TypeCode: "18748-4", Title: "Imaging study", Created: timestamppb.Now(), ContentType: "application/dicom"}, content); err != nil {
		b.Fatal(err)
	}
	want := hex.EncodeToString(h.Sum(nil))

	t := &testing.T{}
	ehr := newFHIREHR(t, n, 0)
	q := url.Values{"family": {d.Family}, "given": {d.Given}, "birthdate": {d.BirthDate}, "gender": {d.Gender}}
	found := ehr.do("GET", "/Patient?"+q.Encode(), nil)
	person := str(path(matchEntries(found.json)[0], "resource", "id"))
	docs := ehr.do("GET", "/DocumentReference?patient="+person, nil)
	binary := str(path(matchEntries(docs.json)[0], "resource", "content", 0, "attachment", "url"))
	gw := dial(t, n, n.ParticipantSource(0)).Gateway()
	link := docLink(t, gw, d, "p2", "bench-doc")

	paths := []struct {
		name string
		read func() (string, int64, error)
	}{
		{"fhir-bytes", func() (string, int64, error) { return readFHIR(ehr, binary, "", nil) }},
		{"fhir-binary-resource", func() (string, int64, error) {
			return readFHIR(ehr, binary, "application/fhir+json", func(r io.Reader) io.Reader {
				return base64.NewDecoder(base64.StdEncoding, &betweenQuotes{r: r, after: `"data":"`})
			})
		}},
		{"gateway", func() (string, int64, error) {
			s, err := gw.RetrieveDocument(ctx, &qhinv1.RetrieveDocumentRequest{PurposeOfUse: "T-TRTMNT", Requester: requester(),
				Link: &qhinv1.DocumentLink{Link: link}})
			if err != nil {
				return "", 0, err
			}
			h := sha256.New()
			var n int64
			for {
				msg, err := s.Recv()
				if errors.Is(err, io.EOF) {
					return hex.EncodeToString(h.Sum(nil)), n, nil
				}
				if err != nil {
					return "", n, err
				}
				h.Write(msg.GetChunk())
				n += int64(len(msg.GetChunk()))
			}
		}},
	}
	for _, p := range paths {
		b.Run(p.name, func(b *testing.B) {
			var peak uint64
			for i := 0; i < b.N; i++ {
				runtime.GC()
				var ms runtime.MemStats
				runtime.ReadMemStats(&ms)
				base := ms.HeapInuse
				stop := sampleHeapPeak(&peak, base)
				sum, got, err := p.read()
				stop()
				if err != nil || got != size || sum != want {
					b.Fatalf("%s: %d bytes, sha256 %s, %v; want %d bytes, %s", p.name, got, sum, err, size, want)
				}
			}
			b.SetBytes(size)
			b.ReportMetric(float64(peak)/(1<<20), "peak-heap-MiB")
		})
	}
}

// readFHIR reads a Binary through the facade and hashes what decode makes
// of the body.
func readFHIR(ehr *fhirEHR, u, accept string, decode func(io.Reader) io.Reader) (string, int64, error) {
	req, _ := http.NewRequest("GET", u, nil)
	req.Header = ehr.headers.Clone()
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	resp, err := ehr.client.Do(req)
	if err != nil {
		return "", 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		return "", 0, errors.New(resp.Status)
	}
	var r io.Reader = resp.Body
	if decode != nil {
		r = decode(r)
	}
	h := sha256.New()
	n, err := io.Copy(h, r)
	return hex.EncodeToString(h.Sum(nil)), n, err
}

// betweenQuotes yields the characters of r after the marker up to the next
// double quote: a JSON string's value, read as it streams.
type betweenQuotes struct {
	r     io.Reader
	after string
	seen  strings.Builder
	in    bool
	done  bool
	buf   [32 << 10]byte
	pend  []byte
}

func (q *betweenQuotes) Read(p []byte) (int, error) {
	for len(q.pend) == 0 {
		if q.done {
			return 0, io.EOF
		}
		n, err := q.r.Read(q.buf[:])
		chunk := q.buf[:n]
		if !q.in {
			q.seen.Write(chunk)
			s := q.seen.String()
			i := strings.Index(s, q.after)
			if i < 0 {
				if err != nil {
					return 0, io.ErrUnexpectedEOF
				}
				continue
			}
			q.in = true
			chunk = []byte(s[i+len(q.after):])
		}
		if j := strings.IndexByte(string(chunk), '"'); j >= 0 {
			chunk, q.done = chunk[:j], true
		}
		q.pend = append(q.pend[:0], chunk...)
		if err != nil && !q.done {
			return 0, io.ErrUnexpectedEOF
		}
	}
	n := copy(p, q.pend)
	q.pend = q.pend[n:]
	return n, nil
}

// sampleHeapPeak records the peak HeapInuse above base every 10ms until stop.
func sampleHeapPeak(peak *uint64, base uint64) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(10 * time.Millisecond)
		defer t.Stop()
		for {
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			if ms.HeapInuse > base && ms.HeapInuse-base > *peak {
				*peak = ms.HeapInuse - base
			}
			select {
			case <-done:
				return
			case <-t.C:
			}
		}
	}()
	return func() { close(done); wg.Wait() }
}
