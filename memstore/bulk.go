package memstore

import (
	"fmt"
	"slices"
)

// Bulk creation of imported series (ImportBatch, one hand-over frame).
//
// A hand-over brings series the joiner does not have. Creating them one by one through
// lockSeries costs, per series, two closures, two stripe-lock round trips, a postings lock, two
// WAL queue locks, and five allocations (labels copy, chunk list, chunk bytes, pending list, closed
// list). importNew creates a run of new series of one tenant at once:
//
//   - refs are taken from the counter in one step, in batch order;
//   - each series is allocated and locked before anything can find it, then inserted under one
//     write lock per hash stripe the run touches (the same check-and-insert getOrCreate does, so
//     a label set is still created at most once) and one lock per ref stripe;
//   - postings get the whole run under one lock, in ref order (every insert an append);
//   - the series records and chunks entries of the run are queued under one WAL queue lock, while
//     every new series is still locked: no sample of one can be queued before its series record;
//   - chunk bytes, closed lists and pending ops come from slabs, one of each per run: applying a
//     chunk op appends it to the series' closed list in place, and the pending slab is let go
//     once the ops are applied (a fourth slab, the chunks as the WAL entries and pending ops
//     see them, is garbage then too).
//
// Locking: importNew holds the locks of the series it creates — each taken before the series
// became findable — while it takes stripe locks, postings.mu and the WAL queue lock. That extends
// "stripe lock → new memSeries.mu" (DESIGN.md) without a cycle: no code waits for a series lock
// while holding a stripe lock, postings.mu or the queue lock, and no holder of an existing
// series' lock waits for a new one of ours (nothing can have found it before we unlock it).

// importNew creates the series run[k] for k in idx (all of tenant th, none of them found in th
// just before), and reserves and queues their chunks as importSeries does. Series that another
// writer (or an earlier series of run with the same labels) created meanwhile are not touched and
// are returned in raced, in run order, for importSeries. lastVs[k] is run[k]'s last value and
// hashes[k] its labels' hash. Without a WAL the chunks are visible at return and nc counts them;
// with one, the applies to make after the commit are appended to applies.
func (st *Store) importNew(th *tenantHead, run []ImportSeries, idx []int, hashes []uint64, lastVs []float64,
	applies []applyRef) (_ []applyRef, raced []int, nc int, err error) {
	n := len(idx)
	if n == 0 {
		return applies, nil, 0, nil
	}
	var nChunks, nBytes int
	for _, k := range idx {
		nChunks += len(run[k].Chunks)
		for _, c := range run[k].Chunks {
			nBytes += len(c.Data)
		}
	}
	data := make([]byte, 0, nBytes)
	chunks := make([]Chunk, nChunks)            // the WAL entries' and pending ops' view, let go once applied
	closed := makeLike(closedListType, nChunks) // the series' closed lists, filled in place by applyUpTo
	pend := make([]pendingOp, nChunks)
	mss := make([]*memSeries, n)
	offs := make([]int, n) // where series j's chunks start in the slabs
	base := st.nextRef.Add(uint64(n)) - uint64(n)
	off := 0
	for j, k := range idx {
		s := &run[k]
		lset := s.Labels
		if !s.LabelsOwned {
			lset = lset.Copy()
		}
		own := chunks[off : off+len(s.Chunks) : off+len(s.Chunks)]
		for c := range s.Chunks {
			start := len(data)
			data = append(data, s.Chunks[c].Data...)
			own[c] = Chunk{MinTime: s.Chunks[c].MinTime, MaxTime: s.Chunks[c].MaxTime, Encoding: s.Chunks[c].Encoding,
				Data: data[start:len(data):len(data)]}
		}
		ms := &memSeries{ref: base + uint64(j), lset: lset, hash: hashes[k]}
		ms.closed = closed[off : off : off+len(s.Chunks)]
		ms.pending = pend[off : off : off+len(s.Chunks)]
		ms.mu.Lock() // not findable yet: see "Locking" above
		mss[j] = ms
		offs[j] = off
		off += len(s.Chunks)
	}

	// Into the hash stripes, one write lock per stripe touched. A label set found there now was
	// created by someone else since the caller looked (or earlier in this run): that series of
	// ours is dropped and handed back.
	var order [stripeSize + 1]int32 // counting sort of idx by hash stripe
	for _, k := range idx {
		order[hashes[k]&(stripeSize-1)+1]++
	}
	for i := 1; i <= stripeSize; i++ {
		order[i] += order[i-1]
	}
	byStripe := make([]int32, n)
	for j, k := range idx {
		p := &order[hashes[k]&(stripeSize-1)]
		byStripe[*p] = int32(j)
		*p++
	}
	lost := 0
	for a := 0; a < n; {
		i := mss[byStripe[a]].hash & (stripeSize - 1)
		b := a
		for b < n && mss[byStripe[b]].hash&(stripeSize-1) == i {
			b++
		}
		st.stripesInsert(th.series, i, mss, byStripe[a:b], &lost)
		a = b
	}
	created := mss
	if lost > 0 {
		created = make([]*memSeries, 0, n-lost)
		for j, ms := range mss {
			if ms.deleted { // marked by stripesInsert: never inserted, never shared
				raced = append(raced, idx[j])
				continue
			}
			created = append(created, ms)
		}
	}
	for _, ms := range created {
		j := ms.ref & (stripeSize - 1)
		th.series.locks[j].Lock()
		th.series.series[j][ms.ref] = ms
		th.series.locks[j].Unlock()
	}
	th.numSeries.Add(int64(len(created)))
	st.metrics.memSeries.Add(float64(len(created)))
	th.created.Add(float64(len(created)))
	if !st.replaying {
		th.postings.addSorted(created) // refs ascend in batch order
	}

	// Reserve every series' chunks, queue its series record and chunks entry, all before any of
	// them is unlocked (straight into the WAL queue, under its lock: no copy of the entries).
	for j, ms := range mss {
		if ms.deleted {
			continue
		}
		s := &run[idx[j]]
		own := chunks[offs[j] : offs[j]+len(s.Chunks) : offs[j]+len(s.Chunks)]
		for c := range own {
			// Only the last chunk's value is the frontier; the ones before it are passed over at once.
			ms.reserve(pendingOp{s: Sample{T: own[c].MaxTime, V: lastVs[idx[j]]}, chunk: &own[c]})
		}
	}
	if st.wal != nil {
		err = st.wal.enqueueFunc(2*len(created), func(q []walEntry) []walEntry {
			for j, ms := range mss {
				if ms.deleted {
					continue
				}
				s := &run[idx[j]]
				own := chunks[offs[j] : offs[j]+len(s.Chunks) : offs[j]+len(s.Chunks)]
				q = append(q, newSeriesEntry(ms.ref, th.name, ms.lset),
					walEntry{typ: recChunks, chunks: walSeriesChunks{Ref: ms.ref, Chunks: own, LastV: lastVs[idx[j]]}})
			}
			return q
		})
	}
	for _, ms := range created {
		if st.wal == nil {
			nc += ms.applyUpTo(ms.reservedEnd, st.maxAgeMs)
			ms.releasePendingSlab()
		} else if err == nil {
			applies = append(applies, applyRef{s: ms, end: ms.reservedEnd, th: th})
		}
		ms.mu.Unlock()
	}
	if err != nil {
		// Only after close: the reservations stay pending in a store that is closed.
		return applies, nil, 0, fmt.Errorf("importing chunks of tenant %q: %w", th.name, err)
	}
	return applies, raced, nc, nil
}

