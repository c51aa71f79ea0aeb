package ingester

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"github.com/prometheus/prometheus/tsdb/chunks"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/raftingest/raftingest/blocksvc"
	"github.com/raftingest/raftingest/compact"
	"github.com/raftingest/raftingest/storage"
)

type noLease struct{}

func (noLease) IsLeader() bool { return true }
func (noLease) Claim(context.Context, time.Duration) (uint64, error) {
	return 0, errors.New("not used by RunOnce")
}

// TestSharedBucket_CompactorUploadsOnce: with a shared bucket (here a filesystem bucket declared
// shared) the compactor reads the replicas' blocks from it directly, uploads the merged block once
// with its Thanos meta, and marks the replicas for deletion only while this member holds the
// lease. The marked replicas stay (and are merged by no later run) until a run after
// -compactor.deletion-delay sweeps them.
func TestSharedBucket_CompactorUploadsOnce(t *testing.T) {
	dir := t.TempDir()
	bkt, err := storage.NewFilesystemBucket(dir)
	if err != nil {
		t.Fatal(err)
	}
	const hour = int64(3_600_000)
	t0 := int64(1_700_006_400_000)
	// Three replicas' flushes of the same 40 series in one 2h range.
	for r := range 3 {
		var ss []storage.Series
		for i := range 40 {
			c := chunkenc.NewXORChunk()
			app, _ := c.Appender()
			for k := range int64(100) {
				app.Append(t0+k*15_000, float64(i)+float64(k))
			}
			ss = append(ss, storage.Series{Labels: labels.FromStrings("__name__", "m", "i", fmt.Sprint(i)),
				Chunks: []chunks.Meta{{Chunk: c, MinTime: t0, MaxTime: t0 + 99*15_000}}})
		}
		local := t.TempDir()
		m, err := storage.WriteBlock(context.Background(), local, ss, storage.BlockOptions{MinTime: t0, MaxTime: t0 + 2*hour,
			Labels: map[string]string{storage.TenantLabel: "t1", storage.IngesterLabel: fmt.Sprint("r", r)}})
		if err != nil {
			t.Fatal(err)
		}
		if err := storage.UploadBlock(context.Background(), bkt, "t1", filepath.Join(local, m.ULID.String()), m); err != nil {
			t.Fatal(err)
		}
	}
	var leaseErr error
	now := time.UnixMilli(t0 + 3*hour)
	clock := func() time.Time { return now }
	const delay = 15 * time.Minute
	reg := prometheus.NewRegistry()
	bm, err := blocksvc.NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	shared := &sharedBucket{bkt: bkt, authorize: func(context.Context, uint64) error { return leaseErr }, now: clock, metrics: bm}
	run := func() error {
		cfg := compact.Config{Enabled: true, Interval: time.Hour, BlockRanges: compact.DefaultBlockRanges(),
			LeaseDuration: time.Minute, DeletionDelay: delay}
		c, err := compact.New(cfg, compact.Deps{Lease: noLease{},
			Cluster: func(context.Context) (compact.Cluster, error) { return compact.Cluster{Shared: shared}, nil },
			WorkDir: filepath.Join(t.TempDir(), "work"), FlushPeriod: 2 * time.Hour, Registerer: prometheus.NewRegistry(),
			Logger: slog.New(slog.DiscardHandler), Now: clock})
		if err != nil {
			t.Fatal(err)
		}
		return c.RunOnce(context.Background(), 1)
	}
	entries := func() int {
		t.Helper()
		ents, err := os.ReadDir(filepath.Join(dir, "t1"))
		if err != nil {
			t.Fatal(err)
		}
		return len(ents)
	}
	// Without the lease the merged block is uploaded but no replica is deleted.
	leaseErr = errors.New("this member lost the compactor lease")
	if err := run(); err == nil {
		t.Fatal("a run without the lease deleted")
	}
	if ls, _ := shared.List(context.Background()); len(ls) != 4 {
		t.Fatalf("%d blocks after the fenced run, want the 3 replicas and the merged block", len(ls))
	}
	leaseErr = nil
	if err := run(); err != nil {
		t.Fatal(err)
	}
	ls, err := shared.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(ls) != 1 {
		t.Fatalf("%d blocks after compaction, want 1", len(ls))
	}
	m := ls[0].Meta
	if m.Stats.NumSeries != 40 || m.Stats.NumSamples != 4000 || m.Thanos.Source != storage.SourceCompactor ||
		m.Thanos.Labels[storage.TenantLabel] != "t1" || len(m.Compaction.Sources) != 3 ||
		m.Compaction.Level != 3 { // the fenced run's merged block (level 2) was merged again with the replicas
		t.Fatalf("merged block meta %+v", m)
	}
	// The four sources are marked, not gone: a query that listed them before the merged block
	// was uploaded still reads them.
	if n := entries(); n != 5 {
		t.Fatalf("%d entries in the tenant's directory, want the merged block and the 4 marked sources", n)
	}
	marks := 0 // the 3 replicas, and the fenced run's merged block, merged again
	ents, _ := os.ReadDir(filepath.Join(dir, "t1"))
	for _, e := range ents {
		if _, err := os.Stat(filepath.Join(dir, "t1", e.Name(), storage.DeletionMarkFilename)); err == nil {
			marks++
		}
	}
	if marks != 4 {
		t.Fatalf("%d blocks marked for deletion, want 4", marks)
	}
	// A run before the delay has passed sweeps nothing and merges nothing again; one after it
	// deletes the sources. Nothing partial is left: every object belongs to the one block.
	now = now.Add(delay - time.Second)
	if err := run(); err != nil {
		t.Fatal(err)
	}
	if n := entries(); n != 5 {
		t.Fatalf("%d entries after a run within the delay, want 5", n)
	}
	now = now.Add(time.Second)
	if err := run(); err != nil {
		t.Fatal(err)
	}
	if n := entries(); n != 1 {
		t.Fatalf("%d entries in the tenant's directory after the delay, want the merged block alone", n)
	}
	if ls, err := shared.List(context.Background()); err != nil || len(ls) != 1 || ls[0].Meta.ULID != m.ULID {
		t.Fatalf("after the sweep: %+v, %v; want the merged block", ls, err)
	}
	if n, err := testutil.GatherAndCount(reg, "cortex_compactor_blocks_cleaned_total"); err != nil || n != 1 {
		t.Fatalf("cortex_compactor_blocks_cleaned_total: %d series, %v", n, err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "cortex_compactor_blocks_cleaned_total" {
			if v := mf.GetMetric()[0].GetCounter().GetValue(); v != 4 {
				t.Fatalf("cortex_compactor_blocks_cleaned_total %v, want the 4 swept sources", v)
			}
		}
	}
}

// TestAuthorizeDelete_FencedByTheLeaseEpoch: DeleteBlocks' lease check on a real node refuses
// every delete while nobody holds the lease, accepts the current epoch once the member claimed it,
// and refuses any other epoch (FailedPrecondition, naming the holder and epoch).
func TestAuthorizeDelete_FencedByTheLeaseEpoch(t *testing.T) {
	s, _ := startSingleNode(t, nil, "-compactor.enabled=false")
	ctx := context.Background()
	if err := s.authorizeDelete(ctx, "t1", 1); err == nil {
		t.Fatal("a delete was authorized before any lease was granted")
	}
	l, err := s.node.ClaimCompactorLease(ctx, 10*time.Second)
	if err != nil || l.Epoch != 1 || l.Holder != "n0" {
		t.Fatalf("claim: %+v %v", l, err)
	}
	if err := s.authorizeDelete(ctx, "t1", 1); err != nil {
		t.Fatalf("the holder's current epoch refused: %v", err)
	}
	for _, stale := range []uint64{0, 2} {
		err := s.authorizeDelete(ctx, "t1", stale)
		if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), `held by "n0" at epoch 1`) {
			t.Fatalf("epoch %d: %v, want FailedPrecondition naming the lease", stale, err)
		}
	}
}

