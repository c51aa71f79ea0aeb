package e2e

import (
	"encoding/json"
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/raftingest/raftingest/distributor"
	pc "github.com/raftingest/raftingest/internal/proccluster"
	"github.com/raftingest/raftingest/ringstate"
)

// zonedRing reads the ring through addr (`ringctl ring -o json`, which carries each member's zone)
// and rebuilds it as a ringstate.Ring at the same ring time, health as the view judged it.
func zonedRing(t *testing.T, c *pc.Cluster, addr string) *ringstate.Ring {
	t.Helper()
	out, errOut, code := c.Ringctl("-addr", addr, "ring", "-o", "json")
	if code != 0 {
		t.Fatalf("ringctl ring: exit %d: %s", code, errOut)
	}
	var v struct {
		TimeMs  int64 `json:"time_ms"`
		Members []struct {
			ID        string   `json:"id"`
			RingState string   `json:"ring_state"`
			Healthy   bool     `json:"healthy"`
			RaftAddr  string   `json:"raft_addr"`
			Zone      string   `json:"zone"`
			Tokens    []uint32 `json:"tokens"`
		} `json:"members"`
	}
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		t.Fatalf("ringctl ring -o json: %v", err)
	}
	var ms []ringstate.Member
	for _, m := range v.Members {
		st, err := ringstate.ParseState(m.RingState)
		if err != nil {
			t.Fatal(err)
		}
		hb := v.TimeMs
		if !m.Healthy {
			hb = 0
		}
		tokens := make(ringstate.Tokens, len(m.Tokens))
		for i, tok := range m.Tokens {
			tokens[i] = ringstate.Token(tok)
		}
		ms = append(ms, ringstate.Member{ID: ringstate.MemberID(m.ID), RaftAddr: m.RaftAddr, Zone: m.Zone, State: st,
			Tokens: tokens, HeartbeatMs: hb})
	}
	r, err := ringstate.Restore(ms, v.TimeMs, nil)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// TestProcess_ZoneLoss runs 6 ingesters in 3 zones with RF 3, zone awareness on and 3 Raft voters,
