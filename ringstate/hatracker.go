package ringstate

import (
	"errors"
	"fmt"
	"slices"
	"strings"
)

// The HA tracker's ring state: for each (tenant, cluster) of a Prometheus HA pair, the replica whose
// samples are stored (Cortex's HA tracker, which keeps the same record in Consul or etcd). It changes
// only by a commit of OpHAElect, decided in Apply at the entry's ring time, so two distributors that
// race to elect different replicas are ordered by the log and exactly one wins; and it shrinks only
// by OpHAGC, which the Raft leader proposes for entries no distributor refreshed for a long time.
//
// Both ops are carried by Raft command version HACommandVersion only (raftfsm's format byte).

// The HA tracker's ops. Their numbers leave room for the lifecycle ops added after OpClaimCompactor.
const (
	// OpHAElect elects Command.HA.Replica for (HA.Tenant, HA.Cluster), a compare-and-set at the
	// entry's ring time t: granted when no replica is elected (a new cluster; refused with
	// ErrHATooManyClusters when the tenant has HA.MaxClusters clusters already, or the ring
	// MaxHAEntries), when HA.Replica is the elected one (a refresh: RefreshedMs becomes t), or when
	// the elected one was last refreshed more than HA.FailoverMs before t (a failover: the elected
	// replica, ElectedMs and RefreshedMs all change). Otherwise refused with ErrHAReplicaElected.
	OpHAElect Op = 20
	// OpHAGC removes every HA entry last refreshed at or before t - HA.IdleMs.
	OpHAGC Op = 21
)

// HACommandVersion is the Raft command version (raftfsm's format byte) that carries OpHAElect and
// OpHAGC: 5, after heartbeat batches' 4 (a layout of its own; both arrived in the same release, so
// a build reads both or neither). A member that does not advertise it runs a build that halts on
// such an entry, so nothing is proposed in it while such a member is in the ring.
const HACommandVersion uint32 = 5

// Bounds on the HA tracker's state. Every entry is in every replica's ring and snapshot, and a
// tenant chooses its label values: none of this may grow without bound.
const (
	// MaxHAValueLen bounds a tenant id, cluster or replica name in an HA entry.
	MaxHAValueLen = 256
	// MaxHAEntries bounds the HA entries of the whole ring, whatever the per-tenant limits say
	// (Command.HA.MaxClusters): 10000 entries of at most 3*256 bytes are under 8 MB of snapshot.
	MaxHAEntries = 10_000
	// MaxHAFailoverMs bounds HA.FailoverMs (a day).
	MaxHAFailoverMs int64 = 24 * 3_600_000
)

// Errors of the HA ops. They wrap an existing sentinel, so their outcome code is one every build
// knows (CodeOf gives CodeIllegalTransition and CodeInvalidCommand) and the snapshot's request
// memory needs no new code.
var (
	// ErrHAReplicaElected is an election refused because another replica is elected and was
	// refreshed within the failover timeout.
	ErrHAReplicaElected = fmt.Errorf("%w: ha tracker: another replica is elected", ErrIllegalTransition)
	// ErrHATooManyClusters is an election of a new cluster refused because the tenant has its
	// limit of clusters (or the ring MaxHAEntries).
	ErrHATooManyClusters = fmt.Errorf("%w: ha tracker: too many HA clusters", ErrInvalidCommand)
)

// HACommand holds the fields of the HA ops. For OpHAElect: Tenant, Cluster, Replica, FailoverMs and
// MaxClusters; for OpHAGC: IdleMs. Limits travel in the command, not in Apply's configuration, so
// every replica decides alike whatever flags it runs with.
type HACommand struct {
	Tenant, Cluster, Replica string
	// FailoverMs: a replica other than the elected one is elected only when the elected one was
	// last refreshed more than this long before the entry's ring time (1 to MaxHAFailoverMs).
	FailoverMs int64
	// MaxClusters is the tenant's limit of HA clusters (1 to MaxHAEntries).
	MaxClusters int
	// IdleMs, for OpHAGC: entries not refreshed for this long are removed (at least 1).
	IdleMs int64
}

