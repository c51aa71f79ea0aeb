// Package distributor is the write path's front door: it receives Prometheus remote-write requests,
// validates every series, and sends each one to the RF ingesters that own it on the ring, succeeding
// per series when a quorum of them stored it. See DESIGN.md for the decode and its lifetime rule,
// the series hash, quorum and spill, and the status-code mapping.
package distributor

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/raftingest/raftingest/ingesterpb"
	"github.com/raftingest/raftingest/ringstate"
)

// DefaultTenant is the tenant every write belongs to when multi-tenancy is disabled. It is Mimir's
// name ("anonymous"); Cortex called it "fake". Switching multi-tenancy on later keeps this data
// readable as tenant "anonymous".
const DefaultTenant = "anonymous"

// Config configures a Distributor. RegisterFlags holds the defaults.
type Config struct {
	ReplicationFactor   int           // -distributor.replication-factor
	RemoteTimeout       time.Duration // -distributor.remote-timeout: deadline of the pushes to ingesters
	MaxRecvMsgSize      int           // -distributor.max-recv-msg-size: bytes, compressed and decompressed
	MaxSeriesPerRequest int           // -distributor.max-series-per-request: 0 = unlimited
	IngestionRateLimit  float64       // -distributor.ingestion-rate-limit: samples/s per tenant, 0 = unlimited
	IngestionBurstSize  int           // -distributor.ingestion-burst-size: samples
	// IngestionRateStrategy is -distributor.ingestion-rate-limit-strategy: RateStrategyGlobal (the
	// rate limit is the cluster's, shared by the healthy distributors) or RateStrategyLocal.
	IngestionRateStrategy string
	MultitenancyEnabled   bool          // -auth.multitenancy-enabled
	ClientIdleTimeout     time.Duration // -distributor.client-idle-timeout: close ingester connections unused this long

	Limits         Limits
	InstanceLimits InstanceLimits
	OTel           OTelConfig      // -otel.*: how OTLP metrics are translated (otlp.go)
	HATracker      HATrackerConfig // -distributor.ha-tracker.*: HA-pair deduplication (hatracker.go)

	// RingHeartbeatTimeout is -ring.heartbeat-timeout, which the lifecycle package registers: ring
	// members whose last heartbeat is older (at ring time) are unhealthy and take no writes. The
	// wiring copies it here; zero disables the health check.
	RingHeartbeatTimeout time.Duration
	// ZoneAware is -ingester.ring.zone-awareness-enabled, which the lifecycle package registers:
	// replication sets take one member per zone. The wiring copies it here.
	ZoneAware bool
}

// Placement is how this distributor places series: its replication factor and zone awareness.
func (c *Config) Placement() ringstate.Placement {
	return ringstate.Placement{RF: c.ReplicationFactor, ZoneAware: c.ZoneAware}
}

// RegisterFlags registers the distributor's flags, with their defaults, on f.
func (c *Config) RegisterFlags(f *flag.FlagSet) {
	f.IntVar(&c.ReplicationFactor, "distributor.replication-factor", 3, "Number of ingesters each series is written to; a write succeeds when a quorum (RF/2+1) stored it. Capped by the number of ring members owning tokens.")
	f.DurationVar(&c.RemoteTimeout, "distributor.remote-timeout", 2*time.Second, "Deadline of a push to the ingesters.")
	f.IntVar(&c.MaxRecvMsgSize, "distributor.max-recv-msg-size", 100<<20, "Maximum size in bytes of a remote-write request, compressed and decompressed. A larger one is refused with 413 as soon as that is known: from its Content-Length or snappy header before anything is allocated for it, else once that many bytes have arrived.")
	f.IntVar(&c.MaxSeriesPerRequest, "distributor.max-series-per-request", DefaultMaxSeriesPerRequest, "Maximum number of series in one remote-write request; a request with more is refused with 413 while it is decoded, before anything is allocated for the series over the limit (Prometheus sends at most queue_config.max_samples_per_send, 2000 by default). 0 disables the limit.")
	f.Float64Var(&c.IngestionRateLimit, "distributor.ingestion-rate-limit", 10000, "Per-tenant ingestion rate limit in samples per second (429 above it); with -distributor.ingestion-rate-limit-strategy=global it is the cluster's limit, each distributor enforcing its share. 0 disables it.")
	f.IntVar(&c.IngestionBurstSize, "distributor.ingestion-burst-size", 200000, "Per-tenant burst size in samples, per distributor: the most a tenant can send at once after being idle; a request with more valid samples is always refused.")
	f.StringVar(&c.IngestionRateStrategy, "distributor.ingestion-rate-limit-strategy", RateStrategyGlobal, "How -distributor.ingestion-rate-limit applies: global (Mimir's only strategy) divides it by the number of healthy distributors, which are the ACTIVE and healthy ring members, so a tenant gets the limit across the cluster; local enforces it on each distributor on its own (N distributors admit N times the limit).")
	f.BoolVar(&c.MultitenancyEnabled, "auth.multitenancy-enabled", false, "Require the X-Scope-OrgID header on pushes and use it as the tenant. When false, every write belongs to the tenant \""+DefaultTenant+"\".")
	f.DurationVar(&c.ClientIdleTimeout, "distributor.client-idle-timeout", 5*time.Minute, "Close a gRPC connection to an ingester after this long without use.")
	c.Limits.RegisterFlags(f)
	c.InstanceLimits.RegisterFlags(f)
	c.OTel.RegisterFlags(f)
	c.HATracker.RegisterFlags(f)
}

