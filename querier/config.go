package querier

import (
	"errors"
	"flag"
	"fmt"
	"time"
)

// Config is the querier's configuration. Flag names and meanings are Mimir's, where Mimir has them.
type Config struct {
	// QueryStoreAfter is -querier.query-store-after: only the part of a query older than now minus
	// this goes to the long-term store. 0 (our default) sends every query to the store; see
	// RegisterFlags for why our default differs from Mimir's 12h.
	QueryStoreAfter time.Duration
	// QueryIngestersWithin is -querier.query-ingesters-within: only the part of a query newer than
	// now minus this goes to the ingesters. 0 sends every query to the ingesters.
	QueryIngestersWithin time.Duration
	// MaxSamples is -querier.max-samples: the most samples one query may hold in memory at once.
	MaxSamples int
	// Timeout is -querier.timeout: the longest a query may run.
	Timeout time.Duration
	// MaxConcurrent is -querier.max-concurrent: queries (PromQL, series, labels, remote read)
	// evaluated at once by this process; more wait for a slot until their timeout.
	MaxConcurrent int
	// LookbackDelta is -querier.lookback-delta: how far back PromQL looks for a sample of an instant
	// vector selector.
	LookbackDelta time.Duration
	// DefaultEvaluationInterval is -querier.default-evaluation-interval: the step of a subquery
	// written without one (Prometheus' global evaluation_interval).
	DefaultEvaluationInterval time.Duration
	// MaxRecvMsgSize is -querier.max-recv-msg-size: the largest QueryStream message accepted from an
	// ingester.
	MaxRecvMsgSize int

	// MaxFetchedSeriesPerQuery is -querier.max-fetched-series-per-query: the most unique series one
	// query may fetch from the ingesters and the store together (0: no limit, Mimir's default).
	MaxFetchedSeriesPerQuery int
	// MaxFetchedChunksPerQuery is -querier.max-fetched-chunks-per-query: the most chunks one query
	// may fetch, every replica's copy counted (0: no limit; Mimir's default 2,000,000).
	MaxFetchedChunksPerQuery int
	// MaxFetchedChunkBytesPerQuery is -querier.max-fetched-chunk-bytes-per-query: the most chunk
	// bytes one query may fetch, every replica's copy counted (0: no limit, Mimir's default).
	MaxFetchedChunkBytesPerQuery int
	// MaxLabelsQueryLength is -store.max-labels-query-length: the longest time range the series,
	// label names and label values endpoints read; a longer or missing range is shortened by moving
	// its start (Mimir's rule, see clampLabelsRange). 0: no limit.
	MaxLabelsQueryLength time.Duration
}

// DefaultMaxLabelsQueryLength is the default of -store.max-labels-query-length. Mimir's default is
// 0 (no limit), under which a label query without start and end reads every block ever written;
// ours is finite so that such a query is bounded out of the box.
const DefaultMaxLabelsQueryLength = 24 * time.Hour

