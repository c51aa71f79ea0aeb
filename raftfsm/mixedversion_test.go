package raftfsm

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/raftingest/raftingest/ringstate"
)

// stripFields returns the protobuf message b without the top-level fields nums, and with nested
// (in the length-delimited fields of nested) stripped the same way: what a build whose .proto
// lacks those fields keeps of b (proto3 skips unknown fields; nothing it reads depends on them).
func stripFields(t *testing.T, b []byte, nums []protowire.Number, nested map[protowire.Number][]protowire.Number) []byte {
	t.Helper()
	var out []byte
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			t.Fatalf("bad tag: %v", protowire.ParseError(n))
		}
		m := protowire.ConsumeFieldValue(num, typ, b[n:])
		if m < 0 {
			t.Fatalf("bad field %d: %v", num, protowire.ParseError(m))
		}
		field := b[:n+m]
		b = b[n+m:]
		switch inner, ok := nested[num]; {
		case containsNum(nums, num):
		case ok && typ == protowire.BytesType:
			v, _ := protowire.ConsumeBytes(field[n:])
			out = protowire.AppendTag(out, num, typ)
			out = protowire.AppendBytes(out, stripFields(t, v, inner, nil))
		default:
			out = append(out, field...)
		}
	}
	return out
}

func containsNum(nums []protowire.Number, n protowire.Number) bool {
	for _, x := range nums {
		if x == n {
			return true
		}
	}
	return false
}

// The fields this build added to ring.proto for mixed versions: Command.command_version (12) and
// Command.readers (13); Member.command_version (11), inside Snapshot.members (3).
var (
	newCommandFields = []protowire.Number{12, 13}
	newMemberField   = map[protowire.Number][]protowire.Number{3: {11}}
)

// asOlderBuild rewrites a stamped entry as a build before these fields decodes it: same version and
// stamp, the protobuf without the new fields.
func asOlderBuild(t *testing.T, data []byte) []byte {
	t.Helper()
	head := 1
	if data[0] != CommandVersion {
		head += stampLen
	}
	return append(bytes.Clone(data[:head]), stripFields(t, data[head:], newCommandFields, nil)...)
}

func entry(idx uint64, data []byte) *raft.Log {
	return &raft.Log{Index: idx, Term: 1, Type: raft.LogCommand, Data: data}
}

func stamped(t *testing.T, c ringstate.Command, at int64) []byte {
	t.Helper()
	return must(StampCommand(must(EncodeCommand(c)), at))
}

// claimV2 is a claim of the compactor lease written as a version-2 entry, as only a leader of a
// build from before the lease writes it (it does not know version 3, and forwards what a newer
// follower sent): version byte, stamp, protobuf.
func claimV2(c ringstate.Command, at int64) []byte {
	out := []byte{StampedCommandVersion}
	out = binary.BigEndian.AppendUint64(out, uint64(at))
	return append(out, must(EncodeCommand(c))[1:]...)
}

