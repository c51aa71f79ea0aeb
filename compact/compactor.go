package compact

import (
	"cmp"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/oklog/ulid/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/tsdb"
	"github.com/prometheus/prometheus/tsdb/chunkenc"

	"github.com/raftingest/raftingest/ringstate"
	"github.com/raftingest/raftingest/storage"
)

// Listed is one complete block in a bucket.
type Listed struct {
	Tenant string
	Meta   storage.Meta
}

// Bucket is the blocks of one member's node-local bucket (reached through the Blocks service), or
// of the shared bucket. The wiring adapts blocksvc's client to it; tests use real directories.
type Bucket interface {
	// List returns the complete blocks (those with meta.json) of every tenant, but not those marked
	// for deletion: they were replaced (or expired) and must not be merged again.
	List(ctx context.Context) ([]Listed, error)
	// Fetch copies block id of tenant into parentDir/<ULID>, verified, and returns that path.
	Fetch(ctx context.Context, tenant string, id ulid.ULID, parentDir string) (string, error)
	// Store puts the complete block in dir (named by its ULID) into the bucket and returns once it
	// is durable there. Storing a block the bucket has is a success.
	Store(ctx context.Context, tenant, dir string) error
	// MarkForDeletion marks blocks ids of tenant for deletion (storage.MarkForDeletion; absent
	// ones are not an error) and returns once every mark is durable, fenced by the compactor
	// lease's epoch: a bucket refuses an epoch that is not the ring's current one. A marked block is
	// still served to queries, no longer listed, and deleted by a sweep once the mark is older than
	// -compactor.deletion-delay.
	MarkForDeletion(ctx context.Context, tenant string, ids []ulid.ULID, epoch uint64) error
}

// SharedBucket is the shared bucket: a Bucket the lease holder also sweeps, since no member owns
// it.
type SharedBucket interface {
	Bucket
	// Sweep deletes for good every block whose deletion mark is at least delay old at now, and
	// returns how many.
	Sweep(ctx context.Context, delay time.Duration, now time.Time) (int, error)
}

// Cluster is where blocks live, as the compactor sees it at the start of a run.
type Cluster struct {
	// Shared is the shared bucket (S3, or a directory declared shared); nil with node-local
	// buckets, which their members sweep themselves (blocksvc.Server.RunSweeper).
	Shared SharedBucket
	// Members are the ring members' node-local buckets by member id; unused with a shared bucket.
	Members map[string]Bucket
	// Place returns the members a series of tenant belongs on: its replication set in the current
	// ring, as the distributor computes it. Unused with a shared bucket.
	Place func(tenant string, lset labels.Labels) []string
	// StillPlaceable re-reads the ring and fails unless every member named is still ACTIVE and
	// healthy. runJob asks it after every part of a merge is stored and before the sources are
	// marked: the placement is the ring at the start of the run, and a member that started leaving
	// since may have listed its blocks to move them already — a part stored on it after that
	// listing leaves with it, and marking the sources would leave those series with RF−1 copies
	// for good. nil (a shared bucket) checks nothing.
	StillPlaceable func(ctx context.Context, members []string) error
}

// Lease is the compactor lease as the compactor needs it (raftfsm.Node in the daemon).
type Lease interface {
	// IsLeader reports whether this member is the Raft leader: only the leader claims the lease,
	// so members do not contend for it.
	IsLeader() bool
	// Claim claims or renews the lease for d of ring time and returns its epoch; an error when
	// another member holds it or the claim could not be committed.
	Claim(ctx context.Context, d time.Duration) (epoch uint64, err error)
}

