package raftfsm

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"go.etcd.io/bbolt"

	"github.com/raftingest/raftingest/ringpb"
	"github.com/raftingest/raftingest/ringstate"
)

// Node is one Raft server holding the ring FSM: hashicorp/raft over raft-boltdb (log and stable
// store), file snapshots and a TCP transport, plus forwarding to the leader over the Ring gRPC
// service and voter management.
//
// Every method is safe for concurrent use. Methods that change the cluster work on any node: a
// follower forwards them to the leader. Every blocking method is bounded by its context and by
// -raft.apply-timeout.
type Node struct {
	cfg    Config
	id     raft.ServerID
	logger *slog.Logger

	fsm   *FSM
	raft  *raft.Raft
	trans *contactTransport
	store *raftboltdb.BoltStore
	snaps *indexingSnapshotStore

	// stamps makes the ring time of every command this node proposes as leader (leaderApply).
	stamps ringClock
	// beats coalesces the heartbeats this node receives as leader into batch entries; nil when
	// -ring.heartbeat-batch-window is 0. Immutable after NewNode.
	beats *HeartbeatBatcher

	metrics *nodeMetrics
	conns   *connCache

	observer   *raft.Observer
	observerCh chan raft.Observation
	kick       chan struct{} // wakes the background loop; buffered 1
	// leaderSince is when this node last became leader, zero while it is not; read and written by
	// the background loop (run) only.
	leaderSince time.Time
	// swapLeftover is the voter a zone swap of this leader failed to demote (spreadVoters), for
	// trimVoters to finish; empty otherwise. Read and written under confMu.
	swapLeftover raft.ServerID
	// lastRemoval is when a member was last removed through this node as leader (a time.Time),
	// for the auto-forget holdoff.
	lastRemoval atomic.Value
	stop        chan struct{} // closed by Shutdown
	wg          sync.WaitGroup
	// runCtx bounds the background loop's calls (status requests to peers, configuration changes);
	// Shutdown cancels it, so a stop never waits out -raft.apply-timeout.
	runCtx    context.Context
	runCancel context.CancelFunc

	// existing: the data dir held Raft state when the node started. Immutable after NewNode.
	existing bool
	// startIndex is the last index of the log (or snapshot) found on disk at start; 0 for a new
	// node. Immutable after NewNode. A restarted node's FSM holds only its snapshot until a leader
	// tells it the commit index, and then applies the rest of its log in a burst: until the applied
	// index reaches startIndex its ring may be arbitrarily old (see CaughtUp).
	startIndex uint64
	// catchTarget is the index this node must apply before its ring counts as current: the larger
	// of startIndex and a leader's commit index learned after start (0 until learned); caughtUp
	// latches once it is applied. Written by watchCatchUp only.
	catchTarget atomic.Uint64
	caughtUp    atomic.Bool

	// addrMu guards lastGRPC: the last gRPC address seen for each Raft server id, from the ring as
	// it changes and, at start, from the snapshot and the stored log. Forwarding and the membership
	// checks use it when the ring no longer (or not yet) lists a server: a leaving leader between
	// its ring Remove and the leadership transfer, or a restarted node whose log is not replayed yet.
	addrMu   sync.Mutex
	lastGRPC map[string]string

	// confMu serialises this leader's configuration changes (AddPeer, RemovePeer, promotions), so
	// that the voter count each one reads stays true until its change commits. (GetConfiguration
	// does not report the configuration's index, so Raft's own compare-and-set on prevIndex is not
	// available to us.)
	confMu sync.Mutex

	shutdownOnce sync.Once
	shutdownErr  error
	closed       atomic.Bool

	// hadState: the data dir held Raft state at start, or this node has since seen itself in the
	// configuration. Only such a node can have been removed.
	hadState atomic.Bool
	removed  atomic.Bool
	// confirmed: a leader (or a committed LeaveCluster) confirmed the removal. It latches: a node
	// re-added after a removal is a new process over wiped data. An unconfirmed removal (seen only
	// in our own, possibly lagging, log) clears if the configuration lists us again.
	confirmed atomic.Bool
	leaving   atomic.Bool // LeaveCluster in progress: the removal is expected
	// removedCh is closed when a removal this node did not ask for is confirmed (see Removed).
	removedCh   chan struct{}
	removedOnce sync.Once
}

