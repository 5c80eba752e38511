package cluster

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/openqhin/openqhin/broker/fsm"
	qhinv1 "github.com/openqhin/openqhin/proto/qhin/v1"
)

const (
	active    = qhinv1.ParticipantStatus_PARTICIPANT_STATUS_ACTIVE
	suspended = qhinv1.ParticipantStatus_PARTICIPANT_STATUS_SUSPENDED
)

// TestFence_FollowerCutOffStopsServingAndResumes: a follower that hears
// nothing from the leader stops serving within its lease, and serves again
// once the leader reaches it and it has caught up.
func TestFence_FollowerCutOffStopsServingAndResumes(t *testing.T) {
	c := newCluster(t, 3)
	f := c.follower()
	c.partition(f)
	c.poll("cut-off follower stops serving", 10*time.Second, func() error {
		if err := c.nodes[f].node.Serving(); err == nil {
			return errors.New("still serving")
		}
		return nil
	})
	if err := c.nodes[f].node.Serving(); !errors.Is(err, ErrNotServing) {
		t.Fatalf("Serving = %v, want ErrNotServing", err)
	}
	if _, err := c.nodes[f].node.Read(ctxFor(t, 5*time.Second), ReadLocal); !errors.Is(err, ErrNotServing) {
		t.Errorf("local read on a cut-off follower: %v, want ErrNotServing", err)
	}
	// Writes go on without it.
	leader := c.waitLeader(f)
	c.register(leader, "w", 5)
	c.heal()
	c.poll("healed follower serves again", 20*time.Second, func() error { return c.nodes[f].node.Serving() })
	c.sameState("healed follower catches up", f)
}

// TestFence_FollowerThatCannotWriteItsLogStopsServing: the disk of a
// follower fills up. It keeps hearing heartbeats, but cannot append what
// the leader sends, so it falls behind; it must stop serving at once, and
// serve again once it can write and has caught up.
func TestFence_FollowerThatCannotWriteItsLogStopsServing(t *testing.T) {
	c := newCluster(t, 3)
	f := c.follower()
	leader := c.waitLeader(-1)
	c.nodes[f].logs.fail.Store(true)
	c.register(leader, "w", 20)
	c.poll("follower with a full disk stops serving", 10*time.Second, func() error {
		if c.nodes[f].node.Serving() == nil {
			return errors.New("still serving")
		}
		return nil
	})
	if got, want := c.nodes[f].node.applied(), c.nodes[leader].node.applied(); got >= want {
		t.Fatalf("follower applied %d, leader %d: the follower did not fall behind", got, want)
	}
	if c.nodes[f].node.Ready() {
		t.Error("follower that cannot write its log is ready")
	}
	c.nodes[f].logs.fail.Store(false)
	c.poll("follower serves again once it can write", 20*time.Second, func() error { return c.nodes[f].node.Serving() })
	c.sameState("follower catches up", f)
}

// TestRestriction_AcknowledgedOnlyWhenEveryServingBrokerHoldsIt suspends a
// participant while one follower cannot write its log and another is cut
// off. When Apply returns, every node either holds the suspension or does
// not serve.
func TestRestriction_AcknowledgedOnlyWhenEveryServingBrokerHoldsIt(t *testing.T) {
	c := newCluster(t, 5)
	leader := c.waitLeader(-1)
	c.register(leader, "p", 1)
	var stuck, cut int = -1, -1
	for i := range c.nodes {
		if i == leader {
			continue
		}
		if stuck < 0 {
			stuck = i
		} else if cut < 0 {
			cut = i
		}
	}
	for _, i := range []int{stuck, cut} {
		c.poll("the participant reached "+c.nodes[i].id, 10*time.Second, func() error {
			if c.status(i, "p0") != active {
				return errors.New("not yet")
			}
			return nil
		})
	}
	c.nodes[stuck].logs.fail.Store(true)
	c.partition(cut)
	// The leader still has a quorum: itself and the two other nodes.
	via := leader
	for i := range c.nodes {
		if i != leader && i != stuck && i != cut {
			via = i // through a follower: the forwarded path
		}
	}
	if _, _, err := c.nodes[via].node.Apply(ctxFor(t, 20*time.Second), statusCmd(t, "p0", suspended)); err != nil {
		t.Fatalf("suspend: %v", err)
	}
	for i, tn := range c.nodes {
		holds := c.status(i, "p0") == suspended
		serving := tn.node.Serving() == nil
		if !holds && serving {
			t.Errorf("%s serves without the acknowledged suspension (applied %d)", tn.id, tn.node.applied())
		}
	}
	if c.status(via, "p0") != suspended || c.status(c.waitLeader(-1), "p0") != suspended {
		t.Error("the suspension is not on the nodes that acknowledged it")
	}
}