// DefaultMaxSeriesPerRequest is the default of -distributor.max-series-per-request: 50 times what
// Prometheus sends by default (max_samples_per_send: 2000), and about 14 MB of decoded series.
const DefaultMaxSeriesPerRequest = 100_000

// Values of -distributor.ingestion-rate-limit-strategy (Cortex's names; Mimir kept only global).
const (
	RateStrategyGlobal = "global"
	RateStrategyLocal  = "local"
)

// Validate checks the values and their relations, naming the flags.
func (c *Config) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if c.ReplicationFactor < 1 || c.ReplicationFactor > 255 {
		bad("-distributor.replication-factor=%d: want 1 to 255", c.ReplicationFactor)
	}
	if c.RemoteTimeout <= 0 {
		bad("-distributor.remote-timeout=%s: want more than zero", c.RemoteTimeout)
	}
	if c.MaxRecvMsgSize < 1024 {
		bad("-distributor.max-recv-msg-size=%d: want at least 1024 bytes", c.MaxRecvMsgSize)
	}
	if c.MaxSeriesPerRequest < 0 {
		bad("-distributor.max-series-per-request=%d: want zero (unlimited) or more", c.MaxSeriesPerRequest)
	}
	if c.IngestionRateStrategy != RateStrategyGlobal && c.IngestionRateStrategy != RateStrategyLocal {
		bad("-distributor.ingestion-rate-limit-strategy=%q: want %s or %s", c.IngestionRateStrategy, RateStrategyGlobal, RateStrategyLocal)
	}
	if c.IngestionRateLimit < 0 {
		bad("-distributor.ingestion-rate-limit=%v: want zero (unlimited) or more", c.IngestionRateLimit)
	}
	if c.IngestionRateLimit > 0 && c.IngestionBurstSize < 1 {
		bad("-distributor.ingestion-burst-size=%d: want at least 1 when -distributor.ingestion-rate-limit is set", c.IngestionBurstSize)
	}
	if c.ClientIdleTimeout > 0 && c.ClientIdleTimeout < 2*c.RemoteTimeout {
		bad("-distributor.client-idle-timeout=%s must be at least twice -distributor.remote-timeout=%s, or a push in flight could lose its connection",
			c.ClientIdleTimeout, c.RemoteTimeout)
	}
	if c.RingHeartbeatTimeout < 0 {
		bad("-ring.heartbeat-timeout=%s: want zero or more", c.RingHeartbeatTimeout)
	}
	if err := c.Limits.Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := c.InstanceLimits.Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := c.OTel.validate(); err != nil {
		errs = append(errs, err)
	}
	if err := c.HATracker.Validate(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// RingSource publishes the local ring snapshot. The raftfsm node satisfies it. Ring may return nil
// before the first snapshot is known.
type RingSource interface {
	Ring() *ringstate.Ring
}

// Deps are the Distributor's collaborators.
type Deps struct {
	Ring       RingSource
	Clients    ClientPool
	Registerer prometheus.Registerer // nil: metrics are not registered
	Logger     *slog.Logger          // nil: discard
	Now        func() time.Time      // nil: time.Now; the grace periods and the rate limiter read it
	// OldestInMemory returns, for a time in Unix ms, the start (Unix ms) of the oldest block range
	// the ingesters hold in memory at that time: older ranges are flushed to storage, and a sample
	// older than this is refused (sample_out_of_bounds) rather than written into a range that was
	// flushed already. It is asked for the tenant's data's time — its newest sample, not after
	// now — as Prometheus' head reckons its bounds from its newest sample, so a tenant writing
	// live data gets the ranges the flusher keeps, and one replaying history in order (a
	// benchmark, a backfill) is not refused for being behind the clock. nil: no such bound (the
	// wiring passes the flusher's flush.CutoffAt).
	OldestInMemory func(atMs int64) int64
	// Limits returns a tenant's ingestion rate (samples/s, 0: unlimited) and burst (samples): its
	// runtime overrides (-runtime-config.file) or the flags'. nil: the flags' for every tenant.
	Limits func(tenant string) (rate float64, burst int)
	// HA commits the HA tracker's elections (the raftfsm node); needed with -distributor.ha-tracker.enable.
	HA HAElector
	// HALimits returns a tenant's HA tracker limits (runtime overrides); nil: the flags' for every tenant.
	HALimits func(tenant string) HATenantLimits
	// ExemplarsEnabled says whether a tenant stores exemplars (its -ingester.max-global-exemplars-per-user
	// or runtime override is above 0); the exemplars of the others are validated and dropped here,
	// as Mimir does. nil: exemplars are dropped for every tenant.
	ExemplarsEnabled func(tenant string) bool
}

// Distributor validates remote-write requests and replicates their series to the ingesters. It is
// safe for concurrent use; it serves POST /api/v1/push through ServeHTTP.
type Distributor struct {
	cfg     Config
	ring    RingSource
	clients ClientPool
	log     *slog.Logger
	now     func() time.Time
	// limits is Deps.Limits (nil: the flags' limits for every tenant).
	limits func(tenant string) (rate float64, burst int)
	// histBuckets is SetMaxNativeHistogramBuckets's lookup (nil: the flag for every tenant).
	histBuckets func(tenant string) int
	// oldestInMemory is Deps.OldestInMemory (nil: no bound).
	oldestInMemory func(nowMs int64) int64
	// tenants holds the per-tenant state — rate-limiter buckets and whether the tenant's metric
	// series exist — and releases it once the tenant is idle (tenantIdleTimeout).
	tenants *tenantTracker
	// inflight* are the instance limits' counts: push requests being handled, and the bytes they
	// hold (see reservation).
	inflightRequests atomic.Int64
	inflightBytes    atomic.Int64
	// distributors caches the number of healthy distributors per ring snapshot (global strategy).
	distributors atomic.Pointer[distributorCount]
	m            *metrics
	// fence is write fencing's state (fence.go).
	fence fencing

	// sends counts the pushes to ingesters still running, including those that outlive the
	// request that started them (see Wait).
	sends sync.WaitGroup

	// cappedRF is the effective replication factor last logged as capped (0: not capped), so that
	// the capping is logged once per change, not once per request.
	cappedRF atomic.Int64

	states sync.Pool // *pushState

	ha *haTracker // nil unless -distributor.ha-tracker.enable

	exemplarsEnabled func(tenant string) bool // Deps.ExemplarsEnabled
	xm               *extraMetrics            // exemplars and metadata (metadata.go)
}

// New returns a Distributor. cfg must have passed Validate.
func New(cfg Config, deps Deps) (*Distributor, error) {
	if deps.Ring == nil || deps.Clients == nil {
		return nil, errors.New("distributor: New needs a RingSource and a ClientPool")
	}
	if deps.Logger == nil {
		deps.Logger = slog.New(slog.DiscardHandler)
	}
	if deps.Now == nil {
		deps.Now = time.Now
	}
	d := &Distributor{
		cfg: cfg, ring: deps.Ring, clients: deps.Clients, log: deps.Logger, now: deps.Now,
		oldestInMemory: deps.OldestInMemory,
		tenants:        newTenantTracker(tenantIdleTimeout),
		limits:         deps.Limits,

		exemplarsEnabled: deps.ExemplarsEnabled,
	}
	m, err := newMetrics(deps.Registerer, d)
	if err != nil {
		return nil, fmt.Errorf("distributor: registering metrics: %w", err)
	}
	d.m = m
	if d.xm, err = newExtraMetrics(deps.Registerer); err != nil {
		return nil, fmt.Errorf("distributor: registering metrics: %w", err)
	}
	if d.fence, err = newFencing(deps.Ring, deps.Registerer); err != nil {
		return nil, fmt.Errorf("distributor: registering metrics: %w", err)
	}
	if cfg.HATracker.Enable {
		if deps.HA == nil {
			return nil, errors.New("distributor: -distributor.ha-tracker.enable needs an HAElector")
		}
		if d.ha, err = newHATracker(cfg.HATracker, deps.Ring, deps.HA, deps.HALimits, deps.Now, deps.Logger, deps.Registerer); err != nil {
			return nil, fmt.Errorf("distributor: registering the HA tracker's metrics: %w", err)
		}
	}
	m.replicationFactor.Set(float64(cfg.ReplicationFactor))
	m.instanceLimits.WithLabelValues("max_inflight_push_requests").Set(float64(cfg.InstanceLimits.MaxInflightPushRequests))
	m.instanceLimits.WithLabelValues("max_inflight_push_requests_bytes").Set(float64(cfg.InstanceLimits.MaxInflightPushRequestsBytes))
	m.rateLimit.Set(cfg.IngestionRateLimit)
	m.healthyDistributors.Set(1)
	d.rateLimit() // sets both from the ring, when it is known
	d.states.New = func() any { return new(pushState) }
	return d, nil
}

// PushError is a push that did not fully succeed: the HTTP status to answer and a message for the
// client. A series refused or failed never stops the others: by the time a PushError is returned,
// every other series of the request was stored.
type PushError struct {
	Status int // 400, 413, 415, 401, 429, 500; 202 for a push the HA tracker dropped
	Msg    string
}

func (e *PushError) Error() string {
	return fmt.Sprintf("%d %s: %s", e.Status, http.StatusText(e.Status), e.Msg)
}

// Series states while a push is routed.
const (
	seriesPending uint8 = iota // to be sent, quorum not yet decided
	seriesDone                 // stored by a quorum, or nothing left to send
	seriesFailed4xx
	seriesFailed5xx
)

// pushState is the reusable scratch space of one push. Everything in it is reset, not freed.
type pushState struct {
	req      WriteRequest
	repSet   []*ringstate.Member // ReplicationSet's dst
	targets  []*ringstate.Member // the ingesters this push sends to
	replicas []int32             // per series, its targets' indices: Series.repOff, Series.nrep
	offsets  []int32             // per target, where its series start in order (len targets+1)
	order    []int32             // series indices grouped by target
	next     []int32             // per target, the next free slot in order while filling it
	marks    []bool              // per series of one target: refused in that target's answer
	ierrs    []*ingesterpb.SeriesError
	fails    []failure // the failures Series.why4xx and why5xx point to
}

// fail keeps f and returns its reference for Series.why4xx or why5xx.
func (st *pushState) fail(f failure) int32 {
	st.fails = append(st.fails, f)
	return int32(len(st.fails))
}

// why returns the failure a Series.why4xx or why5xx reference points to (the zero failure for 0).
func (st *pushState) why(ref int32) failure {
	if ref == 0 {
		return failure{}
	}
	return st.fails[ref-1]
}

// maxPooledArenaBytes bounds the arenas a pooled pushState keeps: a state that decoded a larger
// request is left to the GC, so that one large request does not pin its arenas in every pooled
// state for good. Prometheus-like requests of 2000 series use about 1 MB.
const maxPooledArenaBytes = 16 << 20

func (st *pushState) reset() {
	st.req.Reset()
	clear(st.repSet)
	clear(st.targets)
	clear(st.ierrs)
	clear(st.fails)
	st.repSet, st.targets, st.replicas = st.repSet[:0], st.targets[:0], st.replicas[:0]
	st.offsets, st.order, st.next, st.ierrs = st.offsets[:0], st.order[:0], st.next[:0], st.ierrs[:0]
	st.fails = st.fails[:0]
}

// release resets st and puts it back in the pool, unless its arenas grew past maxPooledArenaBytes.
func (d *Distributor) release(st *pushState) {
	st.reset()
	if st.req.ArenaBytes() > maxPooledArenaBytes {
		return
	}
	d.states.Put(st)
}

// outcome accumulates the per-series failures of a push into the answer: the first messages of each
// class and how many series failed in it.
type outcome struct {
	tenant string
	// msgs4xx and msgs5xx keep the first maxReportedSeries messages of each class: enough for an
	// operator to see every series of a small bad batch, bounded for a large one.
	msgs4xx, msgs5xx []string
	n4xx, n5xx       int
}

func (o *outcome) fail4xx(msg string) {
	if len(o.msgs4xx) < maxReportedSeries {
		o.msgs4xx = append(o.msgs4xx, msg)
	}
	o.n4xx++
}

func (o *outcome) fail5xx(msg string) {
	if len(o.msgs5xx) < maxReportedSeries {
		o.msgs5xx = append(o.msgs5xx, msg)
	}
	o.n5xx++
}

// err maps the outcome to the answer: any series that failed for a reason worth retrying makes the
// whole push 5xx (Prometheus retries the batch; samples already stored are idempotent duplicates);
// otherwise any refused series makes it 400 (Prometheus drops the batch: retrying cannot help).
func (o *outcome) err() *PushError {
	switch {
	case o.n5xx > 0:
		return &PushError{Status: http.StatusInternalServerError, Msg: withMore(o.msgs5xx, o.n5xx+o.n4xx)}
	case o.n4xx > 0:
		return &PushError{Status: http.StatusBadRequest, Msg: withMore(o.msgs4xx, o.n4xx)}
	}
	return nil
}

// maxReportedSeries bounds how many failed series one answer names.
const maxReportedSeries = 10

// withMore joins the kept messages, one per failed series, and says how many more failed.
func withMore(msgs []string, n int) string {
	msg := strings.Join(msgs, "; ")
	if n > len(msgs) {
		return msg + " (and " + strconv.Itoa(n-len(msgs)) + " more failed series)"
	}
	return msg
}

// Push validates req, a decoded request of tenant, and replicates its valid series to the ingesters.
// It returns nil when every series was stored by a quorum of its replicas, else a *PushError.
//
// req's labels alias its body (see Label): the body must stay untouched until Push returns; it may be
// reused as soon as Push returns, even though pushes to slow ingesters may still be in flight (they
// carry their own copies). Push reorders and filters req's series in place.
func (d *Distributor) Push(ctx context.Context, tenant string, req *WriteRequest) error {
	st := d.states.Get().(*pushState)
	defer d.release(st)
	if err := d.push(ctx, tenant, req, st); err != nil {
		return err
	}
	return nil
}

// push is Push with the scratch space given (the HTTP handler decodes straight into st.req).
func (d *Distributor) push(ctx context.Context, tenant string, req *WriteRequest, st *pushState) (perr *PushError) {
	now := d.now()
	nowMs := now.UnixMilli()
	lim := &d.cfg.Limits
	out := outcome{tenant: tenant}
	ts := d.noteTenant(tenant, now)
	bounds := d.timeBounds(nowMs, ts, req)

	// 1. Normalize and validate every series. A refused series never stops the others.
	if d.ha != nil { // HA pairs: a non-elected replica's push is dropped (202); the replica label goes
		if perr := d.ha.check(ctx, tenant, req); perr != nil {
			return perr
		}
	}
	samplesIn, valid, exemplarsOnly := 0, 0, 0
	for i := range req.Series {
		s := &req.Series[i]
		samplesIn += len(s.Samples) + s.Histograms
		s.state, s.acks, s.fail4xx, s.fail5xx, s.nrep = seriesDone, 0, 0, 0, 0
		s.why4xx, s.why5xx, s.exemplarsSent = 0, 0, false
		changed := normalize(s) // always: it must run even when the series is re-encoded anyway
		s.rewrite = changed || !s.canonical
		r := validateLabels(s.Labels, lim)
		if r == nil && len(s.Hists) > 0 {
			var reduced int
			r, reduced = validateHistograms(s, d.maxHistogramBuckets(tenant), lim.ReduceNativeHistogramOverMaxBuckets)
			if reduced > 0 {
				s.rewrite = true
			}
		}
		if r != nil {
			d.m.discardedSamples.WithLabelValues(tenant, r.reason).Add(float64(len(s.Samples) + s.Histograms))
			s.state = seriesFailed4xx
			out.fail4xx(r.msg)
			continue
		}
		if !bounds.all(s.Samples) {
			// The series keeps its other samples; the request still answers 400 for the dropped ones.
			for _, tr := range filterSamples(s, &bounds, lim) {
				d.m.discardedSamples.WithLabelValues(tenant, tr.reason).Add(float64(tr.dropped))
				out.fail4xx(tr.msg)
			}
			s.rewrite = true
		}
		if len(s.Hists) > 0 {
			for _, tr := range histogramsInBounds(s, &bounds, lim) {
				d.m.discardedSamples.WithLabelValues(tenant, tr.reason).Add(float64(tr.dropped))
				out.fail4xx(tr.msg)
				s.rewrite = true
			}
		}
		if s.Exemplars > 0 {
			d.checkExemplars(tenant, req, s, &bounds)
		}
		if len(s.Samples) > 0 || len(s.Hists) > 0 || s.exemplarsSent {
			// A series may carry exemplars alone: Prometheus sends a scrape's exemplars in
			// TimeSeries of their own, after its samples.
			s.state = seriesPending
			valid += len(s.Samples) + len(s.Hists)
			if len(s.Samples) == 0 && len(s.Hists) == 0 {
				exemplarsOnly++
			}
		}
	}
	d.m.samplesIn.WithLabelValues(tenant).Add(float64(samplesIn))
	nMeta := len(req.metadata)
	if valid == 0 && exemplarsOnly == 0 && nMeta == 0 {
		return out.err()
	}
	ts.observe(bounds.newest)

	// 2. The tenant's ingestion rate limit: all of the request's valid samples, exemplars and
	// metadata entries, or none (Mimir counts the three together: each costs the replicas a write,
	// and exemplars a WAL record).
	nEx := 0
	for i := range req.Series {
		if s := &req.Series[i]; s.state == seriesPending && s.exemplarsSent {
			nEx += s.Exemplars
		}
	}
	limit, burst := d.cfg.IngestionRateLimit, d.cfg.IngestionBurstSize
	if d.limits != nil {
		limit, burst = d.limits(tenant) // once per push: a reload must not pair one file's rate with another's burst
	}
	if rate, n := d.shareOf(limit); rate > 0 && !d.tenants.allow(tenant, valid+nEx+nMeta, rate, burst, now) {
		d.m.discardedSamples.WithLabelValues(tenant, reasonRateLimited).Add(float64(valid))
		if nEx > 0 {
			d.xm.discardedExemplars.WithLabelValues(tenant, reasonRateLimited).Add(float64(nEx))
		}
		if nMeta > 0 {
			d.xm.discardedMetadata.WithLabelValues(tenant, reasonRateLimited).Add(float64(nMeta))
		}
		share := ""
		if d.cfg.IngestionRateStrategy == RateStrategyGlobal {
			share = fmt.Sprintf(" across the cluster, shared by %d healthy distributors: %.4g samples/s here", n, rate)
		}
		return &PushError{Status: http.StatusTooManyRequests, Msg: fmt.Sprintf(
			"the request of %d samples (%d samples and histograms, %d exemplars, %d metadata entries) exceeds the ingestion rate limit of tenant %q: %v samples/s%s, with bursts of %d (-distributor.ingestion-rate-limit, -distributor.ingestion-burst-size, or the tenant's runtime overrides) (err-raftingest-tenant-max-ingestion-rate)",
			valid+nEx+nMeta, valid, nEx, nMeta, tenant, limit, share, burst)}
	}
	d.m.receivedSamples.WithLabelValues(tenant).Add(float64(valid))
	if nMeta > 0 { // metric metadata goes to its own replicas, beside the series (metadata.go)
		if wait := d.startMetadata(ctx, tenant, req, st, &out); wait != nil {
			defer func() {
				var mo outcome
				wait(&mo)
				perr = withMetadata(perr, &mo)
			}()
		}
	}
	if valid == 0 && exemplarsOnly == 0 {
		return out.err()
	}

	// 3. Place every series on its replication set.
	ring, ringIndex := d.placementRing()
	if ring == nil {
		return &PushError{Status: http.StatusServiceUnavailable, Msg: "the ring is not known yet on this node; retry shortly"}
	}
	place := d.cfg.Placement()
	rf := ring.EffectiveRFFor(place)
	place.RF = rf
	d.noteRF(rf)
	if rf == 0 {
		return &PushError{Status: http.StatusServiceUnavailable, Msg: "no ingester owns tokens in the ring: nothing can take writes yet"}
	}
	quorum := ringstate.Quorum(rf)
	timeoutMs := d.cfg.RingHeartbeatTimeout.Milliseconds()
	pending := 0
	for i := range req.Series {
		s := &req.Series[i]
		if s.state != seriesPending {
			continue
		}
		s.hash = SeriesHash(tenant, s.Labels)
		st.repSet = ring.ReplicationSetFor(s.hash, place, timeoutMs, st.repSet[:0])
		if len(st.repSet) < quorum {
			s.state = seriesFailed5xx
			out.fail5xx(fmt.Sprintf("too few healthy ingesters: have %d, need quorum %d of RF %d, series: %s", len(st.repSet), quorum, rf, renderSeries(s.Labels)))
			continue
		}
		s.repOff, s.nrep = int32(len(st.replicas)), uint8(len(st.repSet))
		for _, m := range st.repSet {
			st.replicas = append(st.replicas, st.target(m))
		}
		pending++
	}
	if pending == 0 {
		return out.err()
	}

	// 4. Group series by target: one request per ingester.
	nt := len(st.targets)
	st.offsets = append(st.offsets[:0], make([]int32, nt+1)...)
	for i := range req.Series {
		s := &req.Series[i]
		if s.state == seriesPending {
			for _, t := range st.replicas[s.repOff : s.repOff+int32(s.nrep)] {
				st.offsets[t+1]++
			}
		}
	}
	for t := 1; t <= nt; t++ {
		st.offsets[t] += st.offsets[t-1]
	}
	st.order = append(st.order[:0], make([]int32, st.offsets[nt])...)
	next := append(st.next[:0], st.offsets[:nt]...)
	st.next = next
	for i := range req.Series {
		s := &req.Series[i]
		if s.state == seriesPending {
			for _, t := range st.replicas[s.repOff : s.repOff+int32(s.nrep)] {
				st.order[next[t]] = int32(i)
				next[t]++
			}
		}
	}

	// 5. Build each ingester's request and send them all in parallel. The sends run on a context
	// detached from the client's (a client that hangs up must not cut a write half-replicated) with
	// the remote timeout; the last one to finish releases it.
	sendCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), d.cfg.RemoteTimeout)
	results := make(chan targetResult, nt)
	var running atomic.Int32
	running.Store(int32(nt))
	done := func() {
		if running.Add(-1) == 0 {
			cancel()
		}
		d.sends.Done()
	}
	d.sends.Add(nt)
	for t := 0; t < nt; t++ {
		idx := st.order[st.offsets[t]:st.offsets[t+1]]
		buf := buildRequest(req, idx, ringIndex)
		addr := st.targets[t].GRPCAddr
		client, err := d.clients.GetClientFor(addr)
		if err != nil {
			bufPool.Put(buf)
			d.m.appendFailures.WithLabelValues(addr, "5xx").Inc()
			results <- targetResult{t: t, err: err}
			done()
			continue
		}
		go func() {
			defer done()
			resp, err := client.Push(sendCtx, tenant, &ingesterpb.RawPushRequest{Data: buf, Pool: bufPool})
			if err != nil {
				if _, fenced := ingesterpb.AsFenced(err); !fenced || d.fence.src == nil { // a fenced push is retried, not failed
					d.m.appendFailures.WithLabelValues(addr, callErrorClass(err)).Inc()
				}
			}
			results <- targetResult{t: t, resp: resp, err: err}
		}()
	}

	// 6. Count answers per series until every series is decided: stored by a quorum, or refused or
	// failed on enough replicas that no quorum is possible. Slow ingesters do not hold the answer
	// once their series are decided.
	answered := 0
	deadline, _ := sendCtx.Deadline()
	var gate *retryGate // the fenced retries started by this push, if any
	for pending > 0 && answered < nt {
		r := <-results
		if f, ok := d.fenced(r.err); ok && !r.retried && d.undecided(r.t, req, st) {
			// Placed by a ring older than the target's last ownership change: place its series
			// again on the fresh ring (fence.go), beside the other answers, so that a quorum they
			// give decides the push without waiting for the retry. Its answer stands for r's.
			if gate == nil {
				gate = newRetryGate()
			}
			d.startFencedRetry(ctx, deadline, tenant, req, st, r, f, gate, results)
			continue
		}
		answered++
		pending -= d.apply(r, req, st, quorum, &out)
	}
	// Every series is decided. Retries still waiting for this node's ring are sent now if the ring
	// is there, else dropped (gate.abandon); later fenced answers are sent again in the background
	// (their series' bytes must be copied before Push returns), so that those series keep their RF
	// copies.
	gate.abandon(func(t int, a fencedAnswer) {
		d.fencedRetry(ctx, deadline, tenant, req, st, t, a.f, a.cause, true, nil)
	})
	for ; d.fence.src != nil && answered < nt; answered++ {
		select {
		case r := <-results:
			if f, ok := d.fenced(r.err); ok && !r.retried {
				d.fencedRetry(ctx, deadline, tenant, req, st, r.t, f, r.err, true, nil)
			}
			continue
		default:
		}
		break
	}
	return out.err()
}

