package ringstate

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"sort"
	"testing"
)

// The property tests compare the ring with deliberately simple models, in the spirit of etcd's
// quorum/quick_test.go: the model is slow and obviously right, the ring is fast.

// randomRing builds a ring of 1–40 members with 1–64 tokens each (none when PENDING), random states
// and heartbeats, through Restore. Tokens are drawn from the whole space, from a narrow band (so
// neighbours are adjacent) and include 0 and MaxUint32.
func randomRing(t testing.TB, rng *rand.Rand) *Ring {
	t.Helper()
	n := 1 + rng.IntN(40)
	now := int64(1_000_000)
	used := map[Token]bool{}
	narrow := rng.IntN(3) == 0
	draw := func() Token {
		for {
			var tok Token
			switch k := rng.IntN(40); {
			case k == 0:
				tok = 0
			case k == 1:
				tok = math.MaxUint32
			case narrow:
				tok = Token(rng.IntN(4096))
			default:
				tok = Token(rng.Uint32())
			}
			if !used[tok] {
				used[tok] = true
				return tok
			}
		}
	}
	ms := make([]Member, n)
	for i := range ms {
		m := Member{ID: MemberID(fmt.Sprintf("m%02d", i)), RaftAddr: fmt.Sprintf("10.0.0.%d:7000", i),
			State: State(rng.IntN(4)), HeartbeatMs: now - int64(rng.IntN(20_000))}
		if m.State != PENDING {
			k := 1 + rng.IntN(64)
			for range k {
				m.Tokens = append(m.Tokens, draw())
			}
			slices.Sort(m.Tokens)
		}
		ms[i] = m
	}
	r, err := Restore(ms, now, nil)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// modelRing is every (token, owner) pair of a ring, sorted by token: the ring without its index.
type modelRing []struct {
	t Token
	m *Member
}

func newModelRing(ms []Member) modelRing {
	var pairs modelRing
	for i := range ms {
		for _, t := range ms[i].Tokens {
			pairs = append(pairs, struct {
				t Token
				m *Member
			}{t, &ms[i]})
		}
	}
	sort.Slice(pairs, func(i, j int) bool { return pairs[i].t < pairs[j].t })
	return pairs
}

// replicationSet: find the first token greater than the hash by linear scan, walk clockwise with
// wrap, skip members that cannot take writes and members already chosen, stop at rf.
func (pairs modelRing) replicationSet(now, timeout int64, hash uint32, rf int) []MemberID {
	start := 0
	for i, p := range pairs {
		if uint32(p.t) > hash {
			start = i
			break
		}
	}
	var out []MemberID
	for k := 0; k < len(pairs) && len(out) < rf; k++ {
		m := pairs[(start+k)%len(pairs)].m
		healthy := timeout <= 0 || now-m.HeartbeatMs <= timeout
		if m.State != ACTIVE || !healthy || slices.Contains(out, m.ID) {
			continue
		}
		out = append(out, m.ID)
	}
	return out
}

// modelOwnership: token t_i owns [t_{i-1}, t_i), wrapping; a single token owns everything.
func modelOwnership(ms []Member) map[MemberID]float64 {
	type pair struct {
		t  uint64
		id MemberID
	}
	var pairs []pair
	for _, m := range ms {
		for _, t := range m.Tokens {
			pairs = append(pairs, pair{uint64(t), m.ID})
		}
	}
	sort.Slice(pairs, func(i, j int) bool { return pairs[i].t < pairs[j].t })
	out := map[MemberID]float64{}
	for i, p := range pairs {
		var span uint64
		if i == 0 {
			span = (1 << 32) - pairs[len(pairs)-1].t + p.t // from the last token round to the first
		} else {
			span = p.t - pairs[i-1].t
		}
		out[p.id] += float64(span) / (1 << 32)
	}
	return out
}

func interestingHashes(rng *rand.Rand, r *Ring) []uint32 {
	hs := []uint32{0, math.MaxUint32, 1, math.MaxUint32 - 1, rng.Uint32(), rng.Uint32()}
	for range min(4, len(r.tokens)) {
		tok := uint32(r.tokens[rng.IntN(len(r.tokens))])
		hs = append(hs, tok, tok-1, tok+1)
	}
	return hs
}

const propertyRings = 10_000

func TestProperty_ReplicationSetMatchesLinearModel(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	var dst []*Member
	for iter := range propertyRings {
		r := randomRing(t, rng)
		model := newModelRing(r.Members())
		timeout := []int64{0, 5_000, 15_000}[rng.IntN(3)]
		for _, h := range interestingHashes(rng, r) {
			rf := 1 + rng.IntN(5)
			dst = r.ReplicationSet(h, rf, timeout, dst)
			want := model.replicationSet(r.TimeMs(), timeout, h, rf)
			got := ids(dst)
			if !slices.Equal(got, want) {
				t.Fatalf("ring %d, hash %d, rf %d, timeout %d: got %v, model %v", iter, h, rf, timeout, got, want)
			}
			if len(dst) > rf || len(dst) > r.EffectiveRF(rf) {
				t.Fatalf("set of %d for rf %d (effective %d)", len(dst), rf, r.EffectiveRF(rf))
			}
			for i, m := range dst {
				if !m.Writable(r.TimeMs(), timeout) {
					t.Fatalf("set holds %s, which cannot take writes", m.ID)
				}
				for _, o := range dst[:i] {
					if o == m {
						t.Fatalf("set holds %s twice", m.ID)
					}
				}
			}
		}
	}
}

func TestProperty_OwnershipAndOwnerMatchModel(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for iter := range propertyRings {
		r := randomRing(t, rng)
		ms := r.Members()
		model := modelOwnership(ms)
		sum := 0.0
		owner := map[Token]MemberID{}
		for _, m := range ms {
			got := r.Ownership(m.ID)
			sum += got
			if math.Abs(got-model[m.ID]) > 1e-12 {
				t.Fatalf("ring %d: %s owns %v, model %v", iter, m.ID, got, model[m.ID])
			}
			for _, tok := range m.Tokens {
				owner[tok] = m.ID
			}
		}
		if r.NumTokens() > 0 && math.Abs(sum-1) > 1e-9 {
			t.Fatalf("ring %d: ownership sums to %v", iter, sum)
		}
		for tok, id := range owner {
			if got, ok := r.Owner(tok); !ok || got != id {
				t.Fatalf("Owner(%d) = %s, %v; want %s", tok, got, ok, id)
			}
			if _, ok := owner[tok+1]; !ok {
				if got, ok := r.Owner(tok + 1); ok {
					t.Fatalf("Owner(%d) = %s for an unowned token", tok+1, got)
				}
			}
		}
		// The dskit convention, checked at the edges: with every member writable, the primary of a
		// hash equal to a token is the owner of the next token, and of the hash just below it, the
		// token's own owner.
		all := make([]Member, len(ms))
		for i, m := range ms {
			m.State, m.HeartbeatMs = ACTIVE, r.TimeMs()
			if len(m.Tokens) == 0 {
				m.State = PENDING
			}
			all[i] = m
		}
		ra, err := Restore(all, r.TimeMs(), nil)
		if err != nil {
			t.Fatal(err)
		}
		if len(ra.tokens) == 0 {
			continue
		}
		i := rng.IntN(len(ra.tokens))
		tok := ra.tokens[i]
		next := ra.tokens[(i+1)%len(ra.tokens)]
		if p := ra.ReplicationSet(uint32(tok), 1, 0, nil); p[0].ID != owner[next] {
			t.Fatalf("hash %d (a token) goes to %s, want owner of next token %d (%s)", tok, p[0].ID, next, owner[next])
		}
		if p := ra.ReplicationSet(uint32(tok)-1, 1, 0, nil); p[0].ID != owner[tok] {
			t.Fatalf("hash %d goes to %s, want %s", uint32(tok)-1, p[0].ID, owner[tok])
		}
		owners := 0
		for _, m := range ms {
			if len(m.Tokens) > 0 {
				owners++
			}
		}
		if rf := 1 + rng.IntN(50); r.EffectiveRF(rf) != min(rf, owners) {
			t.Fatalf("EffectiveRF(%d) = %d with %d owners", rf, r.EffectiveRF(rf), owners)
		}
	}
}

// TestProperty_SpillReplacesNeverInflates is cortex#1290 as a property: with rf owners of which
// one is LEAVING, the set has rf-1 members, the effective rf stays rf, and the quorum is reachable.
func TestProperty_SpillReplacesNeverInflates(t *testing.T) {
	r := mustApply(t, New(), register("a"), claim("a", 10, 40), activate("a"),
		register("b"), claim("b", 20, 50), activate("b"), register("c"), claim("c", 30, 60), activate("c"))
	r = mustApply(t, r, leave("b"))
	for _, h := range []uint32{0, 15, 25, 35, 59, 60, math.MaxUint32} {
		set := r.ReplicationSet(h, 3, 0, nil)
		if len(set) != 2 || r.EffectiveRF(3) != 3 || len(set) < Quorum(r.EffectiveRF(3)) {
			t.Fatalf("hash %d: set %v, effective rf %d, quorum %d", h, ids(set), r.EffectiveRF(3), Quorum(3))
		}
	}
	if Quorum(1) != 1 || Quorum(2) != 2 || Quorum(3) != 2 || Quorum(5) != 3 {
		t.Fatal("Quorum must be rf/2+1")
	}
}

// TestProperty_RandomCommands applies thousands of random command sequences (valid and invalid),
// checking every invariant after every Apply (see applyChecked), and that a sequence applied twice
// gives deep-equal rings.
func TestProperty_RandomCommands(t *testing.T) {
	sequences, steps := 2000, 60
	if testing.Short() {
		sequences = 200
	}
	accepted := map[Op]int{}
	for seq := range sequences {
		seed := uint64(seq)
		run := func() (*Ring, []Command) {
			rng := rand.New(rand.NewPCG(seed, 99))
			r := New()
			var cmds []Command
			for range steps {
				c, now := genStep(rng, r)
				next, err, bad := applyChecked(r, c, now)
				if bad != nil {
					t.Fatalf("sequence %d, after %v: %v", seq, cmds, bad)
				}
				if err == nil {
					accepted[c.Op]++
				}
				cmds = append(cmds, c)
				r = next
			}
			return r, cmds
		}
		a, _ := run()
		b, _ := run()
		if e := ringsEqual(a, b); e != nil {
			t.Fatalf("sequence %d is not deterministic: %v", seq, e)
		}
	}
	// The generator must reach every op, or the property proves little.
	for op := OpRegister; op <= OpRemove; op++ {
		if accepted[op] == 0 {
			t.Errorf("no %s was ever accepted", op)
		}
	}
	t.Logf("accepted: %v", accepted)
}

// TestProperty_RestoreRefusesOrIsSound builds random, often broken, member lists: Restore either
// refuses them with ErrCorruptState or returns a ring that satisfies every invariant.
func TestProperty_RestoreRefusesOrIsSound(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	okCount := 0
	for range 20_000 {
		if restoreChecked(t, randomMembers(rng)) {
			okCount++
		}
	}
	if okCount == 0 {
		t.Fatal("no random member list was ever accepted")
	}
}

func randomMembers(s intSource) []Member {
	n := s.IntN(6)
	ms := make([]Member, n)
	for i := range ms {
		ms[i] = Member{ID: genIDs[s.IntN(len(genIDs))], RaftAddr: "h:1", State: State(s.IntN(5)),
			HeartbeatMs: int64(s.IntN(100))}
		if s.IntN(12) == 0 {
			ms[i].ID = []MemberID{"", "..", "-a", "a b"}[s.IntN(4)]
		}
		if s.IntN(12) == 0 {
			ms[i].RaftAddr = "bad"
		}
		for range s.IntN(4) {
			ms[i].Tokens = append(ms[i].Tokens, Token(s.IntN(10)))
		}
		if s.IntN(2) == 0 {
			slices.Sort(ms[i].Tokens)
			ms[i].Tokens = slices.Compact(ms[i].Tokens)
		}
		if s.IntN(3) == 0 {
			ms[i].HandoverPeer = genIDs[s.IntN(len(genIDs))]
		}
	}
	return ms
}

// restoreChecked restores ms and checks the outcome; it reports whether the ring was accepted.
func restoreChecked(t testing.TB, ms []Member) bool {
	t.Helper()
	orig := make([]Member, len(ms))
	for i := range ms {
		orig[i] = ms[i].clone()
	}
	r, err := Restore(ms, 100, nil)
	for i := range ms {
		if ms[i].ID != orig[i].ID || !slices.Equal(ms[i].Tokens, orig[i].Tokens) {
			t.Fatalf("Restore modified its input")
		}
	}
	if err != nil {
		if !isErr(err, ErrCorruptState) {
			t.Fatalf("Restore(%+v) refused without ErrCorruptState: %v", ms, err)
		}
		return false
	}
	if e := checkInvariants(r); e != nil {
		t.Fatalf("Restore(%+v) accepted a ring that breaks an invariant: %v", ms, e)
	}
	// Aliasing: changing the input after Restore must not change the ring.
	for i := range ms {
		for k := range ms[i].Tokens {
			ms[i].Tokens[k] ^= 0x5555
		}
	}
	if e := checkInvariants(r); e != nil {
		t.Fatalf("ring aliases Restore's input: %v", e)
	}
	// And the ring accepts commands.
	for _, m := range r.members {
		if _, _, err := r.Apply(heartbeat(m.ID), 200); err != nil {
			t.Fatalf("heartbeat on restored ring: %v", err)
		}
	}
	return true
}
