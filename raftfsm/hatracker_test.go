package raftfsm

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/raftingest/raftingest/ringstate"
)

// TestCluster_HATracker_RacingElectionsOneWinner: on a real 3-node Raft cluster, two distributors
// (two members, one of them a follower forwarding to the leader) race to elect different replicas
// of the same clusters. For every cluster exactly one election is granted, the other is refused
// with ErrHAReplicaElected naming the winner, every node holds the same entries, and the entries
// survive a restart from a snapshot. Then the elected replica is failed over only after the
// failover timeout in ring time, and the leader's GC removes idle entries.
func TestCluster_HATracker_RacingElectionsOneWinner(t *testing.T) {
	c := newCluster(t)
	c.cfg.SnapshotThreshold = 8
	c.cfg.TrailingLogs = 2
	c.cfg.SnapshotInterval = 50 * time.Millisecond
	nodes := c.cluster(3)
	for _, n := range nodes {
		if !poll(t, 10*time.Second, func() bool { return n.node.HAAvailable() == nil }) {
			t.Fatalf("%s: HA tracker unavailable: %v", n.id, n.node.HAAvailable())
		}
	}
	a, b := c.leader(), c.follower()
	const clusters = 8
	const failover = time.Hour
	type result struct {
		e   ringstate.HAReplica
		err error
	}
	res := make([][2]result, clusters)
	var wg sync.WaitGroup
	for i := range clusters {
		for side, via := range []*testNode{a, b} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				ctx := ctxT(t, 20*time.Second)
				e, err := via.node.ElectHAReplica(ctx, "tenant", fmt.Sprintf("c%d", i), fmt.Sprintf("r%d", side+1), failover, 100)
				res[i][side] = result{e, err}
			}()
		}
	}
	wg.Wait()
	for i, r := range res {
		granted := 0
		var winner string
		for side, x := range r {
			switch {
			case x.err == nil:
				granted++
				winner = fmt.Sprintf("r%d", side+1)
				if x.e.Replica != winner {
					t.Fatalf("c%d: granted election of %s returned %+v", i, winner, x.e)
				}
			case !errors.Is(x.err, ringstate.ErrHAReplicaElected):
				t.Fatalf("c%d side %d: %v, want nil or ErrHAReplicaElected", i, side, x.err)
			}
		}
		if granted != 1 {
			t.Fatalf("c%d: %d elections granted (%+v), want exactly 1", i, granted, r)
		}
		for side, x := range r {
			if x.e.Replica != winner {
				t.Fatalf("c%d side %d sees %q elected, the log chose %q", i, side, x.e.Replica, winner)
			}
		}
	}
	c.checkConsistent()

	// The entries survive snapshots and a restart from one.
	var last uint64
	for i := range 20 {
		last = c.mustApply(nodes[i%3], ringstate.Command{Op: ringstate.OpHeartbeat, Member: ringstate.MemberID(nodes[i%3].id)})
	}
	if !poll(t, 10*time.Second, func() bool {
		for _, n := range c.running() {
			if n.node.Status().LastSnapshotIndex == 0 {
				return false
			}
		}
		return true
	}) {
		t.Fatal("no snapshots taken")
	}
	want := a.node.Ring().HAReplicas()
	f := c.follower()
	c.stop(f)
	f = c.start(f.id, false)
	if err := f.node.WaitApplied(ctxT(t, 10*time.Second), last); err != nil {
		t.Fatalf("restarted %s never applied index %d: %v", f.id, last, err)
	}
	if got := f.node.Ring().HAReplicas(); len(got) != clusters || fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("restarted %s holds %v, want %v", f.id, got, want)
	}

	// Failover, decided at ring time: not within the timeout, then after it.
	e0, _ := a.node.Ring().HAReplica("tenant", "c0")
	other := map[string]string{"r1": "r2", "r2": "r1"}[e0.Replica]
	lead := c.leader()
	if _, err := lead.node.ElectHAReplica(ctxT(t, 10*time.Second), "tenant", "c0", other, 500*time.Millisecond, 100); !errors.Is(err, ringstate.ErrHAReplicaElected) && err != nil {
		t.Fatalf("immediate failover attempt: %v", err)
	}
	time.Sleep(time.Second)
	e, err := lead.node.ElectHAReplica(ctxT(t, 10*time.Second), "tenant", "c0", other, 500*time.Millisecond, 100)
	if err != nil || e.Replica != other || e.ElectedMs <= e0.ElectedMs {
		t.Fatalf("failover after the timeout: %+v, %v", e, err)
	}

	// The leader's GC removes entries idle for longer than its idle time; the fresh c0 stays.
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); lead.node.RunHAGC(ctx, 50*time.Millisecond, 700*time.Millisecond) }()
	ok := poll(t, 10*time.Second, func() bool { return lead.node.Ring().HALen() == 1 })
	cancel()
	<-done
	if !ok {
		t.Fatalf("GC left %v", lead.node.Ring().HAReplicas())
	}
	if _, ok := lead.node.Ring().HAReplica("tenant", "c0"); !ok {
		t.Fatal("GC removed the fresh entry")
	}
	c.checkConsistent()
}

// TestCluster_HATracker_MixedVersionsRefusedBeforeProposing: while a member does not advertise
// command version 5, no HA op is proposed (ErrMixedVersions naming it), from any node — even when it
// reads version 4 (heartbeat batches, a build of between the two).
func TestCluster_HATracker_MixedVersionsRefusedBeforeProposing(t *testing.T) {
	c := newCluster(t)
	nodes := c.cluster(3)
	// A member registered by a build that advertises version 4: it reads batches, not HA ops.
	c.mustApply(nodes[0], ringstate.Command{Op: ringstate.OpRegister, Member: "old", RaftAddr: "127.0.0.1:1", CommandVersion: 4})
	for _, n := range nodes {
		if !poll(t, 10*time.Second, func() bool { _, ok := n.node.Ring().Member("old"); return ok }) {
			t.Fatal("register not applied")
		}
		_, err := n.node.ElectHAReplica(ctxT(t, 10*time.Second), "t", "c", "r", time.Minute, 10)
		if !errors.Is(err, ringstate.ErrMixedVersions) || !strings.Contains(err.Error(), "old") {
			t.Fatalf("%s: %v, want ErrMixedVersions naming old", n.id, err)
		}
	}
	// Even a command sent straight to the leader's Apply (a forwarded one) is refused there.
	_, err := c.leader().node.Apply(ctxT(t, 10*time.Second), ringstate.Command{Op: ringstate.OpHAElect, Member: "n1",
		HA: &ringstate.HACommand{Tenant: "t", Cluster: "c", Replica: "r", FailoverMs: 1000, MaxClusters: 1}})
	if !errors.Is(err, ringstate.ErrMixedVersions) {
		t.Fatalf("leader Apply: %v, want ErrMixedVersions", err)
	}
	// HA fields on another op are refused before proposing.
	_, err = c.leader().node.Apply(ctxT(t, 10*time.Second), ringstate.Command{Op: ringstate.OpHeartbeat, Member: "n1",
		HA: &ringstate.HACommand{IdleMs: 1}})
	if !errors.Is(err, ringstate.ErrInvalidCommand) {
		t.Fatalf("heartbeat with HA fields: %v, want ErrInvalidCommand", err)
	}
	if n := c.leader().node.Ring().HALen(); n != 0 {
		t.Fatalf("%d HA entries", n)
	}
}
