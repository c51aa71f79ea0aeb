package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/raftingest/raftingest/ringstate"
)

// loop is the state of one Run. Every field is owned by the goroutine running Run, except that
// worker goroutines send on steps and beats and call wg.Done.
type loop struct {
	*Lifecycle
	ctx context.Context // cancelled when Run returns; workers use it

	wg      sync.WaitGroup
	steps   chan stepDone // result of the one step in flight (buffered 1)
	beats   chan error    // result of the one heartbeat in flight (buffered 1)
	busy    bool          // a step is in flight
	beating bool          // a heartbeat is in flight

	ticker *time.Ticker // heartbeats; started once registered, stopped once removed
	joinT  *time.Timer  // the -ingester.join-after wait
	joinC  <-chan time.Time
	retryT *time.Timer // backoff before deciding again
	retryC <-chan time.Time

	// expect, when set, holds back decisions until the applied ring reflects our last commit. The
	// local ring may lag the leader's by an apply: without it, a member that just claimed tokens but
	// still reads itself PENDING would claim again.
	expect func(m *ringstate.Member, ok bool) bool

	stepCancel  context.CancelFunc // cancels the step in flight, if a leave may cancel it (register, claim)
	regDone     bool               // our register committed
	leaving     bool               // Leave was called
	removing    bool               // our Remove was started: "unknown member" is then our own doing
	leavingHook bool               // OnLeaving runs: a hand-over may remove us from the ring (CompleteHandover)
	fitted      bool               // the token count was checked against -ring.num-tokens since register
	joinDue     bool               // join-after elapsed while PENDING: claim tokens
	receiving   bool               // seen JOINING with a hand-over peer (a leaver claimed us)
	seq         uint64             // request id counter
	failures    int                // consecutive refusals of the current step, for backoff

	saved    ringstate.Tokens // tokens last written to (or read from) the tokens file
	lastSeen string           // last state logged, to log changes once

	done   bool
	result error
}

type stepDone struct {
	then func(error)
	err  error
	ctx  context.Context // the step's own context; cancelled by a leave request when cancelable
}

func (lp *loop) run(parent context.Context) error {
	lp.log.Info("lifecycle starting", "member", lp.cfg.ID, "num_tokens", lp.cfg.NumTokens,
		"join_after", lp.cfg.JoinAfter, "tokens_file", lp.cfg.TokensFilePath)
	leaveCh := lp.leaveCh
	removedCh := lp.ring.Removed()
	for {
		if err := parent.Err(); err != nil {
			lp.log.Info("lifecycle stopped without leaving", "member", lp.cfg.ID, "err", err)
			return err
		}
		// Take the change channel before reading the ring, so that no change slips between the read
		// and the wait.
		changed := lp.ring.Changed()
		if !lp.done && !lp.busy && lp.retryC == nil {
			lp.reconcile()
		}
		if lp.done {
			return lp.result
		}
		var tick <-chan time.Time
		if lp.ticker != nil {
			tick = lp.ticker.C
		}
		select {
		case <-parent.Done():
			lp.log.Info("lifecycle stopped without leaving", "member", lp.cfg.ID, "err", parent.Err())
			return parent.Err()
		case <-leaveCh:
			leaveCh = nil
			lp.leaving = true
			lp.failures = 0
			lp.stopRetry() // do not sit out a join backoff before leaving
			lp.log.Info("leave requested", "member", lp.cfg.ID, "state", lp.State())
			if lp.busy && lp.stepCancel != nil {
				// A register or token claim that cannot commit (no quorum, or not in a cluster yet)
				// must not hold the leave back. Its outcome may be unknown; the leave path reads the
				// ring and removes whatever it committed.
				lp.stepCancel()
			}
		case <-removedCh:
			removedCh = nil
			if !lp.removing {
				lp.log.Error("this node was removed from the raft cluster by an operator", "member", lp.cfg.ID)
				lp.finish(ErrRemoved)
			}
		case <-changed:
		case d := <-lp.steps:
			lp.busy = false
			lp.stepCancel = nil
			if d.err != nil && d.ctx.Err() != nil && lp.ctx.Err() == nil {
				break // cancelled by the leave request before it committed: decide again from the ring
			}
			d.then(d.err)
		case err := <-lp.beats:
			lp.beating = false
			lp.onHeartbeat(err)
		case <-tick:
			lp.heartbeat()
		case <-lp.joinC:
			lp.joinC, lp.joinT = nil, nil
			lp.joinDue = true
		case <-lp.retryC:
			lp.retryC, lp.retryT = nil, nil
		}
	}
}

