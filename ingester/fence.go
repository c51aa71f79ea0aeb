package ingester

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/raftingest/raftingest/distributor"
	"github.com/raftingest/raftingest/ingesterpb"
	"github.com/raftingest/raftingest/raftfsm"
)

// A node's distributor stamps its pushes only if the node's ring source has an index.
var _ distributor.IndexedRingSource = (*raftfsm.Node)(nil)

// pushFence is write fencing on the ingester's side (raftfsm/fence.go has the why). Every push a
// distributor placed carries the applied index of the ring it placed the series by; a push stamped
// before the last ownership change this member has applied is refused whole, before the store sees
// it, with ingesterpb.FencedError, and its distributor places the series again on a fresher ring.
//
// Fenced: the pushes of every distributor, over gRPC (PushRaw, Push) and this node's own through
// localClient (its ring may be older than the one the FSM applied since). Not fenced: hand-over
// streams (Transfer), which move what a leaver holds to the joiner it claimed, ordered by the
// hand-over's own states, not by a distributor's placement; and pushes stamped 0 (a distributor of
// a release before fencing, during a rolling upgrade), which are taken and counted as unstamped.
type pushFence struct {
	member string
	// ownership is the FSM's OwnershipIndex; nil disables fencing (unit tests of the store path).
	ownership func() uint64
	fenced    prometheus.Counter
	unstamped prometheus.Counter
}

// newPushFence returns the fence of member over ownership, its metrics registered on reg (nil: not
// registered).
func newPushFence(member string, ownership func() uint64, reg prometheus.Registerer) *pushFence {
	f := &pushFence{
		member:    member,
		ownership: ownership,
		fenced: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "raftingest_ingester_push_fenced_total",
			Help: "Pushes refused by write fencing: placed by a distributor whose ring was older than the last ownership change this member had applied. The distributor retries them on its fresher ring (raftingest_distributor_fenced_retries_total); a steady rate means distributors' rings lag this member's.",
		}),
		unstamped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "raftingest_ingester_push_unstamped_total",
			Help: "Pushes taken without a ring index, hence not fenced: from a distributor of a release before write fencing (a rolling upgrade in progress).",
		}),
	}
	if reg != nil {
		reg.MustRegister(f.fenced, f.unstamped, prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "raftingest_ring_ownership_index",
			Help: "Raft index of the last entry that changed who owns which series (a member became ACTIVE or LEAVING, tokens claimed or given away, a hand-over completed or aborted, a member removed), as this node applied it: pushes stamped with an older ring index are fenced. After a restart from a snapshot, the snapshot's index until the next change.",
		}, func() float64 { return float64(ownership()) }))
	}
	return f
}

// check returns nil when a push stamped ringIndex may be stored, else the fenced refusal. Call it
// under the write gate, before the writable check: a member that went LEAVING after the push was
// placed answers "fenced" rather than "not writable", so that the distributor places the series
// again (on the ring where this member is LEAVING they spill to the next ACTIVE member) instead of
// counting a failed replica. A nil fence takes everything.
func (f *pushFence) check(ringIndex uint64) error {
	if f == nil || f.ownership == nil {
		return nil
	}
	if ringIndex == 0 {
		f.unstamped.Inc()
		return nil
	}
	if owned := f.ownership(); ringIndex < owned {
		f.fenced.Inc()
		return ingesterpb.FencedError(f.member, ringIndex, owned)
	}
	return nil
}
