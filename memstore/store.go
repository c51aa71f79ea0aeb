package memstore

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
)

var (
	// ErrOutOfOrderSample refuses a sample older than the series' newest one.
	ErrOutOfOrderSample = errors.New("memstore: out of order sample")
	// ErrDuplicateSampleForTimestamp refuses a sample with the timestamp of the
	// series' newest one but another value.
	ErrDuplicateSampleForTimestamp = errors.New("memstore: duplicate sample for timestamp")
	// ErrTooManySeries refuses a new series of a tenant at -ingester.max-series-per-tenant.
	ErrTooManySeries = errors.New("memstore: too many series")
	// ErrInvalidLabels refuses an empty label set or one with duplicate or empty names.
	ErrInvalidLabels = errors.New("memstore: invalid labels")
	// ErrInvalidChunk refuses an imported chunk that does not decode, is not
	// XOR, or whose samples disagree with its MinTime/MaxTime.
	ErrInvalidChunk = errors.New("memstore: invalid chunk")
	// ErrInvalidMatcher refuses a nil matcher.
	ErrInvalidMatcher = errors.New("memstore: invalid matcher")
)

// SeriesSamples is one series of a push: its labels and its samples in
// increasing timestamp order (int64 ms).
type SeriesSamples struct {
	Labels  labels.Labels
	Samples []Sample
}

// SampleError is one refusal in a push: which series (index into the batch
// and labels), which sample timestamp (int64 ms; the first sample's for
// series-level refusals) and why (Err wraps one of the package's sentinel
// errors; errors.Is works on SampleError itself). Count is how many samples
// the refusal covers: 1 for a sample, len(Samples) for a refused series.
type SampleError struct {
	SeriesIndex int
	Labels      labels.Labels
	T           int64
	Count       int
	Err         error
}

// Error formats the refusal as "series {labels}: sample at <t>: <reason>".
func (e SampleError) Error() string {
	return fmt.Sprintf("series %s: sample at %d: %v", e.Labels, e.T, e.Err)
}

// Unwrap returns Err, so errors.Is(e, ErrOutOfOrderSample) and friends work.
func (e SampleError) Unwrap() error { return e.Err }

// PushResult counts the outcome of a push. Accepted + Refused = samples in
// the batch.
type PushResult struct {
	Accepted   int           // Samples now visible (idempotent duplicates included).
	Duplicates int           // Of Accepted, idempotent duplicates: same timestamp and value bits as the newest sample.
	Refused    int           // Samples refused; each refusal is in Errors.
	NewSeries  int           // Series created by this push.
	Errors     []SampleError // Per-series/per-sample refusals, in batch order.
}

// SeriesChunks is one series of a Select: labels and chunks in time order.
type SeriesChunks struct {
	Labels labels.Labels
	Chunks []Chunk
}

// TenantStats counts a tenant's in-memory state.
type TenantStats struct {
	Series int64
	Chunks int64 // Closed chunks plus head chunks.
}

// ReplayReport describes the WAL replay done by Open.
type ReplayReport struct {
	Records int
	Series  int
	Samples int
	Chunks  int
	Skipped int // Samples or chunks refused on replay (unknown series, out of order); zero in a healthy WAL.
	// Exemplars is the number of exemplars replayed into the exemplar stores.
	Exemplars int
	Duration  time.Duration
	// Corruption is set when a corrupt record was found; it and every later
	// record were deleted, and the Store opened with the data before it.
	Corruption *CorruptionError
}

// TruncateStats describes one Truncate: what left memory and what the WAL
// rewrite deleted or rewrote.
type TruncateStats struct {
	ChunksRemoved       int
	SeriesRemoved       int
	WALRecordsDeleted   int
	WALRecordsRewritten int
}

