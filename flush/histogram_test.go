package flush

import (
	"context"
	"fmt"
	"math"
	"path/filepath"
	"testing"

	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/tsdb/chunkenc"

	"github.com/raftingest/raftingest/memstore"
	"github.com/raftingest/raftingest/storage"
	tenantctx "github.com/raftingest/raftingest/tenant"
)

// histKeys renders every sample of tenant read through q (floats and histograms) as a key.
func histKeys(t *testing.T, q *storage.BucketQueryable, tenant string) map[string]bool {
	t.Helper()
	qr, err := q.Querier(math.MinInt64, math.MaxInt64)
	if err != nil {
		t.Fatal(err)
	}
	defer qr.Close()
	out := map[string]bool{}
	ss := qr.Select(tenantctx.With(context.Background(), tenant), false, nil, labels.MustNewMatcher(labels.MatchRegexp, "__name__", ".+"))
	for ss.Next() {
		it := ss.At().Iterator(nil)
		for vt := it.Next(); vt != chunkenc.ValNone; vt = it.Next() {
			ts, fh := it.AtFloatHistogram(nil)
			out[fmt.Sprintf("%s %d %s", ss.At().Labels(), ts, fh.Copy().Compact(0))] = true
		}
	}
	if ss.Err() != nil {
		t.Fatal(ss.Err())
	}
	return out
}

// Native histograms (integer and float, three hours across two-hour block ranges, with a counter
// reset) are flushed into blocks that hold each sample once, read back equal through the bucket
// querier, and that Prometheus's block reader and Debian's promtool (tsdb analyze) accept.
func TestFlush_NativeHistograms(t *testing.T) {
	e := newEnv(t, nil, nil)
	hour := int64(3_600_000)
	want := map[string]map[string]bool{"ints": {}, "floats": {}}
	for tenant, float := range map[string]bool{"ints": false, "floats": true} {
		lset := labels.FromStrings("__name__", "h", "job", "j")
		var hs []memstore.HistSample
		for ts, k := int64(0), 0; ts < 3*hour; ts, k = ts+30_000, k+1 {
			n := int64(k % 200) // a counter reset every 200 samples
			h := &histogram.Histogram{Schema: 1, PositiveSpans: []histogram.Span{{Offset: 0, Length: 3}},
				PositiveBuckets: []int64{n, 1, -1}, Count: uint64(3*n + 1), Sum: float64(n) / 3}
			s := memstore.HistSample{T: ts, H: h}
			if float {
				s = memstore.HistSample{T: ts, FH: h.ToFloat(nil)}
			}
			hs = append(hs, s)
			want[tenant][fmt.Sprintf("%s %d %s", lset, ts, h.ToFloat(nil).Compact(0))] = true
		}
		res, err := e.store.PushHistograms(tenant, []memstore.SeriesHistograms{{Labels: lset, Histograms: hs}})
		if err != nil || res.Accepted != len(hs) {
			t.Fatalf("push: %v %+v", err, res)
		}
	}
	r, err := e.f.FlushAll(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if r.Blocks != 4 {
		t.Fatalf("flush: %+v, want 2 blocks a tenant", r)
	}
	q := storage.NewBucketQueryable(e.bkt, e.root, t.TempDir(), quiet())
	defer q.Close()
	for tenant, w := range want {
		got := histKeys(t, q, tenant)
		if m := missing(w, got); len(m) > 0 || len(got) != len(w) {
			t.Fatalf("%s: %d samples in the bucket, want %d; missing e.g. %v", tenant, len(got), len(w), m)
		}
		if left := memSamples(t, e.store, tenant); len(left) != 0 {
			t.Fatalf("%s: %d samples left in memory", tenant, len(left))
		}
	}
	checkBlocks(t, filepath.Join(e.root, "ints"), 2)
	checkBlocks(t, filepath.Join(e.root, "floats"), 2)
}
