package ringview_test

import (
	"encoding/json"
	"math"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/raftingest/raftingest/ringstate"
	"github.com/raftingest/raftingest/ringview"
)

const (
	ringTimeMs = 1_700_000_100_000 // 2023-11-14T22:15:00.000Z
	timeoutMs  = 10_000
	quarter    = 1 << 30 // a quarter of the 32-bit token space
)

// hostileZone is free text that would break the page if it were not escaped. Member ids cannot carry
// markup (ringstate validates them), zones can.
const hostileZone = `zone-b"><script>alert("x")</script>&amp;'`

// testRing is a hand-made ring that exercises every column:
//
//	a  ACTIVE   token 1·2^30   heartbeat age 0            healthy
//	b  ACTIVE   token 2·2^30   age exactly the timeout    healthy (the boundary is inclusive)
//	c  LEAVING  token 3·2^30   age timeout + 1 ms         UNHEALTHY, hands over to d
//	d  JOINING  no tokens      age 5 s                    healthy, receives from c
//	e  ACTIVE   token 0        age 50 s                   UNHEALTHY
//	p  PENDING  no tokens      age 0                      healthy
//
// Four tokens a quarter apart: a, b, c and e each own exactly 0.25 of the hash space.
func testRing(t testing.TB) *ringstate.Ring {
	t.Helper()
	m := func(id string, st ringstate.State, hbAgeMs int64, peer string, tokens ...ringstate.Token) ringstate.Member {
		return ringstate.Member{
			ID: ringstate.MemberID(id), State: st, Tokens: tokens, HandoverPeer: ringstate.MemberID(peer),
			Zone: "zone-" + id, RegisteredMs: ringTimeMs - 3_600_000, HeartbeatMs: ringTimeMs - hbAgeMs,
		}
	}
	members := []ringstate.Member{
		m("a", ringstate.ACTIVE, 0, "", 1*quarter),
		m("b", ringstate.ACTIVE, timeoutMs, "", 2*quarter),
		m("c", ringstate.LEAVING, timeoutMs+1, "d", 3*quarter),
		m("d", ringstate.JOINING, 5_000, "c"),
		m("e", ringstate.ACTIVE, 50_000, "", 0),
		m("p", ringstate.PENDING, 0, ""),
	}
	for i := range members {
		port := 7001 + i
		members[i].RaftAddr = "127.0.0.1:" + strconv.Itoa(port)
		members[i].GRPCAddr = "127.0.0.1:" + strconv.Itoa(port+2000)
		members[i].HTTPAddr = "127.0.0.1:" + strconv.Itoa(port+1000)
	}
	members[1].Zone = hostileZone
	r, err := ringstate.Restore(members, ringTimeMs, nil)
	if err != nil {
		t.Fatalf("restore test ring: %v", err)
	}
	return r
}

