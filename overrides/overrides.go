// Package overrides holds per-tenant limits that change at runtime: a runtime configuration file
// (-runtime-config.file, Mimir's format) read at start and re-read every
// -runtime-config.reload-period, whose `overrides:` section gives some tenants other limits than
// the flags' defaults. Readers ask For(tenant) on every request, so a change applies to the next
// request without a restart; a file that does not parse or validate is refused whole and the
// previous one stays in force (logged, and cortex_runtime_config_last_reload_successful 0).
package overrides

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/model"
	"gopkg.in/yaml.v3"

	"github.com/raftingest/raftingest/tenant"
)

// Limits are one tenant's limits: every limit a runtime override may change. The YAML names are
// Mimir's, so a Mimir runtime configuration's overrides for these limits read as they are.
type Limits struct {
	// IngestionRate is -distributor.ingestion-rate-limit: samples per second (0: unlimited).
	IngestionRate float64 `yaml:"ingestion_rate"`
	// IngestionBurstSize is -distributor.ingestion-burst-size: samples.
	IngestionBurstSize int `yaml:"ingestion_burst_size"`
	// MaxGlobalSeriesPerUser is -ingester.max-global-series-per-user (0: unlimited).
	MaxGlobalSeriesPerUser int `yaml:"max_global_series_per_user"`
	// MaxGlobalExemplarsPerUser is -ingester.max-global-exemplars-per-user: exemplars kept per tenant
	// across the cluster (0: none). A change resizes the tenant's stores at its next push, keeping
	// the newest.
	MaxGlobalExemplarsPerUser int `yaml:"max_global_exemplars_per_user"`
	// MaxFetchedSeriesPerQuery, MaxFetchedChunksPerQuery and MaxFetchedChunkBytesPerQuery are the
	// querier's -querier.max-fetched-* limits (0: unlimited).
	MaxFetchedSeriesPerQuery     int `yaml:"max_fetched_series_per_query"`
	MaxFetchedChunksPerQuery     int `yaml:"max_fetched_chunks_per_query"`
	MaxFetchedChunkBytesPerQuery int `yaml:"max_fetched_chunk_bytes_per_query"`
	// OutOfOrderTimeWindow is -ingester.out-of-order-time-window: how much older than its series'
	// newest sample a sample may be and still be accepted (0: none). A duration as Mimir writes it
	// ("30m", "1h").
	OutOfOrderTimeWindow model.Duration `yaml:"out_of_order_time_window"`
	// The HA tracker's per-tenant limits (Mimir's names), with -distributor.ha-tracker.enable on:
	// AcceptHASamples false turns deduplication off for the tenant (its pushes pass through);
	// HAClusterLabel and HAReplicaLabel are -distributor.ha-tracker.cluster and .replica;
	// HAMaxClusters is -distributor.ha-tracker.max-clusters. An empty label or a 0 means the flag's.
	AcceptHASamples bool   `yaml:"accept_ha_samples"`
	HAClusterLabel  string `yaml:"ha_cluster_label"`
	HAReplicaLabel  string `yaml:"ha_replica_label"`
	HAMaxClusters   int    `yaml:"ha_max_clusters"`
	// MaxNativeHistogramBuckets is -validation.max-native-histogram-buckets: the most buckets a
	// native histogram sample may have before its resolution is reduced or it is refused (0: no limit).
	MaxNativeHistogramBuckets int `yaml:"max_native_histogram_buckets"`
}

// validate refuses values no flag would take.
func (l Limits) validate() error {
	var errs []error
	if l.IngestionRate < 0 || math.IsNaN(l.IngestionRate) || math.IsInf(l.IngestionRate, 0) {
		errs = append(errs, fmt.Errorf("ingestion_rate %v: want a finite 0 (unlimited) or more", l.IngestionRate))
	}
	if l.IngestionRate > 0 && l.IngestionBurstSize < 1 {
		errs = append(errs, fmt.Errorf("ingestion_burst_size %d: want at least 1 with an ingestion_rate", l.IngestionBurstSize))
	}
	for name, v := range map[string]int{"max_global_series_per_user": l.MaxGlobalSeriesPerUser, "max_global_exemplars_per_user": l.MaxGlobalExemplarsPerUser,
		"max_fetched_series_per_query": l.MaxFetchedSeriesPerQuery, "max_fetched_chunks_per_query": l.MaxFetchedChunksPerQuery,
		"max_fetched_chunk_bytes_per_query": l.MaxFetchedChunkBytesPerQuery, "max_native_histogram_buckets": l.MaxNativeHistogramBuckets} {
		if v < 0 {
			errs = append(errs, fmt.Errorf("%s %d: want 0 (unlimited) or more", name, v))
		}
	}
	if l.OutOfOrderTimeWindow < 0 {
		errs = append(errs, fmt.Errorf("out_of_order_time_window %s: want 0 (refuse out-of-order samples) or more", l.OutOfOrderTimeWindow))
	}
	// Empty and 0 are the flags' values (the distributor falls back on them).
	if (l.HAClusterLabel != "" && !model.LegacyValidation.IsValidLabelName(l.HAClusterLabel)) || (l.HAReplicaLabel != "" && !model.LegacyValidation.IsValidLabelName(l.HAReplicaLabel)) ||
		(l.HAClusterLabel != "" && l.HAClusterLabel == l.HAReplicaLabel) {
		errs = append(errs, fmt.Errorf("ha_cluster_label %q, ha_replica_label %q: want two different label names", l.HAClusterLabel, l.HAReplicaLabel))
	}
	if l.HAMaxClusters < 0 || l.HAMaxClusters > maxHAClusters {
		errs = append(errs, fmt.Errorf("ha_max_clusters %d: want 1 to %d (0: the flag's)", l.HAMaxClusters, maxHAClusters))
	}
	slices.SortFunc(errs, func(a, b error) int { return strings.Compare(a.Error(), b.Error()) })
	return errors.Join(errs...)
}

