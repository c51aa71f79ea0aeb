package memstore

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"math/rand"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/value"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
)

// exportBatch returns src's series as an import batch that owns its memory.
func exportBatch(t testing.TB, src *Store) []ImportSeries {
	t.Helper()
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
	return batch
}

// rawHistChunk encodes hs (at T = 1, 2, ...) in one chunk with chunkenc's appender, as a crafted
// import would: nothing validates them on the way.
func rawHistChunk(t testing.TB, hs ...*histogram.Histogram) Chunk {
	t.Helper()
	c := chunkenc.NewHistogramChunk()
	app, err := c.Appender()
	if err != nil {
		t.Fatal(err)
	}
	for i, h := range hs {
		nc, _, na, err := app.AppendHistogram(nil, int64(i+1), h, false)
		if err != nil || nc != nil {
			t.Fatalf("append %d: %v, new chunk %v", i, err, nc != nil)
		}
		app = na
	}
	return Chunk{MinTime: 1, MaxTime: int64(len(hs)), Encoding: chunkenc.EncHistogram, Data: c.Bytes()}
}

// randImportHist is a random histogram, biased towards the shapes that make chunkenc's appenders
// widen a chunk's layout oddly: few buckets near index 0 that come and go, empty buckets, custom
// buckets, and now and then indexes at ±maxBucketIndex (so a chunk's layout offsets reach
// MaxInt32) or beyond. Callers keep those validHist accepts.
func randImportHist(r *rand.Rand) *histogram.Histogram {
	spans := func() []histogram.Span {
		var ss []histogram.Span
		for i := range r.Intn(4) {
			var off int32
			switch k := r.Intn(10); {
			case k < 6:
				off = int32(r.Intn(3))
			case k < 8:
				off = int32(r.Intn(100))
			case k == 8 && i == 0:
				off = -int32(r.Intn(50))
			case k == 9 && i == 0 && r.Intn(2) == 0:
				off = maxBucketIndex - int32(r.Intn(3)) // at the bound and past it
			case k == 9 && i == 0:
				off = -maxBucketIndex - int32(r.Intn(3)) + 1
			case k == 9:
				off = math.MaxInt32 - int32(r.Intn(3)) // refused by the push path
			}
			ss = append(ss, histogram.Span{Offset: off, Length: uint32(r.Intn(3))})
		}
		return ss
	}
	h := &histogram.Histogram{Schema: int32(r.Intn(13) - 4), ZeroThreshold: []float64{0, 0.001, 1}[r.Intn(3)]}
	if r.Intn(6) == 0 {
		h.Schema, h.ZeroThreshold = histogram.CustomBucketsSchema, 0
		h.PositiveSpans = []histogram.Span{{Offset: int32(r.Intn(2)), Length: uint32(r.Intn(3))}}
		h.CustomValues = []float64{1, 2, 3, 4}
	} else {
		h.PositiveSpans, h.NegativeSpans = spans(), spans()
		h.ZeroCount = uint64(r.Intn(3))
	}
	for _, sp := range h.PositiveSpans {
		for range sp.Length {
			h.PositiveBuckets = append(h.PositiveBuckets, int64(r.Intn(3))-1)
		}
	}
	for _, sp := range h.NegativeSpans {
		for range sp.Length {
			h.NegativeBuckets = append(h.NegativeBuckets, int64(r.Intn(3))-1)
		}
	}
	h.Sum = float64(r.Intn(10))
	if r.Intn(10) == 0 {
		h.CounterResetHint = histogram.GaugeType
	}
	return fixCount(h)
}

