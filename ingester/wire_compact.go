package ingester

// This file wires the in-cluster compactor (package compact) into the Server: its flags, the loop
// that compacts while this member holds the ring's compactor lease, the sweeper that deletes the
// blocks marked for deletion in this member's node-local bucket once -compactor.deletion-delay has
// passed, the adapters from compact's interfaces to the Blocks service (node-local buckets) or to
// the shared bucket, and the lease check of DeleteBlocks. It is owned by the compactor work; the
// Server starts it in Run (runCompactor) and stops it when Run returns. See docs/storage.md,
// "Compaction and retention".

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/oklog/ulid/v2"
	"github.com/thanos-io/objstore"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/raftingest/raftingest/auth"
	"github.com/raftingest/raftingest/blockspb"
	"github.com/raftingest/raftingest/blocksvc"
	"github.com/raftingest/raftingest/compact"
	"github.com/raftingest/raftingest/ringstate"
	"github.com/raftingest/raftingest/storage"
	"github.com/raftingest/raftingest/tenant"
)

// compactConfig holds the compactor's flags (-compactor.*, -blocks-storage.retention-period).
type compactConfig struct {
	compact.Config
}

// RegisterFlags registers the compactor's flags on f.
func (c *compactConfig) RegisterFlags(f *flag.FlagSet) { c.Config.RegisterFlags(f) }

// Validate checks the compactor's flags on their own. Config.Validate checks them with their
// relation to -ingester.flush-period (compact.Config.Validate), at start.
func (c *compactConfig) Validate() error { return c.Config.Validate(0) }

// runCompactor starts, when storage is configured, the sweeper of a node-local bucket (whatever
// -compactor.enabled says: the lease holder marks blocks in every member's bucket, and each member
// deletes its own) and, when -compactor.enabled, the compactor loop. It returns the function that
// stops both and waits for them. Run calls it once and defers the stop. (New sets DeleteBlocks'
// lease check, authorizeDelete, before the gRPC server serves.)
func (s *Server) runCompactor(ctx context.Context) (stop func()) {
	cfg := s.cfg.Compactor.Config
	log := s.log.With("component", "compactor")
	if s.storage.bucket == nil {
		return func() {}
	}
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	stop = func() {
		cancel()
		wg.Wait()
	}
	if cfg.DeletionDelay < s.cfg.Querier.Timeout {
		// Not refused: a short delay is what tests and experiments want, and only queries running
		// longer than it can miss samples. But say what it risks.
		log.Warn("-compactor.deletion-delay is below -querier.timeout: a query running longer than the delay may miss the samples of a block compacted meanwhile",
			"compactor.deletion-delay", cfg.DeletionDelay, "querier.timeout", s.cfg.Querier.Timeout)
	}
	if s.blocksMove() && s.blocks.server != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.blocks.server.RunSweeper(ctx)
		}()
	}
	if !cfg.Enabled {
		return stop
	}
	if err := cfg.Validate(s.cfg.Storage.Flush.FlushPeriod); err != nil {
		log.Error("the compactor does not run: its flags are invalid", "err", err)
		return stop
	}
	c, err := compact.New(cfg, compact.Deps{
		Lease:       compactLease{s},
		Cluster:     s.compactCluster,
		WorkDir:     filepath.Join(s.cfg.DataDir, "compactor"),
		FlushPeriod: s.cfg.Storage.Flush.FlushPeriod,
		Registerer:  s.reg,
		Logger:      log,
		Now:         s.cfg.Clock,
		RingTimeMs:  func() int64 { return s.node.Ring().TimeMs() },
		// The work directory is on the data disk, beside the WAL: a job leaves the same headroom a
		// block store from another member must.
		MinFreeDiskPercent: s.cfg.Transfer.Blocks.MinFreeDiskPercent,
	})
	if err != nil {
		log.Error("the compactor does not run", "err", err)
		return stop
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		c.Run(ctx)
	}()
	return stop
}

// compactLease is the compactor lease through this member's Raft node.
type compactLease struct{ s *Server }

func (l compactLease) IsLeader() bool { return l.s.node.IsLeader() }

func (l compactLease) Claim(ctx context.Context, d time.Duration) (uint64, error) {
	lease, err := l.s.node.ClaimCompactorLease(ctx, d)
	return lease.Epoch, err
}

