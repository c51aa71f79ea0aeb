package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/golang/snappy"
	"github.com/prometheus/prometheus/prompb"

	pc "github.com/raftingest/raftingest/internal/proccluster"
)

// startCluster5 starts five members (RF 3, the default) with their default, node-local buckets
// (<data.dir>/blocks, not declared shared), and waits until every node sees every member ACTIVE.
func startCluster5(t *testing.T, extra ...string) (*pc.Cluster, []*pc.Node) {
	t.Helper()
	c := pc.New(t, append(slicesClone(fastFlags), extra...)...)
	a := c.Start("a", "-bootstrap")
	waitActive(t, c, a.GRPCAddr, "a")
	nodes := []*pc.Node{a}
	for _, id := range []string{"b", "c", "d", "e"} {
		nodes = append(nodes, c.Start(id, "-join", a.GRPCAddr))
	}
	ids := []string{"a", "b", "c", "d", "e"}
	for _, n := range nodes {
		waitActive(t, c, n.GRPCAddr, ids...)
	}
	return c, nodes
}

// startScraper runs Debian's prometheus scraping itself every second and remote-writing what it
// scrapes to pushURL, one shard (so that every sample up to the highest one sent has been sent).
// It is killed when the test ends.
func startScraper(t *testing.T, pushURL string) string {
	t.Helper()
	bin, err := exec.LookPath("prometheus")
	if err != nil {
		t.Skip("Debian's prometheus is not installed (make deps)")
	}
	addr := fmt.Sprintf("127.0.0.1:%d", pc.FreePorts(t, 1)[0])
	dir := t.TempDir()
	cfg := fmt.Sprintf(`global:
  scrape_interval: 1s
scrape_configs:
  - job_name: scraper
    static_configs:
      - targets: ['%s']
remote_write:
  - url: %s
    queue_config:
      batch_send_deadline: 200ms
      min_backoff: 50ms
      max_shards: 1
`, addr, pushURL)
	if err := os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	logf, err := os.Create(filepath.Join(dir, "prometheus.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "--config.file="+filepath.Join(dir, "prometheus.yml"), "--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+addr, "--log.level=warn")
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		_ = cmd.Wait()
		logf.Close()
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(dir, "prometheus.log"))
			t.Logf("scraper log:\n%s", b)
		}
	})
	return addr
}

// scraperSentUpTo waits until the scraper has sent every sample it scraped up to a scrape of its
// own at least minScrapes scrapes old, and returns the timestamp (ms) of the newest scrape sent.
// Every series of one scrape carries the scrape's timestamp, read from up[1m].
func scraperSentUpTo(t *testing.T, addr string, minScrapes int) int64 {
	t.Helper()
	var last int64
	pc.Eventually(t, 40*time.Second, "the scraper shipped its scrapes", func() (bool, string) {
		code, body, err := pc.HTTPGet(addr, "/metrics", "")
		if err != nil || code != 200 {
			return false, fmt.Sprint(code, err)
		}
		sent := metricValue(body, "prometheus_remote_storage_queue_highest_sent_timestamp_seconds")
		p := url.Values{"query": {"up[1m]"}}
		code, body, err = pc.HTTPGet(addr, "/api/v1/query?"+p.Encode(), "")
		if err != nil || code != 200 {
			return false, fmt.Sprint(code, err)
		}
		var a struct {
			Data struct {
				Result []struct {
					Values [][]any `json:"values"`
				} `json:"result"`
			} `json:"data"`
		}
		if err := json.Unmarshal([]byte(body), &a); err != nil || len(a.Data.Result) != 1 {
			return false, fmt.Sprintf("up[1m]: %v %s", err, body)
		}
		vs := a.Data.Result[0].Values
		if len(vs) < minScrapes {
			return false, fmt.Sprintf("%d scrapes", len(vs))
		}
		// The newest scrape whose samples are all sent (highest sent has whole-second precision).
		for i := len(vs) - 1; i >= 0; i-- {
			ts := int64(math.Round(vs[i][0].(float64) * 1000))
			if float64(ts)/1000 <= sent-1 && i >= minScrapes-1 {
				last = ts
				return true, ""
			}
		}
		return false, fmt.Sprintf("sent up to %v, scrapes up to %v", sent, vs[len(vs)-1][0])
	})
	return last
}