// Every chunk the store builds from valid histograms passes its own import check, so a series can
// always be handed over, and reads back what was pushed: random valid histogram sequences (integer
// and float, exponential and custom buckets, counter resets, layouts that come and go, stale
// markers) are pushed, every chunk is read whole and checked, every sample compared with its push
// (empty buckets aside), and ExportSeries → ImportBatch must restore every sample; a retried push
// of each series' last histogram is then a duplicate on the joiner as on the leaver.
func TestHistograms_OwnChunksPassImportCheck(t *testing.T) {
	// Regressions first: layouts chunkenc makes that histogram.Validate refuses.
	type seq struct {
		name string
		hs   []HistSample
	}
	var seqs []seq
	for _, custom := range []bool{false, true} {
		for _, float := range []bool{false, true} {
			// Float histograms at T=1,2,3 with their one empty bucket at index 0, 1, 0: the float
			// appender widens the chunk's layout to [{0 2} {-1 1}].
			var hs []HistSample
			for i, off := range []int32{0, 1, 0} {
				h := &histogram.Histogram{PositiveSpans: []histogram.Span{{Offset: off, Length: 1}}, PositiveBuckets: []int64{0}}
				if custom {
					h.Schema, h.CustomValues = histogram.CustomBucketsSchema, []float64{1, 2, 3, 4}
				}
				s := HistSample{T: int64(i + 1), H: h}
				if float {
					s = HistSample{T: s.T, FH: h.ToFloat(nil)}
				}
				hs = append(hs, s)
			}
			seqs = append(seqs, seq{fmt.Sprintf("moving-bucket custom=%v float=%v", custom, float), hs})
		}
	}
	// Float histograms whose empty buckets vanish in the next sample: chunkenc recodes the chunk
	// into the layout [{13 1} {-1 2} {-1 2} {-1 2} {-4 1}] and the second reads back other counts
	// (prometheus/prometheus#16893), unless the store compacts what it appends.
	for _, custom := range []bool{false, true} {
		a := &histogram.Histogram{Schema: 3, PositiveSpans: []histogram.Span{{Offset: 9, Length: 4}}, PositiveBuckets: []int64{0, 0, 0, 0}}
		b := fixCount(&histogram.Histogram{Schema: 3, PositiveSpans: []histogram.Span{{Offset: 13, Length: 4}}, PositiveBuckets: []int64{1, 1, 1, -1}})
		if custom {
			a.Schema, a.CustomValues = histogram.CustomBucketsSchema, []float64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}
			b.Schema, b.CustomValues = histogram.CustomBucketsSchema, a.CustomValues
		}
		seqs = append(seqs, seq{fmt.Sprintf("vanishing empty buckets custom=%v", custom), []HistSample{{T: 1, FH: a.ToFloat(nil)}, {T: 2, FH: b.ToFloat(nil)}}})
	}
	// Bucket indexes at both ends of what a push accepts: the chunk's layout offset between them
	// is MaxInt32 and does not wrap.
	seqs = append(seqs, seq{"extreme indexes", []HistSample{
		{T: 1, H: fixCount(&histogram.Histogram{Schema: 6, ZeroThreshold: 1, NegativeSpans: []histogram.Span{{Offset: maxBucketIndex, Length: 1}}, NegativeBuckets: []int64{0}})},
		{T: 2, H: fixCount(&histogram.Histogram{Schema: 6, ZeroThreshold: 1, NegativeSpans: []histogram.Span{{Offset: -maxBucketIndex, Length: 1}, {Offset: 2*maxBucketIndex - 1, Length: 1}}, NegativeBuckets: []int64{0, 1}})},
		{T: 3, FH: fixCount(&histogram.Histogram{Schema: 6, ZeroThreshold: 1, NegativeSpans: []histogram.Span{{Offset: -maxBucketIndex, Length: 1}}, NegativeBuckets: []int64{2}}).ToFloat(nil)},
		{T: 4, FH: fixCount(&histogram.Histogram{Schema: 6, ZeroThreshold: 1, NegativeSpans: []histogram.Span{{Offset: maxBucketIndex, Length: 1}}, NegativeBuckets: []int64{2}}).ToFloat(nil)},
	}})
	// Then random sequences.
	r := rand.New(rand.NewSource(7))
	stale := math.Float64frombits(value.StaleNaN)
	for n := 0; len(seqs) < 3000; n++ {
		var hs []HistSample
		for k := range 2 + r.Intn(6) {
			h := randImportHist(r)
			if validHist(HistSample{H: h}) != nil {
				continue
			}
			s := HistSample{T: int64(k + 1), H: h}
			switch r.Intn(8) {
			case 0, 1, 2, 3:
				s = HistSample{T: s.T, FH: h.ToFloat(nil)}
			case 4:
				if k > 0 {
					s.H = &histogram.Histogram{Sum: stale}
				}
			}
			hs = append(hs, s)
		}
		if len(hs) > 0 {
			seqs = append(seqs, seq{fmt.Sprintf("random %d", n), hs})
		}
	}

	src := mustOpen(t, testConfig(t.TempDir()))
	batch := make([]SeriesHistograms, len(seqs))
	for i, sq := range seqs {
		batch[i] = SeriesHistograms{Labels: labels.FromStrings("__name__", "h", "seq", fmt.Sprint(i)), Histograms: sq.hs}
	}
	res, err := src.PushHistograms("t", batch)
	if err != nil {
		t.Fatal(err)
	}
	if res.Refused != 0 {
		t.Fatalf("valid histograms refused: %+v", res.Errors[0])
	}
	describe := func(hs []HistSample) string {
		var b strings.Builder
		for _, h := range hs {
			if h.H != nil {
				fmt.Fprintf(&b, "\n  %d int schema=%d zt=%v pos=%v %v neg=%v %v sum=%v", h.T, h.H.Schema, h.H.ZeroThreshold, h.H.PositiveSpans, h.H.PositiveBuckets, h.H.NegativeSpans, h.H.NegativeBuckets, h.H.Sum)
			} else {
				fmt.Fprintf(&b, "\n  %d float schema=%d zt=%v pos=%v %v neg=%v %v sum=%v", h.T, h.FH.Schema, h.FH.ZeroThreshold, h.FH.PositiveSpans, h.FH.PositiveBuckets, h.FH.NegativeSpans, h.FH.NegativeBuckets, h.FH.Sum)
			}
		}
		return b.String()
	}
	exported := exportBatch(t, src)
	if len(exported) != len(seqs) {
		t.Fatalf("%d series exported, %d pushed", len(exported), len(seqs))
	}
	failed := 0
	for _, s := range exported {
		var i int
		fmt.Sscan(s.Labels.Get("seq"), &i)
		for _, c := range s.Chunks {
			readAllBuckets(t, c)
			if err := CheckHistogramChunk(c); err != nil {
				failed++
				if failed <= 5 {
					t.Errorf("%s: the store's own chunk fails the import check: %v; pushed:%s", seqs[i].name, err, describe(seqs[i].hs))
				}
			}
		}
	}
	if failed > 0 {
		t.Fatalf("%d of the store's chunks fail the import check", failed)
	}
	// And every sample reads back as it was pushed, but for empty buckets.
	for _, s := range exported {
		var i int
		fmt.Sscan(s.Labels.Get("seq"), &i)
		if bad := readBackDiffers(t, s.Chunks, seqs[i].hs); bad != "" {
			t.Fatalf("%s: %s; pushed:%s", seqs[i].name, bad, describe(seqs[i].hs))
		}
	}
	want := dumpHist(t, src)
	dst := mustOpen(t, testConfig(t.TempDir()))
	if err := dst.ImportBatch(exported); err != nil {
		t.Fatalf("hand-over of the store's own chunks refused: %v", err)
	}
	if got := dumpHist(t, dst); !reflect.DeepEqual(want, got) {
		t.Fatal("imported samples differ from the exported ones")
	}
	var retry []SeriesHistograms
	for _, b := range batch {
		last := b.Histograms[len(b.Histograms)-1]
		if (last.H != nil && value.IsStaleNaN(last.H.Sum)) || (last.FH != nil && value.IsStaleNaN(last.FH.Sum)) {
			continue // a stale marker's duplicate is judged by Sum bits only; not what this is about
		}
		retry = append(retry, SeriesHistograms{Labels: b.Labels, Histograms: []HistSample{last}})
	}
	for name, st := range map[string]*Store{"leaver": src, "joiner": dst} {
		res, err := st.PushHistograms("t", retry)
		if err != nil {
			t.Fatal(err)
		}
		if res.Refused != 0 || res.Duplicates != len(retry) {
			t.Fatalf("%s: retried pushes of the last histograms: %d duplicates of %d, %d refused, first: %v", name, res.Duplicates, len(retry), res.Refused, res.Errors[0])
		}
	}
}

