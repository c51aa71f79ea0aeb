package raftfsm

import "github.com/raftingest/raftingest/ringstate"

// Write fencing. A distributor stamps every push with the applied index of the ring it placed the
// series by (RingIndex); an ingester refuses a push stamped before its own OwnershipIndex, so a
// distributor whose ring is older than the last ownership change this member knows of catches up
// and places the series again instead of writing to a member that may no longer own them.
//
// The index is kept by every replica's FSM for the whole ring, not per member: a member's share of
// the hash space changes when any member's ownership changes (a joiner that becomes ACTIVE takes
// ranges from its neighbours without their own state or tokens changing), so a per-member index
// would let a stale distributor write a series to three members of which none owns it any more.
// Ownership changes (joins, leaves, token moves, completed or aborted hand-overs, removals) are
// rare next to heartbeats, and a fenced push costs its distributor one wait and one retry.
//
// It needs neither a Raft command nor a snapshot field: every replica derives it from the entries it
// applies (ringstate.OwnershipChangedBy on the entry's events), so it is the same on every replica
// that applied the same entries.

// RingIndex returns the latest applied ring with the Raft index of the entry that produced it, read
// together (a Ring() then AppliedIndex() pair could straddle an apply).
func (f *FSM) RingIndex() (*ringstate.Ring, uint64) {
	s := f.state.Load()
	return s.ring, s.index
}

// OwnershipIndex is the Raft index of the last applied entry that changed the ownership of any
// member (ringstate.OwnershipChangedBy), 0 when none did. After a restore from a snapshot, until an
// entry changes ownership again, it is the snapshot's index: the true index is at or below it and
// not in the snapshot, and overstating it is safe — a distributor whose ring is older than the
// snapshot is refused once, catches up to it and retries — where understating it would let a push
// placed by a stale ring through.
func (f *FSM) OwnershipIndex() uint64 { return f.state.Load().owned }

// RingIndex is FSM.RingIndex of the node's FSM.
func (n *Node) RingIndex() (*ringstate.Ring, uint64) { return n.fsm.RingIndex() }

// OwnershipIndex is FSM.OwnershipIndex of the node's FSM.
func (n *Node) OwnershipIndex() uint64 { return n.fsm.OwnershipIndex() }
