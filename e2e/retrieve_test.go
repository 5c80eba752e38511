package e2e

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"math/rand/v2"
	"runtime"
	"runtime/debug"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/openqhin/openqhin/broker"
	qhinv1 "github.com/openqhin/openqhin/proto/qhin/v1"
)

// The large document, and a small one to tell the fixed cost of a
// retrieval from a cost that grows with the document.
const (
	bigDocSize   = 50 << 20
	smallDocSize = 5 << 20
)

// heapPeak samples the heap every few milliseconds until stopped, and
// reports the largest HeapAlloc it saw.
type heapPeak struct {
	stop chan struct{}
	done chan uint64
}

func sampleHeap() *heapPeak {
	h := &heapPeak{stop: make(chan struct{}), done: make(chan uint64, 1)}
	go func() {
		var peak uint64
		var ms runtime.MemStats
		t := time.NewTicker(3 * time.Millisecond)
		defer t.Stop()
		for {
			runtime.ReadMemStats(&ms)
			peak = max(peak, ms.HeapAlloc)
			select {
			case <-h.stop:
				h.done <- peak
				return
			case <-t.C:
			}
		}
	}()
	return h
}

func (h *heapPeak) Stop() uint64 {
	close(h.stop)
	return <-h.done
}

// received is what a retrieval stream carried.
type received struct {
	header   *qhinv1.DocumentMetadata
	size     int64
	sha256   string
	chunks   int
	maxChunk int
	h        hash.Hash
}

// receive reads a retrieval stream to its end, hashing the content as it
// arrives and keeping none of it. It stops early, returning errStopped,
// after stopAfter chunks when stopAfter > 0; a later call goes on where it
// stopped.
func (r *received) receive(s qhinv1.Gateway_RetrieveDocumentClient, stopAfter int) error {
	if r.h == nil {
		r.h = sha256.New()
	}
	for n := 0; ; {
		msg, err := s.Recv()
		if errors.Is(err, io.EOF) {
			r.sha256 = hex.EncodeToString(r.h.Sum(nil))
			return nil
		}
		if err != nil {
			return err
		}
		switch part := msg.Part.(type) {
		case *qhinv1.RetrieveDocumentResponse_Header:
			if r.header != nil {
				return errors.New("a second header")
			}
			r.header = part.Header
		case *qhinv1.RetrieveDocumentResponse_Chunk:
			if r.header == nil {
				return errors.New("content before the header")
			}
			r.h.Write(part.Chunk)
			r.size += int64(len(part.Chunk))
			r.chunks++
			r.maxChunk = max(r.maxChunk, len(part.Chunk))
			if n++; stopAfter > 0 && n == stopAfter {
				return errStopped
			}
		}
	}
}

var errStopped = errors.New("stopped on purpose")

