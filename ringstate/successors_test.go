package ringstate

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
)

// activeRing builds a ring of ACTIVE members with the given tokens, through Apply.
func activeRing(t testing.TB, tokens map[MemberID][]Token) *Ring {
	t.Helper()
	ids := make([]MemberID, 0, len(tokens))
	for id := range tokens {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	r := New()
	for _, id := range ids {
		r = mustApply(t, r, register(id), claim(id, tokens[id]...), activate(id))
	}
	return r
}

// at applies cmd at ring time ms (after the ring's own), failing on a refusal.
func at(t testing.TB, r *Ring, ms int64, cmd Command) *Ring {
	t.Helper()
	next, _, err := r.Apply(cmd, ms)
	if err != nil {
		t.Fatalf("apply %s %s: %v", cmd.Op, cmd.Member, err)
	}
	return next
}

func TestSuccessors_Table(t *testing.T) {
	five := map[MemberID][]Token{"a": {10}, "b": {20}, "c": {30}, "d": {40}, "e": {50}}
	for _, tc := range []struct {
		name      string
		ring      func(t *testing.T) *Ring
		leaver    MemberID
		rf        int
		timeoutMs int64
		want      []MemberID
	}{
		{
			// Ranges starting at a's, b's and c's tokens hold c; d, e and a enter them. b is in all three
			// already.
			name: "five members one token each, c leaving", leaver: "c", rf: 3,
			ring: func(t *testing.T) *Ring { return mustApply(t, activeRing(t, five), leave("c")) },
			want: []MemberID{"a", "d", "e"},
		},
		{
			name: "the leaver's state does not matter (still ACTIVE)", leaver: "c", rf: 3,
			ring: func(t *testing.T) *Ring { return activeRing(t, five) },
			want: []MemberID{"a", "d", "e"},
		},
		{
			name: "rf 1: the next member takes its one range", leaver: "c", rf: 1,
			ring: func(t *testing.T) *Ring { return mustApply(t, activeRing(t, five), leave("c")) },
			want: []MemberID{"d"},
		},
		{
			name: "three members, rf 3: every one already replicates everything", leaver: "b", rf: 3,
			ring: func(t *testing.T) *Ring {
				return mustApply(t, activeRing(t, map[MemberID][]Token{"a": {1}, "b": {2}, "c": {3}}), leave("b"))
			},
			want: nil,
		},
		{
			name: "two leavers: the other leaver never enters", leaver: "c", rf: 3,
			ring: func(t *testing.T) *Ring { return mustApply(t, activeRing(t, five), leave("d"), leave("c")) },
			// s=a: a,b,c → e; s=b: b,c,e → a; s=c: c,e,a → b.
			want: []MemberID{"a", "b", "e"},
		},
		{
			name: "an unhealthy member is passed over", leaver: "c", rf: 3, timeoutMs: 1000,
			ring: func(t *testing.T) *Ring {
				r := mustApply(t, activeRing(t, five), leave("c"))
				now := r.TimeMs() + 5000
				for _, id := range []MemberID{"a", "b", "c", "e"} { // d's heartbeat is 5s old
					r = at(t, r, now, heartbeat(id))
				}
				return r
			},
			want: []MemberID{"a", "b", "e"},
		},
		{
			name: "PENDING and self-joining members never enter", leaver: "c", rf: 3,
			ring: func(t *testing.T) *Ring {
				r := mustApply(t, activeRing(t, five), register("p"), register("j"), claim("j", 35), leave("c"))
				return r
			},
			// j's token 35 sits between c and d, but j cannot take writes: as with five alone.
			want: []MemberID{"a", "d", "e"},
		},
		{
			name: "adjacent tokens of the leaver", leaver: "c", rf: 2,
			ring: func(t *testing.T) *Ring {
				return mustApply(t, activeRing(t, map[MemberID][]Token{"a": {10}, "b": {20}, "c": {30, 31}, "d": {40}}), leave("c"))
			},
			// s=b(20): b,c → d; s=c(30): c,d → a; s=c(31): c,d → a.
			want: []MemberID{"a", "d"},
		},
		{
			name: "unknown leaver", leaver: "zz", rf: 3,
			ring: func(t *testing.T) *Ring { return activeRing(t, five) },
		},
		{
			name: "leaver without tokens (PENDING)", leaver: "p", rf: 3,
			ring: func(t *testing.T) *Ring { return mustApply(t, activeRing(t, five), register("p")) },
		},
		{
			name: "rf 0", leaver: "c", rf: 0,
			ring: func(t *testing.T) *Ring { return activeRing(t, five) },
		},
		{
			name: "the leaver alone", leaver: "a", rf: 3,
			ring: func(t *testing.T) *Ring { return activeRing(t, map[MemberID][]Token{"a": {1, 2, 3}}) },
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := tc.ring(t).Successors(tc.leaver, tc.rf, tc.timeoutMs)
			if !slices.Equal(got, tc.want) {
				t.Fatalf("Successors(%s, rf %d) = %v, want %v", tc.leaver, tc.rf, got, tc.want)
			}
		})
	}
}

