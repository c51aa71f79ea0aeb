package ingester

import (
	"cmp"
	"context"
	"flag"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/raftingest/raftingest/ingesterpb"
)

// Metric metadata (type, help, unit per metric name) as Mimir's ingesters keep it: in memory, per
// tenant and metric, each entry forgotten -ingester.metadata-retain-period after it was last
// received. It is not logged in the WAL (Mimir does not log it either): Prometheus sends every
// metric's metadata again every metadata_config.send_interval (1m), so a restarted member has it
// back within a minute, and the querier asks every member and merges, so the RF-1 other replicas
// answer meanwhile.

// metadataConfig is the metadata store's flags, Mimir's names.
type metadataConfig struct {
	// MaxGlobalPerUser is -ingester.max-global-metadata-per-user: metric names with metadata per
	// tenant across the cluster (0: unlimited), converted to a local limit as the series limit is.
	MaxGlobalPerUser int
	// MaxGlobalPerMetric is -ingester.max-global-metadata-per-metric: distinct metadata entries of
	// one metric name (0: unlimited); every replica holds all of a metric's, so it is not divided.
	MaxGlobalPerMetric int
	// RetainPeriod is -ingester.metadata-retain-period.
	RetainPeriod time.Duration
}

// Defaults. Mimir leaves both limits at 0 (unlimited); ours are bounded so that a tenant sending
// metadata under random names cannot grow a member's memory without end: 50000 metric names is
// ten times what a large Prometheus scrapes, and 10 entries per metric covers targets that
// disagree on a metric's help or unit.
const (
	DefaultMaxGlobalMetadataPerUser   = 50_000
	DefaultMaxGlobalMetadataPerMetric = 10
	DefaultMetadataRetainPeriod       = 10 * time.Minute
)

func (c *metadataConfig) RegisterFlags(f *flag.FlagSet) {
	f.IntVar(&c.MaxGlobalPerUser, "ingester.max-global-metadata-per-user", DefaultMaxGlobalMetadataPerUser,
		"Maximum number of metric names with metadata per tenant across the cluster, converted to a local limit as -ingester.max-global-series-per-user is (metadata of a metric goes to the replicas of its name); metadata of a metric over it is dropped and counted in cortex_discarded_metadata_total{reason=\"per_user_metadata_limit\"}. 0 for no limit (Mimir's default).")
	f.IntVar(&c.MaxGlobalPerMetric, "ingester.max-global-metadata-per-metric", DefaultMaxGlobalMetadataPerMetric,
		"Maximum number of distinct metadata entries (type, help, unit) per metric name and tenant; more are dropped and counted in cortex_discarded_metadata_total{reason=\"per_metric_metadata_limit\"}. 0 for no limit (Mimir's default).")
	f.DurationVar(&c.RetainPeriod, "ingester.metadata-retain-period", DefaultMetadataRetainPeriod,
		"How long a metric metadata entry is kept after it was last received (Prometheus sends it again every minute by default). Metadata is kept in memory only, never in the WAL, as in Mimir.")
}

func (c *metadataConfig) Validate() error {
	switch {
	case c.MaxGlobalPerUser < 0:
		return fmt.Errorf("-ingester.max-global-metadata-per-user=%d: want zero (no limit) or more", c.MaxGlobalPerUser)
	case c.MaxGlobalPerMetric < 0:
		return fmt.Errorf("-ingester.max-global-metadata-per-metric=%d: want zero (no limit) or more", c.MaxGlobalPerMetric)
	case c.RetainPeriod <= 0:
		return fmt.Errorf("-ingester.metadata-retain-period=%s: want more than zero", c.RetainPeriod)
	}
	return nil
}

// metadataKey is one distinct metadata entry of a metric.
type metadataKey struct {
	typ        ingesterpb.MetricType
	help, unit string
}

