package ringstate

import (
	"fmt"
	"math"
	"slices"
	"sort"
)

// Ring is an immutable snapshot of the ring. The zero value is not usable; start from New.
//
// A Ring is safe for concurrent use by any number of readers. Operations that change the ring return a
// new *Ring; the receiver is never modified.
type Ring struct {
	// members sorted by ID. Invariant: IDs unique; each member's Tokens sorted and unique.
	members []Member

	// tokens and owners are the ring in token order: owners[i] is the index in members of the owner
	// of tokens[i]. Invariant: tokens sorted ascending and unique (no token has two owners).
	// Shared, read-only, between rings whose token assignment is the same.
	tokens []Token
	owners []int32
	// ownership[i] is the fraction of the hash space members[i] owns, in [0, 1].
	ownership []float64
	// numOwners is the number of members that own at least one token.
	numOwners int

	// timeMs is ring time: the largest leader-stamped time (Unix milliseconds) of any command applied
	// so far. It never goes backwards, even when a new leader's clock is behind the old one's.
	timeMs int64

	// recent remembers the outcome of the last requests applied, for idempotent retries. Oldest first,
	// at most maxRecent entries.
	recent []Applied

	// lease is the compactor lease (see CompactorLease); the zero value when never granted.
	lease CompactorLease

	// ha is the HA tracker's state (see hatracker.go, hatable.go), sorted by tenant then cluster;
	// shared, read-only, between rings (an HA op copies what it changes).
	ha haTable
}

// maxRecent bounds the request-id memory. A client retries within seconds; thousands of commands
// separate a retry from its original only if the cluster is far busier than a ring ever is.
const maxRecent = 1024

// New returns an empty ring at ring time zero.
func New() *Ring { return &Ring{} }

// TimeMs is the ring time in Unix milliseconds: the newest leader-stamped time applied.
func (r *Ring) TimeMs() int64 { return r.timeMs }

// Len is the number of members.
func (r *Ring) Len() int { return len(r.members) }

// Members returns copies of every member, sorted by ID. Tokens slices are shared and read-only.
func (r *Ring) Members() []Member { return slices.Clone(r.members) }

// MemberAt returns a pointer to the i-th member in ID order; it must be treated as read-only.
func (r *Ring) MemberAt(i int) *Member { return &r.members[i] }

// Member returns a copy of the member with the given id (Tokens shared, read-only).
func (r *Ring) Member(id MemberID) (Member, bool) {
	i, ok := r.find(id)
	if !ok {
		return Member{}, false
	}
	return r.members[i], true
}

// Ownership returns the fraction of the hash space, from 0 to 1, that the member owns.
func (r *Ring) Ownership(id MemberID) float64 {
	i, ok := r.find(id)
	if !ok {
		return 0
	}
	return r.ownership[i]
}

// NumTokens is the number of tokens owned by all members together.
func (r *Ring) NumTokens() int { return len(r.tokens) }

// Owner returns the member owning token t, if any.
func (r *Ring) Owner(t Token) (MemberID, bool) {
	i, ok := slices.BinarySearch(r.tokens, t)
	if !ok {
		return "", false
	}
	return r.members[r.owners[i]].ID, true
}

// CountByState returns how many members are in each state, with unhealthy members (at ring time,
// against timeoutMs) counted separately under the key "UNHEALTHY" instead of their state, as Cortex's
// cortex_ring_members gauge does.
func (r *Ring) CountByState(timeoutMs int64) map[string]int {
	out := map[string]int{"ACTIVE": 0, "LEAVING": 0, "PENDING": 0, "JOINING": 0, "UNHEALTHY": 0}
	for i := range r.members {
		m := &r.members[i]
		if !m.Healthy(r.timeMs, timeoutMs) {
			out["UNHEALTHY"]++
			continue
		}
		out[m.State.String()]++
	}
	return out
}

func (r *Ring) find(id MemberID) (int, bool) {
	return slices.BinarySearchFunc(r.members, id, func(m Member, id MemberID) int {
		switch {
		case m.ID < id:
			return -1
		case m.ID > id:
			return 1
		}
		return 0
	})
}

