package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/prometheus/prompb"
	"google.golang.org/grpc"

	"github.com/raftingest/raftingest/ingesterpb"
	pc "github.com/raftingest/raftingest/internal/proccluster"
)

// exemplarTarget is a client_golang target exposing, in OpenMetrics, a counter and a classic
// histogram with exemplars, and a gauge (metadata with a unit).
func exemplarTarget(t *testing.T) *httptest.Server {
	t.Helper()
	reg := prometheus.NewRegistry()
	reqs := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "e2e_requests_total", Help: "Requests served."}, []string{"path"})
	lat := prometheus.NewHistogram(prometheus.HistogramOpts{Name: "e2e_request_duration_seconds", Help: "Request latency.",
		Buckets: []float64{0.1, 0.5, 1}})
	temp := prometheus.NewGauge(prometheus.GaugeOpts{Name: "e2e_temperature_celsius", Help: "Temperature."})
	reg.MustRegister(reqs, lat, temp)
	// Exemplars recorded once, with their own timestamps: every scrape exposes the same ones, so
	// Prometheus's store and ours settle to the same set.
	reqs.WithLabelValues("/a").(prometheus.ExemplarAdder).AddWithExemplar(3, prometheus.Labels{"trace_id": "trace-a"})
	reqs.WithLabelValues("/b").(prometheus.ExemplarAdder).AddWithExemplar(1, prometheus.Labels{"trace_id": "trace-b", "span_id": "s1"})
	lat.(prometheus.ExemplarObserver).ObserveWithExemplar(0.05, prometheus.Labels{"trace_id": "trace-fast"})
	lat.(prometheus.ExemplarObserver).ObserveWithExemplar(0.7, prometheus.Labels{"trace_id": "trace-slow"})
	temp.Set(21.5)
	srv := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{EnableOpenMetrics: true}))
	t.Cleanup(srv.Close)
	return srv
}

type apiExemplars []struct {
	SeriesLabels map[string]string `json:"seriesLabels"`
	Exemplars    []struct {
		Labels    map[string]string `json:"labels"`
		Value     string            `json:"value"`
		Timestamp float64           `json:"timestamp"`
	} `json:"exemplars"`
}

// apiData GETs a Prometheus API path and returns its data field.
func apiData(addr, path string) (json.RawMessage, error) {
	code, body, err := pc.HTTPGet(addr, path, "")
	if err != nil {
		return nil, err
	}
	if code != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %d %s", path, code, body)
	}
	var env struct {
		Status string          `json:"status"`
		Data   json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal([]byte(body), &env); err != nil || env.Status != "success" {
		return nil, fmt.Errorf("GET %s: %s (%v)", path, body, err)
	}
	return env.Data, nil
}

