// Package lifecycle drives one member's life in the ring — register, join, heartbeat, leave — as a
// sequence of Raft commits against the ring model in package ringstate.
//
// A Lifecycle is owned by one goroutine, the one running Run, which reacts to ring changes, timers
// and leave requests in a single select loop. Ring commands run on short-lived worker goroutines that
// only do I/O (commit with retries) and report back to the loop; all decisions and all mutable state
// stay on the loop goroutine. See DESIGN.md for the state machine.
package lifecycle

import (
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/raftingest/raftingest/ringstate"
)

// Ring is what the lifecycle needs of the Raft node.
//
// All methods may be called concurrently: the lifecycle commits heartbeats while another command is
// in flight.
type Ring interface {
	// Ring returns the latest applied ring (immutable).
	Ring() *ringstate.Ring
	// Changed returns a channel closed at the next change of the applied ring.
	Changed() <-chan struct{}
	// Apply commits a command (forwarded to the leader if needed) and returns its outcome: nil,
	// a ringstate refusal (errors.Is against ringstate sentinels), or an error whose outcome is unknown
	// or transient (no leader, leadership lost, timeout) — retry those with the same RequestID.
	Apply(ctx context.Context, cmd ringstate.Command) (index uint64, err error)
	// LeaveCluster removes this node from the Raft configuration (transferring leadership first when
	// it leads). Called after the member is removed from the ring.
	LeaveCluster(ctx context.Context) error
	// WaitApplied blocks until the local ring reflects the entry at index (or ctx ends). The
	// lifecycle judges a command's effect only then: the local ring may lag the leader's.
	WaitApplied(ctx context.Context, index uint64) error
	// Err is non-nil once the node can never commit again: its removal from the Raft cluster was
	// confirmed, or it was shut down. Apply errors are transient only while Err is nil.
	Err() error
	// Removed is closed once a removal of this node that it did not ask for (an operator's
	// ringctl remove) is confirmed; Run then returns ErrRemoved.
	Removed() <-chan struct{}
}

// ErrRemoved is returned by Run when the ring no longer knows this member although it did not leave:
// an operator removed it (ringctl remove). The member does not register again on its own, because the
// operator removed it for a reason and, usually, from the Raft configuration too.
var ErrRemoved = errors.New("lifecycle: this member was removed from the ring by an operator (ringctl remove); " +
	"wipe this node's Raft state (its raft data directory) before it rejoins the cluster")

// Timing of retries. Every attempt is bounded, so a cluster without quorum makes the loop log about
// once per attempt instead of hanging silently.
const (
	applyAttemptTimeout = 5 * time.Second  // one Apply attempt
	leaveClusterTimeout = 30 * time.Second // one LeaveCluster attempt (may transfer leadership first)
	minBackoff          = 100 * time.Millisecond
	maxBackoff          = 5 * time.Second
)

// backoff returns the wait before retry number n (0-based): exponential from minBackoff, capped at
// maxBackoff.
func backoff(n int) time.Duration {
	return min(minBackoff<<min(n, 16), maxBackoff)
}

// Lifecycle is one member's life in the ring. Create it with New, start it with Run (once), and ask
// it to leave with Leave. State, Member, Ready and Leave are safe for concurrent use.
type Lifecycle struct {
	// OnLeaving, when set, is called once the LEAVING commit is applied and before the member is
	// removed from the ring: it hands the member's data over to a joiner or flushes it to storage.
	// It runs on a worker goroutine while the loop keeps heartbeating. An error is logged and the call
	// is retried with backoff: the member is not removed (its tokens are not given up) until its data
	// is safe. It must return when ctx is cancelled. Set it before Run; it is not read concurrently.
	OnLeaving func(ctx context.Context) error

	cfg     Config
	ring    Ring
	log     *slog.Logger
	rng     *rand.Rand // token draws; used only by the goroutine running Run
	metrics *metrics
	nonce   string // per-process part of request ids

	leaveOnce  sync.Once
	leaveCh    chan struct{} // closed by Leave
	running    atomic.Bool   // Run was called
	registered atomic.Bool   // the register command committed in this process
}

// New returns a Lifecycle for the member cfg describes, committing through ring. cfg must pass
// Validate (New calls it). rng draws random tokens; it is used only by Run's goroutine. A nil logger
// means slog.Default().
func New(cfg Config, ring Ring, logger *slog.Logger, rng *rand.Rand) (*Lifecycle, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if ring == nil || rng == nil {
		return nil, errors.New("lifecycle: New needs a ring and a random source")
	}
	if logger == nil {
		logger = slog.Default()
	}
	// Request ids must not repeat across restarts: the ring remembers recent outcomes by id, and a
	// restarted member reusing an id would be handed its previous life's outcome instead of a commit.
	var b [8]byte
	if _, err := crand.Read(b[:]); err != nil {
		return nil, fmt.Errorf("lifecycle: request id nonce: %w", err)
	}
	l := &Lifecycle{
		cfg:     cfg,
		ring:    ring,
		log:     logger,
		rng:     rng,
		nonce:   hex.EncodeToString(b[:]),
		leaveCh: make(chan struct{}),
	}
	l.metrics = newMetrics(l)
	return l, nil
}

// Leave asks the member to leave the ring gracefully. It returns at once; Run returns nil once the
// member has left. Idempotent and safe from any goroutine, also before Run starts.
func (l *Lifecycle) Leave() {
	l.leaveOnce.Do(func() { close(l.leaveCh) })
}

