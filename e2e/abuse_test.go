package e2e

// The abuse suite: what one caller or one member can make the network do.
// Every test attacks real nodes over real sockets with real mutual TLS, and
// checks both that the attack is bounded and that a legitimate member's query
// made meanwhile still succeeds. None asserts a latency: deadlines here are
// generous bounds on a hung call, not budgets.

import (
	"context"
	"fmt"
	"io"
	"net"
	"runtime"
	"runtime/debug"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/openqhin/openqhin/broker"
	"github.com/openqhin/openqhin/broker/telemetry"
	"github.com/openqhin/openqhin/pki"
	qhinv1 "github.com/openqhin/openqhin/proto/qhin/v1"
)

// floodResponder is a hostile member: it answers every discovery and
// document query with whatever answer the test set, however large.
type floodResponder struct {
	qhinv1.UnimplementedResponderServer
	candidates atomic.Pointer[qhinv1.ResponderDiscoverPatientsResponse]
	documents  atomic.Pointer[qhinv1.ResponderQueryDocumentsResponse]
}

func (f *floodResponder) DiscoverPatients(context.Context, *qhinv1.ResponderDiscoverPatientsRequest) (*qhinv1.ResponderDiscoverPatientsResponse, error) {
	return f.candidates.Load(), nil
}

func (f *floodResponder) QueryDocuments(context.Context, *qhinv1.ResponderQueryDocumentsRequest) (*qhinv1.ResponderQueryDocumentsResponse, error) {
	return f.documents.Load(), nil
}

// tinyCandidates is n candidates of about 50 bytes each, every one the same
// unremarkable person.
func tinyCandidates(n int) *qhinv1.ResponderDiscoverPatientsResponse {
	resp := &qhinv1.ResponderDiscoverPatientsResponse{Candidates: make([]*qhinv1.Candidate, n)}
	for i := range resp.Candidates {
		resp.Candidates[i] = &qhinv1.Candidate{PatientId: fmt.Sprintf("h%06d", i), Score: 1,
			Demographics: &qhinv1.Demographics{Given: "Ann", Family: "Lee", BirthDate: "1970-01-01", Gender: "female"}}
	}
	return resp
}