// readBackDiffers says how the samples of chks differ from hs (empty buckets aside), or "".
func readBackDiffers(t testing.TB, chks []Chunk, hs []HistSample) string {
	t.Helper()
	n := 0
	for _, c := range chks {
		ch, err := chunkenc.FromData(c.Encoding, c.Data)
		if err != nil {
			return err.Error()
		}
		it := ch.Iterator(nil)
		for vt := it.Next(); vt != chunkenc.ValNone; vt = it.Next() {
			if n == len(hs) {
				return fmt.Sprintf("more than the %d samples pushed", len(hs))
			}
			want := hs[n]
			n++
			var ts int64
			var got string
			switch {
			case vt == chunkenc.ValHistogram && want.H != nil:
				var h *histogram.Histogram
				ts, h = it.AtHistogram(nil)
				if (value.IsStaleNaN(h.Sum) && value.IsStaleNaN(want.H.Sum)) || sameHist(h, want.H) {
					continue
				}
				got = h.String()
			case vt == chunkenc.ValFloatHistogram && want.FH != nil:
				var h *histogram.FloatHistogram
				ts, h = it.AtFloatHistogram(nil)
				if (value.IsStaleNaN(h.Sum) && value.IsStaleNaN(want.FH.Sum)) || sameFloatHist(h, want.FH) {
					continue
				}
				got = fmt.Sprintf("%v %v %v", h, h.PositiveSpans, h.PositiveBuckets)
			default:
				return fmt.Sprintf("sample %d is a %v", n-1, vt)
			}
			return fmt.Sprintf("sample at %d reads back as %s", ts, got)
		}
	}
	if n != len(hs) {
		return fmt.Sprintf("%d samples read back, %d pushed", n, len(hs))
	}
	return ""
}

