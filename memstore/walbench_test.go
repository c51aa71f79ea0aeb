package memstore

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/golang/snappy"
	"github.com/klauspost/compress/zstd"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/tsdb/chunks"
	promrecord "github.com/prometheus/prometheus/tsdb/record"
	"github.com/prometheus/prometheus/tsdb/wlog"
	"github.com/prometheus/prometheus/util/compression"
	bolt "go.etcd.io/bbolt"
)

// scrapeWorkload is a deterministic, scrape-like push stream: targets of
// scrapeSeriesPerTarget series each, scraped every 15 s at a per-target
// phase with a few ms of jitter (all series of one scrape share its
// timestamp, as in Prometheus), pushed ten targets (1000 samples) per
// remote-write request. Series kinds, by index within the target:
//
//	0, 1: counter, integer increments (requests, bytes)
//	2:    counter, float (CPU seconds: ticks/100)
//	3:    gauge, integer random walk (memory bytes, page-sized steps)
//	4:    gauge, float random walk with two decimals (load, temperature)
type scrapeWorkload struct {
	series  []labels.Labels
	vals    []float64
	rng     *rand.Rand
	batch   []SeriesSamples
	smps    []Sample
	round   int
	targets int
}

const (
	scrapeSeriesPerTarget = 100
	scrapeTargetsPerPush  = 10
	scrapeIntervalMs      = 15_000
)

func newScrapeWorkload(nSeries int) *scrapeWorkload {
	targets := (nSeries + scrapeSeriesPerTarget - 1) / scrapeSeriesPerTarget
	w := &scrapeWorkload{rng: rand.New(rand.NewPCG(14, 14)), targets: targets}
	kinds := []string{"http_requests_total", "network_transmit_bytes_total", "cpu_seconds_total", "memory_active_bytes", "load1"}
	for i := range nSeries {
		t, j := i/scrapeSeriesPerTarget, i%scrapeSeriesPerTarget
		w.series = append(w.series, labels.FromStrings(
			"__name__", "node_"+kinds[j%5],
			"instance", "host-"+strconv.Itoa(t)+":9100",
			"job", "node",
			"idx", strconv.Itoa(j/5),
		))
		switch j % 5 {
		case 0, 1:
			w.vals = append(w.vals, float64(w.rng.IntN(1_000_000)))
		case 2:
			w.vals = append(w.vals, float64(w.rng.IntN(10_000_000))/100)
		case 3:
			w.vals = append(w.vals, float64(1<<30+w.rng.IntN(1<<20)*4096))
		default:
			w.vals = append(w.vals, float64(w.rng.IntN(400))/100)
		}
	}
	w.smps = make([]Sample, nSeries)
	return w
}

// pushes returns the remote-write requests of the next scrape round.
func (w *scrapeWorkload) nextRound(yield func([]SeriesSamples)) {
	base := int64(1_700_000_000_000) + int64(w.round)*scrapeIntervalMs
	w.round++
	for t0 := 0; t0 < w.targets; t0 += scrapeTargetsPerPush {
		w.batch = w.batch[:0]
		for t := t0; t < min(t0+scrapeTargetsPerPush, w.targets); t++ {
			ts := base + int64(t*37%scrapeIntervalMs) + int64(w.rng.IntN(20))
			for i := t * scrapeSeriesPerTarget; i < min((t+1)*scrapeSeriesPerTarget, len(w.series)); i++ {
				v := w.vals[i]
				switch i % scrapeSeriesPerTarget % 5 {
				case 0, 1:
					v += float64(w.rng.IntN(5000))
				case 2:
					v = math.Round(v*100+float64(w.rng.IntN(1500))) / 100
				case 3:
					v += float64((w.rng.IntN(201) - 100) * 4096)
				default:
					v = math.Max(0, math.Round(v*100+float64(w.rng.IntN(21)-10))/100)
				}
				w.vals[i] = v
				w.smps[i] = Sample{T: ts, V: v}
				w.batch = append(w.batch, SeriesSamples{Labels: w.series[i], Samples: w.smps[i : i+1]})
			}
		}
		yield(w.batch)
	}
}

// writeScrapeWAL pushes rounds scrape rounds of nSeries series into a Store
// on dir (WAL record version `version`), one push at a time so that the
// records (and their bytes) are deterministic. It returns the number of
// samples and the bytes of the records logged.
func writeScrapeWAL(tb testing.TB, dir string, version byte, nSeries, rounds int) (samples int, recBytes int64) {
	tb.Helper()
	cfg := testConfig(dir)
	cfg.WALSync = false
	st, err := Open(cfg, nil, testLogger())
	if err != nil {
		tb.Fatal(err)
	}
	st.wal.version = version
	w := newScrapeWorkload(nSeries)
	for range rounds {
		w.nextRound(func(batch []SeriesSamples) {
			res, err := st.Push("u", batch)
			if err != nil {
				tb.Fatal(err)
			}
			samples += res.Accepted
		})
	}
	if err := st.Close(); err != nil {
		tb.Fatal(err)
	}
	return samples, walRecordBytes(tb, filepath.Join(dir, WALFileName))
}