// State returns this member's state in the latest applied ring, or PENDING when the ring does not
// hold it (not registered yet, or removed). Use Member to tell those apart.
func (l *Lifecycle) State() ringstate.State {
	if s, ok := l.member(); ok {
		return s
	}
	return ringstate.PENDING
}

// Member returns this member as the latest applied ring holds it, and whether it holds it.
func (l *Lifecycle) Member() (ringstate.Member, bool) {
	r := l.ring.Ring()
	if r == nil {
		return ringstate.Member{}, false
	}
	return r.Member(l.cfg.ID)
}

func (l *Lifecycle) member() (ringstate.State, bool) {
	m, ok := l.Member()
	return m.State, ok
}

// Ready reports whether the member may take writes: it registered in this process and is ACTIVE in
// the latest applied ring. It backs /ready.
func (l *Lifecycle) Ready() bool {
	s, ok := l.member()
	return ok && s == ringstate.ACTIVE && l.registered.Load()
}

// LeaveRequested returns a channel closed once Leave was called.
func (l *Lifecycle) LeaveRequested() <-chan struct{} { return l.leaveCh }

// Run drives the member until it has left the ring (after Leave; returns nil) or ctx is cancelled
// (returns ctx.Err() at once, without leaving: an abrupt stop, as after a crash, from which a restart
// resumes). It also returns on a fatal condition: the register refused (ErrMemberExists: another node
// uses this id) or ErrRemoved. Run may be called only once.
func (l *Lifecycle) Run(ctx context.Context) error {
	if !l.running.CompareAndSwap(false, true) {
		return errors.New("lifecycle: Run called twice")
	}
	wctx, cancel := context.WithCancel(ctx)
	lp := &loop{
		Lifecycle: l,
		ctx:       wctx,
		steps:     make(chan stepDone, 1),
		beats:     make(chan error, 1),
	}
	defer func() {
		cancel()
		lp.wg.Wait() // workers return promptly once their context is cancelled
		lp.stopJoin()
		lp.stopRetry()
		if lp.ticker != nil {
			lp.ticker.Stop()
		}
	}()
	return lp.run(ctx)
}

// nextRequestID returns a request id unique across members, processes and commands.
func (lp *loop) nextRequestID() string {
	lp.seq++
	return fmt.Sprintf("%s/%s/%d", lp.cfg.ID, lp.nonce, lp.seq)
}

// refusals are the ringstate sentinels: an error wrapping one of them is the ring's deterministic
// answer to a command, not a transport problem, and sending the command again would not change it.
var refusals = []error{
	ringstate.ErrUnknownMember, ringstate.ErrMemberExists, ringstate.ErrInvalidMember,
	ringstate.ErrIllegalTransition, ringstate.ErrTokenOwned, ringstate.ErrInvalidTokens,
	ringstate.ErrJoinerNotPending, ringstate.ErrHandoverMismatch, ringstate.ErrHandoverInProgress,
	ringstate.ErrInvalidCommand, ringstate.ErrCorruptState,
}

// isRefusal reports whether err is the ring's refusal of a command (as opposed to an unknown outcome).
func isRefusal(err error) bool {
	for _, r := range refusals {
		if errors.Is(err, r) {
			return true
		}
	}
	return false
}

// fatalError marks a failure after which no retry can succeed: the node's removal from the Raft
// cluster was confirmed, or the node was shut down (Ring.Err).
type fatalError struct{ err error }

func (e *fatalError) Error() string { return e.err.Error() }
func (e *fatalError) Unwrap() error { return e.err }

// applyRetry commits cmd, retrying with the same RequestID and capped exponential backoff while the
// outcome is unknown or the failure transient. It returns the entry's index with nil or the ring's
// refusal, a *fatalError once the node can never commit again (Ring.Err), or ctx.Err(). It runs on
// worker goroutines and touches no loop state.
func (l *Lifecycle) applyRetry(ctx context.Context, cmd ringstate.Command) (uint64, error) {
	op := cmd.Op.String()
	for attempt := 0; ; attempt++ {
		actx, cancel := context.WithTimeout(ctx, applyAttemptTimeout)
		idx, err := l.ring.Apply(actx, cmd)
		cancel()
		switch {
		case err == nil:
			l.metrics.commands.WithLabelValues(op, "ok").Inc()
			return idx, nil
		case isRefusal(err):
			l.metrics.commands.WithLabelValues(op, "refused").Inc()
			return idx, err
		case ctx.Err() != nil:
			return 0, ctx.Err()
		}
		if ferr := l.ring.Err(); ferr != nil {
			return 0, &fatalError{err: ferr}
		}
		l.metrics.commands.WithLabelValues(op, "retried").Inc()
		d := backoff(attempt)
		l.log.Warn("ring command not committed (no leader or no quorum?), retrying with the same request id",
			"member", l.cfg.ID, "op", op, "request_id", cmd.RequestID, "attempt", attempt+1, "retry_in", d, "err", err)
		if err := sleep(ctx, d); err != nil {
			return 0, err
		}
	}
}

// leaveClusterRetry calls LeaveCluster until it succeeds or ctx is cancelled.
func (l *Lifecycle) leaveClusterRetry(ctx context.Context) error {
	for attempt := 0; ; attempt++ {
		actx, cancel := context.WithTimeout(ctx, leaveClusterTimeout)
		err := l.ring.LeaveCluster(actx)
		cancel()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		d := backoff(attempt)
		l.log.Warn("leaving the raft cluster failed, retrying", "member", l.cfg.ID, "attempt", attempt+1,
			"retry_in", d, "err", err)
		if err := sleep(ctx, d); err != nil {
			return err
		}
	}
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
