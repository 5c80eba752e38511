package cluster

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/openqhin/openqhin/broker/fsm"
	qhinv1 "github.com/openqhin/openqhin/proto/qhin/v1"
)

// Group commit. Every write is one replication round: the leader appends it
// to its log, a quorum appends it, the leader applies it. Writes proposed
// one by one queue behind each other in those rounds, and each pays for its
// own log entry, encoding, disk write and state file transaction. On the
// leader, single commands (directory writes, broker records, whatever a
// caller proposes alone) therefore go through one queue: while a round is
// in flight, the commands that arrive wait; when it is done, everything
// waiting goes into the next round as one batch entry (fsm's batch command,
// applied in one transaction, one result per command). There is no timer:
// a lone write is proposed at once, as itself, and batches form only when
// writes arrive faster than rounds complete — the natural batching of etcd's
// and rqlite's proposal queues.
//
// Nothing about a write changes for its caller: its result is its own (the
// state machine returns each command's value or error as if applied alone),
// its request id is remembered and replayed on its own, a restricting
// write still waits for every serving broker, and a round that fails —
// leadership lost, Raft shut down, the state machine failed — fails every
// write in it with the same error (not-leader stays retryable).

const (
	// maxGroupCommands and maxGroupBytes bound one coalesced entry, so that
	// it stays below the 1 MiB a single request may carry (pki's
	// DefaultMaxRequestBytes): a batch entry is never larger than a write a
	// caller could have sent itself. A command larger than the byte bound
	// is proposed alone.
	maxGroupCommands = 1000
	maxGroupBytes    = 1<<20 - 16<<10
	// groupRounds is how many coalesced rounds may be in flight at once.
	// One: the commands that arrive while a round is in flight form the
	// next one, the fullest batches for a given load. Two were measured
	// too (BenchmarkApply_16Writers, qhinctl bench raft): the second round
	// starts with whatever has just arrived, rounds get smaller, and each
	// costs the same log syncs on every broker — fewer writes per second,
	// more CPU per write. Bulk batches (a caller's own) do not wait here.
	groupRounds = 1
)

// proposal is a single command waiting for its round.
type proposal struct {
	ctx  context.Context
	cmd  *qhinv1.Command
	data []byte
	done chan proposalResult // buffered: the round never waits for the caller
}

type proposalResult struct {
	res appliedCommand
	err error
}

// groupCommit is the leader's queue of single commands.
type groupCommit struct {
	n     *Node
	wake  chan struct{}
	slots chan struct{} // one per round in flight

	mu    sync.Mutex
	queue []*proposal

	// rounds and commands count what was proposed.
	rounds, commands atomic.Uint64

	// beforeRound, when set (tests), is called with each round's commands
	// before it is proposed.
	beforeRound func([]*qhinv1.Command)
}

func newGroupCommit(n *Node) *groupCommit {
	return &groupCommit{n: n, wake: make(chan struct{}, 1), slots: make(chan struct{}, groupRounds)}
}

// GroupCommits returns how many group commit rounds this node has proposed
// as leader, and how many single commands they held.
func (n *Node) GroupCommits() (rounds, commands uint64) {
	return n.commits.rounds.Load(), n.commits.commands.Load()
}

// apply queues a single command for the next round and waits for its
// result. A caller whose context ends before its round is proposed is
// dropped from the queue; one whose round is in flight gets the context's
// error, and the outcome of its write is unknown (its request id makes a
// retry safe).
func (g *groupCommit) apply(ctx context.Context, cmd *qhinv1.Command, data []byte) (appliedCommand, error) {
	p := &proposal{ctx: ctx, cmd: cmd, data: data, done: make(chan proposalResult, 1)}
	g.mu.Lock()
	g.queue = append(g.queue, p)
	g.mu.Unlock()
	select {
	case g.wake <- struct{}{}:
	default:
	}
	select {
	case r := <-p.done:
		return r.res, r.err
	case <-ctx.Done():
		return appliedCommand{}, ctx.Err()
	case <-g.n.stop:
		return appliedCommand{}, ErrShutdown
	}
}

// queued is the number of commands waiting for a round.
func (g *groupCommit) queued() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.queue)
}

