package raftfsm

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
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

	"github.com/raftingest/raftingest/auth"
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

	metrics *nodeMetrics
	conns   *connCache

	observer   *raft.Observer
	observerCh chan raft.Observation
	kick       chan struct{} // wakes the background loop; buffered 1
	stop       chan struct{} // closed by Shutdown
	wg         sync.WaitGroup
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
	n.conns = newConnCache(grpcDialOptions(cfg.Dial, cfg.TLS, n.MemberAt)...)
	n.runCtx, n.runCancel = context.WithCancel(context.Background())
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

// ---- commands ----

// Apply commits cmd and returns the Raft index of its entry and its outcome: nil, or ringstate's
// refusal (errors.Is matches ringstate's sentinels; the refusal was committed too, at index). On a
// follower the command is forwarded to the leader over gRPC.
//
// ErrNoLeader means nothing was proposed. ErrUnknownOutcome means it may have been committed:
// retry with the same cmd.RequestID, which ringstate deduplicates, so a retry never applies twice.
//
// A Register or Heartbeat of this node's own member that carries no CommandVersion is sent
// advertising MaxCommandVersion, the highest command version this build reads: that is how the
// leader learns when every member can read a newer version (see admitClaim).
func (n *Node) Apply(ctx context.Context, cmd ringstate.Command) (uint64, error) {
	if (cmd.Op == ringstate.OpRegister || cmd.Op == ringstate.OpHeartbeat) && string(cmd.Member) == n.cfg.ID &&
		cmd.CommandVersion == 0 {
		cmd.CommandVersion = uint32(MaxCommandVersion)
	}
	start := time.Now()
	call := n.historyInvoke(HistoryClientApply, cmd) // recorded before anything is proposed or forwarded
	idx, err := n.apply(ctx, cmd, 0)
	n.historyReturn(call, idx, err)
	if err == nil || isRefusal(err) {
		n.metrics.applyDuration.Observe(time.Since(start).Seconds())
	}
	return idx, err
}

// isRefusal reports whether err is a ringstate outcome (committed), not a failure to commit.
func isRefusal(err error) bool {
	return err != nil && (ringstate.CodeOf(err) != ringstate.CodeInvalidCommand || errors.Is(err, ringstate.ErrInvalidCommand))
}

func (n *Node) apply(ctx context.Context, cmd ringstate.Command, hops uint32) (uint64, error) {
	data, err := EncodeCommand(cmd)
	if err != nil {
		return 0, err
	}
	return route(ctx, n, hops, "apply",
		func() (uint64, error) {
			if err := admitFields(&cmd); err != nil {
				return 0, err
			}
			if cmd.Op == ringstate.OpClaimCompactor {
				if err := n.admitClaim(ctx, &cmd); err != nil {
					return 0, err
				}
			}
			if cmd.Op == ringstate.OpRegister {
				if err := n.admitAddresses(ctx, &cmd); err != nil {
					return 0, err
				}
			}
			if cmd.Op == ringstate.OpRegister && n.cfg.RegisterRequiresPeer {
				if err := n.admitRegister(ctx, &cmd); err != nil {
					return 0, err
				}
			}
			return n.leaderApply(ctx, data)
		},
		func(ctx context.Context, c ringpb.RingClient, h uint32) (uint64, error) {
			resp, err := c.Apply(ctx, &ringpb.ApplyRequest{Command: ringpb.FromCommand(&cmd), Hops: h})
			if err != nil {
				return 0, fromStatus(err, true)
			}
			return resp.GetIndex(), wireResult(resp.GetCode(), resp.GetMessage())
		})
}

// admitFields refuses, on the leader and before anything is proposed, a command that carries a
// field added after version 1 (lease_ms, command_version, readers) on an op that does not take it.
// ringstate's Apply refuses such a command too, but in a version-2 entry a replica of an older build
// drops the unknown field and applies the command: the two builds' rings would differ. So this
// build never writes one. (A leader of an older build drops the fields when it re-encodes a
// forwarded command, so it never writes one either.)
func admitFields(cmd *ringstate.Command) error {
	bad := func(field string) error {
		return fmt.Errorf("%w: %s %s: %s is not a field of this op (refused before proposing: an older build "+
			"would ignore it)", ringstate.ErrInvalidCommand, cmd.Op, cmd.Member, field)
	}
	switch {
	case cmd.LeaseMs != 0 && cmd.Op != ringstate.OpClaimCompactor:
		return bad("lease_ms")
	case len(cmd.Readers) > 0 && cmd.Op != ringstate.OpClaimCompactor:
		return bad("readers")
	case cmd.CommandVersion != 0 && cmd.Op != ringstate.OpRegister && cmd.Op != ringstate.OpHeartbeat:
		return bad("command_version")
	}
	return nil
}

