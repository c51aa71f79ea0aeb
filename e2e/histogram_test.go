package e2e

import (
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	pc "github.com/raftingest/raftingest/internal/proccluster"
	"github.com/raftingest/raftingest/internal/toolbin"
)

// histogramTarget is a client_golang scrape target exposing native histograms (protobuf
// exposition, which Prometheus asks for with --enable-feature=native-histograms), observed from a
// goroutine until the test ends.
type histogramTarget struct {
	addr string
}

func startHistogramTarget(t *testing.T) *histogramTarget {
	t.Helper()
	reg := prometheus.NewRegistry()
	lat := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "rpc_latency_seconds", Help: "RPC latency.",
		NativeHistogramBucketFactor:    1.1,
		NativeHistogramMaxBucketNumber: 100,
		NativeHistogramZeroThreshold:   1e-4,
	}, []string{"method"})
	size := prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "rpc_size_bytes", Help: "RPC size.", NativeHistogramBucketFactor: 2,
	})
	reg.MustRegister(lat, size)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: promhttp.HandlerFor(reg, promhttp.HandlerOpts{}), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		rng := rand.New(rand.NewPCG(1, 2))
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
			}
			for range 20 {
				lat.WithLabelValues("get").Observe(rng.ExpFloat64() * 0.05)
				lat.WithLabelValues("put").Observe(rng.ExpFloat64() * 0.2)
				size.Observe(float64(rng.IntN(1 << 16)))
			}
		}
	}()
	t.Cleanup(func() {
		close(done)
		wg.Wait()
		_ = srv.Close()
	})
	return &histogramTarget{addr: ln.Addr().String()}
}