// TestSuccessors_MatchesReplicationSetsBeforeAndAfterRemoval checks Successors against its
// definition on random rings (random members, tokens, unhealthy members, rf): for every range,
// the replication set with the leaver ACTIVE and the one after Remove(leaver); the members in the
// second but not the first, over the ranges whose first set held the leaver.
func TestSuccessors_MatchesReplicationSetsBeforeAndAfterRemoval(t *testing.T) {
	for seed := range uint64(300) {
		rng := rand.New(rand.NewPCG(seed, 7))
		nm := 1 + rng.IntN(12)
		toks := map[MemberID][]Token{}
		taken := map[Token]bool{}
		for i := range nm {
			id := MemberID(fmt.Sprintf("m%02d", i))
			for range 1 + rng.IntN(8) {
				tk := Token(rng.Uint32N(1 << 12)) // a small space: neighbours collide, tokens cluster
				if !taken[tk] {
					taken[tk] = true
					toks[id] = append(toks[id], tk)
				}
			}
			slices.Sort(toks[id])
			if len(toks[id]) == 0 {
				delete(toks, id)
			}
		}
		if len(toks) == 0 {
			continue
		}
		r := activeRing(t, toks)
		const timeoutMs = 1000
		now := r.TimeMs() + 10_000
		members := r.Members()
		r = at(t, r, now, register("zz-pending")) // ring time is now; owns no token
		for _, m := range members {
			if rng.IntN(4) > 0 { // a quarter stay unhealthy
				r = at(t, r, now, heartbeat(m.ID))
			}
		}
		leaver := members[rng.IntN(len(members))].ID
		rf := 1 + rng.IntN(4)
		after := at(t, r, now, remove(leaver))
		// Before: the leaver must count as writable whatever its health; make it healthy.
		before := at(t, r, now, heartbeat(leaver))

		want := map[MemberID]bool{}
		var s1, s2 []*Member
		for _, tk := range before.tokens {
			h := uint32(tk) - 1 // walks start at tk
			s1 = before.ReplicationSet(h, rf, timeoutMs, s1)
			if !slices.ContainsFunc(s1, func(m *Member) bool { return m.ID == leaver }) {
				continue
			}
			s2 = after.ReplicationSet(h, rf, timeoutMs, s2)
			for _, m := range s2 {
				if !slices.ContainsFunc(s1, func(o *Member) bool { return o.ID == m.ID }) {
					want[m.ID] = true
				}
			}
		}
		var wantIDs []MemberID
		for id := range want {
			wantIDs = append(wantIDs, id)
		}
		slices.Sort(wantIDs)
		// r itself: the leaver possibly unhealthy, which Successors must ignore.
		if got := r.Successors(leaver, rf, timeoutMs); !slices.Equal(got, wantIDs) {
			t.Fatalf("seed %d: %d members, leaver %s, rf %d: Successors = %v, want %v", seed, len(members), leaver, rf, got, wantIDs)
		}
	}
}

func BenchmarkSuccessors(b *testing.B) {
	// 30 members of 512 random tokens: the largest cluster the design aims at.
	rng := rand.New(rand.NewPCG(1, 2))
	toks := map[MemberID][]Token{}
	taken := map[Token]bool{}
	for i := range 30 {
		id := MemberID(fmt.Sprintf("m%02d", i))
		for len(toks[id]) < 512 {
			tk := Token(rng.Uint32())
			if !taken[tk] {
				taken[tk] = true
				toks[id] = append(toks[id], tk)
			}
		}
		slices.Sort(toks[id])
	}
	r := activeRing(b, toks)
	b.ResetTimer()
	for range b.N {
		if len(r.Successors("m07", 3, 0)) == 0 {
			b.Fatal("no successors")
		}
	}
}