func TestBuild_JudgesHealthAtRingTime(t *testing.T) {
	v := ringview.Build(testRing(t), timeoutMs)
	if v.TimeMs != ringTimeMs {
		t.Errorf("TimeMs = %d, want %d", v.TimeMs, ringTimeMs)
	}
	if v.HeartbeatTimeoutSeconds != 10 {
		t.Errorf("HeartbeatTimeoutSeconds = %v, want 10", v.HeartbeatTimeoutSeconds)
	}
	cases := []struct {
		id, state, ringState string
		healthy              bool
		ageSeconds           float64
		why                  string
	}{
		{"a", "ACTIVE", "ACTIVE", true, 0, "fresh heartbeat"},
		{"b", "ACTIVE", "ACTIVE", true, 10, "age equal to the timeout is still healthy (ringstate: age <= timeout)"},
		{"c", ringview.StateUnhealthy, "LEAVING", false, 10.001, "one millisecond past the timeout is unhealthy; ring_state keeps LEAVING"},
		{"d", "JOINING", "JOINING", true, 5, "a receiving joiner"},
		{"e", ringview.StateUnhealthy, "ACTIVE", false, 50, "long-silent ACTIVE member"},
		{"p", "PENDING", "PENDING", true, 0, "pending members are shown too"},
	}
	if len(v.Members) != len(cases) {
		t.Fatalf("got %d members, want %d", len(v.Members), len(cases))
	}
	for i, c := range cases {
		m := v.Members[i]
		if m.ID != c.id {
			t.Fatalf("member %d is %q, want %q (sorted by id)", i, m.ID, c.id)
		}
		if m.State != c.state || m.RingState != c.ringState || m.Healthy != c.healthy {
			t.Errorf("%s (%s): state=%s ring_state=%s healthy=%v, want %s %s %v", c.id, c.why,
				m.State, m.RingState, m.Healthy, c.state, c.ringState, c.healthy)
		}
		if math.Abs(m.HeartbeatAgeSeconds-c.ageSeconds) > 1e-9 {
			t.Errorf("%s: heartbeat age %v s, want %v", c.id, m.HeartbeatAgeSeconds, c.ageSeconds)
		}
		if want := "2023-11-14T21:15:00Z"; m.RegisteredAt != want {
			t.Errorf("%s: registered_at %q, want %q", c.id, m.RegisteredAt, want)
		}
	}
}

func TestBuild_OwnershipTokensAndAddresses(t *testing.T) {
	v := ringview.Build(testRing(t), timeoutMs)
	want := map[string]struct {
		own    float64
		tokens []uint32
	}{
		"a": {0.25, []uint32{1 * quarter}},
		"b": {0.25, []uint32{2 * quarter}},
		"c": {0.25, []uint32{3 * quarter}},
		"d": {0, []uint32{}},
		"e": {0.25, []uint32{0}},
		"p": {0, []uint32{}},
	}
	sum := 0.0
	for _, m := range v.Members {
		w := want[m.ID]
		if m.Ownership != w.own {
			t.Errorf("%s: ownership %v, want %v", m.ID, m.Ownership, w.own)
		}
		sum += m.Ownership
		if !slices.Equal(m.Tokens, w.tokens) || m.Tokens == nil {
			t.Errorf("%s: tokens %v, want %v (never nil)", m.ID, m.Tokens, w.tokens)
		}
		if m.NumTokens != len(w.tokens) {
			t.Errorf("%s: num_tokens %d, want %d", m.ID, m.NumTokens, len(w.tokens))
		}
	}
	if sum != 1 {
		t.Errorf("ownership sums to %v, want 1", sum)
	}
	a, _ := v.Member("a")
	if a.RaftAddr != "127.0.0.1:7001" || a.HTTPAddr != "127.0.0.1:8001" || a.GRPCAddr != "127.0.0.1:9001" || a.Zone != "zone-a" {
		t.Errorf("a's addresses: %+v", a)
	}
}

func TestBuild_HandoverPeerBothDirections(t *testing.T) {
	v := ringview.Build(testRing(t), timeoutMs)
	c, _ := v.Member("c")
	d, _ := v.Member("d")
	a, _ := v.Member("a")
	if c.HandoverPeer != "d" || c.Handover() != "→ d" {
		t.Errorf("leaver c: peer %q, shown %q; want d, \"→ d\"", c.HandoverPeer, c.Handover())
	}
	if d.HandoverPeer != "c" || d.Handover() != "← c" {
		t.Errorf("joiner d: peer %q, shown %q; want c, \"← c\"", d.HandoverPeer, d.Handover())
	}
	if a.HandoverPeer != "" || a.Handover() != "" {
		t.Errorf("a takes part in no hand-over, got %q / %q", a.HandoverPeer, a.Handover())
	}
}

func TestBuild_ZeroTimeoutDisablesHealth(t *testing.T) {
	for _, m := range ringview.Build(testRing(t), 0).Members {
		if !m.Healthy || m.State != m.RingState {
			t.Errorf("%s: with the check off every member is healthy, got %s healthy=%v", m.ID, m.State, m.Healthy)
		}
	}
}