// Deps are the compactor's collaborators.
type Deps struct {
	Lease Lease
	// Cluster returns where blocks live, once per run.
	Cluster func(ctx context.Context) (Cluster, error)
	// WorkDir is where blocks are fetched, merged and split; it is emptied at start (leftovers of a
	// crash) and after every job. Nothing else may live there.
	WorkDir string
	// FlushPeriod is -ingester.flush-period: a range above the first is complete once its end is
	// older than FlushPeriod + Config.CompletionDelay.
	FlushPeriod time.Duration
	Registerer  prometheus.Registerer
	Logger      *slog.Logger
	// Now is the clock (nil: time.Now): the time of compaction group ids and of the last
	// successful run's gauge.
	Now func() time.Time
	// RingTimeMs is ring time (Unix milliseconds: the newest leader-stamped time the ring
	// applied; raftfsm.Node's Ring().TimeMs()), the clock of retention and of range completeness:
	// the lease expires in ring time, and every member judges time there alike, whatever its own
	// clock says. nil: Now.
	RingTimeMs func() int64
	// FreeBytes returns the bytes free for this process on the filesystem of WorkDir, and the
	// filesystem's size; nil: a statfs of WorkDir (workDirSpace). A job starts only when what it
	// may write (jobSpaceFactor times its sources) leaves MinFreeDiskPercent of the filesystem free:
	// the work directory sits on the data disk, beside the WAL.
	FreeBytes func(dir string) (free, total uint64, err error)
	// MinFreeDiskPercent is -blocks-storage.min-free-disk-percent, the headroom a job must leave.
	MinFreeDiskPercent float64
}

// jobSpaceFactor bounds what a job writes into the work directory, in multiples of its sources'
// bytes (every copy counted): the fetched sources (1), the merged block (at most 1: it holds each
// sample once) and its parts (the merged block split by member: RF copies of each series, at most
// the sources again, since the sources held every replica's copy; with a shared bucket one part,
// the merged block itself). Compressed chunk bytes do not grow in a merge, so 3 is an upper bound
// up to the index, which shrinks too when copies merge.
const jobSpaceFactor = 3

// workDirSpace is the default of Deps.FreeBytes.
func workDirSpace(dir string) (free, total uint64, err error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return 0, 0, err
	}
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, 0, err
	}
	return st.Bavail * uint64(st.Bsize), st.Blocks * uint64(st.Bsize), nil
}

// checkSpace refuses a job whose worst-case writes (jobSpaceFactor times the sources' bytes) would
// leave less than the headroom free on the work directory's filesystem. A filesystem that cannot
// tell its free space is not a reason to refuse (the write itself then reports ENOSPC).
func (c *Compactor) checkSpace(sources []Block) error {
	var src int64
	for _, b := range sources {
		src += b.Meta.BlockSize()
	}
	need := uint64(src) * jobSpaceFactor
	free, total, err := c.d.FreeBytes(c.d.WorkDir)
	if err != nil || total == 0 {
		return nil
	}
	headroom := uint64(float64(total) * c.d.MinFreeDiskPercent / 100)
	if free < need+headroom {
		return fmt.Errorf("%w: the job may write %d bytes into %s (%d times its %d sources' %d bytes), %d are free and %d (-blocks-storage.min-free-disk-percent=%v) must stay free",
			ErrNoSpace, need, c.d.WorkDir, jobSpaceFactor, len(sources), src, free, headroom, c.d.MinFreeDiskPercent)
	}
	return nil
}

// ErrNoSpace is wrapped by the error of a job that did not start because the work directory's
// filesystem has too little free space for it; nothing was fetched, stored or marked.
var ErrNoSpace = errors.New("compact: not enough free disk space for the job")

// callTimeout bounds a listing and a marking on one bucket, so that a member that stopped answering
// (paused, partitioned) delays a run by at most this instead of holding it for ever. Fetches and
// stores move whole blocks and are bounded by the Blocks service's idle timeout instead.
const callTimeout = time.Minute

// Compactor runs compactions while its member holds the compactor lease. Create it with New.
type Compactor struct {
	cfg Config
	d   Deps
	log *slog.Logger
	m   metrics

	mu      sync.Mutex
	blocked string // the reason the lease is blocked now (a blockedReasons entry), "" when it is not
}

