package raftfsm

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/raftingest/raftingest/ringpb"
	"github.com/raftingest/raftingest/ringstate"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestNode_BootstrapSingle_RegisterAndRestart(t *testing.T) {
	c := newCluster(t)
	n1 := c.bootstrap("n1")
	idx := c.mustApply(n1, ringstate.Command{Op: ringstate.OpHeartbeat, Member: "n1"})
	if n1.node.AppliedIndex() < idx {
		t.Fatalf("applied %d < returned index %d", n1.node.AppliedIndex(), idx)
	}
	m, ok := n1.node.Ring().Member("n1")
	if !ok || m.GRPCAddr != n1.grpcAddr || m.State != ringstate.PENDING {
		t.Fatalf("member %+v", m)
	}
	// Ring time is the leader's stamp: close to now, not zero.
	if age := time.Now().UnixMilli() - n1.node.Ring().TimeMs(); age < 0 || age > 60_000 {
		t.Fatalf("ring time %d is %dms off", n1.node.Ring().TimeMs(), age)
	}
	// Metrics on the injected registry.
	if got := testutil.ToFloat64(n1.node.metrics.fsmApply.WithLabelValues("register", "ok")); got != 1 {
		t.Fatalf("fsm_apply_total{register,ok} = %v", got)
	}
	if n, err := testutil.GatherAndCount(n1.reg, "raftingest_raft_leader", "raftingest_raft_term",
		"raftingest_raft_applied_index", "raftingest_raft_commit_index", "raftingest_raft_last_log_index",
		"raftingest_raft_peers", "raftingest_raft_apply_duration_seconds", "raftingest_raft_fsm_apply_total"); err != nil || n < 8 {
		t.Fatalf("gathered %d series: %v", n, err)
	}
	if err := testutil.GatherAndCompare(n1.reg, strings.NewReader(`
# HELP raftingest_raft_leader 1 if this node is the Raft leader, else 0.
# TYPE raftingest_raft_leader gauge
raftingest_raft_leader 1
`), "raftingest_raft_leader"); err != nil {
		t.Fatal(err)
	}
	// A refusal is committed and comes back as ringstate's error.
	if _, err := n1.node.Apply(ctxT(t, 5*time.Second), ringstate.Command{Op: ringstate.OpActivate, Member: "n1"}); !errors.Is(err, ringstate.ErrInvalidTokens) {
		t.Fatalf("activate without tokens: %v", err)
	}
	// Restart from the data dir (Bootstrap stays on: ignored with existing state).
	before := n1.node.AppliedIndex()
	c.stop(n1)
	c.start("n1", true)
	c.leader()
	if !poll(t, 5*time.Second, func() bool { return n1.node.AppliedIndex() >= before }) {
		t.Fatalf("restarted node applied %d, want >= %d", n1.node.AppliedIndex(), before)
	}
	if _, ok := n1.node.Ring().Member("n1"); !ok {
		t.Fatal("ring lost after restart")
	}
	if err := n1.node.Err(); err != nil {
		t.Fatalf("Err() = %v", err)
	}
	// The last voter cannot be removed.
	if err := n1.node.RemovePeer(ctxT(t, 5*time.Second), "n1"); !errors.Is(err, ErrLastVoter) {
		t.Fatalf("remove last voter: %v", err)
	}
}

