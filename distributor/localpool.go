package distributor

import (
	"google.golang.org/grpc/mem"
)

// localFirstPool is a ClientPool that hands out a given in-process client for one address (this
// node's own ingester) and asks the wrapped pool for every other.
type localFirstPool struct {
	ClientPool
	addr  string
	local IngesterClient
}

// WithLocalClient returns a ClientPool that answers GetClientFor(addr) with local and every other
// address from pool. A node that runs both a distributor and an ingester gives it its ingester's
// in-process client and its own gRPC address as advertised in the ring (ringstate.Member.GRPCAddr),
// so that the replica a push sends to this very node skips gRPC: no encode, loopback, HTTP/2 framing
// or decode. local must honour IngesterClient's contract exactly as a gRPC client would: own and
// release req.Data (put it back into req.Pool), report a failed call as a gRPC status error (the
// distributor classifies errors by status code), and be safe for concurrent use.
func WithLocalClient(pool ClientPool, addr string, local IngesterClient) ClientPool {
	return &localFirstPool{ClientPool: pool, addr: addr, local: local}
}

// GetClientFor implements ClientPool.
func (p *localFirstPool) GetClientFor(addr string) (IngesterClient, error) {
	if addr == p.addr {
		return p.local, nil
	}
	return p.ClientPool.GetClientFor(addr)
}

// BufferPool is the pool of the push path's buffers (request bodies, per-ingester requests): power
// of two tiers that do not zero what they hand out. An ingester's gRPC server can share it
// (ingesterpb.RawCodec{Pool: distributor.BufferPool()}) so that the buffers a distributor sends and
// those an ingester receives recycle through one pool.
func BufferPool() mem.BufferPool { return bufPool }