// admitClaim refuses, on the leader and before anything is proposed, a claim of the compactor lease
// while a replica might not read it. A claim is a version-3 entry (LeaseCommandVersion), and a
// replica of a build from before the lease halts on it — forever, since the entry stays in the log
// — so, until the first claim has been granted (ringstate.Ring.LeaseEverGranted), this build
// proposes one only when:
//
//   - every ring member advertises LeaseCommandVersion (Member.CommandVersion, from its last
//     Register or Heartbeat): a member on an older build advertises nothing;
//   - every server in the Raft configuration is a ring member: a node added to Raft that has not
//     registered yet applies the log too, and nothing says what it reads
//     (ringstate.ErrReplicaNotMember).
//
// From the first grant on, those two checks are skipped: that grant is a committed version-3
// entry, and a ring holding a lease is snapshotted as snapshot version 2, so a replica of a build
// before the lease cannot apply this log or its snapshots any more, whatever the gate says. Keeping
// them would only stop compaction — for good, and renewals included — whenever a Raft server is not
// a ring member: a node added before it registers (every scale-up), a removal killed between its
// ring and its Raft step, `ringctl join` of a node that never starts. Every replica tells the two
// phases apart from its own state alike (the epoch is ring state and never decreases); the
// leader's applied ring may lag its log, which only keeps the gate closed a little longer.
//
// Always: the claim's Readers must name every member of the leader's ring (the claimant built them
// from its own ring; a member that registered since must be looked at first: the claimant
// retries). FSM.Apply refuses the claim again, deterministically, when the ring gained a member
// the Readers do not name between this check and the commit; that keeps the lease off such a ring,
// but cannot save a replica of an older build that joined in that instant: only the checks above
// can, by proposing nothing.
//
// The refusal wraps ringstate.ErrMixedVersions and names the members.
func (n *Node) admitClaim(ctx context.Context, cmd *ringstate.Command) error {
	r := n.fsm.Ring()
	gate := !r.LeaseEverGranted()
	if old := r.NotReading(ringstate.LeaseCommandVersion); gate && len(old) > 0 {
		return fmt.Errorf("%w: claim-compactor %s refused before proposing: members %v do not advertise command "+
			"version %d (they run a build from before the compactor lease, or their registration went through such "+
			"a leader; the first lease waits until every member runs this build and has registered or heartbeated "+
			"through a leader of it)", ringstate.ErrMixedVersions, cmd.Member, old, ringstate.LeaseCommandVersion)
	}
	var unnamed []ringstate.MemberID
	for _, id := range r.MemberIDs() {
		if _, ok := slices.BinarySearch(cmd.Readers, id); !ok {
			unnamed = append(unnamed, id)
		}
	}
	if len(unnamed) > 0 {
		return fmt.Errorf("%w: claim-compactor %s refused before proposing: its readers %v do not name members %v "+
			"(the claimant's ring lags the leader's; retry)", ringstate.ErrMixedVersions, cmd.Member, cmd.Readers, unnamed)
	}
	if !gate {
		return nil
	}
	conf, _, err := n.configuration(ctx)
	if err != nil {
		return err
	}
	var outside []string
	for _, srv := range conf.Servers {
		if _, ok := r.Member(ringstate.MemberID(srv.ID)); !ok {
			outside = append(outside, string(srv.ID))
		}
	}
	if len(outside) > 0 {
		return fmt.Errorf("%w: claim-compactor %s refused before proposing: raft servers %v are not ring members, so "+
			"nothing says which command versions they read; the first lease waits until each registers, or is "+
			"removed from raft (ringctl remove) if it is not coming back", ringstate.ErrReplicaNotMember, cmd.Member, outside)
	}
	return nil
}

// admitRegister refuses, on the leader and before anything is proposed, a Register for a member
// that no Raft server backs: its id must be in the latest configuration at the command's raft
// address. A node removed from Raft and restarted on its old data could otherwise re-enter the ring
// as a PENDING member outside the Raft configuration — one a leaver could pick as its joiner. The
// check reads the configuration, so it stays out of FSM.Apply, which must be configuration-free.
func (n *Node) admitRegister(ctx context.Context, cmd *ringstate.Command) error {
	conf, _, err := n.configuration(ctx)
	if err != nil {
		return err
	}
	i := slices.IndexFunc(conf.Servers, func(s raft.Server) bool { return string(s.ID) == string(cmd.Member) })
	if i < 0 {
		return fmt.Errorf("%w: cannot register %s: it is not in the raft configuration (removed? wipe its raft data, "+
			"<data.dir>/raft, and join it again)", ErrNotPeer, cmd.Member)
	}
	if a := string(conf.Servers[i].Address); a != cmd.RaftAddr {
		return fmt.Errorf("%w: cannot register %s at raft address %s: the raft configuration has it at %s",
			ErrNotPeer, cmd.Member, cmd.RaftAddr, a)
	}
	return nil
}

// admitAddresses refuses, on the leader and before anything is proposed, a Register that would
// change the gRPC or HTTP address of a live (healthy) member unless its sender is proven to be
// that member: the node's own call, or a caller whose certificate names the member. Otherwise
// anyone who can reach the Ring service could point a member's replicas' writes and reads at
// itself. Without TLS nobody is proven, so a member restarted on other addresses is admitted once
// its previous heartbeat is older than the ring's heartbeat timeout (its lifecycle retries).
func (n *Node) admitAddresses(ctx context.Context, cmd *ringstate.Command) error {
	p, external := callerOf(ctx)
	if !external || (n.cfg.TLS != nil && p.Kind == auth.Node && p.Name == string(cmd.Member)) {
		return nil
	}
	r := n.fsm.Ring()
	m, ok := r.Member(cmd.Member)
	if !ok || (m.GRPCAddr == cmd.GRPCAddr && m.HTTPAddr == cmd.HTTPAddr) {
		return nil
	}
	if t := n.cfg.RingHeartbeatTimeout; t > 0 && !m.Healthy(r.TimeMs(), t.Milliseconds()) {
		return nil
	}
	return fmt.Errorf("%w: cannot register %s at grpc %q, http %q: it is live at grpc %q, http %q, and %s cannot prove "+
		"it is that member (restart it on the same addresses, wait until its heartbeat is older than "+
		"-ring.heartbeat-timeout, or run the cluster with -tls.* so that its certificate proves it)",
		ErrAddressChange, cmd.Member, cmd.GRPCAddr, cmd.HTTPAddr, m.GRPCAddr, m.HTTPAddr, p)
}

// wireResult rebuilds a ringstate outcome from an ApplyResponse's code and message.
func wireResult(code uint32, msg string) error {
	if code > uint32(ringstate.MaxCode) {
		return ringstate.ErrorOf(ringstate.CodeInvalidCommand, fmt.Sprintf("unknown result code %d: %s", code, msg))
	}
	return ringstate.ErrorOf(ringstate.Code(code), msg)
}

