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
func NewQueryable(ingesters, store storage.Queryable, queryStoreAfter, queryIngestersWithin time.Duration, now func() time.Time) storage.SampleAndChunkQueryable {
	if now == nil {
		now = time.Now
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
		qs = append(qs, clampQuerier{iq, imint, maxt})
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
		qs = append(qs, clampQuerier{sq, mint, smaxt})
	}
	switch len(qs) {
	case 0:
		return storage.NoopQuerier(), nil
	case 1:
		return qs[0], nil
	}
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
// that trusts the hints (PromQL passes the whole query's range) does not answer beyond its share.
type clampQuerier struct {
	storage.Querier
	mint, maxt int64
}

func (c clampQuerier) Select(ctx context.Context, sortSeries bool, hints *storage.SelectHints, ms ...*labels.Matcher) storage.SeriesSet {
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
	return c.Querier.LabelValues(ctx, name, hints, ms...)
}
