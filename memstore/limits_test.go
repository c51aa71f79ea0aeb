package memstore

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
)

// TestSetSeriesLimit: the limit in force can change at run time (the ingester converts the global
// limit from the ring), the refusal names where it comes from, and hand-over imports ignore it
// (they bring acknowledged data back, like a replay).
func TestSetSeriesLimit(t *testing.T) {
	cfg := testConfig(t.TempDir())
	cfg.MaxSeriesPerTenant = 0
	st := mustOpen(t, cfg)
	l := func(i int) labels.Labels { return labels.FromStrings("__name__", "m", "i", fmt.Sprint(i)) }
	if got := st.SeriesLimit(); got.Max != 0 || got.Source != "-ingester.max-series-per-tenant" {
		t.Fatalf("initial limit %+v", got)
	}
	st.SetSeriesLimit(SeriesLimit{Max: 2, Source: "-ingester.max-global-series-per-user=6 over 3 ingesters at RF 1"})
	res := mustPush(t, st, "a", ser(l(1), Sample{1, 1}), ser(l(2), Sample{1, 1}), ser(l(3), Sample{1, 1}))
	if res.Refused != 1 || len(res.Errors) != 1 || !errors.Is(res.Errors[0], ErrTooManySeries) ||
		!strings.Contains(res.Errors[0].Error(), "limit 2 (-ingester.max-global-series-per-user=6 over 3 ingesters at RF 1)") {
		t.Fatalf("result %+v", res)
	}
	// An import over the limit is not refused.
	c := chunkenc.NewXORChunk()
	app, _ := c.Appender()
	app.Append(5, 1)
	if err := st.ImportChunks("a", l(4), []Chunk{{MinTime: 5, MaxTime: 5, Encoding: chunkenc.EncXOR, Data: c.Bytes()}}); err != nil {
		t.Fatalf("import over the limit: %v", err)
	}
	// Raising it lets new series in again.
	st.SetSeriesLimit(SeriesLimit{Max: 10, Source: "x"})
	if res := mustPush(t, st, "a", ser(l(3), Sample{1, 1})); res.Refused != 0 {
		t.Fatalf("after raising: %+v", res)
	}
	if s := st.Stats("a"); s.Series != 4 {
		t.Fatalf("stats %+v", s)
	}
}

// A tenant with its own limit (SeriesLimit.Tenants, the runtime overrides) is held to it; the
// others to Max. The lookup is asked per push, so a change applies to the next push.
func TestSetSeriesLimit_PerTenant(t *testing.T) {
	cfg := testConfig(t.TempDir())
	cfg.MaxSeriesPerTenant = 0
	st := mustOpen(t, cfg)
	l := func(i int) labels.Labels { return labels.FromStrings("__name__", "m", "i", fmt.Sprint(i)) }
	small := 1
	st.SetSeriesLimit(SeriesLimit{Max: 100, Source: "flag", Tenants: &TenantSeriesLimits{For: func(tenant string) (SeriesLimit, bool) {
		if tenant == "small" {
			return SeriesLimit{Max: small, Source: "override"}, true
		}
		return SeriesLimit{}, false
	}}})
	if res := mustPush(t, st, "small", ser(l(1), Sample{1, 1}), ser(l(2), Sample{1, 1})); res.Refused != 1 {
		t.Fatalf("small over its override of 1: %+v", res)
	}
	if res := mustPush(t, st, "big", ser(l(1), Sample{1, 1}), ser(l(2), Sample{1, 1}), ser(l(3), Sample{1, 1})); res.Refused != 0 {
		t.Fatalf("big on the default of 100: %+v", res)
	}
	small = 5
	if res := mustPush(t, st, "small", ser(l(2), Sample{2, 1}), ser(l(3), Sample{2, 1})); res.Refused != 0 {
		t.Fatalf("small after its override rose to 5: %+v", res)
	}
}
