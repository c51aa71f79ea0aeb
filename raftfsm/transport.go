package raftfsm

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	"google.golang.org/grpc"
)

// DialFunc opens an outgoing TCP connection, as net.Dialer.DialContext does. Config.Dial carries
// one so that a test harness can cut, delay or proxy every link of a node.
type DialFunc func(ctx context.Context, network, addr string) (net.Conn, error)

// newTransport creates the node's Raft network transport listening on cfg.RaftAddr. With
// cfg.Dial nil it is hashicorp/raft's own TCP transport, exactly as before the hook existed; with
// cfg.Dial set, the same NetworkTransport over a stream layer whose outgoing connections are
// opened by cfg.Dial. Either way the advertised address is the listener's (cfg.Validate makes the
// host an IP literal that is not unspecified, so it is advertisable).
func newTransport(cfg Config, logger hclog.Logger) (*raft.NetworkTransport, error) {
	tc := &raft.NetworkTransportConfig{
		MaxPool: 3,
		Timeout: 10 * time.Second,
		Logger:  logger,
	}
	if cfg.Dial == nil {
		return raft.NewTCPTransportWithConfig(cfg.RaftAddr, nil, tc)
	}
	ln, err := net.Listen("tcp", cfg.RaftAddr)
	if err != nil {
		return nil, err
	}
	if a, ok := ln.Addr().(*net.TCPAddr); !ok || a.IP == nil || a.IP.IsUnspecified() {
		ln.Close()
		return nil, fmt.Errorf("raft address %s is not advertisable", ln.Addr())
	}
	tc.Stream = &dialStreamLayer{Listener: ln, dial: cfg.Dial}
	return raft.NewNetworkTransportWithConfig(tc), nil
}

// dialStreamLayer is a raft.StreamLayer over a TCP listener whose outgoing connections come from
// a DialFunc. It advertises the listener's address.
type dialStreamLayer struct {
	net.Listener
	dial DialFunc
}

// Dial opens a connection to a peer's Raft address through the hook, bounded by timeout (the
// transport's -raft RPC timeout), as raft's own TCP stream layer bounds net.DialTimeout.
func (s *dialStreamLayer) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	ctx := context.Background()
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	c, err := s.dial(ctx, "tcp", string(address))
	if err != nil {
		return nil, err
	}
	if c == nil {
		return nil, errors.New("raftfsm: dial hook returned no connection and no error")
	}
	return c, nil
}

// grpcDialOptions are the extra options of the node's forwarding gRPC clients: a context dialer
// when cfg.Dial is set, none otherwise (grpc's own dialer, as before the hook existed).
func grpcDialOptions(dial DialFunc) []grpc.DialOption {
	if dial == nil {
		return nil
	}
	return []grpc.DialOption{grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
		return dial(ctx, "tcp", addr)
	})}
}
