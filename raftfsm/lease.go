package raftfsm

import (
	"context"
	"fmt"
	"time"

	"github.com/raftingest/raftingest/ringstate"
)

// ClaimCompactorLease claims the ring's compactor lease for this member, or renews it when this
// member holds it, for d of ring time from the command's commit (ringstate.OpClaimCompactor), and
// returns the lease as this node has applied it. A refusal is ringstate's: ErrLeaseHeld while
// another member holds an unexpired lease, ErrIllegalTransition when this member is not ACTIVE.
//
// The claim carries no request id: it is idempotent by nature (a retried claim that had been
// committed is a renewal, which keeps the epoch), so ErrUnknownOutcome may simply be retried.
//
// Mixed versions: a claim is a version-3 entry, on which a replica of a build from before the lease
// halts. So, until the first claim has been granted (ringstate.Ring.LeaseEverGranted), nothing is
// proposed (ringstate.ErrMixedVersions, naming them) while a member of this node's ring does not
// advertise command version 3; the leader checks again before proposing (Node.admitClaim, which
// also waits for every Raft server to be a ring member). From the first grant on, no replica of
// such a build can apply the log any more, and neither check applies. Always, FSM.Apply refuses a
// claim whose Readers — every member, as this node saw them — miss a member of the ring it applies
// to. See DESIGN.md, "Mixed versions".
//
// The caller must treat the lease as lost earlier than ExpiresMs says, by its own clock: it cannot
// know the ring time of entries not yet committed. Measuring from before the call (ring time at
// commit is after it) with a margin is safe; block deletes are fenced by the epoch anyway.
func (n *Node) ClaimCompactorLease(ctx context.Context, d time.Duration) (ringstate.CompactorLease, error) {
	me := ringstate.MemberID(n.cfg.ID)
	r := n.fsm.Ring()
	if old := r.NotReading(ringstate.LeaseCommandVersion); len(old) > 0 && !r.LeaseEverGranted() {
		return ringstate.CompactorLease{}, fmt.Errorf("%w: %s does not claim the compactor lease: members %v do not "+
			"advertise command version %d, so they may run a build from before the lease, which halts on a claim "+
			"(finish the rolling upgrade; each member advertises the version in its next register or heartbeat "+
			"through a leader of this build)", ringstate.ErrMixedVersions, me, old, ringstate.LeaseCommandVersion)
	}
	idx, err := n.Apply(ctx, ringstate.Command{Op: ringstate.OpClaimCompactor, Member: me, LeaseMs: d.Milliseconds(),
		Readers: r.MemberIDs()})
	if err != nil {
		return ringstate.CompactorLease{}, err
	}
	// On a follower the command was committed through the leader: wait until it is applied here.
	if err := n.WaitApplied(ctx, idx); err != nil {
		return ringstate.CompactorLease{}, fmt.Errorf("raftfsm: wait for the compactor lease claim at index %d: %w", idx, err)
	}
	l := n.fsm.Ring().CompactorLease()
	if l.Holder != me {
		// Committed, then taken over by another member once it expired (only possible after d).
		return l, fmt.Errorf("%w: %s claimed the compactor lease at index %d, but %s holds it now (epoch %d)",
			ringstate.ErrLeaseHeld, me, idx, l.Holder, l.Epoch)
	}
	return l, nil
}

// CompactorLease returns the compactor lease of the ring this node has applied (may lag the
// leader by the entries not yet applied here).
func (n *Node) CompactorLease() ringstate.CompactorLease { return n.fsm.Ring().CompactorLease() }
