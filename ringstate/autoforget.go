package ringstate

import (
	"fmt"
	"slices"
)

// AutoForget picks the member the leader may forget on its own (-ring.auto-forget-unhealthy-periods):
// one whose heartbeat is older than afterMs at ring time, and whose forgetting loses no
// acknowledged data. A write is acknowledged by a quorum of its replication set, so a sample may
// be on only a quorum of it; forgetting a member drops its copies, and every sample it held must
// keep a copy on a member that takes writes. AutoForget therefore requires an effective
// replication factor of at least 3 and that every member sharing a replication set with the
// candidate — the first rf distinct token owners clockwise from any token, health aside, that
// include it — is ACTIVE and healthy (then each sample it held has quorum−1 ≥ 1 other copies).
// It knows nothing of time between decisions: the caller must space two forgets by long enough
// for the remaining single copies to be flushed and compacted back (raftfsm's holdoff). A member in a hand-over is never picked (the hand-over
// decides its fate), nor one whose copies cannot be vouched for that way. Among several, the one
// silent longest goes first (then the smallest id); the caller forgets at most one per decision and
// decides again on the ring that results.
//
// It returns the member, a reason for the log, and false when there is none. timeoutMs is the
// heartbeat timeout (health), afterMs how long past the last heartbeat a member must be silent;
// both at ring time. afterMs must be at least timeoutMs.
func (r *Ring) AutoForget(rf int, timeoutMs, afterMs int64) (MemberID, string, bool) {
	return r.AutoForgetFor(Placement{RF: rf}, timeoutMs, afterMs)
}

// AutoForgetFor is AutoForget under placement p: the replication sets it checks are p's (one
// member per zone when zone-aware, health aside) and the replication factor is EffectiveRFFor(p),
// so with zone awareness a ring of fewer than 3 zones never auto-forgets.
func (r *Ring) AutoForgetFor(p Placement, timeoutMs, afterMs int64) (MemberID, string, bool) {
	rf := r.EffectiveRFFor(p)
	// Below 3 replicas a quorum can be one copy (RF 1) or a write can be on the forgotten member
	// and one other only (RF 2, quorum 2 of 2 is both): forgetting could drop the last copy.
	if timeoutMs <= 0 || afterMs < timeoutMs || rf < 3 {
		return "", "", false
	}
	now := r.timeMs
	var cands []int
	for i := range r.members {
		m := &r.members[i]
		if m.HandoverPeer != "" || m.Healthy(now, timeoutMs) || uint64(now)-uint64(m.HeartbeatMs) < uint64(afterMs) {
			continue
		}
		cands = append(cands, i)
	}
	slices.SortFunc(cands, func(a, b int) int {
		ma, mb := &r.members[a], &r.members[b]
		switch {
		case ma.HeartbeatMs != mb.HeartbeatMs:
			if ma.HeartbeatMs < mb.HeartbeatMs {
				return -1
			}
			return 1
		case ma.ID < mb.ID:
			return -1
		}
		return 1
	})
	for _, c := range cands {
		m := &r.members[c]
		if _, blocked := r.sharesSetWithUnwritable(int32(c), Placement{RF: rf, ZoneAware: p.ZoneAware}, timeoutMs); blocked {
			continue
		}
		return m.ID, fmt.Sprintf("heartbeat %ds old (more than %ds); every member sharing a replication set with it is ACTIVE and healthy, so every sample it held has at least %d other copies",
			(uint64(now)-uint64(m.HeartbeatMs))/1000, afterMs/1000, Quorum(rf)-1), true
	}
	return "", "", false
}

// sharesSetWithUnwritable reports whether some member other than c that shares a natural
// replication set (the first p.RF distinct owners clockwise from a token, one per zone when p is
// zone-aware, health aside) with c is not writable, and returns it. p.RF is already effective.
func (r *Ring) sharesSetWithUnwritable(c int32, p Placement, timeoutMs int64) (MemberID, bool) {
	n := len(r.tokens)
	set := make([]int32, 0, p.RF)
	for start := range n {
		set = r.naturalSet(start, p, set[:0])
		if !slices.Contains(set, c) {
			continue
		}
		for _, o := range set {
			if o != c && !r.members[o].Writable(r.timeMs, timeoutMs) {
				return r.members[o].ID, true
			}
		}
	}
	return "", false
}

// ForgetVerdict is what auto-forget makes of one unhealthy member (AutoForgetVerdicts), for
// operators: ringctl ring prints it.
type ForgetVerdict struct {
	Member MemberID
	// Next is true for the member AutoForgetFor picks now (the leader forgets it at its next
	// decision, its holdoff allowing).
	Next bool
	// Why says what it waits for, what blocks it, or why it is next.
	Why string
}

// AutoForgetVerdicts explains AutoForgetFor for every unhealthy member, sorted by id: the one it
// picks, and for the others whether they wait for their heartbeat to age past afterMs, wait their
// turn, are in a hand-over, or are blocked by a member sharing a replication set with them that is
// not ACTIVE and healthy. Empty when auto-forget is off (afterMs 0), or when the effective
// replication factor under p is below 3 (then one verdict per unhealthy member says so). Pure, as
// AutoForgetFor; it does not know the leader's holdoff between two forgets.
func (r *Ring) AutoForgetVerdicts(p Placement, timeoutMs, afterMs int64) []ForgetVerdict {
	if afterMs <= 0 || timeoutMs <= 0 {
		return nil
	}
	next, why, ok := r.AutoForgetFor(p, timeoutMs, afterMs)
	rf := r.EffectiveRFFor(p)
	now := r.timeMs
	var out []ForgetVerdict
	for i := range r.members {
		m := &r.members[i]
		if m.Healthy(now, timeoutMs) {
			continue
		}
		age := int64(uint64(now) - uint64(m.HeartbeatMs))
		v := ForgetVerdict{Member: m.ID}
		switch {
		case ok && m.ID == next:
			v.Next, v.Why = true, "next to forget: "+why
		case rf < 3:
			v.Why = fmt.Sprintf("never: the effective replication factor is %d, below 3, so its copies may be the last", rf)
		case m.HandoverPeer != "":
			v.Why = "in a hand-over with " + string(m.HandoverPeer) + ": the hand-over decides"
		case age < afterMs:
			v.Why = fmt.Sprintf("waits: heartbeat %ds old, forgotten after %ds", age/1000, afterMs/1000)
		default:
			if blocker, blocked := r.sharesSetWithUnwritable(int32(i), Placement{RF: rf, ZoneAware: p.ZoneAware}, timeoutMs); blocked {
				v.Why = fmt.Sprintf("blocked: it shares a replication set with %s, which is not ACTIVE and healthy (forgetting both could drop the last copy; remove one with ringctl remove once its data is safe)", blocker)
			} else {
				v.Why = "waits its turn: " + string(next) + " goes first"
			}
		}
		out = append(out, v)
	}
	return out
}
