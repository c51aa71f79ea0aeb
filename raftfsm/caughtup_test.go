package raftfsm

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/raftingest/raftingest/ringstate"
)

// TestCluster_CaughtUp_RestartedNodeWaitsForItsLog: a node restarted on its data holds only its
// snapshot (none here) until a leader tells it the commit index. Without a quorum it can never learn
// it, so its ring is the empty ring of index 0 while its disk holds every member: CaughtUp must say
// no, with the indexes, until the others are back and it has applied its log. (Regression for
// stale-ring-push-during-replay: a distributor placed pushes on such a ring.)
func TestCluster_CaughtUp_RestartedNodeWaitsForItsLog(t *testing.T) {
	c := newCluster(t)
	nodes := c.cluster(3)
	for _, n := range nodes {
		if !poll(t, 10*time.Second, func() bool { ok, _, _ := n.node.CaughtUp(); return ok }) {
			_, applied, target := n.node.CaughtUp()
			t.Fatalf("%s, a member of a live cluster, never caught up: applied %d, target %d", n.id, applied, target)
		}
	}
	var last uint64
	for i := range 5 {
		last = c.mustApply(c.leader(), ringstate.Command{Op: ringstate.OpRegister,
			Member: ringstate.MemberID(fmt.Sprint("m", i)), RaftAddr: "127.0.0.1:5"})
	}
	poll(t, 5*time.Second, func() bool {
		for _, n := range nodes {
			if n.node.AppliedIndex() < last {
				return false
			}
		}
		return true
	})
	for _, n := range nodes {
		c.stop(n)
	}

	lone := c.start(nodes[1].id, false)
	ok, applied, target := lone.node.CaughtUp()
	if ok || target < last || applied >= target {
		t.Fatalf("restarted alone (no quorum): caught-up=%v applied=%d target=%d, want not caught up with target >= %d", ok, applied, target, last)
	}
	if _, has := lone.node.Ring().Member("m4"); has {
		t.Fatal("the restarted node's ring already holds m4 although it cannot have learned the commit index")
	}

	c.start(nodes[2].id, false) // a quorum again: a leader, a commit index, the log applied
	if !poll(t, 10*time.Second, func() bool { ok, _, _ := lone.node.CaughtUp(); return ok }) {
		_, applied, target = lone.node.CaughtUp()
		t.Fatalf("with a quorum back the node never caught up: applied %d of %d", applied, target)
	}
	if _, has := lone.node.Ring().Member("m4"); !has {
		t.Fatal("caught up, yet the ring lacks m4")
	}
}

// TestCluster_CaughtUp_NewNodeWaitsForTheHistory: a brand-new node joining a cluster with a long log
// replays every intermediate ring, down to the first ones where one member owned everything. It
// must not say caught up on any of them: whenever CaughtUp holds, its ring has every member the
// cluster had when it joined. (Found in review of the first fix, which counted a node with no state
// on disk as caught up from the start.)
func TestCluster_CaughtUp_NewNodeWaitsForTheHistory(t *testing.T) {
	c := newCluster(t)
	c.cluster(3)
	const members = 150
	for i := range members {
		c.mustApply(c.leader(), ringstate.Command{Op: ringstate.OpRegister,
			Member: ringstate.MemberID(fmt.Sprint("m", i)), RaftAddr: "127.0.0.1:5"})
	}
	want := c.leader().node.Ring().Len()

	fresh := c.start("n4", false)
	if ok, _, _ := fresh.node.CaughtUp(); ok {
		t.Fatal("a new node outside any cluster says it is caught up")
	}
	stop := make(chan struct{})
	bad := make(chan string, 1)
	watcherDone := make(chan struct{})
	go func() {
		defer close(watcherDone)
		for {
			select {
			case <-stop:
				return
			default:
			}
			if ok, applied, target := fresh.node.CaughtUp(); ok {
				if got := fresh.node.Ring().Len(); got < want {
					select {
					case bad <- fmt.Sprintf("caught up (applied %d, target %d) on a ring of %d members, the cluster had %d", applied, target, got, want):
					default:
					}
					return
				}
			}
		}
	}()
	retry(t, "add n4", func(ctx context.Context) error {
		_, err := c.leader().node.AddPeer(ctx, "n4", fresh.node.RaftAddr(), false)
		return err
	})
	caught := poll(t, 15*time.Second, func() bool { ok, _, _ := fresh.node.CaughtUp(); return ok })
	close(stop)
	<-watcherDone // before the cleanup shuts the nodes down under it
	select {
	case msg := <-bad:
		t.Fatal(msg)
	default:
	}
	if !caught {
		_, applied, target := fresh.node.CaughtUp()
		t.Fatalf("the joined node never caught up: applied %d of %d", applied, target)
	}
	if got := fresh.node.Ring().Len(); got < want {
		t.Fatalf("caught up with %d members, want %d", got, want)
	}
}