// Store is the per-node in-memory series store with its WAL.
//
// All methods are safe for concurrent use. Contract of the write path (Push,
// ImportChunks): a call returns only after its records are committed to the
// WAL (fsynced when Config.WALSync), and its samples become visible to readers
// only after that commit; samples refused in memory are never logged.
type Store struct {
	cfg      Config
	maxAgeMs int64
	logger   *slog.Logger
	metrics  *metrics
	hashFn   func(labels.Labels) uint64 // Immutable; labels.Labels.Hash except in collision tests.

	nextRef atomic.Uint64

	oooWindow atomic.Pointer[OutOfOrderWindow] // nil: Config.OutOfOrderTimeWindow for every tenant

	tenantsMu sync.RWMutex
	tenants   map[string]*tenantHead

	wal *wal // nil when Config.WALDir is empty.

	truncMu sync.Mutex // Serialises Truncate.
	closeMu sync.Mutex
	closed  atomic.Bool
	replay  ReplayReport
	// replaying is true while Open replays the WAL: series are then created
	// without postings, which replayWAL builds in bulk at the end (see
	// replay.go). Set and cleared by replayWAL around its workers' lifetime.
	replaying bool
	// replayHook is openOptions.replayHook: tests only.
	replayHook func(seq uint64)

	appenders sync.Pool // *Appender

	// seriesLimit is the per-tenant series limit in force (limits.go): Config.MaxSeriesPerTenant
	// until SetSeriesLimit replaces it. Never nil after open.
	seriesLimit atomic.Pointer[SeriesLimit]

	// exemplars holds every tenant's exemplars (exemplars.go).
	exemplars *exemplarStore
}

type applyRef struct {
	s   *memSeries
	end uint64
	th  *tenantHead // the series' tenant (chunk counts of orphans, ImportBatch)
}

// Open validates cfg, opens (or creates) the WAL in cfg.WALDir, replays it and
// starts the group committer. reg may be nil (metrics unregistered); logger
// may be nil (slog.Default). A corrupt record in the WAL is reported in the
// log and in ReplayReport and the tail from it is cut; a damaged bbolt file
// is an error naming the file and is left untouched.
func Open(cfg Config, reg prometheus.Registerer, logger *slog.Logger) (*Store, error) {
	return open(cfg, reg, logger, openOptions{})
}

// openOptions are knobs for tests; the zero value is production behaviour.
type openOptions struct {
	hashFn          func(labels.Labels) uint64 // nil: labels.Labels.Hash
	compactMinBytes int64                      // 0: DefaultCompactMinBytes; <0: never compact
	// replayHook, if set, is called by the replay's visitor after each record is counted.
	replayHook func(seq uint64)
}

func open(cfg Config, reg prometheus.Registerer, logger *slog.Logger, opts openOptions) (*Store, error) {
	hashFn := opts.hashFn
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if logger == nil {
		logger = slog.Default()
	}
	if hashFn == nil {
		hashFn = labels.Labels.Hash
	}
	m, err := newMetrics(reg)
	if err != nil {
		return nil, err
	}
	st := &Store{
		cfg:      cfg,
		maxAgeMs: cfg.MaxChunkAge.Milliseconds(),
		logger:   logger,
		metrics:  m,
		hashFn:   hashFn,
		tenants:  map[string]*tenantHead{},

		replayHook: opts.replayHook,
	}
	if st.exemplars, err = newExemplarStore(reg); err != nil {
		return nil, err
	}
	st.nextRef.Store(1)
	st.seriesLimit.Store(&SeriesLimit{Max: cfg.MaxSeriesPerTenant, Source: "-ingester.max-series-per-tenant"})
	if cfg.WALDir == "" {
		m.walReplayProgress.Set(1)
		now := time.Now()
		cfg.ReplayTracker.start(0, 0, now)
		cfg.ReplayTracker.finish(now)
		return st, nil
	}
	compactMin := opts.compactMinBytes
	if compactMin == 0 {
		compactMin = DefaultCompactMinBytes
	}
	w, err := openWAL(cfg.WALDir, cfg.WALSync, compactMin, logger, m)
	if err != nil {
		return nil, err
	}
	nextSeq, err := st.replayWAL(w)
	if err != nil {
		w.db.Close()
		return nil, err
	}
	st.wal = w
	w.applyDeferred = st.applyDeferred
	w.start(nextSeq)
	return st, nil
}

