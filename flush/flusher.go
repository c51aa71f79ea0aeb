package flush

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"github.com/prometheus/prometheus/tsdb/chunks"
	"github.com/thanos-io/objstore"

	"github.com/raftingest/raftingest/memstore"
	"github.com/raftingest/raftingest/storage"
)

// Store is what the Flusher needs of the series store (memstore.Store implements it).
type Store interface {
	SnapshotFlush(fn func(s *memstore.FlushSeries) error) error
	DropFlushedSeries(bounds map[uint64]memstore.FlushBound) (memstore.TruncateStats, error)
	// Tenants are the tenants the store still holds: a tenant a drop left without series is gone
	// from it, and the Flusher then forgets the tenant's metric series too.
	Tenants() []string
}

// Deps are the Flusher's collaborators.
type Deps struct {
	Store  Store
	Bucket objstore.Bucket
	// WorkDir receives blocks while they are written and uploaded; it is wiped on New.
	WorkDir string
	// IngesterID is written into each block's Thanos labels (__ingester_id__).
	IngesterID string
	Registerer prometheus.Registerer // may be nil
	Logger     *slog.Logger          // may be nil
	// Now is the wall clock; nil means time.Now. Tests inject a fixed clock.
	Now func() time.Time
}

// Reason says why a flush happened (label reason of cortex_ingester_flushing_enqueued_series_total).
type Reason string

// Reasons of a flush.
const (
	ReasonPeriodic Reason = "periodic"
	ReasonIdle     Reason = "idle"
	ReasonForced   Reason = "forced"
)

// Result describes one flush.
type Result struct {
	Series  int   // series with samples written
	Chunks  int   // chunks written
	Samples int   // samples written
	Blocks  int   // blocks uploaded
	Bytes   int64 // bytes uploaded
	Dropped memstore.TruncateStats
}

// Flusher writes, uploads and drops. All methods are safe for concurrent use; flushes are
// serialised.
type Flusher struct {
	cfg     Config
	d       Deps
	log     *slog.Logger
	metrics *metrics
	now     func() time.Time

	mu sync.Mutex // serialises flushes; guards flushed
	// flushed maps a series ref to the bound below which its samples are in the bucket. A chunk
	// straddling a flush's bound stays whole in memory; this keeps the next flush from writing
	// its older samples again. Pruned to the refs of each snapshot.
	flushed map[uint64]int64

	// A flush in progress, for Progress: series queued and written so far (0, 0 when none).
	progressTotal, progressDone atomic.Int64
}

// Progress reports the flush in progress: series written of those it queued; ok false when no
// flush is writing. Safe for concurrent use.
func (f *Flusher) Progress() (done, total int64, ok bool) {
	total = f.progressTotal.Load()
	return f.progressDone.Load(), total, total > 0
}

// progressLogEvery is how often a long flush logs how far it is.
const progressLogEvery = 5 * time.Second

// New validates cfg and prepares the work directory.
func New(cfg Config, d Deps) (*Flusher, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if d.Store == nil || d.Bucket == nil || d.WorkDir == "" {
		return nil, errors.New("flush: Store, Bucket and WorkDir are required")
	}
	if d.Logger == nil {
		d.Logger = slog.Default()
	}
	now := d.Now
	if now == nil {
		now = time.Now
	}
	// Leftovers of a crash mid-flush: their data is still in the WAL and will be flushed again.
	if err := os.RemoveAll(d.WorkDir); err != nil {
		return nil, fmt.Errorf("flush: wiping work dir %s: %w", d.WorkDir, err)
	}
	if err := os.MkdirAll(d.WorkDir, 0o755); err != nil {
		return nil, fmt.Errorf("flush: creating work dir %s: %w", d.WorkDir, err)
	}
	m, err := newMetrics(d.Registerer)
	if err != nil {
		return nil, err
	}
	return &Flusher{cfg: cfg, d: d, log: d.Logger, metrics: m, now: now, flushed: map[uint64]int64{}}, nil
}

// Run flushes closed ranges and idle series every CheckPeriod until ctx ends. A failed flush is
// logged and counted; its data stays and the next check tries again.
func (f *Flusher) Run(ctx context.Context) {
	t := time.NewTicker(f.cfg.CheckPeriod)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		opCtx, cancel := context.WithTimeout(ctx, f.cfg.OpTimeout)
		_, err := f.FlushDue(opCtx)
		cancel()
		if err != nil && ctx.Err() == nil {
			f.log.Error("periodic flush failed; the data stays in memory and the WAL", "err", err)
		}
	}
}