func TestCluster_ThreeNodes_FollowerForwardsApplyJoinRemove(t *testing.T) {
	c := newCluster(t)
	nodes := c.cluster(3)
	f := c.follower()
	l := c.leader()
	// Apply on a follower is forwarded; the index it returns is readable locally once applied.
	idx := c.mustApply(f, ringstate.Command{Op: ringstate.OpRegister, Member: "x", RaftAddr: "127.0.0.1:9"})
	if err := f.node.WaitApplied(ctxT(t, 5*time.Second), idx); err != nil {
		t.Fatal(err)
	}
	if _, ok := f.node.Ring().Member("x"); !ok {
		t.Fatal("follower does not see its own write")
	}
	// A refusal crosses the forward as the same ringstate error.
	if _, err := f.node.Apply(ctxT(t, 5*time.Second), ringstate.Command{Op: ringstate.OpLeave, Member: "x"}); !errors.Is(err, ringstate.ErrIllegalTransition) {
		t.Fatalf("forwarded refusal: %v", err)
	}
	// Linearizable read through a follower.
	r, ridx, err := f.node.LinearizableRing(ctxT(t, 5*time.Second))
	if err != nil || ridx < idx {
		t.Fatalf("linearizable ring: idx %d err %v", ridx, err)
	}
	if _, ok := r.Member("x"); !ok {
		t.Fatal("linearizable ring lacks x")
	}
	// Join sent to a follower's gRPC service, as ringctl join would.
	n4 := c.start("n4", false)
	var resp *ringpb.JoinResponse
	retry(t, "join via follower", func(ctx context.Context) (err error) {
		resp, err = dial(t, f).Join(ctx, &ringpb.JoinRequest{Id: "n4", RaftAddr: n4.raftAddr})
		return err
	})
	if !resp.GetVoter() {
		t.Fatalf("join via follower: %v", resp)
	}
	// Idempotent: the same id and address again.
	if voter, err := f.node.AddPeer(ctxT(t, 5*time.Second), "n4", n4.raftAddr, false); err != nil || !voter {
		t.Fatalf("re-add: %v %v", voter, err)
	}
	// Another address for the same id is refused, across the forward, with its type.
	if _, err := f.node.AddPeer(ctxT(t, 5*time.Second), "n4", "127.0.0.1:1", false); !errors.Is(err, ErrPeerExists) {
		t.Fatalf("re-add with another address: %v", err)
	}
	if _, err := f.node.AddPeer(ctxT(t, 5*time.Second), "n5", "nope", false); !errors.Is(err, ErrInvalidPeer) {
		t.Fatalf("bad address: %v", err)
	}
	if err := f.node.RemovePeer(ctxT(t, 5*time.Second), "ghost"); !errors.Is(err, ErrUnknownPeer) {
		t.Fatalf("remove unknown: %v", err)
	}
	_, err = dial(t, f).RemovePeer(ctxT(t, 5*time.Second), &ringpb.RemovePeerRequest{Id: "ghost"})
	if status.Code(err) != codes.NotFound {
		t.Fatalf("remove unknown over grpc: %v", err)
	}
	c.register(n4)
	// Status: the leader knows last contact of its followers.
	st := l.node.Status()
	if st.State != "Leader" || len(st.Servers) != 4 || st.LeaderID != l.id {
		t.Fatalf("leader status %+v", st)
	}
	if !poll(t, 5*time.Second, func() bool {
		for _, s := range l.node.Status().Servers {
			if s.ID != l.id && (s.LastContact < 0 || s.LastContact > 5*time.Second) {
				return false
			}
		}
		return true
	}) {
		t.Fatalf("last contact not reported: %+v", l.node.Status().Servers)
	}
	sresp, err := dial(t, f).Status(ctxT(t, 5*time.Second), &ringpb.StatusRequest{})
	if err != nil || sresp.GetLeaderId() != l.id || len(sresp.GetServers()) != 4 || sresp.GetServers()[0].GetLastContactMs() != -1 {
		t.Fatalf("follower status %v %v", sresp, err)
	}
	// Remove n4 through a follower's gRPC service: ring member and Raft server both go.
	other := nodes[0]
	if other == l {
		other = nodes[1]
	}
	retry(t, "remove via follower", func(ctx context.Context) error {
		_, err := dial(t, other).RemovePeer(ctx, &ringpb.RemovePeerRequest{Id: "n4"})
		return err
	})
	if _, ok := l.node.Ring().Member("n4"); ok {
		t.Fatal("n4 still in the ring")
	}
	if !poll(t, 5*time.Second, func() bool { return errors.Is(n4.node.Err(), ErrRemovedFromCluster) }) {
		t.Fatal("removed node did not notice")
	}
	if _, err := n4.node.Apply(ctxT(t, time.Second), ringstate.Command{Op: ringstate.OpHeartbeat, Member: "n1"}); !errors.Is(err, ErrRemovedFromCluster) {
		t.Fatalf("apply on removed node: %v", err)
	}
	c.stop(n4)
	c.checkConsistent()
}

