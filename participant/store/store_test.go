package store

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"testing"
	"time"

	bolterrors "go.etcd.io/bbolt/errors"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	qhinv1 "github.com/openqhin/openqhin/proto/qhin/v1"
)

// openStore opens a store in a fresh temporary directory and closes it when
// the test ends.
func openStore(t testing.TB) *Store {
	t.Helper()
	s, err := Open(filepath.Join(t.TempDir(), "records.db"))
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// fakePatient is a made-up person.
func fakePatient(i int) *qhinv1.Demographics {
	return &qhinv1.Demographics{
		Given:     fmt.Sprintf("Given%d", i),
		Family:    "Testperson",
		BirthDate: fmt.Sprintf("19%02d-01-02", 50+i%50),
		Gender:    "female",
		Address:   &qhinv1.Address{PostalCode: "02139"},
	}
}

func putPatient(t testing.TB, s *Store, id string) {
	t.Helper()
	if err := s.PutPatient(context.Background(), id, fakePatient(len(id))); err != nil {
		t.Fatalf("PutPatient(%s): %v", id, err)
	}
}

func meta(id, patientID, typeCode string, created time.Time) *qhinv1.DocumentMetadata {
	return &qhinv1.DocumentMetadata{
		Id:          id,
		Patient:     &qhinv1.PatientLink{ParticipantId: "p1", PatientId: patientID},
		TypeCode:    typeCode,
		Title:       "note " + id,
		Created:     timestamppb.New(created),
		ContentType: "text/plain",
	}
}

// content is n bytes of deterministic noise.
func content(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, seed))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// stream reads a document back with StreamDocument, checking that each chunk
// is at most ChunkSize.
func stream(t testing.TB, s *Store, id string) (*qhinv1.DocumentMetadata, []byte, []int) {
	t.Helper()
	var (
		header *qhinv1.DocumentMetadata
		body   bytes.Buffer
		sizes  []int
	)
	err := s.StreamDocument(context.Background(), id,
		func(m *qhinv1.DocumentMetadata) error {
			if header != nil {
				t.Error("header called twice")
			}
			header = m
			return nil
		},
		func(b []byte) error {
			if header == nil {
				t.Error("chunk before header")
			}
			if len(b) > ChunkSize {
				t.Errorf("chunk of %d bytes, want at most %d", len(b), ChunkSize)
			}
			sizes = append(sizes, len(b))
			body.Write(b)
			return nil
		})
	if err != nil {
		t.Fatalf("StreamDocument(%s): %v", id, err)
	}
	return header, body.Bytes(), sizes
}

