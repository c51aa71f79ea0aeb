package raftfsm

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"

	"github.com/raftingest/raftingest/ringpb"
	"github.com/raftingest/raftingest/ringstate"
)

// memSink is a raft.SnapshotSink into memory.
type memSink struct {
	bytes.Buffer
	cancelled bool
}

func (s *memSink) ID() string    { return "mem" }
func (s *memSink) Cancel() error { s.cancelled = true; return nil }
func (s *memSink) Close() error  { return nil }

func snapshotBytes(t *testing.T, f *FSM) []byte {
	t.Helper()
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var sink memSink
	if err := snap.Persist(&sink); err != nil {
		t.Fatal(err)
	}
	snap.Release()
	return sink.Bytes()
}

// randomEntry draws a log entry: mostly plausible ring commands over a few members (so that many
// succeed and many are refused), some garbage, some with a zero AppendedAt (old entries), with time
// that sometimes goes backwards (a new leader with a slower clock).
func randomEntry(rng *rand.Rand, index uint64, clock *int64) *raft.Log {
	*clock += rng.Int64N(2000) - 300
	l := &raft.Log{Index: index, Term: 1, Type: raft.LogCommand, AppendedAt: time.UnixMilli(*clock)}
	if rng.IntN(10) == 0 {
		l.AppendedAt = time.Time{}
	}
	switch rng.IntN(20) {
	case 0:
		// Version 1 (known) but garbage: refused as a no-op. Unknown versions halt the FSM
		// (TestFSM_UnknownVersion_HaltsInsteadOfDiverging), so they have no place in a log.
		l.Data = []byte{1, byte(rng.IntN(256)), 0xff, 3}
		return l
	case 1:
		l.Data = nil
		return l
	}
	m := ringstate.MemberID("m" + strconv.Itoa(rng.IntN(4)))
	c := ringstate.Command{Op: ringstate.Op(1 + rng.IntN(9)), Member: m}
	if rng.IntN(3) == 0 {
		c.RequestID = "req-" + strconv.Itoa(rng.IntN(50))
	}
	switch c.Op {
	case ringstate.OpRegister:
		c.RaftAddr = "127.0.0.1:" + strconv.Itoa(1000+rng.IntN(2))
		c.GRPCAddr = "127.0.0.1:2000"
	case ringstate.OpClaimTokens:
		for range 1 + rng.IntN(4) {
			c.Tokens = append(c.Tokens, ringstate.Token(rng.IntN(40)))
		}
	case ringstate.OpClaimJoiner, ringstate.OpCompleteHandover, ringstate.OpAbortHandover:
		c.Peer = ringstate.MemberID("m" + strconv.Itoa(rng.IntN(4)))
	}
	data, err := EncodeCommand(c)
	if err != nil {
		panic(err)
	}
	l.Data = data
	return l
}

// TestFSM_SameEntriesGiveByteIdenticalSnapshots is the determinism rule: replicas applying the same
// log hold the same ring, down to the snapshot bytes, whatever their own clocks say.
func TestFSM_SameEntriesGiveByteIdenticalSnapshots(t *testing.T) {
	for seed := range uint64(40) {
		rng := rand.New(rand.NewPCG(seed, 7))
		a, b := NewFSM(nil), NewFSM(nil)
		clock := int64(1_700_000_000_000)
		for i := uint64(1); i <= 300; i++ {
			l := randomEntry(rng, i, &clock)
			ra := a.Apply(l).(*ApplyResult)
			cp := *l
			rb := b.Apply(&cp).(*ApplyResult)
			if ra.Code != rb.Code || ra.Message != rb.Message {
				t.Fatalf("seed %d entry %d: results differ: %+v vs %+v", seed, i, ra, rb)
			}
		}
		sa, sb := snapshotBytes(t, a), snapshotBytes(t, b)
		if !bytes.Equal(sa, sb) {
			t.Fatalf("seed %d: snapshots differ", seed)
		}
		if a.AppliedIndex() != 300 {
			t.Fatalf("applied index %d, want 300", a.AppliedIndex())
		}
		// Restore(Snapshot()) round trip: a third FSM restored from a's snapshot holds the same ring.
		c := NewFSM(nil)
		if err := c.Restore(io.NopCloser(bytes.NewReader(sa))); err != nil {
			t.Fatalf("seed %d: restore: %v", seed, err)
		}
		if sc := snapshotBytes(t, c); !bytes.Equal(sa, sc) {
			t.Fatalf("seed %d: restored FSM snapshots differently", seed)
		}
		// And it keeps applying identically.
		for i := uint64(301); i <= 350; i++ {
			l := randomEntry(rng, i, &clock)
			cp := *l
			a.Apply(l)
			c.Apply(&cp)
		}
		if !bytes.Equal(snapshotBytes(t, a), snapshotBytes(t, c)) {
			t.Fatalf("seed %d: restored FSM diverged", seed)
		}
	}
}

