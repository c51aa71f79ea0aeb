package ringstate

import (
	"slices"
	"sort"
)

// Successors returns the members that take over leaver's data when it is removed from the ring:
// for every range of the ring whose replication set holds leaver, the member that enters that set
// once leaver is gone — the next distinct member, walking clockwise, that can take writes. They are
// the members a leaver without a joiner gives its flushed blocks to, so that each of its series
// stays on as many members as before. Sorted by ID, without duplicates.
//
// A range's replication set is the one ReplicationSet returns (rf distinct members walking
// clockwise, only writable ones: ACTIVE and healthy at ring time against timeoutMs), except that
// leaver counts as writable whatever its state: it is LEAVING when it asks, and the sets it is
// leaving are those it was in while it took writes. A member already in a range's set does not
// enter it. The result is empty when leaver is not in the ring or owns no token, when rf < 1, and
// when every writable member is already in every set that holds leaver (a ring of at most rf
// members).
//
// The cost is one walk per token of the ring, each visiting members until rf+1 distinct ones are
// found: O(tokens × rf) for a healthy ring.
func (r *Ring) Successors(leaver MemberID, rf int, timeoutMs int64) []MemberID {
	li, ok := r.find(leaver)
	n := len(r.tokens)
	if !ok || rf < 1 || n == 0 || len(r.members[li].Tokens) == 0 {
		return nil
	}
	eligible := func(o int32) bool {
		return int(o) == li || r.members[o].Writable(r.timeMs, timeoutMs)
	}
	var (
		out     []MemberID
		setBuf  [8]int32
		seenBuf [32]int32
	)
	// A range is (tokens[s-1], tokens[s]]: hashes in it start their walk at token s (ReplicationSet
	// walks from the first token strictly greater than the hash; a hash equal to tokens[s-1] starts
	// at s too, which is the same walk).
	for s := range n {
		set := setBuf[:0]   // the first rf eligible distinct members from s
		seen := seenBuf[:0] // every distinct member visited (bounds the walk by the owners)
		hasLeaver := false
		for k := 0; k < n && len(seen) < r.numOwners; k++ {
			i := s + k
			if i >= n {
				i -= n
			}
			o := r.owners[i]
			if slices.Contains(seen, o) {
				continue
			}
			seen = append(seen, o)
			if !eligible(o) {
				continue
			}
			if len(set) < rf {
				set = append(set, o)
				hasLeaver = hasLeaver || int(o) == li
				if len(set) == rf && !hasLeaver {
					break // leaver is not in this range's set: nothing enters
				}
				continue
			}
			// The set is full and holds leaver: o is the first eligible member after it, the one that
			// takes leaver's place.
			if id := r.members[o].ID; !slices.Contains(out, id) {
				out = append(out, id)
			}
			break
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

// LeaveSuccessor says where leaver's copy of one series goes when leaver leaves the ring without a
// joiner. It appends to dst (reset to length 0) the series' replication set as it is with leaver in
// it — old: walking clockwise from the first token strictly greater than hash, the first rf distinct
// members that are writable or are leaver (whatever its state, as in Successors) — and returns it
// with succ: the member that enters that set once leaver is gone, the first writable member after
// old on the same walk. Members for which skip returns true (nil: none) are passed over, so when the
// caller could not store on the successor it asks again and gets the next writable member that is
// not in old either: one that does not hold the series already, so the copy it takes is a new one.
//
// succ is nil when leaver is not in old (it held the series through a spill, or under an older
// ring: no set changes when it goes) and when every writable member is in old or skipped (a ring of
// at most rf writable members). The caller decides where such a copy goes.
//
// Pure: the ring at its own ring time, no allocation unless the walk visits more than 64 distinct
// members. The cost is one walk, bounded by the members that own tokens.
func (r *Ring) LeaveSuccessor(leaver MemberID, hash uint32, rf int, timeoutMs int64, skip func(MemberID) bool, dst []*Member) (old []*Member, succ *Member) {
	old = dst[:0]
	li, ok := r.find(leaver)
	n := len(r.tokens)
	if !ok || rf < 1 || n == 0 {
		return old, nil
	}
	start := sort.Search(n, func(i int) bool { return uint32(r.tokens[i]) > hash })
	var seenBuf [64]int32
	seen := seenBuf[:0] // every distinct member visited: the walk ends once every owner was seen
	hasLeaver := false
	for k := 0; k < n && len(seen) < r.numOwners; k++ {
		i := start + k
		if i >= n {
			i -= n
		}
		o := r.owners[i]
		if slices.Contains(seen, o) {
			continue
		}
		seen = append(seen, o)
		m := &r.members[o]
		if int(o) != li && !m.Writable(r.timeMs, timeoutMs) {
			continue
		}
		if len(old) < rf {
			old = append(old, m)
			hasLeaver = hasLeaver || int(o) == li
			continue
		}
		if !hasLeaver {
			return old, nil // leaver is not in the set: nothing enters it
		}
		if skip != nil && skip(m.ID) {
			continue
		}
		return old, m
	}
	return old, nil
}