// Cutoff returns the bound of the periodic flush at wall time now: the end of the newest block
// range that closed at least half a period ago (int64 ms).
func (f *Flusher) Cutoff(now time.Time) int64 {
	return CutoffAt(f.cfg.FlushPeriod, now.UnixMilli())
}

// CutoffAt is the bound of the periodic flush with block ranges of period at nowMs (Unix ms): the
// end of the newest range that closed at least half a period ago. It is also the start of the
// oldest range still in memory: what is older is flushed by the next check, so the distributor
// refuses samples older than it (sample_out_of_bounds) instead of writing them into a range that
// was flushed already (the wiring passes it as distributor.Deps.OldestInMemory).
func CutoffAt(period time.Duration, nowMs int64) int64 {
	p := period.Milliseconds()
	if nowMs < math.MinInt64+p/2 {
		return math.MinInt64
	}
	return alignDown(nowMs-p/2, p)
}

// alignDown returns the start of the range of length p holding t: the largest multiple of p not
// above t, or math.MinInt64 when that multiple is below it (t in the partial range at the bottom
// of int64).
func alignDown(t, p int64) int64 {
	r := t % p
	if r < 0 {
		r += p
	}
	if t < math.MinInt64+r {
		return math.MinInt64
	}
	return t - r
}

// rangeEnd returns start+p, or math.MaxInt64 when that overflows.
func rangeEnd(start, p int64) int64 {
	if start > math.MaxInt64-p {
		return math.MaxInt64
	}
	return start + p
}

// maxRangesPerChunk bounds the block ranges of a chunk enumerated from its MinTime and MaxTime
// alone; a chunk spanning more (its samples far apart) is read to find the ranges that hold data.
const maxRangesPerChunk = 4

// rangesWithData returns, sorted and distinct, the starts of the block ranges of length p that hold
// samples of chks in [from, bound). Its cost follows the chunks and their samples, never the time
// they span: a series with one sample at -9e18 and one now has two ranges, not 1e12 (the loop over
// every range between the oldest and the newest sample ran under the flush lock for hours).
func rangesWithData(chks []chunks.Meta, from, bound, p int64) ([]int64, error) {
	var starts []int64
	add := func(start int64) {
		if n := len(starts); n == 0 || starts[n-1] != start {
			starts = append(starts, start)
		}
	}
	for _, c := range chks {
		lo, hi := max(c.MinTime, from), min(c.MaxTime, bound-1)
		if lo > hi {
			continue
		}
		first, last := alignDown(lo, p), alignDown(hi, p)
		// (last-first)/p in uint64: the span may not fit in int64.
		if uint64(last-first)/uint64(p) < maxRangesPerChunk {
			for s := first; ; s += p {
				add(s)
				if s == last {
					break
				}
			}
			continue
		}
		it := c.Chunk.Iterator(nil)
		for vt := it.Next(); vt != chunkenc.ValNone; vt = it.Next() {
			if t := it.AtT(); t >= from && t < bound {
				add(alignDown(t, p))
			}
		}
		if err := it.Err(); err != nil {
			return nil, fmt.Errorf("decoding chunk [%d, %d]: %w", c.MinTime, c.MaxTime, err)
		}
	}
	slices.Sort(starts)
	return slices.Compact(starts), nil
}

// FlushDue flushes what is due now: samples older than Cutoff(now), and every sample of idle
// series. It returns once the blocks are uploaded and their data dropped, or with the error
// that kept them (the data then stays).
func (f *Flusher) FlushDue(ctx context.Context) (Result, error) {
	now := f.now()
	cutoff := f.Cutoff(now)
	idleBefore := int64(math.MinInt64)
	if f.cfg.IdleTimeout > 0 {
		idleBefore = now.Add(-f.cfg.IdleTimeout).UnixMilli()
	}
	return f.flush(ctx, func(maxT int64) (int64, Reason) {
		if maxT < idleBefore {
			return after(maxT), ReasonIdle
		}
		return min(cutoff, after(maxT)), ReasonPeriodic
	})
}

// FlushAll flushes every sample in memory, uploads the blocks and drops the data from memory
// and the WAL; it returns when the blocks are in the bucket. Samples appended meanwhile stay in
// memory. The hand-over's fallback and POST /ingester/flush call it.
func (f *Flusher) FlushAll(ctx context.Context) (Result, error) {
	return f.flush(ctx, func(maxT int64) (int64, Reason) { return after(maxT), ReasonForced })
}

// after is the bound that includes a sample at t: t+1, or math.MaxInt64 at the very top (a sample
// at math.MaxInt64 then stays in memory; the distributor refuses such timestamps anyway).
func after(t int64) int64 {
	if t == math.MaxInt64 {
		return t
	}
	return t + 1
}

