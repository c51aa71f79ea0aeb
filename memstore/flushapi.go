package memstore

import (
	"math"

	"github.com/prometheus/prometheus/model/labels"
)

// This file is the API of flushing to long-term storage: a snapshot of every series that names it
// by ref, and a drop of exactly what a flush wrote, series by series.
//
// Why not ForEachSeries + Truncate: Truncate(before) drops every chunk older than before, including
// samples appended after the flush took its snapshot (a series at 1:59 that receives 1:59:30 while
// the 2:00 block is being uploaded), and whole series created during the flush. DropFlushed takes
// a bound per series ref instead, computed from the snapshot, so it can only drop what the flush
// wrote: appends are in order per series, so every sample appended after the snapshot is newer
// than the snapshot's newest one.

// SnapshotSeries calls fn for every series of every tenant that has visible chunks, with the
// series' ref (unique in the Store, never reused while it is open) and all its visible chunks in
// time order (closed chunks shared read-only, the head chunk copied). Like ForEachSeries, fn runs
// without Store locks, writes go on meanwhile, and series created during the walk may or may not
// be visited. A non-nil error from fn stops the walk and is returned.
func (st *Store) SnapshotSeries(fn func(tenant string, ref uint64, lset labels.Labels, chunks []Chunk) error) error {
	return st.walkSeries(func(tenant string, ms *memSeries, chks []Chunk, _ float64) error {
		return fn(tenant, ms.ref, ms.lset, chks)
	})
}

// DropFlushed forgets what a flush made durable elsewhere. bounds maps a series ref (from
// SnapshotSeries) to a timestamp (int64 ms): every sample of that series older than the bound is
// in long-term storage. For each such series it drops the chunks whose MaxTime is below the bound
// (a chunk straddling the bound stays whole in memory), removes the series if nothing is left (no
// chunk, no pending write), and rewrites the WAL so that it keeps no series record of a removed
// series, no sample older than its series' bound and no chunk record ending before it. Series not
// in bounds are untouched, so series created or written during the flush lose nothing.
//
// The caller guarantees that every sample of ref older than bounds[ref] is durable elsewhere:
// after a restart, such samples that shared a chunk with newer ones are not replayed. Calls are
// serialised with Truncate; pushes and reads go on concurrently.
func (st *Store) DropFlushed(bounds map[uint64]int64) (TruncateStats, error) {
	st.truncMu.Lock()
	defer st.truncMu.Unlock()
	var ts TruncateStats
	if st.closed.Load() {
		return ts, ErrClosed
	}
	if len(bounds) == 0 {
		return ts, nil
	}
	// As in Truncate: capture the WAL position before deciding which series live, so every series
	// whose record is at or before it is in the live set below unless removed.
	var upto uint64
	if st.wal != nil {
		upto = st.wal.lastSeq.Load()
	}
	live := st.dropChunks(&ts, func(ms *memSeries) (int64, bool) {
		bound, flushed := bounds[ms.ref]
		return bound, flushed
	})
	if st.wal != nil && upto > 0 {
		del, rew, err := st.wal.rewrite(upto, func(r *record) (changed, drop bool) {
			return filterFlushed(r, live, bounds)
		})
		ts.WALRecordsDeleted, ts.WALRecordsRewritten = del, rew
		if err != nil {
			return ts, err
		}
	}
	st.metrics.walTruncations.Inc()
	st.logger.Info("dropped flushed data", "series_flushed", len(bounds), "chunks_removed", ts.ChunksRemoved,
		"series_removed", ts.SeriesRemoved, "wal_records_deleted", ts.WALRecordsDeleted, "wal_records_rewritten", ts.WALRecordsRewritten)
	return ts, nil
}

// filterFlushed keeps what DropFlushed must keep of r, in place. A ref without a bound keeps
// everything (bound MinInt64). Idempotent, so a rewrite interrupted by a crash can be redone.
func filterFlushed(r *record, live map[uint64]struct{}, bounds map[uint64]int64) (changed, drop bool) {
	isLive := func(ref uint64) bool { _, ok := live[ref]; return ok }
	boundOf := func(ref uint64) int64 {
		if b, ok := bounds[ref]; ok {
			return b
		}
		return math.MinInt64
	}
	switch r.Type {
	case recSeries:
		n := len(r.Series)
		kept := r.Series[:0]
		for _, s := range r.Series {
			if isLive(s.Ref) {
				kept = append(kept, s)
			}
		}
		r.Series = kept
		return len(kept) != n, len(kept) == 0
	case recSamples:
		changed := false
		out := r.Samples[:0]
		for _, e := range r.Samples {
			if !isLive(e.Ref) {
				changed = true
				continue
			}
			b := boundOf(e.Ref)
			i := 0
			for i < len(e.Samples) && e.Samples[i].T < b {
				i++
			}
			if i > 0 {
				changed = true
				e.Samples = e.Samples[i:]
			}
			if len(e.Samples) > 0 {
				out = append(out, e)
			}
		}
		r.Samples = out
		return changed, len(out) == 0
	default:
		return filterChunks(r, func(c *walChunk) bool { return isLive(c.Ref) && c.Chunk.MaxTime >= boundOf(c.Ref) })
	}
}