// WALError is nil while the WAL commits, and ErrWALFailed wrapping the cause
// (ENOSPC, EIO, ...) while it is failing: writes are then refused with it
// and the WAL retries by itself; reads go on. For readiness checks.
func (st *Store) WALError() error {
	if st.wal == nil {
		return nil
	}
	return st.wal.failed()
}

// applyDeferred runs the deferred applies among es (wal.applyLater), whose
// entries are all committed now. Called by the committer, with no lock held.
func (st *Store) applyDeferred(es []walEntry) {
	for i := range es {
		for _, ap := range es[i].applies {
			ap.s.mu.Lock()
			nc := ap.s.applyUpTo(ap.end, st.maxAgeMs)
			ap.s.mu.Unlock()
			if nc > 0 {
				ap.th.numChunks.Add(int64(nc))
				st.metrics.memChunks.Add(float64(nc))
			}
		}
		for j := range es[i].laterExemplars {
			st.exemplars.addCommitted(&es[i].laterExemplars[j])
		}
	}
}

// Close commits what is queued, stops the committer and closes the WAL.
// Calls after Close return ErrClosed. Safe to call more than once.
func (st *Store) Close() error {
	st.truncMu.Lock() // let a running Truncate finish its WAL rewrite
	defer st.truncMu.Unlock()
	st.closeMu.Lock()
	defer st.closeMu.Unlock()
	if st.closed.Swap(true) {
		return nil
	}
	if st.wal != nil {
		return st.wal.close()
	}
	return nil
}

// ReplayReport returns what Open's WAL replay found.
func (st *Store) ReplayReport() ReplayReport { return st.replay }

func (st *Store) tenant(name string) *tenantHead {
	st.tenantsMu.RLock()
	th := st.tenants[name]
	st.tenantsMu.RUnlock()
	return th
}

// getOrCreateTenant returns tenant name's head, creating it if needed, without taking a use of it:
// only for WAL replay, which runs before anything can retire a head.
func (st *Store) getOrCreateTenant(name string) *tenantHead {
	if th := st.tenant(name); th != nil {
		return th
	}
	st.tenantsMu.Lock()
	defer st.tenantsMu.Unlock()
	return st.tenantLocked(name)
}

// acquireTenant returns tenant name's head, creating it if needed, with one use taken: the head
// stays in the map (and keeps every series created in it) until releaseTenant.
func (st *Store) acquireTenant(name string) *tenantHead {
	st.tenantsMu.RLock()
	th := st.tenants[name]
	if th != nil {
		th.users.Add(1)
	}
	st.tenantsMu.RUnlock()
	if th != nil {
		return th
	}
	st.tenantsMu.Lock()
	defer st.tenantsMu.Unlock()
	th = st.tenantLocked(name)
	th.users.Add(1)
	return th
}

// releaseTenant gives back a use taken by acquireTenant.
func (st *Store) releaseTenant(th *tenantHead) { th.users.Add(-1) }

// tenantLocked is getOrCreateTenant with tenantsMu held for writing.
func (st *Store) tenantLocked(name string) *tenantHead {
	if th := st.tenants[name]; th != nil {
		return th
	}
	th := newTenantHead(name)
	// A metric label value must be UTF-8 (WithLabelValues panics otherwise): a WAL written before
	// tenants were validated at every boundary may hold one that is not (found by FuzzWALReplay).
	user := metricUser(name)
	th.ingested = st.metrics.ingestedSamples.WithLabelValues(user)
	th.failed = st.metrics.ingestedSamplesFail.WithLabelValues(user)
	th.created = st.metrics.seriesCreated.WithLabelValues(user)
	th.removed = st.metrics.seriesRemoved.WithLabelValues(user)
	th.oooAppended = st.metrics.oooAppended.WithLabelValues(user)
	st.tenants[name] = th
	return th
}

func metricUser(name string) string { return strings.ToValidUTF8(name, "\uFFFD") }

