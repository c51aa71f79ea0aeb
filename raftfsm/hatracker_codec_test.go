package raftfsm

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"

	"github.com/raftingest/raftingest/ringpb"
	"github.com/raftingest/raftingest/ringstate"
)

func fixtureHAElect() ringstate.Command {
	return ringstate.Command{Op: ringstate.OpHAElect, Member: "ingester-1", HA: &ringstate.HACommand{
		Tenant: "team-a", Cluster: "prom-eu", Replica: "replica-1", FailoverMs: 30000, MaxClusters: 100}}
}

// fixtureHARing is fixtureLeaseRing with two HA clusters, one failed over.
func fixtureHARing(t *testing.T) *ringstate.Ring {
	t.Helper()
	r := fixtureLeaseRing(t)
	for _, s := range []struct {
		c  ringstate.Command
		at int64
	}{
		{fixtureHAElect(), 1700000010000},
		{ringstate.Command{Op: ringstate.OpHAElect, Member: "ingester-1", HA: &ringstate.HACommand{Tenant: "team-b",
			Cluster: "prom", Replica: "a", FailoverMs: 1000, MaxClusters: 1}}, 1700000011000},
		{ringstate.Command{Op: ringstate.OpHAElect, Member: "ingester-1", HA: &ringstate.HACommand{Tenant: "team-b",
			Cluster: "prom", Replica: "b", FailoverMs: 1000, MaxClusters: 1}}, 1700000013000},
	} {
		var err error
		if r, _, err = r.Apply(s.c, s.at); err != nil {
			t.Fatalf("%+v: %v", s.c, err)
		}
	}
	return r
}