// The import check applies validHist's schema rule: chunkenc decodes any schema, and bucket readers
// index tables by it (schema 9 panics).
func TestHistograms_ImportRefusesUnknownSchema(t *testing.T) {
	st := mustOpen(t, testConfig(t.TempDir()))
	for _, schema := range []int32{9, 100, -5, -40, -52, -54} {
		h := &histogram.Histogram{Schema: schema, Count: 2, Sum: 1, PositiveSpans: []histogram.Span{{Offset: 1, Length: 1}}, PositiveBuckets: []int64{2}}
		if err := validHist(HistSample{T: 1, H: h}); err == nil {
			t.Fatalf("push path accepts schema %d", schema)
		}
		for _, c := range []Chunk{rawHistChunk(t, h), floatChunkOf(t, h.ToFloat(nil))} {
			if err := CheckHistogramChunk(c); !errors.Is(err, ErrInvalidChunk) {
				t.Errorf("schema %d, %s: CheckHistogramChunk = %v", schema, c.Encoding, err)
			}
			err := st.ImportBatch([]ImportSeries{{Tenant: "t", Labels: labels.FromStrings("__name__", "h"), Chunks: []Chunk{c}}})
			if !errors.Is(err, ErrInvalidChunk) {
				t.Errorf("schema %d, %s: ImportBatch = %v", schema, c.Encoding, err)
			}
		}
	}
	// A chunk of stale markers only is refused too when its layout's schema is unknown, although
	// its samples decode with schema 0. chunkenc writes an empty layout (schema 0) for a stale first
	// sample, so the chunk is made by hand: the layout's schema 0 is the single bit 0 at the top of
	// byte 4 (after the sample count, the counter reset header and the zero threshold); schema 9 is
	// the 9 bits 110001001, so splicing it in inserts exactly one byte.
	stale := &histogram.Histogram{Sum: math.Float64frombits(value.StaleNaN)}
	good := rawHistChunk(t, stale, stale)
	if good.Data[4]&0x80 != 0 {
		t.Fatalf("unexpected stale-marker chunk layout: % x", good.Data)
	}
	bad := good
	bad.Data = slices.Concat(good.Data[:4], []byte{0xc4, good.Data[4] | 0x80}, good.Data[5:])
	lc, err := chunkenc.FromData(chunkenc.EncHistogram, slices.Concat(bad.Data[:2], bad.Data[3:]))
	if err != nil {
		t.Fatal(err)
	}
	if schema, _, _, _, _, err := lc.(*chunkenc.HistogramChunk).Layout(); schema != 9 || err != nil {
		t.Fatalf("crafted layout: schema %d, %v", schema, err)
	}
	ch, _ := chunkenc.FromData(chunkenc.EncHistogram, bad.Data)
	n := 0
	for it := ch.Iterator(nil); it.Next() == chunkenc.ValHistogram; {
		if _, h := it.AtHistogram(nil); value.IsStaleNaN(h.Sum) && h.Schema == 0 {
			n++
		}
	}
	if n != 2 {
		t.Fatalf("crafted chunk decodes %d stale markers, want 2", n)
	}
	if err := CheckHistogramChunk(good); err != nil {
		t.Fatalf("stale markers under schema 0: %v", err)
	}
	if err := CheckHistogramChunk(bad); !errors.Is(err, ErrInvalidChunk) {
		t.Errorf("stale markers under layout schema 9: CheckHistogramChunk = %v", err)
	}
	// The schemas a push accepts import.
	for _, h := range []*histogram.Histogram{testHist(3), testCustomHist(3), {Schema: -4, Count: 1, PositiveSpans: []histogram.Span{{Offset: 0, Length: 1}}, PositiveBuckets: []int64{1}}, {Schema: 8, Count: 1, PositiveSpans: []histogram.Span{{Offset: 0, Length: 1}}, PositiveBuckets: []int64{1}}} {
		if err := CheckHistogramChunk(rawHistChunk(t, h)); err != nil {
			t.Errorf("schema %d: %v", h.Schema, err)
		}
	}
}