// TestCluster_RequestID_RetryAppliesOnce: a client that lost the outcome retries with the same
// request id, possibly through another node; ringstate returns the first outcome and changes
// nothing, even though the ring has changed since.
func TestCluster_RequestID_RetryAppliesOnce(t *testing.T) {
	c := newCluster(t)
	nodes := c.cluster(3)
	reg := ringstate.Command{Op: ringstate.OpRegister, RequestID: "retry-1", Member: "y", RaftAddr: "127.0.0.1:7"}
	c.mustApply(nodes[0], reg)
	c.mustApply(nodes[1], ringstate.Command{Op: ringstate.OpRemove, Member: "y"})
	// The retry, through a third node, returns the remembered success and does not re-add y.
	if _, err := c.apply(nodes[2], reg); err != nil {
		t.Fatalf("retry: %v", err)
	}
	if _, ok := c.leader().node.Ring().Member("y"); ok {
		t.Fatal("the retry applied the command a second time")
	}
	// A remembered refusal comes back as the same refusal.
	bad := ringstate.Command{Op: ringstate.OpActivate, RequestID: "retry-2", Member: "nobody"}
	_, err1 := c.apply(nodes[1], bad)
	_, err2 := c.apply(nodes[2], bad)
	if !errors.Is(err1, ringstate.ErrUnknownMember) || !errors.Is(err2, ringstate.ErrUnknownMember) || err1.Error() != err2.Error() {
		t.Fatalf("refusal retry: %v / %v", err1, err2)
	}
	c.checkConsistent()
}

func TestCluster_RemoveLeader_TransfersLeadershipFirst(t *testing.T) {
	c := newCluster(t)
	c.cluster(3)
	old := c.leader()
	retry(t, "remove leader", func(ctx context.Context) error { return old.node.RemovePeer(ctx, old.id) })
	if !poll(t, 5*time.Second, func() bool { return errors.Is(old.node.Err(), ErrRemovedFromCluster) }) {
		t.Fatal("old leader did not learn it was removed")
	}
	c.stop(old)
	nl := c.leader()
	if nl == old {
		t.Fatal("old leader still leads")
	}
	// Restarted without wiping its raft data, the removed node still knows it was removed, and
	// refuses to act; it wipes nothing by itself.
	c.start(old.id, false)
	if !poll(t, 10*time.Second, func() bool { return errors.Is(old.node.Err(), ErrRemovedFromCluster) }) {
		t.Fatalf("restarted removed node: Err() = %v", old.node.Err())
	}
	c.stop(old)
	if v, _ := voters(nl.node); len(v) != 2 {
		t.Fatalf("voters %v", v)
	}
	if _, ok := nl.node.Ring().Member(ringstate.MemberID(old.id)); ok {
		t.Fatal("removed leader still in the ring")
	}
	c.mustApply(c.follower(), ringstate.Command{Op: ringstate.OpHeartbeat, Member: ringstate.MemberID(nl.id)})
	c.checkConsistent()
}

func TestCluster_LeaderLoss_OthersElectAndCommitsContinue(t *testing.T) {
	c := newCluster(t)
	c.cluster(3)
	old := c.leader()
	c.stop(old)
	nl := c.leader()
	if nl == old {
		t.Fatal("stopped node leads")
	}
	for i := range 10 {
		c.mustApply(c.follower(), ringstate.Command{Op: ringstate.OpRegister, Member: ringstate.MemberID(fmt.Sprint("after-", i)), RaftAddr: "127.0.0.1:5"})
	}
	// The old leader comes back, catches up as a follower.
	c.start(old.id, false)
	c.checkConsistent()
	if _, ok := old.node.Ring().Member("after-9"); !ok {
		t.Fatal("restarted node did not catch up")
	}
}

