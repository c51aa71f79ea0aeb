package bench

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang/snappy"
	"github.com/prometheus/prometheus/prompb"
)

// countingServer is a remote-write receiver on 127.0.0.1 that counts the samples of each series
// and checks their timestamps increase.
type countingServer struct {
	mu     sync.Mutex
	counts map[string]int64
	last   map[string]int64
	bad    string // first out-of-order sample, if any
}

func (c *countingServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), 400)
		return
	}
	raw, err := snappy.Decode(nil, body)
	if err != nil {
		http.Error(w, err.Error(), 400)
		return
	}
	var wr prompb.WriteRequest
	if err := wr.Unmarshal(raw); err != nil {
		http.Error(w, err.Error(), 400)
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, ts := range wr.Timeseries {
		var key strings.Builder
		for _, l := range ts.Labels {
			key.WriteString(l.Name + "=" + l.Value + ",")
		}
		k := key.String()
		for _, s := range ts.Samples {
			if p, ok := c.last[k]; ok && s.Timestamp <= p && c.bad == "" {
				c.bad = k
			}
			c.last[k] = s.Timestamp
			c.counts[k]++
		}
	}
}

// spread returns the fewest and most samples any series received.
func (c *countingServer) spread() (lo, hi int64, n int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	lo = 1 << 62
	for _, v := range c.counts {
		lo, hi = min(lo, v), max(hi, v)
	}
	return lo, hi, len(c.counts)
}

// TestGenerator_UntilRound: a time-bound run stops senders mid-round and SamplesPerSeries says
// how far each series got; a run with UntilRound then brings every series to exactly that many
// samples, in order, which is how scenario 1 ages a head to the same size on both servers.
func TestGenerator_UntilRound(t *testing.T) {
	cs := &countingServer{counts: map[string]int64{}, last: map[string]int64{}}
	srv := httptest.NewServer(cs) // 127.0.0.1
	defer srv.Close()
	g, err := NewGenerator(LoadConfig{URLs: []string{srv.URL}, Series: 1000, LabelsPerSeries: 6, Metrics: 3,
		SamplesPerRequest: 70, Senders: 3, ScrapeInterval: 10 * time.Second, Tenants: 1, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	// 70-sample requests over 333/333/334 series: a run of a few requests ends mid-round.
	if _, err := g.Run(ctx, RunOptions{Duration: 30 * time.Millisecond, Rate: 30_000}); err != nil {
		t.Fatal(err)
	}
	lo, hi := g.SamplesPerSeries()
	slo, shi, n := cs.spread()
	if n < 1000 {
		slo = 0 // some series have received nothing yet
	}
	if lo != slo || hi != shi {
		t.Fatalf("SamplesPerSeries() = %d, %d; the server received %d to %d (%d series)", lo, hi, slo, shi, n)
	}
	target := hi + 3
	res, err := g.Run(ctx, RunOptions{UntilRound: target})
	if err != nil {
		t.Fatal(err)
	}
	if res.Errors() > 0 {
		t.Fatalf("%d requests failed: %v", res.Errors(), res.FirstErr)
	}
	slo, shi, n = cs.spread()
	if n != 1000 || slo != target || shi != target {
		t.Fatalf("after UntilRound %d: %d series received %d to %d samples", target, n, slo, shi)
	}
	if lo, hi := g.SamplesPerSeries(); lo != target || hi != target {
		t.Fatalf("SamplesPerSeries() = %d, %d after UntilRound %d", lo, hi, target)
	}
	if cs.bad != "" {
		t.Fatalf("series %s received a sample out of order", cs.bad)
	}
	// Already there: nothing more is sent.
	res, err = g.Run(ctx, RunOptions{UntilRound: target - 1})
	if err != nil {
		t.Fatal(err)
	}
	if res.Requests != 0 {
		t.Fatalf("UntilRound below the generator's round sent %d requests", res.Requests)
	}
}

func TestSizeName(t *testing.T) {
	for n, want := range map[int64]string{100_000: "100k", 1_000_000: "1m", 10_000_000: "10m", 1_000: "1k", 2_500_000: "2500k", 1500: "1500", 0: "0"} {
		if got := sizeName(n); got != want {
			t.Errorf("sizeName(%d) = %q, want %q", n, got, want)
		}
	}
}

func TestParseSmapsRollup(t *testing.T) {
	in := `55d0c0a8e000-7ffd6b7f1000 ---p 00000000 00:00 0                          [rollup]
Rss:              123456 kB
Pss:              100000 kB
Pss_Anon:          80000 kB
Anonymous:         81000 kB
Swap:                  0 kB
`
	rss, anon, err := parseSmapsRollup([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	if rss != 123456*1024 || anon != 81000*1024 {
		t.Errorf("rss %v anon %v", rss, anon)
	}
	if _, _, err := parseSmapsRollup([]byte("Rss: 1 kB\n")); err == nil {
		t.Error("no Anonymous line: want an error")
	}
	if _, _, err := parseSmapsRollup([]byte("Rss: x kB\nAnonymous: 1 kB\n")); err == nil {
		t.Error("bad number: want an error")
	}
	// This kernel's own file parses, with anonymous memory inside the resident set.
	b, err := os.ReadFile("/proc/self/smaps_rollup")
	if err != nil {
		t.Skipf("no smaps_rollup here: %v", err)
	}
	rss, anon, err = parseSmapsRollup(b)
	if err != nil {
		t.Fatal(err)
	}
	if !(rss > 0 && anon > 0 && anon <= rss) {
		t.Errorf("/proc/self/smaps_rollup: rss %v anon %v", rss, anon)
	}
}
