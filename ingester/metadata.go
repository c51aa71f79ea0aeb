package ingester

import (
	"context"
	"flag"
	"fmt"
	"sort"
	"strings"
	"sync"
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

// metadataStore is every tenant's metric metadata. Safe for concurrent use.
type metadataStore struct {
	cfg       metadataConfig
	perUser   func() int // the local per-tenant limit now (0: none)
	now       func() time.Time
	discarded *prometheus.CounterVec // {user, reason}
	inMemory  prometheus.GaugeFunc

	mu      sync.Mutex
	tenants map[string]map[string]map[metadataKey]time.Time // tenant → metric → entry → last received
	entries int
}

func newMetadataStore(cfg metadataConfig, perUser func() int, now func() time.Time, reg prometheus.Registerer) (*metadataStore, error) {
	ms := &metadataStore{cfg: cfg, perUser: perUser, now: now, tenants: map[string]map[string]map[metadataKey]time.Time{},
		discarded: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "cortex_ingester_discarded_metadata_total",
			Help: "Metric metadata entries an ingester dropped for its limits, by reason."}, []string{"user", "reason"}),
	}
	ms.inMemory = prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "cortex_ingester_memory_metadata",
		Help: "Metric metadata entries held in memory, every tenant."}, func() float64 {
		ms.mu.Lock()
		defer ms.mu.Unlock()
		return float64(ms.entries)
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
	ms.mu.Lock()
	defer ms.mu.Unlock()
	metrics := ms.tenants[tenant]
	if metrics == nil {
		metrics = map[string]map[metadataKey]time.Time{}
		ms.tenants[strings.Clone(tenant)] = metrics
	}
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
		ms.entries++
	}
}

// purge forgets the entries last received before now minus the retain period.
func (ms *metadataStore) purge() {
	cut := ms.now().Add(-ms.cfg.RetainPeriod)
	ms.mu.Lock()
	defer ms.mu.Unlock()
	for tenant, metrics := range ms.tenants {
		for name, entries := range metrics {
			for k, at := range entries {
				if at.Before(cut) {
					delete(entries, k)
					ms.entries--
				}
			}
			if len(entries) == 0 {
				delete(metrics, name)
			}
		}
		if len(metrics) == 0 {
			delete(ms.tenants, tenant)
		}
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

// query answers MetricsMetadata: metrics in name order, at most limit of them and limitPerMetric
// entries each (0: no bound), only metric when set. Entries of a metric go newest first.
func (ms *metadataStore) query(tenant string, limit, limitPerMetric int, metric string) []*ingesterpb.MetricMetadata {
	ms.mu.Lock()
	defer ms.mu.Unlock()
	metrics := ms.tenants[tenant]
	names := make([]string, 0, len(metrics))
	for name := range metrics {
		if metric == "" || name == metric {
			names = append(names, name)
		}
	}
	sort.Strings(names)
	if limit > 0 && len(names) > limit {
		names = names[:limit]
	}
	var out []*ingesterpb.MetricMetadata
	for _, name := range names {
		type entry struct {
			k  metadataKey
			at time.Time
		}
		var es []entry
		for k, at := range metrics[name] {
			es = append(es, entry{k, at})
		}
		sort.Slice(es, func(i, j int) bool {
			if !es[i].at.Equal(es[j].at) {
				return es[i].at.After(es[j].at)
			}
			a, b := es[i].k, es[j].k
			return fmt.Sprint(a.typ, a.help, a.unit) < fmt.Sprint(b.typ, b.help, b.unit)
		})
		if limitPerMetric > 0 && len(es) > limitPerMetric {
			es = es[:limitPerMetric]
		}
		for _, e := range es {
			out = append(out, &ingesterpb.MetricMetadata{Type: e.k.typ, MetricFamilyName: name, Help: e.k.help, Unit: e.k.unit})
		}
	}
	return out
}
