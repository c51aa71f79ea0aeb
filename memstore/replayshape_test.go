package memstore

import (
	"fmt"
	"sort"
	"strconv"
	"testing"

	"github.com/prometheus/prometheus/model/labels"
)

// benchShapeLabels are the labels of series id as the bench's load generator makes them
// (bench/load.go labelKV, 10 labels: __name__ of 100 metrics, a unique instance, and eight
// labels of 1 to 1000 values).
func benchShapeLabels(id int) labels.Labels {
	names := []string{"job", "cluster", "namespace", "pod", "container", "env", "region", "zone"}
	card := []int{1, 3, 20, 1000, 10, 3, 4, 12}
	pairs := [][2]string{{"__name__", "bench_metric_" + strconv.Itoa(id%100)},
		{"instance", "host-" + strconv.Itoa(id) + "-0:9100"}}
	for k, n := range names {
		pairs = append(pairs, [2]string{n, n + "-" + strconv.Itoa((id/(k+1))%card[k])})
	}
	sort.Slice(pairs, func(i, j int) bool { return pairs[i][0] < pairs[j][0] })
	var b labels.ScratchBuilder
	for _, p := range pairs {
		b.Add(p[0], p[1])
	}
	return b.Labels()
}

// BenchmarkWALReplayBenchShape is BenchmarkWALReplay on the WAL that bench/runner.go's "5 restart"
// scenario replays: 100k series of 10 labels (benchShapeLabels), pushed 2000 samples at a time
// for rounds of one sample a series (1M samples: 10 rounds, 10M: 100).
func BenchmarkWALReplayBenchShape(b *testing.B) {
	for _, total := range []int{1_000_000, 10_000_000} {
		b.Run(fmt.Sprintf("samples=%d", total), func(b *testing.B) {
			const series, perPush = 100_000, 2000
			dir := b.TempDir()
			cfg := testConfig(dir)
			cfg.WALSync = false
			st, err := Open(cfg, nil, testLogger())
			if err != nil {
				b.Fatal(err)
			}
			lsets := make([]labels.Labels, series)
			for i := range lsets {
				lsets[i] = benchShapeLabels(i)
			}
			batch := make([]SeriesSamples, 0, perPush)
			smps := make([]Sample, perPush)
			for r := range total / series {
				for i := 0; i < series; i += perPush {
					batch = batch[:0]
					for j := i; j < i+perPush; j++ {
						smps[j-i] = Sample{T: int64(1_700_000_000_000 + r*10_000 + j%1000), V: float64(r*(1+j%10) + j%7)}
						batch = append(batch, SeriesSamples{Labels: lsets[j], Samples: smps[j-i : j-i+1]})
					}
					if _, err := st.Push("bench-0", batch); err != nil {
						b.Fatal(err)
					}
				}
			}
			if err := st.Close(); err != nil {
				b.Fatal(err)
			}
			var replayed int
			var secs, cpu float64
			for b.Loop() {
				cpu0 := cpuSeconds(b)
				st, err := Open(cfg, nil, testLogger())
				cpu += cpuSeconds(b) - cpu0
				if err != nil {
					b.Fatal(err)
				}
				rep := st.ReplayReport()
				if rep.Samples != total || rep.Skipped != 0 || rep.Corruption != nil {
					b.Fatalf("replay %+v, want %d samples", rep, total)
				}
				replayed += rep.Samples
				secs += rep.Duration.Seconds()
				b.StopTimer()
				st.Close()
				b.StartTimer()
			}
			b.ReportMetric(float64(replayed)/secs, "samples/s")
			b.ReportMetric(cpu*1e9/float64(replayed), "cpu_ns/sample")
		})
	}
}
