package querier

import (
	"context"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/util/annotations"
)

// NewQueryable splits every query in time between the ingesters and the long-term store, as Mimir
// does, and merges the two answers with storage.ChainedSeriesMerge, so a sample present in both (a
// range flushed to the bucket while the ingesters still hold it) is returned once:
//
//   - ingesters answer for [max(mint, now-queryIngestersWithin), maxt] (all of it when 0);
//   - the store answers for [mint, min(maxt, now-queryStoreAfter)] (all of it when 0).
//
// store may be nil (no long-term storage configured). Either source's error fails the query. The
// store must read the tenant with tenant.FromContext in Select, LabelNames and LabelValues.
//
// Failures: every Querier (one query) carries one readFailures in the context of its Selects and
// label calls, so that the ingesters and a store read through the members (NewBlocksQueryable)
// share one failure budget of floor(RF/2) members where their ranges overlap (see readFailures).
//
// Order: the ingesters are read before the store, and each source's Select reads all of its members
// before it returns (MemberQueryable.fetch is eager). That order is what makes a flush between the
// two reads safe: a flush uploads a block, then drops the samples from memory, so a sample missing
// from the memory read was already in a block when the store was read. storage.NewMergeQuerier with
// primaries only (no secondaries) runs the Selects one after another, in the order given; with
// secondaries it would run them concurrently, and blocks could be read before memory: a sample
// flushed between the two would be in neither answer. TestNewQueryable_ReadsMemoryBeforeBlocks.
//
// The query's fetch limits (limiterFrom(ctx)) count what both sources return: the ingesters as
// their streams arrive, a store read directly before it reads (see limitedStore), a store read
// through the members (NewBlocksQueryable) as their streams arrive.
func NewQueryable(ingesters, store storage.Queryable, queryStoreAfter, queryIngestersWithin time.Duration, now func() time.Time) storage.SampleAndChunkQueryable {
	if now == nil {
		now = time.Now
	}
	if _, countsItself := store.(*MemberQueryable); store != nil && !countsItself {
		// A member fan-out counts its streams as they arrive, like the ingesters'.
		store = limitedStore{store}
	}
	return &splitQueryable{ingesters: ingesters, store: store, storeAfter: queryStoreAfter,
		ingestersWithin: queryIngestersWithin, now: now}
}

type splitQueryable struct {
	ingesters, store            storage.Queryable
	storeAfter, ingestersWithin time.Duration
	now                         func() time.Time
}

// Querier implements storage.Queryable.
func (q *splitQueryable) Querier(mint, maxt int64) (storage.Querier, error) {
	now := q.now().UnixMilli()
	failures := &readFailures{} // this query's, shared by both sources
	var qs []storage.Querier
	closeAll := func() {
		for _, x := range qs {
			x.Close()
		}
	}
	if q.ingesters != nil && (q.ingestersWithin == 0 || maxt >= now-q.ingestersWithin.Milliseconds()) {
		imint := mint
		if q.ingestersWithin > 0 {
			imint = max(mint, now-q.ingestersWithin.Milliseconds())
		}
		iq, err := q.ingesters.Querier(imint, maxt)
		if err != nil {
			return nil, err
		}
		qs = append(qs, clampQuerier{iq, imint, maxt, failures})
	}
	if q.store != nil && (q.storeAfter == 0 || mint <= now-q.storeAfter.Milliseconds()) {
		smaxt := maxt
		if q.storeAfter > 0 {
			smaxt = min(maxt, now-q.storeAfter.Milliseconds())
		}
		sq, err := q.store.Querier(mint, smaxt)
		if err != nil {
			closeAll()
			return nil, err
		}
		qs = append(qs, clampQuerier{sq, mint, smaxt, failures})
	}
	switch len(qs) {
	case 0:
		return storage.NoopQuerier(), nil
	case 1:
		return qs[0], nil
	}
	// Primaries only: the Selects run one after another, ingesters first (see NewQueryable's "Order").
	return storage.NewMergeQuerier(qs, nil, storage.ChainedSeriesMerge), nil
}

// ChunkQuerier implements storage.ChunkQueryable (remote read's streamed chunks) by re-encoding the
// merged samples into chunks: replicas' chunks overlap, so theirs cannot be passed through.
func (q *splitQueryable) ChunkQuerier(mint, maxt int64) (storage.ChunkQuerier, error) {
	sq, err := q.Querier(mint, maxt)
	if err != nil {
		return nil, err
	}
	return chunkQuerier{sq}, nil
}

type chunkQuerier struct{ storage.Querier }

func (c chunkQuerier) Select(ctx context.Context, sortSeries bool, hints *storage.SelectHints, ms ...*labels.Matcher) storage.ChunkSeriesSet {
	return storage.NewSeriesSetToChunkSet(c.Querier.Select(ctx, sortSeries, hints, ms...))
}

