package raftfsm

import (
	"bytes"
	"encoding/binary"
	"errors"
	"flag"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"

	"github.com/raftingest/raftingest/ringpb"
	"github.com/raftingest/raftingest/ringstate"
)

var update = flag.Bool("update", false, "rewrite the testdata fixtures (only when the format version changes)")

// normalize makes a command comparable after a round trip: the wire form does not distinguish a
// nil token list from an empty one.
func normalize(c ringstate.Command) ringstate.Command {
	if len(c.Tokens) == 0 {
		c.Tokens = nil
	}
	return c
}

func TestCodec_CommandRoundTrip(t *testing.T) {
	for _, c := range []ringstate.Command{
		{Op: ringstate.OpHeartbeat, Member: "a"},
		{Op: ringstate.OpRegister, RequestID: "r1", Member: "ing-1", RaftAddr: "127.0.0.1:1", GRPCAddr: "127.0.0.1:2", HTTPAddr: "127.0.0.1:3", Zone: "z"},
		{Op: ringstate.OpClaimTokens, Member: "x", Tokens: ringstate.Tokens{0, 1, 1 << 31, 1<<32 - 1}},
		{Op: ringstate.OpClaimTokens, Member: "x", Tokens: ringstate.Tokens{5}, Replace: true},
		{Op: ringstate.OpCompleteHandover, Member: "l", Peer: "j"},
		{},              // the zero command encodes; ringstate refuses it in Apply
		{Op: 200},       // unknown ops survive the codec; ringstate refuses them deterministically
		{Member: "ünï"}, // non-ASCII UTF-8 is fine
	} {
		data, err := EncodeCommand(c)
		if err != nil {
			t.Fatalf("encode %+v: %v", c, err)
		}
		if data[0] != CommandVersion {
			t.Fatalf("version byte %d, want %d", data[0], CommandVersion)
		}
		got, err := DecodeCommand(data)
		if err != nil {
			t.Fatalf("decode %+v: %v", c, err)
		}
		if !reflect.DeepEqual(got, normalize(c)) {
			t.Fatalf("round trip: got %+v, want %+v", got, c)
		}
	}
}

func TestCodec_EncodeCommand_RefusesInvalidUTF8(t *testing.T) {
	_, err := EncodeCommand(ringstate.Command{Op: ringstate.OpHeartbeat, Member: "a\xff"})
	if !errors.Is(err, ErrUnencodable) || !errors.Is(err, ringstate.ErrInvalidCommand) {
		t.Fatalf("got %v, want ErrUnencodable wrapping ringstate.ErrInvalidCommand", err)
	}
}

// TestCodec_DecodeCommand_RefusesUnknownVersionLoudly: a newer release's entry must never be guessed
// at; the error names the version found and the versions known.
func TestCodec_DecodeCommand_RefusesUnknownVersionLoudly(t *testing.T) {
	data, _ := EncodeCommand(ringstate.Command{Op: ringstate.OpHeartbeat, Member: "a"})
	for _, v := range []byte{0, 6, 255} {
		data[0] = v
		_, err := DecodeCommand(data)
		var ve *VersionError
		if !errors.As(err, &ve) || !errors.Is(err, ErrUnknownVersion) || ve.Version != uint32(v) {
			t.Fatalf("version %d: got %v, want *VersionError", v, err)
		}
		if msg := err.Error(); !strings.Contains(msg, "version "+strconv.Itoa(int(v))) || !strings.Contains(msg, "[1 2 3 4 5]") {
			t.Fatalf("message %q does not name version %d and the known versions", msg, v)
		}
	}
}

func TestCodec_DecodeCommand_RefusesGarbage(t *testing.T) {
	for name, data := range map[string][]byte{
		"nil":             nil,
		"empty":           {},
		"bad varint":      {1, 0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff},
		"truncated":       {1, 0x12, 0x05, 'a'},
		"bad wire type":   {1, 0x0f},
		"op out of range": append([]byte{1}, protoVarintField(1, 256)...),
		"negative op":     append([]byte{1}, protoVarintField(1, ^uint64(0))...),
		"invalid utf8":    {1, 0x1a, 0x01, 0xff},
	} {
		if _, err := DecodeCommand(data); err == nil {
			t.Errorf("%s: decoded garbage without error", name)
		}
	}
}