// TestRestriction_RetryWaitsAgain: a restricting write retried with the
// same request id (after an unknown outcome) is replayed, and waits for
// every serving broker again: with a follower cut off, it is acknowledged
// only after the lease ran out for that follower.
func TestRestriction_RetryWaitsAgain(t *testing.T) {
	c := newCluster(t, 3)
	leader := c.waitLeader(-1)
	c.register(leader, "p", 1)
	cmd := statusCmd(t, "p0", suspended)
	cmd.RequestId = "suspend-p0"
	if _, _, err := c.nodes[leader].node.Apply(ctxFor(t, 10*time.Second), cmd); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(c.logs.String(), "restriction acknowledged after the fence's lease") {
		t.Fatal("the first suspension waited out the lease with every follower reachable")
	}
	f := c.follower()
	c.partition(f)
	if _, _, err := c.nodes[leader].node.Apply(ctxFor(t, 10*time.Second), cmd); err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("brokers=[%s]", c.nodes[f].id)
	for _, line := range strings.Split(c.logs.String(), "\n") {
		if strings.Contains(line, "restriction acknowledged after the fence's lease") && strings.Contains(line, want) {
			return
		}
	}
	t.Errorf("the retried suspension did not wait for the cut-off follower %s", c.nodes[f].id)
}