// NewNode opens (or creates) the Raft state under cfg.DataDir/raft, starts Raft on cfg.RaftAddr and
// returns the running node. With cfg.Bootstrap and no existing state it bootstraps a single-voter
// cluster of itself; otherwise it waits to be added by a leader (AddPeer on any member).
//
// NewNode never wipes anything. The caller must call Shutdown.
func NewNode(cfg Config) (*Node, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.ReconcileInterval == 0 {
		cfg.ReconcileInterval = 5 * time.Second
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	dir := filepath.Join(cfg.DataDir, "raft")
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("raftfsm: create raft dir: %w", err)
	}
	hl := newHCLogger(logger, "raft")

	n := &Node{
		cfg:        cfg,
		id:         raft.ServerID(cfg.ID),
		logger:     logger,
		observerCh: make(chan raft.Observation, 16),
		kick:       make(chan struct{}, 1),
		stop:       make(chan struct{}),
		lastGRPC:   map[string]string{},
		removedCh:  make(chan struct{}),
	}
	n.lastRemoval.Store(time.Time{})
	n.conns = newConnCache(grpcDialOptions(cfg.Dial, cfg.TLS, n.MemberAt)...)
	n.runCtx, n.runCancel = context.WithCancel(context.Background())
	if w := cfg.HeartbeatBatchWindow; w > 0 {
		if p := cfg.RingHeartbeatPeriod; p > 0 {
			w = min(w, p/4)
		}
		n.beats = NewHeartbeatBatcher(w, DefaultMaxBatchBeats, n.proposeBeats)
	}
	var err error
	// A bolt file is locked by its user; time out instead of hanging when another process (or a
	// forgotten node in this one) holds it.
	n.store, err = raftboltdb.New(raftboltdb.Options{
		Path:        filepath.Join(dir, "raft.db"),
		BoltOptions: &bbolt.Options{Timeout: 2 * time.Second},
	})
	if err != nil {
		return nil, fmt.Errorf("raftfsm: open %s: %w", filepath.Join(dir, "raft.db"), err)
	}
	fss, err := raft.NewFileSnapshotStoreWithLogger(dir, 2, hl.Named("snapshots"))
	if err != nil {
		n.store.Close()
		return nil, fmt.Errorf("raftfsm: open snapshot store in %s: %w", dir, err)
	}
	n.snaps = &indexingSnapshotStore{SnapshotStore: fss}
	conf := &raftConf{}
	nt, err := newTransport(cfg, hl.Named("transport"), conf)
	if err != nil {
		n.store.Close()
		return nil, fmt.Errorf("raftfsm: listen for raft on %s: %w", cfg.RaftAddr, err)
	}
	n.trans = &contactTransport{NetworkTransport: nt, last: map[raft.ServerID]time.Time{}}

	n.fsm = NewFSM(logger)
	n.fsm.restoreIndex = n.snaps.lastOpened.Load
	n.metrics = newNodeMetrics(cfg.Registerer, n)
	n.fsm.onApply = n.metrics.countApply
	n.fsm.onPublish = n.learnAddrs

	rc := raft.DefaultConfig()
	rc.LocalID = n.id
	rc.HeartbeatTimeout = cfg.HeartbeatTimeout
	rc.ElectionTimeout = cfg.ElectionTimeout
	rc.CommitTimeout = cfg.CommitTimeout
	rc.LeaderLeaseTimeout = cfg.HeartbeatTimeout / 2
	rc.SnapshotThreshold = cfg.SnapshotThreshold
	rc.SnapshotInterval = cfg.SnapshotInterval
	rc.TrailingLogs = cfg.TrailingLogs
	rc.Logger = hl
	if err := raft.ValidateConfig(rc); err != nil {
		n.closeTransportAndStores()
		return nil, fmt.Errorf("raftfsm: %w", err)
	}

	has, err := raft.HasExistingState(n.store, n.store, n.snaps)
	if err != nil {
		n.closeTransportAndStores()
		return nil, fmt.Errorf("raftfsm: read raft state in %s: %w", dir, err)
	}
	if cfg.Recover {
		if !has {
			n.closeTransportAndStores()
			return nil, fmt.Errorf("raftfsm: -raft.recover: no Raft state in %s to recover from (recovery restarts a survivor of a lost majority on its own data)", dir)
		}
		if err := n.recoverAlone(rc, dir); err != nil {
			n.closeTransportAndStores()
			return nil, fmt.Errorf("raftfsm: %w", err)
		}
	}
	n.hadState.Store(has)
	n.existing = has
	if has {
		n.learnAddrsFromLog()
	}

	n.raft, err = raft.NewRaft(rc, n.fsm, n.store, n.store, n.snaps, n.trans)
	if err != nil {
		n.closeTransportAndStores()
		return nil, fmt.Errorf("raftfsm: start raft: %w", err)
	}
	conf.r.Store(n.raft)
	n.metrics.collector.r.Store(n.raft)
	if has {
		n.startIndex = n.raft.LastIndex()
	}
	if cfg.Bootstrap && !has {
		f := n.raft.BootstrapCluster(raft.Configuration{Servers: []raft.Server{{
			Suffrage: raft.Voter, ID: n.id, Address: n.trans.LocalAddr(),
		}}})
		if err := f.Error(); err != nil {
			_ = n.Shutdown()
			return nil, fmt.Errorf("raftfsm: bootstrap: %w", err)
		}
		logger.Info("bootstrapped raft cluster", "id", cfg.ID, "raft_addr", string(n.trans.LocalAddr()))
	}
	n.observer = raft.NewObserver(n.observerCh, false, func(o *raft.Observation) bool {
		switch o.Data.(type) {
		case raft.LeaderObservation, raft.PeerObservation:
			return true
		}
		return false
	})
	n.raft.RegisterObserver(n.observer)
	if err := n.metrics.register(); err != nil {
		_ = n.Shutdown()
		return nil, err
	}
	n.wg.Add(2)
	go n.run()
	go n.watchCatchUp()
	logger.Info("raft started", "id", cfg.ID, "raft_addr", string(n.trans.LocalAddr()), "existing_state", has,
		"applied_index", n.fsm.AppliedIndex())
	return n, nil
}