// Wait blocks until every push to ingesters started so far has finished, including pushes to slow
// ingesters that were still running when their request was answered (a quorum had already stored
// every series). Call it on shutdown, after the HTTP server stopped taking requests and before the
// client pool is closed, so that no replica write is cut short.
func (d *Distributor) Wait() { d.sends.Wait() }

// targetResult is one ingester's answer.
type targetResult struct {
	t    int
	resp *ingesterpb.PushResponse
	err  error
	// retried: the answer of a fenced retry standing for t's fenced answer (never retried again).
	retried bool
}

// target returns the index of m among the push's targets, adding it if new. A push reaches at most
// every ring member, and rings are small (3 to 30 members): a linear scan beats a map here.
func (st *pushState) target(m *ringstate.Member) int32 {
	for i, t := range st.targets {
		if t == m {
			return int32(i)
		}
	}
	st.targets = append(st.targets, m)
	return int32(len(st.targets) - 1)
}

// buildRequest concatenates the series at idx into one PushRequest stamped with ringIndex (write
// fencing; 0 leaves it out), in a buffer from the pool. A series the distributor did not change is
// copied from the body as is; the others are re-encoded.
func buildRequest(req *WriteRequest, idx []int32, ringIndex uint64) *[]byte {
	size := ingesterpb.RingIndexSize(ringIndex)
	for _, i := range idx {
		s := &req.Series[i]
		if s.rewrite {
			size += seriesSizeEx(s, sentExemplars(req, s))
		} else {
			size += len(s.Raw)
		}
	}
	buf := bufPool.Get(size)
	b := (*buf)[:0]
	for _, i := range idx {
		s := &req.Series[i]
		if s.rewrite {
			b = appendSeriesEx(b, s, sentExemplars(req, s))
		} else {
			b = append(b, s.Raw...)
		}
	}
	b = ingesterpb.AppendRingIndex(b, ringIndex)
	if len(b) != size || (size > 0 && &b[0] != &(*buf)[0]) {
		panic(fmt.Sprintf("distributor: built a request of %d bytes, sized %d", len(b), size))
	}
	return buf
}