func TestAbuse_HostileResponderWastesOnlyItsOwnShare(t *testing.T) {
	// Generous member and query timeouts: encoding 200,000 candidates takes
	// the hostile member seconds under the race detector, and its answer
	// must arrive to be refused for its size.
	n, _ := startNetwork(t, Options{Brokers: 1, Participants: 2, ResponderTimeout: time.Minute, MaxQueryTimeout: time.Minute})
	if err := n.Participants[1].Server.PutPatient(context.Background(), "p2-000042", mariaAtP2); err != nil {
		t.Fatal(err)
	}
	putDoc(t, n, 1, "p2-000042", "p2-doc-1", "34133-9", time.Date(2025, 3, 1, 0, 0, 0, 0, time.UTC), "a note")
	flood := &floodResponder{}
	flood.documents.Store(&qhinv1.ResponderQueryDocumentsResponse{})
	startFakeResponder(t, n, "p9", flood)
	gw := dial(t, n, n.ParticipantSource(0)).Gateway()

	const (
		ok     = qhinv1.ResponderState_RESPONDER_STATE_OK
		failed = qhinv1.ResponderState_RESPONDER_STATE_ERROR
	)
	huge := strings.Repeat("Quillfeather Lane ", 1<<12) // 72 KiB: within a member's answer, far over a field's limit
	oversized := &qhinv1.ResponderDiscoverPatientsResponse{}
	for i := range 3 {
		oversized.Candidates = append(oversized.Candidates, &qhinv1.Candidate{PatientId: fmt.Sprintf("h%d", i), Score: 1,
			Demographics: &qhinv1.Demographics{Given: "Ann", Family: "Lee", BirthDate: "1970-01-01", Gender: "female",
				Address: &qhinv1.Address{Lines: []string{huge}}}})
	}
	for _, tc := range []struct {
		name   string
		answer *qhinv1.ResponderDiscoverPatientsResponse
		want   qhinv1.ResponderState
		detail string
		// maxLinks bounds the person links the member may contribute.
		maxLinks int
	}{
		{name: "200,000 tiny candidates, more bytes than a member's answer may have", answer: tinyCandidates(200_000),
			want: failed, detail: "larger than", maxLinks: 0},
		{name: "15,000 tiny candidates, of which the first 100 are kept", answer: tinyCandidates(15_000),
			want: ok, detail: "dropped", maxLinks: broker.DefaultMaxCandidatesPerResponder},
		{name: "candidates with a 72 KiB address line are dropped", answer: oversized,
			want: failed, detail: "dropped 3 malformed", maxLinks: 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			flood.candidates.Store(tc.answer)
			ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
			defer cancel()
			resp, err := gw.DiscoverPatients(ctx, &qhinv1.DiscoverPatientsRequest{PurposeOfUse: "T-TRTMNT", Requester: requester(), Demographics: maria})
			if err != nil {
				t.Fatalf("phase %q: %v", "legitimate query while p9 floods", err)
			}
			found, hostile := false, 0
			for _, p := range resp.Persons {
				for _, l := range p.Links {
					found = found || l.ParticipantId == "p2"
					if l.ParticipantId == "p9" {
						hostile++
					}
				}
			}
			if !found {
				t.Errorf("maria at p2 not found among %d persons", len(resp.Persons))
			}
			if hostile > tc.maxLinks {
				t.Errorf("p9 contributed %d links, want at most %d", hostile, tc.maxLinks)
			}
			for _, r := range resp.Responders {
				if r.ParticipantId != "p9" {
					continue
				}
				if r.Status != tc.want || !strings.Contains(r.Detail, tc.detail) {
					t.Errorf("p9's status %v %q, want %v saying %q", r.Status, r.Detail, tc.want, tc.detail)
				}
			}
			if size := proto.Size(resp); size > 1<<20 {
				t.Errorf("the answer to the initiator is %d bytes", size)
			}
		})
	}

	t.Run("10,000 tiny documents, of which the first 1000 are kept", func(t *testing.T) {
		docs := &qhinv1.ResponderQueryDocumentsResponse{Documents: make([]*qhinv1.DocumentMetadata, 10_000)}
		for i := range docs.Documents {
			docs.Documents[i] = &qhinv1.DocumentMetadata{Id: fmt.Sprintf("d%06d", i), Sha256: fmt.Sprintf("%064x", i), Size: 1,
				Patient: &qhinv1.PatientLink{PatientId: "h1"}} // the record p9 is asked about
		}
		flood.documents.Store(docs)
		// p9 answers discovery with one record of Maria, so that the
		// initiator holds links to both members' records.
		flood.candidates.Store(&qhinv1.ResponderDiscoverPatientsResponse{Candidates: []*qhinv1.Candidate{{PatientId: "h1", Score: 1, Demographics: maria}}})
		links := discoverLinks(t, gw, "T-TRTMNT", maria)
		ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
		defer cancel()
		resp, err := gw.QueryDocuments(ctx, &qhinv1.QueryDocumentsRequest{PurposeOfUse: "T-TRTMNT", Requester: requester(), Links: []*qhinv1.PatientLink{
			{Link: links["p2"]}, {Link: links["p9"]},
		}})
		if err != nil {
			t.Fatalf("phase %q: %v", "legitimate document query while p9 floods", err)
		}
		fromP2, fromP9 := 0, 0
		for _, d := range resp.Documents {
			switch d.SourceParticipantId {
			case "p2":
				fromP2++
			case "p9":
				fromP9++
			}
		}
		if fromP2 != 1 || fromP9 > broker.DefaultMaxDocumentsPerResponder {
			t.Errorf("%d documents from p2 (want 1), %d from p9 (want at most %d)", fromP2, fromP9, broker.DefaultMaxDocumentsPerResponder)
		}
		for _, r := range resp.Responders {
			if r.ParticipantId == "p9" && (r.Status != ok || !strings.Contains(r.Detail, "dropped")) {
				t.Errorf("p9's status %v %q, want OK saying what was dropped", r.Status, r.Detail)
			}
		}
	})
}