func TestCluster_Snapshots_RestartRestoresAndNewNodeInstallsSnapshot(t *testing.T) {
	c := newCluster(t)
	c.cfg.SnapshotThreshold = 8
	c.cfg.TrailingLogs = 2
	c.cfg.SnapshotInterval = 50 * time.Millisecond
	nodes := c.cluster(3)
	for i := range 30 {
		c.mustApply(nodes[i%3], ringstate.Command{Op: ringstate.OpRegister, Member: ringstate.MemberID(fmt.Sprint("m", i)), RaftAddr: "127.0.0.1:5"})
	}
	if !poll(t, 10*time.Second, func() bool {
		for _, n := range nodes {
			if n.node.Status().LastSnapshotIndex == 0 {
				return false
			}
		}
		return true
	}) {
		t.Fatal("no snapshots taken")
	}
	// Restart a follower: it restores the FSM from its snapshot (before any entry is replayed, the
	// restored index is the snapshot's) and catches up.
	f := c.follower()
	snapIdx := f.node.Status().LastSnapshotIndex
	c.stop(f)
	for i := 30; i < 45; i++ {
		c.mustApply(c.leader(), ringstate.Command{Op: ringstate.OpRegister, Member: ringstate.MemberID(fmt.Sprint("m", i)), RaftAddr: "127.0.0.1:5"})
	}
	c.start(f.id, false)
	// NewNode restored the snapshot synchronously, before any entry could be replayed.
	if got := f.node.AppliedIndex(); got < snapIdx || snapIdx == 0 || f.node.Ring().Len() == 0 {
		t.Fatalf("restarted node did not restore its snapshot: index %d, snapshot at %d", got, snapIdx)
	}
	c.checkConsistent()
	// A new node joins after the leader compacted its log: it can only catch up by InstallSnapshot.
	n4, _ := c.join("n4", c.leader())
	if n4.node.Status().LastSnapshotIndex == 0 {
		t.Fatal("new node did not receive a snapshot")
	}
	if _, ok := n4.node.Ring().Member("m44"); !ok {
		t.Fatal("new node lacks the ring")
	}
	c.checkConsistent()
}

// TestCluster_MaxVoters_SixthJoinsAsNonVoterAndIsPromoted: with -raft.max-voters=5, a 6th peer is
// a non-voter until a voter goes, then the leader promotes it.
func TestCluster_MaxVoters_SixthJoinsAsNonVoterAndIsPromoted(t *testing.T) {
	c := newCluster(t)
	c.cfg.MaxVoters = 5
	nodes := c.cluster(5)
	if v, _ := voters(c.leader().node); len(v) != 5 {
		t.Fatalf("voters %v", v)
	}
	n6, voter := c.join("n6", nodes[1])
	if voter {
		t.Fatal("6th peer joined as a voter")
	}
	if _, nv := voters(c.leader().node); len(nv) != 1 || nv[0] != "n6" {
		t.Fatalf("non-voters %v", nv)
	}
	// n6 is PENDING in the ring, so it is not yet fit to vote; make it ACTIVE as the lifecycle would.
	c.mustApply(n6, ringstate.Command{Op: ringstate.OpClaimTokens, Member: "n6", Tokens: ringstate.Tokens{600}})
	c.mustApply(n6, ringstate.Command{Op: ringstate.OpActivate, Member: "n6"})
	// Remove a voter that is not the leader.
	victim := c.follower()
	if victim == n6 {
		t.Fatal("n6 cannot be a follower voter")
	}
	retry(t, "remove "+victim.id, func(ctx context.Context) error { return nodes[0].node.RemovePeer(ctx, victim.id) })
	c.stop(victim)
	if !poll(t, 10*time.Second, func() bool {
		v, nv := voters(c.leader().node)
		return len(v) == 5 && len(nv) == 0
	}) {
		v, nv := voters(c.leader().node)
		t.Fatalf("n6 not promoted: voters %v non-voters %v", v, nv)
	}
	c.checkConsistent()
}

// TestCluster_TokenClaim_ConcurrentClaimsExactlyOneWins: two members claim overlapping tokens at the
// same time through different nodes; the FSM's compare-and-set lets exactly one win.
func TestCluster_TokenClaim_ConcurrentClaimsExactlyOneWins(t *testing.T) {
	c := newCluster(t)
	nodes := c.cluster(3)
	for round := range 5 {
		a, b := ringstate.MemberID(fmt.Sprint("a", round)), ringstate.MemberID(fmt.Sprint("b", round))
		c.mustApply(nodes[0], ringstate.Command{Op: ringstate.OpRegister, Member: a, RaftAddr: "127.0.0.1:11"})
		c.mustApply(nodes[0], ringstate.Command{Op: ringstate.OpRegister, Member: b, RaftAddr: "127.0.0.1:12"})
		tok := ringstate.Token(1000 + round)
		var wg sync.WaitGroup
		errs := make([]error, 2)
		for i, m := range []ringstate.MemberID{a, b} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, errs[i] = c.apply(nodes[1+i], ringstate.Command{Op: ringstate.OpClaimTokens, Member: m,
					Tokens: ringstate.Tokens{tok, ringstate.Token(5000 + 2*round + i)}})
			}()
		}
		wg.Wait()
		won := 0
		for _, err := range errs {
			switch {
			case err == nil:
				won++
			case !errors.Is(err, ringstate.ErrTokenOwned):
				t.Fatalf("round %d: unexpected %v", round, err)
			}
		}
		if won != 1 {
			t.Fatalf("round %d: %d claims won: %v", round, won, errs)
		}
		owner, _ := c.leader().node.Ring().Owner(tok)
		if owner != a && owner != b {
			t.Fatalf("token owned by %q", owner)
		}
	}
	c.checkConsistent()
}