// readRemote posts a SAMPLES remote-read request for ms over [mint, maxt] to url and returns every
// sample of the answer as "series ts value" lines, sorted.
func readRemote(t *testing.T, url string, mint, maxt int64, ms ...*prompb.LabelMatcher) ([]string, error) {
	t.Helper()
	rr := &prompb.ReadRequest{Queries: []*prompb.Query{{StartTimestampMs: mint, EndTimestampMs: maxt, Matchers: ms}}}
	raw, err := rr.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(snappy.Encode(nil, raw)))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Encoding", "snappy")
	req.Header.Set("Content-Type", "application/x-protobuf")
	req.Header.Set("X-Prometheus-Remote-Read-Version", "0.1.0")
	resp, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: %d %s", url, resp.StatusCode, body)
	}
	dec, err := snappy.Decode(nil, body)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", url, err)
	}
	var rresp prompb.ReadResponse
	if err := rresp.Unmarshal(dec); err != nil {
		return nil, fmt.Errorf("%s: %w", url, err)
	}
	var out []string
	for _, res := range rresp.Results {
		for _, ts := range res.Timeseries {
			key := keyOf(ts.Labels)
			for _, s := range ts.Samples {
				out = append(out, fmt.Sprintf("%s %d %x", key, s.Timestamp, math.Float64bits(s.Value)))
			}
		}
	}
	sort.Strings(out)
	return out, nil
}

