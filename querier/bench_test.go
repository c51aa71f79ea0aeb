package querier

import (
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql"

	"github.com/raftingest/raftingest/ringstate"
	"github.com/raftingest/raftingest/tenant"
)

// BenchmarkRangeQuery_10kSeries evaluates a range query over 10,000 series (1 h of 15 s samples,
// step 15 s) held by three fake ingesters on real gRPC (every series on all three, as with RF=3).
// It reports series/s and samples/s read through the fan-out and merge.
//
//	go test -run '^$' -bench RangeQuery -count 6 ./querier | tee new.txt; benchstat old.txt new.txt
func BenchmarkRangeQuery_10kSeries(b *testing.B) {
	const nSeries = 10_000
	const hour = int64(3600_000)
	ings := []*fakeIngester{startFakeIngester(b), startFakeIngester(b), startFakeIngester(b)}
	samples := samplesRange(0, hour, 15_000)
	for i := range nSeries {
		ls := labels.FromStrings("__name__", "bench_metric", "series", fmt.Sprintf("s%05d", i), "group", fmt.Sprintf("g%d", i%10))
		chunks := xorChunks(b, samples, 120)
		for _, f := range ings {
			f.add("t", ls, chunks...)
		}
	}
	var cfg Config
	cfg.RegisterFlags(flagSet())
	q, err := New(cfg, Deps{
		Ring: newRing(b, member{addr: ings[0].addr, state: ringstate.ACTIVE}, member{addr: ings[1].addr, state: ringstate.ACTIVE},
			member{addr: ings[2].addr, state: ringstate.ACTIVE}),
		ReplicationFactor: 3, HeartbeatTimeout: 10 * time.Second, DefaultTenant: "t",
		Registerer: prometheus.NewRegistry(), Now: func() time.Time { return time.UnixMilli(hour) },
	})
	if err != nil {
		b.Fatal(err)
	}
	defer q.Close()
	ctx := tenant.With(bg, "t")
	for _, expr := range []string{`sum by (group) (rate(bench_metric[5m]))`, `bench_metric`} {
		b.Run(expr, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				qry, err := q.Engine().NewRangeQuery(ctx, q.Queryable(), nil, expr,
					time.UnixMilli(0), time.UnixMilli(hour), 15*time.Second)
				if err != nil {
					b.Fatal(err)
				}
				res := qry.Exec(ctx)
				if res.Err != nil {
					b.Fatal(res.Err)
				}
				if m, ok := res.Value.(promql.Matrix); !ok || len(m) == 0 {
					b.Fatalf("empty result %v", res.Value)
				}
				qry.Close()
			}
			perOp := b.Elapsed().Seconds() / float64(b.N)
			b.ReportMetric(nSeries/perOp, "series/s")
			b.ReportMetric(nSeries*float64(len(samples))/perOp, "samples/s")
		})
	}
}
