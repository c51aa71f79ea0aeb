package distributor

import (
	"math/bits"
	"sync"

	"google.golang.org/grpc/mem"
)

// bufPool holds every buffer of the push path: compressed bodies, decompressed bodies and the
// per-ingester requests (gRPC puts those back when its transport is done with them).
var bufPool mem.BufferPool = newTieredPool()

// Pool tiers: powers of two from 256 B to 128 MiB (above the default -distributor.max-recv-msg-size of
// 100 MiB). Larger buffers are not pooled.
const (
	minPoolExp = 8
	maxPoolExp = 27
)

// tieredPool is a mem.BufferPool of power-of-two tiers that, unlike gRPC's default pool, does not
// zero buffers: every user here overwrites the whole length it asks for (snappy output, a body read
// in full, a request built to its exact size), and clearing a multi-megabyte body on every request
// would cost more than decoding it. Tiers keep a 64 KiB request from pinning a 100 MiB array.
type tieredPool struct {
	tiers [maxPoolExp + 1]sync.Pool // tiers[e] holds buffers of capacity exactly 1<<e
}

func newTieredPool() *tieredPool { return &tieredPool{} }

// Get returns a buffer of length size (capacity rounded up to a power of two).
func (p *tieredPool) Get(size int) *[]byte {
	e := max(bits.Len(uint(max(size, 1)-1)), minPoolExp)
	if e > maxPoolExp {
		b := make([]byte, size)
		return &b
	}
	if v, ok := p.tiers[e].Get().(*[]byte); ok {
		*v = (*v)[:size]
		return v
	}
	b := make([]byte, size, 1<<e)
	return &b
}

// Put returns a buffer obtained from Get (or a prefix of one) to its tier.
func (p *tieredPool) Put(b *[]byte) {
	c := cap(*b)
	if c == 0 || c&(c-1) != 0 { // not one of ours (or grown elsewhere): let the GC have it
		return
	}
	e := bits.Len(uint(c)) - 1
	if e < minPoolExp || e > maxPoolExp {
		return
	}
	p.tiers[e].Put(b)
}
