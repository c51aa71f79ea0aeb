package memstore

import (
	"errors"
	"fmt"
	"math"
	"math/rand"
	"path/filepath"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/value"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	bolt "go.etcd.io/bbolt"
)

// testHist is an exponential integer histogram whose counts grow with i.
func testHist(i int) *histogram.Histogram {
	n := uint64(i)
	return &histogram.Histogram{
		Schema:          1,
		ZeroThreshold:   0.001,
		ZeroCount:       n,
		Count:           5*n + 2,
		Sum:             float64(i) * 1.5,
		PositiveSpans:   []histogram.Span{{Offset: 0, Length: 2}, {Offset: 1, Length: 1}},
		PositiveBuckets: []int64{int64(n), 0, int64(n) + 1}, // deltas: n, n, 2n+1
		NegativeSpans:   []histogram.Span{{Offset: 0, Length: 1}},
		NegativeBuckets: []int64{1},
	}
}

// testCustomHist is a custom-buckets (NHCB, schema -53) integer histogram.
func testCustomHist(i int) *histogram.Histogram {
	n := uint64(i)
	return &histogram.Histogram{
		Schema:          histogram.CustomBucketsSchema,
		Count:           3 * n,
		Sum:             float64(i),
		PositiveSpans:   []histogram.Span{{Offset: 0, Length: 3}},
		PositiveBuckets: []int64{int64(n), 0, 0},
		CustomValues:    []float64{0.1, 1, 10},
	}
}

// seedHistograms is a histograms record's entries for the fuzz seeds: integer, float, custom
// buckets, a stale marker.
func seedHistograms() []walHistograms {
	return []walHistograms{
		{Ref: 1, Histograms: []HistSample{{T: 10, H: testHist(1)}, {T: 20, H: testHist(2)}, {T: 30, H: &histogram.Histogram{Sum: math.Float64frombits(value.StaleNaN)}}}},
		{Ref: 2, Histograms: []HistSample{{T: -5, FH: testHist(3).ToFloat(nil)}, {T: 7, H: testCustomHist(4)}}},
	}
}

// fixCount sets h.Count to the sum of its buckets (bucket counts are deltas).
func fixCount(h *histogram.Histogram) *histogram.Histogram {
	n := h.ZeroCount
	for _, bs := range [][]int64{h.PositiveBuckets, h.NegativeBuckets} {
		var abs int64
		for _, d := range bs {
			abs += d
			n += uint64(abs)
		}
	}
	h.Count = n
	return h
}

// histOut is one decoded sample of any kind, for comparisons.
type histOut struct {
	T    int64
	Kind chunkenc.ValueType
	V    string
	Enc  chunkenc.Encoding
}

