package e2e

import (
	"encoding/json"
	"fmt"
	"net/url"
	"strconv"
	"testing"
	"time"

	"github.com/prometheus/prometheus/prompb"

	pc "github.com/raftingest/raftingest/internal/proccluster"
)

// TestQuery_SpansMemoryAndBucket writes the first half of every series, flushes every ingester to
// the bucket (memory released), writes the second half, and reads the whole range through the
// PromQL API: every sample comes back exactly once, though the first half now lives in three
// replicas' blocks and the second in three ingesters' memory.
func TestQuery_SpansMemoryAndBucket(t *testing.T) {
	skipShort(t)
	_, a, b, cc := startCluster3(t)
	const nSeries, half = 20, 40
	t0 := time.Now().Add(-30 * time.Minute).Truncate(time.Minute).UnixMilli()
	write := func(from, to int) {
		req := &prompb.WriteRequest{}
		for s := range nSeries {
			ts := series([]string{"__name__", "e2e_span", "series", fmt.Sprintf("s%02d", s)})
			for i := from; i < to; i++ {
				ts.Samples = append(ts.Samples, prompb.Sample{Timestamp: t0 + int64(i)*15_000, Value: float64(s*1000 + i)})
			}
			req.Timeseries = append(req.Timeseries, ts)
		}
		if code, body, err := push(a.HTTPAddr, "", req); err != nil || code/100 != 2 {
			t.Fatalf("push [%d, %d): %d %q %v", from, to, code, body, err)
		}
	}
	write(0, half)
	// Let every replica's push land before flushing (a 2xx means a quorum stored it).
	pc.Eventually(t, 10*time.Second, "every replica holds the first half", func() (bool, string) {
		return allHold(t, nSeries*half, a, b, cc), "not yet"
	})
	for _, n := range []*pc.Node{a, b, cc} {
		if code, body := storagePostFlush(t, n.AdminAddr); code != 200 {
			t.Fatalf("%s: POST /ingester/flush: %d %s", n.ID, code, body)
		}
		if _, body, _ := pc.HTTPGet(n.HTTPAddr, "/metrics", ""); metricValue(body, "cortex_ingester_memory_series") != 0 {
			t.Fatalf("%s still holds series in memory after the flush: %v", n.ID, metricValue(body, "cortex_ingester_memory_series"))
		}
	}
	write(half, 2*half)

	end := time.UnixMilli(t0 + int64(2*half-1)*15_000 + 1)
	window := strconv.Itoa(2*half*15+60) + "s"
	code, ans, raw := getAPI(t, b.HTTPAddr, "/prometheus/api/v1/query", url.Values{
		"query": {"e2e_span[" + window + "]"}, "time": {strconv.FormatFloat(float64(end.UnixMilli())/1000, 'f', 3, 64)}})
	if code != 200 || ans.Data.ResultType != "matrix" {
		t.Fatalf("query: %d %s", code, raw)
	}
	var result []struct {
		Metric map[string]string `json:"metric"`
		Values [][2]any          `json:"values"`
	}
	if err := json.Unmarshal(ans.Data.Result, &result); err != nil {
		t.Fatal(err)
	}
	if len(result) != nSeries {
		t.Fatalf("%d series, want %d", len(result), nSeries)
	}
	for _, r := range result {
		s, _ := strconv.Atoi(r.Metric["series"][1:])
		if len(r.Values) != 2*half {
			t.Fatalf("series %s: %d samples, want %d (each once, from blocks and memory)", r.Metric["series"], len(r.Values), 2*half)
		}
		for i, v := range r.Values {
			if want := strconv.Itoa(s*1000 + i); v[1] != want {
				t.Fatalf("series %s sample %d: %v, want %s", r.Metric["series"], i, v[1], want)
			}
		}
	}
}

// allHold reports whether every node holds exactly n samples of e2e_span in memory.
func allHold(t *testing.T, n int, nodes ...*pc.Node) bool {
	t.Helper()
	for _, node := range nodes {
		got, err := queryIngester(t.Context(), node.GRPCAddr, "anonymous", "e2e_span")
		if err != nil || len(got) != n {
			return false
		}
	}
	return true
}
