package memstore

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
	"sort"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/prometheus/model/exemplar"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb"
)

// Exemplars: a per-tenant circular store, Prometheus's tsdb.CircularExemplarStorage (the one its
// head and Mimir's ingesters use), one per tenant sized by the tenant's limit
// (-ingester.max-global-exemplars-per-user converted to this ingester's share, as the series limit
// is: SetExemplarLimit). A limit of 0 stores nothing and frees the tenant's store.
//
// Durability: an accepted exemplar is logged in the WAL (record type 7, WAL-FORMAT.md) in the same
// group commit as the push's samples, and enters the store only once that commit succeeded, so the
// push is acknowledged only with its exemplars durable and a reader never sees one the WAL does not
// hold. Replay puts them back, oldest first, so the store keeps the newest as it did. Truncate,
// DropAll and a flush's drop (DropFlushedSeries) drop them from the WAL with the samples: a record
// keeps the exemplars at or after the truncation bound (for a flush, the end of the newest range it
// flushed: exemplarBound). Exemplars are never flushed to blocks, as in Prometheus and Mimir: the
// WAL holds those of the range still in memory, the store at most its size.

// Exemplar is one exemplar of a series: its labels (trace_id, ...), value and timestamp (ms).
type Exemplar struct {
	Labels labels.Labels
	Value  float64
	T      int64
}

// ExemplarLimit returns the most exemplars this Store keeps for a tenant (0: none).
type ExemplarLimit func(tenant string) int

// walExemplars is one WAL entry: the exemplars a push added to one series.
type walExemplars struct {
	Tenant    string
	Labels    labels.Labels // the series'
	Exemplars []Exemplar
}

// exemplarStore holds every tenant's exemplars.
type exemplarStore struct {
	limit atomic.Pointer[ExemplarLimit]

	mu      sync.RWMutex
	tenants map[string]*tenantExemplars

	appended   *prometheus.CounterVec // {user}
	outOfOrder *prometheus.CounterVec // {user}
}

// tenantExemplars is one tenant's store. CircularExemplarStorage locks itself; size is changed
// under exemplarStore.mu with the store's Resize.
type tenantExemplars struct {
	ces  *tsdb.CircularExemplarStorage
	reg  *prometheus.Registry // the storage's own metrics, read by the collector
	size atomic.Int64
}

func newExemplarStore(reg prometheus.Registerer) (*exemplarStore, error) {
	es := &exemplarStore{
		tenants: map[string]*tenantExemplars{},
		appended: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "cortex_ingester_tsdb_exemplar_exemplars_appended_total",
			Help: "Total number of appended exemplars (after their WAL commit)."}, []string{"user"}),
		outOfOrder: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "cortex_ingester_tsdb_exemplar_out_of_order_exemplars_total",
			Help: "Total number of out-of-order exemplars refused (older than the newest of their series)."}, []string{"user"}),
	}
	noLimit := ExemplarLimit(func(string) int { return 0 })
	es.limit.Store(&noLimit)
	if reg != nil {
		for _, c := range []prometheus.Collector{es.appended, es.outOfOrder, exemplarCollector{es}} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return es, nil
}

// get returns tenant's store sized for limit (created, resized or, for 0, dropped as needed).
func (es *exemplarStore) get(tenant string, limit int) *tenantExemplars {
	es.mu.RLock()
	te := es.tenants[tenant]
	es.mu.RUnlock()
	if te != nil && te.size.Load() == int64(limit) {
		return te
	}
	es.mu.Lock()
	defer es.mu.Unlock()
	te = es.tenants[tenant]
	switch {
	case limit <= 0:
		delete(es.tenants, tenant)
		return nil
	case te == nil:
		r := prometheus.NewRegistry()
		s, err := tsdb.NewCircularExemplarStorage(int64(limit), tsdb.NewExemplarMetrics(r))
		if err != nil {
			return nil // cannot happen: it fails for no length
		}
		te = &tenantExemplars{ces: s.(*tsdb.CircularExemplarStorage), reg: r}
		te.size.Store(int64(limit))
		es.tenants[tenant] = te
	case te.size.Load() != int64(limit):
		te.ces.Resize(int64(limit)) // keeps the newest
		te.size.Store(int64(limit))
	}
	return te
}

// applyLimits resizes every tenant's store to its limit now (SetExemplarLimit, a ring change).
func (es *exemplarStore) applyLimits() {
	es.mu.RLock()
	names := make([]string, 0, len(es.tenants))
	for n := range es.tenants {
		names = append(names, n)
	}
	es.mu.RUnlock()
	lim := *es.limit.Load()
	for _, n := range names {
		es.get(n, lim(n))
	}
}

