package ringstate

import (
	"fmt"
	"slices"
)

// CompactorLease is the ring's record of which member may compact the cluster's blocks, and until
// when. It is granted by OpClaimCompactor, a Raft commit like every other ring change, so every
// replica agrees on it at every index.
//
// Invariants (Restore and WithCompactorLease enforce them): Epoch is 0 exactly when Holder is empty
// (no lease was ever granted); otherwise Holder is a valid member id. Holder may name a member that
// has since been removed: the lease is then free for anyone (see OpClaimCompactor).
type CompactorLease struct {
	// Holder is the member the lease was last granted to; empty when it never was.
	Holder MemberID
	// Epoch counts the holders: it grows by one each time the lease passes to a member other than
	// its holder, and is kept when the holder renews. Deleting blocks is fenced by it: a member
	// refuses a delete whose epoch is not the ring's current one, so a holder that lost the lease
	// (paused, partitioned) cannot delete what its successor relies on.
	Epoch uint64
	// ExpiresMs is the ring time (Unix milliseconds) at which the lease expires: from then on any
	// ACTIVE member may claim it.
	ExpiresMs int64
}

// HeldBy reports whether id holds the lease at ring time nowMs: it is the holder and the lease has
// not expired.
func (l CompactorLease) HeldBy(id MemberID, nowMs int64) bool {
	return l.Holder != "" && l.Holder == id && nowMs < l.ExpiresMs
}

// MaxLeaseMs bounds the duration of one claim of the compactor lease. A holder renews long before
// it expires; a lease that outlived its holder by hours would stall compaction for as long.
const MaxLeaseMs int64 = 3_600_000

// NotReading returns the ids of the members that do not advertise command version v
// (Member.CommandVersion < v), in id order; nil when every member does. The Raft leader asks it
// before proposing an entry of version v: a member on a build that does not read v halts on it.
func (r *Ring) NotReading(v uint32) []MemberID {
	var out []MemberID
	for i := range r.members {
		if r.members[i].CommandVersion < v {
			out = append(out, r.members[i].ID)
		}
	}
	return out
}

// ErrReplicaNotMember is a claim of the compactor lease refused before proposing because a replica
// of the ring's log (a Raft server) is not a member of the ring: it never advertised the command
// versions it reads, so it may run a build that halts on the claim's entry. It wraps
// ErrMixedVersions (CodeOf gives CodeMixedVersions), so callers that only ask whether every
// replica reads the claim need not know it; the compactor tells the two apart to name why its
// lease is blocked. Apply never returns it: the Raft configuration is not ring state.
var ErrReplicaNotMember = fmt.Errorf("%w: a replica of the ring's log is not a ring member", ErrMixedVersions)

// LeaseEverGranted reports whether a claim of the compactor lease was ever granted in this ring
// (its epoch is above 0). The rolling-upgrade gate (raftfsm's admitClaim) applies only while it is
// false: a grant is committed only in an entry of command version LeaseCommandVersion, and a ring
// holding a lease is snapshotted in a version a build before the lease refuses, so from the first
// grant on no replica of such a build can apply the log anyway, and the gate has nothing left to
// protect.
//
// Every replica answers alike at every index: the epoch is ring state, set only by Apply, carried
// by snapshots (WithCompactorLease), and it never decreases (a grant to another member adds one,
// a renewal keeps it, and nothing else changes it — a removed holder keeps its epoch).
func (r *Ring) LeaseEverGranted() bool { return r.lease.Epoch > 0 }

// MemberIDs returns every member's id, sorted.
func (r *Ring) MemberIDs() []MemberID {
	out := make([]MemberID, len(r.members))
	for i := range r.members {
		out[i] = r.members[i].ID
	}
	return out
}

// CompactorLease returns the compactor lease as of the ring's last applied command.
func (r *Ring) CompactorLease() CompactorLease { return r.lease }