// callErrorClass classifies a failed Push call: 4xx when the ingester refused the whole request as
// invalid, 5xx for everything else (unreachable, timed out, overloaded, crashed).
func callErrorClass(err error) string {
	if status.Code(err) == codes.InvalidArgument {
		return "4xx"
	}
	return "5xx"
}

// apply counts one ingester's answer for each of its series and returns how many series it decided.
func (d *Distributor) apply(r targetResult, req *WriteRequest, st *pushState, quorum int, out *outcome) int {
	idx := st.order[st.offsets[r.t]:st.offsets[r.t+1]]
	addr := st.targets[r.t].GRPCAddr
	decided := 0
	if r.err != nil {
		class4xx := callErrorClass(r.err) == "4xx"
		for _, i := range idx {
			s := &req.Series[i]
			if class4xx {
				s.fail4xx++
				s.why4xx = st.fail(failure{callErr: r.err, addr: addr})
			} else {
				s.fail5xx++
				s.why5xx = st.fail(failure{callErr: r.err, addr: addr})
			}
			decided += d.decide(s, st, quorum, out)
		}
		return decided
	}
	// Mark the refused series, then count an acknowledgement for every other one.
	st.marks = append(st.marks[:0], make([]bool, len(idx))...)
	st.ierrs = append(st.ierrs[:0], make([]*ingesterpb.SeriesError, len(idx))...)
	for _, e := range r.resp.GetErrors() {
		if int(e.GetIndex()) >= len(idx) {
			d.log.Warn("ingester reported an error for a series it was not sent", "ingester", addr, "index", e.GetIndex(), "series_sent", len(idx))
			continue
		}
		if !st.marks[e.GetIndex()] {
			st.marks[e.GetIndex()] = true
			st.ierrs[e.GetIndex()] = e
		}
	}
	for k, i := range idx {
		s := &req.Series[i]
		e := st.ierrs[k]
		switch {
		case !st.marks[k]:
			s.acks++
		case e.GetCode().IsClientError():
			s.fail4xx++
			s.why4xx = st.fail(failure{ierr: e, addr: addr})
			d.m.appendFailures.WithLabelValues(addr, "4xx").Inc()
		default:
			s.fail5xx++
			s.why5xx = st.fail(failure{ierr: e, addr: addr})
			d.m.appendFailures.WithLabelValues(addr, "5xx").Inc()
		}
		decided += d.decide(s, st, quorum, out)
	}
	return decided
}

