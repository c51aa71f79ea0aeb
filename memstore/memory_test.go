package memstore

import (
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strconv"
	"testing"
	"unsafe"

	"github.com/prometheus/prometheus/model/labels"
)

// memLabels are 10 labels shaped like the bench generator's (bench/load.go
// labelKV): a metric name out of 100, a unique instance, and 8 labels of
// small cardinality.
func memLabels(id int) labels.Labels {
	b := labels.NewScratchBuilder(10)
	b.Add("__name__", "bench_metric_"+strconv.Itoa(id%100))
	b.Add("instance", "host-"+strconv.Itoa(id)+"-0:9100")
	for k, name := range []string{"az", "cluster", "env", "job", "namespace", "pod_template", "service", "team"} {
		card := []int{3, 5, 3, 20, 30, 50, 40, 10}[k]
		b.Add(name, name+"-"+strconv.Itoa((id/(k+1))%card))
	}
	b.Sort()
	return b.Labels()
}

func heapInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// BenchmarkHeapPerSeries reports the heap a Store holds per series of 10
// labels after one sample each and after 240 (two 120-sample chunks), with
// and without a WAL (the WAL's own heap is its buffers: the mapping is not
// heap). With MEMSTORE_HEAP720=1 it goes on to 720 samples (a 2-hour head
// at a 10 s interval). With MEMSTORE_HEAPPROFILE=dir it writes
// dir/heap-<case>-<n>.pprof after each stage (go tool pprof
// -sample_index=inuse_space).
func BenchmarkHeapPerSeries(b *testing.B) {
	const nSeries = 100_000
	lsets := make([]labels.Labels, nSeries)
	for i := range lsets {
		lsets[i] = memLabels(i)
	}
	for _, withWAL := range []bool{false, true} {
		name := "nowal"
		if withWAL {
			name = "wal"
		}
		b.Run(name, func(b *testing.B) {
			for range b.N {
				cfg := DefaultConfig()
				if withWAL {
					cfg.WALDir = b.TempDir()
					cfg.WALSync = false
				}
				h0 := heapInUse()
				st, err := Open(cfg, nil, testLogger())
				if err != nil {
					b.Fatal(err)
				}
				batch := make([]SeriesSamples, 0, 1000)
				smps := make([]Sample, nSeries)
				push := func(round int) {
					for lo := 0; lo < nSeries; lo += 1000 {
						batch = batch[:0]
						for i := lo; i < min(lo+1000, nSeries); i++ {
							smps[i] = Sample{T: int64(round)*15_000 + int64(i%1000), V: float64(round*(1+i%10) + i%7)}
							batch = append(batch, SeriesSamples{Labels: lsets[i], Samples: smps[i : i+1]})
						}
						res, err := st.Push("bench", batch)
						if err != nil || res.Refused > 0 {
							b.Fatal(err, res.Errors)
						}
					}
				}
				profile := func(stage int) {
					dir := os.Getenv("MEMSTORE_HEAPPROFILE")
					if dir == "" {
						return
					}
					runtime.GC()
					f, err := os.Create(filepath.Join(dir, "heap-"+name+"-"+strconv.Itoa(stage)+".pprof"))
					if err != nil {
						b.Fatal(err)
					}
					defer f.Close()
					if err := pprof.WriteHeapProfile(f); err != nil {
						b.Fatal(err)
					}
				}
				push(0)
				h1 := heapInUse()
				profile(1)
				for r := 1; r < 240; r++ {
					push(r)
				}
				h240 := heapInUse()
				profile(240)
				b.ReportMetric(float64(h1-h0)/nSeries, "B/series@1")
				b.ReportMetric(float64(h240-h0)/nSeries, "B/series@240")
				if os.Getenv("MEMSTORE_HEAP720") != "" {
					// A 2-hour head at a 10 s interval: 6 closed chunks.
					for r := 240; r < 720; r++ {
						push(r)
					}
					b.ReportMetric(float64(heapInUse()-h0)/nSeries, "B/series@720")
					profile(720)
				}
				runtime.KeepAlive(lsets)
				if err := st.Close(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestMemSeriesSize pins memSeries in the 192-byte size class on 64-bit
// platforms with stringlabels (the default labels): every series pays its
// size class, and a field added carelessly can push it to the next (208).
func TestMemSeriesSize(t *testing.T) {
	if unsafe.Sizeof(uintptr(0)) != 8 || unsafe.Sizeof(labels.Labels{}) != 16 {
		t.Skip("sized for 64-bit platforms and stringlabels")
	}
	if got := unsafe.Sizeof(memSeries{}); got > 192 {
		t.Fatalf("memSeries is %d bytes, over the 192-byte size class", got)
	}
}
