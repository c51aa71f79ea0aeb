package ringhist

import (
	"context"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"google.golang.org/grpc"

	"github.com/raftingest/raftingest/faulttest/check"
	"github.com/raftingest/raftingest/ringpb"
	"github.com/raftingest/raftingest/ringstate"
)

// ReadPeriod is how often a Reader reads the ring; ReadTimeout bounds one read (a read through a
// paused or cut-off node gives up and is recorded as unknown: it constrains nothing).
const (
	ReadPeriod  = 300 * time.Millisecond
	ReadTimeout = 2 * time.Second
)

// Target is a node a Reader may read the ring through: its harness-side gRPC connection (created
// on first use, reconnecting by itself; an error is recorded as an unknown read).
type Target interface {
	Conn() (*grpc.ClientConn, error)
}

// Reader reads the ring with GetRing{Linearizable: true} every ReadPeriod through a random node
// that is up (followers forward the read to the leader) and records each read. Its methods may be
// called from any goroutine.
type Reader struct {
	up   func() []Target
	rng  *rand.Rand // used by the run goroutine only
	stop context.CancelFunc
	done chan struct{}

	mu    sync.Mutex
	reads []Read
}

// StartReader starts reading until the returned reader is stopped (or ctx ends). up lists the
// nodes a read may go through at that moment (it is called from the reader's goroutine); with none,
// that tick reads nothing. seed makes the choice of node reproducible.
func StartReader(ctx context.Context, seed int64, up func() []Target) *Reader {
	ctx, cancel := context.WithCancel(ctx)
	r := &Reader{up: up, rng: rand.New(rand.NewPCG(uint64(seed), 5)), stop: cancel, done: make(chan struct{})}
	go r.run(ctx)
	return r
}

// Stop ends the reads and returns them, in the order they were made. It may be called more than
// once; every call returns every read.
func (r *Reader) Stop() []Read {
	r.stop()
	<-r.done
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.reads)
}

func (r *Reader) run(ctx context.Context) {
	defer close(r.done)
	t := time.NewTicker(ReadPeriod)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		up := r.up()
		if len(up) == 0 {
			continue
		}
		rd := readThrough(ctx, up[r.rng.IntN(len(up))])
		if ctx.Err() != nil {
			return // cut short by the stop, not by the cluster
		}
		r.mu.Lock()
		r.reads = append(r.reads, rd)
		r.mu.Unlock()
	}
}

// readThrough makes one linearizable read through t. Any failure is an unknown read.
func readThrough(ctx context.Context, t Target) Read {
	rd := Read{Op: check.RingOp{Read: true, Call: time.Now()}}
	cc, err := t.Conn()
	if err == nil {
		rctx, cancel := context.WithTimeout(ctx, ReadTimeout)
		var resp *ringpb.GetRingResponse
		resp, err = ringpb.NewRingClient(cc).GetRing(rctx, &ringpb.GetRingRequest{Linearizable: true})
		cancel()
		if err == nil {
			var ring *ringstate.Ring
			if ring, err = ringpb.ToRing(resp.GetMembers(), resp.GetTimeMs()); err == nil {
				rd.Op.Digest, rd.Index = check.RingDigest(ring), resp.GetAppliedIndex()
			}
		}
	}
	rd.Op.Return = time.Now()
	rd.Op.Unknown = err != nil
	return rd
}
