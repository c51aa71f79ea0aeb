package raftfsm

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/hashicorp/raft"

	"github.com/raftingest/raftingest/ringstate"
)

// DefaultHeartbeatBatchWindow is -ring.heartbeat-batch-window's default. A window w turns a heartbeat
// rate of λ a second into λ/(1+λw) entries a second: 0.5s keeps it within 10% of 2 a second from
// 100 members (20 heartbeats a second at the 5s period) to thousands, while delaying a heartbeat by
// at most 0.5s, 1/120 of the 1m -ring.heartbeat-timeout.
const DefaultHeartbeatBatchWindow = 500 * time.Millisecond

// DefaultMaxBatchBeats is how many heartbeats a batch holds before it is proposed without waiting
// out the window: 1,000 beats of 16-byte ids are a 19 kB entry.
const DefaultMaxBatchBeats = 1024

// BeatResult is the outcome of one heartbeat of a batch: the index of the entry that carried it
// and nil, or why it was not recorded (ringstate.ErrUnknownMember: the ring does not know the
// member; a failure to commit, as Node.Apply returns it).
type BeatResult struct {
	Index uint64
	Err   error
}

// ProposeBeats proposes beats (1 to ringstate.MaxBeats, in arrival order) and returns one result
// per beat, in the same order. It is called from one goroutine per batch; batches may overlap.
type ProposeBeats func(beats []ringstate.Beat) []BeatResult

// HeartbeatBatcher coalesces heartbeats into batches (ringstate.OpHeartbeatBatch) on the Raft
// leader: the first heartbeat after a flush opens a window; every heartbeat that arrives within it
// joins; the window's end, or the batch reaching its size bound, proposes the batch as one entry,
// and each sender gets its own heartbeat's outcome. The entry rate is then at most one per window,
// whatever the number of members, where one heartbeat per member per period would grow with it.
// The next window opens while a batch commits, so batches pipeline.
//
// Health semantics do not change: a heartbeat is recorded at the time of the entry that carries
// it, as a single one is, only up to a window later (see ringstate.OpHeartbeatBatch).
//
// It is safe for concurrent use.
type HeartbeatBatcher struct {
	window  time.Duration
	max     int
	propose ProposeBeats

	mu      sync.Mutex
	pending []pendingBeat
	timer   *time.Timer
	gen     uint64 // increments on every flush, so a stale timer flushes nothing
	closed  bool

	inflight sync.WaitGroup // batches being proposed
}

type pendingBeat struct {
	beat ringstate.Beat
	done chan BeatResult // buffered 1
}

// ErrBatcherClosed is the outcome of a heartbeat submitted to, or pending in, a closed batcher.
var ErrBatcherClosed = fmt.Errorf("%w: heartbeat batcher closed", ErrNoLeader)

// NewHeartbeatBatcher returns a batcher that proposes through propose: a batch at the latest
// window after its first heartbeat, or as soon as it holds maxBeats (1 to ringstate.MaxBeats).
func NewHeartbeatBatcher(window time.Duration, maxBeats int, propose ProposeBeats) *HeartbeatBatcher {
	maxBeats = min(max(maxBeats, 1), ringstate.MaxBeats)
	return &HeartbeatBatcher{window: window, max: maxBeats, propose: propose}
}

// Submit adds beat to the open batch and waits for the batch's outcome for it, or for ctx. When
// ctx ends first the heartbeat may still be recorded (its outcome is unknown, as a single
// heartbeat's would be).
func (b *HeartbeatBatcher) Submit(ctx context.Context, beat ringstate.Beat) BeatResult {
	return b.SubmitAll(ctx, []ringstate.Beat{beat})[0]
}

// SubmitAll adds beats to the open batch together (a batch a follower forwarded: they join one
// batch unless it fills up on the way) and waits for each one's outcome, or for ctx (then the
// beats not answered yet get ErrUnknownOutcome). The results are in the order of beats.
func (b *HeartbeatBatcher) SubmitAll(ctx context.Context, beats []ringstate.Beat) []BeatResult {
	out := make([]BeatResult, len(beats))
	dones := make([]chan BeatResult, len(beats))
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		for i := range out {
			out[i].Err = ErrBatcherClosed
		}
		return out
	}
	for i, beat := range beats {
		dones[i] = make(chan BeatResult, 1)
		b.pending = append(b.pending, pendingBeat{beat: beat, done: dones[i]})
		switch {
		case len(b.pending) >= b.max:
			b.flushLocked()
		case len(b.pending) == 1:
			gen := b.gen
			b.timer = time.AfterFunc(b.window, func() {
				b.mu.Lock()
				defer b.mu.Unlock()
				if b.gen == gen {
					b.flushLocked()
				}
			})
		}
	}
	b.mu.Unlock()
	for i, done := range dones {
		select {
		case out[i] = <-done:
		case <-ctx.Done():
			out[i].Err = fmt.Errorf("%w: heartbeat %s: %w", ErrUnknownOutcome, beats[i].Member, ctx.Err())
		}
	}
	return out
}

// flushLocked hands the pending beats to a goroutine that proposes them. b.mu is held.
func (b *HeartbeatBatcher) flushLocked() {
	if len(b.pending) == 0 {
		return
	}
	batch := b.pending
	b.pending = nil
	b.gen++
	if b.timer != nil {
		b.timer.Stop()
		b.timer = nil
	}
	b.inflight.Add(1)
	go func() {
		defer b.inflight.Done()
		beats := make([]ringstate.Beat, len(batch))
		for i, p := range batch {
			beats[i] = p.beat
		}
		res := b.propose(beats)
		for i, p := range batch {
			r := BeatResult{Err: fmt.Errorf("%w: heartbeat batch: no result for beat %d", ErrUnknownOutcome, i)}
			if i < len(res) {
				r = res[i]
			}
			p.done <- r
		}
	}()
}