type metrics struct {
	started, completed, failed prometheus.Counter
	compactions                prometheus.Counter
	marked                     *prometheus.CounterVec // reason: compaction, retention
	lastSuccess, leaseHeld     prometheus.Gauge
	leaseBlocked               *prometheus.GaugeVec // reason: one of blockedReasons
}

// Reasons of cortex_compactor_blocks_marked_for_deletion_total (Mimir's).
const (
	reasonCompaction = "compaction"
	reasonRetention  = "retention"
)

// Reasons of raftingest_compactor_lease_blocked: why this member, the Raft leader, could not claim
// or renew the compactor lease (blockReason).
const (
	// blockedMixedVersions: a ring member does not advertise command version 3 (it runs a build
	// before the lease, or registered through such a leader), or the claim's readers missed a
	// member; only before the first grant, but for the readers. Finish the rolling upgrade.
	blockedMixedVersions = "mixed_versions"
	// blockedRaftServerNotMember: before the first grant, a Raft server is not a ring member (added
	// and not registered yet, or left behind by a half-done removal). Register it or remove it.
	blockedRaftServerNotMember = "raft_server_not_member"
	// blockedHeld: another member holds the lease (the previous leader finishing its run).
	blockedHeld = "held"
	// blockedNotActive: this member is not ACTIVE (joining or leaving): it may not hold the lease.
	blockedNotActive = "not_active"
	// blockedClaimFailed: the claim could not be committed (no leader, timeout, unknown outcome).
	blockedClaimFailed = "claim_failed"
)

var blockedReasons = []string{blockedMixedVersions, blockedRaftServerNotMember, blockedHeld, blockedNotActive,
	blockedClaimFailed}

// blockReason names why a claim or renewal failed with err.
func blockReason(err error) string {
	switch {
	case errors.Is(err, ringstate.ErrReplicaNotMember):
		return blockedRaftServerNotMember
	case errors.Is(err, ringstate.ErrMixedVersions):
		return blockedMixedVersions
	case errors.Is(err, ringstate.ErrLeaseHeld):
		return blockedHeld
	case errors.Is(err, ringstate.ErrIllegalTransition):
		return blockedNotActive
	}
	return blockedClaimFailed
}

