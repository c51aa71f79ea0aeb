package raftfsm

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/raftingest/raftingest/ringstate"
)

// HACommandVersion is the format-version byte of a stamped command of the HA tracker
// (ringstate.OpHAElect, ringstate.OpHAGC): the same layout as StampedCommandVersion. It is 5:
// heartbeat batches, of the same release, are version 4 with a layout of their own, and a build
// reads both or neither. A build from before it halts on such an
// entry (an unknown version byte) rather than refusing the op as unknown and keeping a ring without
// the elected replicas, so nothing of version 5 is proposed until every member advertises it and
// every Raft server is a member (Node.admitHA). The ops are refused in any other version
// (opMinVersion).
const HACommandVersion byte = 5

// HASnapshotVersion is the version field of a snapshot that carries HA tracker entries (field
// ha_replicas). A build before the HA tracker would drop the field and serve a ring without them;
// an unknown version makes it refuse the snapshot instead. A ring without HA entries keeps writing
// versions 1 and 2, and this build restores all three.
const HASnapshotVersion uint32 = 3

// Compile-time check that ringstate's gate and this codec name the same version.
var _ = [1]struct{}{}[uint32(HACommandVersion)-ringstate.HACommandVersion]

// admitHA refuses, on the leader and before anything is proposed, an HA op while a replica might not
// read command version 5, and HA fields on any other op (a replica of an older build would drop them
// from a version-2 entry and apply the command that this build refuses). The gate is the compactor
// lease's (admitClaim), but it holds for every HA op, not only until the first: HA ops are frequent
// and gating each costs one read of the leader's configuration, which is local.
func (n *Node) admitHA(ctx context.Context, cmd *ringstate.Command) error {
	if !ringstate.IsHAOp(cmd.Op) {
		if cmd.HA != nil {
			return fmt.Errorf("%w: %s %s: ha is not a field of this op (refused before proposing: an older build "+
				"would ignore it)", ringstate.ErrInvalidCommand, cmd.Op, cmd.Member)
		}
		return nil
	}
	if err := n.haReaders(); err != nil {
		return err
	}
	conf, _, err := n.configuration(ctx)
	if err != nil {
		return err
	}
	r := n.fsm.Ring()
	var outside []string
	for _, srv := range conf.Servers {
		if _, ok := r.Member(ringstate.MemberID(srv.ID)); !ok {
			outside = append(outside, string(srv.ID))
		}
	}
	if len(outside) > 0 {
		return fmt.Errorf("%w: %s refused before proposing: raft servers %v are not ring members, so nothing says "+
			"which command versions they read; the HA tracker waits until each registers, or is removed from raft",
			ringstate.ErrReplicaNotMember, cmd.Op, outside)
	}
	return nil
}

// haReaders returns ringstate.ErrMixedVersions, naming them, while a member of this node's ring does
// not advertise HACommandVersion.
func (n *Node) haReaders() error {
	if old := n.fsm.Ring().NotReading(ringstate.HACommandVersion); len(old) > 0 {
		return fmt.Errorf("%w: the HA tracker is unavailable: members %v do not advertise command version %d "+
			"(finish the rolling upgrade; each member advertises it in its next register or heartbeat)",
			ringstate.ErrMixedVersions, old, ringstate.HACommandVersion)
	}
	return nil
}

// HAAvailable returns nil when this node's ring lets the HA tracker propose (every member advertises
// command version 5), else ringstate.ErrMixedVersions naming the members that do not.
func (n *Node) HAAvailable() error { return n.haReaders() }