// The import check's bucket index rule, in place of Validate's refusal of every negative offset
// after the first span: an index may repeat (chunkenc's appenders make [{0 2} {-1 1}]) but never go
// back (FloatHistogram.Add and Sub index out of range on it), exponential indexes stay within
// ±maxBucketIndex (no int32 wrap in readers), and custom-bucket indexes name a bound, in [0,
// len(bounds)], where histogram's getBound panics outside it. What is accepted is read whole,
// additions included.
func TestHistograms_ImportBucketIndexRule(t *testing.T) {
	for _, tc := range []struct {
		custom bool
		spans  []histogram.Span
		ok     bool
	}{
		{false, []histogram.Span{{Offset: 0, Length: 2}, {Offset: -1, Length: 1}}, true},                           // 0 1 1
		{false, []histogram.Span{{Offset: -5, Length: 2}, {Offset: 3, Length: 1}, {Offset: -1, Length: 2}}, true},  // -5 -4 0 0 1
		{false, []histogram.Span{{Offset: 0, Length: 2}, {Offset: -3, Length: 1}}, false},                          // 0 1 -1
		{false, []histogram.Span{{Offset: 0, Length: 2}, {Offset: -1, Length: 0}, {Offset: -1, Length: 1}}, false}, // 0 1 0
		{false, []histogram.Span{{Offset: maxBucketIndex, Length: 1}}, true},
		{false, []histogram.Span{{Offset: -maxBucketIndex, Length: 1}}, true},
		{false, []histogram.Span{{Offset: maxBucketIndex, Length: 2}}, false},
		{false, []histogram.Span{{Offset: -maxBucketIndex - 1, Length: 1}}, false},
		{false, []histogram.Span{{Offset: 40, Length: 1}, {Offset: math.MaxInt32, Length: 1}}, false}, // wraps in int32
		{true, []histogram.Span{{Offset: 0, Length: 3}}, true},                                        // bounds [1 2]: 2 is the +Inf bucket
		{true, []histogram.Span{{Offset: 0, Length: 2}, {Offset: -1, Length: 1}}, true},
		{true, []histogram.Span{{Offset: 0, Length: 4}}, false},                          // index 3 > len(bounds)
		{true, []histogram.Span{{Offset: 2, Length: 1}, {Offset: -3, Length: 1}}, false}, // 2, then 0
		{true, []histogram.Span{{Offset: 0, Length: 1}, {Offset: -3, Length: 1}}, false}, // 0, then -2
		{true, []histogram.Span{{Offset: -1, Length: 1}}, false},
		{true, []histogram.Span{{Offset: 1, Length: 1}, {Offset: math.MaxInt32, Length: 1}}, false},
	} {
		n := 0
		for _, sp := range tc.spans {
			n += int(sp.Length)
		}
		h := &histogram.Histogram{Schema: 2, PositiveSpans: tc.spans, PositiveBuckets: make([]int64, n)}
		if tc.custom {
			h.Schema, h.CustomValues = histogram.CustomBucketsSchema, []float64{1, 2}
		}
		h.PositiveBuckets[0] = 1
		fixCount(h)
		for _, c := range []Chunk{rawHistChunk(t, h), floatChunkOf(t, h.ToFloat(nil))} {
			err := CheckHistogramChunk(c)
			if tc.ok != (err == nil) {
				t.Errorf("%s custom=%v spans %v: %v", c.Encoding, tc.custom, tc.spans, err)
			}
			if err == nil {
				readAllBuckets(t, c)
			}
		}
	}
	// The push path bounds exponential indexes the same way (Validate alone allows any), so the
	// store never builds a chunk the check refuses.
	for _, tc := range []struct {
		spans []histogram.Span
		ok    bool
	}{
		{[]histogram.Span{{Offset: maxBucketIndex, Length: 1}}, true},
		{[]histogram.Span{{Offset: -maxBucketIndex, Length: 1}, {Offset: 2*maxBucketIndex - 1, Length: 1}}, true},
		{[]histogram.Span{{Offset: maxBucketIndex, Length: 2}}, false},
		{[]histogram.Span{{Offset: 40, Length: 1}, {Offset: math.MaxInt32, Length: 1}}, false},
		{[]histogram.Span{{Offset: math.MinInt32, Length: 1}}, false},
	} {
		n := 0
		for _, sp := range tc.spans {
			n += int(sp.Length)
		}
		h := fixCount(&histogram.Histogram{Schema: 2, NegativeSpans: tc.spans, NegativeBuckets: make([]int64, n)})
		if err := h.Validate(); err != nil {
			t.Fatalf("spans %v: %v", tc.spans, err)
		}
		for _, s := range []HistSample{{T: 1, H: h}, {T: 1, FH: h.ToFloat(nil)}} {
			if err := validHist(s); tc.ok != (err == nil) {
				t.Errorf("push of spans %v: %v", tc.spans, err)
			}
		}
	}
}