// leaderApply proposes data, an unstamped command (EncodeCommand), on this node, which believes it
// is the leader, and waits for the entry to be applied locally. errNotLeader means nothing was
// proposed.
//
// It stamps the entry with ring time from this node's clock (Config.Clock, through n.stamps): the
// proposer of an entry is always the leader, so a forwarded command is stamped here, by the leader,
// never by the follower that forwarded it.
func (n *Node) leaderApply(ctx context.Context, data []byte) (uint64, error) {
	timeout := n.timeout(ctx)
	if timeout <= 0 {
		return 0, ctx.Err()
	}
	now := time.Now
	if n.cfg.Clock != nil {
		now = n.cfg.Clock
	}
	data, err := StampCommand(data, n.stamps.stampClock(now, n.fsm.Ring().TimeMs()))
	if err != nil {
		return 0, err
	}
	f := n.raft.Apply(data, timeout)
	if err := wait(ctx, f, timeout); err != nil {
		if errors.Is(err, raft.ErrNotLeader) {
			return 0, errNotLeader
		}
		return 0, fmt.Errorf("%w: %w", ErrUnknownOutcome, err)
	}
	res, ok := f.Response().(*ApplyResult)
	if !ok {
		return f.Index(), fmt.Errorf("%w: unexpected apply response %T", ErrUnknownOutcome, f.Response())
	}
	return f.Index(), res.Err()
}

// timeout is -raft.apply-timeout, shortened to ctx's deadline.
func (n *Node) timeout(ctx context.Context) time.Duration {
	t := n.cfg.ApplyTimeout
	if dl, ok := ctx.Deadline(); ok {
		t = min(t, time.Until(dl))
	}
	return t
}

var errWaitTimeout = errors.New("raftfsm: timed out waiting for raft")

// wait waits for a Raft future, bounded by ctx and timeout. Raft resolves every future eventually
// (commit, leadership loss or shutdown), so the helper goroutine always ends.
func wait(ctx context.Context, f raft.Future, timeout time.Duration) error {
	done := make(chan error, 1)
	go func() { done <- f.Error() }()
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case err := <-done:
		return err
	case <-t.C:
		return fmt.Errorf("%w after %s", errWaitTimeout, timeout)
	case <-ctx.Done():
		return ctx.Err()
	}
}

// route runs local on the leader and remote against the leader otherwise. A local errNotLeader
// (leadership moved before anything was proposed) retries against the new leader.
func route[T any](ctx context.Context, n *Node, hops uint32, what string, local func() (T, error),
	remote func(ctx context.Context, c ringpb.RingClient, hops uint32) (T, error)) (T, error) {
	var zero T
	for attempt := 0; attempt < 3; attempt++ {
		if err := n.Err(); err != nil {
			return zero, err
		}
		if n.raft.State() == raft.Leader {
			v, err := local()
			if errors.Is(err, errNotLeader) {
				continue
			}
			return v, err
		}
		if n.mustRedirect(ctx) {
			return zero, n.redirect(what)
		}
		if hops+1 > MaxForwardHops {
			return zero, fmt.Errorf("%w: %s reached %s after %d hops", ErrTooManyHops, what, n.cfg.ID, hops)
		}
		c, leader, err := n.leaderClient(ctx)
		if errors.Is(err, errNotLeader) { // we became the leader meanwhile
			continue
		}
		if err != nil {
			return zero, err
		}
		fctx, cancel := ctx, context.CancelFunc(func() {})
		if _, ok := ctx.Deadline(); !ok {
			fctx, cancel = context.WithTimeout(ctx, 2*n.cfg.ApplyTimeout)
		}
		v, err := remote(fctx, c, hops+1)
		cancel()
		if errors.Is(err, ErrRedirect) {
			// Under TLS the node we took for the leader no longer leads and does not forward:
			// look for the leader again.
			n.logger.Debug("forwarded request redirected", "op", what, "to", leader, "err", err)
			continue
		}
		if err != nil {
			n.logger.Debug("forwarded request failed", "op", what, "leader", leader, "err", err)
		}
		return v, err
	}
	return zero, fmt.Errorf("%w: leadership kept moving during %s", ErrNoLeader, what)
}

// leaderClient waits (up to two election timeouts, bounded by ctx) for a leader other than this
// node to be known, and returns a client for its Ring service. errNotLeader means this node leads.
func (n *Node) leaderClient(ctx context.Context) (ringpb.RingClient, string, error) {
	deadline := time.Now().Add(2 * n.cfg.ElectionTimeout)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		_, lid := n.raft.LeaderWithID()
		id := string(lid)
		switch {
		case n.raft.State() == raft.Leader:
			return nil, "", errNotLeader
		case id != "" && id != n.cfg.ID:
			addr, err := n.grpcAddr(id)
			if err != nil {
				return nil, id, err
			}
			c, err := n.conns.get(addr)
			if err != nil {
				return nil, id, fmt.Errorf("%w: leader %s at %s: %v", ErrNoLeader, id, addr, err)
			}
			return c, id, nil
		}
		if time.Now().After(deadline) {
			if f := n.raft.GetConfiguration(); f.Error() == nil && len(f.Configuration().Servers) == 0 {
				return nil, "", fmt.Errorf("%w: %s is not in a cluster yet: start it with -join ADDR or run "+
					"`ringctl -addr MEMBER join %s %s`", ErrNoLeader, n.cfg.ID, n.cfg.ID, n.RaftAddr())
			}
			return nil, "", fmt.Errorf("%w (asked %s)", ErrNoLeader, n.cfg.ID)
		}
		select {
		case <-ctx.Done():
			return nil, "", fmt.Errorf("%w (asked %s): %w", ErrNoLeader, n.cfg.ID, ctx.Err())
		case <-tick.C:
		}
	}
}

// grpcAddr finds the Ring service address of server id: the ResolveGRPC hook, else the ring.
func (n *Node) grpcAddr(id string) (string, error) {
	if n.cfg.ResolveGRPC != nil {
		if a, ok := n.cfg.ResolveGRPC(id); ok && a != "" {
			return a, nil
		}
	}
	if m, ok := n.fsm.Ring().Member(ringstate.MemberID(id)); ok && m.GRPCAddr != "" {
		return m.GRPCAddr, nil
	}
	if a := n.knownGRPC(id); a != "" {
		return a, nil
	}
	return "", fmt.Errorf("%w: leader %s has no known gRPC address (not registered yet?)", ErrNoLeader, id)
}