func register(t *testing.T, f *FSM, idx uint64, id string, at int64) {
	t.Helper()
	data, _ := EncodeCommand(ringstate.Command{Op: ringstate.OpRegister, Member: ringstate.MemberID(id), RaftAddr: "127.0.0.1:1"})
	res := f.Apply(&raft.Log{Index: idx, Type: raft.LogCommand, Data: data, AppendedAt: time.UnixMilli(at)}).(*ApplyResult)
	if res.Code != ringstate.CodeOK {
		t.Fatalf("register %s: %+v", id, res)
	}
}

func TestFSM_GarbageEntry_RefusedWithInvalidCommandAndStateUnchanged(t *testing.T) {
	f := NewFSM(nil)
	register(t, f, 1, "a", 1000)
	before := snapshotBytes(t, f)
	// Entries of a known version (or none at all) that do not decode; unknown versions halt instead
	// (TestFSM_UnknownVersion_HaltsInsteadOfDiverging).
	for i, data := range [][]byte{nil, {}, {1, 0xff}, {1, 0x42, 0x42}, {1, 0xff, 0xff, 0xff}} {
		res := f.Apply(&raft.Log{Index: uint64(2 + i), Type: raft.LogCommand, Data: data, AppendedAt: time.UnixMilli(5000)}).(*ApplyResult)
		if res.Code != ringstate.CodeInvalidCommand || res.Message == "" {
			t.Fatalf("entry %x: got %+v, want CodeInvalidCommand", data, res)
		}
		if !errors.Is(res.Err(), ringstate.ErrInvalidCommand) {
			t.Fatalf("Err() = %v", res.Err())
		}
	}
	if after := snapshotBytes(t, f); !bytes.Equal(before, after) {
		t.Fatal("garbage entries changed the ring")
	}
	if f.AppliedIndex() != 6 {
		t.Fatalf("applied index %d, want 6 (refused entries are still applied)", f.AppliedIndex())
	}
}

// Regression (unknown command versions made replicas diverge): an entry of an unknown command
// version was turned into a committed no-op, so an older replica and a newer one held different
// rings from that index on. The FSM now halts at that entry, loudly, naming its index and version
// and telling the operator to upgrade, and does not advance.
func TestFSM_UnknownVersion_HaltsInsteadOfDiverging(t *testing.T) {
	for _, version := range []byte{0, 6, 9, 0x42, 0xff} {
		t.Run(fmt.Sprint("version ", version), func(t *testing.T) {
			f := NewFSM(nil)
			register(t, f, 1, "a", 1000)
			before := snapshotBytes(t, f)
			data, _ := EncodeCommand(ringstate.Command{Op: ringstate.OpHeartbeat, Member: "a"})
			data[0] = version
			var got any
			func() {
				defer func() { got = recover() }()
				res := f.Apply(&raft.Log{Index: 7, Type: raft.LogCommand, Data: data, AppendedAt: time.UnixMilli(5000)})
				t.Errorf("Apply returned %+v instead of halting", res)
			}()
			msg, _ := got.(string)
			for _, want := range []string{"entry 7", fmt.Sprintf("version %d", version), "Upgrade this node"} {
				if !strings.Contains(msg, want) {
					t.Errorf("panic %q does not say %q", got, want)
				}
			}
			if f.AppliedIndex() != 1 {
				t.Errorf("applied index %d after the unknown entry, want 1 (not advanced)", f.AppliedIndex())
			}
			if !bytes.Equal(before, snapshotBytes(t, f)) {
				t.Error("the unknown entry changed the ring")
			}
		})
	}
}

// TestFSM_RingTimeFromAppendedAt: ring time is the leader's stamp, never the local clock; a zero
// stamp keeps the current ring time.
func TestFSM_RingTimeFromAppendedAt(t *testing.T) {
	f := NewFSM(nil)
	register(t, f, 1, "a", 1234)
	if got := f.Ring().TimeMs(); got != 1234 {
		t.Fatalf("ring time %d, want 1234", got)
	}
	data, _ := EncodeCommand(ringstate.Command{Op: ringstate.OpHeartbeat, Member: "a"})
	f.Apply(&raft.Log{Index: 2, Type: raft.LogCommand, Data: data})
	if got := f.Ring().TimeMs(); got != 1234 {
		t.Fatalf("zero AppendedAt moved ring time to %d", got)
	}
	m, _ := f.Ring().Member("a")
	if m.HeartbeatMs != 1234 {
		t.Fatalf("heartbeat %d, want 1234", m.HeartbeatMs)
	}
}