func TestLeaveSuccessor_Table(t *testing.T) {
	five := map[MemberID][]Token{"a": {10}, "b": {20}, "c": {30}, "d": {40}, "e": {50}}
	fiveLeaving := func(t *testing.T) *Ring { return mustApply(t, activeRing(t, five), leave("c")) }
	for _, tc := range []struct {
		name      string
		ring      func(t *testing.T) *Ring
		leaver    MemberID
		hash      uint32
		rf        int
		timeoutMs int64
		skip      []MemberID
		wantOld   []MemberID
		want      MemberID // "" for none
	}{
		{name: "the member after the set enters it", ring: fiveLeaving, leaver: "c", hash: 5, rf: 3,
			wantOld: []MemberID{"a", "b", "c"}, want: "d"},
		{name: "the walk wraps around", ring: fiveLeaving, leaver: "c", hash: 25, rf: 3,
			wantOld: []MemberID{"c", "d", "e"}, want: "a"},
		{name: "a hash past the last token starts at the first", ring: fiveLeaving, leaver: "c", hash: 60, rf: 3,
			wantOld: []MemberID{"a", "b", "c"}, want: "d"},
		{name: "a hash equal to a token starts after it", ring: fiveLeaving, leaver: "c", hash: 30, rf: 3,
			wantOld: []MemberID{"d", "e", "a"}},
		{name: "the leaver is not in the set: nothing enters", ring: fiveLeaving, leaver: "c", hash: 45, rf: 3,
			wantOld: []MemberID{"e", "a", "b"}},
		{name: "the leaver's state does not matter (still ACTIVE)", leaver: "c", hash: 5, rf: 3,
			ring:    func(t *testing.T) *Ring { return activeRing(t, five) },
			wantOld: []MemberID{"a", "b", "c"}, want: "d"},
		{name: "a skipped successor: the next member not in the set", ring: fiveLeaving, leaver: "c", hash: 5, rf: 3,
			skip: []MemberID{"d"}, wantOld: []MemberID{"a", "b", "c"}, want: "e"},
		{name: "every member outside the set skipped", ring: fiveLeaving, leaver: "c", hash: 5, rf: 3,
			skip: []MemberID{"d", "e"}, wantOld: []MemberID{"a", "b", "c"}},
		{name: "skipping a member of the set changes nothing", ring: fiveLeaving, leaver: "c", hash: 5, rf: 3,
			skip: []MemberID{"a", "b"}, wantOld: []MemberID{"a", "b", "c"}, want: "d"},
		{name: "rf 1", ring: fiveLeaving, leaver: "c", hash: 25, rf: 1, wantOld: []MemberID{"c"}, want: "d"},
		{name: "three members, rf 3: nobody enters", leaver: "b", hash: 0, rf: 3,
			ring: func(t *testing.T) *Ring {
				return mustApply(t, activeRing(t, map[MemberID][]Token{"a": {1}, "b": {2}, "c": {3}}), leave("b"))
			},
			wantOld: []MemberID{"a", "b", "c"}},
		{name: "another leaver neither is in the set nor enters it", leaver: "c", hash: 5, rf: 3,
			ring:    func(t *testing.T) *Ring { return mustApply(t, activeRing(t, five), leave("d"), leave("c")) },
			wantOld: []MemberID{"a", "b", "c"}, want: "e"},
		{name: "an unhealthy member is passed over", leaver: "c", hash: 5, rf: 3, timeoutMs: 1000,
			ring: func(t *testing.T) *Ring {
				r := fiveLeaving(t)
				now := r.TimeMs() + 5000
				for _, id := range []MemberID{"a", "b", "c", "e"} { // d's heartbeat is 5s old
					r = at(t, r, now, heartbeat(id))
				}
				return r
			},
			wantOld: []MemberID{"a", "b", "c"}, want: "e"},
		{name: "an unhealthy leaver still counts in its sets", leaver: "c", hash: 5, rf: 3, timeoutMs: 1000,
			ring: func(t *testing.T) *Ring {
				r := fiveLeaving(t)
				now := r.TimeMs() + 5000
				for _, id := range []MemberID{"a", "b", "d", "e"} {
					r = at(t, r, now, heartbeat(id))
				}
				return r
			},
			wantOld: []MemberID{"a", "b", "c"}, want: "d"},
		{name: "PENDING and self-joining members never enter", leaver: "c", hash: 25, rf: 3,
			ring: func(t *testing.T) *Ring {
				return mustApply(t, activeRing(t, five), register("p"), register("j"), claim("j", 55), leave("c"))
			},
			wantOld: []MemberID{"c", "d", "e"}, want: "a"},
		{name: "unknown leaver", ring: fiveLeaving, leaver: "zz", hash: 5, rf: 3},
		{name: "rf 0", ring: fiveLeaving, leaver: "c", hash: 5, rf: 0},
		{name: "the leaver alone", leaver: "a", hash: 5, rf: 3,
			ring:    func(t *testing.T) *Ring { return activeRing(t, map[MemberID][]Token{"a": {1, 2, 3}}) },
			wantOld: []MemberID{"a"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var skip func(MemberID) bool
			if tc.skip != nil {
				skip = func(id MemberID) bool { return slices.Contains(tc.skip, id) }
			}
			old, succ := tc.ring(t).LeaveSuccessor(tc.leaver, tc.hash, tc.rf, tc.timeoutMs, skip, nil)
			got := MemberID("")
			if succ != nil {
				got = succ.ID
			}
			if !slices.Equal(ids(old), tc.wantOld) || got != tc.want {
				t.Fatalf("LeaveSuccessor(%s, %d, rf %d, skip %v) = %v, %q; want %v, %q", tc.leaver, tc.hash, tc.rf, tc.skip,
					ids(old), got, tc.wantOld, tc.want)
			}
		})
	}
}

