package memstore

import (
	"errors"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
	"unsafe"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/prometheus/model/labels"
)

func oooConfig(dir string, window time.Duration) Config {
	cfg := testConfig(dir)
	cfg.OutOfOrderTimeWindow = window
	return cfg
}

// refusals returns the errors of res in order.
func refusals(res PushResult) []error {
	var out []error
	for _, e := range res.Errors {
		out = append(out, e.Err)
	}
	return out
}

func TestOOO_WindowZeroRefusesAsBefore(t *testing.T) {
	st := mustOpen(t, oooConfig(t.TempDir(), 0))
	a := labels.FromStrings("__name__", "a")
	mustPush(t, st, "t", ser(a, Sample{100, 1}))
	res := mustPush(t, st, "t", ser(a, Sample{90, 2}))
	if res.Refused != 1 || !errors.Is(res.Errors[0].Err, ErrOutOfOrderSample) || errors.Is(res.Errors[0].Err, ErrSampleTooOld) {
		t.Fatalf("window 0: want a plain out-of-order refusal, got %+v", res)
	}
}

func TestOOO_AcceptRefuseAndDuplicateRule(t *testing.T) {
	st := mustOpen(t, oooConfig(t.TempDir(), 100*time.Millisecond))
	a := labels.FromStrings("__name__", "a")
	var in []Sample
	for ts := int64(0); ts <= 1000; ts += 10 {
		in = append(in, Sample{ts, float64(ts)})
	}
	mustPush(t, st, "t", ser(a, in...))
	// 905 and 955: new timestamps within the window; 899: too old; 950: a duplicate of an in-order
	// sample with its value (accepted) and with another value (refused).
	res := mustPush(t, st, "t", ser(a, Sample{905, -1}, Sample{899, -2}, Sample{950, 950}, Sample{950, 7}, Sample{955, -3}))
	if res.Accepted != 3 || res.Duplicates != 1 || res.Refused != 2 {
		t.Fatalf("want 3 accepted (1 duplicate), 2 refused, got %+v", res)
	}
	errs := refusals(res)
	if !errors.Is(errs[0], ErrSampleTooOld) || !errors.Is(errs[0], ErrOutOfOrderSample) || !errors.Is(errs[1], ErrDuplicateSampleForTimestamp) {
		t.Fatalf("refusals: %v", errs)
	}
	// The duplicate rule against out-of-order samples themselves.
	res = mustPush(t, st, "t", ser(a, Sample{905, -1}, Sample{905, 5}))
	if res.Accepted != 1 || res.Duplicates != 1 || res.Refused != 1 || !errors.Is(res.Errors[0].Err, ErrDuplicateSampleForTimestamp) {
		t.Fatalf("duplicates of an out-of-order sample: %+v", res)
	}
	want := append(slices.Clone(in), Sample{905, -1}, Sample{955, -3})
	slices.SortFunc(want, func(x, y Sample) int { return int(x.T - y.T) })
	got := dump(t, st)["t/"+a.String()]
	if !samplesEqual(want, got) {
		t.Fatalf("read: want %v, got %v", want, got)
	}
	if v := testutil.ToFloat64(st.metrics.oooAppended.WithLabelValues("t")); v != 2 {
		t.Fatalf("cortex_ingester_tsdb_out_of_order_samples_appended_total: want 2, got %v", v)
	}
}

func TestOOO_WindowOverrideAtRunTime(t *testing.T) {
	st := mustOpen(t, oooConfig(t.TempDir(), 0))
	a := labels.FromStrings("__name__", "a")
	mustPush(t, st, "t", ser(a, Sample{1000, 1}))
	if res := mustPush(t, st, "t", ser(a, Sample{900, 1})); res.Refused != 1 {
		t.Fatalf("flag 0: want refused, got %+v", res)
	}
	win := map[string]time.Duration{"t": time.Second}
	st.SetOutOfOrderWindow(func(tenant string) time.Duration { return win[tenant] })
	if res := mustPush(t, st, "t", ser(a, Sample{900, 1})); res.Accepted != 1 {
		t.Fatalf("override 1s: want accepted, got %+v", res)
	}
	if res := mustPush(t, st, "u", ser(a, Sample{1000, 1}), ser(a, Sample{900, 1})); res.Refused != 1 {
		t.Fatalf("tenant without override: want refused, got %+v", res)
	}
	win["t"] = 50 * time.Millisecond
	st.SetOutOfOrderWindow(func(tenant string) time.Duration { return win[tenant] })
	if res := mustPush(t, st, "t", ser(a, Sample{800, 1})); res.Refused != 1 || !errors.Is(res.Errors[0].Err, ErrSampleTooOld) {
		t.Fatalf("override lowered to 50ms: want sample-too-old, got %+v", res)
	}
}

