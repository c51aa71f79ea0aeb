package distributor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/raftingest/raftingest/ingesterpb"
)

// IngesterClient pushes pre-encoded requests to one ingester. Implementations must be safe for
// concurrent use.
type IngesterClient interface {
	// Push sends req for tenant and returns the ingester's answer. Ownership of req.Data passes to
	// the client (see ingesterpb.RawPushRequest): the caller must not touch it afterwards.
	Push(ctx context.Context, tenant string, req *ingesterpb.RawPushRequest) (*ingesterpb.PushResponse, error)
}

// ClientPool hands out the client for an ingester's gRPC address (ringstate.Member.GRPCAddr).
// Implementations must be safe for concurrent use. GRPCClientPool is the real one; tests use fakes.
type ClientPool interface {
	GetClientFor(addr string) (IngesterClient, error)
}

// ErrPoolClosed is returned by GetClientFor after Close.
var ErrPoolClosed = errors.New("distributor: ingester client pool closed")

// GRPCClientPool is a ClientPool of gRPC connections, one per address, created on first use and
// closed after IdleTimeout without use (members leave the ring; their connections must not stay
// forever). Connections are created with grpc.NewClient, which does not dial until the first call, so
// GetClientFor never blocks on the network.
type GRPCClientPool struct {
	idleTimeout time.Duration
	dialOpts    []grpc.DialOption
	now         func() time.Time
	log         *slog.Logger

	mu     sync.Mutex
	conns  map[string]*grpcIngesterClient // by address
	closed bool

	stop chan struct{}
	done chan struct{}
}

// grpcIngesterClient is one pooled connection.
type grpcIngesterClient struct {
	addr     string
	cc       *grpc.ClientConn
	lastUsed atomic.Int64 // Unix nanoseconds of the last GetClientFor or finished Push
	now      func() time.Time
}

// Push implements IngesterClient through ingesterpb.PushRaw.
func (c *grpcIngesterClient) Push(ctx context.Context, tenant string, req *ingesterpb.RawPushRequest) (*ingesterpb.PushResponse, error) {
	defer c.lastUsed.Store(c.now().UnixNano())
	return ingesterpb.PushRaw(ingesterpb.WithTenant(ctx, tenant), c.cc, req)
}

// NewGRPCClientPool returns a pool that closes connections idle for idleTimeout, checking every
// idleTimeout/2 (a zero or negative idleTimeout disables the cleanup). extra dial options come after
// the defaults (plaintext transport). Close it to stop its cleanup goroutine and close every
// connection.
//
// The idle timeout must be much longer than -distributor.remote-timeout: a connection is closed only
// when no Push started or finished on it for idleTimeout, so a push in flight is never cut unless it
// outlives the idle timeout itself.
func NewGRPCClientPool(idleTimeout time.Duration, logger *slog.Logger, extra ...grpc.DialOption) *GRPCClientPool {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	p := &GRPCClientPool{
		idleTimeout: idleTimeout,
		dialOpts:    append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, extra...),
		now:         time.Now,
		log:         logger,
		conns:       map[string]*grpcIngesterClient{},
		stop:        make(chan struct{}),
		done:        make(chan struct{}),
	}
	go p.cleanupLoop()
	return p
}

// GetClientFor implements ClientPool.
func (p *GRPCClientPool) GetClientFor(addr string) (IngesterClient, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, ErrPoolClosed
	}
	c, ok := p.conns[addr]
	if !ok {
		cc, err := grpc.NewClient(addr, p.dialOpts...)
		if err != nil {
			return nil, fmt.Errorf("distributor: client for ingester %s: %w", addr, err)
		}
		c = &grpcIngesterClient{addr: addr, cc: cc, now: p.now}
		p.conns[addr] = c
	}
	c.lastUsed.Store(p.now().UnixNano())
	return c, nil
}

// Len is the number of open connections.
func (p *GRPCClientPool) Len() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.conns)
}

// CloseIdle closes the connections not used since idleTimeout before now, and returns how many it
// closed. The cleanup goroutine calls it; tests call it with a chosen now.
func (p *GRPCClientPool) CloseIdle(now time.Time) int {
	if p.idleTimeout <= 0 {
		return 0
	}
	cutoff := now.Add(-p.idleTimeout).UnixNano()
	var idle []*grpcIngesterClient
	p.mu.Lock()
	for addr, c := range p.conns {
		if c.lastUsed.Load() < cutoff {
			idle = append(idle, c)
			delete(p.conns, addr)
		}
	}
	p.mu.Unlock()
	for _, c := range idle {
		p.log.Debug("closing idle ingester connection", "addr", c.addr)
		_ = c.cc.Close()
	}
	return len(idle)
}

func (p *GRPCClientPool) cleanupLoop() {
	defer close(p.done)
	if p.idleTimeout <= 0 {
		<-p.stop
		return
	}
	t := time.NewTicker(p.idleTimeout / 2)
	defer t.Stop()
	for {
		select {
		case <-p.stop:
			return
		case <-t.C:
			p.CloseIdle(p.now())
		}
	}
}

// Close stops the cleanup goroutine and closes every connection. Pushes in flight fail.
func (p *GRPCClientPool) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	conns := p.conns
	p.conns = map[string]*grpcIngesterClient{}
	p.mu.Unlock()
	close(p.stop)
	<-p.done
	var errs []error
	for _, c := range conns {
		errs = append(errs, c.cc.Close())
	}
	return errors.Join(errs...)
}