func (n *Node) closeTransportAndStores() {
	_ = n.trans.Close()
	_ = n.store.Close()
}

// Shutdown stops the background loop, then Raft (which closes the transport), then the stores and
// the forwarding connections. It waits for all of it and is idempotent. Raft state stays on disk.
func (n *Node) Shutdown() error {
	n.shutdownOnce.Do(func() {
		n.closed.Store(true)
		close(n.stop)
		n.runCancel()
		if n.beats != nil {
			n.beats.Close() // after runCancel: batches being proposed give up at once
		}
		n.wg.Wait()
		n.metrics.unregister()
		var errs []error
		if n.observer != nil {
			n.raft.DeregisterObserver(n.observer)
		}
		if err := n.raft.Shutdown().Error(); err != nil {
			errs = append(errs, fmt.Errorf("raftfsm: shut down raft: %w", err))
		}
		if err := n.trans.Close(); err != nil { // raft closed it already; idempotent
			errs = append(errs, fmt.Errorf("raftfsm: close transport: %w", err))
		}
		// Close also the pooled outbound connections: Close leaves them open, and each keeps a
		// handler goroutine blocked in a read on the peer's side.
		n.trans.CloseStreams()
		if err := n.store.Close(); err != nil {
			errs = append(errs, fmt.Errorf("raftfsm: close raft store: %w", err))
		}
		n.conns.close()
		n.shutdownErr = errors.Join(errs...)
		n.logger.Info("raft stopped", "id", n.cfg.ID)
	})
	return n.shutdownErr
}

// ID is this node's Raft server ID (and ring member ID).
func (n *Node) ID() string { return n.cfg.ID }

// RaftAddr is the address the Raft transport listens on and advertises.
func (n *Node) RaftAddr() string { return string(n.trans.LocalAddr()) }

// Ring returns the latest ring this node applied. Lock-free; it may lag the leader by the entries in
// flight. Use LinearizableRing for a read that reflects every committed command.
func (n *Node) Ring() *ringstate.Ring { return n.fsm.Ring() }

// AppliedIndex is the Raft index of the newest entry reflected in Ring(). A caller that got index i
// from Apply reads its own write from the local Ring() once AppliedIndex() >= i.
func (n *Node) AppliedIndex() uint64 { return n.fsm.AppliedIndex() }

// Changed returns a channel closed the next time the local ring or applied index changes (see
// FSM.Changed).
func (n *Node) Changed() <-chan struct{} { return n.fsm.Changed() }

