// Package querier answers reads: the Prometheus HTTP API (PromQL, series, labels) and Prometheus
// remote read, over the ingesters of the ring (every readable member, asked in parallel over gRPC
// QueryStream, replicas merged) and the long-term store (blocks in a bucket): read directly when the
// bucket is shared, through every member (QueryBlocks, the same fan-out) when it is node-local.
//
// Layers, bottom up: MemberQueryable (the fan-out and replica merge, over the members' memory or
// their blocks), NewQueryable (the time split
// between ingesters and store, and their merge), and Querier (the PromQL engine and the HTTP
// handlers). See docs/querying.md for the user's view and DESIGN.md for the reasons.
package querier

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/storage"
	"google.golang.org/grpc"
)

// TenantHeader is the HTTP header carrying the tenant (Cortex's and Mimir's).
const TenantHeader = "X-Scope-OrgID"

// Prometheus' defaults for remote read (--storage.remote.read-sample-limit and
// --storage.remote.read-max-bytes-in-frame).
const (
	remoteReadSampleLimit     = 50_000_000
	remoteReadMaxBytesInFrame = 1 << 20
)

// Deps is what a Querier reads from and reports to.
type Deps struct {
	// Ring is the local ring (raftfsm.Node). Required.
	Ring RingSource
	// Clients reaches ingesters; nil makes New create a GRPCPool, which Close closes.
	Clients ClientPool
	// DialOptions are added to the connections of the GRPCPool New creates (the node's dial hook,
	// which the fault tests use to cut and delay links); ignored when Clients is set.
	DialOptions []grpc.DialOption
	// ReplicationFactor is -distributor.replication-factor.
	ReplicationFactor int
	// ZoneAware is -ingester.ring.zone-awareness-enabled: reads tolerate the loss of floor(RF/2)
	// whole zones instead of floor(RF/2) members.
	ZoneAware bool
	// HeartbeatTimeout is -ring.heartbeat-timeout.
	HeartbeatTimeout time.Duration
	// Store reads the long-term store; nil when none is configured. It reads the request's tenant
	// with tenant.FromContext, like the ingester fan-out. Ignored when NodeLocalStore is set.
	Store storage.Queryable
	// NodeLocalStore says that the long-term store is node-local (a filesystem bucket not declared
	// shared): each member holds only the blocks it flushed or was handed, so no member's bucket
	// is the whole store. The querier then reads the store by asking every member for its blocks
	// (Ingester.QueryBlocks, NewBlocksQueryable) instead of reading Store itself.
	NodeLocalStore bool
	// MultitenancyEnabled is -auth.multitenancy-enabled: the tenant comes from X-Scope-OrgID, and a
	// request without it gets 401. When false every request reads DefaultTenant.
	MultitenancyEnabled bool
	DefaultTenant       string
	// ValidateTenant, when set, refuses malformed tenant ids with 400 (the distributor's rules).
	ValidateTenant func(string) error
	// Limits, when set, gives a tenant's per-query fetch limits (series, chunks, chunk bytes; 0:
	// unlimited): its runtime overrides (-runtime-config.file) or the flags'. nil: the flags'.
	Limits     func(tenant string) (series, chunks, chunkBytes int)
	Registerer prometheus.Registerer
	Logger     *slog.Logger
	// Now is the clock for the time split and for instant queries without a time; nil is time.Now.
	Now func() time.Time
}

// Querier is the read path of one process. Create it with New; its handlers are safe for
// concurrent use.
type Querier struct {
	cfg       Config
	deps      Deps
	log       *slog.Logger
	metrics   *metrics
	engine    *promql.Engine
	queryable storage.SampleAndChunkQueryable
	// members is the fan-out over the members' memory, which the exemplar and metadata APIs ask
	// (exemplars.go).
	members *MemberQueryable
	ownPool *GRPCPool
	gate    chan struct{}
	now     func() time.Time
}

