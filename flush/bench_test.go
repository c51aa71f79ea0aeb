package flush

import (
	"context"
	"fmt"
	"testing"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/raftingest/raftingest/memstore"
)

// BenchmarkFlushAll measures a forced flush of 10k series × 240 samples (2 chunks each) into a
// filesystem bucket: block writing, upload, drop from memory and the WAL. Refilling memory is
// outside the timer.
//
//	go test -run '^$' -bench FlushAll -count 6 ./flush/ | tee new.txt; benchstat old.txt new.txt
func BenchmarkFlushAll(b *testing.B) {
	const nSeries, nSamples = 10_000, 240
	e := newEnvB(b)
	var series, bytes, samples float64
	b.ReportAllocs()
	for b.Loop() {
		b.StopTimer()
		batch := make([]memstore.SeriesSamples, nSeries)
		for i := range batch {
			smps := make([]memstore.Sample, nSamples)
			for j := range smps {
				smps[j] = memstore.Sample{T: int64(j) * 15_000, V: float64(i*j) / 3}
			}
			batch[i] = memstore.SeriesSamples{Labels: labels.FromStrings("__name__", "bench", "series", fmt.Sprint(i)), Samples: smps}
		}
		if _, err := e.store.Push("t1", batch); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		res, err := e.f.FlushAll(context.Background())
		if err != nil {
			b.Fatal(err)
		}
		series += float64(res.Series)
		bytes += float64(res.Bytes)
		samples += float64(res.Samples)
	}
	secs := b.Elapsed().Seconds()
	b.ReportMetric(series/secs, "series/s")
	b.ReportMetric(bytes/secs, "bytes/s")
	b.ReportMetric(samples/secs, "samples/s")
}
