// Package transfer is the hand-over protocol: a LEAVING ingester moves every series it holds —
// labels and all chunks, the open head chunk included — to a PENDING ingester over one gRPC client
// stream, and the ring commits around it (ClaimJoiner, CompleteHandover, AbortHandover) make the
// move of its tokens atomic. When no joiner can be found or every attempt fails, the leaver falls
// back on flushing its data to storage.
//
// Two halves: Leaver (the sender, run as the lifecycle's OnLeaving hook) and Receiver (the gRPC
// Transfer service, plus a watcher that aborts a stalled hand-over and discards partial data). See
// DESIGN.md for the protocol, its failure cases and why each is safe.
package transfer

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"time"

	"github.com/raftingest/raftingest/memstore"
	"github.com/raftingest/raftingest/ringstate"
)

// Ring is what the protocol needs of the Raft node. All methods may be called concurrently.
type Ring interface {
	// Ring returns the latest applied ring (immutable).
	Ring() *ringstate.Ring
	// Changed returns a channel closed at the next change of the applied ring or index.
	Changed() <-chan struct{}
	// Apply commits cmd and returns its index and outcome: nil, a ringstate refusal, or an error
	// whose outcome is unknown (retry with the same RequestID).
	Apply(ctx context.Context, cmd ringstate.Command) (uint64, error)
	// WaitApplied blocks until the local ring reflects index, or ctx ends.
	WaitApplied(ctx context.Context, index uint64) error
	// LinearizableRing returns a ring reflecting every commit before the call.
	LinearizableRing(ctx context.Context) (*ringstate.Ring, uint64, error)
}

// Store is what the protocol needs of the series store; *memstore.Store implements it.
type Store interface {
	// ExportSeries visits every series with all its chunks and its last value (leaver); s is
	// reused across calls.
	ExportSeries(fn func(s *memstore.ImportSeries) error) error
	// ImportBatch stores the whole chunks of many series durably (WAL, fsynced) before it returns
	// (joiner, once per frame). Labels and chunk data are read only during the call.
	ImportBatch(batch []memstore.ImportSeries) error
	// DropAll drops everything from memory and the WAL (the joiner discarding a partial
	// hand-over; the leaver after a completed one).
	DropAll() (memstore.TruncateStats, error)
	Tenants() []string
	Stats(tenant string) memstore.TenantStats
}

// Defaults of the flags.
const (
	DefaultMaxRetries = 10
	DefaultTimeout    = time.Minute
	// DefaultFrameBytes bounds a SERIES frame's payload (a single larger series is sent alone):
	// large enough to amortise per-message costs, far below gRPC's receive limit.
	DefaultFrameBytes = 1 << 20
	// DefaultMaxRecvMsgSize bounds one received frame (the gRPC message, payload and header) on the
	// joiner, and what the leaver puts in one: FrameBytes plus the one series that crossed it, so a
	// single series larger than this cannot be handed over (the leaver flushes instead). 64 MiB is
	// hundreds of thousands of chunks: no series holds that much in memory.
	DefaultMaxRecvMsgSize = 64 << 20
	// DefaultImportConcurrency is how many frames the joiner imports at once. Each frame is one
	// ImportBatch, which waits for one WAL group commit (an fsync); a few frames in flight let
	// decoding and importing the next frame overlap that wait, and concurrent ones share commits.
	DefaultImportConcurrency = 4
)

// Backoff between attempts to find and claim a joiner: from minBackoff doubling to maxBackoff. With
// the default 10 retries the leaver keeps looking for 21.3s (totalBackoff(10): 0.1+0.2+...+3.2+3×5),
// long enough for a replacement that a rolling update starts at the same moment to start, replay an
// empty WAL and register PENDING (TestLeaver_ReplacementRegisteringLate_GetsTheHandover).
const (
	minBackoff     = 100 * time.Millisecond
	maxBackoff     = 5 * time.Second
	attemptTimeout = 5 * time.Second // one ring command attempt
)

func backoff(n int) time.Duration { return min(minBackoff<<min(n, 16), maxBackoff) }

// totalBackoff is how long the leaver waits in all between retries attempts (not counting the
// attempts themselves).
func totalBackoff(retries int) time.Duration {
	var d time.Duration
	for i := range max(retries-1, 0) {
		d += backoff(i)
	}
	return d
}

// Config holds the hand-over settings. It is read by NewLeaver/NewReceiver and never changed.
type Config struct {
	// MaxRetries is how many times the leaver tries to find and claim a PENDING joiner and stream to
	// it before it flushes instead. Flag: -ingester.max-transfer-retries. 0 disables hand-over.
	MaxRetries int
	// Timeout is how long the joiner waits for the next frame (or, claimed but without a stream,
	// for the stream to start) before it aborts the hand-over on its own; also bounds the
	// joiner's CompleteHandover commit. A stream as a whole may make the joiner wait Timeout plus
	// Timeout per FrameBytes of payload received (see frameSource). Flag: -ingester.transfer-timeout.
	Timeout time.Duration
	// FrameBytes bounds a frame's payload. Flag: -ingester.transfer-frame-bytes.
	FrameBytes int
	// MaxRecvMsgSize is the largest frame (gRPC message) the joiner accepts and the leaver sends;
	// the gRPC server enforces it on TransferChunks only (the other methods have their own limits).
	// Flag: -ingester.transfer-max-recv-msg-size.
	MaxRecvMsgSize int
	// ImportConcurrency is how many frames the joiner imports concurrently. Not a flag.
	ImportConcurrency int
	// TestDelay is for tests only: the leaver sleeps this long before sending each frame and the
	// joiner sleeps this long before committing CompleteHandover, so that a test can kill either
	// process at a chosen point of a hand-over. Flag: -ingester.transfer-test-delay.
	TestDelay time.Duration
}