// stallConnections opens count TCP connections to addr, spread over sources
// loopback addresses from 127.0.0.2 on, and sends on each the first three
// bytes of a TLS record, never the rest. It returns how many of them the
// server has closed so far, as a function.
func stallConnections(t *testing.T, addr string, sources, perSource int) func() int {
	t.Helper()
	var closed atomic.Int64
	var conns []net.Conn
	t.Cleanup(func() {
		for _, c := range conns {
			c.Close()
		}
	})
	for s := range sources {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(2+s))}, Timeout: 10 * time.Second}
		for range perSource {
			c, err := d.Dial("tcp", addr)
			if err != nil {
				t.Fatalf("phase %q: %v", "open the attack's connections", err)
			}
			conns = append(conns, c)
			c.Write([]byte{0x16, 0x03, 0x01})
			go func() {
				io.Copy(io.Discard, c)
				closed.Add(1)
			}()
		}
	}
	return func() int { return int(closed.Load()) }
}

func TestAbuse_ConnectionsBeyondTheCapAreClosedAtOnce(t *testing.T) {
	const total, perSource = 64, 16
	n, _ := startNetwork(t, Options{Brokers: 1, Participants: 3, Metrics: true, Limits: broker.Limits{Server: pki.ServerLimits{
		// Long enough that no stalled handshake times out during the test:
		// every connection the broker closes, it closed for the cap.
		HandshakeTimeout: 10 * time.Minute, MaxConnections: total, MaxConnectionsPerSource: perSource,
	}}})
	seedMaria(t, n)
	gw := dial(t, n, n.ParticipantSource(0)).Gateway()
	if err := findMaria(gw, "p2"); err != nil {
		t.Fatalf("phase %q: %v", "query before the attack", err)
	}
	legit := queryMeanwhile(t, gw, "p2")

	const sources, each = 10, 30
	closed := stallConnections(t, n.Brokers[0].GRPCAddr, sources, each)
	// The legitimate client holds one of the total; the attack gets the rest.
	pollUntil(t, 30*time.Second, "phase: the broker closes the attack's connections beyond its caps", func() error {
		if open := sources*each - closed(); open > total-1 {
			return fmt.Errorf("%d of the attack's %d connections still open; caps %d in total, %d per source", open, sources*each, total, perSource)
		}
		return nil
	})
	text := scrape(t, n.Brokers[0].MetricsAddr)
	if v, ok := metricValue(text, "qhin_connections_open", ""); !ok || v > total {
		t.Errorf("qhin_connections_open = %v (found %v), want at most %d", v, ok, total)
	}
	legit.check(t)
}

func TestAbuse_StalledHandshakesAreCutOff(t *testing.T) {
	n, _ := startNetwork(t, Options{Brokers: 1, Participants: 3, Limits: broker.Limits{Server: pki.ServerLimits{HandshakeTimeout: time.Second}}})
	seedMaria(t, n)
	gw := dial(t, n, n.ParticipantSource(0)).Gateway()
	if err := findMaria(gw, "p2"); err != nil {
		t.Fatalf("phase %q: %v", "query before the attack", err)
	}
	legit := queryMeanwhile(t, gw, "p2")
	const sources, each = 4, 50
	closed := stallConnections(t, n.Brokers[0].GRPCAddr, sources, each)
	pollUntil(t, 60*time.Second, "phase: the broker closes every stalled handshake", func() error {
		if c := closed(); c < sources*each {
			return fmt.Errorf("%d of %d stalled connections closed", c, sources*each)
		}
		return nil
	})
	legit.check(t)
	// A new client still gets in.
	if err := findMaria(dial(t, n, n.ParticipantSource(2)).Gateway(), "p2"); err != nil {
		t.Fatalf("phase %q: %v", "a new client after the attack", err)
	}
}

// seriesOf counts the samples of a metric family in a scrape, and the
// distinct values of one of its labels.
func seriesOf(text, family, label string) (int, map[string]bool) {
	values := map[string]bool{}
	count := 0
	for _, line := range strings.Split(text, "\n") {
		if !strings.HasPrefix(line, family+"{") {
			continue
		}
		count++
		if _, rest, ok := strings.Cut(line, label+`="`); ok {
			v, _, _ := strings.Cut(rest, `"`)
			values[v] = true
		}
	}
	return count, values
}