// New checks cfg and d and registers the compactor's metrics.
func New(cfg Config, d Deps) (*Compactor, error) {
	if err := cfg.Validate(0); err != nil {
		return nil, err
	}
	if d.Lease == nil || d.Cluster == nil || d.WorkDir == "" {
		return nil, errors.New("compact: Lease, Cluster and WorkDir are required")
	}
	if d.Logger == nil {
		d.Logger = slog.New(slog.DiscardHandler)
	}
	if d.Now == nil {
		d.Now = time.Now
	}
	if d.RingTimeMs == nil {
		now := d.Now
		d.RingTimeMs = func() int64 { return now().UnixMilli() }
	}
	if d.FreeBytes == nil {
		d.FreeBytes = workDirSpace
	}
	if d.Registerer == nil {
		d.Registerer = prometheus.NewRegistry()
	}
	c := &Compactor{cfg: cfg, d: d, log: d.Logger}
	c.m = metrics{
		started: prometheus.NewCounter(prometheus.CounterOpts{Name: "cortex_compactor_runs_started_total",
			Help: "Compaction runs started (by the compactor lease holder)."}),
		completed: prometheus.NewCounter(prometheus.CounterOpts{Name: "cortex_compactor_runs_completed_total",
			Help: "Compaction runs that completed every job."}),
		failed: prometheus.NewCounter(prometheus.CounterOpts{Name: "cortex_compactor_runs_failed_total",
			Help: "Compaction runs that failed or left a job undone (it is retried at the next run)."}),
		marked: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "cortex_compactor_blocks_marked_for_deletion_total",
			Help: "Blocks marked for deletion in members' buckets (one per bucket a block was marked in), by reason: compaction (replaced by a merged block) or retention (expired). They are deleted -compactor.deletion-delay later (cortex_compactor_blocks_cleaned_total)."},
			[]string{"reason"}),
		compactions: prometheus.NewCounter(prometheus.CounterOpts{Name: "cortex_compactor_group_compactions_total",
			Help: "Merges completed: sources merged, the result placed durably, the sources marked for deletion."}),
		lastSuccess: prometheus.NewGauge(prometheus.GaugeOpts{Name: "cortex_compactor_last_successful_run_timestamp_seconds",
			Help: "Unix time of the last compaction run that completed every job."}),
		leaseHeld: prometheus.NewGauge(prometheus.GaugeOpts{Name: "cortex_compactor_lease_held",
			Help: "1 while this member holds the ring's compactor lease and compacts, else 0."}),
		leaseBlocked: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "raftingest_compactor_lease_blocked",
			Help: "1 for the reason this member, the Raft leader, last failed to claim or renew the compactor lease " +
				"(mixed_versions: a member does not read command version 3; raft_server_not_member: before the first " +
				"lease, a raft server is not a ring member; held: another member holds it; not_active: this member is " +
				"not ACTIVE; claim_failed: the claim could not be committed); all 0 while it holds the lease or does " +
				"not lead."}, []string{"reason"}),
	}
	for _, reason := range []string{reasonCompaction, reasonRetention} {
		c.m.marked.WithLabelValues(reason) // exported at 0 from the start
	}
	for _, reason := range blockedReasons {
		c.m.leaseBlocked.WithLabelValues(reason)
	}
	for _, col := range []prometheus.Collector{c.m.started, c.m.completed, c.m.failed, c.m.marked, c.m.compactions,
		c.m.lastSuccess, c.m.leaseHeld, c.m.leaseBlocked} {
		if err := d.Registerer.Register(col); err != nil {
			return nil, fmt.Errorf("compact: metrics: %w", err)
		}
	}
	return c, nil
}

// Run claims the lease and compacts every -compactor.interval while this member is the Raft leader,
// until ctx is done. A run stops (its context is cancelled) as soon as the lease cannot be renewed.
//
// A member that became the leader waits one full lease duration, by its own monotonic clock, before
// its first claim, and claims as soon as it has waited (a timer, not the next -compactor.interval
// tick: with the defaults, 1h and 1m, waiting for the tick delayed the first claim after an
// election by up to two hours). Why it waits: the lease expires in ring time, which the leader's
// clock stamps, but its holder stops working by its own clock (keepLease). The old holder's last
// claim committed through the previous leader began before this member was elected, and without a
// later renewal the old holder stops at most 5/6 of a lease after that claim began; an election may
// make ring time jump (a new leader whose clock is ahead), so that claim's expiry in ring time
// cannot vouch for it, but waiting a whole lease after the election outlasts it whatever the two
// clocks read. The old holder may also go on renewing through this member (keepLease renews
// whoever leads, until its run ends): such a renewal is stamped by this member's clock, so its
// expiry is in the same time frame as this member's own claims, and the FSM refuses those claims
// (ErrLeaseHeld) until the old holder's lease has expired in ring time — by then it has stopped,
// 5/6 of a lease after its last renewal began.
//
// Leadership is polled every min(interval, lease/3): a loss and a return between two polls go
// unnoticed, which only matters if another member held the lease in between, and then the FSM
// refuses this member's claim until that lease expired. A claim that fails is retried
// min(interval, lease) later; a run, -compactor.interval after the previous one started. Why the
// lease is blocked is logged once per change (Warn; Info when another member holds it) and shown
// by raftingest_compactor_lease_blocked{reason}.
func (c *Compactor) Run(ctx context.Context) {
	if err := os.RemoveAll(c.d.WorkDir); err != nil {
		c.log.Warn("compactor: emptying the work directory", "dir", c.d.WorkDir, "err", err)
	}
	poll := min(c.cfg.Interval, c.cfg.LeaseDuration/3)
	retry := min(c.cfg.Interval, c.cfg.LeaseDuration)
	timer := time.NewTimer(0) // look at leadership at once
	defer timer.Stop()
	defer c.m.leaseHeld.Set(0)
	var leaderSince time.Time // zero while this member is not the leader
	var next time.Time        // while leading: when to claim and run next
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		}
		now := time.Now()
		switch {
		case !c.d.Lease.IsLeader():
			leaderSince = time.Time{}
			c.setBlocked("", nil) // not this member's job: the leader's gauge says
		case leaderSince.IsZero():
			leaderSince = now
			next = leaderSince.Add(c.cfg.LeaseDuration)
			c.log.Info("compactor: this member leads; it claims the compactor lease once a lease duration has passed",
				"lease_duration", c.cfg.LeaseDuration, "claim_at", next)
		case !now.Before(next):
			if c.runLeased(ctx) {
				next = now.Add(c.cfg.Interval)
			} else {
				next = time.Now().Add(retry)
			}
		}
		wait := poll
		if !leaderSince.IsZero() {
			wait = min(wait, time.Until(next))
		}
		timer.Reset(max(wait, 0))
	}
}