// clampQuerier narrows the hints of a Select to the range its querier answers for, so that a source
// that trusts the hints (PromQL passes the whole query's range) does not answer beyond its share,
// and gives every call the query's failure set (unless the context already carries one).
type clampQuerier struct {
	storage.Querier
	mint, maxt int64
	failures   *readFailures
}

func (c clampQuerier) withFailures(ctx context.Context) context.Context {
	if c.failures == nil || readFailuresFrom(ctx) != nil {
		return ctx
	}
	return withReadFailures(ctx, c.failures)
}

func (c clampQuerier) Select(ctx context.Context, sortSeries bool, hints *storage.SelectHints, ms ...*labels.Matcher) storage.SeriesSet {
	ctx = c.withFailures(ctx)
	if hints != nil {
		h := *hints
		h.Start, h.End = max(h.Start, c.mint), min(h.End, c.maxt)
		if h.Start > h.End {
			return storage.EmptySeriesSet()
		}
		hints = &h
	}
	return c.Querier.Select(ctx, sortSeries, hints, ms...)
}

func (c clampQuerier) LabelValues(ctx context.Context, name string, hints *storage.LabelHints, ms ...*labels.Matcher) ([]string, annotations.Annotations, error) {
	return c.Querier.LabelValues(c.withFailures(ctx), name, hints, ms...)
}

func (c clampQuerier) LabelNames(ctx context.Context, hints *storage.LabelHints, ms ...*labels.Matcher) ([]string, annotations.Annotations, error) {
	return c.Querier.LabelNames(c.withFailures(ctx), hints, ms...)
}

// fetchCounter is what a store offers to have a selection counted before it is read;
// storage.BucketQueryable has it (CountSelect): count is called for each series of each block
// matching ms with chunks in [mint, maxt], with their number and (withBytes) size, and its first
// error ends the walk.
type fetchCounter interface {
	CountSelect(ctx context.Context, mint, maxt int64, withBytes bool, ms []*labels.Matcher,
		count func(lset labels.Labels, chunks, bytes int) error) error
}

// limitedStore counts what the long-term store returns against the query's limiter. A store that
// is a fetchCounter is counted before it is read — every series (unique across the store and the
// ingesters: the limiter dedups) and every block's chunks (a block per replica flush, so copies
// count as they do for replicas) — so a query over a limit fails without loading a sample. Another
// store has its series counted as they are read. Without a limiter in the context, or with every
// limit off, it is the store itself.
type limitedStore struct{ storage.Queryable }

func (s limitedStore) Querier(mint, maxt int64) (storage.Querier, error) {
	sq, err := s.Queryable.Querier(mint, maxt)
	if err != nil {
		return nil, err
	}
	counter, _ := s.Queryable.(fetchCounter)
	return &limitedStoreQuerier{Querier: sq, counter: counter, mint: mint, maxt: maxt}, nil
}

type limitedStoreQuerier struct {
	storage.Querier
	counter    fetchCounter // nil when the store cannot count before reading
	mint, maxt int64
}

func (q *limitedStoreQuerier) Select(ctx context.Context, sortSeries bool, hints *storage.SelectHints, ms ...*labels.Matcher) storage.SeriesSet {
	lim := limiterFrom(ctx)
	if !lim.enabled() {
		return q.Querier.Select(ctx, sortSeries, hints, ms...)
	}
	if q.counter == nil {
		return &countingSeriesSet{SeriesSet: q.Querier.Select(ctx, sortSeries, hints, ms...), lim: lim}
	}
	mint, maxt := q.mint, q.maxt
	labelsOnly := false
	if hints != nil {
		// The store reads what the hints say (clampQuerier has narrowed them to its share).
		mint, maxt = hints.Start, hints.End
		labelsOnly = hints.Func == "series"
	}
	countChunks := !labelsOnly && (lim.maxChunks > 0 || lim.maxChunkBytes > 0)
	if !lim.countsSeries() && !countChunks {
		return q.Querier.Select(ctx, sortSeries, hints, ms...)
	}
	err := q.counter.CountSelect(ctx, mint, maxt, countChunks && lim.maxChunkBytes > 0, ms, func(lset labels.Labels, chunks, bytes int) error {
		if err := lim.AddSeries(lset); err != nil {
			return err
		}
		if countChunks {
			return lim.AddChunks(chunks, bytes)
		}
		return nil
	})
	if err != nil {
		return storage.ErrSeriesSet(err)
	}
	return q.Querier.Select(ctx, sortSeries, hints, ms...)
}

// countingSeriesSet counts each series against lim as it is reached.
type countingSeriesSet struct {
	storage.SeriesSet
	lim *queryLimiter
	err error
}

func (s *countingSeriesSet) Next() bool {
	if s.err != nil || !s.SeriesSet.Next() {
		return false
	}
	if s.err = s.lim.AddSeries(s.At().Labels()); s.err != nil {
		return false
	}
	return true
}

func (s *countingSeriesSet) Err() error {
	if s.err != nil {
		return s.err
	}
	return s.SeriesSet.Err()
}
