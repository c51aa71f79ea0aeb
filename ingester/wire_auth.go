package ingester

// This file wires the cluster plane's identities (package auth) into the Server: the gRPC server's
// credentials and the rights of the ingester and transfer services, the credentials of every
// client this node opens to another member, and the warning for a plain cluster plane off
// loopback. The Ring service checks its own rights (raftfsm/rights.go).

import (
	"context"
	"fmt"
	"log/slog"
	"net"

	"google.golang.org/grpc"

	"github.com/raftingest/raftingest/auth"
	"github.com/raftingest/raftingest/blockspb"
	"github.com/raftingest/raftingest/ingesterpb"
	"github.com/raftingest/raftingest/ringstate"
	"github.com/raftingest/raftingest/transferpb"
)

// grpcAuthOptions are the gRPC server's credentials and the interceptors that enforce the rights
// of the ingester and transfer services (grpcServerOptions chains them after panic recovery and
// before the receive limits). Without TLS: plain credentials and no interceptor.
func (s *Server) grpcAuthOptions() (creds grpc.ServerOption, unary grpc.UnaryServerInterceptor, stream grpc.StreamServerInterceptor) {
	if s.auth == nil {
		return nil, nil, nil
	}
	unary = func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		if err := s.authorizeMethod(ctx, info.FullMethod); err != nil {
			return nil, err
		}
		return h(ctx, req)
	}
	stream = func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
		if err := s.authorizeMethod(ss.Context(), info.FullMethod); err != nil {
			return err
		}
		return h(srv, ss)
	}
	return s.auth.ServerOption(), unary, stream
}

// authorizeMethod is the right every call of an ingester, blocks or transfer method needs before
// its handler runs: the caller is a member of the ring (Push, QueryStream, QueryBlocks, QueryExemplars,
// MetricsMetadata, every
// Blocks method; DeleteBlocks also checks the compactor lease in its handler), or a member at all
// (TransferChunks, whose leaver is checked against the caller on the first frame:
// authorizeHandover). The Ring service's methods check their own rights.
func (s *Server) authorizeMethod(ctx context.Context, method string) error {
	switch method {
	case ingesterpb.Ingester_Push_FullMethodName, ingesterpb.Ingester_QueryStream_FullMethodName,
		ingesterpb.Ingester_QueryBlocks_FullMethodName,
		ingesterpb.Ingester_QueryExemplars_FullMethodName, ingesterpb.Ingester_MetricsMetadata_FullMethodName,
		blockspb.Blocks_ListBlocks_FullMethodName, blockspb.Blocks_FetchBlock_FullMethodName,
		blockspb.Blocks_StoreBlock_FullMethodName, blockspb.Blocks_DeleteBlocks_FullMethodName:
		p := s.auth.Caller(ctx)
		if p.Kind != auth.Node {
			return s.auth.Deny(p, auth.RightMember, "call "+method+" (only members write to, read from and move blocks between ingesters)")
		}
		if _, ok := s.node.Ring().Member(ringstate.MemberID(p.Name)); !ok {
			return s.auth.Deny(p, auth.RightMember, fmt.Sprintf("call %s: %q is not a ring member", method, p.Name))
		}
	case transferpb.Transfer_TransferChunks_FullMethodName:
		if p := s.auth.Caller(ctx); p.Kind != auth.Node {
			return s.auth.Deny(p, auth.RightHandover, "hand over to "+s.cfg.NodeID)
		}
	}
	return nil
}

// authorizeHandover is the receiver's check on a hand-over stream's first frame: the stream's
// caller must be the leaver the frame names. (The receiver then checks that the ring pairs that
// leaver with this node, once its ring has caught up with the claim.) nil without TLS.
func (s *Server) authorizeHandover() func(ctx context.Context, leaver ringstate.MemberID) error {
	if s.auth == nil {
		return nil
	}
	return func(ctx context.Context, leaver ringstate.MemberID) error {
		if p := s.auth.Caller(ctx); p.Kind != auth.Node || p.Name != string(leaver) {
			return s.auth.Deny(p, auth.RightHandover, fmt.Sprintf("hand over to %s as leaver %q", s.cfg.NodeID, leaver))
		}
		return nil
	}
}

// warnPlainClusterPlane logs a warning for each cluster-plane listener on a non-loopback address
// while mutual TLS is off: anyone who reaches it can change the ring and read every tenant.
func warnPlainClusterPlane(cfg Config, log *slog.Logger) {
	if cfg.TLS.Enabled() {
		return
	}
	for _, l := range []struct{ flag, addr string }{{"-raft.addr", cfg.RaftAddr}, {"-grpc.addr", cfg.GRPCAddr}} {
		if !isLoopback(l.addr) {
			log.Warn("the cluster plane listens off loopback without TLS: anyone who reaches it can rewrite the ring and read or write any tenant; set -tls.cert-path, -tls.key-path and -tls.ca-path",
				"flag", l.flag, "addr", l.addr)
		}
	}
}

// isLoopback reports whether a host:port listens only on loopback. An empty or unspecified host
// listens everywhere; a name other than localhost is taken as not loopback.
func isLoopback(hostport string) bool {
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
