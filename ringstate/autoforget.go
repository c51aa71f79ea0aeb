package ringstate

import (
	"fmt"
	"slices"
)

// AutoForget picks the member the leader may forget on its own (-ring.auto-forget-unhealthy-periods):
// one whose heartbeat is older than afterMs at ring time, and whose forgetting loses no
// acknowledged data. A write is acknowledged by a quorum of its replication set; forgetting a
// member drops its copies, so every series it held must keep RF−1 copies on members that take
// writes. AutoForget therefore requires that every member sharing a replication set with the
// candidate — the first rf distinct token owners clockwise from any token, health aside, that
// include it — is ACTIVE and healthy. A member in a hand-over is never picked (the hand-over
// decides its fate), nor one whose copies cannot be vouched for that way. Among several, the one
// silent longest goes first (then the smallest id); the caller forgets at most one per decision and
// decides again on the ring that results.
//
// It returns the member, a reason for the log, and false when there is none. timeoutMs is the
// heartbeat timeout (health), afterMs how long past the last heartbeat a member must be silent;
// both at ring time. afterMs must be at least timeoutMs.
func (r *Ring) AutoForget(rf int, timeoutMs, afterMs int64) (MemberID, string, bool) {
	if timeoutMs <= 0 || afterMs < timeoutMs || rf <= 0 {
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
		if _, blocked := r.sharesSetWithUnwritable(int32(c), rf, timeoutMs); blocked {
			continue
		}
		return m.ID, fmt.Sprintf("heartbeat %ds old (more than %ds); every member sharing a replication set with it is ACTIVE and healthy, so each series it held keeps %d live copies",
			(uint64(now)-uint64(m.HeartbeatMs))/1000, afterMs/1000, max(r.EffectiveRF(rf)-1, 0)), true
	}
	return "", "", false
}

// sharesSetWithUnwritable reports whether some member other than c that shares a natural
// replication set (the first rf distinct owners clockwise from a token, health aside) with c is
// not writable, and returns it.
func (r *Ring) sharesSetWithUnwritable(c int32, rf int, timeoutMs int64) (MemberID, bool) {
	n := len(r.tokens)
	rf = r.EffectiveRF(rf)
	set := make([]int32, 0, rf)
	for start := range n {
		set = set[:0]
		for k := 0; k < n && len(set) < rf; k++ {
			o := r.owners[(start+k)%n]
			if !slices.Contains(set, o) {
				set = append(set, o)
			}
		}
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
