package e2e

import (
	"fmt"
	"math"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/prometheus/prompb"

	pc "github.com/raftingest/raftingest/internal/proccluster"
	"github.com/raftingest/raftingest/internal/s3server"
	"github.com/raftingest/raftingest/storage"
)

// Process tests of -blocks-storage.backend=s3 against a real S3 server: Versity Gateway
// (internal/s3server) on 127.0.0.1, serving one bucket from a temporary directory. The bucket is
// shared, as S3 is meant to be: every member flushes into it and every querier reads it directly.

// s3Blocks returns the complete blocks (with meta.json) of tenant in srv's bucket, read from the
// server's disk, with the member that wrote each (meta.json's __ingester_id__).
func s3Blocks(t *testing.T, srv *s3server.Server, tenant string) (dirs []string, writer map[string]string) {
	t.Helper()
	writer = map[string]string{}
	if _, err := os.Stat(filepath.Join(srv.BucketDir(""), tenant)); os.IsNotExist(err) {
		return nil, writer
	}
	for _, d := range storageBlockDirs(t, srv.BucketDir(""), tenant) {
		raw, err := os.ReadFile(filepath.Join(d, storage.MetaFilename))
		if err != nil {
			t.Fatal(err)
		}
		m, err := storage.ReadMeta(raw)
		if err != nil {
			t.Fatalf("%s: %v", d, err)
		}
		dirs = append(dirs, d)
		writer[d] = m.Thanos.Labels["__ingester_id__"]
	}
	return dirs, writer
}

// remoteReadLines renders want as readRemote renders an answer.
func remoteReadLines(want map[sampleKey]float64) []string {
	var out []string
	for k, v := range want {
		out = append(out, fmt.Sprintf("%s %d %x", k.series, k.t, math.Float64bits(v)))
	}
	slices.Sort(out)
	return out
}

// s3RequireRead reads metric name over all time through n's remote-read endpoint and requires
// exactly want.
func s3RequireRead(t *testing.T, n *pc.Node, name string, want map[sampleKey]float64) {
	t.Helper()
	got, err := readRemote(t, "http://"+n.HTTPAddr+"/prometheus/api/v1/read", 0, math.MaxInt64,
		&prompb.LabelMatcher{Type: prompb.LabelMatcher_EQ, Name: "__name__", Value: name})
	if err != nil {
		t.Fatalf("remote read of %s via %s: %v", name, n.ID, err)
	}
	if w := remoteReadLines(want); !slices.Equal(got, w) {
		t.Fatalf("remote read of %s via %s: %d samples, want %d (first got %v, first want %v)", name, n.ID, len(got), len(w), got[:min(3, len(got))], w[:min(3, len(w))])
	}
}

