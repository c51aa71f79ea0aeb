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
	for _, sc := range []string{"1 ingest RF1", "2 ingest RF3", "3 WAL", "4 memory", "5 restart", "6 hand-over", "7 query", "8 ring"} {
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
	// These scenarios need nothing beyond the write path, so they must always give numbers.
	for _, k := range []string{"ingest_vs_prometheus", "cpu_per_sample_vs_prometheus", "rss_per_series_vs_prometheus",
		"rf3_vs_single", "wal_replay_samples_per_s", "ring_lookup_ns", "chunk_bytes_per_sample"} {
		v, err := strconv.ParseFloat(kv[k], 64)
		if err != nil || !(v > 0) {
			t.Errorf("%s=%q: want a positive number (last line: %s)", k, kv[k], last)
		}
	}
	// Hand-over and query depend on other parts: a number or na, never anything else.
	for _, k := range []string{"handover_series_per_s", "query_vs_prometheus"} {
		if v := kv[k]; v != "na" {
			if f, err := strconv.ParseFloat(v, 64); err != nil || !(f > 0) {
				t.Errorf("%s=%q: want a positive number or na", k, v)
			}
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
