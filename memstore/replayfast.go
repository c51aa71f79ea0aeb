package memstore

import (
	"unsafe"

	"github.com/prometheus/prometheus/model/labels"
)

// Allocation-free pieces of replay's decoding and series creation (issue 14: replay ≥ 3M
// samples/s at 1M samples of 100k series, where the cost is per series, not per sample).

// scratchLabelsCopy reports whether labels.ScratchBuilder.Labels copies the names and values it
// was given into storage of its own, as the default (stringlabels) build of Prometheus's labels
// does. decodeRecord then hands the builder views of the record's buffer (no string per name and
// value) and the labels it returns belong to the record alone, so replay keeps them as the series'
// labels instead of copying them again. Under another labels build (whose Labels may alias what
// it was given) both fall back to copies. Found out once.
var scratchLabelsCopy = func() bool {
	b := []byte("v")
	var sb labels.ScratchBuilder
	sb.Add("n", unsafe.String(unsafe.SliceData(b), len(b)))
	ls := sb.Labels()
	b[0] = 'w'
	return ls.Get("n") == "v"
}()

// labelString returns b as a string for labels.ScratchBuilder.Add: without a copy when the
// builder's Labels copies it anyway (scratchLabelsCopy), so the view never outlives b's contents.
func labelString(b []byte) string {
	if scratchLabelsCopy {
		return unsafe.String(unsafe.SliceData(b), len(b))
	}
	return string(b)
}

// replaySeries returns the series of lset in th, locked, creating it under ref if needed: what
// lockSeries(th, lset, hash, ref, 0) does during replay (no series limit, no postings — replay
// builds them afterwards — and no WAL record: the series is logged already), except that a
// created series keeps lset itself when owned (labels decodeRecord built for this record alone,
// see scratchLabelsCopy) instead of a copy: one allocation and copy fewer per series.
func (st *Store) replaySeries(th *tenantHead, lset labels.Labels, hash, ref uint64, owned bool) (*memSeries, bool, error) {
	for {
		ms, created, err := th.series.getOrCreate(hash, lset,
			func() (*memSeries, error) {
				if err := validateLabels(lset); err != nil {
					return nil, err
				}
				th.numSeries.Add(1)
				own := lset
				if !owned {
					own = lset.Copy()
				}
				return &memSeries{ref: ref, lset: own, hash: hash}, nil
			},
			func(*memSeries) {})
		if err != nil {
			return nil, false, err
		}
		if ms.deleted {
			// Removed between lookup and lock (as in lockSeries; nothing removes series during
			// replay, but the same rule keeps this path equal to it).
			ms.mu.Unlock()
			continue
		}
		if created {
			st.metrics.memSeries.Inc()
			th.created.Inc()
		}
		return ms, created, nil
	}
}

// replayPosting is a routed series record on its way into its tenant's postings.
type replayPosting struct {
	th   *tenantHead
	ref  uint64
	lset labels.Labels
}

// replayPostings builds the postings of replayed series on a goroutine of its own, beside the
// apply workers, instead of after them (buildPostings was a serial fifth of replay at 100k
// series of 10 labels). The router sends it every series record it routes, in key order — refs
// ascend in a WAL's key order nearly always, so each insert is an append (addBulk merges the
// others) — with the labels the record decoded, which the series created from it keeps as its
// own (replaySeries, owned): the postings reference the series' own label strings, as they do
// when built from the series. A routed record that made no series (invalid labels, or labels
// logged again under another ref) is taken out again at the end (finish), so the postings hold
// exactly the refs of the series in the store, as buildPostings would. Nothing reads the
// postings before replay returns.
type replayPostings struct {
	in   chan []replayPosting
	done chan struct{}
}

func startReplayPostings() *replayPostings {
	pb := &replayPostings{in: make(chan []replayPosting, 64), done: make(chan struct{})}
	go func() {
		defer close(pb.done)
		for batch := range pb.in {
			for i := 0; i < len(batch); {
				j := i + 1
				for j < len(batch) && batch[j].th == batch[i].th {
					j++
				}
				run := batch[i:j]
				run[0].th.postings.addBulk(len(run), func(k int) (uint64, labels.Labels) { return run[k].ref, run[k].lset })
				i = j
			}
		}
	}()
	return pb
}

// finish waits for every batch sent, then removes the refs of not — records that made no series
// — from their tenants' postings. Call once, after the router's last send.
func (pb *replayPostings) finish(not []replayPosting) {
	close(pb.in)
	<-pb.done
	byTenant := map[*tenantHead]map[uint64]labels.Labels{}
	for _, p := range not {
		m := byTenant[p.th]
		if m == nil {
			m = map[uint64]labels.Labels{}
			byTenant[p.th] = m
		}
		m[p.ref] = p.lset
	}
	for th, m := range byTenant {
		th.postings.delete(m)
	}
}
