package storage

import (
	"context"
	"errors"
	"fmt"
	"math"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql"
	promstorage "github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb"
	"github.com/thanos-io/objstore"

	tenantctx "github.com/raftingest/raftingest/tenant"
)

// CountSelect reports, block by block, what a Select would read — each series with its chunks in
// the range and their bytes — as Prometheus' own block chunk querier finds them; a series in several
// blocks is reported once per block; a counter's error stops the walk and is returned.
func TestBucketQueryable_CountSelectMatchesWhatBlocksHold(t *testing.T) {
	const h = int64(3600_000)
	bkt := objstore.NewInMemBucket()
	ss, _ := testSeries(t, 5, 0, 2*h, 30_000, 0, 2*h)
	for range 3 { // three replicas flush the same series
		uploadSeries(t, bkt, "t1", ss, 0, 2*h)
	}
	more, _ := testSeries(t, 5, 0, 3*h, 30_000, 0, 3*h)
	uploadSeries(t, bkt, "t1", more, 0, 3*h)
	uploadSeries(t, bkt, "t2", more, 0, 3*h)
	q := NewBucketQueryable(bkt, "", t.TempDir(), nil)
	t.Cleanup(func() { q.Close() })
	ctx := tenantctx.With(context.Background(), "t1")
	all := []*labels.Matcher{labels.MustNewMatcher(labels.MatchRegexp, "__name__", ".+")}

	// What the blocks hold, by Prometheus' reader: per series, chunks and bytes summed over blocks.
	expect := func(mint, maxt int64, ms []*labels.Matcher) (map[string]int, map[string]int, int) {
		chunks, bytes, perBlock := map[string]int{}, map[string]int{}, 0
		metas, err := q.Blocks(ctx, "t1")
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range metas {
			if m.MaxTime <= mint || m.MinTime > maxt {
				continue
			}
			b := q.blocks["t1"][m.ULID]
			cq, err := tsdb.NewBlockChunkQuerier(b, mint, maxt)
			if err != nil {
				t.Fatal(err)
			}
			set := cq.Select(ctx, false, &promstorage.SelectHints{Start: mint, End: maxt, DisableTrimming: true}, ms...)
			for set.Next() {
				s := set.At()
				it := s.Iterator(nil)
				n := 0
				for it.Next() {
					n++
					chunks[s.Labels().String()]++
					bytes[s.Labels().String()] += len(it.At().Chunk.Bytes())
				}
				if n > 0 {
					perBlock++
				}
			}
			cq.Close()
		}
		return chunks, bytes, perBlock
	}
	for _, c := range []struct {
		mint, maxt int64
		ms         []*labels.Matcher
	}{
		{math.MinInt64, math.MaxInt64, all},
		{h/2 + 1, 2*h + 7, all},
		{2*h + 1, 3 * h, all}, // only the fourth block
		{0, 3 * h, []*labels.Matcher{labels.MustNewMatcher(labels.MatchEqual, "series", "s003")}},
	} {
		wantChunks, wantBytes, wantCalls := expect(c.mint, c.maxt, c.ms)
		gotChunks, gotBytes, calls := map[string]int{}, map[string]int{}, 0
		err := q.CountSelect(ctx, c.mint, c.maxt, true, c.ms, func(lset labels.Labels, n, size int) error {
			calls++
			gotChunks[lset.String()] += n
			gotBytes[lset.String()] += size
			return nil
		})
		if err != nil || calls != wantCalls || fmt.Sprint(gotChunks) != fmt.Sprint(wantChunks) || fmt.Sprint(gotBytes) != fmt.Sprint(wantBytes) {
			t.Fatalf("range [%d, %d] %v: %d calls (want %d), chunks %v (want %v), bytes %v (want %v), %v",
				c.mint, c.maxt, c.ms, calls, wantCalls, gotChunks, wantChunks, gotBytes, wantBytes, err)
		}
		if calls == 0 {
			t.Fatalf("range [%d, %d]: nothing counted", c.mint, c.maxt)
		}
	}
	// Without bytes asked for, none are read.
	_ = q.CountSelect(ctx, 0, 3*h, false, all, func(_ labels.Labels, _, size int) error {
		if size != 0 {
			t.Fatalf("bytes %d without withBytes", size)
		}
		return nil
	})
	// The counter's error stops the walk.
	stop := errors.New("limit")
	calls := 0
	if err := q.CountSelect(ctx, 0, 3*h, false, all, func(labels.Labels, int, int) error { calls++; return stop }); err != stop || calls != 1 {
		t.Fatalf("counter error: %v after %d calls, want it after 1", err, calls)
	}
	if err := q.CountSelect(context.Background(), 0, h, false, all, func(labels.Labels, int, int) error { return nil }); err != ErrNoTenant {
		t.Fatalf("without a tenant: %v", err)
	}
}

// countingQueryable runs CountSelect before every Select, as the querier does when a fetch limit
// is on.
type countingQueryable struct{ q *BucketQueryable }

func (c countingQueryable) Querier(mint, maxt int64) (promstorage.Querier, error) {
	qr, err := c.q.Querier(mint, maxt)
	return countingQuerier{qr, c.q, mint, maxt}, err
}

type countingQuerier struct {
	promstorage.Querier
	q          *BucketQueryable
	mint, maxt int64
}

func (c countingQuerier) Select(ctx context.Context, sortSeries bool, h *promstorage.SelectHints, ms ...*labels.Matcher) promstorage.SeriesSet {
	mint, maxt := c.mint, c.maxt
	if h != nil {
		mint, maxt = h.Start, h.End
	}
	seen := map[uint64]struct{}{}
	chunks := 0
	if err := c.q.CountSelect(ctx, mint, maxt, false, ms, func(lset labels.Labels, n, _ int) error {
		seen[lset.Hash()] = struct{}{}
		chunks += n
		return nil
	}); err != nil {
		return promstorage.ErrSeriesSet(err)
	}
	return c.Querier.Select(ctx, sortSeries, h, ms...)
}

// BenchmarkRangeQueryFromBlocksCounted is BenchmarkRangeQueryFromBlocks' query with and without the
// querier's count before reading (CountSelect, with series dedup as the series limit does): the
// price of -querier.max-fetched-* on the bucket.
//
//	go test -run '^$' -bench RangeQueryFromBlocksCounted -benchtime 5x -count 6 ./storage/ | tee new.txt; benchstat new.txt
func BenchmarkRangeQueryFromBlocksCounted(b *testing.B) {
	q := benchBlocksQueryable(b)
	defer q.Close()
	engine := promql.NewEngine(promql.EngineOpts{MaxSamples: 100_000_000, Timeout: time.Minute, LookbackDelta: 5 * time.Minute})
	ctx := tenantctx.With(context.Background(), "bench")
	const expr = `sum by (group) (rate(bench_requests_total[5m]))`
	for _, path := range []struct {
		name string
		q    promstorage.Queryable
	}{{"read", q}, {"count+read", countingQueryable{q}}} {
		b.Run(path.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				rq, err := engine.NewRangeQuery(ctx, path.q, nil, expr, time.UnixMilli(5*60_000), time.UnixMilli(benchBlocksRange-benchBlocksStep), 15*time.Second)
				if err != nil {
					b.Fatal(err)
				}
				if res := rq.Exec(ctx); res.Err != nil {
					b.Fatal(res.Err)
				}
				rq.Close()
			}
			b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/query")
		})
	}
}
