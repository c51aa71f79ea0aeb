package compact

import (
	"github.com/prometheus/prometheus/model/labels"

	"github.com/raftingest/raftingest/distributor"
	"github.com/raftingest/raftingest/ringstate"
)

// RingPlacement returns the placement the distributor uses, over ring r: a series of tenant goes
// to its replication set (distributor.SeriesHash, then ringstate's ReplicationSet with the
// effective replication factor and the heartbeat timeout), so that a compacted series lives on
// exactly the members that take its writes, RF of them whenever the ring has RF writable members.
func RingPlacement(r *ringstate.Ring, rf int, heartbeatTimeoutMs int64) func(tenant string, lset labels.Labels) []string {
	rf = r.EffectiveRF(rf)
	var ls []distributor.Label
	var set []*ringstate.Member
	return func(tenant string, lset labels.Labels) []string {
		ls = ls[:0]
		lset.Range(func(l labels.Label) {
			if l.Value != "" {
				ls = append(ls, distributor.Label{Name: l.Name, Value: l.Value})
			}
		})
		set = r.ReplicationSet(distributor.SeriesHash(tenant, ls), rf, heartbeatTimeoutMs, set[:0])
		out := make([]string, len(set))
		for i, m := range set {
			out[i] = string(m.ID)
		}
		return out
	}
}