// decodeAll returns every sample of chunks, histograms rendered with their counter reset hint.
func decodeAll(t testing.TB, chks []Chunk) []histOut {
	t.Helper()
	var out []histOut
	for _, c := range chks {
		ch, err := chunkenc.FromData(c.Encoding, c.Data)
		if err != nil {
			t.Fatal(err)
		}
		it := ch.Iterator(nil)
		for vt := it.Next(); vt != chunkenc.ValNone; vt = it.Next() {
			o := histOut{Kind: vt, Enc: c.Encoding}
			switch vt {
			case chunkenc.ValFloat:
				var v float64
				o.T, v = it.At()
				o.V = fmt.Sprint(math.Float64bits(v))
			case chunkenc.ValHistogram:
				var h *histogram.Histogram
				o.T, h = it.AtHistogram(nil)
				o.V = h.String() + fmt.Sprintf(" sum=%x", math.Float64bits(h.Sum))
			case chunkenc.ValFloatHistogram:
				var h *histogram.FloatHistogram
				o.T, h = it.AtFloatHistogram(nil)
				o.V = h.String() + fmt.Sprintf(" sum=%x", math.Float64bits(h.Sum))
			}
			if o.T < c.MinTime || o.T > c.MaxTime {
				t.Fatalf("sample at %d outside its chunk [%d, %d]", o.T, c.MinTime, c.MaxTime)
			}
			out = append(out, o)
		}
		if err := it.Err(); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// dumpHist returns every series' samples of every kind.
func dumpHist(t testing.TB, st *Store) map[string][]histOut {
	t.Helper()
	out := map[string][]histOut{}
	if err := st.ForEachSeries(func(tenant string, lset labels.Labels, chks []Chunk) error {
		out[tenant+"/"+lset.String()] = decodeAll(t, chks)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

func mustPushHist(t testing.TB, st *Store, tenant string, lset labels.Labels, hs ...HistSample) PushResult {
	t.Helper()
	res, err := st.PushHistograms(tenant, []SeriesHistograms{{Labels: lset, Histograms: hs}})
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func selectAll(t testing.TB, st *Store, lset labels.Labels) []Chunk {
	t.Helper()
	ss, err := st.Select("t", math.MinInt64, math.MaxInt64, labels.MustNewMatcher(labels.MatchEqual, "__name__", lset.Get("__name__")))
	if err != nil || len(ss) != 1 {
		t.Fatalf("select: %v, %d series", err, len(ss))
	}
	return ss[0].Chunks
}

func TestHistograms_AppendSelectReplay(t *testing.T) {
	for _, withWAL := range []bool{true, false} {
		t.Run(fmt.Sprintf("wal=%v", withWAL), func(t *testing.T) {
			dir := t.TempDir()
			cfg := testConfig(dir)
			if !withWAL {
				cfg.WALDir = ""
			}
			st := mustOpen(t, cfg)
			lset := labels.FromStrings("__name__", "h")
			var hs []HistSample
			for i := range 300 {
				hs = append(hs, HistSample{T: int64(i) * 1000, H: testHist(i)})
			}
			// A counter reset at 300: the appender cuts a chunk whose header says so.
			hs = append(hs, HistSample{T: 300_000, H: testHist(1)})
			res := mustPushHist(t, st, "t", lset, hs...)
			if res.Accepted != len(hs) || res.Refused != 0 {
				t.Fatalf("accepted %d refused %d: %v", res.Accepted, res.Refused, res.Errors)
			}
			chks := selectAll(t, st, lset)
			got := decodeAll(t, chks)
			if len(got) != len(hs) {
				t.Fatalf("got %d samples, want %d", len(got), len(hs))
			}
			for i, h := range hs {
				if got[i].T != h.T || got[i].Kind != chunkenc.ValHistogram {
					t.Fatalf("sample %d: %+v", i, got[i])
				}
			}
			last := chks[len(chks)-1]
			if last.Encoding != chunkenc.EncHistogram {
				t.Fatalf("last chunk encoding %v", last.Encoding)
			}
			c, _ := chunkenc.FromData(last.Encoding, last.Data)
			if hdr := c.(*chunkenc.HistogramChunk).GetCounterResetHeader(); hdr != chunkenc.CounterReset || last.MinTime != 300_000 {
				t.Fatalf("reset chunk: header %v, min %d", hdr, last.MinTime)
			}
			for _, ch := range chks[:len(chks)-1] {
				if c, _ := chunkenc.FromData(ch.Encoding, ch.Data); c.NumSamples() > samplesPerChunk {
					t.Fatalf("chunk of %d samples", c.NumSamples())
				}
			}
			if !withWAL {
				return
			}
			before := dumpHist(t, st)
			if err := st.Close(); err != nil {
				t.Fatal(err)
			}
			st2 := mustOpen(t, cfg)
			if after := dumpHist(t, st2); !reflect.DeepEqual(before, after) {
				t.Fatal("replay differs from memory")
			}
			if rep := st2.ReplayReport(); rep.Samples != len(hs) || rep.Skipped != 0 {
				t.Fatalf("replay report %+v", rep)
			}
		})
	}
}

func TestHistograms_DuplicatesAndOutOfOrder(t *testing.T) {
	st := mustOpen(t, testConfig(t.TempDir()))
	lset := labels.FromStrings("__name__", "h")
	mustPushHist(t, st, "t", lset, HistSample{T: 10, H: testHist(1)}, HistSample{T: 20, H: testHist(2)})
	// Identical at the newest timestamp: accepted silently.
	res := mustPushHist(t, st, "t", lset, HistSample{T: 20, H: testHist(2)})
	if res.Accepted != 1 || res.Duplicates != 1 {
		t.Fatalf("identical duplicate: %+v", res)
	}
	// Different histogram, float histogram, float: refused as duplicates.
	for _, h := range []HistSample{{T: 20, H: testHist(3)}, {T: 20, FH: testHist(2).ToFloat(nil)}} {
		res = mustPushHist(t, st, "t", lset, h)
		if res.Refused != 1 || !errors.Is(res.Errors[0].Err, ErrDuplicateSampleForTimestamp) {
			t.Fatalf("different duplicate %v: %+v", h, res)
		}
	}
	res = mustPush(t, st, "t", ser(lset, Sample{T: 20, V: 0}))
	if res.Refused != 1 || !errors.Is(res.Errors[0].Err, ErrDuplicateSampleForTimestamp) {
		t.Fatalf("float at a histogram's timestamp: %+v", res)
	}
	// Older: refused, with the out-of-order window too; floats as well once histograms are there.
	st.SetOutOfOrderWindow(func(string) time.Duration { return time.Hour })
	res = mustPushHist(t, st, "t", lset, HistSample{T: 15, H: testHist(1)})
	if res.Refused != 1 || !errors.Is(res.Errors[0].Err, ErrOutOfOrderHistogram) || !errors.Is(res.Errors[0].Err, ErrOutOfOrderSample) {
		t.Fatalf("out-of-order histogram: %+v", res)
	}
	res = mustPush(t, st, "t", ser(lset, Sample{T: 15, V: 1}))
	if res.Refused != 1 || !errors.Is(res.Errors[0].Err, ErrOutOfOrderHistogram) {
		t.Fatalf("out-of-order float of a histogram series: %+v", res)
	}
	// Invalid histograms are refused with the reason.
	bad := testHist(5)
	bad.Count = 1
	res = mustPushHist(t, st, "t", lset, HistSample{T: 30, H: bad})
	if res.Refused != 1 || !errors.Is(res.Errors[0].Err, ErrInvalidHistogram) {
		t.Fatalf("invalid histogram: %+v", res)
	}
	if got := decodeAll(t, selectAll(t, st, lset)); len(got) != 2 {
		t.Fatalf("want the 2 first samples, got %v", got)
	}
}

func TestHistograms_MixedKindsAndStaleMarkers(t *testing.T) {
	cfg := testConfig(t.TempDir())
	st := mustOpen(t, cfg)
	lset := labels.FromStrings("__name__", "m")
	stale := math.Float64frombits(value.StaleNaN)
	mustPush(t, st, "t", ser(lset, Sample{1, 1}, Sample{2, 2}))
	mustPushHist(t, st, "t", lset, HistSample{T: 3, H: testHist(1)}, HistSample{T: 4, H: testHist(2)})
	mustPush(t, st, "t", ser(lset, Sample{5, stale})) // into the histogram chunk as a histogram stale marker
	mustPushHist(t, st, "t", lset, HistSample{T: 6, FH: testHist(3).ToFloat(nil)}, HistSample{T: 7, H: testCustomHist(2)})
	mustPush(t, st, "t", ser(lset, Sample{8, 3}, Sample{9, stale}))
	chks := selectAll(t, st, lset)
	var encs []chunkenc.Encoding
	for _, c := range chks {
		encs = append(encs, c.Encoding)
	}
	want := []chunkenc.Encoding{chunkenc.EncXOR, chunkenc.EncHistogram, chunkenc.EncFloatHistogram, chunkenc.EncHistogram, chunkenc.EncXOR}
	if !reflect.DeepEqual(encs, want) {
		t.Fatalf("chunk encodings %v, want %v", encs, want)
	}
	got := decodeAll(t, chks)
	if len(got) != 9 {
		t.Fatalf("%d samples: %v", len(got), got)
	}
	if got[4].T != 5 || got[4].Kind != chunkenc.ValHistogram || got[4].V != (&histogram.Histogram{Sum: stale}).String()+fmt.Sprintf(" sum=%x", value.StaleNaN) {
		t.Fatalf("stale marker: %+v", got[4])
	}
	before := dumpHist(t, st)
	st.Close()
	st2 := mustOpen(t, cfg)
	if after := dumpHist(t, st2); !reflect.DeepEqual(before, after) {
		t.Fatalf("replay differs:\n%v\n%v", before, after)
	}
}

func TestHistograms_TruncateFiltersWAL(t *testing.T) {
	cfg := testConfig(t.TempDir())
	st := mustOpen(t, cfg)
	lset := labels.FromStrings("__name__", "h")
	var hs []HistSample
	for i := range 250 {
		hs = append(hs, HistSample{T: int64(i), FH: testHist(i).ToFloat(nil)})
	}
	mustPushHist(t, st, "t", lset, hs[:100]...)
	mustPushHist(t, st, "t", lset, hs[100:]...)
	if _, err := st.Truncate(120); err != nil {
		t.Fatal(err)
	}
	mem := decodeAll(t, selectAll(t, st, lset))
	st.Close()
	st2 := mustOpen(t, cfg)
	rep := decodeAll(t, selectAll(t, st2, lset))
	// Memory keeps whole chunks reaching 120; the WAL keeps histograms from 120 on.
	if rep[0].T != 120 || len(rep) != 130 || !reflect.DeepEqual(mem[len(mem)-130:], rep) {
		t.Fatalf("after truncate: memory from %d (%d), replay from %d (%d)", mem[0].T, len(mem), rep[0].T, len(rep))
	}
}

// TestHistograms_Property pushes random sequences of histograms of every kind (growing counts,
// counter resets, bucket layouts that grow and shrink, schema changes, gauges, stale markers,
// floats) in random batches, and checks that memory holds exactly the accepted samples, in order,
// each equal to what was pushed (chunkenc recodes layouts, so histograms are compared after
// Compact), and that replay rebuilds the same memory.
func TestHistograms_Property(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	for iter := range 20 {
		cfg := testConfig(t.TempDir())
		cfg.WALSync = false // replay is what is checked, not durability
		st := mustOpen(t, cfg)
		lset := labels.FromStrings("__name__", "p", "i", fmt.Sprint(iter))
		type pushed struct {
			t int64
			f *float64
			h *histogram.FloatHistogram
		}
		var want []pushed
		tm := int64(0)
		var cur *histogram.Histogram = testHist(1)
		for range 400 {
			tm += 1 + rng.Int63n(3)
			switch r := rng.Intn(20); {
			case r == 0:
				v := rng.Float64()
				mustPush(t, st, "t", ser(lset, Sample{tm, v}))
				want = append(want, pushed{t: tm, f: &v})
				continue
			case r == 1:
				cur = testHist(rng.Intn(3)) // counter reset
			case r == 2:
				cur = testCustomHist(rng.Intn(5) + 1)
			case r == 3:
				// A new bucket appears.
				c := cur.Copy()
				c.PositiveSpans = append(c.PositiveSpans, histogram.Span{Offset: int32(rng.Intn(3)), Length: 1})
				c.PositiveBuckets = append(c.PositiveBuckets, 1)
				cur = fixCount(c)
			default:
				c := cur.Copy()
				c.PositiveBuckets[0]++
				c.Sum++
				cur = fixCount(c)
			}
			if err := cur.Validate(); err != nil {
				// Keep the generator honest: only valid histograms.
				cur = testHist(1)
			}
			h := HistSample{T: tm, H: cur}
			if rng.Intn(4) == 0 {
				h = HistSample{T: tm, FH: cur.ToFloat(nil)}
			}
			res := mustPushHist(t, st, "t", lset, h)
			if res.Accepted != 1 {
				t.Fatalf("iter %d: %+v", iter, res)
			}
			fh := cur.ToFloat(nil)
			want = append(want, pushed{t: tm, h: fh})
		}
		got := decodeAll(t, selectAll(t, st, lset))
		if len(got) != len(want) {
			t.Fatalf("iter %d: %d samples, want %d", iter, len(got), len(want))
		}
		it := 0
		for _, c := range selectAll(t, st, lset) {
			ch, _ := chunkenc.FromData(c.Encoding, c.Data)
			ci := ch.Iterator(nil)
			for vt := ci.Next(); vt != chunkenc.ValNone; vt = ci.Next() {
				w := want[it]
				it++
				switch vt {
				case chunkenc.ValFloat:
					ts, v := ci.At()
					if w.f == nil || ts != w.t || v != *w.f {
						t.Fatalf("iter %d sample %d: float %d %v, want %+v", iter, it, ts, v, w)
					}
				default:
					ts, fh := ci.AtFloatHistogram(nil)
					if w.h == nil || ts != w.t {
						t.Fatalf("iter %d sample %d: histogram at %d, want %+v", iter, it, ts, w)
					}
					if err := fh.Validate(); err != nil {
						t.Fatalf("iter %d sample %d at %d: invalid histogram from the chunk: %v (want %v)", iter, it, ts, err, w.h)
					}
					if !fh.Copy().Compact(0).Equals(w.h.Copy().Compact(0)) { // fh aliases the iterator's state: Compact a copy
						t.Fatalf("iter %d sample %d: %v, want %v", iter, it, fh, w.h)
					}
				}
			}
		}
		before := dumpHist(t, st)
		st.Close()
		st2 := mustOpen(t, cfg)
		if after := dumpHist(t, st2); !reflect.DeepEqual(before, after) {
			t.Fatalf("iter %d: replay differs", iter)
		}
		st2.Close()
	}
}

// TestHistograms_ExportImport hands a store's series over to another one (ExportSeries →
// ImportBatch, as transfer does), replays the receiver's WAL, and checks the frontier: an equal
// histogram at the newest timestamp is an idempotent duplicate, another one is refused.
func TestHistograms_ExportImport(t *testing.T) {
	src := mustOpen(t, testConfig(t.TempDir()))
	a, b := labels.FromStrings("__name__", "a"), labels.FromStrings("__name__", "b")
	var hs []HistSample
	for i := range 250 {
		hs = append(hs, HistSample{T: int64(i), H: testHist(i)})
	}
	mustPushHist(t, src, "t", a, hs...)
	mustPush(t, src, "t", ser(b, Sample{1, 1}))
	mustPushHist(t, src, "t", b, HistSample{T: 2, FH: testHist(1).ToFloat(nil)}, HistSample{T: 3, H: testCustomHist(1)})
	want := dumpHist(t, src)

	cfg := testConfig(t.TempDir())
	dst := mustOpen(t, cfg)
	var batch []ImportSeries
	if err := src.ExportSeries(func(s *ImportSeries) error {
		c := *s
		c.Labels = s.Labels.Copy()
		c.Chunks = nil
		for _, ch := range s.Chunks {
			ch.Data = slices.Clone(ch.Data)
			c.Chunks = append(c.Chunks, ch)
		}
		batch = append(batch, c)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := dst.ImportBatch(batch); err != nil {
		t.Fatal(err)
	}
	if got := dumpHist(t, dst); !reflect.DeepEqual(want, got) {
		t.Fatal("imported data differs")
	}
	if res := mustPushHist(t, dst, "t", a, hs[len(hs)-1]); res.Duplicates != 1 {
		t.Fatalf("equal histogram at the imported frontier: %+v", res)
	}
	if res := mustPushHist(t, dst, "t", a, HistSample{T: hs[len(hs)-1].T, H: testHist(1)}); res.Refused != 1 {
		t.Fatalf("other histogram at the imported frontier: %+v", res)
	}
	if res := mustPushHist(t, dst, "t", b, HistSample{T: 3, H: testCustomHist(1)}); res.Duplicates != 1 {
		t.Fatalf("equal custom-buckets histogram at the imported frontier: %+v", res)
	}
	mustPushHist(t, dst, "t", a, HistSample{T: 1000, H: testHist(300)})
	want = dumpHist(t, dst)
	dst.Close()
	dst = mustOpen(t, cfg)
	if got := dumpHist(t, dst); !reflect.DeepEqual(want, got) {
		t.Fatal("replayed import differs")
	}
	// A damaged histogram chunk is refused before anything is logged.
	bad := batch[0]
	bad.Tenant = "u"
	bad.Chunks = []Chunk{bad.Chunks[0]}
	bad.Chunks[0].Data = slices.Clone(bad.Chunks[0].Data)
	bad.Chunks[0].Data[len(bad.Chunks[0].Data)/2] ^= 0xff
	bad.Chunks[0].MaxTime++
	if err := dst.ImportBatch([]ImportSeries{bad}); !errors.Is(err, ErrInvalidChunk) {
		t.Fatalf("damaged chunk: %v", err)
	}
}

// The WAL file's meta/format is raised from 3 to 4 in the transaction of its first histograms
// (or exemplars) record, so a build that does not know types 5 and 7 refuses the file at Open
// rather than cutting the WAL there; a file without them stays at 3; a format 4 file opens and
// replays.
func TestWALFormatRaisedOnFirstUse(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(dir)
	format := func() byte {
		t.Helper()
		db, err := bolt.Open(filepath.Join(dir, WALFileName), 0o600, &bolt.Options{ReadOnly: true})
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		var f byte
		if err := db.View(func(tx *bolt.Tx) error {
			f = tx.Bucket(bucketMeta).Get(keyFormat)[0]
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		return f
	}
	st := mustOpen(t, cfg)
	mustPush(t, st, "t", ser(labels.FromStrings("__name__", "f"), Sample{1, 1}))
	st.Close()
	if f := format(); f != walFormatVersion {
		t.Fatalf("format %d after floats only, want %d", f, walFormatVersion)
	}
	st = mustOpen(t, cfg)
	mustPushHist(t, st, "t", labels.FromStrings("__name__", "h"), HistSample{T: 1, H: testHist(1)})
	st.Close()
	if f := format(); f != walFormatExtended {
		t.Fatalf("format %d after a histogram, want %d", f, walFormatExtended)
	}
	st = mustOpen(t, cfg)
	if got := dumpHist(t, st); len(got) != 2 {
		t.Fatalf("replayed %d series, want 2", len(got))
	}
	st.Close()

	// Exemplars records (type 7) raise a format 3 file the same way.
	dir = t.TempDir()
	cfg = testConfig(dir)
	st = mustOpen(t, cfg)
	st.SetExemplarLimit(limitOf(10))
	mustPush(t, st, "t", ser(labels.FromStrings("__name__", "f"), Sample{1, 1}))
	st.Close()
	if f := format(); f != walFormatVersion {
		t.Fatalf("format %d before any exemplar, want %d", f, walFormatVersion)
	}
	st = mustOpen(t, cfg)
	st.SetExemplarLimit(limitOf(10))
	pushEx(t, st, "t", labels.FromStrings("__name__", "f"), Sample{2, 2}, ex("tr", 2, 2))
	st.Close()
	if f := format(); f != walFormatExtended {
		t.Fatalf("format %d after an exemplar, want %d", f, walFormatExtended)
	}
}