func protoVarintField(field int, v uint64) []byte {
	b := binary.AppendUvarint(nil, uint64(field<<3))
	return binary.AppendUvarint(b, v)
}

func FuzzDecodeCommand(f *testing.F) {
	for _, c := range []ringstate.Command{
		{Op: ringstate.OpRegister, RequestID: "r", Member: "m", RaftAddr: "127.0.0.1:1"},
		{Op: ringstate.OpClaimTokens, Member: "m", Tokens: ringstate.Tokens{1, 2, 3}},
	} {
		data, _ := EncodeCommand(c)
		f.Add(data)
	}
	stamped, _ := StampCommand(must(EncodeCommand(ringstate.Command{Op: ringstate.OpHeartbeat, Member: "m"})), 1700000000000)
	f.Add(stamped)
	f.Add([]byte{})
	f.Add([]byte{2, 0})
	f.Add([]byte{3, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		c, ts, isStamped, err := DecodeStamped(data)
		if err != nil {
			return
		}
		if c2, err := DecodeCommand(data); err != nil || !reflect.DeepEqual(c, c2) {
			t.Fatalf("DecodeCommand disagrees with DecodeStamped: %+v, %v vs %+v", c2, err, c)
		}
		if isStamped {
			// A stamped entry re-stamps to the same command and time.
			enc, err := EncodeCommand(c)
			if err != nil {
				t.Fatalf("decoded command does not re-encode: %+v: %v", c, err)
			}
			st, err := StampCommand(enc, ts)
			if err != nil {
				t.Fatal(err)
			}
			c3, ts3, ok3, err := DecodeStamped(st)
			if err != nil || !ok3 || ts3 != ts || !reflect.DeepEqual(c3, c) {
				t.Fatalf("re-stamped entry decodes to %+v at %d (stamped %v, %v), want %+v at %d", c3, ts3, ok3, err, c, ts)
			}
		} else if ts != 0 {
			t.Fatalf("unstamped entry reports time %d", ts)
		}
		// encode(decode(x)) is stable: a decoded command re-encodes, and that encoding is a fixed point.
		enc, err := EncodeCommand(c)
		if err != nil {
			t.Fatalf("decoded command does not re-encode: %+v: %v", c, err)
		}
		c2, err := DecodeCommand(enc)
		if err != nil {
			t.Fatalf("re-encoded command does not decode: %v", err)
		}
		if !reflect.DeepEqual(c, c2) {
			t.Fatalf("decode(encode(decode(x))) = %+v, want %+v", c2, c)
		}
		enc2, _ := EncodeCommand(c2)
		if !bytes.Equal(enc, enc2) {
			t.Fatalf("encoding not stable: %x vs %x", enc, enc2)
		}
	})
}

// FuzzCommandRoundTrip builds commands from fuzz input: decode(encode(c)) == c.
func FuzzCommandRoundTrip(f *testing.F) {
	f.Add(uint8(1), "req", "member", "peer", "127.0.0.1:1", "127.0.0.1:2", "", "zone", []byte{1, 2, 3, 4}, false)
	f.Add(uint8(ringstate.OpClaimCompactor), "", "member", "", "", "", "", "", []byte(nil), false)
	f.Fuzz(func(t *testing.T, op uint8, req, member, peer, raftAddr, grpcAddr, httpAddr, zone string, tok []byte, replace bool) {
		c := ringstate.Command{Op: ringstate.Op(op), RequestID: req, Member: ringstate.MemberID(member),
			Peer: ringstate.MemberID(peer), RaftAddr: raftAddr, GRPCAddr: grpcAddr, HTTPAddr: httpAddr, Zone: zone,
			Replace: replace}
		for len(tok) >= 4 {
			c.Tokens = append(c.Tokens, ringstate.Token(binary.LittleEndian.Uint32(tok)))
			tok = tok[4:]
		}
		data, err := EncodeCommand(c)
		if err != nil {
			if !errors.Is(err, ErrUnencodable) {
				t.Fatalf("unexpected encode error %v", err)
			}
			return // a string that is not UTF-8
		}
		got, err := DecodeCommand(data)
		if c.Op == ringstate.OpClaimCompactor {
			// Not in an unstamped (version 1) entry: only version 3 carries it.
			var operr *OpVersionError
			if !errors.As(err, &operr) {
				t.Fatalf("decode(encode(%+v)) as version 1: %v, want an *OpVersionError", c, err)
			}
		} else if err != nil {
			t.Fatalf("decode(encode(%+v)): %v", c, err)
		} else if !reflect.DeepEqual(got, normalize(c)) {
			t.Fatalf("decode(encode(c)) = %+v, want %+v", got, c)
		}
		// The stamped form, as a leader writes it, round-trips for every op.
		got, err = DecodeCommand(must(StampCommand(data, 1)))
		if err != nil {
			t.Fatalf("decode(stamp(encode(%+v))): %v", c, err)
		}
		if !reflect.DeepEqual(got, normalize(c)) {
			t.Fatalf("decode(stamp(encode(c))) = %+v, want %+v", got, c)
		}
	})
}

