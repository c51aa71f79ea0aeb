package querier

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"github.com/prometheus/prometheus/tsdb/chunks"
	"github.com/prometheus/prometheus/util/annotations"
)

// listQueryable is an in-memory storage.Queryable that records the ranges it was asked for.
type listQueryable struct {
	series []storage.Series
	asked  *[][2]int64
}

func (l listQueryable) Querier(mint, maxt int64) (storage.Querier, error) {
	*l.asked = append(*l.asked, [2]int64{mint, maxt})
	return listQuerier(l), nil
}

type listQuerier listQueryable

func (l listQuerier) Select(_ context.Context, _ bool, h *storage.SelectHints, _ ...*labels.Matcher) storage.SeriesSet {
	var out []storage.Series
	for _, s := range l.series {
		var kept []chunks.Sample
		it := s.Iterator(nil)
		for it.Next() != 0 {
			t, v := it.At()
			if h == nil || (t >= h.Start && t <= h.End) {
				kept = append(kept, sampleT{t, v})
			}
		}
		out = append(out, storage.NewListSeries(s.Labels(), kept))
	}
	return &sliceSet{s: out, i: -1}
}

func (listQuerier) LabelValues(context.Context, string, *storage.LabelHints, ...*labels.Matcher) ([]string, annotations.Annotations, error) {
	return nil, nil, nil
}
func (listQuerier) LabelNames(context.Context, *storage.LabelHints, ...*labels.Matcher) ([]string, annotations.Annotations, error) {
	return nil, nil, nil
}
func (listQuerier) Close() error { return nil }

type sampleT struct {
	t int64
	f float64
}

func (s sampleT) T() int64                      { return s.t }
func (s sampleT) F() float64                    { return s.f }
func (s sampleT) H() *histogram.Histogram       { return nil }
func (s sampleT) FH() *histogram.FloatHistogram { return nil }
func (s sampleT) Type() chunkenc.ValueType      { return chunkenc.ValFloat }
func (s sampleT) Copy() chunks.Sample           { return s }

func list(ls labels.Labels, from, to int64) storage.Series {
	var ss []chunks.Sample
	for t := from; t <= to; t += 60_000 {
		ss = append(ss, sampleT{t, float64(t)})
	}
	return storage.NewListSeries(ls, ss)
}

// A range flushed to the store while the ingesters still hold it: every sample comes back once,
// and each source is asked only for its share of time.
func TestQueryable_SplitsInTimeAndMergesOnce(t *testing.T) {
	ls := labels.FromStrings("__name__", "m")
	now := int64(10 * 3600_000)
	var ingAsked, storeAsked [][2]int64
	ing := listQueryable{series: []storage.Series{list(ls, now-3*3600_000, now)}, asked: &ingAsked}
	store := listQueryable{series: []storage.Series{list(ls, 0, now-3600_000)}, asked: &storeAsked}
	q := NewQueryable(ing, store, time.Hour, 3*time.Hour, func() time.Time { return time.UnixMilli(now) })

	got, _, err := selectAll(t, q, "t", 0, now)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][]sample{}
	for ts := int64(0); ts <= now; ts += 60_000 {
		want[ls.String()] = append(want[ls.String()], sample{ts, float64(ts)})
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("merged: %d samples, want %d, each once", len(got[ls.String()]), len(want[ls.String()]))
	}
	if fmt.Sprint(ingAsked) != fmt.Sprint([][2]int64{{now - 3*3600_000, now}}) {
		t.Fatalf("ingesters asked for %v", ingAsked)
	}
	if fmt.Sprint(storeAsked) != fmt.Sprint([][2]int64{{0, now - 3600_000}}) {
		t.Fatalf("store asked for %v", storeAsked)
	}

	// A recent query does not touch the store; an old one does not touch the ingesters.
	ingAsked, storeAsked = nil, nil
	if _, _, err := selectAll(t, q, "t", now-600_000, now); err != nil || len(storeAsked) != 0 || len(ingAsked) != 1 {
		t.Fatalf("recent query: store asked %v, ingesters %v, err %v", storeAsked, ingAsked, err)
	}
	ingAsked, storeAsked = nil, nil
	if _, _, err := selectAll(t, q, "t", 0, 3600_000); err != nil || len(storeAsked) != 1 || len(ingAsked) != 0 {
		t.Fatalf("old query: store asked %v, ingesters %v, err %v", storeAsked, ingAsked, err)
	}
}

type sliceSet struct {
	s []storage.Series
	i int
}

func (s *sliceSet) Next() bool                        { s.i++; return s.i < len(s.s) }
func (s *sliceSet) At() storage.Series                { return s.s[s.i] }
func (s *sliceSet) Err() error                        { return nil }
func (s *sliceSet) Warnings() annotations.Annotations { return nil }
