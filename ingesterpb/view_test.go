package ingesterpb

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"sync"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// viewEqual reports whether the view decodes the same series, labels and samples as the generated
// message (sample values compared by their bits: NaN payloads and -0 must survive).
func viewEqual(v *PushRequestView, m *PushRequest) bool {
	if len(v.Series) != len(m.GetTimeseries()) || v.RingIndex != m.GetRingIndex() {
		return false
	}
	for i, ts := range m.GetTimeseries() {
		s := v.Series[i]
		if len(s.Labels) != len(ts.GetLabels()) || len(s.Samples) != len(ts.GetSamples()) {
			return false
		}
		for j, l := range ts.GetLabels() {
			if s.Labels[j].Name != l.GetName() || s.Labels[j].Value != l.GetValue() {
				return false
			}
		}
		for j, sm := range ts.GetSamples() {
			if s.Samples[j].TimestampMs != sm.GetTimestamp() || math.Float64bits(s.Samples[j].Value) != math.Float64bits(sm.GetValue()) {
				return false
			}
		}
		if len(s.Exemplars) != len(ts.GetExemplars()) {
			return false
		}
		for j, e := range ts.GetExemplars() {
			x := s.Exemplars[j]
			if x.TimestampMs != e.GetTimestamp() || math.Float64bits(x.Value) != math.Float64bits(e.GetValue()) || len(x.Labels) != len(e.GetLabels()) {
				return false
			}
			for k, l := range e.GetLabels() {
				if x.Labels[k].Name != l.GetName() || x.Labels[k].Value != l.GetValue() {
					return false
				}
			}
		}
	}
	if len(v.Metadata) != len(m.GetMetadata()) {
		return false
	}
	for i, md := range m.GetMetadata() {
		x := v.Metadata[i]
		if x.Type != md.GetType() || x.MetricFamilyName != md.GetMetricFamilyName() || x.Help != md.GetHelp() || x.Unit != md.GetUnit() {
			return false
		}
	}
	return true
}

func sampleRequest() *PushRequest {
	return &PushRequest{Timeseries: []*TimeSeries{
		{Labels: []*Label{{Name: "__name__", Value: "up"}, {Name: "job", Value: "a"}},
			Samples: []*Sample{{Value: 1, Timestamp: 1000}, {Value: math.NaN(), Timestamp: 2000}, {Value: math.Copysign(0, -1), Timestamp: -5}}},
		{Labels: []*Label{{Name: "__name__", Value: "x"}, {Name: "", Value: ""}}},
		{},
		{Labels: []*Label{{Name: "__name__", Value: "stale"}}, Samples: []*Sample{{Value: math.Float64frombits(0x7ff0000000000002), Timestamp: math.MaxInt64}}},
		{Labels: []*Label{{Name: "__name__", Value: "ex"}}, Samples: []*Sample{{Value: 1, Timestamp: 1}},
			Exemplars: []*Exemplar{{Labels: []*Label{{Name: "trace_id", Value: "a"}}, Value: 0.5, Timestamp: 1}, {Value: -1, Timestamp: -2}}},
	}, Metadata: []*MetricMetadata{{Type: MetricType_METRIC_TYPE_COUNTER, MetricFamilyName: "ex", Help: "h", Unit: "u"}, {}}}
}