// CaughtUp reports whether the local ring is current: whether, since this node started, it has
// applied everything a leader had committed when the node first asked it (and at least the log it
// found on disk). It latches: once true it stays true (a later loss of quorum freezes the ring, as
// designed, but does not make it old).
//
// Until then the ring can be from long ago. A restarted node restores its snapshot at once but
// applies its logged entries only when a leader has told it the commit index; a new node joining
// a cluster replays the whole history through every intermediate ring, including the early ones
// where one member owned every token. Anything that places or finds data by the ring — the
// distributor, the querier's fan-out — must wait: a push placed on such a ring goes to the wrong
// owners and can be acked with fewer copies than the replication factor (found by the fault
// tests: stale-ring-push-during-replay). target is the index to reach (startIndex until a leader's
// commit index is known); applied is the FSM's.
//
// The latch is set by a background poll (watchCatchUp) and, on the leader, by CaughtUp itself: the
// leader's commit index needs no network round trip, so a leader whose applied ring has reached it
// answers true at once instead of one poll later (a bootstrapped node used to refuse pushes for up
// to a poll after it showed ACTIVE).
func (n *Node) CaughtUp() (ok bool, applied, target uint64) {
	if !n.caughtUp.Load() && n.raft.State() == raft.Leader {
		n.checkCaughtUp()
	}
	applied = n.fsm.AppliedIndex()
	target = max(n.catchTarget.Load(), n.startIndex)
	return n.caughtUp.Load(), applied, target
}

// catchUpPoll is how often watchCatchUp looks; a catch-up costs its caller (503s) at most this
// much beyond the replay itself.
const catchUpPoll = 50 * time.Millisecond

// watchCatchUp learns a leader's commit index once, then latches caughtUp when this node has
// applied it. It ends when caughtUp latches or the node stops.
func (n *Node) watchCatchUp() {
	defer n.wg.Done()
	t := time.NewTicker(catchUpPoll)
	defer t.Stop()
	for {
		if n.checkCaughtUp() {
			n.logger.Info("ring caught up: serving pushes and queries", "applied_index", n.fsm.AppliedIndex(),
				"target_index", n.catchTarget.Load())
			return
		}
		select {
		case <-n.stop:
			return
		case <-t.C:
		}
	}
}

// checkCaughtUp is one step of watchCatchUp; CaughtUp also calls it on the leader, where it does
// not touch the network. Concurrent calls are harmless: each stores a leader's commit index as the
// target (any one is a valid bound) and only ever latches caughtUp to true.
func (n *Node) checkCaughtUp() bool {
	target := n.catchTarget.Load()
	if target == 0 {
		ci, err := n.leaderCommitIndex()
		if err != nil || ci == 0 {
			return false
		}
		target = max(ci, n.startIndex)
		n.catchTarget.Store(target)
	}
	// Raft has handed every entry up to target to the FSM; the FSM's own index moves on command
	// entries only, so it must reach the last command at or below target (a no-op or configuration
	// entry at target never shows there).
	if n.raft.AppliedIndex() < target {
		return false
	}
	cmd, ok := n.lastCommandAtOrBelow(target)
	if !ok || n.fsm.AppliedIndex() < cmd {
		return false
	}
	n.caughtUp.Store(true)
	return true
}

// leaderCommitIndex is the commit index of the leader: this node's own when it leads, else asked
// of the leader over gRPC (bounded; an error while no leader is known or reachable).
func (n *Node) leaderCommitIndex() (uint64, error) {
	if n.raft.State() == raft.Leader {
		return n.raft.CommitIndex(), nil
	}
	ctx, cancel := context.WithTimeout(n.runCtx, 2*time.Second)
	defer cancel()
	c, _, err := n.leaderClient(ctx)
	if err != nil {
		return 0, err
	}
	st, err := c.Status(ctx, &ringpb.StatusRequest{})
	if err != nil {
		return 0, err
	}
	return st.GetCommitIndex(), nil
}

// lastCommandAtOrBelow returns the index of the newest command entry at or below index in the local
// log, 0 when every entry at or below it is compacted into the snapshot (the FSM's index covers
// those), and false when an entry in between is not in the local log (not received yet).
func (n *Node) lastCommandAtOrBelow(index uint64) (uint64, bool) {
	first, err := n.store.FirstIndex()
	if err != nil {
		return 0, false
	}
	for i := index; i >= first && i > 0; i-- {
		var l raft.Log
		if err := n.store.GetLog(i, &l); err != nil {
			return 0, false
		}
		if l.Type == raft.LogCommand {
			return i, true
		}
	}
	return 0, true
}

