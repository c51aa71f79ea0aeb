package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/golang/snappy"
	"github.com/prometheus/prometheus/prompb"

	pc "github.com/raftingest/raftingest/internal/proccluster"
)

// promServer is one Debian `prometheus` process on a loopback port with a temporary data directory.
type promServer struct {
	addr string
	cmd  *exec.Cmd
	log  string
}

// startPrometheus runs prometheus with config (YAML) and extra flags, and waits until it is ready.
// It is killed and its directory removed when the test ends.
func startPrometheus(t *testing.T, config string, extra ...string) *promServer {
	t.Helper()
	bin, err := exec.LookPath("prometheus")
	if err != nil {
		t.Skip("Debian's prometheus is not installed (make deps)")
	}
	return startPrometheusBin(t, bin, config, extra...)
}

// startPrometheusBin is startPrometheus with the prometheus binary given. "$SELF" in config is
// replaced by the server's own host:port (for a scrape of itself).
func startPrometheusBin(t *testing.T, bin, config string, extra ...string) *promServer {
	t.Helper()
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "prometheus.yml")
	addr := fmt.Sprintf("127.0.0.1:%d", pc.FreePorts(t, 1)[0])
	config = strings.ReplaceAll(config, "$SELF", addr)
	if err := os.WriteFile(cfgPath, []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	logPath := filepath.Join(dir, "prometheus.log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	args := append([]string{"--config.file=" + cfgPath, "--storage.tsdb.path=" + filepath.Join(dir, "data"),
		"--web.listen-address=" + addr, "--log.level=warn"}, extra...)
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &promServer{addr: addr, cmd: cmd, log: logPath}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		logf.Close()
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			t.Logf("prometheus %s log:\n%s", addr, b)
		}
	})
	pc.Eventually(t, 30*time.Second, "prometheus ready", func() (bool, string) {
		code, body, err := pc.HTTPGet(addr, "/-/ready", "")
		if err != nil {
			return false, err.Error()
		}
		return code == http.StatusOK, fmt.Sprintf("%d %s", code, body)
	})
	return p
}

// remoteWrite posts one snappy remote-write request to url.
func remoteWrite(url string, req *prompb.WriteRequest) error {
	raw, err := req.Marshal()
	if err != nil {
		return err
	}
	hreq, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(snappy.Encode(nil, raw)))
	if err != nil {
		return err
	}
	hreq.Header.Set("Content-Encoding", "snappy")
	hreq.Header.Set("Content-Type", "application/x-protobuf")
	hreq.Header.Set("X-Prometheus-Remote-Write-Version", "0.1.0")
	resp, err := (&http.Client{Timeout: 30 * time.Second}).Do(hreq)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s: %d %s", url, resp.StatusCode, body)
	}
	return nil
}