func TestPushRequestView_MatchesGenerated(t *testing.T) {
	b, err := proto.Marshal(sampleRequest())
	if err != nil {
		t.Fatal(err)
	}
	// Unknown fields, a known field number with another wire type (unknown to the generated code
	// too), a group, and a repeated scalar (last wins) inside a sample.
	extra := protowire.AppendTag(nil, 7, protowire.VarintType)
	extra = protowire.AppendVarint(extra, 42)
	extra = protowire.AppendTag(extra, 1, protowire.VarintType) // timeseries as a varint: unknown
	extra = protowire.AppendVarint(extra, 3)
	extra = protowire.AppendTag(extra, 9, protowire.StartGroupType)
	extra = protowire.AppendTag(extra, 1, protowire.Fixed32Type)
	extra = protowire.AppendFixed32(extra, 5)
	extra = protowire.AppendTag(extra, 9, protowire.EndGroupType)
	smp := protowire.AppendTag(nil, 2, protowire.VarintType)
	smp = protowire.AppendVarint(smp, 10)
	smp = protowire.AppendTag(smp, 2, protowire.VarintType)
	smp = protowire.AppendVarint(smp, 20)
	smp = protowire.AppendTag(smp, 1, protowire.BytesType) // value with the wrong wire type: unknown
	smp = protowire.AppendBytes(smp, []byte("zz"))
	ts := protowire.AppendTag(nil, 2, protowire.BytesType)
	ts = protowire.AppendBytes(ts, smp)
	series := protowire.AppendTag(nil, 1, protowire.BytesType)
	series = protowire.AppendBytes(series, ts)
	for _, in := range [][]byte{b, append(bytes.Clone(b), extra...), append(bytes.Clone(extra), b...), series, nil} {
		var m PushRequest
		if err := proto.Unmarshal(in, &m); err != nil {
			t.Fatalf("generated refused % x: %v", in, err)
		}
		var v PushRequestView
		if err := v.Unmarshal(in); err != nil {
			t.Fatalf("view refused % x: %v", in, err)
		}
		if !viewEqual(&v, &m) {
			t.Fatalf("view decoded %+v, generated %v", v.Series, &m)
		}
	}
}

func TestPushRequestView_RefusesMalformed(t *testing.T) {
	b, _ := proto.Marshal(sampleRequest())
	for name, in := range map[string][]byte{
		"truncated":    b[:len(b)-1],
		"field 0":      {0x00, 0x01},
		"bad length":   {0x0a, 0x7f, 0x00},
		"lone end tag": {0x0c},
		"bad varint":   {0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01},
	} {
		var m PushRequest
		genErr := proto.Unmarshal(in, &m)
		var v PushRequestView
		err := v.Unmarshal(in)
		if genErr == nil || err == nil || !errors.Is(err, ErrMalformedPush) {
			t.Errorf("%s: generated %v, view %v: want both to refuse", name, genErr, err)
		}
	}
}

// TestPushRequestView_NoAllocs: decoding into a warm view allocates nothing.
func TestPushRequestView_NoAllocs(t *testing.T) {
	b, _ := proto.Marshal(sampleRequest())
	var v PushRequestView
	if err := v.Unmarshal(b); err != nil {
		t.Fatal(err)
	}
	if n := testing.AllocsPerRun(100, func() { _ = v.Unmarshal(b) }); n != 0 {
		t.Fatalf("%v allocs per decode, want 0", n)
	}
}

// FuzzPushRequestView: whatever the generated code accepts, the view accepts and reads the same
// values from; a request marshalled by the generated code round-trips. The view may accept more
// (invalid UTF-8 in labels, by design).
func FuzzPushRequestView(f *testing.F) {
	b, _ := proto.Marshal(sampleRequest())
	f.Add(b)
	f.Add([]byte{0x0a, 0x00})
	f.Add(AppendRingIndex([]byte{0x0a, 0x00}, 1<<40))
	f.Add([]byte{0x0a, 0x04, 0x0a, 0x02, 0x0a, 0x00})
	f.Fuzz(func(t *testing.T, in []byte) {
		var v PushRequestView
		err := v.Unmarshal(in)
		var m PushRequest
		if genErr := (proto.UnmarshalOptions{}).Unmarshal(in, &m); genErr != nil {
			return
		}
		if err != nil {
			t.Fatalf("generated accepted % x, view refused: %v", in, err)
		}
		if !viewEqual(&v, &m) {
			t.Fatalf("view decoded %+v, generated %v", v.Series, &m)
		}
		// Round trip: the generated encoding of what was decoded decodes to the same values.
		out, err := proto.Marshal(&m)
		if err != nil {
			t.Fatal(err)
		}
		if err := v.Unmarshal(out); err != nil || !viewEqual(&v, &m) {
			t.Fatalf("round trip: %v", err)
		}
	})
}

