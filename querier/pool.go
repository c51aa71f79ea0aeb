package querier

import (
	"errors"
	"fmt"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/raftingest/raftingest/ingesterpb"
)

// ClientPool hands out the Ingester gRPC client for an ingester's address (ringstate.Member.GRPCAddr).
// Implementations must be safe for concurrent use.
type ClientPool interface {
	IngesterClient(addr string) (ingesterpb.IngesterClient, error)
}

// ErrPoolClosed is returned by GRPCPool.IngesterClient after Close.
var ErrPoolClosed = errors.New("querier: ingester client pool closed")

// GRPCPool is a ClientPool of gRPC connections, one per address, created on first use (grpc.NewClient
// does not dial, so IngesterClient never blocks on the network). Retain closes the connections of
// addresses that left the ring. Safe for concurrent use.
type GRPCPool struct {
	dialOpts []grpc.DialOption

	mu     sync.Mutex
	conns  map[string]*grpc.ClientConn
	closed bool
}

// NewGRPCPool returns a pool whose connections accept streamed messages of up to maxRecvMsgSize
// bytes. extra dial options come after the defaults (plaintext transport).
func NewGRPCPool(maxRecvMsgSize int, extra ...grpc.DialOption) *GRPCPool {
	opts := append([]grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxRecvMsgSize)),
	}, extra...)
	return &GRPCPool{dialOpts: opts, conns: map[string]*grpc.ClientConn{}}
}

// IngesterClient implements ClientPool.
func (p *GRPCPool) IngesterClient(addr string) (ingesterpb.IngesterClient, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, ErrPoolClosed
	}
	cc, ok := p.conns[addr]
	if !ok {
		var err error
		if cc, err = grpc.NewClient(addr, p.dialOpts...); err != nil {
			return nil, fmt.Errorf("querier: client for ingester %s: %w", addr, err)
		}
		p.conns[addr] = cc
	}
	return ingesterpb.NewIngesterClient(cc), nil
}

// Retain closes the connections to every address not in keep. The querier calls it with the ring's
// addresses so that connections to departed members do not pile up.
func (p *GRPCPool) Retain(keep map[string]bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for addr, cc := range p.conns {
		if !keep[addr] {
			cc.Close()
			delete(p.conns, addr)
		}
	}
}

// Close closes every connection; later IngesterClient calls fail with ErrPoolClosed.
func (p *GRPCPool) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	var errs []error
	for addr, cc := range p.conns {
		if err := cc.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close %s: %w", addr, err))
		}
	}
	p.conns = nil
	return errors.Join(errs...)
}
