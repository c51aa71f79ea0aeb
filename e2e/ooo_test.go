package e2e

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/prometheus/prompb"

	pc "github.com/raftingest/raftingest/internal/proccluster"
)

// TestProcess_OutOfOrderSamples: on a 3-node cluster with -ingester.out-of-order-time-window=10m,
// samples pushed over HTTP out of order within the window are accepted and answered by PromQL
// merged with the in-order ones (each timestamp once, in order); one older than the window is
// refused with 400 naming sample-too-old and counted; an ingester killed -9 and restarted with the
// window at 0 replays every acknowledged out-of-order sample.
func TestProcess_OutOfOrderSamples(t *testing.T) {
	skipShort(t)
	_, a, b, cc := startCluster3(t, "-ingester.out-of-order-time-window", "10m")
	now := time.Now().UnixMilli() / 1000 * 1000
	start := now - 5*60_000
	const nSeries = 4
	want := map[sampleKey]float64{}
	var inOrder, ooo prompb.WriteRequest
	for i := range nSeries {
		lbls := []string{"__name__", "ooo_e2e", "i", strconv.Itoa(i)}
		var in, out []prompb.Sample
		for ts := start; ts <= now; ts += 15_000 {
			in = append(in, prompb.Sample{Timestamp: ts, Value: float64(ts-start) / 1000})
		}
		for ts := now - 7_500; ts > start; ts -= 30_000 { // newest first: each older than the last
			out = append(out, prompb.Sample{Timestamp: ts, Value: -float64(ts-start) / 1000})
		}
		inOrder.Timeseries = append(inOrder.Timeseries, series(lbls, in...))
		ooo.Timeseries = append(ooo.Timeseries, series(lbls, out...))
		for _, s := range append(in, out...) {
			want[sampleKey{keyOf(series(lbls).Labels), s.Timestamp}] = s.Value
		}
	}
	if code, body, err := push(a.HTTPAddr, "", &inOrder); err != nil || code/100 != 2 {
		t.Fatalf("in-order push: %d %s %v", code, body, err)
	}
	if code, body, err := push(b.HTTPAddr, "", &ooo); err != nil || code/100 != 2 {
		t.Fatalf("out-of-order push within the window: %d %s %v", code, body, err)
	}
	// Too old: 20 minutes before the series' newest sample.
	old := prompb.WriteRequest{Timeseries: []prompb.TimeSeries{series([]string{"__name__", "ooo_e2e", "i", "0"},
		prompb.Sample{Timestamp: now - 20*60_000, Value: 1})}}
	if code, body, err := push(a.HTTPAddr, "", &old); err != nil || code != 400 || !strings.Contains(body, "sample-too-old") {
		t.Fatalf("a sample older than the window: want 400 naming sample-too-old, got %d %s %v", code, body, err)
	}
	if _, metrics, err := pc.HTTPGet(a.HTTPAddr, "/metrics", ""); err != nil || !hasSample(metrics, "cortex_discarded_samples_total", `reason="sample_too_old"`, 1) {
		t.Fatalf("cortex_discarded_samples_total{reason=\"sample_too_old\"} 1 not in the distributor's metrics (%v)", err)
	}
	// PromQL: the raw samples of the last 10 minutes, merged across replicas and in/out of order.
	pc.Eventually(t, 10*time.Second, "the query answers every sample", func() (bool, string) {
		code, ans, raw := getAPI(t, cc.HTTPAddr, "/prometheus/api/v1/query", url.Values{"query": {"ooo_e2e[10m]"}, "time": {fmt.Sprint(now / 1000)}})
		if code != 200 || ans.Data.ResultType != "matrix" {
			return false, raw
		}
		got := normalise(t, "matrix", ans.Data.Result)
		if len(got) != nSeries {
			return false, fmt.Sprintf("%d series: %s", len(got), raw)
		}
		n := 0
		for k, pts := range got {
			prev := 0.0
			for j, p := range pts {
				tsec, _ := strconv.ParseFloat(p[0], 64)
				if j > 0 && tsec <= prev {
					return false, fmt.Sprintf("%s: points not strictly increasing at %v", k, tsec)
				}
				prev = tsec
				n++
			}
		}
		if n != len(want) {
			return false, fmt.Sprintf("%d points, want %d", n, len(want))
		}
		return true, ""
	})
	code, ans, raw := getAPI(t, cc.HTTPAddr, "/prometheus/api/v1/query", url.Values{"query": {"sum(count_over_time(ooo_e2e[10m]))"}, "time": {fmt.Sprint(now / 1000)}})
	if code != 200 || !strings.Contains(raw, fmt.Sprintf(`"%d"`, len(want))) {
		t.Fatalf("count_over_time: want %d, got %d %s %+v", len(want), code, raw, ans)
	}
	if v := metricOf(t, a, "cortex_ingester_tsdb_out_of_order_samples_appended_total") + metricOf(t, b, "cortex_ingester_tsdb_out_of_order_samples_appended_total") +
		metricOf(t, cc, "cortex_ingester_tsdb_out_of_order_samples_appended_total"); v < float64(len(ooo.Timeseries)*len(ooo.Timeseries[0].Samples)*2) {
		t.Fatalf("cortex_ingester_tsdb_out_of_order_samples_appended_total over the nodes: %v, want at least a quorum's copies", v)
	}
	// Every replica holds everything (RF 3 on 3 nodes); c, killed and restarted with the window
	// at 0, replays all of it.
	before, err := queryIngester(context.Background(), cc.GRPCAddr, "anonymous", "ooo_e2e")
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range want {
		if got, ok := before[k]; !ok || got != v {
			t.Fatalf("ingester c before the kill: %v at %d is %v (present %v), want %v", k.series, k.t, got, ok, v)
		}
	}
	cc.Kill()
	cc.Start("-ingester.out-of-order-time-window", "0s")
	pc.Eventually(t, 30*time.Second, "c answers after its replay", func() (bool, string) {
		after, err := queryIngester(context.Background(), cc.GRPCAddr, "anonymous", "ooo_e2e")
		if err != nil {
			return false, err.Error()
		}
		if len(after) != len(before) {
			return false, fmt.Sprintf("%d samples after the restart, want %d", len(after), len(before))
		}
		for k, v := range before {
			if after[k] != v {
				return false, fmt.Sprintf("%v at %d: %v, want %v", k.series, k.t, after[k], v)
			}
		}
		return true, ""
	})
}