// canonicalExemplars renders an answer in a stable order (Prometheus orders series by hash, we
// by labels), for comparison.
func canonicalExemplars(data json.RawMessage) (string, int, error) {
	var ex apiExemplars
	if err := json.Unmarshal(data, &ex); err != nil {
		return "", 0, err
	}
	var lines []string
	n := 0
	for _, s := range ex {
		for _, e := range s.Exemplars {
			lines = append(lines, fmt.Sprintf("%v %v %s %.3f", s.SeriesLabels, e.Labels, e.Value, e.Timestamp))
			n++
		}
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n"), n, nil
}

// TestProcess_PrometheusExemplarsAndMetadata runs Debian's Prometheus 2.42 with exemplar storage,
// scraping a client_golang target that exposes exemplars (OpenMetrics) and remote-writing them
// (send_exemplars) and the metadata (metadata_config) to a 3-node cluster; the cluster's
// /prometheus/api/v1/query_exemplars and /metadata answer what that Prometheus answers itself.
// Then one member is killed -9 and restarted: its exemplars come back from its WAL.
func TestProcess_PrometheusExemplarsAndMetadata(t *testing.T) {
	skipShort(t)
	promBin, err := exec.LookPath("prometheus")
	if err != nil {
		t.Fatalf("prometheus not installed (make deps installs Debian's prometheus): %v", err)
	}
	c, a, b, cc := startCluster3(t, "-ingester.max-global-exemplars-per-user", "10000")
	target := exemplarTarget(t)
	tu, _ := url.Parse(target.URL)
	port := pc.FreePorts(t, 1)[0]
	dir := t.TempDir()
	cfg := fmt.Sprintf(`global:
  scrape_interval: 1s
scrape_configs:
  - job_name: app
    static_configs:
      - targets: ['%s']
remote_write:
  - url: http://%s/api/v1/push
    send_exemplars: true
    metadata_config:
      send: true
      send_interval: 1s
    queue_config:
      batch_send_deadline: 500ms
      min_backoff: 50ms
`, tu.Host, a.HTTPAddr)
	if err := os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	logf, err := os.Create(filepath.Join(dir, "prometheus.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	prom := exec.CommandContext(ctx, promBin, "--config.file="+filepath.Join(dir, "prometheus.yml"),
		"--enable-feature=exemplar-storage",
		"--storage.tsdb.path="+filepath.Join(dir, "data"), fmt.Sprintf("--web.listen-address=127.0.0.1:%d", port))
	prom.Stdout, prom.Stderr = logf, logf
	prom.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := prom.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		_ = syscall.Kill(-prom.Process.Pid, syscall.SIGKILL)
		_ = prom.Wait()
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(dir, "prometheus.log"))
			t.Logf("prometheus log:\n%s", b)
		}
	}()
	promAddr := fmt.Sprintf("127.0.0.1:%d", port)
	q := "/api/v1/query_exemplars?" + url.Values{"query": {`e2e_requests_total or e2e_request_duration_seconds_bucket`},
		"start": {"0"}, "end": {fmt.Sprint(time.Now().Add(time.Hour).Unix())}}.Encode()

	// Prometheus's own answer: its 4 exemplars, once they are all scraped.
	var want string
	pc.Eventually(t, 60*time.Second, "prometheus stored the target's exemplars", func() (bool, string) {
		data, err := apiData(promAddr, q)
		if err != nil {
			return false, err.Error()
		}
		s, n, err := canonicalExemplars(data)
		if err != nil {
			return false, err.Error()
		}
		want = s
		return n == 4, fmt.Sprintf("%d exemplars: %s", n, s)
	})
	// Ours, through every member: the same, merged across the replicas.
	for _, n := range []*pc.Node{a, b, cc} {
		pc.Eventually(t, 60*time.Second, "the cluster answers Prometheus's exemplars via "+n.ID, func() (bool, string) {
			data, err := apiData(n.HTTPAddr, "/prometheus"+q)
			if err != nil {
				return false, err.Error()
			}
			got, _, err := canonicalExemplars(data)
			if err != nil {
				return false, err.Error()
			}
			return got == want, fmt.Sprintf("got\n%s\nwant\n%s", got, want)
		})
	}

	// Metadata: Prometheus's for the target's metrics, and ours.
	type md map[string][]map[string]string
	var wantMD md
	pc.Eventually(t, 30*time.Second, "prometheus has the target's metadata", func() (bool, string) {
		data, err := apiData(promAddr, "/api/v1/metadata")
		if err != nil {
			return false, err.Error()
		}
		wantMD = md{}
		if err := json.Unmarshal(data, &wantMD); err != nil {
			return false, err.Error()
		}
		for name := range wantMD {
			if !strings.HasPrefix(name, "e2e_") {
				delete(wantMD, name)
			}
		}
		return len(wantMD) == 3, fmt.Sprint(wantMD)
	})
	for _, n := range []*pc.Node{a, b, cc} {
		pc.Eventually(t, 30*time.Second, "the cluster answers Prometheus's metadata via "+n.ID, func() (bool, string) {
			data, err := apiData(n.HTTPAddr, "/prometheus/api/v1/metadata")
			if err != nil {
				return false, err.Error()
			}
			got := md{}
			if err := json.Unmarshal(data, &got); err != nil {
				return false, err.Error()
			}
			for name := range got {
				if !strings.HasPrefix(name, "e2e_") {
					delete(got, name)
				}
			}
			return reflect.DeepEqual(got, wantMD), fmt.Sprintf("got %v, want %v", got, wantMD)
		})
	}
	code, body, _ := pc.HTTPGet(promAddr, "/metrics", "")
	if code != 200 || metricValue(body, "prometheus_remote_storage_exemplars_total") < 4 {
		t.Errorf("prometheus_remote_storage_exemplars_total = %v", metricValue(body, "prometheus_remote_storage_exemplars_total"))
	}
	if f := metricValue(body, "prometheus_remote_storage_exemplars_failed_total"); f > 0 {
		t.Errorf("prometheus reports %v failed exemplars", f)
	}

	// kill -9 c and restart it: its replay brings its 4 exemplars back (RF 3 on 3 members: it
	// holds every series).
	cc.Kill()
	cc.Start()
	waitActive(t, c, a.GRPCAddr, "c")
	conn, err := grpc.NewClient(cc.GRPCAddr, insecureCreds)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// The ring may still show the restarted c ACTIVE from before the kill: ask c itself until it
	// answers (after its replay: it serves gRPC only then).
	pc.Eventually(t, 60*time.Second, "c answers with its replayed exemplars", func() (bool, string) {
		resp, err := ingesterpb.NewIngesterClient(conn).QueryExemplars(ingesterpb.WithTenant(ctx, "anonymous"), &ingesterpb.ExemplarQueryRequest{
			StartTimestampMs: math.MinInt64, EndTimestampMs: math.MaxInt64,
			MatcherSets: []*ingesterpb.ExemplarMatchers{{Matchers: []*ingesterpb.LabelMatcher{{Type: ingesterpb.MatchType_REGEX_MATCH, Name: "__name__", Value: "e2e_.+"}}}},
		})
		if err != nil {
			return false, err.Error()
		}
		n := 0
		for _, s := range resp.GetSeries() {
			n += len(s.GetExemplars())
		}
		// Exactly 4: the target's exemplars were recorded once, so Prometheus sends only those.
		return n == 4, fmt.Sprintf("c holds %d exemplars, want the 4 it acknowledged: %v", n, resp)
	})
	// From its WAL, not from a resend: its second start's replay brought 4 back.
	if log := cc.Log(); !strings.Contains(log[strings.LastIndex(log, "=== start"):], "exemplars=4") {
		t.Errorf("c's replay after the kill did not report exemplars=4:\n%s", log[strings.LastIndex(log, "=== start"):])
	}
}

