package ringstate

import "slices"

// Write fencing (see raftfsm's FSM.OwnershipIndex and the distributor's and ingester's push paths):
// the Raft FSM remembers the index of the last entry that changed who owns which series, and an
// ingester refuses a push placed by a ring older than that. What counts as an ownership change is
// decided here, from members alone, so that it is pure and the same on every replica.
//
// Placement (ReplicationSet) reads, of each member, only whether it is ACTIVE, its tokens, and
// whether it owns any token at all (EffectiveRF counts the members that do); health is read too, but
// health is a function of ring time, not of an entry, and is not an ownership change: a write that
// spills past an unhealthy member is a temporary substitute, and reads ask every readable member.

// OwnershipChanged reports whether a member's change from before to after can move series between
// replication sets: it became or stopped being ACTIVE, an ACTIVE member's tokens changed, it
// started or stopped owning tokens (which changes the effective replication factor of rings smaller
// than RF), or a member that owns tokens moved to another zone (zone-aware placement takes one
// member per zone, and the zones that own tokens cap its replication factor). A nil before is a
// member added, a nil after one removed. A change of addresses, heartbeat, command version or
// hand-over peer alone is not an ownership change, nor are the tokens
// of a member that is not ACTIVE before or after (JOINING receiving them): they take writes only
// once it becomes ACTIVE, which is a change then.
func OwnershipChanged(before, after *Member) bool {
	activeB, activeA := before != nil && before.State == ACTIVE, after != nil && after.State == ACTIVE
	ownsB, ownsA := before != nil && len(before.Tokens) > 0, after != nil && len(after.Tokens) > 0
	switch {
	case activeB != activeA, ownsB != ownsA:
		return true
	case ownsB && ownsA && before.Zone != after.Zone:
		return true
	case activeB && activeA:
		return !slices.Equal(before.Tokens, after.Tokens)
	}
	return false
}

// OwnershipChangedBy reports whether the change from before to after, which events describe (as
// Ring.Apply returned them), changed the ownership of any member (OwnershipChanged). Only the members
// the events name are compared, so a heartbeat costs nothing; every change of state, tokens or
// membership is reported by an event (the property test holds Apply to that).
func OwnershipChangedBy(before, after *Ring, events []Event) bool {
	for _, e := range events {
		b, okB := before.memberPtr(e.Member)
		a, okA := after.memberPtr(e.Member)
		if !okB {
			b = nil
		}
		if !okA {
			a = nil
		}
		if OwnershipChanged(b, a) {
			return true
		}
	}
	return false
}

// memberPtr returns a read-only pointer to the member with the given id.
func (r *Ring) memberPtr(id MemberID) (*Member, bool) {
	i, ok := r.find(id)
	if !ok {
		return nil, false
	}
	return &r.members[i], true
}
