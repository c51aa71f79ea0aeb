package memstore

import (
	"github.com/prometheus/prometheus/model/labels"
)

// Appender is one push to a tenant, series by series: Append each series, then Commit once (one WAL
// group-commit wait for the whole push). Store.Push is an Appender over a batch; the ingester's
// request decoder uses one directly so that it never materialises a batch of owned labels.
//
// The copy rule (what makes a push allocation-free for existing series):
//   - The labels given to Append are read only during Append: they may alias a buffer the caller
//     reuses as soon as Append returns (a labels.ScratchBuilder's Overwrite buffer, yolo strings into
//     a request body). The Store copies them (labels.Labels.Copy) only when it creates the series or
//     reports a refusal of it in PushResult.Errors.
//   - The samples given to Append are read until Commit returns (the WAL encodes them at commit
//     time) and never retained after; the caller must not modify them meanwhile.
//
// Samples become visible only after Commit's WAL commit, as with Push. While the WAL is failing
// (Store.WALError), Appender refuses at once: Append does nothing and Commit returns the error.
// An Appender is not safe for concurrent use, and must not be used after Commit (it goes back to
// a pool).
type Appender struct {
	st        *Store
	th        *tenantHead
	err       error // sticky: ErrClosed or a WAL enqueue failure; Append does nothing then
	applies   []applyRef
	needSync  bool
	newChunks int
	n         int // series appended so far: the SeriesIndex of the next one
	res       PushResult
	limit     int   // the tenant's series limit for this push (Store.limitFor)
	window    int64 // the tenant's out-of-order window for this push, ms (Store.oooWindowMs)
	ooo       int   // samples accepted out of order
	// exemplars are the push's exemplars, stored once its WAL commit succeeded (exemplars.go).
	exemplars []walExemplars
	// exLimit is the tenant's exemplar limit, asked once per Appender (exLimitKnown).
	exLimit      int
	exLimitKnown bool
}

// Appender starts a push to tenant. Commit it. Safe for concurrent use (each goroutine its own).
func (st *Store) Appender(tenant string) *Appender {
	a, ok := st.appenders.Get().(*Appender)
	if !ok {
		a = &Appender{}
	}
	a.st = st
	if st.closed.Load() {
		a.err = ErrClosed
		return a
	}
	if err := st.WALError(); err != nil {
		// Refused before anything is reserved: nothing of this push is acknowledged.
		a.err = err
		return a
	}
	a.th = st.acquireTenant(tenant)
	a.limit = st.limitFor(tenant).Max
	a.window = st.oooWindowMs(tenant)
	return a
}

