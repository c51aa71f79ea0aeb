package ringstate

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

func TestOwnershipChanged(t *testing.T) {
	active := &Member{ID: "a", State: ACTIVE, Tokens: Tokens{1, 5}}
	with := func(m *Member, f func(*Member)) *Member { c := m.clone(); f(&c); return &c }
	for _, tc := range []struct {
		name          string
		before, after *Member
		want          bool
	}{
		{"nothing", nil, nil, false},
		{"added PENDING", nil, &Member{ID: "a", State: PENDING}, false},
		{"added ACTIVE with tokens", nil, active, true},
		{"removed ACTIVE", active, nil, true},
		{"removed PENDING", &Member{ID: "a", State: PENDING}, nil, false},
		{"removed LEAVING without tokens", &Member{ID: "a", State: LEAVING}, nil, false},
		{"removed LEAVING with tokens", &Member{ID: "a", State: LEAVING, Tokens: Tokens{3}}, nil, true},
		{"heartbeat", active, with(active, func(m *Member) { m.HeartbeatMs = 99 }), false},
		{"addresses, version", active, with(active, func(m *Member) {
			m.GRPCAddr, m.RaftAddr, m.HTTPAddr, m.CommandVersion = "x:1", "y:2", "z:3", 3
		}), false},
		// Zone-aware placement takes one member per zone and caps RF by the zones owning tokens.
		{"zone of a token owner", active, with(active, func(m *Member) { m.Zone = "z1" }), true},
		{"zone of a PENDING member", &Member{ID: "a", State: PENDING}, &Member{ID: "a", State: PENDING, Zone: "z1"}, false},
		{"ACTIVE -> LEAVING", active, with(active, func(m *Member) { m.State = LEAVING }), true},
		{"LEAVING -> ACTIVE (restart)", with(active, func(m *Member) { m.State = LEAVING }), active, true},
		{"ACTIVE tokens changed", active, with(active, func(m *Member) { m.Tokens = Tokens{1, 6} }), true},
		{"ACTIVE tokens grew", active, with(active, func(m *Member) { m.Tokens = Tokens{1, 5, 9} }), true},
		{"JOINING receives tokens", &Member{ID: "a", State: JOINING}, &Member{ID: "a", State: JOINING, Tokens: Tokens{2}}, true},
		{"JOINING tokens replaced", &Member{ID: "a", State: JOINING, Tokens: Tokens{1}}, &Member{ID: "a", State: JOINING, Tokens: Tokens{2}}, false},
		{"JOINING -> ACTIVE (hand-over completed)", &Member{ID: "a", State: JOINING, Tokens: Tokens{2}}, &Member{ID: "a", State: ACTIVE, Tokens: Tokens{2}}, true},
		{"leaver gives its tokens away", &Member{ID: "a", State: LEAVING, Tokens: Tokens{2}}, &Member{ID: "a", State: LEAVING}, true},
		{"hand-over aborted: joiner back to PENDING", &Member{ID: "a", State: JOINING, Tokens: Tokens{2}}, &Member{ID: "a", State: PENDING}, true},
		{"PENDING -> JOINING without tokens", &Member{ID: "a", State: PENDING}, &Member{ID: "a", State: JOINING, HandoverPeer: "b"}, false},
	} {
		if got := OwnershipChanged(tc.before, tc.after); got != tc.want {
			t.Errorf("%s: OwnershipChanged = %v, want %v", tc.name, got, tc.want)
		}
	}
}

// placementModel is what ReplicationSet and EffectiveRF read of a ring, besides health and time:
// per member, whether it is ACTIVE, its tokens when it is, and whether it owns any.
func placementModel(r *Ring) map[MemberID]string {
	out := map[MemberID]string{}
	for i := 0; i < r.Len(); i++ {
		m := r.MemberAt(i)
		key := "owns:" + boolStr(len(m.Tokens) > 0)
		if len(m.Tokens) > 0 {
			key += " zone:" + m.Zone
		}
		if m.State == ACTIVE {
			key += " active:" + tokensStr(m.Tokens)
		}
		out[m.ID] = key
	}
	return out
}

func boolStr(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func tokensStr(ts Tokens) string { return fmt.Sprint([]Token(ts)) }

// sameModel compares two placement models; a member absent from one is one that owns nothing
// and is not ACTIVE there (as a PENDING member is).
func sameModel(a, b map[MemberID]string) bool {
	get := func(m map[MemberID]string, id MemberID) string {
		if v, ok := m[id]; ok {
			return v
		}
		return "owns:no"
	}
	for k := range a {
		if get(a, k) != get(b, k) {
			return false
		}
	}
	for k := range b {
		if get(a, k) != get(b, k) {
			return false
		}
	}
	return true
}

// TestProperty_OwnershipChangedByMatchesModel: over random command sequences, OwnershipChangedBy
// (which looks only at the members the events name) says an entry changed ownership exactly when the
// placement model of the whole ring changed. This also holds Apply to reporting an event for every
// change placement reads, which the FSM's fencing index relies on.
func TestProperty_OwnershipChangedByMatchesModel(t *testing.T) {
	sequences, steps := 1000, 80
	if testing.Short() {
		sequences = 100
	}
	changes, same := 0, 0
	for seq := range sequences {
		rng := rand.New(rand.NewPCG(uint64(seq), 16))
		r := New()
		for step := range steps {
			c, now := genStep(rng, r)
			next, events, err := r.Apply(c, now)
			if err != nil {
				continue
			}
			model := !sameModel(placementModel(r), placementModel(next))
			if got := OwnershipChangedBy(r, next, events); got != model {
				t.Fatalf("sequence %d step %d, %+v: OwnershipChangedBy = %v, model says %v (events %+v)", seq, step, c, got, model, events)
			}
			if model {
				changes++
			} else {
				same++
			}
			r = next
		}
	}
	// Both outcomes must be common, or the property proves little.
	if changes < 100 || same < 100 {
		t.Fatalf("changes=%d unchanged=%d: the generator does not exercise both", changes, same)
	}
	t.Logf("ownership changes=%d, entries without=%d", changes, same)
}