func floatChunkOf(t testing.TB, hs ...*histogram.FloatHistogram) Chunk {
	t.Helper()
	c := chunkenc.NewFloatHistogramChunk()
	app, err := c.Appender()
	if err != nil {
		t.Fatal(err)
	}
	for i, h := range hs {
		nc, _, na, err := app.AppendFloatHistogram(nil, int64(i+1), h, false)
		if err != nil || nc != nil {
			t.Fatalf("append %d: %v, new chunk %v", i, err, nc != nil)
		}
		app = na
	}
	return Chunk{MinTime: 1, MaxTime: int64(len(hs)), Encoding: chunkenc.EncFloatHistogram, Data: c.Bytes()}
}

// readAllBuckets decodes every histogram of c and does with it what readers do (bucket bounds and
// counts, String, conversion, compaction, the duplicate comparison, addition and subtraction of
// the histogram and its compacted copy), failing the test on a panic. (Adding another histogram
// is left out: FloatHistogram.Add panics when its receiver has a zero-length first span at the
// other's first bucket index, a layout histogram.Validate allows and pushes may carry.)
func readAllBuckets(t testing.TB, c Chunk) {
	t.Helper()
	defer func() {
		if p := recover(); p != nil {
			t.Fatalf("reading an accepted %s chunk panicked: %v; data % x", c.Encoding, p, c.Data)
		}
	}()
	ch, err := chunkenc.FromData(c.Encoding, c.Data)
	if err != nil {
		t.Fatal(err)
	}
	it := ch.Iterator(nil)
	for vt := it.Next(); vt != chunkenc.ValNone; vt = it.Next() {
		var fh *histogram.FloatHistogram
		if vt == chunkenc.ValHistogram {
			_, h := it.AtHistogram(nil)
			_ = h.String()
			for bi := h.PositiveBucketIterator(); bi.Next(); {
				_ = bi.At()
			}
			for bi := h.NegativeBucketIterator(); bi.Next(); {
				_ = bi.At()
			}
			sameHist(h, h.Copy().Compact(0))
			fh = h.ToFloat(nil)
		} else {
			_, fh = it.AtFloatHistogram(nil)
		}
		_ = fh.String()
		for bi := fh.AllBucketIterator(); bi.Next(); {
			_ = bi.At()
		}
		sameFloatHist(fh, fh.Copy().Compact(0))
		// What rate and sum do (errors, such as mixed custom bounds, are not what this is about).
		_, _ = fh.Copy().Add(fh)
		_, _ = fh.Copy().Sub(fh.Copy().Compact(0))
		_, _ = fh.Copy().Compact(0).Add(fh)
	}
}

