package flush

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics of flushing, under Cortex's names where Cortex has one.
type metrics struct {
	queueLength    prometheus.Gauge
	enqueued       *prometheus.CounterVec
	seriesFlushed  *prometheus.CounterVec
	chunksStored   *prometheus.CounterVec
	bytesStored    *prometheus.CounterVec
	samplesStored  *prometheus.CounterVec
	duration       prometheus.Histogram
	failures       prometheus.Counter
	uploads        prometheus.Counter
	uploadFailures prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		queueLength: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "cortex_ingester_flush_queue_length",
			Help: "Series of the running flush not yet uploaded (0 between flushes).",
		}),
		enqueued: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cortex_ingester_flushing_enqueued_series_total",
			Help: "Series enqueued for flushing, by reason (periodic, idle, forced).",
		}, []string{"reason"}),
		seriesFlushed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cortex_ingester_flushed_series_total",
			Help: "Series written into uploaded blocks, per user.",
		}, []string{"user"}),
		chunksStored: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cortex_ingester_chunks_stored_total",
			Help: "Chunks written into uploaded blocks, per user.",
		}, []string{"user"}),
		bytesStored: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cortex_ingester_chunk_stored_bytes_total",
			Help: "Bytes of uploaded blocks (index and chunks), per user.",
		}, []string{"user"}),
		samplesStored: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cortex_ingester_flushed_samples_total",
			Help: "Samples written into uploaded blocks, per user.",
		}, []string{"user"}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "cortex_ingester_flush_duration_seconds",
			Help:    "Duration of one flush: snapshot, block writing, uploads with retries, drop from memory and WAL.",
			Buckets: prometheus.ExponentialBuckets(0.01, 4, 9),
		}),
		failures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cortex_ingester_flush_failures_total",
			Help: "Flushes that failed for at least one tenant (that data stayed in memory and the WAL).",
		}),
		uploads: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cortex_ingester_shipper_uploads_total",
			Help: "Blocks uploaded to the bucket.",
		}),
		uploadFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cortex_ingester_shipper_upload_failures_total",
			Help: "Failed block upload attempts (each is retried with backoff).",
		}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.queueLength, m.enqueued, m.seriesFlushed, m.chunksStored, m.bytesStored,
			m.samplesStored, m.duration, m.failures, m.uploads, m.uploadFailures} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("flush: registering metrics: %w", err)
			}
		}
	}
	return m, nil
}
