package blocksvc

import (
	"context"
	"errors"
	"fmt"
	"io"
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

// freeBytes returns the bytes an unprivileged process may still write on dir's filesystem, and an
// identifier of that filesystem.
func freeBytes(dir string) (uint64, [2]int32, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, [2]int32{}, err
	}
	return st.Bavail * uint64(st.Bsize), st.Fsid.X__val, nil
}

// checkFreeSpace refuses a block of size bytes that would not fit on the filesystems of the staging
// directory and the bucket's directory (bucketDir "" for a remote bucket): it is written once
// into staging and once more into the bucket, both at once when they share a filesystem. A
// filesystem that cannot tell its free space is not a reason to refuse.
func checkFreeSpace(stagingDir, bucketDir string, size int64) error {
	need := uint64(max(size, 0))
	free, fs, err := freeBytes(stagingDir)
	if err != nil {
		return nil
	}
	if bucketDir == "" {
		if free < need {
			return fmt.Errorf("%w: %d bytes, %d free in %s", ErrTooLarge, size, free, stagingDir)
		}
		return nil
	}
	bfree, bfs, err := freeBytes(bucketDir)
	if err != nil {
		bfree, bfs = free, fs
	}
	if fs == bfs {
		if free/2 < need {
			return fmt.Errorf("%w: %d bytes, twice that needed (staging and bucket), %d free in %s", ErrTooLarge, size, free, stagingDir)
		}
		return nil
	}
	if free < need || bfree < need {
		return fmt.Errorf("%w: %d bytes, %d free in %s and %d in %s", ErrTooLarge, size, free, stagingDir, bfree, bucketDir)
	}
	return nil
}