// setBlocked records why the lease is blocked (reason "" when it is not: claimed, or this member
// does not lead) in raftingest_compactor_lease_blocked, and logs a change once — not at every
// attempt, which would repeat the same line every few seconds for as long as the cause lasts.
func (c *Compactor) setBlocked(reason string, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	prev := c.blocked
	if reason == prev {
		return
	}
	c.blocked = reason
	if prev != "" {
		c.m.leaseBlocked.WithLabelValues(prev).Set(0)
	}
	switch reason {
	case "":
		c.log.Info("compactor: the compactor lease is no longer blocked (claimed, or this member no longer leads)",
			"was", prev)
		return
	case blockedHeld:
		// The ordinary hand-over after an election: the previous holder finishes its run.
		c.log.Info("compactor: another member holds the compactor lease; this member claims it once it expires",
			"reason", reason, "err", err)
	default:
		c.log.Warn("compactor: the compactor lease cannot be claimed or renewed; compaction waits until the cause is "+
			"fixed (raftingest_compactor_lease_blocked)", "reason", reason, "err", err)
	}
	c.m.leaseBlocked.WithLabelValues(reason).Set(1)
}

// runLeased claims the lease and, while it keeps it, runs once. It reports whether the claim
// succeeded and the lease was kept to the end of the run (false: retry soon, not at the interval).
func (c *Compactor) runLeased(ctx context.Context) bool {
	d := c.cfg.LeaseDuration
	start := time.Now()
	claimCtx, cancelClaim := context.WithTimeout(ctx, d/3)
	epoch, err := c.d.Lease.Claim(claimCtx, d)
	cancelClaim()
	if err != nil {
		if ctx.Err() == nil {
			c.setBlocked(blockReason(err), err)
		}
		return false
	}
	c.setBlocked("", nil)
	c.m.leaseHeld.Set(1)
	defer c.m.leaseHeld.Set(0)
	runCtx, cancel := context.WithCancelCause(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		c.keepLease(runCtx, cancel, epoch, start)
	}()
	err = c.RunOnce(runCtx, epoch)
	lost := runCtx.Err() != nil && ctx.Err() == nil // keepLease cancelled the run
	if err != nil {
		c.log.Warn("compactor: run failed; it is retried at the next interval (sooner when the lease was lost)",
			"epoch", epoch, "err", err)
	}
	cancel(nil)
	wg.Wait()
	return !lost
}