// seriesPlan is one series of a flush: what to write (chunks below bound, above what earlier
// flushes wrote) and the bound to drop below once written.
type seriesPlan struct {
	ref    uint64
	lset   labels.Labels
	chunks []chunks.Meta
	from   int64 // samples below are in the bucket already (MinInt64 when out-of-order ones are due)
	bound  int64 // samples below are written by this flush
	// drop is what DropFlushedSeries gets back once the series is written.
	drop memstore.FlushBound
}

// flush is the one procedure: snapshot, plan bounds with boundOf(maxT) per series, write one
// block per tenant and block range, upload each (retrying), drop per tenant what was uploaded.
func (f *Flusher) flush(ctx context.Context, boundOf func(maxT int64) (int64, Reason)) (res Result, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	begin := time.Now()
	defer func() {
		f.metrics.duration.Observe(time.Since(begin).Seconds())
		f.metrics.queueLength.Set(0)
		if err != nil {
			f.metrics.failures.Inc()
		}
	}()

	plans := map[string][]seriesPlan{}
	seen := map[uint64]int64{}
	p := f.cfg.FlushPeriod.Milliseconds()
	reasons := map[Reason]int{}
	queued := 0
	err = f.d.Store.SnapshotFlush(func(ss *memstore.FlushSeries) error {
		tenant, ref, lset := ss.Tenant, ss.Ref, ss.Labels
		from, ok := f.flushed[ref]
		if !ok {
			from = math.MinInt64
		}
		seen[ref] = from
		maxT := int64(math.MinInt64)
		if n := len(ss.Chunks); n > 0 {
			maxT = ss.Chunks[n-1].MaxTime
		}
		minOOO := int64(math.MaxInt64)
		for _, c := range ss.OOO {
			maxT, minOOO = max(maxT, c.MaxTime), min(minOOO, c.MinTime)
		}
		bound, reason := boundOf(maxT)
		// Out-of-order samples below from arrived after the flush that wrote up to from: they are
		// written too (into the block of their range, beside the one written then).
		oooDue := minOOO < bound
		if !oooDue && (len(ss.Chunks) == 0 || ss.Chunks[0].MinTime >= bound || from >= bound) {
			return nil
		}
		mchks := ss.Chunks
		if oooDue {
			// In-order chunks from `from` on (those before were written), every out-of-order sample
			// below bound, merged into sorted, non-overlapping chunks without duplicates.
			in := make([]memstore.Chunk, 0, len(ss.Chunks))
			for _, c := range ss.Chunks {
				if c.MaxTime >= from {
					in = append(in, c)
				}
			}
			clipped, err := clipMemChunks(in, from)
			if err != nil {
				return fmt.Errorf("flush: tenant %q series %s: %w", tenant, lset, err)
			}
			if mchks, err = memstore.MergeChunks(clipped, ss.OOO); err != nil {
				return fmt.Errorf("flush: tenant %q series %s: %w", tenant, lset, err)
			}
			from = math.MinInt64
		}
		cm := make([]chunks.Meta, 0, len(mchks))
		for _, c := range mchks {
			if c.MaxTime < from || c.MinTime >= bound {
				continue
			}
			ch, err := chunkenc.FromData(c.Encoding, c.Data)
			if err != nil {
				return fmt.Errorf("flush: chunk [%d, %d] of tenant %q series %s: %w", c.MinTime, c.MaxTime, tenant, lset, err)
			}
			cm = append(cm, chunks.Meta{Chunk: ch, MinTime: c.MinTime, MaxTime: c.MaxTime})
		}
		if len(cm) == 0 {
			return nil
		}
		plans[tenant] = append(plans[tenant], seriesPlan{ref: ref, lset: lset, chunks: cm, from: from, bound: bound,
			drop: memstore.FlushBound{Before: bound, OOOSeal: ss.OOOSeal, OOOPending: ss.OOOPending, WALSeq: ss.WALSeq}})
		reasons[reason]++
		queued++
		return nil
	})
	if err != nil {
		return res, err
	}
	// Forget refs that left memory.
	for ref := range f.flushed {
		if _, ok := seen[ref]; !ok {
			delete(f.flushed, ref)
		}
	}
	for r, n := range reasons {
		f.metrics.enqueued.WithLabelValues(string(r)).Add(float64(n))
	}
	f.metrics.queueLength.Set(float64(queued))
	if queued == 0 {
		return res, nil
	}

	var errs []error
	bounds := map[uint64]memstore.FlushBound{}
	f.progressDone.Store(0)
	f.progressTotal.Store(int64(queued))
	defer f.progressTotal.Store(0)
	lastLog := begin
	for _, tenant := range slices.Sorted(maps.Keys(plans)) {
		if now := time.Now(); now.Sub(lastLog) >= progressLogEvery {
			lastLog = now
			done := f.progressDone.Load()
			rate := float64(done) / now.Sub(begin).Seconds()
			left := time.Duration(0)
			if rate > 0 {
				left = time.Duration(float64(int64(queued)-done) / rate * float64(time.Second)).Round(time.Second)
			}
			f.log.Info("flush in progress", "series", done, "series_total", queued, "series_per_s", int64(rate),
				"time_left", left, "elapsed", now.Sub(begin).Round(time.Millisecond))
		}
		tres, err := f.flushTenant(ctx, tenant, plans[tenant], p)
		f.progressDone.Add(int64(len(plans[tenant])))
		if err != nil {
			errs = append(errs, err)
			continue
		}
		res.Series += tres.Series
		res.Chunks += tres.Chunks
		res.Samples += tres.Samples
		res.Blocks += tres.Blocks
		res.Bytes += tres.Bytes
		for _, sp := range plans[tenant] {
			bounds[sp.ref] = sp.drop
		}
		f.metrics.queueLength.Sub(float64(len(plans[tenant])))
	}
	if len(bounds) > 0 {
		ts, derr := f.d.Store.DropFlushedSeries(bounds)
		res.Dropped = ts
		if derr != nil {
			// The blocks are uploaded; what stays in memory will be written again by a later flush
			// only above f.flushed, and the bucket reader deduplicates anyway.
			errs = append(errs, fmt.Errorf("flush: dropping flushed data from memory and the WAL: %w", derr))
		}
		for ref, b := range bounds {
			// A flush of out-of-order samples alone may end below what an earlier one wrote.
			if prev, ok := f.flushed[ref]; !ok || b.Before > prev {
				f.flushed[ref] = b.Before
			}
		}
		f.forgetGoneTenants(plans)
	}
	f.log.Info("flush done", "series", res.Series, "chunks", res.Chunks, "samples", res.Samples, "blocks", res.Blocks,
		"bytes", res.Bytes, "series_removed", res.Dropped.SeriesRemoved, "duration", time.Since(begin), "failed_tenants", len(errs))
	return res, errors.Join(errs...)
}

