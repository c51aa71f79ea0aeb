package storage

// Serving a member's own blocks to the other members' queriers (the Ingester.QueryBlocks RPC):
// when the bucket is node-local, a querier cannot read another member's blocks itself, so each
// member streams the series of its blocks the way it streams those of its memory.

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"

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

// syncedHook, when not nil, runs in chunkQueriers between the sync and the opening of the blocks
// it returned: where a concurrent sync may close one of them. Tests only, never in parallel.
var syncedHook func()

// chunkQueriers opens a chunk querier on every block of tenant id overlapping [mint, maxt].
func (q *BucketQueryable) chunkQueriers(ctx context.Context, id string, mint, maxt int64) ([]promstorage.ChunkQuerier, error) {
	bs, err := q.sync(ctx, id)
	if err != nil {
		return nil, err
	}
	if syncedHook != nil {
		syncedHook()
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

// mergeChunkCopies is the vertical merge of one series found in several blocks: chunks that are
// exact copies of one another (the same range flushed twice, a replica's block handed over to a
// member holding its own) are kept once, as stored; what still overlaps is merged by
// compactingMerger. Dropping the copies first keeps the common case free of re-encoding: merging
// three identical blocks sample by sample costs about nine times as much as passing one through
// (BenchmarkSelectChunks). The series' chunks are read when its iterator is asked for, never for
// a labels-only select.
func mergeChunkCopies(series ...promstorage.ChunkSeries) promstorage.ChunkSeries {
	if len(series) == 1 {
		return series[0]
	}
	return &promstorage.ChunkSeriesEntry{
		Lset: series[0].Labels(),
		ChunkIteratorFn: func(chunks.Iterator) chunks.Iterator {
			var all []chunks.Meta
			var it chunks.Iterator
			for _, s := range series {
				it = s.Iterator(it)
				for it.Next() {
					all = append(all, it.At())
				}
				if err := it.Err(); err != nil {
					return errChunksIterator{err}
				}
			}
			slices.SortStableFunc(all, func(a, b chunks.Meta) int {
				if c := cmp.Compare(a.MinTime, b.MinTime); c != 0 {
					return c
				}
				return cmp.Compare(a.MaxTime, b.MaxTime)
			})
			kept := all[:0]
			overlap := false
			var maxT int64 // the latest MaxTime of kept
			for _, c := range all {
				if n := len(kept); n > 0 {
					if isCopy(kept, c) {
						continue
					}
					overlap = overlap || c.MinTime <= maxT
				}
				kept = append(kept, c)
				if len(kept) == 1 || c.MaxTime > maxT {
					maxT = c.MaxTime
				}
			}
			if !overlap {
				return promstorage.NewListChunkSeriesIterator(kept...)
			}
			// Each remaining chunk as a series of its own: the compacting merger merges those that
			// overlap and passes the others through.
			parts := make([]promstorage.ChunkSeries, len(kept))
			for i, c := range kept {
				parts[i] = &promstorage.ChunkSeriesEntry{Lset: series[0].Labels(), ChunkIteratorFn: func(chunks.Iterator) chunks.Iterator {
					return promstorage.NewListChunkSeriesIterator(c)
				}}
			}
			return compactingMerger(parts...).Iterator(nil)
		},
	}
}

// isCopy reports whether c is an exact copy of a chunk of kept (sorted by MinTime, then MaxTime):
// the same range, encoding and bytes. Only the chunks of kept with c's range are compared.
func isCopy(kept []chunks.Meta, c chunks.Meta) bool {
	for i := len(kept) - 1; i >= 0 && kept[i].MinTime == c.MinTime; i-- {
		k := kept[i]
		if k.MaxTime == c.MaxTime && k.Chunk.Encoding() == c.Chunk.Encoding() && bytes.Equal(k.Chunk.Bytes(), c.Chunk.Bytes()) {
			return true
		}
	}
	return false
}

// errChunksIterator is an empty chunks.Iterator failing with err.
type errChunksIterator struct{ err error }

func (e errChunksIterator) At() chunks.Meta { return chunks.Meta{} }
func (e errChunksIterator) Next() bool      { return false }
func (e errChunksIterator) Err() error      { return e.err }
