package raftfsm

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/raftingest/raftingest/ringstate"
)

// activateAll gives every node tokens and makes it ACTIVE, as the lifecycle would.
func (c *testCluster) activateAll(nodes []*testNode) {
	c.tb.Helper()
	for i, n := range nodes {
		id := ringstate.MemberID(n.id)
		c.mustApply(n, ringstate.Command{Op: ringstate.OpClaimTokens, Member: id, Tokens: ringstate.Tokens{ringstate.Token(100 * (i + 1))}})
		c.mustApply(n, ringstate.Command{Op: ringstate.OpActivate, Member: id})
	}
}

// claimLease claims through tn, retrying what a client retries (leadership moving).
func claimLease(tb testing.TB, tn *testNode, d time.Duration) (ringstate.CompactorLease, error) {
	tb.Helper()
	ctx := ctxT(tb, 20*time.Second)
	for {
		l, err := tn.node.ClaimCompactorLease(ctx, d)
		if err == nil || !Retryable(err) || ctx.Err() != nil {
			return l, err
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestCluster_CompactorLease_LeaderChangeAndSnapshots runs the lease on a real 3-node cluster: the
// leader claims it (epoch 1), renews it (epoch kept), a follower's claim is refused while it is
// held; leadership moves and the lease does not (it is ring state, not leadership): the new leader
// gets it only once it expired in ring time, with epoch 2. Snapshots carry it: a restarted
// follower restores it from its snapshot and the log after it, a new node receives it by InstallSnapshot, and every
// node's FSM is byte-identical.
func TestCluster_CompactorLease_LeaderChangeAndSnapshots(t *testing.T) {
	c := newCluster(t)
	c.cfg.SnapshotThreshold = 8
	c.cfg.TrailingLogs = 2
	c.cfg.SnapshotInterval = 50 * time.Millisecond
	nodes := c.cluster(3)
	c.activateAll(nodes)

	lead := c.leader()
	const d = 1500 * time.Millisecond
	l, err := claimLease(t, lead, d)
	if err != nil || l.Holder != ringstate.MemberID(lead.id) || l.Epoch != 1 {
		t.Fatalf("leader's claim: %+v, %v", l, err)
	}
	f := c.follower()
	if _, err := claimLease(t, f, d); !errors.Is(err, ringstate.ErrLeaseHeld) {
		t.Fatalf("follower's claim while %s holds the lease: %v, want ErrLeaseHeld", lead.id, err)
	}
	l2, err := claimLease(t, lead, d)
	if err != nil || l2.Epoch != 1 || l2.ExpiresMs < l.ExpiresMs {
		t.Fatalf("renewal: %+v after %+v, %v", l2, l, err)
	}

	// Leadership moves to f; the lease stays with the old leader until it expires in ring time.
	retry(t, "transfer leadership", func(ctx context.Context) error {
		_, err := lead.node.TransferLeadership(ctx, f.id)
		return err
	})
	if c.leader() != f {
		t.Fatalf("leadership went to %s, not %s", c.leader().id, f.id)
	}
	if got := f.node.CompactorLease(); got.Holder != ringstate.MemberID(lead.id) || got.Epoch != 1 {
		t.Fatalf("lease after the leader change: %+v", got)
	}
	var l3 ringstate.CompactorLease
	if !poll(t, 10*time.Second, func() bool {
		l3, err = claimLease(t, f, d)
		if err != nil && !errors.Is(err, ringstate.ErrLeaseHeld) {
			t.Fatalf("new leader's claim: %v", err)
		}
		return err == nil
	}) {
		t.Fatalf("the new leader never got the lease: %v", err)
	}
	if l3.Holder != ringstate.MemberID(f.id) || l3.Epoch != 2 || l3.ExpiresMs <= l2.ExpiresMs {
		t.Fatalf("new leader's lease %+v after %+v", l3, l2)
	}
	// The old holder's renewal is now refused: it lost the lease.
	if _, err := claimLease(t, lead, d); !errors.Is(err, ringstate.ErrLeaseHeld) {
		t.Fatalf("old holder renewed a lease it lost: %v", err)
	}

	// Enough entries for snapshots on every node, then a follower restarts from its snapshot.
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
	r := c.follower()
	c.stop(r)
	c.start(r.id, false)
	// The snapshot it restored may predate l3; it replays the rest of the log (or gets it from the
	// leader) before its ring is the cluster's.
	if err := r.node.WaitApplied(ctxT(t, 10*time.Second), last); err != nil {
		t.Fatalf("restarted %s never applied index %d: %v", r.id, last, err)
	}
	if got := r.node.CompactorLease(); got != l3 {
		t.Fatalf("restarted %s restored lease %+v from its snapshot, want %+v", r.id, got, l3)
	}
	c.checkConsistent()
	for i := range 12 { // compact the log past n4's start, so it can only catch up by snapshot
		c.mustApply(c.leader(), ringstate.Command{Op: ringstate.OpRegister, Member: ringstate.MemberID(fmt.Sprint("m", i)), RaftAddr: "127.0.0.1:5"})
	}
	n4, _ := c.join("n4", c.leader())
	if n4.node.Status().LastSnapshotIndex == 0 {
		t.Fatal("n4 did not receive a snapshot")
	}
	if got := n4.node.CompactorLease(); got != l3 {
		t.Fatalf("n4 installed lease %+v, want %+v", got, l3)
	}
	c.checkConsistent()
}