// TestSweeper_RunsOnEveryMemberWithANodeLocalBucket: the sweeper of a node-local bucket runs even
// with -compactor.enabled=false (the lease holder marks blocks in every member's bucket, and each
// member deletes its own): a block marked longer than -compactor.deletion-delay ago is deleted
// within a sweep period, a block marked just now stays.
func TestSweeper_RunsOnEveryMemberWithANodeLocalBucket(t *testing.T) {
	s, _ := startSingleNode(t, nil, "-compactor.enabled=false", "-compactor.deletion-delay=10s")
	bucketDir := s.cfg.Storage.Bucket.LocalDir() // set by wireStorage: <data.dir>/blocks
	if !strings.HasPrefix(bucketDir, s.cfg.DataDir) || s.cfg.DataDir == "" {
		t.Fatalf("bucket directory %q is not under the data directory %q", bucketDir, s.cfg.DataDir)
	}
	bkt, err := storage.NewFilesystemBucket(bucketDir)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	block := func() storage.Meta {
		t.Helper()
		c := chunkenc.NewXORChunk()
		app, _ := c.Appender()
		app.Append(1000, 1)
		local := t.TempDir()
		m, err := storage.WriteBlock(ctx, local, []storage.Series{{Labels: labels.FromStrings("__name__", "m"),
			Chunks: []chunks.Meta{{Chunk: c, MinTime: 1000, MaxTime: 1000}}}}, storage.BlockOptions{MinTime: 0, MaxTime: 7200_000})
		if err != nil {
			t.Fatal(err)
		}
		if err := storage.UploadBlock(ctx, bkt, "t1", filepath.Join(local, m.ULID.String()), m); err != nil {
			t.Fatal(err)
		}
		return m
	}
	due, fresh := block(), block()
	if _, err := storage.MarkForDeletion(ctx, bkt, "t1", due.ULID, time.Now().Add(-time.Minute), "test"); err != nil {
		t.Fatal(err)
	}
	if _, err := storage.MarkForDeletion(ctx, bkt, "t1", fresh.ULID, time.Now(), "test"); err != nil {
		t.Fatal(err)
	}
	dueDir := filepath.Join(bucketDir, "t1", due.ULID.String())
	deadline := time.Now().Add(5 * time.Second) // the sweep period of a 10s delay is 1s
	for {
		if _, err := os.Stat(dueDir); errors.Is(err, os.ErrNotExist) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the block marked a minute ago is still in the bucket 5s later (delay 10s)")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if _, err := os.Stat(filepath.Join(bucketDir, "t1", fresh.ULID.String(), storage.MetaFilename)); err != nil {
		t.Fatalf("the block marked just now was swept: %v", err)
	}
}

