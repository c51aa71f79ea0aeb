package memstore

import (
	"cmp"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"time"
)

// Parallel WAL replay.
//
// Three stages, all inside the WAL's read transaction (wal.replay):
//
//  1. decode: records are decoded (checksum, decompression, varints) by
//     GOMAXPROCS decode workers, ahead of and independently of each other;
//  2. route: this goroutine takes the decoded records in key order and
//     splits each into per-worker parts, by series;
//  3. apply: GOMAXPROCS apply workers create series and append samples and
//     chunks, each to the series it owns.
//
// Invariant that makes stage 3 equivalent to a serial replay: every op of
// one series is applied by one apply worker, in key order. A series belongs
// to the worker chosen by the hash of its labels (so the same labels logged
// under two refs, after a truncation, still land on one worker); routing
// maps each ref to that worker when it routes the ref's series entry, and
// routes every later samples or chunks entry of the ref to it; the router
// hands parts over in key order and each worker consumes its FIFO channel in
// order. So a series is created before any of its samples is applied, and
// sees exactly the sequence of ops the serial replay gave it. Different
// series share nothing but their tenant's maps and postings, which
// lockSeries updates under their own locks exactly as concurrent pushers
// do, and atomic counters.

// replayPart is the share of one record that one apply worker applies.
type replayPart struct {
	rec     *replayRecord
	typ     byte
	series  []walSeries
	hashes  []uint64 // st.hashFn of each series' labels, computed by the router
	samples []walSamples
	chunks  []walChunk
	hists   []walHistograms
}

// refTable maps series refs to values: a slice indexed by ref−base while
// refs are dense (a healthy WAL's refs come from one counter, in increasing
// order), a map for refs that would make the slice more than about twice as
// long as the number of refs, so memory stays proportional to the refs
// however sparse a (possibly hostile) WAL's refs are. The zero V means
// absent. Replaces a map lookup per sample: with 100k series the map missed
// the CPU caches on most lookups and was half of replay's time.
type refTable[V comparable] struct {
	base   uint64
	dense  []V
	n      int
	sparse map[uint64]V
}

func (t *refTable[V]) get(ref uint64) V {
	if i := ref - t.base; ref >= t.base && i < uint64(len(t.dense)) {
		return t.dense[i]
	}
	return t.sparse[ref]
}

// set stores v (not the zero V) under a ref that is not in the table yet.
func (t *refTable[V]) set(ref uint64, v V) {
	if t.n == 0 {
		t.base = ref
	}
	t.n++
	i := ref - t.base
	switch {
	case ref >= t.base && i < uint64(len(t.dense)):
		t.dense[i] = v
	case ref >= t.base && i < uint64(2*t.n+1<<16):
		var zero V
		for uint64(len(t.dense)) <= i {
			t.dense = append(t.dense, zero)
		}
		t.dense[i] = v
	default:
		if t.sparse == nil {
			t.sparse = map[uint64]V{}
		}
		t.sparse[ref] = v
	}
}

// replaySeries is what an apply worker knows of a ref.
type replaySeries struct {
	ms *memSeries
	th *tenantHead
}

// replayWorker applies the parts of the series it owns.
type replayWorker struct {
	st   *Store
	in   chan replayPart
	refs refTable[replaySeries]
	cc   chunkChecker
	// notSeries are the routed series records that made no series of their own (invalid labels,
	// or labels logged again under another ref): replayPostings added them, so they are taken
	// out again at the end.
	notSeries []replayPosting

	series, samples, chunks, skipped int
}

func (rw *replayWorker) run(wg *sync.WaitGroup) {
	defer wg.Done()
	for p := range rw.in {
		switch p.typ {
		case recSeries:
			rw.applySeries(p.rec.seq, p.series, p.hashes)
		case recSamples:
			rw.applySamples(p.samples)
		case recHistograms:
			rw.applyHistograms(p.hists)
		default:
			rw.applyChunks(p.rec.seq, p.typ, p.chunks)
		}
		p.rec.release()
	}
}

