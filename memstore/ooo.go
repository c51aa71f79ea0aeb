package memstore

import (
	"fmt"
	"slices"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	promstorage "github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"github.com/prometheus/prometheus/tsdb/chunks"
)

// Out-of-order samples (-ingester.out-of-order-time-window).
//
// Acceptance. A sample older than its series' newest reserved sample (the frontier, lastT) is
// accepted out of order when the tenant's window w > 0 and t >= lastT - w. Prometheus
// (tsdb/head_append.go, memSeries.appendable) measures the window from the head's max time, the
// newest sample of any series of the TSDB (one per tenant in Mimir); we measure it from the
// series' own newest sample: it needs no tenant-wide atomic on the in-order path, and for a series
// that keeps up with the others the two agree. Older samples are refused with ErrSampleTooOld
// (Mimir's sample-too-old); with w = 0 they are refused with ErrOutOfOrderSample as before. The
// distributor's sample_out_of_bounds bound (the oldest block range still in memory) applies
// before either, so the window is in effect capped by it.
//
// Duplicates. The rule of the in-order path holds for out-of-order samples too: a sample whose
// timestamp the series already holds (visible, pending, in order or not) is accepted silently
// when its value has the same bits and refused with ErrDuplicateSampleForTimestamp otherwise.
// Prometheus drops an out-of-order duplicate silently whatever its value; we keep our one rule.
// "Holds" means in memory: once a flush dropped a timestamp from memory, an out-of-order sample at
// it is accepted whatever its value and lands in a block that overlaps the flushed one; the
// compactor and the readers keep one value per timestamp (which one is not specified).
//
// Flush. A flush snapshot seals the out-of-order data it takes (sealOOO); its drop removes the
// sealed samples below its bound only, so samples arriving during the flush stay. In the WAL it
// filters samples older than the bound only in records committed before the snapshot began
// (FlushSeries.WALSeq) — a sample record does not say which of its samples were out of order —
// and in none of the series' records when out-of-order samples were pending at the snapshot
// (they may be logged before it and applied after it).
//
// Memory. Out-of-order samples never touch the in-order head: each series gets an oooData on its
// first one, holding up to oooCap samples sorted in a small slice (Prometheus's OOO head,
// out_of_order_cap 32), cut into an XOR chunk when full. Those chunks are sorted inside but may
// overlap each other and the in-order chunks; every reader gets the series merged
// (mergeChunks, Prometheus's compacting chunk-series merger), sorted and without duplicates.
//
// WAL. Out-of-order samples are logged in the same samples records as in-order ones (the record
// format's timestamp deltas are signed), so no new record version: replay applies every logged
// sample whatever the window is then, a sample older than the series' visible data going to the
// out-of-order part (a lowered window never drops acknowledged data).
//
// Order. Ops of a series are reserved, logged and applied in one order. An out-of-order sample is
// reserved as a pending op marked oooOp, without moving the frontier, and applyUpTo puts it into
// the out-of-order part as it was classified then. Replay classifies each logged sample against
// the frontier it rebuilds, which is the one the sample met when it was pushed (or older, after a
// drop filtered the WAL: then the sample may land in order, which reads cannot tell apart).

// oooCap is how many out-of-order samples a series keeps uncompressed before cutting them into a
// chunk: Prometheus's default out_of_order_cap.
const oooCap = 32

// ErrSampleTooOld refuses an out-of-order sample older than the series' newest sample minus the
// out-of-order window (Mimir's sample-too-old). It wraps ErrOutOfOrderSample, so callers that map
// refusals by errors.Is keep treating it as one.
var ErrSampleTooOld = fmt.Errorf("%w: older than the series' newest sample minus -ingester.out-of-order-time-window (sample-too-old)", ErrOutOfOrderSample)

