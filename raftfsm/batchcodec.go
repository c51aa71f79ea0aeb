package raftfsm

import (
	"encoding/binary"
	"fmt"
	"math"
	"unicode/utf8"

	"github.com/raftingest/raftingest/ringstate"
)

// EncodeHeartbeatBatch returns the log entry of a heartbeat batch (ringstate.OpHeartbeatBatch)
// stamped with ring time timeMs: the byte HeartbeatBatchCommandVersion, the stamp (int64 Unix
// milliseconds, big-endian), the number of beats (uvarint), then per beat the length of its member
// id (uvarint), the id's bytes and its command version (uvarint). It is not a protobuf message
// because the Command message has no list of members, and an older build must not read one as a
// single heartbeat; the version byte already tells readers what follows. 1 to ringstate.MaxBeats
// beats, each id valid UTF-8 of 1 to ringstate.MaxIDLen bytes; anything else is refused with
// ErrUnencodable (which wraps ringstate.ErrInvalidCommand). A 1,000-beat batch of 16-byte ids is
// about 19 kB.
func EncodeHeartbeatBatch(beats []ringstate.Beat, timeMs int64) ([]byte, error) {
	if len(beats) == 0 || len(beats) > ringstate.MaxBeats {
		return nil, fmt.Errorf("%w: %w: heartbeat batch of %d beats, want 1 to %d", ErrUnencodable,
			ringstate.ErrInvalidCommand, len(beats), ringstate.MaxBeats)
	}
	size := 1 + stampLen + binary.MaxVarintLen32
	for _, b := range beats {
		if len(b.Member) == 0 || len(b.Member) > ringstate.MaxIDLen || !utf8.ValidString(string(b.Member)) {
			return nil, fmt.Errorf("%w: %w: heartbeat batch: member id %q: want 1 to %d bytes of UTF-8", ErrUnencodable,
				ringstate.ErrInvalidCommand, b.Member, ringstate.MaxIDLen)
		}
		size += 2*binary.MaxVarintLen32 + len(b.Member)
	}
	out := make([]byte, 0, size)
	out = append(out, HeartbeatBatchCommandVersion)
	out = binary.BigEndian.AppendUint64(out, uint64(timeMs))
	out = binary.AppendUvarint(out, uint64(len(beats)))
	for _, b := range beats {
		out = binary.AppendUvarint(out, uint64(len(b.Member)))
		out = append(out, b.Member...)
		out = binary.AppendUvarint(out, uint64(b.CommandVersion))
	}
	return out, nil
}

// decodeBeats decodes the beats of a heartbeat batch entry (after its stamp). It refuses, with
// ErrCorruptCommand, anything EncodeHeartbeatBatch does not write: a count of 0 or above MaxBeats,
// an id that is empty, longer than MaxIDLen or not UTF-8, a version above uint32, a truncated
// field and trailing bytes. It never panics and allocates at most in proportion to its input.
func decodeBeats(b []byte) ([]ringstate.Beat, error) {
	bad := func(why string, args ...any) ([]ringstate.Beat, error) {
		return nil, fmt.Errorf("%w: heartbeat batch: %s", ErrCorruptCommand, fmt.Sprintf(why, args...))
	}
	n, k := binary.Uvarint(b)
	if k <= 0 {
		return bad("truncated beat count")
	}
	b = b[k:]
	// Each beat takes at least 3 bytes (length, one id byte, version): a count the input cannot
	// hold is refused before allocating for it.
	if n == 0 || n > ringstate.MaxBeats || n > uint64(len(b)/3) {
		return bad("%d beats in %d bytes, want 1 to %d", n, len(b), ringstate.MaxBeats)
	}
	beats := make([]ringstate.Beat, n)
	for i := range beats {
		l, k := binary.Uvarint(b)
		if k <= 0 || l == 0 || l > ringstate.MaxIDLen || l > uint64(len(b)-k) {
			return bad("beat %d: bad member id length", i)
		}
		id := b[k : k+int(l)]
		if !utf8.Valid(id) {
			return bad("beat %d: member id is not UTF-8", i)
		}
		b = b[k+int(l):]
		v, k := binary.Uvarint(b)
		if k <= 0 || v > math.MaxUint32 {
			return bad("beat %d: bad command version", i)
		}
		b = b[k:]
		beats[i] = ringstate.Beat{Member: ringstate.MemberID(id), CommandVersion: uint32(v)}
	}
	if len(b) != 0 {
		return bad("%d trailing bytes", len(b))
	}
	return beats, nil
}
