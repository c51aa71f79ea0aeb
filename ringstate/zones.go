package ringstate

import (
	"fmt"
	"slices"
	"sort"
)

// Placement is how the cluster places a series' copies: the replication factor and whether
// placement is zone-aware (-distributor.replication-factor, -ingester.ring.zone-awareness-enabled).
// Both must be the same on every member: a distributor, a leaver handing its data over, the
// compactor and the leader's auto-forget must all compute the same replication set for a key, or
// a leaver hands data to a member the distributors never write to (and the reads' failure budget,
// counted per zone when zone-aware, would not match where the copies are).
//
// Every placement method of Ring that serves the cluster takes a Placement (the *For methods), so
// a call site cannot leave zone awareness out by accident; the older rf-only methods are the
// zone-unaware Placement{RF: rf} and stay for tests and tools.
type Placement struct {
	// RF is the replication factor: how many copies of a series, at most.
	RF int
	// ZoneAware places at most one copy per zone (Member.Zone).
	ZoneAware bool
}

// EffectiveRFFor caps p.RF by what the ring can hold: the number of members that own tokens and,
// when p is zone-aware, the number of distinct zones among them (health aside). It is the rf a
// distributor counts its quorum of. A zone that is down does not lower it (its members still own
// tokens): a write then has one copy per live zone and still needs a quorum of the full rf — with
// RF 3 over 3 zones and a zone down, both remaining copies.
//
// The zone count is computed on each call (O(members), no allocation for up to 16 zones): the ring
// does not cache it, because a member's zone changes on a re-register without a token change.
func (r *Ring) EffectiveRFFor(p Placement) int {
	rf := r.EffectiveRF(p.RF)
	if !p.ZoneAware || rf <= 1 {
		return rf
	}
	return min(rf, r.ownerZones())
}

// ownerZones is the number of distinct zones among the members that own tokens.
func (r *Ring) ownerZones() int {
	var buf [16]string
	zones := buf[:0]
	for i := range r.members {
		m := &r.members[i]
		if len(m.Tokens) > 0 && !slices.Contains(zones, m.Zone) {
			zones = append(zones, m.Zone)
		}
	}
	return len(zones)
}

// ReplicationSetFor is ReplicationSet under placement p: without zone awareness exactly
// ReplicationSet(hash, p.RF, timeoutMs, dst); with it, the zone-aware rule below.
//
// Zone-aware rule: walking clockwise from the first token strictly greater than the hash, take a
// writable member (ACTIVE and healthy at ring time) when no member of its zone is in the set yet,
// until the set has p.RF members or every token owner was considered. So the set has at most one
// member per zone and at most p.RF members. A member that cannot take writes is passed over as if
// it were not in the ring, and its zone's slot goes to the next writable member of that zone on the
// walk — the spill stays in the zone when the ring has exactly RF zones (the common layout, and
// the one the operator's guide asks for). With more zones than RF, the slot goes to whichever
// writable member of a zone not yet in the set comes first, possibly of another zone: treating an
// unwritable member exactly as an absent one is what makes a LEAVING member's successors (the
// members that enter its sets when it is removed) the same before and after its removal, which
// hand-over and the flush fallback rely on.
//
// When fewer zones than p.RF have writable members, the set has one member per such zone — fewer
// than p.RF — rather than a second copy in a zone already in the set. This is Mimir's choice, and
// ours for the same reason: the invariant "no two copies in one zone" is what lets reads lose a
// whole zone, and it must hold for every write, including those taken while a zone is down (a
// second copy in a live zone would be lost with that zone later, below quorum). Quorum stays
// counted of the effective rf (EffectiveRFFor), so with RF 3 over 3 zones and a zone down a write
// needs both remaining copies, and with two zones down it fails instead of being acknowledged on
// a single copy. Reads (querier) count failures per zone, consistent with this: losing the
// members of floor(RF/2) zones loses no acknowledged sample.
//
// The returned pointers point into the ring and are read-only. With a dst of capacity p.RF it does
// not allocate on a ring of up to 2048 members.
func (r *Ring) ReplicationSetFor(hash uint32, p Placement, timeoutMs int64, dst []*Member) []*Member {
	if !p.ZoneAware {
		return r.ReplicationSet(hash, p.RF, timeoutMs, dst)
	}
	dst = dst[:0]
	n := len(r.tokens)
	if n == 0 || p.RF <= 0 {
		return dst
	}
	start := sort.Search(n, func(i int) bool { return uint32(r.tokens[i]) > hash })
	var v visited
	return r.zoneWalk(start, p.RF, timeoutMs, -1, -1, nil, nil, &v, dst)
}

