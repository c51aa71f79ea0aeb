package ingesterpb

import (
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/protoadapt"
)

// Write fencing on the wire (see PushRequest.ring_index in proto/ingester.proto): the distributor
// appends the ring index to each pre-encoded request (AppendRingIndex), PushRequestView decodes it,
// and a refused push answers FencedError, which the distributor reads back with AsFenced.

// RingIndexFieldNumber is PushRequest.ring_index's field number.
const RingIndexFieldNumber protowire.Number = 15

// RingIndexSize is the bytes AppendRingIndex adds for index: none for 0 (proto3 leaves a zero
// scalar out, so an unstamped request is byte for byte what it was before fencing).
func RingIndexSize(index uint64) int {
	if index == 0 {
		return 0
	}
	return protowire.SizeTag(RingIndexFieldNumber) + protowire.SizeVarint(index)
}

// AppendRingIndex appends PushRequest.ring_index = index to b, a request encoded so far (fields may
// come in any order on the wire; the generated code and PushRequestView read it wherever it is).
func AppendRingIndex(b []byte, index uint64) []byte {
	if index == 0 {
		return b
	}
	b = protowire.AppendTag(b, RingIndexFieldNumber, protowire.VarintType)
	return protowire.AppendVarint(b, index)
}

// FencedError is an ingester's refusal of a push stamped with ringIndex, below ownershipIndex, the
// last ownership change the ingester has applied: FAILED_PRECONDITION with a FencedPush detail. No
// sample of the request was stored.
func FencedError(member string, ringIndex, ownershipIndex uint64) error {
	st := status.Newf(codes.FailedPrecondition,
		"ingester %s: push fenced: placed by ring index %d, before this member's last ownership change at index %d; place the series again on a ring at or after it",
		member, ringIndex, ownershipIndex)
	if ds, err := st.WithDetails(protoadapt.MessageV1Of(&FencedPush{RingIndex: ringIndex, OwnershipIndex: ownershipIndex})); err == nil {
		st = ds
	}
	return st.Err()
}

// AsFenced returns the detail of a push refused by FencedError, and false for any other error.
func AsFenced(err error) (*FencedPush, bool) {
	st, ok := status.FromError(err)
	if !ok || st.Code() != codes.FailedPrecondition {
		return nil, false
	}
	for _, d := range st.Details() {
		if f, ok := d.(*FencedPush); ok {
			return f, true
		}
	}
	return nil, false
}