// oooData is a series' out-of-order samples. Guarded by the series' mu.
type oooData struct {
	head   []Sample // sorted by T, distinct timestamps, at most oooCap
	chunks []Chunk  // XOR; each sorted; in the order they were cut; may overlap anything
	// merged is how many of chunks, from the first, are sorted and overlap none of each other (a
	// compaction's output, insertOOO): a duplicate check decodes at most one of them.
	merged int
	// sealed is what the last flush snapshot (SnapshotFlush) took of the out-of-order data: the
	// flush drops its samples below its bound (DropFlushedSeries), while samples that arrive
	// meanwhile go to head and chunks and stay. Readers see all three.
	sealed []Chunk
	// seals counts SnapshotFlush's seals: a drop acts on the sealed chunks only if no other
	// snapshot sealed since its own.
	seals uint64
	// reserved and applied count out-of-order samples ever reserved and made visible:
	// reserved - applied are pending (reserved, maybe logged, not visible).
	reserved, applied uint64
	// hist is the series' native histogram state (histogram.go); nil until its first histogram.
	hist *histData
}

// oooOp marks a pending op as an out-of-order sample (pendingOp.chunk == oooOp): applyUpTo puts
// it into the out-of-order part, as it was classified when reserved. A sentinel pointer rather
// than a field keeps pendingOp at 24 bytes.
var oooOp = &Chunk{}

// OutOfOrderWindow gives the out-of-order window of a tenant's pushes (runtime overrides). It is
// asked once per push, so a change applies to the next push.
type OutOfOrderWindow func(tenant string) time.Duration

// SetOutOfOrderWindow replaces the per-tenant out-of-order window lookup (nil: every tenant gets
// Config.OutOfOrderTimeWindow). Safe for concurrent use.
func (st *Store) SetOutOfOrderWindow(f OutOfOrderWindow) {
	if f == nil {
		st.oooWindow.Store(nil)
		return
	}
	st.oooWindow.Store(&f)
}

// oooWindowMs is the out-of-order window of tenant's pushes now, in ms.
func (st *Store) oooWindowMs(tenant string) int64 {
	w := st.cfg.OutOfOrderTimeWindow
	if f := st.oooWindow.Load(); f != nil {
		w = (*f)(tenant)
	}
	if w <= 0 {
		return 0
	}
	return w.Milliseconds()
}

// checkOOO classifies (t, v) with t < s.lastT (check said appendOutOfOrder) under window ms:
// appendIdempotent or appendDuplicate when the series already holds t, appendOutOfOrder when t is
// outside the window (or the window is 0), appendOOO when accepted. pendingHit reports that the
// sample met is still pending. Caller holds s.mu.
func (s *memSeries) checkOOO(t int64, v float64, window int64) (r appendResult, pendingHit bool) {
	if window <= 0 {
		return appendOutOfOrder, false
	}
	if bound := s.lastT - window; bound <= s.lastT && t < bound { // bound > lastT: underflow, no bound
		return appendOutOfOrder, false
	}
	if have, ok, pend := s.sampleAt(t); ok {
		if float64bitsEqual(have, v) {
			return appendIdempotent, pend
		}
		return appendDuplicate, false
	}
	return appendOOO, false
}

// sampleAt finds the value the series holds at t, visible or pending. Slow (decodes the chunks
// around t): only the out-of-order path uses it. Caller holds s.mu.
func (s *memSeries) sampleAt(t int64) (v float64, ok, pending bool) {
	for _, op := range s.pending[s.pendStart:] {
		if (op.chunk == nil || op.chunk == oooOp) && op.s.T == t {
			return op.s.V, true, true
		}
		if op.chunk != nil && op.chunk != oooOp && op.chunk.MinTime <= t && t <= op.chunk.MaxTime {
			if v, ok := chunkSampleAt(*op.chunk, t); ok {
				return v, true, true
			}
		}
	}
	if s.ooo != nil {
		if i, found := slices.BinarySearchFunc(s.ooo.head, t, cmpSampleT); found {
			return s.ooo.head[i].V, true, false
		}
		for _, cs := range [][]Chunk{s.ooo.sealed, s.ooo.chunks} {
			for _, c := range cs {
				if c.MinTime <= t && t <= c.MaxTime {
					if v, ok := chunkSampleAt(c, t); ok {
						return v, true, false
					}
				}
			}
		}
	}
	for _, c := range s.closed {
		if c.MinTime <= t && t <= c.MaxTime {
			if v, ok := chunkSampleAt(c, t); ok {
				return v, true, false
			}
		}
	}
	if s.head != nil && s.headMin <= t && t <= s.headMax {
		if v, ok := chunkSampleAt(Chunk{Encoding: chunkenc.EncXOR, Data: s.head.Bytes()}, t); ok {
			return v, true, false
		}
	}
	return 0, false, false
}