func (rw *replayWorker) applySeries(seq uint64, ss []walSeries, hashes []uint64) {
	st := rw.st
	for i, s := range ss {
		th := st.getOrCreateTenant(s.Tenant)
		ms, created, err := st.replaySeries(th, s.Labels, hashes[i], s.Ref, scratchLabelsCopy)
		if err != nil {
			st.logger.Warn("wal replay skipped a series", "seq", seq, "ref", s.Ref, "labels", s.Labels.String(), "err", err)
			rw.skipped++
			rw.notSeries = append(rw.notSeries, replayPosting{th: th, ref: s.Ref, lset: s.Labels})
			continue
		}
		ms.mu.Unlock()
		if !created {
			// Same labels logged twice under two refs (recreated after a
			// truncation): later samples of either ref go to the one series.
			rw.skipped++
			rw.notSeries = append(rw.notSeries, replayPosting{th: th, ref: s.Ref, lset: s.Labels})
		}
		rw.refs.set(s.Ref, replaySeries{ms: ms, th: th})
		rw.series++
	}
}

func (rw *replayWorker) applySamples(es []walSamples) {
	maxAgeMs := rw.st.maxAgeMs
	for _, e := range es {
		rs := rw.refs.get(e.Ref)
		ms := rs.ms
		if ms == nil {
			rw.skipped += len(e.Samples)
			continue
		}
		nc := 0
		ms.mu.Lock()
		for _, smp := range e.Samples {
			switch ms.check(smp.T, smp.V) {
			case appendOK:
				ms.lastT, ms.lastV, ms.hasLast, ms.lastKind = smp.T, smp.V, true, kindFloat
				if ms.appendVisible(smp.T, smp.V, maxAgeMs) {
					nc++
				}
				rw.samples++
			case appendIdempotent:
				rw.samples++
			case appendOutOfOrder:
				// Logged, so accepted out of order when pushed: it comes back whatever the
				// window is now (a lowered window must not drop acknowledged data).
				if ms.ooo == nil {
					ms.ooo = &oooData{}
				}
				ms.ooo.reserved++
				nc += ms.insertOOO(smp)
				rw.samples++
			default:
				rw.skipped++
			}
		}
		ms.mu.Unlock()
		if nc > 0 {
			rs.th.numChunks.Add(int64(nc))
			rw.st.metrics.memChunks.Add(float64(nc))
		}
	}
}

func (rw *replayWorker) applyChunks(seq uint64, typ byte, cs []walChunk) {
	for k := range cs {
		wc := &cs[k]
		rs, c := rw.refs.get(wc.Ref), wc.Chunk
		// Checked like ImportBatch checks them (chunkChecker.check): the
		// header of each; a chunks record (type 4) carries the last value of
		// each series group, a chunk record (type 3) does not, so its chunk
		// is decoded whole for it.
		lastV, err := wc.LastV, rw.cc.header(c)
		if typ == recChunk {
			lastV, err = rw.cc.full(c)
		}
		ms := rs.ms
		if ms != nil {
			ms.mu.Lock()
		}
		if ms == nil || err != nil || (ms.hasLast && c.MinTime <= ms.lastT) {
			if ms != nil {
				ms.mu.Unlock()
			}
			rw.st.logger.Warn("wal replay skipped a chunk", "seq", seq, "ref", wc.Ref, "mint", c.MinTime, "maxt", c.MaxTime, "err", err)
			rw.skipped++
			continue
		}
		// applyUpTo copies the chunk out of the pending op at once.
		ms.reserve(pendingOp{s: Sample{T: c.MaxTime, V: lastV}, chunk: &c})
		nc := ms.applyUpTo(ms.reservedEnd, rw.st.maxAgeMs)
		ms.mu.Unlock()
		rs.th.numChunks.Add(int64(nc))
		rw.st.metrics.memChunks.Add(float64(nc))
		rw.chunks++
	}
}

