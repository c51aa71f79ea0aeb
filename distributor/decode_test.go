package distributor

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"testing"

	"github.com/golang/snappy"
	"github.com/prometheus/prometheus/prompb"
	"google.golang.org/protobuf/encoding/protowire"
)

// checkSameAsPrompb fails unless our decode of b has exactly prompb's labels and samples, and every
// series' Raw is the encoding of the same series.
func checkSameAsPrompb(t testing.TB, b []byte, got *WriteRequest, want *prompb.WriteRequest) {
	t.Helper()
	if len(got.Series) != len(want.Timeseries) {
		t.Fatalf("%d series, prompb has %d", len(got.Series), len(want.Timeseries))
	}
	for i, ws := range want.Timeseries {
		gs := got.Series[i]
		if len(gs.Labels) != len(ws.Labels) || len(gs.Samples) != len(ws.Samples) {
			t.Fatalf("series %d: %d labels %d samples, prompb %d and %d", i, len(gs.Labels), len(gs.Samples), len(ws.Labels), len(ws.Samples))
		}
		for j, l := range ws.Labels {
			if gs.Labels[j].Name != l.Name || gs.Labels[j].Value != l.Value {
				t.Fatalf("series %d label %d: %q=%q, prompb %q=%q", i, j, gs.Labels[j].Name, gs.Labels[j].Value, l.Name, l.Value)
			}
		}
		for j, s := range ws.Samples {
			g := gs.Samples[j]
			if math.Float64bits(g.Value) != math.Float64bits(s.Value) || g.TimestampMs != s.Timestamp {
				t.Fatalf("series %d sample %d: %v@%d, prompb %v@%d", i, j, g.Value, g.TimestampMs, s.Value, s.Timestamp)
			}
		}
		if gs.Exemplars != len(ws.Exemplars) || gs.Histograms != len(ws.Histograms) {
			t.Fatalf("series %d: %d exemplars %d histograms, prompb %d and %d", i, gs.Exemplars, gs.Histograms, len(ws.Exemplars), len(ws.Histograms))
		}
		for j, we := range ws.Exemplars {
			ge := got.SeriesExemplars(&got.Series[i])[j]
			if math.Float64bits(ge.Value) != math.Float64bits(we.Value) || ge.TimestampMs != we.Timestamp || len(ge.Labels) != len(we.Labels) {
				t.Fatalf("series %d exemplar %d: %+v, prompb %+v", i, j, ge, we)
			}
			for k, l := range we.Labels {
				if ge.Labels[k].Name != l.Name || ge.Labels[k].Value != l.Value {
					t.Fatalf("series %d exemplar %d label %d: %q=%q, prompb %q=%q", i, j, k, ge.Labels[k].Name, ge.Labels[k].Value, l.Name, l.Value)
				}
			}
		}
		// Raw is a whole `timeseries` field that decodes to the same series.
		var one prompb.WriteRequest
		if err := one.Unmarshal(gs.Raw); err != nil || len(one.Timeseries) != 1 {
			t.Fatalf("series %d: Raw does not decode as one series: %v", i, err)
		}
		if len(one.Timeseries[0].Labels) != len(ws.Labels) || len(one.Timeseries[0].Samples) != len(ws.Samples) {
			t.Fatalf("series %d: Raw decodes to another series", i)
		}
	}
	if got.Metadata != len(want.Metadata) {
		t.Fatalf("%d metadata, prompb has %d", got.Metadata, len(want.Metadata))
	}
	for i, wm := range want.Metadata {
		gm := got.MetricMetadata()[i]
		wt := uint8(wm.Type)
		if wm.Type < 0 || wm.Type > 7 {
			wt = 0 // an enum value prompb does not name reads as unknown here
		}
		if gm.Type != wt || gm.MetricName != wm.MetricFamilyName || gm.Help != wm.Help || gm.Unit != wm.Unit {
			t.Fatalf("metadata %d: %+v, prompb %+v", i, gm, wm)
		}
	}
}