// TestCodec_ClaimOnlyInVersion3: a claim of the compactor lease in a version-1 or version-2 entry
// is refused by DecodeStamped (*OpVersionError, ErrCorruptCommand), and applied by the FSM as a
// builds-before-the-lease replica applies it — a refused command of an op it does not know, at the
// entry's time, its request id remembered — instead of being granted (before the fix this build
// granted it: code 0, lease {a 1 ...}); in a version-3 entry the same claim is granted.
func TestCodec_ClaimOnlyInVersion3(t *testing.T) {
	const t0 = 1_700_000_000_000
	setup := func(t *testing.T) *FSM {
		f := NewFSM(nil)
		for i, c := range []ringstate.Command{
			{Op: ringstate.OpRegister, Member: "a", RaftAddr: "127.0.0.1:1", CommandVersion: 3},
			{Op: ringstate.OpClaimTokens, Member: "a", Tokens: ringstate.Tokens{1}},
			{Op: ringstate.OpActivate, Member: "a"},
		} {
			if res := f.Apply(entry(uint64(i+1), stamped(t, c, t0+int64(i)))).(*ApplyResult); res.Code != ringstate.CodeOK {
				t.Fatalf("%s: %+v", c.Op, res)
			}
		}
		return f
	}
	claim := ringstate.Command{Op: ringstate.OpClaimCompactor, RequestID: "c1", Member: "a", LeaseMs: 60_000,
		Readers: []ringstate.MemberID{"a"}}
	for name, data := range map[string][]byte{
		"version 1": must(EncodeCommand(claim)),
		"version 2": claimV2(claim, t0+1000),
	} {
		t.Run(name, func(t *testing.T) {
			_, _, _, err := DecodeStamped(data)
			var operr *OpVersionError
			if !errors.As(err, &operr) || !errors.Is(err, ErrCorruptCommand) || operr.Op != ringstate.OpClaimCompactor ||
				operr.Version != data[0] || operr.MinVersion != LeaseCommandVersion {
				t.Fatalf("DecodeStamped: %v, want an *OpVersionError for claim-compactor in version %d", err, data[0])
			}
			f := setup(t)
			l := entry(4, data)
			l.AppendedAt = time.UnixMilli(t0 + 1000)
			res := f.Apply(l).(*ApplyResult)
			r := f.Ring()
			if res.Code != ringstate.CodeInvalidCommand || r.CompactorLease() != (ringstate.CompactorLease{}) {
				t.Fatalf("applied: code %d %q, lease %+v; want refused, no lease", res.Code, res.Message, r.CompactorLease())
			}
			if r.TimeMs() != t0+1000 {
				t.Fatalf("ring time %d, want the entry's %d (as a build that refuses the op as unknown)", r.TimeMs(), t0+1000)
			}
			if rec := r.Recent(); len(rec) != 1 || rec[0].RequestID != "c1" || rec[0].Code != ringstate.CodeInvalidCommand {
				t.Fatalf("request memory %+v, want c1 refused", rec)
			}
		})
	}
	f := setup(t)
	if res := f.Apply(entry(4, stamped(t, claim, t0+1000))).(*ApplyResult); res.Code != ringstate.CodeOK ||
		f.Ring().CompactorLease().Holder != "a" {
		t.Fatalf("version-3 claim: %+v, lease %+v", res, f.Ring().CompactorLease())
	}
	// Every other op is known since version 1 and decodes in every version.
	hb := ringstate.Command{Op: ringstate.OpHeartbeat, Member: "a"}
	for _, data := range [][]byte{must(EncodeCommand(hb)), stamped(t, hb, t0)} {
		if _, _, _, err := DecodeStamped(data); err != nil {
			t.Fatalf("heartbeat in version %d: %v", data[0], err)
		}
	}
}

// TestFSM_ClaimRefusedUnlessEveryMemberIsAReader: the deterministic refusal in Apply. A claim whose
// Readers miss a member (one that registered after the leader looked) is refused with
// CodeMixedVersions on every replica, whatever the members advertised; naming every member, it is
// granted — even on a replica that restored a snapshot in which the members advertise nothing
// (one written by an older build), so that replica decides as the others do.
func TestFSM_ClaimRefusedUnlessEveryMemberIsAReader(t *testing.T) {
	const t0 = 1_700_000_000_000
	a := NewFSM(nil)
	for i, c := range []ringstate.Command{
		{Op: ringstate.OpRegister, Member: "a", RaftAddr: "127.0.0.1:1", CommandVersion: 3},
		{Op: ringstate.OpClaimTokens, Member: "a", Tokens: ringstate.Tokens{1}},
		{Op: ringstate.OpActivate, Member: "a"},
		{Op: ringstate.OpRegister, Member: "b", RaftAddr: "127.0.0.1:2", CommandVersion: 3},
	} {
		a.Apply(entry(uint64(i+1), stamped(t, c, t0+int64(i))))
	}
	// b's replica restored a snapshot an older build wrote: no advertisements.
	snap := stripFields(t, must(EncodeSnapshot(a.Ring())), nil, newMemberField)
	b := NewFSM(nil)
	if err := b.Restore(nopCloser{bytes.NewReader(snap)}); err != nil {
		t.Fatal(err)
	}
	if got := b.Ring().NotReading(3); len(got) != 2 {
		t.Fatalf("the older build's snapshot kept advertisements: NotReading %v", got)
	}
	short := ringstate.Command{Op: ringstate.OpClaimCompactor, Member: "a", LeaseMs: 1000, Readers: []ringstate.MemberID{"a"}}
	full := short
	full.Readers = []ringstate.MemberID{"a", "b"}
	for _, f := range []*FSM{a, b} {
		res := f.Apply(entry(5, stamped(t, short, t0+10))).(*ApplyResult)
		if res.Code != ringstate.CodeMixedVersions || !strings.Contains(res.Message, "[b]") {
			t.Fatalf("claim not naming b: %+v, want CodeMixedVersions naming b", res)
		}
		if res := f.Apply(entry(6, stamped(t, full, t0+20))).(*ApplyResult); res.Code != ringstate.CodeOK {
			t.Fatalf("claim naming every member: %+v", res)
		}
	}
	if a.Ring().CompactorLease() != b.Ring().CompactorLease() {
		t.Fatalf("replicas disagree on the lease: %+v vs %+v", a.Ring().CompactorLease(), b.Ring().CompactorLease())
	}
}

