package querier

import (
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the querier's own metrics; the PromQL engine and the remote-read handler register
// Prometheus' usual prometheus_engine_* and prometheus_remote_read_handler_* next to them.
type metrics struct {
	requestDuration       *prometheus.HistogramVec
	ingesterRequests      *prometheus.CounterVec
	ingesterQueriesFailed prometheus.Counter
	fanoutRequests        *prometheus.CounterVec
	fanoutQueriesFailed   *prometheus.CounterVec
	inflight              prometheus.Gauge
	queriesRejected       *prometheus.CounterVec
}

// newMetrics creates the metrics and registers them on reg when it is not nil.
func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		requestDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "cortex_querier_request_duration_seconds",
			Help:    "Time to answer a request of the Prometheus HTTP API or remote read, by route, method and HTTP status code.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120},
		}, []string{"route", "method", "status_code"}),
		ingesterRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cortex_querier_ingester_requests_total",
			Help: "QueryStream calls to ingesters (their memory), by outcome (success or error). Errors within the tolerated floor(RF/2) do not fail the query. cortex_querier_fanout_requests_total counts these and the calls for blocks by source.",
		}, []string{"status"}),
		ingesterQueriesFailed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cortex_querier_ingester_quorum_failures_total",
			Help: "Reads of the ingesters' memory refused because more ingesters were unhealthy or failed than the replication factor tolerates (cortex_querier_fanout_quorum_failures_total has every source).",
		}),
		fanoutRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cortex_querier_fanout_requests_total",
			Help: "Calls to ring members by source (ingesters: their memory over QueryStream; blocks: their node-local buckets over QueryBlocks) and outcome (success or error). Errors within the tolerated floor(RF/2) members per query do not fail the query; errors of PENDING or JOINING members never count against it; streams the querier cancels itself are not counted.",
		}, []string{"source", "status"}),
		fanoutQueriesFailed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cortex_querier_fanout_quorum_failures_total",
			Help: "Reads refused because more ACTIVE or LEAVING members were unhealthy or failed, in either source, than the replication factor tolerates, by the source of the read refused (ingesters or blocks).",
		}, []string{"source"}),
		inflight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "cortex_querier_inflight_requests",
			Help: "Requests being evaluated or waiting for one of the -querier.max-concurrent slots.",
		}),
		queriesRejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cortex_querier_queries_rejected_total",
			Help: "Queries refused because they crossed a per-query fetch limit, by reason: max-fetched-series-per-query, max-fetched-chunks-per-query or max-fetched-chunk-bytes-per-query (Mimir's metric and reasons).",
		}, []string{"reason"}),
	}
	for _, src := range []string{ingestersSource.name, blocksSource.name} {
		m.fanoutQueriesFailed.WithLabelValues(src)
		for _, st := range []string{"success", "error"} {
			m.fanoutRequests.WithLabelValues(src, st)
		}
	}
	// Exported at 0 before the first refusal, as Mimir does.
	for _, r := range []string{rejectReasonMaxSeries, rejectReasonMaxChunks, rejectReasonMaxChunkBytes} {
		m.queriesRejected.WithLabelValues(r)
	}
	if reg != nil {
		reg.MustRegister(m.requestDuration, m.ingesterRequests, m.ingesterQueriesFailed, m.fanoutRequests,
			m.fanoutQueriesFailed, m.inflight, m.queriesRejected)
	}
	return m
}

// request counts one call of a member fan-out of source src with its outcome status. The
// ingesters' calls are also counted by cortex_querier_ingester_requests_total, as before sources.
func (m *metrics) request(src, status string) {
	m.fanoutRequests.WithLabelValues(src, status).Inc()
	if src == ingestersSource.name {
		m.ingesterRequests.WithLabelValues(status).Inc()
	}
}

// quorumFailed counts one read of source src refused for too many member failures.
func (m *metrics) quorumFailed(src string) {
	m.fanoutQueriesFailed.WithLabelValues(src).Inc()
	if src == ingestersSource.name {
		m.ingesterQueriesFailed.Inc()
	}
}
