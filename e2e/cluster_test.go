package e2e

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/openqhin/openqhin/broker/client"
	"github.com/openqhin/openqhin/broker/fsm"
	"github.com/openqhin/openqhin/pki"
	qhinv1 "github.com/openqhin/openqhin/proto/qhin/v1"
)

// waitFor polls cond until it holds, failing the test with the phase it was
// waiting for when d passes first.
func waitFor(t *testing.T, d time.Duration, phase string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("phase %q: timed out after %v", phase, d)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func waitLeader(t *testing.T, n *Network, not int) int {
	t.Helper()
	leader := -1
	waitFor(t, 20*time.Second, "a leader", func() bool {
		leader = n.Leader()
		return leader >= 0 && leader != not
	})
	return leader
}

func memberParticipant(id string) *qhinv1.Participant {
	return &qhinv1.Participant{Id: id, Organization: "Member " + id, Endpoint: "127.0.0.1:9"}
}

// TestCluster_LeaderKilledUnderLoad kills the leader abruptly while an
// operator keeps writing to the directory and a participant keeps querying.
// Every write that was acknowledged must survive on every node, the old
// leader's included once it restarts from its data directory, and queries
// must keep succeeding through the other brokers.
func TestCluster_LeaderKilledUnderLoad(t *testing.T) {
	n, _ := startNetwork(t, Options{Brokers: 3, Participants: 3})
	seedMaria(t, n)
	op := dial(t, n, n.Operator())
	p4 := dial(t, n, n.ParticipantSource(2))

	var (
		mu      sync.Mutex
		acked   []string
		writeNo atomic.Int64
		failedW atomic.Int64
		queries atomic.Int64
		failedQ atomic.Int64
		stop    = make(chan struct{})
		wg      sync.WaitGroup
		errs    = make(chan error, 100)
	)
	halt := sync.OnceFunc(func() { close(stop); wg.Wait() })
	defer halt()
	wg.Add(2)
	go func() { // writer
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			id := fmt.Sprintf("w%d", writeNo.Add(1))
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			_, err := op.Directory().RegisterParticipant(ctx, &qhinv1.RegisterParticipantRequest{
				Participant: memberParticipant(id), RequestId: "req-" + id,
			})
			cancel()
			if err != nil {
				failedW.Add(1)
				continue
			}
			mu.Lock()
			acked = append(acked, id)
			mu.Unlock()
		}
	}()
	go func() { // reader
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			_, err := p4.Gateway().DiscoverPatients(ctx, &qhinv1.DiscoverPatientsRequest{
				PurposeOfUse: "T-TRTMNT", Requester: requester(), Demographics: maria,
			})
			cancel()
			queries.Add(1)
			if err != nil {
				failedQ.Add(1)
				select {
				case errs <- err:
				default:
				}
			}
		}
	}()

	waitFor(t, 20*time.Second, "writes before the kill", func() bool { mu.Lock(); defer mu.Unlock(); return len(acked) >= 20 })
	old := n.Leader()
	n.KillBroker(old)
	newLeader := waitLeader(t, n, old)
	waitFor(t, 20*time.Second, "writes after the failover", func() bool {
		mu.Lock()
		defer mu.Unlock()
		before := len(acked)
		return before >= 40
	})
	halt()
	close(errs)
	for err := range errs {
		t.Logf("query failed: %v", err)
	}
	t.Logf("killed leader b%d, new leader b%d; %d writes acknowledged, %d failed; %d queries, %d failed",
		old+1, newLeader+1, len(acked), failedW.Load(), queries.Load(), failedQ.Load())
	if failedQ.Load() > 0 {
		t.Errorf("%d of %d queries failed while the leader was down", failedQ.Load(), queries.Load())
	}

	hasAll := func(i int) func() bool {
		return func() bool {
			f := n.Brokers[i].Server.Node().FSM()
			for _, id := range acked {
				if _, err := f.Participant(id); err != nil {
					return false
				}
			}
			return true
		}
	}
	for i := range n.Brokers {
		if i != old {
			waitFor(t, 10*time.Second, fmt.Sprintf("acknowledged writes on b%d", i+1), hasAll(i))
		}
	}
	if err := n.StartBroker(old); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "acknowledged writes on the restarted old leader", hasAll(old))
}