// WaitApplied blocks until AppliedIndex() >= index or ctx is done.
func (n *Node) WaitApplied(ctx context.Context, index uint64) error {
	for {
		ch := n.fsm.Changed()
		if n.fsm.AppliedIndex() >= index {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// IsLeader reports whether this node currently believes it leads. It may be stale by the time the
// caller acts on it.
func (n *Node) IsLeader() bool { return n.raft.State() == raft.Leader }

// Leader returns the current leader's server ID and Raft address; empty when unknown.
func (n *Node) Leader() (id, raftAddr string) {
	addr, lid := n.raft.LeaderWithID()
	return string(lid), string(addr)
}

// Err returns ErrShutdown after Shutdown and ErrRemovedFromCluster once this node's removal from
// the Raft configuration is confirmed (by a leader, or by its own LeaveCluster), else nil. Either
// is final: the node can never commit again. A removal seen only in this node's own log (which may
// lag: a node restarted mid catch-up whose log ends before its own AddVoter) is not confirmed and
// does not count here; Status().Removed reports it.
func (n *Node) Err() error {
	switch {
	case n.closed.Load():
		return ErrShutdown
	case n.confirmed.Load():
		return ErrRemovedFromCluster
	}
	return nil
}

// Removed returns a channel closed once a removal of this node that it did not ask for (ringctl
// remove, not LeaveCluster) is confirmed. The daemon exits then: its Raft state must be wiped
// before it rejoins.
func (n *Node) Removed() <-chan struct{} { return n.removedCh }

// ExistingState reports whether the data dir held Raft state when the node started: the node was
// a member of a cluster before, and must not ask to join again (a removed node must be wiped).
func (n *Node) ExistingState() bool { return n.existing }

// InConfiguration reports whether the latest Raft configuration this node knows lists it. A new
// node waiting to be added has an empty configuration.
func (n *Node) InConfiguration() bool {
	f := n.raft.GetConfiguration()
	if f.Error() != nil {
		return false
	}
	return slices.ContainsFunc(f.Configuration().Servers, func(s raft.Server) bool { return s.ID == n.id })
}

// ---- status ----

// Status is a point-in-time view of this node's Raft state.
type Status struct {
	ID                string
	State             string // "Leader", "Follower", "Candidate", "Shutdown"
	LeaderID          string // empty when unknown
	LeaderAddr        string
	Term              uint64
	CommitIndex       uint64
	AppliedIndex      uint64 // Raft's last applied index (counts every entry type)
	FSMIndex          uint64 // index of the newest entry reflected in Ring()
	LastLogIndex      uint64
	LastSnapshotIndex uint64
	Servers           []ServerStatus // the latest configuration, sorted by ID
	Removed           bool           // see ErrRemovedFromCluster
}

// ServerStatus is one server of the Raft configuration.
type ServerStatus struct {
	ID      string
	Address string
	Voter   bool
	// LastContact is how long ago the leader last heard from the server (a successful
	// AppendEntries or heartbeat); -1 when unknown: asked of a follower, the leader itself, or no
	// contact yet.
	LastContact time.Duration
}

// Status reports this node's view of Raft. It does not block on the network.
func (n *Node) Status() Status {
	stats := n.raft.Stats()
	u := func(k string) uint64 { v, _ := strconv.ParseUint(stats[k], 10, 64); return v }
	lid, laddr := n.Leader()
	st := Status{
		ID:                n.cfg.ID,
		State:             n.raft.State().String(),
		LeaderID:          lid,
		LeaderAddr:        laddr,
		Term:              u("term"),
		CommitIndex:       u("commit_index"),
		AppliedIndex:      u("applied_index"),
		FSMIndex:          n.fsm.AppliedIndex(),
		LastLogIndex:      u("last_log_index"),
		LastSnapshotIndex: u("last_snapshot_index"),
		Removed:           n.removed.Load(),
	}
	leader := n.raft.State() == raft.Leader
	if f := n.raft.GetConfiguration(); f.Error() == nil {
		for _, s := range f.Configuration().Servers {
			ss := ServerStatus{ID: string(s.ID), Address: string(s.Address), Voter: s.Suffrage == raft.Voter, LastContact: -1}
			if leader && s.ID != n.id {
				if t, ok := n.trans.lastContact(s.ID); ok {
					ss.LastContact = time.Since(t)
				}
			}
			st.Servers = append(st.Servers, ss)
		}
	}
	slices.SortFunc(st.Servers, func(a, b ServerStatus) int { return strings.Compare(a.ID, b.ID) })
	return st
}
