package compact_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	promstorage "github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"github.com/prometheus/prometheus/tsdb/chunks"

	"github.com/raftingest/raftingest/storage"
	"github.com/raftingest/raftingest/tenant"
)

// histAt is series i's integer native histogram at ts: counts growing with ts, a counter reset
// every 200 scrapes, a bucket that appears after the 100th.
func histAt(i int, ts int64) *histogram.Histogram {
	k := int64((ts-t0)/scrape) % 200
	h := &histogram.Histogram{Schema: 2, PositiveSpans: []histogram.Span{{Offset: int32(i % 4), Length: 3}},
		PositiveBuckets: []int64{k, 1, int64(i % 3)}, Sum: float64(k) * 1.25}
	if k >= 100 {
		h.PositiveSpans = append(h.PositiveSpans, histogram.Span{Offset: 2, Length: 1})
		h.PositiveBuckets = append(h.PositiveBuckets, -1)
	}
	var abs int64
	for _, d := range h.PositiveBuckets {
		abs += d
		h.Count += uint64(abs)
	}
	return h
}

// histChunksOf encodes series i's histograms of [mint, maxt) as the store does: chunkenc's
// appender decides where counter resets and layout changes cut, 120 samples at most a chunk.
func histChunksOf(t *testing.T, i int, mint, maxt int64) []chunks.Meta {
	t.Helper()
	var out []chunks.Meta
	var c chunkenc.Chunk
	var app chunkenc.Appender
	for ts := mint; ts < maxt; ts += scrape {
		if c == nil || c.NumSamples() == 120 {
			c = chunkenc.NewHistogramChunk()
			var err error
			if app, err = c.Appender(); err != nil {
				t.Fatal(err)
			}
			out = append(out, chunks.Meta{Chunk: c, MinTime: ts})
		}
		nc, recoded, napp, err := app.AppendHistogram(nil, ts, histAt(i, ts), false)
		if err != nil {
			t.Fatal(err)
		}
		app = napp
		switch {
		case nc == nil:
		case recoded:
			c = nc
			out[len(out)-1].Chunk = nc
		default:
			c = nc
			out = append(out, chunks.Meta{Chunk: nc, MinTime: ts})
		}
		out[len(out)-1].MaxTime = ts
	}
	return out
}

// histAnswer reads every series of tenantID through all members' buckets, merged as the querier
// merges replicas, each histogram rendered with its timestamp (compacted, for comparison).
func (c *cluster) histAnswer(tenantID string) map[string][]string {
	c.t.Helper()
	ctx := tenant.With(context.Background(), tenantID)
	var qs []promstorage.Querier
	for _, id := range memberIDs {
		q, err := c.queries[id].Querier(t0-hour, t0+100*hour)
		if err != nil {
			c.t.Fatal(err)
		}
		qs = append(qs, q)
	}
	m := promstorage.NewMergeQuerier(nil, qs, promstorage.ChainedSeriesMerge)
	defer m.Close()
	set := m.Select(ctx, true, nil, labels.MustNewMatcher(labels.MatchRegexp, "__name__", ".+"))
	out := map[string][]string{}
	for set.Next() {
		s := set.At()
		it := s.Iterator(nil)
		for vt := it.Next(); vt != chunkenc.ValNone; vt = it.Next() {
			ts, fh := it.AtFloatHistogram(nil)
			out[s.Labels().String()] = append(out[s.Labels().String()], fmt.Sprintf("%d %s", ts, fh.Copy().Compact(0)))
		}
		if err := it.Err(); err != nil {
			c.t.Fatal(err)
		}
	}
	if err := set.Err(); err != nil {
		c.t.Fatal(err)
	}
	return out
}

// TestCompactor_NativeHistogramBlocksMerged: members that flushed a 2h range of native histograms
// in two blocks each end, after compaction, with one block of the window per member holding every
// histogram once, equal to what was written, in blocks promtool analyzes.
func TestCompactor_NativeHistogramBlocksMerged(t *testing.T) {
	c := newCluster(t, 20)
	for _, id := range memberIDs {
		for _, part := range [][2]int64{{t0, t0 + hour}, {t0 + hour, t0 + 2*hour}} {
			var ss []storage.Series
			for i, s := range c.series {
				if slices.Contains(c.place("t1", s.lset), id) {
					ss = append(ss, storage.Series{Labels: s.lset, Chunks: histChunksOf(t, i, part[0], part[1])})
				}
			}
			dir := filepath.Join(c.buckets[id].dir, "t1")
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			if _, err := storage.WriteBlock(context.Background(), dir, ss, storage.BlockOptions{MinTime: part[0], MaxTime: part[1],
				Labels: map[string]string{storage.TenantLabel: "t1", storage.IngesterLabel: id}}); err != nil {
				t.Fatal(err)
			}
		}
	}
	want := map[string][]string{}
	for i, s := range c.series {
		for ts := t0; ts < t0+2*hour; ts += scrape {
			want[s.lset.String()] = append(want[s.lset.String()], fmt.Sprintf("%d %s", ts, histAt(i, ts).ToFloat(nil).Compact(0)))
		}
	}
	same := func(what string, got map[string][]string) {
		t.Helper()
		if len(got) != len(want) {
			t.Fatalf("%s: %d series, want %d", what, len(got), len(want))
		}
		for k, w := range want {
			if !slices.Equal(w, got[k]) {
				t.Fatalf("%s: series %s: %d histograms, want %d (or they differ)", what, k, len(got[k]), len(w))
			}
		}
	}
	same("before compaction", c.histAnswer("t1"))
	if err := c.compactor(t0+3*hour, 0, prometheus.NewRegistry()).RunOnce(context.Background(), 1); err != nil {
		t.Fatal(err)
	}
	c.checkPlaced("t1", [][2]int64{{t0, t0 + 2*hour}})
	same("after compaction", c.histAnswer("t1"))
	if promtool, err := exec.LookPath("promtool"); err == nil {
		for _, id := range memberIDs {
			for _, m := range c.blocksOf(id, "t1") {
				if out, err := exec.Command(promtool, "tsdb", "analyze", filepath.Join(c.buckets[id].dir, "t1"), m.ULID.String()).CombinedOutput(); err != nil {
					t.Fatalf("promtool tsdb analyze %s: %v\n%s", m.ULID, err, out)
				}
			}
		}
	}
}
