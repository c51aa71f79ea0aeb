package distributor

import (
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the distributor's metrics, with Cortex's names so that existing dashboards work.
type metrics struct {
	receivedSamples   *prometheus.CounterVec // {user}: samples accepted by validation and limits
	samplesIn         *prometheus.CounterVec // {user}: every sample received, before validation
	discardedSamples  *prometheus.CounterVec // {user, reason}
	appendFailures    *prometheus.CounterVec // {ingester, type}
	pushDuration      *prometheus.HistogramVec
	replicationFactor prometheus.Gauge
	// {version}: push requests by protocol: remote-write "1.0" or "2.0" (from the Content-Type), or "otlp".
	requestsByVersion *prometheus.CounterVec

	// Instance limits (Mimir's names).
	instanceLimits   *prometheus.GaugeVec   // {limit}
	rejectedRequests *prometheus.CounterVec // {reason}
	inflightRequests prometheus.GaugeFunc
	inflightBytes    prometheus.GaugeFunc

	// The rate limit this distributor enforces per tenant, and the distributors sharing it.
	rateLimit           prometheus.Gauge
	healthyDistributors prometheus.Gauge
	tenants             prometheus.GaugeFunc
}

func newMetrics(reg prometheus.Registerer, d *Distributor) (*metrics, error) {
	m := &metrics{
		instanceLimits: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "cortex_distributor_instance_limits",
			Help: "Instance limits used by this distributor (-distributor.instance-limits.*; 0: unlimited).",
		}, []string{"limit"}),
		rejectedRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cortex_distributor_instance_rejected_requests_total",
			Help: "Push requests refused with 503 for hitting per-instance limits, by reason.",
		}, []string{"reason"}),
		inflightRequests: prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "cortex_distributor_inflight_push_requests",
			Help: "Push requests being handled by this distributor (from their headers to their answer).",
		}, func() float64 { return float64(d.inflightRequests.Load()) }),
		inflightBytes: prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "cortex_distributor_inflight_push_requests_bytes",
			Help: "Bytes held by the push requests being handled: bodies, decompressed bodies, decoded series and forwarded copies.",
		}, func() float64 { return float64(d.inflightBytes.Load()) }),
		rateLimit: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "raftingest_distributor_ingestion_rate_limit_samples_per_second",
			Help: "The per-tenant ingestion rate this distributor enforces: -distributor.ingestion-rate-limit, divided by the healthy distributors under the global strategy (0: unlimited).",
		}),
		healthyDistributors: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "raftingest_distributor_healthy_distributors",
			Help: "The distributors sharing -distributor.ingestion-rate-limit under the global strategy: ACTIVE and healthy ring members, at least 1.",
		}),
		tenants: prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "raftingest_distributor_tenants",
			Help: "Tenants this distributor holds state for (rate-limiter bucket, metric series); released once idle for 15m.",
		}, func() float64 { return float64(d.tenants.len()) }),
		receivedSamples: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cortex_distributor_received_samples_total",
			Help: "The total number of received samples, excluding rejected samples.",
		}, []string{"user"}),
		samplesIn: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cortex_distributor_samples_in_total",
			Help: "The total number of samples that have come in to the distributor, including rejected samples.",
		}, []string{"user"}),
		discardedSamples: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cortex_discarded_samples_total",
			Help: "The total number of samples that were discarded, by reason (validation, rate limit, refused by a quorum of ingesters). With multi-tenancy off every client shares the tenant \"anonymous\": its rate_limited count is where one client starving the others shows.",
		}, []string{"user", "reason"}),
		appendFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cortex_distributor_ingester_append_failures_total",
			Help: "The total number of failed appends sent to ingesters: type is 4xx or 5xx; a failed call counts once, a refused series once.",
		}, []string{"ingester", "type"}),
		pushDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "cortex_distributor_push_duration_seconds",
			Help:    "Time to handle a remote-write push, from the first byte read to the answer, by HTTP status code.",
			Buckets: prometheus.DefBuckets,
		}, []string{"status_code"}),
		requestsByVersion: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "raftingest_distributor_remote_write_requests_total",
			Help: "Push requests received, by protocol: remote-write 1.0 or 2.0 (from their Content-Type) or otlp (/otlp/v1/metrics), whatever their outcome.",
		}, []string{"version"}),
		replicationFactor: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "cortex_distributor_replication_factor",
			Help: "The configured replication factor (-distributor.replication-factor); the ring caps it at the number of members owning tokens.",
		}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.receivedSamples, m.samplesIn, m.discardedSamples, m.appendFailures, m.pushDuration, m.replicationFactor, m.requestsByVersion,
			m.instanceLimits, m.rejectedRequests, m.inflightRequests, m.inflightBytes, m.rateLimit, m.healthyDistributors, m.tenants} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return m, nil
}