func TestFSM_NonCommandEntries_AreTotal(t *testing.T) {
	f := NewFSM(nil)
	for i, typ := range []raft.LogType{raft.LogConfiguration, raft.LogNoop, raft.LogBarrier, raft.LogType(99)} {
		res, ok := f.Apply(&raft.Log{Index: uint64(i + 1), Type: typ, Data: []byte{0xde, 0xad}}).(*ApplyResult)
		if !ok || res.Code != ringstate.CodeOK {
			t.Fatalf("type %v: %+v", typ, res)
		}
	}
	if f.Ring().Len() != 0 {
		t.Fatal("non-command entry changed the ring")
	}
}

func TestFSM_Changed_ClosesOnApply(t *testing.T) {
	f := NewFSM(nil)
	ch := f.Changed()
	select {
	case <-ch:
		t.Fatal("closed before any change")
	default:
	}
	register(t, f, 1, "a", 1)
	select {
	case <-ch:
	default:
		t.Fatal("not closed after apply")
	}
	if f.Changed() == ch {
		t.Fatal("channel not replaced")
	}
}

func TestFSM_Restore_RefusesCorruptSnapshots(t *testing.T) {
	good := &ringpb.Snapshot{Version: 1, TimeMs: 5, Members: []*ringpb.Member{
		{Id: "a", RaftAddr: "127.0.0.1:1", State: ringpb.State_ACTIVE, Tokens: []uint32{1, 2}},
		{Id: "b", RaftAddr: "127.0.0.1:2", State: ringpb.State_ACTIVE, Tokens: []uint32{3}},
	}}
	for _, tc := range []struct {
		name, want string
		mut        func(s *ringpb.Snapshot)
	}{
		{"token owned twice", "token 2", func(s *ringpb.Snapshot) { s.Members[1].Tokens = []uint32{2} }},
		{"duplicate member", "appears twice", func(s *ringpb.Snapshot) { s.Members[1].Id = "a" }},
		{"unknown state", "State(7)", func(s *ringpb.Snapshot) { s.Members[0].State = 7 }},
		{"unknown outcome code", "outcome code 99", func(s *ringpb.Snapshot) {
			s.Recent = []*ringpb.AppliedRequest{{RequestId: "r", Code: 99}}
		}},
		{"version 4", "version 4", func(s *ringpb.Snapshot) { s.Version = 4 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := NewFSM(nil)
			register(t, f, 1, "keep", 1)
			s := proto.Clone(good).(*ringpb.Snapshot)
			tc.mut(s)
			data, _ := proto.Marshal(s)
			err := f.Restore(io.NopCloser(bytes.NewReader(data)))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error naming %q", err, tc.want)
			}
			if _, ok := f.Ring().Member("keep"); !ok {
				t.Fatal("a refused restore replaced the ring")
			}
		})
	}
	data, _ := proto.Marshal(good)
	f := NewFSM(nil)
	if err := f.Restore(io.NopCloser(bytes.NewReader(data))); err != nil || f.Ring().Len() != 2 {
		t.Fatalf("good snapshot: %v", err)
	}
}

func TestConfig_Validate_NamesFlags(t *testing.T) {
	c := DefaultConfig()
	c.ID, c.DataDir, c.RaftAddr = "n1", t.TempDir(), "127.0.0.1:0"
	if err := c.Validate(); err != nil {
		t.Fatalf("defaults: %v", err)
	}
	for _, tc := range []struct {
		want string
		mut  func(*Config)
	}{
		{"-raft.max-voters", func(c *Config) { c.MaxVoters = 0 }},
		{"-raft.election-timeout", func(c *Config) { c.ElectionTimeout = c.HeartbeatTimeout / 2 }},
		{"-raft.commit-timeout", func(c *Config) { c.CommitTimeout = 2 * c.HeartbeatTimeout }},
		{"-raft.snapshot-threshold", func(c *Config) { c.SnapshotThreshold = 0 }},
		{"-raft.apply-timeout", func(c *Config) { c.ApplyTimeout = 0 }},
		{"must be an IP", func(c *Config) { c.RaftAddr = "localhost:1" }},
		{"must be an IP", func(c *Config) { c.RaftAddr = "0.0.0.0:1" }},
		{"node id", func(c *Config) { c.ID = "a b" }},
	} {
		cc := c
		tc.mut(&cc)
		if err := cc.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("got %v, want an error naming %q", err, tc.want)
		}
	}
}
