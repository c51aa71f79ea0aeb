package scale

import (
	"cmp"
	"fmt"
	"slices"

	"github.com/raftingest/raftingest/ringstate"
)

// MemberID is the id of simulated member i, and Zone its zone: members are spread round-robin
// over zones zones.
func MemberID(i int) ringstate.MemberID { return ringstate.MemberID(fmt.Sprintf("ingester-%04d", i)) }

// Zone is the zone of simulated member (or voter) i of a cluster with zones zones.
func Zone(i, zones int) string { return fmt.Sprintf("zone-%c", 'a'+i%zones) }

// register is member i's Register command (addresses in 10.0.0.0/8, one per member).
func register(i, zones int) ringstate.Command {
	return ringstate.Command{Op: ringstate.OpRegister, Member: MemberID(i),
		RaftAddr: fmt.Sprintf("10.%d.%d.%d:9095", i/65536%256, i/256%256, i%256),
		GRPCAddr: fmt.Sprintf("10.%d.%d.%d:9096", i/65536%256, i/256%256, i%256),
		Zone:     Zone(i, zones), CommandVersion: ringstate.HeartbeatBatchCommandVersion}
}

// BuildRing builds, with ringstate alone (no Raft), the ring the simulation builds through Raft:
// members 0..n-1 register, claim ringstate's balanced tokens (n tokens each, computed from the ring
// committed before them) and activate, in order. The lookup benchmark runs on it, and the
// simulation checks that its committed ring has the same token assignment, so the benchmark
// measures the simulated ring.
func BuildRing(n, tokens, zones int) (*ringstate.Ring, error) {
	r := ringstate.New()
	var now int64 = 1_000_000
	apply := func(c ringstate.Command) error {
		now++
		next, _, err := r.Apply(c, now)
		if err != nil {
			return fmt.Errorf("scale: build ring: %s %s: %w", c.Op, c.Member, err)
		}
		r = next
		return nil
	}
	for i := range n {
		if err := apply(register(i, zones)); err != nil {
			return nil, err
		}
		ts, err := r.BalancedTokens(tokens)
		if err != nil {
			return nil, fmt.Errorf("scale: build ring: tokens for %s: %w", MemberID(i), err)
		}
		if err := apply(ringstate.Command{Op: ringstate.OpClaimTokens, Member: MemberID(i), Tokens: ts}); err != nil {
			return nil, err
		}
		if err := apply(ringstate.Command{Op: ringstate.OpActivate, Member: MemberID(i)}); err != nil {
			return nil, err
		}
	}
	return r, nil
}

// Spread is the ownership spread of r: the largest owned share of the hash space over the
// smallest, among members that own tokens (1 for a perfectly even ring; 0 for an empty one).
func Spread(r *ringstate.Ring) float64 {
	lo, hi := 2.0, 0.0
	for i := range r.Len() {
		m := r.MemberAt(i)
		if len(m.Tokens) == 0 {
			continue
		}
		o := r.Ownership(m.ID)
		lo, hi = min(lo, o), max(hi, o)
	}
	if hi == 0 {
		return 0
	}
	return hi / lo
}

// CoReplicas is, for each member of r, how many other members share a natural replication set
// (the first rf distinct owners clockwise from a token) with it: the members whose health
// ringstate's auto-forget requires before it forgets that member. Mean and max over members.
func CoReplicas(r *ringstate.Ring, rf int) (mean float64, most int) {
	type tok struct {
		t ringstate.Token
		o int
	}
	var all []tok
	for i := range r.Len() {
		for _, t := range r.MemberAt(i).Tokens {
			all = append(all, tok{t, i})
		}
	}
	if len(all) == 0 {
		return 0, 0
	}
	slices.SortFunc(all, func(a, b tok) int { return cmp.Compare(a.t, b.t) })
	shares := make([]map[int]bool, r.Len())
	for i := range shares {
		shares[i] = map[int]bool{}
	}
	set := make([]int, 0, rf)
	for start := range all {
		set = set[:0]
		for k := 0; k < len(all) && len(set) < rf; k++ {
			if o := all[(start+k)%len(all)].o; !slices.Contains(set, o) {
				set = append(set, o)
			}
		}
		for _, a := range set {
			for _, b := range set {
				if a != b {
					shares[a][b] = true
				}
			}
		}
	}
	total, owners := 0, 0
	for i, s := range shares {
		if len(r.MemberAt(i).Tokens) > 0 {
			total += len(s)
			owners++
			most = max(most, len(s))
		}
	}
	return float64(total) / float64(owners), most
}
