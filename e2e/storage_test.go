package e2e

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/oklog/ulid/v2"
	"github.com/prometheus/prometheus/prompb"

	pc "github.com/raftingest/raftingest/internal/proccluster"
)

// storagePostFlush calls POST /ingester/flush on addr (a node's AdminAddr) and returns the status and body.
func storagePostFlush(t *testing.T, addr string) (int, string) {
	t.Helper()
	cl := &http.Client{Timeout: 60 * time.Second}
	resp, err := cl.Post("http://"+addr+"/ingester/flush", "text/plain", nil)
	if err != nil {
		t.Fatalf("POST %s/ingester/flush: %v", addr, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func storageMetric(t *testing.T, addr, name string) float64 {
	t.Helper()
	code, body, err := pc.HTTPGet(addr, "/metrics", "")
	if err != nil || code != 200 {
		t.Fatalf("GET %s/metrics: %d %v", addr, code, err)
	}
	return metricValue(body, name)
}

// storageWaitMetric waits (10s at most) until the metric name on addr reads want. A push is
// acknowledged once a quorum of its replicas stored it; the last replica may still be storing it,
// so a test that needs every replica to hold the samples waits for it to say so.
func storageWaitMetric(t *testing.T, addr, name string, want float64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got := storageMetric(t, addr, name)
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s %s = %v after 10s, want %v", addr, name, got, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// storageBlockDirs returns the complete blocks (with meta.json) of tenant in a filesystem bucket.
func storageBlockDirs(t *testing.T, bucket, tenant string) []string {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(bucket, tenant))
	if err != nil {
		t.Fatalf("bucket %s: %v", bucket, err)
	}
	var out []string
	for _, e := range ents {
		if _, err := ulid.Parse(e.Name()); err != nil {
			continue
		}
		if _, err := os.Stat(filepath.Join(bucket, tenant, e.Name(), "meta.json")); err == nil {
			out = append(out, filepath.Join(bucket, tenant, e.Name()))
		}
	}
	return out
}

// storagePromtoolDump copies blocks into a TSDB directory (promtool opens a whole TSDB, which needs a
// wal directory) and returns every sample promtool tsdb dump prints, keyed like keyOf, with its
// value; a sample printed twice with two values fails the test.
func storagePromtoolDump(t *testing.T, promtool string, blocks []string) map[sampleKey]float64 {
	t.Helper()
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "wal"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, b := range blocks {
		if err := os.CopyFS(filepath.Join(dir, filepath.Base(b)), os.DirFS(b)); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command(promtool, "tsdb", "dump", "--min-time="+strconv.FormatInt(math.MinInt64, 10),
		"--max-time="+strconv.FormatInt(math.MaxInt64, 10), dir)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("promtool tsdb dump: %v\n%s", err, stderr.String())
	}
	got := map[sampleKey]float64{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		end := strings.LastIndex(line, "} ")
		f := strings.Fields(line[end+2:])
		if end < 0 || len(f) != 2 {
			t.Fatalf("promtool dump line %q", line)
		}
		var parts []string
		for _, kv := range strings.Split(strings.TrimPrefix(line[:end], "{"), ", ") {
			name, q, _ := strings.Cut(kv, "=")
			v, err := strconv.Unquote(q)
			if err != nil {
				t.Fatalf("promtool dump line %q: %v", line, err)
			}
			parts = append(parts, name+"="+v)
		}
		v, err1 := strconv.ParseFloat(f[0], 64)
		ts, err2 := strconv.ParseInt(f[1], 10, 64)
		if err1 != nil || err2 != nil {
			t.Fatalf("promtool dump line %q", line)
		}
		k := sampleKey{strings.Join(parts, ","), ts}
		if old, dup := got[k]; dup && old != v {
			t.Fatalf("sample %v twice with values %v and %v", k, old, v)
		}
		got[k] = v
	}
	return got
}

func storageRequireSamples(t *testing.T, what string, want, got map[sampleKey]float64) {
	t.Helper()
	for k, v := range want {
		if g, ok := got[k]; !ok || g != v {
			t.Fatalf("%s: sample %v: got %v (present %v), want %v; %d samples, want %d", what, k, g, ok, v, len(got), len(want))
		}
	}
	if len(got) != len(want) {
		t.Fatalf("%s: %d samples, want %d", what, len(got), len(want))
	}
}

// storageWriteSeries pushes nSeries series of nSamples samples each, 15s apart and ending now, for
// tenant, and returns what was acknowledged.
func storageWriteSeries(t *testing.T, addr, tenant, name string, nSeries, nSamples int) map[sampleKey]float64 {
	t.Helper()
	now := time.Now().UnixMilli()
	want := map[sampleKey]float64{}
	req := &prompb.WriteRequest{}
	for s := range nSeries {
		var smps []prompb.Sample
		for i := range nSamples {
			ts := now - int64(nSamples-i)*15_000
			smps = append(smps, prompb.Sample{Timestamp: ts, Value: float64(i) + float64(s)/100})
		}
		ts := series([]string{"__name__", name, "series", fmt.Sprintf("s%03d", s)}, smps...)
		req.Timeseries = append(req.Timeseries, ts)
		for _, sm := range smps {
			want[sampleKey{keyOf(ts.Labels), sm.Timestamp}] = sm.Value
		}
	}
	if code, body, err := push(addr, tenant, req); err != nil || code/100 != 2 {
		t.Fatalf("push: %d %q %v", code, body, err)
	}
	return want
}

// TestProcess_FlushToBucket writes through the distributor of a 3-node cluster (RF=3), forces a
// flush on every node, and checks with Prometheus' promtool that each node's bucket holds blocks
// that analyze cleanly and dump exactly the samples written, and that the memory is released.
// Then a bucket that fails mid-upload: the flush answers 500 naming the cause, memory keeps the
// data, and once the bucket is repaired a flush uploads every sample.
func TestProcess_FlushToBucket(t *testing.T) {
	skipShort(t)
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatalf("promtool not installed (make deps installs Debian's prometheus): %v", err)
	}
	_, a, b, cc := startCluster3(t, "-ingester.flush-op-timeout=3s", "-auth.multitenancy-enabled")
	nodes := []*pc.Node{a, b, cc}

	want := storageWriteSeries(t, a.HTTPAddr, "tenant1", "e2e_flush", 50, 200)
	for _, n := range nodes {
		// RF=3 on 3 nodes: every node stores every sample (the third replica may finish after the
		// quorum's acknowledgement).
		storageWaitMetric(t, n.HTTPAddr, "cortex_ingester_memory_series", 50)
		storageWaitMetric(t, n.HTTPAddr, `cortex_ingester_ingested_samples_total{user="tenant1"}`, 50*200)
		code, body := storagePostFlush(t, n.AdminAddr)
		if code != http.StatusOK {
			t.Fatalf("%s: POST /ingester/flush: %d %s", n.ID, code, body)
		}
		if got := storageMetric(t, n.HTTPAddr, "cortex_ingester_memory_series"); got != 0 {
			t.Fatalf("%s: %v series in memory after the flush, want 0", n.ID, got)
		}
		if got := storageMetric(t, n.HTTPAddr, "cortex_ingester_shipper_uploads_total"); got < 1 {
			t.Fatalf("%s: cortex_ingester_shipper_uploads_total %v after a flush", n.ID, got)
		}
		blocks := storageBlockDirs(t, filepath.Join(n.DataDir, "blocks"), "tenant1")
		if len(blocks) == 0 {
			t.Fatalf("%s: no block in its bucket after the flush", n.ID)
		}
		for _, bd := range blocks {
			out, err := exec.Command(promtool, "tsdb", "analyze", filepath.Dir(bd), filepath.Base(bd)).CombinedOutput()
			if err != nil {
				t.Fatalf("%s: promtool tsdb analyze %s: %v\n%s", n.ID, bd, err, out)
			}
		}
		storageRequireSamples(t, n.ID+" blocks dumped by promtool", want, storagePromtoolDump(t, promtool, blocks))
	}

	// A bucket that fails mid-upload: node a's tenant directory is a regular file, so creating
	// the block's directory fails.
	bad := filepath.Join(a.DataDir, "blocks", "tenant2")
	if err := os.WriteFile(bad, []byte("not a directory"), 0o644); err != nil {
		t.Fatal(err)
	}
	want2 := storageWriteSeries(t, a.HTTPAddr, "tenant2", "e2e_flush_retry", 10, 100)
	storageWaitMetric(t, a.HTTPAddr, "cortex_ingester_memory_series", 10)
	// (tenant1's per-tenant series went with its last series at the flush above.)
	storageWaitMetric(t, a.HTTPAddr, `cortex_ingester_ingested_samples_total{user="tenant2"}`, 10*100)
	code, body := storagePostFlush(t, a.AdminAddr)
	if code != http.StatusInternalServerError || !strings.Contains(body, "tenant2") || !strings.Contains(body, "not a directory") {
		t.Fatalf("flush into a failing bucket: %d %q, want 500 naming the tenant and the cause", code, body)
	}
	if got := storageMetric(t, a.HTTPAddr, "cortex_ingester_memory_series"); got != 10 {
		t.Fatalf("a: %v series in memory after a failed flush, want 10", got)
	}
	if got := storageMetric(t, a.HTTPAddr, "cortex_ingester_shipper_upload_failures_total"); got < 1 {
		t.Fatalf("a: upload failures %v, want counted", got)
	}
	got, err := queryIngester(t.Context(), a.GRPCAddr, "tenant2", "e2e_flush_retry")
	if err != nil {
		t.Fatal(err)
	}
	storageRequireSamples(t, "a's memory after the failed flush", want2, got)

	if err := os.Remove(bad); err != nil {
		t.Fatal(err)
	}
	if code, body := storagePostFlush(t, a.AdminAddr); code != http.StatusOK {
		t.Fatalf("flush after the bucket was repaired: %d %s", code, body)
	}
	storageRequireSamples(t, "a's tenant2 blocks dumped by promtool", want2,
		storagePromtoolDump(t, promtool, storageBlockDirs(t, filepath.Join(a.DataDir, "blocks"), "tenant2")))
	if got := storageMetric(t, a.HTTPAddr, "cortex_ingester_memory_series"); got != 0 {
		t.Fatalf("a: %v series in memory after the repaired flush, want 0", got)
	}
}