// TestLeaveSuccessor_MatchesReplicationSetsBeforeAndAfterRemoval checks LeaveSuccessor against its
// definition on random rings and hashes: old is the replication set with the leaver writable, and
// the successor is the one member of the set after Remove(leaver) that was not in old (none when
// the leaver was not in old, or when no member enters) — so a leave that gives each series to its
// successor restores every set it shrank, one copy per series.
func TestLeaveSuccessor_MatchesReplicationSetsBeforeAndAfterRemoval(t *testing.T) {
	for seed := range uint64(300) {
		rng := rand.New(rand.NewPCG(seed, 11))
		nm := 1 + rng.IntN(12)
		toks := map[MemberID][]Token{}
		taken := map[Token]bool{}
		for i := range nm {
			id := MemberID(fmt.Sprintf("m%02d", i))
			for range 1 + rng.IntN(8) {
				tk := Token(rng.Uint32N(1 << 12))
				if !taken[tk] {
					taken[tk] = true
					toks[id] = append(toks[id], tk)
				}
			}
			slices.Sort(toks[id])
			if len(toks[id]) == 0 {
				delete(toks, id)
			}
		}
		if len(toks) == 0 {
			continue
		}
		r := activeRing(t, toks)
		const timeoutMs = 1000
		now := r.TimeMs() + 10_000
		members := r.Members()
		for _, m := range members {
			if rng.IntN(4) > 0 { // a quarter stay unhealthy
				r = at(t, r, now, heartbeat(m.ID))
			}
		}
		leaver := members[rng.IntN(len(members))].ID
		rf := 1 + rng.IntN(4)
		after := at(t, r, now, remove(leaver))
		before := at(t, r, now, heartbeat(leaver))
		var s1, s2, got []*Member
		for range 200 {
			h := rng.Uint32N(1<<12 + 16)
			s1 = before.ReplicationSet(h, rf, timeoutMs, s1)
			s2 = after.ReplicationSet(h, rf, timeoutMs, s2)
			var want MemberID
			if slices.ContainsFunc(s1, func(m *Member) bool { return m.ID == leaver }) {
				for _, m := range s2 {
					if !slices.ContainsFunc(s1, func(o *Member) bool { return o.ID == m.ID }) {
						want = m.ID
					}
				}
			}
			var succ *Member
			got, succ = r.LeaveSuccessor(leaver, h, rf, timeoutMs, nil, got)
			gotID := MemberID("")
			if succ != nil {
				gotID = succ.ID
			}
			if !slices.Equal(ids(got), ids(s1)) || gotID != want {
				t.Fatalf("seed %d, hash %d, leaver %s, rf %d: LeaveSuccessor = %v, %q; want %v, %q", seed, h, leaver, rf,
					ids(got), gotID, ids(s1), want)
			}
		}
	}
}