// RegisterFlags registers the hand-over flags with their defaults on f.
func (c *Config) RegisterFlags(f *flag.FlagSet) {
	f.IntVar(&c.MaxRetries, "ingester.max-transfer-retries", DefaultMaxRetries,
		"How many times a leaving ingester tries to find a PENDING ingester and hand its data over (backoff 100ms to 5s between tries) before it flushes its data to storage instead. 0 never hands over.")
	f.DurationVar(&c.Timeout, "ingester.transfer-timeout", DefaultTimeout,
		"A joining ingester aborts a hand-over on its own when the leaver sends nothing for this long (the leaver vanished or hangs), or when the whole stream made it wait longer than this plus this much again per -ingester.transfer-frame-bytes received (a leaver that dribbles).")
	f.DurationVar(&c.TestDelay, "ingester.transfer-test-delay", 0,
		"TEST ONLY: the leaver waits this long before each hand-over frame and the joiner before committing the hand-over, so tests can kill either at a chosen point. Never set it in production.")
	f.IntVar(&c.FrameBytes, "ingester.transfer-frame-bytes", DefaultFrameBytes,
		"Target size in bytes of one hand-over frame's payload (a larger single series is sent alone). At most half of -ingester.transfer-max-recv-msg-size.")
	f.IntVar(&c.MaxRecvMsgSize, "ingester.transfer-max-recv-msg-size", DefaultMaxRecvMsgSize,
		"Largest hand-over frame in bytes a joining ingester accepts (gRPC TransferChunks only) and a leaving one sends: a series larger than this cannot be handed over, and its ingester flushes instead.")
	c.ImportConcurrency = DefaultImportConcurrency
}

// DefaultConfig returns the configuration RegisterFlags would set.
func DefaultConfig() Config {
	var c Config
	c.RegisterFlags(flag.NewFlagSet("transfer", flag.ContinueOnError))
	return c
}

// Validate reports every invalid setting, naming its flag. It never clamps.
func (c *Config) Validate() error {
	var errs []error
	if c.MaxRetries < 0 {
		errs = append(errs, fmt.Errorf("transfer: -ingester.max-transfer-retries must be >= 0, got %d", c.MaxRetries))
	}
	if c.Timeout <= 0 {
		errs = append(errs, fmt.Errorf("transfer: -ingester.transfer-timeout must be positive, got %s", c.Timeout))
	}
	if c.TestDelay < 0 {
		errs = append(errs, fmt.Errorf("transfer: -ingester.transfer-test-delay must be >= 0, got %s", c.TestDelay))
	}
	if c.TestDelay >= c.Timeout && c.TestDelay > 0 {
		errs = append(errs, fmt.Errorf("transfer: -ingester.transfer-test-delay (%s) must be below -ingester.transfer-timeout (%s), or every hand-over times out",
			c.TestDelay, c.Timeout))
	}
	if c.FrameBytes < 1024 {
		errs = append(errs, fmt.Errorf("transfer: -ingester.transfer-frame-bytes must be at least 1024, got %d", c.FrameBytes))
	}
	if c.MaxRecvMsgSize < 2*c.FrameBytes {
		errs = append(errs, fmt.Errorf("transfer: -ingester.transfer-max-recv-msg-size (%d) must be at least twice -ingester.transfer-frame-bytes (%d): a frame holds up to -ingester.transfer-frame-bytes plus one series",
			c.MaxRecvMsgSize, c.FrameBytes))
	}
	if c.ImportConcurrency < 1 {
		errs = append(errs, fmt.Errorf("transfer: Config.ImportConcurrency must be at least 1, got %d", c.ImportConcurrency))
	}
	return errors.Join(errs...)
}

// isRefusal reports whether err is the ring's deterministic answer to a command (not an unknown
// outcome): sending the command again would not change it.
func isRefusal(err error) bool {
	if err == nil {
		return false
	}
	return ringstate.CodeOf(err) != ringstate.CodeInvalidCommand || errors.Is(err, ringstate.ErrInvalidCommand) ||
		errors.Is(err, ringstate.ErrCorruptState)
}

// applyRetry commits cmd, retrying with the same RequestID and capped backoff while the outcome is
// unknown. It returns the index and nil, the ring's refusal, or ctx's error.
func applyRetry(ctx context.Context, r Ring, cmd ringstate.Command) (uint64, error) {
	for attempt := 0; ; attempt++ {
		actx, cancel := context.WithTimeout(ctx, attemptTimeout)
		idx, err := r.Apply(actx, cmd)
		cancel()
		if err == nil || isRefusal(err) {
			return idx, err
		}
		if ctx.Err() != nil {
			return 0, fmt.Errorf("%s %s -> %s: %w (last error: %v)", cmd.Op, cmd.Member, cmd.Peer, ctx.Err(), err)
		}
		if err := sleep(ctx, backoff(attempt)); err != nil {
			return 0, fmt.Errorf("%s %s -> %s: %w (last error: %v)", cmd.Op, cmd.Member, cmd.Peer, err, err)
		}
	}
}

func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