type nopCloser struct{ *bytes.Reader }

func (nopCloser) Close() error { return nil }

func fixtureAdvertisingRegister() ringstate.Command {
	return ringstate.Command{Op: ringstate.OpRegister, RequestID: "fixture-reg-3", Member: "ingester-1",
		RaftAddr: "10.0.0.1:9095", GRPCAddr: "10.0.0.1:9096", Zone: "a", CommandVersion: 3}
}

func fixtureReadersClaim() ringstate.Command {
	return ringstate.Command{Op: ringstate.OpClaimCompactor, Member: "ingester-1", LeaseMs: 60_000,
		Readers: []ringstate.MemberID{"ingester-1", "ingester-2"}}
}

// fixtureAdvertisingRing is fixtureRing with both members advertising version 3 (ingester-2 by a
// heartbeat) and no lease: a snapshot of it is still version 1.
func fixtureAdvertisingRing(t *testing.T) *ringstate.Ring {
	t.Helper()
	r := fixtureRing(t)
	for i, c := range []ringstate.Command{fixtureAdvertisingRegister(),
		{Op: ringstate.OpHeartbeat, Member: "ingester-2", CommandVersion: 3}} {
		var err error
		if r, _, err = r.Apply(c, 1700000007000+int64(i)); err != nil {
			t.Fatal(err)
		}
	}
	return r
}