func TestAbuse_LabelFloodKeepsMetricSeriesBounded(t *testing.T) {
	n, _ := startNetwork(t, Options{Brokers: 1, Participants: 3, Metrics: true})
	seedMaria(t, n)
	gw := dial(t, n, n.ParticipantSource(0)).Gateway()
	legit := queryMeanwhile(t, gw, "p2")

	// 200 document queries, each with a real link and 63 made up to name
	// members that do not exist: 12,600 made-up member ids. A made-up link
	// is refused before any member is asked, and names no label.
	real := discoverLinks(t, gw, "T-TRTMNT", maria)["p2"]
	for call := range 200 {
		links := []*qhinv1.PatientLink{{Link: real}}
		for i := range broker.DefaultMaxMembersPerQuery - 1 {
			links = append(links, &qhinv1.PatientLink{ParticipantId: fmt.Sprintf("zz%d-%d", call, i), PatientId: "x", Link: fmt.Sprintf("q1.zz%d-%d", call, i)})
		}
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		_, err := gw.QueryDocuments(ctx, &qhinv1.QueryDocumentsRequest{PurposeOfUse: "T-TRTMNT", Requester: requester(), Links: links})
		cancel()
		if status.Code(err) != codes.InvalidArgument || !strings.Contains(status.Convert(err).Message(), "links[1].link") {
			t.Fatalf("phase %q: call %d: %v, want InvalidArgument naming links[1].link", "document queries naming unknown members", call, err)
		}
	}
	resp, err := gw.QueryDocuments(callCtx(t), &qhinv1.QueryDocumentsRequest{PurposeOfUse: "T-TRTMNT", Requester: requester(), Links: []*qhinv1.PatientLink{{Link: real}}})
	if err != nil || len(resp.Documents) == 0 {
		t.Fatalf("the real link's documents after the flood: %v, %v", resp, err)
	}
	// Caller text that is no link at all is refused, and never becomes a
	// label.
	text := "Zyxwvutsrq 1911-11-11 MRN-998877"
	_, err = gw.QueryDocuments(callCtx(t), &qhinv1.QueryDocumentsRequest{PurposeOfUse: "T-TRTMNT", Requester: requester(),
		Links: []*qhinv1.PatientLink{{ParticipantId: text, PatientId: "x", Link: text}}})
	if msg := status.Convert(err).Message(); status.Code(err) != codes.InvalidArgument || !strings.Contains(msg, "links[0].link") || strings.Contains(msg, "Zyxw") {
		t.Errorf("a link naming %q: %v, want InvalidArgument naming links[0].link", text, err)
	}
	legit.check(t)

	scraped := scrape(t, n.Brokers[0].MetricsAddr)
	for _, family := range []string{"qhin_responder_outcomes_total", "qhin_responder_latency_seconds_bucket"} {
		count, values := seriesOf(scraped, family, "participant")
		// Three members and "unknown", in at most six states (and sixteen
		// buckets for the histogram).
		if len(values) > 4 || count > 4*16 {
			t.Errorf("%s has %d series over %d participant label values, want at most 4 values", family, count, len(values))
		}
	}
	if strings.Contains(scraped, "Zyxwvutsrq") || strings.Contains(scraped, "zz1-") || strings.Contains(scraped, "zzz-") {
		t.Error("caller text became a label value")
	}

	// A retired member's series go.
	if _, values := seriesOf(scraped, "qhin_responder_outcomes_total", "participant"); !values["p3"] {
		t.Fatalf("phase %q: p3 has no series before it retires", "series of a member")
	}
	_, err = dial(t, n, n.Operator()).Directory().SetParticipantStatus(callCtx(t), &qhinv1.SetParticipantStatusRequest{
		ParticipantId: "p3", Status: qhinv1.ParticipantStatus_PARTICIPANT_STATUS_RETIRED, Reason: "left the network", RequestId: "retire-p3"})
	if err != nil {
		t.Fatal(err)
	}
	pollUntil(t, 10*time.Second, "phase: a retired member's series are removed", func() error {
		s := scrape(t, n.Brokers[0].MetricsAddr)
		for _, family := range []string{"qhin_responder_outcomes_total", "qhin_responder_latency_seconds_bucket"} {
			if _, values := seriesOf(s, family, "participant"); values["p3"] {
				return fmt.Errorf("%s still has series for p3", family)
			}
		}
		return nil
	})
}

