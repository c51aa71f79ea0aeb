package ingester

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"

	"github.com/raftingest/raftingest/distributor"
	"github.com/raftingest/raftingest/ringstate"
)

// leaveRing builds a ring of n ACTIVE members m0..m{n-1} with 128 random tokens each, m0 LEAVING.
func leaveRing(t *testing.T, n int) *ringstate.Ring {
	t.Helper()
	r, _, err := activeRing(t, n).Apply(ringstate.Command{Op: ringstate.OpLeave, Member: "m0"}, 1_000)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// activeRing is leaveRing's ring before m0 leaves: every member ACTIVE.
func activeRing(t *testing.T, n int) *ringstate.Ring {
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
	return r
}

// TestLeavePlacement checks the flush fallback's placement against what the leave must achieve,
// on the replication sets the distributor uses (ReplicationSet, with the distributor's series
// hash) before the leave (m0 ACTIVE) and after it (m0 removed): a series whose set held m0 goes to
// exactly the member in the set after that was not in the set before, so the set after holds the
// series on every member (RF copies, none twice); with that member skipped it goes to a member
// outside both the old set and the leaver; in a ring of RF members (the set after is the set
// before less m0) to a member of the set after; with everybody skipped, nowhere. Across many
// series every other member takes a share.
func TestLeavePlacement(t *testing.T) {
	const rf = 3
	for _, n := range []int{5, 8} {
		before := activeRing(t, n)
		r := leaveRing(t, n)
		after, _, err := before.Apply(ringstate.Command{Op: ringstate.OpRemove, Member: "m0"}, 1_000)
		if err != nil {
			t.Fatal(err)
		}
		place := leavePlacement(r, "m0", ringstate.Placement{RF: rf}, 0)
		none := func(string) bool { return false }
		got := map[string]int{}
		moved := 0
		for i := range 600 {
			lset := labels.FromStrings("__name__", "up", "instance", fmt.Sprintf("host-%d", i))
			var ls []distributor.Label
			lset.Range(func(l labels.Label) { ls = append(ls, distributor.Label{Name: l.Name, Value: l.Value}) })
			h := distributor.SeriesHash("t1", ls)
			setBefore := memberIDs(before.ReplicationSet(h, rf, 0, nil))
			setAfter := memberIDs(after.ReplicationSet(h, rf, 0, nil))
			if !slices.Contains(setBefore, "m0") {
				continue // m0 never held it as a replica: not its copy to move
			}
			moved++
			var entering []string
			for _, id := range setAfter {
				if !slices.Contains(setBefore, id) {
					entering = append(entering, id)
				}
			}
			if len(entering) != 1 {
				t.Fatalf("n=%d series %s: sets %v before and %v after: want one member entering", n, lset, setBefore, setAfter)
			}
			tg, ok := place("t1", lset, none)
			if !ok || tg.ID != entering[0] {
				t.Fatalf("n=%d series %s went to %+v (%v); want %s, which enters its set (%v -> %v)", n, lset, tg, ok,
					entering[0], setBefore, setAfter)
			}
			if m, _ := r.Member(ringstate.MemberID(tg.ID)); tg.Addr != m.GRPCAddr {
				t.Fatalf("n=%d series %s: target %+v, want the member's gRPC address %s", n, lset, tg, m.GRPCAddr)
			}
			// Holders after the move: the set before less m0, plus the target: exactly the set after.
			holders := append(slices.DeleteFunc(slices.Clone(setBefore), func(id string) bool { return id == "m0" }), tg.ID)
			slices.Sort(holders)
			if want := slices.Sorted(slices.Values(setAfter)); !slices.Equal(holders, want) {
				t.Fatalf("n=%d series %s is held by %v after the move, want its set %v", n, lset, holders, want)
			}
			got[tg.ID]++
			// The entering member skipped: a member that holds no copy yet.
			tg2, ok := place("t1", lset, func(id string) bool { return id == entering[0] })
			if !ok || tg2.ID == entering[0] || tg2.ID == "m0" || slices.Contains(setBefore, tg2.ID) {
				t.Fatalf("n=%d series %s with %s skipped went to %+v (%v); want a member outside %v", n, lset, entering[0], tg2, ok, setBefore)
			}
			if _, ok := place("t1", lset, func(id string) bool { return id != "m0" }); ok {
				t.Fatalf("n=%d series %s placed with every other member skipped", n, lset)
			}
		}
		if moved == 0 || len(got) != n-1 {
			t.Fatalf("n=%d: %d series moved, to %v: want each of the %d other members to take a share", n, moved, got, n-1)
		}
	}

	// A ring of RF members: nobody enters a set; the copy goes to a member of the set after.
	before := activeRing(t, rf)
	small := leaveRing(t, rf)
	after, _, err := before.Apply(ringstate.Command{Op: ringstate.OpRemove, Member: "m0"}, 1_000)
	if err != nil {
		t.Fatal(err)
	}
	sp := leavePlacement(small, "m0", ringstate.Placement{RF: rf}, 0)
	for i := range 50 {
		lset := labels.FromStrings("__name__", "up", "instance", fmt.Sprintf("host-%d", i))
		var ls []distributor.Label
		lset.Range(func(l labels.Label) { ls = append(ls, distributor.Label{Name: l.Name, Value: l.Value}) })
		setAfter := memberIDs(after.ReplicationSet(distributor.SeriesHash("t1", ls), rf, 0, nil))
		tg, ok := sp("t1", lset, func(string) bool { return false })
		if !ok || !slices.Contains(setAfter, tg.ID) {
			t.Fatalf("in a ring of RF members series %s went to %+v, %v; want one of its set after %v", lset, tg, ok, setAfter)
		}
	}
}

func memberIDs(ms []*ringstate.Member) []string {
	out := make([]string, 0, len(ms))
	for _, m := range ms {
		out = append(out, string(m.ID))
	}
	return out
}

// TestMoveRetryWait: a leave whose block move keeps failing retries it less and less often (5s,
// doubling, at most 5 minutes) — the lifecycle alone retried every 5s at most, re-sending every
// block before the one that failed each time.
func TestMoveRetryWait(t *testing.T) {
	want := []time.Duration{0, 5 * time.Second, 10 * time.Second, 20 * time.Second, 40 * time.Second, 80 * time.Second,
		160 * time.Second, 5 * time.Minute, 5 * time.Minute}
	for n, w := range want {
		if got := moveRetryWait(n); got != w {
			t.Errorf("moveRetryWait(%d) = %s, want %s", n, got, w)
		}
	}
	if got := moveRetryWait(1000); got != 5*time.Minute {
		t.Errorf("moveRetryWait(1000) = %s, want 5m", got)
	}
}
