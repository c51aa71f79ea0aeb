package lifecycle

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/raftingest/raftingest/ringstate"
)

// metrics are the lifecycle's counters. They always exist (so the loop never checks for nil) and are
// exported only when RegisterMetrics is called.
type metrics struct {
	heartbeats *prometheus.CounterVec // outcome: ok, refused, error
	commands   *prometheus.CounterVec // op, outcome: ok, refused, retried
	states     []prometheus.Collector
}

func newMetrics(l *Lifecycle) *metrics {
	m := &metrics{
		heartbeats: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "raftingest_lifecycle_heartbeats_total",
			Help: "Heartbeats this member sent to the ring, by outcome (ok, refused, error).",
		}, []string{"outcome"}),
		commands: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "raftingest_lifecycle_ring_commands_total",
			Help: "Ring commands this member's lifecycle applied (heartbeats excluded), by op and outcome: ok, refused (by the ring), retried (outcome unknown or transient, sent again with the same request id).",
		}, []string{"op", "outcome"}),
	}
	for s := ringstate.ACTIVE; s <= ringstate.JOINING; s++ {
		m.states = append(m.states, prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name:        "raftingest_lifecycle_state",
			Help:        "1 for this member's state in the latest applied ring, 0 for the others; all 0 when it is not a member.",
			ConstLabels: prometheus.Labels{"state": s.String()},
		}, func() float64 {
			if st, ok := l.member(); ok && st == s {
				return 1
			}
			return 0
		}))
	}
	return m
}

// RegisterMetrics registers the lifecycle's metrics on reg. Call it at most once, before or while Run
// runs.
func (l *Lifecycle) RegisterMetrics(reg prometheus.Registerer) error {
	for _, c := range append([]prometheus.Collector{l.metrics.heartbeats, l.metrics.commands}, l.metrics.states...) {
		if err := reg.Register(c); err != nil {
			return err
		}
	}
	return nil
}
