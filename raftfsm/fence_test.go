package raftfsm

import (
	"bytes"
	"io"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/raftingest/raftingest/ringstate"
)

func applyAt(t *testing.T, f *FSM, idx uint64, c ringstate.Command) {
	t.Helper()
	data, err := EncodeCommand(c)
	if err != nil {
		t.Fatal(err)
	}
	res := f.Apply(&raft.Log{Index: idx, Type: raft.LogCommand, Data: data, AppendedAt: time.UnixMilli(int64(1000 * idx))}).(*ApplyResult)
	if res.Code != ringstate.CodeOK {
		t.Fatalf("entry %d %+v: %+v", idx, c, res)
	}
}

// TestFSM_OwnershipIndex follows a member through its life: the index moves on the entries that
// change who owns what, and stays on heartbeats, refusals and registrations of token-less members.
func TestFSM_OwnershipIndex(t *testing.T) {
	f := NewFSM(nil)
	steps := []struct {
		c    ringstate.Command
		want uint64 // OwnershipIndex after the entry
	}{
		{ringstate.Command{Op: ringstate.OpRegister, Member: "a", RaftAddr: "127.0.0.1:1"}, 0},
		{ringstate.Command{Op: ringstate.OpClaimTokens, Member: "a", Tokens: ringstate.Tokens{10, 20}}, 2}, // owns tokens: EffectiveRF moves
		{ringstate.Command{Op: ringstate.OpHeartbeat, Member: "a"}, 2},
		{ringstate.Command{Op: ringstate.OpActivate, Member: "a"}, 4},
		{ringstate.Command{Op: ringstate.OpRegister, Member: "b", RaftAddr: "127.0.0.1:2"}, 4},
		{ringstate.Command{Op: ringstate.OpHeartbeat, Member: "b"}, 4},
		{ringstate.Command{Op: ringstate.OpClaimTokens, Member: "b", Tokens: ringstate.Tokens{30}}, 7},
		{ringstate.Command{Op: ringstate.OpActivate, Member: "b"}, 8}, // b takes a range from a: the ring-wide index moves
		{ringstate.Command{Op: ringstate.OpHeartbeat, Member: "a"}, 8},
		{ringstate.Command{Op: ringstate.OpLeave, Member: "a"}, 10},
		{ringstate.Command{Op: ringstate.OpRemove, Member: "a"}, 11},
		{ringstate.Command{Op: ringstate.OpHeartbeat, Member: "b"}, 11},
	}
	for i, s := range steps {
		idx := uint64(i + 1)
		applyAt(t, f, idx, s.c)
		if got := f.OwnershipIndex(); got != s.want {
			t.Fatalf("after entry %d (%s %s): OwnershipIndex %d, want %d", idx, s.c.Op, s.c.Member, got, s.want)
		}
		if r, ai := f.RingIndex(); ai != idx || r != f.Ring() {
			t.Fatalf("RingIndex = %d, want %d", ai, idx)
		}
	}
	// A refused entry and a garbage one leave it alone.
	data, _ := EncodeCommand(ringstate.Command{Op: ringstate.OpActivate, Member: "nobody"})
	f.Apply(&raft.Log{Index: 13, Type: raft.LogCommand, Data: data, AppendedAt: time.UnixMilli(13000)})
	f.Apply(&raft.Log{Index: 14, Type: raft.LogCommand, Data: []byte{1, 0xff}})
	f.Apply(&raft.Log{Index: 15, Type: raft.LogNoop})
	if got := f.OwnershipIndex(); got != 11 || f.AppliedIndex() != 15 {
		t.Fatalf("after refusals: OwnershipIndex %d (want 11), applied %d (want 15)", got, f.AppliedIndex())
	}
}

// TestFSM_OwnershipIndex_AfterRestoreIsTheSnapshotIndex: a snapshot does not carry the index, so a
// restored FSM takes the snapshot's own index, never less than the true one.
func TestFSM_OwnershipIndex_AfterRestoreIsTheSnapshotIndex(t *testing.T) {
	f := NewFSM(nil)
	applyAt(t, f, 1, ringstate.Command{Op: ringstate.OpRegister, Member: "a", RaftAddr: "127.0.0.1:1"})
	applyAt(t, f, 2, ringstate.Command{Op: ringstate.OpClaimTokens, Member: "a", Tokens: ringstate.Tokens{10}})
	applyAt(t, f, 3, ringstate.Command{Op: ringstate.OpActivate, Member: "a"})
	for i := uint64(4); i <= 9; i++ {
		applyAt(t, f, i, ringstate.Command{Op: ringstate.OpHeartbeat, Member: "a"})
	}
	if f.OwnershipIndex() != 3 {
		t.Fatalf("OwnershipIndex %d, want 3", f.OwnershipIndex())
	}
	snap := snapshotBytes(t, f)
	g := NewFSM(nil)
	g.restoreIndex = func() uint64 { return 9 }
	if err := g.Restore(io.NopCloser(bytes.NewReader(snap))); err != nil {
		t.Fatal(err)
	}
	if g.OwnershipIndex() != 9 || g.AppliedIndex() != 9 {
		t.Fatalf("restored: OwnershipIndex %d, applied %d; want 9 and 9", g.OwnershipIndex(), g.AppliedIndex())
	}
	applyAt(t, g, 10, ringstate.Command{Op: ringstate.OpHeartbeat, Member: "a"})
	applyAt(t, g, 11, ringstate.Command{Op: ringstate.OpLeave, Member: "a"})
	if g.OwnershipIndex() != 11 {
		t.Fatalf("OwnershipIndex %d after a leave at 11", g.OwnershipIndex())
	}
}

