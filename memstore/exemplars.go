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
// hold. Replay puts them back, oldest first, so the store keeps the newest as it did (at most
// MaxReplayedExemplarsPerTenant per tenant, and only of series replay brought back). Truncate,
// DropAll and a flush's drop (DropFlushedSeries) drop them from the WAL with the samples: a record
// keeps the exemplars at or after the truncation bound; for a flush, each series keeps those at or
// after its own flush bound (exemplarBounds), so that exemplars of series and tenants the flush did
// not reach stay. Exemplars are never flushed to blocks, as in Prometheus and Mimir: the WAL holds
// those of the range still in memory, the store at most its size.
//
// A tenant's store is created by the first exemplar it keeps, and freed when its limit goes to 0 or
// the tenant is retired (retireIfEmpty: no series left, so no exemplar can be appended or queried
// until a series comes back).

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

	// validator is an empty store of size 1, never added to: AppendExemplars checks a tenant's
	// exemplars against it (label length) while the tenant has no store, so that one is created
	// only when an exemplar is kept.
	validator *tsdb.CircularExemplarStorage

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
	v, err := tsdb.NewCircularExemplarStorage(1, tsdb.NewExemplarMetrics(prometheus.NewRegistry()))
	if err != nil {
		return nil, fmt.Errorf("memstore: creating the exemplar validator: %w", err)
	}
	es.validator = v.(*tsdb.CircularExemplarStorage)
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
	if (te != nil && te.size.Load() == int64(limit)) || (te == nil && limit <= 0) {
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

// drop frees tenant's store (the tenant was retired: retireIfEmpty).
func (es *exemplarStore) drop(tenant string) {
	es.mu.Lock()
	delete(es.tenants, tenant)
	es.mu.Unlock()
}

// addCommitted stores exemplars whose WAL record is committed in the tenant's store now: the one
// the push saw may have been freed since (limit 0, tenant retired), and then they are not kept.
func (es *exemplarStore) addCommitted(we *walExemplars) {
	es.mu.RLock()
	te := es.tenants[we.Tenant]
	es.mu.RUnlock()
	if te != nil {
		es.add(te, we.Tenant, we.Labels, we.Exemplars)
	}
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
	// Keep the newest Max, deterministically: order every exemplar by time, newest first, ties by
	// series (later in label order first) then by position in its series (later first). A series'
	// exemplars are in time order, so what it keeps is a suffix: count it per series.
	type pos struct {
		t    int64
		i, j int
	}
	all := make([]pos, 0, total)
	for i, r := range res {
		for j, e := range r.Exemplars {
			all = append(all, pos{e.Ts, i, j})
		}
	}
	slices.SortFunc(all, func(a, b pos) int {
		switch {
		case a.t != b.t:
			return cmpDesc(a.t, b.t)
		case a.i != b.i:
			return cmpDesc(int64(a.i), int64(b.i))
		}
		return cmpDesc(int64(a.j), int64(b.j))
	})
	keep := make([]int, len(res))
	for _, p := range all[:q.Max] {
		keep[p.i]++
	}
	out := make([]exemplar.QueryResult, 0, len(res))
	for i, r := range res {
		if keep[i] == 0 {
			continue
		}
		r.Exemplars = r.Exemplars[len(r.Exemplars)-keep[i]:]
		out = append(out, r)
	}
	return out, true, nil
}

func cmpDesc(a, b int64) int {
	switch {
	case a > b:
		return -1
	case a < b:
		return 1
	}
	return 0
}

// AppendExemplars adds exemplars of a series appended to this push (Append it first: exemplars of a
// series the push refused or that does not exist are dropped, as Prometheus's head needs a series
// for them). They are checked against the tenant's store (duplicates dropped, older than the
// series' newest refused and counted), logged with the push's samples and stored once their WAL
// record is committed (by Commit, or after a failed sync once the retry commits it, as the push's
// samples). lset and the exemplars' labels are read only during the call. It returns how many
// exemplars it took. The tenant's limit is asked once per Appender (it walks the ring).
func (a *Appender) AppendExemplars(lset labels.Labels, exs []Exemplar) int {
	if a.err != nil || len(exs) == 0 || a.th == nil {
		return 0
	}
	st := a.st
	tenant := a.th.name
	if !a.exLimitKnown {
		a.exLimit, a.exLimitKnown = (*st.exemplars.limit.Load())(tenant), true
	}
	if a.exLimit <= 0 {
		st.exemplars.get(tenant, 0) // frees a store left from a limit above 0
		return 0
	}
	ms := a.th.series.getByHash(st.hashFn(lset), lset)
	if ms == nil {
		return 0
	}
	// The tenant's store only if it has one: it is created below once something is kept.
	st.exemplars.mu.RLock()
	te := st.exemplars.tenants[tenant]
	st.exemplars.mu.RUnlock()
	check := st.exemplars.validator
	if te != nil {
		check = te.ces
	}
	var kept []Exemplar
	for _, e := range exs {
		err := check.ValidateExemplar(ms.lset, exemplar.Exemplar{Labels: e.Labels, Value: e.Value, Ts: e.T, HasTs: true})
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
	if st.exemplars.get(tenant, a.exLimit) == nil {
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
	a.exemplars = append(a.exemplars, we)
	return len(kept)
}

// commitExemplars stores a committed push's exemplars.
func (a *Appender) commitExemplars() {
	for i := range a.exemplars {
		a.st.exemplars.addCommitted(&a.exemplars[i])
	}
}

// exemplarsLater hands the exemplars of a push whose sync failed to the committer, which stores
// them once every entry queued before (their records) is committed, as wal.applyLater does for the
// push's samples: memory never shows an exemplar the WAL does not hold, and shows every one it
// does. After close it does nothing.
func (w *wal) exemplarsLater(exs []walExemplars) {
	if len(exs) == 0 {
		return
	}
	if w.enqueue(walEntry{laterExemplars: slices.Clone(exs)}) == nil {
		select {
		case w.wake <- struct{}{}:
		default:
		}
	}
}

// MaxReplayedExemplarsPerTenant bounds the exemplars replay puts back per tenant (the newest): the
// limit is not known during Open (it is 0 until the ingester sets it, and depends on the ring), and
// the WAL may hold many more than any limit. A tenant whose local limit is larger gets back only
// this many after a restart (documented in -ingester.max-global-exemplars-per-user's help).
const MaxReplayedExemplarsPerTenant = 250_000

// replayExemplarsCap is MaxReplayedExemplarsPerTenant; tests lower it.
var replayExemplarsCap = MaxReplayedExemplarsPerTenant

// replayExemplars are the exemplars read from the WAL, per tenant in WAL order, until replay ends.
// Each tenant's are trimmed to the newest replayExemplarsCap whenever they reach twice that, so
// replay holds at most about twice the cap per tenant.
type replayExemplars map[string]*tenantReplayExemplars

type tenantReplayExemplars struct {
	ws []walExemplars
	n  int // exemplars in ws
}

// add appends e (the newest so far) to its tenant's.
func (rx replayExemplars) add(e walExemplars) {
	t := rx[e.Tenant]
	if t == nil {
		t = &tenantReplayExemplars{}
		rx[e.Tenant] = t
	}
	t.ws = append(t.ws, e)
	t.n += len(e.Exemplars)
	if t.n >= 2*replayExemplarsCap {
		t.trim(replayExemplarsCap)
	}
}

// trim keeps the newest n exemplars (the last entries; of the oldest kept entry, its last ones).
func (t *tenantReplayExemplars) trim(n int) {
	if t.n <= n {
		return
	}
	i, kept := len(t.ws), 0
	for i > 0 && kept < n {
		i--
		kept += len(t.ws[i].Exemplars)
	}
	ws := slices.Clone(t.ws[i:]) // the dropped entries' memory goes
	if over := kept - n; over > 0 {
		ws[0].Exemplars = slices.Clone(ws[0].Exemplars[over:])
		kept = n
	}
	t.ws, t.n = ws, kept
}

// finishReplay stores the replayed exemplars of the series replay brought back (Prometheus's head
// too drops exemplars of series it does not hold): each tenant's newest replayExemplarsCap, in a
// store of that size at most (the limit is not known during Open; SetExemplarLimit later resizes
// it, keeping the newest). The series' own labels are used, not the record's copy.
func (st *Store) finishReplay(rx replayExemplars) int {
	es := st.exemplars
	n := 0
	for tenant, t := range rx {
		th := st.tenant(tenant)
		if th == nil {
			continue
		}
		t.trim(replayExemplarsCap)
		out := t.ws[:0]
		total := 0
		for _, w := range t.ws {
			ms := th.series.getByHash(st.hashFn(w.Labels), w.Labels)
			if ms == nil {
				continue
			}
			w.Labels = ms.lset
			out = append(out, w)
			total += len(w.Exemplars)
		}
		te := es.get(tenant, total)
		if te == nil {
			continue
		}
		for _, w := range out {
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

// exemplarKey finds a series' flush bound from an exemplars entry, keyed by tenant and labels.
type exemplarKey struct {
	tenant string
	hash   uint64 // of the labels, under the Store's hash function (memSeries.hash)
}

type exemplarSeriesBound struct {
	lset  labels.Labels
	bound FlushBound
}

// exemplarBounds are the flush bounds of a flush's series by tenant and labels, for the WAL's
// exemplars entries (which name their series by labels, not by ref). A flush's drop removes from
// the WAL a series' exemplars older than that series' own bound, in records committed before its
// snapshot began, as for its samples; every other exemplar stays. Not one bound for all (the
// largest, as before): an idle series is flushed to its last sample while active ones only to the
// cutoff and other tenants not at all, and their exemplars, still in memory, must survive a crash.
// Per series rather than the oldest sample in memory: as cheap (the drop walks the series anyway,
// and only the flushed ones are recorded) and it keeps no more than needed. Like Prometheus's
// checkpoint (which keeps the exemplars at or after the head's new start), exemplars older than
// what memory still holds of their series are not kept.
type exemplarBounds map[exemplarKey][]exemplarSeriesBound

func (xb exemplarBounds) add(tenant string, ms *memSeries, b FlushBound) {
	k := exemplarKey{tenant, ms.hash}
	xb[k] = append(xb[k], exemplarSeriesBound{ms.lset, b})
}

// filter keeps, in place, the exemplars of r at or after their series' bound.
func (xb exemplarBounds) filter(r *record, hash func(labels.Labels) uint64) (changed, drop bool) {
	return filterExemplarsBy(r, func(e *walExemplars) int64 {
		for _, sb := range xb[exemplarKey{e.Tenant, hash(e.Labels)}] {
			if labels.Equal(sb.lset, e.Labels) {
				if r.seq > sb.bound.WALSeq {
					return math.MinInt64 // committed after the snapshot: a later drop filters it
				}
				return sb.bound.Before
			}
		}
		return math.MinInt64 // not flushed
	})
}

// filterExemplars keeps the exemplars at or after before (Truncate, DropAll), in place.
func filterExemplars(r *record, before int64) (changed, drop bool) {
	return filterExemplarsBy(r, func(*walExemplars) int64 { return before })
}

// filterExemplarsBy keeps each entry's exemplars at or after boundOf(entry), in place.
func filterExemplarsBy(r *record, boundOf func(*walExemplars) int64) (changed, drop bool) {
	out := r.Exemplars[:0]
	for _, e := range r.Exemplars {
		before := boundOf(&e)
		if before == math.MinInt64 {
			out = append(out, e)
			continue
		}
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
