package blocksvc

import (
	"context"
	"io/fs"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"github.com/prometheus/prometheus/tsdb/chunks"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/raftingest/raftingest/blockspb"
	"github.com/raftingest/raftingest/storage"
)

// testBlock writes a real block (storage.WriteBlock, as the flusher does) of tenantID with
// nSeries series of nSamples random samples each into parentDir, and returns its directory and meta.
func testBlock(t testing.TB, parentDir, tenantID string, nSeries, nSamples int, seed uint64) (string, storage.Meta) {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, seed))
	var ss []storage.Series
	for i := range nSeries {
		c := chunkenc.NewXORChunk()
		app, err := c.Appender()
		if err != nil {
			t.Fatal(err)
		}
		for j := range nSamples {
			app.Append(int64(j)*15_000, rng.Float64())
		}
		ss = append(ss, storage.Series{
			Labels: labels.FromStrings("__name__", "m", "i", strings.Repeat("x", i%3)+string(rune('a'+i%26))+itoa(i)),
			Chunks: []chunks.Meta{{Chunk: c, MinTime: 0, MaxTime: int64(nSamples-1) * 15_000}},
		})
	}
	meta, err := storage.WriteBlock(context.Background(), parentDir, ss, storage.BlockOptions{
		MinTime: 0, MaxTime: 2 * 3600 * 1000,
		Labels: map[string]string{storage.TenantLabel: tenantID, storage.IngesterLabel: "test"},
	})
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Join(parentDir, meta.ULID.String()), meta
}

func itoa(i int) string {
	const digits = "0123456789"
	if i < 10 {
		return digits[i : i+1]
	}
	return itoa(i/10) + digits[i%10:i%10+1]
}

// testClock is an injectable clock: marks and sweeps read it, tests move it.
type testClock struct{ ns atomic.Int64 }

func newTestClock(t time.Time) *testClock {
	c := &testClock{}
	c.ns.Store(t.UnixNano())
	return c
}

func (c *testClock) Now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *testClock) Advance(d time.Duration) { c.ns.Add(int64(d)) }
func (c *testClock) Set(t time.Time)         { c.ns.Store(t.UnixNano()) }

// testDeletionDelay is the nodes' deletion delay (the clock moves past it; nothing sleeps).
const testDeletionDelay = time.Hour

// node is one Blocks server over a real filesystem bucket, served over real gRPC on loopback.
type node struct {
	srv       *Server
	clock     *testClock
	bucketDir string
	staging   string
	addr      string
	client    blockspb.BlocksClient
	reg       *prometheus.Registry
	stop      func()
}

// startNode serves a Blocks server with cfg (zero fields: defaults); mod may change its deps.
func startNode(t testing.TB, cfg Config, mod func(*Deps)) *node {
	t.Helper()
	def := DefaultConfig()
	if cfg.MaxBlockUploadBytes == 0 {
		cfg.MaxBlockUploadBytes = def.MaxBlockUploadBytes
	}
	if cfg.IdleTimeout == 0 {
		cfg.IdleTimeout = 5 * time.Second
	}
	if cfg.MaxConcurrentStores == 0 {
		cfg.MaxConcurrentStores = def.MaxConcurrentStores
	}
	if cfg.MinStoreRate == 0 {
		cfg.MinStoreRate = def.MinStoreRate
	}
	dir := t.TempDir()
	n := &node{bucketDir: filepath.Join(dir, "blocks"), staging: filepath.Join(dir, "staging"), reg: prometheus.NewRegistry(),
		clock: newTestClock(time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC))}
	bkt, err := storage.NewFilesystemBucket(n.bucketDir)
	if err != nil {
		t.Fatal(err)
	}
	m, err := NewMetrics(n.reg)
	if err != nil {
		t.Fatal(err)
	}
	d := Deps{Bucket: bkt, BucketDir: n.bucketDir, StagingDir: n.staging, Metrics: m, Logger: slog.New(slog.DiscardHandler),
		DeletionDelay: testDeletionDelay, Now: n.clock.Now}
	if mod != nil {
		mod(&d)
	}
	if n.srv, err = NewServer(cfg, d); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	blockspb.RegisterBlocksServer(gs, n.srv)
	go gs.Serve(ln)
	n.addr = ln.Addr().String()
	conn, err := grpc.NewClient(n.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	n.client = blockspb.NewBlocksClient(conn)
	var stopped bool
	n.stop = func() {
		if !stopped {
			stopped = true
			conn.Close()
			gs.Stop()
		}
	}
	t.Cleanup(n.stop)
	return n
}

// files returns every regular file under dir (relative, "/"-separated) and its bytes.
func files(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if os.IsNotExist(err) && p == dir {
				return filepath.SkipDir
			}
			return err
		}
		if d.IsDir() {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		out[filepath.ToSlash(rel)] = b
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// requireEmpty fails unless dir holds no file (directories may remain).
func requireEmpty(t *testing.T, what, dir string) {
	t.Helper()
	if fs := files(t, dir); len(fs) > 0 {
		names := make([]string, 0, len(fs))
		for n := range fs {
			names = append(names, n)
		}
		t.Fatalf("%s %s holds %v, want nothing", what, dir, names)
	}
}

// sameFiles fails unless the two directories hold the same files with the same bytes.
func sameFiles(t *testing.T, want, got string) {
	t.Helper()
	w, g := files(t, want), files(t, got)
	if len(w) != len(g) {
		t.Fatalf("%s holds %d files, %s %d", got, len(g), want, len(w))
	}
	for name, b := range w {
		if string(g[name]) != string(b) {
			t.Fatalf("%s/%s: %d bytes differ from %s's %d", got, name, len(g[name]), want, len(b))
		}
	}
}

func metric(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			sum += m.GetCounter().GetValue()
		}
	}
	return sum
}
