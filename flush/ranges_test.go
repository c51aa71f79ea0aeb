package flush

import (
	"context"
	"math"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"github.com/prometheus/prometheus/tsdb/chunks"

	"github.com/raftingest/raftingest/memstore"
)

// TestFlush_FarApartSamplesWalkOnlyRangesWithData: one series with a sample at -9e18 and one near
// now is flushed into two blocks, quickly. The flusher used to walk every block range between the
// two, ~1.25e12 iterations of 2h under the flush lock (hours of CPU, every flush blocked).
func TestFlush_FarApartSamplesWalkOnlyRangesWithData(t *testing.T) {
	e := newEnv(t, nil, nil)
	now := int64(1_700_000_000_000)
	lset := labels.FromStrings("__name__", "far")
	if _, err := e.store.Push("t1", []memstore.SeriesSamples{{Labels: lset, Samples: []memstore.Sample{{T: -9e18, V: 1}, {T: now, V: 2}}}}); err != nil {
		t.Fatal(err)
	}
	e.now.Store(now)
	done := make(chan struct{})
	var res Result
	var err error
	go func() {
		defer close(done)
		res, err = e.f.FlushAll(context.Background())
	}()
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		t.Fatal("FlushAll of a series spanning 9e18 ms did not finish in 60s: it walks every range between its samples")
	}
	if err != nil {
		t.Fatal(err)
	}
	if res.Blocks != 2 || res.Samples != 2 {
		t.Fatalf("want 2 blocks of 1 sample, got %+v", res)
	}
	got := e.bucketSamples(t, "t1")
	if len(got) != 2 {
		t.Fatalf("bucket holds %v", got)
	}
}

// TestRangesWithData: the ranges come from the chunks and, for a chunk spanning many ranges, from
// its samples; never from the time between them. Extreme timestamps do not overflow.
func TestRangesWithData(t *testing.T) {
	const p = 2 * hour
	chunk := func(ts ...int64) chunks.Meta {
		c := chunkenc.NewXORChunk()
		app, _ := c.Appender()
		for _, t := range ts {
			app.Append(t, 1)
		}
		return chunks.Meta{Chunk: c, MinTime: ts[0], MaxTime: ts[len(ts)-1]}
	}
	cases := []struct {
		name        string
		chks        []chunks.Meta
		from, bound int64
		want        []int64
	}{
		{"one chunk in one range", []chunks.Meta{chunk(10, 20)}, math.MinInt64, 21, []int64{0}},
		{"chunk over 3 ranges", []chunks.Meta{chunk(hour, 3*hour, 5*hour)}, math.MinInt64, 6 * hour, []int64{0, p, 2 * p}},
		{"sparse chunk spanning years", []chunks.Meta{chunk(hour, 1000*p+hour)}, math.MinInt64, math.MaxInt64, []int64{0, 1000 * p}},
		{"int64 extremes", []chunks.Meta{chunk(math.MinInt64, -9e18), chunk(0, math.MaxInt64-1)}, math.MinInt64, math.MaxInt64,
			[]int64{math.MinInt64, alignDown(-9e18, p), 0, alignDown(math.MaxInt64-1, p)}},
		{"clipped by from and bound", []chunks.Meta{chunk(hour, 3*hour, 5*hour)}, 3 * hour, 4 * hour, []int64{p}},
	}
	for _, tc := range cases {
		got, err := rangesWithData(tc.chks, tc.from, tc.bound, p)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if len(got) != len(tc.want) {
			t.Fatalf("%s: %v, want %v", tc.name, got, tc.want)
		}
		for i := range got {
			if got[i] != tc.want[i] {
				t.Fatalf("%s: %v, want %v", tc.name, got, tc.want)
			}
		}
	}
	if got := alignDown(math.MinInt64+5, p); got != math.MinInt64 {
		t.Fatalf("alignDown at the bottom of int64: %d", got)
	}
	if got := rangeEnd(alignDown(math.MaxInt64, p), p); got != math.MaxInt64 {
		t.Fatalf("rangeEnd at the top of int64: %d", got)
	}
}

// TestCutoffAt: the oldest range in memory starts between half a period and a period and a half
// ago, aligned; Flusher.Cutoff is CutoffAt.
func TestCutoffAt(t *testing.T) {
	for _, tc := range []struct{ now, want int64 }{
		{5*hour + hour/2, 4 * hour}, // 4h30 -> 4h
		{5 * hour, 4 * hour},        // 4h -> 4h
		{5*hour - 1, 2 * hour},      // just under 4h -> 2h
	} {
		if got := CutoffAt(2*time.Hour, tc.now); got != tc.want {
			t.Errorf("CutoffAt(2h, %d) = %d, want %d", tc.now, got, tc.want)
		}
	}
	e := newEnv(t, nil, nil)
	if e.f.Cutoff(time.UnixMilli(5*hour)) != CutoffAt(DefaultFlushPeriod, 5*hour) {
		t.Fatal("Cutoff and CutoffAt differ")
	}
}
