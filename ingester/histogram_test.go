package ingester

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"testing"
	"time"

	"github.com/golang/snappy"
	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/prompb"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/util/teststorage"
)

// histSeries is one series of the native histogram tests: its name and its samples.
type histSeries struct {
	name string
	ts   []int64
	hs   []*histogram.Histogram
	fhs  []*histogram.FloatHistogram
}

// testHistogramData is three series over 10 minutes at 15 s: an exponential integer histogram that
// grows, gains buckets and resets; a float histogram; a custom-buckets (NHCB) integer histogram.
func testHistogramData(end time.Time) []histSeries {
	start := end.Add(-10 * time.Minute).Truncate(time.Second).UnixMilli()
	hi := histSeries{name: "h_int"}
	hf := histSeries{name: "h_float"}
	hc := histSeries{name: "h_custom"}
	for i := range 40 {
		t := start + int64(i)*15000
		n := int64(i % 25) // a counter reset at i = 25
		h := &histogram.Histogram{
			Schema: 0, ZeroThreshold: 0.001, ZeroCount: uint64(n),
			PositiveSpans:   []histogram.Span{{Offset: 0, Length: 3}},
			PositiveBuckets: []int64{n, n, 1},
			NegativeSpans:   []histogram.Span{{Offset: 1, Length: 1}},
			NegativeBuckets: []int64{n / 2},
			Sum:             float64(n) * 7.5,
		}
		if i >= 30 { // a new bucket appears: the chunk is recoded
			h.PositiveSpans = []histogram.Span{{Offset: 0, Length: 3}, {Offset: 2, Length: 1}}
			h.PositiveBuckets = []int64{n, n, 1, -1}
		}
		h.Count = countOf(h)
		hi.ts, hi.hs = append(hi.ts, t), append(hi.hs, h)
		hf.ts, hf.fhs = append(hf.ts, t), append(hf.fhs, h.ToFloat(nil).Mul(1.5))
		c := &histogram.Histogram{
			Schema: histogram.CustomBucketsSchema, PositiveSpans: []histogram.Span{{Offset: 0, Length: 4}},
			PositiveBuckets: []int64{int64(i), 1, 1, -2}, CustomValues: []float64{0.25, 1, 4},
			Sum: float64(i) * 3.25,
		}
		c.Count = countOf(c)
		hc.ts, hc.hs = append(hc.ts, t), append(hc.hs, c)
	}
	return []histSeries{hi, hf, hc}
}

// countOf is the sum of h's buckets (kept as deltas) and zero bucket.
func countOf(h *histogram.Histogram) uint64 {
	n := h.ZeroCount
	for _, bs := range [][]int64{h.PositiveBuckets, h.NegativeBuckets} {
		var abs int64
		for _, d := range bs {
			abs += d
			n += uint64(abs)
		}
	}
	return n
}

// pushHistograms remote-writes the series (1.0, histograms in TimeSeries field 4).
func pushHistograms(t *testing.T, httpAddr string, data []histSeries) (int, string) {
	t.Helper()
	var wr prompb.WriteRequest
	for _, s := range data {
		ts := prompb.TimeSeries{Labels: []prompb.Label{{Name: "__name__", Value: s.name}}}
		for i, tm := range s.ts {
			var ph prompb.Histogram
			if s.hs != nil {
				ph = prompb.FromIntHistogram(tm, s.hs[i])
				ph.CustomValues = s.hs[i].CustomValues // as Prometheus's remote-write sender sets them
			} else {
				ph = prompb.FromFloatHistogram(tm, s.fhs[i])
			}
			ts.Histograms = append(ts.Histograms, ph)
		}
		wr.Timeseries = append(wr.Timeseries, ts)
	}
	raw, err := wr.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest(http.MethodPost, "http://"+httpAddr+"/api/v1/push", bytes.NewReader(snappy.Encode(nil, raw)))
	req.Header.Set("Content-Encoding", "snappy")
	req.Header.Set("Content-Type", "application/x-protobuf")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp.StatusCode, string(bytes.TrimSpace(body))
}

// histogramQueries are answered by the cluster and by Prometheus's own engine over the same data.
var histogramQueries = []string{
	`histogram_count(h_int)`,
	`histogram_sum(h_int)`,
	`histogram_count(rate(h_int[1m]))`,
	`histogram_quantile(0.9, rate(h_int[1m]))`,
	`histogram_quantile(0.5, rate(h_int[2m]))`,
	`histogram_fraction(0, 2, rate(h_int[1m]))`,
	`histogram_count(increase(h_int[5m]))`,
	`histogram_quantile(0.9, h_float)`,
	`histogram_count(rate(h_float[1m]))`,
	`histogram_quantile(0.9, rate(h_custom[1m]))`,
	`histogram_count(h_custom)`,
	`histogram_avg(rate(h_custom[2m]))`,
}

