package ingester

import (
	"testing"

	"github.com/raftingest/raftingest/ingesterpb"
	"github.com/raftingest/raftingest/memstore"
)

// A sample older than the out-of-order window is SAMPLE_TOO_OLD (the distributor's
// sample_too_old discard reason), a client error like OUT_OF_ORDER, which it wraps.
func TestErrorCode_OutOfOrderAndTooOld(t *testing.T) {
	for err, want := range map[error]ingesterpb.ErrorCode{
		memstore.SampleError{Err: memstore.ErrSampleTooOld}:                ingesterpb.ErrorCode_SAMPLE_TOO_OLD,
		memstore.SampleError{Err: memstore.ErrOutOfOrderSample}:            ingesterpb.ErrorCode_OUT_OF_ORDER,
		memstore.SampleError{Err: memstore.ErrDuplicateSampleForTimestamp}: ingesterpb.ErrorCode_DUPLICATE_TIMESTAMP,
	} {
		got := errorCode(err)
		if got != want || !got.IsClientError() {
			t.Errorf("%v: code %s (client error %v), want %s, a client error", err, got, got.IsClientError(), want)
		}
	}
}