// TestFSM_OwnershipIndex_SameOnEveryReplica: replicas applying the same random log agree on the
// index after every entry, and it never exceeds the applied index nor goes backwards.
func TestFSM_OwnershipIndex_SameOnEveryReplica(t *testing.T) {
	for seed := range uint64(50) {
		rng := rand.New(rand.NewPCG(seed, 3))
		a, b := NewFSM(nil), NewFSM(nil)
		var clock int64 = 1_000_000
		moved := 0
		for i := uint64(1); i <= 300; i++ {
			l := randomEntry(rng, i, &clock)
			prev := a.OwnershipIndex()
			a.Apply(l)
			b.Apply(l)
			if a.OwnershipIndex() != b.OwnershipIndex() || a.OwnershipIndex() > a.AppliedIndex() || a.OwnershipIndex() < prev {
				t.Fatalf("seed %d entry %d: replicas %d and %d, applied %d, before %d", seed, i, a.OwnershipIndex(), b.OwnershipIndex(), a.AppliedIndex(), prev)
			}
			if a.OwnershipIndex() != prev {
				moved++
			}
		}
		if moved == 0 {
			t.Fatalf("seed %d: the index never moved: the log exercises nothing", seed)
		}
	}
}

// TestCluster_OwnershipIndex_RealNodes: on real Raft nodes the index is the same on every replica;
// a follower restarted from a snapshot taken after the last change starts at the snapshot's index
// (higher than the true one: a lagging distributor retries once more, never less) and, on the
// next change, agrees with the others again.
func TestCluster_OwnershipIndex_RealNodes(t *testing.T) {
	c := newCluster(t)
	c.cfg.SnapshotThreshold = 8
	c.cfg.TrailingLogs = 2
	c.cfg.SnapshotInterval = 50 * time.Millisecond
	nodes := c.cluster(3)
	c.mustApply(nodes[0], ringstate.Command{Op: ringstate.OpRegister, Member: "w", RaftAddr: "127.0.0.1:5"})
	c.mustApply(nodes[0], ringstate.Command{Op: ringstate.OpClaimTokens, Member: "w", Tokens: ringstate.Tokens{7, 70}})
	changed := c.mustApply(nodes[0], ringstate.Command{Op: ringstate.OpActivate, Member: "w"})
	last := changed
	for range 30 { // heartbeats: no ownership change, enough entries for snapshots
		last = c.mustApply(c.leader(), ringstate.Command{Op: ringstate.OpHeartbeat, Member: "w"})
	}
	if !poll(t, 10*time.Second, func() bool {
		for _, n := range nodes {
			if n.node.AppliedIndex() < last || n.node.Status().LastSnapshotIndex <= changed {
				return false
			}
		}
		return true
	}) {
		t.Fatal("no snapshot after the change, or nodes behind")
	}
	// A replica that applied every entry knows the exact index; one that caught up by
	// InstallSnapshot (a follower more than TrailingLogs behind) holds the snapshot's, at or above it.
	exact := 0
	for _, n := range nodes {
		got := n.node.OwnershipIndex()
		if got < changed || got > last {
			t.Fatalf("%s: OwnershipIndex %d, want %d, or a snapshot's index up to %d", n.id, got, changed, last)
		}
		if got == changed {
			exact++
		}
	}
	if exact == 0 { // the leader, at least, applied every entry itself
		t.Fatalf("no replica holds the exact index %d", changed)
	}
	f := c.follower()
	c.stop(f)
	c.start(f.id, false)
	snap := f.node.Status().LastSnapshotIndex
	if got := f.node.OwnershipIndex(); got < changed || got == 0 {
		t.Fatalf("restarted %s: OwnershipIndex %d, below the true %d", f.id, got, changed)
	}
	t.Logf("restarted from the snapshot at %d: ownership index %d (true %d)", snap, f.node.OwnershipIndex(), changed)
	next := c.mustApply(c.leader(), ringstate.Command{Op: ringstate.OpLeave, Member: "w"})
	if !poll(t, 10*time.Second, func() bool {
		for _, n := range c.running() {
			if n.node.OwnershipIndex() != next {
				return false
			}
		}
		return true
	}) {
		for _, n := range c.running() {
			t.Logf("%s: OwnershipIndex %d applied %d", n.id, n.node.OwnershipIndex(), n.node.AppliedIndex())
		}
		t.Fatalf("replicas do not agree on the leave at %d", next)
	}
}