func testRequest() prompb.WriteRequest {
	return prompb.WriteRequest{
		Timeseries: []prompb.TimeSeries{
			{Labels: lbls("__name__", "up", "job", "prometheus", "instance", "localhost:9090"),
				Samples: []prompb.Sample{{Value: 1, Timestamp: 1000}, {Value: math.NaN(), Timestamp: -5},
					{Value: math.Float64frombits(0x7ff0000000000002), Timestamp: math.MaxInt64}, {Value: 0.5, Timestamp: 0}}},
			{Labels: lbls("__name__", "empty_value", "a", ""), Samples: []prompb.Sample{{Value: -2.5, Timestamp: math.MinInt64}}},
			{Labels: nil, Samples: nil},
			{Labels: lbls("__name__", "x"),
				Exemplars:  []prompb.Exemplar{{Labels: lbls("trace_id", "abc"), Value: 1, Timestamp: 5}},
				Histograms: []prompb.Histogram{{Count: &prompb.Histogram_CountInt{CountInt: 3}, Timestamp: 9}}},
		},
		Metadata: []prompb.MetricMetadata{{MetricFamilyName: "up", Help: "h"}},
	}
}

func TestDecode_MatchesPrompb(t *testing.T) {
	want := testRequest()
	b, err := want.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	var got WriteRequest
	if err := got.Unmarshal(b); err != nil {
		t.Fatal(err)
	}
	checkSameAsPrompb(t, b, &got, &want)
	// Series 1's empty value is omitted on the wire (no value field): not canonical, like series 3
	// with its exemplar and histogram.
	if !got.Series[0].canonical || got.Series[1].canonical || got.Series[3].canonical {
		t.Fatalf("canonical flags %v %v %v", got.Series[0].canonical, got.Series[1].canonical, got.Series[3].canonical)
	}
	if got.Exemplars != 1 || got.Histograms != 1 {
		t.Fatalf("exemplars %d histograms %d", got.Exemplars, got.Histograms)
	}
	// Reuse: a second decode into the same value gives the same result.
	if err := got.Unmarshal(b); err != nil {
		t.Fatal(err)
	}
	checkSameAsPrompb(t, b, &got, &want)
}

// TestDecode_LabelsAliasBody pins the zero-copy property the lifetime rule is about.
func TestDecode_LabelsAliasBody(t *testing.T) {
	wr := prompb.WriteRequest{Timeseries: []prompb.TimeSeries{{Labels: lbls("__name__", "up")}}}
	b, _ := wr.Marshal()
	var got WriteRequest
	if err := got.Unmarshal(b); err != nil {
		t.Fatal(err)
	}
	i := bytes.Index(b, []byte("up"))
	b[i] = 'U'
	if got.Series[0].Labels[0].Value != "Up" {
		t.Fatalf("label %q does not alias the body", got.Series[0].Labels[0].Value)
	}
}

// TestDecode_UnknownFieldsAndGroups: unknown fields of every wire type, including groups, are
// skipped at every level, as prompb skips them, and make the series non-canonical.
func TestDecode_UnknownFieldsAndGroups(t *testing.T) {
	var label []byte
	label = protowire.AppendTag(label, 1, protowire.BytesType)
	label = protowire.AppendString(label, "__name__")
	label = protowire.AppendTag(label, 9, protowire.Fixed32Type)
	label = protowire.AppendFixed32(label, 7)
	label = protowire.AppendTag(label, 2, protowire.BytesType)
	label = protowire.AppendString(label, "m")
	var smp []byte
	smp = protowire.AppendTag(smp, 1, protowire.Fixed64Type)
	smp = protowire.AppendFixed64(smp, math.Float64bits(4))
	smp = protowire.AppendTag(smp, 2, protowire.VarintType)
	smp = protowire.AppendVarint(smp, 42)
	var ts []byte
	ts = protowire.AppendTag(ts, 1, protowire.BytesType)
	ts = protowire.AppendBytes(ts, label)
	ts = protowire.AppendTag(ts, 7, protowire.StartGroupType)
	ts = protowire.AppendTag(ts, 1, protowire.VarintType)
	ts = protowire.AppendVarint(ts, 1)
	ts = protowire.AppendTag(ts, 7, protowire.EndGroupType)
	ts = protowire.AppendTag(ts, 2, protowire.BytesType)
	ts = protowire.AppendBytes(ts, smp)
	var b []byte
	b = protowire.AppendTag(b, 5, protowire.VarintType)
	b = protowire.AppendVarint(b, 300)
	b = protowire.AppendTag(b, 1, protowire.BytesType)
	b = protowire.AppendBytes(b, ts)
	var want prompb.WriteRequest
	if err := want.Unmarshal(b); err != nil {
		t.Fatal(err)
	}
	var got WriteRequest
	if err := got.Unmarshal(b); err != nil {
		t.Fatal(err)
	}
	checkSameAsPrompb(t, b, &got, &want)
	if got.Series[0].canonical {
		t.Fatal("a series with unknown fields is canonical")
	}
}