// ElectHAReplica commits an election (or refresh) of replica for (tenant, cluster)
// (ringstate.OpHAElect) and returns the entry as this node applied it, the command's index
// included. A refusal is ringstate's — ErrHAReplicaElected (another replica is elected and fresh;
// the returned entry names it) or ErrHATooManyClusters — and comes with the entry this node
// holds once the refusal is applied here. Any other error means nothing is known: the command may
// or may not have committed (it carries no request id: a retried election is decided anew at its
// own ring time, which is what the caller wants).
func (n *Node) ElectHAReplica(ctx context.Context, tenant, cluster, replica string, failover time.Duration,
	maxClusters int) (ringstate.HAReplica, error) {
	if err := n.haReaders(); err != nil {
		return ringstate.HAReplica{}, err
	}
	cmd := ringstate.Command{Op: ringstate.OpHAElect, Member: ringstate.MemberID(n.cfg.ID),
		HA: &ringstate.HACommand{Tenant: tenant, Cluster: cluster, Replica: replica,
			FailoverMs: failover.Milliseconds(), MaxClusters: maxClusters}}
	idx, err := n.Apply(ctx, cmd)
	if err != nil && !isRefusal(err) {
		return ringstate.HAReplica{}, err
	}
	// On a follower the entry was committed through the leader: wait until it is applied here, so
	// the caller's next read of this node's ring sees the outcome.
	if werr := n.WaitApplied(ctx, idx); werr != nil {
		return ringstate.HAReplica{}, errors.Join(err, fmt.Errorf("raftfsm: wait for the HA election at index %d: %w", idx, werr))
	}
	e, _ := n.fsm.Ring().HAReplica(tenant, cluster)
	return e, haRefusal(err)
}

// haRefusal gives a committed refusal of an HA election back its ringstate sentinel. The outcome
// travels as a code and a message (ApplyResult, the forwarding RPC), which errors.Is matches only
// against the code's sentinel: ErrIllegalTransition, ErrInvalidCommand. An HA election is refused
// with ErrIllegalTransition only as ErrHAReplicaElected, and with ErrInvalidCommand as
// ErrHATooManyClusters (its message says so) or as a malformed command (left as it is).
func haRefusal(err error) error {
	switch {
	case err == nil || errors.Is(err, ringstate.ErrHAReplicaElected) || errors.Is(err, ringstate.ErrHATooManyClusters):
		return err
	case ringstate.CodeOf(err) == ringstate.CodeIllegalTransition:
		return &haError{sentinel: ringstate.ErrHAReplicaElected, err: err}
	case ringstate.CodeOf(err) == ringstate.CodeInvalidCommand && strings.Contains(err.Error(), ringstate.ErrHATooManyClusters.Error()):
		return &haError{sentinel: ringstate.ErrHATooManyClusters, err: err}
	}
	return err
}

// haError is a refusal that errors.Is matches against both its HA sentinel and its code's.
type haError struct {
	sentinel, err error
}

func (e *haError) Error() string   { return e.err.Error() }
func (e *haError) Unwrap() []error { return []error{e.sentinel, e.err} }

// RunHAGC removes, while this node leads, the HA entries that nobody refreshed for idle
// (ringstate.OpHAGC), checking every period; it returns when ctx ends. It proposes only when its
// ring holds such an entry, so an idle cluster writes nothing to the log.
func (n *Node) RunHAGC(ctx context.Context, period, idle time.Duration) {
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if !n.IsLeader() || n.haReaders() != nil {
			continue
		}
		r := n.fsm.Ring()
		cut := r.TimeMs() - idle.Milliseconds()
		stale := 0
		for _, e := range r.HAReplicas() {
			if e.RefreshedMs <= cut {
				stale++
			}
		}
		if stale == 0 {
			continue
		}
		actx, cancel := context.WithTimeout(ctx, 10*time.Second)
		_, err := n.Apply(actx, ringstate.Command{Op: ringstate.OpHAGC, Member: ringstate.MemberID(n.cfg.ID),
			HA: &ringstate.HACommand{IdleMs: idle.Milliseconds()}})
		cancel()
		if err != nil {
			n.logger.Warn("HA tracker: removing idle entries failed", "entries", stale, "err", err)
			continue
		}
		n.logger.Info("HA tracker: removed idle entries", "entries", stale, "idle", idle)
	}
}