// visited is the set of member indices a walk has considered: a short list first (a healthy walk
// considers a handful of members), then a bitmap, on the stack for rings of up to 2048 members, so
// that a walk that must consider every owner (a whole zone down) costs O(tokens walked), not
// O(members²).
type visited struct {
	list   [24]int32
	nl     int
	useMap bool
	buf    [32]uint64 // the bitmap, for up to 2048 members
	heap   []uint64   // the bitmap, for larger rings
}

// add marks o and reports whether it was new.
func (v *visited) add(o int32, members int) bool {
	if !v.useMap {
		if slices.Contains(v.list[:v.nl], o) {
			return false
		}
		if v.nl < len(v.list) {
			v.list[v.nl] = o
			v.nl++
			return true
		}
		v.useMap = true
		if words := (members + 63) / 64; words > len(v.buf) {
			v.heap = make([]uint64, words)
		}
		for _, x := range v.list[:v.nl] {
			v.set(x)
		}
	}
	return v.set(o)
}

// set marks o in the bitmap and reports whether it was new.
func (v *visited) set(o int32) bool {
	bits := v.buf[:]
	if v.heap != nil {
		bits = v.heap
	}
	w, b := o/64, uint64(1)<<(o%64)
	if bits[w]&b != 0 {
		return false
	}
	bits[w] |= b
	return true
}

// zoneWalk is the zone-aware walk from token index start: it appends to dst the first members, one
// per zone, that are eligible, until rf or every owner was considered. Eligible: writable, or the
// member at index force (whatever its state: a leaver's own sets), and not the member at index
// deny, and not passed over by skip (consulted only for members not in old: see LeaveSuccessorFor).
func (r *Ring) zoneWalk(start, rf int, timeoutMs int64, force, deny int32, skip func(MemberID) bool, old []*Member, v *visited, dst []*Member) []*Member {
	n := len(r.tokens)
	seen := 0
	limit := rf // the set is complete at limit members
	for k := 0; k < n && len(dst) < limit && seen < r.numOwners; k++ {
		i := start + k
		if i >= n {
			i -= n
		}
		o := r.owners[i]
		if !v.add(o, len(r.members)) {
			continue
		}
		seen++
		if seen == len(v.list)+1 && skip == nil {
			// A long walk: some zone has few or no eligible members (a zone down). Count the zones
			// that have any, once, so the walk stops when it holds all of them instead of visiting
			// every owner: O(members) now rather than O(members × log members) token steps.
			limit = min(rf, r.eligibleZones(timeoutMs, force, deny))
			if len(dst) >= limit {
				break
			}
		}
		m := &r.members[o]
		if o == deny || (o != force && !m.Writable(r.timeMs, timeoutMs)) || zoneTaken(dst, m.Zone) {
			continue
		}
		if skip != nil && !slices.Contains(old, m) && skip(m.ID) {
			continue
		}
		dst = append(dst, m)
	}
	return dst
}

// eligibleZones is the number of distinct zones with an eligible token owner (see zoneWalk).
func (r *Ring) eligibleZones(timeoutMs int64, force, deny int32) int {
	var buf [16]string
	zones := buf[:0]
	for i := range r.members {
		m := &r.members[i]
		o := int32(i)
		if len(m.Tokens) == 0 || o == deny || (o != force && !m.Writable(r.timeMs, timeoutMs)) || slices.Contains(zones, m.Zone) {
			continue
		}
		zones = append(zones, m.Zone)
	}
	return len(zones)
}

func zoneTaken(set []*Member, zone string) bool {
	for _, m := range set {
		if m.Zone == zone {
			return true
		}
	}
	return false
}

