package broker

import (
	"fmt"
	"sync"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// inflight caps the calls of one kind each initiator has running at this
// broker. The map holds only initiators with calls running, so its size is
// bounded by the calls in flight.
type inflight struct {
	max  int
	what string // "queries", "retrievals"
	flag string // the command-line flag that sets max

	mu sync.Mutex
	n  map[string]int
}

func newInflight(max int, what, flag string) *inflight {
	return &inflight{max: max, what: what, flag: flag, n: map[string]int{}}
}

// acquire counts one more call of initiator, or refuses it with
// ResourceExhausted naming the limit. The returned release must be called
// once the call ends.
func (f *inflight) acquire(initiator string) (release func(), err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.n[initiator] >= f.max {
		return nil, status.Error(codes.ResourceExhausted,
			fmt.Sprintf("%s in flight per initiator: participant %s has %d running, the limit (%s); retry when one ends", f.what, initiator, f.max, f.flag))
	}
	f.n[initiator]++
	var once sync.Once
	return func() {
		once.Do(func() {
			f.mu.Lock()
			defer f.mu.Unlock()
			if f.n[initiator]--; f.n[initiator] <= 0 {
				delete(f.n, initiator)
			}
		})
	}, nil
}