// TestHACodec_Fixtures keeps the formats the HA tracker added readable: command version 5 (a stamped
// ha-elect) and snapshot version 3 (with HA entries); and checks that a ring without HA entries is
// still written in the versions older builds read, and that every other op keeps its version.
func TestHACodec_Fixtures(t *testing.T) {
	cmdPath := filepath.Join("testdata", "command_v5_ha_elect.bin")
	snapPath := filepath.Join("testdata", "snapshot_v3_ha.bin")
	const stamp = 1700000020000
	if *update {
		if err := os.WriteFile(cmdPath, must(StampCommand(must(EncodeCommand(fixtureHAElect())), stamp)), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(snapPath, must(EncodeSnapshot(fixtureHARing(t))), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	data := must(os.ReadFile(cmdPath))
	if data[0] != HACommandVersion {
		t.Fatalf("ha-elect fixture has version %d, want %d", data[0], HACommandVersion)
	}
	c, ts, stamped, err := DecodeStamped(data)
	if err != nil || !stamped || ts != stamp || !reflect.DeepEqual(c, fixtureHAElect()) {
		t.Fatalf("v5 fixture decodes to %+v at %d (stamped %v, err %v)", c, ts, stamped, err)
	}
	gc := ringstate.Command{Op: ringstate.OpHAGC, Member: "m", HA: &ringstate.HACommand{IdleMs: 5}}
	if v := must(StampCommand(must(EncodeCommand(gc)), stamp))[0]; v != HACommandVersion {
		t.Fatalf("ha-gc stamped as version %d, want %d", v, HACommandVersion)
	}
	if v := must(StampCommand(must(EncodeCommand(fixtureLeaseCommand())), stamp))[0]; v != LeaseCommandVersion {
		t.Fatalf("claim-compactor stamped as version %d, want %d", v, LeaseCommandVersion)
	}
	if v := must(StampCommand(must(EncodeCommand(fixtureCommand())), stamp))[0]; v != StampedCommandVersion {
		t.Fatalf("claim-tokens stamped as version %d, want %d", v, StampedCommandVersion)
	}

	snap := must(os.ReadFile(snapPath))
	r, err := DecodeSnapshot(snap)
	if err != nil {
		t.Fatalf("snapshot v3 fixture: %v", err)
	}
	want := fixtureHARing(t)
	if !reflect.DeepEqual(r.HAReplicas(), want.HAReplicas()) || r.CompactorLease() != want.CompactorLease() ||
		!reflect.DeepEqual(r.Members(), want.Members()) || r.TimeMs() != want.TimeMs() || len(r.HAReplicas()) != 2 {
		t.Fatalf("snapshot v3 fixture decodes to %+v, want %+v", r.HAReplicas(), want.HAReplicas())
	}
	if e, _ := r.HAReplica("team-b", "prom"); e.Replica != "b" || e.ElectedMs != 1700000013000 {
		t.Fatalf("failed-over entry %+v", e)
	}
	if !bytes.Equal(must(EncodeSnapshot(want)), snap) {
		t.Fatal("the HA snapshot encoding changed")
	}
	var pb ringpb.Snapshot
	if err := proto.Unmarshal(snap, &pb); err != nil || pb.GetVersion() != HASnapshotVersion {
		t.Fatalf("snapshot version %d (%v), want %d", pb.GetVersion(), err, HASnapshotVersion)
	}
	// A ring whose HA entries were all collected goes back to the older versions.
	gcd, _, err := want.Apply(gc, want.TimeMs()+1_000_000)
	if err != nil || gcd.HALen() != 0 {
		t.Fatalf("gc: %v, %d left", err, gcd.HALen())
	}
	if err := proto.Unmarshal(must(EncodeSnapshot(gcd)), &pb); err != nil || pb.GetVersion() != LeaseSnapshotVersion {
		t.Fatalf("a ring without HA entries wrote snapshot version %d (%v), want %d", pb.GetVersion(), err, LeaseSnapshotVersion)
	}
}

// TestHACodec_SnapshotRefusals: HA entries in a version 1 or 2 snapshot are not what those versions
// are; broken entries are refused, naming the problem.
func TestHACodec_SnapshotRefusals(t *testing.T) {
	var good ringpb.Snapshot
	if err := proto.Unmarshal(must(EncodeSnapshot(fixtureHARing(t))), &good); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, want string
		mut        func(s *ringpb.Snapshot)
	}{
		{"v1 with ha", "carries HA", func(s *ringpb.Snapshot) { s.Version = 1; s.CompactorLease = nil }},
		{"v2 with ha", "carries HA", func(s *ringpb.Snapshot) { s.Version = 2 }},
		{"duplicate", "appears twice", func(s *ringpb.Snapshot) { s.HaReplicas[1] = s.HaReplicas[0] }},
		{"empty replica", "replica", func(s *ringpb.Snapshot) { s.HaReplicas[0].Replica = "" }},
		{"elected after refresh", "after its refresh", func(s *ringpb.Snapshot) { s.HaReplicas[0].ElectedMs = s.HaReplicas[0].RefreshedMs + 1 }},
	} {
		s := proto.Clone(&good).(*ringpb.Snapshot)
		tc.mut(s)
		_, err := DecodeSnapshot(must(proto.Marshal(s)))
		if !errors.Is(err, ErrCorruptSnapshot) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want ErrCorruptSnapshot naming %q", tc.name, err, tc.want)
		}
	}
}

// TestHACodec_OpInOlderVersionIsRefusedAlike: an HA op in a version 2 or 3 entry (only a leader of
// an older build, re-encoding a forwarded command, could write one: it drops the ha field) is
// applied as an unknown op, as the older builds apply it, so every replica's ring stays the same.
func TestHACodec_OpInOlderVersionIsRefusedAlike(t *testing.T) {
	body := must(EncodeCommand(fixtureHAElect()))[1:]
	for _, v := range []byte{CommandVersion, StampedCommandVersion, LeaseCommandVersion} {
		data := append([]byte{v}, body...)
		if v != CommandVersion {
			data = append([]byte{v, 0, 0, 0, 0, 0, 0, 0, 1}, body...)
		}
		_, _, _, err := DecodeStamped(data)
		var operr *OpVersionError
		if !errors.As(err, &operr) || operr.MinVersion != HACommandVersion {
			t.Fatalf("version %d: %v, want *OpVersionError", v, err)
		}
		f := NewFSM(nil)
		register(t, f, 1, "a", 1000)
		res := f.Apply(&raft.Log{Index: 2, Type: raft.LogCommand, Data: data, AppendedAt: time.UnixMilli(2000)}).(*ApplyResult)
		if res.Code != ringstate.CodeInvalidCommand || f.Ring().HALen() != 0 {
			t.Fatalf("version %d: applied with %+v, %d HA entries", v, res, f.Ring().HALen())
		}
	}
	// And in version 5 it applies.
	f := NewFSM(nil)
	register(t, f, 1, "a", 1000)
	data := must(StampCommand(must(EncodeCommand(fixtureHAElect())), 5000))
	res := f.Apply(&raft.Log{Index: 2, Type: raft.LogCommand, Data: data}).(*ApplyResult)
	if e, ok := f.Ring().HAReplica("team-a", "prom-eu"); res.Code != ringstate.CodeOK || !ok || e.RefreshedMs != 5000 {
		t.Fatalf("v4 elect: %+v, entry %+v", res, e)
	}
}

// TestHAHistory_RoundTrip: the fault tests' command histories carry the HA ops and their fields.
func TestHAHistory_RoundTrip(t *testing.T) {
	for _, c := range []ringstate.Command{fixtureHAElect(), {Op: ringstate.OpHAGC, Member: "m", HA: &ringstate.HACommand{IdleMs: 9}}} {
		b, err := json.Marshal(HistoryEvent{Ev: "invoke", Cmd: NewHistoryCommand(c)})
		if err != nil {
			t.Fatal(err)
		}
		var ev HistoryEvent
		if err := json.Unmarshal(b, &ev); err != nil {
			t.Fatal(err)
		}
		got, err := ev.Command()
		if err != nil || !reflect.DeepEqual(got, c) {
			t.Fatalf("%s round-trips to %+v, %v", b, got, err)
		}
	}
}
