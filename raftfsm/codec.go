package raftfsm

import (
	"errors"
	"fmt"
	"math"
	"unicode/utf8"

	"google.golang.org/protobuf/proto"

	"github.com/raftingest/raftingest/ringpb"
	"github.com/raftingest/raftingest/ringstate"
)

// CommandVersion is the format-version byte that starts the Data of every Raft log entry this package
// writes. It is bumped only when the framing itself changes; new Command fields are added to the
// protobuf message compatibly without a bump.
const CommandVersion byte = 1

// SnapshotVersion is the version field of every snapshot this package writes.
const SnapshotVersion uint32 = 1

// knownCommandVersions and knownSnapshotVersions are what this build can read. A reader refuses
// anything else: an old binary must never guess at a newer format and apply it differently from the
// replicas that understand it.
var (
	knownCommandVersions  = []uint32{uint32(CommandVersion)}
	knownSnapshotVersions = []uint32{SnapshotVersion}
)

// Errors returned by the codec. Every decode failure wraps exactly one of these.
var (
	// ErrUnknownVersion is a log entry or snapshot written in a format this build does not know,
	// typically by a newer release. It is returned as a *VersionError.
	ErrUnknownVersion = errors.New("raftfsm: unknown format version")
	// ErrCorruptCommand is a log entry whose payload cannot be decoded.
	ErrCorruptCommand = errors.New("raftfsm: corrupt command")
	// ErrCorruptSnapshot is a snapshot that cannot be decoded or that breaks a ring invariant.
	ErrCorruptSnapshot = errors.New("raftfsm: corrupt snapshot")
	// ErrUnencodable is a command that cannot be put on the wire (a string that is not valid UTF-8,
	// which protobuf refuses). It also wraps ringstate.ErrInvalidCommand, so it reads as a refusal.
	ErrUnencodable = errors.New("raftfsm: command cannot be encoded")
)

// VersionError names the version found and the versions this build reads. It wraps ErrUnknownVersion.
type VersionError struct {
	What    string // "command" or "snapshot"
	Version uint32
	Known   []uint32
}

func (e *VersionError) Error() string {
	return fmt.Sprintf("raftfsm: %s format version %d is unknown (this build reads versions %v); "+
		"was it written by a newer release?", e.What, e.Version, e.Known)
}

// Unwrap makes errors.Is(err, ErrUnknownVersion) true.
func (e *VersionError) Unwrap() error { return ErrUnknownVersion }

// EncodeCommand returns the Data of a Raft log entry carrying cmd: the byte CommandVersion followed
// by the protobuf ringpb.Command. It fails only for a command holding a string that is not valid
// UTF-8 (protobuf strings must be); the error wraps ErrUnencodable and ringstate.ErrInvalidCommand.
//
// An encoder that could not fail would have to panic or silently alter such a command.
func EncodeCommand(cmd ringstate.Command) ([]byte, error) {
	for _, s := range []string{cmd.RequestID, string(cmd.Member), string(cmd.Peer), cmd.RaftAddr,
		cmd.GRPCAddr, cmd.HTTPAddr, cmd.Zone} {
		if !utf8.ValidString(s) {
			return nil, fmt.Errorf("%w: %w: %s %q: field %q is not valid UTF-8", ErrUnencodable,
				ringstate.ErrInvalidCommand, cmd.Op, cmd.Member, s)
		}
	}
	pb := ringpb.FromCommand(&cmd)
	out := make([]byte, 1, 1+proto.Size(pb))
	out[0] = CommandVersion
	out, err := proto.MarshalOptions{Deterministic: true}.MarshalAppend(out, pb)
	if err != nil { // unreachable after the UTF-8 check; kept so a future field cannot panic us
		return nil, fmt.Errorf("%w: %w: %v", ErrUnencodable, ringstate.ErrInvalidCommand, err)
	}
	return out, nil
}