// compactCluster is where blocks live, read once per compaction run: the shared bucket, or every
// ring member's node-local bucket through the Blocks service (this member's own too, over
// loopback: one path for all) with the placement the distributor uses.
func (s *Server) compactCluster(ctx context.Context) (compact.Cluster, error) {
	if !s.blocksMove() {
		return compact.Cluster{Shared: &sharedBucket{bkt: s.storage.bucket, authorize: func(ctx context.Context, epoch uint64) error {
			return s.checkLease(ctx, ringstate.MemberID(s.cfg.NodeID), epoch)
		}, now: s.cfg.Clock, metrics: s.blocks.metrics, log: s.log.With("component", "compactor")}}, nil
	}
	r := s.node.Ring()
	timeoutMs := s.cfg.Lifecycle.HeartbeatTimeout.Milliseconds()
	cl := compact.Cluster{Members: map[string]compact.Bucket{},
		Place:          compact.RingPlacement(r, s.cfg.Distributor.Placement(), timeoutMs),
		StillPlaceable: s.stillPlaceable}
	for _, m := range r.Members() {
		// A PENDING member holds no blocks (a receiving joiner is JOINING). An unhealthy one is left
		// out of this run rather than waited for: its blocks stay, and a later run merges them.
		if m.GRPCAddr == "" || m.State == ringstate.PENDING || !m.Healthy(r.TimeMs(), timeoutMs) {
			continue
		}
		c, err := s.BlocksClient(m.GRPCAddr)
		if err != nil {
			return compact.Cluster{}, err
		}
		cl.Members[string(m.ID)] = memberBucket{c: c, maxBytes: s.cfg.Transfer.Blocks.MaxBlockUploadBytes}
	}
	return cl, nil
}

// stillPlaceable is the compactor's check before it marks a merge's sources: the ring as this
// member has it now (the compactor runs on the Raft leader, whose ring is the newest applied)
// must show every member that took a part ACTIVE and healthy. A member that started leaving since
// the run began may have listed its blocks before its part landed; its own StoreBlock refuses
// blocks once it is LEAVING, and this check covers a part stored just before.
func (s *Server) stillPlaceable(_ context.Context, members []string) error {
	r := s.node.Ring()
	timeoutMs := s.cfg.Lifecycle.HeartbeatTimeout.Milliseconds()
	var errs []error
	for _, id := range members {
		m, ok := r.Member(ringstate.MemberID(id))
		switch {
		case !ok:
			errs = append(errs, fmt.Errorf("member %s is no longer in the ring", id))
		case m.State != ringstate.ACTIVE:
			errs = append(errs, fmt.Errorf("member %s is %s", id, m.State))
		case !m.Healthy(r.TimeMs(), timeoutMs):
			errs = append(errs, fmt.Errorf("member %s is unhealthy (last heartbeat %dms before ring time)", id, r.TimeMs()-m.HeartbeatMs))
		}
	}
	return errors.Join(errs...)
}

// memberBucket is one member's node-local bucket through its Blocks service.
type memberBucket struct {
	c blockspb.BlocksClient
	// maxBytes is -blocks-storage.max-block-upload-bytes: the largest block Fetch accepts.
	maxBytes int64
}

func (b memberBucket) List(ctx context.Context) ([]compact.Listed, error) {
	infos, err := blocksvc.List(ctx, b.c, "")
	if err != nil {
		return nil, err
	}
	out := make([]compact.Listed, len(infos))
	for i, in := range infos {
		out[i] = compact.Listed{Tenant: in.Tenant, Meta: in.Meta}
	}
	return out, nil
}

func (b memberBucket) Fetch(ctx context.Context, tenantID string, id ulid.ULID, parentDir string) (string, error) {
	return blocksvc.Fetch(ctx, b.c, tenantID, id, parentDir, b.maxBytes)
}

func (b memberBucket) Store(ctx context.Context, tenantID, dir string) error {
	_, err := blocksvc.Store(ctx, b.c, tenantID, dir)
	return err
}

// MarkForDeletion is DeleteBlocks: the member marks the blocks durably before it answers and
// sweeps them after the deletion delay.
func (b memberBucket) MarkForDeletion(ctx context.Context, tenantID string, ids []ulid.ULID, epoch uint64) error {
	_, err := blocksvc.MarkForDeletion(ctx, b.c, tenantID, ids, epoch)
	return err
}

