package ingester

// This file builds the gRPC server's options: its limits, keepalive, panic recovery and the
// interceptor chain. Every call, of every service (Ring, Ingester, Transfer), goes through
//
//	recover  →  rights (wire_auth.go; under mutual TLS only)  →  receive limit  →  handler
//
// so that a panic anywhere in a handler, the rights check included, becomes codes.Internal with its
// stack in the log, and no handler sees a message larger than its method allows.

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"math"
	"runtime/debug"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/raftingest/raftingest/distributor"
	"github.com/raftingest/raftingest/ingesterpb"
	"github.com/raftingest/raftingest/transferpb"
)

// grpcServerConfig holds the gRPC server's connection limits, with Mimir's flag names
// (-server.grpc*). The per-method receive limits come from the services' own flags (recvLimits).
type grpcServerConfig struct {
	// MaxConcurrentStreams caps the calls in flight on one connection; a client queues the ones
	// above it (grpc-go waits for a free stream; it does not fail them).
	MaxConcurrentStreams uint
	// KeepaliveTime is how long a connection may stay silent before the server pings it;
	// KeepaliveTimeout how long it then waits for the answer before closing the connection.
	KeepaliveTime, KeepaliveTimeout time.Duration
	// MaxConnectionIdle closes a connection that had no call in flight for this long (0: never).
	MaxConnectionIdle time.Duration
	// MinTimeBetweenPings and PingWithoutStreamAllowed are the keepalive enforcement policy: a
	// client that pings more often (or, without the latter, while it has no call in flight) is
	// sent GOAWAY ("too_many_pings") and disconnected.
	MinTimeBetweenPings      time.Duration
	PingWithoutStreamAllowed bool
}

// Defaults of the gRPC server flags.
const (
	// defaultGRPCMaxConcurrentStreams is above Mimir's 100: every member's distributor multiplexes
	// all its in-flight pushes to one ingester on one connection, so the cap must be above what one
	// distributor has in flight or its pushes queue behind each other.
	defaultGRPCMaxConcurrentStreams = 1000
	defaultGRPCKeepaliveTime        = time.Minute
	defaultGRPCKeepaliveTimeout     = 20 * time.Second
	defaultGRPCMaxConnectionIdle    = 5 * time.Minute
	defaultGRPCMinTimeBetweenPings  = 10 * time.Second
	// grpcOtherMaxRecvMsgSize is the receive limit of every method without a flag of its own: the
	// Ring service's requests and QueryStream's (matchers). It is gRPC's default.
	grpcOtherMaxRecvMsgSize = 4 << 20
)

// RegisterFlags registers the gRPC server flags on f.
func (c *grpcServerConfig) RegisterFlags(f *flag.FlagSet) {
	f.UintVar(&c.MaxConcurrentStreams, "server.grpc-max-concurrent-streams", defaultGRPCMaxConcurrentStreams,
		"Most gRPC calls in flight on one connection (HTTP/2 streams); a client queues the others.")
	f.DurationVar(&c.KeepaliveTime, "server.grpc.keepalive.time", defaultGRPCKeepaliveTime,
		"How long a gRPC connection may stay silent before the server pings the client to see whether it is still there.")
	f.DurationVar(&c.KeepaliveTimeout, "server.grpc.keepalive.timeout", defaultGRPCKeepaliveTimeout,
		"How long the server waits for the answer to a keepalive ping before it closes the connection.")
	f.DurationVar(&c.MaxConnectionIdle, "server.grpc.keepalive.max-connection-idle", defaultGRPCMaxConnectionIdle,
		"Close a gRPC connection that had no call in flight for this long (clients reconnect when they need to). 0: never.")
	f.DurationVar(&c.MinTimeBetweenPings, "server.grpc.keepalive.min-time-between-pings", defaultGRPCMinTimeBetweenPings,
		"A client that sends keepalive pings more often than this is disconnected (GOAWAY too_many_pings).")
	f.BoolVar(&c.PingWithoutStreamAllowed, "server.grpc.keepalive.ping-without-stream-allowed", true,
		"Allow keepalive pings from a client with no call in flight (when false such a client is disconnected).")
}

