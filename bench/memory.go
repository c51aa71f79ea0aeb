package bench

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/tsdb/chunkenc"

	"github.com/raftingest/raftingest/memstore"
)

// memory is scenario 4, measured in this process on a memstore without WAL: heap bytes per series
// (labels, stripes, postings, an empty-ish head chunk) after one sample each, then the chunk
// bytes per sample after MemSamples samples each, beside what chunkenc gives the same samples cut
// at the same 120-sample boundary. In-process, because RSS of a server mixes in the GC's headroom
// and the WAL's page cache; the RSS figure is in scenario 1.
func (r *runner) memory(ctx context.Context) error {
	s := "4 memory"
	cfg := memstore.DefaultConfig()
	cfg.WALDir = ""
	st, err := memstore.Open(cfg, nil, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		return err
	}
	defer st.Close()
	lc := r.loadConfig("http://unused")
	lc.Series = r.sc.MemSeries
	lc.Senders = 1
	lc.StartMs = time.Now().Add(-24 * time.Hour).UnixMilli()
	g, err := NewGenerator(lc)
	if err != nil {
		return err
	}
	step := lc.ScrapeInterval.Milliseconds()
	ts := func(id int, round int64) int64 { return lc.StartMs + round*step + int64(id%1000)*step/1000 }

	heap := func() uint64 {
		runtime.GC()
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapAlloc
	}
	h0 := heap()
	const batch = 1000
	push := func(round int64, k int) error {
		for lo := 0; lo < lc.Series; lo += batch {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			var b []memstore.SeriesSamples
			for id := lo; id < min(lo+batch, lc.Series); id++ {
				ss := memstore.SeriesSamples{Labels: labels.FromStrings(g.labelKV(id, 0)...)}
				for j := range int64(k) {
					ss.Samples = append(ss.Samples, memstore.Sample{T: ts(id, round+j), V: g.value(id, round+j)})
				}
				b = append(b, ss)
			}
			res, err := st.Push("bench", b)
			if err != nil {
				return err
			}
			if res.Refused > 0 {
				return fmt.Errorf("memstore refused %d samples: %v", res.Refused, res.Errors[0])
			}
		}
		return nil
	}
	if err := push(0, 1); err != nil {
		return err
	}
	h1 := heap()
	perSeries := float64(h1-h0) / float64(lc.Series)
	if err := push(1, r.sc.MemSamples-1); err != nil {
		return err
	}

	var chunkBytes, samples int64
	var refBytes int64
	err = st.ForEachSeries(func(_ string, _ labels.Labels, chunks []memstore.Chunk) error {
		for _, c := range chunks {
			chunkBytes += int64(len(c.Data))
			xc, err := chunkenc.FromData(c.Encoding, c.Data)
			if err != nil {
				return err
			}
			samples += int64(xc.NumSamples())
		}
		return nil
	})
	if err != nil {
		return err
	}
	// The reference: chunkenc directly, same samples, cut every 120 samples.
	for id := range lc.Series {
		for lo := 0; lo < r.sc.MemSamples; lo += 120 {
			c := chunkenc.NewXORChunk()
			app, err := c.Appender()
			if err != nil {
				return err
			}
			for j := lo; j < min(lo+120, r.sc.MemSamples); j++ {
				app.Append(ts(id, int64(j)), g.value(id, int64(j)))
			}
			c.Compact()
			refBytes += int64(len(c.Bytes()))
		}
	}
	if samples != int64(lc.Series*r.sc.MemSamples) {
		return fmt.Errorf("memstore holds %d samples, pushed %d", samples, lc.Series*r.sc.MemSamples)
	}
	bps := float64(chunkBytes) / float64(samples)
	ref := float64(refBytes) / float64(samples)
	x := bps / ref
	r.rep.row(s, fmt.Sprintf("chunk bytes per sample (%s series × %d samples) vs chunkenc", human(float64(lc.Series)), r.sc.MemSamples),
		fmt.Sprintf("%.3f B", bps), fmt.Sprintf("%.3f B (chunkenc)", ref), fmtRatio(x), "within 5%: "+verdict(x <= 1.05))
	r.rep.row(s, "heap bytes per series with one sample (labels, index, head chunk)", fmt.Sprintf("%.0f B", perSeries), "", "", "")
	r.rep.key("chunk_bytes_per_sample", bps)
	r.rep.key("chunk_bytes_vs_chunkenc", x)
	r.rep.key("heap_bytes_per_series", perSeries)
	return nil
}
