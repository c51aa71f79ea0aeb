package e2e

import (
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	pc "github.com/raftingest/raftingest/internal/proccluster"
)

// histogramTarget is a client_golang scrape target exposing native histograms (protobuf
// exposition, which Prometheus asks for with --enable-feature=native-histograms), observed from a
// goroutine until stop.
type histogramTarget struct {
	addr string
	stop func()
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
	var once sync.Once
	stop := func() {
		once.Do(func() {
			close(done)
			wg.Wait()
		})
	}
	t.Cleanup(func() {
		stop()
		_ = srv.Close()
	})
	return &histogramTarget{addr: ln.Addr().String(), stop: stop}
}

// Debian's Prometheus 2.42 with --enable-feature=native-histograms scrapes a client_golang target
// exposing native histograms and remote-writes them (send_native_histograms) to a cluster of three
// real processes; the cluster's PromQL answers — histogram_quantile over rate, histogram_count,
// histogram_sum, histogram_fraction, at instants and over a range — equal that Prometheus's own
// answers over the same samples.
func TestProcess_PrometheusNativeHistograms(t *testing.T) {
	skipShort(t)
	_, a, b, cc := startCluster3(t)
	target := startHistogramTarget(t)
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
      batch_send_deadline: 200ms
      min_backoff: 50ms
`, target.addr, a.HTTPAddr), "--enable-feature=native-histograms")

	// Let a minute-long window fill with native histograms in both, then freeze the target so the
	// last samples are the same everywhere once the queue drained.
	pc.Eventually(t, 60*time.Second, "the cluster holds native histograms", func() (bool, string) {
		_, ans, body := getAPI(t, a.HTTPAddr, "/prometheus/api/v1/query", url.Values{"query": {`histogram_count(rpc_size_bytes)`}})
		return ans.Status == "success" && len(ans.Data.Result) > 2, body
	})
	time.Sleep(70 * time.Second)
	target.stop()
	// The frozen target's last scrapes reach the cluster once the queue has sent everything: the
	// sent count stops moving.
	var sent, failed float64
	last := -1.0
	pc.Eventually(t, 30*time.Second, "prometheus's queue drained", func() (bool, string) {
		time.Sleep(1500 * time.Millisecond)
		code, metrics, _ := pc.HTTPGet(prom.addr, "/metrics", "")
		if code != http.StatusOK {
			return false, fmt.Sprint(code)
		}
		sent = metricValue(metrics, "prometheus_remote_storage_histograms_total")
		failed = metricValue(metrics, "prometheus_remote_storage_histograms_failed_total") + metricValue(metrics, "prometheus_remote_storage_samples_failed_total")
		done := sent == last
		last = sent
		return done, fmt.Sprintf("sent %v", sent)
	})
	if sent < 100 || failed > 0 {
		t.Fatalf("prometheus sent %v histograms, %v failed", sent, failed)
	}
	t.Logf("prometheus sent %v native histograms", sent)

	end := time.Now().Add(-2 * time.Second).Truncate(time.Second)
	queries := []string{
		`histogram_quantile(0.9, rate(rpc_latency_seconds[1m]))`,
		`histogram_quantile(0.5, rate(rpc_latency_seconds{method="put"}[30s]))`,
		`histogram_quantile(0.99, sum(rate(rpc_latency_seconds[1m])))`,
		`histogram_count(rate(rpc_latency_seconds[1m]))`,
		`histogram_sum(rate(rpc_size_bytes[1m]))`,
		`histogram_count(rpc_size_bytes)`,
		`histogram_sum(rpc_latency_seconds)`,
		`histogram_fraction(0, 0.1, rate(rpc_latency_seconds[1m]))`,
		`histogram_quantile(0.9, rpc_size_bytes)`,
	}
	checked := 0
	for _, q := range queries {
		for _, at := range []time.Time{end, end.Add(-7 * time.Second), end.Add(-23 * time.Second)} {
			p := url.Values{"query": {q}, "time": {strconv.FormatInt(at.Unix(), 10)}}
			_, want, _ := getAPI(t, prom.addr, "/api/v1/query", p)
			for _, n := range []*pc.Node{a, b, cc} {
				_, got, _ := getAPI(t, n.HTTPAddr, "/prometheus/api/v1/query", p)
				compareAnswers(t, fmt.Sprintf("%s @%d via %s", q, at.Unix(), n.ID), want, got)
			}
			if len(want.Data.Result) > 0 && string(want.Data.Result) != "[]" {
				checked++
			}
		}
		p := url.Values{"query": {q}, "start": {strconv.FormatInt(end.Add(-40*time.Second).Unix(), 10)},
			"end": {strconv.FormatInt(end.Unix(), 10)}, "step": {"3"}}
		_, want, _ := getAPI(t, prom.addr, "/api/v1/query_range", p)
		_, got, _ := getAPI(t, a.HTTPAddr, "/prometheus/api/v1/query_range", p)
		compareAnswers(t, q+" over 40s", want, got)
	}
	if checked < len(queries)*2 {
		t.Fatalf("only %d instant answers had a value", checked)
	}
}
