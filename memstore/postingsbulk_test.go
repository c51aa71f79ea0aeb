package memstore

import (
	"math/rand/v2"
	"reflect"
	"slices"
	"strconv"
	"testing"

	"github.com/prometheus/prometheus/model/labels"
)

// TestAddBulk_OutOfOrderRefsGiveTheSameIndexAsOneByOne adds random batches of series — refs
// ascending within most batches but batches in any order, as concurrent hand-over frames and
// replay add them, plus refs added twice — through addBulk, and the same series one by one
// through add (insertSorted), and wants identical indexes: every list sorted and unique.
func TestAddBulk_OutOfOrderRefsGiveTheSameIndexAsOneByOne(t *testing.T) {
	for seed := range uint64(50) {
		rng := rand.New(rand.NewPCG(seed, 14))
		bulk, one := newPostingsIndex(), newPostingsIndex()
		lsetOf := func(ref uint64) labels.Labels {
			return labels.FromStrings("__name__", "m"+strconv.Itoa(int(ref%3)), "id", strconv.FormatUint(ref, 10),
				"job", "j", "pod", "p"+strconv.Itoa(int(ref%7)))
		}
		var batches [][]uint64
		next := uint64(1)
		for range 1 + rng.IntN(8) {
			n := 1 + rng.IntN(40)
			b := make([]uint64, n)
			for i := range b {
				b[i] = next
				next += 1 + uint64(rng.IntN(3))
			}
			if rng.IntN(4) == 0 { // a batch not in ref order
				rng.Shuffle(len(b), func(i, j int) { b[i], b[j] = b[j], b[i] })
			}
			batches = append(batches, b)
		}
		rng.Shuffle(len(batches), func(i, j int) { batches[i], batches[j] = batches[j], batches[i] })
		if len(batches) > 1 { // a ref added again (a retried batch)
			batches = append(batches, slices.Clone(batches[0][:1]))
		}
		for _, b := range batches {
			bulk.addBulk(len(b), func(i int) (uint64, labels.Labels) { return b[i], lsetOf(b[i]) })
			for _, ref := range b {
				one.add(ref, lsetOf(ref))
			}
		}
		if !reflect.DeepEqual(bulk.all, one.all) {
			t.Fatalf("seed %d: all = %v, want %v", seed, bulk.all, one.all)
		}
		if len(bulk.m) != len(one.m) {
			t.Fatalf("seed %d: %d names, want %d", seed, len(bulk.m), len(one.m))
		}
		for name, vals := range one.m {
			if len(bulk.m[name]) != len(vals) {
				t.Fatalf("seed %d: %s has %d values, want %d", seed, name, len(bulk.m[name]), len(vals))
			}
			for v, want := range vals {
				got := bulk.m[name][v]
				if !slices.Equal(got, want) || !slices.IsSorted(got) {
					t.Fatalf("seed %d: %s=%s: %v, want %v", seed, name, v, got, want)
				}
			}
		}
	}
}

func TestMergeRefs(t *testing.T) {
	for _, tc := range []struct{ list, refs, want []uint64 }{
		{nil, []uint64{3, 1, 2}, []uint64{1, 2, 3}},
		{[]uint64{5, 9}, nil, []uint64{5, 9}},
		{[]uint64{5, 9}, []uint64{7, 1, 10}, []uint64{1, 5, 7, 9, 10}},
		{[]uint64{5, 9}, []uint64{9, 5, 5}, []uint64{5, 9}},
		{[]uint64{1, 2, 3, 10}, []uint64{4, 4, 11}, []uint64{1, 2, 3, 4, 10, 11}},
	} {
		if got := mergeRefs(slices.Clone(tc.list), slices.Clone(tc.refs)); !slices.Equal(got, tc.want) {
			t.Errorf("mergeRefs(%v, %v) = %v, want %v", tc.list, tc.refs, got, tc.want)
		}
	}
}

// TestReplay_PostingsEqualThoseOfTheSeries replays a WAL holding, besides ordinary series, a
// label set logged again under a second ref and a series record with invalid labels, and wants
// the postings built during replay (replayPostings) to be exactly those built from the series
// in the store afterwards: the second ref and the invalid record appear nowhere.
func TestReplay_PostingsEqualThoseOfTheSeries(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(dir)
	cfg.WALSync = false
	st, err := Open(cfg, nil, testLogger())
	if err != nil {
		t.Fatal(err)
	}
	var batch []SeriesSamples
	for i := range 300 {
		batch = append(batch, SeriesSamples{Labels: benchShapeLabels(i), Samples: []Sample{{T: 1000, V: float64(i)}}})
	}
	if _, err := st.Push("u", batch); err != nil {
		t.Fatal(err)
	}
	// The label set of series 7 again under a ref of its own, and a record no series can come from.
	dupRef, badRef := uint64(5000), uint64(5001)
	for _, e := range []walEntry{newSeriesEntry(dupRef, "u", benchShapeLabels(7)),
		newSeriesEntry(badRef, "u", labels.FromStrings("a", "1", "", "x"))} {
		if err := st.wal.enqueue(e); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.wal.sync(); err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}

	st = mustOpen(t, cfg)
	if rep := st.ReplayReport(); rep.Series != 301 || rep.Skipped != 2 { // Series counts the second ref (it maps to series 7)
		t.Fatalf("replay %+v, want 301 series records applied and 2 skipped", rep)
	}
	th := st.tenants["u"]
	want := newPostingsIndex()
	var all []*memSeries
	th.series.forEach(func(ms *memSeries) bool { all = append(all, ms); return true })
	slices.SortFunc(all, func(a, b *memSeries) int { return int(a.ref) - int(b.ref) })
	want.addSorted(all)
	got := th.postings
	if !reflect.DeepEqual(got.all, want.all) {
		t.Fatalf("all: %d refs, want %d (%v)", len(got.all), len(want.all), got.all)
	}
	if len(got.m) != len(want.m) {
		t.Fatalf("%d label names, want %d", len(got.m), len(want.m))
	}
	for name, vals := range want.m {
		if len(got.m[name]) != len(vals) {
			t.Fatalf("%s: %d values, want %d", name, len(got.m[name]), len(vals))
		}
		for v, refs := range vals {
			if !slices.Equal(got.m[name][v], refs) {
				t.Fatalf("%s=%s: %v, want %v", name, v, got.m[name][v], refs)
			}
		}
	}
	for _, ref := range []uint64{dupRef, badRef} {
		if slices.Contains(got.all, ref) {
			t.Errorf("ref %d is in the postings", ref)
		}
	}
}
