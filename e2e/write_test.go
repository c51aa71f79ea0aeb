package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/prometheus/prompb"
	"google.golang.org/grpc"

	pc "github.com/raftingest/raftingest/internal/proccluster"
)

// writer pushes unique samples to one distributor in a loop: every round one sample for each of
// nSeries series, at a timestamp one millisecond after the last, so samples are in order. It
// remembers every sample acknowledged with a 2xx.
type writer struct {
	addr    string
	tenant  string
	nSeries int

	mu       sync.Mutex
	acked    map[sampleKey]float64
	ackedAt  map[sampleKey]time.Time
	failures map[string]int // status or error -> count
	rounds   int

	stop     chan struct{}
	done     chan struct{}
	stopOnce sync.Once
}

func startWriter(addr, tenant string, nSeries int) *writer {
	w := &writer{addr: addr, tenant: tenant, nSeries: nSeries, acked: map[sampleKey]float64{},
		ackedAt: map[sampleKey]time.Time{}, failures: map[string]int{}, stop: make(chan struct{}), done: make(chan struct{})}
	go w.run()
	return w
}

func (w *writer) run() {
	defer close(w.done)
	t0 := time.Now().UnixMilli()
	for seq := int64(0); ; seq++ {
		select {
		case <-w.stop:
			return
		case <-time.After(10 * time.Millisecond):
		}
		req := &prompb.WriteRequest{}
		for s := range w.nSeries {
			req.Timeseries = append(req.Timeseries, series(
				[]string{"__name__", "e2e_writes", "series", fmt.Sprintf("s%03d", s), "writer", "w0"},
				prompb.Sample{Timestamp: t0 + seq, Value: float64(seq)}))
		}
		code, body, err := push(w.addr, w.tenant, req)
		w.mu.Lock()
		w.rounds++
		switch {
		case err != nil:
			w.failures["error: "+err.Error()]++
		case code/100 == 2:
			now := time.Now()
			for _, ts := range req.Timeseries {
				k := sampleKey{keyOf(ts.Labels), ts.Samples[0].Timestamp}
				w.acked[k] = ts.Samples[0].Value
				w.ackedAt[k] = now
			}
		default:
			w.failures[fmt.Sprintf("%d %s", code, strings.TrimSpace(body))]++
		}
		w.mu.Unlock()
	}
}

// Stop stops the writer and waits for its last push to finish. Safe to call more than once.
func (w *writer) Stop() {
	w.stopOnce.Do(func() { close(w.stop) })
	<-w.done
}

func (w *writer) snapshot() (acked map[sampleKey]float64, failures map[string]int, rounds int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	acked = make(map[sampleKey]float64, len(w.acked))
	for k, v := range w.acked {
		acked[k] = v
	}
	failures = make(map[string]int, len(w.failures))
	for k, v := range w.failures {
		failures[k] = v
	}
	return acked, failures, w.rounds
}

// ackedBefore returns the samples acknowledged before t, with their values.
func (w *writer) ackedBefore(t time.Time) map[sampleKey]float64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	m := map[sampleKey]float64{}
	for k, v := range w.acked {
		if w.ackedAt[k].Before(t) {
			m[k] = v
		}
	}
	return m
}

// ackedCount is how many samples have been acknowledged so far.
func (w *writer) ackedCount() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.acked)
}

func (w *writer) waitRounds(t *testing.T, n int) {
	t.Helper()
	pc.Eventually(t, 30*time.Second, fmt.Sprintf("%d write rounds", n), func() (bool, string) {
		w.mu.Lock()
		defer w.mu.Unlock()
		return len(w.acked) >= n*w.nSeries, fmt.Sprintf("%d acked, failures %v", len(w.acked), w.failures)
	})
}

// copies counts, for every acked sample, on how many of the nodes it is present with its value.
func copies(t *testing.T, acked map[sampleKey]float64, tenant string, nodes ...*pc.Node) map[sampleKey]int {
	t.Helper()
	return copiesWith(t, acked, tenant, insecureCreds, nodes...)
}

