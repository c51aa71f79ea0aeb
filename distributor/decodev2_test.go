package distributor

import (
	"errors"
	"fmt"
	"math"
	"strings"
	"testing"
	"unsafe"

	"github.com/prometheus/prometheus/model/labels"
	writev2 "github.com/prometheus/prometheus/prompb/io/prometheus/write/v2"
	"google.golang.org/protobuf/encoding/protowire"
)

// checkSameAsWriteV2 fails unless our decode of a 2.0 body has exactly the labels (resolved through
// the symbols), samples and counts that prompb's generated writev2 code reads.
func checkSameAsWriteV2(t testing.TB, got *WriteRequest, want *writev2.Request) {
	t.Helper()
	if !got.v2 {
		t.Fatal("the request is not marked as 2.0")
	}
	if len(got.Series) != len(want.Timeseries) {
		t.Fatalf("%d series, writev2 has %d", len(got.Series), len(want.Timeseries))
	}
	metadata := 0
	for i, ws := range want.Timeseries {
		gs := got.Series[i]
		if 2*len(gs.Labels) != len(ws.LabelsRefs) || len(gs.Samples) != len(ws.Samples) {
			t.Fatalf("series %d: %d labels %d samples, writev2 %d refs and %d samples", i, len(gs.Labels), len(gs.Samples), len(ws.LabelsRefs), len(ws.Samples))
		}
		for j := range gs.Labels {
			n, v := want.Symbols[ws.LabelsRefs[2*j]], want.Symbols[ws.LabelsRefs[2*j+1]]
			if gs.Labels[j].Name != n || gs.Labels[j].Value != v {
				t.Fatalf("series %d label %d: %q=%q, writev2 %q=%q", i, j, gs.Labels[j].Name, gs.Labels[j].Value, n, v)
			}
		}
		for j, s := range ws.Samples {
			g := gs.Samples[j]
			if math.Float64bits(g.Value) != math.Float64bits(s.Value) || g.TimestampMs != s.Timestamp {
				t.Fatalf("series %d sample %d: %v@%d, writev2 %v@%d", i, j, g.Value, g.TimestampMs, s.Value, s.Timestamp)
			}
		}
		if gs.Exemplars != len(ws.Exemplars) || gs.Histograms != len(ws.Histograms) {
			t.Fatalf("series %d: %d exemplars %d histograms, writev2 %d and %d", i, gs.Exemplars, gs.Histograms, len(ws.Exemplars), len(ws.Histograms))
		}
		if gs.canonical || gs.Raw != nil {
			t.Fatalf("series %d: a 2.0 series must be re-encoded for the ingesters (canonical %v, Raw %d bytes)", i, gs.canonical, len(gs.Raw))
		}
		if m := ws.Metadata; m.Type != 0 || m.HelpRef != 0 || m.UnitRef != 0 {
			metadata++
		}
	}
	if got.Metadata < metadata {
		t.Fatalf("%d metadata, writev2 has at least %d", got.Metadata, metadata)
	}
}

func testRequestV2() writev2.Request {
	st := writev2.NewSymbolTable()
	refs := func(kv ...string) []uint32 { return st.SymbolizeLabels(labels.FromStrings(kv...), nil) }
	req := writev2.Request{Timeseries: []writev2.TimeSeries{
		{LabelsRefs: refs("__name__", "up", "job", "prometheus", "instance", "localhost:9090"),
			Samples: []writev2.Sample{{Value: 1, Timestamp: 1000}, {Value: math.NaN(), Timestamp: -5},
				{Value: math.Float64frombits(0x7ff0000000000002), Timestamp: math.MaxInt64}, {Value: 0.5, Timestamp: 0}},
			Metadata:         writev2.Metadata{Type: writev2.Metadata_METRIC_TYPE_GAUGE, HelpRef: st.Symbolize("help text")},
			CreatedTimestamp: 17},
		{LabelsRefs: refs("__name__", "empty_value", "a", ""), Samples: []writev2.Sample{{Value: -2.5, Timestamp: math.MinInt64}}},
		{},
		{LabelsRefs: refs("__name__", "x"),
			Exemplars:  []writev2.Exemplar{{LabelsRefs: refs("trace_id", "abc"), Value: 1, Timestamp: 5}},
			Histograms: []writev2.Histogram{{Count: &writev2.Histogram_CountInt{CountInt: 3}, Timestamp: 9}}},
	}}
	req.Symbols = st.Symbols()
	return req
}

