package distributor

import (
	"encoding/binary"
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/prometheus/prometheus/prompb"
)

// A histogram whose spans claim more buckets than it holds, at a schema finer than 8 (which is
// reduced): refused with 400 as invalid. It was reduced before it was validated, and the reduction
// indexed the buckets the spans claim: the handler panicked and the client saw EOF (retried for
// ever by Prometheus).
func TestPush_HistogramBadSpansFineSchemaRefusedNotPanicking(t *testing.T) {
	e := newEnv(t, defaultConfig(), active("a", "b", "c")...)
	now := testNow().UnixMilli()
	for _, schema := range []int32{9, 3} {
		ph := prompb.Histogram{Schema: schema, Timestamp: now, Count: &prompb.Histogram_CountInt{CountInt: 1},
			PositiveSpans: []prompb.BucketSpan{{Offset: 0, Length: 5}}, PositiveDeltas: []int64{1}}
		good := series(lbls("__name__", "good"), sample(1, 0))
		code, msg := e.post(t, encode(t, prompb.TimeSeries{Labels: lbls("__name__", "h"), Histograms: []prompb.Histogram{ph}}, good))
		if code != http.StatusBadRequest || !strings.Contains(msg, "is invalid") {
			t.Fatalf("schema %d, 5 buckets claimed, 1 held: %d %q, want 400 invalid", schema, code, msg)
		}
	}
}

// Empty histogram messages (2 bytes each on the wire) count toward the decode bound by what they
// decode to: a body of them is refused as too large instead of becoming ~150 times its size in
// objects no bound counted; real histograms stay well within it.
func TestUnmarshal_HistogramsCountTowardTheDecodeBound(t *testing.T) {
	label := []byte{0x0a, 0x08}
	label = append(label, "__name__"...)
	label = append(label, 0x12, 0x01, 'h')
	ts := append([]byte{0x0a, byte(len(label))}, label...)
	for range 200_000 {
		ts = append(ts, 0x22, 0x00)
	}
	body := binary.AppendUvarint([]byte{0x0a}, uint64(len(ts)))
	body = append(body, ts...)
	var req WriteRequest
	err := req.UnmarshalLimited(body, DecodeLimits{MaxExpansion: DefaultMaxExpansion})
	if !errors.Is(err, ErrTooLarge) {
		t.Fatalf("%d empty histograms in a %d-byte body: err %v, want ErrTooLarge", 200_000, len(body), err)
	}
	if d := req.DecodedBytes(); d > DefaultMaxExpansion*len(body)+decodeSlackBytes {
		t.Fatalf("decoded %d bytes before refusing, over the bound %d", d, DefaultMaxExpansion*len(body)+decodeSlackBytes)
	}

	// A realistic body: 500 series of 10 labels and 2 histograms of 20 buckets each.
	var in []prompb.TimeSeries
	for i := range 500 {
		ls := lbls("__name__", "http_request_duration_seconds", "job", "api", "instance", "10.0.0.1:9090", "method", "GET",
			"handler", "/api/v1/query", "code", "200", "region", "eu-west-1", "zone", "a", "pod", "api-7d9f8", "idx", itoa(int64(i)))
		var hs []prompb.Histogram
		for k := range 2 {
			deltas := make([]int64, 20)
			for b := range deltas {
				deltas[b] = int64(b % 3)
			}
			hs = append(hs, prompb.Histogram{Schema: 3, Timestamp: testNow().UnixMilli() + int64(k), Count: &prompb.Histogram_CountInt{CountInt: 100},
				Sum: 12.5, ZeroThreshold: 1e-128, ZeroCount: &prompb.Histogram_ZeroCountInt{ZeroCountInt: 1},
				PositiveSpans: []prompb.BucketSpan{{Offset: -4, Length: 10}, {Offset: 2, Length: 10}}, PositiveDeltas: deltas})
		}
		in = append(in, prompb.TimeSeries{Labels: ls, Histograms: hs})
	}
	wr := prompb.WriteRequest{Timeseries: in}
	raw, err := wr.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	var ok WriteRequest
	if err := ok.UnmarshalLimited(raw, DecodeLimits{MaxExpansion: DefaultMaxExpansion}); err != nil {
		t.Fatalf("a realistic histogram body of %d bytes: %v", len(raw), err)
	}
	if r := float64(ok.DecodedBytes()) / float64(len(raw)); r > DefaultMaxExpansion/2 {
		t.Fatalf("a realistic histogram body decodes to %.1f times its size, want well under the bound %d", r, DefaultMaxExpansion)
	}
}