// add stores exemplars of one series; duplicates are ignored, out-of-order ones counted.
func (es *exemplarStore) add(te *tenantExemplars, tenant string, lset labels.Labels, exs []Exemplar) {
	n := 0
	for _, e := range exs {
		err := te.ces.AddExemplar(lset, exemplar.Exemplar{Labels: e.Labels, Value: e.Value, Ts: e.T, HasTs: true})
		switch {
		case err == nil:
			n++
		case errors.Is(err, storage.ErrOutOfOrderExemplar):
			es.outOfOrder.WithLabelValues(tenant).Inc()
		}
	}
	if n > 0 {
		es.appended.WithLabelValues(tenant).Add(float64(n))
	}
}

// SetExemplarLimit replaces the per-tenant exemplar limit (asked on every push with exemplars, so
// a reloaded override applies to the next one) and resizes the stores of the tenants that have one
// now. Until it is called the limit is 0: no exemplar is stored, and those replayed from the WAL
// wait in stores of their own size for the first limit.
func (st *Store) SetExemplarLimit(l ExemplarLimit) {
	st.exemplars.limit.Store(&l)
	st.exemplars.applyLimits()
}

// ApplyExemplarLimits resizes every tenant's exemplar store to its limit now (the limits depend on
// the ring: the ingester calls it when the ring changes).
func (st *Store) ApplyExemplarLimits() { st.exemplars.applyLimits() }

// ExemplarQuery asks for the exemplars in [Start, End] of the series matching any of MatcherSets,
// at most Max of them (0: no bound).
type ExemplarQuery struct {
	Start, End  int64
	MatcherSets [][]*labels.Matcher
	Max         int
}

// QueryExemplars answers q for tenant: series in label order, each one's exemplars in time order,
// and whether Max cut the answer (the newest exemplars are kept). Exemplars are read from memory.
func (st *Store) QueryExemplars(tenant string, q ExemplarQuery) ([]exemplar.QueryResult, bool, error) {
	st.exemplars.mu.RLock()
	te := st.exemplars.tenants[tenant]
	st.exemplars.mu.RUnlock()
	if te != nil && (*st.exemplars.limit.Load())(tenant) <= 0 {
		te = st.exemplars.get(tenant, 0) // the limit went to 0: nothing is kept (and the store goes)
	}
	if te == nil || len(q.MatcherSets) == 0 {
		return nil, false, nil
	}
	res, err := te.ces.Select(q.Start, q.End, q.MatcherSets...)
	if err != nil {
		return nil, false, fmt.Errorf("memstore: selecting exemplars of tenant %q: %w", tenant, err)
	}
	sort.Slice(res, func(i, j int) bool { return labels.Compare(res[i].SeriesLabels, res[j].SeriesLabels) < 0 })
	if q.Max <= 0 {
		return res, false, nil
	}
	total := 0
	for _, r := range res {
		total += len(r.Exemplars)
	}
	if total <= q.Max {
		return res, false, nil
	}
	// Keep the newest Max: find the timestamp cut, then trim each series' oldest.
	ts := make([]int64, 0, total)
	for _, r := range res {
		for _, e := range r.Exemplars {
			ts = append(ts, e.Ts)
		}
	}
	slices.Sort(ts)
	cut := ts[total-q.Max] // keep exemplars at or after cut, and no more than Max of them
	kept, out := 0, make([]exemplar.QueryResult, 0, len(res))
	for i := len(res) - 1; i >= 0; i-- { // bounded below, whatever the ties
		r := res[i]
		k := len(r.Exemplars)
		for k > 0 && r.Exemplars[k-1].Ts >= cut && kept < q.Max {
			k--
			kept++
		}
		r.Exemplars = r.Exemplars[k:]
		if len(r.Exemplars) > 0 {
			out = append(out, r)
		}
	}
	slices.Reverse(out)
	return out, true, nil
}