// promAnswers evaluates the queries with Prometheus's engine over a TSDB holding data, at each of ts.
func promAnswers(t *testing.T, data []histSeries, ts []time.Time) map[string]string {
	t.Helper()
	st := teststorage.New(t)
	defer st.Close()
	app := st.Appender(context.Background())
	for _, s := range data {
		lset := labels.FromStrings("__name__", s.name)
		for i, tm := range s.ts {
			var err error
			if s.hs != nil {
				_, err = app.AppendHistogram(0, lset, tm, s.hs[i], nil)
			} else {
				_, err = app.AppendHistogram(0, lset, tm, nil, s.fhs[i])
			}
			if err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := app.Commit(); err != nil {
		t.Fatal(err)
	}
	eng := promql.NewEngine(promql.EngineOpts{MaxSamples: 1e7, Timeout: time.Minute})
	out := map[string]string{}
	for _, q := range histogramQueries {
		for _, at := range ts {
			qry, err := eng.NewInstantQuery(context.Background(), st, nil, q, at)
			if err != nil {
				t.Fatal(err)
			}
			res := qry.Exec(context.Background())
			if res.Err != nil {
				t.Fatalf("%s: %v", q, res.Err)
			}
			v, err := res.Vector()
			if err != nil {
				t.Fatalf("%s: %v", q, err)
			}
			key := fmt.Sprintf("%s @%d", q, at.Unix())
			if len(v) == 0 {
				out[key] = "none"
				continue
			}
			out[key] = strconv.FormatFloat(v[0].F, 'g', -1, 64)
			qry.Close()
		}
	}
	return out
}

// clusterAnswer asks the node's PromQL API and returns the single value (or "none").
func clusterAnswer(t *testing.T, httpAddr, q string, at time.Time) string {
	t.Helper()
	v := url.Values{"query": {q}, "time": {strconv.FormatInt(at.Unix(), 10)}}
	resp, err := http.Get("http://" + httpAddr + "/prometheus/api/v1/query?" + v.Encode())
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct {
		Status string
		Error  string
		Data   struct {
			Result []struct{ Value [2]any }
		}
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatal(err)
	}
	if body.Status != "success" {
		t.Fatalf("%s: %s", q, body.Error)
	}
	if len(body.Data.Result) == 0 {
		return "none"
	}
	s, _ := body.Data.Result[0].Value[1].(string)
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		t.Fatalf("%s: value %q", q, s)
	}
	return strconv.FormatFloat(f, 'g', -1, 64)
}

// A whole node takes native histograms over remote write (integer, float, custom buckets; a
// counter reset; a recoded chunk), and answers histogram_quantile, histogram_count, rate, ... as
// Prometheus's own engine answers over the same data: from memory, then, after a flush, from its
// blocks.
func TestSingleNode_NativeHistogramsAnswerAsPrometheus(t *testing.T) {
	now := time.Now().Truncate(time.Second) // the API's time parameter is sent in whole seconds
	s, cfg := startSingleNode(t, nil, "-ingester.flush-check-period", "1h")
	data := testHistogramData(now.Add(-time.Minute))
	if code, body := pushHistograms(t, cfg.HTTPAddr, data); code/100 != 2 {
		t.Fatalf("push: %d %s", code, body)
	}
	var at []time.Time
	for k := range 6 {
		at = append(at, now.Add(-time.Minute-time.Duration(k)*97*time.Second))
	}
	want := promAnswers(t, data, at)
	check := func(where string) {
		t.Helper()
		some := 0
		for _, q := range histogramQueries {
			for _, tm := range at {
				key := fmt.Sprintf("%s @%d", q, tm.Unix())
				got := clusterAnswer(t, cfg.HTTPAddr, q, tm)
				if !sameAnswer(got, want[key]) {
					t.Errorf("%s: %s = %s, Prometheus says %s", where, key, got, want[key])
				}
				if got != "none" {
					some++
				}
			}
		}
		if some < len(histogramQueries)*len(at)/2 {
			t.Fatalf("%s: only %d answers with a value", where, some)
		}
	}
	check("memory")
	checkRemoteRead(t, cfg.HTTPAddr, data)
	fctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.storage.FlushAll(fctx); err != nil {
		t.Fatal(err)
	}
	if n := len(s.store.Tenants()); n != 0 {
		t.Fatalf("%d tenants in memory after the flush, want 0", n)
	}
	check("blocks")
	checkRemoteRead(t, cfg.HTTPAddr, data)
}

// checkRemoteRead reads every series back through remote read (sampled response) and compares
// each histogram with what was pushed, custom bucket bounds included.
func checkRemoteRead(t *testing.T, httpAddr string, data []histSeries) {
	t.Helper()
	for _, s := range data {
		rr := &prompb.ReadRequest{Queries: []*prompb.Query{{StartTimestampMs: s.ts[0], EndTimestampMs: s.ts[len(s.ts)-1],
			Matchers: []*prompb.LabelMatcher{{Type: prompb.LabelMatcher_EQ, Name: "__name__", Value: s.name}}}}}
		raw, err := rr.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		req, _ := http.NewRequest(http.MethodPost, "http://"+httpAddr+"/prometheus/api/v1/read", bytes.NewReader(snappy.Encode(nil, raw)))
		req.Header.Set("Content-Encoding", "snappy")
		req.Header.Set("Content-Type", "application/x-protobuf")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("remote read %s: %d %s", s.name, resp.StatusCode, body)
		}
		dec, err := snappy.Decode(nil, body)
		if err != nil {
			t.Fatal(err)
		}
		var rresp prompb.ReadResponse
		if err := rresp.Unmarshal(dec); err != nil {
			t.Fatal(err)
		}
		if len(rresp.Results) != 1 || len(rresp.Results[0].Timeseries) != 1 {
			t.Fatalf("remote read %s: %v", s.name, rresp.Results)
		}
		got := rresp.Results[0].Timeseries[0].Histograms
		if len(got) != len(s.ts) {
			t.Fatalf("remote read %s: %d histograms, want %d", s.name, len(got), len(s.ts))
		}
		for i, ph := range got {
			// prompb's ToFloatHistogram leaves an integer histogram's custom bounds out: convert
			// integer ones through ToIntHistogram.
			var want, have *histogram.FloatHistogram
			if s.hs != nil {
				want, have = s.hs[i].ToFloat(nil), ph.ToIntHistogram().ToFloat(nil)
			} else {
				want, have = s.fhs[i], ph.ToFloatHistogram()
			}
			if ph.Timestamp != s.ts[i] || !have.Compact(0).Equals(want.Copy().Compact(0)) {
				t.Fatalf("remote read %s sample %d: %v at %d, want %v at %d", s.name, i, have, ph.Timestamp, want, s.ts[i])
			}
		}
	}
}

