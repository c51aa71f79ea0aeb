package storage

import (
	"context"
	"testing"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/tsdb/chunks"

	tenantctx "github.com/raftingest/raftingest/tenant"
)

// BenchmarkSelectChunks is what a member spends serving Ingester.QueryBlocks: every chunk of 10k
// series (1h of 15 s samples) from its bucket, walked as QueryBlocks walks them. "copies=1" is one
// block: chunks pass as stored, the common case of a node-local bucket, where a member holds its own
// flush of each range. "copies=3" is three blocks holding the same series (a shared bucket's
// replicas, or a range flushed three times): the chunks overlap and are merged, re-encoded.
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
