package cluster

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/openqhin/openqhin/broker/fsm"
	qhinv1 "github.com/openqhin/openqhin/proto/qhin/v1"
)

// The benchmarks run a three-node cluster in this process on raft's
// in-memory transport, with the real raft-boltdb log and bbolt state on
// disk and the production Raft timers: the cost of Raft and storage without
// gRPC or TLS. They report acknowledged writes (entries) per second.

func benchCluster(b *testing.B, opts ...func(int, *testNode)) *testCluster {
	return newCluster(b, 3, append([]func(int, *testNode){func(_ int, tn *testNode) {
		tn.heartbeat, tn.lease = DefaultHeartbeatTimeout, DefaultLeaderLeaseTimeout
	}}, opts...)...)
}

// BenchmarkApply_16Writers: 16 writers each propose one command at a time
// on the leader, through group commit (the production path) and with every
// command its own entry (as before group commit). It reports acknowledged
// writes per second and, grouped, the commands per Raft entry.
func BenchmarkApply_16Writers(b *testing.B) {
	for _, mode := range []struct {
		name    string
		grouped bool
	}{{"grouped", true}, {"entry-per-write", false}} {
		b.Run(mode.name, func(b *testing.B) {
			c := benchCluster(b, func(_ int, tn *testNode) { tn.noGroupCommit = !mode.grouped })
			leader := c.nodes[c.waitLeader(-1)].node
			rounds0, cmds0 := leader.GroupCommits()
			var seq, retries atomic.Int64
			per := b.N/16 + 1
			b.ResetTimer()
			start := time.Now()
			var wg sync.WaitGroup
			for range 16 {
				wg.Go(func() {
					for range per {
						cmd := registerCmd(b, fmt.Sprintf("b%d", seq.Add(1)), "")
						c.applyRetrying(cmd, &retries)
					}
				})
			}
			wg.Wait()
			b.ReportMetric(float64(per*16)/time.Since(start).Seconds(), "writes/s")
			b.ReportMetric(float64(retries.Load()), "retries")
			if rounds, cmds := leader.GroupCommits(); rounds > rounds0 {
				b.ReportMetric(float64(cmds-cmds0)/float64(rounds-rounds0), "writes/entry")
			}
		})
	}
}

// applyRetrying applies cmd on the leader, again on the next leader when
// leadership moved (the in-memory transport has no fast path for
// heartbeats, so a follower stuck on a slow disk can depose the leader).
func (c *testCluster) applyRetrying(cmd *qhinv1.Command, retries *atomic.Int64) {
	for {
		leader := -1
		for i, tn := range c.nodes {
			if tn.node != nil && tn.node.IsLeader() {
				leader = i
			}
		}
		if leader >= 0 {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			_, _, err := c.nodes[leader].node.Apply(ctx, cmd)
			cancel()
			if err == nil {
				return
			}
			if !retryable(err) {
				c.t.Error(err)
				return
			}
		}
		retries.Add(1)
		time.Sleep(10 * time.Millisecond)
	}
}

// BenchmarkApply_Batch2000: one writer proposes batches of 2,000
// registrations, one Raft entry each.
func BenchmarkApply_Batch2000(b *testing.B) {
	c := benchCluster(b)
	const size = 2000
	seq := 0
	var retries atomic.Int64
	b.ResetTimer()
	start := time.Now()
	for range b.N {
		cmds := make([]*qhinv1.Command, size)
		for i := range cmds {
			seq++
			cmds[i] = registerCmd(b, fmt.Sprintf("b%d", seq), "")
		}
		batch, err := fsm.NewCodesOnlyBatch(fmt.Sprintf("batch-%d", seq), time.Now(), cmds)
		if err != nil {
			b.Fatal(err)
		}
		c.applyRetrying(batch, &retries)
	}
	b.ReportMetric(float64(b.N*size)/time.Since(start).Seconds(), "entries/s")
	b.ReportMetric(float64(retries.Load()), "retries")
}
