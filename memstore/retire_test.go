package memstore

import (
	"fmt"
	"math"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/prometheus/model/labels"
)

// TestStore_RetiresEmptyTenants: once a drop leaves a tenant without series, its head and its
// per-tenant metric series go, so that rotating tenant ids cannot grow memory without bound; the
// tenant's next push starts afresh.
func TestStore_RetiresEmptyTenants(t *testing.T) {
	st := mustOpen(t, testConfig(t.TempDir()))
	const tenants = 200
	for i := range tenants {
		mustPush(t, st, fmt.Sprint("t", i), ser(labels.FromStrings("__name__", "m"), Sample{T: 1, V: 1}))
	}
	if n := len(st.Tenants()); n != tenants {
		t.Fatalf("%d tenants, want %d", n, tenants)
	}
	if n := testutil.CollectAndCount(st.metrics.ingestedSamples); n != tenants {
		t.Fatalf("%d per-tenant sample counters, want %d", n, tenants)
	}
	if _, err := st.Truncate(math.MaxInt64); err != nil {
		t.Fatal(err)
	}
	if n := len(st.Tenants()); n != 0 {
		t.Fatalf("%d tenant heads left after every series was dropped, want 0", n)
	}
	if n := testutil.CollectAndCount(st.metrics.ingestedSamples) + testutil.CollectAndCount(st.metrics.seriesCreated) +
		testutil.CollectAndCount(st.metrics.seriesRemoved) + testutil.CollectAndCount(st.metrics.ingestedSamplesFail); n != 0 {
		t.Fatalf("%d per-tenant metric series left, want 0", n)
	}
	// The tenant comes back: a new head, its data visible.
	mustPush(t, st, "t7", ser(labels.FromStrings("__name__", "m"), Sample{T: 5, V: 2}))
	got := dump(t, st)
	if s := got[`t7/{__name__="m"}`]; len(s) != 1 || s[0].T != 5 {
		t.Fatalf("after the tenant came back: %v", got)
	}
}

// TestStore_RetireRacesPushes: a drop that empties a tenant races pushes of new series to it; no
// push may land in a head that was retired (its samples would be acknowledged and invisible).
func TestStore_RetireRacesPushes(t *testing.T) {
	st := mustOpen(t, testConfig(t.TempDir()))
	const rounds, tenants = 150, 4
	for r := range rounds {
		for k := range tenants {
			mustPush(t, st, fmt.Sprint("t", k), ser(labels.FromStrings("__name__", "old", "r", fmt.Sprint(r)), Sample{T: 1, V: 1}))
		}
		var wg sync.WaitGroup
		wg.Add(1 + tenants)
		go func() {
			defer wg.Done()
			if _, err := st.Truncate(1000); err != nil { // drops every "old" series
				t.Error(err)
			}
		}()
		for k := range tenants {
			go func() {
				defer wg.Done()
				res, err := st.Push(fmt.Sprint("t", k), []SeriesSamples{ser(labels.FromStrings("__name__", "new", "r", fmt.Sprint(r)), Sample{T: 2000, V: float64(r)})})
				if err != nil || res.Accepted != 1 {
					t.Errorf("push: %+v, %v", res, err)
				}
			}()
		}
		wg.Wait()
		got := dump(t, st)
		for k := range tenants {
			key := fmt.Sprintf(`t%d/{__name__="new", r="%d"}`, k, r)
			if s := got[key]; len(s) != 1 || s[0].V != float64(r) {
				t.Fatalf("round %d: acknowledged %s is not visible: %v", r, key, s)
			}
		}
	}
}