// MemberAt is the member id whose gRPC address is addr, from the ring or the addresses seen
// before; "" when none is known. Under TLS a client of addr (forwarding, and the ingester's
// member clients) requires that member's certificate there.
func (n *Node) MemberAt(addr string) string {
	r := n.fsm.Ring()
	for i := range r.Len() {
		if m := r.MemberAt(i); m.GRPCAddr == addr {
			return string(m.ID)
		}
	}
	n.addrMu.Lock()
	defer n.addrMu.Unlock()
	for id, a := range n.lastGRPC {
		if a == addr {
			return id
		}
	}
	return ""
}

// knownGRPC returns the last gRPC address seen for server id, or "".
func (n *Node) knownGRPC(id string) string {
	n.addrMu.Lock()
	defer n.addrMu.Unlock()
	return n.lastGRPC[id]
}

// learnAddrs records the gRPC addresses of r's members. The FSM calls it after every publish; it
// only reads r.
func (n *Node) learnAddrs(r *ringstate.Ring) {
	n.addrMu.Lock()
	defer n.addrMu.Unlock()
	for i := range r.Len() {
		if m := r.MemberAt(i); m.GRPCAddr != "" {
			n.lastGRPC[string(m.ID)] = m.GRPCAddr
		}
	}
}

// learnAddrsFromLog reads the gRPC addresses that Register commands in the stored log carry. A
// restarted node applies its log only once a leader tells it the commit index; a removed node never
// hears from one, and needs the addresses to ask the others whether it is still a member. Errors
// only mean fewer addresses.
func (n *Node) learnAddrsFromLog() {
	first, err1 := n.store.FirstIndex()
	last, err2 := n.store.LastIndex()
	if err1 != nil || err2 != nil || first == 0 {
		return
	}
	n.addrMu.Lock()
	defer n.addrMu.Unlock()
	for i := first; i <= last; i++ {
		var l raft.Log
		if n.store.GetLog(i, &l) != nil || l.Type != raft.LogCommand {
			continue
		}
		if cmd, err := DecodeCommand(l.Data); err == nil && cmd.Op == ringstate.OpRegister && cmd.GRPCAddr != "" {
			n.lastGRPC[string(cmd.Member)] = cmd.GRPCAddr
		}
	}
}

// ---- membership ----

// AddPeer adds server id at raftAddr to the Raft cluster: as a voter while there are fewer than
// -raft.max-voters voters or when forceVoter is set, else as a non-voter (promoted later by the
// leader's voter management). It returns whether the peer is a voter. Idempotent for the same id and
// address (a non-voter added again with forceVoter is promoted); an id already present with another
// address, or an address used by another id, is refused with ErrPeerExists.
func (n *Node) AddPeer(ctx context.Context, id, raftAddr string, forceVoter bool) (voter bool, err error) {
	_, voter, err = n.addPeer(ctx, id, raftAddr, forceVoter, 0)
	return voter, err
}

type joinResult struct {
	index uint64
	voter bool
}

func (n *Node) addPeer(ctx context.Context, id, raftAddr string, forceVoter bool, hops uint32) (uint64, bool, error) {
	if err := checkID(id); err != nil {
		return 0, false, fmt.Errorf("%w: %v", ErrInvalidPeer, err)
	}
	if host, port, err := net.SplitHostPort(raftAddr); err != nil || host == "" || port == "" {
		return 0, false, fmt.Errorf("%w: %s: raft address %q is not host:port", ErrInvalidPeer, id, raftAddr)
	}
	r, err := route(ctx, n, hops, "add peer",
		func() (joinResult, error) { return n.addPeerLocal(ctx, id, raftAddr, forceVoter) },
		func(ctx context.Context, c ringpb.RingClient, h uint32) (joinResult, error) {
			resp, err := c.Join(ctx, &ringpb.JoinRequest{Id: id, RaftAddr: raftAddr, Voter: forceVoter, Hops: h})
			if err != nil {
				return joinResult{}, fromStatus(err, true)
			}
			return joinResult{index: resp.GetIndex(), voter: resp.GetVoter()}, nil
		})
	return r.index, r.voter, err
}

// configuration reads the latest Raft configuration (committed or not) and its index.
func (n *Node) configuration(ctx context.Context) (raft.Configuration, uint64, error) {
	f := n.raft.GetConfiguration()
	if err := wait(ctx, f, n.timeout(ctx)); err != nil {
		return raft.Configuration{}, 0, fmt.Errorf("raftfsm: read raft configuration: %w", err)
	}
	return f.Configuration(), f.Index(), nil
}

func (n *Node) addPeerLocal(ctx context.Context, id, raftAddr string, forceVoter bool) (joinResult, error) {
	n.confMu.Lock()
	defer n.confMu.Unlock()
	for attempt := 0; ; attempt++ {
		conf, prev, err := n.configuration(ctx)
		if err != nil {
			return joinResult{}, err
		}
		voters := 0
		promote := false
		for _, s := range conf.Servers {
			if s.Suffrage == raft.Voter {
				voters++
			}
		}
		for _, s := range conf.Servers {
			switch {
			case string(s.ID) == id && string(s.Address) != raftAddr:
				return joinResult{}, fmt.Errorf("%w: %s is in the raft configuration at %s, not %s (remove it first)",
					ErrPeerExists, id, s.Address, raftAddr)
			case string(s.ID) == id:
				if s.Suffrage == raft.Voter || !forceVoter {
					// The latest configuration may not be committed yet (an AddVoter whose outcome
					// was unknown): confirm it before reporting success.
					if err := n.barrier(ctx); err != nil {
						return joinResult{}, err
					}
					return joinResult{index: prev, voter: s.Suffrage == raft.Voter}, nil
				}
				promote = true
			case string(s.Address) == raftAddr:
				return joinResult{}, fmt.Errorf("%w: raft address %s is used by %s, not %s (remove it first)",
					ErrPeerExists, raftAddr, s.ID, id)
			}
		}
		voter := forceVoter || voters < n.cfg.MaxVoters
		timeout := n.timeout(ctx)
		var f raft.IndexFuture
		if voter {
			f = n.raft.AddVoter(raft.ServerID(id), raft.ServerAddress(raftAddr), prev, timeout)
		} else {
			f = n.raft.AddNonvoter(raft.ServerID(id), raft.ServerAddress(raftAddr), prev, timeout)
		}
		err = wait(ctx, f, timeout)
		switch {
		case err == nil:
			n.logger.Info("added raft peer", "peer", id, "raft_addr", raftAddr, "voter", voter, "promoted", promote,
				"voters", voters+btoi(voter && !promote), "index", f.Index())
			n.poke()
			return joinResult{index: f.Index(), voter: voter}, nil
		case errors.Is(err, raft.ErrNotLeader):
			return joinResult{}, errNotLeader
		case strings.Contains(err.Error(), "configuration changed since") && attempt < 5:
			continue // another change won the compare-and-set on the configuration index; re-read
		}
		return joinResult{}, fmt.Errorf("%w: add peer %s: %w", ErrUnknownOutcome, id, err)
	}
}