// A crafted or damaged histogram chunk that the import check accepts never panics a reader: every
// single bit flip, truncation and random multi-byte damage of chunks the store builds (integer,
// float, custom buckets, odd layouts) is checked, and what passes is read whole.
func TestHistograms_ImportCheckGuardsReaders(t *testing.T) {
	st := mustOpen(t, testConfig(t.TempDir()))
	var hs []HistSample
	for i := range 12 {
		hs = append(hs, HistSample{T: int64(i + 1), H: testHist(i)})
	}
	mustPushHist(t, st, "t", labels.FromStrings("__name__", "a"), hs...)
	hs = hs[:0]
	for i := range 12 {
		hs = append(hs, HistSample{T: int64(i + 1), FH: testHist(i).ToFloat(nil)})
	}
	mustPushHist(t, st, "t", labels.FromStrings("__name__", "b"), hs...)
	hs = hs[:0]
	for i := range 6 {
		hs = append(hs, HistSample{T: int64(i + 1), H: testCustomHist(i)})
	}
	mustPushHist(t, st, "t", labels.FromStrings("__name__", "c"), hs...)
	hs = hs[:0]
	for i, off := range []int32{0, 1, 0, 2} {
		h := &histogram.Histogram{Schema: histogram.CustomBucketsSchema, CustomValues: []float64{1, 2, 3, 4}, PositiveSpans: []histogram.Span{{Offset: off, Length: 1}}, PositiveBuckets: []int64{int64(i % 2)}}
		hs = append(hs, HistSample{T: int64(i + 1), FH: fixCount(h).ToFloat(nil)})
	}
	mustPushHist(t, st, "t", labels.FromStrings("__name__", "d"), hs...)
	r := rand.New(rand.NewSource(3))
	accepted, mutants := 0, 0
	try := func(c Chunk) {
		mutants++
		if CheckHistogramChunk(c) == nil {
			accepted++
			readAllBuckets(t, c)
		}
	}
	for _, s := range exportBatch(t, st) {
		for _, c := range s.Chunks {
			if err := CheckHistogramChunk(c); err != nil {
				t.Fatalf("%s: own chunk refused: %v", s.Labels, err)
			}
			d := c.Data
			for n := range len(d) {
				try(Chunk{MinTime: c.MinTime, MaxTime: c.MaxTime, Encoding: c.Encoding, Data: d[:n]})
			}
			for i := range len(d) * 8 {
				m := bytes.Clone(d)
				m[i/8] ^= 1 << (i % 8)
				try(Chunk{MinTime: c.MinTime, MaxTime: c.MaxTime, Encoding: c.Encoding, Data: m})
			}
			for range 300 {
				m := bytes.Clone(d)
				for range 1 + r.Intn(4) {
					m[r.Intn(len(m))] = byte(r.Uint32())
				}
				try(Chunk{MinTime: c.MinTime, MaxTime: c.MaxTime, Encoding: c.Encoding, Data: m})
			}
			// Bit flips in the layout (zero threshold, schema, spans: the bytes after the 3-byte
			// header), where a damaged schema or span decodes into a chunk that still reads.
			for range 1000 {
				m := bytes.Clone(d)
				for range 1 + r.Intn(3) {
					i := 3*8 + r.Intn(min(8, len(m)-3)*8)
					m[i/8] ^= 1 << (i % 8)
				}
				try(Chunk{MinTime: c.MinTime, MaxTime: c.MaxTime, Encoding: c.Encoding, Data: m})
			}
		}
	}
	t.Logf("%d mutants, %d accepted and read whole", mutants, accepted)
}