// metadataStore is every tenant's metric metadata. Safe for concurrent use. Each tenant has its
// own lock, so that a query or purge of one tenant's entries (a query of 500k entries takes most of
// a second to build) does not stall the pushes of the others; mu guards only the map of tenants.
type metadataStore struct {
	cfg       metadataConfig
	perUser   func() int // the local per-tenant limit now (0: none)
	now       func() time.Time
	discarded *prometheus.CounterVec // {user, reason}
	inMemory  prometheus.GaugeFunc
	entries   atomic.Int64 // every tenant's

	mu      sync.RWMutex
	tenants map[string]*tenantMetadata

	// queryHook, when set (tests), runs in query once the tenant's entries are copied, before the
	// answer is built: no lock is held then.
	queryHook func()
}

// tenantMetadata is one tenant's metadata, under its own lock.
type tenantMetadata struct {
	mu      sync.Mutex
	metrics map[string]map[metadataKey]time.Time // metric → entry → last received
	gone    bool                                 // purge removed it from the store's map: add looks again
}

func newMetadataStore(cfg metadataConfig, perUser func() int, now func() time.Time, reg prometheus.Registerer) (*metadataStore, error) {
	ms := &metadataStore{cfg: cfg, perUser: perUser, now: now, tenants: map[string]*tenantMetadata{},
		discarded: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "cortex_ingester_discarded_metadata_total",
			Help: "Metric metadata entries an ingester dropped for its limits, by reason."}, []string{"user", "reason"}),
	}
	ms.inMemory = prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "cortex_ingester_memory_metadata",
		Help: "Metric metadata entries held in memory, every tenant."}, func() float64 {
		return float64(ms.entries.Load())
	})
	if reg != nil {
		for _, c := range []prometheus.Collector{ms.discarded, ms.inMemory} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return ms, nil
}

// tenant returns tenant's metadata, created when it has none.
func (ms *metadataStore) tenant(tenant string) *tenantMetadata {
	ms.mu.RLock()
	tm := ms.tenants[tenant]
	ms.mu.RUnlock()
	if tm != nil {
		return tm
	}
	ms.mu.Lock()
	defer ms.mu.Unlock()
	if tm = ms.tenants[tenant]; tm == nil {
		tm = &tenantMetadata{metrics: map[string]map[metadataKey]time.Time{}}
		ms.tenants[strings.Clone(tenant)] = tm
	}
	return tm
}

// add records mds (strings aliasing a request: copied when kept) as received now.
func (ms *metadataStore) add(tenant string, mds []ingesterpb.MetadataView) {
	if len(mds) == 0 {
		return
	}
	now := ms.now()
	limit := 0
	if ms.perUser != nil {
		limit = ms.perUser()
	}
	for {
		tm := ms.tenant(tenant)
		tm.mu.Lock()
		if tm.gone { // purged empty between the lookup and the lock
			tm.mu.Unlock()
			continue
		}
		ms.addLocked(tm, tenant, mds, now, limit)
		tm.mu.Unlock()
		return
	}
}

func (ms *metadataStore) addLocked(tm *tenantMetadata, tenant string, mds []ingesterpb.MetadataView, now time.Time, limit int) {
	metrics := tm.metrics
	added := 0
	for _, m := range mds {
		if m.MetricFamilyName == "" {
			continue
		}
		entries := metrics[m.MetricFamilyName]
		if entries == nil {
			if limit > 0 && len(metrics) >= limit {
				ms.discarded.WithLabelValues(tenant, "per_user_metadata_limit").Inc()
				continue
			}
			entries = map[metadataKey]time.Time{}
			metrics[strings.Clone(m.MetricFamilyName)] = entries
		}
		k := metadataKey{typ: m.Type, help: m.Help, unit: m.Unit}
		if _, ok := entries[k]; ok {
			entries[k] = now // the lookup with aliasing strings does not keep them
			continue
		}
		if ms.cfg.MaxGlobalPerMetric > 0 && len(entries) >= ms.cfg.MaxGlobalPerMetric {
			ms.discarded.WithLabelValues(tenant, "per_metric_metadata_limit").Inc()
			continue
		}
		entries[metadataKey{typ: m.Type, help: strings.Clone(m.Help), unit: strings.Clone(m.Unit)}] = now
		added++
	}
	ms.entries.Add(int64(added))
}

