package ingester

import (
	"fmt"
	"math"
	"strings"
	"testing"

	"github.com/raftingest/raftingest/ringstate"
)

// limitsRing builds a ring of active ACTIVE members and stale ones (ACTIVE, last heartbeat at 1s,
// so unhealthy at ring time 100s against a 10s timeout), through ringstate's Apply.
func limitsRing(t *testing.T, active, stale int) *ringstate.Ring {
	t.Helper()
	r := ringstate.New()
	apply := func(c ringstate.Command, at int64) {
		t.Helper()
		next, _, err := r.Apply(c, at)
		if err != nil {
			t.Fatalf("apply %s %s: %v", c.Op, c.Member, err)
		}
		r = next
	}
	n := active + stale
	for i := range n {
		id := ringstate.MemberID(fmt.Sprintf("m%d", i))
		apply(ringstate.Command{Op: ringstate.OpRegister, Member: id, RaftAddr: fmt.Sprintf("127.0.0.1:%d", 7000+i), GRPCAddr: fmt.Sprintf("127.0.0.1:%d", 8000+i)}, 1000)
		var toks ringstate.Tokens
		for k := range 16 {
			toks = append(toks, ringstate.Token(uint32((k*n+i)*(math.MaxUint32/(16*n)))+1))
		}
		apply(ringstate.Command{Op: ringstate.OpClaimTokens, Member: id, Tokens: toks}, 1000)
		apply(ringstate.Command{Op: ringstate.OpActivate, Member: id}, 1000)
	}
	for i := range active {
		apply(ringstate.Command{Op: ringstate.OpHeartbeat, Member: ringstate.MemberID(fmt.Sprintf("m%d", i))}, 100_000)
	}
	return r
}

// TestLocalSeriesLimit: Mimir's conversion, global / N * RF with N the ACTIVE and healthy members
// and RF the effective replication factor; the smaller non-zero of it and the local limit applies.
func TestLocalSeriesLimit(t *testing.T) {
	const timeout = 10_000
	cases := []struct {
		name              string
		global, local, rf int
		active, stale     int
		nilRing           bool
		want              int
		sourceHas         string
	}{
		{"3 ingesters RF 3: the global limit", 150_000, 5_000_000, 3, 3, 0, false, 150_000, "150000 / 3 * 3"},
		{"30 ingesters RF 3", 150_000, 5_000_000, 3, 30, 0, false, 15_000, "across 30 ACTIVE ingesters"},
		{"single node: RF capped at 1", 150_000, 5_000_000, 3, 1, 0, false, 150_000, "replication factor 1"},
		{"unhealthy members do not count", 150_000, 0, 3, 3, 2, false, 150_000, "across 3 ACTIVE"},
		{"local smaller wins", 150_000, 1000, 3, 3, 0, false, 1000, "-ingester.max-series-per-tenant"},
		{"no global limit", 0, 7, 3, 3, 0, false, 7, "-ingester.max-series-per-tenant"},
		{"ring not known: global ignored", 150_000, 0, 3, 0, 0, true, 0, "-ingester.max-series-per-tenant"},
	}
	for _, tc := range cases {
		var r *ringstate.Ring
		if !tc.nilRing {
			r = limitsRing(t, tc.active, tc.stale)
		}
		got := localSeriesLimit(tc.global, tc.local, ringstate.Placement{RF: tc.rf}, "", r, timeout)
		if got.Max != tc.want || !strings.Contains(got.Source, tc.sourceHas) {
			t.Errorf("%s: %+v, want %d from %q", tc.name, got, tc.want, tc.sourceHas)
		}
	}
}

// TestLocalSeriesLimit_ZoneAware: under zone awareness a zone holds RF/Z of the series, spread over
// its own writable members, so the limit follows the member's zone, not the ring: the review's
// cases, zones of 3+3+3 with one member of zone a dead, and of 1+5+5.
func TestLocalSeriesLimit_ZoneAware(t *testing.T) {
	const timeout = 10_000
	build := func(zones []string, dead map[int]bool) *ringstate.Ring {
		r := ringstate.New()
		apply := func(c ringstate.Command, at int64) {
			t.Helper()
			next, _, err := r.Apply(c, at)
			if err != nil {
				t.Fatalf("apply %s %s: %v", c.Op, c.Member, err)
			}
			r = next
		}
		n := len(zones)
		for i, z := range zones {
			id := ringstate.MemberID(fmt.Sprintf("m%d", i))
			apply(ringstate.Command{Op: ringstate.OpRegister, Member: id, Zone: z, RaftAddr: fmt.Sprintf("127.0.0.1:%d", 7000+i), GRPCAddr: fmt.Sprintf("127.0.0.1:%d", 8000+i)}, 1000)
			var toks ringstate.Tokens
			for k := range 16 {
				toks = append(toks, ringstate.Token(uint32((k*n+i)*(math.MaxUint32/(16*n)))+1))
			}
			apply(ringstate.Command{Op: ringstate.OpClaimTokens, Member: id, Tokens: toks}, 1000)
			apply(ringstate.Command{Op: ringstate.OpActivate, Member: id}, 1000)
		}
		for i := range zones {
			if !dead[i] {
				apply(ringstate.Command{Op: ringstate.OpHeartbeat, Member: ringstate.MemberID(fmt.Sprintf("m%d", i))}, 100_000)
			}
		}
		return r
	}
	place := ringstate.Placement{RF: 3, ZoneAware: true}
	even := build([]string{"a", "b", "c", "a", "b", "c", "a", "b", "c"}, map[int]bool{0: true})
	if got := localSeriesLimit(90_000, 0, place, "a", even, timeout); got.Max != 45_000 || !strings.Contains(got.Source, `zone "a"`) {
		t.Errorf("zone a with one of its 3 members dead: %+v, want 90000 / 2 = 45000", got)
	}
	if got := localSeriesLimit(90_000, 0, place, "b", even, timeout); got.Max != 30_000 {
		t.Errorf("zone b, whole: %+v, want 90000 / 3 = 30000", got)
	}
	if got := localSeriesLimit(90_000, 0, ringstate.Placement{RF: 3}, "a", even, timeout); got.Max != 33_750 {
		t.Errorf("zone-unaware on the same ring: %+v, want 90000 / 8 * 3 = 33750", got)
	}
	lopsided := build([]string{"a", "b", "b", "b", "b", "b", "c", "c", "c", "c", "c"}, nil)
	if got := localSeriesLimit(90_000, 0, place, "a", lopsided, timeout); got.Max != 90_000 {
		t.Errorf("the only member of zone a: %+v, want every series, 90000", got)
	}
	if got := localSeriesLimit(90_000, 0, place, "b", lopsided, timeout); got.Max != 18_000 {
		t.Errorf("one of 5 in zone b: %+v, want 18000", got)
	}
}