func sha256Hex(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

// putRandomDoc stores size pseudo-random bytes, generated as they are
// stored and hashed on the way, so the test never holds a copy; it returns
// their SHA-256.
func putRandomDoc(t *testing.T, n *Network, j int, patientID, docID string, size int64, seed byte) string {
	t.Helper()
	h := sha256.New()
	content := io.TeeReader(io.LimitReader(rand.NewChaCha8([32]byte{'q', 'h', 'i', 'n', seed}), size), h)
	stored, err := n.Participants[j].Server.PutDocument(context.Background(), &qhinv1.DocumentMetadata{
		Id: docID, Patient: &qhinv1.PatientLink{PatientId: patientID}, TypeCode: "18748-4", Title: "Imaging study",
		Created: timestamppb.New(time.Date(2025, 5, 1, 0, 0, 0, 0, time.UTC)), ContentType: "application/dicom",
	}, content)
	if err != nil {
		t.Fatal(err)
	}
	sum := hex.EncodeToString(h.Sum(nil))
	if stored.Size != size || stored.Sha256 != sum {
		t.Fatalf("stored %s as %d bytes with sha256 %s, want %d bytes with %s", docID, stored.Size, stored.Sha256, size, sum)
	}
	return sum
}

// retrieveMeasured retrieves a document from p1 while sampling the heap, and
// returns what arrived and how far the heap grew over its size just before.
// The whole network runs in this process, so the growth counts the holding
// participant, the broker and this client together.
func retrieveMeasured(t *testing.T, gw qhinv1.GatewayClient, docID, link string) (received, int64) {
	t.Helper()
	// Collect twice, so that buffers cached in sync.Pools by an earlier
	// retrieval are gone from the baseline.
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	baseline := ms.HeapAlloc
	peak := sampleHeap()

	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	var got received
	s, err := gw.RetrieveDocument(ctx, &qhinv1.RetrieveDocumentRequest{PurposeOfUse: "T-TRTMNT", Requester: requester(),
		Link: &qhinv1.DocumentLink{Link: link}})
	if err == nil {
		err = got.receive(s, 0)
	}
	top := peak.Stop()
	if err != nil {
		t.Fatalf("retrieve %s, after %d bytes: %v", docID, got.size, err)
	}
	growth := int64(top) - int64(baseline)
	t.Logf("%s: %d bytes in %d chunks; heap %d KiB before, peak growth %d KiB", docID, got.size, got.chunks, baseline>>10, growth>>10)
	return got, growth
}

func TestRetrieve_LargeDocumentStreamsThroughUnchangedAndUnbuffered(t *testing.T) {
	n, logs := startNetwork(t, Options{Brokers: 1, Participants: 2})
	if err := n.Participants[0].Server.PutPatient(context.Background(), "p1-mrn-001", maria); err != nil {
		t.Fatal(err)
	}
	bigSHA := putRandomDoc(t, n, 0, "p1-mrn-001", "p1-big", bigDocSize, 1)
	putRandomDoc(t, n, 0, "p1-mrn-001", "p1-medium", smallDocSize, 2)
	gw := dial(t, n, n.ParticipantSource(1)).Gateway()
	links := documentLinks(t, gw, "T-TRTMNT", discoverLinks(t, gw, "T-TRTMNT", maria)["p1"])

	t.Run("whole document", func(t *testing.T) {
		// A low GC target keeps HeapAlloc close to the live heap, so that
		// garbage neither hides a buffered document nor passes for one.
		defer debug.SetGCPercent(debug.SetGCPercent(10))
		_, smallGrowth := retrieveMeasured(t, gw, "p1-medium", links["p1-medium"])
		got, growth := retrieveMeasured(t, gw, "p1-big", links["p1-big"])

		if got.header.GetSize() != bigDocSize || got.header.GetSha256() != bigSHA || got.header.GetSourceParticipantId() != "p1" {
			t.Errorf("header says %d bytes, sha256 %s, from %q; want %d, %s, p1", got.header.GetSize(), got.header.GetSha256(),
				got.header.GetSourceParticipantId(), bigDocSize, bigSHA)
		}
		if got.size != bigDocSize || got.sha256 != bigSHA {
			t.Errorf("received %d bytes with sha256 %s, want %d bytes with %s", got.size, got.sha256, bigDocSize, bigSHA)
		}
		if got.maxChunk > broker.MaxChunk {
			t.Errorf("a chunk of %d bytes, want at most %d", got.maxChunk, broker.MaxChunk)
		}
		// Streaming has a small fixed cost: pooled gRPC buffers and
		// in-flight messages on the three hops come to about 2 MiB whatever
		// the document's size (chunks fit gRPC's 32 KiB buffer class).
		// Holding the document would cost its size on top, in whichever of
		// them held it. The heap is the whole test process's: what earlier
		// tests' networks still free or finish while this one streams
		// counts too (up to 19 MiB seen on a loaded machine, for the small
		// document as for the big one), hence the margin: half the
		// document, which holding it would double.
		if growth > bigDocSize/2 {
			t.Errorf("heap grew by %d MiB while streaming a %d MiB document: something holds the document", growth>>20, bigDocSize>>20)
		}
		if extra := growth - smallGrowth; extra > bigDocSize/4 {
			t.Errorf("heap grew %d MiB more for a %d MiB document than for a %d MiB one: memory grows with the document",
				extra>>20, bigDocSize>>20, smallDocSize>>20)
		}
	})

	req := &qhinv1.RetrieveDocumentRequest{PurposeOfUse: "T-TRTMNT", Requester: requester(),
		Link: &qhinv1.DocumentLink{Link: links["p1-big"]}}
	t.Run("client cancels mid-stream", func(t *testing.T) {
		gwBefore := len(rpcLogged(t, logs, "broker", "b1", qhinv1.Gateway_RetrieveDocument_FullMethodName))
		before := len(rpcLogged(t, logs, "participant", "p1", qhinv1.Responder_RetrieveDocument_FullMethodName))
		ctx, cancel := context.WithCancel(context.Background())
		s, err := gw.RetrieveDocument(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		var cancelled received
		if err := cancelled.receive(s, 3); !errors.Is(err, errStopped) {
			t.Fatalf("first chunks: %v", err)
		}
		cancel()
		if err := cancelled.receive(s, 0); status.Code(err) != codes.Canceled {
			t.Fatalf("stream after cancel: %v, want Canceled", err)
		}
		// Both ends of the proxied stream finish: the broker's call and the
		// holder's call are logged as done, and not as a success.
		pollUntil(t, 10*time.Second, "the broker and the holder end the cancelled retrieval", func() error {
			gws := rpcLogged(t, logs, "broker", "b1", qhinv1.Gateway_RetrieveDocument_FullMethodName)
			rs := rpcLogged(t, logs, "participant", "p1", qhinv1.Responder_RetrieveDocument_FullMethodName)
			if len(gws) < gwBefore+1 || len(rs) < before+1 {
				return fmt.Errorf("broker logged %v, holder %v", gws, rs)
			}
			if gws[gwBefore] == "OK" || rs[before] == "OK" {
				return fmt.Errorf("a cancelled retrieval ended OK: broker %v, holder %v", gws, rs)
			}
			return nil
		})

		// The broker and the holder keep serving.
		putDoc(t, n, 0, "p1-mrn-001", "p1-small", "34133-9", time.Date(2025, 5, 2, 0, 0, 0, 0, time.UTC), "after the cancel")
		s, err = gw.RetrieveDocument(callCtx(t), &qhinv1.RetrieveDocumentRequest{PurposeOfUse: "T-TRTMNT", Requester: requester(),
			Link: &qhinv1.DocumentLink{Link: docLink(t, gw, maria, "p1", "p1-small")}})
		if err != nil {
			t.Fatal(err)
		}
		var got received
		if err := got.receive(s, 0); err != nil || got.size != int64(len("after the cancel")) {
			t.Fatalf("retrieval after a cancelled one: %d bytes, %v", got.size, err)
		}
		if got.sha256 != sha256Hex("after the cancel") {
			t.Errorf("retrieval after a cancelled one: sha256 %s, want that of the content", got.sha256)
		}
		resp, err := gw.DiscoverPatients(callCtx(t), &qhinv1.DiscoverPatientsRequest{PurposeOfUse: "T-TRTMNT", Requester: requester(), Demographics: maria})
		if err != nil {
			t.Fatalf("discovery after a cancelled retrieval: %v", err)
		}
		assertStates(t, resp.Responders, map[string]qhinv1.ResponderState{"p1": qhinv1.ResponderState_RESPONDER_STATE_OK})
	})
}