// purge forgets the entries last received before now minus the retain period, one tenant at a
// time under its own lock, then the tenants left without entries.
func (ms *metadataStore) purge() {
	cut := ms.now().Add(-ms.cfg.RetainPeriod)
	ms.mu.RLock()
	tenants := make([]*tenantMetadata, 0, len(ms.tenants))
	for _, tm := range ms.tenants {
		tenants = append(tenants, tm)
	}
	ms.mu.RUnlock()
	empty := false
	for _, tm := range tenants {
		tm.mu.Lock()
		removed := 0
		for name, entries := range tm.metrics {
			for k, at := range entries {
				if at.Before(cut) {
					delete(entries, k)
					removed++
				}
			}
			if len(entries) == 0 {
				delete(tm.metrics, name)
			}
		}
		empty = empty || len(tm.metrics) == 0
		tm.mu.Unlock()
		ms.entries.Add(-int64(removed))
	}
	if !empty {
		return
	}
	ms.mu.Lock()
	defer ms.mu.Unlock()
	for name, tm := range ms.tenants {
		tm.mu.Lock() // order: ms.mu, then a tenant's (add never holds both)
		if len(tm.metrics) == 0 {
			tm.gone = true
			delete(ms.tenants, name)
		}
		tm.mu.Unlock()
	}
}

// run purges every minute (or every retain period when shorter) until ctx ends.
func (ms *metadataStore) run(ctx context.Context) {
	t := time.NewTicker(min(time.Minute, ms.cfg.RetainPeriod))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			ms.purge()
		}
	}
}

// metadataEntry is one entry copied out of the store for a query.
type metadataEntry struct {
	k  metadataKey
	at time.Time
}

// query answers MetricsMetadata: metrics in name order, at most limit of them and limitPerMetric
// entries each (0: no bound), only metric when set. Entries of a metric go newest first. The
// tenant's entries are copied under its lock; the answer is sorted and built outside it.
func (ms *metadataStore) query(tenant string, limit, limitPerMetric int, metric string) []*ingesterpb.MetricMetadata {
	ms.mu.RLock()
	tm := ms.tenants[tenant]
	ms.mu.RUnlock()
	if tm == nil {
		return nil
	}
	type metricEntries struct {
		name string
		es   []metadataEntry
	}
	var ms2 []metricEntries
	tm.mu.Lock()
	if metric != "" {
		if entries, ok := tm.metrics[metric]; ok {
			ms2 = append(ms2, metricEntries{name: metric})
			for k, at := range entries {
				ms2[0].es = append(ms2[0].es, metadataEntry{k, at})
			}
		}
	} else {
		ms2 = make([]metricEntries, 0, len(tm.metrics))
		for name, entries := range tm.metrics {
			es := make([]metadataEntry, 0, len(entries))
			for k, at := range entries {
				es = append(es, metadataEntry{k, at})
			}
			ms2 = append(ms2, metricEntries{name, es})
		}
	}
	tm.mu.Unlock()
	if ms.queryHook != nil {
		ms.queryHook()
	}
	slices.SortFunc(ms2, func(a, b metricEntries) int { return strings.Compare(a.name, b.name) })
	if limit > 0 && len(ms2) > limit {
		ms2 = ms2[:limit]
	}
	var out []*ingesterpb.MetricMetadata
	for _, m := range ms2 {
		es := m.es
		slices.SortFunc(es, func(a, b metadataEntry) int {
			if c := b.at.Compare(a.at); c != 0 {
				return c // newest first
			}
			return cmp.Or(cmp.Compare(a.k.typ, b.k.typ), strings.Compare(a.k.help, b.k.help), strings.Compare(a.k.unit, b.k.unit))
		})
		if limitPerMetric > 0 && len(es) > limitPerMetric {
			es = es[:limitPerMetric]
		}
		for _, e := range es {
			out = append(out, &ingesterpb.MetricMetadata{Type: e.k.typ, MetricFamilyName: m.name, Help: e.k.help, Unit: e.k.unit})
		}
	}
	return out
}