// Append adds one series' samples (in increasing timestamp order) to the push; its index in
// PushResult.Errors is the number of Append calls before it. Every sample is judged as Store.Push
// describes. See Appender for how long lset and samples are read.
func (a *Appender) Append(lset labels.Labels, samples []Sample) {
	i := a.n
	a.n++
	if a.err != nil || len(samples) == 0 {
		return
	}
	st, res := a.st, &a.res
	ms, created, err := st.lockSeries(a.th, lset, st.hashFn(lset), 0, a.limit)
	if err != nil {
		res.refuseSeries(i, lset, samples, err)
		return
	}
	if created {
		res.NewSeries++
	}
	// Refusals keep the series' own copy of its labels: lset may alias the caller's buffer.
	owned := ms.lset
	reserved := 0
	allAccepted := true
	for _, smp := range samples {
		switch ms.check(smp.T, smp.V) {
		case appendOK:
			if st.wal == nil {
				ms.lastT, ms.lastV, ms.hasLast, ms.lastKind = smp.T, smp.V, true, kindFloat
				if ms.appendVisible(smp.T, smp.V, st.maxAgeMs) {
					a.newChunks++
				}
			} else {
				ms.reserve(pendingOp{s: smp})
				reserved++
			}
			res.Accepted++
		case appendIdempotent:
			// The original may still be on its way to the WAL: acknowledge
			// only after it is committed.
			if ms.hasPending() {
				a.needSync = true
			}
			res.Accepted++
			res.Duplicates++
			allAccepted = false
		case appendDuplicate:
			res.refuseOwned(i, owned, smp.T, ErrDuplicateSampleForTimestamp)
			allAccepted = false
		case appendOutOfOrder:
			if a.window == 0 {
				res.refuseOwned(i, owned, smp.T, ErrOutOfOrderSample)
				allAccepted = false
				continue
			}
			if ms.hasHist() {
				res.refuseOwned(i, owned, smp.T, ErrOutOfOrderHistogram)
				allAccepted = false
				continue
			}
			switch r, pend := ms.checkOOO(smp.T, smp.V, a.window); r {
			case appendOOO:
				if st.wal == nil {
					if ms.ooo == nil {
						ms.ooo = &oooData{}
					}
					ms.ooo.reserved++
					a.newChunks += ms.insertOOO(smp)
				} else {
					ms.reserveOOO(smp)
					reserved++
				}
				res.Accepted++
				a.ooo++
			case appendIdempotent:
				if pend {
					a.needSync = true
				}
				res.Accepted++
				res.Duplicates++
				allAccepted = false
			case appendDuplicate:
				res.refuseOwned(i, owned, smp.T, ErrDuplicateSampleForTimestamp)
				allAccepted = false
			default:
				res.refuseOwned(i, owned, smp.T, ErrSampleTooOld)
				allAccepted = false
			}
		}
	}
	if reserved > 0 {
		smps := samples
		if !allAccepted {
			// Log exactly what was reserved: the tail of the series' pending ops.
			smps = make([]Sample, reserved)
			for k, op := range ms.pending[len(ms.pending)-reserved:] {
				smps[k] = op.s
			}
		}
		if err := st.wal.enqueue(walEntry{typ: recSamples, samples: walSamples{Ref: ms.ref, Samples: smps}}); err != nil {
			ms.mu.Unlock()
			a.err = err
			return
		}
		a.applies = append(a.applies, applyRef{s: ms, end: ms.reservedEnd, th: a.th})
		a.needSync = true
	}
	ms.mu.Unlock()
}

// Commit waits for the WAL commit of everything appended (fsynced when Config.WALSync), makes the
// samples visible and returns the push's outcome, with Store.Push's meaning. The Appender goes back
// to a pool: do not use it afterwards.
func (a *Appender) Commit() (PushResult, error) {
	st, th := a.st, a.th
	res, err := a.res, a.err
	defer a.release()
	if err != nil {
		return res, err
	}
	newChunks := a.newChunks
	if st.wal != nil {
		if a.needSync {
			if err := st.wal.sync(); err != nil {
				// Not acknowledged; what is or will be committed of it becomes visible then.
				st.wal.applyLater(a.applies)
				st.wal.exemplarsLater(a.exemplars) // after their records, like the samples
				return res, err
			}
		}
		for _, ap := range a.applies {
			ap.s.mu.Lock()
			newChunks += ap.s.applyUpTo(ap.end, st.maxAgeMs)
			ap.s.mu.Unlock()
		}
	}
	if len(a.exemplars) > 0 {
		a.commitExemplars()
	}
	if newChunks > 0 {
		th.numChunks.Add(int64(newChunks))
		st.metrics.memChunks.Add(float64(newChunks))
	}
	th.ingested.Add(float64(res.Accepted))
	if a.ooo > 0 {
		th.oooAppended.Add(float64(a.ooo))
	}
	if res.Refused > 0 {
		th.failed.Add(float64(res.Refused))
	}
	return res, nil
}

// release resets a and puts it back into its Store's pool.
func (a *Appender) release() {
	st := a.st
	if a.th != nil {
		st.releaseTenant(a.th)
	}
	clear(a.applies)
	clear(a.exemplars)
	*a = Appender{applies: a.applies[:0], exemplars: a.exemplars[:0]}
	st.appenders.Put(a)
}

func (r *PushResult) refuseOwned(i int, owned labels.Labels, t int64, err error) {
	r.Refused++
	r.Errors = append(r.Errors, SampleError{SeriesIndex: i, Labels: owned, T: t, Count: 1, Err: err})
}
