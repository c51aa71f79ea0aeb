package querier

// Per-query fetch limits: Mimir's -querier.max-fetched-series-per-query,
// -querier.max-fetched-chunks-per-query and -querier.max-fetched-chunk-bytes-per-query, with
// Mimir's error messages (its globalerror ids) and its metric, enforced as data arrives.

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/prometheus/prometheus/model/labels"

	"github.com/raftingest/raftingest/tenant"
)

// The limits' flag names, as Mimir spells them.
const (
	maxSeriesPerQueryFlag     = "querier.max-fetched-series-per-query"
	maxChunksPerQueryFlag     = "querier.max-fetched-chunks-per-query"
	maxChunkBytesPerQueryFlag = "querier.max-fetched-chunk-bytes-per-query"
)

// Reasons of cortex_querier_queries_rejected_total, Mimir's values.
const (
	rejectReasonMaxSeries     = "max-fetched-series-per-query"
	rejectReasonMaxChunks     = "max-fetched-chunks-per-query"
	rejectReasonMaxChunkBytes = "max-fetched-chunk-bytes-per-query"
)

// cardinalityStrategy and the formats below are Mimir's (pkg/util/limiter, globalerror's
// MessageWithStrategyAndPerTenantLimitConfig), so that clients and runbooks written for Mimir
// recognise them, error id included.
const cardinalityStrategy = "Consider reducing the time range and/or number of series selected by the query. One way to reduce the number of selected series is to add more label matchers to the query"

var (
	maxSeriesHitMsgFormat = limitMessage("the query exceeded the maximum number of series (limit: %d series)",
		"max-series-per-query", maxSeriesPerQueryFlag)
	maxChunksHitMsgFormat = limitMessage("the query exceeded the maximum number of chunks (limit: %d chunks)",
		"max-chunks-per-query", maxChunksPerQueryFlag)
	maxChunkBytesHitMsgFormat = limitMessage("the query exceeded the aggregated chunks size limit (limit: %d bytes)",
		"max-chunks-bytes-per-query", maxChunkBytesPerQueryFlag)
)

func limitMessage(msg, id, flag string) string {
	return fmt.Sprintf("%s (err-mimir-%s). %s. Otherwise, to adjust the related per-tenant limit, configure -%s, or contact your service administrator.",
		msg, id, cardinalityStrategy, flag)
}

// LimitError is the error of a query that crossed one of the per-query fetch limits. The HTTP API
// answers it with 422 (errorType "execution"), remote read with 422 too.
type LimitError struct{ msg string }

func (e *LimitError) Error() string { return e.msg }

// IsLimitError reports whether err is, or wraps, a *LimitError.
func IsLimitError(err error) bool {
	var le *LimitError
	return errors.As(err, &le)
}

// queryLimiter counts what one query fetched, from every source (each ingester's stream, the
// blocks), and refuses more than the limits allow. A zero limit is off. Safe for concurrent use;
// once a limit is crossed every later call fails with the same error.
//
// What counts, as in Mimir: series are counted once however many replicas (and blocks) return
// them — the limit is on unique series; chunks and chunk bytes are counted as fetched, so the three
// copies of a chunk that three replicas hold count three times.
type queryLimiter struct {
	maxSeries, maxChunks, maxChunkBytes int
	rejected                            func(reason string)

	mu     sync.Mutex
	series map[uint64]struct{} // hashes of the label sets seen; nil when maxSeries is 0

	chunks, chunkBytes atomic.Int64
	err                atomic.Pointer[LimitError] // the first limit crossed
}

// newQueryLimiter returns a limiter; rejected, when not nil, is called once per limit crossed.
func newQueryLimiter(maxSeries, maxChunks, maxChunkBytes int, rejected func(reason string)) *queryLimiter {
	l := &queryLimiter{maxSeries: maxSeries, maxChunks: maxChunks, maxChunkBytes: maxChunkBytes, rejected: rejected}
	if maxSeries > 0 {
		l.series = map[uint64]struct{}{}
	}
	return l
}

// enabled reports whether any limit is on.
func (l *queryLimiter) enabled() bool {
	return l != nil && (l.maxSeries > 0 || l.maxChunks > 0 || l.maxChunkBytes > 0)
}

// countsSeries reports whether AddSeries does anything (callers can skip building label sets).
func (l *queryLimiter) countsSeries() bool { return l != nil && l.maxSeries > 0 }

// Err returns the error of the first limit crossed, or nil.
func (l *queryLimiter) Err() error {
	if l == nil {
		return nil
	}
	if e := l.err.Load(); e != nil {
		return e
	}
	return nil
}

func (l *queryLimiter) fail(reason, format string, limit int) error {
	e := &LimitError{msg: fmt.Sprintf(format, limit)}
	if l.err.CompareAndSwap(nil, e) && l.rejected != nil {
		l.rejected(reason)
	}
	return l.err.Load()
}

// AddSeries counts lset unless it was counted before.
func (l *queryLimiter) AddSeries(lset labels.Labels) error {
	if l == nil {
		return nil
	}
	if err := l.Err(); err != nil {
		return err
	}
	if l.maxSeries <= 0 {
		return nil
	}
	h := lset.Hash()
	l.mu.Lock()
	l.series[h] = struct{}{}
	n := len(l.series)
	l.mu.Unlock()
	if n > l.maxSeries {
		return l.fail(rejectReasonMaxSeries, maxSeriesHitMsgFormat, l.maxSeries)
	}
	return nil
}

// AddChunks counts n chunks of size bytes in all.
func (l *queryLimiter) AddChunks(n, size int) error {
	if l == nil {
		return nil
	}
	if err := l.Err(); err != nil {
		return err
	}
	if l.maxChunks > 0 && l.chunks.Add(int64(n)) > int64(l.maxChunks) {
		return l.fail(rejectReasonMaxChunks, maxChunksHitMsgFormat, l.maxChunks)
	}
	if l.maxChunkBytes > 0 && l.chunkBytes.Add(int64(size)) > int64(l.maxChunkBytes) {
		return l.fail(rejectReasonMaxChunkBytes, maxChunkBytesHitMsgFormat, l.maxChunkBytes)
	}
	return nil
}

type limiterKey struct{}

// withLimiter returns ctx carrying l: every Select made with it counts against l.
func withLimiter(ctx context.Context, l *queryLimiter) context.Context {
	return context.WithValue(ctx, limiterKey{}, l)
}

// limiterFrom returns the query's limiter, or nil (no limits) when ctx has none.
func limiterFrom(ctx context.Context) *queryLimiter {
	l, _ := ctx.Value(limiterKey{}).(*queryLimiter)
	return l
}

// newLimiter returns a limiter for one query of the tenant in ctx: its runtime overrides
// (Deps.Limits) or the flags'.
func (q *Querier) newLimiter(ctx context.Context) *queryLimiter {
	series, chunks, bytes := q.cfg.MaxFetchedSeriesPerQuery, q.cfg.MaxFetchedChunksPerQuery, q.cfg.MaxFetchedChunkBytesPerQuery
	if q.deps.Limits != nil {
		if id, err := tenant.FromContext(ctx); err == nil {
			series, chunks, bytes = q.deps.Limits(id)
		}
	}
	return newQueryLimiter(series, chunks, bytes, func(reason string) { q.metrics.queriesRejected.WithLabelValues(reason).Inc() })
}