// TestProcess_StorageNodeLocalEveryMemberSameAnswer is issue 13's first test: five members, RF 3,
// node-local buckets (the default). Samples go in through the distributor (the oracle data, pushed
// through varying members) and from Debian's prometheus as a remote-write client (scraping
// itself); every member flushes; then every query — PromQL instant and range, /series, label
// names and values, remote read — through each of the five members answers exactly what
// Prometheus answers for the same samples. Before this worked, a member answered from its own
// bucket only: about 3/5 of the series.
//
// Then with one member killed the answers through the others are still complete, and with two
// killed the query fails with an error instead of answering partially.
func TestProcess_StorageNodeLocalEveryMemberSameAnswer(t *testing.T) {
	skipShort(t)
	started := time.Now()
	oracle := startPrometheus(t, "global:\n  scrape_interval: 15s\n", "--web.enable-remote-write-receiver")
	_, nodes := startCluster5(t, "-ingester.flush-check-period=1h")
	scraper := startScraper(t, "http://"+nodes[1].HTTPAddr+"/api/v1/push")

	now := time.Now()
	t0 := now.Add(-40*time.Minute).Truncate(time.Second).UnixMilli() + 317
	data := oracleData(t0)
	writeAll(t, "http://"+oracle.addr+"/api/v1/write", data)
	// Through the distributors of every member in turn.
	for i := 0; i < len(data); i += 25 {
		n := nodes[(i/25)%len(nodes)]
		if err := remoteWrite("http://"+n.HTTPAddr+"/api/v1/push", &prompb.WriteRequest{Timeseries: data[i:min(i+25, len(data))]}); err != nil {
			t.Fatalf("write batch %d through %s: %v", i/25, n.ID, err)
		}
	}
	scrapedUpTo := scraperSentUpTo(t, scraper, 6)
	t.Logf("cluster up and written in %v; scraper sent up to %s", time.Since(started).Round(time.Millisecond), time.UnixMilli(scrapedUpTo).Format(time.TimeOnly))

	// The premise: members hold only their RF share of the series, so a member answering from its
	// own bucket would be partial.
	partial := 0
	for _, n := range nodes {
		got, err := queryIngester(context.Background(), n.GRPCAddr, "anonymous", "temperature")
		if err != nil {
			t.Fatal(err)
		}
		held := map[string]bool{}
		for k := range got {
			held[k.series] = true
		}
		if len(held) < 120 {
			partial++
		}
	}
	if partial == 0 {
		t.Fatal("every member holds all 120 temperature series: the test proves nothing")
	}
	for _, n := range nodes {
		if code, body := storagePostFlush(t, n.AdminAddr); code != http.StatusOK {
			t.Fatalf("%s: POST /ingester/flush: %d %s", n.ID, code, body)
		}
		if len(storageBlockDirs(t, filepath.Join(n.DataDir, "blocks"), "anonymous")) == 0 {
			t.Fatalf("%s: no block in its bucket after the flush", n.ID)
		}
	}
	// The oracle data (40 minutes old) is now only in blocks: memory holds at most the scraper's
	// newest samples. Every answer about it must come from the members' buckets.
	for _, n := range nodes {
		got, err := queryIngester(context.Background(), n.GRPCAddr, "anonymous", "temperature")
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 0 {
			t.Fatalf("%s: %d temperature samples still in memory after the flush: the answers below would not come from blocks", n.ID, len(got))
		}
	}
	t.Logf("flushed in %v", time.Since(started).Round(time.Millisecond))

	sec := func(t time.Time) string { return strconv.FormatInt(t.Unix(), 10) }
	base := time.UnixMilli(t0).Truncate(time.Minute).Add(7 * time.Second)
	instants := []time.Time{base.Add(20 * time.Minute), base.Add(33 * time.Minute)}
	start, end := base.Add(6*time.Minute), base.Add(36*time.Minute)

	// comparePromQL asks the oracle and each node in through the same queries.
	comparePromQL := func(through []*pc.Node, queries []string, withRanges bool) {
		for _, q := range queries {
			for _, at := range instants {
				p := url.Values{"query": {q}, "time": {sec(at)}}
				_, want, _ := getAPI(t, oracle.addr, "/api/v1/query", p)
				for _, n := range through {
					_, got, _ := getAPI(t, n.HTTPAddr, "/prometheus/api/v1/query", p)
					compareAnswers(t, fmt.Sprintf("instant %s at %s via %s", q, at.Format(time.TimeOnly), n.ID), want, got)
				}
			}
			if !withRanges {
				continue
			}
			p := url.Values{"query": {q}, "start": {sec(start)}, "end": {sec(end)}, "step": {"60"}}
			_, want, _ := getAPI(t, oracle.addr, "/api/v1/query_range", p)
			for _, n := range through {
				_, got, _ := getAPI(t, n.HTTPAddr, "/prometheus/api/v1/query_range", p)
				compareAnswers(t, fmt.Sprintf("range %s via %s", q, n.ID), want, got)
			}
		}
	}
	comparePromQL(nodes, oracleQueries, true)
	t.Logf("PromQL through every member in %v", time.Since(started).Round(time.Millisecond))

	// Series and label APIs, raw remote read: the same sets from every member as from the oracle.
	lp := url.Values{"start": {sec(start)}, "end": {sec(end)}}
	sp := url.Values{"match[]": {`request_duration_seconds_bucket{instance="i1"}`, `memory_bytes{job="db"}`, `temperature`}, "start": {sec(start)}, "end": {sec(end)}}
	var wantSeries []map[string]string
	if err := json.Unmarshal([]byte(rawData(t, oracle.addr, "/api/v1/series", sp)), &wantSeries); err != nil {
		t.Fatal(err)
	}
	if len(wantSeries) != 15+120 {
		t.Fatalf("oracle: %d series, want 135", len(wantSeries))
	}
	rrMatchers := []*prompb.LabelMatcher{{Type: prompb.LabelMatcher_RE, Name: "__name__", Value: "memory_bytes|http_requests_total|temperature"}}
	wantRead, err := readRemote(t, "http://"+oracle.addr+"/api/v1/read", start.UnixMilli(), end.UnixMilli(), rrMatchers...)
	if err != nil {
		t.Fatal(err)
	}
	if len(wantRead) < 100*120 {
		t.Fatalf("oracle remote read: %d samples", len(wantRead))
	}
	for _, n := range nodes {
		for _, path := range []string{"/api/v1/labels", "/api/v1/label/job/values", "/api/v1/label/room/values", "/api/v1/label/__name__/values"} {
			want, got := rawData(t, oracle.addr, path, lp), rawData(t, n.HTTPAddr, "/prometheus"+path, lp)
			if want != got {
				t.Fatalf("%s via %s: got %s\noracle %s", path, n.ID, got, want)
			}
		}
		var gotSeries []map[string]string
		if err := json.Unmarshal([]byte(rawData(t, n.HTTPAddr, "/prometheus/api/v1/series", sp)), &gotSeries); err != nil {
			t.Fatal(err)
		}
		if fmt.Sprint(sortedMaps(gotSeries)) != fmt.Sprint(sortedMaps(wantSeries)) {
			t.Fatalf("series via %s: got %d %v\noracle %d", n.ID, len(gotSeries), sortedMaps(gotSeries), len(wantSeries))
		}
		gotRead, err := readRemote(t, "http://"+n.HTTPAddr+"/prometheus/api/v1/read", start.UnixMilli(), end.UnixMilli(), rrMatchers...)
		if err != nil {
			t.Fatal(err)
		}
		if len(gotRead) != len(wantRead) {
			t.Fatalf("remote read via %s: %d samples, oracle %d", n.ID, len(gotRead), len(wantRead))
		}
		for i := range wantRead {
			if gotRead[i] != wantRead[i] {
				t.Fatalf("remote read via %s: sample %d is %s, oracle %s", n.ID, i, gotRead[i], wantRead[i])
			}
		}
	}
	t.Logf("series, labels and remote read through every member in %v", time.Since(started).Round(time.Millisecond))

	// Prometheus as a remote-write client: what the scraper scraped, up to its last scrape sent,
	// flushed with the rest, through every member, against the scraper's own answer. The evaluation
	// time sits 500 ms after a scrape: no sample is on a window's boundary.
	at := time.UnixMilli(scrapedUpTo + 500)
	atS := strconv.FormatFloat(float64(at.UnixMilli())/1000, 'f', 3, 64)
	for _, q := range []string{`{job="scraper"}[4s]`, `prometheus_build_info`, `count by (__name__) ({job="scraper"})`} {
		p := url.Values{"query": {q}, "time": {atS}}
		_, want, _ := getAPI(t, scraper, "/api/v1/query", p)
		if want.Status == "success" && len(normalise(t, want.Data.ResultType, want.Data.Result)) == 0 {
			t.Fatalf("scraper: %s is empty", q)
		}
		for _, n := range nodes {
			_, got, _ := getAPI(t, n.HTTPAddr, "/prometheus/api/v1/query", p)
			compareAnswers(t, fmt.Sprintf("scraped %s via %s", q, n.ID), want, got)
		}
	}
	for _, n := range nodes {
		if got := storageMetric(t, n.HTTPAddr, `cortex_querier_fanout_requests_total{source="blocks",status="success"}`); got < 1 {
			t.Fatalf("%s: no successful QueryBlocks fan-out counted (%v)", n.ID, got)
		}
	}

	// One member killed: every answer through the others is still complete (RF 3 leaves two
	// copies of everything).
	some := []string{oracleQueries[1], oracleQueries[5], `count by (floor) (temperature)`, `memory_bytes`}
	nodes[4].Kill()
	comparePromQL(nodes[:4], some, false)
	for _, n := range nodes[:4] {
		gotRead, err := readRemote(t, "http://"+n.HTTPAddr+"/prometheus/api/v1/read", start.UnixMilli(), end.UnixMilli(), rrMatchers...)
		if err != nil || len(gotRead) != len(wantRead) {
			t.Fatalf("remote read via %s with %s down: %d samples (%v), oracle %d", n.ID, nodes[4].ID, len(gotRead), err, len(wantRead))
		}
	}

	// Two killed: more than floor(RF/2) members are missing; they may have held two of the three
	// copies of a series, so every read fails rather than answering partially. Memory is read first
	// and fails first, so the error is memory's: the blocks' refusal shows in
	// cortex_querier_fanout_quorum_failures_total{source="blocks"}, which must rise for every
	// query, remote read and series call (an unlimited blocks budget would leave it unchanged).
	nodes[3].Kill()
	const blocksRefused = `cortex_querier_fanout_quorum_failures_total{source="blocks"}`
	refusedBefore := map[string]float64{}
	for _, n := range nodes[:3] {
		refusedBefore[n.ID] = storageMetric(t, n.HTTPAddr, blocksRefused)
	}
	for _, n := range nodes[:3] {
		for _, q := range some {
			p := url.Values{"query": {q}, "time": {sec(instants[0])}}
			code, got, body := getAPI(t, n.HTTPAddr, "/prometheus/api/v1/query", p)
			if got.Status != "error" || code/100 == 2 || !strings.Contains(got.Error, "too many ingesters failed") {
				t.Fatalf("%s via %s with %s and %s down: %d %s, want an error", q, n.ID, nodes[3].ID, nodes[4].ID, code, body)
			}
		}
		if _, err := readRemote(t, "http://"+n.HTTPAddr+"/prometheus/api/v1/read", start.UnixMilli(), end.UnixMilli(), rrMatchers...); err == nil || !strings.Contains(err.Error(), "too many ingesters failed") {
			t.Fatalf("remote read via %s with two members down: %v, want an error", n.ID, err)
		}
		code, body, err := pc.HTTPGet(n.HTTPAddr, "/prometheus/api/v1/series?"+sp.Encode(), "")
		if err != nil || code/100 == 2 || !strings.Contains(body, "too many ingesters failed") {
			t.Fatalf("series via %s with two members down: %d %s %v, want an error", n.ID, code, body, err)
		}
		if got, want := storageMetric(t, n.HTTPAddr, blocksRefused)-refusedBefore[n.ID], float64(len(some)+2); got < want {
			t.Fatalf("%s: %s rose by %v over %d reads, want at least %v: the blocks were not refused", n.ID, blocksRefused, got, len(some)+2, want)
		}
	}
	t.Logf("done in %v", time.Since(started).Round(time.Millisecond))
}