// TestProcess_S3FlushQueryAndLeave runs a 3-member cluster (RF 3) on a real S3 bucket:
//
//  1. The flush: every member's POST /ingester/flush uploads its replicas into the one bucket;
//     Prometheus' promtool analyzes every block there and dumps exactly the samples written, and
//     memory is empty afterwards. Nothing is written to a node-local directory.
//  2. The bucket reads: remote read and PromQL through every member answer every sample from the
//     bucket (memory holds none of them), without asking any member for blocks
//     (cortex_querier_fanout_requests_total{source="blocks"} stays 0: a shared bucket is read
//     directly); with one member killed the answers stay complete.
//  3. The hand-over's flush fallback: a member told to leave while no PENDING member exists
//     flushes what it holds into the bucket and exits; its blocks hold every sample it held, and
//     every acknowledged sample reads back through the members left.
func TestProcess_S3FlushQueryAndLeave(t *testing.T) {
	skipShort(t)
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatalf("promtool not installed (make deps installs Debian's prometheus): %v", err)
	}
	started := time.Now()
	srv := s3server.Start(t, s3server.Options{})
	c := pc.New(t, append(append(slicesClone(leaveFlags), srv.Flags()...), "-ingester.flush-check-period=1h")...)
	a := c.Start("a", "-bootstrap")
	waitActive(t, c, a.GRPCAddr, "a")
	b := c.Start("b", "-join", a.GRPCAddr)
	cc := c.Start("c", "-join", a.GRPCAddr)
	nodes := []*pc.Node{a, b, cc}
	for _, n := range nodes {
		waitActive(t, c, n.GRPCAddr, "a", "b", "c")
	}

	// 1. The flush.
	want := storageWriteSeries(t, a.HTTPAddr, "", "e2e_s3", 30, 120)
	for _, n := range nodes {
		storageWaitMetric(t, n.HTTPAddr, "cortex_ingester_memory_series", 30)
		storageWaitMetric(t, n.HTTPAddr, `cortex_ingester_ingested_samples_total{user="anonymous"}`, 30*120)
	}
	for _, n := range nodes {
		if code, body := storagePostFlush(t, n.AdminAddr); code != http.StatusOK {
			t.Fatalf("%s: POST /ingester/flush: %d %s", n.ID, code, body)
		}
		if got := storageMetric(t, n.HTTPAddr, "cortex_ingester_memory_series"); got != 0 {
			t.Fatalf("%s: %v series in memory after the flush, want 0", n.ID, got)
		}
		if got := storageMetric(t, n.HTTPAddr, "cortex_ingester_shipper_uploads_total"); got < 1 {
			t.Fatalf("%s: cortex_ingester_shipper_uploads_total %v after a flush", n.ID, got)
		}
		if ents, err := os.ReadDir(filepath.Join(n.DataDir, "blocks")); err == nil && len(ents) > 0 {
			t.Fatalf("%s: its node-local directory holds %d entries with the s3 backend", n.ID, len(ents))
		}
	}
	blocks, writer := s3Blocks(t, srv, "anonymous")
	wroteBy := map[string]bool{}
	for _, d := range blocks {
		wroteBy[writer[d]] = true
		if out, err := exec.Command(promtool, "tsdb", "analyze", filepath.Dir(d), filepath.Base(d)).CombinedOutput(); err != nil {
			t.Fatalf("promtool tsdb analyze %s: %v\n%s", d, err, out)
		}
	}
	if len(wroteBy) != 3 || !wroteBy["a"] || !wroteBy["b"] || !wroteBy["c"] {
		t.Fatalf("blocks in the bucket written by %v, want a, b and c (each flushed its replicas)", wroteBy)
	}
	storageRequireSamples(t, "the bucket's blocks dumped by promtool", want, storagePromtoolDump(t, promtool, blocks))
	t.Logf("%d blocks flushed into S3 and checked by promtool in %v", len(blocks), time.Since(started).Round(time.Millisecond))

	// 2. The bucket reads: memory holds nothing of e2e_s3 now, every answer comes from the bucket.
	for _, n := range nodes {
		if got, err := queryIngester(t.Context(), n.GRPCAddr, "anonymous", "e2e_s3"); err != nil || len(got) != 0 {
			t.Fatalf("%s: %d e2e_s3 samples in memory after the flush (%v)", n.ID, len(got), err)
		}
	}
	countQuery := url.Values{"query": {`sum(count_over_time(e2e_s3[2h]))`}, "time": {strconv.FormatInt(time.Now().Unix(), 10)}}
	requireCount := func(n *pc.Node) {
		t.Helper()
		code, ans, body := getAPI(t, n.HTTPAddr, "/prometheus/api/v1/query", countQuery)
		if code != http.StatusOK || ans.Status != "success" || !strings.Contains(body, `"3600"`) {
			t.Fatalf("PromQL %s via %s: %d %s, want 3600", countQuery.Get("query"), n.ID, code, body)
		}
	}
	for _, n := range nodes {
		s3RequireRead(t, n, "e2e_s3", want)
		requireCount(n)
		if got := storageMetric(t, n.HTTPAddr, `cortex_querier_fanout_requests_total{source="blocks"`); got != 0 {
			t.Fatalf("%s: asked members for blocks %v times; a shared bucket is read directly", n.ID, got)
		}
	}
	cc.Kill()
	for _, n := range nodes[:2] {
		s3RequireRead(t, n, "e2e_s3", want)
		requireCount(n)
	}
	cc.Start()
	for _, n := range nodes {
		waitActive(t, c, n.GRPCAddr, "a", "b", "c")
	}
	// c takes its replicas of the next writes only once ready (its WAL replayed, its ring current).
	pc.Eventually(t, 30*time.Second, "c ready", func() (bool, string) {
		code, body, err := pc.HTTPGet(cc.HTTPAddr, "/ready", "")
		return err == nil && code == http.StatusOK, fmt.Sprint(code, " ", body, " ", err)
	})
	t.Logf("reads through every member checked in %v", time.Since(started).Round(time.Millisecond))

	// 3. The flush fallback of a leave: c holds want2 in memory, no PENDING member exists.
	want2 := storageWriteSeries(t, a.HTTPAddr, "", "e2e_s3_leave", 20, 40)
	storageWaitMetric(t, cc.HTTPAddr, "cortex_ingester_memory_series", 20)
	before := map[string]bool{}
	for _, d := range blocks {
		before[d] = true
	}
	cc.Signal(syscall.SIGTERM)
	if code, err := cc.Wait(90 * time.Second); err != nil || code != 0 {
		t.Fatalf("c leaving: exit %d, %v", code, err)
	}
	v := waitActive(t, c, a.GRPCAddr, "a", "b")
	if _, ok := v.Member("c"); ok {
		t.Fatalf("c still in the ring after it left: %+v", v.Members)
	}
	after, writer := s3Blocks(t, srv, "anonymous")
	var cBlocks []string
	for _, d := range after {
		if !before[d] && writer[d] == "c" {
			cBlocks = append(cBlocks, d)
		}
	}
	if len(cBlocks) == 0 {
		t.Fatalf("no block of c's in the bucket after it left (blocks: %v)", writer)
	}
	storageRequireSamples(t, "the leaver's blocks dumped by promtool", want2, storagePromtoolDump(t, promtool, cBlocks))
	for _, n := range nodes[:2] {
		s3RequireRead(t, n, "e2e_s3_leave", want2)
		s3RequireRead(t, n, "e2e_s3", want)
	}
	t.Logf("done in %v", time.Since(started).Round(time.Millisecond))
}

