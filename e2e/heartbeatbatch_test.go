package e2e

import (
	"testing"
	"time"

	pc "github.com/raftingest/raftingest/internal/proccluster"
)

// TestProcess_HeartbeatsBatched: in a 3-node cluster of real processes, once every member runs this
// build (advertising command version 4) and every Raft server is a member, the leader commits the
// members' heartbeats as heartbeat-batch entries and no longer one entry per heartbeat; every node
// applies them and every member stays healthy. (-ring.heartbeat-period 200ms caps the batch window
// at 50ms.)
func TestProcess_HeartbeatsBatched(t *testing.T) {
	skipShort(t)
	c := pc.New(t, fastFlags...)
	a := c.Start("a", "-bootstrap")
	waitActive(t, c, a.GRPCAddr, "a")
	b := c.Start("b", "-join", a.GRPCAddr)
	waitActive(t, c, a.GRPCAddr, "a", "b")
	cc := c.Start("c", "-join", a.GRPCAddr)
	waitActive(t, c, a.GRPCAddr, "a", "b", "c")
	applied := func(n *pc.Node, op string) float64 {
		return metricOf(t, n, `raftingest_raft_fsm_apply_total{code="ok",op="`+op+`"}`)
	}
	// The heartbeats of c's first moments (a Raft server not registered yet) were single entries.
	time.Sleep(time.Second)
	var singles, batches [3]float64
	for i, n := range []*pc.Node{a, b, cc} {
		singles[i], batches[i] = applied(n, "heartbeat"), applied(n, "heartbeat-batch")
	}
	time.Sleep(3 * time.Second) // 45 heartbeats of 3 members at 200ms
	for i, n := range []*pc.Node{a, b, cc} {
		s, bt := applied(n, "heartbeat")-singles[i], applied(n, "heartbeat-batch")-batches[i]
		t.Logf("%s applied %v single heartbeats and %v batches in 3s", n.ID, s, bt)
		if s != 0 || bt <= 0 {
			t.Errorf("%s applied %v single heartbeats and %v heartbeat batches in 3s; want batches only", n.ID, s, bt)
		}
	}
	waitActive(t, c, b.GRPCAddr, "a", "b", "c")
}
