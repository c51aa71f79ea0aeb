package ingesterpb

import (
	"context"

	"google.golang.org/grpc"
)

// RawIngesterServer is an IngesterServer whose Push takes the request still encoded, so that it can be
// decoded without the generated code's per-label allocations (PushRequestView). The generated Push is
// not called by a server registered with RegisterIngesterServerRaw.
type RawIngesterServer interface {
	IngesterServer
	// PushRaw is Push with req in PushRequest wire format. req is valid only until PushRaw returns
	// (its buffer goes back to the codec's pool then): anything kept must be copied.
	PushRaw(ctx context.Context, req []byte) (*PushResponse, error)
}

// RegisterIngesterServerRaw registers srv as the Ingester service of s, with Push served by
// srv.PushRaw. The server must use RawCodec (grpc.ForceServerCodecV2(RawCodec{...})): with the
// standard codec every Push fails with codes.Internal. Clients need nothing special: the bytes on the
// wire are those of an ordinary PushRequest.
func RegisterIngesterServerRaw(s grpc.ServiceRegistrar, srv RawIngesterServer) {
	if t, ok := srv.(interface{ testEmbeddedByValue() }); ok {
		t.testEmbeddedByValue()
	}
	desc := Ingester_ServiceDesc // a copy; only Push's handler differs
	desc.Methods = make([]grpc.MethodDesc, 0, len(Ingester_ServiceDesc.Methods))
	for _, m := range Ingester_ServiceDesc.Methods {
		if m.MethodName == "Push" {
			m.Handler = rawPushHandler
		}
		desc.Methods = append(desc.Methods, m)
	}
	s.RegisterService(&desc, srv)
}

func rawPushHandler(srv any, ctx context.Context, dec func(any) error, interceptor grpc.UnaryServerInterceptor) (any, error) {
	in := new(RawPushRequest)
	if err := dec(in); err != nil {
		return nil, err
	}
	defer func() {
		if in.Pool != nil && in.Data != nil {
			in.Pool.Put(in.Data)
		}
	}()
	if interceptor == nil {
		return srv.(RawIngesterServer).PushRaw(ctx, *in.Data)
	}
	info := &grpc.UnaryServerInfo{Server: srv, FullMethod: Ingester_Push_FullMethodName}
	handler := func(ctx context.Context, req any) (any, error) {
		return srv.(RawIngesterServer).PushRaw(ctx, *req.(*RawPushRequest).Data)
	}
	return interceptor(ctx, in, info, handler)
}
