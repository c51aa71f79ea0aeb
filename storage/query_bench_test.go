package storage

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql"
	"github.com/thanos-io/objstore/providers/filesystem"

	tenantctx "github.com/raftingest/raftingest/tenant"
)

// BenchmarkRangeQueryFromBlocks is the read issue's "query from blocks" figure: a PromQL range query
// over 10k series (1h of 15 s samples, 15 s step) answered from blocks in a filesystem bucket, with
// every series in three replicas' blocks (RF 3 flushes three copies) that the querier deduplicates.
//
//	go test -run '^$' -bench RangeQueryFromBlocks -benchtime 5x ./storage/ | tee new.txt; benchstat old.txt new.txt
func BenchmarkRangeQueryFromBlocks(b *testing.B) {
	q := benchBlocksQueryable(b)
	defer q.Close()
	engine := promql.NewEngine(promql.EngineOpts{MaxSamples: 100_000_000, Timeout: time.Minute, LookbackDelta: 5 * time.Minute})
	ctx := tenantctx.With(context.Background(), "bench")
	for _, expr := range []string{`sum by (group) (rate(bench_requests_total[5m]))`, `bench_requests_total`} {
		b.Run(expr, func(b *testing.B) {
			b.ReportAllocs()
			points := 0
			for b.Loop() {
				rq, err := engine.NewRangeQuery(ctx, q, nil, expr, time.UnixMilli(5*60_000), time.UnixMilli(benchBlocksRange-benchBlocksStep), 15*time.Second)
				if err != nil {
					b.Fatal(err)
				}
				res := rq.Exec(ctx)
				if res.Err != nil {
					b.Fatal(res.Err)
				}
				m, err := res.Matrix()
				if err != nil {
					b.Fatal(err)
				}
				points = 0
				for _, s := range m {
					points += len(s.Floats)
				}
				rq.Close()
			}
			if points == 0 {
				b.Fatal("the query returned no points")
			}
			b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/query")
			b.ReportMetric(float64(points), "points")
		})
	}
}

// The span and step of benchBlocksQueryable's series (ms).
const (
	benchBlocksStep  = int64(15_000)
	benchBlocksRange = int64(3600_000)
)

// benchBlocksQueryable writes 10k series (1h of 15 s samples, tenant "bench") into three replicas'
// blocks in a filesystem bucket and returns a BucketQueryable over it; the caller closes it.
func benchBlocksQueryable(b *testing.B) *BucketQueryable {
	b.Helper()
	return benchBlocksQueryableCopies(b, 3)
}

// benchBlocksQueryableCopies is benchBlocksQueryable with copies replicas' blocks.
func benchBlocksQueryableCopies(b *testing.B, copies int) *BucketQueryable {
	b.Helper()
	const nSeries = 10_000
	step, h := benchBlocksStep, benchBlocksRange
	root := b.TempDir()
	bkt, err := filesystem.NewBucket(root)
	if err != nil {
		b.Fatal(err)
	}
	var ss []Series
	for i := range nSeries {
		lset := labels.FromStrings("__name__", "bench_requests_total", "instance", fmt.Sprintf("host-%05d", i), "group", fmt.Sprintf("g%d", i%20))
		var smps []sample
		for ts := int64(0); ts < h; ts += step {
			smps = append(smps, sample{ts, float64(ts/1000 + int64(i))})
		}
		ss = append(ss, Series{Labels: lset, Chunks: xorChunks(b, smps, 120)})
	}
	for r := range copies {
		dir := b.TempDir()
		meta, err := WriteBlock(context.Background(), dir, ss, BlockOptions{MinTime: 0, MaxTime: h,
			Labels: map[string]string{"__ingester_id__": fmt.Sprint("r", r)}})
		if err != nil {
			b.Fatal(err)
		}
		if err := UploadBlock(context.Background(), bkt, "bench", filepath.Join(dir, meta.ULID.String()), meta); err != nil {
			b.Fatal(err)
		}
	}
	return NewBucketQueryable(bkt, root, b.TempDir(), nil)
}