// oracleData generates the test's series: counters (with a reset), gauges, a classic histogram and
// many small gauges, 15 s apart for 30 minutes from t0. Labels are sorted by name.
func oracleData(t0 int64) []prompb.TimeSeries {
	rng := rand.New(rand.NewPCG(42, 7))
	const n = 121 // 30 minutes of 15 s samples
	ts := func(lbls ...string) prompb.TimeSeries {
		var s prompb.TimeSeries
		for i := 0; i+1 < len(lbls); i += 2 {
			s.Labels = append(s.Labels, prompb.Label{Name: lbls[i], Value: lbls[i+1]})
		}
		sort.Slice(s.Labels, func(i, j int) bool { return s.Labels[i].Name < s.Labels[j].Name })
		return s
	}
	var out []prompb.TimeSeries
	for inst := range 10 {
		for _, method := range []string{"GET", "POST"} {
			for _, code := range []string{"200", "500"} {
				s := ts("__name__", "http_requests_total", "job", "api", "instance", fmt.Sprintf("i%d", inst), "method", method, "code", code)
				v := float64(rng.IntN(1000))
				for i := range n {
					if inst == 3 && method == "GET" && i == 60 {
						v = 0 // a counter reset
					}
					v += float64(rng.IntN(50))
					s.Samples = append(s.Samples, prompb.Sample{Timestamp: t0 + int64(i)*15_000, Value: v})
				}
				out = append(out, s)
			}
		}
	}
	for inst := range 20 {
		job := []string{"api", "db"}[inst%2]
		s := ts("__name__", "memory_bytes", "job", job, "instance", fmt.Sprintf("i%d", inst))
		v := 1e8 + rng.Float64()*1e8
		for i := range n {
			v += (rng.Float64() - 0.5) * 1e6
			s.Samples = append(s.Samples, prompb.Sample{Timestamp: t0 + int64(i)*15_000, Value: v})
		}
		out = append(out, s)
	}
	bounds := []string{"0.1", "0.5", "1", "5", "+Inf"}
	for inst := range 10 {
		job := []string{"api", "db"}[inst%2]
		inst := fmt.Sprintf("i%d", inst)
		buckets := make([]prompb.TimeSeries, len(bounds))
		for b, le := range bounds {
			buckets[b] = ts("__name__", "request_duration_seconds_bucket", "job", job, "instance", inst, "le", le)
		}
		sum := ts("__name__", "request_duration_seconds_sum", "job", job, "instance", inst)
		count := ts("__name__", "request_duration_seconds_count", "job", job, "instance", inst)
		cum := make([]float64, len(bounds))
		var total, sumV float64
		for i := range n {
			// Observations land in bucket b and every larger one (cumulative buckets).
			for range rng.IntN(40) {
				d := rng.ExpFloat64() * 0.6
				sumV += d
				total++
				for b, le := range bounds {
					if f, _ := strconv.ParseFloat(le, 64); d <= f {
						cum[b]++
					}
				}
			}
			at := t0 + int64(i)*15_000
			for b := range bounds {
				buckets[b].Samples = append(buckets[b].Samples, prompb.Sample{Timestamp: at, Value: cum[b]})
			}
			sum.Samples = append(sum.Samples, prompb.Sample{Timestamp: at, Value: sumV})
			count.Samples = append(count.Samples, prompb.Sample{Timestamp: at, Value: total})
		}
		out = append(out, buckets...)
		out = append(out, sum, count)
	}
	for room := range 120 {
		s := ts("__name__", "temperature", "room", fmt.Sprintf("r%03d", room), "floor", strconv.Itoa(room%4))
		v := 15 + rng.Float64()*10
		for i := range n {
			v += (rng.Float64() - 0.5) * 0.4
			// Every 20th room has a hole: series that start late and stop early.
			if room%20 == 0 && (i < 20 || i > 100) {
				continue
			}
			s.Samples = append(s.Samples, prompb.Sample{Timestamp: t0 + int64(i)*15_000, Value: v})
		}
		out = append(out, s)
	}
	return out
}

// writeAll sends the series in batches of 25 to url.
func writeAll(t *testing.T, url string, data []prompb.TimeSeries) {
	t.Helper()
	for i := 0; i < len(data); i += 25 {
		if err := remoteWrite(url, &prompb.WriteRequest{Timeseries: data[i:min(i+25, len(data))]}); err != nil {
			t.Fatalf("write batch %d: %v", i/25, err)
		}
	}
}

// apiAnswer is a Prometheus API answer as JSON.
type apiAnswer struct {
	Status    string `json:"status"`
	ErrorType string `json:"errorType"`
	Error     string `json:"error"`
	Data      struct {
		ResultType string          `json:"resultType"`
		Result     json.RawMessage `json:"result"`
	} `json:"data"`
}

