package ingester

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"github.com/prometheus/prometheus/tsdb/chunks"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

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
// with its Thanos meta, and deletes the replicas only while this member holds the lease.
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
	shared := &sharedBucket{bkt: bkt, authorize: func(context.Context, uint64) error { return leaseErr }}
	run := func() error {
		cfg := compact.Config{Enabled: true, Interval: time.Hour, BlockRanges: compact.DefaultBlockRanges(),
			LeaseDuration: time.Minute}
		c, err := compact.New(cfg, compact.Deps{Lease: noLease{},
			Cluster: func(context.Context) (compact.Cluster, error) { return compact.Cluster{Shared: shared}, nil },
			WorkDir: filepath.Join(t.TempDir(), "work"), FlushPeriod: 2 * time.Hour, Registerer: prometheus.NewRegistry(),
			Logger: slog.New(slog.DiscardHandler), Now: func() time.Time { return time.UnixMilli(t0 + 3*hour) }})
		if err != nil {
			t.Fatal(err)
		}
		return c.RunOnce(context.Background(), 1)
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
	// Nothing partial is left: every object belongs to the one block.
	ents, _ := os.ReadDir(filepath.Join(dir, "t1"))
	if len(ents) != 1 {
		t.Fatalf("%d entries in the tenant's directory", len(ents))
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
