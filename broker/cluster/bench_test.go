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
// disk: the cost of Raft and storage without gRPC or TLS. They report
// acknowledged writes (entries) per second.

// BenchmarkApply_16Writers: 16 writers each propose one command at a time
// on the leader.
func BenchmarkApply_16Writers(b *testing.B) {
	c := newCluster(b, 3)
	node := c.nodes[c.waitLeader(-1)].node
	var seq atomic.Int64
	per := b.N/16 + 1
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			for range per {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				if _, _, err := node.Apply(ctx, registerCmd(b, fmt.Sprintf("b%d", seq.Add(1)), "")); err != nil {
					b.Error(err)
				}
				cancel()
			}
		})
	}
	wg.Wait()
	b.ReportMetric(float64(per*16)/time.Since(start).Seconds(), "writes/s")
}

// BenchmarkApply_Batch2000: one writer proposes batches of 2,000
// registrations, one Raft entry each.
func BenchmarkApply_Batch2000(b *testing.B) {
	c := newCluster(b, 3)
	node := c.nodes[c.waitLeader(-1)].node
	const size = 2000
	seq := 0
	b.ResetTimer()
	start := time.Now()
	for range b.N {
		cmds := make([]*qhinv1.Command, size)
		for i := range cmds {
			seq++
			cmds[i] = registerCmd(b, fmt.Sprintf("b%d", seq), "")
		}
		batch, err := fsm.NewBatch("", time.Now(), cmds)
		if err != nil {
			b.Fatal(err)
		}
		if _, _, err := node.Apply(ctxFor(b, 30*time.Second), batch); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*size)/time.Since(start).Seconds(), "entries/s")
}