// finish ends Run with err.
func (lp *loop) finish(err error) {
	lp.done, lp.result = true, err
}

// start runs fn on a worker goroutine; then runs on the loop goroutine with its result.
func (lp *loop) start(fn func(ctx context.Context) error, then func(error)) {
	lp.startStep(false, fn, then)
}

// startStep is start; a cancelable step is cancelled by a leave request, and then is not called.
func (lp *loop) startStep(cancelable bool, fn func(ctx context.Context) error, then func(error)) {
	lp.busy = true
	ctx := lp.ctx
	if cancelable && !lp.leaving {
		var cancel context.CancelFunc
		ctx, cancel = context.WithCancel(lp.ctx)
		lp.stepCancel = cancel
	}
	lp.wg.Add(1)
	go func() {
		defer lp.wg.Done()
		lp.steps <- stepDone{then: then, err: fn(ctx), ctx: ctx}
	}()
}

// apply commits cmd with a fresh request id on a worker, retrying transient failures, waits until
// the local ring reflects the entry (so that then judges its effect on a ring that shows it), and
// runs then with nil or the ring's refusal. Cancellation ends Run before then would see it; a fatal
// failure (the node was removed or shut down) ends it too.
func (lp *loop) apply(cmd ringstate.Command, then func(error)) { lp.applyStep(false, cmd, then) }

// applyCancelable is apply for a step a leave request cancels (register, token claim).
func (lp *loop) applyCancelable(cmd ringstate.Command, then func(error)) {
	lp.applyStep(true, cmd, then)
}

func (lp *loop) applyStep(cancelable bool, cmd ringstate.Command, then func(error)) {
	cmd.RequestID = lp.nextRequestID()
	lp.startStep(cancelable, func(ctx context.Context) error {
		idx, err := lp.applyRetry(ctx, cmd)
		if (err == nil || isRefusal(err)) && idx > 0 {
			if werr := lp.ring.WaitApplied(ctx, idx); werr != nil {
				return werr
			}
		}
		return err
	}, func(err error) {
		if lp.ctx.Err() != nil {
			return
		}
		if lp.fatal(err) {
			return
		}
		then(err)
	})
}

// fatal ends Run if err means the node can never commit again, and reports whether it did.
func (lp *loop) fatal(err error) bool {
	var fe *fatalError
	if !errors.As(err, &fe) {
		return false
	}
	select {
	case <-lp.ring.Removed():
		lp.log.Error("this node was removed from the raft cluster by an operator", "member", lp.cfg.ID, "err", err)
		lp.finish(ErrRemoved)
	default:
		lp.log.Error("the raft node can no longer commit", "member", lp.cfg.ID, "err", err)
		lp.finish(fmt.Errorf("lifecycle: %s: %w", lp.cfg.ID, err))
	}
	return true
}

// retry holds back the next decision for d.
func (lp *loop) retry(d time.Duration) {
	lp.stopRetry()
	lp.retryT = time.NewTimer(d)
	lp.retryC = lp.retryT.C
}

func (lp *loop) stopRetry() {
	if lp.retryT != nil {
		lp.retryT.Stop()
	}
	lp.retryT, lp.retryC = nil, nil
}

func (lp *loop) stopJoin() {
	if lp.joinT != nil {
		lp.joinT.Stop()
	}
	lp.joinT, lp.joinC, lp.joinDue = nil, nil, false
}

// refused logs a refusal of op, counts it, and holds back the next decision with backoff.
func (lp *loop) refused(op ringstate.Op, err error) {
	d := backoff(lp.failures)
	lp.failures++
	lp.log.Warn("ring command refused, deciding again", "member", lp.cfg.ID, "op", op.String(), "retry_in", d, "err", err)
	lp.retry(d)
}

func (lp *loop) heartbeat() {
	if lp.beating || lp.removing || !lp.regDone {
		return
	}
	lp.beating = true
	lp.wg.Add(1)
	go func() {
		defer lp.wg.Done()
		// One attempt, bounded by the period: a lost heartbeat is replaced by the next one rather than
		// retried. Heartbeats carry no request id: a duplicate only records a newer time, and ids would
		// push other commands' outcomes out of the ring's bounded request memory. Without an id it is
		// also one the Raft leader may carry in a heartbeat batch with the other members' (raftfsm's
		// HeartbeatBatcher, -ring.heartbeat-batch-window): it may wait up to that window, well within
		// the period, and is recorded at the batch entry's time.
		ctx, cancel := context.WithTimeout(lp.ctx, lp.cfg.HeartbeatPeriod)
		defer cancel()
		_, err := lp.ring.Apply(ctx, ringstate.Command{Op: ringstate.OpHeartbeat, Member: lp.cfg.ID})
		lp.beats <- err
	}()
}