// the members joining zone by zone (a1 a2 b1 b2 c1 c2) so that the first voters would be a1 a2 b1
// without spreading. It checks that the voters end one per zone and that every series' replication
// set spans the 3 zones; then, under a steady write load, SIGKILLs both members of zone a (with the
// Raft leader, a1): writes keep succeeding, Raft elects a leader among the survivors, no sample has
// two copies in one zone, and every acknowledged sample is read back through PromQL on a survivor.
func TestProcess_ZoneLoss(t *testing.T) {
	skipShort(t)
	c := pc.New(t, append(slicesClone(fastFlags), "-ingester.ring.zone-awareness-enabled", "-raft.max-voters", "3")...)
	zoneOf := map[string]string{}
	var nodes []*pc.Node
	for _, id := range []string{"a1", "a2", "b1", "b2", "c1", "c2"} {
		zone := "zone-" + id[:1]
		zoneOf[id] = zone
		args := []string{"-ingester.ring.instance-zone", zone}
		if id == "a1" {
			args = append(args, "-bootstrap")
		} else {
			args = append(args, "-join", nodes[0].GRPCAddr)
		}
		n := c.Start(id, args...)
		nodes = append(nodes, n)
		waitActive(t, c, nodes[0].GRPCAddr, id)
	}
	ids := []string{"a1", "a2", "b1", "b2", "c1", "c2"}
	for _, n := range nodes {
		waitActive(t, c, n.GRPCAddr, ids...)
	}
	a1, a2, b1, b2 := nodes[0], nodes[1], nodes[2], nodes[3]

	// Voters: one per zone, once the leader has swapped a2 (promoted while only zone a had joined)
	// for a member of zone c.
	pc.Eventually(t, 30*time.Second, "one voter per zone", func() (bool, string) {
		st, err := c.Status(b1.GRPCAddr)
		if err != nil {
			return false, err.Error()
		}
		perZone := map[string][]string{}
		for _, s := range st.Servers {
			if s.Voter {
				perZone[zoneOf[s.ID]] = append(perZone[zoneOf[s.ID]], s.ID)
			}
		}
		return len(perZone) == 3 && len(perZone["zone-a"]) == 1 && len(perZone["zone-b"]) == 1 && len(perZone["zone-c"]) == 1,
			fmt.Sprintf("voters by zone %v", perZone)
	})

	// Every series' replication set spans the 3 zones.
	const nSeries = 24
	r := zonedRing(t, c, b1.GRPCAddr)
	p := ringstate.Placement{RF: 3, ZoneAware: true}
	seriesLabels := func(s int) []distributor.Label {
		return []distributor.Label{{Name: "__name__", Value: "e2e_writes"}, {Name: "series", Value: fmt.Sprintf("s%03d", s)}, {Name: "writer", Value: "w0"}}
	}
	for s := range nSeries {
		set := r.ReplicationSetFor(distributor.SeriesHash("anonymous", seriesLabels(s)), p, 3000, nil)
		zones := map[string]bool{}
		for _, m := range set {
			zones[m.Zone] = true
		}
		if len(set) != 3 || len(zones) != 3 {
			t.Fatalf("series s%03d: replication set %v spans zones %v, want 3 members in 3 zones", s, set, zones)
		}
	}

	// Write through b1 (a survivor); kill zone a under load.
	w := startWriter(b1.HTTPAddr, "", nSeries)
	defer w.Stop()
	w.waitRounds(t, 100)
	a1.Kill()
	a2.Kill()
	killed := time.Now()
	ackedAtKill := w.ackedCount()
	// Writes keep succeeding: 300 more rounds (past the 3 s heartbeat timeout, through the election).
	w.waitRounds(t, ackedAtKill/nSeries+300)
	pc.Eventually(t, 30*time.Second, "a Raft leader among the survivors", func() (bool, string) {
		st, err := c.Status(b2.GRPCAddr)
		if err != nil {
			return false, err.Error()
		}
		return st.Leader != "" && zoneOf[st.Leader] != "zone-a", fmt.Sprintf("leader %q", st.Leader)
	})
	// The ring still commits (ring time advances): zone a is seen unhealthy.
	pc.Eventually(t, 30*time.Second, "zone a unhealthy in the ring", func() (bool, string) {
		v, err := c.Ring(b2.GRPCAddr)
		if err != nil {
			return false, err.Error()
		}
		for _, id := range []string{"a1", "a2"} {
			if m, _ := v.Member(id); m.Healthy {
				return false, id + " still healthy"
			}
		}
		return true, ""
	})
	w.waitRounds(t, w.ackedCount()/nSeries+50)
	w.Stop()
	acked, failures, rounds := w.snapshot()
	if len(failures) > 0 {
		t.Fatalf("failed pushes (zone a killed %v into the run): %v", killed.Format(time.RFC3339Nano), failures)
	}
	t.Logf("%d rounds, %d samples acknowledged, %d of them after zone a was killed", rounds, len(acked), len(acked)-ackedAtKill)

	// No sample has two copies in one zone (on the survivors: zones b and c).
	survivors := nodes[2:]
	perZone := map[sampleKey]map[string]int{}
	for _, n := range survivors {
		for k := range copies(t, acked, "anonymous", n) {
			if perZone[k] == nil {
				perZone[k] = map[string]int{}
			}
			perZone[k][zoneOf[n.ID]]++
		}
	}
	for k, zs := range perZone {
		for z, n := range zs {
			if n > 1 {
				t.Fatalf("sample %v has %d copies in %s", k, n, z)
			}
		}
	}

	// Every acknowledged sample is read back through PromQL on a survivor.
	_, ans, raw := getAPI(t, b2.HTTPAddr, "/prometheus/api/v1/query", url.Values{
		"query": {"e2e_writes[15m]"}, "time": {strconv.FormatFloat(float64(time.Now().UnixMilli())/1000, 'f', 3, 64)}})
	if ans.Status != "success" {
		t.Fatalf("PromQL on b2: %s", raw)
	}
	var matrix []struct {
		Metric map[string]string `json:"metric"`
		Values [][2]any          `json:"values"`
	}
	if err := json.Unmarshal(ans.Data.Result, &matrix); err != nil {
		t.Fatalf("PromQL result: %v", err)
	}
	got := map[sampleKey]float64{}
	for _, s := range matrix {
		var parts []string
		for n, v := range s.Metric {
			parts = append(parts, n+"="+v)
		}
		parts = append(parts, "__name__=e2e_writes") // a range selector keeps the name; add it if dropped
		key := canonicalKey(parts)
		for _, pt := range s.Values {
			ts, _ := pt[0].(float64)
			vs, _ := pt[1].(string)
			v, err := strconv.ParseFloat(vs, 64)
			if err != nil {
				t.Fatalf("value %v: %v", pt[1], err)
			}
			got[sampleKey{key, int64(ts*1000 + 0.5)}] = v
		}
	}
	missing := 0
	var example sampleKey
	for k, v := range acked {
		if gv, ok := got[k]; !ok || gv != v {
			missing++
			example = k
		}
	}
	if missing > 0 {
		t.Fatalf("%d of %d acknowledged samples not read back through PromQL on b2 (e.g. %v)", missing, len(acked), example)
	}
}

// canonicalKey renders "name=value" parts as keyOf does, duplicates dropped.
func canonicalKey(parts []string) string {
	slices.Sort(parts)
	return strings.Join(slices.Compact(parts), ",")
}