func TestCluster_TransferLeadership_AndLeaveRPC(t *testing.T) {
	c := newCluster(t)
	nodes := c.cluster(3)
	l := c.leader()
	f := c.follower()
	// Transfer to a named voter, asked of a follower.
	var got string
	retry(t, "transfer", func(ctx context.Context) (err error) {
		got, err = f.node.TransferLeadership(ctx, f.id)
		return err
	})
	if got != f.id {
		t.Fatalf("transfer to %s: got %q", f.id, got)
	}
	if c.leader() != f {
		t.Fatal("leadership did not move")
	}
	// Leave for another member is forwarded to that member, whose hook runs LeaveCluster.
	if _, err := dial(t, nodes[2]).Leave(ctxT(t, 5*time.Second), &ringpb.LeaveRequest{Id: "ghost"}); status.Code(err) != codes.NotFound {
		t.Fatalf("leave unknown: %v", err)
	}
	target := l
	via := nodes[0]
	if via == target {
		via = nodes[1]
	}
	retry(t, "leave", func(ctx context.Context) error {
		_, err := dial(t, via).Leave(ctx, &ringpb.LeaveRequest{Id: target.id})
		return err
	})
	if target.leaves.Load() < 1 {
		t.Fatalf("leave hook ran %d times on %s", target.leaves.Load(), target.id)
	}
	if !errors.Is(target.node.Err(), ErrRemovedFromCluster) {
		t.Fatalf("left node Err() = %v", target.node.Err())
	}
	c.stop(target)
	if v, _ := voters(c.leader().node); len(v) != 2 {
		t.Fatalf("voters after leave: %v", v)
	}
	c.checkConsistent()
}

func TestService_TooManyHopsRefused(t *testing.T) {
	c := newCluster(t)
	c.cluster(2)
	f := c.follower()
	_, err := dial(t, f).Apply(ctxT(t, 5*time.Second), &ringpb.ApplyRequest{
		Command: ringpb.FromCommand(&ringstate.Command{Op: ringstate.OpHeartbeat, Member: "n1"}), Hops: MaxForwardHops})
	if status.Code(err) != codes.Aborted || !errors.Is(fromStatus(err, true), ErrTooManyHops) {
		t.Fatalf("got %v", err)
	}
}

// TestService_ErrorMapping_RoundTrips: every sentinel crosses gRPC as itself.
func TestService_ErrorMapping_RoundTrips(t *testing.T) {
	for _, s := range sentinels {
		err := fmt.Errorf("context %s: %w", s.reason, s.err)
		st := toStatus(err)
		if status.Code(st) != s.code {
			t.Errorf("%s: code %v, want %v", s.reason, status.Code(st), s.code)
		}
		back := fromStatus(st, true)
		if !errors.Is(back, s.err) || back.Error() != err.Error() {
			t.Errorf("%s: back as %v", s.reason, back)
		}
	}
	// A transport failure on a write leaves the outcome unknown; on a read, no leader.
	raw := status.Error(codes.Unavailable, "connection refused")
	if !errors.Is(fromStatus(raw, true), ErrUnknownOutcome) || !errors.Is(fromStatus(raw, false), ErrNoLeader) {
		t.Fatal("transport failures misclassified")
	}
	if status.Code(toStatus(fmt.Errorf("%w: %w", ErrUnknownOutcome, context.DeadlineExceeded))) != codes.DeadlineExceeded {
		t.Fatal("unknown outcome by deadline should be DeadlineExceeded")
	}
}