// replayWAL rebuilds memory from w (see the comment at the top of this
// file). Series are recreated under their logged refs; the series limit is
// ignored so that a lowered limit never drops acknowledged data.
func (st *Store) replayWAL(w *wal) (uint64, error) {
	begin := time.Now()
	lastLog := begin
	rep := &st.replay
	tracker := st.cfg.ReplayTracker
	first, last, err := w.seqRange()
	if err != nil {
		return 0, err
	}
	tracker.start(first, last, begin)
	st.metrics.walReplayProgress.Set(0)
	if last == 0 {
		st.metrics.walReplayProgress.Set(1)
	}
	nw := min(runtime.GOMAXPROCS(0), 64) // owner stores worker indexes in a uint16
	// Postings are not added by the apply workers: added one by one from
	// two workers, the inserts into the tenant-wide lists contended on its
	// lock and landed out of order (memmoves). They are built in bulk beside
	// the workers (replayPostings, fed by the router in key order) when the
	// series keep the labels the records decoded, else after the workers are
	// done (buildPostings).
	var pb *replayPostings
	if scratchLabelsCopy {
		pb = startReplayPostings()
	}
	st.replaying = true
	defer func() { st.replaying = false }()
	workers := make([]*replayWorker, nw)
	var wg sync.WaitGroup
	for i := range workers {
		workers[i] = &replayWorker{st: st, in: make(chan replayPart, 2*replayInFlight)}
		wg.Add(1)
		go workers[i].run(&wg)
	}
	// owner maps a ref to 1 + the index of the worker owning its series.
	var owner refTable[uint16]
	var maxRef uint64
	var th *tenantHead      // the tenant of the last series routed
	rx := replayExemplars{} // stored once replay is done (exemplars.go)
	nextSeq, corrupt, err := w.replay(nw, func(r *replayRecord) error {
		rep.Records++
		tracker.advance(r.seq, int64(rep.Records))
		if last > first {
			st.metrics.walReplayProgress.Set(float64(r.seq-first+1) / float64(last-first+1))
		}
		if st.replayHook != nil {
			st.replayHook(r.seq)
		}
		if len(r.parts) != nw {
			r.parts = make([]replayPart, nw)
		}
		for i := range r.parts {
			p := &r.parts[i]
			p.rec, p.typ = r, r.rec.Type
			p.series, p.hashes, p.samples, p.chunks = p.series[:0], p.hashes[:0], p.samples[:0], p.chunks[:0]
			p.hists = p.hists[:0]
		}
		switch r.rec.Type {
		case recSeries:
			var posts []replayPosting
			if pb != nil {
				posts = make([]replayPosting, 0, len(r.rec.Series))
			}
			for _, s := range r.rec.Series {
				if s.Ref == 0 || owner.get(s.Ref) != 0 {
					rep.Skipped++
					continue
				}
				h := st.hashFn(s.Labels)
				o := int(h % uint64(nw))
				owner.set(s.Ref, uint16(o+1))
				maxRef = max(maxRef, s.Ref)
				r.parts[o].series = append(r.parts[o].series, s)
				r.parts[o].hashes = append(r.parts[o].hashes, h)
				if pb != nil {
					if th == nil || th.name != s.Tenant {
						th = st.getOrCreateTenant(s.Tenant)
					}
					posts = append(posts, replayPosting{th: th, ref: s.Ref, lset: s.Labels})
				}
			}
			if len(posts) > 0 {
				pb.in <- posts
			}
		case recSamples:
			for _, e := range r.rec.Samples {
				o := owner.get(e.Ref)
				if o == 0 {
					rep.Skipped += len(e.Samples)
					continue
				}
				r.parts[o-1].samples = append(r.parts[o-1].samples, e)
			}
		case recExemplars:
			for _, e := range r.rec.Exemplars {
				rx.add(e)
			}
		case recHistograms:
			for _, e := range r.rec.Histograms {
				o := owner.get(e.Ref)
				if o == 0 {
					rep.Skipped += len(e.Histograms)
					continue
				}
				r.parts[o-1].hists = append(r.parts[o-1].hists, e)
			}
		case recChunk, recChunks:
			for _, c := range r.rec.Chunks {
				o := owner.get(c.Ref)
				if o == 0 {
					st.logger.Warn("wal replay skipped a chunk", "seq", r.seq, "ref", c.Ref, "mint", c.Chunk.MinTime, "maxt", c.Chunk.MaxTime, "err", "unknown series")
					rep.Skipped++
					continue
				}
				r.parts[o-1].chunks = append(r.parts[o-1].chunks, c)
			}
		}
		for i := range r.parts {
			p := r.parts[i]
			if len(p.series)+len(p.samples)+len(p.chunks)+len(p.hists) > 0 {
				r.retain(1)
				workers[i].in <- p
			}
		}
		if rep.Records%4096 == 0 && time.Since(lastLog) > 5*time.Second {
			lastLog = time.Now()
			p := tracker.Progress()
			if tracker == nil { // the same figures without a caller's tracker
				p = ReplayProgress{Running: true, FirstSeq: first, LastSeq: last, Seq: r.seq,
					Records: int64(rep.Records), Elapsed: time.Since(begin)}
			}
			st.logger.Info("wal replay in progress", "file", w.path, "records", rep.Records,
				"seq", r.seq, "first_seq", first, "last_seq", last, "percent", int(100*p.Fraction()),
				"elapsed", p.Elapsed.Round(time.Millisecond), "eta", p.ETA().Round(time.Second))
		}
		return nil
	})
	for _, rw := range workers {
		close(rw.in)
	}
	wg.Wait()
	if pb != nil {
		var not []replayPosting
		for _, rw := range workers {
			not = append(not, rw.notSeries...)
		}
		pb.finish(not)
	} else {
		st.buildPostings()
	}
	rep.Exemplars = st.finishReplay(rx)
	if err != nil {
		return 0, fmt.Errorf("memstore: replaying WAL: %w", err)
	}
	for _, rw := range workers {
		rep.Series += rw.series
		rep.Samples += rw.samples
		rep.Chunks += rw.chunks
		rep.Skipped += rw.skipped
	}
	if corrupt != nil {
		rep.Corruption = corrupt
		st.metrics.walCorruptions.Inc()
	}
	if maxRef >= st.nextRef.Load() {
		st.nextRef.Store(maxRef + 1)
	}
	rep.Duration = time.Since(begin)
	st.metrics.walReplayDuration.Set(rep.Duration.Seconds())
	st.metrics.walReplayProgress.Set(1)
	tracker.finish(begin.Add(rep.Duration))
	rate := 0.0
	if s := rep.Duration.Seconds(); s > 0 {
		rate = float64(rep.Samples) / s
	}
	st.logger.Info("wal replay done", "file", w.path, "records", rep.Records, "series", rep.Series, "samples", rep.Samples,
		"chunks", rep.Chunks, "exemplars", rep.Exemplars, "skipped", rep.Skipped, "samples_per_second", rate, "duration", rep.Duration,
		"corrupt", corrupt != nil, "workers", nw)
	return nextSeq, nil
}

// buildPostings adds every series of every tenant to its tenant's postings,
// in ascending ref order: the replay created them without postings. The
// refs are sorted inline (not through the series pointers, which would
// miss the caches on every comparison).
func (st *Store) buildPostings() {
	st.tenantsMu.RLock()
	defer st.tenantsMu.RUnlock()
	type refSeries struct {
		ref uint64
		ms  *memSeries
	}
	var byRef []refSeries
	var series []*memSeries
	for _, th := range st.tenants {
		byRef = byRef[:0]
		th.series.forEach(func(ms *memSeries) bool {
			byRef = append(byRef, refSeries{ms.ref, ms})
			return true
		})
		slices.SortFunc(byRef, func(a, b refSeries) int { return cmp.Compare(a.ref, b.ref) })
		series = series[:0]
		for _, rs := range byRef {
			series = append(series, rs.ms)
		}
		th.postings.addSorted(series)
	}
}