// retireIfEmpty forgets th when it has no series and nobody may create one: its map entry and its
// per-tenant metric series go, so that tenants that come and go (rotating ids) cannot grow
// memory without bound. A push for the tenant afterwards starts a new head. Called after a drop
// removed series; reports whether th was retired.
func (st *Store) retireIfEmpty(th *tenantHead) bool {
	if th.numSeries.Load() != 0 || th.users.Load() != 0 {
		return false
	}
	st.tenantsMu.Lock()
	defer st.tenantsMu.Unlock()
	// Under the write lock no acquireTenant is between its map read and its use count.
	if st.tenants[th.name] != th || th.users.Load() != 0 || th.numSeries.Load() != 0 {
		return false
	}
	delete(st.tenants, th.name)
	// Under tenantsMu: no push of the tenant can create its exemplar store meanwhile.
	st.exemplars.drop(th.name)
	user := metricUser(th.name)
	st.metrics.ingestedSamples.DeleteLabelValues(user)
	st.metrics.ingestedSamplesFail.DeleteLabelValues(user)
	st.metrics.seriesCreated.DeleteLabelValues(user)
	st.metrics.seriesRemoved.DeleteLabelValues(user)
	st.metrics.oooAppended.DeleteLabelValues(user)
	return true
}

func validateLabels(lset labels.Labels) error {
	if lset.IsEmpty() {
		return fmt.Errorf("%w: empty label set", ErrInvalidLabels)
	}
	if name, dup := lset.HasDuplicateLabelNames(); dup {
		return fmt.Errorf("%w: duplicate label name %q", ErrInvalidLabels, name)
	}
	if lset.Has("") {
		return fmt.Errorf("%w: empty label name", ErrInvalidLabels)
	}
	return nil
}

// lockSeries returns the series of lset in th, locked, creating it (and
// enqueueing its WAL series record) if needed. limit applies to creation;
// replay passes ref != 0 to recreate a logged series under its own ref.
func (st *Store) lockSeries(th *tenantHead, lset labels.Labels, hash uint64, ref uint64, limit int) (*memSeries, bool, error) {
	for {
		ms, created, err := th.series.getOrCreate(hash, lset,
			func() (*memSeries, error) {
				// Labels are validated once, when a series is created: an existing
				// series' labels were valid, and this keeps the check off the hot path.
				if err := validateLabels(lset); err != nil {
					return nil, err
				}
				if limit > 0 {
					for {
						n := th.numSeries.Load()
						if n >= int64(limit) {
							return nil, fmt.Errorf("tenant %q has %d series, limit %d (%s): %w", th.name, n, limit, st.limitFor(th.name).Source, ErrTooManySeries)
						}
						if th.numSeries.CompareAndSwap(n, n+1) {
							break
						}
					}
				} else {
					th.numSeries.Add(1)
				}
				r := ref
				if r == 0 {
					r = st.nextRef.Add(1) - 1
				}
				return &memSeries{ref: r, lset: lset.Copy(), hash: hash}, nil
			},
			func(ms *memSeries) {
				if !st.replaying {
					th.postings.add(ms.ref, ms.lset)
				}
				if st.wal != nil && ref == 0 {
					// Under ms.mu: no sample of the series can be enqueued before this.
					// An enqueue error is sticky in the WAL and the caller's sync reports it.
					_ = st.wal.enqueue(newSeriesEntry(ms.ref, th.name, ms.lset))
				}
			})
		if err != nil {
			return nil, false, err
		}
		if ms.deleted {
			// Truncate removed it between lookup and lock; it is leaving the maps.
			ms.mu.Unlock()
			runtime.Gosched()
			continue
		}
		if created {
			st.metrics.memSeries.Inc()
			th.created.Inc()
		}
		return ms, created, nil
	}
}

// Push appends a batch of series to tenant. Every sample is judged on its own
// (in order within its series): accepted, accepted as an idempotent duplicate
// (same timestamp, same value bits as the newest sample; not logged again),
// or refused with ErrDuplicateSampleForTimestamp or ErrOutOfOrderSample; a
// series may be refused with ErrTooManySeries or ErrInvalidLabels. Refusals
// never stop the rest of the batch and are reported in PushResult.
//
// Push returns after every accepted sample is committed to the WAL (and, for
// idempotent duplicates, after the original sample is), and only then are the
// samples visible. The error is non-nil only when nothing can be acknowledged
// (ErrClosed, ErrWALFailed); the PushResult is then not meaningful. While the
// WAL is failing Push refuses at once with ErrWALFailed, touching nothing.
//
// batch and its slices are read until Push returns and never retained; the
// caller must not modify them meanwhile. Safe for concurrent use. Push is
// Appender + Append for each series + Commit.
func (st *Store) Push(tenant string, batch []SeriesSamples) (PushResult, error) {
	app := st.Appender(tenant)
	for i := range batch {
		app.Append(batch[i].Labels, batch[i].Samples)
	}
	return app.Commit()
}

