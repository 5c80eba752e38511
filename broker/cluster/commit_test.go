package cluster

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/openqhin/openqhin/broker/fsm"
	qhinv1 "github.com/openqhin/openqhin/proto/qhin/v1"
)

// roundGate makes the leader's group commit coalesce chosen commands: it
// holds the round that registers participant "hold" until released, so that
// the commands applied meanwhile queue up and form the next round together.
type roundGate struct {
	held    chan struct{}
	release chan struct{}

	mu sync.Mutex
	// onRound, when set, is called with every round before it is proposed.
	onRound func([]*qhinv1.Command)
	// sizes are the rounds' sizes, in order.
	sizes []int
}

func newRoundGate() *roundGate {
	return &roundGate{held: make(chan struct{}, 1), release: make(chan struct{})}
}

func (g *roundGate) hook(cmds []*qhinv1.Command) {
	g.mu.Lock()
	f := g.onRound
	g.sizes = append(g.sizes, len(cmds))
	g.mu.Unlock()
	if f != nil {
		f(cmds)
	}
	for _, c := range cmds {
		if c.Type != qhinv1.CommandType_COMMAND_TYPE_REGISTER_PARTICIPANT {
			continue
		}
		var p qhinv1.Participant
		if proto.Unmarshal(c.Payload, &p) == nil && p.Id == "hold" {
			g.held <- struct{}{}
			<-g.release
		}
	}
}

// gatedCluster is a three-node cluster whose leaders coalesce through g.
func gatedCluster(t *testing.T, g *roundGate) *testCluster {
	return newCluster(t, 3, func(_ int, tn *testNode) { tn.beforeRound = g.hook })
}

type applyResult struct {
	value proto.Message
	index uint64
	err   error
}

// coalesce applies cmds[i] through node via[i], all in one round on the
// leader: it holds the leader's queue behind a round of its own, waits
// until every command is queued, and lets the rounds go. It fails the test
// unless the commands shared one Raft entry.
func (c *testCluster) coalesce(g *roundGate, via []int, cmds []*qhinv1.Command) []applyResult {
	c.t.Helper()
	leader := c.waitLeader(-1)
	holdDone := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_, _, err := c.nodes[leader].node.Apply(ctx, registerCmd(c.t, "hold", ""))
		holdDone <- err
	}()
	select {
	case <-g.held:
	case <-time.After(20 * time.Second):
		c.t.Fatalf("phase %q: timed out after 20s", "the holding round reaches the leader's queue")
	}
	out := make([]applyResult, len(cmds))
	var wg sync.WaitGroup
	for i, cmd := range cmds {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			v, idx, err := c.nodes[via[i]].node.Apply(ctx, cmd)
			out[i] = applyResult{v, idx, err}
		})
	}
	c.poll("every command waits in the leader's queue", 20*time.Second, func() error {
		if q := c.nodes[leader].node.commits.queued(); q < len(cmds) {
			return fmt.Errorf("%d of %d queued", q, len(cmds))
		}
		return nil
	})
	close(g.release)
	wg.Wait()
	if err := <-holdDone; err != nil {
		c.t.Fatalf("holding round: %v", err)
	}
	g.mu.Lock()
	sizes := slices.Clone(g.sizes)
	g.mu.Unlock()
	if !slices.Contains(sizes, len(cmds)) {
		c.t.Fatalf("rounds of %v commands: the %d commands were not coalesced into one", sizes, len(cmds))
	}
	var index uint64
	for i, r := range out {
		if r.err != nil {
			continue // a refused command reports no index
		}
		if index == 0 {
			index = r.index
		}
		if r.index != index {
			c.t.Fatalf("command %d committed at index %d, another at %d: not one coalesced entry", i, r.index, index)
		}
	}
	return out
}

