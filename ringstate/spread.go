package ringstate

import (
	"errors"
	"fmt"
)

// ErrSpread refuses a token claim that would make ownership more uneven than the bound allows
// (CheckClaimSpread).
var ErrSpread = errors.New("ringstate: the claim would make ownership too uneven")

// MinMembersForSpread is the number of token owners (per zone, under zone-aware placement) below
// which CheckClaimSpread lets every claim through: one or two members cannot be balanced by the
// joiner's choice alone, and the bound is for 3 members and up.
const MinMembersForSpread = 3

// PlacementSpread is the ownership spread that decides load under p: without zone awareness the
// ring's OwnershipSpread; with it, the largest OwnershipSpread of a zone's sub-ring (the ring of
// that zone's members alone, whose ownership is each member's share of its zone's copy of every
// series), over the zones with at least MinMembersForSpread token owners. 0 when no such ring or
// zone exists.
func (r *Ring) PlacementSpread(p Placement) float64 {
	if !p.ZoneAware {
		if r.numOwners < MinMembersForSpread {
			return 0
		}
		return r.OwnershipSpread()
	}
	byZone := map[string][]Member{}
	for i := range r.members {
		if m := r.members[i]; len(m.Tokens) > 0 {
			m.HandoverPeer = "" // the peer may be in another zone: the sub-ring is only for shares
			byZone[m.Zone] = append(byZone[m.Zone], m)
		}
	}
	worst := 0.0
	for _, ms := range byZone {
		if len(ms) < MinMembersForSpread {
			continue
		}
		sub, err := Restore(ms, r.timeMs, nil)
		if err != nil { // cannot happen: a subset of a valid ring's members is valid
			continue
		}
		worst = max(worst, sub.OwnershipSpread())
	}
	return worst
}

// CheckClaimSpread decides whether the leader proposes cmd, a claim of tokens: it refuses (an error
// wrapping ErrSpread) a claim after which the placement spread (PlacementSpread) exceeds maxSpread
// and is worse than before the claim. A claim that keeps the ring within the bound, or improves an
// already uneven ring (a balanced joiner on a ring of random tokens), passes, and so does a member
// claiming back the tokens it holds. maxSpread ≤ 0 disables the check; commands other than
// OpClaimTokens pass. Pure: r is the leader's applied ring, cmd is applied to a copy at r's time.
//
// It is a proposal-time check, not part of Apply: concurrent claims are each judged against the
// ring before the other, so the bound is kept per claim, not transactionally — the joiners'
// balanced tokens keep the ring well inside it, and the check stops what does not come from them
// (random tokens, a hand-edited tokens file).
//
// Two kinds of claim always pass, or a ring could be stuck with no way back: a claim on a ring (or
// zone) too small to judge before it (PlacementSpread 0: it is growing back to MinMembersForSpread
// owners, and the joiner's balanced tokens are the best it can do there), and a member replacing
// tokens it already owns (a restart with another -ring.num-tokens: trimmed or topped up, its share
// moves, and refusing would keep the old count for ever).
func (r *Ring) CheckClaimSpread(cmd Command, p Placement, maxSpread float64) error {
	if maxSpread <= 0 || cmd.Op != OpClaimTokens {
		return nil
	}
	if m, ok := r.Member(cmd.Member); ok && len(m.Tokens) > 0 {
		return nil
	}
	zone := ""
	if m, ok := r.Member(cmd.Member); ok {
		zone = m.Zone
	}
	before := r.claimSpread(p, zone)
	if before == 0 {
		return nil
	}
	next, _, err := r.Apply(cmd, r.timeMs)
	if err != nil {
		return nil // Apply refuses it with its own, better reason
	}
	after := next.claimSpread(p, zone)
	if after <= maxSpread || after <= before {
		return nil
	}
	scope := "the ring"
	if p.ZoneAware {
		scope = fmt.Sprintf("zone %q", zone)
	}
	return fmt.Errorf("%w: %s's %d tokens would make the largest ownership %.3g times the smallest in %s (from %.3g), over the bound of %.3g (-ring.max-ownership-spread): claim balanced tokens (-ring.token-generation-strategy=balanced) or fix the tokens file",
		ErrSpread, cmd.Member, len(cmd.Tokens), after, scope, before, maxSpread)
}

// claimSpread is the spread a claim by a member of zone can change: the ring's, or under zone
// awareness that of zone's sub-ring (the other zones' shares do not move); 0 when it has fewer than
// MinMembersForSpread token owners.
func (r *Ring) claimSpread(p Placement, zone string) float64 {
	if !p.ZoneAware {
		return r.PlacementSpread(p)
	}
	var ms []Member
	for i := range r.members {
		if m := r.members[i]; m.Zone == zone && len(m.Tokens) > 0 {
			m.HandoverPeer = ""
			ms = append(ms, m)
		}
	}
	if len(ms) < MinMembersForSpread {
		return 0
	}
	sub, err := Restore(ms, r.timeMs, nil)
	if err != nil {
		return 0
	}
	return sub.OwnershipSpread()
}
