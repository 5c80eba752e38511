package e2e

import (
	"context"
	"crypto/x509"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/openqhin/openqhin/broker"
	"github.com/openqhin/openqhin/pki"
	qhinv1 "github.com/openqhin/openqhin/proto/qhin/v1"
)

// TestRotation_ShortLivedSVIDsAndACARotationUnderLoad runs a network whose
// every node takes its SVID from the network's Workload API, with SVIDs
// living four seconds, while two loops query without pause (one over a
// connection kept open, one over a new connection each time, so that
// handshakes happen in every phase) and a document retrieval stays open.
// Every SVID is renewed at least three times and the CA is rotated once
// (prepare, activate, retire). Not one query may fail, and the retrieval
// completes with the document's hash.
func TestRotation_ShortLivedSVIDsAndACARotationUnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("rotates for a while under load")
	}
	lim := broker.Limits{SendTimeout: 3 * time.Minute}
	n, _ := startNetwork(t, Options{
		Brokers: 3, Participants: 3, WorkloadAPI: true,
		SVIDTTL: 4 * time.Second, CAPropagation: time.Second, RaftConnMaxAge: 500 * time.Millisecond,
		ResponderTimeout: 2 * time.Minute, Limits: lim,
	})
	seedMaria(t, n)
	const docSize = 8 << 20
	docSum := putRandomDoc(t, n, 0, "p1-mrn-001", "p1-scan", docSize, 7)
	caDir := filepath.Join(n.opts.Dir, "ca")
	oldCA := n.Issuer.Signer()

	// Every node's SVID as the node itself holds it, sampled.
	type node struct {
		id  string
		src pki.Source
	}
	var nodes []node
	for _, b := range n.Brokers {
		nodes = append(nodes, node{"broker/" + b.ID, b.source})
	}
	for _, p := range n.Participants {
		nodes = append(nodes, node{"participant/" + p.ID, p.source})
	}
	var smu sync.Mutex
	serials := map[string]map[string]bool{}
	sample := func() {
		smu.Lock()
		defer smu.Unlock()
		for _, nd := range nodes {
			svid, err := nd.src.GetX509SVID()
			if err != nil {
				continue
			}
			if serials[nd.id] == nil {
				serials[nd.id] = map[string]bool{}
			}
			serials[nd.id][svid.Certificates[0].SerialNumber.String()] = true
		}
	}
	fewestRotations := func() (string, int) {
		smu.Lock()
		defer smu.Unlock()
		least, who := -1, ""
		for _, nd := range nodes {
			if r := len(serials[nd.id]) - 1; least < 0 || r < least {
				least, who = r, nd.id
			}
		}
		return who, least
	}
	every := func(cond func(src pki.Source) bool) error {
		for _, nd := range nodes {
			if !cond(nd.src) {
				return fmt.Errorf("not yet at %s", nd.id)
			}
		}
		return nil
	}
	bundleHas := func(c *x509.Certificate) func(pki.Source) bool {
		return func(src pki.Source) bool {
			b, err := src.GetX509BundleForTrustDomain(n.td)
			return err == nil && b.HasX509Authority(c)
		}
	}

	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	var wg sync.WaitGroup
	var queries, failures atomic.Int64
	var firstFailure atomic.Value
	progress := make(chan struct{}, 1)
	query := func(gw qhinv1.GatewayClient) {
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		resp, err := gw.DiscoverPatients(cctx, &qhinv1.DiscoverPatientsRequest{PurposeOfUse: "T-TRTMNT", Requester: requester(), Demographics: maria})
		if ctx.Err() != nil {
			return
		}
		queries.Add(1)
		if err == nil {
			st := statusByMember(resp.Responders)
			if len(resp.Persons) != 1 || st["p1"] != qhinv1.ResponderState_RESPONDER_STATE_OK || st["p2"] != qhinv1.ResponderState_RESPONDER_STATE_OK {
				err = fmt.Errorf("%d persons, responders %v", len(resp.Persons), st)
			}
		}
		if err != nil {
			failures.Add(1)
			firstFailure.CompareAndSwap(nil, err.Error())
		}
		select {
		case progress <- struct{}{}:
		default:
		}
	}
	// p3 asks about maria, whom p1 and p2 hold.
	kept := dial(t, n, n.ParticipantSource(2)).Gateway()
	scanLink := docLink(t, kept, maria, "p1", "p1-scan")
	wg.Add(3)
	go func() {
		defer wg.Done()
		for ctx.Err() == nil {
			query(kept)
		}
	}()
	go func() {
		defer wg.Done()
		for ctx.Err() == nil {
			c, err := n.Dial(n.ParticipantSource(2))
			if err != nil {
				failures.Add(1)
				firstFailure.CompareAndSwap(nil, err.Error())
				continue
			}
			query(c.Gateway())
			c.Close()
		}
	}()
	go func() {
		defer wg.Done()
		t := time.NewTicker(50 * time.Millisecond)
		defer t.Stop()
		for {
			sample()
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()

	// The retrieval reads a chunk per query until half the document has
	// arrived, then waits for the rotation to end before reading the rest.
	rotated := make(chan struct{})
	var streamOpenAtRetire atomic.Bool
	retrieved := make(chan error, 1)
	var got received
	go func() {
		rctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		s, err := kept.RetrieveDocument(rctx, &qhinv1.RetrieveDocumentRequest{PurposeOfUse: "T-TRTMNT", Requester: requester(),
			Link: &qhinv1.DocumentLink{Link: scanLink}})
		if err != nil {
			retrieved <- err
			return
		}
		for got.size < docSize/2 {
			<-progress
			if err := got.receive(s, 1); err != nil && err != errStopped {
				retrieved <- err
				return
			}
		}
		<-rotated
		streamOpenAtRetire.Store(true)
		retrieved <- got.receive(s, 0)
	}()

	const wait = 90 * time.Second
	pollUntil(t, wait, "every node renews its SVID once", func() error {
		if who, r := fewestRotations(); r < 1 {
			return fmt.Errorf("%s: %d renewals", who, r)
		}
		return nil
	})
	next, err := pki.PrepareRotation(caDir, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	pollUntil(t, wait, "every node trusts the new CA", func() error { return every(bundleHas(next.Certificate())) })
	if err := pki.ActivateRotation(caDir, time.Now()); err != nil {
		t.Fatal(err)
	}
	pollUntil(t, wait, "every node holds an SVID of the new CA", func() error {
		return every(func(src pki.Source) bool {
			svid, err := src.GetX509SVID()
			return err == nil && svid.Certificates[0].CheckSignatureFrom(next.Certificate()) == nil
		})
	})
	// Let Raft's connections, made under the old CA, be replaced (their
	// bound is half a second; a node renews every two seconds).
	before := queries.Load()
	pollUntil(t, wait, "a few queries under the new CA", func() error {
		if q := queries.Load() - before; q < 20 {
			return fmt.Errorf("%d queries", q)
		}
		return nil
	})
	if err := pki.RetireRotation(caDir); err != nil {
		t.Fatal(err)
	}
	pollUntil(t, wait, "the old CA left every node's bundle", func() error {
		return every(func(src pki.Source) bool { return !bundleHas(oldCA)(src) })
	})
	pollUntil(t, wait, "three renewals of every SVID", func() error {
		if who, r := fewestRotations(); r < 3 {
			return fmt.Errorf("%s: %d renewals", who, r)
		}
		return nil
	})
	before = queries.Load()
	pollUntil(t, wait, "queries after the old CA left", func() error {
		if q := queries.Load() - before; q < 20 {
			return fmt.Errorf("%d queries", q)
		}
		return nil
	})
	close(rotated)
	select {
	case err := <-retrieved:
		if err != nil {
			t.Fatalf("retrieval: %v", err)
		}
	case <-time.After(wait):
		t.Fatalf("phase %q: timed out after %v", "retrieval completes", wait)
	}
	stop()
	wg.Wait()

	if !streamOpenAtRetire.Load() {
		t.Error("the retrieval ended before the rotation did")
	}
	if got.size != docSize || got.sha256 != docSum {
		t.Errorf("retrieved %d bytes with sha256 %s, want %d with %s", got.size, got.sha256, docSize, docSum)
	}
	who, least := fewestRotations()
	t.Logf("%d queries, %d failed; fewest renewals %d (%s); retrieval %d chunks", queries.Load(), failures.Load(), least, who, got.chunks)
	if f := failures.Load(); f > 0 {
		t.Fatalf("%d of %d queries failed; first: %v", f, queries.Load(), firstFailure.Load())
	}
}