// stripesInsert inserts the series mss[j] for j in js, all of hash stripe i, under one write lock
// of that stripe. A series whose label set is already there is not inserted: it is unlocked and
// marked deleted (it was never shared, so nothing else sees the mark) and lost counts it.
func (st *Store) stripesInsert(s *stripeSeries, i uint64, mss []*memSeries, js []int32, lost *int) {
	s.locks[i].Lock()
	defer s.locks[i].Unlock()
	for _, j := range js {
		ms := mss[j]
		if s.hashes[i].get(ms.hash, ms.lset) != nil {
			ms.deleted = true
			ms.mu.Unlock()
			*lost++
			continue
		}
		s.hashes[i].set(ms.hash, ms)
	}
}

// releasePendingSlab lets go of the pending slab importNew gave the series, once nothing is
// pending: the series' next push then allocates a list of its own, and the slab is freed when
// every series of its run has let go. Caller holds s.mu.
func (s *memSeries) releasePendingSlab() {
	if !s.hasPending() {
		s.pending, s.pendStart = nil, 0
	}
}

// enqueueFunc is enqueue for n entries under one lock: fill appends them, in order, to the queue
// it is given (grown for n more) and returns it. fill runs under the queue lock (a leaf lock: it
// must take no other lock). It fails, appending nothing, only after close.
func (w *wal) enqueueFunc(n int, fill func(q []walEntry) []walEntry) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err != nil {
		return w.err
	}
	w.queue = fill(slices.Grow(w.queue, n))
	return nil
}

// importRun imports run, the consecutive series of a batch that belong to tenant th (validated,
// lastVs their last values): series new to th in bulk (importNew), others — and any a concurrent
// writer created meanwhile — one by one (importSeries), in run order. It returns the applies to
// make after the commit, the chunks made visible (no WAL), and the first refusal: the series
// before it in run are imported, and so is every new series of run (see ImportBatch).
func (st *Store) importRun(th *tenantHead, run []ImportSeries, lastVs []float64, applies []applyRef) ([]applyRef, int, error) {
	hashes := make([]uint64, len(run))
	fresh := make([]int, 0, len(run))
	existing := false
	for k := range run {
		s := &run[k]
		if len(s.Chunks) == 0 {
			continue
		}
		hashes[k] = st.hashFn(s.Labels)
		if th.series.getByHash(hashes[k], s.Labels) != nil {
			existing = true
			continue
		}
		fresh = append(fresh, k)
	}
	nc := 0
	var slow []int
	if !existing {
		var err error
		var n int
		applies, slow, n, err = st.importNew(th, run, fresh, hashes, lastVs, applies)
		nc += n
		if err != nil {
			return applies, nc, err
		}
	} else {
		// Some series exist (a retried import): the per-series path keeps the batch's order
		// for refusals exactly.
		for k := range run {
			if len(run[k].Chunks) > 0 {
				slow = append(slow, k)
			}
		}
	}
	for _, k := range slow {
		ap, n, err := st.importSeries(th, &run[k], lastVs[k])
		if err != nil {
			return applies, nc, err
		}
		nc += n
		if ap.s != nil {
			applies = append(applies, ap)
		}
	}
	return applies, nc, nil
}

// makeLike returns a new S of length n (the slab of closed lists, whatever memSeries.closed's
// element type is).
func makeLike[S ~[]E, E any](_ S, n int) S { return make(S, n) }

// closedListType is a nil value of memSeries.closed's type, for makeLike.
var closedListType = (&memSeries{}).closed