// Config is the runtime configuration's flags.
type Config struct {
	File         string        // -runtime-config.file
	ReloadPeriod time.Duration // -runtime-config.reload-period
}

// RegisterFlags registers the flags with Mimir's names and defaults.
func (c *Config) RegisterFlags(f *flag.FlagSet) {
	f.StringVar(&c.File, "runtime-config.file", "", "YAML file of per-tenant limits that apply without a restart, in Mimir's format: `overrides: {TENANT: {ingestion_rate: ..., ingestion_burst_size: ..., max_global_series_per_user: ..., max_global_exemplars_per_user: ..., max_fetched_series_per_query: ..., max_fetched_chunks_per_query: ..., max_fetched_chunk_bytes_per_query: ..., out_of_order_time_window: ..., accept_ha_samples: ..., ha_cluster_label: ..., ha_replica_label: ..., ha_max_clusters: ...}}`. Limits a tenant is not given take the flags' values. Re-read every -runtime-config.reload-period; shown at /runtime_config.")
	f.DurationVar(&c.ReloadPeriod, "runtime-config.reload-period", 10*time.Second, "How often -runtime-config.file is re-read.")
}

// Validate checks the flags, naming them.
func (c *Config) Validate() error {
	if c.File != "" && c.ReloadPeriod <= 0 {
		return fmt.Errorf("-runtime-config.reload-period=%s: want more than 0 with -runtime-config.file", c.ReloadPeriod)
	}
	return nil
}

// file is the runtime configuration file's content.
type file struct {
	Overrides map[string]yaml.Node `yaml:"overrides"`
}

// snapshot is one loaded configuration: the tenants' full limits and the file's digest.
type snapshot struct {
	tenants map[string]Limits
	sha256  string
}

// Manager holds the defaults (the flags) and the overrides in force. Safe for concurrent use.
type Manager struct {
	cfg      Config
	defaults Limits
	log      *slog.Logger
	cur      atomic.Pointer[snapshot]

	lastOK prometheus.Gauge
	hash   *prometheus.GaugeVec
}

// New loads cfg.File, when set: a file that does not load is an error at start, naming the file
// and what is wrong. reg may be nil.
func New(cfg Config, defaults Limits, reg prometheus.Registerer, log *slog.Logger) (*Manager, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	m := &Manager{cfg: cfg, defaults: defaults, log: log,
		lastOK: prometheus.NewGauge(prometheus.GaugeOpts{Name: "cortex_runtime_config_last_reload_successful",
			Help: "1 if the last load of -runtime-config.file succeeded (its overrides are in force), 0 if it failed (the previous ones stay)."}),
		hash: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "cortex_runtime_config_hash",
			Help: "1 for the SHA-256 of the -runtime-config.file in force."}, []string{"sha256"}),
	}
	m.cur.Store(&snapshot{tenants: map[string]Limits{}})
	if cfg.File != "" {
		if err := m.reload(); err != nil {
			return nil, err
		}
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.lastOK, m.hash} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("overrides: %w", err)
			}
		}
	}
	return m, nil
}

// Defaults are the limits of a tenant without overrides.
func (m *Manager) Defaults() Limits { return m.defaults }

// For returns tenant's limits: its overrides where the file gives them, the defaults elsewhere.
func (m *Manager) For(tenant string) Limits {
	if l, ok := m.cur.Load().tenants[tenant]; ok {
		return l
	}
	return m.defaults
}

// Run re-reads the file every -runtime-config.reload-period until ctx is done.
func (m *Manager) Run(ctx context.Context) {
	if m.cfg.File == "" {
		return
	}
	t := time.NewTicker(m.cfg.ReloadPeriod)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := m.reload(); err != nil {
				m.log.Error("runtime config not reloaded: the previous overrides stay in force", "file", m.cfg.File, "err", err)
			}
		}
	}
}