// TestProcess_ExemplarRetentionOverrideAppliesWithoutRestart: a tenant's max_global_exemplars_per_user
// in -runtime-config.file sizes its exemplar store and changes while the node runs: the store keeps
// the newest within the override, a tenant on the flag's 0 keeps none, a raised override takes more
// at the next push, and 0 empties the tenant's store.
func TestProcess_ExemplarRetentionOverrideAppliesWithoutRestart(t *testing.T) {
	skipShort(t)
	dir := t.TempDir()
	rc := filepath.Join(dir, "runtime.yaml")
	write := func(content string) {
		t.Helper()
		tmp := rc + ".tmp"
		if err := os.WriteFile(tmp, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, rc); err != nil {
			t.Fatal(err)
		}
	}
	write("overrides:\n  t1:\n    max_global_exemplars_per_user: 2\n")
	c := pc.New(t, append(slicesClone(fastFlags), "-auth.multitenancy-enabled", "-runtime-config.file", rc,
		"-runtime-config.reload-period", "200ms", "-distributor.replication-factor", "1")...)
	a := c.Start("a", "-bootstrap")
	waitActive(t, c, a.GRPCAddr, "a")
	base := time.Now().UnixMilli()
	step := 0
	pushEx := func(tenant string, n int) {
		t.Helper()
		r := &prompb.WriteRequest{}
		for i := range n {
			step++
			s := series([]string{"__name__", "ex_test", "i", fmt.Sprint(i)}, prompb.Sample{Timestamp: base + int64(step), Value: 1})
			s.Exemplars = []prompb.Exemplar{{Labels: []prompb.Label{{Name: "trace_id", Value: fmt.Sprint("tr", step)}}, Value: 1, Timestamp: base + int64(step)}}
			r.Timeseries = append(r.Timeseries, s)
		}
		if code, body, err := push(a.HTTPAddr, tenant, r); err != nil || code/100 != 2 {
			t.Fatalf("push for %s: %d %s %v", tenant, code, body, err)
		}
	}
	count := func(tenant string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, "http://"+a.HTTPAddr+"/prometheus/api/v1/query_exemplars?query=ex_test", nil)
		req.Header.Set("X-Scope-OrgID", tenant)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var env struct {
			Data json.RawMessage `json:"data"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&env); err != nil {
			t.Fatal(err)
		}
		s, n, err := canonicalExemplars(env.Data)
		if err != nil {
			t.Fatal(err)
		}
		return n, s
	}
	pushEx("t1", 3)
	pushEx("t2", 3)
	if n, s := count("t1"); n != 2 || !strings.Contains(s, "tr2") || !strings.Contains(s, "tr3") {
		t.Fatalf("t1 with max_global_exemplars_per_user 2: %d exemplars\n%s", n, s)
	}
	if n, s := count("t2"); n != 0 {
		t.Fatalf("t2 on the flag's 0: %d exemplars\n%s", n, s)
	}

	write("overrides:\n  t1:\n    max_global_exemplars_per_user: 5\n  t2:\n    max_global_exemplars_per_user: 3\n")
	pc.Eventually(t, 10*time.Second, "t2's override in force", func() (bool, string) {
		pushEx("t2", 1)
		n, s := count("t2")
		return n > 0, s
	})
	pushEx("t1", 3)
	if n, s := count("t1"); n != 5 {
		t.Fatalf("t1 raised to 5: %d exemplars\n%s", n, s)
	}
	if v := metricOf(t, a, `cortex_ingester_tsdb_exemplar_max_exemplars{user="t1"}`); v != 5 {
		t.Errorf("cortex_ingester_tsdb_exemplar_max_exemplars{user=\"t1\"} %v, want 5", v)
	}

	write("overrides:\n  t2:\n    max_global_exemplars_per_user: 3\n")
	pc.Eventually(t, 10*time.Second, "t1 back on the flag's 0: its store emptied", func() (bool, string) {
		pushEx("t1", 1)
		n, s := count("t1")
		return n == 0, s
	})
}
