package ingester

import (
	"fmt"
	"slices"
	"testing"

	"github.com/prometheus/prometheus/model/labels"

	"github.com/raftingest/raftingest/distributor"
	"github.com/raftingest/raftingest/ringstate"
)

// inZones returns r with member mi in zone "zone-<i mod zones>".
func inZones(t *testing.T, r *ringstate.Ring, zones int) *ringstate.Ring {
	t.Helper()
	ms := r.Members()
	for i := range ms {
		var k int
		fmt.Sscanf(string(ms[i].ID), "m%d", &k)
		ms[i].Zone = fmt.Sprintf("zone-%d", k%zones)
	}
	out, err := ringstate.Restore(ms, r.TimeMs(), nil)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestLeavePlacement_ZoneAware: with zone awareness, the flush fallback sends each series m0 held
// to the member that enters its zone-aware set when m0 is gone — with 3 zones, the next member of
// m0's own zone — so the series keeps one copy per zone; a zone-unaware placement on the same ring
// would send some to a zone that holds a copy already.
func TestLeavePlacement_ZoneAware(t *testing.T) {
	const n, zones = 9, 3
	p := ringstate.Placement{RF: 3, ZoneAware: true}
	before := inZones(t, activeRing(t, n), zones)
	r := inZones(t, leaveRing(t, n), zones)
	after, _, err := before.Apply(ringstate.Command{Op: ringstate.OpRemove, Member: "m0"}, 1_000)
	if err != nil {
		t.Fatal(err)
	}
	zoneOf := func(id string) string { m, _ := r.Member(ringstate.MemberID(id)); return m.Zone }
	place := leavePlacement(r, "m0", p, 0)
	plain := leavePlacement(r, "m0", ringstate.Placement{RF: 3}, 0)
	none := func(string) bool { return false }
	moved, plainCrossZone := 0, 0
	for i := range 600 {
		lset := labels.FromStrings("__name__", "up", "instance", fmt.Sprintf("host-%d", i))
		var ls []distributor.Label
		lset.Range(func(l labels.Label) { ls = append(ls, distributor.Label{Name: l.Name, Value: l.Value}) })
		h := distributor.SeriesHash("t1", ls)
		setBefore := memberIDs(before.ReplicationSetFor(h, p, 0, nil))
		setAfter := memberIDs(after.ReplicationSetFor(h, p, 0, nil))
		if !slices.Contains(setBefore, "m0") {
			continue
		}
		moved++
		tg, ok := place("t1", lset, none)
		if !ok || zoneOf(tg.ID) != zoneOf("m0") {
			t.Fatalf("series %s went to %+v (%v), want a member of m0's zone %s", lset, tg, ok, zoneOf("m0"))
		}
		holders := append(slices.DeleteFunc(slices.Clone(setBefore), func(id string) bool { return id == "m0" }), tg.ID)
		slices.Sort(holders)
		if want := slices.Sorted(slices.Values(setAfter)); !slices.Equal(holders, want) {
			t.Fatalf("series %s is held by %v after the move, want its zone-aware set %v", lset, holders, want)
		}
		if tp, ok := plain("t1", lset, none); ok && zoneOf(tp.ID) != zoneOf("m0") {
			plainCrossZone++
		}
	}
	if moved == 0 || plainCrossZone == 0 {
		t.Fatalf("%d series moved, %d of them to another zone by the zone-unaware placement: the test tells nothing apart", moved, plainCrossZone)
	}
}
