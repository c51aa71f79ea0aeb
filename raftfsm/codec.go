package raftfsm

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"unicode/utf8"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"

	"github.com/raftingest/raftingest/ringpb"
	"github.com/raftingest/raftingest/ringstate"
)

// CommandVersion is the format-version byte of an unstamped command, as EncodeCommand returns it:
// the form a command has before a leader proposes it, and the form of every entry written before
// ring-time stamps existed. Such an entry is applied at the entry's raft.Log.AppendedAt. New Command
// fields that do not change what Apply does are added to the protobuf message without a bump; a
// field that does needs a new version (see DESIGN.md).
const CommandVersion byte = 1

// StampedCommandVersion is the format-version byte of a stamped command: the version byte, the ring
// time the proposing leader stamped (int64 Unix milliseconds, big-endian, 8 bytes), then the same
// protobuf Command as version 1. Every entry a Node proposes has this form (see StampCommand). It is a
// version of its own, not a new protobuf field, because the stamp changes what Apply does: a replica
// that ignored it would apply the entry at AppendedAt and its ring would silently differ from the
// others'; a replica that does not know version 2 halts instead (see FSM.Apply).
const StampedCommandVersion byte = 2

// LeaseCommandVersion is the format-version byte of a stamped command that claims the compactor
// lease (ringstate.OpClaimCompactor): the same layout as StampedCommandVersion. It is a version of
// its own because a build that predates the lease would refuse the op as unknown and keep no lease,
// so its ring would silently differ from the others' from that entry on; a version byte it does not
// know halts it instead, with the upgrade message. Halting is safe only if no such replica exists:
// so no first claim is proposed until every member advertises this version and every Raft server
// is a member (Node.admitClaim; after the first grant no such replica can apply the log anyway; see
// DESIGN.md, "Mixed versions"). Every other command keeps version 2, so a cluster that never
// compacts stays readable by the builds before the lease. The op is refused in any other version
// (opMinVersion): the version byte is the leader's build's choice, not the op's.
const LeaseCommandVersion byte = 3

// HeartbeatBatchCommandVersion is the format-version byte of a heartbeat batch
// (ringstate.OpHeartbeatBatch): the version byte, the 8-byte ring-time stamp as in
// StampedCommandVersion, then the beats in a format of their own (see EncodeHeartbeatBatch), not
// a protobuf Command. Only a leader writes it, always stamped. A build before it halts on it, so a
// leader proposes a batch only while every member advertises this version and every Raft server
// is a member (Node.batchAllowed); otherwise it proposes the heartbeats one by one, as version 2
// entries, which every build reads.
const HeartbeatBatchCommandVersion byte = 4

// MaxCommandVersion is the highest command version this build reads: what a Node advertises for its
// own member in every Register and Heartbeat it sends (ringstate.Command.CommandVersion), so that
// a leader proposes a version only once every member reads it (see DESIGN.md, "Mixed versions").
const MaxCommandVersion = HACommandVersion

// Compile-time checks that ringstate's gates and this codec name the same versions.
var (
	_ = [1]struct{}{}[uint32(LeaseCommandVersion)-ringstate.LeaseCommandVersion]
	_ = [1]struct{}{}[uint32(HeartbeatBatchCommandVersion)-ringstate.HeartbeatBatchCommandVersion]
)

// stampLen is the length of the ring-time stamp that follows the version byte of a stamped command.
const stampLen = 8

// SnapshotVersion is the version field of a snapshot of a ring without a compactor lease (and
// without an outcome code newer than the lease): what every build reads.
const SnapshotVersion uint32 = 1

// LeaseSnapshotVersion is the version field of a snapshot that carries the compactor lease (field
// compactor_lease) or remembers an outcome code added with it. A build before the lease would drop
// the field silently and serve a ring without the lease; an unknown version makes it refuse the
// snapshot instead.
const LeaseSnapshotVersion uint32 = 2

