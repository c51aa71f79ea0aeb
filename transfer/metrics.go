package transfer

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the hand-over's metrics, shared by the Leaver and the Receiver of one process.
// Names follow Cortex so that existing dashboards read them.
type Metrics struct {
	sentChunks       prometheus.Counter
	receivedChunks   prometheus.Counter
	sentSeries       prometheus.Counter
	receivedSeries   prometheus.Counter
	sentBytes        prometheus.Counter
	receivedBytes    prometheus.Counter
	attempts         *prometheus.CounterVec   // outcome
	shutdownDuration *prometheus.HistogramVec // op, status
}

// NewMetrics creates the metrics and registers them on reg (nil: unregistered).
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		sentChunks: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cortex_ingester_sent_chunks",
			Help: "The total number of chunks sent by this ingester whilst leaving (hand-over), failed attempts included.",
		}),
		receivedChunks: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cortex_ingester_received_chunks",
			Help: "The total number of chunks received by this ingester whilst joining (hand-over), aborted attempts included.",
		}),
		sentSeries: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "raftingest_transfer_sent_series_total",
			Help: "Series sent by this ingester in hand-overs, failed attempts included.",
		}),
		receivedSeries: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "raftingest_transfer_received_series_total",
			Help: "Series received and stored by this ingester in hand-overs, aborted attempts included.",
		}),
		sentBytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "raftingest_transfer_sent_bytes_total",
			Help: "Frame payload bytes sent in hand-overs.",
		}),
		receivedBytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "raftingest_transfer_received_bytes_total",
			Help: "Frame payload bytes received in hand-overs.",
		}),
		attempts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "raftingest_transfer_attempts_total",
			Help: "Hand-over attempts of this leaving ingester, by outcome: ok, no_joiner (no PENDING member to claim), claim_refused, failed (stream or commit failed; aborted).",
		}, []string{"outcome"}),
		shutdownDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "cortex_shutdown_duration_seconds",
			Help:    "Duration (in seconds) of the leaving ingester's data hand-off, by op (transfer or flush) and status (success or fail).",
			Buckets: prometheus.ExponentialBuckets(0.5, 2, 12),
		}, []string{"op", "status"}),
	}
	// Every outcome exported at 0 from the start: rate() and increase() need the series before its
	// first increment, or an alert misses the first failure.
	for _, o := range []string{"ok", "no_joiner", "claim_refused", "failed"} {
		m.attempts.WithLabelValues(o)
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.sentChunks, m.receivedChunks, m.sentSeries, m.receivedSeries,
			m.sentBytes, m.receivedBytes, m.attempts, m.shutdownDuration} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return m, nil
}
