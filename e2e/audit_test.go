package e2e

import (
	"context"
	"encoding/binary"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"

	qhinv1 "github.com/openqhin/openqhin/proto/qhin/v1"
)

// brokerAudit is an operator's Audit client of broker i.
func brokerAudit(t *testing.T, n *Network, i int) qhinv1.AuditClient {
	t.Helper()
	return qhinv1.NewAuditClient(rawConn(t, n.Brokers[i].GRPCAddr, brokerCreds(n, n.Operator())))
}

// participantAudit is an operator's Audit client of participant j.
func participantAudit(t *testing.T, n *Network, j int) qhinv1.AuditClient {
	t.Helper()
	return qhinv1.NewAuditClient(rawConn(t, n.Participants[j].Addr, participantCreds(t, n, n.Operator(), j)))
}

// listAudit returns every entry of a ledger that matches req, newest first.
func listAudit(t *testing.T, c qhinv1.AuditClient, req *qhinv1.ListAuditEntriesRequest) []*qhinv1.AuditEntry {
	t.Helper()
	var out []*qhinv1.AuditEntry
	for {
		resp, err := c.ListEntries(callCtx(t), req)
		if err != nil {
			t.Fatalf("phase %q: %v", "list audit entries", err)
		}
		out = append(out, resp.Entries...)
		if resp.NextBeforeSeq == 0 {
			return out
		}
		req.BeforeSeq = resp.NextBeforeSeq
	}
}

func actions(es []*qhinv1.AuditEntry) []string {
	var out []string
	for _, e := range es {
		out = append(out, e.Action)
	}
	return out
}

// TestAudit_QueriesAreRecordedByBrokerAndMembers follows one person's
// discovery, document query and retrieval into the broker's ledger (link
// references, members asked) and the holding member's (local ids).
func TestAudit_QueriesAreRecordedByBrokerAndMembers(t *testing.T) {
	n, _ := startNetwork(t, Options{Brokers: 1, Participants: 4})
	seedMaria(t, n)
	gw := dial(t, n, n.ParticipantSource(3)).Gateway()
	pl := discoverLinks(t, gw, "T-TRTMNT", maria)
	dl := documentLinks(t, gw, "T-TRTMNT", pl["p2"])
	if _, err := retrieveAll(callCtx(t), gw, "T-TRTMNT", &qhinv1.DocumentLink{Link: dl["p2-doc-1"]}); err != nil {
		t.Fatal(err)
	}

	b := listAudit(t, brokerAudit(t, n, 0), &qhinv1.ListAuditEntriesRequest{ParticipantId: "p4"})
	byAction := map[string]*qhinv1.AuditEntry{}
	for _, e := range b {
		byAction[e.Action] = e
	}
	for _, a := range []string{"discover", "documents", "retrieve"} {
		e := byAction[a]
		if e == nil {
			t.Fatalf("the broker's ledger has no %s entry: %v", a, actions(b))
		}
		if e.InitiatorParticipantId != "p4" || !strings.HasSuffix(e.Actor, "/participant/p4") || e.PurposeOfUse != "T-TRTMNT" ||
			e.EndUser.GetId() != requester().Id || e.Outcome != "OK" || e.QueryId == "" || len(e.Hash) == 0 {
			t.Errorf("%s entry: %v", a, e)
		}
	}
	if len(byAction["discover"].Members) != 3 || len(byAction["discover"].PatientRefs) != 2 {
		t.Errorf("discover entry: members %v, patient refs %v; want p1-p3 asked and the two links issued", byAction["discover"].Members, byAction["discover"].PatientRefs)
	}
	// The broker refers to patients by their links, never by a member's
	// local id; the operator finds a patient's entries by the link.
	for _, e := range b {
		if s := prototext.Format(e); strings.Contains(s, "p2-000042") || strings.Contains(s, "Maria") {
			t.Errorf("the broker's ledger holds a local id or a name: %s", s)
		}
	}
	byLink := listAudit(t, brokerAudit(t, n, 0), &qhinv1.ListAuditEntriesRequest{Patient: pl["p2"]})
	if got := actions(byLink); !slices.Contains(got, "discover") || !slices.Contains(got, "documents") {
		t.Errorf("entries for p2's link: %v, want its discovery and document query", got)
	}

	m := listAudit(t, participantAudit(t, n, 1), &qhinv1.ListAuditEntriesRequest{Patient: "p2-000042"})
	if got := actions(m); !slices.Contains(got, "discover") || !slices.Contains(got, "documents") || !slices.Contains(got, "retrieve") {
		t.Fatalf("p2's ledger for its patient: %v, want discover, documents and retrieve", got)
	}
	for _, e := range m {
		if !strings.HasSuffix(e.Actor, "/broker/b1") || e.InitiatorParticipantId != "p4" || e.PurposeOfUse != "T-TRTMNT" {
			t.Errorf("p2's %s entry: actor %s, initiator %s, purpose %s", e.Action, e.Actor, e.InitiatorParticipantId, e.PurposeOfUse)
		}
		if e.Action == "retrieve" && !slices.Contains(e.DocumentRefs, "p2-doc-1") {
			t.Errorf("p2's retrieve entry names documents %v", e.DocumentRefs)
		}
	}
}