// New builds the querier. cfg must have passed Validate.
func New(cfg Config, deps Deps) (*Querier, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if deps.Ring == nil {
		return nil, errors.New("querier: Deps.Ring is required")
	}
	if !deps.MultitenancyEnabled && deps.DefaultTenant == "" {
		return nil, errors.New("querier: Deps.DefaultTenant is required when multi-tenancy is disabled")
	}
	if deps.Logger == nil {
		deps.Logger = slog.New(slog.DiscardHandler)
	}
	if deps.Now == nil {
		deps.Now = time.Now
	}
	q := &Querier{cfg: cfg, deps: deps, log: deps.Logger, metrics: newMetrics(deps.Registerer),
		gate: make(chan struct{}, cfg.MaxConcurrent), now: deps.Now}
	if deps.Clients == nil {
		q.ownPool = NewGRPCPool(cfg.MaxRecvMsgSize, deps.DialOptions...)
		deps.Clients = q.ownPool
	}
	ing, err := NewIngesterQueryable(IngestersConfig{Ring: deps.Ring, Clients: deps.Clients,
		ReplicationFactor: deps.ReplicationFactor, ZoneAware: deps.ZoneAware, HeartbeatTimeout: deps.HeartbeatTimeout,
		Logger: deps.Logger, metrics: q.metrics})
	if err != nil {
		q.Close()
		return nil, err
	}
	q.members = ing
	var store storage.Queryable
	switch {
	case deps.NodeLocalStore:
		blocks, err := NewBlocksQueryable(IngestersConfig{Ring: deps.Ring, Clients: deps.Clients,
			ReplicationFactor: deps.ReplicationFactor, ZoneAware: deps.ZoneAware, HeartbeatTimeout: deps.HeartbeatTimeout,
			Logger: deps.Logger, metrics: q.metrics})
		if err != nil {
			q.Close()
			return nil, err
		}
		store = blocks
	case deps.Store != nil:
		store = deps.Store
	}
	q.queryable = NewQueryable(ing, store, cfg.QueryStoreAfter, cfg.QueryIngestersWithin, deps.Now)
	evalMs := cfg.DefaultEvaluationInterval.Milliseconds()
	q.engine = promql.NewEngine(promql.EngineOpts{
		Logger:                   deps.Logger.With("component", "promql"),
		Reg:                      deps.Registerer,
		MaxSamples:               cfg.MaxSamples,
		Timeout:                  cfg.Timeout,
		LookbackDelta:            cfg.LookbackDelta,
		NoStepSubqueryIntervalFn: func(int64) int64 { return evalMs },
		// Prometheus enables both by default since 2.33.
		EnableAtModifier:     true,
		EnableNegativeOffset: true,
	})
	return q, nil
}

// Queryable is the querier's storage: ingesters and store, split in time and merged.
func (q *Querier) Queryable() storage.SampleAndChunkQueryable { return q.queryable }

// Engine is the PromQL engine the HTTP API evaluates with.
func (q *Querier) Engine() *promql.Engine { return q.engine }

// RegisterRoutes mounts the Prometheus HTTP API on mux under prefix (the ingester uses "/prometheus",
// so Grafana's data source URL is http://HOST:PORT/prometheus):
//
//	{prefix}/api/v1/query, query_range, series, labels, label/{name}/values   GET and POST
//	{prefix}/api/v1/read                                                      POST (remote read)
//	{prefix}/api/v1/query_exemplars, metadata                                 from the members' memory
//	{prefix}/api/v1/status/buildinfo                                          a minimal answer
func (q *Querier) RegisterRoutes(mux *http.ServeMux, prefix string) {
	p := prefix + "/api/v1/"
	q.route(mux, p+"query", "prometheus_api_v1_query", q.query)
	q.route(mux, p+"query_range", "prometheus_api_v1_query_range", q.queryRange)
	q.route(mux, p+"series", "prometheus_api_v1_series", q.series)
	q.route(mux, p+"labels", "prometheus_api_v1_labels", q.labelNames)
	q.route(mux, p+"label/{name}/values", "prometheus_api_v1_label_name_values", q.labelValues)
	q.route(mux, p+"status/buildinfo", "prometheus_api_v1_status_buildinfo", q.buildInfo)
	q.route(mux, p+"metadata", "prometheus_api_v1_metadata", q.metadata)
	q.route(mux, p+"query_exemplars", "prometheus_api_v1_query_exemplars", q.queryExemplars)
	mux.Handle(p+"read", q.instrument("prometheus_api_v1_read", q.remoteReadHandler()))
}

// Handler returns a mux with RegisterRoutes(mux, "/prometheus"), for tests and embedding.
func (q *Querier) Handler() http.Handler {
	mux := http.NewServeMux()
	q.RegisterRoutes(mux, "/prometheus")
	return mux
}

// remoteReadHandler serves Prometheus remote read (SAMPLES, and STREAMED_XOR_CHUNKS when the client
// accepts it) over our Queryable, behind the tenant check.
func (q *Querier) remoteReadHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			w.Header().Set("Allow", http.MethodPost)
			http.Error(w, "remote read takes POST", http.StatusMethodNotAllowed)
			return
		}
		r, ok := q.authenticate(w, r)
		if !ok {
			return
		}
		// One limiter per request, shared by its queries.
		q.remoteRead(w, r.WithContext(withLimiter(r.Context(), q.newLimiter(r.Context()))))
	})
}

// Close releases the connections New opened. Safe to call more than once.
func (q *Querier) Close() error {
	if q.ownPool != nil {
		if err := q.ownPool.Close(); err != nil {
			return fmt.Errorf("querier: %w", err)
		}
	}
	return nil
}