func TestDecode_RefusesMalformed(t *testing.T) {
	good, _ := (&prompb.WriteRequest{Timeseries: []prompb.TimeSeries{{Labels: lbls("__name__", "up"), Samples: []prompb.Sample{{Value: 1, Timestamp: 2}}}}}).Marshal()
	cases := map[string][]byte{
		"truncated":              good[:len(good)-1],
		"length past end":        {0x0a, 0x05, 0x0a},
		"wrong wire type":        {0x08, 0x01}, // field 1 as varint
		"field zero":             {0x00, 0x01},
		"end group at top":       {0x0c},
		"varint overflow":        {0x28, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01},
		"truncated fixed64":      {0x0a, 0x04, 0x12, 0x02, 0x09, 0x00},
		"illegal wire type 6":    {0x0e},
		"unterminated group":     {0x2b, 0x08, 0x01},
		"sample value as varint": {0x0a, 0x04, 0x12, 0x02, 0x08, 0x01},
	}
	for name, b := range cases {
		t.Run(name, func(t *testing.T) {
			var got WriteRequest
			err := got.Unmarshal(b)
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("err %v, want ErrMalformed", err)
			}
			var want prompb.WriteRequest
			if want.Unmarshal(b) == nil {
				t.Fatalf("prompb accepts it: the case is wrong")
			}
		})
	}
}

// TestAppendSeries_MatchesPrompbMarshal: a re-encoded series is byte-for-byte what prompb writes.
func TestAppendSeries_MatchesPrompbMarshal(t *testing.T) {
	for _, ps := range testRequest().Timeseries[:3] {
		s := Series{}
		for _, l := range ps.Labels {
			s.Labels = append(s.Labels, Label{l.Name, l.Value})
		}
		for _, smp := range ps.Samples {
			s.Samples = append(s.Samples, Sample{smp.Value, smp.Timestamp})
		}
		want, _ := (&prompb.WriteRequest{Timeseries: []prompb.TimeSeries{{Labels: ps.Labels, Samples: ps.Samples}}}).Marshal()
		got := appendSeries(nil, &s)
		if !bytes.Equal(got, want) {
			t.Fatalf("appendSeries:\n got %x\nwant %x", got, want)
		}
		if seriesSize(&s) != len(got) {
			t.Fatalf("seriesSize %d, encoded %d", seriesSize(&s), len(got))
		}
	}
	// prompb drops the sign of -0 (it omits any value == 0); we keep it, so a re-encoded series
	// carries exactly the bits the client sent.
	s := Series{Labels: []Label{{"__name__", "z"}}, Samples: []Sample{{math.Copysign(0, -1), 5}}}
	var back WriteRequest
	if err := back.Unmarshal(appendSeries(nil, &s)); err != nil {
		t.Fatal(err)
	}
	if got := back.Series[0].Samples[0]; math.Float64bits(got.Value) != math.Float64bits(math.Copysign(0, -1)) || got.TimestampMs != 5 {
		t.Fatalf("-0 round trip: %v", got)
	}
}

func TestDecompressSnappy_Limits(t *testing.T) {
	raw := bytes.Repeat([]byte("a"), 5000)
	body := snappy.Encode(nil, raw)
	if _, err := DecompressSnappy(body, 4999); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("over the limit: %v", err)
	}
	buf, err := DecompressSnappy(body, 5000)
	if err != nil || !bytes.Equal(*buf, raw) {
		t.Fatalf("at the limit: %v", err)
	}
	if _, err := DecompressSnappy([]byte("not snappy at all"), 1<<20); !errors.Is(err, ErrMalformed) {
		t.Fatalf("garbage: %v", err)
	}
}