// Validate checks the gRPC server flags, naming them.
func (c *grpcServerConfig) Validate() error {
	var errs []error
	if c.MaxConcurrentStreams < 1 || c.MaxConcurrentStreams > math.MaxUint32 {
		errs = append(errs, fmt.Errorf("-server.grpc-max-concurrent-streams=%d: want 1 to %d", c.MaxConcurrentStreams, uint32(math.MaxUint32)))
	}
	for _, d := range []struct {
		flag string
		v    time.Duration
		zero bool // 0 allowed
	}{
		{"-server.grpc.keepalive.time", c.KeepaliveTime, false},
		{"-server.grpc.keepalive.timeout", c.KeepaliveTimeout, false},
		{"-server.grpc.keepalive.max-connection-idle", c.MaxConnectionIdle, true},
		{"-server.grpc.keepalive.min-time-between-pings", c.MinTimeBetweenPings, true},
	} {
		if d.v < 0 || (d.v == 0 && !d.zero) {
			errs = append(errs, fmt.Errorf("%s=%s: want a positive duration", d.flag, d.v))
		}
	}
	if c.KeepaliveTime > 0 && c.KeepaliveTime < c.MinTimeBetweenPings {
		// grpc-go clients that mirror the server's keepalive time would be disconnected for it.
		errs = append(errs, fmt.Errorf("-server.grpc.keepalive.time (%s) is below -server.grpc.keepalive.min-time-between-pings (%s)",
			c.KeepaliveTime, c.MinTimeBetweenPings))
	}
	return errors.Join(errs...)
}

// recvLimits are the per-method receive limits in bytes. gRPC has one server-wide limit
// (grpc.MaxRecvMsgSize), which is set to the largest of these so that gRPC itself refuses anything
// larger before it allocates for it; recvLimitInterceptors hold every method to its own.
type recvLimits struct {
	push  int // Ingester.Push: -distributor.max-recv-msg-size
	frame int // Transfer.TransferChunks, per frame: -ingester.transfer-max-recv-msg-size
	other int // the Ring service and QueryStream: grpcOtherMaxRecvMsgSize
}

func (s *Server) recvLimits() recvLimits {
	return recvLimits{push: s.cfg.Distributor.MaxRecvMsgSize, frame: s.cfg.Transfer.MaxRecvMsgSize, other: grpcOtherMaxRecvMsgSize}
}

func (l recvLimits) max() int { return max(l.push, l.frame, l.other) }

// of returns method's limit and what sets it (for the refusal's message).
func (l recvLimits) of(method string) (int, string) {
	switch method {
	case ingesterpb.Ingester_Push_FullMethodName:
		// A Push carries (part of) one remote-write request, decoded: at most what the distributor
		// accepts.
		return l.push, "-distributor.max-recv-msg-size"
	case transferpb.Transfer_TransferChunks_FullMethodName:
		return l.frame, "-ingester.transfer-max-recv-msg-size"
	}
	return l.other, "the limit of methods without a flag of their own"
}

// msgSize is the encoded size of a received message: the wire bytes of a raw Push, the protobuf
// size of anything else (computed from the decoded message: cheap next to decoding it).
func msgSize(m any) int {
	switch v := m.(type) {
	case *ingesterpb.RawPushRequest:
		if v.Data == nil {
			return 0
		}
		return len(*v.Data)
	case proto.Message:
		return proto.Size(v)
	}
	return 0
}

// tooLarge is the refusal of a message above its method's limit: ResourceExhausted, as gRPC's own
// refusal above the server-wide limit.
func tooLarge(method string, size, limit int, by string) error {
	return status.Errorf(codes.ResourceExhausted, "%s: received message of %d bytes, larger than the limit of %d bytes (%s)", method, size, limit, by)
}

// recvLimitInterceptors hold each method to its receive limit (see recvLimits). A streaming
// method's limit applies to every message of the stream.
func recvLimitInterceptors(l recvLimits) (grpc.UnaryServerInterceptor, grpc.StreamServerInterceptor) {
	unary := func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		limit, by := l.of(info.FullMethod)
		if n := msgSize(req); n > limit {
			return nil, tooLarge(info.FullMethod, n, limit, by)
		}
		return h(ctx, req)
	}
	stream := func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
		limit, by := l.of(info.FullMethod)
		return h(srv, &limitedStream{ServerStream: ss, method: info.FullMethod, limit: limit, by: by})
	}
	return unary, stream
}

// limitedStream refuses a received message above the stream method's limit.
type limitedStream struct {
	grpc.ServerStream
	method string
	limit  int
	by     string
}

