package bench

import (
	"math"
	"testing"

	"github.com/golang/snappy"
	"github.com/prometheus/prometheus/prompb"
	writev2 "github.com/prometheus/prometheus/prompb/io/prometheus/write/v2"
)

// TestEncode_MatchesPrompb: the hand-rolled encoder must produce what prompb's generated decoder
// reads back exactly: labels, timestamps (negative ones too) and float bits (NaN, stale marker).
func TestEncode_MatchesPrompb(t *testing.T) {
	stale := math.Float64frombits(0x7ff0000000000002)
	kv := []string{"__name__", "m", "instance", "host-1:9100", "job", "j"}
	var raw []byte
	raw = appendTimeSeries(raw, encodeLabels(nil, kv), []int64{-5, 0, 1 << 40}, []float64{1.5, math.NaN(), stale})
	raw = appendTimeSeries(raw, encodeLabels(nil, kv[:2]), []int64{7}, []float64{math.Inf(-1)})
	var wr prompb.WriteRequest
	if err := wr.Unmarshal(raw); err != nil {
		t.Fatal(err)
	}
	if len(wr.Timeseries) != 2 {
		t.Fatalf("%d series", len(wr.Timeseries))
	}
	ts := wr.Timeseries[0]
	for i, l := range ts.Labels {
		if l.Name != kv[2*i] || l.Value != kv[2*i+1] {
			t.Errorf("label %d = %v", i, l)
		}
	}
	want := []struct {
		t    int64
		bits uint64
	}{{-5, math.Float64bits(1.5)}, {0, math.Float64bits(math.NaN())}, {1 << 40, 0x7ff0000000000002}}
	for i, s := range ts.Samples {
		if s.Timestamp != want[i].t || math.Float64bits(s.Value) != want[i].bits {
			t.Errorf("sample %d = %d %x, want %d %x", i, s.Timestamp, math.Float64bits(s.Value), want[i].t, want[i].bits)
		}
	}
	if s := wr.Timeseries[1]; len(s.Labels) != 1 || s.Samples[0].Timestamp != 7 || !math.IsInf(s.Samples[0].Value, -1) {
		t.Errorf("second series %v", s)
	}
}

// TestGenerator_InOrderAndSized: one round of a generator's requests decodes to every series
// once with SamplesPerRequest samples per request, and later rounds move timestamps forward.
func TestGenerator_InOrderAndSized(t *testing.T) {
	g, err := NewGenerator(LoadConfig{URLs: []string{"http://127.0.0.1:1/"}, Series: 1000, LabelsPerSeries: 10, Metrics: 7,
		SamplesPerRequest: 200, Senders: 2, ScrapeInterval: 15e9, Tenants: 1, Timeout: 1e9, Churn: 0.1})
	if err != nil {
		t.Fatal(err)
	}
	last := map[string]int64{}
	seen := 0
	s := g.senders[0]
	for range 3 * 3 { // three rounds of this sender's 500 series: requests of 200, 200 and 100
		n := s.build()
		raw, err := snappy.Decode(nil, s.comp)
		if err != nil {
			t.Fatal(err)
		}
		var wr prompb.WriteRequest
		if err := wr.Unmarshal(raw); err != nil {
			t.Fatal(err)
		}
		got := 0
		for _, ts := range wr.Timeseries {
			if len(ts.Labels) != 10 {
				t.Fatalf("%d labels", len(ts.Labels))
			}
			for i := 1; i < len(ts.Labels); i++ {
				if ts.Labels[i-1].Name >= ts.Labels[i].Name {
					t.Fatalf("labels not sorted: %v", ts.Labels)
				}
			}
			key := ""
			for _, l := range ts.Labels {
				key += l.Name + "=" + l.Value + ","
			}
			for _, smp := range ts.Samples {
				if p, ok := last[key]; ok && smp.Timestamp <= p {
					t.Fatalf("series %s: %d after %d", key, smp.Timestamp, p)
				}
				last[key] = smp.Timestamp
				got++
			}
		}
		if got != n || n > 200 {
			t.Fatalf("request has %d samples, build said %d", got, n)
		}
		seen += n
	}
	if seen != 3*500 {
		t.Errorf("sent %d samples in three rounds of 500 series", seen)
	}
	if len(last) <= 500 {
		t.Errorf("churn made no new series: %d distinct", len(last))
	}
}

// TestEncodeV2_MatchesWriteV2: the 2.0 encoder's requests decode with prompb's writev2 code to the
// same labels and samples, with every string once in the symbols table and symbols[0] empty.
func TestEncodeV2_MatchesWriteV2(t *testing.T) {
	var e v2Encoder
	for range 2 { // the second request reuses the encoder's buffers and table
		e.reset()
		kv1 := []string{"__name__", "m", "instance", "host-1:9100", "job", "j"}
		kv2 := []string{"__name__", "m", "instance", "host-2:9100", "job", "j"}
		e.appendSeries(kv1, []int64{-5, 1 << 40}, []float64{1.5, math.NaN()})
		e.appendSeries(kv2, []int64{7}, []float64{math.Inf(-1)})
		raw := e.finish(nil)
		var req writev2.Request
		if err := req.Unmarshal(raw); err != nil {
			t.Fatal(err)
		}
		if len(req.Symbols) != 8 || req.Symbols[0] != "" {
			t.Fatalf("symbols %q: want 8 distinct strings, the first empty", req.Symbols)
		}
		if len(req.Timeseries) != 2 {
			t.Fatalf("%d series", len(req.Timeseries))
		}
		for i, kv := range [][]string{kv1, kv2} {
			ts := req.Timeseries[i]
			if len(ts.LabelsRefs) != len(kv) {
				t.Fatalf("series %d: %d refs", i, len(ts.LabelsRefs))
			}
			for j, r := range ts.LabelsRefs {
				if req.Symbols[r] != kv[j] {
					t.Errorf("series %d ref %d = %q, want %q", i, j, req.Symbols[r], kv[j])
				}
			}
		}
		if s := req.Timeseries[0].Samples; len(s) != 2 || s[0].Timestamp != -5 || s[0].Value != 1.5 || s[1].Timestamp != 1<<40 || !math.IsNaN(s[1].Value) {
			t.Errorf("samples %v", s)
		}
	}
}
