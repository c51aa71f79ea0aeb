package memstore

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/prometheus/model/labels"
)

// Compare runs with:
//
//	go test -run x -bench . -count 10 ./memstore/ > new.txt && benchstat old.txt new.txt

func benchBatch(nSeries, g int) []SeriesSamples {
	batch := make([]SeriesSamples, nSeries)
	for i := range batch {
		batch[i] = SeriesSamples{
			Labels:  labels.FromStrings("__name__", "bench_metric", "instance", "host-"+strconv.Itoa(i%50), "g", strconv.Itoa(g), "i", strconv.Itoa(i)),
			Samples: make([]Sample, 1),
		}
	}
	return batch
}

// BenchmarkAppend measures the in-memory append path (no WAL): one push of
// 1000 series × 1 sample per op, 15 s scrape spacing with ±50 ms jitter,
// counter values growing by a pseudo-random amount (a realistic XOR load, not
// the best case of constant values).
func BenchmarkAppend(b *testing.B) {
	st := mustOpen(b, testConfig(""))
	batch := benchBatch(1000, 0)
	rng := rand.New(rand.NewPCG(1, 1))
	vals := make([]float64, len(batch))
	var ts int64
	b.ReportAllocs()
	for b.Loop() {
		ts += 15_000
		for i := range batch {
			vals[i] += float64(rng.IntN(1000))
			batch[i].Samples[0] = Sample{T: ts + int64(rng.IntN(100)) - 50, V: vals[i]}
		}
		if _, err := st.Push("u", batch); err != nil {
			b.Fatal(err)
		}
	}
	samples := float64(b.N) * float64(len(batch))
	var chunkBytes int
	if err := st.ForEachSeries(func(_ string, _ labels.Labels, chks []Chunk) error {
		for _, c := range chks {
			chunkBytes += len(c.Data)
		}
		return nil
	}); err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/samples, "ns/sample")
	b.ReportMetric(float64(chunkBytes)/samples, "B/sample")
}

// BenchmarkWALCommit measures WAL throughput with group commit: per op, 16
// concurrent pushers each push 100 series × 1 sample, in the old record
// version (2) and the new one (3). Reports samples/s, commits per op, the
// commit cost per sample (wall time per sample of the whole push: encode,
// bbolt transaction, fsync when sync=true) and the record bytes per sample.
func BenchmarkWALCommit(b *testing.B) {
	for _, sync := range []bool{true, false} {
		for _, version := range []byte{recordVersion2, recordVersion3} {
			b.Run(fmt.Sprintf("sync=%v/v%d", sync, version), func(b *testing.B) {
				cfg := testConfig(b.TempDir())
				cfg.WALSync = sync
				st := mustOpen(b, cfg)
				st.wal.version = version
				const pushers, perPush = 16, 100
				batches := make([][]SeriesSamples, pushers)
				for g := range batches {
					batches[g] = benchBatch(perPush, g)
				}
				var ts int64
				b.ReportAllocs()
				commits0 := st.wal.commits.Load()
				for b.Loop() {
					ts += 15_000
					var wg syncWaitGroup
					for g := range pushers {
						wg.Add(1)
						go func() {
							defer wg.Done()
							batch := batches[g]
							for i := range batch {
								batch[i].Samples[0] = Sample{T: ts, V: float64(i)}
							}
							if _, err := st.Push("u", batch); err != nil {
								b.Error(err)
							}
						}()
					}
					wg.Wait()
				}
				samples := float64(b.N) * pushers * perPush
				b.ReportMetric(samples/b.Elapsed().Seconds(), "samples/s")
				b.ReportMetric(float64(st.wal.commits.Load()-commits0)/float64(b.N), "commits/op")
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/samples, "ns/sample")
				b.ReportMetric(testutil.ToFloat64(st.metrics.walBytes)/samples, "wal_bytes/sample")
			})
		}
	}
}

// BenchmarkWALEncode measures what the committer spends encoding records
// (no bbolt): batches of the scrape-like workload (scrapeWorkload, 10k
// series: one scrape round, 10 pushes of 1000 samples, per group commit),
// in the old record version (2) and the new one (3, compact and
// snappy-compressed). Reports ns and record bytes per sample.
func BenchmarkWALEncode(b *testing.B) {
	const nSeries, rounds = 10_000, 16
	wl := newScrapeWorkload(nSeries)
	batches := make([][]walEntry, rounds)
	for r := range batches {
		ref := uint64(0) // series i of the workload has ref i+1 in every round
		wl.nextRound(func(push []SeriesSamples) {
			for _, ss := range push {
				ref++
				batches[r] = append(batches[r], walEntry{typ: recSamples, samples: walSamples{Ref: ref, Samples: slices.Clone(ss.Samples)}})
			}
		})
	}
	for _, version := range []byte{recordVersion2, recordVersion3} {
		b.Run(fmt.Sprintf("v%d", version), func(b *testing.B) {
			w := &wal{version: version, nextSeq: 1}
			var bytes, samples int
			for b.Loop() {
				for _, batch := range batches {
					w.encode(batch)
					bytes += len(w.arena)
					samples += len(batch)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(samples), "ns/sample")
			b.ReportMetric(float64(bytes)/float64(samples), "wal_bytes/sample")
		})
	}
}

type syncWaitGroup = sync.WaitGroup
