package blocksvc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"syscall"
	"time"

	"github.com/raftingest/raftingest/blockspb"
)

// ErrStalled ends a block stream whose next message did not come within the idle timeout.
var ErrStalled = errors.New("blocksvc: block stream stalled")

// partSource receives a block stream's messages on its own goroutine, so that the receiver can
// give up on a stalled peer: a gRPC Recv cannot be interrupted but by ending the call. It holds at
// most one received message that its reader has not taken.
type partSource struct {
	ch   chan recvResult
	done chan struct{}
	idle time.Duration
}

type recvResult struct {
	part *blockspb.BlockPart
	err  error
}

// startRecv starts receiving with recv until it returns an error (io.EOF at the end of the stream)
// or stop is called. The caller must end the call (return from the handler, cancel the client
// stream's context) after stop, so that a Recv in progress returns and the goroutine ends.
func startRecv(recv func() (*blockspb.BlockPart, error), idle time.Duration) *partSource {
	s := &partSource{ch: make(chan recvResult), done: make(chan struct{}), idle: idle}
	go func() {
		for {
			p, err := recv()
			select {
			case s.ch <- recvResult{p, err}:
			case <-s.done:
				return
			}
			if err != nil {
				return
			}
		}
	}()
	return s
}

// next returns the next message, io.EOF at the end of the stream, the stream's error, ErrStalled
// after the idle timeout without a message, or ctx's error.
func (s *partSource) next(ctx context.Context) (*blockspb.BlockPart, error) {
	t := time.NewTimer(s.idle)
	defer t.Stop()
	select {
	case r := <-s.ch:
		return r.part, r.err
	case <-t.C:
		return nil, fmt.Errorf("%w: nothing received for %s", ErrStalled, s.idle)
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (s *partSource) stop() { close(s.done) }

// receiveBlock writes the pieces that follow header h from src into dir until the end of the
// stream, checks that every file came whole, writes meta.json and verifies the block. It returns
// the file bytes received. On error dir holds a partial block the caller removes.
func receiveBlock(ctx context.Context, src *partSource, dir string, h *header) (int64, error) {
	w := newBlockWriter(dir, h)
	defer w.close()
	for {
		part, err := src.next(ctx)
		if err == io.EOF {
			break
		}
		if err != nil {
			return w.received, err
		}
		if err := w.piece(part.GetPiece()); err != nil {
			return w.received, err
		}
	}
	if err := w.finish(); err != nil {
		return w.received, err
	}
	return w.received, verifyBlock(ctx, dir, h.meta)
}

// fsStat is what StoreBlock and Fetch need to know of a filesystem.
type fsStat struct {
	free, total uint64   // bytes an unprivileged process may still write; the filesystem's size
	id          [2]int32 // tells filesystems apart
}

// statFS reads the filesystem dir is on.
func statFS(dir string) (fsStat, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return fsStat{}, err
	}
	return fsStat{free: st.Bavail * uint64(st.Bsize), total: st.Blocks * uint64(st.Bsize), id: st.Fsid.X__val}, nil
}

// checkFreeSpace refuses a block of size bytes that would not fit in parentDir's filesystem (a
// fetch: written once) with minFreePct of the filesystem still free after it, as StoreBlock keeps
// -blocks-storage.min-free-disk-percent: the compactor's fetches share the disk with the WAL and
// the flushes. A filesystem that cannot tell its free space is not a reason to refuse.
func checkFreeSpace(stat func(string) (fsStat, error), parentDir string, size int64, minFreePct float64) error {
	st, err := stat(parentDir)
	if err != nil {
		return nil
	}
	keep := uint64(minFreePct / 100 * float64(st.total))
	if need := uint64(max(size, 0)) + keep; st.free < need {
		return fmt.Errorf("%w: %d bytes, %d free in %s, of which %d (%v%% of the filesystem) are kept free", ErrTooLarge, size, st.free, parentDir, keep, minFreePct)
	}
	return nil
}

// diskBudget reserves the disk space of the stores in progress, so that concurrent stores do not
// each see the same free space, and keeps a headroom of every filesystem free.
type diskBudget struct {
	stat       func(dir string) (fsStat, error)
	minFreePct float64

	mu       sync.Mutex
	reserved map[[2]int32]uint64 // bytes declared by stores in progress, by filesystem
}

// reserve checks that a block of size bytes fits in the staging directory's and the bucket
// directory's filesystems (bucketDir "" for a remote bucket) — written once into staging and once
// more into the bucket, both on one filesystem when they share it — beside what the stores in
// progress reserved and the headroom, and reserves it until release is called. What a store in
// progress has written already is counted twice (in the filesystem's use and in its reservation):
// the error is on the safe side. A filesystem that cannot tell its free space is not a reason to
// refuse.
func (b *diskBudget) reserve(stagingDir, bucketDir string, size int64) (release func(), err error) {
	need := map[[2]int32]uint64{}
	stats := map[[2]int32]fsStat{}
	names := map[[2]int32]string{}
	for _, dir := range []string{stagingDir, bucketDir} {
		if dir == "" {
			continue
		}
		st, err := b.stat(dir)
		if err != nil {
			continue
		}
		need[st.id] += uint64(max(size, 0))
		stats[st.id] = st
		if names[st.id] == "" {
			names[st.id] = dir
		}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	for id, n := range need {
		st := stats[id]
		headroom := uint64(float64(st.total) * b.minFreePct / 100)
		used := b.reserved[id] + headroom
		if st.free < used || st.free-used < n {
			return nil, fmt.Errorf("%w: %d bytes (%d on the filesystem of %s), %d free there, %d reserved by stores in progress, %d kept free (-blocks-storage.min-free-disk-percent %v)",
				ErrTooLarge, size, n, names[id], st.free, b.reserved[id], headroom, b.minFreePct)
		}
	}
	if b.reserved == nil {
		b.reserved = map[[2]int32]uint64{}
	}
	for id, n := range need {
		b.reserved[id] += n
	}
	return func() {
		b.mu.Lock()
		defer b.mu.Unlock()
		for id, n := range need {
			b.reserved[id] -= n
		}
	}, nil
}
