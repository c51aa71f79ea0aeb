package memstore

import (
	"fmt"
	"maps"
	"math"
	"runtime"
	"strings"
	"testing"

	"github.com/prometheus/prometheus/model/labels"
)

// TestReplay_ParallelEqualsSerial replays one WAL — scrape-like pushes in
// both record versions, NaN and stale markers, imported chunks (writeFixtureData),
// a truncation, series recreated after it — with 1 worker (the serial
// order) and with 4 (more than the cores, so that workers interleave):
// memory, stats and the replay report must be the same; tenant "u" (which
// the truncation did not touch) must equal what the Store held before it
// closed. (Below the truncation point memory keeps whole chunks that
// straddle it while the WAL keeps only the samples after it: that part is
// flushed data and differs by design.)
func TestReplay_ParallelEqualsSerial(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(dir)
	cfg.WALSync = false // speed only: this test does not crash
	st := mustOpen(t, cfg)
	st.wal.version = recordVersion2
	w := newScrapeWorkload(3000)
	push := func(rounds int) {
		for range rounds {
			w.nextRound(func(batch []SeriesSamples) {
				if _, err := st.Push("u", batch); err != nil {
					t.Fatal(err)
				}
			})
		}
	}
	push(10)
	st.wal.version = recordVersion3
	push(10)
	writeFixtureData(t, st)
	gone := labels.FromStrings("__name__", "gone")
	mustPush(t, st, "tenant-0", ser(gone, Sample{1, 1}, Sample{2, 2}))
	// Drops "gone" and the first chunk of each imported series, then
	// recreates "gone" under a new ref.
	if ts, err := st.Truncate(130_000); err != nil || ts.SeriesRemoved == 0 || ts.ChunksRemoved == 0 {
		t.Fatalf("truncate: %+v, %v", ts, err)
	}
	mustPush(t, st, "tenant-0", ser(gone, Sample{200_000, 3}))
	push(5)
	wantU := map[string][]Sample{}
	for k, v := range dump(t, st) {
		if strings.HasPrefix(k, "u/") {
			wantU[k] = v
		}
	}
	wantStats := st.Stats("u")
	wantSel := selectSummary(t, st)
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	var reports []ReplayReport
	var dumps []map[string][]Sample
	for _, procs := range []int{1, 4} {
		old := runtime.GOMAXPROCS(procs)
		re := mustOpen(t, cfg)
		runtime.GOMAXPROCS(old)
		got := dump(t, re)
		dumps = append(dumps, got)
		gotU := map[string][]Sample{}
		for k, v := range got {
			if strings.HasPrefix(k, "u/") {
				gotU[k] = v
			}
		}
		requireSameData(t, wantU, gotU)
		// Replay builds the postings in bulk at the end: matchers must select
		// what they selected before the restart.
		if got := selectSummary(t, re); !maps.Equal(got, wantSel) {
			t.Fatalf("GOMAXPROCS=%d: selections after replay %v, want %v", procs, got, wantSel)
		}
		if got := re.Stats("u"); got != wantStats {
			t.Fatalf("GOMAXPROCS=%d: stats %+v, want %+v", procs, got, wantStats)
		}
		r := re.ReplayReport()
		if r.Corruption != nil || r.Skipped != 0 || r.Samples < 25*3000 || r.Chunks < 20 {
			t.Fatalf("GOMAXPROCS=%d: replay %+v", procs, r)
		}
		r.Duration = 0
		reports = append(reports, r)
		if err := re.Close(); err != nil {
			t.Fatal(err)
		}
	}
	requireSameData(t, dumps[0], dumps[1])
	if reports[0] != reports[1] {
		t.Fatalf("replay reports differ: serial %+v, parallel %+v", reports[0], reports[1])
	}
}

// TestRefTable: dense refs go to the slice, sparse ones to the map, and
// every ref reads back what was stored; memory stays proportional to the
// number of refs for refs spread over the whole uint64 range.
func TestRefTable(t *testing.T) {
	var tab refTable[uint16]
	refs := []uint64{10, 11, 12, 5, 1 << 40, 13, 1<<64 - 1, 70_000, 200_000}
	for i, r := range refs {
		tab.set(r, uint16(i+1))
	}
	for i, r := range refs {
		if got := tab.get(r); got != uint16(i+1) {
			t.Fatalf("ref %d: got %d, want %d", r, got, i+1)
		}
	}
	for _, r := range []uint64{0, 4, 9, 14, 1<<40 + 1, 1<<64 - 2} {
		if got := tab.get(r); got != 0 {
			t.Fatalf("absent ref %d: got %d", r, got)
		}
	}
	if len(tab.dense) > 2*len(refs)+1<<16 {
		t.Fatalf("dense part %d entries for %d refs", len(tab.dense), len(refs))
	}
	if len(tab.sparse) != 5 { // 5 (below the base), 1<<40, 1<<64-1, 70_000 and 200_000 (beyond 2n+2^16 past the base)
		t.Fatalf("sparse part %v", tab.sparse)
	}
}

// selectSummary runs a few selections (equality, regexp, negative and
// absent-label matchers, on several tenants) and returns, per selection, the
// selected series' labels joined.
func selectSummary(t *testing.T, st *Store) map[string]string {
	t.Helper()
	sels := []struct {
		tenant string
		ms     []*labels.Matcher
	}{
		{"u", []*labels.Matcher{labels.MustNewMatcher(labels.MatchEqual, "__name__", "node_load1"), labels.MustNewMatcher(labels.MatchEqual, "instance", "host-3:9100")}},
		{"u", []*labels.Matcher{labels.MustNewMatcher(labels.MatchRegexp, "instance", "host-1.*"), labels.MustNewMatcher(labels.MatchNotEqual, "idx", "0")}},
		{"u", []*labels.Matcher{labels.MustNewMatcher(labels.MatchEqual, "idx", "19")}},
		{"tenant-0", []*labels.Matcher{labels.MustNewMatcher(labels.MatchEqual, "__name__", "gone")}},
		{"tenant-0", []*labels.Matcher{labels.MustNewMatcher(labels.MatchEqual, "i", "")}},
		{"tenant-1", []*labels.Matcher{labels.MustNewMatcher(labels.MatchRegexp, "i", "[0-5]")}},
		{"imp", nil},
	}
	out := map[string]string{}
	for i, sel := range sels {
		res, err := st.Select(sel.tenant, math.MinInt64, math.MaxInt64, sel.ms...)
		if err != nil {
			t.Fatal(err)
		}
		var b strings.Builder
		for _, sc := range res {
			b.WriteString(sc.Labels.String())
		}
		if len(res) == 0 {
			t.Fatalf("selection %d selects nothing: the test would not check the postings", i)
		}
		out[fmt.Sprint(i)] = b.String()
	}
	return out
}
