package e2e

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/openqhin/openqhin/broker/client"
	qhinv1 "github.com/openqhin/openqhin/proto/qhin/v1"
)

// follower returns the index of a running broker that does not lead.
func follower(t *testing.T, n *Network) int {
	t.Helper()
	leader := waitLeader(t, n, -1)
	for i, b := range n.Brokers {
		if i != leader && b.Server != nil {
			return i
		}
	}
	t.Fatal("no follower")
	return -1
}

func fsmPath(n *Network, i int) string {
	return filepath.Join(n.Brokers[i].Dir, "data", "fsm.db")
}

// queryThrough asks one broker alone, as participant j, to discover maria.
func queryThrough(t *testing.T, n *Network, i, j int) error {
	t.Helper()
	c, err := client.Dial([]string{n.Brokers[i].GRPCAddr}, n.ParticipantSource(j), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, err = c.Gateway().DiscoverPatients(callCtx(t), &qhinv1.DiscoverPatientsRequest{
		PurposeOfUse: "T-TRTMNT", Requester: requester(), Demographics: maria,
	})
	return err
}

func participantCount(t *testing.T, n *Network, i int) int {
	t.Helper()
	ps, err := n.Brokers[i].Server.Node().FSM().Participants(0)
	if err != nil {
		t.Fatalf("broker %s: read participants: %v", n.Brokers[i].ID, err)
	}
	return len(ps)
}

// TestStartup_DeletedStateIsRebuiltFromSnapshotAndLog deletes a follower's
// fsm.db after its log has been compacted behind a snapshot. The restarted
// broker must rebuild its state from the snapshot and the log before it
// calls itself ready, not start empty.
func TestStartup_DeletedStateIsRebuiltFromSnapshotAndLog(t *testing.T) {
	n, logs := startNetwork(t, Options{Brokers: 3, Participants: 1, TrailingLogs: 5})
	defer func() {
		if t.Failed() {
			for _, l := range logLines(t, logs) {
				if l["level"] != "DEBUG" && l["msg"] != "rpc" {
					t.Log(l)
				}
			}
		}
	}()
	registerBatch(t, n, "d", 300, 50)
	f := follower(t, n)
	leader := waitLeader(t, n, -1)
	want := participantCount(t, n, leader)
	waitFor(t, 20*time.Second, "the follower applies every write", func() bool { return participantCount(t, n, f) == want })
	if err := n.Brokers[f].Server.Node().Snapshot(); err != nil {
		t.Fatalf("phase %q: %v", "snapshot", err)
	}

	n.KillBroker(f)
	if err := os.Remove(fsmPath(n, f)); err != nil {
		t.Fatal(err)
	}
	if err := n.StartBroker(f); err != nil {
		t.Fatalf("phase %q: %v", "restart", err)
	}
	waitFor(t, 30*time.Second, "the restarted broker to be ready", func() bool { return n.Brokers[f].Server.Ready() })
	if got := participantCount(t, n, f); got != want {
		t.Fatalf("restarted broker is ready holding %d participants, want %d", got, want)
	}
}

// flipAll rewrites every copy of old in the file at path to new (same
// length) and reports how many it changed.
func flipAll(t *testing.T, path string, old, new []byte) int {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	count := bytes.Count(data, old)
	if count == 0 {
		return 0
	}
	if err := os.WriteFile(path, bytes.ReplaceAll(data, old, new), 0o600); err != nil {
		t.Fatal(err)
	}
	return count
}

// TestStartup_FlippedByteIsDetected changes a suspended participant's status
// byte in a follower's fsm.db to active, as a bad disk might. The restarted
// broker must notice and serve the participant as suspended (rebuilt from
// its snapshot and log), never as active.
func TestStartup_FlippedByteIsDetected(t *testing.T) {
	n, _ := startNetwork(t, Options{Brokers: 3, Participants: 3})
	seedMaria(t, n)
	op := dial(t, n, n.Operator())
	if _, err := op.Directory().SetParticipantStatus(callCtx(t), &qhinv1.SetParticipantStatusRequest{
		ParticipantId: "p2", Status: qhinv1.ParticipantStatus_PARTICIPANT_STATUS_SUSPENDED, Reason: "audit",
	}); err != nil {
		t.Fatal(err)
	}
	f := follower(t, n)
	var stored []byte
	waitFor(t, 20*time.Second, "the follower applies the suspension", func() bool {
		p, err := n.Brokers[f].Server.Node().FSM().Participant("p2")
		if err != nil || p.Status != qhinv1.ParticipantStatus_PARTICIPANT_STATUS_SUSPENDED {
			return false
		}
		stored, err = proto.Marshal(p)
		return err == nil
	})
	// Field 5 (status) is a varint: tag 0x28, then 2 (suspended).
	i := bytes.Index(stored, []byte{0x28, 0x02})
	if i < 0 {
		t.Fatalf("no status field in %x", stored)
	}
	flipped := bytes.Clone(stored)
	flipped[i+1] = 0x01 // active

	n.KillBroker(f)
	if c := flipAll(t, fsmPath(n, f), stored, flipped); c == 0 {
		t.Fatal("the suspended record is not in fsm.db")
	}
	if err := n.StartBroker(f); err != nil {
		t.Fatalf("phase %q: %v", "restart", err)
	}
	waitFor(t, 30*time.Second, "the restarted broker to be ready", func() bool { return n.Brokers[f].Server.Ready() })
	if err := queryThrough(t, n, f, 1); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("suspended p2 queried through the restarted broker: %v, want PermissionDenied", err)
	}
	p, err := n.Brokers[f].Server.Node().FSM().Participant("p2")
	if err != nil || p.Status != qhinv1.ParticipantStatus_PARTICIPANT_STATUS_SUSPENDED {
		t.Fatalf("p2 on the restarted broker: %v, %v; want suspended", p, err)
	}
}