func (s *limitedStream) RecvMsg(m any) error {
	if err := s.ServerStream.RecvMsg(m); err != nil {
		return err
	}
	if n := msgSize(m); n > s.limit {
		if r, ok := m.(interface{ Reset() }); ok {
			r.Reset() // do not hand the oversized message on to a handler that ignores the error
		}
		return tooLarge(s.method, n, s.limit, s.by)
	}
	return nil
}

// panicRecovery turns a panic in a gRPC handler (or an interceptor after it) into codes.Internal,
// logged with its stack and counted in raftingest_grpc_server_panics_total{method}, instead of a
// crash of the process. The panic's value is not sent to the client. Only the handler's own
// goroutine is covered: a goroutine a handler starts must recover by itself.
type panicRecovery struct {
	node   string
	log    *slog.Logger
	panics *prometheus.CounterVec
}

func newPanicRecovery(node string, log *slog.Logger, reg prometheus.Registerer) (*panicRecovery, error) {
	p := &panicRecovery{node: node, log: log, panics: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "raftingest_grpc_server_panics_total",
		Help: "Panics in gRPC handlers, recovered and answered with codes.Internal (the stack is logged), by full method name.",
	}, []string{"method"})}
	if reg != nil {
		if err := reg.Register(p.panics); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// recovered is the answer to a call whose handler panicked with v. Call it from the deferred
// function that recovered v, so that the stack it logs is the panic's.
func (p *panicRecovery) recovered(method string, v any) error {
	p.panics.WithLabelValues(method).Inc()
	p.log.Error("panic in a gRPC handler, recovered; the call fails with Internal", "method", method, "panic", fmt.Sprint(v),
		"stack", string(debug.Stack()))
	return status.Errorf(codes.Internal, "ingester %s: internal error serving %s (a panic; its stack is in this node's log)", p.node, method)
}

func (p *panicRecovery) unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (resp any, err error) {
	defer func() {
		if v := recover(); v != nil {
			resp, err = nil, p.recovered(info.FullMethod, v)
		}
	}()
	return h(ctx, req)
}

func (p *panicRecovery) stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) (err error) {
	defer func() {
		if v := recover(); v != nil {
			err = p.recovered(info.FullMethod, v)
		}
	}()
	return h(srv, ss)
}

// grpcServerOptions are every option of the node's gRPC server: credentials, receive limits,
// connection limits, keepalive, the raw Push codec and the interceptor chain (see the file comment).
func (s *Server) grpcServerOptions() ([]grpc.ServerOption, error) {
	c := s.cfg.GRPCServer
	rec, err := newPanicRecovery(s.cfg.NodeID, s.log.With("component", "grpc"), s.reg)
	if err != nil {
		return nil, fmt.Errorf("grpc metrics: %w", err)
	}
	limits := s.recvLimits()
	limitUnary, limitStream := recvLimitInterceptors(limits)
	unary := []grpc.UnaryServerInterceptor{rec.unary}
	stream := []grpc.StreamServerInterceptor{rec.stream}
	creds, authUnary, authStream := s.grpcAuthOptions()
	if authUnary != nil {
		unary, stream = append(unary, authUnary), append(stream, authStream)
	}
	unary, stream = append(unary, limitUnary), append(stream, limitStream)
	opts := []grpc.ServerOption{
		grpc.MaxRecvMsgSize(limits.max()),
		// Push requests arrive as raw bytes (RawCodec) and are decoded without a copy per label;
		// the other services keep the standard codec.
		grpc.ForceServerCodecV2(ingesterpb.RawCodec{Pool: distributor.BufferPool()}),
		grpc.MaxConcurrentStreams(uint32(c.MaxConcurrentStreams)),
		grpc.KeepaliveParams(keepalive.ServerParameters{
			MaxConnectionIdle: c.MaxConnectionIdle, // 0 is gRPC's "infinity"
			Time:              c.KeepaliveTime,
			Timeout:           c.KeepaliveTimeout,
		}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{
			MinTime:             c.MinTimeBetweenPings,
			PermitWithoutStream: c.PingWithoutStreamAllowed,
		}),
		grpc.ChainUnaryInterceptor(unary...),
		grpc.ChainStreamInterceptor(stream...),
	}
	if creds != nil {
		opts = append(opts, creds)
	}
	return opts, nil
}