// fixtureRing is the ring the snapshot fixture holds; fixtureCommand the command fixture. Changing
// either without bumping a version is a compatibility break.
func fixtureCommand() ringstate.Command {
	return ringstate.Command{Op: ringstate.OpClaimTokens, RequestID: "fixture-req-1", Member: "ingester-1",
		Tokens: ringstate.Tokens{7, 1 << 20, 4000000000}}
}

func fixtureRing(t *testing.T) *ringstate.Ring {
	t.Helper()
	r := ringstate.New()
	apply := func(c ringstate.Command, now int64) {
		t.Helper()
		var err error
		if r, _, err = r.Apply(c, now); err != nil {
			t.Fatalf("%+v: %v", c, err)
		}
	}
	apply(ringstate.Command{Op: ringstate.OpRegister, RequestID: "a1", Member: "ingester-1", RaftAddr: "10.0.0.1:9095", GRPCAddr: "10.0.0.1:9096", HTTPAddr: "10.0.0.1:8080", Zone: "a"}, 1700000000000)
	apply(fixtureCommand(), 1700000001000)
	apply(ringstate.Command{Op: ringstate.OpActivate, Member: "ingester-1"}, 1700000002000)
	apply(ringstate.Command{Op: ringstate.OpRegister, Member: "ingester-2", RaftAddr: "10.0.0.2:9095"}, 1700000003000)
	// A refusal with a request id is remembered too.
	r2, _, err := r.Apply(ringstate.Command{Op: ringstate.OpActivate, RequestID: "a2", Member: "ingester-2"}, 1700000004000)
	if err == nil {
		t.Fatal("activate of a PENDING member without tokens succeeded")
	}
	return r2
}

