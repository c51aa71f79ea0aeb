package transfer

import (
	"context"
	"fmt"
	"math"
	"reflect"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/tsdb/chunkenc"

	"github.com/raftingest/raftingest/memstore"
	"github.com/raftingest/raftingest/ringstate"
)

// storeHistograms renders every histogram sample of tenant in st, by series.
func storeHistograms(t *testing.T, st *memstore.Store, tenant string) map[string][]string {
	t.Helper()
	sel, err := st.Select(tenant, math.MinInt64, math.MaxInt64)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]string{}
	for _, s := range sel {
		var got []string
		for _, c := range s.Chunks {
			ch, err := chunkenc.FromData(c.Encoding, c.Data)
			if err != nil {
				t.Fatal(err)
			}
			it := ch.Iterator(nil)
			for vt := it.Next(); vt != chunkenc.ValNone; vt = it.Next() {
				switch vt {
				case chunkenc.ValHistogram:
					ts, h := it.AtHistogram(nil)
					got = append(got, fmt.Sprintf("%d %s %v", ts, h, h.PositiveSpans))
				case chunkenc.ValFloatHistogram:
					ts, h := it.AtFloatHistogram(nil)
					got = append(got, fmt.Sprintf("%d %s %v", ts, h, h.PositiveSpans))
				default:
					t.Fatalf("series %s: a %v", s.Labels, vt)
				}
			}
		}
		out[s.Labels.String()] = got
	}
	return out
}

// A hand-over over real gRPC of native histogram series whose pushes made chunkenc's appenders
// widen chunk layouts oddly (empty buckets that come and go, in float, integer and custom-bucket
// histograms): the leaver's own check before sending and the joiner's check accept every chunk the
// store built, so the leave hands everything over rather than failing to a flush; the joiner holds
// the leaver's histograms and takes a retried push of each series' last one as a duplicate.
func TestHandover_NativeHistogramsWithEmptyBuckets(t *testing.T) {
	cfg := DefaultConfig()
	ring := newMemRing()
	from, to := newBenchNode(t, "ing-a", ring, cfg), newBenchNode(t, "ing-b", ring, cfg)
	base := time.Now().Add(-time.Hour).UnixMilli()
	bucket := func(custom bool, spans []histogram.Span, buckets []int64) *histogram.Histogram {
		h := &histogram.Histogram{Schema: 3, PositiveSpans: spans, PositiveBuckets: buckets}
		if custom {
			h.Schema, h.CustomValues = histogram.CustomBucketsSchema, []float64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}
		}
		var abs int64
		for _, d := range buckets {
			abs += d
			h.Count += uint64(abs)
		}
		return h
	}
	var last []memstore.SeriesHistograms
	for i := range 8 {
		custom, float := i%2 == 1, i%4 < 2
		seqs := [][]*histogram.Histogram{
			// One empty bucket at index 0, 1, 0.
			{bucket(custom, []histogram.Span{{Offset: 0, Length: 1}}, []int64{0}), bucket(custom, []histogram.Span{{Offset: 1, Length: 1}}, []int64{0}), bucket(custom, []histogram.Span{{Offset: 0, Length: 1}}, []int64{0})},
			// Empty buckets that vanish, then counts.
			{bucket(custom, []histogram.Span{{Offset: 9, Length: 4}}, []int64{0, 0, 0, 0}), bucket(custom, []histogram.Span{{Offset: 13, Length: 4}}, []int64{1, 1, 1, -1})},
		}
		var hs []memstore.HistSample
		for _, seq := range seqs {
			for _, h := range seq {
				s := memstore.HistSample{T: base + int64(len(hs))*15_000, H: h}
				if float {
					s = memstore.HistSample{T: s.T, FH: h.ToFloat(nil)}
				}
				hs = append(hs, s)
			}
		}
		lset := labels.FromStrings("__name__", "h", "i", fmt.Sprint(i))
		res, err := from.store.PushHistograms("t1", []memstore.SeriesHistograms{{Labels: lset, Histograms: hs}})
		if err != nil || res.Refused > 0 {
			t.Fatalf("push: %v %+v", err, res.Errors)
		}
		last = append(last, memstore.SeriesHistograms{Labels: lset, Histograms: hs[len(hs)-1:]})
	}
	before := storeHistograms(t, from.store, "t1")
	ring.addActive(t, from.id, from.addr, ringstate.Tokens{1, 2, 3})
	ring.must(t, registerCmd(to.id, to.addr))
	ring.must(t, ringstate.Command{Op: ringstate.OpLeave, Member: from.id})
	if err := from.leaver.Leave(context.Background()); err != nil {
		t.Fatal(err)
	}
	if m := ring.member(t, to.id); m.State != ringstate.ACTIVE {
		t.Fatalf("joiner is %s after the hand-over", m.State)
	}
	if got := storeHistograms(t, to.store, "t1"); !reflect.DeepEqual(got, before) {
		t.Fatalf("joiner holds\n%v\nwant\n%v", got, before)
	}
	res, err := to.store.PushHistograms("t1", last)
	if err != nil {
		t.Fatal(err)
	}
	if res.Duplicates != len(last) || res.Refused != 0 {
		t.Fatalf("retried pushes of the last histograms on the joiner: %+v", res)
	}
}