// TestGroupCommit_EachWriteGetsItsOwnResult: three writes, through the
// leader and both followers, coalesce into one entry; one of them is
// refused. The others are applied with their own values, and the refused
// one gets its own error — the code and the message it gets alone — also
// across the forwarding hop.
func TestGroupCommit_EachWriteGetsItsOwnResult(t *testing.T) {
	g := newRoundGate()
	c := gatedCluster(t, g)
	leader := c.waitLeader(-1)
	c.register(leader, "dup", 1) // participant dup0
	var followers []int
	for i := range c.nodes {
		if i != leader {
			followers = append(followers, i)
		}
	}
	_, _, alone := c.nodes[followers[0]].node.Apply(ctxFor(t, 10*time.Second), registerCmd(t, "dup0", ""))
	if alone == nil {
		t.Fatal("registering dup0 again alone was not refused")
	}

	out := c.coalesce(g, []int{leader, followers[0], followers[1]},
		[]*qhinv1.Command{registerCmd(t, "a", ""), registerCmd(t, "dup0", ""), registerCmd(t, "b", "")})
	for i, id := range []string{"a", "", "b"} {
		if id == "" {
			continue
		}
		if out[i].err != nil {
			t.Fatalf("register %s: %v", id, out[i].err)
		}
		if p, ok := out[i].value.(*qhinv1.Participant); !ok || p.Id != id || p.Status != active {
			t.Errorf("register %s returned %v", id, out[i].value)
		}
	}
	err := out[1].err
	if st := status.Convert(StatusOf(err)); st.Code() != codes.AlreadyExists {
		t.Errorf("refused write in a batch: %v (code %v), want AlreadyExists", err, st.Code())
	}
	if got, want := status.Convert(StatusOf(err)).Message(), status.Convert(StatusOf(alone)).Message(); got != want {
		t.Errorf("refused write in a batch says %q, alone %q", got, want)
	}
	for _, id := range []string{"a", "b"} {
		if got := c.status(leader, id); got != active {
			t.Errorf("participant %s: status %v on the leader", id, got)
		}
	}
}

// TestGroupCommit_RetryOfACoalescedWriteAppliesOnce: writes coalesced into
// one entry keep their request ids — twice the same request in one batch,
// a refused one — and a retry of each replays its result instead of
// applying again.
func TestGroupCommit_RetryOfACoalescedWriteAppliesOnce(t *testing.T) {
	g := newRoundGate()
	c := gatedCluster(t, g)
	leader := c.waitLeader(-1)
	c.register(leader, "dup", 1)
	f := c.follower()
	cmds := []*qhinv1.Command{registerCmd(t, "x", "req-x"), registerCmd(t, "x", "req-x"), registerCmd(t, "dup0", "req-dup")}
	out := c.coalesce(g, []int{leader, f, leader}, cmds)
	for i := range 2 {
		if out[i].err != nil {
			t.Fatalf("register x (copy %d): %v", i, out[i].err)
		}
	}
	if !proto.Equal(out[0].value, out[1].value) {
		t.Errorf("the same request in one batch gave %v and %v", out[0].value, out[1].value)
	}
	if !errors.Is(out[2].err, fsm.ErrAlreadyExists) && status.Code(out[2].err) != codes.AlreadyExists {
		t.Fatalf("register dup0: %v, want already exists", out[2].err)
	}

	for _, via := range []int{leader, f} {
		v, _, err := c.nodes[via].node.Apply(ctxFor(t, 10*time.Second), cmds[0])
		if err != nil {
			t.Fatalf("retry of req-x through %s: %v", c.nodes[via].id, err)
		}
		if !proto.Equal(v, out[0].value) {
			t.Errorf("retry of req-x through %s gave %v, first %v", c.nodes[via].id, v, out[0].value)
		}
		_, _, err = c.nodes[via].node.Apply(ctxFor(t, 10*time.Second), cmds[2])
		if status.Code(StatusOf(err)) != codes.AlreadyExists {
			t.Errorf("retry of req-dup through %s: %v, want already exists", c.nodes[via].id, err)
		}
	}
	ps, err := c.nodes[leader].node.FSM().Participants(0)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, p := range ps {
		if p.Id == "x" {
			n++
		}
	}
	if n != 1 {
		t.Errorf("participant x stored %d times", n)
	}
}