// truncate cuts the file at path to size bytes.
func truncate(t *testing.T, path string, size int64) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Size() <= size {
		t.Fatalf("%s is only %d bytes", path, fi.Size())
	}
	if err := os.Truncate(path, size); err != nil {
		t.Fatal(err)
	}
}

// TestStartup_TruncatedStateIsRebuilt truncates a follower's fsm.db. The
// broker must not crash (bbolt would map pages past the end of the file);
// it sets the file aside and rebuilds its state from its snapshot and log.
func TestStartup_TruncatedStateIsRebuilt(t *testing.T) {
	n, _ := startNetwork(t, Options{Brokers: 3, Participants: 1})
	registerBatch(t, n, "t", 300, 50)
	f := follower(t, n)
	want := participantCount(t, n, waitLeader(t, n, -1))
	waitFor(t, 20*time.Second, "the follower applies every write", func() bool { return participantCount(t, n, f) == want })

	n.KillBroker(f)
	truncate(t, fsmPath(n, f), 16<<10)
	if err := n.StartBroker(f); err != nil {
		t.Fatalf("phase %q: %v", "restart", err)
	}
	waitFor(t, 30*time.Second, "the restarted broker to be ready", func() bool { return n.Brokers[f].Server.Ready() })
	if got := participantCount(t, n, f); got != want {
		t.Fatalf("restarted broker holds %d participants, want %d", got, want)
	}
	aside, _ := filepath.Glob(fsmPath(n, f) + ".damaged-*")
	if len(aside) != 1 {
		t.Errorf("damaged state file kept as %v, want one fsm.db.damaged-* file", aside)
	}
}

