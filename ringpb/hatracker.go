package ringpb

import (
	"math"

	"github.com/raftingest/raftingest/ringstate"
)

// FromHACommand converts the HA fields of a command to their wire form (nil stays nil). A
// MaxClusters that does not fit the wire's uint32 becomes math.MaxUint32, which Apply refuses, rather
// than being truncated into a valid limit.
func FromHACommand(h *ringstate.HACommand) *HACommand {
	if h == nil {
		return nil
	}
	mc := uint32(math.MaxUint32)
	if h.MaxClusters >= 0 && int64(h.MaxClusters) <= math.MaxUint32 {
		mc = uint32(h.MaxClusters)
	}
	return &HACommand{Tenant: h.Tenant, Cluster: h.Cluster, Replica: h.Replica, FailoverMs: h.FailoverMs,
		MaxClusters: mc, IdleMs: h.IdleMs}
}

// ToHACommand converts wire HA fields to a command's (nil stays nil). It does not validate: Apply does.
func ToHACommand(p *HACommand) *ringstate.HACommand {
	if p == nil {
		return nil
	}
	return &ringstate.HACommand{Tenant: p.GetTenant(), Cluster: p.GetCluster(), Replica: p.GetReplica(),
		FailoverMs: p.GetFailoverMs(), MaxClusters: int(p.GetMaxClusters()), IdleMs: p.GetIdleMs()}
}

// FromHAReplicas converts the ring's HA entries to their wire form.
func FromHAReplicas(es []ringstate.HAReplica) []*HAReplica {
	if len(es) == 0 {
		return nil
	}
	out := make([]*HAReplica, len(es))
	for i, e := range es {
		out[i] = &HAReplica{Tenant: e.Tenant, Cluster: e.Cluster, Replica: e.Replica, ElectedMs: e.ElectedMs,
			RefreshedMs: e.RefreshedMs}
	}
	return out
}

// ToHAReplicas converts wire HA entries to the ring's. It does not validate: Ring.WithHA does.
func ToHAReplicas(ps []*HAReplica) []ringstate.HAReplica {
	if len(ps) == 0 {
		return nil
	}
	out := make([]ringstate.HAReplica, len(ps))
	for i, p := range ps {
		out[i] = ringstate.HAReplica{Tenant: p.GetTenant(), Cluster: p.GetCluster(), Replica: p.GetReplica(),
			ElectedMs: p.GetElectedMs(), RefreshedMs: p.GetRefreshedMs()}
	}
	return out
}
