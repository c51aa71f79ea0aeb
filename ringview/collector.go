package ringview

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/raftingest/raftingest/ringstate"
)

// Label names and values of the ring metrics, as Cortex (pkg/ring/ring.go, lifecycler.go) and
// grafana/dskit export them, so that existing dashboards and alerts (for example the cortex-mixin's
// CortexIngesterUnhealthy: cortex_ring_members{state="Unhealthy", name="ingester"}) read ours.
const (
	// LabelRingName is the const label naming the ring ("ingester").
	LabelRingName = "name"
	// LabelMember names the member in per-member series. Cortex renamed it from "ingester" to
	// "member" when the ring became generic; current Cortex and dskit use "member".
	LabelMember = "member"
	// LabelState is the state label of cortex_ring_members.
	LabelState = "state"
	// MetricStateUnhealthy is the state label value for unhealthy members. Cortex/dskit write
	// "Unhealthy" here although the ring page writes "UNHEALTHY"; we keep both as they are.
	MetricStateUnhealthy = "Unhealthy"
)

// CollectorOption configures NewCollector.
type CollectorOption func(*collector)

// WithNumTokens sets the value of cortex_member_ring_tokens_to_own to the configured
// -ring.num-tokens, which is what Cortex's lifecycler reports. Without it the value is derived from
// the ring (see NewCollector).
func WithNumTokens(n int) CollectorOption {
	return func(c *collector) { c.numTokens = n }
}

// NewCollector returns a Prometheus collector that computes Cortex's ring metrics at scrape time from
// the ring source returns (nil counts as an empty ring), judging health at ring time:
//
//   - cortex_ring_members{name, state}: members per state; an unhealthy member is counted only under
//     state="Unhealthy". Every state is always exported, zero included, so alerts see 0 not absence.
//   - cortex_ring_tokens_total{name}: tokens in the ring.
//   - cortex_ring_tokens_owned{name, member}: tokens per member.
//   - cortex_ring_member_ownership_percent{name, member}: the FRACTION 0..1 of the hash space per
//     member, despite the name, as in Cortex, so existing dashboards read it right.
//   - cortex_member_ring_tokens_owned{name} and cortex_member_ring_tokens_to_own{name}: this member
//     (self). Tokens to own is the -ring.num-tokens given WithNumTokens; otherwise what the ring says
//     self will own: the leaver's token count while self receives a hand-over, else its own count.
//
// The collector holds no state between scrapes and is safe for concurrent use if source is.
func NewCollector(self ringstate.MemberID, source func() *ringstate.Ring, heartbeatTimeoutMs int64, ringName string, opts ...CollectorOption) prometheus.Collector {
	constLabels := prometheus.Labels{LabelRingName: ringName}
	c := &collector{
		self:      self,
		source:    source,
		timeoutMs: heartbeatTimeoutMs,
		numTokens: -1,
		members: prometheus.NewDesc("cortex_ring_members",
			"Number of members in the ring, by state; unhealthy members (heartbeat older than the timeout at ring time) are counted only under state=\"Unhealthy\".",
			[]string{LabelState}, constLabels),
		tokensTotal: prometheus.NewDesc("cortex_ring_tokens_total",
			"Number of tokens in the ring.", nil, constLabels),
		tokensOwned: prometheus.NewDesc("cortex_ring_tokens_owned",
			"The number of tokens in the ring owned by the member.", []string{LabelMember}, constLabels),
		ownership: prometheus.NewDesc("cortex_ring_member_ownership_percent",
			"The ownership of the ring by member, as a fraction from 0 to 1 despite the name (as in Cortex).",
			[]string{LabelMember}, constLabels),
		selfOwned: prometheus.NewDesc("cortex_member_ring_tokens_owned",
			"The number of tokens owned in the ring.", nil, constLabels),
		selfToOwn: prometheus.NewDesc("cortex_member_ring_tokens_to_own",
			"The number of tokens to own in the ring.", nil, constLabels),
	}
	for _, o := range opts {
		o(c)
	}
	return c
}

type collector struct {
	self      ringstate.MemberID
	source    func() *ringstate.Ring
	timeoutMs int64
	numTokens int // -1: derive tokens to own from the ring

	members, tokensTotal, tokensOwned, ownership, selfOwned, selfToOwn *prometheus.Desc
}

// Describe implements prometheus.Collector.
func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.members, c.tokensTotal, c.tokensOwned, c.ownership, c.selfOwned, c.selfToOwn} {
		ch <- d
	}
}

// metricStates are the cortex_ring_members state values, in Cortex's spelling.
var metricStates = []string{
	ringstate.ACTIVE.String(), ringstate.LEAVING.String(), ringstate.PENDING.String(),
	ringstate.JOINING.String(), MetricStateUnhealthy,
}

// Collect implements prometheus.Collector.
func (c *collector) Collect(ch chan<- prometheus.Metric) {
	r := c.source()
	if r == nil {
		r = ringstate.New()
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}

	counts := make(map[string]int, len(metricStates))
	now := r.TimeMs()
	for i := range r.Len() {
		m := r.MemberAt(i)
		s := m.State.String()
		if !m.Healthy(now, c.timeoutMs) {
			s = MetricStateUnhealthy
		}
		counts[s]++
		gauge(c.tokensOwned, float64(len(m.Tokens)), string(m.ID))
		gauge(c.ownership, r.Ownership(m.ID), string(m.ID))
	}
	for _, s := range metricStates {
		gauge(c.members, float64(counts[s]), s)
	}
	gauge(c.tokensTotal, float64(r.NumTokens()))

	owned, toOwn := 0, 0
	if me, ok := r.Member(c.self); ok {
		owned, toOwn = len(me.Tokens), len(me.Tokens)
		if me.State == ringstate.JOINING && me.HandoverPeer != "" {
			if leaver, ok := r.Member(me.HandoverPeer); ok {
				toOwn = len(leaver.Tokens)
			}
		}
	}
	if c.numTokens >= 0 {
		toOwn = c.numTokens
	}
	gauge(c.selfOwned, float64(owned))
	gauge(c.selfToOwn, float64(toOwn))
}