// TestProcess_S3BadConfigNamesTheFlag: a node whose S3 settings are wrong in a way only the server
// can tell — an access key it does not know, a secret that does not match, a bucket that does not
// exist — answers its flush with 500 naming the flag to fix, keeps the data in memory, and never
// shows the secret; with the settings fixed (a restart: the WAL brings the data back) the same
// data flushes.
func TestProcess_S3BadConfigNamesTheFlag(t *testing.T) {
	skipShort(t)
	srv := s3server.Start(t, s3server.Options{})
	cases := []struct {
		name, flag string
		bad        []string
	}{
		{"unknown access key", "-blocks-storage.s3.access-key-id", []string{"-blocks-storage.s3.access-key-id=AKNOBODYKNOWSME"}},
		{"wrong secret", "-blocks-storage.s3.secret-access-key", []string{"-blocks-storage.s3.secret-access-key=wrong-secret-0123456789abcdef"}},
		{"missing bucket", "-blocks-storage.s3.bucket-name", []string{"-blocks-storage.s3.bucket-name=no-such-bucket"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := pc.New(t, append(append(slicesClone(fastFlags), srv.Flags()...), "-ingester.flush-check-period=1h",
				"-ingester.flush-op-timeout=2s")...)
			a := c.Start("a", append([]string{"-bootstrap"}, tc.bad...)...)
			waitActive(t, c, a.GRPCAddr, "a")
			want := storageWriteSeries(t, a.HTTPAddr, "", "e2e_s3_bad", 5, 20)
			code, body := storagePostFlush(t, a.AdminAddr)
			if code != http.StatusInternalServerError || !strings.Contains(body, tc.flag) {
				t.Fatalf("flush with a bad %s: %d %q, want 500 naming the flag", tc.flag, code, body)
			}
			if strings.Contains(body, srv.SecretKey) || strings.Contains(logAfterStart(a), srv.SecretKey) {
				t.Fatalf("the answer or the log shows the secret")
			}
			got, err := queryIngester(t.Context(), a.GRPCAddr, "anonymous", "e2e_s3_bad")
			if err != nil {
				t.Fatal(err)
			}
			storageRequireSamples(t, "memory after the failed flush", want, got)
			t.Logf("%s: %s", tc.name, strings.TrimSpace(body))

			// Fixed: the last value of a flag wins, so the server's own settings go after the bad one.
			a.Kill()
			a.Start(srv.Flags()...)
			waitActive(t, c, a.GRPCAddr, "a")
			pc.Eventually(t, 30*time.Second, "the fixed node flushes", func() (bool, string) {
				code, body := storagePostFlush(t, a.AdminAddr)
				return code == http.StatusOK, fmt.Sprint(code, " ", body)
			})
			blocks, _ := s3Blocks(t, srv, "anonymous")
			if len(blocks) == 0 {
				t.Fatal("no block in the bucket after the fixed flush")
			}
			got = bucketSamples(t, srv.BucketDir(""), "e2e_s3_bad")
			for k, v := range want {
				if g, ok := got[k]; !ok || g != v {
					t.Fatalf("sample %v: %v (present %v) in the bucket, want %v", k, g, ok, v)
				}
			}
		})
	}
}
