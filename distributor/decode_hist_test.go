package distributor

import (
	"net/http"
	"strings"
	"testing"

	"github.com/golang/snappy"
	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/prompb"
	writev2 "github.com/prometheus/prometheus/prompb/io/prometheus/write/v2"
)

func wideHistogram() *histogram.Histogram {
	h := &histogram.Histogram{Schema: 3, PositiveSpans: []histogram.Span{{Offset: -3, Length: 16}}, PositiveBuckets: make([]int64, 16), Sum: 10}
	h.PositiveBuckets[0] = 2 // every bucket holds 2 (deltas)
	h.Count = 32
	return h
}

// validateHistograms: over the bucket limit a histogram's resolution is reduced until it fits,
// its counts kept; custom buckets cannot be reduced and are refused; with reduction off, refused.
func TestValidateHistograms_ReduceOrRefuse(t *testing.T) {
	s := &Series{Labels: []Label{{"__name__", "h"}}, Hists: []Histogram{{TimestampMs: 1, H: wideHistogram()}, {TimestampMs: 2, FH: wideHistogram().ToFloat(nil)}}}
	r, reduced := validateHistograms(s, 5, true)
	if r != nil || reduced != 2 {
		t.Fatalf("refusal %v, reduced %d", r, reduced)
	}
	if h := s.Hists[0].H; bucketCount(s.Hists[0]) > 5 || h.Count != 32 || h.Schema >= 3 || h.Validate() != nil {
		t.Fatalf("reduced to %v", h)
	}
	if fh := s.Hists[1].FH; bucketCount(s.Hists[1]) > 5 || fh.Count != 32 || fh.Validate() != nil {
		t.Fatalf("reduced to %v", fh)
	}
	s = &Series{Labels: []Label{{"__name__", "h"}}, Hists: []Histogram{{TimestampMs: 1, H: wideHistogram()}}}
	if r, _ := validateHistograms(s, 5, false); r == nil || r.reason != reasonHistogramBuckets || !strings.Contains(r.msg, "has 16 buckets, more than the limit of 5") {
		t.Fatalf("reduction off: %+v", r)
	}
	nhcb := &histogram.Histogram{Schema: histogram.CustomBucketsSchema, PositiveSpans: []histogram.Span{{Length: 4}}, PositiveBuckets: []int64{1, 0, 0, 0}, Count: 4, CustomValues: []float64{1, 2, 3}}
	s = &Series{Labels: []Label{{"__name__", "h"}}, Hists: []Histogram{{TimestampMs: 1, H: nhcb}}}
	if r, _ := validateHistograms(s, 2, true); r == nil || !strings.Contains(r.msg, "custom buckets cannot be merged") || !strings.Contains(r.msg, `series: {__name__="h"}`) {
		t.Fatalf("custom buckets: %+v", r)
	}
	if r, _ := validateHistograms(s, 0, true); r != nil {
		t.Fatalf("no limit: %+v", r)
	}
}

// A remote-write 2.0 series of native histograms is stored (forwarded with its custom bucket
// bounds) and counted in X-Prometheus-Remote-Write-Histograms-Written.
func TestPushV2_NativeHistogramsWritten(t *testing.T) {
	e := newEnv(t, defaultConfig(), active("a", "b", "c")...)
	st := writev2.NewSymbolTable()
	now := testNow().UnixMilli()
	nhcb := &histogram.Histogram{Schema: histogram.CustomBucketsSchema, PositiveSpans: []histogram.Span{{Length: 2}}, PositiveBuckets: []int64{1, 1}, Count: 3, Sum: 2, CustomValues: []float64{0.5}}
	h2 := writev2.FromIntHistogram(now, nhcb)
	h2.CustomValues = nhcb.CustomValues
	req := writev2.Request{Timeseries: []writev2.TimeSeries{
		{LabelsRefs: st.SymbolizeLabels(labels.FromStrings("__name__", "h"), nil), Histograms: []writev2.Histogram{writev2.FromIntHistogram(now, wideHistogram()), writev2.FromFloatHistogram(now+1000, wideHistogram().ToFloat(nil))}},
		{LabelsRefs: st.SymbolizeLabels(labels.FromStrings("__name__", "nhcb"), nil), Histograms: []writev2.Histogram{h2}},
	}}
	req.Symbols = st.Symbols()
	b, err := req.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	resp, msg := postV2(t, e, snappy.Encode(nil, b), ContentTypeV2)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("push: %d %s", resp.StatusCode, msg)
	}
	if got, want := written(resp), [3]string{"0", "3", "0"}; got != want {
		t.Errorf("written headers %v, want %v", got, want)
	}
	e.d.Wait()
	got := strings.Join(e.stored(), "\n")
	for _, want := range []string{"{count:32, sum:10,", "{count:3, sum:2, [-Inf,0.5]:1, (0.5,+Inf]:2}"} {
		if !strings.Contains(got, want) {
			t.Errorf("stored series lack %q:\n%s", want, got)
		}
	}
	// 1.0 carries them too (TimeSeries field 4).
	code, msg := e.post(t, encode(t, prompb.TimeSeries{Labels: lbls("__name__", "h1"), Histograms: []prompb.Histogram{prompb.FromIntHistogram(now, wideHistogram())}}))
	if code != http.StatusOK {
		t.Fatalf("1.0: %d %s", code, msg)
	}
}

// Schemas: finer than 8 is reduced to 8 (as Mimir does), below -4 (other than custom buckets'
// -53) is refused naming the schema.
func TestValidateHistograms_Schemas(t *testing.T) {
	fine := wideHistogram()
	fine.Schema = 10
	s := &Series{Labels: []Label{{"__name__", "h"}}, Hists: []Histogram{{TimestampMs: 1, H: fine}}}
	if r, reduced := validateHistograms(s, 0, true); r != nil || reduced != 1 || s.Hists[0].H.Schema != 8 || s.Hists[0].H.Count != 32 {
		t.Fatalf("schema 10: %+v, reduced %d, now %v", r, reduced, s.Hists[0].H)
	}
	coarse := wideHistogram()
	coarse.Schema = -5
	s = &Series{Labels: []Label{{"__name__", "h"}}, Hists: []Histogram{{TimestampMs: 1, H: coarse}}}
	if r, _ := validateHistograms(s, 0, true); r == nil || r.reason != reasonInvalidHistogram || !strings.Contains(r.msg, "has schema -5") {
		t.Fatalf("schema -5: %+v", r)
	}
}
