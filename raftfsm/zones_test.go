package raftfsm

import (
	"fmt"
	"slices"
	"testing"

	"github.com/hashicorp/raft"

	"github.com/raftingest/raftingest/ringstate"
)

// zonedRing is a ring of ACTIVE, healthy members, id → zone.
func zonedRing(t *testing.T, zones map[string]string) *ringstate.Ring {
	t.Helper()
	var ids []string
	for id := range zones {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	r := ringstate.New()
	var err error
	for i, id := range ids {
		for _, cmd := range []ringstate.Command{
			{Op: ringstate.OpRegister, Member: ringstate.MemberID(id), RaftAddr: fmt.Sprintf("127.0.0.1:%d", 7000+i), Zone: zones[id]},
			{Op: ringstate.OpClaimTokens, Member: ringstate.MemberID(id), Tokens: ringstate.Tokens{ringstate.Token(100 * (i + 1))}},
			{Op: ringstate.OpActivate, Member: ringstate.MemberID(id)},
		} {
			if r, _, err = r.Apply(cmd, 1000); err != nil {
				t.Fatal(err)
			}
		}
	}
	return r
}

func servers(ids ...string) []raft.Server {
	out := make([]raft.Server, len(ids))
	for i, id := range ids {
		out[i] = raft.Server{ID: raft.ServerID(id), Suffrage: raft.Voter}
	}
	return out
}

var sixInThreeZones = map[string]string{"a1": "a", "a2": "a", "b1": "b", "b2": "b", "c1": "c", "c2": "c"}

// Filling voter slots one at a time from a1 spreads them over the zones: the second and third go to
// zones without a voter (the lowest id would be a2, in a1's zone), and with 5 voters no zone has 3.
func TestPickPromotion_SpreadsVotersOverZones(t *testing.T) {
	r := zonedRing(t, sixInThreeZones)
	all := func(raft.ServerID) bool { return true }
	voters := []string{"a1"}
	for len(voters) < 5 {
		var nv []raft.Server
		for _, id := range []string{"a1", "a2", "b1", "b2", "c1", "c2"} {
			if !slices.Contains(voters, id) {
				nv = append(nv, raft.Server{ID: raft.ServerID(id)})
			}
		}
		pick := pickPromotion(nv, r, 60_000, "", servers(voters...), all)
		if pick == nil {
			t.Fatalf("voters %v: nothing picked", voters)
		}
		voters = append(voters, string(pick.ID))
		perZone := voterZones(r, servers(voters...))
		for z, c := range perZone {
			if limit := (len(voters) + 2) / 3; c > limit {
				t.Fatalf("voters %v: zone %s has %d of %d voters, want at most %d", voters, z, c, len(voters), limit)
			}
		}
	}
	if !(zoneOf(r, raft.ServerID(voters[1])) != "a" && zoneOf(r, raft.ServerID(voters[2])) != "a" &&
		zoneOf(r, raft.ServerID(voters[1])) != zoneOf(r, raft.ServerID(voters[2]))) {
		t.Errorf("first three voters %v are not one per zone", voters[:3])
	}
	// A dead voter's replacement: its zone first, even when another zone has fewer voters.
	pick := pickPromotion([]raft.Server{{ID: "a2"}, {ID: "c1"}}, r, 60_000, "a", servers("b1", "b2"), all)
	if pick == nil || pick.ID != "a2" {
		t.Errorf("replacing a voter of zone a: picked %v, want a2", pick)
	}
	// Its zone has no fit non-voter: the zone with the fewest voters.
	pick = pickPromotion([]raft.Server{{ID: "b2"}, {ID: "c1"}}, r, 60_000, "a", servers("b1", "a2"), func(id raft.ServerID) bool { return true })
	if pick == nil || pick.ID != "c1" {
		t.Errorf("replacing a voter of zone a without a fit one there: picked %v, want c1 (zone c has no voter)", pick)
	}
}

func TestPickZoneSwap(t *testing.T) {
	r := zonedRing(t, sixInThreeZones)
	all := func(raft.ServerID) bool { return true }
	nonvoters := func(voters ...string) []raft.Server {
		var out []raft.Server
		for _, id := range []string{"a1", "a2", "b1", "b2", "c1", "c2"} {
			if !slices.Contains(voters, id) {
				out = append(out, raft.Server{ID: raft.ServerID(id)})
			}
		}
		return out
	}
	cases := []struct {
		voters      []string
		self        string
		recent      func(raft.ServerID) bool
		wantPromote string // "" none
		wantDemote  string
	}{
		{[]string{"a1", "b1", "c1"}, "a1", all, "", ""},                                                             // spread already
		{[]string{"a1", "a2", "b1"}, "a1", all, "c1", "a2"},                                                         // zone c has none: a's non-leader voter goes
		{[]string{"a1", "a2", "b1"}, "a2", all, "c1", "a1"},                                                         // never self
		{[]string{"a1", "a2", "b1", "b2", "c1"}, "a1", all, "", ""},                                                 // 2+2+1 is spread
		{[]string{"a1", "a2", "b1"}, "a1", func(id raft.ServerID) bool { return id != "c1" && id != "c2" }, "", ""}, // no fit non-voter in zone c
		{[]string{"a1", "a2", "b1"}, "a1", func(id raft.ServerID) bool { return id != "b1" }, "", ""},               // a silent voter: left to replaceSilentVoter
	}
	for i, c := range cases {
		p, d := pickZoneSwap(servers(c.voters...), nonvoters(c.voters...), raft.ServerID(c.self), r, 60_000, c.recent)
		gotP, gotD := "", ""
		if p != nil {
			gotP, gotD = string(p.ID), string(d.ID)
		}
		if gotP != c.wantPromote || gotD != c.wantDemote {
			t.Errorf("case %d voters %v self %s: promote %q demote %q, want %q %q", i, c.voters, c.self, gotP, gotD, c.wantPromote, c.wantDemote)
		}
	}
	// Repeated swaps from a crowded start end spread.
	voters := []string{"a1", "a2", "b1"}
	for range 5 {
		p, d := pickZoneSwap(servers(voters...), nonvoters(voters...), "a1", r, 60_000, all)
		if p == nil {
			break
		}
		voters = slices.DeleteFunc(voters, func(id string) bool { return id == string(d.ID) })
		voters = append(voters, string(p.ID))
	}
	perZone := voterZones(r, servers(voters...))
	if perZone["a"] != 1 || perZone["b"] != 1 || perZone["c"] != 1 {
		t.Errorf("after swaps voters %v: per zone %v, want one each", voters, perZone)
	}
}