// DecodeCommand is the inverse of EncodeCommand. It never panics: empty input, an unknown version
// byte (*VersionError) and undecodable protobuf are errors. It does not check that the command makes
// sense — ringstate's Apply refuses bad commands deterministically — but it refuses op values that
// do not fit ringstate.Op, which would otherwise alias a valid op after truncation.
func DecodeCommand(data []byte) (ringstate.Command, error) {
	if len(data) == 0 {
		return ringstate.Command{}, fmt.Errorf("%w: empty entry", ErrCorruptCommand)
	}
	if data[0] != CommandVersion {
		return ringstate.Command{}, &VersionError{What: "command", Version: uint32(data[0]), Known: knownCommandVersions}
	}
	var pb ringpb.Command
	if err := proto.Unmarshal(data[1:], &pb); err != nil {
		return ringstate.Command{}, fmt.Errorf("%w: %d bytes: %v", ErrCorruptCommand, len(data), err)
	}
	if op := int32(pb.GetOp()); op < 0 || op > math.MaxUint8 {
		return ringstate.Command{}, fmt.Errorf("%w: op %d out of range", ErrCorruptCommand, op)
	}
	return ringpb.ToCommand(&pb), nil
}

// EncodeSnapshot encodes the whole ring (members, ring time, remembered request outcomes) as a
// ringpb.Snapshot of version SnapshotVersion. Two equal rings encode to the same bytes: members are
// kept sorted by ID, the request memory in apply order, and marshalling is deterministic.
func EncodeSnapshot(r *ringstate.Ring) ([]byte, error) {
	recent := r.Recent()
	pb := &ringpb.Snapshot{
		Version: SnapshotVersion,
		TimeMs:  r.TimeMs(),
		Members: ringpb.FromRing(r),
		Recent:  make([]*ringpb.AppliedRequest, len(recent)),
	}
	for i, a := range recent {
		pb.Recent[i] = &ringpb.AppliedRequest{RequestId: a.RequestID, Code: uint32(a.Code), Message: a.Message}
	}
	out, err := proto.MarshalOptions{Deterministic: true}.Marshal(pb)
	if err != nil {
		return nil, fmt.Errorf("raftfsm: encode snapshot: %w", err)
	}
	return out, nil
}

// DecodeSnapshot is the inverse of EncodeSnapshot. It refuses unknown versions (*VersionError), and
// snapshots that do not decode or that break a ring invariant (ErrCorruptSnapshot, naming what is
// wrong), so a corrupt snapshot is never served.
func DecodeSnapshot(data []byte) (*ringstate.Ring, error) {
	var pb ringpb.Snapshot
	if err := proto.Unmarshal(data, &pb); err != nil {
		return nil, fmt.Errorf("%w: %d bytes: %v", ErrCorruptSnapshot, len(data), err)
	}
	if pb.GetVersion() != SnapshotVersion {
		return nil, &VersionError{What: "snapshot", Version: pb.GetVersion(), Known: knownSnapshotVersions}
	}
	members := make([]ringstate.Member, len(pb.GetMembers()))
	for i, m := range pb.GetMembers() {
		members[i] = ringpb.ToMember(m)
	}
	recent := make([]ringstate.Applied, len(pb.GetRecent()))
	for i, a := range pb.GetRecent() {
		if a.GetCode() > uint32(ringstate.CodeInvalidCommand) {
			return nil, fmt.Errorf("%w: remembered request %d (%q) has unknown outcome code %d",
				ErrCorruptSnapshot, i, a.GetRequestId(), a.GetCode())
		}
		if a.GetRequestId() == "" {
			return nil, fmt.Errorf("%w: remembered request %d has no request id", ErrCorruptSnapshot, i)
		}
		recent[i] = ringstate.Applied{RequestID: a.GetRequestId(), Code: ringstate.Code(a.GetCode()), Message: a.GetMessage()}
	}
	r, err := ringstate.Restore(members, pb.GetTimeMs(), recent)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrCorruptSnapshot, err)
	}
	return r, nil
}
