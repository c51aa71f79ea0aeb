package compact

import (
	"fmt"
	"strings"

	"github.com/prometheus/prometheus/model/labels"

	"github.com/raftingest/raftingest/distributor"
	"github.com/raftingest/raftingest/ringstate"
)

// Placement returns the placement of compacted series over ring r: a series of tenant goes to its
// replication set as the distributor computes it (distributor.SeriesHash, then ringstate's
// ReplicationSetFor with the placement p — replication factor made effective, zone awareness — and
// the heartbeat timeout), so that a compacted series lives on exactly the members that take its
// writes.
//
// Invariant: a placement is exactly r.EffectiveRFFor(p) distinct members (one per zone when p is
// zone-aware: while a whole zone cannot take writes, compaction waits for it), every one ACTIVE and
// healthy at ring time, or an error naming the series and why (which token owners cannot take
// it: LEAVING, JOINING, unhealthy). Never fewer: the compactor deletes the sources (every replica)
// once the placed parts are durable, so a short placement would leave fewer than RF copies of
// every series it placed — with 3 members, RF 3 and one of them leaving, two. The spill that
// keeps writes going while a member cannot take them (ReplicationSet returns fewer than rf
// members) is right for writes, whose replicas elsewhere stay; it is not for a compaction, which
// removes them. A compaction that cannot place a series fails before it stores or deletes
// anything, and the next run, once the ring is settled, does it.
func Placement(r *ringstate.Ring, p ringstate.Placement, heartbeatTimeoutMs int64) func(tenant string, lset labels.Labels) ([]string, error) {
	rf := p.RF
	want := r.EffectiveRFFor(p)
	p.RF = want
	var ls []distributor.Label
	var set []*ringstate.Member
	return func(tenant string, lset labels.Labels) ([]string, error) {
		if want <= 0 {
			return nil, fmt.Errorf("compact: cannot place series %s of tenant %q: no ring member owns tokens", lset, tenant)
		}
		ls = ls[:0]
		lset.Range(func(l labels.Label) {
			if l.Value != "" {
				ls = append(ls, distributor.Label{Name: l.Name, Value: l.Value})
			}
		})
		set = r.ReplicationSetFor(distributor.SeriesHash(tenant, ls), p, heartbeatTimeoutMs, set[:0])
		out := make([]string, 0, len(set))
		for _, m := range set {
			if !m.Writable(r.TimeMs(), heartbeatTimeoutMs) { // ReplicationSet's own guarantee; checked, not assumed
				return nil, fmt.Errorf("compact: cannot place series %s of tenant %q: member %s is %s", lset, tenant, m.ID,
					notWritable(r, m, heartbeatTimeoutMs))
			}
			for _, id := range out {
				if id == string(m.ID) {
					return nil, fmt.Errorf("compact: cannot place series %s of tenant %q: member %s twice", lset, tenant, id)
				}
			}
			out = append(out, string(m.ID))
		}
		if len(out) != want {
			return nil, fmt.Errorf("compact: cannot place series %s of tenant %q on %d members (replication factor %d over "+
				"the ring's token owners): only %d of them can take it (%s); a compaction now would leave fewer copies "+
				"than that, so it waits until the ring is settled", lset, tenant, want, rf, len(out), unwritableOwners(r, heartbeatTimeoutMs))
		}
		return out, nil
	}
}

// RingPlacement is Placement for callers that take a placement without an error (Cluster.Place):
// a series that cannot be placed on r.EffectiveRFFor(p) writable members gets no member at all —
// never fewer than that — and storage.SplitBlock refuses a series placed nowhere, so the job fails
// before it stores or deletes anything. Placement says why.
func RingPlacement(r *ringstate.Ring, p ringstate.Placement, heartbeatTimeoutMs int64) func(tenant string, lset labels.Labels) []string {
	place := Placement(r, p, heartbeatTimeoutMs)
	return func(tenant string, lset labels.Labels) []string {
		out, err := place(tenant, lset)
		if err != nil {
			return nil
		}
		return out
	}
}

// unwritableOwners describes the token owners of r that cannot take writes at ring time.
func unwritableOwners(r *ringstate.Ring, timeoutMs int64) string {
	var why []string
	for i := range r.Len() {
		if m := r.MemberAt(i); len(m.Tokens) > 0 && !m.Writable(r.TimeMs(), timeoutMs) {
			why = append(why, fmt.Sprintf("%s is %s", m.ID, notWritable(r, m, timeoutMs)))
		}
	}
	if len(why) == 0 {
		return "no token owner is unwritable"
	}
	return strings.Join(why, ", ")
}

func notWritable(r *ringstate.Ring, m *ringstate.Member, timeoutMs int64) string {
	if m.State != ringstate.ACTIVE {
		return m.State.String()
	}
	if !m.Healthy(r.TimeMs(), timeoutMs) {
		return fmt.Sprintf("unhealthy (last heartbeat %dms before ring time)", r.TimeMs()-m.HeartbeatMs)
	}
	return "writable"
}