// After a hand-over the joiner's frontier is decoded from the chunk, whose layout the appender
// widened with empty buckets: a retried push of the very histogram the leaver acknowledged is
// still a duplicate there, and another one is still refused. Locally too, a histogram that differs
// from the frontier only in empty buckets is the same histogram.
func TestHistograms_DuplicateAfterHandOverLayoutInsensitive(t *testing.T) {
	src := mustOpen(t, testConfig(t.TempDir()))
	lset := labels.FromStrings("__name__", "h")
	h1 := &histogram.Histogram{Count: 2, Sum: 1, PositiveSpans: []histogram.Span{{Offset: 0, Length: 2}}, PositiveBuckets: []int64{2, -2}}
	h2 := &histogram.Histogram{Count: 3, Sum: 2, PositiveSpans: []histogram.Span{{Offset: 0, Length: 1}}, PositiveBuckets: []int64{3}}
	mustPushHist(t, src, "t", lset, HistSample{T: 1, H: h1}, HistSample{T: 2, H: h2})
	if res := mustPushHist(t, src, "t", lset, HistSample{T: 2, H: h2.Copy()}); res.Duplicates != 1 {
		t.Fatalf("leaver: retry not idempotent: %+v", res)
	}
	dst := mustOpen(t, testConfig(t.TempDir()))
	if err := dst.ImportBatch(exportBatch(t, src)); err != nil {
		t.Fatal(err)
	}
	if res := mustPushHist(t, dst, "t", lset, HistSample{T: 2, H: h2.Copy()}); res.Duplicates != 1 || res.Refused != 0 {
		t.Fatalf("joiner: retry of the acknowledged histogram: %+v", res)
	}
	other := h2.Copy()
	other.PositiveBuckets[0], other.Count = 4, 4
	if res := mustPushHist(t, dst, "t", lset, HistSample{T: 2, H: other}); res.Refused != 1 || !errors.Is(res.Errors[0].Err, ErrDuplicateSampleForTimestamp) {
		t.Fatalf("joiner: another histogram at the frontier: %+v", res)
	}
	otherSum := h2.Copy()
	otherSum.Sum = 2.5
	if res := mustPushHist(t, dst, "t", lset, HistSample{T: 2, H: otherSum}); res.Refused != 1 {
		t.Fatalf("joiner: another sum at the frontier: %+v", res)
	}
	widened := &histogram.Histogram{Count: 3, Sum: 2, PositiveSpans: []histogram.Span{{Offset: 0, Length: 3}}, PositiveBuckets: []int64{3, -3, 0}}
	if res := mustPushHist(t, src, "t", lset, HistSample{T: 2, H: widened}); res.Duplicates != 1 {
		t.Fatalf("leaver: the frontier with empty buckets added: %+v", res)
	}
	fh := h2.ToFloat(nil)
	mustPushHist(t, src, "t", lset, HistSample{T: 3, FH: fh})
	fw := widened.ToFloat(nil)
	if res := mustPushHist(t, src, "t", lset, HistSample{T: 3, FH: fw}); res.Duplicates != 1 {
		t.Fatalf("leaver: the float frontier with empty buckets added: %+v", res)
	}
	if res := mustPushHist(t, src, "t", lset, HistSample{T: 3, H: h2.Copy()}); res.Refused != 1 {
		t.Fatalf("leaver: an integer histogram at a float frontier: %+v", res)
	}
}

// A closed histogram chunk does not pin its head's spare capacity: closeHistHead compacts it as
// closeHead does XOR chunks (at most chunkenc's 32 spare bytes stay).
func TestHistograms_ClosedChunksCompacted(t *testing.T) {
	st := mustOpen(t, testConfig(t.TempDir()))
	for s := range 4 {
		var hs []HistSample
		for i := range 3*samplesPerChunk + 7 {
			h := HistSample{T: int64(i + 1), H: testHist(i + s)}
			if s%2 == 1 {
				h = HistSample{T: h.T, FH: h.H.ToFloat(nil)}
			}
			hs = append(hs, h)
		}
		mustPushHist(t, st, "t", labels.FromStrings("__name__", "h", "s", fmt.Sprint(s)), hs...)
	}
	closed := 0
	if err := st.walkSeries(func(_ string, ms *memSeries, chks []Chunk, _ float64) error {
		for _, c := range chks[:len(chks)-1] { // the last one is the head's copy
			closed++
			if spare := cap(c.Data) - len(c.Data); spare > 32 {
				t.Errorf("%s: closed %s chunk of %d bytes keeps %d spare", ms.lset, c.Encoding, len(c.Data), spare)
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if closed != 4*3 {
		t.Fatalf("%d closed chunks, want 12", closed)
	}
}
