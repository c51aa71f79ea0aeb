package memstore

import (
	"fmt"
	"math"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/prometheus/model/exemplar"
	"github.com/prometheus/prometheus/model/labels"
)

func limitOf(n int) ExemplarLimit { return func(string) int { return n } }

// pushEx pushes one sample and exemplars of lset through an Appender, as the ingester does.
func pushEx(t testing.TB, st *Store, tenant string, lset labels.Labels, smp Sample, exs ...Exemplar) int {
	t.Helper()
	app := st.Appender(tenant)
	app.Append(lset, []Sample{smp})
	n := app.AppendExemplars(lset, exs)
	if _, err := app.Commit(); err != nil {
		t.Fatal(err)
	}
	return n
}

func ex(trace string, t int64, v float64) Exemplar {
	return Exemplar{Labels: labels.FromStrings("trace_id", trace), T: t, Value: v}
}

func queryAll(t testing.TB, st *Store, tenant string, max int) ([]exemplar.QueryResult, bool) {
	t.Helper()
	res, truncated, err := st.QueryExemplars(tenant, ExemplarQuery{Start: math.MinInt64, End: math.MaxInt64, Max: max,
		MatcherSets: [][]*labels.Matcher{{labels.MustNewMatcher(labels.MatchRegexp, "__name__", ".+")}}})
	if err != nil {
		t.Fatal(err)
	}
	return res, truncated
}

func render(res []exemplar.QueryResult) string {
	var b strings.Builder
	for _, r := range res {
		b.WriteString(r.SeriesLabels.String())
		for _, e := range r.Exemplars {
			fmt.Fprintf(&b, " %s@%d=%g", e.Labels, e.Ts, e.Value)
		}
		b.WriteString(";")
	}
	return b.String()
}

func TestExemplars_StoredAfterCommitQueriedAndBoundedByTheLimit(t *testing.T) {
	st := mustOpen(t, testConfig(t.TempDir()))
	a := labels.FromStrings("__name__", "req_total", "job", "a")
	b := labels.FromStrings("__name__", "req_total", "job", "b")
	// No limit set yet: nothing is stored (Mimir's default 0 disables exemplars).
	if n := pushEx(t, st, "t", a, Sample{1000, 1}, ex("x", 1000, 1)); n != 0 {
		t.Fatalf("took %d exemplars with limit 0", n)
	}
	st.SetExemplarLimit(limitOf(3))
	pushEx(t, st, "t", a, Sample{2000, 2}, ex("a1", 2000, 2))
	pushEx(t, st, "t", b, Sample{2000, 2}, ex("b1", 2000, 5))
	pushEx(t, st, "t", a, Sample{3000, 3}, ex("a2", 3000, 3))
	// A duplicate and an out-of-order exemplar are not taken.
	if n := pushEx(t, st, "t", a, Sample{4000, 4}, ex("a2", 3000, 3), ex("old", 2500, 1)); n != 0 {
		t.Errorf("took %d duplicate or out-of-order exemplars", n)
	}
	res, _ := queryAll(t, st, "t", 0)
	want := `{__name__="req_total", job="a"} {trace_id="a1"}@2000=2 {trace_id="a2"}@3000=3;{__name__="req_total", job="b"} {trace_id="b1"}@2000=5;`
	if got := render(res); got != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
	// The circular store keeps the newest 3.
	pushEx(t, st, "t", b, Sample{5000, 4}, ex("b2", 5000, 6))
	res, _ = queryAll(t, st, "t", 0)
	if got := render(res); strings.Contains(got, "a1") || !strings.Contains(got, "b2") {
		t.Errorf("after a 4th exemplar: %s", got)
	}
	// Max cuts to the newest and says so.
	res, truncated := queryAll(t, st, "t", 2)
	if got := render(res); !truncated || got != `{__name__="req_total", job="a"} {trace_id="a2"}@3000=3;{__name__="req_total", job="b"} {trace_id="b2"}@5000=6;` {
		t.Errorf("max 2: %s (truncated %v)", got, truncated)
	}
	// Other tenants see nothing; another matcher selects one series.
	if res, _ := queryAll(t, st, "other", 0); len(res) != 0 {
		t.Errorf("tenant other sees %s", render(res))
	}
	res, _, _ = st.QueryExemplars("t", ExemplarQuery{Start: 0, End: 10000, MatcherSets: [][]*labels.Matcher{{labels.MustNewMatcher(labels.MatchEqual, "job", "b")}}})
	if got := render(res); !strings.HasPrefix(got, `{__name__="req_total", job="b"}`) || strings.Count(got, ";") != 1 {
		t.Errorf("job=b: %s", got)
	}
	// An exemplar of a series that is not in the store (refused by the series limit) is dropped.
	st.SetSeriesLimit(SeriesLimit{Max: 2})
	c := labels.FromStrings("__name__", "req_total", "job", "c")
	if n := pushEx(t, st, "t", c, Sample{6000, 1}, ex("c1", 6000, 1)); n != 0 {
		t.Errorf("took %d exemplars of a refused series", n)
	}
	// Shrinking the limit keeps the newest; 0 drops the tenant's store.
	st.SetExemplarLimit(limitOf(1))
	res, _ = queryAll(t, st, "t", 0)
	if got := render(res); got != `{__name__="req_total", job="b"} {trace_id="b2"}@5000=6;` {
		t.Errorf("resized to 1: %s", got)
	}
	st.SetExemplarLimit(limitOf(0))
	if res, _ := queryAll(t, st, "t", 0); len(res) != 0 {
		t.Errorf("limit 0: %s", render(res))
	}
}