func TestPatients_PutGetForEachCounts(t *testing.T) {
	s := openStore(t)
	ctx := context.Background()
	ids := []string{"pat-3", "pat-1", "pat-2"}
	for i, id := range ids {
		if err := s.PutPatient(ctx, id, fakePatient(i)); err != nil {
			t.Fatalf("PutPatient(%s): %v", id, err)
		}
	}
	// Replacing keeps one record.
	if err := s.PutPatient(ctx, "pat-1", fakePatient(42)); err != nil {
		t.Fatal(err)
	}
	got, err := s.Patient("pat-1")
	if err != nil {
		t.Fatalf("Patient: %v", err)
	}
	if !proto.Equal(got, fakePatient(42)) {
		t.Errorf("Patient(pat-1) = %v, want the replacement", got)
	}
	if _, err := s.Patient("nobody"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Patient(nobody) error = %v, want ErrNotFound", err)
	}

	var order []string
	if err := s.ForEachPatient(func(p Patient) error {
		if p.Demographics == nil {
			t.Errorf("patient %s without demographics", p.ID)
		}
		order = append(order, p.ID)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if want := []string{"pat-1", "pat-2", "pat-3"}; !slices.Equal(order, want) {
		t.Errorf("ForEachPatient order = %v, want %v", order, want)
	}

	stop := errors.New("stop")
	calls := 0
	err = s.ForEachPatient(func(Patient) error { calls++; return stop })
	if !errors.Is(err, stop) || calls != 1 {
		t.Errorf("ForEachPatient with failing fn: err %v after %d calls, want stop after 1", err, calls)
	}

	if err := s.PutPatients(ctx, []Patient{{ID: "pat-4", Demographics: fakePatient(4)}, {ID: "pat-5", Demographics: fakePatient(5)}}); err != nil {
		t.Fatalf("PutPatients: %v", err)
	}
	if _, err := s.PutDocument(ctx, meta("d1", "pat-1", "11506-3", time.Now()), bytes.NewReader([]byte("x"))); err != nil {
		t.Fatal(err)
	}
	if p, d, err := s.Counts(); err != nil || p != 5 || d != 1 {
		t.Errorf("Counts = %d patients, %d documents, %v; want 5, 1, nil", p, d, err)
	}
}

func TestPatients_RejectEmptyIDAndCancelledContext(t *testing.T) {
	s := openStore(t)
	if err := s.PutPatient(context.Background(), "", fakePatient(1)); err == nil {
		t.Error("PutPatient with empty id succeeded")
	}
	if err := s.PutPatients(context.Background(), []Patient{{ID: "ok", Demographics: fakePatient(1)}, {ID: ""}}); err == nil {
		t.Error("PutPatients with an empty id succeeded")
	}
	if _, err := s.Patient("ok"); !errors.Is(err, ErrNotFound) {
		t.Errorf("PutPatients that failed stored part of its batch: Patient(ok) err = %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := s.PutPatient(ctx, "p", fakePatient(1)); !errors.Is(err, context.Canceled) {
		t.Errorf("PutPatient with cancelled context = %v, want context.Canceled", err)
	}
}

func TestPutDocument_StreamsContentRoundTrip(t *testing.T) {
	tests := []struct {
		name       string
		size       int
		wantChunks int
	}{
		{"empty", 0, 0},
		{"one byte", 1, 1},
		{"exactly one chunk", ChunkSize, 1},
		{"several chunks and a tail", 3*ChunkSize + 17, 4},
		// Larger than one write transaction (chunksPerTx chunks).
		{"several transactions", chunksPerTx*ChunkSize + 5, chunksPerTx + 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := openStore(t)
			putPatient(t, s, "pat-1")
			body := content(tt.size, uint64(tt.size))
			// A caller's stale size and hash must not survive.
			in := meta("doc-1", "pat-1", "11506-3", time.Date(2024, 3, 1, 0, 0, 0, 0, time.UTC))
			in.Size, in.Sha256 = 999, "stale"
			// iotest-style reader returning short reads exercises ReadFull.
			got, err := s.PutDocument(context.Background(), in, &shortReader{r: bytes.NewReader(body), max: 1000})
			if err != nil {
				t.Fatalf("PutDocument: %v", err)
			}
			if got.Size != int64(tt.size) || got.Sha256 != sha(body) {
				t.Errorf("returned size %d sha %s, want %d %s", got.Size, got.Sha256, tt.size, sha(body))
			}
			if in.Size != 999 {
				t.Error("PutDocument modified the caller's metadata")
			}

			header, out, sizes := stream(t, s, "doc-1")
			if !bytes.Equal(out, body) {
				t.Errorf("streamed %d bytes, differing from the %d stored", len(out), len(body))
			}
			if len(sizes) != tt.wantChunks {
				t.Errorf("streamed %d chunks %v, want %d", len(sizes), sizes, tt.wantChunks)
			}
			for i, n := range sizes {
				if i < len(sizes)-1 && n != ChunkSize {
					t.Errorf("chunk %d is %d bytes; every chunk but the last should be full", i, n)
				}
			}
			if !proto.Equal(header, got) {
				t.Errorf("streamed header %v, want %v", header, got)
			}
			stored, err := s.Document("doc-1")
			if err != nil {
				t.Fatal(err)
			}
			if !proto.Equal(stored, got) {
				t.Errorf("Document = %v, want %v", stored, got)
			}
		})
	}
}

// shortReader returns at most max bytes per Read.
type shortReader struct {
	r   io.Reader
	max int
}

func (s *shortReader) Read(p []byte) (int, error) {
	if len(p) > s.max {
		p = p[:s.max]
	}
	return s.r.Read(p)
}

func TestPutDocument_ChunksArriveInOrder(t *testing.T) {
	s := openStore(t)
	putPatient(t, s, "pat-1")
	// Each chunk is filled with its own number, so misordering shows.
	const n = 300 // more than 256, so a little-endian key order would differ
	body := make([]byte, 0, n*ChunkSize)
	for i := range n {
		body = append(body, bytes.Repeat([]byte{byte(i)}, ChunkSize)...)
	}
	if _, err := s.PutDocument(context.Background(), meta("big", "pat-1", "x", time.Now()), bytes.NewReader(body)); err != nil {
		t.Fatal(err)
	}
	i := 0
	err := s.StreamDocument(context.Background(), "big", func(*qhinv1.DocumentMetadata) error { return nil }, func(b []byte) error {
		if len(b) != ChunkSize || b[0] != byte(i) || b[len(b)-1] != byte(i) {
			t.Fatalf("chunk %d: %d bytes starting %d", i, len(b), b[0])
		}
		i++
		return nil
	})
	if err != nil || i != n {
		t.Fatalf("StreamDocument: %v after %d chunks, want %d", err, i, n)
	}
}

func TestPutDocument_Rejects(t *testing.T) {
	s := openStore(t)
	putPatient(t, s, "pat-1")
	tests := []struct {
		name         string
		meta         *qhinv1.DocumentMetadata
		wantNotFound bool
	}{
		{"unknown patient", meta("d1", "nobody", "x", time.Now()), true},
		{"no id", meta("", "pat-1", "x", time.Now()), false},
		{"no patient", &qhinv1.DocumentMetadata{Id: "d1"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := s.PutDocument(context.Background(), tt.meta, bytes.NewReader([]byte("content")))
			if err == nil {
				t.Fatal("PutDocument succeeded")
			}
			if errors.Is(err, ErrNotFound) != tt.wantNotFound {
				t.Errorf("error %v: errors.Is(ErrNotFound) = %v, want %v", err, !tt.wantNotFound, tt.wantNotFound)
			}
			if _, err := s.Document("d1"); !errors.Is(err, ErrNotFound) {
				t.Errorf("a rejected document was stored: Document(d1) err = %v", err)
			}
		})
	}
}

func TestPutDocument_ReplacesSameID(t *testing.T) {
	s := openStore(t)
	ctx := context.Background()
	putPatient(t, s, "pat-1")
	putPatient(t, s, "pat-2")
	old := content(3*ChunkSize+17, 1)
	if _, err := s.PutDocument(ctx, meta("doc-1", "pat-1", "old-type", time.Now()), bytes.NewReader(old)); err != nil {
		t.Fatal(err)
	}
	// The replacement is shorter, of another type, and of another patient.
	repl := []byte("replacement")
	m := meta("doc-1", "pat-2", "new-type", time.Now())
	m.Title = "replaced"
	if _, err := s.PutDocument(ctx, m, bytes.NewReader(repl)); err != nil {
		t.Fatal(err)
	}
	header, out, sizes := stream(t, s, "doc-1")
	if !bytes.Equal(out, repl) || len(sizes) != 1 {
		t.Errorf("content after replace = %d bytes in %d chunks, want %q in one chunk", len(out), len(sizes), repl)
	}
	if header.TypeCode != "new-type" || header.Title != "replaced" || header.Size != int64(len(repl)) || header.Sha256 != sha(repl) {
		t.Errorf("metadata after replace = %v", header)
	}
	if docs, _ := s.Documents([]string{"pat-1"}, Filter{}); len(docs) != 0 {
		t.Errorf("old patient still lists %d documents", len(docs))
	}
	if docs, _ := s.Documents([]string{"pat-2"}, Filter{}); len(docs) != 1 {
		t.Errorf("new patient lists %d documents, want 1", len(docs))
	}
	if _, d, _ := s.Counts(); d != 1 {
		t.Errorf("Counts documents = %d, want 1", d)
	}
}

func TestDocuments_Filter(t *testing.T) {
	s := openStore(t)
	ctx := context.Background()
	putPatient(t, s, "pat-1")
	putPatient(t, s, "pat-2")
	putPatient(t, s, "pat-10") // a prefix of no other id, but pat-1 is a prefix of it
	jan := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	feb := time.Date(2024, 2, 1, 0, 0, 0, 0, time.UTC)
	mar := time.Date(2024, 3, 1, 0, 0, 0, 0, time.UTC)
	docs := []NewDocument{
		{Meta: meta("a-jan", "pat-1", "note", jan), Content: []byte("a")},
		{Meta: meta("a-feb", "pat-1", "lab", feb), Content: []byte("b")},
		{Meta: meta("a-mar", "pat-1", "note", mar), Content: []byte("c")},
		{Meta: meta("b-feb", "pat-2", "note", feb), Content: []byte("d")},
		{Meta: meta("c-jan", "pat-10", "note", jan), Content: []byte("e")},
	}
	if err := s.PutDocuments(ctx, docs); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		patients []string
		filter   Filter
		want     []string
	}{
		{"all of one patient", []string{"pat-1"}, Filter{}, []string{"a-feb", "a-jan", "a-mar"}},
		{"patient id prefix of another is not mixed up", []string{"pat-10"}, Filter{}, []string{"c-jan"}},
		{"several patients", []string{"pat-2", "pat-1"}, Filter{}, []string{"a-feb", "a-jan", "a-mar", "b-feb"}},
		{"unknown patient has none", []string{"nobody"}, Filter{}, nil},
		{"unknown next to known", []string{"nobody", "pat-2"}, Filter{}, []string{"b-feb"}},
		{"no patients", nil, Filter{}, nil},
		{"type codes", []string{"pat-1", "pat-2"}, Filter{TypeCodes: []string{"lab"}}, []string{"a-feb"}},
		{"several type codes", []string{"pat-1"}, Filter{TypeCodes: []string{"lab", "note"}}, []string{"a-feb", "a-jan", "a-mar"}},
		{"unknown type code", []string{"pat-1"}, Filter{TypeCodes: []string{"x"}}, nil},
		{"since is inclusive", []string{"pat-1"}, Filter{Since: feb}, []string{"a-feb", "a-mar"}},
		{"until is exclusive", []string{"pat-1"}, Filter{Until: feb}, []string{"a-jan"}},
		{"since and until", []string{"pat-1", "pat-2"}, Filter{Since: feb, Until: mar}, []string{"a-feb", "b-feb"}},
		{"all filters", []string{"pat-1", "pat-2"}, Filter{TypeCodes: []string{"note"}, Since: feb, Until: mar.Add(time.Second)}, []string{"a-mar", "b-feb"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := s.Documents(tt.patients, tt.filter)
			if err != nil {
				t.Fatal(err)
			}
			var ids []string
			for _, m := range got {
				ids = append(ids, m.GetId())
			}
			slices.Sort(ids)
			if !slices.Equal(ids, tt.want) {
				t.Errorf("Documents = %v, want %v", ids, tt.want)
			}
		})
	}
}

func TestDocument_UnknownIDIsNotFound(t *testing.T) {
	s := openStore(t)
	if _, err := s.Document("nope"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Document(nope) = %v, want ErrNotFound", err)
	}
	called := false
	err := s.StreamDocument(context.Background(), "nope",
		func(*qhinv1.DocumentMetadata) error { called = true; return nil },
		func([]byte) error { called = true; return nil })
	if !errors.Is(err, ErrNotFound) {
		t.Errorf("StreamDocument(nope) = %v, want ErrNotFound", err)
	}
	if called {
		t.Error("StreamDocument of an unknown document called back")
	}
}

func TestStreamDocument_StopsOnCallbackErrorAndCancel(t *testing.T) {
	s := openStore(t)
	putPatient(t, s, "pat-1")
	if _, err := s.PutDocument(context.Background(), meta("d", "pat-1", "x", time.Now()), bytes.NewReader(content(4*ChunkSize, 2))); err != nil {
		t.Fatal(err)
	}
	boom := errors.New("client went away")
	chunks := 0
	err := s.StreamDocument(context.Background(), "d", func(*qhinv1.DocumentMetadata) error { return nil },
		func([]byte) error { chunks++; return boom })
	if !errors.Is(err, boom) || chunks != 1 {
		t.Errorf("chunk error: got %v after %d chunks, want the callback's error after 1", err, chunks)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	chunks = 0
	err = s.StreamDocument(ctx, "d", func(*qhinv1.DocumentMetadata) error { return nil },
		func([]byte) error { chunks++; cancel(); return nil })
	if !errors.Is(err, context.Canceled) || chunks != 1 {
		t.Errorf("cancel: got %v after %d chunks, want context.Canceled after 1", err, chunks)
	}
	err = s.StreamDocument(context.Background(), "d", func(*qhinv1.DocumentMetadata) error { return boom },
		func([]byte) error { t.Error("chunk after header failed"); return nil })
	if !errors.Is(err, boom) {
		t.Errorf("header error: got %v, want the callback's error", err)
	}
}

func TestPutDocuments_SameResultAsPutDocument(t *testing.T) {
	created := time.Date(2023, 7, 4, 10, 0, 0, 0, time.UTC)
	sizes := []int{0, 5, ChunkSize, 2*ChunkSize + 3}
	one, batch := openStore(t), openStore(t)
	var docs []NewDocument
	for _, s := range []*Store{one, batch} {
		putPatient(t, s, "pat-1")
	}
	for i, n := range sizes {
		m := meta(fmt.Sprintf("doc-%d", i), "pat-1", "note", created)
		m.Size, m.Sha256 = 1, "stale"
		body := content(n, uint64(i))
		if _, err := one.PutDocument(context.Background(), m, bytes.NewReader(body)); err != nil {
			t.Fatal(err)
		}
		docs = append(docs, NewDocument{Meta: m, Content: body})
	}
	if err := batch.PutDocuments(context.Background(), docs); err != nil {
		t.Fatalf("PutDocuments: %v", err)
	}
	for i, d := range docs {
		id := d.Meta.Id
		h1, b1, c1 := stream(t, one, id)
		h2, b2, c2 := stream(t, batch, id)
		if !proto.Equal(h1, h2) {
			t.Errorf("%s: PutDocument stored %v, PutDocuments %v", id, h1, h2)
		}
		if !bytes.Equal(b1, b2) || !bytes.Equal(b2, d.Content) || !slices.Equal(c1, c2) {
			t.Errorf("%s: content or chunking differs (%v vs %v)", id, c1, c2)
		}
		if h2.Size != int64(sizes[i]) || h2.Sha256 != sha(d.Content) {
			t.Errorf("%s: size %d sha %s, want %d %s", id, h2.Size, h2.Sha256, sizes[i], sha(d.Content))
		}
	}
	l1, _ := one.Documents([]string{"pat-1"}, Filter{})
	l2, _ := batch.Documents([]string{"pat-1"}, Filter{})
	if len(l1) != len(sizes) || len(l2) != len(sizes) {
		t.Errorf("Documents lists %d and %d, want %d", len(l1), len(l2), len(sizes))
	}
}

func TestPutDocuments_UnknownPatientStoresNothing(t *testing.T) {
	s := openStore(t)
	putPatient(t, s, "pat-1")
	err := s.PutDocuments(context.Background(), []NewDocument{
		{Meta: meta("good", "pat-1", "x", time.Now()), Content: []byte("a")},
		{Meta: meta("bad", "nobody", "x", time.Now()), Content: []byte("b")},
	})
	if !errors.Is(err, ErrNotFound) {
		t.Errorf("PutDocuments = %v, want ErrNotFound", err)
	}
	if _, err := s.Document("good"); !errors.Is(err, ErrNotFound) {
		t.Errorf("a failed batch stored part of itself: Document(good) err = %v", err)
	}
}

func TestStore_DataSurvivesReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "records.db")
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	putPatient(t, s, "pat-1")
	body := content(2*ChunkSize+9, 3)
	want, err := s.PutDocument(context.Background(), meta("doc-1", "pat-1", "note", time.Now()), bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	s, err = Open(path)
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	defer s.Close()
	if s.Path() != path {
		t.Errorf("Path = %q, want %q", s.Path(), path)
	}
	if _, err := s.Patient("pat-1"); err != nil {
		t.Errorf("patient lost: %v", err)
	}
	header, out, _ := stream(t, s, "doc-1")
	if !proto.Equal(header, want) || !bytes.Equal(out, body) {
		t.Error("document changed across Close and Open")
	}
}

func TestOpen_SecondOpenFailsInsteadOfHanging(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for the bbolt lock timeout")
	}
	path := filepath.Join(t.TempDir(), "records.db")
	first, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()

	done := make(chan error, 1)
	go func() {
		s, err := Open(path)
		if err == nil {
			s.Close()
		}
		done <- err
	}()
	select {
	case err := <-done:
		if !errors.Is(err, bolterrors.ErrTimeout) {
			t.Fatalf("second Open of a file in use = %v, want bbolt's lock timeout", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("phase %q: timed out after 30s, long after bbolt's lock timeout", "second Open gives up")
	}
}

// cancelReader cancels a context on its first Read and then keeps giving
// data, as a slow upload would while its caller gives up.
type cancelReader struct {
	cancel context.CancelFunc
	left   int
}

func (r *cancelReader) Read(p []byte) (int, error) {
	r.cancel()
	if r.left == 0 {
		return 0, io.EOF
	}
	n := min(len(p), r.left)
	clear(p[:n])
	r.left -= n
	return n, nil
}

func TestPutDocument_CancelledContext(t *testing.T) {
	tests := []struct {
		name string
		size int
	}{
		// Less than one write transaction: the cancel comes during the
		// only read.
		{"cancelled while reading a small document", 100},
		{"cancelled while reading an empty document", 0},
		// More than one write transaction, so the cancel is seen between
		// transactions.
		{"cancelled while streaming a large document", 3 * chunksPerTx * ChunkSize},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := openStore(t)
			putPatient(t, s, "pat-1")
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			_, err := s.PutDocument(ctx, meta("doc-1", "pat-1", "x", time.Now()), &cancelReader{cancel: cancel, left: tt.size})
			if !errors.Is(err, context.Canceled) {
				t.Fatalf("PutDocument = %v, want context.Canceled", err)
			}
			if _, err := s.Document("doc-1"); !errors.Is(err, ErrNotFound) {
				t.Errorf("a cancelled document is visible: Document err = %v", err)
			}
			if docs, _ := s.Documents([]string{"pat-1"}, Filter{}); len(docs) != 0 {
				t.Errorf("a cancelled document is listed")
			}
			// The id is usable again.
			body := []byte("second try")
			if _, err := s.PutDocument(context.Background(), meta("doc-1", "pat-1", "x", time.Now()), bytes.NewReader(body)); err != nil {
				t.Fatal(err)
			}
			if _, out, _ := stream(t, s, "doc-1"); !bytes.Equal(out, body) {
				t.Errorf("after a cancelled write, content = %d bytes, want %q", len(out), body)
			}
		})
	}
}