// ReplicationSet appends to dst (reset to length 0) the members that should take a write for a key
// with the given hash: walking clockwise from the first token strictly greater than the hash, the
// first rf distinct members that are writable (ACTIVE and healthy at ring time). Members that are not
// writable are passed over and the walk goes on — the spill — so a member that cannot take writes is
// replaced, never added to: the set has at most rf members and the caller's quorum stays rf/2+1 of
// rf (cortex#1290 counted the extension in the quorum and failed writes while one ingester left).
//
// Fewer than rf members are returned when the ring has fewer writable members. The returned pointers
// point into the ring and must be treated as read-only. With a dst of capacity rf it does not allocate
// unless the walk passes more than 32 members that cannot take writes.
func (r *Ring) ReplicationSet(hash uint32, rf int, timeoutMs int64, dst []*Member) []*Member {
	dst = dst[:0]
	n := len(r.tokens)
	if n == 0 || rf <= 0 {
		return dst
	}
	start := sort.Search(n, func(i int) bool { return uint32(r.tokens[i]) > hash })
	// The members already considered are those in dst (writable) and those in skipped (not). Both are
	// small: a linear scan beats a map up to the tens of members a spill can visit. The walk ends once
	// every member that owns a token has been considered, so a ring with fewer than rf writable
	// members costs one pass over its owners, not a scan of every token.
	var skippedBuf [32]int32
	skipped := skippedBuf[:0]
	for k := 0; k < n && len(dst) < rf && len(dst)+len(skipped) < r.numOwners; k++ {
		i := start + k
		if i >= n {
			i -= n
		}
		o := r.owners[i]
		m := &r.members[o]
		if slices.Contains(dst, m) || slices.Contains(skipped, o) {
			continue
		}
		if m.Writable(r.timeMs, timeoutMs) {
			dst = append(dst, m)
		} else {
			skipped = append(skipped, o)
		}
	}
	return dst
}

// Quorum is the number of acknowledgements a write needs from a replication set of rf members.
func Quorum(rf int) int { return rf/2 + 1 }

// EffectiveRF caps the configured replication factor by the number of members that own tokens, so a
// cluster smaller than rf still accepts writes (a single node is a cluster of one).
func (r *Ring) EffectiveRF(rf int) int { return min(rf, r.numOwners) }

// rebuildTokens recomputes tokens, owners and ownership from members. It is called only when a token
// assignment or the member order changed; other changes share the previous arrays.
func (r *Ring) rebuildTokens() error {
	total := 0
	for i := range r.members {
		total += len(r.members[i].Tokens)
	}
	// Sort (token, owner) pairs packed into one uint64, token in the high half: a plain integer sort,
	// several times faster than sorting structs with a comparison function.
	all := make([]uint64, 0, total)
	for i := range r.members {
		for _, t := range r.members[i].Tokens {
			all = append(all, uint64(t)<<32|uint64(i))
		}
	}
	slices.Sort(all)
	tokens := make([]Token, len(all))
	owners := make([]int32, len(all))
	for i, e := range all {
		t, o := Token(e>>32), int32(uint32(e))
		if i > 0 && tokens[i-1] == t {
			return fmt.Errorf("%w: token %d owned by both %s and %s", ErrCorruptState, t,
				r.members[owners[i-1]].ID, r.members[o].ID)
		}
		tokens[i], owners[i] = t, o
	}
	ownership := make([]float64, len(r.members))
	if n := len(tokens); n > 0 {
		// The token t_i owns hashes in [t_{i-1}, t_i): its range is t_i - t_{i-1}, wrapping for i = 0.
		for i := range tokens {
			prev := tokens[(i+n-1)%n]
			span := uint64(uint32(tokens[i]) - uint32(prev)) // wraps modulo 2^32
			if n == 1 {
				span = 1 << 32
			}
			ownership[owners[i]] += float64(span)
		}
		for i := range ownership {
			ownership[i] /= math.Exp2(32)
		}
	}
	numOwners := 0
	for i := range r.members {
		if len(r.members[i].Tokens) > 0 {
			numOwners++
		}
	}
	r.tokens, r.owners, r.ownership, r.numOwners = tokens, owners, ownership, numOwners
	return nil
}