// HAReplica is the elected replica of one (tenant, cluster).
type HAReplica struct {
	Tenant, Cluster, Replica string
	// ElectedMs is the ring time at which Replica was elected; RefreshedMs the ring time of its
	// last election or refresh. ElectedMs <= RefreshedMs.
	ElectedMs, RefreshedMs int64
}

func isHAOp(op Op) bool { return op == OpHAElect || op == OpHAGC }

// IsHAOp reports whether op is one of the HA tracker's ops (carried by HACommandVersion only).
func IsHAOp(op Op) bool { return isHAOp(op) }

func haName(op Op) (string, bool) {
	switch op {
	case OpHAElect:
		return "ha-elect", true
	case OpHAGC:
		return "ha-gc", true
	}
	return "", false
}

func compareHA(a HAReplica, tenant, cluster string) int {
	if c := strings.Compare(a.Tenant, tenant); c != 0 {
		return c
	}
	return strings.Compare(a.Cluster, cluster)
}

// HAReplica returns the elected replica of (tenant, cluster), if any.
func (r *Ring) HAReplica(tenant, cluster string) (HAReplica, bool) {
	b, i, ok := r.ha.find(tenant, cluster)
	if !ok {
		return HAReplica{}, false
	}
	return r.ha.at(b, i), true
}

// HAReplicas returns every HA entry, sorted by tenant then cluster.
func (r *Ring) HAReplicas() []HAReplica { return r.ha.all() }

// HALen is the number of HA entries.
func (r *Ring) HALen() int { return r.ha.len() }

// HAClusters is the number of HA clusters of tenant.
func (r *Ring) HAClusters(tenant string) int { return r.ha.countTenant(tenant) }

// WithHA returns a copy of r holding entries (in any order) as its HA state, for rebuilding a ring
// from a snapshot. It refuses (ErrCorruptState) entries that break an invariant Apply keeps.
func (r *Ring) WithHA(entries []HAReplica) (*Ring, error) {
	if len(entries) > MaxHAEntries {
		return nil, fmt.Errorf("%w: %d HA entries, at most %d", ErrCorruptState, len(entries), MaxHAEntries)
	}
	ha := slices.Clone(entries)
	slices.SortFunc(ha, func(a, b HAReplica) int { return compareHA(a, b.Tenant, b.Cluster) })
	for i, e := range ha {
		if err := checkHAValues(e.Tenant, e.Cluster, e.Replica); err != nil {
			return nil, fmt.Errorf("%w: HA entry %d: %v", ErrCorruptState, i, err)
		}
		if e.ElectedMs > e.RefreshedMs {
			return nil, fmt.Errorf("%w: HA entry %s/%s elected at %d after its refresh at %d", ErrCorruptState,
				e.Tenant, e.Cluster, e.ElectedMs, e.RefreshedMs)
		}
		if i > 0 && compareHA(ha[i-1], e.Tenant, e.Cluster) == 0 {
			return nil, fmt.Errorf("%w: HA entry %s/%s appears twice", ErrCorruptState, e.Tenant, e.Cluster)
		}
	}
	next := *r
	next.ha = haTableOf(ha)
	return &next, nil
}

var errHAValue = errors.New("invalid HA value")

// CheckHAValues is the rule an election's tenant, cluster and replica must meet (1 to
// MaxHAValueLen printable characters each, valid UTF-8): distributors check it before proposing,
// so a push that cannot be elected is refused as bad input rather than retried for ever.
func CheckHAValues(tenant, cluster, replica string) error {
	return checkHAValues(tenant, cluster, replica)
}

func checkHAValues(tenant, cluster, replica string) error {
	for _, v := range []struct{ name, s string }{{"tenant", tenant}, {"cluster", cluster}, {"replica", replica}} {
		if v.s == "" || len(v.s) > MaxHAValueLen || !printable(v.s) {
			return fmt.Errorf("%w: %s %q: want 1 to %d printable characters", errHAValue, v.name, v.s, MaxHAValueLen)
		}
	}
	return nil
}

