package ingesterpb

import (
	"errors"
	"math"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// TestRingIndex_RoundTripsWithTheGeneratedCode: a request built as the distributor builds it (series
// bytes, then AppendRingIndex) decodes with the generated code and with the view to the same index,
// and the generated code's own encoding of a stamped request decodes in the view; RingIndexSize is
// what AppendRingIndex adds.
func TestRingIndex_RoundTripsWithTheGeneratedCode(t *testing.T) {
	series, err := proto.Marshal(sampleRequest())
	if err != nil {
		t.Fatal(err)
	}
	for _, idx := range []uint64{0, 1, 127, 128, 1 << 32, math.MaxUint64} {
		b := AppendRingIndex(append([]byte(nil), series...), idx)
		if len(b)-len(series) != RingIndexSize(idx) {
			t.Fatalf("index %d: appended %d bytes, RingIndexSize says %d", idx, len(b)-len(series), RingIndexSize(idx))
		}
		var m PushRequest
		if err := proto.Unmarshal(b, &m); err != nil || m.GetRingIndex() != idx {
			t.Fatalf("index %d: generated decoded %d, %v", idx, m.GetRingIndex(), err)
		}
		var v PushRequestView
		if err := v.Unmarshal(b); err != nil || !viewEqual(&v, &m) {
			t.Fatalf("index %d: view decoded %d, %v", idx, v.RingIndex, err)
		}
		gen, err := proto.Marshal(&PushRequest{Timeseries: sampleRequest().Timeseries, RingIndex: idx})
		if err != nil {
			t.Fatal(err)
		}
		if err := v.Unmarshal(gen); err != nil || v.RingIndex != idx {
			t.Fatalf("index %d: view decoded the generated encoding as %d, %v", idx, v.RingIndex, err)
		}
		v.Reset()
		if v.RingIndex != 0 {
			t.Fatal("Reset kept the ring index")
		}
	}
	// Stamped before the series, twice (the last wins), and with a wrong wire type (unknown: ignored).
	b := AppendRingIndex(nil, 5)
	b = append(b, series...)
	b = AppendRingIndex(b, 9)
	b = protowire.AppendTag(b, RingIndexFieldNumber, protowire.BytesType)
	b = protowire.AppendBytes(b, []byte("x"))
	var m PushRequest
	var v PushRequestView
	if err := proto.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	if err := v.Unmarshal(b); err != nil || !viewEqual(&v, &m) || v.RingIndex != 9 {
		t.Fatalf("view %d, generated %d, %v", v.RingIndex, m.GetRingIndex(), err)
	}
	// A truncated stamp is refused by both.
	bad := protowire.AppendTag(nil, RingIndexFieldNumber, protowire.VarintType)
	bad = append(bad, 0xff)
	if proto.Unmarshal(bad, &m) == nil || !errors.Is(v.Unmarshal(bad), ErrMalformedPush) {
		t.Fatal("a truncated ring index was accepted")
	}
}

func TestFencedError_RoundTrips(t *testing.T) {
	err := FencedError("n1", 7, 12)
	if status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("code %v", status.Code(err))
	}
	// Through the wire form of a status, as a client sees it.
	back := status.FromProto(status.Convert(err).Proto()).Err()
	f, ok := AsFenced(back)
	if !ok || f.GetRingIndex() != 7 || f.GetOwnershipIndex() != 12 {
		t.Fatalf("AsFenced = %v, %v", f, ok)
	}
	for _, other := range []error{nil, errors.New("x"), status.Error(codes.FailedPrecondition, "no detail"), status.Error(codes.Unavailable, "down")} {
		if _, ok := AsFenced(other); ok {
			t.Fatalf("AsFenced(%v) = true", other)
		}
	}
}