func cmpSampleT(s Sample, t int64) int {
	switch {
	case s.T < t:
		return -1
	case s.T > t:
		return 1
	}
	return 0
}

// chunkSampleAt decodes c up to t.
func chunkSampleAt(c Chunk, t int64) (float64, bool) {
	ch, err := chunkenc.FromData(c.Encoding, c.Data)
	if err != nil {
		return 0, false
	}
	it := ch.Iterator(nil)
	for it.Next() == chunkenc.ValFloat {
		st, sv := it.At()
		if st == t {
			return sv, true
		}
		if st > t {
			break
		}
	}
	return 0, false
}

// reserveOOO reserves an accepted out-of-order sample: pending like any op, but the frontier
// stays. Caller holds s.mu.
func (s *memSeries) reserveOOO(smp Sample) {
	if s.ooo == nil {
		s.ooo = &oooData{}
	}
	s.ooo.reserved++
	s.pending = append(s.pending, pendingOp{s: smp, chunk: oooOp})
	s.reservedEnd++
}

// oooCompactAfter is how many chunks cut since the last compaction make insertOOO merge them into
// the sorted, non-overlapping ones. Out-of-order chunks overlap one another (each holds what
// arrived together, from anywhere in the window), so the duplicate check (sampleAt) had to decode
// every one of them for each sample: 0.9 ms a sample at 75k out-of-order samples of one series,
// under its lock (found by review). Merged, a check decodes at most one merged chunk and the
// oooCompactAfter newer ones; a compaction costs a pass over the series' out-of-order data once
// every oooCompactAfter × oooCap samples.
const oooCompactAfter = 16

// insertOOO makes an out-of-order sample visible; a timestamp already there keeps its sample
// (replay of a WAL that holds it twice). It returns the change in the number of the series'
// chunks: 1 when one was cut, less when a compaction merged some. Caller holds s.mu.
func (s *memSeries) insertOOO(smp Sample) (newChunks int) {
	if s.ooo == nil {
		s.ooo = &oooData{}
	}
	o := s.ooo
	o.applied++
	i, found := slices.BinarySearchFunc(o.head, smp.T, cmpSampleT)
	if found {
		return 0
	}
	o.head = slices.Insert(o.head, i, smp)
	if len(o.head) < oooCap {
		return 0
	}
	o.chunks = append(o.chunks, encodeSamples(o.head))
	o.head = o.head[:0]
	newChunks = 1
	if len(o.chunks)-o.merged > oooCompactAfter {
		before := len(o.chunks)
		// The merged prefix is sorted and non-overlapping, as mergeChunks wants its first argument;
		// the chunks hold distinct timestamps (a duplicate is refused or kept once), so nothing is lost.
		if merged, err := mergeChunks(o.chunks[:o.merged:o.merged], o.chunks[o.merged:]); err == nil {
			clear(o.chunks)
			o.chunks, o.merged = merged, len(merged)
			newChunks += len(merged) - before
		}
	}
	return newChunks
}

