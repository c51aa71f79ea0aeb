package ingester

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/raftingest/raftingest/ingesterpb"
)

func TestMetadataStore_LimitsRetentionAndQuery(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	clock := func() time.Time { return now }
	reg := prometheus.NewRegistry()
	ms, err := newMetadataStore(metadataConfig{MaxGlobalPerUser: 2, MaxGlobalPerMetric: 2, RetainPeriod: 10 * time.Minute},
		func() int { return 2 }, clock, reg)
	if err != nil {
		t.Fatal(err)
	}
	c := ingesterpb.MetricType_METRIC_TYPE_COUNTER
	g := ingesterpb.MetricType_METRIC_TYPE_GAUGE
	ms.add("t", []ingesterpb.MetadataView{
		{Type: c, MetricFamilyName: "a_total", Help: "A."},
		{Type: c, MetricFamilyName: "a_total", Help: "A."}, // the same entry again
		{Type: c, MetricFamilyName: "a_total", Help: "A, other target."},
		{Type: g, MetricFamilyName: "a_total", Help: "third entry: over the per-metric limit"},
		{Type: g, MetricFamilyName: "b"},
		{Type: g, MetricFamilyName: "c"}, // third metric: over the per-tenant limit
		{Type: g},                        // no name: ignored
	})
	if got := len(ms.query("t", 0, 0, "")); got != 3 {
		t.Fatalf("%d entries, want 3 (a_total twice, b)", got)
	}
	if got := testutil.ToFloat64(ms.discarded.WithLabelValues("t", "per_metric_metadata_limit")); got != 1 {
		t.Errorf("per-metric discards %v", got)
	}
	if got := testutil.ToFloat64(ms.discarded.WithLabelValues("t", "per_user_metadata_limit")); got != 1 {
		t.Errorf("per-user discards %v", got)
	}
	if got := ms.query("t", 1, 0, ""); len(got) != 2 || got[0].MetricFamilyName != "a_total" {
		t.Errorf("limit 1: %v", got)
	}
	if got := ms.query("t", 0, 1, ""); len(got) != 2 {
		t.Errorf("limit_per_metric 1: %v", got)
	}
	if got := ms.query("t", 0, 0, "b"); len(got) != 1 || got[0].MetricFamilyName != "b" {
		t.Errorf("metric b: %v", got)
	}
	if got := ms.query("other", 0, 0, ""); len(got) != 0 {
		t.Errorf("tenant other: %v", got)
	}
	// b is received again 6 minutes later; at 11 minutes a_total has expired, b has not.
	now = now.Add(6 * time.Minute)
	ms.add("t", []ingesterpb.MetadataView{{Type: g, MetricFamilyName: "b"}})
	now = now.Add(5 * time.Minute)
	ms.purge()
	if got := ms.query("t", 0, 0, ""); len(got) != 1 || got[0].MetricFamilyName != "b" {
		t.Errorf("after the retain period: %v", got)
	}
	if got := testutil.ToFloat64(ms.inMemory); got != 1 {
		t.Errorf("cortex_ingester_memory_metadata %v", got)
	}
	now = now.Add(11 * time.Minute)
	ms.purge()
	if len(ms.tenants) != 0 {
		t.Errorf("tenants left after everything expired: %v", ms.tenants)
	}
}
