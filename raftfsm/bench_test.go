package raftfsm

import (
	"slices"
	"testing"
	"time"

	"github.com/raftingest/raftingest/ringstate"
)

// BenchmarkCommitLatency measures the commit latency a proposer sees on a 3-node cluster over
// loopback TCP with fsync'd bbolt logs: a heartbeat applied on the leader, and one applied on a
// follower (forwarded over gRPC to the leader, so one more round trip). It reports the median and
// the 99th percentile. Heartbeat batching is off (-ring.heartbeat-batch-window=0): a batched
// heartbeat waits for its window (500 ms by default) before it is proposed, which would measure the
// window, not the commit; every other command is proposed at once, as these are.
//
//	go test -run '^$' -bench CommitLatency -benchtime 300x -count 5 ./raftfsm/ | tee new.txt
//	benchstat old.txt new.txt
func BenchmarkCommitLatency(b *testing.B) {
	c := newCluster(b)
	c.cfg.HeartbeatBatchWindow = 0
	c.cluster(3)
	for _, via := range []string{"leader", "follower"} {
		b.Run("via="+via, func(b *testing.B) {
			n := c.leader()
			if via == "follower" {
				n = c.follower()
			}
			cmd := ringstate.Command{Op: ringstate.OpHeartbeat, Member: ringstate.MemberID(n.id)}
			ctx := ctxT(b, 10*time.Minute)
			lat := make([]time.Duration, 0, 1024)
			b.ReportAllocs()
			for b.Loop() {
				start := time.Now()
				if _, err := n.node.Apply(ctx, cmd); err != nil {
					b.Fatal(err)
				}
				lat = append(lat, time.Since(start))
			}
			slices.Sort(lat)
			q := func(p float64) float64 {
				return float64(lat[int(p*float64(len(lat)-1))]) / float64(time.Millisecond)
			}
			b.ReportMetric(q(0.50), "p50-ms")
			b.ReportMetric(q(0.99), "p99-ms")
		})
	}
}