// Restore builds a ring from members (in any order), a ring time and the request memory, checking
// every invariant a committed ring holds. It is how a snapshot is loaded; a snapshot that breaks an
// invariant is refused with ErrCorruptState instead of being served.
func Restore(members []Member, timeMs int64, recent []Applied) (*Ring, error) {
	r := &Ring{timeMs: timeMs}
	r.members = make([]Member, len(members))
	for i := range members {
		r.members[i] = members[i].clone()
	}
	slices.SortFunc(r.members, func(a, b Member) int {
		switch {
		case a.ID < b.ID:
			return -1
		case a.ID > b.ID:
			return 1
		}
		return 0
	})
	for i := range r.members {
		m := &r.members[i]
		if i > 0 && r.members[i-1].ID == m.ID {
			return nil, fmt.Errorf("%w: member %s appears twice", ErrCorruptState, m.ID)
		}
		if err := validateMember(m.ID, m.RaftAddr, m.GRPCAddr, m.HTTPAddr, m.Zone); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrCorruptState, err)
		}
		if !m.State.Valid() {
			return nil, fmt.Errorf("%w: member %s has %s", ErrCorruptState, m.ID, m.State)
		}
		if len(m.Tokens) > MaxTokensPerMember {
			return nil, fmt.Errorf("%w: member %s has %d tokens, at most %d", ErrCorruptState, m.ID,
				len(m.Tokens), MaxTokensPerMember)
		}
		for k := 1; k < len(m.Tokens); k++ {
			if m.Tokens[k] <= m.Tokens[k-1] {
				return nil, fmt.Errorf("%w: member %s has unsorted or duplicate tokens (at index %d)",
					ErrCorruptState, m.ID, k)
			}
		}
		if m.State == PENDING && len(m.Tokens) > 0 {
			return nil, fmt.Errorf("%w: PENDING member %s owns tokens", ErrCorruptState, m.ID)
		}
	}
	for i := range r.members {
		m := &r.members[i]
		if m.HandoverPeer == "" {
			continue
		}
		p, ok := r.find(m.HandoverPeer)
		if !ok || r.members[p].HandoverPeer != m.ID || m.HandoverPeer == m.ID {
			return nil, fmt.Errorf("%w: member %s hands over to %s, which does not hand over back",
				ErrCorruptState, m.ID, m.HandoverPeer)
		}
		// Apply only pairs a LEAVING leaver with a JOINING joiner that owns no tokens (it receives
		// the leaver's in CompleteHandover); anything else would let hand-over commands misbehave.
		switch peer := &r.members[p]; {
		case m.State == LEAVING && peer.State == JOINING && len(peer.Tokens) == 0:
		case m.State == JOINING && peer.State == LEAVING && len(m.Tokens) == 0:
		default:
			return nil, fmt.Errorf("%w: hand-over between %s (%s, %d tokens) and %s (%s, %d tokens): want a LEAVING leaver and a JOINING joiner without tokens",
				ErrCorruptState, m.ID, m.State, len(m.Tokens), peer.ID, peer.State, len(peer.Tokens))
		}
	}
	if len(recent) > maxRecent {
		return nil, fmt.Errorf("%w: %d remembered requests, at most %d", ErrCorruptState, len(recent), maxRecent)
	}
	for i, a := range recent {
		if a.Code >= codeEnd || a.RequestID == "" || len(a.RequestID) > MaxRequestIDLen {
			return nil, fmt.Errorf("%w: remembered request %d (%q) has code %d", ErrCorruptState, i, a.RequestID, a.Code)
		}
	}
	r.recent = slices.Clone(recent)
	if err := r.rebuildTokens(); err != nil {
		return nil, err
	}
	return r, nil
}

// Recent returns the remembered request outcomes, oldest first, for snapshots.
func (r *Ring) Recent() []Applied { return slices.Clone(r.recent) }
