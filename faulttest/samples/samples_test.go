package samples

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/golang/snappy"
	"github.com/prometheus/prometheus/prompb"
	"github.com/prometheus/prometheus/tsdb/chunkenc"

	"github.com/raftingest/raftingest/faulttest/check"
	"github.com/raftingest/raftingest/ingesterpb"
)

// The body is what Prometheus sends: snappy over the protobuf, one sample with value seq at t0+seq.
func TestEncode_RoundTripsOneSample(t *testing.T) {
	body, err := Encode(WriteRequest(2, 7, 1000))
	if err != nil {
		t.Fatal(err)
	}
	raw, err := snappy.Decode(nil, body)
	if err != nil {
		t.Fatal(err)
	}
	var req prompb.WriteRequest
	if err := req.Unmarshal(raw); err != nil {
		t.Fatal(err)
	}
	if len(req.Timeseries) != 1 || len(req.Timeseries[0].Samples) != 1 {
		t.Fatalf("want one series with one sample, got %+v", req.Timeseries)
	}
	ts := req.Timeseries[0]
	if s := ts.Samples[0]; s.Timestamp != 1007 || s.Value != 7 {
		t.Fatalf("sample = %+v, want t=1007 v=7", s)
	}
	if got := ts.Labels[2]; got.Name != "writer" || got.Value != "w2" {
		t.Fatalf("writer label = %+v", got)
	}
	if ts.Labels[1].Value != "s3" {
		t.Fatalf("series label = %+v, want s3 (7 mod %d)", ts.Labels[1], SeriesPerWriter)
	}
}

func TestOutcome_ClassifiesLikePrometheus(t *testing.T) {
	for _, c := range []struct {
		code int
		err  error
		want check.Outcome
	}{
		{200, nil, check.OutcomeOK}, {204, nil, check.OutcomeOK},
		{400, nil, check.OutcomeFail}, {429, nil, check.OutcomeFail},
		{500, nil, check.OutcomeUnknown}, {503, nil, check.OutcomeUnknown},
		{0, errors.New("connection reset"), check.OutcomeUnknown},
	} {
		if got := Outcome(c.code, c.err); got != c.want {
			t.Errorf("Outcome(%d, %v) = %v, want %v", c.code, c.err, got, c.want)
		}
	}
}

func chunkOf(t *testing.T, pts ...[2]float64) *ingesterpb.Chunk {
	t.Helper()
	c := chunkenc.NewXORChunk()
	app, err := c.Appender()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range pts {
		app.Append(int64(p[0]), p[1])
	}
	return &ingesterpb.Chunk{Encoding: uint32(chunkenc.EncXOR), Data: c.Bytes()}
}

// A sample with the wrong value, one before t0 and one of an unparsable writer are corrupt, not
// samples; the others decode to their ids.
func TestDecode_SeparatesCorruptSamples(t *testing.T) {
	resp := &ingesterpb.QueryStreamResponse{Series: []*ingesterpb.StreamSeries{
		{Labels: []*ingesterpb.Label{{Name: "writer", Value: "w1"}},
			Chunks: []*ingesterpb.Chunk{chunkOf(t, [2]float64{1000, 0}, [2]float64{1004, 4}, [2]float64{1008, 9})}},
		{Labels: []*ingesterpb.Label{{Name: "writer", Value: "wX"}}, Chunks: []*ingesterpb.Chunk{chunkOf(t, [2]float64{1001, 1})}},
		{Labels: []*ingesterpb.Label{{Name: "writer", Value: "w0"}}, Chunks: []*ingesterpb.Chunk{chunkOf(t, [2]float64{990, 0})}},
	}}
	var r IngesterRead
	if err := Decode(resp, 1000, &r); err != nil {
		t.Fatal(err)
	}
	if want := []check.SampleID{{Writer: 1, Seq: 0}, {Writer: 1, Seq: 4}}; !slices.Equal(r.Samples, want) {
		t.Errorf("samples = %v, want %v", r.Samples, want)
	}
	if len(r.Corrupt) != 3 {
		t.Errorf("corrupt = %v, want 3 (wrong value, bad writer, before t0)", r.Corrupt)
	}
	bad := &ingesterpb.QueryStreamResponse{Series: []*ingesterpb.StreamSeries{{Chunks: []*ingesterpb.Chunk{{Encoding: 99, Data: []byte{1}}}}}}
	if err := Decode(bad, 0, &r); err == nil {
		t.Error("an undecodable chunk must be an error")
	}
}

func TestUnion_EachOnceAndDuplicatesWithinAReplica(t *testing.T) {
	a, b := check.SampleID{Writer: 0, Seq: 1}, check.SampleID{Writer: 0, Seq: 2}
	ids, dup := Union(map[string]IngesterRead{
		"n0": {Samples: []check.SampleID{a, b}},
		"n1": {Samples: []check.SampleID{a, a}},
	})
	if !slices.Equal(ids, []check.SampleID{a, b}) {
		t.Errorf("ids = %v", ids)
	}
	if !slices.Equal(dup, []check.SampleID{a}) {
		t.Errorf("duplicates within a replica = %v, want [%v] (two replicas holding a sample is not one)", dup, a)
	}
}

// SeriesHash must be the distributor's hash of the sample's series: samples of one series share
// it, samples of another writer's series do not.
func TestSeriesHash_PerSeries(t *testing.T) {
	a, b := SeriesHash(check.SampleID{Writer: 0, Seq: 1}), SeriesHash(check.SampleID{Writer: 0, Seq: 1 + SeriesPerWriter})
	if a != b {
		t.Errorf("one series, two hashes: %d %d", a, b)
	}
	if a == SeriesHash(check.SampleID{Writer: 1, Seq: 1}) {
		t.Errorf("two writers' series hash alike")
	}
}

func TestFailureKey(t *testing.T) {
	long := strings.Repeat("x", 100)
	for _, c := range []struct {
		code int
		body string
		err  error
		want string
	}{
		{503, "too few healthy ingesters\nmore detail", nil, "503 too few healthy ingesters"},
		{400, long, nil, "400 " + long[:80]},
		{0, "", errors.New(`Post "http://x/api/v1/push": dial tcp: connection refused`), "error connection refused"},
		{0, "", context.DeadlineExceeded, "error timeout"},
	} {
		if got := FailureKey(c.code, c.body, c.err); got != c.want {
			t.Errorf("FailureKey(%d, %q, %v) = %q, want %q", c.code, c.body, c.err, got, c.want)
		}
	}
}