// refuseSeries copies lset: it may alias the caller's buffers (see
// Appender.Append), and the result outlives them.
func (r *PushResult) refuseSeries(i int, lset labels.Labels, smps []Sample, err error) {
	r.Refused += len(smps)
	r.Errors = append(r.Errors, SampleError{SeriesIndex: i, Labels: lset.Copy(), T: smps[0].T, Count: len(smps), Err: err})
}

// hasVisibleChunk reports whether a closed chunk equal to c exists. Caller holds s.mu.
func (s *memSeries) hasVisibleChunk(c Chunk) bool {
	for _, have := range s.closed {
		if have.MinTime == c.MinTime && have.MaxTime == c.MaxTime && bytes.Equal(have.Data, c.Data) {
			return true
		}
	}
	return false
}

// Select returns the series of tenant matching all matchers (Prometheus
// semantics; no matchers selects all) that have chunks overlapping
// [mint, maxt] (int64 ms, inclusive), sorted by labels, with those chunks in
// time order. Closed chunks share their bytes with the Store (read-only);
// the head chunk is copied. Only committed samples are visible.
func (st *Store) Select(tenant string, mint, maxt int64, matchers ...*labels.Matcher) ([]SeriesChunks, error) {
	for _, m := range matchers {
		if m == nil {
			return nil, fmt.Errorf("selecting tenant %q: %w: nil matcher", tenant, ErrInvalidMatcher)
		}
	}
	th := st.tenant(tenant)
	if th == nil {
		return nil, nil
	}
	refs := th.postings.selectRefs(matchers)
	out := make([]SeriesChunks, 0, len(refs))
	for _, ref := range refs {
		ms := th.series.getByRef(ref)
		if ms == nil {
			continue
		}
		ms.mu.Lock()
		var chks []Chunk
		if !ms.deleted {
			chks = ms.chunksIn(nil, mint, maxt)
		}
		ms.mu.Unlock()
		if len(chks) > 0 {
			out = append(out, SeriesChunks{Labels: ms.lset, Chunks: chks})
		}
	}
	slices.SortFunc(out, func(a, b SeriesChunks) int { return labels.Compare(a.Labels, b.Labels) })
	return out, nil
}

// LabelNames returns the sorted label names of tenant's in-memory series.
func (st *Store) LabelNames(tenant string) []string {
	if th := st.tenant(tenant); th != nil {
		return th.postings.labelNames()
	}
	return nil
}

// LabelValues returns the sorted values of label name in tenant's series.
func (st *Store) LabelValues(tenant, name string) []string {
	if th := st.tenant(tenant); th != nil {
		return th.postings.labelValues(name)
	}
	return nil
}

// Tenants returns the tenants with a head, sorted: those that hold series or were pushed to since
// the last drop that left them without series (such a drop forgets them: retireIfEmpty).
func (st *Store) Tenants() []string {
	st.tenantsMu.RLock()
	defer st.tenantsMu.RUnlock()
	out := make([]string, 0, len(st.tenants))
	for t := range st.tenants {
		out = append(out, t)
	}
	slices.Sort(out)
	return out
}

// Stats returns tenant's series and chunk counts.
func (st *Store) Stats(tenant string) TenantStats {
	th := st.tenant(tenant)
	if th == nil {
		return TenantStats{}
	}
	return TenantStats{Series: th.numSeries.Load(), Chunks: th.numChunks.Load()}
}