// knownCommandVersions and knownSnapshotVersions are what this build can read. A reader refuses
// anything else: an old binary must never guess at a newer format and apply it differently from the
// replicas that understand it.
var (
	knownCommandVersions = []uint32{uint32(CommandVersion), uint32(StampedCommandVersion), uint32(LeaseCommandVersion),
		uint32(HeartbeatBatchCommandVersion), uint32(HACommandVersion)}
	knownSnapshotVersions = []uint32{SnapshotVersion, LeaseSnapshotVersion, HASnapshotVersion}
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

// OpVersionError is an entry whose command version predates its op (a claim of the compactor lease
// in a version 1 or 2 entry): no build that knows the op writes it so, and a build from before the
// op refuses it as unknown. It wraps ErrCorruptCommand.
type OpVersionError struct {
	Op         ringstate.Op
	Version    byte // the entry's
	MinVersion byte // the first version that carries Op
}

func (e *OpVersionError) Error() string {
	return fmt.Sprintf("%v: %s in a version %d entry: only entries of version %d or later carry it",
		ErrCorruptCommand, e.Op, e.Version, e.MinVersion)
}

// Unwrap makes errors.Is(err, ErrCorruptCommand) true.
func (e *OpVersionError) Unwrap() error { return ErrCorruptCommand }

// opMinVersion is the first command version that may carry op. An op added after version 1 gets
// the version introduced with it: a leader of an older build, which picks the version byte, could
// otherwise write it in an old version that this build would read while the older build's
// replicas refuse it, and the two would disagree on the entry.
func opMinVersion(op ringstate.Op) byte {
	switch op {
	case ringstate.OpClaimCompactor:
		return LeaseCommandVersion
	case ringstate.OpHeartbeatBatch:
		return HeartbeatBatchCommandVersion
	}
	if ringstate.IsHAOp(op) {
		return HACommandVersion
	}
	return CommandVersion
}

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

// EncodeCommand returns cmd unstamped: the byte CommandVersion followed by the protobuf
// ringpb.Command. This is the form a command has until the leader that proposes it stamps it with
// ring time (StampCommand); an unstamped entry in the log is applied at its AppendedAt. It fails only
// for a command holding a string that is not valid UTF-8 (protobuf strings must be); the error wraps
// ErrUnencodable and ringstate.ErrInvalidCommand.
//
// An encoder that could not fail would have to panic or silently alter such a command.
func EncodeCommand(cmd ringstate.Command) ([]byte, error) {
	if cmd.Op == ringstate.OpHeartbeatBatch || len(cmd.Beats) > 0 {
		// The protobuf Command has no beats: encoding one would silently drop them.
		return nil, fmt.Errorf("%w: %w: %s: a heartbeat batch is encoded by EncodeHeartbeatBatch", ErrUnencodable,
			ringstate.ErrInvalidCommand, cmd.Op)
	}
	strs := []string{cmd.RequestID, string(cmd.Member), string(cmd.Peer), cmd.RaftAddr, cmd.GRPCAddr, cmd.HTTPAddr, cmd.Zone}
	for _, id := range cmd.Readers {
		strs = append(strs, string(id))
	}
	for _, s := range strs {
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

// StampCommand returns the stamped form of data, an unstamped command as EncodeCommand returns it,
// carrying ring time timeMs (Unix milliseconds): version LeaseCommandVersion for a claim of the
// compactor lease, HACommandVersion for the HA tracker's ops, StampedCommandVersion for every
// other command. Only the leader that
// proposes a command stamps it (Node's leaderApply), so every replica applies the entry at the same
// time whatever its own clock says. data is not modified. An input that is not an unstamped command
// is refused with ErrCorruptCommand (a stamped one too: a stamp is never replaced).
func StampCommand(data []byte, timeMs int64) ([]byte, error) {
	if len(data) == 0 || data[0] != CommandVersion {
		return nil, fmt.Errorf("%w: only an unstamped (version %d) command can be stamped", ErrCorruptCommand, CommandVersion)
	}
	version := StampedCommandVersion
	var pb ringpb.Command
	if err := proto.Unmarshal(data[1:], &pb); err != nil {
		return nil, fmt.Errorf("%w: %d bytes: %v", ErrCorruptCommand, len(data), err)
	}
	if pb.GetOp() == ringpb.Op_OP_CLAIM_COMPACTOR {
		version = LeaseCommandVersion
	}
	if ringstate.IsHAOp(ringstate.Op(pb.GetOp())) {
		version = HACommandVersion
	}
	out := make([]byte, 0, 1+stampLen+len(data)-1)
	out = append(out, version)
	out = binary.BigEndian.AppendUint64(out, uint64(timeMs))
	return append(out, data[1:]...), nil
}

// DecodeCommand decodes the command of an entry of either version, dropping a stamp; it is
// DecodeStamped without the time. It never panics.
func DecodeCommand(data []byte) (ringstate.Command, error) {
	cmd, _, _, err := DecodeStamped(data)
	return cmd, err
}

// DecodeStamped decodes an entry written by EncodeCommand (version 1: stamped is false, timeMs 0) or
// StampCommand (versions 2 to 5: stamped is true, timeMs is the leader's stamp). It never panics: empty
// input, an unknown version byte (*VersionError), a truncated stamp and undecodable protobuf are
// errors. It does not check that the command makes sense — ringstate's Apply refuses bad commands
// deterministically — but it refuses op values that do not fit ringstate.Op, which would otherwise
// alias a valid op after truncation, and an op in an entry whose version predates it
// (*OpVersionError, e.g. a claim of the compactor lease in a version-1 or -2 entry); with that
// error it still returns the command and stamp it decoded, for DecodeLog. Any stamp value is
// accepted: Apply never moves ring time backwards, so even a nonsensical stamp cannot make
// heartbeats lie in the future.
func DecodeStamped(data []byte) (cmd ringstate.Command, timeMs int64, stamped bool, err error) {
	if len(data) == 0 {
		return ringstate.Command{}, 0, false, fmt.Errorf("%w: empty entry", ErrCorruptCommand)
	}
	body := data[1:]
	switch data[0] {
	case CommandVersion:
	case HeartbeatBatchCommandVersion:
		if len(body) < stampLen {
			return ringstate.Command{}, 0, false, fmt.Errorf("%w: %d bytes: heartbeat batch shorter than its %d-byte stamp",
				ErrCorruptCommand, len(data), stampLen)
		}
		beats, err := decodeBeats(body[stampLen:])
		if err != nil {
			return ringstate.Command{}, 0, false, err
		}
		return ringstate.Command{Op: ringstate.OpHeartbeatBatch, Beats: beats}, int64(binary.BigEndian.Uint64(body)), true, nil
	case StampedCommandVersion, LeaseCommandVersion, HACommandVersion:
		if len(body) < stampLen {
			return ringstate.Command{}, 0, false, fmt.Errorf("%w: %d bytes: stamped command shorter than its %d-byte stamp",
				ErrCorruptCommand, len(data), stampLen)
		}
		timeMs, stamped = int64(binary.BigEndian.Uint64(body)), true
		body = body[stampLen:]
	default:
		return ringstate.Command{}, 0, false, &VersionError{What: "command", Version: uint32(data[0]), Known: knownCommandVersions}
	}
	var pb ringpb.Command
	if err := proto.Unmarshal(body, &pb); err != nil {
		return ringstate.Command{}, 0, false, fmt.Errorf("%w: %d bytes: %v", ErrCorruptCommand, len(data), err)
	}
	if op := int32(pb.GetOp()); op < 0 || op > math.MaxUint8 {
		return ringstate.Command{}, 0, false, fmt.Errorf("%w: op %d out of range", ErrCorruptCommand, op)
	}
	cmd = ringpb.ToCommand(&pb)
	if first := opMinVersion(cmd.Op); data[0] < first {
		return cmd, timeMs, stamped, &OpVersionError{Op: cmd.Op, Version: data[0], MinVersion: first}
	}
	return cmd, timeMs, stamped, nil
}

// DecodeLog decodes a command entry of the Raft log and returns its command and the ring time at
// which FSM.Apply applies it, given the ring time before the entry (curMs): the leader's stamp for a
// stamped entry; else the entry's AppendedAt, which hashicorp/raft's leader stamped when it appended
// it (entries written before stamps existed); else, for an entry with neither, curMs. FSM.Apply uses
// exactly this, so a tool that replays a log with it (the fault tests' checkers) computes the same
// ring at every index. Errors are DecodeStamped's, but for *OpVersionError.
//
// An entry whose version predates its op (*OpVersionError from DecodeStamped; only a leader of a
// build from before the op writes one, forwarding a newer node's command) is returned as a command
// of op 0, which ringstate's Apply refuses as unknown (CodeInvalidCommand) at the entry's time,
// remembering its request id: exactly what the build that wrote it and its replicas do with an op
// they do not know, so every replica, of either build, keeps the same ring time, heartbeat credit
// and request memory. Skipping the entry instead would leave this build's ring time behind theirs.
func DecodeLog(l *raft.Log, curMs int64) (ringstate.Command, int64, error) {
	cmd, stampMs, stamped, err := DecodeStamped(l.Data)
	if operr := (*OpVersionError)(nil); errors.As(err, &operr) {
		cmd, err = ringstate.Command{Member: cmd.Member, RequestID: cmd.RequestID}, nil
	}
	switch {
	case err != nil:
		return ringstate.Command{}, curMs, err
	case stamped:
		return cmd, stampMs, nil
	case !l.AppendedAt.IsZero():
		return cmd, l.AppendedAt.UnixMilli(), nil
	}
	return cmd, curMs, nil
}

// EncodeSnapshot encodes the whole ring (members, ring time, remembered request outcomes, compactor
// lease) as a ringpb.Snapshot: of version SnapshotVersion when the ring has no compactor lease and
// remembers no outcome code newer than CodeInvalidCommand, so a cluster that never compacted stays
// readable by builds before the lease; else of version LeaseSnapshotVersion. Two equal rings encode
// to the same bytes: members are kept sorted by ID, the request memory in apply order, and
// marshalling is deterministic.
func EncodeSnapshot(r *ringstate.Ring) ([]byte, error) {
	recent := r.Recent()
	pb := &ringpb.Snapshot{
		Version:        SnapshotVersion,
		TimeMs:         r.TimeMs(),
		Members:        ringpb.FromRing(r),
		Recent:         make([]*ringpb.AppliedRequest, len(recent)),
		CompactorLease: ringpb.FromLease(r.CompactorLease()),
	}
	if pb.CompactorLease != nil {
		pb.Version = LeaseSnapshotVersion
	}
	for i, a := range recent {
		pb.Recent[i] = &ringpb.AppliedRequest{RequestId: a.RequestID, Code: uint32(a.Code), Message: a.Message}
		if a.Code > ringstate.CodeInvalidCommand {
			pb.Version = LeaseSnapshotVersion
		}
	}
	if pb.HaReplicas = ringpb.FromHAReplicas(r.HAReplicas()); len(pb.HaReplicas) > 0 {
		pb.Version = HASnapshotVersion
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
	maxCode := ringstate.MaxCode
	if len(pb.GetHaReplicas()) > 0 && pb.GetVersion() != HASnapshotVersion {
		return nil, fmt.Errorf("%w: version %d snapshot carries HA tracker entries", ErrCorruptSnapshot, pb.GetVersion())
	}
	switch pb.GetVersion() {
	case SnapshotVersion:
		// Written without the lease: one that carries it (or a newer code) is not what version 1 is.
		if pb.GetCompactorLease() != nil {
			return nil, fmt.Errorf("%w: version %d snapshot carries a compactor lease", ErrCorruptSnapshot, SnapshotVersion)
		}
		maxCode = ringstate.CodeInvalidCommand
	case LeaseSnapshotVersion, HASnapshotVersion:
	default:
		return nil, &VersionError{What: "snapshot", Version: pb.GetVersion(), Known: knownSnapshotVersions}
	}
	members := make([]ringstate.Member, len(pb.GetMembers()))
	for i, m := range pb.GetMembers() {
		members[i] = ringpb.ToMember(m)
	}
	recent := make([]ringstate.Applied, len(pb.GetRecent()))
	for i, a := range pb.GetRecent() {
		if a.GetCode() > uint32(maxCode) {
			return nil, fmt.Errorf("%w: remembered request %d (%q) has unknown outcome code %d",
				ErrCorruptSnapshot, i, a.GetRequestId(), a.GetCode())
		}
		if a.GetRequestId() == "" {
			return nil, fmt.Errorf("%w: remembered request %d has no request id", ErrCorruptSnapshot, i)
		}
		recent[i] = ringstate.Applied{RequestID: a.GetRequestId(), Code: ringstate.Code(a.GetCode()), Message: a.GetMessage()}
	}
	r, err := ringstate.Restore(members, pb.GetTimeMs(), recent)
	if err == nil {
		r, err = r.WithCompactorLease(ringpb.ToLease(pb.GetCompactorLease()))
	}
	if err == nil {
		r, err = r.WithHA(ringpb.ToHAReplicas(pb.GetHaReplicas()))
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrCorruptSnapshot, err)
	}
	return r, nil
}