// TestCodec_Fixtures_MixedVersions pins the wire forms of the version advertisement and the claim's
// readers, and what a build from before them makes of each: a version-2 register advertising
// version 3 (testdata/command_v2_advertise.bin) is, to an older build, the register it knows (the
// protobuf without field 12 is a plain register's, byte for byte); a version-3 claim with readers
// (testdata/command_v3_readers.bin); and a snapshot of a ring whose members advertise
// (testdata/snapshot_v1_advertise.bin) that is still version 1 — an older build reads it, dropping
// the advertisements, which nothing it applies depends on.
func TestCodec_Fixtures_MixedVersions(t *testing.T) {
	regPath := filepath.Join("testdata", "command_v2_advertise.bin")
	claimPath := filepath.Join("testdata", "command_v3_readers.bin")
	snapPath := filepath.Join("testdata", "snapshot_v1_advertise.bin")
	const stamp = 1700000007000
	if *update {
		for path, data := range map[string][]byte{
			regPath:   stamped(t, fixtureAdvertisingRegister(), stamp),
			claimPath: stamped(t, fixtureReadersClaim(), stamp),
			snapPath:  must(EncodeSnapshot(fixtureAdvertisingRing(t))),
		} {
			if err := os.WriteFile(path, data, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	reg, err := os.ReadFile(regPath)
	if err != nil {
		t.Fatal(err)
	}
	if c, ts, _, err := DecodeStamped(reg); reg[0] != StampedCommandVersion || err != nil || ts != stamp ||
		!reflect.DeepEqual(c, fixtureAdvertisingRegister()) {
		t.Fatalf("register fixture: version %d, %+v at %d, %v", reg[0], c, ts, err)
	}
	plain := fixtureAdvertisingRegister()
	plain.CommandVersion = 0
	if old := asOlderBuild(t, reg); !bytes.Equal(old, stamped(t, plain, stamp)) {
		t.Fatal("without the new field the register fixture is not the plain register an older build writes and reads")
	}

	claim, err := os.ReadFile(claimPath)
	if err != nil {
		t.Fatal(err)
	}
	if c, ts, _, err := DecodeStamped(claim); claim[0] != LeaseCommandVersion || err != nil || ts != stamp ||
		!reflect.DeepEqual(c, fixtureReadersClaim()) {
		t.Fatalf("claim fixture: version %d, %+v at %d, %v", claim[0], c, ts, err)
	}

	snap, err := os.ReadFile(snapPath)
	if err != nil {
		t.Fatal(err)
	}
	want := fixtureAdvertisingRing(t)
	r, err := DecodeSnapshot(snap)
	if err != nil || !reflect.DeepEqual(r.Members(), want.Members()) || r.NotReading(3) != nil {
		t.Fatalf("snapshot fixture: %v; members %+v", err, r.Members())
	}
	if !bytes.Equal(must(EncodeSnapshot(want)), snap) {
		t.Fatal("the snapshot encoding of advertising members changed")
	}
	if v := snap[1]; snap[0] != 0x08 || uint32(v) != SnapshotVersion {
		t.Fatalf("a ring with advertisements and no lease is written as snapshot version %d, want %d", v, SnapshotVersion)
	}
	old, err := DecodeSnapshot(stripFields(t, snap, nil, newMemberField))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(old.Members(), withoutVersions(want.Members())) {
		t.Fatalf("older build's view of the snapshot: %+v", old.Members())
	}
}

func withoutVersions(ms []ringstate.Member) []ringstate.Member {
	for i := range ms {
		ms[i].CommandVersion = 0
	}
	return ms
}

// TestMixedVersions_OlderBuildComputesTheSameRing: the same log of version-2 entries that carry the
// new fields (registers and heartbeats advertising, as a leader of this build writes them),
// applied by this build and by an older one (which drops the unknown fields), gives rings that
// differ in nothing but the advertisements — members, states, tokens, heartbeats, ring time,
// request memory — and byte-identical snapshots once the advertisements are dropped.
func TestMixedVersions_OlderBuildComputesTheSameRing(t *testing.T) {
	const t0 = 1_700_000_000_000
	var log [][]byte
	at := int64(t0)
	add := func(c ringstate.Command) {
		at += 700
		log = append(log, stamped(t, c, at))
	}
	for i, id := range []ringstate.MemberID{"a", "b", "c"} {
		add(ringstate.Command{Op: ringstate.OpRegister, RequestID: "reg-" + string(id), Member: id,
			RaftAddr: "127.0.0.1:" + string(rune('1'+i)), CommandVersion: 3})
		add(ringstate.Command{Op: ringstate.OpClaimTokens, Member: id, Tokens: ringstate.Tokens{ringstate.Token(10 * (i + 1))}})
		add(ringstate.Command{Op: ringstate.OpActivate, Member: id})
	}
	add(ringstate.Command{Op: ringstate.OpHeartbeat, Member: "b", CommandVersion: 3})
	add(ringstate.Command{Op: ringstate.OpLeave, Member: "c"})
	add(ringstate.Command{Op: ringstate.OpRegister, Member: "c", RaftAddr: "127.0.0.1:3"}) // c restarted on an older build
	add(ringstate.Command{Op: ringstate.OpHeartbeat, RequestID: "hb", Member: "a", CommandVersion: 3})

	newer, older := NewFSM(nil), NewFSM(nil)
	for i, data := range log {
		rn := newer.Apply(entry(uint64(i+1), data)).(*ApplyResult)
		ro := older.Apply(entry(uint64(i+1), asOlderBuild(t, data))).(*ApplyResult)
		if rn.Code != ro.Code {
			t.Fatalf("entry %d: this build %+v, an older one %+v", i+1, rn, ro)
		}
	}
	if got := newer.Ring().NotReading(3); !reflect.DeepEqual(got, []ringstate.MemberID{"c"}) {
		t.Fatalf("NotReading %v, want [c] (re-registered without a version)", got)
	}
	if !reflect.DeepEqual(withoutVersions(newer.Ring().Members()), older.Ring().Members()) {
		t.Fatalf("members differ beyond the advertisements:\n%+v\n%+v", newer.Ring().Members(), older.Ring().Members())
	}
	ns := stripFields(t, must(EncodeSnapshot(newer.Ring())), nil, newMemberField)
	if olds := must(EncodeSnapshot(older.Ring())); !bytes.Equal(ns, olds) {
		t.Fatal("snapshots differ beyond the advertisements")
	}
}

// TestCluster_ClaimWaitsForEveryMemberToReadVersion3 is the rolling-upgrade gate on real nodes,
// before the first claim is granted. A node advertises the version it reads in its own register
// (n1 does, without being asked). A member registered the way a build before the lease registers
// (no version) makes the claim fail early — ErrMixedVersions naming it, and nothing proposed, so no
// replica ever sees a version-3 entry; the leader refuses it too when asked directly, whatever the
// claimant attests. Once the member re-registers advertising version 3, a node that joined Raft but
// has not registered closes the gate the same way (ErrReplicaNotMember) until it registers; then
// the claim is granted. A field an older build would drop (lease_ms on a heartbeat) is refused
// before proposing. What happens after the first grant: TestCluster_GateOpenAfterTheFirstGrant.
func TestCluster_ClaimWaitsForEveryMemberToReadVersion3(t *testing.T) {
	c := newCluster(t)
	n1 := c.bootstrap("n1")
	c.activateAll([]*testNode{n1})
	if m, _ := n1.node.Ring().Member("n1"); m.CommandVersion != uint32(MaxCommandVersion) {
		t.Fatalf("n1 advertises %d, want %d", m.CommandVersion, MaxCommandVersion)
	}
	c.mustApply(n1, ringstate.Command{Op: ringstate.OpRegister, Member: "old", RaftAddr: "127.0.0.1:5"})
	last := n1.node.Status().LastLogIndex
	ctx := ctxT(t, 20*time.Second)
	if _, err := n1.node.ClaimCompactorLease(ctx, time.Minute); !errors.Is(err, ringstate.ErrMixedVersions) ||
		errors.Is(err, ringstate.ErrReplicaNotMember) || !strings.Contains(err.Error(), "[old]") {
		t.Fatalf("claim with an old-style member: %v, want ErrMixedVersions naming it", err)
	}
	idx, err := n1.node.Apply(ctx, ringstate.Command{Op: ringstate.OpClaimCompactor, Member: "n1", LeaseMs: 60_000,
		Readers: []ringstate.MemberID{"n1", "old"}})
	if !errors.Is(err, ringstate.ErrMixedVersions) || idx != 0 {
		t.Fatalf("claim attesting the old-style member: index %d, %v; want ErrMixedVersions before proposing", idx, err)
	}
	idx, err = n1.node.Apply(ctx, ringstate.Command{Op: ringstate.OpHeartbeat, Member: "n1", LeaseMs: 5})
	if !errors.Is(err, ringstate.ErrInvalidCommand) || idx != 0 {
		t.Fatalf("heartbeat with lease_ms: index %d, %v; want ErrInvalidCommand before proposing", idx, err)
	}
	if got := n1.node.Status().LastLogIndex; got != last {
		t.Fatalf("last log index %d -> %d: a refused claim was proposed", last, got)
	}
	c.mustApply(n1, ringstate.Command{Op: ringstate.OpRegister, Member: "old", RaftAddr: "127.0.0.1:5", CommandVersion: 3})

	// n2 joins Raft and has not registered: nothing says what it reads.
	n2 := c.start("n2", false)
	retry(t, "add n2", func(ctx context.Context) error {
		_, err := n1.node.AddPeer(ctx, "n2", n2.raftAddr, false)
		return err
	})
	last = n1.node.Status().LastLogIndex
	if _, err := claimLease(t, n1, time.Minute); !errors.Is(err, ringstate.ErrReplicaNotMember) ||
		!errors.Is(err, ringstate.ErrMixedVersions) || !strings.Contains(err.Error(), "[n2]") {
		t.Fatalf("claim with an unregistered raft server: %v, want ErrReplicaNotMember naming n2", err)
	}
	if got := n1.node.Status().LastLogIndex; got != last {
		t.Fatalf("last log index %d -> %d: a claim refused for an unregistered raft server was proposed", last, got)
	}
	if l := n1.node.CompactorLease(); l != (ringstate.CompactorLease{}) {
		t.Fatalf("lease %+v", l)
	}
	if !poll(t, 10*time.Second, func() bool { l, _ := n2.node.Leader(); return l != "" }) {
		t.Fatal("n2 never heard from the leader")
	}
	c.register(n2)
	if l, err := claimLease(t, n1, time.Minute); err != nil || l.Holder != "n1" || l.Epoch != 1 {
		t.Fatalf("claim once n2 registered: %+v, %v", l, err)
	}
	c.checkConsistent()
}

// TestCluster_GateOpenAfterTheFirstGrant: once a claim has been granted (epoch 1), the version-3
// entry is in the log and no replica of a build before the lease can apply it any more, so neither
// a Raft server that is not a ring member — here one added and never started, as after `ringctl
// join` of a node that never comes up, or a removal killed between its ring and its Raft step — nor
// a member that advertises no version stops the lease: the holder renews (epoch kept) and, once
// the lease expired, another member claims it (epoch 2). Before the gate was limited to the time
// before the first grant, both were refused for as long as the stale server stayed, and a run in
// progress was cancelled at its next renewal. Apply still refuses a claim whose readers miss a
// member.
func TestCluster_GateOpenAfterTheFirstGrant(t *testing.T) {
	c := newCluster(t)
	n1 := c.bootstrap("n1")
	c.activateAll([]*testNode{n1})
	n2 := c.start("n2", false)
	retry(t, "add n2", func(ctx context.Context) error {
		_, err := n1.node.AddPeer(ctx, "n2", n2.raftAddr, false)
		return err
	})
	if !poll(t, 10*time.Second, func() bool { l, _ := n2.node.Leader(); return l != "" }) {
		t.Fatal("n2 never heard from the leader")
	}
	c.register(n2)
	c.mustApply(n2, ringstate.Command{Op: ringstate.OpClaimTokens, Member: "n2", Tokens: ringstate.Tokens{200}})
	c.mustApply(n2, ringstate.Command{Op: ringstate.OpActivate, Member: "n2"})

	const d = time.Second
	if l, err := claimLease(t, n1, d); err != nil || l.Holder != "n1" || l.Epoch != 1 {
		t.Fatalf("first claim: %+v, %v", l, err)
	}
	// A Raft server that is not a ring member and never will be (nothing listens at its address),
	// and a member that advertises no version.
	retry(t, "add ghost", func(ctx context.Context) error {
		_, err := n1.node.AddPeer(ctx, "ghost", "127.0.0.1:1", false)
		return err
	})
	if !inConfig(n1.node, "ghost") {
		t.Fatal("ghost is not in the raft configuration")
	}
	c.mustApply(n1, ringstate.Command{Op: ringstate.OpRegister, Member: "old", RaftAddr: "127.0.0.1:5"})
	if got := n1.node.Ring().NotReading(3); !slices.Equal(got, []ringstate.MemberID{"old"}) {
		t.Fatalf("NotReading %v, want [old]", got)
	}
	for i := range 3 {
		if l, err := claimLease(t, n1, d); err != nil || l.Holder != "n1" || l.Epoch != 1 {
			t.Fatalf("renewal %d with a stale raft server and an old-style member: %+v, %v", i, l, err)
		}
	}
	// Another member claims once the lease expired in ring time (claims are entries stamped by
	// the leader's clock: d after the last renewal, ring time is past its expiry).
	time.Sleep(d + 200*time.Millisecond)
	if l, err := claimLease(t, n2, d); err != nil || l.Holder != "n2" || l.Epoch != 2 {
		t.Fatalf("n2's claim after the lease expired: %+v, %v", l, err)
	}
	// The readers check is not part of the gate: it stays.
	ctx := ctxT(t, 20*time.Second)
	idx, err := n1.node.Apply(ctx, ringstate.Command{Op: ringstate.OpClaimCompactor, Member: "n2", LeaseMs: 1000,
		Readers: []ringstate.MemberID{"n1", "n2"}})
	if !errors.Is(err, ringstate.ErrMixedVersions) || idx != 0 || !strings.Contains(err.Error(), "[old]") {
		t.Fatalf("claim whose readers miss old: index %d, %v; want ErrMixedVersions before proposing", idx, err)
	}
	if l := n1.node.CompactorLease(); l.Holder != "n2" || l.Epoch != 2 {
		t.Fatalf("lease %+v after a refused claim", l)
	}
	c.checkConsistent()
}