// ForEachSeries calls fn for every series of every tenant that has visible
// chunks, with all its chunks in time order (closed chunks shared read-only,
// the head chunk copied). fn runs without Store locks held, so it may take
// its time (hand-over, flush) while writes go on; series created meanwhile
// may or may not be visited. A non-nil error from fn stops the walk and is
// returned. Safe for concurrent use.
func (st *Store) ForEachSeries(fn func(tenant string, lset labels.Labels, chunks []Chunk) error) error {
	return st.walkSeries(func(tenant string, ms *memSeries, chks []Chunk, _ float64) error {
		return fn(tenant, ms.lset, chks)
	})
}

// walkSeries is the one walk behind ForEachSeries, SnapshotSeries and ExportSeries: for every
// series with visible chunks it copies, under the series lock, its chunks (closed ones shared
// read-only, the head copied) and its newest visible value, then calls fn without any Store lock.
// ms.ref and ms.lset are immutable, so fn may read them. A non-nil error from fn stops the walk.
func (st *Store) walkSeries(fn func(tenant string, ms *memSeries, chks []Chunk, lastV float64) error) error {
	return st.walk(false, fn)
}

// walk is walkSeries; with reuse, the chunk list and the head chunk's copy passed to fn are
// buffers reused across calls (valid only during fn), so the walk allocates nothing per series.
func (st *Store) walk(reuse bool, fn func(tenant string, ms *memSeries, chks []Chunk, lastV float64) error) error {
	var ferr error
	var buf []Chunk
	var head []byte
	for _, name := range st.Tenants() {
		th := st.tenant(name)
		if th == nil {
			continue // retired since Tenants: it had no series
		}
		th.series.forEach(func(ms *memSeries) bool {
			ms.mu.Lock()
			var chks []Chunk
			lastV := ms.visLastV
			switch {
			case ms.deleted:
			case !ms.oooEmpty():
				// Merged with the out-of-order samples: fresh chunks, and the newest sample may be
				// one of them (the in-order head went with a drop).
				chks = ms.chunksIn(nil, math.MinInt64, math.MaxInt64)
				if n := len(chks); n > 0 && (ms.head == nil || chks[n-1].MaxTime != ms.headMax) {
					if v, err := lastValue(chks[n-1]); err == nil {
						lastV = v
					}
				}
			case !reuse || (ms.head != nil && ms.headMin == math.MinInt64):
				chks = ms.chunksIn(nil, math.MinInt64, math.MaxInt64)
			case ms.head == nil:
				chks = ms.chunksIn(buf[:0], math.MinInt64, math.MaxInt64)
			default:
				// Every closed chunk ends before the head starts; the head goes into head.
				chks = ms.chunksIn(buf[:0], math.MinInt64, ms.headMin-1)
				head = append(head[:0], ms.head.Bytes()...)
				chks = append(chks, Chunk{MinTime: ms.headMin, MaxTime: ms.headMax, Encoding: chunkenc.EncXOR, Data: head})
			}
			ms.mu.Unlock()
			if reuse {
				buf = chks
			}
			if len(chks) == 0 {
				return true
			}
			ferr = fn(name, ms, chks, lastV)
			return ferr == nil
		})
		if ferr != nil {
			return ferr
		}
	}
	return nil
}

// Truncate forgets data older than before (int64 ms) after it was flushed:
// it drops every chunk whose MaxTime < before, removes series left without
// chunks (and without pending writes), and rewrites the WAL so that it keeps
// only series records of remaining series, samples with T >= before and
// chunk records with MaxTime >= before. The caller guarantees that every
// sample older than before is durable elsewhere: after a restart, samples
// older than before that shared a chunk with newer ones are not replayed.
// bbolt reuses the freed pages but does not shrink the file. Calls are
// serialised; pushes and reads go on concurrently.
func (st *Store) Truncate(before int64) (TruncateStats, error) {
	st.truncMu.Lock()
	defer st.truncMu.Unlock()
	var ts TruncateStats
	if st.closed.Load() {
		return ts, ErrClosed
	}
	// Capture the WAL position before deciding which series live: every series
	// whose record is at or before it was created before this point, so it is
	// in the live set below unless removed.
	var upto uint64
	if st.wal != nil {
		upto = st.wal.lastSeq.Load()
	}
	live := st.dropBefore(before, &ts)
	if st.wal != nil && upto > 0 {
		del, rew, err := st.wal.rewrite(upto, func(r *record) (changed, drop bool) {
			return filterRecord(r, live, before)
		})
		ts.WALRecordsDeleted, ts.WALRecordsRewritten = del, rew
		if err != nil {
			return ts, err
		}
	}
	st.metrics.walTruncations.Inc()
	st.logger.Info("truncated memstore", "before", before, "chunks_removed", ts.ChunksRemoved,
		"series_removed", ts.SeriesRemoved, "wal_records_deleted", ts.WALRecordsDeleted, "wal_records_rewritten", ts.WALRecordsRewritten)
	return ts, nil
}

