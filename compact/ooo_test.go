package compact_test

import (
	"context"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/tsdb"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"github.com/prometheus/prometheus/tsdb/chunks"

	"github.com/raftingest/raftingest/storage"
)

// TestCompactor_OutOfOrderBlocksOfARangeMerged: a member that flushed a 2h range and later flushed
// out-of-order samples of the same range (a second block overlapping the first in time, as the
// flusher writes them) ends with one block per window on every member, whose series have sorted,
// non-overlapping chunks holding both blocks' samples once, and which promtool analyzes.
func TestCompactor_OutOfOrderBlocksOfARangeMerged(t *testing.T) {
	c := newCluster(t, 40)
	c.flush("t1", t0, t0+2*hour, nil)
	before := c.answer("t1")
	// The out-of-order block: every 10th scrape interval, half an interval later, on every member
	// for the series it replicates.
	oooSamples := func(i int) []sample {
		var out []sample
		for ts := t0 + scrape/2; ts < t0+2*hour; ts += 10 * scrape {
			out = append(out, sample{ts, -float64(i*1000) - float64(ts-t0)})
		}
		return out
	}
	for _, id := range memberIDs {
		var ss []storage.Series
		for i, s := range c.series {
			if !slices.Contains(c.place("t1", s.lset), id) {
				continue
			}
			ch := chunkenc.NewXORChunk()
			app, err := ch.Appender()
			if err != nil {
				t.Fatal(err)
			}
			smps := oooSamples(i)
			for _, smp := range smps {
				app.Append(smp.t, smp.v)
			}
			ss = append(ss, storage.Series{Labels: s.lset, Chunks: []chunks.Meta{{Chunk: ch, MinTime: smps[0].t, MaxTime: smps[len(smps)-1].t}}})
		}
		dir := filepath.Join(c.buckets[id].dir, "t1")
		if _, err := storage.WriteBlock(context.Background(), dir, ss, storage.BlockOptions{MinTime: t0, MaxTime: t0 + 2*hour,
			Labels: map[string]string{storage.TenantLabel: "t1", storage.IngesterLabel: id}}); err != nil {
			t.Fatal(err)
		}
	}
	want := map[string][]sample{}
	for i, s := range c.series {
		all := append(slices.Clone(before[s.lset.String()]), oooSamples(i)...)
		slices.SortFunc(all, func(a, b sample) int { return int(a.t - b.t) })
		want[s.lset.String()] = all
	}
	sameAnswer(t, "before compaction", want, c.answer("t1"))
	if err := c.compactor(t0+3*hour, 0, prometheus.NewRegistry()).RunOnce(context.Background(), 1); err != nil {
		t.Fatal(err)
	}
	c.checkPlaced("t1", [][2]int64{{t0, t0 + 2*hour}})
	sameAnswer(t, "after compaction", want, c.answer("t1"))
	promtool, _ := exec.LookPath("promtool")
	for _, id := range memberIDs {
		for _, m := range c.blocksOf(id, "t1") {
			dir := filepath.Join(c.buckets[id].dir, "t1")
			b, err := tsdb.OpenBlock(nil, filepath.Join(dir, m.ULID.String()), nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			ir, err := b.Index()
			if err != nil {
				t.Fatal(err)
			}
			k, v := "", ""
			p, err := ir.Postings(context.Background(), k, v)
			if err != nil {
				t.Fatal(err)
			}
			var builder labels.ScratchBuilder
			var metas []chunks.Meta
			for p.Next() {
				if err := ir.Series(p.At(), &builder, &metas); err != nil {
					t.Fatal(err)
				}
				for j := 1; j < len(metas); j++ {
					if metas[j].MinTime <= metas[j-1].MaxTime {
						t.Fatalf("%s block %s: series %s: chunks %d and %d overlap", id, m.ULID, builder.Labels(), j-1, j)
					}
				}
			}
			ir.Close()
			b.Close()
			if promtool != "" {
				if out, err := exec.Command(promtool, "tsdb", "analyze", dir, m.ULID.String()).CombinedOutput(); err != nil {
					t.Fatalf("promtool tsdb analyze %s: %v\n%s", m.ULID, err, out)
				}
			}
		}
	}
}