// copyWAL copies the WAL file of a running store, as a kill -9 would leave it (every acknowledged
// commit is fsynced), into a new directory.
func copyWAL(t *testing.T, dir string) string {
	t.Helper()
	dst := t.TempDir()
	src, err := os.Open(filepath.Join(dir, "wal.bolt"))
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	out, err := os.Create(filepath.Join(dst, "wal.bolt"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, src); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
	return dst
}

// TestOOO_PropertyReadEqualsAcceptedAndReplay pushes random interleavings within the window, from
// several series, and checks that every reader (Select, ForEachSeries, ExportSeries) returns the
// sorted, de-duplicated set of accepted samples in non-overlapping chunks; then that a replay (of
// a copy of the live WAL, as after a kill, with the window now 0) gives the same.
func TestOOO_PropertyReadEqualsAcceptedAndReplay(t *testing.T) {
	for seed := uint64(1); seed <= 8; seed++ {
		rng := rand.New(rand.NewPCG(seed, 42))
		dir := t.TempDir()
		const window = 500
		st := mustOpen(t, oooConfig(dir, window*time.Millisecond))
		lsets := []labels.Labels{labels.FromStrings("__name__", "a"), labels.FromStrings("__name__", "b"), labels.FromStrings("__name__", "c")}
		accepted := map[string]map[int64]float64{}
		for _, l := range lsets {
			accepted["t/"+l.String()] = map[int64]float64{}
		}
		newest := map[string]int64{}
		for push := 0; push < 300; push++ {
			var batch []SeriesSamples
			for _, l := range lsets {
				if rng.IntN(3) == 0 {
					continue
				}
				var smps []Sample
				for k := rng.IntN(5); k >= 0; k-- {
					base := newest["t/"+l.String()]
					ts := base + int64(rng.IntN(40)) - 25 - int64(rng.IntN(2))*int64(rng.IntN(window+100))
					v := float64(rng.IntN(4)) // few values: duplicates with the same value happen
					smps = append(smps, Sample{ts, v})
				}
				batch = append(batch, ser(l, smps...))
			}
			res := mustPush(t, st, "t", batch...)
			// Model: judge like the Store, sample by sample; the refusals must be the Store's, in order.
			type refusal struct {
				i   int
				t   int64
				err error
			}
			var wantRef []refusal
			for i, s := range batch {
				key := "t/" + s.Labels.String()
				acc := accepted[key]
				for _, smp := range s.Samples {
					n, has := newest[key]
					old, exists := acc[smp.T]
					switch {
					case has && smp.T < n-window:
						wantRef = append(wantRef, refusal{i, smp.T, ErrSampleTooOld})
					case exists && math.Float64bits(old) == math.Float64bits(smp.V):
					case exists:
						wantRef = append(wantRef, refusal{i, smp.T, ErrDuplicateSampleForTimestamp})
					default:
						acc[smp.T] = smp.V
						if !has || smp.T > n {
							newest[key] = smp.T
						}
					}
				}
			}
			if len(wantRef) != len(res.Errors) {
				t.Fatalf("seed %d push %d: want %d refusals, got %d: %v", seed, push, len(wantRef), len(res.Errors), res.Errors)
			}
			for k, w := range wantRef {
				g := res.Errors[k]
				if g.SeriesIndex != w.i || g.T != w.t || !errors.Is(g.Err, w.err) || (w.err == ErrDuplicateSampleForTimestamp && errors.Is(g.Err, ErrOutOfOrderSample)) {
					t.Fatalf("seed %d push %d: refusal %d: want %d@%d %v, got %d@%d %v", seed, push, k, w.i, w.t, w.err, g.SeriesIndex, g.T, g.Err)
				}
			}
		}
		want := map[string][]Sample{}
		for k, acc := range accepted {
			for ts, v := range acc {
				want[k] = append(want[k], Sample{ts, v})
			}
			slices.SortFunc(want[k], func(x, y Sample) int { return int(x.T - y.T) })
		}
		check := func(what string, st *Store) {
			t.Helper()
			requireSameData(t, want, dump(t, st))
			for _, l := range lsets {
				sel, err := st.Select("t", math.MinInt64, math.MaxInt64, labels.MustNewMatcher(labels.MatchEqual, "__name__", l.Get("__name__")))
				if err != nil || len(sel) != 1 {
					t.Fatalf("%s: select %s: %v %v", what, l, sel, err)
				}
				requireNoOverlap(t, sel[0].Chunks)
				if got := decodeChunks(t, sel[0].Chunks); !samplesEqual(want["t/"+l.String()], got) {
					t.Fatalf("seed %d %s: select %s differs", seed, what, l)
				}
				// A window inside the range.
				lo, hi := want["t/"+l.String()][10].T, want["t/"+l.String()][40].T
				sel, _ = st.Select("t", lo, hi, labels.MustNewMatcher(labels.MatchEqual, "__name__", l.Get("__name__")))
				var in []Sample
				for _, smp := range decodeChunks(t, sel[0].Chunks) {
					if smp.T >= lo && smp.T <= hi {
						in = append(in, smp)
					}
				}
				w := slices.DeleteFunc(slices.Clone(want["t/"+l.String()]), func(s Sample) bool { return s.T < lo || s.T > hi })
				if !samplesEqual(w, in) {
					t.Fatalf("seed %d %s: select [%d, %d] of %s differs", seed, what, lo, hi, l)
				}
			}
			if err := st.ExportSeries(func(s *ImportSeries) error {
				requireNoOverlap(t, s.Chunks)
				w := want[s.Tenant+"/"+s.Labels.String()]
				if s.LastV != w[len(w)-1].V {
					t.Fatalf("%s: export last value %v, want %v", what, s.LastV, w[len(w)-1].V)
				}
				return nil
			}); err != nil {
				t.Fatal(err)
			}
		}
		if n := testutil.ToFloat64(st.metrics.oooAppended.WithLabelValues("t")); n < 50 {
			t.Fatalf("seed %d: only %v samples went out of order: the test does not exercise the path", seed, n)
		}
		check("live", st)
		replayed := mustOpen(t, oooConfig(copyWAL(t, dir), 0))
		if rep := replayed.ReplayReport(); rep.Skipped != 0 {
			t.Fatalf("seed %d: replay skipped %d", seed, rep.Skipped)
		}
		check("replayed with window 0", replayed)
	}
}

func requireNoOverlap(t testing.TB, chks []Chunk) {
	t.Helper()
	for i := 1; i < len(chks); i++ {
		if chks[i].MinTime <= chks[i-1].MaxTime {
			t.Fatalf("chunk %d [%d, %d] overlaps chunk %d [%d, %d]", i, chks[i].MinTime, chks[i].MaxTime, i-1, chks[i-1].MinTime, chks[i-1].MaxTime)
		}
	}
}

// TestOOO_HandOverImport exports a series with out-of-order samples and imports it into another
// Store, as a hand-over does: the joiner holds the same samples.
func TestOOO_HandOverImport(t *testing.T) {
	src := mustOpen(t, oooConfig(t.TempDir(), time.Hour))
	a := labels.FromStrings("__name__", "a")
	var in []Sample
	for ts := int64(0); ts < 500; ts++ {
		in = append(in, Sample{ts * 1000, float64(ts)})
	}
	mustPush(t, src, "t", ser(a, in...))
	for ts := int64(0); ts < 100; ts++ {
		mustPush(t, src, "t", ser(a, Sample{ts*1000 + 500, -float64(ts)}))
	}
	dst := mustOpen(t, testConfig(t.TempDir()))
	var batch []ImportSeries
	if err := src.ExportSeries(func(s *ImportSeries) error {
		c := *s
		c.Chunks = slices.Clone(s.Chunks)
		for i := range c.Chunks {
			c.Chunks[i].Data = slices.Clone(c.Chunks[i].Data)
		}
		batch = append(batch, c)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := dst.ImportBatch(batch); err != nil {
		t.Fatal(err)
	}
	requireSameData(t, dump(t, src), dump(t, dst))
	if n := len(dump(t, dst)["t/"+a.String()]); n != 600 {
		t.Fatalf("joiner: want 600 samples, got %d", n)
	}
}

// TestOOO_FlushDropKeepsLateArrivals checks the flush API: what a snapshot held is dropped, an
// out-of-order sample that arrived after the snapshot stays, in memory and in the WAL.
func TestOOO_FlushDropKeepsLateArrivals(t *testing.T) {
	dir := t.TempDir()
	st := mustOpen(t, oooConfig(dir, time.Hour))
	a := labels.FromStrings("__name__", "a")
	mustPush(t, st, "t", ser(a, Sample{1000, 1}, Sample{2000, 2}, Sample{3000, 3}))
	mustPush(t, st, "t", ser(a, Sample{1500, 15}))
	snap := func() map[uint64]FlushBound {
		bounds := map[uint64]FlushBound{}
		if err := st.SnapshotFlush(func(s *FlushSeries) error {
			bounds[s.Ref] = FlushBound{Before: 3001, OOOSeal: s.OOOSeal, OOOPending: s.OOOPending, WALSeq: s.WALSeq}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		return bounds
	}
	bounds := snap()
	mustPush(t, st, "t", ser(a, Sample{1700, 17})) // after the snapshot: not flushed
	if _, err := st.DropFlushedSeries(bounds); err != nil {
		t.Fatal(err)
	}
	got := dump(t, st)["t/"+a.String()]
	if !slices.ContainsFunc(got, func(s Sample) bool { return s.T == 1700 }) {
		t.Fatalf("late out-of-order sample dropped: %v", got)
	}
	replayed := mustOpen(t, oooConfig(copyWAL(t, dir), 0))
	if got := dump(t, replayed)["t/"+a.String()]; !slices.ContainsFunc(got, func(s Sample) bool { return s.T == 1700 }) {
		t.Fatalf("late out-of-order sample not in the WAL: %v", got)
	}
	// A second flush with nothing new drops the out-of-order samples too.
	bounds = snap()
	if _, err := st.DropFlushedSeries(bounds); err != nil {
		t.Fatal(err)
	}
	if got := dump(t, st)["t/"+a.String()]; len(got) != 0 {
		t.Fatalf("after a clean flush: want nothing below 3001, got %v", got)
	}
}

// TestOOO_ConcurrentPushersSameSeries: pushers racing on the same series, each sending samples in
// and out of order (within the window), with group commits in between: every acknowledged sample
// is readable with its value once the pushes return, and a replay of the WAL gives the same data.
func TestOOO_ConcurrentPushersSameSeries(t *testing.T) {
	dir := t.TempDir()
	st := mustOpen(t, oooConfig(dir, time.Hour))
	lsets := []labels.Labels{labels.FromStrings("__name__", "a"), labels.FromStrings("__name__", "b")}
	const pushers, pushes = 6, 200
	type ack struct {
		key string
		s   Sample
	}
	acks := make(chan ack, pushers*pushes*4)
	done := make(chan struct{})
	for p := range pushers {
		go func() {
			defer func() { done <- struct{}{} }()
			rng := rand.New(rand.NewPCG(uint64(p), 9))
			for i := range pushes {
				l := lsets[rng.IntN(len(lsets))]
				// Timestamps unique per pusher (ts*pushers+p): no duplicate refusals between pushers.
				ts := int64(i*10+rng.IntN(10)-rng.IntN(2)*rng.IntN(500))*pushers + int64(p) + 1_000_000
				smp := Sample{ts, float64(ts)}
				res, err := st.Push("t", []SeriesSamples{ser(l, smp)})
				if err != nil {
					t.Error(err)
					return
				}
				if res.Refused == 0 {
					acks <- ack{"t/" + l.String(), smp}
				} else if !errors.Is(res.Errors[0].Err, ErrDuplicateSampleForTimestamp) {
					// The same pusher may repeat a timestamp: only that refusal is expected.
					t.Errorf("refused %v: %v", smp, res.Errors[0].Err)
				}
			}
		}()
	}
	for range pushers {
		<-done
	}
	close(acks)
	want := map[string]map[int64]float64{}
	for a := range acks {
		if want[a.key] == nil {
			want[a.key] = map[int64]float64{}
		}
		want[a.key][a.s.T] = a.s.V
	}
	check := func(what string, got map[string][]Sample) {
		t.Helper()
		n := 0
		for key, w := range want {
			g := got[key]
			for i := 1; i < len(g); i++ {
				if g[i].T <= g[i-1].T {
					t.Fatalf("%s: %s not sorted at %d", what, key, i)
				}
			}
			have := map[int64]float64{}
			for _, s := range g {
				have[s.T] = s.V
			}
			for ts, v := range w {
				if hv, ok := have[ts]; !ok || hv != v {
					t.Fatalf("%s: %s: acknowledged sample at %d missing or wrong (%v, %v)", what, key, ts, hv, ok)
				}
				n++
			}
			if len(g) != len(w) {
				t.Fatalf("%s: %s holds %d samples, %d acknowledged", what, key, len(g), len(w))
			}
		}
		if n < pushers*pushes/2 {
			t.Fatalf("%s: only %d samples acknowledged", what, n)
		}
	}
	live := dump(t, st)
	check("live", live)
	replayed := mustOpen(t, oooConfig(copyWAL(t, dir), 0))
	check("replayed", dump(t, replayed))
	if n := testutil.ToFloat64(st.metrics.oooAppended.WithLabelValues("t")); n == 0 {
		t.Fatal("nothing went out of order")
	}
}

// BenchmarkAppendOutOfOrder is BenchmarkAppend (no WAL, 1000 series, 15 s spacing) with every
// series receiving, beside its in-order sample, one sample 7.5 s older than its previous one (out
// of order). It reports the cost per sample and the memory per out-of-order sample once they are
// cut into chunks (oooCap at a time), and checks that reads give every sample back.
func BenchmarkAppendOutOfOrder(b *testing.B) {
	st := mustOpen(b, oooConfig("", time.Hour))
	batch := benchBatch(1000, 0)
	for i := range batch {
		batch[i].Samples = make([]Sample, 2)
	}
	rng := rand.New(rand.NewPCG(1, 1))
	vals := make([]float64, len(batch))
	var ts int64 = 1_000_000
	b.ReportAllocs()
	n := 0
	for b.Loop() {
		ts += 15_000
		for i := range batch {
			vals[i] += float64(rng.IntN(1000))
			batch[i].Samples[0] = Sample{T: ts, V: vals[i]}
			batch[i].Samples[1] = Sample{T: ts - 22_500, V: vals[i] - 1}
		}
		res, err := st.Push("u", batch)
		if err != nil || res.Refused > 0 {
			b.Fatal(err, res.Errors)
		}
		n++
	}
	samples := float64(n) * float64(len(batch)) * 2
	var oooBytes, oooSamples int
	th := st.tenant("u")
	th.series.forEach(func(ms *memSeries) bool {
		ms.mu.Lock()
		defer ms.mu.Unlock()
		for _, c := range ms.ooo.chunks {
			oooBytes += len(c.Data) + int(unsafe.Sizeof(c))
		}
		oooBytes += cap(ms.ooo.head) * int(unsafe.Sizeof(Sample{}))
		oooSamples += int(ms.ooo.applied)
		return true
	})
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/samples, "ns/sample")
	b.ReportMetric(float64(oooBytes)/float64(oooSamples), "B/ooo-sample")
	if got := len(dump(b, st)); got != len(batch) {
		b.Fatalf("%d series read back", got)
	}
}