// copiesWith is copies over a gRPC client with creds (a member's certificate under mutual TLS).
func copiesWith(t *testing.T, acked map[sampleKey]float64, tenant string, creds grpc.DialOption, nodes ...*pc.Node) map[sampleKey]int {
	t.Helper()
	n := map[sampleKey]int{}
	for _, node := range nodes {
		got, err := queryIngesterWith(context.Background(), node.GRPCAddr, tenant, "e2e_writes", creds)
		if err != nil {
			t.Fatalf("query %s: %v", node.ID, err)
		}
		for k, v := range acked {
			if gv, ok := got[k]; ok && gv == v {
				n[k]++
			}
		}
	}
	return n
}

func startCluster3(t *testing.T, extra ...string) (*pc.Cluster, *pc.Node, *pc.Node, *pc.Node) {
	t.Helper()
	c := pc.New(t, append(slicesClone(fastFlags), extra...)...)
	a := c.Start("a", "-bootstrap")
	waitActive(t, c, a.GRPCAddr, "a")
	b := c.Start("b", "-join", a.GRPCAddr)
	cc := c.Start("c", "-join", a.GRPCAddr)
	waitActive(t, c, a.GRPCAddr, "a", "b", "c")
	// Every node must see every member ACTIVE before writes are judged: a distributor whose ring
	// lags would cap RF by what it sees.
	for _, n := range []*pc.Node{a, b, cc} {
		waitActive(t, c, n.GRPCAddr, "a", "b", "c")
	}
	return c, a, b, cc
}

func slicesClone(s []string) []string { return append([]string(nil), s...) }

// TestProcess_KillOneUnderLoad kills -9 one of three ingesters under a steady write load: writes
// keep succeeding, and after its restart its WAL replay restores its series.
func TestProcess_KillOneUnderLoad(t *testing.T) {
	skipShort(t)
	c, a, b, cc := startCluster3(t)
	w := startWriter(a.HTTPAddr, "", 20)
	defer w.Stop()
	w.waitRounds(t, 50)
	_, before, _ := w.snapshot()

	cc.Kill()
	killedAt := time.Now()
	ackedBefore, _, _ := w.snapshot()
	w.waitRounds(t, len(ackedBefore)/20+400) // 400 more rounds (past the heartbeat timeout) with c dead
	_, after, _ := w.snapshot()
	if len(after) != len(before) {
		t.Fatalf("writes failed after c was killed: before %v, after %v", before, after)
	}

	cc.Start()
	waitActive(t, c, a.GRPCAddr, "c")
	w.Stop()
	acked, failures, rounds := w.snapshot()
	if len(failures) > 0 {
		t.Fatalf("failed pushes: %v", failures)
	}
	t.Logf("%d rounds, %d samples acked", rounds, len(acked))

	// c's replay restored what it had stored: every sample acked well before the kill (c had
	// answered for it or was about to) is on c again.
	gotC, err := queryIngester(context.Background(), cc.GRPCAddr, "anonymous", "e2e_writes")
	if err != nil {
		t.Fatal(err)
	}
	missingOnC := 0
	for k, v := range acked {
		if w.ackedAt[k].Before(killedAt.Add(-time.Second)) {
			if gv, ok := gotC[k]; !ok || gv != v {
				missingOnC++
			}
		}
	}
	if missingOnC > 0 {
		t.Fatalf("c lost %d samples acked before it was killed", missingOnC)
	}
	// Every acked sample is on a quorum of its replicas.
	for k, n := range copies(t, acked, "anonymous", a, b, cc) {
		if n < 2 {
			t.Fatalf("sample %v on %d replicas, want at least 2", k, n)
		}
	}
	if got := len(copies(t, acked, "anonymous", a, b, cc)); got != len(acked) {
		t.Fatalf("%d of %d acked samples found", got, len(acked))
	}
}