// TestStartup_TruncatedRaftLogIsAClearError truncates a follower's raft.db:
// the broker refuses to start with an error that names the file and says
// how to recover, instead of crashing.
func TestStartup_TruncatedRaftLogIsAClearError(t *testing.T) {
	n, _ := startNetwork(t, Options{Brokers: 3, Participants: 1})
	registerBatch(t, n, "r", 300, 50)
	f := follower(t, n)
	n.KillBroker(f)
	path := filepath.Join(n.Brokers[f].Dir, "data", "raft.db")
	truncate(t, path, 16<<10)
	err := n.StartBroker(f)
	if err == nil {
		t.Fatal("broker started on a truncated raft.db")
	}
	for _, want := range []string{path, "truncated", "cluster remove"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
}

// TestFence_BrokerWithoutLeaderRefusesQueries stops two of three brokers.
// The one left cannot learn what the cluster commits, so within an election
// timeout or so it must refuse queries (Unavailable) and report NOT_SERVING,
// instead of serving what it holds.
func TestFence_BrokerWithoutLeaderRefusesQueries(t *testing.T) {
	n, _ := startNetwork(t, Options{Brokers: 3, Participants: 3})
	seedMaria(t, n)
	f := follower(t, n)
	if err := queryThrough(t, n, f, 1); err != nil {
		t.Fatalf("phase %q: %v", "query before", err)
	}
	for i := range n.Brokers {
		if i != f {
			n.KillBroker(i)
		}
	}
	pollUntil(t, 5*time.Second, "the lone broker refuses queries", func() error {
		if err := queryThrough(t, n, f, 1); status.Code(err) != codes.Unavailable {
			return fmt.Errorf("query: %v, want Unavailable", err)
		}
		if n.Brokers[f].Server.Ready() {
			return fmt.Errorf("still ready")
		}
		return nil
	})
}

// saveSnapshot streams the cluster's state through the operator's client.
func saveSnapshot(t *testing.T, op *client.Conn) []byte {
	t.Helper()
	stream, err := op.Cluster().SaveSnapshot(callCtx(t), &qhinv1.SaveSnapshotRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	for {
		c, err := stream.Recv()
		if err == io.EOF {
			return buf.Bytes()
		}
		if err != nil {
			t.Fatal(err)
		}
		buf.Write(c.Data)
	}
}

func restoreThrough(t *testing.T, c qhinv1.ClusterClient, snap []byte, force bool) (*qhinv1.RestoreSnapshotResponse, error) {
	t.Helper()
	stream, err := c.RestoreSnapshot(callCtx(t))
	if err != nil {
		return nil, err
	}
	for i := 0; i < len(snap); i += 32 << 10 {
		if err := stream.Send(&qhinv1.SnapshotChunk{Data: snap[i:min(i+32<<10, len(snap))], Force: force && i == 0}); err != nil {
			break
		}
	}
	return stream.CloseAndRecv()
}

// TestRestore_AnotherTrustDomainIsRefusedUnlessForced saves a snapshot of a
// network in one trust domain and restores it into a cluster of another,
// through a follower (which hands it to the leader): refused, naming both
// trust domains, unless forced.
func TestRestore_AnotherTrustDomainIsRefusedUnlessForced(t *testing.T) {
	a, _ := startNetwork(t, Options{Brokers: 1, Participants: 2})
	snap := saveSnapshot(t, dial(t, a, a.Operator()))

	b, _ := startNetwork(t, Options{Brokers: 3, Participants: 1, TrustDomain: "other.test"})
	f := follower(t, b)
	cc := rawConn(t, b.Brokers[f].GRPCAddr, brokerCreds(b, b.Operator()))
	_, err := restoreThrough(t, qhinv1.NewClusterClient(cc), snap, false)
	if status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("restore from qhin.test into other.test: %v, want FailedPrecondition", err)
	}
	for _, td := range []string{"qhin.test", "other.test", "--force"} {
		if !strings.Contains(status.Convert(err).Message(), td) {
			t.Errorf("refusal %q does not mention %s", status.Convert(err).Message(), td)
		}
	}
	if _, err := restoreThrough(t, qhinv1.NewClusterClient(cc), snap, true); err != nil {
		t.Fatalf("forced restore: %v", err)
	}
	op := dial(t, b, b.Operator())
	ids, err := directoryIDs(callCtx(t), op.Directory())
	if err != nil || strings.Join(ids, ",") != "p1,p2" {
		t.Fatalf("directory after the forced restore: %v, %v; want p1,p2", ids, err)
	}
}

// TestDirectory_WriteParticipantsAppliesABatchInOneCall registers, updates
// and suspends in one call; each write has its own result, and a refused
// write does not stop the others.
func TestDirectory_WriteParticipantsAppliesABatchInOneCall(t *testing.T) {
	n, _ := startNetwork(t, Options{Brokers: 3, Participants: 2})
	op := dial(t, n, n.Operator()).Directory()
	writes := []*qhinv1.ParticipantWrite{
		{Write: &qhinv1.ParticipantWrite_Register{Register: memberParticipant("x1")}},
		{Write: &qhinv1.ParticipantWrite_Register{Register: memberParticipant("p1")}}, // exists
		{Write: &qhinv1.ParticipantWrite_SetStatus{SetStatus: &qhinv1.StatusChange{ParticipantId: "p2", Status: qhinv1.ParticipantStatus_PARTICIPANT_STATUS_SUSPENDED}}},
	}
	resp, err := op.WriteParticipants(callCtx(t), &qhinv1.WriteParticipantsRequest{Writes: writes, RequestId: "batch-1"})
	if err != nil {
		t.Fatal(err)
	}
	want := []codes.Code{codes.OK, codes.AlreadyExists, codes.OK}
	for i, r := range resp.Results {
		if codes.Code(r.Code) != want[i] {
			t.Errorf("write %d: %v %q, want %v", i, codes.Code(r.Code), r.Message, want[i])
		}
	}
	// The suspension restricts: every broker holds it once acknowledged.
	for i := range n.Brokers {
		if err := queryThrough(t, n, i, 1); status.Code(err) != codes.PermissionDenied {
			t.Errorf("suspended p2 through %s: %v, want PermissionDenied", n.Brokers[i].ID, err)
		}
	}
	// Bad input is refused whole, naming the write and field.
	_, err = op.WriteParticipants(callCtx(t), &qhinv1.WriteParticipantsRequest{Writes: []*qhinv1.ParticipantWrite{
		{Write: &qhinv1.ParticipantWrite_Register{Register: memberParticipant("x2")}},
		{Write: &qhinv1.ParticipantWrite_Register{Register: &qhinv1.Participant{Id: "x3", Endpoint: "nope"}}},
	}})
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(status.Convert(err).Message(), "writes[1]") {
		t.Errorf("bad write: %v, want InvalidArgument naming writes[1]", err)
	}
	if _, err := op.GetParticipant(callCtx(t), &qhinv1.GetParticipantRequest{ParticipantId: "x2", Consistent: true}); status.Code(err) != codes.NotFound {
		t.Errorf("x2 of a refused call: %v, want NotFound", err)
	}
	too := make([]*qhinv1.ParticipantWrite, 10_001)
	for i := range too {
		too[i] = writes[0]
	}
	if _, err := op.WriteParticipants(callCtx(t), &qhinv1.WriteParticipantsRequest{Writes: too}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("10,001 writes: %v, want InvalidArgument", err)
	}
}
