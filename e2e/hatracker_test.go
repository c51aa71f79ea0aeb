package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/prometheus/prompb"

	pc "github.com/raftingest/raftingest/internal/proccluster"
)

// haWriter is one replica of a Prometheus HA pair: it "scrapes" every period (a sample whose
// timestamp is its clock and whose value is the timestamp) and remote-writes it with the pair's
// cluster label and its own replica label, retrying a sample on anything but 2xx as Prometheus does.
type haWriter struct {
	replica string
	addr    string
	mu      sync.Mutex
	stored  []int64 // answered 200
	deduped []int64 // answered 202
	other   map[int]int
}

func (w *haWriter) run(t *testing.T, stop <-chan struct{}, period time.Duration) {
	tick := time.NewTicker(period)
	defer tick.Stop()
	for {
		select {
		case <-stop:
			return
		case <-tick.C:
		}
		ts := time.Now().UnixMilli()
		req := &prompb.WriteRequest{Timeseries: []prompb.TimeSeries{series(
			[]string{"__name__", "ha_e2e", "__replica__", w.replica, "cluster", "pair1", "job", "scrape"},
			prompb.Sample{Timestamp: ts, Value: float64(ts)})}}
		for attempt := 0; ; attempt++ {
			code, body, err := push(w.addr, "", req)
			w.mu.Lock()
			switch {
			case err == nil && code == http.StatusOK:
				w.stored = append(w.stored, ts)
			case err == nil && code == http.StatusAccepted:
				w.deduped = append(w.deduped, ts)
			default:
				w.other[code]++
			}
			w.mu.Unlock()
			if err == nil && (code == http.StatusOK || code == http.StatusAccepted) {
				break
			}
			if err == nil && code/100 == 4 {
				t.Errorf("%s: push of %d: %d %s", w.replica, ts, code, body)
				break
			}
			select {
			case <-stop:
				return
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
}

// TestProcess_HATracker_FailoverNoGapNoDuplicate: two writers act as an HA pair (same cluster label,
// replicas r1 and r2) against two members of a 5-member cluster. r1 is elected; r2's samples are
// answered 202 and dropped; r1 stops; after the failover timeout r2 is elected and stored. Every
// sample answered 200 is readable through PromQL on a third member, exactly once
// (count_over_time), without the replica label; no r2 sample is stored from before r1's last one;
// the gap is at most the failover timeout plus the refresh period and slack.
func TestProcess_HATracker_FailoverNoGapNoDuplicate(t *testing.T) {
	skipShort(t)
	const failover = 3 * time.Second
	_, nodes := startCluster5(t, "-distributor.ha-tracker.enable=true", "-distributor.ha-tracker.update-timeout=1s",
		"-distributor.ha-tracker.update-timeout-jitter-max=0s", "-distributor.ha-tracker.failover-timeout="+failover.String())
	r1 := &haWriter{replica: "r1", addr: nodes[0].HTTPAddr, other: map[int]int{}}
	r2 := &haWriter{replica: "r2", addr: nodes[1].HTTPAddr, other: map[int]int{}}

	// r1 goes first, so that it is elected; then both write.
	began := time.Now()
	stop1, stop2 := make(chan struct{}), make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); r1.run(t, stop1, 100*time.Millisecond) }()
	pc.Eventually(t, 20*time.Second, "r1 elected", func() (bool, string) {
		r1.mu.Lock()
		defer r1.mu.Unlock()
		return len(r1.stored) > 0, fmt.Sprint(r1.other)
	})
	wg.Add(1)
	go func() { defer wg.Done(); r2.run(t, stop2, 100*time.Millisecond) }()
	time.Sleep(failover + 2*time.Second) // longer than the failover timeout: r1 keeps refreshing
	close(stop1)
	stoppedAt := time.Now().UnixMilli()
	time.Sleep(failover + 4*time.Second)
	close(stop2)
	wg.Wait()
	ran := time.Since(began)

	if len(r2.deduped) < 20 {
		t.Fatalf("r2 had %d samples deduplicated while r1 was writing, want at least 20", len(r2.deduped))
	}
	if len(r1.deduped) != 0 {
		t.Fatalf("r1 had %d samples dropped while it was the elected replica and kept writing", len(r1.deduped))
	}
	if len(r2.stored) < 10 {
		t.Fatalf("r2 stored %d samples after r1 stopped (other answers %v), want a failover", len(r2.stored), r2.other)
	}
	last1, first2 := slices.Max(r1.stored), slices.Min(r2.stored)
	if first2 <= last1 {
		t.Fatalf("r2 stored a sample at %d, not after r1's last at %d: both replicas stored at overlapping times", first2, last1)
	}
	if gap := time.Duration(first2-last1) * time.Millisecond; gap > failover+3*time.Second {
		t.Fatalf("gap of %s between r1's last sample and r2's first (failover timeout %s)", gap, failover)
	}
	if last1 > stoppedAt {
		t.Fatalf("r1 stored at %d after it stopped at %d", last1, stoppedAt)
	}
	t.Logf("r1 stored %d, r2 deduped %d then stored %d; gap %dms; other answers r1 %v r2 %v", len(r1.stored),
		len(r2.deduped), len(r2.stored), first2-last1, r1.other, r2.other)

	// Every stored sample exactly once, read on a third member, and only those.
	want := len(r1.stored) + len(r2.stored)
	reader := nodes[3].HTTPAddr
	now := strconv.FormatFloat(float64(time.Now().Add(time.Second).UnixMilli())/1000, 'f', 3, 64)
	pc.Eventually(t, 20*time.Second, "every stored sample readable once", func() (bool, string) {
		_, ans, body := getAPI(t, reader, "/prometheus/api/v1/query", url.Values{
			"query": {`count_over_time(ha_e2e{cluster="pair1"}[5m])`}, "time": {now}})
		var res []struct {
			Metric map[string]string `json:"metric"`
			Value  [2]any            `json:"value"`
		}
		if ans.Status != "success" || json.Unmarshal(ans.Data.Result, &res) != nil || len(res) != 1 {
			return false, body
		}
		if _, ok := res[0].Metric["__replica__"]; ok {
			t.Fatalf("the replica label was stored: %v", res[0].Metric)
		}
		got, _ := strconv.Atoi(res[0].Value[1].(string))
		return got == want, fmt.Sprintf("count_over_time %d, want %d", got, want)
	})
	// The values are the timestamps the writers got 200 for, and nothing else.
	_, ans, body := getAPI(t, reader, "/prometheus/api/v1/query", url.Values{
		"query": {`ha_e2e{cluster="pair1"}[5m]`}, "time": {now}})
	var m []struct {
		Values [][2]any `json:"values"`
	}
	if ans.Status != "success" || json.Unmarshal(ans.Data.Result, &m) != nil || len(m) != 1 {
		t.Fatalf("range selector: %s", body)
	}
	var got []int64
	for _, v := range m[0].Values {
		f, _ := strconv.ParseFloat(v[1].(string), 64)
		got = append(got, int64(f))
	}
	all := append(slices.Clone(r1.stored), r2.stored...)
	slices.Sort(all)
	if !slices.Equal(got, all) {
		t.Fatalf("stored values %v\nwant the accepted timestamps %v", got, all)
	}

	// Raft is not flooded: the elections and refreshes proposed by all five members together
	// (cortex_ha_tracker_kv_store_cas_total) are bounded by the update timeout, not by the pushes
	// (about 10 per second per replica): at most two per second of the run (update-timeout 1s;
	// several members may see the same stale entry at once), plus the failover.
	cas := 0.0
	for _, n := range nodes {
		_, metrics, err := pc.HTTPGet(n.HTTPAddr, "/metrics", "")
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range strings.Split(metrics, "\n") {
			if strings.HasPrefix(l, "cortex_ha_tracker_kv_store_cas_total{") {
				v, _ := strconv.ParseFloat(l[strings.LastIndexByte(l, ' ')+1:], 64)
				cas += v
			}
		}
	}
	pushes := len(r1.stored) + len(r1.deduped) + len(r2.stored) + len(r2.deduped)
	t.Logf("Raft proposals of the HA tracker: %.0f over %s for %d pushes", cas, ran.Round(time.Second), pushes)
	if cas < 2 || cas > 2*ran.Seconds()+4 {
		t.Fatalf("%.0f HA proposals over %s (%d pushes): want at least the first election and the failover, at most two per second",
			cas, ran.Round(time.Second), pushes)
	}

	// The HA tracker's page names r2.
	resp, err := http.Get("http://" + nodes[3].AdminAddr + "/distributor/ha_tracker") // the admin listener
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(page), "<td>pair1</td><td>r2</td>") {
		t.Fatalf("/distributor/ha_tracker does not show r2 elected:\n%s", page)
	}
}
