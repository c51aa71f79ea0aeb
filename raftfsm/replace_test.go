package raftfsm

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/raftingest/raftingest/ringstate"
)

// silentVoters, as a table: a voter counts as silent once the leader has not heard from it for
// `after`, counting from the leader's start for one never heard from (a new leader does not demote
// voters it had no time to hear from). Non-voters are never counted; the leader always answers.
func TestSilentVoters(t *testing.T) {
	now := time.Unix(1000, 0)
	after := 10 * time.Second
	conf := raft.Configuration{Servers: []raft.Server{
		{ID: "self", Suffrage: raft.Voter}, {ID: "fresh", Suffrage: raft.Voter}, {ID: "stale", Suffrage: raft.Voter},
		{ID: "never", Suffrage: raft.Voter}, {ID: "old-nv", Suffrage: raft.Nonvoter},
	}}
	heard := map[raft.ServerID]time.Time{"fresh": now.Add(-time.Second), "stale": now.Add(-11 * time.Second), "old-nv": now.Add(-time.Hour)}
	last := func(id raft.ServerID) (time.Time, bool) { t, ok := heard[id]; return t, ok }
	for _, tc := range []struct {
		name          string
		leaderSince   time.Time
		wantSilent    []string
		wantAnswering int
	}{
		{"leader for long: stale and never-heard voters are silent", now.Add(-time.Minute), []string{"never", "stale"}, 2},
		{"leader for 5s: nobody is silent yet, even stale (counted from the leadership)", now.Add(-5 * time.Second), nil, 4},
		{"leader for exactly after", now.Add(-after), []string{"never", "stale"}, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			silent, answering := silentVoters(conf, "self", last, tc.leaderSince, now, after)
			var ids []string
			for _, s := range silent {
				ids = append(ids, string(s.ID))
			}
			if !slices.Equal(ids, tc.wantSilent) || answering != tc.wantAnswering {
				t.Fatalf("silent %v answering %d, want %v and %d", ids, answering, tc.wantSilent, tc.wantAnswering)
			}
		})
	}
}

// pickPromotion prefers a fit non-voter in the given zone, and takes another fit one otherwise.
func TestPickPromotion_PrefersTheZone(t *testing.T) {
	r := ringstate.New()
	var err error
	for i, m := range []struct{ id, zone string }{{"a", "z1"}, {"b", "z2"}, {"c", "z2"}} {
		for _, cmd := range []ringstate.Command{
			{Op: ringstate.OpRegister, Member: ringstate.MemberID(m.id), RaftAddr: "127.0.0.1:" + string(rune('1'+i)), Zone: m.zone},
			{Op: ringstate.OpClaimTokens, Member: ringstate.MemberID(m.id), Tokens: ringstate.Tokens{ringstate.Token(100 * (i + 1))}},
			{Op: ringstate.OpActivate, Member: ringstate.MemberID(m.id)},
		} {
			if r, _, err = r.Apply(cmd, 1000); err != nil {
				t.Fatal(err)
			}
		}
	}
	nv := []raft.Server{{ID: "a"}, {ID: "b"}, {ID: "c"}}
	all := func(raft.ServerID) bool { return true }
	for zone, want := range map[string]raft.ServerID{"": "a", "z1": "a", "z2": "b", "z9": "a"} {
		if got := pickPromotion(slices.Clone(nv), r, 60_000, zone, nil, all); got == nil || got.ID != want {
			t.Errorf("zone %q: picked %v, want %s", zone, got, want)
		}
	}
	// b is not recent: z2's other member is picked.
	if got := pickPromotion(slices.Clone(nv), r, 60_000, "z2", nil, func(id raft.ServerID) bool { return id != "b" }); got == nil || got.ID != "c" {
		t.Errorf("zone z2 without b: picked %v, want c", got)
	}
}

// A voter that stops answering is replaced: with -raft.max-voters=3 and a fourth, healthy
// non-voter, stopping a follower voter for -raft.voter-replace-after makes the leader promote the
// non-voter and demote the silent one (two changes, counted). When the silent one comes back it stays
// a non-voter: no voter slot is free.
func TestCluster_SilentVoterReplaced(t *testing.T) {
	c := newCluster(t)
	c.cfg.MaxVoters = 3
	c.cfg.VoterReplaceAfter = 1500 * time.Millisecond
	nodes := c.cluster(3)
	n4, voter := c.join("n4", nodes[0])
	if voter {
		t.Fatal("4th peer joined as a voter with -raft.max-voters=3")
	}
	c.activateAll(append(slices.Clone(nodes), n4))
	victim := c.follower()
	if victim == n4 {
		t.Fatal("n4 cannot be a follower voter")
	}
	c.stop(victim)
	if !poll(t, 15*time.Second, func() bool {
		v, nv := voters(c.leader().node)
		return len(v) == 3 && slices.Contains(v, "n4") && slices.Equal(nv, []string{victim.id})
	}) {
		v, nv := voters(c.leader().node)
		t.Fatalf("silent %s not replaced by n4: voters %v non-voters %v", victim.id, v, nv)
	}
	lead := c.leader()
	// The counters move once each change's future returns, a moment after the configuration shows it.
	for _, lv := range [][2]string{{"promoted", "replace_unreachable"}, {"demoted", "unreachable"}} {
		var got float64
		if !poll(t, 5*time.Second, func() bool {
			got = testutil.ToFloat64(lead.node.metrics.voterChanges.WithLabelValues(lv[0], lv[1]))
			return got == 1
		}) {
			t.Errorf("leader %s: raftingest_raft_voter_changes_total{change=%q,reason=%q} = %v, want 1", lead.id, lv[0], lv[1], got)
		}
	}
	// Back, it catches up as a non-voter and stays one.
	c.start(victim.id, false)
	time.Sleep(3 * c.cfg.ReconcileInterval)
	if v, nv := voters(c.leader().node); len(v) != 3 || !slices.Equal(nv, []string{victim.id}) {
		t.Fatalf("after %s came back: voters %v non-voters %v", victim.id, v, nv)
	}
	c.checkConsistent()
}