// registerBatch writes count directory entries through the leader in batches
// of size, so a test can build a large state quickly. Each batch is one Raft
// entry.
func registerBatch(t *testing.T, n *Network, prefix string, count, size int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	for start := 0; start < count; start += size {
		var cmds []*qhinv1.Command
		for i := start; i < min(start+size, count); i++ {
			id := fmt.Sprintf("%s%06d", prefix, i)
			c, err := fsm.NewCommand(qhinv1.CommandType_COMMAND_TYPE_REGISTER_PARTICIPANT, "", time.Now(), &qhinv1.Participant{
				Id: id, SpiffeId: "spiffe://qhin.test/participant/" + id, Endpoint: "127.0.0.1:9",
				Status: qhinv1.ParticipantStatus_PARTICIPANT_STATUS_RETIRED,
			})
			if err != nil {
				t.Fatal(err)
			}
			cmds = append(cmds, c)
		}
		b, err := fsm.NewBatch(fmt.Sprintf("%s-batch-%d", prefix, start), time.Now(), cmds)
		if err != nil {
			t.Fatal(err)
		}
		// Brokers do not retry; a leader lost under load is the caller's
		// to retry, with the same request id.
		pollUntil(t, time.Minute, fmt.Sprintf("batch %s-%d applied", prefix, start), func() error {
			leader := n.Brokers[waitLeader(t, n, -1)].Server.Node()
			_, _, err := leader.Apply(ctx, b)
			return err
		})
	}
}

func checksums(t *testing.T, n *Network, i int) map[string]string {
	t.Helper()
	sums, err := n.Brokers[i].Server.Node().FSM().Checksums()
	if err != nil {
		t.Fatal(err)
	}
	return sums
}

// TestCluster_NewBrokerCatchesUpBySnapshot adds a fourth broker to a cluster
// whose state holds 100,000 entries and whose log has been compacted, so the
// newcomer can only catch up by installing a snapshot; its state must then
// equal the leader's, table by table.
func TestCluster_NewBrokerCatchesUpBySnapshot(t *testing.T) {
	if testing.Short() {
		t.Skip("writes 100,000 entries")
	}
	n, _ := startNetwork(t, Options{Brokers: 3, Participants: 1, TrailingLogs: 5})
	registerBatch(t, n, "bulk", 100_000, 2_000)
	leader := waitLeader(t, n, -1)
	if err := n.Brokers[leader].Server.Node().Snapshot(); err != nil {
		t.Fatal(err)
	}
	snapIndex := n.Brokers[leader].Server.Node().LastSnapshotIndex()

	b4, err := n.AddBroker(false)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 60*time.Second, "the new broker to be ready", func() bool { return n.Brokers[b4].Server.Ready() })
	// Raft records the install right after the state machine holds it,
	// which is when the broker may already serve.
	waitFor(t, 10*time.Second, fmt.Sprintf("the new broker's last snapshot index to reach %d (caught up without a snapshot install?)", snapIndex),
		func() bool { return n.Brokers[b4].Server.Node().LastSnapshotIndex() >= snapIndex })
	leader = waitLeader(t, n, -1)
	want := checksums(t, n, leader)
	waitFor(t, 30*time.Second, "equal state on the new broker", func() bool {
		got := checksums(t, n, b4)
		return got["participants"] == want["participants"] && got["requests"] == want["requests"]
	})
	got := checksums(t, n, b4)
	for table, sum := range want {
		if table == "brokers" {
			continue // the new broker's own record may land after the leader's sum
		}
		if got[table] != sum {
			t.Errorf("table %s: new broker %s, leader %s", table, got[table], sum)
		}
	}
	if ps, _ := n.Brokers[b4].Server.Node().FSM().Participants(qhinv1.ParticipantStatus_PARTICIPANT_STATUS_RETIRED); len(ps) != 100_000 {
		t.Errorf("new broker holds %d bulk entries, want 100000", len(ps))
	}
}

