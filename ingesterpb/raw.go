package ingesterpb

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/metadata"

	"github.com/raftingest/raftingest/tenant"
)

// TenantMetadataKey is the gRPC metadata key that carries the tenant of a Push, the same key (and
// meaning) as the X-Scope-OrgID HTTP header: gRPC lower-cases metadata keys.
const TenantMetadataKey = "x-scope-orgid"

// ErrNoTenant is returned by TenantFromIncomingContext when the call carries no tenant.
var ErrNoTenant = errors.New("ingesterpb: no tenant in gRPC metadata key " + TenantMetadataKey)

// WithTenant returns ctx with the tenant attached as outgoing gRPC metadata.
func WithTenant(ctx context.Context, tenant string) context.Context {
	return metadata.AppendToOutgoingContext(ctx, TenantMetadataKey, tenant)
}

// TenantFromIncomingContext returns the tenant of an incoming call (server side). Exactly one
// non-empty value is accepted: two values would make the owner of the data ambiguous. The tenant
// must pass tenant.Validate, the rules of X-Scope-OrgID: the store, the WAL and the flush to the
// bucket (where it names a directory) never see one that does not; the error then wraps
// tenant.ErrInvalid.
func TenantFromIncomingContext(ctx context.Context) (string, error) {
	md, ok := metadata.FromIncomingContext(ctx)
	if !ok {
		return "", ErrNoTenant
	}
	vs := md.Get(TenantMetadataKey)
	switch {
	case len(vs) == 0 || vs[0] == "":
		return "", ErrNoTenant
	case len(vs) > 1:
		for i, v := range vs {
			vs[i] = strconv.Quote(v)
		}
		return "", errors.New("ingesterpb: several tenants in gRPC metadata key " + TenantMetadataKey + ": " + strings.Join(vs, ", "))
	}
	if err := tenant.Validate(vs[0]); err != nil {
		return "", fmt.Errorf("ingesterpb: gRPC metadata key %s: %w", TenantMetadataKey, err)
	}
	return vs[0], nil
}

// RawPushRequest is a PushRequest that is already encoded in protobuf wire format: the concatenation
// of encoded `timeseries` fields (tag 0x0a, length, TimeSeries), which is exactly what a distributor
// cuts out of a client's remote-write body. Sent with RawCodec, gRPC writes Data to the wire as is,
// and the server decodes it as an ordinary PushRequest.
//
// Ownership: gRPC may still hold Data after the call returns (a cancelled call's frames can still be
// queued in the transport, and retries keep a copy). With a Pool, *Data is handed to gRPC, which puts
// it back into Pool when its last reference is released; the caller must not touch it after the call.
// Without a Pool the caller must never reuse the array (let the garbage collector have it).
type RawPushRequest struct {
	Data *[]byte
	Pool mem.BufferPool
}

// RawCodec is the gRPC codec for pre-encoded Push requests, on both sides; every other message goes
// through the standard proto codec. Its Name is "proto", so the content-subtype on the wire is the
// standard one and either side may use the standard codec instead.
//
// Client side: Marshal passes *RawPushRequest through unchanged. Use it per call with
// grpc.ForceCodecV2(RawCodec{}); PushRaw does.
//
// Server side: Unmarshal into *RawPushRequest copies the message's bytes into a buffer from Pool (nil:
// gRPC's default pool) instead of decoding them, so that the handler registered by
// RegisterIngesterServerRaw can decode them with PushRequestView. Install it on the server with
// grpc.ForceServerCodecV2(RawCodec{Pool: ...}); the server's other services are unaffected.
type RawCodec struct {
	Pool mem.BufferPool
}

var _ encoding.CodecV2 = RawCodec{}

func protoCodec() encoding.CodecV2 { return encoding.GetCodecV2(proto.Name) }

// Marshal implements encoding.CodecV2.
func (RawCodec) Marshal(v any) (mem.BufferSlice, error) {
	if r, ok := v.(*RawPushRequest); ok {
		if r.Data == nil {
			return mem.BufferSlice{}, nil
		}
		return mem.BufferSlice{mem.NewBuffer(r.Data, r.Pool)}, nil
	}
	return protoCodec().Marshal(v)
}

// Unmarshal implements encoding.CodecV2.
func (c RawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	r, ok := v.(*RawPushRequest)
	if !ok {
		return protoCodec().Unmarshal(data, v)
	}
	n := data.Len()
	if n == 0 {
		b := []byte{}
		r.Data, r.Pool = &b, nil
		return nil
	}
	pool := c.Pool
	if pool == nil {
		pool = mem.DefaultBufferPool()
	}
	buf := pool.Get(n)
	data.CopyTo(*buf)
	r.Data, r.Pool = buf, pool
	return nil
}

// Name implements encoding.CodecV2. It must be "proto": it becomes the content-subtype.
func (RawCodec) Name() string { return proto.Name }

// PushRaw calls Ingester.Push with a pre-encoded request (see RawPushRequest for who owns its bytes).
// The tenant must already be in ctx (WithTenant).
func PushRaw(ctx context.Context, cc grpc.ClientConnInterface, req *RawPushRequest, opts ...grpc.CallOption) (*PushResponse, error) {
	out := new(PushResponse)
	opts = append([]grpc.CallOption{grpc.ForceCodecV2(RawCodec{})}, opts...)
	if err := cc.Invoke(ctx, Ingester_Push_FullMethodName, req, out, opts...); err != nil {
		return nil, err
	}
	return out, nil
}

// IsClientError reports whether a per-series error code means the series can never be stored as
// sent (HTTP 4xx: Prometheus drops it) rather than a failure worth retrying (5xx).
func (c ErrorCode) IsClientError() bool {
	switch c {
	case ErrorCode_OUT_OF_ORDER, ErrorCode_SAMPLE_TOO_OLD, ErrorCode_DUPLICATE_TIMESTAMP, ErrorCode_TOO_MANY_SERIES, ErrorCode_INVALID:
		return true
	}
	return false
}
