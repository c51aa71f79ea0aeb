package e2e

import (
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	pc "github.com/raftingest/raftingest/internal/proccluster"
)

// TestProcess_RaftRecoverAfterLosingAMajority: two of three members die for good under load. The
// survivor alone cannot elect a leader; restarted with -raft.recover it becomes the only voter,
// the dead members are removed with ringctl (no -force: their heartbeats are stale by then), two
// fresh nodes join, and every sample the writer had acknowledged is still in the survivor's
// memory and answered by PromQL through each new node. The ring's invariants hold. A restart
// with -raft.recover left on is then refused (it would split the grown cluster), and one without
// it rejoins the cluster.
func TestProcess_RaftRecoverAfterLosingAMajority(t *testing.T) {
	skipShort(t)
	c, a, b, cc := startCluster3(t)
	w := startWriter(a.HTTPAddr, "", 20)
	defer w.Stop()
	w.waitRounds(t, 50)

	b.Kill()
	cc.Kill()
	time.Sleep(200 * time.Millisecond) // a few more rounds, which now fail their quorum
	w.Stop()
	acked, _, rounds := w.snapshot()
	t.Logf("%d samples acknowledged in %d rounds before the majority was lost", len(acked), rounds)

	// Every acknowledged sample reached a too: the distributor on a always writes its own replica.
	if n := len(copies(t, acked, "anonymous", a)); n != len(acked) {
		t.Fatalf("a holds %d of %d acknowledged samples before the recovery", n, len(acked))
	}

	a.Kill()
	a.Start("-raft.recover")
	pc.Eventually(t, 30*time.Second, "a leads alone", func() (bool, string) {
		s, err := c.Status(a.GRPCAddr)
		if err != nil {
			return false, err.Error()
		}
		return s.Leader == "a", "leader " + s.Leader
	})
	if !strings.Contains(a.Log(), "-raft.recover: recovered") {
		t.Fatalf("a did not log its recovery:\n%s", a.Log())
	}
	for _, dead := range []string{"b", "c"} {
		waitState(t, c, a.GRPCAddr, dead, "UNHEALTHY")
		if out, errOut, code := c.Ringctl("-addr", a.GRPCAddr, "remove", dead); code != 0 {
			t.Fatalf("ringctl remove %s: exit %d: %s%s", dead, code, out, errOut)
		}
	}
	d := c.Start("d", "-join", a.GRPCAddr)
	e := c.Start("e", "-join", a.GRPCAddr)
	v := waitActive(t, c, a.GRPCAddr, "a", "d", "e")
	if len(v.Members) != 3 {
		t.Fatalf("ring after the recovery: %+v, want a, d and e", v.Members)
	}
	checkRing(t, c, a.GRPCAddr)

	// Nothing acknowledged is lost: a's memory holds it (its WAL replayed), and PromQL through the
	// new members, which hold none of it, finds every sample of every series.
	if n := len(copies(t, acked, "anonymous", a)); n != len(acked) {
		t.Fatalf("a holds %d of %d acknowledged samples after the recovery", n, len(acked))
	}
	perSeries := map[string]int{} // by the "series" label's value
	for k := range acked {
		for _, kv := range strings.Split(k.series, ",") {
			if v, ok := strings.CutPrefix(kv, "series="); ok {
				perSeries[v]++
			}
		}
	}
	if len(perSeries) != 20 {
		t.Fatalf("acknowledged samples of %d series, want 20", len(perSeries))
	}
	for _, via := range []*pc.Node{d, e} {
		got := countOverTime(t, via.HTTPAddr)
		for s, want := range perSeries {
			if got[s] < want {
				t.Fatalf("via %s: %s has %d samples, %d were acknowledged", via.ID, s, got[s], want)
			}
		}
	}

	// -raft.recover left on: refused now that d and e are in the configuration.
	a.Kill()
	a.Start("-raft.recover")
	code, err := a.Wait(30 * time.Second)
	if err != nil || code == 0 || !strings.Contains(a.Log(), "remove -raft.recover") {
		t.Fatalf("restart with -raft.recover after the cluster grew: exit %d, %v; want non-zero saying to remove the flag:\n%s", code, err, a.Log())
	}
	a.Start()
	waitActive(t, c, d.GRPCAddr, "a", "d", "e")
	checkRing(t, c, d.GRPCAddr)
}

// countOverTime asks addr's PromQL for the samples of every e2e_writes series over the last hour,
// by series label value.
func countOverTime(t *testing.T, addr string) map[string]int {
	t.Helper()
	q := url.Values{"query": {"count_over_time(e2e_writes[1h])"}, "time": {fmt.Sprint(time.Now().Unix())}}
	code, body, err := pc.HTTPGet(addr, "/prometheus/api/v1/query?"+q.Encode(), "")
	if err != nil || code != 200 {
		t.Fatalf("query via %s: %d %v %s", addr, code, err, body)
	}
	var ans struct {
		Data struct {
			Result []struct {
				Metric map[string]string `json:"metric"`
				Value  [2]any            `json:"value"`
			} `json:"result"`
		} `json:"data"`
	}
	if err := json.Unmarshal([]byte(body), &ans); err != nil {
		t.Fatalf("query via %s: %v: %s", addr, err, body)
	}
	out := map[string]int{}
	for _, r := range ans.Data.Result {
		var n int
		fmt.Sscan(fmt.Sprint(r.Value[1]), &n)
		out[r.Metric["series"]] = n
	}
	return out
}