func TestBuild_EmptyAndNilRings(t *testing.T) {
	for name, r := range map[string]*ringstate.Ring{"nil": nil, "empty": ringstate.New()} {
		v := ringview.Build(r, timeoutMs)
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		if want := `{"time_ms":0,"heartbeat_timeout_seconds":10,"members":[],"compactor":{"holder":"","epoch":0,"held":false,"expires_at":"","expires_in_seconds":0},"raft_only":null}`; string(b) != want {
			t.Errorf("%s ring: %s, want %s", name, b, want)
		}
	}
}

func TestView_JSONFieldNames(t *testing.T) {
	b, err := json.Marshal(ringview.Build(testRing(t), timeoutMs))
	if err != nil {
		t.Fatal(err)
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(b, &top); err != nil {
		t.Fatal(err)
	}
	if got := sortedKeys(top); !slices.Equal(got, []string{"compactor", "heartbeat_timeout_seconds", "members", "raft_only", "time_ms"}) {
		t.Errorf("top-level keys %v", got)
	}
	if string(top["raft_only"]) != "null" {
		t.Errorf("raft_only %s without WithRaft, want null (unknown)", top["raft_only"])
	}
	var members []map[string]json.RawMessage
	if err := json.Unmarshal(top["members"], &members); err != nil {
		t.Fatal(err)
	}
	want := []string{"grpc_addr", "handover_peer", "healthy", "heartbeat_age_seconds", "http_addr", "id",
		"num_tokens", "ownership", "raft_addr", "registered_at", "ring_state", "state", "tokens", "zone"}
	for _, m := range members {
		if got := sortedKeys(m); !slices.Equal(got, want) {
			t.Errorf("member keys %v, want %v", got, want)
		}
	}
	if string(members[3]["tokens"]) != "[]" {
		t.Errorf("a member without tokens has tokens %s, want []", members[3]["tokens"])
	}
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// WithRaft: the leader, voters and non-voters by the configuration; a ring member that is no Raft
// server is "none" (raft_role in JSON); a Raft server that is no ring member is listed apart.
func TestView_WithRaft(t *testing.T) {
	v := ringview.Build(testRing(t), timeoutMs)
	ids := make([]string, len(v.Members))
	for i, m := range v.Members {
		ids[i] = m.ID
	}
	if len(ids) < 3 {
		t.Fatalf("test ring has %d members, want at least 3", len(ids))
	}
	v.WithRaft(ids[1], []ringview.RaftServer{{ID: "zz-joiner", Voter: false}, {ID: ids[1], Voter: true}, {ID: ids[0], Voter: true}, {ID: ids[2], Voter: false}, {ID: "aa-old", Voter: true}})
	want := map[string]string{ids[0]: ringview.RaftVoter, ids[1]: ringview.RaftLeader, ids[2]: ringview.RaftNonvoter}
	for _, m := range v.Members {
		w, ok := want[m.ID]
		if !ok {
			w = ringview.RaftNone
		}
		if m.RaftRole != w {
			t.Errorf("%s: raft role %q, want %q", m.ID, m.RaftRole, w)
		}
	}
	wantOnly := []ringview.RaftServer{{ID: "aa-old", Voter: true, Role: ringview.RaftVoter}, {ID: "zz-joiner", Role: ringview.RaftNonvoter}}
	if !slices.Equal(v.RaftOnly, wantOnly) {
		t.Errorf("raft-only servers %+v, want %+v (sorted by id)", v.RaftOnly, wantOnly)
	}
	b, err := json.Marshal(v.Members[1])
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"raft_role":"leader"`) {
		t.Errorf("member JSON %s lacks raft_role", b)
	}
	// No configuration known (a node not joined yet): no leader, every member "none".
	v = ringview.Build(testRing(t), timeoutMs)
	v.WithRaft("", nil)
	for _, m := range v.Members {
		if m.RaftRole != ringview.RaftNone {
			t.Errorf("%s: %q with an empty configuration", m.ID, m.RaftRole)
		}
	}
}