func TestAbuse_150000LinksAreRefusedBeforeAnyWork(t *testing.T) {
	n, logs := startNetwork(t, Options{Brokers: 1, Participants: 3})
	seedMaria(t, n)
	gw := dial(t, n, n.ParticipantSource(0)).Gateway()
	legit := queryMeanwhile(t, dial(t, n, n.ParticipantSource(2)).Gateway(), "p2")

	links := func(count int) []*qhinv1.PatientLink {
		out := make([]*qhinv1.PatientLink, count)
		for i := range out {
			out[i] = &qhinv1.PatientLink{ParticipantId: "p2", PatientId: fmt.Sprintf("p2-%06d", i)}
		}
		return out
	}
	for _, tc := range []struct {
		name  string
		links int
		code  codes.Code
		says  string
	}{
		// Larger than a request may be: gRPC refuses it from its length
		// prefix, before decoding it.
		{"150,000 links, more bytes than a request may have", 150_000, codes.ResourceExhausted, "larger than max"},
		// Within the message cap: the size check refuses it before
		// anything else looks at it.
		{"30,000 links", 30_000, codes.InvalidArgument, "links: must hold at most"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			_, err := gw.QueryDocuments(ctx, &qhinv1.QueryDocumentsRequest{PurposeOfUse: "T-TRTMNT", Requester: requester(), Links: links(tc.links)})
			if status.Code(err) != tc.code || !strings.Contains(status.Convert(err).Message(), tc.says) {
				t.Fatalf("%v, want %v saying %q", trimmed(err), tc.code, tc.says)
			}
			if strings.Contains(status.Convert(err).Message(), "p2-0") {
				t.Errorf("the error %q repeats a link", status.Convert(err).Message())
			}
		})
	}
	legit.check(t)
	// The member was never asked.
	if got := rpcLogged(t, logs, "participant", "p2", qhinv1.Responder_QueryDocuments_FullMethodName); len(got) != 0 {
		t.Errorf("p2 was asked %d document queries", len(got))
	}
}

