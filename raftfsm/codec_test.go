package raftfsm

import (
	"bytes"
	"encoding/binary"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"

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
	for _, v := range []byte{0, 2, 255} {
		data[0] = v
		_, err := DecodeCommand(data)
		var ve *VersionError
		if !errors.As(err, &ve) || !errors.Is(err, ErrUnknownVersion) || ve.Version != uint32(v) {
			t.Fatalf("version %d: got %v, want *VersionError", v, err)
		}
		if msg := err.Error(); !strings.Contains(msg, "version "+strconv.Itoa(int(v))) || !strings.Contains(msg, "[1]") {
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
	f.Add([]byte{})
	f.Add([]byte{2, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := DecodeCommand(data)
		if err != nil {
			return
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
		if err != nil {
			t.Fatalf("decode(encode(%+v)): %v", c, err)
		}
		if !reflect.DeepEqual(got, normalize(c)) {
			t.Fatalf("decode(encode(c)) = %+v, want %+v", got, c)
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
	// Version 2 is refused loudly.
	bad := append(append([]byte(nil), data...), protoVarintField(1, 2)...) // the last field 1 wins
	if _, err := DecodeSnapshot(bad); !errors.Is(err, ErrUnknownVersion) || !strings.Contains(err.Error(), "version 2") {
		t.Fatalf("version 2: got %v", err)
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