func TestDecodeV2_MatchesWriteV2(t *testing.T) {
	req := testRequestV2()
	b, err := req.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	var want writev2.Request
	if err := want.Unmarshal(b); err != nil {
		t.Fatal(err)
	}
	var got WriteRequest
	if err := got.UnmarshalV2Limited(b, DecodeLimits{MaxExpansion: DefaultMaxExpansionV2}); err != nil {
		t.Fatal(err)
	}
	checkSameAsWriteV2(t, &got, &want)
	if got.Histograms != 1 || got.Exemplars != 1 || got.Metadata != 1 {
		t.Errorf("counts: %d histograms %d exemplars %d metadata, want 1 each", got.Histograms, got.Exemplars, got.Metadata)
	}
	// Labels alias the body's symbols: no copy per label.
	l := got.Series[0].Labels[0]
	if !aliases(b, l.Name) || !aliases(b, l.Value) {
		t.Errorf("label %q=%q does not alias the body", l.Name, l.Value)
	}
	// A 1.0 decode of the same WriteRequest value afterwards is a 1.0 request again.
	one, _ := (&writev2.Request{}).Marshal()
	if err := got.Unmarshal(one); err != nil || got.v2 || len(got.symbols) != 0 {
		t.Errorf("1.0 decode after 2.0: err %v, v2 %v, %d symbols left", err, got.v2, len(got.symbols))
	}
}

// aliases reports whether s points into b.
func aliases(b []byte, s string) bool {
	if len(s) == 0 {
		return true
	}
	for j := 0; j+len(s) <= len(b); j++ {
		if &b[j] == unsafe.StringData(s) {
			return true
		}
	}
	return false
}

// TestDecodeV2_SymbolsAfterSeries: protobuf allows fields in any order; a series may come before
// the symbols it references.
func TestDecodeV2_SymbolsAfterSeries(t *testing.T) {
	var b []byte
	var ts []byte
	ts = protowire.AppendTag(ts, 1, protowire.BytesType)
	ts = protowire.AppendBytes(ts, []byte{1, 2})
	smp := protowire.AppendTag(nil, 1, protowire.Fixed64Type)
	smp = protowire.AppendFixed64(smp, math.Float64bits(4.5))
	smp = protowire.AppendTag(smp, 2, protowire.VarintType)
	smp = protowire.AppendVarint(smp, 99)
	ts = protowire.AppendTag(ts, 2, protowire.BytesType)
	ts = protowire.AppendBytes(ts, smp)
	b = protowire.AppendTag(b, 5, protowire.BytesType)
	b = protowire.AppendBytes(b, ts)
	for _, s := range []string{"", "__name__", "m"} {
		b = protowire.AppendTag(b, 4, protowire.BytesType)
		b = protowire.AppendString(b, s)
	}
	var got WriteRequest
	if err := got.UnmarshalV2Limited(b, DecodeLimits{}); err != nil {
		t.Fatal(err)
	}
	if len(got.Series) != 1 || len(got.Series[0].Labels) != 1 || got.Series[0].Labels[0] != (Label{"__name__", "m"}) ||
		len(got.Series[0].Samples) != 1 || got.Series[0].Samples[0] != (Sample{4.5, 99}) {
		t.Fatalf("decoded %+v", got.Series)
	}
}

