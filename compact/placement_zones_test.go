package compact_test

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/prometheus/prometheus/model/labels"

	"github.com/raftingest/raftingest/compact"
	"github.com/raftingest/raftingest/ringstate"
)

// zonedRingOf is ringOf with each member registered in a zone: id → zone.
func zonedRingOf(t *testing.T, ids []string, zones []string) *ringstate.Ring {
	t.Helper()
	rng := rand.New(rand.NewPCG(12, 12))
	r := ringstate.New()
	for i, id := range ids {
		mid := ringstate.MemberID(id)
		r = applyAll(t, r, ringstate.Command{Op: ringstate.OpRegister, Member: mid, RaftAddr: fmt.Sprintf("127.0.0.1:%d", 7100+i), Zone: zones[i]})
		ts, err := r.FreeTokens(64, rng)
		if err != nil {
			t.Fatal(err)
		}
		r = applyAll(t, r, ringstate.Command{Op: ringstate.OpClaimTokens, Member: mid, Tokens: ts},
			ringstate.Command{Op: ringstate.OpActivate, Member: mid})
	}
	return r
}

// A zone-aware placement puts every series on one member of each zone — the distributor's set —
// and, while a whole zone cannot take writes, refuses (the compaction waits) instead of placing
// two copies in one zone or fewer than the effective RF.
func TestPlacement_ZoneAware(t *testing.T) {
	ids := []string{"a1", "a2", "b1", "b2", "c1", "c2"}
	zones := []string{"a", "a", "b", "b", "c", "c"}
	r := zonedRingOf(t, ids, zones)
	zoneOf := map[string]string{}
	for i, id := range ids {
		zoneOf[id] = zones[i]
	}
	p := ringstate.Placement{RF: 3, ZoneAware: true}
	place := compact.Placement(r, p, 60_000)
	sameZone := 0
	for i := range 200 {
		lset := labels.FromStrings("__name__", "m", "i", fmt.Sprint(i))
		got, err := place("t1", lset)
		if err != nil {
			t.Fatal(err)
		}
		seen := map[string]bool{}
		for _, id := range got {
			if seen[zoneOf[id]] {
				t.Fatalf("series %d placed on %v: two members of zone %s", i, got, zoneOf[id])
			}
			seen[zoneOf[id]] = true
		}
		if len(got) != 3 {
			t.Fatalf("series %d placed on %v, want 3 members", i, got)
		}
		// Zone-unaware, some series get two copies in one zone: the test tells the two apart.
		plain, err := compact.Placement(r, ringstate.Placement{RF: 3}, 60_000)("t1", lset)
		if err != nil {
			t.Fatal(err)
		}
		if zoneOf[plain[0]] == zoneOf[plain[1]] || zoneOf[plain[1]] == zoneOf[plain[2]] || zoneOf[plain[0]] == zoneOf[plain[2]] {
			sameZone++
		}
	}
	if sameZone == 0 {
		t.Fatal("no zone-unaware placement had two copies in one zone: the zone-aware check proves nothing")
	}
	// Zone c leaves: its members are LEAVING, so no series can have a copy in zone c.
	down := applyAll(t, r, ringstate.Command{Op: ringstate.OpLeave, Member: "c1"}, ringstate.Command{Op: ringstate.OpLeave, Member: "c2"})
	_, err := compact.Placement(down, p, 60_000)("t1", labels.FromStrings("__name__", "m"))
	if err == nil || !strings.Contains(err.Error(), "c1 is LEAVING") {
		t.Fatalf("zone c down: err %v, want a refusal naming c1 LEAVING", err)
	}
}