// Debian's Prometheus 2.42 with --enable-feature=native-histograms scrapes a client_golang target
// exposing native histograms and remote-writes them (send_native_histograms) to a cluster of three
// real processes, and to a Prometheus 3 (bin/tools/prometheus3, the module's own version, which
// is the engine the cluster's querier runs) that takes them over its remote-write receiver.
//
// The cluster's answers must equal 2.42's own answers over its own TSDB for what both versions
// compute alike — histogram_count and histogram_sum of the samples and of rate and increase, at
// instants and over a range: the data is the same, sample for sample. histogram_quantile and
// histogram_fraction changed after 2.42 (Prometheus 3 interpolates within exponential buckets on a
// logarithmic scale, 2.42 linearly), so they are compared with Prometheus 3's answers over the
// very samples 2.42 sent it, as all the other queries are too.
func TestProcess_PrometheusNativeHistograms(t *testing.T) {
	skipShort(t)
	prom3Bin := toolbin.Require(t, "prometheus3", "RAFTINGEST_PROMETHEUS3", "bin/tools/prometheus3")
	_, a, b, cc := startCluster3(t)
	target := startHistogramTarget(t)
	prom3 := startPrometheusBin(t, prom3Bin, "global:\n  scrape_interval: 1h\n", "--web.enable-remote-write-receiver", "--enable-feature=native-histograms")
	prom := startPrometheus(t, fmt.Sprintf(`global:
  scrape_interval: 1s
scrape_configs:
  - job_name: app
    static_configs:
      - targets: ['%s']
remote_write:
  - url: http://%s/api/v1/push
    send_native_histograms: true
    queue_config:
      max_shards: 1
      batch_send_deadline: 200ms
      min_backoff: 50ms
  - url: http://%s/api/v1/write
    send_native_histograms: true
    queue_config:
      max_shards: 1
      batch_send_deadline: 200ms
      min_backoff: 50ms
`, target.addr, a.HTTPAddr, prom3.addr), "--enable-feature=native-histograms")

	// Let a minute-long window fill with native histograms. Answers are compared at and before
	// end: the target goes on being scraped, but a query at end reads samples up to end only, so
	// all hold the same once Prometheus has sent everything up to end to both.
	pc.Eventually(t, 60*time.Second, "the cluster holds native histograms", func() (bool, string) {
		_, ans, body := getAPI(t, a.HTTPAddr, "/prometheus/api/v1/query", url.Values{"query": {`histogram_count(rpc_size_bytes)`}})
		return ans.Status == "success" && len(ans.Data.Result) > 2, body
	})
	time.Sleep(70 * time.Second)
	end := time.Now().Add(-2 * time.Second).Truncate(time.Second)
	var sent, failed float64
	pc.Eventually(t, 60*time.Second, "prometheus sent everything up to the comparison time", func() (bool, string) {
		code, metrics, _ := pc.HTTPGet(prom.addr, "/metrics", "")
		if code != http.StatusOK {
			return false, fmt.Sprint(code)
		}
		sent = metricValue(metrics, "prometheus_remote_storage_histograms_total")
		failed = metricValue(metrics, "prometheus_remote_storage_histograms_failed_total") + metricValue(metrics, "prometheus_remote_storage_samples_failed_total")
		hi := metricMin(metrics, "prometheus_remote_storage_queue_highest_sent_timestamp_seconds")
		return hi >= float64(end.Unix()+2), fmt.Sprintf("highest sent %v, end %d", hi, end.Unix())
	})
	if sent < 200 || failed > 0 {
		t.Fatalf("prometheus sent %v histograms, %v failed", sent, failed)
	}
	t.Logf("prometheus sent %v native histograms to each", sent)

	same := []string{ // computed alike by 2.42 and 3
		`histogram_count(rpc_size_bytes)`,
		`histogram_sum(rpc_latency_seconds)`,
		`histogram_count(rate(rpc_latency_seconds[1m]))`,
		`histogram_sum(rate(rpc_size_bytes[1m]))`,
		`histogram_count(increase(rpc_latency_seconds{method="put"}[30s]))`,
		`histogram_count(sum(rate(rpc_latency_seconds[1m])))`,
	}
	changed := []string{ // interpolation changed after 2.42
		`histogram_quantile(0.9, rate(rpc_latency_seconds[1m]))`,
		`histogram_quantile(0.5, rate(rpc_latency_seconds{method="put"}[30s]))`,
		`histogram_quantile(0.99, sum(rate(rpc_latency_seconds[1m])))`,
		`histogram_quantile(0.9, rpc_size_bytes)`,
		`histogram_fraction(0, 0.1, rate(rpc_latency_seconds[1m]))`,
	}
	checked := 0
	compareWith := func(oracle *promServer, name string, queries []string) {
		for _, q := range queries {
			for _, at := range []time.Time{end, end.Add(-7 * time.Second), end.Add(-23 * time.Second)} {
				p := url.Values{"query": {q}, "time": {strconv.FormatInt(at.Unix(), 10)}}
				_, want, _ := getAPI(t, oracle.addr, "/api/v1/query", p)
				for _, n := range []*pc.Node{a, b, cc} {
					_, got, _ := getAPI(t, n.HTTPAddr, "/prometheus/api/v1/query", p)
					compareAnswers(t, fmt.Sprintf("%s @%d via %s, against %s", q, at.Unix(), n.ID, name), want, got)
				}
				if string(want.Data.Result) != "[]" {
					checked++
				}
			}
			p := url.Values{"query": {q}, "start": {strconv.FormatInt(end.Add(-40*time.Second).Unix(), 10)},
				"end": {strconv.FormatInt(end.Unix(), 10)}, "step": {"1"}}
			_, want, _ := getAPI(t, oracle.addr, "/api/v1/query_range", p)
			_, got, _ := getAPI(t, a.HTTPAddr, "/prometheus/api/v1/query_range", p)
			compareAnswers(t, q+" over 40s, against "+name, want, got)
		}
	}
	compareWith(prom, "Prometheus 2.42", same)
	compareWith(prom3, "Prometheus 3", same)
	compareWith(prom3, "Prometheus 3", changed)
	if want := (2*len(same) + len(changed)) * 3; checked < want {
		t.Fatalf("only %d of %d instant answers had a value", checked, want)
	}
}

// metricMin returns the smallest sample of a metric (prefix match on the line) in a text
// exposition, or -1 when there is none.
func metricMin(body, prefix string) float64 {
	out := -1.0
	for _, line := range strings.Split(body, "\n") {
		if !strings.HasPrefix(line, prefix) {
			continue
		}
		f := strings.Fields(line)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err == nil && (out < 0 || v < out) {
			out = v
		}
	}
	return out
}
