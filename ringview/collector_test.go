package ringview_test

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/raftingest/raftingest/ringstate"
	"github.com/raftingest/raftingest/ringview"
)

// The exact exposition Cortex dashboards and alerts read: names, help texts, the const label name,
// the member label, and state="Unhealthy" (Cortex's spelling for the metric).
const ringMetricsText = `
# HELP cortex_ring_member_ownership_percent The ownership of the ring by member, as a fraction from 0 to 1 despite the name (as in Cortex).
# TYPE cortex_ring_member_ownership_percent gauge
cortex_ring_member_ownership_percent{member="a",name="ingester"} 0.25
cortex_ring_member_ownership_percent{member="b",name="ingester"} 0.25
cortex_ring_member_ownership_percent{member="c",name="ingester"} 0.25
cortex_ring_member_ownership_percent{member="d",name="ingester"} 0
cortex_ring_member_ownership_percent{member="e",name="ingester"} 0.25
cortex_ring_member_ownership_percent{member="p",name="ingester"} 0
# HELP cortex_ring_members Number of members in the ring, by state; unhealthy members (heartbeat older than the timeout at ring time) are counted only under state="Unhealthy".
# TYPE cortex_ring_members gauge
cortex_ring_members{name="ingester",state="ACTIVE"} 2
cortex_ring_members{name="ingester",state="JOINING"} 1
cortex_ring_members{name="ingester",state="LEAVING"} 0
cortex_ring_members{name="ingester",state="PENDING"} 1
cortex_ring_members{name="ingester",state="Unhealthy"} 2
# HELP cortex_ring_tokens_owned The number of tokens in the ring owned by the member.
# TYPE cortex_ring_tokens_owned gauge
cortex_ring_tokens_owned{member="a",name="ingester"} 1
cortex_ring_tokens_owned{member="b",name="ingester"} 1
cortex_ring_tokens_owned{member="c",name="ingester"} 1
cortex_ring_tokens_owned{member="d",name="ingester"} 0
cortex_ring_tokens_owned{member="e",name="ingester"} 1
cortex_ring_tokens_owned{member="p",name="ingester"} 0
# HELP cortex_ring_tokens_total Number of tokens in the ring.
# TYPE cortex_ring_tokens_total gauge
cortex_ring_tokens_total{name="ingester"} 4
`

func selfMetricsText(owned, toOwn string) string {
	return `
# HELP cortex_member_ring_tokens_owned The number of tokens owned in the ring.
# TYPE cortex_member_ring_tokens_owned gauge
cortex_member_ring_tokens_owned{name="ingester"} ` + owned + `
# HELP cortex_member_ring_tokens_to_own The number of tokens to own in the ring.
# TYPE cortex_member_ring_tokens_to_own gauge
cortex_member_ring_tokens_to_own{name="ingester"} ` + toOwn + `
`
}

func TestCollector_ExactCortexExposition(t *testing.T) {
	r := testRing(t)
	c := ringview.NewCollector("a", func() *ringstate.Ring { return r }, timeoutMs, "ingester")
	if err := testutil.CollectAndCompare(c, strings.NewReader(ringMetricsText+selfMetricsText("1", "1"))); err != nil {
		t.Fatal(err)
	}
}

func TestCollector_SelfMetrics(t *testing.T) {
	r := testRing(t)
	src := func() *ringstate.Ring { return r }
	for _, tc := range []struct {
		name         string
		self         ringstate.MemberID
		opts         []ringview.CollectorOption
		owned, toOwn string
	}{
		{"joiner receiving a hand-over will own the leaver's tokens", "d", nil, "0", "1"},
		{"pending member owns nothing yet", "p", nil, "0", "0"},
		{"unknown self (not registered yet) reports zero", "zz", nil, "0", "0"},
		{"-ring.num-tokens given: Cortex's meaning of tokens to own", "p", []ringview.CollectorOption{ringview.WithNumTokens(128)}, "0", "128"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := ringview.NewCollector(tc.self, src, timeoutMs, "ingester", tc.opts...)
			err := testutil.CollectAndCompare(c, strings.NewReader(selfMetricsText(tc.owned, tc.toOwn)),
				"cortex_member_ring_tokens_owned", "cortex_member_ring_tokens_to_own")
			if err != nil {
				t.Fatal(err)
			}
		})
	}
}

// Computed at scrape time: a new ring shows up at the next scrape with nothing to update.
func TestCollector_FollowsSourceAndEmptyRing(t *testing.T) {
	var cur *ringstate.Ring // no ring yet
	c := ringview.NewCollector("a", func() *ringstate.Ring { return cur }, timeoutMs, "ingester")
	empty := `
# HELP cortex_ring_members Number of members in the ring, by state; unhealthy members (heartbeat older than the timeout at ring time) are counted only under state="Unhealthy".
# TYPE cortex_ring_members gauge
cortex_ring_members{name="ingester",state="ACTIVE"} 0
cortex_ring_members{name="ingester",state="JOINING"} 0
cortex_ring_members{name="ingester",state="LEAVING"} 0
cortex_ring_members{name="ingester",state="PENDING"} 0
cortex_ring_members{name="ingester",state="Unhealthy"} 0
# HELP cortex_ring_tokens_total Number of tokens in the ring.
# TYPE cortex_ring_tokens_total gauge
cortex_ring_tokens_total{name="ingester"} 0
`
	if err := testutil.CollectAndCompare(c, strings.NewReader(empty+selfMetricsText("0", "0"))); err != nil {
		t.Fatalf("no ring: %v", err)
	}
	cur = testRing(t)
	if err := testutil.CollectAndCompare(c, strings.NewReader(ringMetricsText+selfMetricsText("1", "1"))); err != nil {
		t.Fatalf("after the ring appeared: %v", err)
	}
}

// The collector registers cleanly next to others (descriptors are consistent) and two rings can be
// exported from one registry under different names.
func TestCollector_Registers(t *testing.T) {
	r := testRing(t)
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(ringview.NewCollector("a", func() *ringstate.Ring { return r }, timeoutMs, "ingester"))
	reg.MustRegister(ringview.NewCollector("a", func() *ringstate.Ring { return r }, timeoutMs, "other"))
	n, err := testutil.GatherAndCount(reg, "cortex_ring_members")
	if err != nil || n != 10 {
		t.Errorf("cortex_ring_members series: %d, %v; want 10", n, err)
	}
}