// AppendExemplars adds exemplars of a series appended to this push (Append it first: exemplars of a
// series the push refused or that does not exist are dropped, as Prometheus's head needs a series
// for them). They are checked against the tenant's store (duplicates dropped, older than the
// series' newest refused and counted), logged with the push's samples and stored once Commit's WAL
// commit succeeded. lset and the exemplars' labels are read only during the call. It returns how
// many exemplars it took.
func (a *Appender) AppendExemplars(lset labels.Labels, exs []Exemplar) int {
	if a.err != nil || len(exs) == 0 || a.th == nil {
		return 0
	}
	st := a.st
	tenant := a.th.name
	te := st.exemplars.get(tenant, (*st.exemplars.limit.Load())(tenant))
	if te == nil {
		return 0
	}
	ms := a.th.series.getByHash(st.hashFn(lset), lset)
	if ms == nil {
		return 0
	}
	var kept []Exemplar
	for _, e := range exs {
		err := te.ces.ValidateExemplar(ms.lset, exemplar.Exemplar{Labels: e.Labels, Value: e.Value, Ts: e.T, HasTs: true})
		switch {
		case err == nil:
			kept = append(kept, Exemplar{Labels: e.Labels.Copy(), Value: e.Value, T: e.T})
		case errors.Is(err, storage.ErrOutOfOrderExemplar):
			st.exemplars.outOfOrder.WithLabelValues(tenant).Inc()
		}
	}
	if len(kept) == 0 {
		return 0
	}
	we := walExemplars{Tenant: tenant, Labels: ms.lset, Exemplars: kept}
	if st.wal != nil {
		if err := st.wal.enqueue(walEntry{typ: recExemplars, exemplars: we}); err != nil {
			a.err = err
			return 0
		}
		a.needSync = true
	}
	a.exemplars = append(a.exemplars, pendingExemplars{te: te, e: we})
	return len(kept)
}

// pendingExemplars are exemplars waiting for their push's WAL commit.
type pendingExemplars struct {
	te *tenantExemplars
	e  walExemplars
}

// commitExemplars stores a committed push's exemplars.
func (a *Appender) commitExemplars() {
	for _, p := range a.exemplars {
		a.st.exemplars.add(p.te, p.e.Tenant, p.e.Labels, p.e.Exemplars)
	}
}

// replayExemplars are the exemplars read from the WAL, per tenant in WAL order, until replay ends.
type replayExemplars map[string][]walExemplars

// finish stores the replayed exemplars: each tenant's store is created with room for all of them
// (the limit is not known during Open), and SetExemplarLimit later resizes it keeping the newest.
func (es *exemplarStore) finishReplay(rx replayExemplars) int {
	n := 0
	for tenant, ws := range rx {
		total := 0
		for _, w := range ws {
			total += len(w.Exemplars)
		}
		te := es.get(tenant, total)
		if te == nil {
			continue
		}
		for _, w := range ws {
			es.add(te, tenant, w.Labels, w.Exemplars)
		}
		n += total
	}
	return n
}

// exemplarCollector exposes the per-tenant storages' gauges, summed, with Mimir's names.
type exemplarCollector struct{ es *exemplarStore }

var (
	exemplarsInStorageDesc = prometheus.NewDesc("cortex_ingester_tsdb_exemplar_exemplars_in_storage",
		"Number of exemplars currently in the circular stores of every tenant.", nil, nil)
	seriesWithExemplarsDesc = prometheus.NewDesc("cortex_ingester_tsdb_exemplar_series_with_exemplars_in_storage",
		"Number of series with exemplars currently in the circular stores of every tenant.", nil, nil)
	lastExemplarsTsDesc = prometheus.NewDesc("cortex_ingester_tsdb_exemplar_last_exemplars_timestamp_seconds",
		"The timestamp of the oldest exemplar in each tenant's circular store: how far back its limit reaches.", []string{"user"}, nil)
	maxExemplarsDesc = prometheus.NewDesc("cortex_ingester_tsdb_exemplar_max_exemplars",
		"The size of each tenant's circular exemplar store: its share of -ingester.max-global-exemplars-per-user.", []string{"user"}, nil)
)

func (c exemplarCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- exemplarsInStorageDesc
	ch <- seriesWithExemplarsDesc
	ch <- lastExemplarsTsDesc
	ch <- maxExemplarsDesc
}

func (c exemplarCollector) Collect(ch chan<- prometheus.Metric) {
	c.es.mu.RLock()
	tenants := make(map[string]*tenantExemplars, len(c.es.tenants))
	for n, te := range c.es.tenants {
		tenants[n] = te
	}
	c.es.mu.RUnlock()
	var inStorage, series float64
	for name, te := range tenants {
		mfs, err := te.reg.Gather()
		if err != nil {
			continue
		}
		for _, mf := range mfs {
			v := sumGauges(mf)
			switch mf.GetName() {
			case "prometheus_tsdb_exemplar_exemplars_in_storage":
				inStorage += v
			case "prometheus_tsdb_exemplar_series_with_exemplars_in_storage":
				series += v
			case "prometheus_tsdb_exemplar_last_exemplars_timestamp_seconds":
				ch <- prometheus.MustNewConstMetric(lastExemplarsTsDesc, prometheus.GaugeValue, v, name)
			}
		}
		ch <- prometheus.MustNewConstMetric(maxExemplarsDesc, prometheus.GaugeValue, float64(te.size.Load()), name)
	}
	ch <- prometheus.MustNewConstMetric(exemplarsInStorageDesc, prometheus.GaugeValue, inStorage)
	ch <- prometheus.MustNewConstMetric(seriesWithExemplarsDesc, prometheus.GaugeValue, series)
}