// TestGroupCommit_RestrictionInABatchStillWaits: a suspension coalesced with
// a registration, while a follower is cut off. The suspension returns only
// when every broker holds it or cannot serve (here: after the fence's lease
// for the cut-off follower); the registration, which withdraws nothing,
// does not wait for that.
func TestGroupCommit_RestrictionInABatchStillWaits(t *testing.T) {
	g := newRoundGate()
	c := gatedCluster(t, g)
	leader := c.waitLeader(-1)
	c.register(leader, "p", 1)
	f := c.follower()
	c.poll("the participant reached the follower", 10*time.Second, func() error {
		if c.status(f, "p0") != active {
			return errors.New("not yet")
		}
		return nil
	})
	c.partition(f)
	out := c.coalesce(g, []int{leader, leader}, []*qhinv1.Command{statusCmd(t, "p0", suspended), registerCmd(t, "q", "")})
	for i, r := range out {
		if r.err != nil {
			t.Fatalf("command %d: %v", i, r.err)
		}
	}
	for i, tn := range c.nodes {
		if c.status(i, "p0") != suspended && tn.node.Serving() == nil {
			t.Errorf("%s serves without the acknowledged suspension", tn.id)
		}
	}
	waited := 0
	want := fmt.Sprintf("index=%d brokers=[%s]", out[0].index, c.nodes[f].id)
	for _, line := range strings.Split(c.logs.String(), "\n") {
		if strings.Contains(line, "restriction acknowledged after the fence's lease") && strings.Contains(line, want) {
			waited++
		}
	}
	if waited != 1 {
		t.Errorf("%d writes of the batch waited out the lease for the cut-off follower; want 1 (the suspension)", waited)
	}
}

// TestGroupCommit_LeadershipLostMidBatch: the leader is cut off just as it
// proposes a coalesced batch. Every write in it gets a retryable not-leader
// error (Unavailable) — none hangs, none is reported applied — and each,
// retried with its request id, is applied once.
func TestGroupCommit_LeadershipLostMidBatch(t *testing.T) {
	g := newRoundGate()
	c := gatedCluster(t, g)
	leader := c.waitLeader(-1)
	var once sync.Once
	g.mu.Lock()
	g.onRound = func(cmds []*qhinv1.Command) {
		if len(cmds) == 3 {
			once.Do(func() { c.partition(leader) })
		}
	}
	g.mu.Unlock()
	cmds := []*qhinv1.Command{registerCmd(t, "m1", "req-m1"), registerCmd(t, "m2", "req-m2"), registerCmd(t, "m3", "req-m3")}
	var wg sync.WaitGroup
	errs := make([]error, len(cmds))
	holdErr := make(chan error, 1)
	go func() {
		_, _, err := c.nodes[leader].node.Apply(ctxFor(t, 30*time.Second), registerCmd(t, "hold", ""))
		holdErr <- err
	}()
	select {
	case <-g.held:
	case <-time.After(20 * time.Second):
		t.Fatalf("phase %q: timed out after 20s", "the holding round reaches the leader's queue")
	}
	for i, cmd := range cmds {
		wg.Go(func() { _, _, errs[i] = c.nodes[leader].node.Apply(ctxFor(t, 30*time.Second), cmd) })
	}
	c.poll("every command waits in the leader's queue", 20*time.Second, func() error {
		if q := c.nodes[leader].node.commits.queued(); q < len(cmds) {
			return fmt.Errorf("%d of %d queued", q, len(cmds))
		}
		return nil
	})
	close(g.release)
	wg.Wait()
	<-holdErr
	for i, err := range errs {
		if !retryable(err) || status.Code(StatusOf(err)) != codes.Unavailable {
			t.Errorf("write %d of a batch whose leader was cut off: %v, want a retryable Unavailable", i, err)
		}
	}
	c.heal()
	next := c.waitLeader(-1)
	for _, cmd := range cmds {
		c.poll("the retry applies", 20*time.Second, func() error {
			_, _, err := c.nodes[next].node.Apply(ctxFor(t, 5*time.Second), cmd)
			return err
		})
	}
	ps, err := c.nodes[c.waitLeader(-1)].node.FSM().Participants(0)
	if err != nil {
		t.Fatal(err)
	}
	count := map[string]int{}
	for _, p := range ps {
		count[p.Id]++
	}
	for _, id := range []string{"m1", "m2", "m3"} {
		if count[id] != 1 {
			t.Errorf("participant %s stored %d times", id, count[id])
		}
	}
}