func TestPutDocument_ReaderErrorIsReturned(t *testing.T) {
	s := openStore(t)
	putPatient(t, s, "pat-1")
	boom := errors.New("upload broke")
	r := io.MultiReader(bytes.NewReader(make([]byte, 100)), errReader{boom})
	if _, err := s.PutDocument(context.Background(), meta("d", "pat-1", "x", time.Now()), r); !errors.Is(err, boom) {
		t.Errorf("PutDocument = %v, want the reader's error", err)
	}
	if _, err := s.Document("d"); !errors.Is(err, ErrNotFound) {
		t.Errorf("a failed upload is visible: %v", err)
	}
}

type errReader struct{ err error }

func (r errReader) Read([]byte) (int, error) { return 0, r.err }

func BenchmarkPutDocuments(b *testing.B) {
	s := openStore(b)
	putPatient(b, s, "pat-1")
	const batch = 100
	body := content(4<<10, 1)
	docs := make([]NewDocument, batch)
	for i := range docs {
		docs[i] = NewDocument{Meta: meta(fmt.Sprintf("doc-%d", i), "pat-1", "note", time.Now()), Content: body}
	}
	b.SetBytes(int64(batch * len(body)))
	b.ReportAllocs()
	for b.Loop() {
		if err := s.PutDocuments(context.Background(), docs); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkStreamDocument(b *testing.B) {
	s := openStore(b)
	putPatient(b, s, "pat-1")
	body := content(1<<20, 1)
	if _, err := s.PutDocument(context.Background(), meta("doc", "pat-1", "note", time.Now()), bytes.NewReader(body)); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		n := 0
		err := s.StreamDocument(context.Background(), "doc", func(*qhinv1.DocumentMetadata) error { return nil },
			func(c []byte) error { n += len(c); return nil })
		if err != nil || n != len(body) {
			b.Fatalf("streamed %d bytes: %v", n, err)
		}
	}
}

func TestPutDocument_AlreadyCancelledLeavesExistingDocument(t *testing.T) {
	s := openStore(t)
	putPatient(t, s, "pat-1")
	body := []byte("the version on file")
	if _, err := s.PutDocument(context.Background(), meta("doc-1", "pat-1", "x", time.Now()), bytes.NewReader(body)); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := s.PutDocument(ctx, meta("doc-1", "pat-1", "x", time.Now()), bytes.NewReader([]byte("never written")))
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("PutDocument = %v, want context.Canceled", err)
	}
	if _, out, _ := stream(t, s, "doc-1"); !bytes.Equal(out, body) {
		t.Errorf("a call that was cancelled before it started changed the document: %q", out)
	}
}