// walRecordBytes sums the sizes of the records in a WAL file (values of the
// wal bucket: what memstore writes, without bbolt's page overhead).
func walRecordBytes(tb testing.TB, path string) int64 {
	tb.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true})
	if err != nil {
		tb.Fatal(err)
	}
	defer db.Close()
	var n int64
	if err := db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketWAL).ForEach(func(_, v []byte) error { n += int64(len(v)); return nil })
	}); err != nil {
		tb.Fatal(err)
	}
	return n
}

// cpuSeconds is the process's CPU time so far (user + system).
func cpuSeconds(tb testing.TB) float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		tb.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}

// BenchmarkWALReplay measures Open's replay of a WAL of 100k, 1M and 10M
// samples of min(100k, samples) series (bench/runner.go's "5 restart"
// shape), written in the old (2) and the new (3) record version. The WAL is
// written once per size and version; each iteration opens a Store on it.
// Reports samples/s of replay (ReplayReport.Duration) and CPU time per
// sample of Open (on shared cores the CPU time is the steadier figure).
func BenchmarkWALReplay(b *testing.B) {
	for _, total := range []int{100_000, 1_000_000, 10_000_000} {
		for _, version := range []byte{recordVersion2, recordVersion3} {
			b.Run(fmt.Sprintf("samples=%d/v%d", total, version), func(b *testing.B) {
				series := min(100_000, total)
				dir := b.TempDir()
				samples, _ := writeScrapeWAL(b, dir, version, series, total/series)
				cfg := testConfig(dir)
				cfg.WALSync = false
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
					if rep.Samples != samples || rep.Skipped != 0 || rep.Corruption != nil {
						b.Fatalf("replay %+v, want %d samples", rep, samples)
					}
					replayed += rep.Samples
					secs += rep.Duration.Seconds()
					b.StopTimer()
					st.Close()
					b.StartTimer()
				}
				b.ReportMetric(float64(replayed)/secs, "samples/s")
				// CPU time (user + system, all threads) per sample of Open: the
				// work replay does, whatever share of the cores it got.
				b.ReportMetric(cpu*1e9/float64(replayed), "cpu_ns/sample")
			})
		}
	}
}

// promWALBytes logs the same workload as writeScrapeWAL through
// Prometheus's own WAL (tsdb/wlog, the head's record encoder), one Log call
// per push as the head's appender commit does (a series record for the
// push's new series, then one samples record), and returns the bytes of its
// segment files.
func promWALBytes(tb testing.TB, dir string, comp compression.Type, nSeries, rounds int) int64 {
	tb.Helper()
	w, err := wlog.NewSize(nil, nil, dir, wlog.DefaultSegmentSize, comp)
	if err != nil {
		tb.Fatal(err)
	}
	var enc promrecord.Encoder
	refs := map[string]chunks.HeadSeriesRef{}
	var series []promrecord.RefSeries
	var smps []promrecord.RefSample
	var buf []byte
	wl := newScrapeWorkload(nSeries)
	for range rounds {
		wl.nextRound(func(batch []SeriesSamples) {
			series, smps = series[:0], smps[:0]
			for _, ss := range batch {
				k := ss.Labels.String()
				ref, ok := refs[k]
				if !ok {
					ref = chunks.HeadSeriesRef(len(refs) + 1)
					refs[k] = ref
					series = append(series, promrecord.RefSeries{Ref: ref, Labels: ss.Labels})
				}
				for _, s := range ss.Samples {
					smps = append(smps, promrecord.RefSample{Ref: ref, T: s.T, V: s.V})
				}
			}
			var recs [][]byte
			if len(series) > 0 {
				recs = append(recs, enc.Series(series, nil))
			}
			buf = enc.Samples(smps, buf[:0])
			recs = append(recs, buf)
			if err := w.Log(recs...); err != nil {
				tb.Fatal(err)
			}
		})
	}
	if err := w.Close(); err != nil {
		tb.Fatal(err)
	}
	var n int64
	ents, err := os.ReadDir(dir)
	if err != nil {
		tb.Fatal(err)
	}
	for _, e := range ents {
		fi, err := e.Info()
		if err != nil {
			tb.Fatal(err)
		}
		n += fi.Size()
	}
	return n
}