// TestAudit_RefusedCallsAreAuditedWithoutPHI refuses calls of several kinds
// (bad input full of patient data, a purpose the caller may not use, a
// guessed link, a method of another role) and finds each in the broker's
// ledger with the caller, the method and the reason — and none of the
// patient data the calls carried.
func TestAudit_RefusedCallsAreAuditedWithoutPHI(t *testing.T) {
	n, _ := startNetwork(t, Options{Brokers: 1, Participants: 2})
	if err := n.Participants[1].Server.PutPatient(context.Background(), zebulonMRN, zebulon); err != nil {
		t.Fatal(err)
	}
	conn := dial(t, n, n.ParticipantSource(0))
	gw := conn.Gateway()
	bad := proto.Clone(zebulon).(*qhinv1.Demographics)
	bad.BirthDate = "1953-02-30"
	calls := []struct {
		method string
		call   func() error
	}{
		{qhinv1.Gateway_DiscoverPatients_FullMethodName, func() error {
			_, err := gw.DiscoverPatients(callCtx(t), &qhinv1.DiscoverPatientsRequest{PurposeOfUse: "T-TRTMNT", Requester: requester(), Demographics: bad})
			return err
		}},
		{qhinv1.Gateway_DiscoverPatients_FullMethodName, func() error {
			_, err := gw.DiscoverPatients(callCtx(t), &qhinv1.DiscoverPatientsRequest{PurposeOfUse: "T-PH-ECR", Requester: requester(), Demographics: zebulon})
			return err
		}},
		{qhinv1.Gateway_QueryDocuments_FullMethodName, func() error {
			_, err := queryDocs(callCtx(t), gw, "T-TRTMNT", &qhinv1.PatientLink{ParticipantId: "p2", PatientId: zebulonMRN})
			return err
		}},
		{qhinv1.Directory_ListParticipants_FullMethodName, func() error {
			_, err := conn.Directory().ListParticipants(callCtx(t), &qhinv1.ListParticipantsRequest{})
			return err
		}},
	}
	for _, c := range calls {
		if err := c.call(); err == nil {
			t.Fatalf("%s was not refused", c.method)
		}
	}

	var entries []*qhinv1.AuditEntry
	pollUntil(t, 10*time.Second, "the refusals reach the ledger", func() error {
		entries = listAudit(t, brokerAudit(t, n, 0), &qhinv1.ListAuditEntriesRequest{Action: "refused"})
		if len(entries) < len(calls) {
			return fmt.Errorf("%d refused entries, want %d", len(entries), len(calls))
		}
		return nil
	})
	for _, c := range calls {
		i := slices.IndexFunc(entries, func(e *qhinv1.AuditEntry) bool { return e.Method == c.method })
		if i < 0 {
			t.Errorf("no refused entry for %s", c.method)
			continue
		}
		e := entries[i]
		if !strings.HasSuffix(e.Actor, "/participant/p1") || e.Reason == "" || e.Outcome == "OK" || e.Outcome == "" {
			t.Errorf("refused entry for %s: %v", c.method, e)
		}
	}
	for _, e := range entries {
		s := prototext.Format(e)
		for _, phi := range append(zebulonPHI, "1953-02-30") {
			if strings.Contains(s, phi) {
				t.Errorf("a refused entry holds patient data %q: %s", phi, s)
			}
		}
	}
}

// TestAudit_TamperedEntryIsNamed flips one byte of one stored entry of a
// stopped broker's ledger: verification names that entry, and an untouched
// ledger verifies.
func TestAudit_TamperedEntryIsNamed(t *testing.T) {
	n, _ := startNetwork(t, Options{Brokers: 1, Participants: 3})
	seedMaria(t, n)
	gw := dial(t, n, n.ParticipantSource(2)).Gateway()
	for range 5 {
		discoverLinks(t, gw, "T-TRTMNT", maria)
	}
	v, err := brokerAudit(t, n, 0).VerifyLedger(callCtx(t), &qhinv1.VerifyLedgerRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if !v.Ok || v.Entries < 5 || len(v.HeadHash) == 0 {
		t.Fatalf("the untouched ledger: %v", v)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := n.StopBroker(ctx, 0); err != nil {
		t.Fatal(err)
	}
	const victim = 3
	db, err := bolt.Open(filepath.Join(n.Brokers[0].Dir, "data", "audit.db"), 0o600, &bolt.Options{Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte("entries"))
		if b == nil {
			return fmt.Errorf("no entries table")
		}
		k := binary.BigEndian.AppendUint64(nil, victim)
		v := slices.Clone(b.Get(k))
		if len(v) < 40 {
			return fmt.Errorf("entry %d has %d bytes", victim, len(v))
		}
		v[len(v)-5] ^= 0x01
		return b.Put(k, v)
	})
	db.Close()
	if err != nil {
		t.Fatal(err)
	}
	if err := n.StartBroker(0); err != nil {
		t.Fatal(err)
	}
	var got *qhinv1.VerifyLedgerResponse
	pollUntil(t, 30*time.Second, "verify the tampered ledger", func() error {
		got, err = brokerAudit(t, n, 0).VerifyLedger(callCtx(t), &qhinv1.VerifyLedgerRequest{})
		return err
	})
	if got.Ok || got.FirstBrokenSeq != victim || got.Problem == "" {
		t.Errorf("verify after flipping a byte of entry %d: %v", victim, got)
	}
}
