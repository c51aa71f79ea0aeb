package storage

import (
	"bytes"
	"cmp"
	"context"
	"slices"
	"testing"

	"github.com/prometheus/prometheus/model/labels"
	promstorage "github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb/chunks"

	tenantctx "github.com/raftingest/raftingest/tenant"
)

// BenchmarkSelectChunks is what a member spends serving Ingester.QueryBlocks: every chunk of 10k
// series (1h of 15 s samples) from its bucket, walked as QueryBlocks walks them. "copies=1" is one
// block: chunks pass as stored, the common case of a node-local bucket, where a member holds its own
// flush of each range. "copies=3" is three blocks holding the same series (a shared bucket's
// replicas, or a range flushed three times): the copies overlap, are found identical and passed
// once.
//
//	go test -run '^$' -bench SelectChunks -benchtime 5x ./storage/
func BenchmarkSelectChunks(b *testing.B) {
	for _, copies := range []int{1, 3} {
		b.Run(map[int]string{1: "copies=1", 3: "copies=3"}[copies], func(b *testing.B) {
			q := benchBlocksQueryableCopies(b, copies)
			defer q.Close()
			ctx := tenantctx.With(context.Background(), "bench")
			ms := []*labels.Matcher{labels.MustNewMatcher(labels.MatchEqual, "__name__", "bench_requests_total")}
			b.ReportAllocs()
			var series, bytes int
			for b.Loop() {
				series, bytes = 0, 0
				err := q.SelectChunks(ctx, 0, benchBlocksRange, false, ms, func(_ labels.Labels, chks []chunks.Meta) error {
					series++
					for _, c := range chks {
						bytes += len(c.Chunk.Bytes())
					}
					return nil
				})
				if err != nil {
					b.Fatal(err)
				}
			}
			if series != 10_000 {
				b.Fatalf("%d series, want 10000", series)
			}
			sec := b.Elapsed().Seconds() / float64(b.N)
			b.ReportMetric(float64(series)/sec, "series/s")
			b.ReportMetric(float64(bytes)/sec/1e6, "MB/s")
		})
	}
}

// BenchmarkMergeChunkCopies decided whether a pass of our own over exact copies (dedupCopiesFirst,
// what mergeChunkCopies was) earns its place before Prometheus' compacting merger, whose
// compactChunkIterator skips byte-identical chunks itself. It did not (see mergeChunkCopies).
// Both merge the same series found in three blocks — "identical": the replicas cut their chunks at
// the same samples (the common case); "cut-elsewhere": one replica cut them at other samples, so
// chunks overlap without being copies — and every chunk of the result is read, as SelectChunks
// reads it.
//
//	go test -run '^$' -bench MergeChunkCopies ./storage/
func BenchmarkMergeChunkCopies(b *testing.B) {
	var smps []sample
	for ts := int64(0); ts < benchBlocksRange; ts += benchBlocksStep {
		smps = append(smps, sample{ts, float64(ts / 1000)})
	}
	lset := labels.FromStrings("__name__", "m")
	series := func(perChunk ...int) []promstorage.ChunkSeries {
		var out []promstorage.ChunkSeries
		for _, per := range perChunk {
			chks := xorChunks(b, smps, per)
			out = append(out, &promstorage.ChunkSeriesEntry{Lset: lset, ChunkIteratorFn: func(chunks.Iterator) chunks.Iterator {
				return promstorage.NewListChunkSeriesIterator(chks...)
			}})
		}
		return out
	}
	for _, c := range []struct {
		name string
		in   []promstorage.ChunkSeries
	}{
		{"identical", series(120, 120, 120)},
		{"cut-elsewhere", series(120, 120, 50)},
	} {
		for _, m := range []struct {
			name  string
			merge promstorage.VerticalChunkSeriesMergeFunc
		}{
			{"dedupCopiesFirst", dedupCopiesFirst},
			{"compactingMerger", compactingMerger},
		} {
			b.Run(c.name+"/"+m.name, func(b *testing.B) {
				b.ReportAllocs()
				var it chunks.Iterator
				for b.Loop() {
					it = m.merge(c.in...).Iterator(it)
					n := 0
					for it.Next() {
						n += it.At().Chunk.NumSamples()
					}
					if it.Err() != nil || n != len(smps) {
						b.Fatalf("%d samples (%v), want %d", n, it.Err(), len(smps))
					}
				}
			})
		}
	}
}

// dedupCopiesFirst is the merge BenchmarkMergeChunkCopies compares with Prometheus' compacting
// merger: exact copies dropped by a pass of its own, then the compacting merger on what still
// overlaps.
func dedupCopiesFirst(series ...promstorage.ChunkSeries) promstorage.ChunkSeries {
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