// rawRecorder serves Push through PushRaw and keeps a copy of the last request's bytes.
type rawRecorder struct {
	UnimplementedIngesterServer
	mu   sync.Mutex
	last []byte
}

func (r *rawRecorder) PushRaw(ctx context.Context, req []byte) (*PushResponse, error) {
	if _, err := TenantFromIncomingContext(ctx); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	var v PushRequestView
	if err := v.Unmarshal(req); err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	r.mu.Lock()
	r.last = bytes.Clone(req)
	r.mu.Unlock()
	return &PushResponse{SamplesIngested: uint64(v.Samples())}, nil
}

// TestRawServer serves Push with RegisterIngesterServerRaw and RawCodec, and calls it with the
// generated client and with PushRaw: both arrive as the same bytes; the server's buffers go back to
// its pool; other calls (QueryStream) still use the standard codec.
func TestRawServer(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	pool := &countingPool{}
	s := grpc.NewServer(grpc.ForceServerCodecV2(RawCodec{Pool: pool}))
	rec := &rawRecorder{}
	RegisterIngesterServerRaw(s, rec)
	go func() { _ = s.Serve(lis) }()
	t.Cleanup(s.Stop)
	cc, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close() })
	ctx := WithTenant(context.Background(), "t1")
	want, _ := proto.Marshal(sampleRequest())

	resp, err := NewIngesterClient(cc).Push(ctx, sampleRequest())
	if err != nil || resp.GetSamplesIngested() != 5 {
		t.Fatalf("generated client: %v, %v", resp, err)
	}
	if !bytes.Equal(rec.last, want) {
		t.Fatalf("server got % x, want % x", rec.last, want)
	}
	data := bytes.Clone(want)
	if resp, err = PushRaw(ctx, cc, &RawPushRequest{Data: &data}); err != nil || resp.GetSamplesIngested() != 5 {
		t.Fatalf("PushRaw: %v, %v", resp, err)
	}
	if !bytes.Equal(rec.last, want) {
		t.Fatalf("server got % x, want % x", rec.last, want)
	}
	if pool.count() != 2 {
		t.Fatalf("%d buffers back in the server's pool, want 2", pool.count())
	}
	if _, err := NewIngesterClient(cc).Push(context.Background(), sampleRequest()); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("no tenant: %v, want InvalidArgument", err)
	}
	stream, err := NewIngesterClient(cc).QueryStream(ctx, &QueryRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); status.Code(err) != codes.Unimplemented {
		t.Fatalf("QueryStream: %v, want Unimplemented from the embedded server", err)
	}
}

// BenchmarkPushRequestView decodes a distributor's request of 2000 series of 10 labels and one
// sample (the float path, no exemplars or metadata), as the ingester does for each push.
func BenchmarkPushRequestView(b *testing.B) {
	req := &PushRequest{}
	for i := range 2000 {
		ts := &TimeSeries{Samples: []*Sample{{Value: float64(i), Timestamp: 1_700_000_000_000}}}
		for k := range 10 {
			ts.Labels = append(ts.Labels, &Label{Name: fmt.Sprintf("label_%02d", k), Value: fmt.Sprintf("value-%d-%d", k, i)})
		}
		req.Timeseries = append(req.Timeseries, ts)
	}
	raw, err := proto.Marshal(req)
	if err != nil {
		b.Fatal(err)
	}
	var v PushRequestView
	b.SetBytes(int64(len(raw)))
	b.ReportAllocs()
	for b.Loop() {
		if err := v.Unmarshal(raw); err != nil {
			b.Fatal(err)
		}
	}
}
