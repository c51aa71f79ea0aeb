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
// wrote: in-order appends are in order per series, so every one appended after the snapshot is
// newer than the snapshot's newest one; out-of-order samples are told apart by a count per series
// (FlushSeries.OOOMark).

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
// serialised with Truncate; pushes and reads go on concurrently. Out-of-order samples are kept
// (SnapshotSeries does not say which it saw), and the sample records of their series: a flush
// that writes them uses SnapshotFlush and DropFlushedSeries. A store accepting out-of-order
// samples must not use DropFlushed (a series receiving its first one during the call could lose
// it from the WAL).
func (st *Store) DropFlushed(bounds map[uint64]int64) (TruncateStats, error) {
	fb := make(map[uint64]FlushBound, len(bounds))
	for ref, b := range bounds {
		// No seal matches (seals start at 1) and out-of-order samples count as pending: they stay
		// in memory, and their series' sample records whole; the WAL position is "everything":
		// other series are filtered as before.
		fb[ref] = FlushBound{Before: b, OOOPending: true, WALSeq: math.MaxUint64}
	}
	return st.DropFlushedSeries(fb)
}

// FlushBound is what a flush wrote of one series (DropFlushedSeries): every sample older than
// Before of the snapshot it took with SnapshotFlush, whose FlushSeries fields it gives back.
type FlushBound struct {
	Before     int64
	OOOSeal    uint64 // FlushSeries.OOOSeal
	OOOPending bool   // FlushSeries.OOOPending
	WALSeq     uint64 // FlushSeries.WALSeq
}

// FlushSeries is one series of a SnapshotFlush.
type FlushSeries struct {
	Tenant string
	Ref    uint64
	Labels labels.Labels
	// Chunks are the in-order chunks, in time order, not overlapping (closed ones shared read-only,
	// the head copied).
	Chunks []Chunk
	// OOO are the out-of-order samples' chunks, sealed by this snapshot: each sorted, overlapping
	// each other and Chunks in any way (MergeChunks merges them). Samples arriving later are not
	// among them and stay in memory when DropFlushedSeries drops these.
	OOO []Chunk
	// OOOSeal numbers the seal; OOOPending says that out-of-order samples were pending (reserved,
	// not visible) at the snapshot; WALSeq is the WAL's last sequence number when the snapshot
	// began. DropFlushedSeries needs all three back (FlushBound).
	OOOSeal    uint64
	OOOPending bool
	WALSeq     uint64
}

// SnapshotFlush is SnapshotSeries for a flush that handles out-of-order samples: each series'
// in-order chunks and its out-of-order chunks apart, so that the flush can write out-of-order
// samples below what it wrote before (they arrived after), and what DropFlushedSeries needs to
// drop exactly what the snapshot held. It seals each series' out-of-order data (ooo.go). s is
// reused across calls; its slices may be kept.
func (st *Store) SnapshotFlush(fn func(s *FlushSeries) error) error {
	var walSeq uint64
	if st.wal != nil {
		walSeq = st.wal.lastSeq.Load()
	}
	var ferr error
	var s FlushSeries
	for _, name := range st.Tenants() {
		th := st.tenant(name)
		if th == nil {
			continue
		}
		th.series.forEach(func(ms *memSeries) bool {
			ms.mu.Lock()
			if ms.deleted {
				ms.mu.Unlock()
				return true
			}
			s = FlushSeries{Tenant: name, Ref: ms.ref, Labels: ms.lset, WALSeq: walSeq,
				Chunks: ms.inOrderChunksIn(nil, math.MinInt64, math.MaxInt64)}
			var nc int
			s.OOO, s.OOOSeal, s.OOOPending, nc = ms.sealOOO()
			ms.mu.Unlock()
			if nc > 0 {
				th.numChunks.Add(int64(nc))
				st.metrics.memChunks.Add(float64(nc))
			}
			if len(s.Chunks) == 0 && len(s.OOO) == 0 {
				return true
			}
			ferr = fn(&s)
			return ferr == nil
		})
		if ferr != nil {
			return ferr
		}
	}
	return nil
}

// DropFlushedSeries is DropFlushed with what SnapshotFlush gave: for each series the in-order
// chunks ending before Before go, and the out-of-order samples older than Before that its
// snapshot sealed (none if another snapshot sealed since); out-of-order samples that arrived
// since stay. In the WAL, the series' samples older than Before are dropped only from records
// committed before the snapshot began, and from none of its records when out-of-order samples
// were pending at the snapshot; a later flush's drop removes what stays. A sample kept in the
// WAL after it was flushed comes back on replay and is flushed again, which the bucket's readers
// and the compactor deduplicate.
func (st *Store) DropFlushedSeries(bounds map[uint64]FlushBound) (TruncateStats, error) {
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
	oooRefs := map[uint64]struct{}{} // series with out-of-order samples: see filterFlushed
	exBounds := exemplarBounds{}     // the flushed series' bounds by tenant and labels
	live := st.dropChunks(&ts, func(th *tenantHead, ms *memSeries) (int64, bool) {
		b, flushed := bounds[ms.ref]
		if flushed {
			exBounds.add(th.name, ms, b)
		}
		return b.Before, flushed
	}, func(ms *memSeries) oooDropMode {
		if ms.ooo == nil {
			return oooKeep
		}
		oooRefs[ms.ref] = struct{}{}
		if ms.ooo.seals == bounds[ms.ref].OOOSeal {
			return oooSealed
		}
		return oooKeep
	})
	if st.wal != nil && upto > 0 {
		del, rew, err := st.wal.rewrite(upto, func(r *record) (changed, drop bool) {
			if r.Type == recExemplars {
				return exBounds.filter(r, st.hashFn)
			}
			return filterFlushed(r, live, bounds, oooRefs)
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
//
// A series keeps its samples older than the bound in records committed after its snapshot began
// (they may be out-of-order samples the snapshot did not hold, even of a series that had none when
// the drop looked), and a series with out-of-order samples (oooRefs) in every record when some
// were pending at the snapshot.
func filterFlushed(r *record, live map[uint64]struct{}, bounds map[uint64]FlushBound, oooRefs map[uint64]struct{}) (changed, drop bool) {
	isLive := func(ref uint64) bool { _, ok := live[ref]; return ok }
	boundOf := func(ref uint64) int64 {
		if b, ok := bounds[ref]; ok {
			return b.Before
		}
		return math.MinInt64
	}
	sampleBound := func(ref uint64) int64 {
		b := bounds[ref]
		if _, ooo := oooRefs[ref]; r.seq > b.WALSeq || (ooo && b.OOOPending) {
			return math.MinInt64
		}
		return boundOf(ref)
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
			if kept := keepSamplesFrom(e.Samples, sampleBound(e.Ref)); len(kept) != len(e.Samples) {
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
		return false, false // DropFlushedSeries filters them by exemplarBounds (by labels, not ref)
	case recHistograms:
		return filterHistograms(r, isLive, sampleBound)
	default:
		return filterChunks(r, func(c *walChunk) bool { return isLive(c.Ref) && c.Chunk.MaxTime >= boundOf(c.Ref) })
	}
}