// decide settles a pending series once its answers allow it, and returns 1 if it did.
//
// The rules (Cortex's and Mimir's): the series is stored when a quorum of its replicas acknowledged
// it. It failed with a client error (4xx: Prometheus drops it) when the client errors alone put the
// quorum out of reach — out of order on two of three replicas will not get better by retrying. It
// failed with a server error (5xx: Prometheus retries) when the quorum is out of reach otherwise; that
// is decided only once the answers still missing could no longer make it a client error, so the
// outcome does not depend on which replica answered first.
func (d *Distributor) decide(s *Series, st *pushState, quorum int, out *outcome) int {
	if s.state != seriesPending {
		return 0
	}
	maxFailures := int(s.nrep) - quorum
	missing := int(s.nrep) - int(s.acks) - int(s.fail4xx) - int(s.fail5xx)
	switch {
	case int(s.acks) >= quorum:
		s.state = seriesDone
	case int(s.fail4xx) > maxFailures:
		s.state = seriesFailed4xx
		why := st.why(s.why4xx)
		reason := reasonIngesterClientError
		if why.ierr != nil {
			reason = strings.ToLower(why.ierr.GetCode().String())
		}
		d.m.discardedSamples.WithLabelValues(out.tenant, reason).Add(float64(len(s.Samples)))
		out.fail4xx(ingesterMessage(why, s))
	case int(s.acks)+missing < quorum && int(s.fail4xx)+missing <= maxFailures:
		s.state = seriesFailed5xx
		why := st.why(s.why5xx)
		if why.addr == "" { // quorum lost to a mix in which the client errors alone did not decide
			why = st.why(s.why4xx)
		}
		out.fail5xx(ingesterMessage(why, s))
	default:
		return 0
	}
	return 1
}

