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
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
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
			Help: "The total number of samples that were discarded, by reason (validation, rate limit, refused by a quorum of ingesters).",
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
		replicationFactor: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "cortex_distributor_replication_factor",
			Help: "The configured replication factor (-distributor.replication-factor); the ring caps it at the number of members owning tokens.",
		}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.receivedSamples, m.samplesIn, m.discardedSamples, m.appendFailures, m.pushDuration, m.replicationFactor} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return m, nil
}