// Close fails the pending heartbeats with ErrBatcherClosed, refuses new ones, and waits for the
// batches being proposed to finish.
func (b *HeartbeatBatcher) Close() {
	defer b.inflight.Wait()
	b.mu.Lock()
	defer b.mu.Unlock()
	b.closed = true
	if b.timer != nil {
		b.timer.Stop()
		b.timer = nil
	}
	for _, p := range b.pending {
		p.done <- BeatResult{Err: ErrBatcherClosed}
	}
	b.pending = nil
	b.gen++
}

// BatchResults turns the outcome of one heartbeat batch entry into its beats' results: a refusal
// of the whole batch (err, from ApplyResult.Err) for every beat; else nil for each beat but those
// the batch skipped (ringstate.SkippedBeats of its events), which get ringstate.ErrUnknownMember,
// as a single heartbeat of theirs would.
func BatchResults(beats []ringstate.Beat, index uint64, events []ringstate.Event, err error) []BeatResult {
	out := make([]BeatResult, len(beats))
	skipped := ringstate.SkippedBeats(events)
	for i, b := range beats {
		out[i].Index = index
		switch {
		case err != nil:
			out[i].Err = err
		case skipped[b.Member]:
			out[i].Err = fmt.Errorf("%w: heartbeat %s (in the heartbeat batch at index %d)", ringstate.ErrUnknownMember,
				b.Member, index)
		}
	}
	return out
}

// batchable reports whether cmd is a heartbeat the leader may carry in a batch: one without a
// request id (a batch remembers no per-beat outcomes) and with no field a heartbeat does not take
// (ringstate refuses such a heartbeat; in a batch the field would be dropped, not refused).
func batchable(cmd *ringstate.Command) bool {
	return cmd.Op == ringstate.OpHeartbeat && cmd.RequestID == "" && cmd.Member != "" && cmd.Peer == "" &&
		cmd.RaftAddr == "" && cmd.GRPCAddr == "" && cmd.HTTPAddr == "" && cmd.Zone == "" && len(cmd.Tokens) == 0 &&
		!cmd.Replace && cmd.LeaseMs == 0 && len(cmd.Readers) == 0 && len(cmd.Beats) == 0 &&
		ringstate.ValidateMemberID(cmd.Member) == nil
}

// batchAllowed says why this leader may not propose a heartbeat batch now (nil: it may). A batch
// is a version-4 entry (HeartbeatBatchCommandVersion), on which a replica of an older build halts,
// for good; so, as for the first compactor lease (admitClaim), every ring member must advertise
// version 4 and every Raft server must be a ring member (a server not registered yet applies the
// log too, and nothing says what it reads). The gate is checked before every batch (heartbeats
// never stop, and a member may join on an older build), but it cannot make a rollback safe: once a
// batch is committed, a node restarted on an older build halts on it before it can register again
// (-ring.heartbeat-batch-window=0 keeps that option open during an upgrade; DESIGN.md).
func (n *Node) batchAllowed(ctx context.Context) error {
	r := n.fsm.Ring()
	if old := r.NotReading(ringstate.HeartbeatBatchCommandVersion); len(old) > 0 {
		return fmt.Errorf("%w: members %v do not advertise command version %d", ringstate.ErrMixedVersions, old,
			ringstate.HeartbeatBatchCommandVersion)
	}
	conf, _, err := n.configuration(ctx)
	if err != nil {
		return err
	}
	for _, srv := range conf.Servers {
		if _, ok := r.Member(ringstate.MemberID(srv.ID)); !ok {
			return fmt.Errorf("%w: raft server %s is not a ring member", ringstate.ErrReplicaNotMember, srv.ID)
		}
	}
	return nil
}

// proposeBeats is the Node's ProposeBeats: one batch entry when batchAllowed, else each heartbeat
// as an entry of its own (version 2, which every build reads), proposed concurrently. A beat
// proposed when this node no longer leads gets errNotLeader, which Node.apply answers by sending
// the heartbeat to the new leader.
func (n *Node) proposeBeats(beats []ringstate.Beat) []BeatResult {
	ctx, cancel := context.WithTimeout(n.runCtx, n.cfg.ApplyTimeout)
	defer cancel()
	all := func(err error) []BeatResult { return BatchResults(beats, 0, nil, err) }
	if n.raft.State() != raft.Leader {
		return all(errNotLeader)
	}
	if why := n.batchAllowed(ctx); why != nil {
		if !errors.Is(why, ringstate.ErrMixedVersions) {
			return all(fmt.Errorf("%w: %w", ErrUnknownOutcome, why))
		}
		n.logger.Debug("heartbeats proposed one by one", "count", len(beats), "why", why)
		out := make([]BeatResult, len(beats))
		var wg sync.WaitGroup
		for i, b := range beats {
			wg.Go(func() {
				data, err := EncodeCommand(ringstate.Command{Op: ringstate.OpHeartbeat, Member: b.Member,
					CommandVersion: b.CommandVersion})
				if err == nil {
					out[i].Index, err = n.leaderApply(ctx, data)
				}
				out[i].Err = err
			})
		}
		wg.Wait()
		return out
	}
	data, err := EncodeHeartbeatBatch(beats, n.stamp())
	if err != nil {
		return all(err)
	}
	idx, res, err := n.propose(ctx, data)
	if err != nil {
		return all(err)
	}
	return BatchResults(beats, idx, res.Events, res.Err())
}
