package raftfsm

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	"google.golang.org/grpc"

	"github.com/raftingest/raftingest/auth"
)

// DialFunc opens an outgoing TCP connection, as net.Dialer.DialContext does. Config.Dial carries
// one so that a test harness can cut, delay or proxy every link of a node.
type DialFunc func(ctx context.Context, network, addr string) (net.Conn, error)

// raftHandshakeTimeout bounds a Raft connection's TLS handshake, so that a peer that connects and
// says nothing cannot hold a transport goroutine.
const raftHandshakeTimeout = 10 * time.Second

// newTransport creates the node's Raft network transport listening on cfg.RaftAddr. With
// cfg.Dial and cfg.TLS nil it is hashicorp/raft's own TCP transport, exactly as before either
// existed; otherwise the same NetworkTransport over a stream layer whose outgoing connections are
// opened by cfg.Dial (or a net.Dialer) and, with cfg.TLS, wrapped in mutual TLS checked against
// conf (the node's Raft configuration, set once Raft runs). Either way the advertised address is
// the listener's (cfg.Validate makes the host an IP literal that is not unspecified, so it is
// advertisable).
func newTransport(cfg Config, logger hclog.Logger, conf *raftConf) (*raft.NetworkTransport, error) {
	tc := &raft.NetworkTransportConfig{
		MaxPool: 3,
		Timeout: 10 * time.Second,
		Logger:  logger,
	}
	if cfg.Dial == nil && cfg.TLS == nil {
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
	dial := cfg.Dial
	if dial == nil {
		dial = (&net.Dialer{}).DialContext
	}
	var stream raft.StreamLayer = &dialStreamLayer{Listener: ln, dial: dial}
	if cfg.TLS != nil {
		stream = &tlsStreamLayer{inner: stream, a: cfg.TLS, conf: conf, self: cfg.ID}
	}
	tc.Stream = stream
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

// raftConf reads the node's latest Raft configuration (committed or not) without blocking, for
// the TLS stream layer's identity checks. Until Raft runs it reports no configuration and ok
// false: connections are refused, and peers retry.
type raftConf struct {
	r atomic.Pointer[raft.Raft]
}

func (c *raftConf) servers() (servers []raft.Server, ok bool) {
	r := c.r.Load()
	if r == nil {
		return nil, false
	}
	f := r.GetConfiguration()
	if f.Error() != nil {
		return nil, false
	}
	return f.Configuration().Servers, true
}

// tlsStreamLayer wraps a stream layer in mutual TLS with identities:
//   - a connecting peer must present a member certificate whose id is a server of this node's
//     latest configuration; while that configuration is empty (a new node waiting to be added)
//     any member certificate is accepted, since the leader adding it is not known yet;
//   - a dialed peer must present the certificate of the server id this node's configuration has
//     at that address (any member's when the address is not in it).
//
// So a certificate from another CA, an operator's certificate, or a member removed from the
// configuration cannot take part in Raft: it can neither pose as a leader nor vote.
type tlsStreamLayer struct {
	inner raft.StreamLayer
	a     *auth.Authority
	conf  *raftConf
	self  string
}

func (s *tlsStreamLayer) Addr() net.Addr { return s.inner.Addr() }
func (s *tlsStreamLayer) Close() error   { return s.inner.Close() }

// Accept returns the next connection; its handshake runs on its first read or write (on the
// transport's goroutine for that connection, not the accept loop), bounded by
// raftHandshakeTimeout.
func (s *tlsStreamLayer) Accept() (net.Conn, error) {
	c, err := s.inner.Accept()
	if err != nil {
		return nil, err
	}
	cfg := s.a.ServerTLS(nil, s.admit)
	return &handshakeConn{Conn: tls.Server(c, cfg)}, nil
}

// admit is the accept side's identity check.
func (s *tlsStreamLayer) admit(p auth.Principal) error {
	if p.Kind != auth.Node {
		return fmt.Errorf("raftfsm: raft refuses %s: only members speak raft", p)
	}
	servers, ok := s.conf.servers()
	if !ok {
		return fmt.Errorf("raftfsm: raft is not running yet on %s; retry", s.self)
	}
	if len(servers) > 0 && !slices.ContainsFunc(servers, func(sv raft.Server) bool { return string(sv.ID) == p.Name }) {
		return fmt.Errorf("raftfsm: raft refuses %s: not in %s's raft configuration", p, s.self)
	}
	return nil
}

// Dial connects to a peer and completes the TLS handshake before returning, so that a refused
// identity fails the dial (the transport then retries later) instead of a later RPC.
func (s *tlsStreamLayer) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	start := time.Now()
	c, err := s.inner.Dial(address, timeout)
	if err != nil {
		return nil, err
	}
	expect := ""
	if servers, ok := s.conf.servers(); ok {
		if i := slices.IndexFunc(servers, func(sv raft.Server) bool { return sv.Address == address }); i >= 0 {
			expect = string(servers[i].ID)
		}
	}
	tc := tls.Client(c, s.a.ClientTLS(expect))
	hsTimeout := raftHandshakeTimeout
	if timeout > 0 {
		hsTimeout = max(timeout-time.Since(start), time.Millisecond)
	}
	ctx, cancel := context.WithTimeout(context.Background(), hsTimeout)
	defer cancel()
	if err := tc.HandshakeContext(ctx); err != nil {
		c.Close()
		return nil, fmt.Errorf("raftfsm: tls handshake with raft peer %s: %w", address, err)
	}
	return tc, nil
}

// handshakeConn is a server-side TLS connection whose handshake is bounded in time: the first
// Read or Write runs it under a deadline, then clears the deadline.
type handshakeConn struct {
	*tls.Conn
	once sync.Once
	err  error
}

func (c *handshakeConn) handshake() error {
	c.once.Do(func() {
		_ = c.Conn.SetDeadline(time.Now().Add(raftHandshakeTimeout))
		c.err = c.Conn.Handshake()
		_ = c.Conn.SetDeadline(time.Time{})
		if c.err != nil {
			_ = c.Conn.Close()
		}
	})
	return c.err
}

func (c *handshakeConn) Read(b []byte) (int, error) {
	if err := c.handshake(); err != nil {
		return 0, err
	}
	return c.Conn.Read(b)
}

func (c *handshakeConn) Write(b []byte) (int, error) {
	if err := c.handshake(); err != nil {
		return 0, err
	}
	return c.Conn.Write(b)
}

// grpcDialOptions are the extra options of the node's forwarding gRPC clients: a context dialer
// when cfg.Dial is set, and the cluster's TLS (expecting at each address the member the ring
// has there) when cfg.TLS is set; none otherwise (grpc's own dialer, as before either existed).
func grpcDialOptions(dial DialFunc, a *auth.Authority, expect func(addr string) string) []grpc.DialOption {
	var opts []grpc.DialOption
	if dial != nil {
		opts = append(opts, grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
			return dial(ctx, "tcp", addr)
		}))
	}
	if a != nil {
		opts = append(opts, a.DialOption(expect))
	}
	return opts
}