func TestCodec_Fixtures_Version1StillDecode(t *testing.T) {
	cmdPath := filepath.Join("testdata", "command_v1.bin")
	snapPath := filepath.Join("testdata", "snapshot_v1.bin")
	if *update {
		data, err := EncodeCommand(fixtureCommand())
		if err != nil {
			t.Fatal(err)
		}
		snap, err := EncodeSnapshot(fixtureRing(t))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(cmdPath, data, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(snapPath, snap, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	data, err := os.ReadFile(cmdPath)
	if err != nil {
		t.Fatal(err)
	}
	c, err := DecodeCommand(data)
	if err != nil {
		t.Fatalf("command fixture: %v", err)
	}
	if !reflect.DeepEqual(c, fixtureCommand()) {
		t.Fatalf("command fixture decodes to %+v, want %+v", c, fixtureCommand())
	}
	snap, err := os.ReadFile(snapPath)
	if err != nil {
		t.Fatal(err)
	}
	r, err := DecodeSnapshot(snap)
	if err != nil {
		t.Fatalf("snapshot fixture: %v", err)
	}
	want := fixtureRing(t)
	if !reflect.DeepEqual(r.Members(), want.Members()) || r.TimeMs() != want.TimeMs() || !reflect.DeepEqual(r.Recent(), want.Recent()) {
		t.Fatalf("snapshot fixture decodes to\n%+v %d %+v\nwant\n%+v %d %+v", r.Members(), r.TimeMs(), r.Recent(),
			want.Members(), want.TimeMs(), want.Recent())
	}
	if len(r.Recent()) != 3 || r.Recent()[2].Code != ringstate.CodeInvalidTokens {
		t.Fatalf("request memory not restored: %+v", r.Recent())
	}
}

func TestCodec_Snapshot_RoundTripAndRefusals(t *testing.T) {
	r := fixtureRing(t)
	data, err := EncodeSnapshot(r)
	if err != nil {
		t.Fatal(err)
	}
	again, err := EncodeSnapshot(mustDecodeSnapshot(t, data))
	if err != nil || !bytes.Equal(data, again) {
		t.Fatalf("snapshot re-encoding differs (err %v)", err)
	}
	// Version 4 is refused loudly.
	bad := append(append([]byte(nil), data...), protoVarintField(1, 4)...) // the last field 1 wins
	if _, err := DecodeSnapshot(bad); !errors.Is(err, ErrUnknownVersion) || !strings.Contains(err.Error(), "version 4") {
		t.Fatalf("version 4: got %v", err)
	}
	// No version at all (an empty file) is version 0: refused.
	if _, err := DecodeSnapshot(nil); !errors.Is(err, ErrUnknownVersion) {
		t.Fatalf("empty: got %v", err)
	}
	if _, err := DecodeSnapshot([]byte{0xff, 0xff}); !errors.Is(err, ErrCorruptSnapshot) {
		t.Fatalf("garbage: got %v", err)
	}
}

func mustDecodeSnapshot(t *testing.T, data []byte) *ringstate.Ring {
	t.Helper()
	r, err := DecodeSnapshot(data)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// TestCodec_StampCommand_RoundTrip: a stamped entry carries the command and the stamp exactly,
// including extreme and negative stamps (a leader's clock may be anywhere; Apply copes).
func TestCodec_StampCommand_RoundTrip(t *testing.T) {
	c := ringstate.Command{Op: ringstate.OpRegister, RequestID: "r1", Member: "ing-1", RaftAddr: "127.0.0.1:1", Zone: "z"}
	plain, err := EncodeCommand(c)
	if err != nil {
		t.Fatal(err)
	}
	keep := bytes.Clone(plain)
	for _, ts := range []int64{1700000000123, 0, -1, math.MaxInt64, math.MinInt64} {
		data, err := StampCommand(plain, ts)
		if err != nil {
			t.Fatalf("stamp %d: %v", ts, err)
		}
		if data[0] != StampedCommandVersion || len(data) != len(plain)+stampLen {
			t.Fatalf("stamp %d: version %d, %d bytes; want version %d, %d bytes", ts, data[0], len(data),
				StampedCommandVersion, len(plain)+stampLen)
		}
		got, gotTs, stamped, err := DecodeStamped(data)
		if err != nil || !stamped || gotTs != ts || !reflect.DeepEqual(got, c) {
			t.Fatalf("stamp %d: decoded %+v at %d (stamped %v, err %v)", ts, got, gotTs, stamped, err)
		}
		if got, err := DecodeCommand(data); err != nil || !reflect.DeepEqual(got, c) {
			t.Fatalf("stamp %d: DecodeCommand gave %+v, %v", ts, got, err)
		}
	}
	if !bytes.Equal(plain, keep) {
		t.Fatal("StampCommand modified its input")
	}
	// An unstamped entry decodes as such.
	if _, ts, stamped, err := DecodeStamped(plain); err != nil || stamped || ts != 0 {
		t.Fatalf("unstamped: time %d, stamped %v, err %v", ts, stamped, err)
	}
}

// TestCodec_StampCommand_RefusesWhatIsNotUnstamped: a stamp is never replaced, and garbage is not
// turned into a valid-looking entry.
func TestCodec_StampCommand_RefusesWhatIsNotUnstamped(t *testing.T) {
	plain := must(EncodeCommand(ringstate.Command{Op: ringstate.OpHeartbeat, Member: "a"}))
	stamped := must(StampCommand(plain, 5))
	for name, data := range map[string][]byte{"nil": nil, "stamped": stamped, "version 3": {3, 0}} {
		if _, err := StampCommand(data, 7); !errors.Is(err, ErrCorruptCommand) {
			t.Errorf("%s: got %v, want ErrCorruptCommand", name, err)
		}
	}
}

// TestCodec_DecodeStamped_RefusesTruncatedStamp: a version-2 entry shorter than its stamp is corrupt,
// not a command at some arbitrary time.
func TestCodec_DecodeStamped_RefusesTruncatedStamp(t *testing.T) {
	stamped := must(StampCommand(must(EncodeCommand(ringstate.Command{Op: ringstate.OpHeartbeat, Member: "a"})), 1234))
	for n := 1; n < 1+stampLen; n++ {
		if _, _, _, err := DecodeStamped(stamped[:n]); !errors.Is(err, ErrCorruptCommand) {
			t.Fatalf("%d bytes: got %v, want ErrCorruptCommand", n, err)
		}
	}
	// A stamp followed by an empty protobuf is the zero command, as for version 1.
	if c, ts, ok, err := DecodeStamped(stamped[:1+stampLen]); err != nil || !ok || ts != 1234 || !reflect.DeepEqual(c, ringstate.Command{}) {
		t.Fatalf("stamp only: %+v at %d (%v, %v)", c, ts, ok, err)
	}
}

// TestCodec_DecodeLog_TimeOfEachEntryKind: the ring time FSM.Apply uses for each kind of entry — the
// stamp wins over AppendedAt; an old (unstamped) entry uses AppendedAt; one with neither keeps the
// current ring time.
func TestCodec_DecodeLog_TimeOfEachEntryKind(t *testing.T) {
	plain := must(EncodeCommand(ringstate.Command{Op: ringstate.OpHeartbeat, Member: "a"}))
	stamped := must(StampCommand(plain, 5000))
	at := time.UnixMilli(9000)
	for _, tc := range []struct {
		name string
		l    raft.Log
		want int64
	}{
		{"stamped, with AppendedAt", raft.Log{Data: stamped, AppendedAt: at}, 5000},
		{"stamped, no AppendedAt", raft.Log{Data: stamped}, 5000},
		{"unstamped, with AppendedAt", raft.Log{Data: plain, AppendedAt: at}, 9000},
		{"unstamped, no AppendedAt", raft.Log{Data: plain}, 42},
	} {
		c, got, err := DecodeLog(&tc.l, 42)
		if err != nil || got != tc.want || c.Member != "a" {
			t.Errorf("%s: time %d (member %q, err %v), want %d", tc.name, got, c.Member, err, tc.want)
		}
	}
	var ve *VersionError
	if _, got, err := DecodeLog(&raft.Log{Data: []byte{9}, AppendedAt: at}, 42); !errors.As(err, &ve) || got != 42 {
		t.Fatalf("unknown version: time %d, err %v", got, err)
	}
}

// TestCodec_Fixtures_StampedVersion2StillDecode keeps the version-2 layout readable: byte 2, the
// big-endian stamp, the version-1 protobuf.
func TestCodec_Fixtures_StampedVersion2StillDecode(t *testing.T) {
	path := filepath.Join("testdata", "command_v2.bin")
	const stamp = 1700000001234
	if *update {
		data, err := StampCommand(must(EncodeCommand(fixtureCommand())), stamp)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	c, ts, stamped, err := DecodeStamped(data)
	if err != nil || !stamped || ts != stamp || !reflect.DeepEqual(c, fixtureCommand()) {
		t.Fatalf("v2 fixture decodes to %+v at %d (stamped %v, err %v), want %+v at %d", c, ts, stamped, err,
			fixtureCommand(), int64(stamp))
	}
	v1, err := os.ReadFile(filepath.Join("testdata", "command_v1.bin"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(data[1+stampLen:], v1[1:]) {
		t.Fatal("the v2 fixture's protobuf differs from the v1 fixture's: the command encoding changed")
	}
}

func fixtureLeaseCommand() ringstate.Command {
	return ringstate.Command{Op: ringstate.OpClaimCompactor, RequestID: "fixture-lease-1", Member: "ingester-1",
		LeaseMs: 60_000}
}

func fixtureLeaseRing(t *testing.T) *ringstate.Ring {
	t.Helper()
	// The fixture's claim as a leader proposes it today, naming every member as a reader. (The
	// command_v3.bin fixture is the same claim as the first lease build wrote it, without readers:
	// this build refuses it and builds no lease from it — TestFSM_FirstLeaseBuildClaimRefused.)
	r0 := fixtureRing(t)
	claim := fixtureLeaseCommand()
	claim.Readers = r0.MemberIDs()
	r, _, err := r0.Apply(claim, 1700000005000)
	if err != nil {
		t.Fatal(err)
	}
	// A refused claim (ingester-2 is PENDING) is remembered with its code too.
	r, _, err = r.Apply(ringstate.Command{Op: ringstate.OpClaimCompactor, RequestID: "fixture-lease-2",
		Member: "ingester-2", LeaseMs: 1, Readers: r.MemberIDs()}, 1700000006000)
	if err == nil {
		t.Fatal("a PENDING member got the lease")
	}
	return r
}

// TestCodec_Fixtures_LeaseVersions keeps the formats the compactor lease added readable: command
// version 3 (a stamped claim-compactor) and snapshot version 2 (with the lease), and checks that
// everything else is still written in the versions older builds read.
func TestCodec_Fixtures_LeaseVersions(t *testing.T) {
	cmdPath := filepath.Join("testdata", "command_v3.bin")
	snapPath := filepath.Join("testdata", "snapshot_v2.bin")
	const stamp = 1700000005000
	if *update {
		data, err := StampCommand(must(EncodeCommand(fixtureLeaseCommand())), stamp)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(cmdPath, data, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(snapPath, must(EncodeSnapshot(fixtureLeaseRing(t))), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	data, err := os.ReadFile(cmdPath)
	if err != nil {
		t.Fatal(err)
	}
	if data[0] != LeaseCommandVersion {
		t.Fatalf("claim-compactor fixture has version %d, want %d", data[0], LeaseCommandVersion)
	}
	c, ts, stamped, err := DecodeStamped(data)
	if err != nil || !stamped || ts != stamp || !reflect.DeepEqual(c, fixtureLeaseCommand()) {
		t.Fatalf("v3 fixture decodes to %+v at %d (stamped %v, err %v)", c, ts, stamped, err)
	}
	// Only a lease claim takes version 3: any other command is stamped as version 2, which builds
	// before the lease read.
	if v := must(StampCommand(must(EncodeCommand(fixtureCommand())), stamp))[0]; v != StampedCommandVersion {
		t.Fatalf("claim-tokens stamped as version %d, want %d", v, StampedCommandVersion)
	}

	snap, err := os.ReadFile(snapPath)
	if err != nil {
		t.Fatal(err)
	}
	r, err := DecodeSnapshot(snap)
	if err != nil {
		t.Fatalf("snapshot v2 fixture: %v", err)
	}
	want := fixtureLeaseRing(t)
	if r.CompactorLease() != want.CompactorLease() || r.CompactorLease().Epoch != 1 ||
		!reflect.DeepEqual(r.Members(), want.Members()) || !reflect.DeepEqual(r.Recent(), want.Recent()) {
		t.Fatalf("snapshot v2 fixture decodes to lease %+v recent %+v, want %+v %+v", r.CompactorLease(), r.Recent(),
			want.CompactorLease(), want.Recent())
	}
	if !bytes.Equal(must(EncodeSnapshot(want)), snap) {
		t.Fatal("the lease snapshot encoding changed")
	}

	// The version-1 snapshot fixture (no lease) restores with no lease, and a ring without one is
	// still written as version 1.
	v1, err := os.ReadFile(filepath.Join("testdata", "snapshot_v1.bin"))
	if err != nil {
		t.Fatal(err)
	}
	old, err := DecodeSnapshot(v1)
	if err != nil || old.CompactorLease() != (ringstate.CompactorLease{}) {
		t.Fatalf("v1 snapshot: lease %+v, err %v", old.CompactorLease(), err)
	}
	if !bytes.Equal(must(EncodeSnapshot(old)), v1) {
		t.Fatal("a ring without a lease no longer encodes as the version-1 snapshot")
	}
}

// TestFSM_FirstLeaseBuildClaimRefused applies testdata/command_v3.bin — a claim as the first lease
// build (commits 354fc4d up to 3e658c8, never released) wrote it, with no readers — to the ring it
// was written against, and pins what this build does with it: refused with ErrMixedVersions
// (CodeMixedVersions, naming both members, since no reader is named), no lease, the refusal
// remembered under the claim's request id, ring time moved to the entry's stamp — deterministically,
// so every replica of this build computes the same ring from such a log (the first lease build
// granted it: a cluster that ran that build cannot be upgraded in place; raftfsm/DESIGN.md, "Mixed
// versions"). The same claim naming every member is granted, so readers are the only difference.
func TestFSM_FirstLeaseBuildClaimRefused(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("testdata", "command_v3.bin"))
	if err != nil {
		t.Fatal(err)
	}
	const stamp = 1700000005000
	restored := func(t *testing.T) *FSM {
		t.Helper()
		f := NewFSM(nil)
		if err := f.Restore(nopCloser{bytes.NewReader(must(EncodeSnapshot(fixtureRing(t))))}); err != nil {
			t.Fatal(err)
		}
		return f
	}
	f := restored(t)
	res := f.Apply(entry(10, data)).(*ApplyResult)
	if res.Code != ringstate.CodeMixedVersions || !errors.Is(res.Err(), ringstate.ErrMixedVersions) ||
		!strings.Contains(res.Message, "[ingester-1 ingester-2]") {
		t.Fatalf("the first lease build's claim: %+v, want refused with ErrMixedVersions naming every member", res)
	}
	r := f.Ring()
	if r.CompactorLease() != (ringstate.CompactorLease{}) || r.LeaseEverGranted() {
		t.Fatalf("lease %+v after the refused claim, want none", r.CompactorLease())
	}
	if r.TimeMs() != stamp {
		t.Fatalf("ring time %d, want the entry's stamp %d", r.TimeMs(), int64(stamp))
	}
	rec := r.Recent()
	if last := rec[len(rec)-1]; last.RequestID != fixtureLeaseCommand().RequestID || last.Code != ringstate.CodeMixedVersions {
		t.Fatalf("request memory ends with %+v, want %s refused with CodeMixedVersions", last, fixtureLeaseCommand().RequestID)
	}
	// Two replicas applying it agree byte for byte.
	g := restored(t)
	g.Apply(entry(10, data))
	if !bytes.Equal(must(EncodeSnapshot(f.Ring())), must(EncodeSnapshot(g.Ring()))) {
		t.Fatal("two replicas applying the fixture disagree")
	}

	withReaders := fixtureLeaseCommand()
	withReaders.Readers = fixtureRing(t).MemberIDs()
	h := restored(t)
	if res := h.Apply(entry(10, stamped(t, withReaders, stamp))).(*ApplyResult); res.Code != ringstate.CodeOK ||
		h.Ring().CompactorLease().Holder != "ingester-1" {
		t.Fatalf("the same claim naming every member: %+v, lease %+v", res, h.Ring().CompactorLease())
	}
}

// TestCodec_Snapshot_VersionsAndLease: a version-1 snapshot carrying a lease, or remembering an
// outcome code newer than version 1 knows, is corrupt; a lease that breaks an invariant is refused.
func TestCodec_Snapshot_VersionsAndLease(t *testing.T) {
	r := fixtureLeaseRing(t)
	var pb ringpb.Snapshot
	if err := proto.Unmarshal(must(EncodeSnapshot(r)), &pb); err != nil {
		t.Fatal(err)
	}
	if pb.GetVersion() != LeaseSnapshotVersion {
		t.Fatalf("snapshot with a lease has version %d", pb.GetVersion())
	}
	for name, mutate := range map[string]func(p *ringpb.Snapshot){
		"v1 with a lease": func(p *ringpb.Snapshot) { p.Version = SnapshotVersion; p.Recent = p.Recent[:3] },
		"v1 with lease code": func(p *ringpb.Snapshot) {
			p.Version, p.CompactorLease = SnapshotVersion, nil
			p.Recent[len(p.Recent)-1].Code = uint32(ringstate.CodeLeaseHeld)
		},
		"holder, no epoch": func(p *ringpb.Snapshot) { p.CompactorLease.Epoch = 0 },
		"epoch, no holder": func(p *ringpb.Snapshot) { p.CompactorLease.Holder = "" },
		"unknown code":     func(p *ringpb.Snapshot) { p.Recent[0].Code = uint32(ringstate.MaxCode) + 1 },
	} {
		c := proto.Clone(&pb).(*ringpb.Snapshot)
		mutate(c)
		data, err := proto.Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := DecodeSnapshot(data); !errors.Is(err, ErrCorruptSnapshot) {
			t.Errorf("%s: err %v, want ErrCorruptSnapshot", name, err)
		}
	}
}
