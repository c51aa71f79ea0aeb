package ingester

import (
	"fmt"
	"sync"
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

// A query builds its answer outside any lock: while one tenant's query is being built (parked in
// queryHook), other tenants' pushes, the same tenant's, and a purge go on.
func TestMetadataStore_QueryDoesNotStallPushesOrPurge(t *testing.T) {
	ms, err := newMetadataStore(metadataConfig{MaxGlobalPerMetric: 10, RetainPeriod: time.Minute}, func() int { return 0 }, time.Now, nil)
	if err != nil {
		t.Fatal(err)
	}
	for n := range 1000 {
		ms.add("big", []ingesterpb.MetadataView{{MetricFamilyName: fmt.Sprintf("m_%05d", n), Help: "h"}})
	}
	parked, release := make(chan struct{}), make(chan struct{})
	ms.queryHook = func() { close(parked); <-release }
	answered := make(chan int)
	go func() { answered <- len(ms.query("big", 0, 0, "")) }()
	select {
	case <-parked:
	case <-time.After(10 * time.Second):
		t.Fatal("the query did not reach its build")
	}
	done := make(chan struct{})
	go func() {
		ms.add("victim", []ingesterpb.MetadataView{{MetricFamilyName: "x", Help: "y"}})
		ms.add("big", []ingesterpb.MetadataView{{MetricFamilyName: "new", Help: "y"}})
		ms.purge()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		close(release)
		t.Fatal("pushes and purge waited for a query's build")
	}
	close(release)
	if n := <-answered; n != 1000 {
		t.Errorf("the query answered %d entries, want the 1000 it copied", n)
	}
	ms.queryHook = nil
	if got := ms.query("victim", 0, 0, ""); len(got) != 1 {
		t.Errorf("victim: %v", got)
	}
	if got := testutil.ToFloat64(ms.inMemory); got != 1002 {
		t.Errorf("cortex_ingester_memory_metadata %v, want 1002", got)
	}
}

// add and purge racing on a tenant that purge empties: nothing added is lost to a tenant purge
// removed from the map (run with -race).
func TestMetadataStore_AddRacingPurgeOfAnEmptyTenant(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	ms, err := newMetadataStore(metadataConfig{RetainPeriod: time.Minute}, nil, clock, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 200 {
		ms.add("t", []ingesterpb.MetadataView{{MetricFamilyName: "old"}})
		mu.Lock()
		now = now.Add(2 * time.Minute) // "old" expires
		mu.Unlock()
		var wg sync.WaitGroup
		wg.Add(2)
		go func() { defer wg.Done(); ms.purge() }()
		go func() {
			defer wg.Done()
			ms.add("t", []ingesterpb.MetadataView{{MetricFamilyName: fmt.Sprint("new", i)}})
		}()
		wg.Wait()
		if got := ms.query("t", 0, 0, fmt.Sprint("new", i)); len(got) != 1 {
			t.Fatalf("round %d: the entry added while purge emptied the tenant is lost", i)
		}
		if got := testutil.ToFloat64(ms.inMemory); got != 1 {
			t.Fatalf("round %d: cortex_ingester_memory_metadata %v, want 1", i, got)
		}
		mu.Lock()
		now = now.Add(2 * time.Minute)
		mu.Unlock()
		ms.purge()
	}
}