// FuzzDecodeWriteRequest: no input panics the decoder; on every input prompb accepts, the decoder
// accepts it too and reads the same labels and samples (floats compared by bits, so NaN payloads and
// stale markers count).
func FuzzDecodeWriteRequest(f *testing.F) {
	tr := testRequest()
	good, _ := tr.Marshal()
	f.Add(good)
	f.Add([]byte{})
	f.Add([]byte{0x0a, 0x00})
	f.Add([]byte{0x2b, 0x08, 0x01, 0x2c})
	small, _ := (&prompb.WriteRequest{Timeseries: []prompb.TimeSeries{{Labels: lbls("a", "b"), Samples: []prompb.Sample{{Value: 1, Timestamp: 1}}}}}).Marshal()
	f.Add(small)
	withExtras := prompb.WriteRequest{Timeseries: []prompb.TimeSeries{{Labels: lbls("a", "b"),
		Exemplars: []prompb.Exemplar{{Labels: lbls("trace_id", "x"), Value: 1, Timestamp: 5}}}},
		Metadata: []prompb.MetricMetadata{{Type: prompb.MetricMetadata_GAUGE, MetricFamilyName: "a", Help: "h", Unit: "u"}}}
	extras, _ := withExtras.Marshal()
	f.Add(extras)
	var got WriteRequest
	f.Fuzz(func(t *testing.T, b []byte) {
		err := got.Unmarshal(b)
		var want prompb.WriteRequest
		if want.Unmarshal(b) != nil {
			return
		}
		if err != nil {
			t.Fatalf("prompb accepts %x, we refuse: %v", b, err)
		}
		checkSameAsPrompb(t, b, &got, &want)
		// Within tight bounds the limited decode reads the same, or refuses with ErrTooLarge only,
		// its arenas within the bound (the slack makes small inputs fit: use a tiny expansion).
		var lim WriteRequest
		if err := lim.UnmarshalLimited(b, DecodeLimits{MaxSeries: 3, MaxExpansion: 1}); err != nil {
			if !errors.Is(err, ErrTooLarge) {
				t.Fatalf("limited decode of %x: %v, want nil or ErrTooLarge", b, err)
			}
		} else {
			checkSameAsPrompb(t, b, &lim, &want)
		}
	})
}

// ---- benchmarks ----
//
// Compare with: go test -run '^$' -bench 'Decode' -count 10 ./distributor/ | tee new.txt; benchstat new.txt

// benchBody is a WriteRequest like Prometheus sends: series of 10 labels, one sample each.
func benchBody(b testing.TB, nSeries, samplesPerSeries int) []byte {
	wr := prompb.WriteRequest{}
	for i := range nSeries {
		ls := lbls("__name__", "http_requests_total", "cluster", "eu-west-1", "container", "api",
			"endpoint", "http", "instance", fmt.Sprintf("10.0.%d.%d:8080", i/256, i%256), "job", "default/api",
			"method", "GET", "namespace", "default", "pod", fmt.Sprintf("api-7d9f8b6c5-%05d", i), "status", "200")
		var smps []prompb.Sample
		for k := range samplesPerSeries {
			smps = append(smps, prompb.Sample{Value: float64(i * k), Timestamp: 1_700_000_000_000 + int64(k)*15000})
		}
		wr.Timeseries = append(wr.Timeseries, prompb.TimeSeries{Labels: ls, Samples: smps})
	}
	data, err := wr.Marshal()
	if err != nil {
		b.Fatal(err)
	}
	return data
}

func BenchmarkDecode(b *testing.B) {
	data := benchBody(b, 2000, 1)
	var wr WriteRequest
	b.ReportAllocs()
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if err := wr.Unmarshal(data); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*2000), "ns/sample")
}

func BenchmarkDecodePrompb(b *testing.B) {
	data := benchBody(b, 2000, 1)
	b.ReportAllocs()
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		var wr prompb.WriteRequest
		if err := wr.Unmarshal(data); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*2000), "ns/sample")
}