func TestDecodeV2_RefusesBadReferences(t *testing.T) {
	series := func(refs ...uint64) []byte {
		var packed []byte
		for _, r := range refs {
			packed = protowire.AppendVarint(packed, r)
		}
		ts := protowire.AppendTag(nil, 1, protowire.BytesType)
		ts = protowire.AppendBytes(ts, packed)
		var b []byte
		for _, s := range []string{"", "a", "b"} {
			b = protowire.AppendTag(b, 4, protowire.BytesType)
			b = protowire.AppendString(b, s)
		}
		b = protowire.AppendTag(b, 5, protowire.BytesType)
		return protowire.AppendBytes(b, ts)
	}
	for _, tc := range []struct {
		name string
		body []byte
		want string
	}{
		{"out of range", series(1, 3), "reference 3 names no symbol: the request has 3 symbols"},
		{"odd", series(1, 2, 1), "3 references, want (name, value) pairs"},
		{"over 32 bits", series(1, 1<<32|3), "reference 3 names no symbol"}, // uint32, as writev2 reads it
		{"wrong wire type", append(protowire.AppendTag(nil, 4, protowire.VarintType), 1), "Request.symbols: wrong wire type 0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got WriteRequest
			err := got.UnmarshalV2Limited(tc.body, DecodeLimits{})
			if !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want ErrMalformed saying %q", err, tc.want)
			}
		})
	}
}

// TestDecodeV2_Limits: the series bound and the expansion bound hold for 2.0 (the symbols count).
func TestDecodeV2_Limits(t *testing.T) {
	req := testRequestV2()
	b, _ := req.Marshal()
	var got WriteRequest
	if err := got.UnmarshalV2Limited(b, DecodeLimits{MaxSeries: 2}); !errors.Is(err, ErrTooLarge) || !strings.Contains(err.Error(), "more than 2 series") {
		t.Fatalf("MaxSeries 2: %v", err)
	}
	// 200k empty symbols: 2 bytes each, 16 decoded.
	var many []byte
	for range 200_000 {
		many = protowire.AppendTag(many, 4, protowire.BytesType)
		many = protowire.AppendString(many, "")
	}
	if err := got.UnmarshalV2Limited(many, DecodeLimits{MaxExpansion: 2}); !errors.Is(err, ErrTooLarge) || !strings.Contains(err.Error(), "symbol") {
		t.Fatalf("empty symbols over the expansion bound: %v", err)
	}
	if err := got.UnmarshalV2Limited(many, DecodeLimits{MaxExpansion: DefaultMaxExpansionV2}); err != nil {
		t.Fatalf("empty symbols within the default bound: %v", err)
	}
	// A realistic request (20 labels a series) fits the default bound.
	real := benchBodyV2(t, 2000, 1, 20)
	if err := got.UnmarshalV2Limited(real, DecodeLimits{MaxExpansion: DefaultMaxExpansionV2}); err != nil {
		t.Fatalf("a request of 20-label series: %v", err)
	}
	if got.DecodedBytes() > DefaultMaxExpansionV2*len(real) {
		t.Fatalf("decoded %d bytes of a %d-byte body", got.DecodedBytes(), len(real))
	}
}

// FuzzDecodeWriteRequestV2: no input panics the decoder; on every input writev2 accepts whose label
// references are in range and paired, the decoder accepts it too and reads the same.
func FuzzDecodeWriteRequestV2(f *testing.F) {
	tr := testRequestV2()
	good, _ := tr.Marshal()
	f.Add(good)
	f.Add([]byte{})
	f.Add([]byte{0x2a, 0x00})
	f.Add([]byte{0x22, 0x00, 0x2a, 0x04, 0x0a, 0x02, 0x00, 0x00})
	var got WriteRequest
	f.Fuzz(func(t *testing.T, b []byte) {
		err := got.UnmarshalV2Limited(b, DecodeLimits{})
		var want writev2.Request
		if want.Unmarshal(b) != nil {
			return
		}
		for _, ts := range want.Timeseries {
			if len(ts.LabelsRefs)%2 != 0 {
				return
			}
			for _, r := range ts.LabelsRefs {
				if int(r) >= len(want.Symbols) {
					return
				}
			}
			// The same checks for exemplars' label references and metadata's help and unit.
			for _, e := range ts.Exemplars {
				if len(e.LabelsRefs)%2 != 0 {
					return
				}
				for _, r := range e.LabelsRefs {
					if int(r) >= len(want.Symbols) {
						return
					}
				}
			}
			if m := ts.Metadata; (m.HelpRef != 0 && int(m.HelpRef) >= len(want.Symbols)) || (m.UnitRef != 0 && int(m.UnitRef) >= len(want.Symbols)) {
				return
			}
		}
		if err != nil {
			t.Fatalf("writev2 accepts %x, we refuse: %v", b, err)
		}
		checkSameAsWriteV2(t, &got, &want)
	})
}