func sumGauges(mf *dto.MetricFamily) float64 {
	v := 0.0
	for _, m := range mf.GetMetric() {
		if g := m.GetGauge(); g != nil {
			v += g.GetValue()
		}
	}
	return v
}

// ---- WAL record type 7 (WAL-FORMAT.md) ----

// appendExemplarsEntry appends one exemplars entry (a series' exemplars of one push).
func appendExemplarsEntry(b []byte, e *walExemplars) []byte {
	b = appendUvarintString(b, e.Tenant)
	b = appendLabels(b, e.Labels)
	b = binary.AppendUvarint(b, uint64(len(e.Exemplars)))
	for _, x := range e.Exemplars {
		b = appendLabels(b, x.Labels)
		b = binary.BigEndian.AppendUint64(b, uint64(x.T))
		b = binary.BigEndian.AppendUint64(b, math.Float64bits(x.Value))
	}
	return b
}

func appendLabels(b []byte, ls labels.Labels) []byte {
	b = binary.AppendUvarint(b, uint64(ls.Len()))
	ls.Range(func(l labels.Label) {
		b = appendUvarintString(b, l.Name)
		b = appendUvarintString(b, l.Value)
	})
	return b
}

// appendExemplarsRecord appends one exemplars record holding es, in the version this build writes.
func appendExemplarsRecord(b []byte, seq uint64, es []walExemplars) []byte {
	body := binary.AppendUvarint(nil, uint64(len(es)))
	for i := range es {
		body = appendExemplarsEntry(body, &es[i])
	}
	var zbuf []byte
	return appendRecord(b, seq, recordVersion, recExemplars, body, &zbuf)
}

// labels reads what appendLabels wrote (sorted on read, as the series record's labels are).
func (d *decbuf) labels(sb *labels.ScratchBuilder) labels.Labels {
	nl := d.count("label count", 2)
	sb.Reset()
	for range nl {
		name := d.bytes("label name")
		value := d.bytes("label value")
		if d.err != nil {
			return labels.EmptyLabels()
		}
		sb.Add(string(name), string(value))
	}
	sb.Sort()
	return sb.Labels()
}

// decodeExemplars decodes an exemplars payload into r.Exemplars. Strings are copied.
func (r *record) decodeExemplars(d *decbuf) error {
	n := d.count("exemplars entry count", 4)
	r.Exemplars = r.Exemplars[:0]
	sb := labels.NewScratchBuilder(0)
	for range n {
		var e walExemplars
		e.Tenant = string(d.bytes("tenant"))
		e.Labels = d.labels(&sb)
		nx := d.count("exemplar count", 17)
		for range nx {
			ls := d.labels(&sb)
			t := int64(d.be64("exemplar timestamp"))
			v := math.Float64frombits(d.be64("exemplar value"))
			if d.err != nil {
				return d.err
			}
			e.Exemplars = append(e.Exemplars, Exemplar{Labels: ls, Value: v, T: t})
		}
		if d.err != nil {
			return d.err
		}
		if e.Tenant == "" || e.Labels.IsEmpty() || len(e.Exemplars) == 0 {
			return fmt.Errorf("%w: exemplars entry without a tenant, series labels or exemplars", ErrCorruptRecord)
		}
		r.Exemplars = append(r.Exemplars, e)
	}
	return d.err
}

// exemplarBound is the time before which a flush's drop removes exemplars from the WAL: the end
// of the newest range it flushed (the largest Before of its bounds). Exemplars are not flushed to
// blocks; like Prometheus's checkpoint, which keeps the exemplars from the head's new start, the WAL
// keeps those of the range still in memory. MinInt64 (keep all) without a bound.
func exemplarBound(bounds map[uint64]FlushBound) int64 {
	b := int64(math.MinInt64)
	for _, fb := range bounds {
		b = max(b, fb.Before)
	}
	return b
}

// filterExemplars keeps the exemplars at or after before (Truncate, DropAll), in place.
func filterExemplars(r *record, before int64) (changed, drop bool) {
	out := r.Exemplars[:0]
	for _, e := range r.Exemplars {
		n := len(e.Exemplars)
		e.Exemplars = slices.DeleteFunc(e.Exemplars, func(x Exemplar) bool { return x.T < before })
		if len(e.Exemplars) != n {
			changed = true
		}
		if len(e.Exemplars) > 0 {
			out = append(out, e)
		} else {
			changed = true
		}
	}
	r.Exemplars = out
	return changed, len(out) == 0
}