// encodeSamples encodes sorted samples into one XOR chunk.
func encodeSamples(smps []Sample) Chunk {
	c := chunkenc.NewXORChunk()
	app, err := c.Appender()
	if err != nil {
		panic("memstore: XOR appender on a new chunk: " + err.Error()) // broken invariant of chunkenc
	}
	for _, smp := range smps {
		app.Append(smp.T, smp.V)
	}
	c.Compact()
	return Chunk{MinTime: smps[0].T, MaxTime: smps[len(smps)-1].T, Encoding: chunkenc.EncXOR, Data: c.Bytes()}
}

// oooChunksIn appends to dst the series' out-of-order data overlapping [mint, maxt]: its chunks
// and its uncompressed samples encoded as one chunk. Caller holds s.mu.
func (s *memSeries) oooChunksIn(dst []Chunk, mint, maxt int64) []Chunk {
	if s.ooo == nil {
		return dst
	}
	for _, cs := range [][]Chunk{s.ooo.sealed, s.ooo.chunks} {
		for _, c := range cs {
			if c.MaxTime >= mint && c.MinTime <= maxt {
				dst = append(dst, c)
			}
		}
	}
	if h := s.ooo.head; len(h) > 0 && h[len(h)-1].T >= mint && h[0].T <= maxt {
		dst = append(dst, encodeSamples(h))
	}
	return dst
}

// oooEmpty reports whether the series holds no out-of-order sample. Caller holds s.mu.
func (s *memSeries) oooEmpty() bool {
	return s.ooo == nil || (len(s.ooo.head) == 0 && len(s.ooo.chunks) == 0 && len(s.ooo.sealed) == 0)
}

// dropOOOBefore drops the out-of-order samples older than before, all of them (Truncate,
// DropAll) or, with sealedOnly, only those of the sealed chunks (a flush's drop), re-encoding a
// chunk that straddles before, and returns the number of chunks removed. Caller holds s.mu.
func (s *memSeries) dropOOOBefore(before int64, sealedOnly bool) (removed int) {
	o := s.ooo
	if o == nil {
		return 0
	}
	var n int
	o.sealed, n = dropChunksBefore(o.sealed, before)
	removed += n
	if !sealedOnly {
		i, _ := slices.BinarySearchFunc(o.head, before, cmpSampleT)
		o.head = slices.Delete(o.head, 0, i)
		o.chunks, n = dropChunksBefore(o.chunks, before)
		o.merged = 0 // the next compaction merges all again
		removed += n
	}
	if len(o.head) == 0 && len(o.chunks) == 0 && len(o.sealed) == 0 {
		o.head, o.chunks, o.sealed, o.merged = nil, nil, nil, 0 // keep the counters
	}
	return removed
}

// dropChunksBefore drops, in place, the samples older than before of chunks that may overlap
// (each sorted), re-encoding a chunk that straddles before; it returns the chunks left and the
// number removed.
func dropChunksBefore(cs []Chunk, before int64) ([]Chunk, int) {
	removed := 0
	kept := cs[:0]
	for _, c := range cs {
		switch {
		case c.MaxTime < before:
			removed++
		case c.MinTime >= before:
			kept = append(kept, c)
		default:
			var smps []Sample
			if ch, err := chunkenc.FromData(c.Encoding, c.Data); err == nil {
				it := ch.Iterator(nil)
				for it.Next() == chunkenc.ValFloat {
					if t, v := it.At(); t >= before {
						smps = append(smps, Sample{T: t, V: v})
					}
				}
			}
			if len(smps) > 0 {
				kept = append(kept, encodeSamples(smps))
			} else {
				removed++
			}
		}
	}
	clear(cs[len(kept):])
	return kept, removed
}

