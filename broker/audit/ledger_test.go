package audit

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	qhinv1 "github.com/openqhin/openqhin/proto/qhin/v1"
)

const node = "spiffe://qhin.test/broker/b1"

func openLedger(t testing.TB, path string) *Ledger {
	t.Helper()
	if path == "" {
		path = filepath.Join(t.TempDir(), "audit.db")
	}
	l, err := Open(path, node, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

func entry(i int) *qhinv1.AuditEntry {
	return &qhinv1.AuditEntry{
		Actor: "spiffe://qhin.test/participant/p1", InitiatorParticipantId: "p1", Action: ActionDiscover,
		Method: "/qhin.v1.Gateway/DiscoverPatients", PurposeOfUse: "T-TRTMNT", QueryId: fmt.Sprintf("q%d", i),
		EndUser:     &qhinv1.Requester{Id: "u1", Npi: "1234567893", Role: "physician"},
		PatientRefs: []string{LinkRef(fmt.Sprintf("q1.link-%d", i))}, Outcome: "OK",
		Members: []*qhinv1.AuditMember{{ParticipantId: "p2", State: qhinv1.ResponderState_RESPONDER_STATE_OK}},
	}
}

func appendN(t testing.TB, l *Ledger, n int) {
	t.Helper()
	for i := range n {
		if err := l.Append(context.Background(), entry(i)); err != nil {
			t.Fatal(err)
		}
	}
}

func verify(t *testing.T, l *Ledger) Verification {
	t.Helper()
	v, err := l.Verify()
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestLedger_ConcurrentAppendsChainInOneOrder(t *testing.T) {
	l := openLedger(t, "")
	const writers, each = 16, 50
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				if err := l.Append(context.Background(), entry(w*each+i)); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
	v := verify(t, l)
	if !v.OK || v.Entries != writers*each || len(v.Head) != 32 {
		t.Fatalf("verify: %+v", v)
	}
	st := l.Stats()
	if st.Appended != writers*each || st.Batches == 0 || st.Batches > st.Appended {
		t.Errorf("stats %+v", st)
	}
	t.Logf("%d entries in %d transactions", st.Appended, st.Batches)
	es, _, err := l.List(Filter{Limit: MaxList})
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i < len(es); i++ {
		if es[i].Seq != es[i-1].Seq-1 || es[i].GetTime().AsTime().After(es[i-1].GetTime().AsTime()) {
			t.Fatalf("entries %d and %d out of order", es[i-1].Seq, es[i].Seq)
		}
	}
}

func TestLedger_ReopenedLedgerChainsOn(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.db")
	l, err := Open(path, node, nil)
	if err != nil {
		t.Fatal(err)
	}
	appendN(t, l, 3)
	l.Close()
	if err := l.Append(context.Background(), entry(9)); !errors.Is(err, ErrUnavailable) {
		t.Errorf("append to a closed ledger: %v", err)
	}
	l = openLedger(t, path)
	appendN(t, l, 2)
	if v := verify(t, l); !v.OK || v.Entries != 5 {
		t.Errorf("verify: %+v", v)
	}
}

// tamper changes the stored value of entry seq in a closed ledger file.
func tamper(t *testing.T, path string, change func(b *bolt.Bucket, k []byte)) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.Update(func(tx *bolt.Tx) error {
		change(tx.Bucket(bucketEntries), nil)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

func key(seq uint64) []byte { return binary.BigEndian.AppendUint64(nil, seq) }

func TestLedger_VerifyNamesTheFirstBrokenEntry(t *testing.T) {
	flipAt := func(seq uint64, offset int) func(b *bolt.Bucket, _ []byte) {
		return func(b *bolt.Bucket, _ []byte) {
			v := slices.Clone(b.Get(key(seq)))
			if offset < 0 {
				offset += len(v)
			}
			v[offset] ^= 0x20
			b.Put(key(seq), v)
		}
	}
	for _, tc := range []struct {
		name    string
		change  func(b *bolt.Bucket, _ []byte)
		want    uint64
		problem string
	}{
		{"a byte of the content", flipAt(4, -3), 4, "does not match its hash"},
		{"a byte of the stored hash", flipAt(7, 0), 7, "does not match its hash"},
		{"the first entry", flipAt(1, 40), 1, "does not match its hash"},
		{"an entry removed", func(b *bolt.Bucket, _ []byte) { b.Delete(key(5)) }, 5, "missing"},
		{"the newest entry removed", func(b *bolt.Bucket, _ []byte) { b.Delete(key(10)) }, 10, "head"},
		{"an entry rewritten with a fresh hash", func(b *bolt.Bucket, _ []byte) {
			// A forger who recomputes the entry's own hash still breaks
			// the next entry's link to it.
			var e qhinv1.AuditEntry
			proto.Unmarshal(b.Get(key(6))[32:], &e)
			e.Outcome = "PermissionDenied"
			body, _ := proto.MarshalOptions{Deterministic: true}.Marshal(&e)
			sum := sha(body)
			b.Put(key(6), append(sum, body...))
		}, 7, "does not chain"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "audit.db")
			l, err := Open(path, node, nil)
			if err != nil {
				t.Fatal(err)
			}
			appendN(t, l, 10)
			if v := verify(t, l); !v.OK {
				t.Fatalf("untouched ledger: %+v", v)
			}
			l.Close()
			tamper(t, path, tc.change)
			l = openLedger(t, path)
			v := verify(t, l)
			if v.OK || v.FirstBroken != tc.want || !strings.Contains(v.Problem, tc.problem) {
				t.Errorf("verify: %+v, want entry %d broken (%s)", v, tc.want, tc.problem)
			}
		})
	}
}

func TestLedger_IdenticalRefusalsShareAnEntry(t *testing.T) {
	l := openLedger(t, "")
	refusal := func(reason string) *request {
		return &request{e: &qhinv1.AuditEntry{Actor: "spiffe://qhin.test/participant/p9", Method: "/qhin.v1.Gateway/DiscoverPatients",
			Action: ActionRefused, Outcome: "InvalidArgument", Reason: reason}}
	}
	var batch []*request
	for range 100 {
		batch = append(batch, refusal("demographics.birth_date: must be a real calendar date"))
	}
	batch = append(batch, refusal("purpose_of_use: unknown exchange purpose code"))
	waited := &request{e: entry(1), done: make(chan error, 1)}
	batch = append(batch, waited)
	l.commit(batch)
	if err := <-waited.done; err != nil {
		t.Fatal(err)
	}
	es, _, _ := l.List(Filter{Action: ActionRefused})
	counts := map[string]uint32{}
	for _, e := range es {
		counts[e.Reason] += max(e.Count, 1)
	}
	if len(es) != 2 || counts["demographics.birth_date: must be a real calendar date"] != 100 || counts["purpose_of_use: unknown exchange purpose code"] != 1 {
		t.Errorf("refused entries %v", es)
	}
	if v := verify(t, l); !v.OK || v.Entries != 3 {
		t.Errorf("verify %+v", v)
	}
}

// TestLedger_AFloodOfRefusalsCostsATransactionPerInterval: refusals
// nobody waits for gather for refusalFlush before they are written, so a
// member flooding refused calls costs the ledger about one transaction (one
// disk sync) per interval however fast it calls; every refusal is still
// counted, and an entry a caller waits for is written at once.
func TestLedger_AFloodOfRefusalsCostsATransactionPerInterval(t *testing.T) {
	l := openLedger(t, "")
	const n = 20000
	start := time.Now()
	for i := range n {
		l.Record(&qhinv1.AuditEntry{Actor: "spiffe://qhin.test/participant/p9", Method: "/qhin.v1.Gateway/QueryDocuments",
			Action: ActionRefused, Outcome: "InvalidArgument", Reason: "links[0].link: not a link this network issued"})
		if i%100 == 0 {
			time.Sleep(time.Millisecond) // let the queue drain: a flood, not a burst
		}
	}
	waited := make(chan error, 1)
	before := time.Now()
	l.reqs <- &request{e: entry(1), done: waited}
	if err := <-waited; err != nil {
		t.Fatal(err)
	}
	if d := time.Since(before); d > 5*time.Second {
		t.Errorf("an entry a caller waits for took %v behind the refusals", d)
	}
	elapsed := time.Since(start)
	st := l.Stats()
	if limit := uint64(elapsed/refusalFlush) + n/maxBatch + 3; st.Batches > limit {
		t.Errorf("%d refusals in %v took %d transactions, want at most %d (one per %v)", n, elapsed, st.Batches, limit, refusalFlush)
	}
	es, _, _ := l.List(Filter{Action: ActionRefused, Limit: 1000})
	var total uint64
	for _, e := range es {
		total += uint64(max(e.Count, 1))
	}
	if total+st.Dropped != n {
		t.Errorf("refusals counted %d and dropped %d, want %d in all", total, st.Dropped, n)
	}
}

func TestLedger_ListFilters(t *testing.T) {
	l := openLedger(t, "")
	appendN(t, l, 5)
	mid := time.Now()
	other := entry(99)
	other.InitiatorParticipantId, other.Actor, other.PurposeOfUse = "p3", "spiffe://qhin.test/participant/p3", "T-PYMNT"
	other.Members = []*qhinv1.AuditMember{{ParticipantId: "p4"}}
	if err := l.Append(context.Background(), other); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		f    Filter
		want []uint64
	}{
		{"all", Filter{}, []uint64{6, 5, 4, 3, 2, 1}},
		{"participant as initiator", Filter{Participant: "p3"}, []uint64{6}},
		{"participant as member", Filter{Participant: "p4"}, []uint64{6}},
		{"purpose", Filter{Purpose: "T-TRTMNT"}, []uint64{5, 4, 3, 2, 1}},
		{"patient by link", Filter{Patient: "q1.link-2"}, []uint64{3}},
		{"patient by reference", Filter{Patient: LinkRef("q1.link-2")}, []uint64{3}},
		{"since", Filter{Since: mid}, []uint64{6}},
		{"action", Filter{Action: ActionRefused}, nil},
		{"page", Filter{Limit: 2, Before: 5}, []uint64{4, 3}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			es, _, err := l.List(tc.f)
			if err != nil {
				t.Fatal(err)
			}
			var got []uint64
			for _, e := range es {
				got = append(got, e.Seq)
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
	// Paging walks the whole ledger once.
	var all []uint64
	for before := uint64(0); ; {
		es, next, err := l.List(Filter{Limit: 4, Before: before})
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range es {
			all = append(all, e.Seq)
		}
		if next == 0 {
			break
		}
		before = next
	}
	if !slices.Equal(all, []uint64{6, 5, 4, 3, 2, 1}) {
		t.Errorf("pages: %v", all)
	}
}

func TestObserver_RecordsRefusalsAndAuditedCalls(t *testing.T) {
	l := openLedger(t, "")
	obs := l.Observer(map[string]string{"/qhin.v1.Directory/SetParticipantStatus": "set-participant-status"})
	ctx := WithLocalCaller(context.Background(), "unix:1000")
	obs(ctx, "/qhin.v1.Gateway/DiscoverPatients", status.Error(codes.InvalidArgument, "demographics.gender: must be male, female, other or unknown"))
	obs(ctx, "/qhin.v1.Gateway/DiscoverPatients", nil)                                 // recorded by the handler
	obs(ctx, "/qhin.v1.Gateway/DiscoverPatients", status.Error(codes.Unavailable, "")) // not a refusal
	obs(ctx, "/grpc.health.v1.Health/Check", status.Error(codes.PermissionDenied, "x"))
	obs(ctx, "/qhin.v1.Directory/SetParticipantStatus", nil)
	l.Close()
	l = openLedger(t, l.Path())
	es, _, _ := l.List(Filter{})
	if len(es) != 2 {
		t.Fatalf("entries %v, want the refusal and the audited call", es)
	}
	if e := es[1]; e.Action != ActionRefused || e.Actor != "unix:1000" || e.Outcome != "InvalidArgument" || !strings.HasPrefix(e.Reason, "demographics.gender") {
		t.Errorf("refusal entry %v", e)
	}
	if e := es[0]; e.Action != "set-participant-status" || e.Outcome != "OK" {
		t.Errorf("audited call entry %v", e)
	}
}

func TestFHIR_AuditEventCarriesTheEntry(t *testing.T) {
	l := openLedger(t, "")
	e := entry(1)
	e.Emergency = true
	e.DocumentRefs = []string{LinkRef("q1.doc")}
	if err := l.Append(context.Background(), e); err != nil {
		t.Fatal(err)
	}
	es, _, _ := l.List(Filter{})
	b, err := json.Marshal(FHIR(node, es[0]))
	if err != nil {
		t.Fatal(err)
	}
	var ev map[string]any
	json.Unmarshal(b, &ev)
	s := string(b)
	for _, want := range []string{`"resourceType":"AuditEvent"`, `"id":"b1-1"`, `"code":"110112"`, `"code":"T-TRTMNT"`,
		`"code":"ETREAT"`, `"value":"spiffe://qhin.test/participant/p1"`, `"value":"1234567893"`, `"outcome":"0"`,
		`"url":"urn:openqhin:audit:hash"`, `"display":"Patient"`, `"valueString":"OK"`} {
		if !strings.Contains(s, want) {
			t.Errorf("AuditEvent lacks %s: %s", want, s)
		}
	}
	if ev["recorded"] == "" || len(ev["agent"].([]any)) != 3 {
		t.Errorf("AuditEvent %s", s)
	}
}

func BenchmarkLedger_Append(b *testing.B) {
	for _, writers := range []int{1, 16, 64} {
		b.Run(fmt.Sprintf("writers=%d", writers), func(b *testing.B) {
			l := openLedger(b, "")
			b.SetParallelism(writers)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				i := 0
				for pb.Next() {
					if err := l.Append(context.Background(), entry(i)); err != nil {
						b.Error(err)
					}
					i++
				}
			})
			b.StopTimer()
			st := l.Stats()
			if st.Batches > 0 {
				b.ReportMetric(float64(st.Appended)/float64(st.Batches), "entries/fsync")
			}
		})
	}
}

func sha(b []byte) []byte {
	s := sha256.Sum256(b)
	return s[:]
}