// TestCluster_FullRestartKeepsState stops every broker and starts them again
// from their data directories.
func TestCluster_FullRestartKeepsState(t *testing.T) {
	n, _ := startNetwork(t, Options{Brokers: 3, Participants: 2})
	op := dial(t, n, n.Operator())
	ctx := callCtx(t)
	if _, err := op.Directory().SetParticipantStatus(ctx, &qhinv1.SetParticipantStatusRequest{
		ParticipantId: "p2", Status: qhinv1.ParticipantStatus_PARTICIPANT_STATUS_SUSPENDED, Reason: "audit",
	}); err != nil {
		t.Fatal(err)
	}
	registerBatch(t, n, "r", 500, 100)
	before := checksums(t, n, waitLeader(t, n, -1))

	for i := range n.Brokers {
		n.KillBroker(i)
	}
	for i := range n.Brokers {
		if err := n.StartBroker(i); err != nil {
			t.Fatal(err)
		}
	}
	if err := n.WaitReady(ctx); err != nil {
		t.Fatalf("phase %q: %v", "every broker ready after the restart", err)
	}
	// The operator's connections went down with the brokers; they come
	// back as gRPC reconnects, which on a loaded machine can take longer
	// than one call's retries.
	var resp *qhinv1.GetParticipantResponse
	pollUntil(t, 20*time.Second, "the operator reads p2 after the restart", func() (err error) {
		resp, err = op.Directory().GetParticipant(ctx, &qhinv1.GetParticipantRequest{ParticipantId: "p2", Consistent: true})
		return err
	})
	if resp.Participant.Status != qhinv1.ParticipantStatus_PARTICIPANT_STATUS_SUSPENDED || resp.Participant.StatusReason != "audit" {
		t.Errorf("p2 after restart: %v", resp.Participant)
	}
	for i := range n.Brokers {
		after := checksums(t, n, i)
		if after["participants"] != before["participants"] {
			t.Errorf("b%d participants after restart %s, before %s", i+1, after["participants"], before["participants"])
		}
	}
}

// TestCluster_RemovingNodesShrinksQuorum removes two of three brokers; the
// last one then commits writes alone, which a three-node quorum would not
// allow with two nodes down.
func TestCluster_RemovingNodesShrinksQuorum(t *testing.T) {
	n, _ := startNetwork(t, Options{Brokers: 3, Participants: 1})
	op := dial(t, n, n.Operator())
	leader := waitLeader(t, n, -1)
	for i := range n.Brokers {
		if i == leader {
			continue
		}
		ctx := callCtx(t)
		if _, err := op.Cluster().Remove(ctx, &qhinv1.RemoveRequest{NodeId: n.Brokers[i].ID}); err != nil {
			t.Fatalf("remove %s: %v", n.Brokers[i].ID, err)
		}
		n.KillBroker(i)
	}
	solo := dial(t, n, n.Operator())
	ctx := callCtx(t)
	st, err := solo.Cluster().Status(ctx, &qhinv1.StatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Members) != 1 || st.Members[0].NodeId != n.Brokers[leader].ID {
		t.Fatalf("members after removal: %v", st.Members)
	}
	if _, err := solo.Directory().RegisterParticipant(ctx, &qhinv1.RegisterParticipantRequest{Participant: memberParticipant("solo")}); err != nil {
		t.Fatalf("write with one remaining voter: %v", err)
	}
	// Removing a node that is not a member is NotFound.
	if _, err := solo.Cluster().Remove(ctx, &qhinv1.RemoveRequest{NodeId: "b9"}); status.Code(err) != codes.NotFound {
		t.Errorf("remove unknown node: %v, want NotFound", err)
	}
}