// forgetGoneTenants deletes the per-user metric series of the flushed tenants the store no longer
// holds (the drop left them without series), so that tenants that come and go do not grow the
// metrics without bound. A tenant that pushes again starts its counters afresh, which rate()
// reads as a counter reset.
func (f *Flusher) forgetGoneTenants(plans map[string][]seriesPlan) {
	held := f.d.Store.Tenants()
	for tenant := range plans {
		if _, ok := slices.BinarySearch(held, tenant); ok {
			continue
		}
		for _, v := range []*prometheus.CounterVec{f.metrics.seriesFlushed, f.metrics.chunksStored, f.metrics.bytesStored, f.metrics.samplesStored} {
			v.DeleteLabelValues(tenant)
		}
	}
}

// flushTenant writes and uploads the blocks of one tenant. Either every block of the tenant is
// uploaded (nil), or the error says why not and the tenant's data must stay.
func (f *Flusher) flushTenant(ctx context.Context, tenant string, plans []seriesPlan, p int64) (res Result, err error) {
	byRange := map[int64][]storage.Series{}
	for _, sp := range plans {
		starts, err := rangesWithData(sp.chunks, sp.from, sp.bound, p)
		if err != nil {
			return res, fmt.Errorf("flush: tenant %q series %s: %w", tenant, sp.lset, err)
		}
		for _, start := range starts {
			end := rangeEnd(start, p)
			cl, err := storage.ClipChunks(sp.chunks, max(start, sp.from), min(end, sp.bound))
			if err != nil {
				return res, fmt.Errorf("flush: tenant %q series %s: %w", tenant, sp.lset, err)
			}
			if len(cl) > 0 {
				byRange[start] = append(byRange[start], storage.Series{Labels: sp.lset, Chunks: cl})
			}
		}
	}
	// On error, blocks of this tenant already uploaded stay in the bucket: their data stays in
	// memory too, a later flush uploads it again, and readers deduplicate.
	series := map[string]struct{}{}
	for _, start := range slices.Sorted(maps.Keys(byRange)) {
		meta, err := storage.WriteBlock(ctx, f.d.WorkDir, byRange[start], storage.BlockOptions{
			MinTime: start, MaxTime: rangeEnd(start, p),
			Labels: map[string]string{storage.TenantLabel: tenant, storage.IngesterLabel: f.d.IngesterID},
		})
		if errors.Is(err, storage.ErrEmptyBlock) {
			continue
		}
		if err != nil {
			return res, fmt.Errorf("flush: writing block [%d, %d) of tenant %q: %w", start, rangeEnd(start, p), tenant, err)
		}
		dir := filepath.Join(f.d.WorkDir, meta.ULID.String())
		err = f.upload(ctx, tenant, dir, meta)
		os.RemoveAll(dir)
		if err != nil {
			return res, err
		}
		res.Blocks++
		res.Bytes += meta.BlockSize()
		res.Chunks += int(meta.Stats.NumChunks)
		res.Samples += int(meta.Stats.NumSamples)
		for _, s := range byRange[start] {
			series[s.Labels.String()] = struct{}{}
		}
		f.metrics.chunksStored.WithLabelValues(tenant).Add(float64(meta.Stats.NumChunks))
		f.metrics.bytesStored.WithLabelValues(tenant).Add(float64(meta.BlockSize()))
		f.metrics.samplesStored.WithLabelValues(tenant).Add(float64(meta.Stats.NumSamples))
	}
	res.Series = len(series)
	f.metrics.seriesFlushed.WithLabelValues(tenant).Add(float64(res.Series))
	return res, nil
}