func (lp *loop) onHeartbeat(err error) {
	switch {
	case err == nil:
		lp.metrics.heartbeats.WithLabelValues("ok").Inc()
	case errors.Is(err, ringstate.ErrUnknownMember):
		lp.metrics.heartbeats.WithLabelValues("refused").Inc()
		if lp.removing || lp.leavingHook {
			// Our own Remove won the race, or OnLeaving's hand-over completed: CompleteHandover
			// removes the leaver from the ring in the same commit that gives the joiner its tokens.
			return
		}
		lp.log.Error("heartbeat refused: the ring no longer knows this member", "member", lp.cfg.ID, "op", "heartbeat", "err", err)
		lp.finish(ErrRemoved)
	case isRefusal(err):
		lp.metrics.heartbeats.WithLabelValues("refused").Inc()
		lp.log.Warn("heartbeat refused", "member", lp.cfg.ID, "op", "heartbeat", "err", err)
	case lp.ctx.Err() != nil:
	default:
		lp.metrics.heartbeats.WithLabelValues("error").Inc()
		if ferr := lp.ring.Err(); ferr != nil && !lp.removing {
			lp.fatal(&fatalError{err: ferr})
			return
		}
		lp.log.Warn("heartbeat not committed (no leader or no quorum?)", "member", lp.cfg.ID, "op", "heartbeat", "err", err)
	}
}

// reconcile looks at the applied ring and starts the next step, if any. It runs only when no step is
// in flight and no backoff is pending.
func (lp *loop) reconcile() {
	r := lp.ring.Ring()
	if !lp.regDone {
		if lp.leaving && !lp.removing {
			if _, ok := r.Member(lp.cfg.ID); !ok {
				// Leaving before our register committed (it was cancelled): there is nothing to hand
				// over. Remove whatever the cancelled register may yet have committed, then leave
				// the Raft cluster.
				lp.remove()
				return
			}
		}
		lp.register()
		return
	}
	if r == nil {
		return
	}
	m, ok := r.Member(lp.cfg.ID)
	if lp.expect != nil {
		if !lp.expect(&m, ok) {
			return // the local ring has not caught up with our last commit yet
		}
		lp.expect = nil
	}
	if !ok {
		if lp.leaving && !lp.removing {
			// Leaving while not in the ring (an operator removed the member, or a hand-over
			// completed): nothing is left to hand over. Leave the Raft cluster and finish.
			lp.log.Info("leaving while not in the ring: leaving the raft cluster", "member", lp.cfg.ID)
			lp.removing = true
			if lp.ticker != nil {
				lp.ticker.Stop()
				lp.ticker = nil
			}
			lp.start(lp.leaveClusterRetry, func(err error) {
				if lp.ctx.Err() != nil {
					return
				}
				lp.finish(err)
			})
		}
		// Otherwise removed by someone else: Run returns ErrRemoved when the removal is confirmed
		// (Ring.Removed) or the next heartbeat is refused.
		return
	}
	lp.logState(&m)
	if lp.leaving {
		lp.reconcileLeave(&m)
		return
	}
	switch {
	case m.State == ringstate.LEAVING:
		// Only possible before the local ring shows our register's fix-up (LEAVING -> ACTIVE) after a
		// restart: wait for it.
	case m.State == ringstate.JOINING && m.HandoverPeer != "":
		// A leaver claimed us (or, right after a restart, the local ring has not applied our register's
		// fix-up yet). Either way: wait for CompleteHandover (ACTIVE) or AbortHandover (PENDING).
		lp.stopJoin()
		lp.receiving = true
	case m.State == ringstate.PENDING:
		lp.pending(r)
	default: // ACTIVE, or JOINING with tokens of its own
		lp.stopJoin()
		lp.receiving = false
		lp.saveTokens(m.Tokens)
		if !lp.fitted {
			lp.fitted = true
			if len(m.Tokens) != lp.cfg.NumTokens {
				lp.fit(r, &m)
				return
			}
		}
		if m.State == ringstate.JOINING {
			lp.activate()
		}
	}
}

