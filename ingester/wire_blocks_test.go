package ingester

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/prometheus/prometheus/model/labels"

	"github.com/raftingest/raftingest/distributor"
	"github.com/raftingest/raftingest/ringstate"
)

// leaveRing builds a ring of n ACTIVE members m0..m{n-1} with 128 random tokens each, m0 LEAVING.
func leaveRing(t *testing.T, n int) *ringstate.Ring {
	t.Helper()
	rng := rand.New(rand.NewPCG(uint64(n), 1))
	r := ringstate.New()
	apply := func(c ringstate.Command) {
		t.Helper()
		next, _, err := r.Apply(c, 1_000)
		if err != nil {
			t.Fatalf("%s %s: %v", c.Op, c.Member, err)
		}
		r = next
	}
	for i := range n {
		id := ringstate.MemberID(fmt.Sprintf("m%d", i))
		apply(ringstate.Command{Op: ringstate.OpRegister, Member: id, RaftAddr: fmt.Sprintf("10.0.0.%d:7000", i+1),
			GRPCAddr: fmt.Sprintf("10.0.0.%d:9095", i+1)})
		toks, err := r.FreeTokens(128, rng)
		if err != nil {
			t.Fatal(err)
		}
		apply(ringstate.Command{Op: ringstate.OpClaimTokens, Member: id, Tokens: toks})
		apply(ringstate.Command{Op: ringstate.OpActivate, Member: id})
	}
	apply(ringstate.Command{Op: ringstate.OpLeave, Member: "m0"})
	return r
}

// TestLeavePlacement: the flush fallback's placement sends each series the leaver held to the one
// member that enters its replication set (ringstate's LeaveSuccessor, with the distributor's
// series hash); with that member skipped, to another member outside the set; in a ring of RF
// members (nobody enters a set) to another member of the set; with everybody skipped, nowhere.
// Across many series every other member takes a share — the load spreads — but each series goes
// to exactly one.
func TestLeavePlacement(t *testing.T) {
	const rf = 3
	r := leaveRing(t, 5)
	place := leavePlacement(r, "m0", rf, 0)
	none := func(string) bool { return false }
	got := map[string]int{}
	for i := range 300 {
		lset := labels.FromStrings("__name__", "up", "instance", fmt.Sprintf("host-%d", i))
		var ls []distributor.Label
		lset.Range(func(l labels.Label) { ls = append(ls, distributor.Label{Name: l.Name, Value: l.Value}) })
		old, succ := r.LeaveSuccessor("m0", distributor.SeriesHash("t1", ls), rf, 0, nil, nil)
		tg, ok := place("t1", lset, none)
		if !ok {
			t.Fatalf("series %s placed nowhere", lset)
		}
		inOld := slices.ContainsFunc(old, func(m *ringstate.Member) bool { return string(m.ID) == tg.ID })
		switch {
		case succ != nil && (tg.ID != string(succ.ID) || tg.Addr != succ.GRPCAddr):
			t.Fatalf("series %s went to %+v, want its successor %s", lset, tg, succ.ID)
		case succ == nil && (!inOld || tg.ID == "m0"):
			t.Fatalf("series %s without a successor went to %s, want another member of its set %v", lset, tg.ID, old)
		}
		got[tg.ID]++
		if succ == nil {
			continue
		}
		// The successor skipped: another member, outside the old set.
		tg2, ok := place("t1", lset, func(id string) bool { return id == string(succ.ID) })
		if !ok || tg2.ID == string(succ.ID) || tg2.ID == "m0" ||
			slices.ContainsFunc(old, func(m *ringstate.Member) bool { return string(m.ID) == tg2.ID }) {
			t.Fatalf("series %s with its successor %s skipped went to %+v (%v); want a member outside %v", lset, succ.ID, tg2, ok,
				func() []string {
					var ids []string
					for _, m := range old {
						ids = append(ids, string(m.ID))
					}
					return ids
				}())
		}
		if _, ok := place("t1", lset, func(id string) bool { return id != "m0" }); ok {
			t.Fatalf("series %s placed with every other member skipped", lset)
		}
	}
	if len(got) != 4 {
		t.Fatalf("the leaver's series went to %v: want each of the 4 other members to take a share", got)
	}

	small := leaveRing(t, 3)
	sp := leavePlacement(small, "m0", rf, 0)
	for i := range 50 {
		lset := labels.FromStrings("__name__", "up", "instance", fmt.Sprintf("host-%d", i))
		tg, ok := sp("t1", lset, none)
		if !ok || tg.ID == "m0" {
			t.Fatalf("in a ring of RF members series %s went to %+v, %v; want one of the 2 others", lset, tg, ok)
		}
	}
}