// checkHAFields checks a command that is an HA op or carries HA fields: no other op may carry them,
// and an HA op carries nothing else but Member (the proposer, for logs) and RequestID.
func checkHAFields(c *Command) error {
	bad := func(why string) error { return fmt.Errorf("%w: %s %s: %s", ErrInvalidCommand, c.Op, c.Member, why) }
	if !isHAOp(c.Op) {
		return bad("only the HA ops take HA fields")
	}
	if c.HA == nil {
		return bad("no HA fields")
	}
	if c.Peer != "" || c.RaftAddr != "" || c.GRPCAddr != "" || c.HTTPAddr != "" || c.Zone != "" || len(c.Tokens) > 0 ||
		c.Replace || c.LeaseMs != 0 || c.CommandVersion != 0 || len(c.Readers) > 0 {
		return bad("an HA op takes nothing but its HA fields")
	}
	h := c.HA
	switch c.Op {
	case OpHAElect:
		if err := checkHAValues(h.Tenant, h.Cluster, h.Replica); err != nil {
			return bad(err.Error())
		}
		if h.FailoverMs <= 0 || h.FailoverMs > MaxHAFailoverMs {
			return bad(fmt.Sprintf("failover timeout of %dms, want 1 to %d", h.FailoverMs, MaxHAFailoverMs))
		}
		if h.MaxClusters <= 0 || h.MaxClusters > MaxHAEntries {
			return bad(fmt.Sprintf("max clusters %d, want 1 to %d", h.MaxClusters, MaxHAEntries))
		}
		if h.IdleMs != 0 {
			return bad("ha-elect takes no idle time")
		}
	case OpHAGC:
		if h.Tenant != "" || h.Cluster != "" || h.Replica != "" || h.FailoverMs != 0 || h.MaxClusters != 0 {
			return bad("ha-gc takes only an idle time")
		}
		if h.IdleMs <= 0 {
			return bad(fmt.Sprintf("idle time of %dms, want more than 0", h.IdleMs))
		}
	}
	return nil
}

// applyHA applies an HA op at ring time t (checkHAFields passed). It never touches members.
func (b *builder) applyHA(c *Command, t int64) error {
	h := c.HA
	if c.Op == OpHAGC {
		cut := t - h.IdleMs
		b.r.ha = b.r.ha.deleteFunc(func(e HAReplica) bool { return e.RefreshedMs <= cut })
		return nil
	}
	blk, i, ok := b.r.ha.find(h.Tenant, h.Cluster)
	if !ok {
		if n := b.r.HAClusters(h.Tenant); n >= h.MaxClusters {
			return fmt.Errorf("%w: tenant %q has %d, limit %d (cluster %q refused)", ErrHATooManyClusters,
				h.Tenant, n, h.MaxClusters, h.Cluster)
		}
		if b.r.ha.len() >= MaxHAEntries {
			return fmt.Errorf("%w: the ring holds %d, at most %d (tenant %q, cluster %q refused)", ErrHATooManyClusters,
				b.r.ha.len(), MaxHAEntries, h.Tenant, h.Cluster)
		}
		// haTable copies what it changes: the parent ring's table is never written.
		b.r.ha = b.r.ha.insert(blk, i,
			HAReplica{Tenant: h.Tenant, Cluster: h.Cluster, Replica: h.Replica, ElectedMs: t, RefreshedMs: t})
		return nil
	}
	cur := b.r.ha.at(blk, i)
	switch {
	case cur.Replica == h.Replica:
		cur.RefreshedMs = max(cur.RefreshedMs, t)
	case t > cur.RefreshedMs && uint64(t)-uint64(cur.RefreshedMs) > uint64(h.FailoverMs):
		// Failover: the elected replica sent nothing for longer than the timeout (as Cortex: strictly).
		cur = HAReplica{Tenant: h.Tenant, Cluster: h.Cluster, Replica: h.Replica, ElectedMs: t, RefreshedMs: t}
	default:
		return fmt.Errorf("%w: %q of %s/%s refused: %q was refreshed at ring time %d, now %d, failover after %dms",
			ErrHAReplicaElected, h.Replica, h.Tenant, h.Cluster, cur.Replica, cur.RefreshedMs, t, h.FailoverMs)
	}
	b.r.ha = b.r.ha.set(blk, i, cur)
	return nil
}
