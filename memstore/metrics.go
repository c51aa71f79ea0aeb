package memstore

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the memstore's Prometheus metrics. All are registered on the
// Registerer given to Open; a nil Registerer keeps them unregistered.
type metrics struct {
	// cortex_ingester_ingested_samples_total{user}: samples accepted (including idempotent duplicates).
	ingestedSamples *prometheus.CounterVec
	// cortex_ingester_ingested_samples_failures_total{user}: samples refused.
	ingestedSamplesFail *prometheus.CounterVec
	// cortex_ingester_memory_series: series currently in memory, all tenants.
	memSeries prometheus.Gauge
	// cortex_ingester_memory_series_created_total{user}.
	seriesCreated *prometheus.CounterVec
	// cortex_ingester_memory_series_removed_total{user}.
	seriesRemoved *prometheus.CounterVec
	// cortex_ingester_memory_chunks: chunks in memory (closed + head), all tenants.
	memChunks prometheus.Gauge
	// cortex_ingester_wal_records_logged_total{type}: WAL records written (type = series|samples|chunk).
	walRecords *prometheus.CounterVec
	// cortex_ingester_wal_logged_bytes_total: bytes of WAL record values written.
	walBytes prometheus.Counter
	// cortex_ingester_wal_commit_duration_seconds: one group commit (bbolt tx + fsync when -wal.sync).
	walCommitDuration prometheus.Histogram
	// cortex_ingester_wal_commit_failures_total: failed WAL commit attempts, retries included.
	walCommitFailures prometheus.Counter
	// raftingest_wal_failing: 1 while WAL commits fail and writes are refused, else 0.
	walFailing prometheus.Gauge
	// cortex_ingester_wal_replay_duration_seconds: how long the last replay on open took.
	walReplayDuration prometheus.Gauge
	// raftingest_wal_replay_progress_ratio: how far the WAL replay on open has come (0 to 1; 1 once
	// it is done or when there is no WAL), estimated from the records' sequence numbers.
	walReplayProgress prometheus.Gauge
	// cortex_ingester_wal_corruptions_total: corrupt records found on replay (the tail from there is cut).
	walCorruptions prometheus.Counter
	// cortex_ingester_wal_truncations_total: completed Truncate calls.
	walTruncations prometheus.Counter
	// raftingest_wal_file_bytes: bytes of the WAL file in use (bbolt's high-water mark, free pages
	// included), updated whenever the WAL releases its mapped pages.
	walFileBytes prometheus.Gauge
	// cortex_ingester_tsdb_out_of_order_samples_appended_total{user}: samples accepted out of
	// order (Mimir's name).
	oooAppended *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		ingestedSamples: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cortex_ingester_ingested_samples_total",
			Help: "The total number of samples ingested per user (idempotent duplicates included).",
		}, []string{"user"}),
		ingestedSamplesFail: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cortex_ingester_ingested_samples_failures_total",
			Help: "The total number of samples that errored on ingestion per user.",
		}, []string{"user"}),
		memSeries: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "cortex_ingester_memory_series",
			Help: "The current number of series in memory.",
		}),
		seriesCreated: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cortex_ingester_memory_series_created_total",
			Help: "The total number of series that were created per user.",
		}, []string{"user"}),
		seriesRemoved: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cortex_ingester_memory_series_removed_total",
			Help: "The total number of series that were removed per user.",
		}, []string{"user"}),
		memChunks: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "cortex_ingester_memory_chunks",
			Help: "The total number of chunks in memory (closed and head).",
		}),
		walRecords: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cortex_ingester_wal_records_logged_total",
			Help: "Total number of WAL records logged, by record type.",
		}, []string{"type"}),
		walBytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cortex_ingester_wal_logged_bytes_total",
			Help: "Total number of bytes of WAL records logged.",
		}),
		walCommitDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "cortex_ingester_wal_commit_duration_seconds",
			Help:    "Duration of one WAL group commit (bbolt transaction, including fsync when -wal.sync is on).",
			Buckets: prometheus.ExponentialBuckets(0.00005, 2, 16),
		}),
		walCommitFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cortex_ingester_wal_commit_failures_total",
			Help: "Total number of failed WAL commit attempts (ENOSPC, EIO), retries included.",
		}),
		walFailing: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "raftingest_wal_failing",
			Help: "1 while WAL commits fail (the cause is logged and shown by /ready): pushes are answered 5xx until a retry commits; 0 otherwise.",
		}),
		walReplayDuration: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "cortex_ingester_wal_replay_duration_seconds",
			Help: "Time taken to replay the WAL on open.",
		}),
		walReplayProgress: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "raftingest_wal_replay_progress_ratio",
			Help: "How far the WAL replay on open has come, from 0 to 1 (1 once done), estimated from the position of the record being replayed among the WAL's sequence numbers. /ready shows the same with an ETA.",
		}),
		walCorruptions: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cortex_ingester_wal_corruptions_total",
			Help: "Total number of corrupt WAL records found on replay.",
		}),
		walTruncations: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cortex_ingester_wal_truncations_total",
			Help: "Total number of completed WAL truncations.",
		}),
		oooAppended: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cortex_ingester_tsdb_out_of_order_samples_appended_total",
			Help: "Total number of out-of-order samples accepted per user (within -ingester.out-of-order-time-window).",
		}, []string{"user"}),
		walFileBytes: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "raftingest_wal_file_bytes",
			Help: "Bytes of the WAL's bbolt file in use (its high-water mark, free pages included), updated every few MiB logged. Only the pages of it read since the last release count in the resident set (docs/memory.md).",
		}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.ingestedSamples, m.ingestedSamplesFail, m.memSeries,
			m.seriesCreated, m.seriesRemoved, m.memChunks, m.walRecords, m.walBytes, m.walCommitDuration,
			m.walCommitFailures, m.walFailing, m.walReplayDuration, m.walReplayProgress, m.walCorruptions, m.walTruncations, m.walFileBytes, m.oooAppended} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("memstore: registering metrics: %w", err)
			}
		}
	}
	return m, nil
}
