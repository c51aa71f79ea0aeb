package raftfsm

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/hashicorp/raft"

	"github.com/raftingest/raftingest/ringstate"
)

// ApplyResult is what FSM.Apply returns for every log entry, and what raft.ApplyFuture.Response()
// yields on the proposer. A refusal is a value, not a Go error, so that it is committed, remembered
// by request id and identical on every replica.
type ApplyResult struct {
	Code    ringstate.Code    // ringstate.CodeOK when the command changed the ring
	Message string            // the refusal's text; empty when Code is CodeOK
	Events  []ringstate.Event // what changed, for logging and metrics; nil on refusal
}

// Err turns the result back into the error ringstate returned (nil for CodeOK); errors.Is matches
// it against ringstate's sentinels.
func (r *ApplyResult) Err() error { return ringstate.ErrorOf(r.Code, r.Message) }

// FSM is the raft.FSM over ringstate. Raft calls Apply, Snapshot and Restore from one goroutine;
// Ring, AppliedIndex and Changed may be called by any goroutine at any time.
//
// Apply is deterministic and total: it reads nothing but the entry and the current ring. Ring time
// comes from the stamp the proposing leader put in the entry (StampCommand; entries written before
// stamps existed fall back on raft.Log.AppendedAt, see DecodeLog), so every replica computes the
// same heartbeat ages whatever its own clock says, and a frozen log (no quorum) freezes health
// instead of decaying it (cortex#157).
type FSM struct {
	// state is the published ring with the index of the entry that produced it. Immutable once
	// stored; replaced wholesale.
	state atomic.Pointer[fsmState]

	mu      sync.Mutex
	changed chan struct{} // closed and replaced on every publish; guarded by mu

	logger *slog.Logger
	// onApply, when set before the FSM is handed to Raft, is called after every command entry with
	// its op and outcome (the node's metrics). It must not block.
	onApply func(op ringstate.Op, code ringstate.Code)
	// onPublish, when set before the FSM is handed to Raft, is called with every ring published
	// (the node learns members' gRPC addresses from it). It must not block and must not feed back
	// into the FSM's state.
	onPublish func(*ringstate.Ring)
	// restoreIndex, when set, tells Restore the index of the snapshot being restored (see
	// indexingSnapshotStore); 0 when unknown.
	restoreIndex func() uint64
}

type fsmState struct {
	ring  *ringstate.Ring
	index uint64
	// owned is the index of the last entry that changed ownership (ringstate.OwnershipChangedBy),
	// or of the snapshot restored last when none was applied since: see OwnershipIndex. owned <= index.
	owned uint64
}

var _ raft.FSM = (*FSM)(nil)

// NewFSM returns an FSM holding an empty ring at applied index 0. logger may be nil.
func NewFSM(logger *slog.Logger) *FSM {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	f := &FSM{changed: make(chan struct{}), logger: logger}
	f.state.Store(&fsmState{ring: ringstate.New()})
	return f
}

// Ring returns the latest applied ring. Lock-free; the ring is immutable.
func (f *FSM) Ring() *ringstate.Ring { return f.state.Load().ring }

// AppliedIndex is the Raft index of the newest log entry reflected in Ring(). After a snapshot
// restore it is the snapshot's index when known (always, inside a Node), else it stays as it was
// until the next entry is applied.
func (f *FSM) AppliedIndex() uint64 { return f.state.Load().index }

// Changed returns a channel that is closed the next time Ring() or AppliedIndex() changes. Take the
// channel, read the state, then wait: a change between the two is never missed.
func (f *FSM) Changed() <-chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.changed
}

func (f *FSM) publish(s *fsmState) {
	f.state.Store(s)
	f.mu.Lock()
	close(f.changed)
	f.changed = make(chan struct{})
	f.mu.Unlock()
	if f.onPublish != nil {
		f.onPublish(s.ring)
	}
}