// dropBefore is Truncate's work in memory: it drops every chunk with
// MaxTime < before and removes the series left without chunks and without
// pending writes. It returns the refs of the series that remain.
func (st *Store) dropBefore(before int64, ts *TruncateStats) map[uint64]struct{} {
	return st.dropChunks(ts, func(*tenantHead, *memSeries) (int64, bool) { return before, true }, dropAllOOO)
}

// dropChunks is dropBefore with a bound per series (DropFlushed's): for each series bound answers
// true for, it drops every chunk with MaxTime < the bound (int64 ms) and removes the series left
// without chunks and without pending writes; series it answers false for are kept whole. It
// returns the refs of the series that remain, which the WAL rewrite keeps.
func (st *Store) dropChunks(ts *TruncateStats, bound func(*tenantHead, *memSeries) (int64, bool), oooDrop func(*memSeries) oooDropMode) map[uint64]struct{} {
	return st.dropChunksHint(ts, bound, oooDrop, false)
}

// dropAllOOO is the oooDrop of Truncate and DropAll: out-of-order samples go with the rest.
func dropAllOOO(*memSeries) oooDropMode { return oooAll }

// dropChunksHint is dropChunks; all says that bound drops everything (DropAll), so that the maps
// of removed series are sized for every series at once.
//
// oooDrop, asked under the series lock, says which out-of-order samples older than the bound go
// too (DropFlushedSeries: those its snapshot sealed).
func (st *Store) dropChunksHint(ts *TruncateStats, bound func(*tenantHead, *memSeries) (int64, bool), oooDrop func(*memSeries) oooDropMode, all bool) map[uint64]struct{} {
	live := map[uint64]struct{}{}
	for _, name := range st.Tenants() {
		th := st.tenant(name)
		if th == nil {
			continue // retired since Tenants: it had no series
		}
		var removed map[uint64]labels.Labels
		if all {
			// Every series goes: size the map once instead of growing it through every power of two.
			removed = make(map[uint64]labels.Labels, th.numSeries.Load())
		} else {
			removed = map[uint64]labels.Labels{}
		}
		chunksRemoved := 0 // counted once per tenant, not with two atomic updates per series
		th.series.forEach(func(ms *memSeries) bool {
			before, drop := bound(th, ms)
			ms.mu.Lock()
			if !drop {
				if !ms.deleted {
					live[ms.ref] = struct{}{}
				}
				ms.mu.Unlock()
				return true
			}
			n, empty := ms.dropBefore(before, oooDrop(ms))
			gone := empty && !ms.deleted
			if gone {
				ms.deleted = true
			} else if !ms.deleted {
				live[ms.ref] = struct{}{}
			}
			ms.mu.Unlock()
			if gone {
				// Out of the maps right away: an appender that finds the deleted
				// series retries its lookup until this is done.
				th.series.remove(ms)
				removed[ms.ref] = ms.lset
			}
			chunksRemoved += n
			return true
		})
		ts.ChunksRemoved += chunksRemoved
		th.numChunks.Add(-int64(chunksRemoved))
		st.metrics.memChunks.Sub(float64(chunksRemoved))
		th.postings.delete(removed)
		th.numSeries.Add(-int64(len(removed)))
		th.removed.Add(float64(len(removed)))
		st.metrics.memSeries.Sub(float64(len(removed)))
		ts.SeriesRemoved += len(removed)
		if len(removed) > 0 {
			st.retireIfEmpty(th)
		}
	}
	return live
}