// TestAuthorizeDelete_ExpiredLeaseRefused: a delete with the current epoch is refused once the
// lease has expired in ring time (the holder stopped renewing: it may be paused, and another
// member may claim the lease any moment); it used to be accepted as long as the epoch matched.
func TestAuthorizeDelete_ExpiredLeaseRefused(t *testing.T) {
	s, _ := startSingleNode(t, nil, "-compactor.enabled=false")
	ctx := context.Background()
	l, err := s.node.ClaimCompactorLease(ctx, 500*time.Millisecond)
	if err != nil || l.Epoch != 1 {
		t.Fatalf("claim: %+v %v", l, err)
	}
	if err := s.authorizeDelete(ctx, "t1", 1); err != nil {
		t.Fatalf("the holder's current epoch refused while the lease runs: %v", err)
	}
	// Ring time moves with the member's heartbeats.
	deadline := time.Now().Add(10 * time.Second)
	for s.node.Ring().TimeMs() < l.ExpiresMs {
		if time.Now().After(deadline) {
			t.Fatalf("ring time %d never passed the lease's expiry %d", s.node.Ring().TimeMs(), l.ExpiresMs)
		}
		time.Sleep(50 * time.Millisecond)
	}
	err = s.authorizeDelete(ctx, "t1", 1)
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "expired at ring time") {
		t.Fatalf("a delete with an expired lease: %v, want FailedPrecondition saying it expired", err)
	}
}

// TestConfig_CompactorRangesMatchTheFlushPeriod: the compactor's first range must be the flushed
// blocks' range; a mismatch is refused by Config.Validate, at start, naming both flags (it used to
// be found only when the compactor ran, which then logged an error and never compacted). With the
// compactor off the relation does not matter.
func TestConfig_CompactorRangesMatchTheFlushPeriod(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want string // "" for valid; else a part of the error
	}{
		{"defaults", nil, ""},
		{"ranges follow a longer flush period", []string{"-ingester.flush-period=1h", "-compactor.block-ranges=1h,12h,24h"}, ""},
		{"first range is not the flush period", []string{"-ingester.flush-period=1h"}, "-compactor.block-ranges starts at 2h0m0s, but -ingester.flush-period is 1h0m0s"},
		{"compactor off", []string{"-ingester.flush-period=1h", "-compactor.enabled=false"}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var cfg Config
			fs := flag.NewFlagSet("ingester", flag.ContinueOnError)
			cfg.RegisterFlags(fs)
			if err := fs.Parse(append([]string{"-node.id=a", "-data.dir=" + t.TempDir(), "-bootstrap"}, tc.args...)); err != nil {
				t.Fatal(err)
			}
			err := cfg.Validate()
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("Validate: %v, want nil", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("Validate: %v, want an error containing %q", err, tc.want)
			}
		})
	}
}