// barrier waits, on the leader, until every entry before it is committed and applied.
func (n *Node) barrier(ctx context.Context) error {
	timeout := n.timeout(ctx)
	if err := wait(ctx, n.raft.Barrier(timeout), timeout); err != nil {
		if errors.Is(err, raft.ErrNotLeader) {
			return errNotLeader
		}
		return fmt.Errorf("%w: barrier: %w", ErrUnknownOutcome, err)
	}
	return nil
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// RemovePeer forgets server id: it removes its ring member (OpRemove; absent members are fine) and
// then its Raft server. Removing the leader transfers leadership first and lets the new leader do
// it. Refused: an id in neither the ring nor the configuration (ErrUnknownPeer), and the last voter
// (ErrLastVoter). The removed node, if alive, learns it with ErrRemovedFromCluster.
func (n *Node) RemovePeer(ctx context.Context, id string) error {
	_, err := n.removePeer(ctx, id, 0)
	return err
}

func (n *Node) removePeer(ctx context.Context, id string, hops uint32) (uint64, error) {
	if id == "" {
		return 0, fmt.Errorf("%w: empty id", ErrInvalidPeer)
	}
	return route(ctx, n, hops, "remove peer",
		func() (uint64, error) { return n.removePeerLocal(ctx, id, hops) },
		func(ctx context.Context, c ringpb.RingClient, h uint32) (uint64, error) {
			resp, err := c.RemovePeer(ctx, &ringpb.RemovePeerRequest{Id: id, Hops: h})
			if err != nil {
				return 0, fromStatus(err, true)
			}
			return resp.GetIndex(), nil
		})
}

func (n *Node) removePeerLocal(ctx context.Context, id string, hops uint32) (uint64, error) {
	n.confMu.Lock()
	locked := true
	defer func() {
		if locked {
			n.confMu.Unlock()
		}
	}()
	// Read the ring and the configuration only once every committed entry is applied here: a new
	// leader may not have applied the latest ring yet.
	if err := n.barrier(ctx); err != nil {
		return 0, err
	}
	conf, _, err := n.configuration(ctx)
	if err != nil {
		return 0, err
	}
	voters := 0
	var srv *raft.Server
	for i, s := range conf.Servers {
		if s.Suffrage == raft.Voter {
			voters++
		}
		if string(s.ID) == id {
			srv = &conf.Servers[i]
		}
	}
	if srv != nil && srv.Suffrage == raft.Voter && voters == 1 {
		return 0, fmt.Errorf("%w: %s", ErrLastVoter, id)
	}
	if id == n.cfg.ID {
		// The leader cannot remove itself cleanly: hand leadership over, then let the new leader
		// remove us (the request counts as one more hop).
		n.confMu.Unlock()
		locked = false
		if _, err := n.transferLocal(ctx, ""); err != nil {
			return 0, fmt.Errorf("raftfsm: remove leader %s: transfer leadership first: %w", id, err)
		}
		return n.removePeer(ctx, id, hops+1)
	}
	_, inRing := n.fsm.Ring().Member(ringstate.MemberID(id))
	if srv == nil && !inRing {
		return 0, fmt.Errorf("%w: %s is neither in the raft configuration nor in the ring", ErrUnknownPeer, id)
	}
	var index uint64
	if inRing {
		cmd := ringstate.Command{Op: ringstate.OpRemove, Member: ringstate.MemberID(id),
			RequestID: "raftfsm-remove-" + id + "-" + randomID()}
		data, err := EncodeCommand(cmd)
		if err != nil {
			return 0, err
		}
		// The request id is made here, so only this leader can record the command in its history.
		call := n.historyInvoke(HistoryClientRemovePeer, cmd)
		index, err = n.leaderApply(ctx, data)
		n.historyReturn(call, index, err)
		if err != nil && !errors.Is(err, ringstate.ErrUnknownMember) {
			return 0, fmt.Errorf("raftfsm: remove ring member %s: %w", id, err)
		}
	}
	if srv != nil {
		timeout := n.timeout(ctx)
		f := n.raft.RemoveServer(srv.ID, 0, timeout)
		if err := wait(ctx, f, timeout); err != nil {
			if errors.Is(err, raft.ErrNotLeader) {
				return 0, errNotLeader
			}
			return 0, fmt.Errorf("%w: remove raft server %s: %w", ErrUnknownOutcome, id, err)
		}
		index = f.Index()
		n.trans.forget(srv.ID)
	}
	n.logger.Info("removed peer", "peer", id, "from_ring", inRing, "from_raft", srv != nil, "index", index)
	n.poke()
	return index, nil
}

func randomID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// TransferLeadership hands leadership to voter id, or to the most up-to-date voter Raft picks when
// id is empty, and returns the new leader's id once it is known. Forwarded to the leader when this
// node does not lead; asking the leader to transfer to itself does nothing.
func (n *Node) TransferLeadership(ctx context.Context, id string) (string, error) {
	return n.transfer(ctx, id, 0)
}

func (n *Node) transfer(ctx context.Context, id string, hops uint32) (string, error) {
	return route(ctx, n, hops, "transfer leadership",
		func() (string, error) { return n.transferLocal(ctx, id) },
		func(ctx context.Context, c ringpb.RingClient, h uint32) (string, error) {
			resp, err := c.TransferLeadership(ctx, &ringpb.TransferLeadershipRequest{Id: id, Hops: h})
			if err != nil {
				return "", fromStatus(err, false)
			}
			return resp.GetNewLeaderId(), nil
		})
}

func (n *Node) transferLocal(ctx context.Context, id string) (string, error) {
	if id == n.cfg.ID {
		return id, nil
	}
	var f raft.Future
	if id == "" {
		f = n.raft.LeadershipTransfer()
	} else {
		conf, _, err := n.configuration(ctx)
		if err != nil {
			return "", err
		}
		i := slices.IndexFunc(conf.Servers, func(s raft.Server) bool { return string(s.ID) == id })
		if i < 0 {
			return "", fmt.Errorf("%w: %s is not in the raft configuration", ErrUnknownPeer, id)
		}
		if conf.Servers[i].Suffrage != raft.Voter {
			return "", fmt.Errorf("%w: %s is not a voter and cannot lead", ErrInvalidPeer, id)
		}
		f = n.raft.LeadershipTransferToServer(conf.Servers[i].ID, conf.Servers[i].Address)
	}
	if err := wait(ctx, f, n.timeout(ctx)); err != nil {
		if errors.Is(err, raft.ErrNotLeader) {
			return "", errNotLeader
		}
		return "", fmt.Errorf("raftfsm: transfer leadership to %q: %w", id, err)
	}
	// The transfer future resolves when the target was told to campaign; wait until it is seen
	// leading (or someone else is), so callers can act on the new leader at once.
	new, err := n.waitLeader(ctx, func(l string) bool { return l != "" && l != n.cfg.ID })
	if err != nil {
		return "", err
	}
	n.logger.Info("transferred leadership", "to", new)
	return new, nil
}

// waitLeader polls until ok(leader id) or two election timeouts pass (bounded by ctx).
func (n *Node) waitLeader(ctx context.Context, ok func(string) bool) (string, error) {
	deadline := time.Now().Add(3 * n.cfg.ElectionTimeout)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		if l, _ := n.Leader(); ok(l) {
			return l, nil
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("%w: waiting for a new leader", ErrNoLeader)
		}
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("%w: waiting for a new leader: %w", ErrNoLeader, ctx.Err())
		case <-tick.C:
		}
	}
}