// TestExemplars_ReplayedAfterKillAndTruncated: exemplars of acknowledged pushes come back from a
// copy of the running store's WAL (what kill -9 leaves), with the limit applied after Open as the
// ingester does; Truncate drops the exemplars older than its bound from the WAL too.
func TestExemplars_ReplayedAfterKillAndTruncated(t *testing.T) {
	dir := t.TempDir()
	st := mustOpen(t, testConfig(dir))
	st.SetExemplarLimit(limitOf(100))
	lsets := []labels.Labels{labels.FromStrings("__name__", "m", "i", "0"), labels.FromStrings("__name__", "m", "i", "1")}
	for i := range 20 {
		ls := lsets[i%2]
		pushEx(t, st, "t", ls, Sample{int64(1000 * (i + 1)), float64(i)}, ex(fmt.Sprintf("tr%d", i), int64(1000*(i+1)), float64(i)))
	}
	want, _ := queryAll(t, st, "t", 0)
	killed := copyWAL(t, dir)

	reg := prometheus.NewRegistry()
	back, err := Open(testConfig(killed), reg, testLogger())
	if err != nil {
		t.Fatal(err)
	}
	defer back.Close()
	if back.ReplayReport().Exemplars != 20 {
		t.Errorf("replayed %d exemplars, want 20", back.ReplayReport().Exemplars)
	}
	back.SetExemplarLimit(limitOf(100))
	got, _ := queryAll(t, back, "t", 0)
	if render(got) != render(want) {
		t.Fatalf("after replay\n got %s\nwant %s", render(got), render(want))
	}
	// A smaller limit after replay keeps the newest.
	back.SetExemplarLimit(limitOf(4))
	got, _ = queryAll(t, back, "t", 0)
	if r := render(got); strings.Count(r, "trace_id") != 4 || !strings.Contains(r, "tr19") || strings.Contains(r, "tr15") {
		t.Errorf("limit 4 after replay: %s", r)
	}
	if err := testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP cortex_ingester_tsdb_exemplar_exemplars_in_storage Number of exemplars currently in the circular stores of every tenant.
# TYPE cortex_ingester_tsdb_exemplar_exemplars_in_storage gauge
cortex_ingester_tsdb_exemplar_exemplars_in_storage 4
# HELP cortex_ingester_tsdb_exemplar_max_exemplars The size of each tenant's circular exemplar store: its share of -ingester.max-global-exemplars-per-user.
# TYPE cortex_ingester_tsdb_exemplar_max_exemplars gauge
cortex_ingester_tsdb_exemplar_max_exemplars{user="t"} 4
`), "cortex_ingester_tsdb_exemplar_exemplars_in_storage", "cortex_ingester_tsdb_exemplar_max_exemplars"); err != nil {
		t.Error(err)
	}

	// Truncate at 10500 keeps the exemplars from 11000 on in the WAL.
	if _, err := st.Truncate(10500); err != nil {
		t.Fatal(err)
	}
	after := copyWAL(t, dir)
	st2, err := Open(testConfig(after), nil, testLogger())
	if err != nil {
		t.Fatal(err)
	}
	defer st2.Close()
	if n := st2.ReplayReport().Exemplars; n != 10 {
		t.Errorf("replayed %d exemplars after Truncate(10500), want the 10 from 11000 on", n)
	}
	st2.SetExemplarLimit(limitOf(100))
	got, _ = queryAll(t, st2, "t", 0)
	if r := render(got); strings.Contains(r, "tr9}") || !strings.Contains(r, "tr10") || !strings.Contains(r, "tr19") {
		t.Errorf("after truncation and replay: %s", r)
	}
	// DropAll drops them all.
	if _, err := st.DropAll(); err != nil {
		t.Fatal(err)
	}
	st3, err := Open(testConfig(copyWAL(t, dir)), nil, testLogger())
	if err != nil {
		t.Fatal(err)
	}
	defer st3.Close()
	if n := st3.ReplayReport().Exemplars; n != 0 {
		t.Errorf("replayed %d exemplars after DropAll", n)
	}
}

func TestExemplarsRecord_RoundTrip(t *testing.T) {
	es := []walExemplars{
		{Tenant: "t", Labels: labels.FromStrings("__name__", "m", "a", "b"), Exemplars: []Exemplar{
			{Labels: labels.FromStrings("trace_id", "x", "span_id", "y"), T: -5, Value: math.NaN()},
			{Labels: labels.EmptyLabels(), T: math.MaxInt64, Value: math.Copysign(0, -1)},
		}},
		{Tenant: "u", Labels: labels.FromStrings("__name__", "n"), Exemplars: []Exemplar{{Labels: labels.FromStrings("t", "1"), T: 1, Value: 2}}},
	}
	rec := appendExemplarsRecord(nil, 9, es)
	var r record
	if err := decodeRecord(9, rec, &r); err != nil {
		t.Fatal(err)
	}
	if r.Type != recExemplars || len(r.Exemplars) != 2 {
		t.Fatalf("decoded %+v", r)
	}
	for i := range es {
		g, w := r.Exemplars[i], es[i]
		if g.Tenant != w.Tenant || !labels.Equal(g.Labels, w.Labels) || len(g.Exemplars) != len(w.Exemplars) {
			t.Fatalf("entry %d: %+v, want %+v", i, g, w)
		}
		for k := range w.Exemplars {
			if !labels.Equal(g.Exemplars[k].Labels, w.Exemplars[k].Labels) || g.Exemplars[k].T != w.Exemplars[k].T ||
				math.Float64bits(g.Exemplars[k].Value) != math.Float64bits(w.Exemplars[k].Value) {
				t.Errorf("entry %d exemplar %d: %+v, want %+v", i, k, g.Exemplars[k], w.Exemplars[k])
			}
		}
	}
	if again := encodeRecord(nil, 9, &r); string(again) != string(rec) {
		t.Error("re-encoding is not byte-identical")
	}
	// A version 1 or 2 record of type 7 does not exist.
	old := sealRecord(9, recordVersion2, recExemplars, payloadOf(rec)[1:])
	if err := decodeRecord(9, old, &r); err == nil {
		t.Error("a version 2 record of type 7 decoded")
	}
}

// TestExemplars_AFlushDropsThoseOlderThanItsRange: the flusher's drop (DropFlushed) removes from the
// WAL the exemplars of a flushed series older than the end of the range it flushed of it, so that
// the WAL's exemplars stay bounded by the unflushed range; the store keeps them in memory.
func TestExemplars_AFlushDropsThoseOlderThanItsRange(t *testing.T) {
	dir := t.TempDir()
	st := mustOpen(t, testConfig(dir))
	st.SetExemplarLimit(limitOf(100))
	a := labels.FromStrings("__name__", "a")
	for i := range 10 {
		pushEx(t, st, "t", a, Sample{int64(100 * (i + 1)), 1}, ex(fmt.Sprint("tr", i), int64(100*(i+1)), 1))
	}
	refs := snapshotRefs(t, st)
	if _, err := st.DropFlushed(map[uint64]int64{refs["t/"+a.String()]: 550}); err != nil {
		t.Fatal(err)
	}
	if res, _ := queryAll(t, st, "t", 0); strings.Count(render(res), "trace_id") != 10 {
		t.Errorf("memory lost exemplars: %s", render(res))
	}
	back, err := Open(testConfig(copyWAL(t, dir)), nil, testLogger())
	if err != nil {
		t.Fatal(err)
	}
	defer back.Close()
	if n := back.ReplayReport().Exemplars; n != 5 {
		t.Errorf("replayed %d exemplars after a flush up to 550, want the 5 from 600 on", n)
	}
}