func getAPI(t *testing.T, addr, path string, params url.Values) (int, apiAnswer, string) {
	t.Helper()
	resp, err := (&http.Client{Timeout: 60 * time.Second}).Get("http://" + addr + path + "?" + params.Encode())
	if err != nil {
		t.Fatalf("GET %s%s: %v", addr, path, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var a apiAnswer
	if err := json.Unmarshal(body, &a); err != nil {
		t.Fatalf("GET %s%s?%s: %d, not JSON: %v: %s", addr, path, params.Encode(), resp.StatusCode, err, body)
	}
	return resp.StatusCode, a, string(body)
}

// normalise turns a result into series key -> "ts=value" points, with values parsed, so that two
// answers compare regardless of series order (PromQL leaves the order of a vector unspecified).
func normalise(t *testing.T, resultType string, raw json.RawMessage) map[string][][2]string {
	t.Helper()
	out := map[string][][2]string{}
	point := func(p []any) [2]string {
		return [2]string{strconv.FormatFloat(p[0].(float64), 'f', 3, 64), p[1].(string)}
	}
	switch resultType {
	case "vector", "matrix":
		var series []struct {
			Metric map[string]string `json:"metric"`
			Value  []any             `json:"value"`
			Values [][]any           `json:"values"`
		}
		if err := json.Unmarshal(raw, &series); err != nil {
			t.Fatalf("%s: %v", raw, err)
		}
		for _, s := range series {
			keys := make([]string, 0, len(s.Metric))
			for k, v := range s.Metric {
				keys = append(keys, k+"="+strconv.Quote(v))
			}
			sort.Strings(keys)
			key := "{" + strings.Join(keys, ",") + "}"
			if _, dup := out[key]; dup {
				t.Fatalf("series %s twice in one answer", key)
			}
			if s.Value != nil {
				out[key] = append(out[key], point(s.Value))
			}
			for _, p := range s.Values {
				out[key] = append(out[key], point(p))
			}
		}
	case "scalar", "string":
		var p []any
		if err := json.Unmarshal(raw, &p); err != nil {
			t.Fatal(err)
		}
		if resultType == "scalar" {
			out[""] = [][2]string{point(p)}
		} else {
			out[""] = [][2]string{{strconv.FormatFloat(p[0].(float64), 'f', 3, 64), p[1].(string)}}
		}
	default:
		t.Fatalf("result type %q", resultType)
	}
	return out
}

// sameValue compares two API float strings. Exact equality is not required: Prometheus 3's
// aggregations (sum, avg) use Kahan summation and our merge may hand series to the engine in a
// different order, so the last bits of an aggregate may differ. 1e-9 relative error is far below any
// real disagreement (a missing or duplicated sample changes a rate by percents) and far above
// rounding noise.
func sameValue(a, b string) bool {
	if a == b {
		return true
	}
	x, err1 := strconv.ParseFloat(a, 64)
	y, err2 := strconv.ParseFloat(b, 64)
	if err1 != nil || err2 != nil {
		return false
	}
	if math.IsNaN(x) || math.IsNaN(y) || math.IsInf(x, 0) || math.IsInf(y, 0) {
		return false // equal strings were handled above
	}
	return math.Abs(x-y) <= 1e-9*math.Max(math.Abs(x), math.Abs(y))
}

func compareAnswers(t *testing.T, what string, want, got apiAnswer) {
	t.Helper()
	if want.Status != "success" {
		t.Fatalf("%s: the oracle failed: %s %s", what, want.ErrorType, want.Error)
	}
	if got.Status != "success" {
		t.Fatalf("%s: the cluster failed: %s %s", what, got.ErrorType, got.Error)
	}
	if want.Data.ResultType != got.Data.ResultType {
		t.Fatalf("%s: result type %q, oracle %q", what, got.Data.ResultType, want.Data.ResultType)
	}
	w, g := normalise(t, want.Data.ResultType, want.Data.Result), normalise(t, got.Data.ResultType, got.Data.Result)
	if len(w) != len(g) {
		t.Fatalf("%s: %d series, oracle %d\n got %v\nwant %v", what, len(g), len(w), keys(g), keys(w))
	}
	for k, wp := range w {
		gp, ok := g[k]
		if !ok {
			t.Fatalf("%s: series %s missing (have %v)", what, k, keys(g))
		}
		if len(gp) != len(wp) {
			t.Fatalf("%s: series %s has %d points, oracle %d\n got %v\nwant %v", what, k, len(gp), len(wp), gp, wp)
		}
		for i := range wp {
			if gp[i][0] != wp[i][0] || !sameValue(gp[i][1], wp[i][1]) {
				t.Fatalf("%s: series %s point %d: got %v, oracle %v", what, k, i, gp[i], wp[i])
			}
		}
	}
}

func keys(m map[string][][2]string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// oracleQueries cover the PromQL the issue names; each runs as an instant query and as a range query.
var oracleQueries = []string{
	`http_requests_total`,
	`rate(http_requests_total[5m])`,
	`sum by (job, code) (rate(http_requests_total[5m]))`,
	`increase(http_requests_total{code="500"}[10m])`,
	`resets(http_requests_total[30m])`,
	`histogram_quantile(0.9, sum by (le, job) (rate(request_duration_seconds_bucket[5m])))`,
	`histogram_quantile(0.5, rate(request_duration_seconds_bucket{instance=~"i[0-4]"}[2m]))`,
	`sum(rate(request_duration_seconds_sum[5m])) / sum(rate(request_duration_seconds_count[5m]))`,
	`topk(3, memory_bytes)`,
	// Ties (equal rates of integer counters) would be broken differently by the two engines, so
	// topk and bottomk run over continuous gauges.
	`bottomk(2, avg_over_time(memory_bytes[5m]))`,
	`absent(nonexistent_metric)`,
	`absent(memory_bytes{job="api"})`,
	`memory_bytes offset 10m`,
	`rate(http_requests_total[5m] offset 7m)`,
	`max_over_time(rate(http_requests_total{method="GET"}[1m])[10m:1m])`,
	`avg_over_time(memory_bytes[15m])`,
	`deriv(memory_bytes[5m])`,
	`count(temperature > 20)`,
	`count by (floor) (temperature)`,
	`label_replace(memory_bytes, "host", "host-$1", "instance", "i(.*)")`,
	`temperature{room=~"r01.*"}`,
	`temperature{room!~"r[0-9][0-8].*", floor!="2"}`,
	`quantile(0.5, temperature) by (floor)`,
	`stddev(temperature)`,
	`scalar(sum(memory_bytes))`,
	`sum(memory_bytes) / 1e6 > bool 2000`,
	`vector(1)`,
}

// TestQuery_OracleAgainstPrometheus writes the same data to Debian's prometheus (remote-write
// receiver) and to a 3-node cluster, and checks that a suite of instant and range PromQL queries
// give the same answers from both.
func TestQuery_OracleAgainstPrometheus(t *testing.T) {
	skipShort(t)
	oracle := startPrometheus(t, "global:\n  scrape_interval: 15s\n", "--web.enable-remote-write-receiver")
	_, a, b, _ := startCluster3(t)

	// Samples at t0 + k*15s, with t0 at .317 s past a second: query times are whole seconds, so no
	// sample sits on a range or lookback boundary. That keeps the comparison independent of
	// Prometheus 3's left-open ranges (our engine) versus 2.x's closed ones (the oracle, 2.42).
	now := time.Now()
	t0 := now.Add(-40*time.Minute).Truncate(time.Second).UnixMilli() + 317
	data := oracleData(t0)
	writeAll(t, "http://"+oracle.addr+"/api/v1/write", data)
	writeAll(t, "http://"+a.HTTPAddr+"/api/v1/push", data)

	// Evaluation times: 7 s past a minute, so subquery steps (whole minutes) never meet a boundary.
	base := time.UnixMilli(t0).Truncate(time.Minute).Add(7 * time.Second)
	instant := []time.Time{base.Add(20 * time.Minute), base.Add(31 * time.Minute), base.Add(33 * time.Minute)}
	// Range queries start 6 minutes in, so that every 5m rate window lies wholly inside the data:
	// at the start of a series Prometheus 2.42 (the oracle) and 3.x (our engine) extrapolate rate()
	// differently, and a window that begins before t0 made histogram_quantile differ by about 1%
	// in one run out of three.
	start, end := base.Add(6*time.Minute), base.Add(36*time.Minute)
	sec := func(t time.Time) string { return strconv.FormatInt(t.Unix(), 10) }

	for _, q := range oracleQueries {
		for _, at := range instant {
			p := url.Values{"query": {q}, "time": {sec(at)}}
			_, want, _ := getAPI(t, oracle.addr, "/api/v1/query", p)
			// Ask a and b: both must answer for the whole cluster.
			for _, node := range []*pc.Node{a, b} {
				_, got, _ := getAPI(t, node.HTTPAddr, "/prometheus/api/v1/query", p)
				compareAnswers(t, fmt.Sprintf("instant %s at %s via %s", q, at.Format(time.TimeOnly), node.ID), want, got)
			}
		}
		for _, step := range []string{"60", "15s"} {
			p := url.Values{"query": {q}, "start": {sec(start)}, "end": {sec(end)}, "step": {step}}
			_, want, _ := getAPI(t, oracle.addr, "/api/v1/query_range", p)
			_, got, _ := getAPI(t, a.HTTPAddr, "/prometheus/api/v1/query_range", p)
			compareAnswers(t, fmt.Sprintf("range %s step %s", q, step), want, got)
		}
	}

	// The same queries by POST form, as Grafana sends them.
	form := url.Values{"query": {oracleQueries[2]}, "start": {sec(start)}, "end": {sec(end)}, "step": {"60"}}
	resp, err := http.PostForm("http://"+a.HTTPAddr+"/prometheus/api/v1/query_range", form)
	if err != nil {
		t.Fatal(err)
	}
	var posted apiAnswer
	if err := json.NewDecoder(resp.Body).Decode(&posted); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	_, want, _ := getAPI(t, oracle.addr, "/api/v1/query_range", form)
	compareAnswers(t, "POST query_range", want, posted)

	// Series and label APIs: the same sets.
	for _, c := range []struct{ path, oraclePath string }{
		{"/prometheus/api/v1/labels", "/api/v1/labels"},
		{"/prometheus/api/v1/label/job/values", "/api/v1/label/job/values"},
		{"/prometheus/api/v1/label/room/values", "/api/v1/label/room/values"},
	} {
		p := url.Values{"start": {sec(start)}, "end": {sec(end)}}
		wantBody := rawData(t, oracle.addr, c.oraclePath, p)
		gotBody := rawData(t, a.HTTPAddr, c.path, p)
		if wantBody != gotBody {
			t.Fatalf("%s: got %s\noracle %s", c.path, gotBody, wantBody)
		}
	}
	p := url.Values{"match[]": {`request_duration_seconds_bucket{instance="i1"}`, `memory_bytes{job="db"}`}, "start": {sec(start)}, "end": {sec(end)}}
	var wantSeries, gotSeries []map[string]string
	if err := json.Unmarshal([]byte(rawData(t, oracle.addr, "/api/v1/series", p)), &wantSeries); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal([]byte(rawData(t, a.HTTPAddr, "/prometheus/api/v1/series", p)), &gotSeries); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(sortedMaps(gotSeries)) != fmt.Sprint(sortedMaps(wantSeries)) || len(gotSeries) != 15 {
		t.Fatalf("series: got %d %v\noracle %d %v", len(gotSeries), gotSeries, len(wantSeries), wantSeries)
	}

	// Bad input: the same status and error type as Prometheus.
	for _, c := range []struct {
		path   string
		params url.Values
	}{
		{"/api/v1/query", url.Values{"query": {"sum(rate(x[5m]"}}},
		{"/api/v1/query_range", url.Values{"query": {"up"}, "start": {"abc"}, "end": {"1"}, "step": {"1"}}},
		{"/api/v1/query_range", url.Values{"query": {"up"}, "start": {"100"}, "end": {"50"}, "step": {"1"}}},
		{"/api/v1/query_range", url.Values{"query": {"up"}, "start": {"0"}, "end": {"100000"}, "step": {"1"}}},
		{"/api/v1/series", url.Values{}},
	} {
		wc, w, wbody := getAPI(t, oracle.addr, c.path, c.params)
		gc, g, gbody := getAPI(t, a.HTTPAddr, "/prometheus"+c.path, c.params)
		if wc != gc || w.Status != g.Status || w.ErrorType != g.ErrorType {
			t.Fatalf("%s %v: got %d %s, oracle %d %s", c.path, c.params, gc, gbody, wc, wbody)
		}
	}
}

func rawData(t *testing.T, addr, path string, p url.Values) string {
	t.Helper()
	resp, err := (&http.Client{Timeout: 30 * time.Second}).Get("http://" + addr + path + "?" + p.Encode())
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var env struct {
		Status string          `json:"status"`
		Data   json.RawMessage `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&env); err != nil || env.Status != "success" {
		t.Fatalf("%s%s: %v %v", addr, path, env.Status, err)
	}
	return string(env.Data)
}

func sortedMaps(ms []map[string]string) []string {
	out := make([]string, len(ms))
	for i, m := range ms {
		out[i] = fmt.Sprint(m)
	}
	sort.Strings(out)
	return out
}

// TestQuery_RemoteReadFromPrometheus points a Prometheus (with an empty TSDB) at the cluster's
// remote-read endpoint and checks that queries through Prometheus' own API return what was written.
func TestQuery_RemoteReadFromPrometheus(t *testing.T) {
	skipShort(t)
	_, a, _, _ := startCluster3(t)
	now := time.Now()
	t0 := now.Add(-40*time.Minute).Truncate(time.Second).UnixMilli() + 317
	data := oracleData(t0)
	writeAll(t, "http://"+a.HTTPAddr+"/api/v1/push", data)

	reader := startPrometheus(t, fmt.Sprintf("remote_read:\n  - url: http://%s/prometheus/api/v1/read\n    read_recent: true\n", a.HTTPAddr))
	at := time.UnixMilli(t0).Add(20 * time.Minute).Truncate(time.Second)
	// Raw samples over a range: every written sample of the series comes back.
	p := url.Values{"query": {`memory_bytes{instance="i4"}[10m]`}, "time": {strconv.FormatInt(at.Unix(), 10)}}
	code, got, body := getAPI(t, reader.addr, "/api/v1/query", p)
	if code != http.StatusOK || got.Data.ResultType != "matrix" {
		t.Fatalf("remote read through prometheus: %d %s", code, body)
	}
	var series []struct {
		Metric map[string]string `json:"metric"`
		Values [][]any           `json:"values"`
	}
	if err := json.Unmarshal(got.Data.Result, &series); err != nil || len(series) != 1 {
		t.Fatalf("want one series: %v %s", err, got.Data.Result)
	}
	var want []prompb.Sample
	for _, s := range data {
		if keyOf(s.Labels) == "__name__=memory_bytes,instance=i4,job=api" {
			for _, smp := range s.Samples {
				if smp.Timestamp > at.UnixMilli()-10*60_000 && smp.Timestamp <= at.UnixMilli() {
					want = append(want, smp)
				}
			}
		}
	}
	if len(series[0].Values) != len(want) || len(want) != 40 {
		t.Fatalf("got %d samples, want %d (40)", len(series[0].Values), len(want))
	}
	for i, v := range series[0].Values {
		ts := int64(math.Round(v[0].(float64) * 1000))
		val, _ := strconv.ParseFloat(v[1].(string), 64)
		if ts != want[i].Timestamp || val != want[i].Value {
			t.Fatalf("sample %d: got %d=%v, want %d=%v", i, ts, val, want[i].Timestamp, want[i].Value)
		}
	}
	// A PromQL aggregation evaluated by the reading Prometheus over remote-read data.
	p = url.Values{"query": {`count(temperature)`}, "time": {strconv.FormatInt(at.Unix(), 10)}}
	_, got, body = getAPI(t, reader.addr, "/api/v1/query", p)
	if !strings.Contains(string(got.Data.Result), `"120"`) {
		t.Fatalf("count(temperature) via remote read: %s", body)
	}
}
