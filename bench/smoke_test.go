package bench

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	pc "github.com/raftingest/raftingest/internal/proccluster"
)

// TestRun_Smoke runs every scenario at the smoke scale, so the runner never rots: the table and
// the last line must come out with real, non-zero figures for every scenario this build can run
// (scenarios whose endpoints are missing must say n/a with the reason, never a number).
func TestRun_Smoke(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes for about 30s")
	}
	prom, err := exec.LookPath("prometheus")
	if err != nil {
		t.Skip("prometheus is not installed (make deps)")
	}
	bin := pc.Binaries(t)
	src, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var log strings.Builder
	rep, err := Run(ctx, RunConfig{Scale: Scales["smoke"], BinDir: bin, Prometheus: prom, SrcDir: src, OutDir: out, Out: &log, Command: "go test ./bench/"})
	if err != nil {
		t.Fatalf("%v\n%s", err, log.String())
	}
	if len(rep.Failed) > 0 {
		t.Fatalf("failed scenarios: %v\nprogress:\n%s\ntable:\n%s", rep.Failed, log.String(), rep.Table())
	}
	table := rep.Table()
	for _, sc := range []string{"1 ingest RF1", "2 ingest RF3", "3 WAL", "4 memory", "5 restart", "6 hand-over", "7 query", "8 ring", "9 remote-write 2.0", "10 native histograms"} {
		if !strings.Contains(table, "| "+sc+" |") {
			t.Errorf("table has no scenario %q:\n%s", sc, table)
		}
	}
	last := rep.LastLine()
	kv := map[string]string{}
	for _, f := range strings.Fields(last) {
		k, v, ok := strings.Cut(f, "=")
		if !ok {
			t.Fatalf("last line field %q is not key=value: %s", f, last)
		}
		kv[k] = v
	}
	num := func(k string) float64 {
		v, err := strconv.ParseFloat(kv[k], 64)
		if err != nil || !(v > 0) {
			t.Errorf("%s=%q: want a positive number (last line: %s)", k, kv[k], last)
		}
		return v
	}
	// These scenarios need nothing beyond the write path, so they must always give numbers.
	for _, k := range []string{"ingest_vs_prometheus", "cpu_per_sample_vs_prometheus", "rss_per_series_vs_prometheus",
		"rss_per_series_after_ingest_vs_prometheus", "rss_per_series_2h_head_vs_prometheus", "head_samples_per_series",
		"rss_anon_per_series_2h_head", "rss_file_per_series_2h_head",
		"heap_inuse_per_series", "heap_inuse_per_series_vs_prometheus", "wal_bytes_per_sample_vs_prometheus",
		"rf3_vs_single", "wal_replay_samples_per_s", "wal_replay_samples_per_s_20k", "wal_replay_samples_per_s_60k",
		"ring_lookup_ns", "chunk_bytes_per_sample", "rw2_vs_rw1", "rw2_samples_per_s",
		"hist_samples_per_s", "hist_vs_prometheus", "hist_wal_bytes_per_sample_vs_prometheus"} {
		num(k)
	}
	// The headline keys are the worst case: RSS the larger of the two moments, replay the
	// slower of the two sizes.
	if got, a, b := num("rss_per_series_vs_prometheus"), num("rss_per_series_after_ingest_vs_prometheus"), num("rss_per_series_2h_head_vs_prometheus"); got != max(a, b) {
		t.Errorf("rss_per_series_vs_prometheus=%v, want the larger of %v (after ingest) and %v (aged head)", got, a, b)
	}
	if got, a, b := num("wal_replay_samples_per_s"), num("wal_replay_samples_per_s_20k"), num("wal_replay_samples_per_s_60k"); got != min(a, b) {
		t.Errorf("wal_replay_samples_per_s=%v, want the smaller of %v and %v", got, a, b)
	}
	if got := num("head_samples_per_series"); got < float64(Scales["smoke"].HeadSamples) {
		t.Errorf("head_samples_per_series=%v, want at least the scale's %d", got, Scales["smoke"].HeadSamples)
	}
	// Hand-over and query depend on other parts: a number or na, never anything else.
	for _, k := range []string{"handover_series_per_s", "handover_series_per_s_1k", "handover_series_per_s_2k", "query_vs_prometheus"} {
		if v, ok := kv[k]; !ok {
			t.Errorf("no key %s (last line: %s)", k, last)
		} else if v != "na" {
			if f, err := strconv.ParseFloat(v, 64); err != nil || !(f > 0) {
				t.Errorf("%s=%q: want a positive number or na", k, v)
			}
		}
	}
	if v := kv["handover_series_per_s"]; v != "na" {
		if got, a, b := num("handover_series_per_s"), num("handover_series_per_s_1k"), num("handover_series_per_s_2k"); got != min(a, b) {
			t.Errorf("handover_series_per_s=%v, want the smaller of %v and %v", got, a, b)
		}
	}
	for _, row := range []string{"RSS per active series after a simulated", "anonymous + file-backed", "Go heap in use per active series"} {
		if !strings.Contains(table, row) {
			t.Errorf("table has no row %q:\n%s", row, table)
		}
	}
	b, err := os.ReadFile(rep.File)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if lines[len(lines)-1] != last {
		t.Errorf("results file does not end with the key=value line")
	}
	if !strings.Contains(string(b), "Machine: ") {
		t.Errorf("results file lacks the machine line")
	}
}
