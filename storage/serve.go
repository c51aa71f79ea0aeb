package storage

// Serving a member's own blocks to the other members' queriers (the Ingester.QueryBlocks RPC):
// when the bucket is node-local, a querier cannot read another member's blocks itself, so each
// member streams the series of its blocks the way it streams those of its memory.

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"

	"github.com/prometheus/prometheus/model/labels"
	promstorage "github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb"
	"github.com/prometheus/prometheus/tsdb/chunks"

	"github.com/raftingest/raftingest/tenant"
)

// selectChunksCheckEvery is how many series SelectChunks reads between two checks of its context.
const selectChunksCheckEvery = 128

// SelectChunks calls fn, in label order and once per label set, for every series of the tenant
// named by ctx (tenant.With) that matches every matcher of ms and has chunks in [mint, maxt] (int64
// ms, inclusive) in a block of the bucket.
//
// chks are the series' chunks in time order and never overlapping: a chunk that nothing else
// overlaps is passed as its block stores it (its bytes shared with the block, its samples possibly
// outside the range: readers trim), and so is one of several exact copies (a range flushed twice, a
// block handed over to a member holding its own copy); chunks of one series from several blocks
// that still overlap are merged into re-encoded chunks, each timestamp once (mergeChunkCopies).
// When labelsOnly, chks is nil and no chunk is read at all, only the indexes.
//
// Memory: series are read from the blocks one at a time as fn asks for the next (only the postings
// of the matchers are held whole, as Prometheus does), so fn decides what is held. lset and chks,
// and the chunks' bytes, are valid only during the call to fn. A context that ends stops the walk
// within selectChunksCheckEvery series with its error; fn's first error stops it and is returned.
func (q *BucketQueryable) SelectChunks(ctx context.Context, mint, maxt int64, labelsOnly bool, ms []*labels.Matcher,
	fn func(lset labels.Labels, chks []chunks.Meta) error) error {
	id, err := tenant.FromContext(ctx)
	if err != nil {
		return err
	}
	if mint > maxt {
		return fmt.Errorf("storage: select of tenant %q: start %d is after end %d", id, mint, maxt)
	}
	var qs []promstorage.ChunkQuerier
	for attempt := 1; ; attempt++ {
		qs, err = q.chunkQueriers(ctx, id, mint, maxt)
		// A block deleted from the bucket (by the compactor, once what replaces it is durable) is
		// closed by the sync that no longer lists it; one that was listed just before fails to
		// open. The next sync lists the bucket as it is now.
		if err == nil || !errors.Is(err, tsdb.ErrClosing) || attempt == selectChunksOpenAttempts {
			break
		}
	}
	if err != nil {
		return err
	}
	if len(qs) == 0 {
		return nil
	}
	m := promstorage.NewMergeChunkQuerier(qs, nil, mergeChunkCopies)
	defer m.Close()
	hints := &promstorage.SelectHints{Start: mint, End: maxt, DisableTrimming: true}
	if labelsOnly {
		hints.Func = "series"
	}
	set := m.Select(ctx, true, hints, ms...)
	var (
		it   chunks.Iterator
		chks []chunks.Meta
	)
	for i := 0; set.Next(); i++ {
		if i%selectChunksCheckEvery == 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		s := set.At()
		if labelsOnly {
			if err := fn(s.Labels(), nil); err != nil {
				return err
			}
			continue
		}
		chks = chks[:0]
		it = s.Iterator(it)
		for it.Next() {
			c := it.At()
			if c.MaxTime < mint || c.MinTime > maxt {
				continue // a merged chunk can reach beyond the range; one wholly outside is not asked for
			}
			chks = append(chks, c)
		}
		if err := it.Err(); err != nil {
			return fmt.Errorf("storage: chunks of series %s of tenant %q: %w", s.Labels(), id, err)
		}
		if len(chks) == 0 {
			continue
		}
		if err := fn(s.Labels(), chks); err != nil {
			return err
		}
	}
	if err := set.Err(); err != nil {
		return fmt.Errorf("storage: select of tenant %q: %w", id, err)
	}
	return nil
}

// selectChunksOpenAttempts bounds the syncs SelectChunks makes when a block closes under it.
const selectChunksOpenAttempts = 3

// syncedHook, when set, runs in chunkQueriers of its queryable only, between the sync and the
// opening of the blocks it returned: where a concurrent sync may close one of them. Tests only.
// Atomic, and tied to one queryable, so that setting it races with nothing and touches no other
// test's queries.
var syncedHook atomic.Pointer[queryableHook]

// queryableHook is a test hook for one queryable.
type queryableHook struct {
	q  *BucketQueryable
	fn func()
}

// chunkQueriers opens a chunk querier on every block of tenant id overlapping [mint, maxt].
func (q *BucketQueryable) chunkQueriers(ctx context.Context, id string, mint, maxt int64) ([]promstorage.ChunkQuerier, error) {
	bs, err := q.sync(ctx, id)
	if err != nil {
		return nil, err
	}
	if h := syncedHook.Load(); h != nil && h.q == q {
		h.fn()
	}
	var qs []promstorage.ChunkQuerier
	for _, b := range bs {
		if !b.OverlapsClosedInterval(mint, maxt) {
			continue
		}
		cq, err := tsdb.NewBlockChunkQuerier(b, mint, maxt)
		if err != nil {
			for _, q := range qs {
				q.Close()
			}
			return nil, fmt.Errorf("storage: chunk querier on block %s of tenant %q: %w", b.Meta().ULID, id, err)
		}
		qs = append(qs, cq)
	}
	return qs, nil
}

// compactingMerger merges the overlapping chunks of one series' copies into re-encoded chunks
// without overlaps, each timestamp once, and passes a chunk that nothing overlaps through untouched.
var compactingMerger = promstorage.NewCompactingChunkSeriesMerger(promstorage.ChainedSeriesMerge)

// mergeChunkCopies is the vertical merge of one series found in several blocks: Prometheus'
// compacting merger. Exact copies (the same range flushed twice, a replica's block handed over to a
// member holding its own) need no pass of our own: its compactChunkIterator skips a chunk with the
// same range and bytes as the one before and passes it through as stored, so the common case is
// never re-encoded. A pass dropping the copies first was measured and removed:
// BenchmarkMergeChunkCopies has it no faster on identical copies and about 15% slower on copies cut
// at other samples. The series' chunks are read when its iterator is asked for, never for a
// labels-only select.
func mergeChunkCopies(series ...promstorage.ChunkSeries) promstorage.ChunkSeries {
	if len(series) == 1 {
		return series[0]
	}
	return compactingMerger(series...)
}