func TestAbuse_RetrievalsThatAreNeverReadHoldBoundedMemory(t *testing.T) {
	const docBytes = 12 << 20
	for _, tc := range []struct {
		name string
		// attack retrievals are opened and never read; the broker lets
		// perMember of them run.
		attack, perMember int
		// maxGrowth bounds the growth of the heap of this process, which
		// holds the whole network.
		maxGrowth int64
	}{
		{name: "beyond the member's share they are refused", attack: 100, perMember: 4, maxGrowth: 32 << 20},
		// Every one runs: each holds at most its flow-control windows
		// (256 KiB by default at each hop), gRPC's write buffers and a
		// batch of chunks at the holder (under a mebibyte in all, for
		// the broker and the holder together), until the send timeout
		// ends it.
		{name: "within the share each holds a bounded amount", attack: 40, perMember: 1000, maxGrowth: 40 * 5 / 4 << 20},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n, logs := startNetwork(t, Options{Brokers: 1, Participants: 3, Limits: broker.Limits{
				MaxRetrievesPerInitiator: tc.perMember, SendTimeout: 2 * time.Second}})
			seedMaria(t, n)
			putRandomDoc(t, n, 0, "p1-mrn-001", "p1-big", docBytes, 7)
			legitGW := dial(t, n, n.ParticipantSource(2)).Gateway()

			// The attacker is member p2. Its own client takes little: a
			// small static window per stream, so what this process holds
			// is the network's doing, not the attacker's.
			cc, err := grpc.NewClient("passthrough:///"+n.Brokers[0].GRPCAddr,
				grpc.WithTransportCredentials(brokerCreds(n, n.ParticipantSource(1))),
				grpc.WithStaticStreamWindowSize(64<<10), grpc.WithStaticConnWindowSize(64<<10))
			if err != nil {
				t.Fatal(err)
			}
			defer cc.Close()
			attacker := qhinv1.NewGatewayClient(cc)
			bigLink := docLink(t, attacker, maria, "p1", "p1-big")

			defer debug.SetGCPercent(debug.SetGCPercent(10))
			runtime.GC()
			runtime.GC()
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			baseline := ms.HeapAlloc
			peak := sampleHeap()

			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			req := &qhinv1.RetrieveDocumentRequest{PurposeOfUse: "T-TRTMNT", Requester: requester(),
				Link: &qhinv1.DocumentLink{Link: bigLink}}
			var streams []grpc.ClientStream
			for range tc.attack {
				s, err := attacker.RetrieveDocument(ctx, req)
				if err != nil {
					t.Fatalf("phase %q: %v", "open never-read retrievals", err)
				}
				streams = append(streams, s) // never read
			}

			// Meanwhile another member queries and retrieves.
			if err := findMaria(legitGW, "p2"); err != nil {
				t.Errorf("phase %q: %v", "legitimate query during the attack", err)
			}
			putDoc(t, n, 0, "p1-mrn-001", "p1-small", "34133-9", time.Date(2025, 5, 2, 0, 0, 0, 0, time.UTC), "a small note")
			if err := callGateway(callCtx(t), legitGW, &qhinv1.RetrieveDocumentRequest{PurposeOfUse: "T-TRTMNT", Requester: requester(),
				Link: &qhinv1.DocumentLink{Link: docLink(t, legitGW, maria, "p1", "p1-small")}}); err != nil {
				t.Errorf("phase %q: %v", "legitimate retrieval during the attack", err)
			}

			// The broker gives up on every retrieval its reader does not
			// read, and refuses those beyond the member's share.
			ended := pollFor(90*time.Second, func() error {
				ended := 0
				for _, c := range rpcLogged(t, logs, "broker", "b1", qhinv1.Gateway_RetrieveDocument_FullMethodName) {
					if c != "OK" {
						ended++
					}
				}
				if ended < tc.attack {
					return fmt.Errorf("%d of %d ended", ended, tc.attack)
				}
				return nil
			})
			growth := int64(peak.Stop()) - int64(baseline)
			t.Logf("heap peak growth %d MiB with %d never-read retrievals of a %d MiB document", growth>>20, tc.attack, docBytes>>20)
			if ended != nil {
				t.Fatalf("phase %q: not within 90s: %v", "the broker ends every never-read retrieval", ended)
			}
			if growth > tc.maxGrowth {
				t.Errorf("heap grew by %d MiB with %d never-read retrievals of a %d MiB document, want at most %d MiB",
					growth>>20, tc.attack, docBytes>>20, tc.maxGrowth>>20)
			}
			var refused, timedOut int
			for _, c := range rpcLogged(t, logs, "broker", "b1", qhinv1.Gateway_RetrieveDocument_FullMethodName) {
				switch c {
				case codes.ResourceExhausted.String():
					refused++
				case codes.DeadlineExceeded.String():
					timedOut++
				}
			}
			if want := max(0, tc.attack-tc.perMember); refused < want || timedOut != tc.attack-refused {
				t.Errorf("%d refused as beyond the member's share (want at least %d), %d ended by the send timeout (want the other %d)",
					refused, want, timedOut, tc.attack-refused)
			}
			_ = streams
		})
	}
}