// LinearizableRing returns a ring that reflects every command committed before the call, and the
// index it reflects. On the leader it confirms leadership (VerifyLeader) and waits until every
// committed entry is applied (Barrier); a follower asks the leader. A ring obtained from another node
// carries no request memory (Recent() is empty).
func (n *Node) LinearizableRing(ctx context.Context) (*ringstate.Ring, uint64, error) {
	return n.linearizableRing(ctx, 0)
}

type ringAt struct {
	ring  *ringstate.Ring
	index uint64
}

func (n *Node) linearizableRing(ctx context.Context, hops uint32) (*ringstate.Ring, uint64, error) {
	r, err := route(ctx, n, hops, "linearizable read",
		func() (ringAt, error) {
			timeout := n.timeout(ctx)
			if err := wait(ctx, n.raft.VerifyLeader(), timeout); err != nil {
				if errors.Is(err, raft.ErrNotLeader) {
					return ringAt{}, errNotLeader
				}
				return ringAt{}, fmt.Errorf("%w: verify leadership: %w", ErrNoLeader, err)
			}
			if err := wait(ctx, n.raft.Barrier(timeout), timeout); err != nil {
				if errors.Is(err, raft.ErrNotLeader) {
					return ringAt{}, errNotLeader
				}
				return ringAt{}, fmt.Errorf("%w: barrier: %w", ErrNoLeader, err)
			}
			s := n.fsm.state.Load()
			return ringAt{ring: s.ring, index: s.index}, nil
		},
		func(ctx context.Context, c ringpb.RingClient, h uint32) (ringAt, error) {
			resp, err := c.GetRing(ctx, &ringpb.GetRingRequest{Linearizable: true, Hops: h})
			if err != nil {
				return ringAt{}, fromStatus(err, false)
			}
			r, err := ringpb.RingFromResponse(resp)
			if err != nil {
				return ringAt{}, fmt.Errorf("raftfsm: ring from leader: %w", err)
			}
			return ringAt{ring: r, index: resp.GetAppliedIndex()}, nil
		})
	return r.ring, r.index, err
}

