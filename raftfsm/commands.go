package raftfsm

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/hashicorp/raft"

	"github.com/raftingest/raftingest/auth"
	"github.com/raftingest/raftingest/ringpb"
	"github.com/raftingest/raftingest/ringstate"
)

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
			if err := n.admitHA(ctx, &cmd); err != nil {
				return 0, err
			}
			if cmd.Op == ringstate.OpClaimCompactor {
				if err := n.admitClaim(ctx, &cmd); err != nil {
					return 0, err
				}
			}
			if cmd.Op == ringstate.OpClaimTokens && n.cfg.MaxOwnershipSpread > 0 {
				// Judged against the leader's applied ring, before proposing: a best-effort bound
				// per claim (ringstate.Ring.CheckClaimSpread says why that is enough).
				place := ringstate.Placement{RF: n.cfg.ReplicationFactor, ZoneAware: n.cfg.ZoneAware}
				if err := n.fsm.Ring().CheckClaimSpread(cmd, place, n.cfg.MaxOwnershipSpread); err != nil {
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
			if n.beats != nil && batchable(&cmd) {
				r := n.beats.Submit(ctx, ringstate.Beat{Member: cmd.Member, CommandVersion: cmd.CommandVersion})
				return r.Index, r.Err
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
	data, err := StampCommand(data, n.stamp())
	if err != nil {
		return 0, err
	}
	idx, res, err := n.propose(ctx, data)
	if err != nil {
		return idx, err
	}
	return idx, res.Err()
}

// stamp is the ring time of an entry this node proposes now as leader: its clock (Config.Clock),
// never below the ring's time nor the last stamp (n.stamps).
func (n *Node) stamp() int64 {
	now := time.Now
	if n.cfg.Clock != nil {
		now = n.cfg.Clock
	}
	return n.stamps.stampClock(now, n.fsm.Ring().TimeMs())
}

// propose proposes data, a stamped entry, and waits for it to be applied locally: its index and
// FSM result, or errNotLeader (nothing was proposed) or ErrUnknownOutcome.
func (n *Node) propose(ctx context.Context, data []byte) (uint64, *ApplyResult, error) {
	timeout := n.timeout(ctx)
	if timeout <= 0 {
		return 0, nil, ctx.Err()
	}
	f := n.raft.Apply(data, timeout)
	if err := wait(ctx, f, timeout); err != nil {
		if errors.Is(err, raft.ErrNotLeader) {
			return 0, nil, errNotLeader
		}
		return 0, nil, fmt.Errorf("%w: %w", ErrUnknownOutcome, err)
	}
	res, ok := f.Response().(*ApplyResult)
	if !ok {
		return f.Index(), nil, fmt.Errorf("%w: unexpected apply response %T", ErrUnknownOutcome, f.Response())
	}
	return f.Index(), res, nil
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