func (lp *loop) logState(m *ringstate.Member) {
	s := m.State.String()
	if m.HandoverPeer != "" {
		s += " peer " + string(m.HandoverPeer)
	}
	if s == lp.lastSeen {
		return
	}
	lp.lastSeen = s
	lp.log.Info("ring state", "member", lp.cfg.ID, "state", m.State.String(), "peer", m.HandoverPeer, "tokens", len(m.Tokens))
}

func (lp *loop) register() {
	cmd := ringstate.Command{Op: ringstate.OpRegister, Member: lp.cfg.ID, RaftAddr: lp.cfg.RaftAddr,
		GRPCAddr: lp.cfg.GRPCAddr, HTTPAddr: lp.cfg.HTTPAddr, Zone: lp.cfg.Zone}
	lp.applyCancelable(cmd, func(err error) {
		if errors.Is(err, ringstate.ErrMemberExists) {
			lp.finish(fmt.Errorf("lifecycle: cannot register %s at raft address %s: another node uses this id; "+
				"give this node another id, or `ringctl remove %s` if that node is gone for good: %w",
				lp.cfg.ID, lp.cfg.RaftAddr, lp.cfg.ID, err))
			return
		}
		if err != nil {
			lp.finish(fmt.Errorf("lifecycle: register %s: %w", lp.cfg.ID, err))
			return
		}
		lp.regDone = true
		lp.Lifecycle.registered.Store(true)
		lp.log.Info("registered", "member", lp.cfg.ID, "op", "register")
		// A register never leaves the member LEAVING (the restart fix-up makes it ACTIVE).
		lp.expect = func(m *ringstate.Member, ok bool) bool { return ok && m.State != ringstate.LEAVING }
		lp.ticker = time.NewTicker(lp.cfg.HeartbeatPeriod)
	})
}

// pending handles a PENDING, unclaimed member: wait join-after (restarted after an aborted hand-over),
// then claim tokens.
func (lp *loop) pending(r *ringstate.Ring) {
	if lp.receiving {
		lp.receiving = false
		lp.stopJoin()
		lp.log.Info("hand-over aborted, waiting to join again", "member", lp.cfg.ID, "state", "PENDING")
	}
	lp.fitted = true // the claim below takes exactly -ring.num-tokens
	if !lp.joinDue && lp.joinC == nil {
		if lp.cfg.JoinAfter > 0 {
			lp.joinT = time.NewTimer(lp.cfg.JoinAfter)
			lp.joinC = lp.joinT.C
			return
		}
		lp.joinDue = true
	}
	if lp.joinDue {
		lp.claim(r)
	}
}

// pickTokens returns the tokens to claim: the tokens file's, fitted to -ring.num-tokens, if the file
// exists; else tokens the ring does not own, balanced or random by -ring.token-generation-strategy.
// file is the tokens file's content, if used.
func (lp *loop) pickTokens(r *ringstate.Ring) (ts, file ringstate.Tokens, err error) {
	if p := lp.cfg.TokensFilePath; p != "" {
		file, found, err := readTokensFile(p)
		if err != nil {
			return nil, nil, err
		}
		if found {
			if len(file) == lp.cfg.NumTokens {
				return file, file, nil
			}
			lp.log.Warn("tokens file does not hold -ring.num-tokens tokens, topping up or trimming",
				"member", lp.cfg.ID, "file", p, "file_tokens", len(file), "num_tokens", lp.cfg.NumTokens)
			ts, err := r.Fit(file, lp.cfg.NumTokens, lp.rng)
			return ts, file, err
		}
	}
	if lp.cfg.TokenGeneration == TokensRandom {
		ts, err = r.FreeTokens(lp.cfg.NumTokens, lp.rng)
		return ts, nil, err
	}
	// Balanced tokens are a function of the ring: members joining at once compute the same ones,
	// one claim wins, and the others compute again on the ring that holds it. Zone-aware, they
	// balance the joiner's zone, whose members share the zone's copy of every series.
	ts, err = r.BalancedTokensFor(lp.cfg.NumTokens, lp.cfg.Zone, lp.cfg.ZoneAwarenessEnabled)
	return ts, nil, err
}