// Apply applies one committed log entry and returns an *ApplyResult. It never returns a Go error
// as the response: an entry of a known command version that does not decode is refused with
// CodeInvalidCommand and leaves the ring unchanged, identically on every replica of that version.
//
// An entry of an unknown command version halts the node: Apply panics with a message naming the
// entry's index and version and telling the operator to upgrade this node. See UnknownVersionPanic.
func (f *FSM) Apply(l *raft.Log) interface{} {
	cur := f.state.Load()
	if l.Type != raft.LogCommand {
		// Raft hands the FSM only command entries; be total anyway (configuration entries reach an
		// FSM only if it implements raft.ConfigurationStore, which this one does not).
		f.publish(&fsmState{ring: cur.ring, index: max(cur.index, l.Index), owned: cur.owned})
		return &ApplyResult{}
	}
	// The ring time of the entry: the proposing leader's stamp (stamped entries), else AppendedAt
	// (entries written before stamps existed: a log stays readable and replays identically), else
	// the current ring time. Read from the entry only, so it is the same on every replica.
	cmd, nowMs, err := DecodeLog(l, cur.ring.TimeMs())
	var verr *VersionError
	if errors.As(err, &verr) {
		// Committed by a newer release: a newer replica applies it, this one cannot know how.
		// Turning it into a no-op here would make this replica's ring differ from the newer ones'
		// from this index on, silently. hashicorp/raft gives Apply no way to refuse an entry, so
		// stop before applying it (Consul panics on unknown message types for the same reason).
		// This is not a panic on input: the entry is committed, so every replica of this version
		// halts at the same index, and a node restarted with a newer build resumes from it.
		msg := UnknownVersionPanic(l.Index, verr.Version)
		f.logger.Error(msg, "index", l.Index, "version", verr.Version, "known", verr.Known)
		panic(msg)
	}
	if err != nil {
		f.publish(&fsmState{ring: cur.ring, index: max(cur.index, l.Index), owned: cur.owned})
		f.logger.Error("refusing undecodable raft log entry", "index", l.Index, "err", err)
		if f.onApply != nil {
			f.onApply(0, ringstate.CodeInvalidCommand)
		}
		return &ApplyResult{Code: ringstate.CodeInvalidCommand, Message: err.Error()}
	}
	next, events, aerr := cur.ring.Apply(cmd, nowMs)
	index := max(cur.index, l.Index)
	owned := cur.owned
	if aerr == nil && ringstate.OwnershipChangedBy(cur.ring, next, events) {
		owned = index
	}
	f.publish(&fsmState{ring: next, index: index, owned: owned})
	res := &ApplyResult{Code: ringstate.CodeOf(aerr), Events: events}
	if aerr != nil {
		res.Message = aerr.Error()
	}
	if f.onApply != nil {
		f.onApply(cmd.Op, res.Code)
	}
	f.logEvents(l.Index, &cmd, events)
	return res
}

// UnknownVersionPanic is the message FSM.Apply panics with on a committed entry of an unknown
// command version.
func UnknownVersionPanic(index uint64, version uint32) string {
	return fmt.Sprintf("raftfsm: FATAL: committed raft log entry %d has command version %d, which this build "+
		"does not know; it was written by a newer release. Upgrade this node to a release that reads command "+
		"version %d and restart it: it resumes from this entry. Halting rather than let this replica's ring "+
		"diverge from the others'", index, version, version)
}

// logEvents logs membership changes. Logging does not feed back into state, so it does not break
// Apply's determinism.
func (f *FSM) logEvents(index uint64, cmd *ringstate.Command, events []ringstate.Event) {
	for _, e := range events {
		switch e.Kind {
		case ringstate.EventAdded:
			f.logger.Info("ring member added", "member", e.Member, "index", index)
		case ringstate.EventStateChanged:
			f.logger.Info("ring member state changed", "member", e.Member, "from", e.From.String(),
				"to", e.To.String(), "op", cmd.Op.String(), "index", index)
		case ringstate.EventRemoved:
			f.logger.Info("ring member removed", "member", e.Member, "state", e.From.String(),
				"op", cmd.Op.String(), "index", index)
		case ringstate.EventTokensChanged:
			f.logger.Debug("ring member tokens changed", "member", e.Member, "index", index)
		case ringstate.EventZoneChanged:
			f.logger.Info("ring member zone changed", "member", e.Member, "index", index)
		}
	}
}

// Snapshot is O(1): it captures the immutable ring; Persist does the encoding off the FSM goroutine.
func (f *FSM) Snapshot() (raft.FSMSnapshot, error) {
	return &fsmSnapshot{ring: f.state.Load().ring}, nil
}

// Restore replaces the ring with the snapshot read from rc. A snapshot that does not decode, has an
// unknown version or breaks a ring invariant is refused with an error naming the problem, and the
// ring is left unchanged.
func (f *FSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	data, err := io.ReadAll(rc)
	if err != nil {
		return fmt.Errorf("raftfsm: read snapshot: %w", err)
	}
	r, err := DecodeSnapshot(data)
	if err != nil {
		return err
	}
	cur := f.state.Load()
	index := cur.index
	if f.restoreIndex != nil {
		if i := f.restoreIndex(); i != 0 {
			index = i
		}
	}
	// Which entry last changed ownership is not in the snapshot: take the snapshot's own index,
	// which is at or after it (OwnershipIndex says why that is safe).
	f.publish(&fsmState{ring: r, index: index, owned: index})
	f.logger.Info("restored ring from snapshot", "members", r.Len(), "ring_time_ms", r.TimeMs(), "index", index)
	return nil
}

type fsmSnapshot struct{ ring *ringstate.Ring }

// Persist encodes the captured ring into sink.
func (s *fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	data, err := EncodeSnapshot(s.ring)
	if err == nil {
		_, err = io.Copy(sink, bytes.NewReader(data))
	}
	if err != nil {
		_ = sink.Cancel()
		return fmt.Errorf("raftfsm: persist snapshot: %w", err)
	}
	return sink.Close()
}

// Release does nothing: the captured ring is immutable and garbage collected.
func (s *fsmSnapshot) Release() {}