// keepLease renews the lease every third of its duration and cancels the run when it cannot: when
// a renewal fails, returns another epoch, or does not succeed before the lease's end by this
// member's clock, measured from before the last successful claim (ring time at commit is later,
// so the local deadline is never after the ring's).
func (c *Compactor) keepLease(ctx context.Context, cancel context.CancelCauseFunc, epoch uint64, claimed time.Time) {
	d := c.cfg.LeaseDuration
	margin := d / 6
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(d / 3):
		}
		attempt := time.Now()
		deadline := claimed.Add(d - margin)
		rctx, rcancel := context.WithDeadline(ctx, deadline)
		got, err := c.d.Lease.Claim(rctx, d)
		rcancel()
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			c.setBlocked(blockReason(err), err)
			cancel(fmt.Errorf("compact: renewing the compactor lease (epoch %d): %w", epoch, err))
			return
		case got != epoch:
			cancel(fmt.Errorf("compact: the compactor lease moved to epoch %d from %d", got, epoch))
			return
		}
		claimed = attempt
	}
}

// RunOnce runs one compaction with the lease at epoch: it sweeps a shared bucket (the blocks marked
// for deletion longer than -compactor.deletion-delay ago), lists every bucket, plans every tenant
// (MakePlan), marks for deletion what retention expired, and runs every merge. A job that fails is
// logged and skipped (its sources stay; the next run retries); the error joins every failure.
func (c *Compactor) RunOnce(ctx context.Context, epoch uint64) error {
	c.m.started.Inc()
	err := c.runOnce(ctx, epoch)
	if err != nil {
		c.m.failed.Inc()
		return err
	}
	c.m.completed.Inc()
	c.m.lastSuccess.Set(float64(c.d.Now().UnixMilli()) / 1000)
	return nil
}