// DropAll forgets everything: Truncate(math.MaxInt64), with the WAL emptied in
// one transaction that replaces its bucket instead of rewriting it record by
// record (a leaver after a completed hand-over; a joiner discarding a partial
// one). As with Truncate, the caller guarantees the data is safe elsewhere,
// and a series with writes in flight stays (then the WAL is rewritten as
// Truncate does, keeping its series record). Records committed after DropAll
// began are kept. Calls are serialised with Truncate and DropFlushed.
func (st *Store) DropAll() (TruncateStats, error) {
	st.truncMu.Lock()
	defer st.truncMu.Unlock()
	var ts TruncateStats
	if st.closed.Load() {
		return ts, ErrClosed
	}
	var upto uint64
	if st.wal != nil {
		upto = st.wal.lastSeq.Load()
	}
	live := st.dropChunksHint(&ts, func(*tenantHead, *memSeries) (int64, bool) { return math.MaxInt64, true }, dropAllOOO, true)
	if st.wal != nil && upto > 0 {
		var err error
		if len(live) == 0 {
			ts.WALRecordsDeleted, err = st.wal.dropAll(upto)
		} else {
			ts.WALRecordsDeleted, ts.WALRecordsRewritten, err = st.wal.rewrite(upto, func(r *record) (changed, drop bool) {
				return filterRecord(r, live, math.MaxInt64)
			})
		}
		if err != nil {
			return ts, err
		}
	}
	st.metrics.walTruncations.Inc()
	st.logger.Info("dropped everything from memstore", "chunks_removed", ts.ChunksRemoved,
		"series_removed", ts.SeriesRemoved, "wal_records_deleted", ts.WALRecordsDeleted, "wal_records_rewritten", ts.WALRecordsRewritten)
	return ts, nil
}

// filterRecord keeps what Truncate must keep of r, in place.
func filterRecord(r *record, live map[uint64]struct{}, before int64) (changed, drop bool) {
	isLive := func(ref uint64) bool { _, ok := live[ref]; return ok }
	switch r.Type {
	case recSeries:
		n := len(r.Series)
		r.Series = slices.DeleteFunc(r.Series, func(s walSeries) bool { return !isLive(s.Ref) })
		return len(r.Series) != n, len(r.Series) == 0
	case recSamples:
		changed := false
		out := r.Samples[:0]
		for _, e := range r.Samples {
			if !isLive(e.Ref) {
				changed = true
				continue
			}
			// Not a prefix: out-of-order samples make an entry's timestamps unsorted.
			if kept := keepSamplesFrom(e.Samples, before); len(kept) != len(e.Samples) {
				changed = true
				e.Samples = kept
			}
			if len(e.Samples) > 0 {
				out = append(out, e)
			}
		}
		r.Samples = out
		return changed, len(out) == 0
	case recExemplars:
		return filterExemplars(r, before)
	case recHistograms:
		return filterHistograms(r, isLive, func(uint64) int64 { return before })
	default:
		return filterChunks(r, func(c *walChunk) bool { return isLive(c.Ref) && c.Chunk.MaxTime >= before })
	}
}

// filterChunks keeps the chunks of a chunk or chunks record for which keep
// is true, in place.
func filterChunks(r *record, keep func(c *walChunk) bool) (changed, drop bool) {
	n := len(r.Chunks)
	r.Chunks = slices.DeleteFunc(r.Chunks, func(c walChunk) bool { return !keep(&c) })
	return len(r.Chunks) != n, len(r.Chunks) == 0
}

// keepSamplesFrom keeps, in place and in order, the samples with T >= before. An entry's samples
// are in reservation order, which out-of-order samples make unsorted, so it filters the whole
// entry rather than cutting a prefix.
func keepSamplesFrom(smps []Sample, before int64) []Sample {
	i := 0
	for i < len(smps) && smps[i].T >= before {
		i++
	}
	if i == len(smps) {
		return smps
	}
	out := smps[:i]
	for _, smp := range smps[i+1:] {
		if smp.T >= before {
			out = append(out, smp)
		}
	}
	return out
}