// RegisterFlags registers the querier's flags with their defaults on f.
func (c *Config) RegisterFlags(f *flag.FlagSet) {
	// Mimir defaults to 12h because its ingesters keep 13h of blocks on local disk after shipping
	// them. Ours drop a range from memory as soon as it is in the bucket (every -ingester.flush-period,
	// and earlier for idle series), so any value above zero would hide data flushed since then.
	f.DurationVar(&c.QueryStoreAfter, "querier.query-store-after", 0,
		"Only the part of a query older than now minus this is sent to the long-term store (the flushed blocks: read from a shared bucket directly, from every member's node-local bucket over gRPC otherwise). 0 sends every query to the store, which is needed while ingesters drop flushed data from memory: set it above 0 only if no data younger than this has ever been flushed.")
	f.DurationVar(&c.QueryIngestersWithin, "querier.query-ingesters-within", 13*time.Hour,
		"Only the part of a query newer than now minus this is sent to the ingesters. 0 sends every query to the ingesters. Must be longer than the time ingesters hold data before flushing it (-ingester.flush-period).")
	f.IntVar(&c.MaxSamples, "querier.max-samples", 50_000_000,
		"Maximum number of samples a single query may load into memory; a query over it fails with an execution error.")
	f.DurationVar(&c.Timeout, "querier.timeout", 2*time.Minute,
		"Maximum time a query may run; a query over it fails with a timeout error (HTTP 503).")
	f.IntVar(&c.MaxConcurrent, "querier.max-concurrent", 20,
		"Maximum number of queries evaluated at once by this process; others wait for a slot.")
	f.DurationVar(&c.LookbackDelta, "querier.lookback-delta", 5*time.Minute,
		"How far back PromQL looks for a sample of a series at each evaluation step (Prometheus' --query.lookback-delta).")
	f.DurationVar(&c.DefaultEvaluationInterval, "querier.default-evaluation-interval", time.Minute,
		"Step of a subquery written without one (Prometheus' global evaluation_interval).")
	f.IntVar(&c.MaxRecvMsgSize, "querier.max-recv-msg-size", 100<<20,
		"Maximum size in bytes of one streamed message from an ingester.")
	f.IntVar(&c.MaxFetchedSeriesPerQuery, maxSeriesPerQueryFlag, 150_000,
		"The maximum number of unique series for which a query can fetch samples from ingesters and the long-term store. A series returned by several replicas (or blocks) counts once, as in Mimir. Counted as the ingesters' streams arrive, and from the blocks' index before they are read; the query stops fetching and fails with HTTP 422 (err-mimir-max-series-per-query) as soon as it is crossed. Applies to PromQL queries (query, query_range), /series and remote read; not to /labels and /label/<name>/values (as in Mimir). 0 to disable (Mimir's default; ours is finite so that one query is bounded out of the box: -ingester.max-global-series-per-user's default).")
	f.IntVar(&c.MaxFetchedChunksPerQuery, maxChunksPerQueryFlag, 2_000_000,
		"Maximum number of chunks that can be fetched in a single query from ingesters and the long-term store. Chunks are counted as fetched, as in Mimir: each replica's copy counts (and each block's copy in the bucket), so a series held by 3 replicas costs 3 times its chunks. Counted as the ingesters' streams arrive, and from the blocks' index before they are read; the query stops fetching and fails with HTTP 422 (err-mimir-max-chunks-per-query) as soon as it is crossed. Applies to PromQL queries and remote read (the series and label endpoints read no chunks). 0 to disable. The default is Mimir's.")
	f.IntVar(&c.MaxFetchedChunkBytesPerQuery, maxChunkBytesPerQueryFlag, 1<<30,
		"The maximum size of all chunks in bytes that a query can fetch from ingesters and the long-term store, counted as fetched like -querier.max-fetched-chunks-per-query (each replica's and each block's copy counts): as the ingesters' streams arrive, and from the blocks before their samples are read; the query stops fetching and fails with HTTP 422 (err-mimir-max-chunks-bytes-per-query) as soon as it is crossed. Applies to PromQL queries and remote read. 0 to disable (Mimir's default; ours is 1 GiB so that one query's memory is bounded out of the box).")
	f.DurationVar(&c.MaxLabelsQueryLength, "store.max-labels-query-length", DefaultMaxLabelsQueryLength,
		"Limit the time range (end - start time) of series, label names and values queries. A request without start and end reads the last this-long before now (Prometheus would read all time); a longer range is shortened by moving its start (Mimir's rule); the request does not fail. 0 to disable (Mimir's default; ours is 24h so that a request without a range is bounded).")
}

// Validate checks the values and their relations, naming the flags.
func (c *Config) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if c.QueryStoreAfter < 0 {
		bad("-querier.query-store-after=%s: must not be negative", c.QueryStoreAfter)
	}
	if c.QueryIngestersWithin < 0 {
		bad("-querier.query-ingesters-within=%s: must not be negative", c.QueryIngestersWithin)
	}
	// Mimir's rule: a gap between the two would leave a range that neither source answers for.
	if c.QueryIngestersWithin > 0 && c.QueryStoreAfter > 0 && c.QueryStoreAfter >= c.QueryIngestersWithin {
		bad("-querier.query-store-after=%s must be less than -querier.query-ingesters-within=%s, or queries between the two would read neither the ingesters nor the store",
			c.QueryStoreAfter, c.QueryIngestersWithin)
	}
	if c.MaxSamples <= 0 {
		bad("-querier.max-samples=%d: must be positive", c.MaxSamples)
	}
	if c.Timeout <= 0 {
		bad("-querier.timeout=%s: must be positive", c.Timeout)
	}
	if c.MaxConcurrent <= 0 {
		bad("-querier.max-concurrent=%d: must be positive", c.MaxConcurrent)
	}
	if c.LookbackDelta <= 0 {
		bad("-querier.lookback-delta=%s: must be positive", c.LookbackDelta)
	}
	if c.DefaultEvaluationInterval <= 0 {
		bad("-querier.default-evaluation-interval=%s: must be positive", c.DefaultEvaluationInterval)
	}
	for _, l := range []struct {
		flag string
		v    int
	}{{maxSeriesPerQueryFlag, c.MaxFetchedSeriesPerQuery}, {maxChunksPerQueryFlag, c.MaxFetchedChunksPerQuery}, {maxChunkBytesPerQueryFlag, c.MaxFetchedChunkBytesPerQuery}} {
		if l.v < 0 {
			bad("-%s=%d: must not be negative (0 disables the limit)", l.flag, l.v)
		}
	}
	if c.MaxLabelsQueryLength < 0 {
		bad("-store.max-labels-query-length=%s: must not be negative (0 disables the limit)", c.MaxLabelsQueryLength)
	}
	if c.MaxRecvMsgSize < 1<<20 {
		bad("-querier.max-recv-msg-size=%d: must be at least 1 MiB", c.MaxRecvMsgSize)
	}
	return errors.Join(errs...)
}