func TestStreamDocument_HoldsNoTransactionWhileTheReaderWaits(t *testing.T) {
	s := openStore(t)
	putPatient(t, s, "pat-1")
	const chunks = 5*streamBatch + 3
	if _, err := s.PutDocument(context.Background(), meta("d", "pat-1", "x", time.Now()), bytes.NewReader(content(chunks*ChunkSize, 4))); err != nil {
		t.Fatal(err)
	}
	check := func(where string) {
		if n := s.db.Stats().OpenTxN; n != 0 {
			t.Fatalf("%s: %d read transactions open while the reader has the stream", where, n)
		}
	}
	got := 0
	err := s.StreamDocument(context.Background(), "d",
		func(*qhinv1.DocumentMetadata) error { check("header"); return nil },
		func([]byte) error { check(fmt.Sprintf("chunk %d", got)); got++; return nil })
	if err != nil || got != chunks {
		t.Fatalf("StreamDocument: %v after %d chunks, want %d", err, got, chunks)
	}
}

func TestStreamDocument_DocumentChangedUnderTheStreamIsErrChanged(t *testing.T) {
	for _, tc := range []struct {
		name   string
		change func(t *testing.T, s *Store)
	}{
		{"replaced by other content", func(t *testing.T, s *Store) {
			if _, err := s.PutDocument(context.Background(), meta("d", "pat-1", "x", time.Now()), bytes.NewReader(content(3*ChunkSize, 9))); err != nil {
				t.Fatal(err)
			}
		}},
		{"replaced by a batch write", func(t *testing.T, s *Store) {
			if err := s.PutDocuments(context.Background(), []NewDocument{{Meta: meta("d", "pat-1", "x", time.Now()), Content: []byte("new")}}); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := openStore(t)
			putPatient(t, s, "pat-1")
			if _, err := s.PutDocument(context.Background(), meta("d", "pat-1", "x", time.Now()), bytes.NewReader(content(4*streamBatch*ChunkSize, 5))); err != nil {
				t.Fatal(err)
			}
			got := 0
			// The write happens while the reader holds the first chunk: it
			// must not wait for the stream, and the stream must not go on
			// with the old content, nor mix the two.
			err := s.StreamDocument(context.Background(), "d", func(*qhinv1.DocumentMetadata) error { return nil }, func([]byte) error {
				if got == 0 {
					done := make(chan struct{})
					go func() {
						defer close(done)
						tc.change(t, s)
					}()
					select {
					case <-done:
					case <-time.After(10 * time.Second):
						t.Fatal("a write waited on a stream whose reader was busy")
					}
				}
				got++
				return nil
			})
			if !errors.Is(err, ErrChanged) {
				t.Fatalf("StreamDocument: %v after %d chunks, want ErrChanged", err, got)
			}
			if got > streamBatch {
				t.Errorf("%d chunks of the old content after the change, want at most the %d already read", got, streamBatch)
			}
		})
	}
}