// hasSample reports whether the metrics text holds a sample of name whose labels include label
// with value v.
func hasSample(metrics, name, label string, v float64) bool {
	for _, line := range strings.Split(metrics, "\n") {
		if strings.HasPrefix(line, name+"{") && strings.Contains(line, label) {
			var got float64
			f := strings.Fields(line)
			if _, err := fmt.Sscan(f[len(f)-1], &got); err == nil && got == v {
				return true
			}
		}
	}
	return false
}

// TestProcess_OutOfOrderWindowFromRuntimeConfig: with the flag at 0, a tenant's
// out_of_order_time_window in -runtime-config.file lets its out-of-order samples in while another
// tenant's are refused, and a rewrite of the file takes it away again without a restart.
func TestProcess_OutOfOrderWindowFromRuntimeConfig(t *testing.T) {
	skipShort(t)
	rc := filepath.Join(t.TempDir(), "runtime.yaml")
	write := func(content string) {
		t.Helper()
		if err := os.WriteFile(rc+".tmp", []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(rc+".tmp", rc); err != nil {
			t.Fatal(err)
		}
	}
	write("overrides:\n  t1:\n    out_of_order_time_window: 10m\n")
	c := pc.New(t, append(slicesClone(fastFlags), "-auth.multitenancy-enabled", "-runtime-config.file", rc,
		"-runtime-config.reload-period", "200ms", "-distributor.replication-factor", "1")...)
	a := c.Start("a", "-bootstrap")
	waitActive(t, c, a.GRPCAddr, "a")
	now := time.Now().UnixMilli()
	req := func(ts int64) *prompb.WriteRequest {
		return &prompb.WriteRequest{Timeseries: []prompb.TimeSeries{series([]string{"__name__", "ooo_rc"}, prompb.Sample{Timestamp: ts, Value: float64(ts)})}}
	}
	for _, tenant := range []string{"t1", "t2"} {
		if code, body, err := push(a.HTTPAddr, tenant, req(now)); err != nil || code/100 != 2 {
			t.Fatalf("%s in order: %d %s %v", tenant, code, body, err)
		}
	}
	if code, body, err := push(a.HTTPAddr, "t1", req(now-60_000)); err != nil || code/100 != 2 {
		t.Fatalf("t1 out of order within its override: %d %s %v", code, body, err)
	}
	if code, body, err := push(a.HTTPAddr, "t2", req(now-60_000)); err != nil || code != 400 || !strings.Contains(body, "out of order") {
		t.Fatalf("t2 out of order on the flag's 0: want 400, got %d %s %v", code, body, err)
	}
	write("overrides:\n  t1:\n    out_of_order_time_window: 0s\n")
	pc.Eventually(t, 10*time.Second, "t1's window taken away", func() (bool, string) {
		code, body, err := push(a.HTTPAddr, "t1", req(now-120_000))
		return err == nil && code == 400, fmt.Sprintf("%d %s %v", code, body, err)
	})
}