// WithCompactorLease returns a copy of r holding lease l instead of its own, for rebuilding a ring
// from a snapshot or a wire form. It refuses (ErrCorruptState) a lease that breaks an invariant.
func (r *Ring) WithCompactorLease(l CompactorLease) (*Ring, error) {
	if err := checkLease(l); err != nil {
		return nil, err
	}
	next := *r
	next.lease = l
	return &next, nil
}

func checkLease(l CompactorLease) error {
	if (l.Holder == "") != (l.Epoch == 0) {
		return fmt.Errorf("%w: compactor lease held by %q at epoch %d: a holder needs an epoch and an epoch a holder",
			ErrCorruptState, l.Holder, l.Epoch)
	}
	if l.Holder != "" {
		if err := ValidateMemberID(l.Holder); err != nil {
			return fmt.Errorf("%w: compactor lease holder: %v", ErrCorruptState, err)
		}
	}
	return nil
}

// claimCompactor grants the compactor lease to c.Member for c.LeaseMs of ring time from t, when:
// no member ever held it; c.Member holds it (a renewal, epoch kept); it expired (t >= ExpiresMs);
// or its holder is no longer a member. Only an ACTIVE member may claim: a member that is leaving,
// joining or pending takes no part in the ring's data and must not delete any. Otherwise the claim
// is refused with ErrLeaseHeld, naming the holder and the expiry, and nothing changes.
//
// Two members never hold the lease at once by ring time: a grant to another member happens only at
// a ring time at or after the previous holder's expiry (or once that holder is gone), and ring time
// never goes backwards.
func (b *builder) claimCompactor(c *Command, t int64) error {
	if c.LeaseMs <= 0 || c.LeaseMs > MaxLeaseMs {
		return fmt.Errorf("%w: claim-compactor %s: lease of %dms, want 1 to %d", ErrInvalidCommand, c.Member,
			c.LeaseMs, MaxLeaseMs)
	}
	i, ok := b.r.find(c.Member)
	if !ok {
		return fmt.Errorf("%w: %s %s", ErrUnknownMember, c.Op, c.Member)
	}
	if st := b.r.members[i].State; st != ACTIVE {
		return fmt.Errorf("%w: claim-compactor %s: only an ACTIVE member may hold the compactor lease, it is %s",
			ErrIllegalTransition, c.Member, st)
	}
	// Every member must read the claim's command version (LeaseCommandVersion), as the proposing
	// leader attested in Readers: a member it did not name (one that registered after the leader
	// looked, or does not advertise the version) may run a build that halts on this entry. The
	// test reads only the command and member ids, which every build keeps, so every replica
	// decides alike whatever snapshot it restored.
	var missing []MemberID
	for k := range b.r.members {
		if id := b.r.members[k].ID; !readerListed(c.Readers, id) {
			missing = append(missing, id)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("%w: claim-compactor %s: members %v are not known to read command version %d "+
			"(upgrade them, or wait until each has advertised the version in a register or heartbeat)",
			ErrMixedVersions, c.Member, missing, LeaseCommandVersion)
	}
	cur := b.r.lease
	_, holderIsMember := b.r.find(cur.Holder)
	switch {
	case cur.Holder == c.Member:
		// Renewal: the epoch stays, so deletes already fenced by it stay valid.
	case cur.Holder == "" || t >= cur.ExpiresMs || !holderIsMember:
		cur.Holder = c.Member
		cur.Epoch++
	default:
		return fmt.Errorf("%w: claim-compactor %s: %s holds the lease (epoch %d) until ring time %d, now %d",
			ErrLeaseHeld, c.Member, cur.Holder, cur.Epoch, cur.ExpiresMs, t)
	}
	cur.ExpiresMs = t + c.LeaseMs
	b.r.lease = cur
	return nil
}

// readerListed reports whether id is in readers (sorted and unique: checkFields ensures it).
func readerListed(readers []MemberID, id MemberID) bool {
	_, ok := slices.BinarySearch(readers, id)
	return ok
}
