package e2e

import (
	"fmt"
	"math"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/prometheus/prompb"

	pc "github.com/raftingest/raftingest/internal/proccluster"
)

// TestProcess_AutoForgetAndBalancedTokens runs 5 real processes with
// -ring.auto-forget-unhealthy-periods 2 and the shortest flush period (1m, so the leader's holdoff
// after it took office is 2m): balanced tokens leave ownership within 1.1; a member killed -9 for
// good is forgotten by the leader — from the ring and from Raft — once its heartbeat is two
// timeouts old and the holdoff passed, and not before; writes through a survivor keep succeeding and
// every acknowledged sample stays readable. It takes about two and a half minutes (the holdoff).
func TestProcess_AutoForgetAndBalancedTokens(t *testing.T) {
	skipShort(t)
	start := time.Now()
	c, nodes := startCluster5(t, "-ring.auto-forget-unhealthy-periods", "2", "-ingester.flush-period", "1m", "-compactor.block-ranges", "1m,6m")
	a := nodes[0]
	v, err := c.Ring(a.GRPCAddr)
	if err != nil {
		t.Fatal(err)
	}
	lo, hi := 2.0, 0.0
	for _, m := range v.Members {
		lo, hi = min(lo, m.Ownership), max(hi, m.Ownership)
	}
	if hi/lo > 1.1 {
		t.Errorf("ownership spread %.3f over 5 balanced members (max %.4f, min %.4f), want ≤ 1.1", hi/lo, hi, lo)
	}

	w := startWriter(a.HTTPAddr, "", 20)
	defer w.Stop()
	w.waitRounds(t, 20)
	victim := nodes[4]
	victim.Kill()
	killed := time.Now()
	// Unhealthy after -ring.heartbeat-timeout (3s); forgettable after 2 of them, but not before the
	// leader's holdoff (2 x 1m from its election, about when the cluster started).
	holdoffEnds := start.Add(2 * time.Minute)
	var forgotten time.Time
	pc.Eventually(t, 3*time.Minute, victim.ID+" forgotten by the leader", func() (bool, string) {
		v, err := c.Ring(a.GRPCAddr)
		if err != nil {
			return false, err.Error()
		}
		if m, ok := v.Member(victim.ID); ok {
			return false, fmt.Sprintf("still in the ring: %s, heartbeat %.0fs old", m.State, m.HeartbeatAgeSeconds)
		}
		forgotten = time.Now()
		return true, ""
	})
	if forgotten.Sub(killed) < 6*time.Second || forgotten.Before(holdoffEnds.Add(-10*time.Second)) {
		t.Errorf("forgotten %s after the kill, %s before the holdoff ended: too early", forgotten.Sub(killed).Round(time.Second), holdoffEnds.Sub(forgotten).Round(time.Second))
	}
	st, err := c.Status(a.GRPCAddr)
	if err != nil {
		t.Fatal(err)
	}
	if slices.ContainsFunc(st.Servers, func(s struct {
		ID      string `json:"id"`
		Address string `json:"address"`
		Voter   bool   `json:"voter"`
	}) bool {
		return s.ID == victim.ID
	}) {
		t.Errorf("%s is still a Raft server: %+v", victim.ID, st.Servers)
	}
	before := w.ackedCount()
	w.waitRounds(t, before/w.nSeries+20) // writes go on, on the ring without it
	w.Stop()
	acked, failures, _ := w.snapshot()
	t.Logf("forgotten %s after the kill; %d samples acknowledged, failures %v", forgotten.Sub(killed).Round(time.Second), len(acked), failures)
	// Each acknowledged sample was stored by a quorum (2 of 3): the forgotten member held at most
	// one of its copies, so a survivor holds it, in memory or (flushed every minute) in its
	// node-local bucket. Remote read through a survivor reads both on every member.
	mint, maxt := int64(math.MaxInt64), int64(math.MinInt64)
	for k := range acked {
		mint, maxt = min(mint, k.t), max(maxt, k.t)
	}
	lines, err := readRemote(t, "http://"+nodes[1].HTTPAddr+"/prometheus/api/v1/read", mint, maxt,
		&prompb.LabelMatcher{Type: prompb.LabelMatcher_EQ, Name: "__name__", Value: "e2e_writes"})
	if err != nil {
		t.Fatal(err)
	}
	have := make(map[string]bool, len(lines))
	for _, l := range lines {
		have[l] = true
	}
	lost := 0
	for k, v := range acked {
		if !have[fmt.Sprintf("%s %d %x", k.series, k.t, math.Float64bits(v))] {
			lost++
			if lost <= 3 {
				t.Errorf("acknowledged sample %v = %v is not readable through %s", k, v, nodes[1].ID)
			}
		}
	}
	if lost > 0 {
		t.Fatalf("%d of %d acknowledged samples lost with the forgotten member", lost, len(acked))
	}
}