// TestForward_LeadershipLostMidForward: a follower forwards a write to a
// leader that loses its quorum before it can commit. The caller gets a
// retryable not-leader error (Unavailable), not a hang, not a second hop;
// the retry, with the same request id, applies the write once.
func TestForward_LeadershipLostMidForward(t *testing.T) {
	c := newCluster(t, 3)
	leader := c.waitLeader(-1)
	f := c.follower()
	c.partition(leader)
	cmd := registerCmd(t, "mid", "req-mid")
	_, _, err := c.nodes[f].node.Apply(ctxFor(t, 10*time.Second), cmd)
	if err == nil {
		// The follower may already have learnt the new leader.
		t.Log("write went through a new leader")
	} else if !retryable(err) || status.Code(StatusOf(err)) != codes.Unavailable {
		t.Fatalf("write forwarded to a leader losing its quorum: %v, want a retryable Unavailable", err)
	}
	c.heal()
	c.poll("the retry applies", 20*time.Second, func() error {
		_, _, err := c.nodes[f].node.Apply(ctxFor(t, 5*time.Second), cmd)
		return err
	})
	ps, err := c.nodes[c.waitLeader(-1)].node.FSM().Participants(0)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, p := range ps {
		if p.Id == "mid" {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("participant written %d times", n)
	}
}

// TestForward_DeposedLeaderNeverForwardsAgain: after a partition deposes the
// leader, a call another broker forwarded to it is answered Unavailable
// with the new leader's name, and not passed on.
func TestForward_DeposedLeaderNeverForwardsAgain(t *testing.T) {
	c := newCluster(t, 3)
	old := c.waitLeader(-1)
	c.partition(old)
	next := c.waitLeader(old)
	c.heal()
	c.poll("the deposed leader follows the new one", 20*time.Second, func() error {
		if id, _ := c.nodes[old].node.Leader(); id != c.nodes[next].id {
			return fmt.Errorf("it follows %q", id)
		}
		return nil
	})
	members := func() int {
		m, err := c.nodes[next].node.membership()
		if err != nil {
			t.Fatal(err)
		}
		return len(m)
	}
	before := members()
	ctx := metadata.NewIncomingContext(ctxFor(t, 5*time.Second), metadata.Pairs(ForwardedKey, "b9"))
	_, err := c.nodes[old].node.Join(ctx, &qhinv1.JoinRequest{NodeId: "b9", RaftAddr: "b9"})
	var le *LeaderError
	if !errors.As(err, &le) || le.LeaderID != c.nodes[next].id {
		t.Fatalf("forwarded join on the deposed leader: %v, want a LeaderError naming %s", err, c.nodes[next].id)
	}
	st := status.Convert(StatusOf(err))
	if st.Code() != codes.Unavailable {
		t.Errorf("code %v, want Unavailable", st.Code())
	}
	if h, ok := LeaderHintOf(st.Err()); !ok || h.LeaderId != c.nodes[next].id || h.LeaderAddr != c.nodes[next].grpcAddr {
		t.Errorf("leader hint %v, want %s at %s", h, c.nodes[next].id, c.nodes[next].grpcAddr)
	}
	if after := members(); after != before {
		t.Errorf("the forwarded join was passed on: %d members, was %d", after, before)
	}
}

// TestRejoin_SameAddressAfterLosingItsData: a broker is removed, loses its
// data and joins again at the same address; it catches up and serves.
func TestRejoin_SameAddressAfterLosingItsData(t *testing.T) {
	c := newCluster(t, 3)
	leader := c.waitLeader(-1)
	c.register(leader, "r", 10)
	f := c.follower()
	if err := c.nodes[leader].node.Remove(ctxFor(t, 10*time.Second), c.nodes[f].id); err != nil {
		t.Fatal(err)
	}
	c.kill(f)
	c.nodes[f].dir = t.TempDir()
	c.start(f)
	c.poll("the wiped broker joins and serves", 30*time.Second, func() error {
		if !c.nodes[f].node.Ready() {
			return fmt.Errorf("not ready: %v", c.nodes[f].node.Serving())
		}
		return nil
	})
	c.sameState("the rejoined broker holds the cluster's state", f)
}

// TestRestart_DamagedStateIsRebuilt restarts a follower after its fsm.db
// was deleted, truncated or had a byte flipped, with the log compacted
// behind a snapshot: the state is rebuilt from the snapshot and the log
// before the node serves, and equals the leader's.
func TestRestart_DamagedStateIsRebuilt(t *testing.T) {
	tests := []struct {
		name   string
		damage func(t *testing.T, path string, rec []byte)
	}{
		{"deleted", func(t *testing.T, path string, _ []byte) { os.Remove(path) }},
		{"truncated", func(t *testing.T, path string, _ []byte) { os.Truncate(path, 16<<10) }},
		{"status byte flipped", func(t *testing.T, path string, rec []byte) {
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			i := strings.Index(string(rec), "\x28\x02")
			flipped := []byte(string(rec))
			flipped[i+1] = 0x01
			if !strings.Contains(string(data), string(rec)) {
				t.Fatal("record not in the file")
			}
			os.WriteFile(path, []byte(strings.ReplaceAll(string(data), string(rec), string(flipped))), 0o600)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newCluster(t, 3)
			leader := c.waitLeader(-1)
			c.register(leader, "s", 40)
			if _, _, err := c.nodes[leader].node.Apply(ctxFor(t, 10*time.Second), statusCmd(t, "s7", suspended)); err != nil {
				t.Fatal(err)
			}
			f := c.follower()
			c.sameState("follower caught up", f)
			if err := c.nodes[f].node.Snapshot(); err != nil {
				t.Fatal(err)
			}
			p, err := c.nodes[f].node.FSM().Participant("s7")
			if err != nil {
				t.Fatal(err)
			}
			rec, _ := protoMarshal(p)
			c.kill(f)
			tt.damage(t, filepath.Join(c.nodes[f].dir, "fsm.db"), rec)
			c.start(f)
			c.poll("restarted follower serves", 30*time.Second, func() error { return c.nodes[f].node.Serving() })
			if got := c.status(f, "s7"); got != suspended {
				t.Errorf("s7 on the restarted follower: %v, want suspended", got)
			}
			c.sameState("restarted follower equals the leader", f)
		})
	}
}

// TestRestart_DamagedRaftLogIsAClearError: a truncated raft.db is refused
// with an error naming the file and the way to recover.
func TestRestart_DamagedRaftLogIsAClearError(t *testing.T) {
	c := newCluster(t, 3)
	c.register(c.waitLeader(-1), "d", 30)
	f := c.follower()
	c.kill(f)
	path := filepath.Join(c.nodes[f].dir, "raft.db")
	if err := os.Truncate(path, 12<<10); err != nil {
		t.Fatal(err)
	}
	tn := c.nodes[f]
	_, err := Open(Config{NodeID: tn.id, GRPCAddr: "127.0.0.1:1", DataDir: tn.dir, Source: tn.src, TrustDomain: testTD,
		Logger: c.log, transport: newInmem(tn.addr)})
	if err == nil {
		t.Fatal("opened a truncated raft.db")
	}
	for _, want := range []string{path, "truncated", "qhinctl cluster remove " + tn.id, "--join"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
}

// TestVersion_NewerCommandsWaitForEveryBroker: a broker that applies only
// version 1 commands holds back a version 2 command (FailedPrecondition
// naming it) until it is upgraded.
func TestVersion_NewerCommandsWaitForEveryBroker(t *testing.T) {
	c := newCluster(t, 3, func(i int, tn *testNode) {
		tn.fsm.MaxCommandVersion = 2
		if i == 2 {
			tn.fsm.MaxCommandVersion = 1
		}
	})
	newer := func() *qhinv1.Command {
		cmd := registerCmd(t, fmt.Sprintf("v%d", time.Now().UnixNano()), "")
		cmd.Version = 2
		return cmd
	}
	c.poll("every broker publishes its command version", 20*time.Second, func() error {
		brokers, err := c.nodes[0].node.FSM().Brokers()
		if err != nil {
			return err
		}
		for _, b := range brokers {
			if b.MaxCommandVersion == 0 {
				return fmt.Errorf("%s has not published", b.NodeId)
			}
		}
		return nil
	})
	leader := c.waitLeader(-1)
	_, _, err := c.nodes[leader].node.Apply(ctxFor(t, 10*time.Second), newer())
	if !errors.Is(err, ErrVersion) || !strings.Contains(err.Error(), "b3") {
		t.Fatalf("version 2 command with b3 on version 1: %v, want ErrVersion naming b3", err)
	}
	if st := status.Convert(StatusOf(err)); st.Code() != codes.FailedPrecondition {
		t.Errorf("code %v, want FailedPrecondition", st.Code())
	}
	// Version 1 commands still go through.
	c.register(leader, "old", 1)

	c.kill(2)
	c.nodes[2].fsm.MaxCommandVersion = 2
	c.start(2)
	c.poll("the upgraded broker publishes version 2 and the command goes through", 30*time.Second, func() error {
		_, _, err := c.nodes[c.waitLeader(-1)].node.Apply(ctxFor(t, 5*time.Second), newer())
		return err
	})
}

// TestVerify_DivergedFollowerReinstallsTheLeaderState: a follower whose
// state differs from the leader's at the same index (here: it refused a
// command the others applied, as an old broker would) notices when it
// compares digests, stops serving and reinstalls the leader's state.
func TestVerify_DivergedFollowerReinstallsTheLeaderState(t *testing.T) {
	c := newCluster(t, 3, func(i int, tn *testNode) {
		tn.fsm.MaxCommandVersion = 2
		if i == 2 {
			tn.fsm.MaxCommandVersion = 1
		}
	})
	leader := c.waitLeader(-1)
	if leader == 2 {
		c.nodes[2].node.raft.LeadershipTransfer().Error()
		leader = c.waitLeader(2)
	}
	// Propose past the version check, straight into the log.
	cmd := registerCmd(t, "v2only", "")
	cmd.Version = 2
	data, _ := fsm.Encode(cmd)
	if err := c.nodes[leader].node.raft.Apply(data, 5*time.Second).Error(); err != nil {
		t.Fatal(err)
	}
	c.poll("b3 applied the entry (refusing it)", 10*time.Second, func() error {
		if c.nodes[2].node.FSM().AppliedIndex() < c.nodes[leader].node.FSM().AppliedIndex() {
			return errors.New("behind")
		}
		return nil
	})
	err := c.nodes[2].node.Verify(ctxFor(t, 10*time.Second))
	if err == nil {
		t.Fatal("diverged follower verified")
	}
	c.poll("diverged follower reinstalls the leader's state", 30*time.Second, func() error {
		if c.status(2, "v2only") != active {
			return fmt.Errorf("v2only not there (serving: %v)", c.nodes[2].node.Serving())
		}
		return c.nodes[2].node.Serving()
	})
	c.sameState("reinstalled follower equals the leader", 2)
}

// TestClose_HeartbeatsAfterShutdownDoNotCrash restarts followers while the
// leader heartbeats them; a heartbeat handled after the stores closed used
// to panic ("failed to save current term: database not open").
func TestClose_HeartbeatsAfterShutdownDoNotCrash(t *testing.T) {
	c := newCluster(t, 3)
	for range 3 {
		f := c.follower()
		c.kill(f)
		c.start(f)
		c.poll("restarted follower serves", 20*time.Second, func() error { return c.nodes[f].node.Serving() })
	}
}

func TestService_RestoreRefusesAnotherTrustDomainUnlessForced(t *testing.T) {
	c := newCluster(t, 1)
	other := &fsmApplier{t: t}
	snap := other.snapshotWith("spiffe://other.test/participant/x1")
	_, err := c.nodes[0].node.RestoreSnapshot(ctxFor(t, 10*time.Second), strings.NewReader(string(snap)), false)
	if !errors.Is(err, ErrTrustDomain) || !strings.Contains(err.Error(), "other.test") {
		t.Fatalf("restore from other.test: %v, want ErrTrustDomain naming it", err)
	}
	if _, err := c.nodes[0].node.RestoreSnapshot(ctxFor(t, 10*time.Second), strings.NewReader(string(snap)), true); err != nil {
		t.Fatalf("forced restore: %v", err)
	}
	if _, err := c.nodes[0].node.FSM().Participant("x1"); err != nil {
		t.Errorf("forced restore did not restore: %v", err)
	}
	if _, err := c.nodes[0].node.RestoreSnapshot(ctxFor(t, 10*time.Second), strings.NewReader("garbage"), true); !errors.Is(err, ErrBadSnapshot) {
		t.Errorf("garbage: %v, want ErrBadSnapshot", err)
	}
}

var _ = context.Background