// authorizeDelete is DeleteBlocks' lease check (blocksvc's Deps.AuthorizeDelete): the caller must
// be the ring's compactor lease holder, and epoch the lease's current epoch. The epoch is the
// fence: a holder that lost the lease (paused, partitioned) carries an older epoch and is refused,
// whatever its certificate says. Without TLS callers have no identity and the epoch alone is
// checked.
func (s *Server) authorizeDelete(ctx context.Context, tenantID string, epoch uint64) error {
	holder := ringstate.MemberID("")
	if s.auth != nil {
		p := s.auth.Caller(ctx)
		if p.Kind != auth.Node {
			return s.auth.Deny(p, auth.RightMember, fmt.Sprintf("delete blocks of tenant %q (only the compactor lease holder deletes)", tenantID))
		}
		holder = ringstate.MemberID(p.Name)
	}
	if err := s.checkLease(ctx, holder, epoch); err != nil {
		return status.Error(codes.FailedPrecondition, err.Error())
	}
	return nil
}

// checkLease checks that epoch is the ring's current compactor lease epoch, that the lease has not
// expired at ring time, and, when holder is not empty, that holder holds it. The local ring may
// lag the leader's by the entries not yet applied here, so unless it settles the question it asks
// for a linearizable ring once: when the caller's epoch is newer than the local one (just
// claimed), and when the local lease looks expired (renewed since, or really expired: the leader's
// ring time is the judge, not this member's). A caller's epoch older than the local ring's is
// refused at once: epochs only grow, so its lease has passed to another member for good.
func (s *Server) checkLease(ctx context.Context, holder ringstate.MemberID, epoch uint64) error {
	who := "the caller"
	if holder != "" {
		who = string(holder)
	}
	check := func(r *ringstate.Ring) error {
		l := r.CompactorLease()
		if l.Holder == "" || l.Epoch != epoch || (holder != "" && l.Holder != holder) {
			return fmt.Errorf("compactor lease: %s asked to delete with epoch %d, but the ring's lease is held by %q at epoch %d",
				who, epoch, l.Holder, l.Epoch)
		}
		if r.TimeMs() >= l.ExpiresMs {
			return fmt.Errorf("compactor lease: %s asked to delete with epoch %d, but the lease held by %q at epoch %d expired at ring time %s (ring time now %s)",
				who, epoch, l.Holder, l.Epoch, time.UnixMilli(l.ExpiresMs).UTC().Format(time.RFC3339Nano),
				time.UnixMilli(r.TimeMs()).UTC().Format(time.RFC3339Nano))
		}
		return nil
	}
	local := s.node.Ring()
	err := check(local)
	if err == nil || local.CompactorLease().Epoch > epoch {
		return err
	}
	r, _, lerr := s.node.LinearizableRing(ctx)
	if lerr != nil {
		return fmt.Errorf("%w (a linearizable read of the ring, to see whether the local ring lags, failed: %v)", err, lerr)
	}
	return check(r)
}

// sharedBucket is the shared bucket (S3, or a directory declared shared) as compact's
// SharedBucket: the compactor reads and writes it directly, uploads a merged block once, marks
// what it replaced, and sweeps the marked blocks once their delay has passed.
type sharedBucket struct {
	bkt objstore.Bucket
	// authorize checks, before marking, that this member still holds the lease at epoch.
	authorize func(ctx context.Context, epoch uint64) error
	now       func() time.Time  // nil: time.Now
	metrics   *blocksvc.Metrics // counts the sweep's deletions (nil: uncounted)
	log       *slog.Logger      // nil: discarded
}

// maxSharedMetaBytes bounds a meta.json read from the shared bucket.
const maxSharedMetaBytes = 1 << 20

func (b *sharedBucket) readMeta(ctx context.Context, tenantID string, id ulid.ULID) (storage.Meta, bool, error) {
	key, err := storage.BlockKey(tenantID, id, storage.MetaFilename)
	if err != nil {
		return storage.Meta{}, false, err
	}
	rc, err := b.bkt.Get(ctx, key)
	if b.bkt.IsObjNotFoundErr(err) {
		return storage.Meta{}, false, nil
	}
	if err != nil {
		return storage.Meta{}, false, err
	}
	defer rc.Close()
	data, err := io.ReadAll(io.LimitReader(rc, maxSharedMetaBytes+1))
	if err != nil {
		return storage.Meta{}, false, err
	}
	if len(data) > maxSharedMetaBytes {
		return storage.Meta{}, false, fmt.Errorf("%s: meta.json over %d bytes", key, maxSharedMetaBytes)
	}
	m, err := storage.ReadMeta(data)
	return m, err == nil, err
}