// -ring.auto-forget-unhealthy-periods: a member that stops heartbeating is forgotten by the leader
// (from the ring and from Raft) once its heartbeat is that many timeouts old, the others being
// healthy; counted.
func TestCluster_AutoForget(t *testing.T) {
	c := newCluster(t)
	c.cfg.RingHeartbeatTimeout = time.Second
	c.cfg.AutoForgetPeriods = 2
	c.cfg.ReplicationFactor = 3
	nodes := c.cluster(4)
	c.activateAll(nodes)
	dead := nodes[3]
	if c.leader() == dead {
		retry(t, "move leadership off "+dead.id, func(ctx context.Context) error {
			_, err := dead.node.TransferLeadership(ctx, nodes[0].id)
			return err
		})
	}
	c.stop(dead)
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() { // the live members heartbeat, as their lifecycles would
		defer close(done)
		for {
			select {
			case <-stop:
				return
			case <-time.After(200 * time.Millisecond):
			}
			for _, n := range nodes[:3] {
				_, _ = c.apply(n, ringstate.Command{Op: ringstate.OpHeartbeat, Member: ringstate.MemberID(n.id)})
			}
		}
	}()
	defer func() { close(stop); <-done }()
	if !poll(t, 20*time.Second, func() bool {
		lead := c.leader()
		_, inRing := lead.node.Ring().Member(ringstate.MemberID(dead.id))
		return !inRing && !inConfig(lead.node, dead.id)
	}) {
		t.Fatalf("%s not forgotten", dead.id)
	}
	lead := c.leader()
	if !poll(t, 5*time.Second, func() bool { return testutil.ToFloat64(lead.node.metrics.autoForgotten) == 1 }) {
		t.Errorf("raftingest_ring_auto_forgotten_total on the leader %s: %v", lead.id, testutil.ToFloat64(lead.node.metrics.autoForgotten))
	}
	for _, n := range nodes[:3] {
		if _, ok := lead.node.Ring().Member(ringstate.MemberID(n.id)); !ok {
			t.Errorf("live member %s forgotten", n.id)
		}
	}
}

// trimVoters finishes a zone swap whose demotion failed, and only that: a voter beyond
// -raft.max-voters that an operator asked for (AddPeer with forceVoter) stays, and the demoted one
// is exactly the swap's. The failed demotion is simulated by setting swapLeftover on the leader, as
// spreadVoters does when DemoteVoter fails between its two configuration changes.
func TestCluster_TrimVotersFinishesOnlyTheSwap(t *testing.T) {
	c := newCluster(t)
	c.cfg.MaxVoters = 3
	nodes := c.cluster(3)
	// n4 is an operator's voter: four voters with -raft.max-voters=3.
	n4 := c.start("n4", false)
	retry(t, "add n4 as voter", func(ctx context.Context) error {
		_, err := nodes[0].node.AddPeer(ctx, "n4", n4.raftAddr, true)
		return err
	})
	c.register(n4)
	c.activateAll(append(slices.Clone(nodes), n4))
	if !poll(t, 10*time.Second, func() bool { v, _ := voters(c.leader().node); return len(v) == 4 }) {
		v, nv := voters(c.leader().node)
		t.Fatalf("n4 not a voter: voters %v non-voters %v", v, nv)
	}
	// With no failed swap, the operator's extra voter stays through many reconciliations.
	time.Sleep(5 * c.cfg.ReconcileInterval)
	if v, _ := voters(c.leader().node); len(v) != 4 {
		t.Fatalf("operator's fourth voter demoted without a failed swap: voters %v", v)
	}

	lead := c.leader()
	var victim string
	for _, tn := range nodes {
		if tn != lead && tn.id != "n4" {
			victim = tn.id
			break
		}
	}
	lead.node.confMu.Lock()
	lead.node.swapLeftover = raft.ServerID(victim)
	lead.node.confMu.Unlock()
	lead.node.poke()
	if !poll(t, 10*time.Second, func() bool {
		v, nv := voters(c.leader().node)
		return len(v) == 3 && slices.Equal(nv, []string{victim})
	}) {
		v, nv := voters(c.leader().node)
		t.Fatalf("swap leftover %s not demoted (leader %s): voters %v non-voters %v", victim, lead.id, v, nv)
	}
	if v, _ := voters(c.leader().node); !slices.Contains(v, "n4") {
		t.Fatalf("operator's voter n4 demoted instead of the swap's: voters %v", v)
	}
	if c.leader() != lead {
		t.Skipf("leadership moved from %s during the test; the demotion above was still the swap's", lead.id)
	}
	lead.node.confMu.Lock()
	left := lead.node.swapLeftover
	lead.node.confMu.Unlock()
	if left != "" {
		t.Fatalf("swapLeftover = %q after the swap finished, want empty", left)
	}
	// Done: no further demotion, the three voters stay.
	time.Sleep(5 * c.cfg.ReconcileInterval)
	if v, _ := voters(c.leader().node); len(v) != 3 {
		t.Fatalf("after the trim: voters %v, want 3", v)
	}
	c.checkConsistent()
}
