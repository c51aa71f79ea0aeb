package ringstate

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
)

const zoneTimeout = 10_000 // heartbeat timeout of the zone tests: randomRing's heartbeats are 0–20 s old

// withZones returns r with each member given one of nz zones at random (every zone used when the
// ring has at least nz members).
func withZones(t testing.TB, rng *rand.Rand, r *Ring, nz int) *Ring {
	t.Helper()
	ms := r.Members()
	perm := rng.Perm(len(ms))
	for k, i := range perm {
		z := k
		if k >= nz {
			z = rng.IntN(nz)
		}
		ms[i].Zone = fmt.Sprintf("zone-%c", 'a'+z%nz)
	}
	out, err := Restore(ms, r.TimeMs(), nil)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// without returns r without the members keep rejects (their tokens gone with them).
func without(t testing.TB, r *Ring, drop func(*Member) bool) *Ring {
	t.Helper()
	var ms []Member
	for _, m := range r.Members() {
		if !drop(&m) {
			ms = append(ms, m)
		}
	}
	out, err := Restore(ms, r.TimeMs(), nil)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// sortedIDs is the sorted ids of ms.
func sortedIDs(ms []*Member) []MemberID {
	out := ids(ms)
	slices.Sort(out)
	return out
}

// zring is a ring of the given members at ring time 100 s, healthy unless given a heartbeat.
func zring(t *testing.T, spec ...Member) *Ring {
	t.Helper()
	const now = 100_000
	for i := range spec {
		if spec[i].RaftAddr == "" {
			spec[i].RaftAddr = fmt.Sprintf("10.0.0.%d:7000", i+1)
		}
		if spec[i].HeartbeatMs == 0 {
			spec[i].HeartbeatMs = now
		}
	}
	r, err := Restore(spec, now, nil)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestReplicationSetZoneAwareTable(t *testing.T) {
	const dead = 1 // 99.999 s before ring time: unhealthy
	// Tokens interleave: a1 10, b1 20, a2 30, c1 40, b2 50, c2 60 (then wrap).
	base := func() []Member {
		return []Member{
			{ID: "a1", Zone: "a", State: ACTIVE, Tokens: Tokens{10}},
			{ID: "b1", Zone: "b", State: ACTIVE, Tokens: Tokens{20}},
			{ID: "a2", Zone: "a", State: ACTIVE, Tokens: Tokens{30}},
			{ID: "c1", Zone: "c", State: ACTIVE, Tokens: Tokens{40}},
			{ID: "b2", Zone: "b", State: ACTIVE, Tokens: Tokens{50}},
			{ID: "c2", Zone: "c", State: ACTIVE, Tokens: Tokens{60}},
		}
	}
	set := func(ms []Member, f func(m *Member)) []Member {
		for i := range ms {
			f(&ms[i])
		}
		return ms
	}
	cases := []struct {
		name    string
		members []Member
		hash    uint32
		rf      int
		want    []MemberID // sorted
		wantOff []MemberID // zone-unaware, sorted
	}{
		{"healthy: one per zone, skipping a2", base(), 5, 3, []MemberID{"a1", "b1", "c1"}, []MemberID{"a1", "a2", "b1"}},
		{"a1 unhealthy: its zone's next (a2) replaces it", set(base(), func(m *Member) {
			if m.ID == "a1" {
				m.HeartbeatMs = dead
			}
		}), 5, 3, []MemberID{"a2", "b1", "c1"}, []MemberID{"a2", "b1", "c1"}},
		{"b1 LEAVING: b2 replaces it, not a2", set(base(), func(m *Member) {
			if m.ID == "b1" {
				m.State = LEAVING
			}
		}), 5, 3, []MemberID{"a1", "b2", "c1"}, []MemberID{"a1", "a2", "c1"}},
		{"zone c down: one per live zone, two members", set(base(), func(m *Member) {
			if m.Zone == "c" {
				m.HeartbeatMs = dead
			}
		}), 5, 3, []MemberID{"a1", "b1"}, []MemberID{"a1", "a2", "b1"}},
		{"zones b and c down: one member", set(base(), func(m *Member) {
			if m.Zone != "a" {
				m.HeartbeatMs = dead
			}
		}), 5, 3, []MemberID{"a1"}, []MemberID{"a1", "a2"}},
		{"wrap-around from the last token", base(), 60, 3, []MemberID{"a1", "b1", "c1"}, []MemberID{"a1", "a2", "b1"}},
		{"rf 2 from c2", base(), 55, 2, []MemberID{"a1", "c2"}, []MemberID{"a1", "c2"}},
		{"rf above the zones: capped by zones", base(), 5, 5, []MemberID{"a1", "b1", "c1"}, []MemberID{"a1", "a2", "b1", "b2", "c1"}},
		{"empty zone is a zone of its own", set(base(), func(m *Member) {
			if m.ID == "a2" {
				m.Zone = ""
			}
		}), 5, 3, []MemberID{"a1", "a2", "b1"}, []MemberID{"a1", "a2", "b1"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := zring(t, c.members...)
			got := sortedIDs(r.ReplicationSetFor(c.hash, Placement{RF: c.rf, ZoneAware: true}, 60_000, nil))
			if !slices.Equal(got, c.want) {
				t.Errorf("zone-aware set %v, want %v", got, c.want)
			}
			off := sortedIDs(r.ReplicationSetFor(c.hash, Placement{RF: c.rf}, 60_000, nil))
			if !slices.Equal(off, c.wantOff) {
				t.Errorf("zone-unaware set %v, want %v", off, c.wantOff)
			}
			if old := sortedIDs(r.ReplicationSet(c.hash, c.rf, 60_000, nil)); !slices.Equal(old, off) {
				t.Errorf("ReplicationSet %v differs from the zone-unaware Placement's %v", old, off)
			}
		})
	}
}

func TestEffectiveRFForZones(t *testing.T) {
	r := zring(t,
		Member{ID: "a1", Zone: "a", State: ACTIVE, Tokens: Tokens{10}},
		Member{ID: "a2", Zone: "a", State: ACTIVE, Tokens: Tokens{20}},
		Member{ID: "b1", Zone: "b", State: ACTIVE, Tokens: Tokens{30}},
		Member{ID: "c1", Zone: "c", State: PENDING}, // owns no token: its zone does not count
	)
	if got := r.EffectiveRFFor(Placement{RF: 3, ZoneAware: true}); got != 2 {
		t.Errorf("zone-aware effective rf %d, want 2 (zones a and b own tokens)", got)
	}
	if got := r.EffectiveRFFor(Placement{RF: 3}); got != 3 {
		t.Errorf("zone-unaware effective rf %d, want 3", got)
	}
}

// zonesWithWritable returns the distinct zones of the writable token owners.
func zonesWithWritable(r *Ring, timeoutMs int64) []string {
	var zs []string
	for i := range r.Len() {
		m := r.MemberAt(i)
		if len(m.Tokens) > 0 && m.Writable(r.TimeMs(), timeoutMs) && !slices.Contains(zs, m.Zone) {
			zs = append(zs, m.Zone)
		}
	}
	return zs
}

// TestReplicationSetZoneAwareProperties checks, on random rings with 1–5 zones, random states and
// health: the set is writable members, one per zone, at most rf; it is full (rf members) whenever rf
// zones have writable members, and otherwise holds every such zone; an unwritable member is exactly
// an absent one (the set is the same on the ring without the unwritable members); with exactly rf
// zones, each natural member (health aside) that cannot take writes is replaced within its zone
// whenever its zone has a writable member.
func TestReplicationSetZoneAwareProperties(t *testing.T) {
	rng := rand.New(rand.NewPCG(16, 3))
	iters := 300
	if raceEnabled {
		iters = 80
	}
	for it := range iters {
		nz := 1 + rng.IntN(5)
		r := withZones(t, rng, randomRing(t, rng), nz)
		rf := 1 + rng.IntN(4)
		p := Placement{RF: rf, ZoneAware: true}
		live := zonesWithWritable(r, zoneTimeout)
		writableOnly := without(t, r, func(m *Member) bool { return !m.Writable(r.TimeMs(), zoneTimeout) })
		exactZones := r.ownerZones() == rf
		for range 50 {
			h := rng.Uint32()
			set := r.ReplicationSetFor(h, p, zoneTimeout, nil)
			var zs []string
			for _, m := range set {
				if !m.Writable(r.TimeMs(), zoneTimeout) {
					t.Fatalf("iter %d: %s in the set is not writable", it, m.ID)
				}
				if slices.Contains(zs, m.Zone) {
					t.Fatalf("iter %d: two members of zone %q in %v", it, m.Zone, sortedIDs(set))
				}
				zs = append(zs, m.Zone)
			}
			if want := min(rf, len(live)); len(set) != want {
				t.Fatalf("iter %d: set %v of %d members, want %d (rf %d, %d zones with writable members)",
					it, sortedIDs(set), len(set), want, rf, len(live))
			}
			if got := sortedIDs(writableOnly.ReplicationSetFor(h, p, zoneTimeout, nil)); !slices.Equal(got, sortedIDs(set)) {
				t.Fatalf("iter %d hash %d: set %v, but %v on the ring without its unwritable members", it, h, sortedIDs(set), got)
			}
			if exactZones {
				// Health aside, the set would be the natural one; each of its members that cannot take
				// writes is replaced by a member of its own zone when that zone has a writable one.
				nat := r.naturalSet(r.startOf(h), Placement{RF: rf, ZoneAware: true}, nil)
				for _, o := range nat {
					nm := r.MemberAt(int(o))
					if !slices.Contains(live, nm.Zone) {
						continue
					}
					if !slices.Contains(zs, nm.Zone) {
						t.Fatalf("iter %d: natural member %s's zone %q has writable members but none is in %v", it, nm.ID, nm.Zone, sortedIDs(set))
					}
				}
			}
		}
		// Zone-unaware placement is ReplicationSet exactly.
		for range 20 {
			h := rng.Uint32()
			a := r.ReplicationSetFor(h, Placement{RF: rf}, zoneTimeout, nil)
			b := r.ReplicationSet(h, rf, zoneTimeout, nil)
			if !slices.Equal(a, b) {
				t.Fatalf("iter %d: zone-unaware Placement %v, ReplicationSet %v", it, sortedIDs(a), sortedIDs(b))
			}
		}
	}
}

// startOf is the token index ReplicationSet's walk for hash starts at.
func (r *Ring) startOf(h uint32) int {
	for i, tok := range r.tokens {
		if uint32(tok) > h {
			return i
		}
	}
	return 0
}

// TestZoneAwareSuccessorsAgreeWithRemoval checks on random zoned rings that a leaver's successors,
// computed while it is LEAVING, are exactly what removing it does to the zone-aware replication
// sets: for every range, the set after removal is the set with the leaver (counted writable) minus
// the leaver plus LeaveSuccessorFor's successor, and SuccessorsFor is the union of those successors.
func TestZoneAwareSuccessorsAgreeWithRemoval(t *testing.T) {
	rng := rand.New(rand.NewPCG(16, 4))
	iters := 200
	if raceEnabled {
		iters = 50
	}
	checked := 0
	for it := range iters {
		r := withZones(t, rng, randomRing(t, rng), 1+rng.IntN(5))
		rf := 1 + rng.IntN(4)
		p := Placement{RF: rf, ZoneAware: true}
		var owners []MemberID
		for i := range r.Len() {
			if len(r.MemberAt(i).Tokens) > 0 {
				owners = append(owners, r.MemberAt(i).ID)
			}
		}
		if len(owners) == 0 {
			continue
		}
		leaver := owners[rng.IntN(len(owners))]
		// The leaver is LEAVING and healthy as it asks; before it left it was ACTIVE.
		var ms []Member
		for _, m := range r.Members() {
			if m.ID == leaver {
				m.State, m.HeartbeatMs = LEAVING, r.TimeMs()
			}
			ms = append(ms, m)
		}
		leaving, err := Restore(ms, r.TimeMs(), nil)
		if err != nil {
			t.Fatal(err)
		}
		after := without(t, leaving, func(m *Member) bool { return m.ID == leaver })
		succs := leaving.SuccessorsFor(leaver, p, zoneTimeout)
		var union []MemberID
		for _, tok := range leaving.tokens {
			h := uint32(tok) // starts the walk at the next token: every range once
			old, succ := leaving.LeaveSuccessorFor(leaver, h, p, zoneTimeout, nil, nil)
			if !slices.ContainsFunc(old, func(m *Member) bool { return m.ID == leaver }) {
				if succ != nil {
					t.Fatalf("iter %d: a successor %s for a set %v without the leaver", it, succ.ID, sortedIDs(old))
				}
				continue
			}
			checked++
			want := sortedIDs(after.ReplicationSetFor(h, p, zoneTimeout, nil))
			var got []MemberID
			for _, m := range old {
				if m.ID != leaver {
					got = append(got, m.ID)
				}
			}
			if succ != nil {
				got = append(got, succ.ID)
				if !slices.Contains(union, succ.ID) {
					union = append(union, succ.ID)
				}
			}
			slices.Sort(got)
			if !slices.Equal(got, want) {
				t.Fatalf("iter %d hash %d: old %v minus %s plus successor %v, but after removal the set is %v",
					it, h, sortedIDs(old), leaver, succ, want)
			}
			// A successor that cannot take the copy: the next candidate holds no copy yet either.
			if succ != nil {
				old2, succ2 := leaving.LeaveSuccessorFor(leaver, h, p, zoneTimeout, func(id MemberID) bool { return id == succ.ID }, nil)
				if !slices.Equal(sortedIDs(old2), sortedIDs(old)) {
					t.Fatalf("iter %d: skip changed old: %v vs %v", it, sortedIDs(old2), sortedIDs(old))
				}
				if succ2 != nil && (succ2.ID == succ.ID || slices.Contains(old, succ2)) {
					t.Fatalf("iter %d: after skipping %s the successor is %s (old %v)", it, succ.ID, succ2.ID, sortedIDs(old))
				}
			}
		}
		slices.Sort(union)
		if !slices.Equal(union, succs) {
			t.Fatalf("iter %d: SuccessorsFor %v, union of LeaveSuccessorFor %v", it, succs, union)
		}
	}
	if checked < 100 {
		t.Fatalf("only %d ranges held the leaver: the test checks too little", checked)
	}
}

// TestAutoForgetZoneAware: the co-replicas AutoForgetFor checks are the zone-aware sets. On a ring
// a1 b1 a2 c1 (one token each, in that order) with RF 3, a1's zone-aware sets are {a1,b1,c1},
// {c1,a1,b1} and {b1,a2,c1}... a2 never shares a zone-aware set with a1, so a2 unhealthy does not
// block forgetting a1 zone-aware, while zone-unaware a2 is in a1's set {a1,b1,a2}.
func TestAutoForgetZoneAware(t *testing.T) {
	const now = 1_000_000
	r := zring(t,
		Member{ID: "a1", Zone: "a", State: ACTIVE, Tokens: Tokens{10}, HeartbeatMs: now - 500_000},
		Member{ID: "b1", Zone: "b", State: ACTIVE, Tokens: Tokens{20}, HeartbeatMs: now},
		Member{ID: "a2", Zone: "a", State: LEAVING, Tokens: Tokens{30}, HeartbeatMs: now},
		Member{ID: "c1", Zone: "c", State: ACTIVE, Tokens: Tokens{40}, HeartbeatMs: now},
	)
	r.timeMs = now
	if id, why, ok := r.AutoForgetFor(Placement{RF: 3, ZoneAware: true}, 10_000, 100_000); !ok || id != "a1" {
		t.Errorf("zone-aware: got %q %v (%s), want a1 forgotten", id, ok, why)
	}
	if id, _, ok := r.AutoForgetFor(Placement{RF: 3}, 10_000, 100_000); ok {
		t.Errorf("zone-unaware: %s forgotten although a2 (LEAVING) shares a set with a1", id)
	}
	// Two zones own tokens: zone-aware RF is 2, below the 3 auto-forget needs.
	two := without(t, r, func(m *Member) bool { return m.Zone == "c" })
	if id, _, ok := two.AutoForgetFor(Placement{RF: 3, ZoneAware: true}, 10_000, 100_000); ok {
		t.Errorf("two zones: %s forgotten, want none (effective rf 2)", id)
	}
}

// zoneBenchRing is benchRing with members spread round-robin over zones; with zoneDown, every member
// of zone-c is unhealthy.
func zoneBenchRing(tb testing.TB, n, tokens, zones int, zoneDown bool) *Ring {
	r := benchRing(tb, n, tokens, false)
	ms := r.Members()
	for i := range ms {
		ms[i].Zone = fmt.Sprintf("zone-%c", 'a'+i%zones)
		if zoneDown && i%zones == 2 {
			ms[i].HeartbeatMs = r.TimeMs() - 120_000
		}
	}
	out, err := Restore(ms, r.TimeMs(), nil)
	if err != nil {
		tb.Fatal(err)
	}
	return out
}

func BenchmarkReplicationSetZoneAware(b *testing.B) {
	for _, c := range []struct {
		name     string
		n        int
		zoneDown bool
	}{{"120x128-3zones-rf3", 120, false}, {"120x128-3zones-rf3-zone-c-down", 120, true}, {"1002x128-3zones-rf3", 1002, false}} {
		b.Run(c.name, func(b *testing.B) {
			r := zoneBenchRing(b, c.n, 128, 3, c.zoneDown)
			p := Placement{RF: 3, ZoneAware: true}
			dst := make([]*Member, 0, 3)
			var h uint32
			b.ReportAllocs()
			for b.Loop() {
				h = h*1664525 + 1013904223
				dst = r.ReplicationSetFor(h, p, 60_000, dst)
			}
			if want := 3; c.zoneDown {
				want = 2
				if len(dst) != want {
					b.Fatalf("set %v, want %d members", sortedIDs(dst), want)
				}
			} else if len(dst) != want {
				b.Fatalf("set %v, want %d members", sortedIDs(dst), want)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N), "ns/lookup")
		})
	}
}

func TestReplicationSetZoneAwareNoAlloc(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates")
	}
	for _, down := range []bool{false, true} {
		r := zoneBenchRing(t, 120, 128, 3, down)
		dst := make([]*Member, 0, 3)
		h := uint32(1)
		allocs := testing.AllocsPerRun(1000, func() {
			h = h*1664525 + 1013904223
			dst = r.ReplicationSetFor(h, Placement{RF: 3, ZoneAware: true}, 60_000, dst)
		})
		if allocs != 0 {
			t.Errorf("zone down %v: %.1f allocations per lookup, want 0", down, allocs)
		}
	}
}