// BenchmarkWALBytesPerSample logs one hour of a scrape-like workload (10k
// series, 15 s interval, counters and gauges: scrapeWorkload) and reports
// the WAL bytes per sample (records, series records included) of the old
// record version 2, of the new version 3, and of Prometheus's WAL (wlog,
// snappy: its default) on the same samples, and their ratio
// wal_bytes_per_sample_vs_prometheus. Bytes are deterministic; b.N only
// repeats the work.
func BenchmarkWALBytesPerSample(b *testing.B) {
	const nSeries, rounds = 10_000, 240
	var v2, v3, prom, promZstd int64
	var samples int
	for b.Loop() {
		samples, v2 = writeScrapeWAL(b, b.TempDir(), recordVersion2, nSeries, rounds)
		_, v3 = writeScrapeWAL(b, b.TempDir(), recordVersion3, nSeries, rounds)
		prom = promWALBytes(b, b.TempDir(), compression.Snappy, nSeries, rounds)
		promZstd = promWALBytes(b, b.TempDir(), compression.Zstd, nSeries, rounds)
	}
	s := float64(samples)
	b.ReportMetric(float64(v2)/s, "v2_bytes/sample")
	b.ReportMetric(float64(v3)/s, "v3_bytes/sample")
	b.ReportMetric(float64(prom)/s, "prom_snappy_bytes/sample")
	b.ReportMetric(float64(promZstd)/s, "prom_zstd_bytes/sample")
	b.ReportMetric(float64(v3)/float64(prom), "wal_bytes_per_sample_vs_prometheus")
}

// BenchmarkWALRecordCompression measures the alternatives for a version 3
// samples record's body on the scrapeWorkload (10k series, one hour): the
// old layout (2) and the compact layout (3), each raw, snappy (what version
// 3 writes) and zstd (klauspost/compress, fastest and default levels).
// Reports bytes per sample of each (samples records only) and the
// compression time per sample of each compressor. Bytes are deterministic.
func BenchmarkWALRecordCompression(b *testing.B) {
	const nSeries, rounds = 10_000, 240
	dir := b.TempDir()
	writeScrapeWAL(b, dir, recordVersion3, nSeries, rounds)
	// The samples records' contents, re-encoded in both layouts.
	var bodies [2][][]byte
	var samples int
	db, err := bolt.Open(filepath.Join(dir, WALFileName), 0o600, &bolt.Options{ReadOnly: true})
	if err != nil {
		b.Fatal(err)
	}
	var r record
	if err := db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketWAL).ForEach(func(k, v []byte) error {
			if err := decodeRecord(binary.BigEndian.Uint64(k), v, &r); err != nil {
				return err
			}
			if r.Type != recSamples {
				return nil
			}
			v2 := binary.AppendUvarint(nil, uint64(len(r.Samples)))
			v3 := binary.AppendUvarint(nil, uint64(len(r.Samples)))
			var enc samplesEncoder
			for _, e := range r.Samples {
				v2 = appendSamplesEntry(v2, e.Ref, e.Samples)
				v3 = enc.appendEntry(v3, e.Ref, e.Samples)
				samples += len(e.Samples)
			}
			bodies[0], bodies[1] = append(bodies[0], v2), append(bodies[1], v3)
			return nil
		})
	}); err != nil {
		b.Fatal(err)
	}
	db.Close()
	zFast, _ := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest))
	zDef, _ := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedDefault))
	comps := []struct {
		name string
		fn   func(dst, src []byte) []byte
	}{
		{"raw", func(_, src []byte) []byte { return src }},
		{"snappy", func(dst, src []byte) []byte { return snappy.Encode(dst[:cap(dst)], src) }},
		{"zstd_fastest", func(dst, src []byte) []byte { return zFast.EncodeAll(src, dst[:0]) }},
		{"zstd_default", func(dst, src []byte) []byte { return zDef.EncodeAll(src, dst[:0]) }},
	}
	type result struct {
		bytes int64
		dur   time.Duration
	}
	res := make([]result, 2*len(comps))
	dst := make([]byte, 0, 1<<20)
	for b.Loop() {
		for layout := range bodies {
			for ci, c := range comps {
				var n int64
				begin := time.Now()
				for _, body := range bodies[layout] {
					n += int64(len(c.fn(dst, body)))
				}
				res[layout*len(comps)+ci].dur += time.Since(begin)
				res[layout*len(comps)+ci].bytes = n
			}
		}
	}
	for layout, name := range []string{"v2", "v3"} {
		for ci, c := range comps {
			r := res[layout*len(comps)+ci]
			b.ReportMetric(float64(r.bytes)/float64(samples), name+"_"+c.name+"_bytes/sample")
			if c.name != "raw" {
				b.ReportMetric(float64(r.dur.Nanoseconds())/float64(b.N)/float64(samples), name+"_"+c.name+"_ns/sample")
			}
		}
	}
}