func (lp *loop) claim(r *ringstate.Ring) {
	ts, file, err := lp.pickTokens(r)
	if err != nil {
		d := backoff(lp.failures)
		lp.failures++
		lp.log.Error("cannot pick tokens, retrying", "member", lp.cfg.ID, "op", "claim-tokens", "retry_in", d, "err", err)
		lp.retry(d)
		return
	}
	lp.applyCancelable(ringstate.Command{Op: ringstate.OpClaimTokens, Member: lp.cfg.ID, Tokens: ts}, func(err error) {
		var owned *ringstate.TokenOwnedError
		switch {
		case err == nil:
			lp.failures = 0
			lp.joinDue = false
			lp.log.Info("claimed tokens", "member", lp.cfg.ID, "op", "claim-tokens", "tokens", len(ts), "from_file", file != nil)
			lp.expect = hasTokens(ts)
		case errors.As(err, &owned) && slices.Contains(file, owned.Token):
			// Never replace an operator's tokens behind their back: say what is wrong and retry, in
			// case the owner is on its way out.
			d := backoff(lp.failures)
			lp.failures++
			lp.log.Error("token from the tokens file is owned by another member; fix the file or remove the owner",
				"member", lp.cfg.ID, "op", "claim-tokens", "file", lp.cfg.TokensFilePath, "token", owned.Token,
				"owner", owned.Owner, "retry_in", d, "err", err)
			lp.retry(d)
		case errors.As(err, &owned):
			// A concurrent claim took a token we drew: the compare-and-set refused ours. Draw again
			// at once, backing off only if it keeps happening.
			lp.failures++
			lp.log.Info("drawn token claimed concurrently, drawing again", "member", lp.cfg.ID, "op", "claim-tokens",
				"token", owned.Token, "owner", owned.Owner)
			if lp.failures > 3 {
				lp.retry(backoff(lp.failures - 3))
			}
		case errors.Is(err, ringstate.ErrUnknownMember):
			lp.finish(ErrRemoved)
		default:
			// ErrHandoverInProgress or ErrIllegalTransition: a leaver claimed us between our read and
			// our commit. The ring will show it; decide again then.
			lp.refused(ringstate.OpClaimTokens, err)
		}
	})
}

// hasTokens expects the member to hold exactly ts, in JOINING or ACTIVE.
func hasTokens(ts ringstate.Tokens) func(*ringstate.Member, bool) bool {
	return func(m *ringstate.Member, ok bool) bool {
		return !ok || (m.State == ringstate.JOINING || m.State == ringstate.ACTIVE) && slices.Equal(m.Tokens, ts)
	}
}

// fit tops up or trims the tokens of a resumed member whose -ring.num-tokens changed (mimir#3801),
// keeping the ones it has so that as little data as possible moves.
func (lp *loop) fit(r *ringstate.Ring, m *ringstate.Member) {
	ts, err := r.FitMember(lp.cfg.ID, m.Tokens, lp.cfg.NumTokens, lp.rng)
	if err != nil {
		lp.log.Error("cannot fit tokens to -ring.num-tokens, keeping the current ones", "member", lp.cfg.ID,
			"op", "claim-tokens", "err", err)
		return
	}
	lp.log.Info("-ring.num-tokens changed, fitting tokens", "member", lp.cfg.ID, "state", m.State.String(),
		"op", "claim-tokens", "from", len(m.Tokens), "to", len(ts))
	// Replace: a resize is refused unless the member is still JOINING or ACTIVE.
	lp.apply(ringstate.Command{Op: ringstate.OpClaimTokens, Member: lp.cfg.ID, Tokens: ts, Replace: true}, func(err error) {
		switch {
		case err == nil:
			lp.failures = 0
			lp.expect = hasTokens(ts)
		case errors.Is(err, ringstate.ErrTokenOwned):
			lp.fitted = false // a concurrent claim took a drawn token: draw again
			lp.refused(ringstate.OpClaimTokens, err)
		case errors.Is(err, ringstate.ErrUnknownMember):
			lp.finish(ErrRemoved)
		default:
			lp.log.Error("fitting tokens refused, keeping the current ones", "member", lp.cfg.ID, "op", "claim-tokens", "err", err)
		}
	})
}

func (lp *loop) activate() {
	lp.apply(ringstate.Command{Op: ringstate.OpActivate, Member: lp.cfg.ID}, func(err error) {
		switch {
		case err == nil:
			lp.failures = 0
			lp.log.Info("active", "member", lp.cfg.ID, "op", "activate", "state", "ACTIVE")
			lp.expect = func(m *ringstate.Member, ok bool) bool { return !ok || m.State == ringstate.ACTIVE }
		case errors.Is(err, ringstate.ErrUnknownMember):
			lp.finish(ErrRemoved)
		default:
			lp.refused(ringstate.OpActivate, err)
		}
	})
}