func (b *sharedBucket) List(ctx context.Context) ([]compact.Listed, error) {
	var tenants []string
	if err := b.bkt.Iter(ctx, "", func(name string) error {
		if t := strings.TrimSuffix(name, "/"); t != name && tenant.Validate(t) == nil {
			tenants = append(tenants, t)
		}
		return nil
	}); err != nil {
		return nil, fmt.Errorf("listing tenants of bucket %s: %w", b.bkt.Name(), err)
	}
	var out []compact.Listed
	for _, t := range tenants {
		var ids []ulid.ULID
		if err := b.bkt.Iter(ctx, t+"/", func(name string) error {
			if id, err := ulid.ParseStrict(strings.TrimSuffix(strings.TrimPrefix(name, t+"/"), "/")); err == nil {
				ids = append(ids, id)
			}
			return nil
		}); err != nil {
			return nil, fmt.Errorf("listing blocks of tenant %q: %w", t, err)
		}
		for _, id := range ids {
			m, ok, err := b.readMeta(ctx, t, id)
			if err != nil {
				return nil, fmt.Errorf("block %s of tenant %q: %w", id, t, err)
			}
			if !ok {
				continue // partial
			}
			// A marked block was replaced (or expired): it is served until swept, never merged again.
			marked, err := storage.IsMarkedForDeletion(ctx, b.bkt, t, id)
			if err != nil {
				return nil, fmt.Errorf("block %s of tenant %q: %w", id, t, err)
			}
			if !marked {
				out = append(out, compact.Listed{Tenant: t, Meta: m})
			}
		}
	}
	return out, nil
}

func (b *sharedBucket) Fetch(ctx context.Context, tenantID string, id ulid.ULID, parentDir string) (string, error) {
	prefix, err := storage.BlockKey(tenantID, id, storage.MetaFilename)
	if err != nil {
		return "", err
	}
	prefix = path.Dir(prefix) + "/"
	dst := filepath.Join(parentDir, id.String())
	tmp := dst + ".tmp"
	if err := os.RemoveAll(tmp); err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp)
	err = b.bkt.Iter(ctx, prefix, func(name string) error {
		rel := strings.TrimPrefix(name, prefix)
		if _, err := storage.BlockKey(tenantID, id, rel); err != nil {
			return err // a key that would leave the block directory
		}
		if rel == storage.DeletionMarkFilename {
			return nil // the bucket's state, not the block's content
		}
		return storage.DownloadObject(ctx, b.bkt, name, filepath.Join(tmp, filepath.FromSlash(rel)))
	}, objstore.WithRecursiveIter())
	if err != nil {
		return "", fmt.Errorf("downloading block %s of tenant %q: %w", id, tenantID, err)
	}
	if _, err := os.Stat(filepath.Join(tmp, storage.MetaFilename)); err != nil {
		return "", fmt.Errorf("downloading block %s of tenant %q: %w", id, tenantID, err)
	}
	if err := os.RemoveAll(dst); err != nil {
		return "", err
	}
	return dst, os.Rename(tmp, dst)
}

func (b *sharedBucket) Store(ctx context.Context, tenantID, dir string) error {
	data, err := os.ReadFile(filepath.Join(dir, storage.MetaFilename))
	if err != nil {
		return err
	}
	m, err := storage.ReadMeta(data)
	if err != nil {
		return err
	}
	return storage.UploadBlock(ctx, b.bkt, tenantID, dir, m)
}

func (b *sharedBucket) clock() time.Time {
	if b.now != nil {
		return b.now()
	}
	return time.Now()
}

// MarkForDeletion marks blocks ids of tenantID in the shared bucket (each mark durable when it
// returns), after checking that this member still holds the lease at epoch.
func (b *sharedBucket) MarkForDeletion(ctx context.Context, tenantID string, ids []ulid.ULID, epoch uint64) error {
	if err := b.authorize(ctx, epoch); err != nil {
		return err
	}
	var errs []error
	now := b.clock()
	for _, id := range ids {
		if _, err := storage.MarkForDeletion(ctx, b.bkt, tenantID, id, now, fmt.Sprintf("compactor lease epoch %d", epoch)); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Sweep deletes the blocks of the shared bucket marked at least delay before now; the lease holder
// calls it at the start of each run.
func (b *sharedBucket) Sweep(ctx context.Context, delay time.Duration, now time.Time) (int, error) {
	log := b.log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	swept, err := storage.SweepDeletionMarked(ctx, b.bkt, delay, now, log)
	for _, sb := range swept {
		log.Info("compactor: deleted a block marked for deletion from the shared bucket", "tenant", sb.Tenant, "block", sb.ID,
			"marked_at", sb.MarkedAt.UTC(), "deletion_delay", delay)
	}
	if b.metrics != nil {
		b.metrics.AddCleaned(len(swept))
	}
	return len(swept), err
}
