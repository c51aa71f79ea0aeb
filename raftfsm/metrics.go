package raftfsm

import (
	"strconv"
	"sync/atomic"

	"github.com/hashicorp/raft"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/raftingest/raftingest/ringstate"
)

// codeNames are the label values of the code label: stable, lowercase, one per ringstate.Code.
// (ringstate.Code has no String method; if it gains one, use it.)
var codeNames = [...]string{"ok", "unknown_member", "member_exists", "invalid_member", "illegal_transition",
	"token_owned", "invalid_tokens", "joiner_not_pending", "handover_mismatch", "handover_in_progress",
	"invalid_command", "lease_held", "mixed_versions"}

// Every ringstate.Code has a name: a new code without one fails to compile here.
var _ = [1]struct{}{}[len(codeNames)-int(ringstate.MaxCode)-1]

func codeName(c ringstate.Code) string {
	if int(c) < len(codeNames) {
		return codeNames[c]
	}
	return "code_" + strconv.Itoa(int(c))
}

// nodeMetrics are the node's metrics, registered on the injected Registerer. The gauges are read
// from Raft at scrape time by a custom collector, so they are never stale and cost nothing between
// scrapes.
type nodeMetrics struct {
	reg           prometheus.Registerer
	applyDuration prometheus.Histogram
	fsmApply      *prometheus.CounterVec
	voterChanges  *prometheus.CounterVec
	autoForgotten prometheus.Counter
	collector     *raftCollector
	registered    []prometheus.Collector
}

func newNodeMetrics(reg prometheus.Registerer, n *Node) *nodeMetrics {
	return &nodeMetrics{
		reg: reg,
		applyDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "raftingest_raft_apply_duration_seconds",
			Help: "Time from proposing a ring command on this node (forwarded to the leader if needed) until its outcome is known: the commit latency the proposer sees.",
			// 1ms .. ~16s: loopback commits take a millisecond, a WAN or an election seconds.
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 15),
		}),
		fsmApply: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "raftingest_raft_fsm_apply_total",
			Help: "Ring commands applied by this node's FSM, by op and outcome code (refusals are committed too).",
		}, []string{"op", "code"}),
		voterChanges: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "raftingest_raft_voter_changes_total",
			Help: "Voter changes this node made as leader: change (promoted, demoted) and reason (fill: a free voter slot; replace_unreachable: in place of a voter silent for -raft.voter-replace-after; unreachable: the silent voter demoted; zone_spread: a voter moved from a zone with two more voters than another; over_max: one voter too many after a zone swap whose demotion failed).",
		}, []string{"change", "reason"}),
		autoForgotten: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "raftingest_ring_auto_forgotten_total",
			Help: "Members this node forgot as leader because their heartbeat was -ring.auto-forget-unhealthy-periods timeouts old and every member sharing a replication set with them was ACTIVE and healthy.",
		}),
		collector: &raftCollector{n: n},
	}
}

func (m *nodeMetrics) voterChange(change, reason string) {
	m.voterChanges.WithLabelValues(change, reason).Inc()
}

func (m *nodeMetrics) register() error {
	if m.reg == nil {
		return nil
	}
	for _, c := range []prometheus.Collector{m.applyDuration, m.fsmApply, m.voterChanges, m.autoForgotten, m.collector} {
		if err := m.reg.Register(c); err != nil {
			m.unregister()
			return err
		}
		m.registered = append(m.registered, c)
	}
	return nil
}

// unregister removes the node's collectors, so that a node restarted in the same process (tests, or
// a daemon re-creating its node after a wipe) can register again.
func (m *nodeMetrics) unregister() {
	for _, c := range m.registered {
		m.reg.Unregister(c)
	}
	m.registered = nil
}

func (m *nodeMetrics) countApply(op ringstate.Op, code ringstate.Code) {
	name := "invalid"
	if op != 0 {
		name = op.String()
	}
	m.fsmApply.WithLabelValues(name, codeName(code)).Inc()
}

var (
	descLeader    = prometheus.NewDesc("raftingest_raft_leader", "1 if this node is the Raft leader, else 0.", nil, nil)
	descTerm      = prometheus.NewDesc("raftingest_raft_term", "Current Raft term.", nil, nil)
	descApplied   = prometheus.NewDesc("raftingest_raft_applied_index", "Index of the newest Raft entry applied on this node.", nil, nil)
	descCommit    = prometheus.NewDesc("raftingest_raft_commit_index", "Index of the newest Raft entry this node knows to be committed.", nil, nil)
	descLastIndex = prometheus.NewDesc("raftingest_raft_last_log_index", "Index of the newest entry in this node's Raft log.", nil, nil)
	descPeers     = prometheus.NewDesc("raftingest_raft_peers", "Servers in the latest Raft configuration, by suffrage (voter, nonvoter).", []string{"suffrage"}, nil)
)

// raftCollector reads the Raft node's figures at scrape time. It is registered before
// raft.NewRaft returns, which takes a while on a long log, and the ingester serves /metrics from
// its start (the WAL replay's progress): r is set once NewRaft returned, read atomically.
type raftCollector struct {
	n *Node
	r atomic.Pointer[raft.Raft]
}

func (c *raftCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descLeader, descTerm, descApplied, descCommit, descLastIndex, descPeers} {
		ch <- d
	}
}

func (c *raftCollector) Collect(ch chan<- prometheus.Metric) {
	r := c.r.Load()
	if r == nil {
		return
	}
	leader := 0.0
	if r.State() == raft.Leader {
		leader = 1
	}
	ch <- prometheus.MustNewConstMetric(descLeader, prometheus.GaugeValue, leader)
	ch <- prometheus.MustNewConstMetric(descTerm, prometheus.GaugeValue, float64(r.CurrentTerm()))
	ch <- prometheus.MustNewConstMetric(descApplied, prometheus.GaugeValue, float64(r.AppliedIndex()))
	ch <- prometheus.MustNewConstMetric(descCommit, prometheus.GaugeValue, float64(r.CommitIndex()))
	ch <- prometheus.MustNewConstMetric(descLastIndex, prometheus.GaugeValue, float64(r.LastIndex()))
	voters, nonvoters := 0, 0
	if f := r.GetConfiguration(); f.Error() == nil {
		for _, s := range f.Configuration().Servers {
			if s.Suffrage == raft.Voter {
				voters++
			} else {
				nonvoters++
			}
		}
	}
	ch <- prometheus.MustNewConstMetric(descPeers, prometheus.GaugeValue, float64(voters), "voter")
	ch <- prometheus.MustNewConstMetric(descPeers, prometheus.GaugeValue, float64(nonvoters), "nonvoter")
}