// reload reads, parses and validates the file and puts it in force, or changes nothing.
func (m *Manager) reload() error {
	b, err := os.ReadFile(m.cfg.File)
	if err == nil {
		var s *snapshot
		if s, err = parse(b, m.defaults); err == nil {
			sum := sha256.Sum256(b)
			s.sha256 = hex.EncodeToString(sum[:])
			if prev := m.cur.Swap(s); prev.sha256 != s.sha256 {
				m.hash.Reset()
				m.hash.WithLabelValues(s.sha256).Set(1)
				m.log.Info("runtime config loaded", "file", m.cfg.File, "tenants_with_overrides", len(s.tenants), "sha256", s.sha256)
			}
			m.lastOK.Set(1)
			return nil
		}
	}
	m.lastOK.Set(0)
	return fmt.Errorf("-runtime-config.file %s: %w", m.cfg.File, err)
}

// parse reads a runtime configuration: unknown keys, invalid tenants and invalid values are errors.
func parse(b []byte, defaults Limits) (*snapshot, error) {
	var f file
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&f); err != nil && !errors.Is(err, io.EOF) { // io.EOF: an empty file
		return nil, err
	}
	s := &snapshot{tenants: map[string]Limits{}}
	var errs []error
	for _, name := range slices.Sorted(maps.Keys(f.Overrides)) {
		node := f.Overrides[name]
		if err := tenant.Validate(name); err != nil {
			errs = append(errs, fmt.Errorf("line %d: tenant %q: %v", node.Line, name, err))
			continue
		}
		l := defaults // fields the override does not give keep the defaults
		if err := decodeStrict(&node, &l); err != nil {
			errs = append(errs, fmt.Errorf("tenant %q: %v", name, err))
			continue
		}
		if err := l.validate(); err != nil {
			errs = append(errs, fmt.Errorf("line %d: tenant %q: %v", node.Line, name, err))
			continue
		}
		s.tenants[name] = l
	}
	return s, errors.Join(errs...)
}

// knownKeys are Limits' YAML names.
var knownKeys = func() map[string]bool {
	out := map[string]bool{}
	for k := range limitsMap(Limits{}, Limits{}, false) {
		out[k] = true
	}
	return out
}()

// decodeStrict decodes a tenant's mapping into v, refusing keys Limits does not have (a misspelt
// limit would otherwise be ignored in silence), with the file's line numbers.
func decodeStrict(node *yaml.Node, v *Limits) error {
	if node.Kind != yaml.MappingNode {
		return fmt.Errorf("line %d: want a mapping of limits", node.Line)
	}
	for i := 0; i+1 < len(node.Content); i += 2 {
		if k := node.Content[i]; !knownKeys[k.Value] {
			return fmt.Errorf("line %d: unknown limit %q (known: %s)", k.Line, k.Value, strings.Join(slices.Sorted(maps.Keys(knownKeys)), ", "))
		}
	}
	return node.Decode(v)
}

// Handler serves GET /runtime_config: the overrides in force, every tenant's full limits, as the
// file's YAML; with ?mode=diff only what differs from the defaults (Mimir's endpoint).
func (m *Manager) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed on /runtime_config: use GET", http.StatusMethodNotAllowed)
			return
		}
		diff := r.URL.Query().Get("mode") == "diff"
		out := map[string]map[string]any{}
		for name, l := range m.cur.Load().tenants {
			out[name] = limitsMap(l, m.defaults, diff)
		}
		b, err := yaml.Marshal(map[string]any{"overrides": out})
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write(b)
	})
}

// limitsMap is l as YAML keys, only those that differ from defaults when diff is set.
func limitsMap(l, defaults Limits, diff bool) map[string]any {
	out := map[string]any{}
	add := func(k string, v, d any) {
		if !diff || v != d {
			out[k] = v
		}
	}
	add("ingestion_rate", l.IngestionRate, defaults.IngestionRate)
	add("ingestion_burst_size", l.IngestionBurstSize, defaults.IngestionBurstSize)
	add("max_global_series_per_user", l.MaxGlobalSeriesPerUser, defaults.MaxGlobalSeriesPerUser)
	add("max_global_exemplars_per_user", l.MaxGlobalExemplarsPerUser, defaults.MaxGlobalExemplarsPerUser)
	add("max_fetched_series_per_query", l.MaxFetchedSeriesPerQuery, defaults.MaxFetchedSeriesPerQuery)
	add("max_fetched_chunks_per_query", l.MaxFetchedChunksPerQuery, defaults.MaxFetchedChunksPerQuery)
	add("max_fetched_chunk_bytes_per_query", l.MaxFetchedChunkBytesPerQuery, defaults.MaxFetchedChunkBytesPerQuery)
	add("out_of_order_time_window", l.OutOfOrderTimeWindow, defaults.OutOfOrderTimeWindow)
	add("accept_ha_samples", l.AcceptHASamples, defaults.AcceptHASamples)
	add("ha_cluster_label", l.HAClusterLabel, defaults.HAClusterLabel)
	add("ha_replica_label", l.HAReplicaLabel, defaults.HAReplicaLabel)
	add("ha_max_clusters", l.HAMaxClusters, defaults.HAMaxClusters)
	return out
}

// maxHAClusters is ringstate.MaxHAEntries: no tenant may hold more HA clusters than the ring does.
const maxHAClusters = 10_000
