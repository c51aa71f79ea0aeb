package ringstate

import (
	"fmt"
	"slices"
)

// BalancedTokens returns n tokens for a member joining r that even out ownership, computed from r
// alone (the same committed ring gives the same tokens on every node, so a joiner's choice is
// reproducible and testable).
//
// The token t_i owns [t_{i-1}, t_i). A new token x placed inside a range [s, t) takes [s, x) for
// the joiner and leaves [x, t) with the range's owner. The joiner's target is an equal share,
// 2^32/(m+1) for m members holding tokens; each of its n tokens takes an equal part of what is
// still missing, always from the member that owns the most at that moment (from its largest
// range), so every token evens out the ring a little more: the richest members give, the joiner
// reaches its share exactly when the ranges allow it. On an empty ring the n tokens are evenly
// spaced.
//
// Sequential joins keep the ratio of the largest to the smallest ownership within a few percent
// (TestBalancedTokens_*: at most 1.1 from 3 to 300 members of 128 tokens; random tokens spread
// 1.3 to 2 and more). It fails when n is not in [1, MaxTokensPerMember] or the ring has too few
// ranges wide enough to split.
func (r *Ring) BalancedTokens(n int) (Tokens, error) {
	if n <= 0 || n > MaxTokensPerMember {
		return nil, fmt.Errorf("%w: want %d tokens, want 1 to %d", ErrInvalidTokens, n, MaxTokensPerMember)
	}
	const space = uint64(1) << 32
	if len(r.tokens) == 0 {
		out := make(Tokens, n)
		for k := range out {
			out[k] = Token(uint64(k) * space / uint64(n))
		}
		return out, nil
	}
	// span is one range [start, start+length) (mod 2^32) and the member that owns it; owner -1 is
	// the joiner.
	type span struct {
		start  uint64
		length uint64
		owner  int32
	}
	spans := make([]span, len(r.tokens))
	own := make([]uint64, len(r.members))
	for i, t := range r.tokens {
		prev := r.tokens[(i+len(r.tokens)-1)%len(r.tokens)]
		l := uint64(uint32(t) - uint32(prev)) // wraps modulo 2^32
		if len(r.tokens) == 1 {
			l = space
		}
		spans[i] = span{start: uint64(prev), length: l, owner: r.owners[i]}
		own[r.owners[i]] += l
	}
	holders := 0
	for _, o := range own {
		if o > 0 {
			holders++
		}
	}
	// byOwner indexes each member's spans, so that a step looks at the members and then at one
	// member's spans, not at every span of the ring.
	byOwner := make([][]int, len(r.members))
	for i, s := range spans {
		byOwner[s.owner] = append(byOwner[s.owner], i)
	}
	remaining := space / uint64(holders+1)
	out := make(Tokens, 0, n)
	for k := range n {
		// The widest splittable range of the member that owns the most; ties go to the lower
		// member index, then the lower start, so the choice is deterministic.
		best := -1
		for m := range own {
			if own[m] == 0 || (best >= 0 && own[m] <= own[spans[best].owner]) {
				continue
			}
			for _, i := range byOwner[m] {
				s := spans[i]
				if s.length < 2 {
					continue
				}
				if best < 0 || spans[best].owner != int32(m) || s.length > spans[best].length ||
					s.length == spans[best].length && s.start < spans[best].start {
					best = i
				}
			}
		}
		if best < 0 {
			return nil, fmt.Errorf("%w: no range of the ring is wide enough for token %d of %d", ErrInvalidTokens, k+1, n)
		}
		s := spans[best]
		take := max(remaining/uint64(n-k), 1)
		take = min(take, s.length-1)
		x := (s.start + take) % space
		out = append(out, Token(x))
		own[s.owner] -= take
		remaining -= min(take, remaining)
		spans[best] = span{start: x, length: s.length - take, owner: s.owner}
	}
	slices.Sort(out)
	return out, nil
}

// OwnershipSpread is the ratio of the largest to the smallest ownership among the members that
// own tokens: 1 for a perfectly even ring, 0 when no member owns any.
func (r *Ring) OwnershipSpread() float64 {
	lo, hi := 2.0, 0.0
	for i := range r.members {
		if len(r.members[i].Tokens) == 0 {
			continue
		}
		lo, hi = min(lo, r.ownership[i]), max(hi, r.ownership[i])
	}
	if hi == 0 || lo == 0 {
		return 0
	}
	return hi / lo
}