// saveTokens writes ts to the tokens file, if one is configured and it does not hold them already.
// A failure is logged, not fatal: the ring, not the file, is the truth for a member that resumes.
func (lp *loop) saveTokens(ts ringstate.Tokens) {
	p := lp.cfg.TokensFilePath
	if p == "" || len(ts) == 0 || slices.Equal(ts, lp.saved) {
		return
	}
	if cur, found, err := readTokensFile(p); err == nil && found && slices.Equal(cur, ts) {
		lp.saved = slices.Clone(ts)
		return
	}
	if err := writeTokensFile(p, ts); err != nil {
		lp.log.Error("cannot write tokens file", "member", lp.cfg.ID, "file", p, "err", err)
	} else {
		lp.log.Info("wrote tokens file", "member", lp.cfg.ID, "file", p, "tokens", len(ts))
	}
	lp.saved = slices.Clone(ts)
}

// reconcileLeave takes the next step out of the ring from the member's current state.
func (lp *loop) reconcileLeave(m *ringstate.Member) {
	lp.stopJoin()
	switch {
	case m.State == ringstate.ACTIVE:
		lp.apply(ringstate.Command{Op: ringstate.OpLeave, Member: lp.cfg.ID}, func(err error) {
			switch {
			case err == nil:
				lp.failures = 0
				lp.expect = func(m *ringstate.Member, ok bool) bool { return !ok || m.State == ringstate.LEAVING }
				lp.afterLeaving()
			case errors.Is(err, ringstate.ErrUnknownMember):
				lp.finish(ErrRemoved)
			default:
				lp.refused(ringstate.OpLeave, err)
			}
		})
	case m.State == ringstate.LEAVING:
		lp.afterLeaving()
	case m.State == ringstate.JOINING && m.HandoverPeer != "":
		// Receiving: release the leaver first, so it can find another joiner or flush, then look again
		// — if the leaver completed the hand-over first we are ACTIVE with its data and must leave as an
		// ACTIVE member does.
		leaver := m.HandoverPeer
		lp.apply(ringstate.Command{Op: ringstate.OpAbortHandover, Member: leaver, Peer: lp.cfg.ID}, func(err error) {
			if err != nil {
				lp.refused(ringstate.OpAbortHandover, err)
				return
			}
			lp.failures = 0
			lp.expect = func(m *ringstate.Member, ok bool) bool {
				return !ok || !(m.State == ringstate.JOINING && m.HandoverPeer == leaver)
			}
		})
	default:
		// PENDING, or JOINING with tokens it never took writes for: nothing to hand over.
		lp.remove()
	}
}

// afterLeaving runs OnLeaving (retried until it succeeds), then removes the member.
func (lp *loop) afterLeaving() {
	lp.log.Info("leaving", "member", lp.cfg.ID, "state", "LEAVING")
	if lp.OnLeaving == nil {
		lp.remove()
		return
	}
	lp.leavingHook = true
	lp.start(func(ctx context.Context) error { return lp.OnLeaving(ctx) }, func(err error) {
		lp.leavingHook = false
		if lp.ctx.Err() != nil {
			return
		}
		if err != nil {
			d := backoff(lp.failures)
			lp.failures++
			lp.log.Error("leaving hook failed; staying LEAVING with our tokens until the data is safe, retrying",
				"member", lp.cfg.ID, "state", "LEAVING", "retry_in", d, "err", err)
			lp.retry(d)
			return
		}
		lp.failures = 0
		lp.remove()
	})
}

// remove commits Remove(self), then leaves the Raft cluster, then ends Run with nil.
func (lp *loop) remove() {
	lp.removing = true
	lp.apply(ringstate.Command{Op: ringstate.OpRemove, Member: lp.cfg.ID}, func(err error) {
		if err != nil && !errors.Is(err, ringstate.ErrUnknownMember) {
			lp.removing = false
			lp.refused(ringstate.OpRemove, err)
			return
		}
		lp.log.Info("removed from the ring, leaving the raft cluster", "member", lp.cfg.ID, "op", "remove")
		if lp.ticker != nil {
			lp.ticker.Stop()
			lp.ticker = nil
		}
		lp.start(lp.leaveClusterRetry, func(err error) {
			if lp.ctx.Err() != nil {
				return
			}
			if err != nil { // unreachable: leaveClusterRetry returns only nil or ctx.Err()
				lp.finish(err)
				return
			}
			lp.log.Info("left the cluster", "member", lp.cfg.ID)
			lp.finish(nil)
		})
	})
}