func (c *Compactor) runOnce(ctx context.Context, epoch uint64) error {
	cl, err := c.d.Cluster(ctx)
	if err != nil {
		return fmt.Errorf("compact: the cluster's buckets: %w", err)
	}
	var errs []error
	buckets := cl.Members
	if cl.Shared != nil {
		buckets = map[string]Bucket{"": cl.Shared}
		// No member owns a shared bucket: the lease holder sweeps it, once per run. (Sweeping needs
		// no fence: a mark is written only once the block's replacement is durable, so deleting a
		// block whose mark is older than the delay is safe whoever does it.)
		n, err := cl.Shared.Sweep(ctx, c.cfg.DeletionDelay, c.d.Now())
		if err != nil {
			errs = append(errs, fmt.Errorf("compact: sweeping the shared bucket: %w", err))
		}
		if n > 0 {
			c.log.Info("compactor: deleted blocks marked for deletion from the shared bucket", "blocks", n, "deletion_delay", c.cfg.DeletionDelay)
		}
	}
	// tenant -> ULID -> block, with every member that holds it.
	byTenant := map[string]map[ulid.ULID]*Block{}
	for _, member := range sortedKeys(buckets) {
		lctx, cancel := context.WithTimeout(ctx, callTimeout)
		listed, err := buckets[member].List(lctx)
		cancel()
		if err != nil {
			// Compaction goes on without that member: its blocks stay, and the next run merges them
			// into what this one writes (a window with more than one group is merged again).
			errs = append(errs, fmt.Errorf("compact: listing the blocks of %q: %w", member, err))
			continue
		}
		for _, l := range listed {
			bs := byTenant[l.Tenant]
			if bs == nil {
				bs = map[ulid.ULID]*Block{}
				byTenant[l.Tenant] = bs
			}
			b := bs[l.Meta.ULID]
			if b == nil {
				b = &Block{Meta: l.Meta}
				bs[l.Meta.ULID] = b
			}
			b.Holders = append(b.Holders, member)
		}
	}
	now := c.d.RingTimeMs()
	for _, tenant := range sortedKeys(byTenant) {
		if ctx.Err() != nil {
			break
		}
		var blocks []Block
		for _, b := range byTenant[tenant] {
			blocks = append(blocks, *b)
		}
		plan := MakePlan(PlanInput{Tenant: tenant, Blocks: blocks, Ranges: c.cfg.BlockRanges.millis(), NowMs: now,
			CompleteAfterMs: (c.d.FlushPeriod + c.cfg.CompletionDelay).Milliseconds(),
			RetentionMs:     c.cfg.Retention.Milliseconds()})
		for _, g := range plan.Expired {
			n, err := c.markBlocks(ctx, buckets, tenant, g.Blocks, epoch, reasonRetention)
			if err != nil {
				errs = append(errs, fmt.Errorf("compact: retention of tenant %q: %w", tenant, err))
			}
			if n > 0 {
				c.log.Info("compactor: retention marked blocks for deletion", "tenant", tenant, "group", g.Key, "blocks", n,
					"max_time", time.UnixMilli(g.MaxTime).UTC(), "retention", c.cfg.Retention)
			}
		}
		for i := range plan.Jobs {
			if ctx.Err() != nil {
				break
			}
			if err := c.runJob(ctx, cl, buckets, &plan.Jobs[i], epoch); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if err := context.Cause(ctx); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// runJob merges one job's blocks, places the result and only then marks the sources for deletion.
//
// Crash safety (kill -9 at any step): the sources are marked only after every part of the result
// is durable on its member, so there is never a moment without every series' RF copies; and a
// marked source is still served until -compactor.deletion-delay has passed, so a query that read
// some member before a part reached it still finds the source on the others. A crash after some
// parts were stored leaves those parts beside the sources: the window then holds more than one
// group, and the next run merges them all again (vertical merge deduplicates), writing a new
// complete result and marking every one of them. A crash while marking leaves some sources
// unmarked beside the complete result: the same. A crash after marking changes nothing: the marks
// are durable, marked blocks are listed to no run, and the sweeper deletes them on time.
func (c *Compactor) runJob(ctx context.Context, cl Cluster, buckets map[string]Bucket, j *Job, epoch uint64) (err error) {
	group := ulid.MustNew(ulid.Timestamp(c.d.Now()), rand.Reader).String()
	dir := filepath.Join(c.d.WorkDir, group)
	defer os.RemoveAll(dir)
	log := c.log.With("tenant", j.Tenant, "window_start", time.UnixMilli(j.WindowStart).UTC(),
		"range", time.Duration(j.Range)*time.Millisecond, "group", group)
	defer func() {
		if err != nil {
			err = fmt.Errorf("compact: tenant %q, window %s of %s: %w", j.Tenant, time.UnixMilli(j.WindowStart).UTC(),
				time.Duration(j.Range)*time.Millisecond, err)
		}
	}()
	sources := j.Blocks()
	if err := c.checkSpace(sources); err != nil {
		return err
	}
	var dirs []string
	var srcIDs []string
	for _, b := range sources {
		p, err := c.fetch(ctx, buckets, j.Tenant, b, filepath.Join(dir, "src"))
		if err != nil {
			return err
		}
		dirs = append(dirs, p)
		srcIDs = append(srcIDs, b.Meta.ULID.String())
	}
	comp, err := tsdb.NewLeveledCompactorWithOptions(ctx, nil, c.log, c.cfg.BlockRanges.millis(), chunkenc.NewPool(),
		tsdb.LeveledCompactorOptions{EnableOverlappingCompaction: true})
	if err != nil {
		return fmt.Errorf("tsdb compactor: %w", err)
	}
	ids, err := comp.Compact(filepath.Join(dir, "out"), dirs, nil)
	if err != nil {
		return fmt.Errorf("merging %d blocks: %w", len(dirs), err)
	}
	placed := 0
	var partMembers []string
	if len(ids) > 0 {
		// Place: with a shared bucket the merged block goes there once; with node-local buckets
		// every member gets the part holding exactly the series it replicates.
		place := func(labels.Labels) []string { return []string{""} }
		if cl.Shared == nil {
			place = func(lset labels.Labels) []string { return cl.Place(j.Tenant, lset) }
		}
		parts, err := storage.SplitBlock(ctx, filepath.Join(dir, "out", ids[0].String()), filepath.Join(dir, "parts"),
			storage.SplitOptions{Tenant: j.Tenant, Place: place, Group: group, Logger: c.log})
		if err != nil {
			return err
		}
		for _, member := range sortedKeys(parts) {
			b := buckets[member]
			if b == nil {
				return fmt.Errorf("the placement names %q, whose bucket is unknown (not a member at the start of the run)", member)
			}
			m := parts[member]
			if err := b.Store(ctx, j.Tenant, filepath.Join(dir, "parts", member, m.ULID.String())); err != nil {
				return fmt.Errorf("storing part %s on %q: %w", m.ULID, member, err)
			}
			placed++
			partMembers = append(partMembers, member)
			log.Info("compactor: placed a merged block", "member", member, "block", m.ULID, "series", m.Stats.NumSeries,
				"samples", m.Stats.NumSamples, "level", m.Compaction.Level)
		}
	}
	// Every part is durable on its member, and each member is still one that keeps what it holds
	// (not LEAVING: a leaver that listed its blocks before a part landed would exit with it):
	// now, and only now, the sources may be marked. Otherwise nothing is marked and the next run,
	// on the ring as it is then, redoes the merge (the parts stored here are merged again with it).
	if cl.Shared == nil && cl.StillPlaceable != nil && placed > 0 {
		if err := cl.StillPlaceable(ctx, partMembers); err != nil {
			return fmt.Errorf("the ring changed while the merged block was placed; nothing marked, the next run redoes it: %w", err)
		}
	}
	// Every part is durable on its member: now, and only now, the sources may be marked.
	n, err := c.markBlocks(ctx, buckets, j.Tenant, sources, epoch, reasonCompaction)
	if err != nil {
		return fmt.Errorf("marking the %d merged sources for deletion (the next run merges what is left): %w", len(sources), err)
	}
	c.m.compactions.Inc()
	log.Info("compactor: merged blocks", "sources", srcIDs, "groups", len(j.Groups), "parts", placed, "marked", n,
		"deletion_delay", c.cfg.DeletionDelay)
	return nil
}

// fetch copies block b from the first holder that has it.
func (c *Compactor) fetch(ctx context.Context, buckets map[string]Bucket, tenant string, b Block, parent string) (string, error) {
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return "", err
	}
	var errs []error
	for _, h := range b.Holders {
		bk := buckets[h]
		if bk == nil {
			continue
		}
		p, err := bk.Fetch(ctx, tenant, b.Meta.ULID, parent)
		if err == nil {
			return p, nil
		}
		errs = append(errs, fmt.Errorf("from %q: %w", h, err))
		if ctx.Err() != nil {
			break
		}
	}
	return "", fmt.Errorf("fetching block %s: %w", b.Meta.ULID, errors.Join(errs...))
}

// markBlocks marks blocks for deletion in every bucket that holds them and returns how many
// (block, holder) pairs it marked.
func (c *Compactor) markBlocks(ctx context.Context, buckets map[string]Bucket, tenant string, blocks []Block, epoch uint64, reason string) (int, error) {
	byHolder := map[string][]ulid.ULID{}
	for _, b := range blocks {
		for _, h := range b.Holders {
			byHolder[h] = append(byHolder[h], b.Meta.ULID)
		}
	}
	n := 0
	var errs []error
	for _, h := range sortedKeys(byHolder) {
		ids := byHolder[h]
		slices.SortFunc(ids, func(a, b ulid.ULID) int { return cmp.Compare(a.String(), b.String()) })
		bk := buckets[h]
		if bk == nil {
			continue
		}
		dctx, cancel := context.WithTimeout(ctx, callTimeout)
		err := bk.MarkForDeletion(dctx, tenant, ids, epoch)
		cancel()
		if err != nil {
			errs = append(errs, fmt.Errorf("on %q: %w", h, err))
			continue
		}
		n += len(ids)
		c.m.marked.WithLabelValues(reason).Add(float64(len(ids)))
		c.log.Info("compactor: marked blocks for deletion", "tenant", tenant, "member", h, "blocks", ids, "epoch", epoch,
			"reason", reason, "deletable_after", c.cfg.DeletionDelay)
	}
	return n, errors.Join(errs...)
}
