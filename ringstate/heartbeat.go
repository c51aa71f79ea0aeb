package ringstate

import "fmt"

// Beat is one heartbeat of an OpHeartbeatBatch: the member it is from and, as in an OpHeartbeat,
// the highest command version the member's build reads (0: not advertised).
type Beat struct {
	Member         MemberID
	CommandVersion uint32
}

// HeartbeatBatchCommandVersion is the Raft command version (raftfsm's format byte) that carries
// OpHeartbeatBatch. A member that does not advertise it (Member.CommandVersion) runs a build that
// halts on such an entry, so the leader proposes no batch while one is in the ring and sends
// single heartbeats instead.
const HeartbeatBatchCommandVersion uint32 = 4

// MaxBeats bounds the heartbeats of one batch (it is stored in every replica's log): at one
// heartbeat per member per -ring.heartbeat-period, a batch of MaxBeats covers a ring of that many
// members flushed once per period; the leader's batcher flushes far smaller batches far more often.
const MaxBeats = 4096

// A heartbeat batch has the health semantics of its heartbeats sent one by one at the entry's
// time: applying OpHeartbeatBatch{Beats: b} at time t gives the ring that applying
// OpHeartbeat{Member: b[i].Member, CommandVersion: b[i].CommandVersion} for each i in order at t
// gives (TestHeartbeatBatch_*), but for the outcome: a single heartbeat of an unknown member is
// refused with ErrUnknownMember, which in a batch would refuse the N-1 others with it. So a batch
// skips a beat of a member the ring does not know (forgotten since it was sent; or a bad id, which
// no member can have) and reports it as an EventHeartbeatSkipped, which the proposer turns into
// that beat's ErrUnknownMember; the batch as a whole is refused only when malformed (no beats,
// more than MaxBeats, or a field other than Beats and RequestID set), which no leader proposes.
// A member named twice is recorded twice at the same time: the later advertised version wins, as
// with two single heartbeats.

// checkBatchFields refuses a heartbeat batch that carries anything but its beats (and a request id).
func checkBatchFields(c *Command) error {
	bad := func(why string) error { return fmt.Errorf("%w: %s: %s", ErrInvalidCommand, c.Op, why) }
	switch {
	case len(c.Beats) == 0:
		return bad("no beats")
	case len(c.Beats) > MaxBeats:
		return bad(fmt.Sprintf("%d beats, at most %d", len(c.Beats), MaxBeats))
	case c.Member != "" || c.Peer != "":
		return bad("takes no member and no peer (each beat names its own)")
	case c.RaftAddr != "" || c.GRPCAddr != "" || c.HTTPAddr != "" || c.Zone != "" || len(c.Tokens) > 0:
		return bad("takes no addresses and no tokens")
	case c.Replace || c.LeaseMs != 0 || c.CommandVersion != 0 || len(c.Readers) > 0 || c.HA != nil:
		return bad("takes no replace flag, lease, command version, readers or HA fields (each beat carries its version)")
	}
	return nil
}

// heartbeatBatch records each beat at ring time t, skipping (and reporting) unknown members.
func (b *builder) heartbeatBatch(beats []Beat, t int64) {
	for _, beat := range beats {
		i, ok := b.r.find(beat.Member)
		if !ok {
			b.events = append(b.events, Event{Kind: EventHeartbeatSkipped, Member: beat.Member})
			continue
		}
		b.own()
		m := &b.r.members[i]
		m.HeartbeatMs = t
		if beat.CommandVersion != 0 {
			m.CommandVersion = beat.CommandVersion
		}
	}
}

// SkippedBeats returns the members whose heartbeats a batch skipped, from the events its Apply
// returned (EventHeartbeatSkipped), as a set.
func SkippedBeats(events []Event) map[MemberID]bool {
	var out map[MemberID]bool
	for _, e := range events {
		if e.Kind == EventHeartbeatSkipped {
			if out == nil {
				out = map[MemberID]bool{}
			}
			out[e.Member] = true
		}
	}
	return out
}
