package cluster

import (
	"io"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// A follower learns the leader's commit index only from AppendEntries (pure
// heartbeats carry none); the leader sends one at least every CommitTimeout.
// The fence records what each one said, as it arrives, and a follower
// serves only while a recent one (younger than the lease) named a commit
// index this node has applied. A follower whose disk is full keeps hearing
// heartbeats, but its applied index stays behind what the leader tells it:
// it stops serving within a lease.
//
// Two refinements make the rule sound across leader changes:
//   - every observation carries the highest commit index ever observed (the
//     high-water mark), not just its own: a new leader may at first
//     announce a commit index lower than its predecessor's;
//   - observations count only once the leader of their term has committed
//     an entry of that term (Raft §5.4.2): before that, a new leader does not
//     know the full commit index itself.

// witness is one AppendEntries that can vouch for this node's state.
type witness struct {
	at time.Time
	hw uint64 // high-water commit index as of this observation
}

type fence struct {
	lease time.Duration

	mu sync.Mutex
	// hw is the highest leader commit index ever observed.
	hw uint64
	// term is the term of the observations below; termMark is an index
	// known to hold an entry of term in the leader's log (0: none seen);
	// termCommitted is set once the leader's commit index reached it.
	term          uint64
	termMark      uint64
	termCommitted bool
	// witnesses of the current term, oldest first; pruned to the lease.
	witnesses []witness
}

func newFence(lease time.Duration) *fence { return &fence{lease: lease} }

// isHeartbeat matches the AppendEntries hashicorp/raft sends from its
// heartbeat loop: no entries, no log position, no commit index.
func isHeartbeat(a *raft.AppendEntriesRequest) bool {
	return len(a.Entries) == 0 && a.PrevLogEntry == 0 && a.PrevLogTerm == 0 && a.LeaderCommitIndex == 0
}

// observe records an AppendEntries request as it arrives.
func (f *fence) observe(a *raft.AppendEntriesRequest, now time.Time) {
	if isHeartbeat(a) {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	// A commit index from any leader, old or new, is a lower bound of what
	// is committed.
	f.hw = max(f.hw, a.LeaderCommitIndex)
	switch {
	case a.Term < f.term:
		return // a deposed leader vouches for nothing
	case a.Term > f.term:
		f.term, f.termMark, f.termCommitted, f.witnesses = a.Term, 0, false, f.witnesses[:0]
	}
	mark := func(idx uint64) {
		if idx > 0 && (f.termMark == 0 || idx < f.termMark) {
			f.termMark = idx
		}
	}
	if a.PrevLogTerm == a.Term {
		mark(a.PrevLogEntry)
	}
	for _, e := range a.Entries {
		if e.Term == a.Term {
			mark(e.Index)
			break
		}
	}
	if !f.termCommitted && f.termMark != 0 && a.LeaderCommitIndex >= f.termMark {
		f.termCommitted = true
	}
	if !f.termCommitted {
		return
	}
	if n := len(f.witnesses); n > 0 && f.witnesses[n-1].hw == f.hw {
		f.witnesses[n-1].at = now
	} else {
		f.witnesses = append(f.witnesses, witness{at: now, hw: f.hw})
	}
	f.prune(now)
}

func (f *fence) prune(now time.Time) {
	cut := 0
	for cut < len(f.witnesses)-1 && now.Sub(f.witnesses[cut].at) > f.lease {
		cut++
	}
	if cut > 0 {
		f.witnesses = append(f.witnesses[:0], f.witnesses[cut:]...)
	}
}

// fresh reports whether, as a follower in term, this node may serve having
// applied up to applied: some AppendEntries of this term, younger than the
// lease, named a commit index (high-water) this node has applied.
func (f *fence) fresh(term, applied uint64, now time.Time) (bool, string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.term != term || !f.termCommitted {
		return false, "no leader of the current term has vouched for this broker's state yet"
	}
	for i := len(f.witnesses) - 1; i >= 0; i-- {
		w := f.witnesses[i]
		if now.Sub(w.at) > f.lease {
			break
		}
		if w.hw <= applied {
			return true, ""
		}
	}
	if n := len(f.witnesses); n > 0 && now.Sub(f.witnesses[n-1].at) <= f.lease {
		return false, "this broker has not applied what the leader committed"
	}
	return false, "no word from the leader within the lease"
}

// highWater is the highest commit index this node has heard of.
func (f *fence) highWater() uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.hw
}

// observingTransport wraps a Raft transport: it shows the fence every
// AppendEntries this node receives, before Raft handles it, and stops
// passing heartbeats to Raft once the node shuts down (hashicorp/raft may
// otherwise handle one after its stores are closed).
type observingTransport struct {
	raft.Transport
	fence *fence

	out  chan raft.RPC
	stop chan struct{}
	done chan struct{}

	mu     sync.RWMutex
	closed bool
	once   sync.Once

	// pipelines are the open AppendEntries pipelines, closed with the
	// transport: hashicorp/raft can leave a replication goroutine blocked
	// in a pipeline whose responses nobody reads any more (after a step
	// down), and Raft's shutdown would wait for it forever.
	pmu             sync.Mutex
	pipelines       map[*trackedPipeline]struct{}
	pipelinesClosed bool
	// pipelineMaxAge ends a pipeline at its first send after this age,
	// so that its connection is replaced (zero: never).
	pipelineMaxAge time.Duration
}

type trackedPipeline struct {
	raft.AppendPipeline
	o    *observingTransport
	once sync.Once
	// expires is when the pipeline stops taking requests (zero: never);
	// Raft then replicates with single RPCs, which dial anew, and opens a
	// new pipeline.
	expires time.Time
}

// AppendEntries implements raft.AppendPipeline.
func (p *trackedPipeline) AppendEntries(args *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse) (raft.AppendFuture, error) {
	if !p.expires.IsZero() && time.Now().After(p.expires) {
		return nil, errConnAged
	}
	return p.AppendPipeline.AppendEntries(args, resp)
}

func (p *trackedPipeline) Close() error {
	var err error
	p.once.Do(func() {
		p.o.pmu.Lock()
		if p.o.pipelines != nil {
			delete(p.o.pipelines, p)
		}
		p.o.pmu.Unlock()
		err = p.AppendPipeline.Close()
	})
	return err
}

// AppendEntriesPipeline implements raft.Transport.
func (o *observingTransport) AppendEntriesPipeline(id raft.ServerID, target raft.ServerAddress) (raft.AppendPipeline, error) {
	p, err := o.Transport.AppendEntriesPipeline(id, target)
	if err != nil {
		return nil, err
	}
	t := &trackedPipeline{AppendPipeline: p, o: o}
	if o.pipelineMaxAge > 0 {
		t.expires = time.Now().Add(o.pipelineMaxAge)
	}
	o.pmu.Lock()
	defer o.pmu.Unlock()
	if o.pipelines == nil && o.pipelinesClosed {
		p.Close()
		return nil, raft.ErrTransportShutdown
	}
	if o.pipelines == nil {
		o.pipelines = map[*trackedPipeline]struct{}{}
	}
	o.pipelines[t] = struct{}{}
	return t, nil
}

func (o *observingTransport) closePipelines() {
	o.pmu.Lock()
	ps := make([]*trackedPipeline, 0, len(o.pipelines))
	for p := range o.pipelines {
		ps = append(ps, p)
	}
	o.pipelines, o.pipelinesClosed = nil, true
	o.pmu.Unlock()
	for _, p := range ps {
		p.Close()
	}
}

var (
	_ raft.Transport   = (*observingTransport)(nil)
	_ raft.WithClose   = (*observingTransport)(nil)
	_ raft.WithPreVote = (*observingTransport)(nil)
)

func newObservingTransport(t raft.Transport, f *fence) *observingTransport {
	o := &observingTransport{Transport: t, fence: f, out: make(chan raft.RPC), stop: make(chan struct{}), done: make(chan struct{})}
	go o.relay()
	return o
}

func (o *observingTransport) relay() {
	defer close(o.done)
	in := o.Transport.Consumer()
	for {
		select {
		case rpc, ok := <-in:
			if !ok {
				return
			}
			if a, ok := rpc.Command.(*raft.AppendEntriesRequest); ok {
				o.fence.observe(a, time.Now())
			}
			select {
			case o.out <- rpc:
			case <-o.stop:
				// Unanswered, as Raft leaves the RPCs it has not read when
				// it shuts down; the sender times out.
				return
			}
		case <-o.stop:
			return
		}
	}
}

// Consumer implements raft.Transport.
func (o *observingTransport) Consumer() <-chan raft.RPC { return o.out }

// SetHeartbeatHandler implements raft.Transport.
func (o *observingTransport) SetHeartbeatHandler(cb func(raft.RPC)) {
	if cb == nil {
		o.Transport.SetHeartbeatHandler(nil)
		return
	}
	o.Transport.SetHeartbeatHandler(func(rpc raft.RPC) {
		o.mu.RLock()
		defer o.mu.RUnlock()
		if o.closed {
			return // unanswered: the transport closes next
		}
		cb(rpc)
	})
}

// RequestPreVote implements raft.WithPreVote.
func (o *observingTransport) RequestPreVote(id raft.ServerID, target raft.ServerAddress, args *raft.RequestPreVoteRequest, resp *raft.RequestPreVoteResponse) error {
	pv, ok := o.Transport.(raft.WithPreVote)
	if !ok {
		return raft.ErrUnsupportedProtocol
	}
	return pv.RequestPreVote(id, target, args, resp)
}

// quiesce stops handing RPCs to Raft and waits for running heartbeat
// handlers, so that the stores can close. Close then closes the transport
// under it.
func (o *observingTransport) quiesce() {
	o.once.Do(func() {
		o.mu.Lock()
		o.closed = true
		o.mu.Unlock()
		close(o.stop)
		<-o.done
	})
}

// Close implements raft.WithClose.
func (o *observingTransport) Close() error {
	o.quiesce()
	o.closePipelines()
	if c, ok := o.Transport.(io.Closer); ok {
		return c.Close()
	}
	return nil
}