// sealOOO hands the series' out-of-order data to a flush snapshot: head and chunks join the
// sealed chunks (the head encoded as one chunk), which are returned (a copy of the list; the
// chunks' bytes are shared, read-only) with the seal's number, whether out-of-order samples were
// pending then (not in the snapshot, maybe already logged), and how many chunks were created.
// Caller holds s.mu.
func (s *memSeries) sealOOO() (sealed []Chunk, seal uint64, pending bool, newChunks int) {
	o := s.ooo
	if o == nil {
		return nil, 0, false, 0
	}
	o.sealed = append(o.sealed, o.chunks...)
	if len(o.head) > 0 {
		o.sealed = append(o.sealed, encodeSamples(o.head))
		newChunks = 1
	}
	clear(o.chunks)
	o.chunks, o.head, o.merged = o.chunks[:0], o.head[:0], 0
	o.seals++
	return slices.Clone(o.sealed), o.seals, o.reserved != o.applied, newChunks
}

// mergeChunks merges a series' in-order chunks (sorted, not overlapping) with its out-of-order
// chunks (each sorted, overlapping anything) into sorted, non-overlapping chunks without
// duplicate timestamps, with Prometheus's compacting chunk-series merger: chunks that overlap
// nothing pass through as they are, overlapping ones are decoded, merged (ChainedSeriesMerge: one
// sample per timestamp) and re-encoded in chunks of at most 120 samples.
func mergeChunks(inOrder, ooo []Chunk) ([]Chunk, error) {
	if len(ooo) == 0 {
		return inOrder, nil
	}
	series := make([]promstorage.ChunkSeries, 0, 1+len(ooo))
	metas := func(cs []Chunk) ([]chunks.Meta, error) {
		out := make([]chunks.Meta, 0, len(cs))
		for _, c := range cs {
			ch, err := chunkenc.FromData(c.Encoding, c.Data)
			if err != nil {
				return nil, fmt.Errorf("chunk [%d, %d]: %w", c.MinTime, c.MaxTime, err)
			}
			out = append(out, chunks.Meta{Chunk: ch, MinTime: c.MinTime, MaxTime: c.MaxTime})
		}
		return out, nil
	}
	in, err := metas(inOrder)
	if err != nil {
		return nil, err
	}
	series = append(series, &promstorage.ChunkSeriesEntry{Lset: labels.EmptyLabels(), ChunkIteratorFn: func(chunks.Iterator) chunks.Iterator {
		return promstorage.NewListChunkSeriesIterator(in...)
	}})
	for _, c := range ooo {
		m, err := metas([]Chunk{c})
		if err != nil {
			return nil, err
		}
		series = append(series, &promstorage.ChunkSeriesEntry{Lset: labels.EmptyLabels(), ChunkIteratorFn: func(chunks.Iterator) chunks.Iterator {
			return promstorage.NewListChunkSeriesIterator(m...)
		}})
	}
	merged := promstorage.NewCompactingChunkSeriesMerger(promstorage.ChainedSeriesMerge)(series...)
	it := merged.Iterator(nil)
	out := make([]Chunk, 0, len(inOrder)+1)
	for it.Next() {
		m := it.At()
		out = append(out, Chunk{MinTime: m.MinTime, MaxTime: m.MaxTime, Encoding: m.Chunk.Encoding(), Data: m.Chunk.Bytes()})
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("merging out-of-order chunks: %w", err)
	}
	return out, nil
}

// MergeChunks is mergeChunks for other packages (the flusher merges a snapshot's out-of-order
// chunks with the in-order ones it writes): inOrder sorted and not overlapping, ooo each sorted;
// the result is sorted, non-overlapping, one sample per timestamp.
func MergeChunks(inOrder, ooo []Chunk) ([]Chunk, error) { return mergeChunks(inOrder, ooo) }

// lastValue decodes the value of c's last sample.
func lastValue(c Chunk) (float64, error) {
	ch, err := chunkenc.FromData(c.Encoding, c.Data)
	if err != nil {
		return 0, err
	}
	it := ch.Iterator(nil)
	var v float64
	for it.Next() == chunkenc.ValFloat {
		_, v = it.At()
	}
	return v, it.Err()
}