// TestCluster_RaftPortRefusesNonBrokers dials a broker's Raft port with a
// participant's and an operator's certificate: the handshake is refused, so
// neither can speak Raft. A broker certificate gets through.
func TestCluster_RaftPortRefusesNonBrokers(t *testing.T) {
	n, _ := startNetwork(t, Options{Brokers: 1, Participants: 1})
	raftAddr := n.Brokers[0].RaftAddr
	tests := []struct {
		name   string
		src    pki.Source
		wantOK bool
	}{
		{"participant", n.ParticipantSource(0), false},
		{"operator", n.Operator(), false},
		{"broker", mustIssue(t, n, pki.RoleBroker, "b7"), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := pki.ClientTLS(tt.src, pki.AuthorizeRoles(n.CA.TrustDomain(), pki.RoleBroker))
			d := &tls.Dialer{NetDialer: &net.Dialer{Timeout: 5 * time.Second}, Config: cfg}
			conn, err := d.Dial("tcp", raftAddr)
			if err == nil {
				defer conn.Close()
				// In TLS 1.3 the server judges the client certificate after
				// the client's handshake completes; its verdict arrives on
				// the first read.
				conn.SetDeadline(time.Now().Add(2 * time.Second))
				_, err = conn.Read(make([]byte, 1))
			}
			refused := err != nil && !isTimeout(err)
			if tt.wantOK && refused {
				t.Fatalf("broker certificate refused: %v", err)
			}
			if !tt.wantOK && !refused {
				t.Fatalf("%s certificate was not refused (err %v)", tt.name, err)
			}
		})
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func mustIssue(t *testing.T, n *Network, role pki.Role, name string) pki.Source {
	t.Helper()
	src, err := n.Issue(role, name)
	if err != nil {
		t.Fatal(err)
	}
	return src
}

// TestCluster_SuspensionHoldsOnEveryBrokerWhenAcknowledged suspends a member
// and then, straight away, has it query each broker on its own: every one
// refuses, because a directory write is acknowledged only once every live
// broker applies it.
func TestCluster_SuspensionHoldsOnEveryBrokerWhenAcknowledged(t *testing.T) {
	n, _ := startNetwork(t, Options{Brokers: 3, Participants: 2})
	op := dial(t, n, n.Operator())
	for round := 0; round < 3; round++ {
		ctx := callCtx(t)
		if _, err := op.Directory().SetParticipantStatus(ctx, &qhinv1.SetParticipantStatusRequest{
			ParticipantId: "p2", Status: qhinv1.ParticipantStatus_PARTICIPANT_STATUS_SUSPENDED,
		}); err != nil {
			t.Fatal(err)
		}
		for _, b := range n.Brokers {
			c, err := client.Dial([]string{b.GRPCAddr}, n.ParticipantSource(1), nil)
			if err != nil {
				t.Fatal(err)
			}
			_, err = c.Gateway().DiscoverPatients(ctx, &qhinv1.DiscoverPatientsRequest{
				PurposeOfUse: "T-TRTMNT", Requester: requester(), Demographics: maria,
			})
			c.Close()
			if status.Code(err) != codes.PermissionDenied {
				t.Fatalf("round %d: suspended p2 queried %s: %v, want PermissionDenied", round, b.ID, err)
			}
		}
		if _, err := op.Directory().SetParticipantStatus(ctx, &qhinv1.SetParticipantStatusRequest{
			ParticipantId: "p2", Status: qhinv1.ParticipantStatus_PARTICIPANT_STATUS_ACTIVE,
		}); err != nil {
			t.Fatal(err)
		}
	}
}

// TestCluster_OperatorAddsARunningBroker starts a broker that does not ask to
// join, then adds it as an operator would with qhinctl cluster join: the
// leader adds it by its Raft address and it announces its gRPC address
// itself.
func TestCluster_OperatorAddsARunningBroker(t *testing.T) {
	n, _ := startNetwork(t, Options{Brokers: 1, Participants: 1})
	i, err := n.AddBroker(true)
	if err != nil {
		t.Fatal(err)
	}
	if n.Brokers[i].Server.Ready() {
		t.Fatal("a broker outside the cluster says it is ready")
	}
	op := dial(t, n, n.Operator())
	if _, err := op.Cluster().Join(callCtx(t), &qhinv1.JoinRequest{NodeId: n.Brokers[i].ID, RaftAddr: n.Brokers[i].RaftAddr}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "the added broker to be ready", func() bool { return n.Brokers[i].Server.Ready() })
	st, err := op.Cluster().Status(callCtx(t), &qhinv1.StatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Members) != 2 {
		t.Fatalf("%d members after the join, want 2: %v", len(st.Members), st.Members)
	}
	for _, m := range st.Members {
		if !m.Voter || m.GrpcAddr == "" || m.State == qhinv1.NodeState_NODE_STATE_UNREACHABLE {
			t.Errorf("member %s: voter %v, grpc %q, state %v", m.NodeId, m.Voter, m.GrpcAddr, m.State)
		}
	}
	// Participants may not touch membership.
	p := dial(t, n, n.ParticipantSource(0))
	if _, err := p.Cluster().Join(callCtx(t), &qhinv1.JoinRequest{NodeId: "b9", RaftAddr: "127.0.0.1:1"}); status.Code(err) != codes.PermissionDenied {
		t.Errorf("participant joining b9: %v, want PermissionDenied", err)
	}
}