func TestAbuse_OversizedFieldsAreRefusedNamingTheField(t *testing.T) {
	n, logs := startNetwork(t, Options{Brokers: 1, Participants: 3})
	seedMaria(t, n)
	gw := dial(t, n, n.ParticipantSource(0)).Gateway()
	const mark = "OVRSZ"
	big := strings.Repeat(mark, 20<<10) // 100 KiB

	for _, base := range gatewayRequests() {
		strs, lists := requestSlots(base)
		for _, f := range strs {
			t.Run(methodOf(base)+"/"+f.path+" of 100 KiB", func(t *testing.T) {
				req := proto.Clone(base)
				f.set(req, big)
				expectInvalid(t, gw, req, f.path, mark)
			})
		}
		for _, l := range lists {
			t.Run(methodOf(base)+"/"+l.path+" of 10,000 items", func(t *testing.T) {
				req := proto.Clone(base)
				l.fill(req, 10_000)
				expectInvalid(t, gw, req, l.path, mark)
			})
		}
	}
	for _, field := range []string{"since", "until"} {
		t.Run("QueryDocumentsRequest/"+field+" out of range", func(t *testing.T) {
			req := gatewayRequests()[1].(*qhinv1.QueryDocumentsRequest)
			bad := &timestamppb.Timestamp{Seconds: -1e18}
			if field == "since" {
				req.Since = bad
			} else {
				req.Until = bad
			}
			expectInvalid(t, gw, req, field, mark)
		})
	}
	if containsValue(logs.String(), mark+mark) {
		t.Error("an oversized value reached the logs")
	}
	for _, line := range strings.Split(logs.String(), "\n") {
		if len(line) > telemetry.MaxLogRecord+2<<10 {
			t.Errorf("a log line of %d bytes: %.200s", len(line), line)
		}
	}
	if err := findMaria(gw, "p2"); err != nil {
		t.Errorf("phase %q: %v", "legitimate query after the oversized ones", err)
	}
}

func expectInvalid(t *testing.T, gw qhinv1.GatewayClient, req proto.Message, field, mark string) {
	t.Helper()
	err := callGateway(callCtx(t), gw, req)
	msg := status.Convert(err).Message()
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(msg, field) {
		t.Errorf("%v, want InvalidArgument naming %s", trimmed(err), field)
	}
	if strings.Contains(msg, mark) {
		t.Errorf("the error repeats the value: %s", trimmed(err))
	}
}

// trimmed keeps an error short enough to print, however much it echoes.
func trimmed(err error) string {
	s := fmt.Sprint(err)
	if len(s) > 300 {
		return s[:300] + fmt.Sprintf("…(%d bytes)", len(s))
	}
	return s
}

func TestAbuse_CallerTextIsNeverEchoed(t *testing.T) {
	n, logs := startNetwork(t, Options{Brokers: 1, Participants: 3, Metrics: true})
	seedMaria(t, n)
	putDoc(t, n, 1, "p2-000042", "p2-doc-1", "34133-9", time.Date(2025, 3, 1, 0, 0, 0, 0, time.UTC), "a note")
	gw := dial(t, n, n.ParticipantSource(0)).Gateway()

	// Every string field of every Gateway request gets, in turn, a value
	// found nowhere else: letters only, short enough for any size limit, a
	// well-formed id where an id goes.
	var tokens []string
	var errs []string
	i := 0
	for _, base := range gatewayRequests() {
		strs, _ := requestSlots(base)
		for _, f := range strs {
			token := fmt.Sprintf("qzecho%c%c", 'a'+i/26, 'a'+i%26)
			i++
			tokens = append(tokens, token)
			req := proto.Clone(base)
			f.set(req, token)
			if err := callGateway(callCtx(t), gw, req); err != nil {
				errs = append(errs, f.path+": "+status.Convert(err).Message())
			}
		}
	}
	// Purpose codes that look like codes.
	for _, code := range []string{"T-QZECHOPURPOSE", "QZECHOTREAT"} {
		tokens = append(tokens, code)
		_, err := gw.DiscoverPatients(callCtx(t), &qhinv1.DiscoverPatientsRequest{PurposeOfUse: code, Requester: requester(), Demographics: maria})
		errs = append(errs, status.Convert(err).Message())
	}
	if len(errs) == 0 {
		t.Fatal("no call was refused: the check of error messages would be vacuous")
	}

	texts := map[string]string{"errors": strings.Join(errs, "\n"), "logs": logs.String()}
	texts["broker metrics"] = scrape(t, n.Brokers[0].MetricsAddr)
	for _, p := range n.Participants {
		texts[p.ID+" metrics"] = scrape(t, p.MetricsAddr)
	}
	for where, text := range texts {
		lower := strings.ToLower(text)
		for _, tok := range tokens {
			if containsValue(lower, strings.ToLower(tok)) {
				t.Errorf("%s contain the caller's value %q", where, tok)
			}
		}
	}
	if err := findMaria(gw, "p2"); err != nil {
		t.Errorf("phase %q: %v", "legitimate query after the probes", err)
	}
}