// upload uploads one block, retrying with doubling backoff until it succeeds or ctx ends. A
// block that never made it is removed from the bucket, best effort, so no partial block stays.
func (f *Flusher) upload(ctx context.Context, tenant, dir string, meta storage.Meta) error {
	backoff := f.cfg.RetryMinBackoff
	for attempt := 1; ; attempt++ {
		err := storage.UploadBlock(ctx, f.d.Bucket, tenant, dir, meta)
		if err == nil {
			f.metrics.uploads.Inc()
			return nil
		}
		f.metrics.uploadFailures.Inc()
		f.log.Warn("block upload failed; retrying", "tenant", tenant, "block", meta.ULID.String(), "attempt", attempt,
			"backoff", backoff, "err", err)
		select {
		case <-ctx.Done():
			cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			_ = storage.DeletePartialBlock(cctx, f.d.Bucket, tenant, meta)
			cancel()
			return fmt.Errorf("flush: giving up on block %s of tenant %q after %d attempts (%w): %w", meta.ULID, tenant, attempt, ctx.Err(), err)
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, f.cfg.RetryMaxBackoff)
	}
}

// ServeHTTP is POST /ingester/flush: flush everything in memory and answer once the blocks are
// in the bucket (200, with what was flushed), or 500 with the reason (the data is kept).
func (f *Flusher) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "use POST to flush this ingester's in-memory data to the bucket", http.StatusMethodNotAllowed)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), f.cfg.OpTimeout)
	defer cancel()
	res, err := f.FlushAll(ctx)
	if err != nil {
		http.Error(w, fmt.Sprintf("flush failed, the data stays in memory and the WAL: %v", err), http.StatusInternalServerError)
		return
	}
	fmt.Fprintf(w, "flushed %d series, %d chunks, %d samples in %d blocks (%d bytes)\n", res.Series, res.Chunks, res.Samples, res.Blocks, res.Bytes)
}

// clipMemChunks drops the samples before from out of the first chunks of chks (sorted, not
// overlapping), re-encoding the one that straddles from: they were written by an earlier flush.
func clipMemChunks(chks []memstore.Chunk, from int64) ([]memstore.Chunk, error) {
	if len(chks) == 0 || chks[0].MinTime >= from {
		return chks, nil
	}
	cm := make([]chunks.Meta, 0, len(chks))
	for _, c := range chks {
		ch, err := chunkenc.FromData(c.Encoding, c.Data)
		if err != nil {
			return nil, fmt.Errorf("chunk [%d, %d]: %w", c.MinTime, c.MaxTime, err)
		}
		cm = append(cm, chunks.Meta{Chunk: ch, MinTime: c.MinTime, MaxTime: c.MaxTime})
	}
	cl, err := storage.ClipChunks(cm, from, math.MaxInt64)
	if err != nil {
		return nil, err
	}
	out := make([]memstore.Chunk, 0, len(cl))
	for _, m := range cl {
		out = append(out, memstore.Chunk{MinTime: m.MinTime, MaxTime: m.MaxTime, Encoding: m.Chunk.Encoding(), Data: m.Chunk.Bytes()})
	}
	return out, nil
}