// run proposes rounds until the node stops: whenever a round slot is free
// and commands wait, it takes them.
func (g *groupCommit) run() {
	for {
		select {
		case <-g.wake:
		case <-g.n.stop:
			g.fail(ErrShutdown)
			return
		}
		for {
			select {
			case g.slots <- struct{}{}:
			case <-g.n.stop:
				g.fail(ErrShutdown)
				return
			}
			round := g.take()
			if len(round) == 0 {
				<-g.slots
				break
			}
			g.rounds.Add(1)
			g.commands.Add(uint64(len(round)))
			g.n.goFunc(func() {
				defer func() { <-g.slots }()
				g.commit(round)
			})
		}
	}
}

// take removes the next round's commands from the queue: every waiting
// command whose caller still waits, within the bounds of one entry.
func (g *groupCommit) take() []*proposal {
	g.mu.Lock()
	defer g.mu.Unlock()
	var (
		round []*proposal
		size  int
		i     int
	)
	for ; i < len(g.queue); i++ {
		p := g.queue[i]
		if p.ctx.Err() != nil {
			continue // its caller has gone
		}
		if len(round) > 0 && (len(round) == maxGroupCommands || size+len(p.data)+8 > maxGroupBytes) {
			break
		}
		round = append(round, p)
		size += len(p.data) + 8 // the field's tag and length
	}
	rest := copy(g.queue, g.queue[i:])
	clear(g.queue[rest:])
	g.queue = g.queue[:rest]
	if rest > 0 {
		select {
		case g.wake <- struct{}{}:
		default:
		}
	}
	return round
}

// fail answers every queued command with err.
func (g *groupCommit) fail(err error) {
	g.mu.Lock()
	queue := g.queue
	g.queue = nil
	g.mu.Unlock()
	for _, p := range queue {
		p.done <- proposalResult{err: err}
	}
}

// commit proposes one round and hands each command its result.
func (g *groupCommit) commit(round []*proposal) {
	if g.beforeRound != nil {
		cmds := make([]*qhinv1.Command, len(round))
		for i, p := range round {
			cmds[i] = p.cmd
		}
		g.beforeRound(cmds)
	}
	timeout := defaultApplyTimeout
	if len(round) == 1 {
		p := round[0]
		res, err := g.n.propose(p.data, timeoutOf(p.ctx))
		p.done <- proposalResult{res, err}
		return
	}
	for _, p := range round {
		if dl, ok := p.ctx.Deadline(); ok {
			timeout = max(timeout, time.Until(dl))
		}
	}
	results, err := g.n.proposeBatch(round, timeout)
	for i, p := range round {
		if err != nil {
			p.done <- proposalResult{err: err}
		} else {
			p.done <- results[i]
		}
	}
}

// proposeBatch commits the round's commands as one batch entry and returns
// each command's own result.
func (n *Node) proposeBatch(round []*proposal, timeout time.Duration) ([]proposalResult, error) {
	cmds := make([]*qhinv1.Command, len(round))
	for i, p := range round {
		cmds[i] = p.cmd
	}
	// No request id of its own: each command is remembered under its own.
	// Codes only: the values come back live, from Result.Items.
	batch, err := fsm.NewCodesOnlyBatch("", time.Now(), cmds)
	if err != nil {
		return nil, err
	}
	data, err := fsm.Encode(batch)
	if err != nil {
		return nil, err
	}
	f := n.raft.Apply(data, timeout)
	if err := f.Error(); err != nil {
		return nil, n.raftError(err)
	}
	r, ok := f.Response().(*fsm.Result)
	if !ok || r == nil {
		return nil, fmt.Errorf("entry %d produced no result", f.Index())
	}
	if r.Err != nil {
		return nil, r.Err
	}
	if len(r.Items) != len(round) {
		return nil, fmt.Errorf("entry %d: a batch of %d commands gave %d results", r.Index, len(round), len(r.Items))
	}
	out := make([]proposalResult, len(round))
	for i, it := range r.Items {
		out[i] = proposalResult{res: appliedCommand{value: it.Value, index: r.Index, restricts: it.Restricts}, err: it.Err}
	}
	return out, nil
}

// propose commits one encoded command as its own entry and waits until it
// is applied here.
func (n *Node) propose(data []byte, timeout time.Duration) (appliedCommand, error) {
	f := n.raft.Apply(data, timeout)
	if err := f.Error(); err != nil {
		return appliedCommand{}, n.raftError(err)
	}
	r, ok := f.Response().(*fsm.Result)
	if !ok || r == nil {
		return appliedCommand{}, fmt.Errorf("entry %d produced no result", f.Index())
	}
	return appliedCommand{value: r.Value, index: r.Index, restricts: r.Restricts}, r.Err
}