// ingesterMessage is the client's message for a series a quorum of ingesters refused or failed: the
// last answer that decided it, and the series.
func ingesterMessage(f failure, s *Series) string {
	ierr, callErr, addr := f.ierr, f.callErr, f.addr
	if callErr != nil {
		return fmt.Sprintf("failed to push to ingester %s: %v; no quorum of replicas stored series: %s", addr, callErr, renderSeries(s.Labels))
	}
	msg := ierr.GetMessage()
	if msg == "" {
		msg = strings.ToLower(strings.ReplaceAll(ierr.GetCode().String(), "_", " "))
	}
	if ts := ierr.GetTimestampMs(); ts != 0 {
		msg += ", timestamp: " + strconv.FormatInt(ts, 10)
	}
	return fmt.Sprintf("ingester %s refused the series: %s, series: %s", addr, msg, renderSeries(s.Labels))
}

// noteRF logs when the ring caps the replication factor, once per change of the effective value.
func (d *Distributor) noteRF(rf int) {
	capped := int64(0)
	if rf < d.cfg.ReplicationFactor {
		capped = int64(rf)
	}
	if prev := d.cappedRF.Swap(capped); prev != capped {
		if capped != 0 {
			d.log.Warn("replication factor capped by the ring: fewer members (zone-aware: fewer zones) own tokens than -distributor.replication-factor",
				"configured", d.cfg.ReplicationFactor, "effective", rf)
		} else {
			d.log.Info("replication factor no longer capped", "configured", d.cfg.ReplicationFactor, "effective", rf)
		}
	}
}