// SuccessorsFor is Successors under placement p: without zone awareness exactly Successors(leaver,
// p.RF, timeoutMs). With it, for every range whose zone-aware replication set (leaver counted
// writable whatever its state, as in Successors) holds leaver, the member that enters that set when
// leaver is gone: the next writable member of leaver's zone on the walk when there is one (with
// exactly RF zones), else the first writable member of a zone not in the set. Sorted by ID, without
// duplicates. Cost: two walks per token of the ring.
func (r *Ring) SuccessorsFor(leaver MemberID, p Placement, timeoutMs int64) []MemberID {
	if !p.ZoneAware {
		return r.Successors(leaver, p.RF, timeoutMs)
	}
	li, ok := r.find(leaver)
	n := len(r.tokens)
	if !ok || p.RF < 1 || n == 0 || len(r.members[li].Tokens) == 0 {
		return nil
	}
	var (
		out          []MemberID
		oldBuf, nBuf [8]*Member
	)
	for s := range n {
		var v visited
		old := r.zoneWalk(s, p.RF, timeoutMs, int32(li), -1, nil, nil, &v, oldBuf[:0])
		if !slices.Contains(old, &r.members[li]) {
			continue
		}
		var w visited
		for _, m := range r.zoneWalk(s, p.RF, timeoutMs, -1, int32(li), nil, nil, &w, nBuf[:0]) {
			if !slices.Contains(old, m) && !slices.Contains(out, m.ID) {
				out = append(out, m.ID)
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

// LeaveSuccessorFor is LeaveSuccessor under placement p: without zone awareness exactly
// LeaveSuccessor(leaver, hash, p.RF, timeoutMs, skip, dst). With it, old is the zone-aware set
// with leaver counted writable, and succ the member that enters it once leaver is gone (see
// SuccessorsFor), passing over the members skip reports that are not in old — so a caller that
// could not store on succ asks again and gets the next candidate, which holds no copy yet. At most
// one member enters a zone-aware set when one leaves it: the others stay first of their zones.
//
// Pure; allocates only on rings of more than 2048 members.
func (r *Ring) LeaveSuccessorFor(leaver MemberID, hash uint32, p Placement, timeoutMs int64, skip func(MemberID) bool, dst []*Member) (old []*Member, succ *Member) {
	if !p.ZoneAware {
		return r.LeaveSuccessor(leaver, hash, p.RF, timeoutMs, skip, dst)
	}
	old = dst[:0]
	li, ok := r.find(leaver)
	n := len(r.tokens)
	if !ok || p.RF < 1 || n == 0 {
		return old, nil
	}
	start := sort.Search(n, func(i int) bool { return uint32(r.tokens[i]) > hash })
	var v visited
	old = r.zoneWalk(start, p.RF, timeoutMs, int32(li), -1, nil, nil, &v, old)
	if !slices.Contains(old, &r.members[li]) {
		return old, nil
	}
	var (
		w    visited
		nBuf [8]*Member
	)
	for _, m := range r.zoneWalk(start, p.RF, timeoutMs, -1, int32(li), skip, old, &w, nBuf[:0]) {
		if !slices.Contains(old, m) {
			return old, m
		}
	}
	return old, nil
}

// naturalSet appends to dst the member indices of the replication set from token index start
// under p, health aside: the first p.RF distinct owners clockwise, one per zone when zone-aware.
func (r *Ring) naturalSet(start int, p Placement, dst []int32) []int32 {
	n := len(r.tokens)
	for k := 0; k < n && len(dst) < p.RF; k++ {
		o := r.owners[(start+k)%n]
		if slices.Contains(dst, o) {
			continue
		}
		if p.ZoneAware && slices.ContainsFunc(dst, func(x int32) bool { return r.members[x].Zone == r.members[o].Zone }) {
			continue
		}
		dst = append(dst, o)
	}
	return dst
}

// BalancedTokensFor returns n tokens for a member of zone joining r: BalancedTokens(n) without
// zone awareness; with it, tokens that balance zone's own members. Under zone-aware placement with
// as many zones as RF, a member's share of the writes is its ownership of its zone's sub-ring (the
// ring of its zone's members alone: a hash goes to the first member of each zone clockwise), which
// whole-ring balancing leaves uneven (measured on 3 zones: 1.5 max/min from 30 to 300 members, 2.2
// at 6; TestBalancedTokens_ZoneAwareLoadSpread). So the joiner runs BalancedTokens on that
// sub-ring, then moves each token that another zone's member already owns to the next free value
// (a shift of a few units of 2^32: no measurable change in share). Deterministic, like
// BalancedTokens: members joining at once compute the same tokens, one claim wins.
func (r *Ring) BalancedTokensFor(n int, zone string, zoneAware bool) (Tokens, error) {
	if !zoneAware {
		return r.BalancedTokens(n)
	}
	var ms []Member
	for i := range r.members {
		if m := r.members[i]; m.Zone == zone && len(m.Tokens) > 0 {
			m.HandoverPeer = "" // its peer may be in another zone: the sub-ring is only for shares
			ms = append(ms, m)
		}
	}
	sub, err := Restore(ms, r.timeMs, nil)
	if err != nil {
		return nil, fmt.Errorf("zone %q sub-ring: %w", zone, err)
	}
	ts, err := sub.BalancedTokens(n)
	if err != nil {
		return nil, err
	}
	taken := func(t Token, upto int) bool {
		if _, ok := slices.BinarySearch(r.tokens, t); ok {
			return true
		}
		return slices.Contains(ts[:upto], t)
	}
	for i := range ts {
		for taken(ts[i], i) {
			ts[i]++ // wraps at 2^32; the ring has far fewer than 2^32 tokens, so this ends
		}
	}
	slices.Sort(ts)
	return ts, nil
}