// sameAnswer compares two formatted floats exactly, NaN equal to NaN.
func sameAnswer(a, b string) bool {
	if a == b {
		return true
	}
	fa, ea := strconv.ParseFloat(a, 64)
	fb, eb := strconv.ParseFloat(b, 64)
	return ea == nil && eb == nil && math.IsNaN(fa) && math.IsNaN(fb)
}

// Refusals: an invalid histogram (counts that disagree with its buckets) is answered 400 naming the
// series and the reason; over -validation.max-native-histogram-buckets a histogram's resolution is
// reduced (stored, 2xx), and one that cannot be reduced (custom buckets) is refused with 400.
func TestSingleNode_NativeHistogramRefusals(t *testing.T) {
	_, cfg := startSingleNode(t, nil, "-validation.max-native-histogram-buckets", "3")
	now := time.Now().Add(-time.Minute).Unix() * 1000
	bad := &histogram.Histogram{Count: 5, PositiveSpans: []histogram.Span{{Length: 1}}, PositiveBuckets: []int64{1}}
	code, body := pushHistograms(t, cfg.HTTPAddr, []histSeries{{name: "bad", ts: []int64{now}, hs: []*histogram.Histogram{bad}}})
	if code != http.StatusBadRequest || !bytes.Contains([]byte(body), []byte(`bad`)) || !bytes.Contains([]byte(body), []byte("invalid")) {
		t.Fatalf("invalid histogram: %d %s", code, body)
	}
	wide := &histogram.Histogram{Schema: 3, PositiveSpans: []histogram.Span{{Length: 8}}, PositiveBuckets: []int64{1, 0, 0, 0, 0, 0, 0, 0}}
	wide.Count = countOf(wide)
	code, body = pushHistograms(t, cfg.HTTPAddr, []histSeries{{name: "wide", ts: []int64{now}, hs: []*histogram.Histogram{wide}}})
	if code/100 != 2 {
		t.Fatalf("reducible histogram: %d %s", code, body)
	}
	if got := clusterAnswer(t, cfg.HTTPAddr, "histogram_count(wide)", time.UnixMilli(now)); got != "8" {
		t.Fatalf("histogram_count(wide) = %s, want 8 (the counts survive the reduction)", got)
	}
	custom := &histogram.Histogram{Schema: histogram.CustomBucketsSchema, PositiveSpans: []histogram.Span{{Length: 4}},
		PositiveBuckets: []int64{1, 0, 0, 0}, CustomValues: []float64{1, 2, 3}}
	custom.Count = countOf(custom)
	code, body = pushHistograms(t, cfg.HTTPAddr, []histSeries{{name: "nhcb", ts: []int64{now}, hs: []*histogram.Histogram{custom}}})
	if code != http.StatusBadRequest || !bytes.Contains([]byte(body), []byte("max-native-histogram-buckets")) {
		t.Fatalf("custom buckets over the limit: %d %s", code, body)
	}
}