// TestProcess_KillAllUnderLoad kills -9 all three ingesters at once under load; after a restart
// every sample that was acknowledged (2xx) is present.
func TestProcess_KillAllUnderLoad(t *testing.T) {
	skipShort(t)
	c, a, b, cc := startCluster3(t)
	w := startWriter(a.HTTPAddr, "", 20)
	w.waitRounds(t, 100)
	var wg sync.WaitGroup
	for _, n := range []*pc.Node{a, b, cc} {
		wg.Add(1)
		go func() { defer wg.Done(); n.Kill() }()
	}
	wg.Wait()
	w.Stop()
	acked, _, rounds := w.snapshot()
	t.Logf("%d rounds, %d samples acked before the crash", rounds, len(acked))

	for _, n := range []*pc.Node{a, b, cc} {
		n.Start()
	}
	waitActive(t, c, b.GRPCAddr, "a", "b", "c")
	counts := copies(t, acked, "anonymous", a, b, cc)
	lost := 0
	for k := range acked {
		if counts[k] < 2 {
			lost++
			if lost < 5 {
				t.Errorf("acked sample %v on %d replicas after restart, want at least 2", k, counts[k])
			}
		}
	}
	if lost > 0 {
		t.Fatalf("%d of %d acked samples below quorum after kill -9 of all and restart", lost, len(acked))
	}
}

// TestProcess_PrometheusRemoteWrite runs Debian's real Prometheus, scraping itself and
// remote-writing to a 3-node cluster, and checks its samples arrive on all RF=3 ingesters.
func TestProcess_PrometheusRemoteWrite(t *testing.T) {
	skipShort(t)
	promBin, err := exec.LookPath("prometheus")
	if err != nil {
		t.Fatalf("prometheus not installed (make deps installs Debian's prometheus): %v", err)
	}
	_, a, b, cc := startCluster3(t)
	port := pc.FreePorts(t, 1)[0]
	dir := t.TempDir()
	cfg := fmt.Sprintf(`global:
  scrape_interval: 1s
scrape_configs:
  - job_name: prometheus
    static_configs:
      - targets: ['127.0.0.1:%d']
remote_write:
  - url: http://%s/api/v1/push
    queue_config:
      batch_send_deadline: 500ms
      min_backoff: 50ms
`, port, a.HTTPAddr)
	if err := os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	logf, err := os.Create(filepath.Join(dir, "prometheus.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	prom := exec.CommandContext(ctx, promBin, "--config.file="+filepath.Join(dir, "prometheus.yml"),
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

	// Wait until Prometheus has shipped samples, then check every ingester holds its series.
	promAddr := fmt.Sprintf("127.0.0.1:%d", port)
	pc.Eventually(t, 60*time.Second, "prometheus sent samples", func() (bool, string) {
		code, body, err := pc.HTTPGet(promAddr, "/metrics", "")
		if err != nil || code != 200 {
			return false, fmt.Sprint(code, err)
		}
		sent := metricValue(body, "prometheus_remote_storage_samples_total")
		if sent <= 500 {
			sent = metricValue(body, "prometheus_remote_storage_succeeded_samples_total")
		}
		return sent > 500, fmt.Sprintf("sent %v", sent)
	})
	code, body, _ := pc.HTTPGet(promAddr, "/metrics", "")
	if code != 200 {
		t.Fatal(code)
	}
	if f := metricValue(body, "prometheus_remote_storage_samples_failed_total") + metricValue(body, "prometheus_remote_storage_failed_samples_total"); f > 0 {
		t.Errorf("prometheus reports %v failed samples", f)
	}
	for _, n := range []*pc.Node{a, b, cc} {
		got, err := queryIngester(ctx, n.GRPCAddr, "anonymous", "prometheus_build_info")
		if err != nil {
			t.Fatal(err)
		}
		if len(got) == 0 {
			t.Errorf("%s holds no sample of prometheus_build_info", n.ID)
		}
		code, body, _ := pc.HTTPGet(n.HTTPAddr, "/metrics", "")
		if code != 200 || metricValue(body, `cortex_ingester_ingested_samples_total{user="anonymous"}`) < 100 {
			t.Errorf("%s: cortex_ingester_ingested_samples_total = %v", n.ID, metricValue(body, `cortex_ingester_ingested_samples_total{user="anonymous"}`))
		}
	}
}

// metricValue returns the sum of the samples of a metric (prefix match on the line) in a text
// exposition.
func metricValue(body, prefix string) float64 {
	sum := 0.0
	for _, line := range strings.Split(body, "\n") {
		if strings.HasPrefix(line, prefix+" ") || strings.HasPrefix(line, prefix+"{") {
			var v float64
			f := strings.Fields(line)
			if _, err := fmt.Sscan(f[len(f)-1], &v); err == nil {
				sum += v
			}
		}
	}
	return sum
}