// LeaveCluster removes this node from the Raft cluster, for a node shutting down for good: if it
// leads, it hands leadership over first; then the leader removes it (ring member and Raft server).
// It returns once the leader has committed the removal; a node that is the only server, or is not
// in the configuration, has nothing to do. Afterwards Err() reports ErrRemovedFromCluster, as
// expected.
func (n *Node) LeaveCluster(ctx context.Context) error {
	if n.confirmed.Load() {
		return nil // a retry after an unknown outcome that did commit, or removed by an operator
	}
	conf, _, err := n.configuration(ctx)
	if err != nil {
		return err
	}
	inConf := slices.ContainsFunc(conf.Servers, func(s raft.Server) bool { return s.ID == n.id })
	if !inConf || len(conf.Servers) == 1 {
		return nil
	}
	n.leaving.Store(true)
	if n.IsLeader() {
		if _, err := n.transferLocal(ctx, ""); err != nil && !errors.Is(err, errNotLeader) {
			n.leaving.Store(false)
			return fmt.Errorf("raftfsm: leave: %w", err)
		}
	}
	if _, err := n.removePeer(ctx, n.cfg.ID, 0); err != nil {
		switch {
		case n.confirmed.Load():
			return nil
		case errors.Is(err, ErrUnknownPeer):
			// Neither in the leader's configuration nor in its ring: an earlier attempt whose
			// outcome we did not learn removed us.
			n.markRemoved(true)
			return nil
		}
		n.leaving.Store(false)
		return fmt.Errorf("raftfsm: leave: %w", err)
	}
	// The leader committed our removal: that is confirmation, whether or not the removing entry
	// ever reaches our own log (the leader stops replicating to a removed server).
	n.markRemoved(true)
	return nil
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

// ---- background: voter management and removal detection ----

// poke wakes the background loop without blocking.
func (n *Node) poke() {
	select {
	case n.kick <- struct{}{}:
	default:
	}
}

// run is the node's one background goroutine: on a timer, on leadership and peer changes, and when
// poked, it checks whether this node was removed and, on the leader, reconciles voters.
func (n *Node) run() {
	defer n.wg.Done()
	t := time.NewTicker(n.cfg.ReconcileInterval)
	defer t.Stop()
	for {
		select {
		case <-n.stop:
			return
		case <-t.C:
		case <-n.kick:
		case <-n.observerCh:
		}
		ctx, cancel := context.WithTimeout(n.runCtx, n.cfg.ApplyTimeout)
		n.checkMembership(ctx)
		if n.raft.State() == raft.Leader {
			n.reconcileVoters(ctx)
		}
		cancel()
	}
}

func (n *Node) checkMembership(ctx context.Context) {
	conf, _, err := n.configuration(ctx)
	if err != nil {
		return
	}
	inLocal := slices.ContainsFunc(conf.Servers, func(s raft.Server) bool { return s.ID == n.id })
	recent := n.raft.State() == raft.Leader || time.Since(n.raft.LastContact()) < 3*n.cfg.HeartbeatTimeout
	switch {
	case inLocal && recent && !n.confirmed.Load():
		n.hadState.Store(true)
		if n.removed.Swap(false) {
			n.logger.Info("this node is in the raft configuration again")
		}
	case n.confirmed.Load():
	case len(conf.Servers) == 0:
		// A new node waiting to be added.
	case !inLocal && n.hadState.Load():
		// Our own log says we were removed; it may lag (a node restarted mid catch-up whose log
		// ends before its own AddVoter). Only a leader confirms it.
		n.markRemoved(false)
		if n.leaderSaysRemoved(ctx, conf) {
			n.markRemoved(true)
		}
	default:
		// Either no word from a leader, or a configuration without us that we never saw ourselves
		// in (we may be catching up from an old entry, or have been added and removed between two
		// checks). A leader that removes a server stops replicating to it, often before the
		// removing entry reaches it, so our own log cannot be trusted to tell us: ask the peers. A
		// leader whose configuration lacks us is proof.
		if inLocal {
			n.hadState.Store(true)
		}
		if n.leaderSaysRemoved(ctx, conf) {
			n.markRemoved(true)
		}
	}
}

// leaderSaysRemoved asks the other servers of conf (and every other node this one knows a gRPC
// address for) for their status and reports whether one that leads has a configuration without
// this node.
func (n *Node) leaderSaysRemoved(ctx context.Context, conf raft.Configuration) bool {
	return n.askLeader(ctx, conf, nil) == verdictRemoved
}

type verdict int

const (
	verdictUnknown verdict = iota // no leader answered
	verdictMember                 // a leader lists this node
	verdictRemoved                // a leader does not list this node
)

// askLeader asks the servers of conf, the seeds (gRPC addresses) and every other node whose gRPC
// address this node knows, in turn, for their status, until one that leads answers; it reports
// whether that leader's configuration lists this node.
func (n *Node) askLeader(ctx context.Context, conf raft.Configuration, seeds []string) verdict {
	seen := map[string]bool{}
	var addrs []string
	add := func(a string) {
		if a != "" && !seen[a] {
			seen[a] = true
			addrs = append(addrs, a)
		}
	}
	for _, s := range conf.Servers {
		if s.ID != n.id {
			if a, err := n.grpcAddr(string(s.ID)); err == nil {
				add(a)
			}
		}
	}
	for _, a := range seeds {
		add(a)
	}
	n.addrMu.Lock()
	ids := make([]string, 0, len(n.lastGRPC))
	for id := range n.lastGRPC {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		if id != n.cfg.ID {
			add(n.lastGRPC[id])
		}
	}
	self := n.lastGRPC[n.cfg.ID]
	n.addrMu.Unlock()
	for _, addr := range addrs {
		if addr == self || ctx.Err() != nil {
			continue
		}
		c, err := n.conns.get(addr)
		if err != nil {
			continue
		}
		pctx, cancel := context.WithTimeout(ctx, min(time.Second, n.cfg.HeartbeatTimeout))
		st, err := c.Status(pctx, &ringpb.StatusRequest{})
		cancel()
		if err != nil || st.GetState() != raft.Leader.String() || st.GetId() == n.cfg.ID {
			continue
		}
		if slices.ContainsFunc(st.GetServers(), func(sv *ringpb.Server) bool { return sv.GetId() == n.cfg.ID }) {
			return verdictMember
		}
		return verdictRemoved
	}
	return verdictUnknown
}

// CheckMembership asks the cluster whether this node — restarted on existing Raft state — is
// still a member, so that a node removed by an operator (ringctl remove) exits at start instead of
// taking part with a stale log. It asks the seeds (gRPC addresses, e.g. -join) and every node it
// knows from its configuration, snapshot and stored log, every 200ms until a leader answers.
//
// It returns nil when a leader lists this node, when this node leads, or when it started without
// Raft state (a new node); ErrRemovedFromCluster, confirmed, when a leader's configuration lacks
// it; and ctx's error when no leader answered before ctx ended (undecided: the background check
// keeps asking, and the leader refuses a Register from a node outside its configuration anyway).
func (n *Node) CheckMembership(ctx context.Context, seeds []string) error {
	if !n.existing {
		return nil
	}
	t := time.NewTicker(200 * time.Millisecond)
	defer t.Stop()
	for {
		if err := n.Err(); err != nil {
			return err
		}
		if n.IsLeader() {
			return nil
		}
		conf, _, err := n.configuration(ctx)
		if err == nil {
			switch n.askLeader(ctx, conf, seeds) {
			case verdictMember:
				return nil
			case verdictRemoved:
				n.markRemoved(true)
				return ErrRemovedFromCluster
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-n.stop:
			return ErrShutdown
		case <-t.C:
		}
	}
}

// markRemoved records that this node is not in the Raft configuration. Only a confirmed removal
// (a leader said so, or our own LeaveCluster committed) is final; one seen only in our own log is a
// warning, since that log may lag.
func (n *Node) markRemoved(confirmed bool) {
	dir := filepath.Join(n.cfg.DataDir, "raft")
	if !confirmed {
		if !n.removed.Swap(true) && !n.leaving.Load() {
			n.logger.Warn("this node's raft configuration does not list it (removed, or still catching up?); "+
				"asking the leader", "raft_dir", dir)
		}
		return
	}
	n.removed.Store(true)
	if n.confirmed.Swap(true) {
		return
	}
	if n.leaving.Load() {
		n.logger.Info("this node left the raft cluster")
		return
	}
	n.logger.Error("this node was removed from the raft cluster; wipe its raft data before it rejoins",
		"raft_dir", dir)
	n.removedOnce.Do(func() { close(n.removedCh) })
}

// reconcileVoters promotes one non-voter when there are fewer than -raft.max-voters voters. It
// never demotes: voters above the limit were asked for (JoinRequest.voter) and stay.
//
// Pick: the lowest id among non-voters this leader heard from recently (a successful AppendEntries
// within three Raft heartbeat timeouts) whose ring member is ACTIVE and healthy; when no non-voter
// is in the ring at all (a cluster not using the ring lifecycle), the lowest id among those heard
// from recently. Ring health alone lags by -ring.heartbeat-timeout: a non-voter that died seconds
// ago still looks healthy there, and promoting it would add a dead voter. A non-voter in the ring
// but not ACTIVE and healthy is not promoted either: it may be about to leave.
func (n *Node) reconcileVoters(ctx context.Context) {
	n.confMu.Lock()
	defer n.confMu.Unlock()
	conf, prev, err := n.configuration(ctx)
	if err != nil {
		return
	}
	voters := 0
	var nonvoters []raft.Server
	for _, s := range conf.Servers {
		if s.Suffrage == raft.Voter {
			voters++
		} else {
			nonvoters = append(nonvoters, s)
		}
	}
	if voters >= n.cfg.MaxVoters || len(nonvoters) == 0 {
		return
	}
	pick := pickPromotion(nonvoters, n.fsm.Ring(), n.cfg.RingHeartbeatTimeout.Milliseconds(), func(id raft.ServerID) bool {
		t, ok := n.trans.lastContact(id)
		return ok && time.Since(t) < 3*n.cfg.HeartbeatTimeout
	})
	if pick == nil {
		n.logger.Debug("no non-voter fit for promotion", "voters", voters, "max_voters", n.cfg.MaxVoters)
		return
	}
	timeout := n.timeout(ctx)
	f := n.raft.AddVoter(pick.ID, pick.Address, prev, timeout)
	if err := wait(ctx, f, timeout); err != nil {
		n.logger.Warn("promoting non-voter failed", "peer", string(pick.ID), "err", err)
		return
	}
	n.logger.Info("promoted non-voter to voter", "peer", string(pick.ID), "voters", voters+1,
		"max_voters", n.cfg.MaxVoters, "index", f.Index())
	n.poke() // another may be due
}

// pickPromotion picks the non-voter to promote (see reconcileVoters); recent reports whether the
// leader heard from a server recently.
func pickPromotion(nonvoters []raft.Server, r *ringstate.Ring, timeoutMs int64, recent func(raft.ServerID) bool) *raft.Server {
	slices.SortFunc(nonvoters, func(a, b raft.Server) int { return strings.Compare(string(a.ID), string(b.ID)) })
	anyInRing := false
	for i, s := range nonvoters {
		m, ok := r.Member(ringstate.MemberID(s.ID))
		if !ok {
			continue
		}
		anyInRing = true
		if m.Writable(r.TimeMs(), timeoutMs) && recent(s.ID) {
			return &nonvoters[i]
		}
	}
	if !anyInRing {
		for i, s := range nonvoters {
			if recent(s.ID) {
				return &nonvoters[i]
			}
		}
	}
	return nil
}

// ---- transport and snapshot store wrappers ----

// contactTransport records when each peer last answered an AppendEntries (heartbeats included), so
// the leader can report last contact per server; hashicorp/raft keeps that private.
type contactTransport struct {
	*raft.NetworkTransport
	mu   sync.Mutex
	last map[raft.ServerID]time.Time
}

// AppendEntries forwards to the network transport and records a successful contact.
func (t *contactTransport) AppendEntries(id raft.ServerID, target raft.ServerAddress,
	args *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse) error {
	err := t.NetworkTransport.AppendEntries(id, target, args, resp)
	if err == nil {
		t.mu.Lock()
		t.last[id] = time.Now()
		t.mu.Unlock()
	}
	return err
}

func (t *contactTransport) lastContact(id raft.ServerID) (time.Time, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	v, ok := t.last[id]
	return v, ok
}

func (t *contactTransport) forget(id raft.ServerID) {
	t.mu.Lock()
	delete(t.last, id)
	t.mu.Unlock()
}

// indexingSnapshotStore remembers the index of the snapshot opened last. Raft opens a snapshot
// right before it hands its reader to FSM.Restore (at start and for InstallSnapshot), and the reader
// it passes hides the metadata, so this is how the FSM learns the index it restored to. (The
// leader also opens snapshots to send them; the window in which that could race a restore on the
// same node does not exist, since a leader does not restore.)
type indexingSnapshotStore struct {
	raft.SnapshotStore
	lastOpened atomic.Uint64
}

// Open opens snapshot id and records its index.
func (s *indexingSnapshotStore) Open(id string) (*raft.SnapshotMeta, io.ReadCloser, error) {
	meta, rc, err := s.SnapshotStore.Open(id)
	if err == nil {
		s.lastOpened.Store(meta.Index)
	}
	return meta, rc, err
}
