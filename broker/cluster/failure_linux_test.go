package cluster

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/openqhin/openqhin/broker/fsm"
)

// stateFiles hands bbolt its state file and can make the writes of the file
// it opened last fail for real, with EBADF from the kernel: it puts a
// read-only descriptor of the same file in the place of bbolt's.
type stateFiles struct {
	mu   sync.Mutex
	last *os.File
	// refuse makes opening a state file fail, as a broken disk would.
	refuse atomic.Bool
}

func (s *stateFiles) open(path string, flag int, mode os.FileMode) (*os.File, error) {
	if s.refuse.Load() {
		return nil, errors.New("input/output error")
	}
	f, err := os.OpenFile(path, flag, mode)
	s.mu.Lock()
	s.last = f
	s.mu.Unlock()
	return f, err
}

func (s *stateFiles) breakWrites(t *testing.T) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ro, err := os.Open(s.last.Name())
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	if err := syscall.Dup3(int(ro.Fd()), int(s.last.Fd()), 0); err != nil {
		t.Fatal(err)
	}
	if _, err := s.last.WriteAt([]byte{0}, 1<<40); err == nil {
		t.Fatal("the state file still takes writes")
	}
}

// TestFence_FollowerThatCannotWriteItsStateStopsServingAndRecovers: the
// state file of a follower stops taking writes. Its state machine stops
// (no panic: in the development network every broker shares the process),
// the follower stops serving at once, reinstalls the leader's state through
// a fresh file, and serves again.
func TestFence_FollowerThatCannotWriteItsStateStopsServingAndRecovers(t *testing.T) {
	files := make([]*stateFiles, 3)
	c := newCluster(t, 3, func(i int, tn *testNode) {
		files[i] = &stateFiles{}
		tn.fsm.OpenFile = files[i].open
	})
	// Every broker's record is in place: a broker whose state stops can
	// still find the leader.
	c.poll("every broker published its record", 20*time.Second, func() error {
		for _, tn := range c.nodes {
			if b, err := tn.node.FSM().Brokers(); err != nil || len(b) != len(c.nodes) {
				return fmt.Errorf("%s knows %d brokers (%v)", tn.id, len(b), err)
			}
		}
		return nil
	})
	leader := c.waitLeader(-1)
	f := c.follower()
	files[f].refuse.Store(true) // no recovery until the disk is fixed
	files[f].breakWrites(t)
	t.Logf("broke the writes of %s (%s); leader %s", c.nodes[f].id, files[f].last.Name(), c.nodes[leader].id)
	c.register(leader, "w", 5)
	c.poll("follower whose state file fails stops serving", 10*time.Second, func() error {
		if err := c.nodes[f].node.Serving(); err == nil {
			return errors.New("still serving")
		}
		return nil
	})
	if err := c.nodes[f].node.Serving(); !errors.Is(err, fsm.ErrFailed) {
		t.Errorf("Serving = %v, want the state machine's failure", err)
	}
	files[f].refuse.Store(false)
	c.poll("it reinstalls the leader's state and serves again", 30*time.Second, func() error { return c.nodes[f].node.Serving() })
	c.sameState("recovered follower equals the leader", f)
	// The leader's state machine fails: it hands leadership over,
	// recovers the same way, and the cluster keeps taking writes.
	files[leader].breakWrites(t)
	c.poll("a write after the leader failed", 30*time.Second, func() error {
		_, _, err := c.nodes[c.waitLeader(-1)].node.Apply(ctxFor(t, 5*time.Second), registerCmd(t, "x", "req-x"))
		return err
	})
	c.poll("the failed leader recovers", 30*time.Second, func() error { return c.nodes[leader].node.Serving() })
	c.sameState("recovered former leader equals the leader", leader)
}