// benchBodyV2 is benchBody's request in remote-write 2.0, with nLabels labels a series.
func benchBodyV2(tb testing.TB, nSeries, samplesPerSeries, nLabels int) []byte {
	st := writev2.NewSymbolTable()
	req := writev2.Request{}
	for i := range nSeries {
		kv := []string{"__name__", "http_requests_total", "instance", fmt.Sprintf("10.0.%d.%d:8080", i/256, i%256),
			"pod", fmt.Sprintf("api-7d9f8b6c5-%05d", i)}
		for k := len(kv) / 2; k < nLabels; k++ {
			kv = append(kv, fmt.Sprintf("label_%02d", k), fmt.Sprintf("value-%d", k%7))
		}
		var smps []writev2.Sample
		for k := range samplesPerSeries {
			smps = append(smps, writev2.Sample{Value: float64(i * k), Timestamp: 1_700_000_000_000 + int64(k)*15000})
		}
		req.Timeseries = append(req.Timeseries, writev2.TimeSeries{LabelsRefs: st.SymbolizeLabels(labels.FromStrings(kv...), nil), Samples: smps})
	}
	req.Symbols = st.Symbols()
	data, err := req.Marshal()
	if err != nil {
		tb.Fatal(err)
	}
	return data
}

// BenchmarkDecodeV2 beside BenchmarkDecode: the same 2000 series of 10 labels, one sample each.
func BenchmarkDecodeV2(b *testing.B) {
	data := benchBodyV2(b, 2000, 1, 10)
	var wr WriteRequest
	b.ReportAllocs()
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if err := wr.UnmarshalV2Limited(data, DecodeLimits{MaxExpansion: DefaultMaxExpansionV2}); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*2000), "ns/sample")
}

func BenchmarkDecodeWriteV2(b *testing.B) {
	data := benchBodyV2(b, 2000, 1, 10)
	b.ReportAllocs()
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		var wr writev2.Request
		if err := wr.Unmarshal(data); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*2000), "ns/sample")
}

// TestDecodeV2_RewrittenSizeBounded: 2.0 names a label's strings by one-byte references, so a
// 7 MB body can stand for series of tens of GB once re-encoded as 1.0 for the ingesters (found by
// review: 100k series of 30 labels over 90 KB of long symbols). The decoder counts the re-encoded
// size and refuses past MaxRewrittenBytes; within it, RewrittenBytes bounds what appendSeries
// writes.
func TestDecodeV2_RewrittenSizeBounded(t *testing.T) {
	st := writev2.NewSymbolTable()
	var kv []string
	for i := range 30 {
		kv = append(kv, fmt.Sprintf("l%02d", i), strings.Repeat(string(rune('a'+i%26)), 3000))
	}
	refs := st.SymbolizeLabels(labels.FromStrings(kv...), nil)
	req := writev2.Request{}
	for range 1000 {
		req.Timeseries = append(req.Timeseries, writev2.TimeSeries{LabelsRefs: refs, Samples: []writev2.Sample{{Value: 1, Timestamp: 5}}})
	}
	req.Symbols = st.Symbols()
	b, err := req.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	var got WriteRequest
	err = got.UnmarshalV2Limited(b, DecodeLimits{MaxExpansion: DefaultMaxExpansionV2, MaxRewrittenBytes: 10 << 20})
	if !errors.Is(err, ErrTooLarge) || !strings.Contains(err.Error(), "re-encoded") {
		t.Fatalf("a %d-byte body of 1000 series of 90 KB each: %v, want ErrTooLarge", len(b), err)
	}
	if err := got.UnmarshalV2Limited(b, DecodeLimits{MaxRewrittenBytes: 200 << 20}); err != nil {
		t.Fatal(err)
	}
	written := 0
	for i := range got.Series {
		written += len(appendSeries(nil, &got.Series[i]))
	}
	if rw := got.RewrittenBytes(); written > rw || rw > written+written/10 {
		t.Errorf("RewrittenBytes %d, appendSeries wrote %d: want an upper bound within 10%%", rw, written)
	}
}
