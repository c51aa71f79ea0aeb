package memstore

import (
	"testing"

	"github.com/prometheus/prometheus/model/labels"
)

func snapshotRefs(t *testing.T, st *Store) map[string]uint64 {
	t.Helper()
	refs := map[string]uint64{}
	if err := st.SnapshotSeries(func(tenant string, ref uint64, lset labels.Labels, _ []Chunk) error {
		refs[tenant+"/"+lset.String()] = ref
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return refs
}

func samplesRange(from, to int64) []Sample {
	var out []Sample
	for ts := from; ts <= to; ts++ {
		out = append(out, Sample{T: ts, V: float64(ts)})
	}
	return out
}

// A flush drops only what its snapshot held: samples appended after the snapshot (older than the
// flush's cutoff) and series created after it survive in memory and in the WAL.
func TestDropFlushed_KeepsWhatTheSnapshotDidNotHold(t *testing.T) {
	dir := t.TempDir()
	st, err := Open(testConfig(dir), nil, testLogger())
	if err != nil {
		t.Fatal(err)
	}
	a := labels.FromStrings("__name__", "a")
	b := labels.FromStrings("__name__", "b")
	gone := labels.FromStrings("__name__", "gone")
	// a: 300 samples = closed chunks [0,119], [120,239] and a head [240,299].
	mustPush(t, st, "t1", ser(a, samplesRange(0, 299)...), ser(gone, samplesRange(0, 9)...))
	refs := snapshotRefs(t, st)
	// After the snapshot: a gets a sample older than the flush cutoff (1000); b is new.
	mustPush(t, st, "t1", ser(a, Sample{T: 300, V: 300}), ser(b, samplesRange(0, 5)...))

	// The flush wrote everything the snapshot held, below cutoff 1000: bound = min(1000, maxT+1).
	ts, err := st.DropFlushed(map[uint64]int64{refs["t1/"+a.String()]: 300, refs["t1/"+gone.String()]: 10})
	if err != nil {
		t.Fatal(err)
	}
	if ts.ChunksRemoved != 3 || ts.SeriesRemoved != 1 {
		t.Fatalf("want 3 chunks (2 of a, 1 of gone) and 1 series removed, got %+v", ts)
	}
	want := map[string][]Sample{
		"t1/" + a.String(): samplesRange(240, 300), // the head straddles the bound: kept whole
		"t1/" + b.String(): samplesRange(0, 5),
	}
	requireSameData(t, want, dump(t, st))
	if got := st.Stats("t1"); got.Series != 2 {
		t.Fatalf("want 2 series left, got %+v", got)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}

	// After a restart the WAL holds exactly what was not flushed: a from the bound on, and b.
	st2 := mustOpen(t, testConfig(dir))
	want["t1/"+a.String()] = []Sample{{T: 300, V: 300}}
	requireSameData(t, want, dump(t, st2))
}

// A series recreated under the same labels after its flush is a new ref: a bound for the old ref
// never touches it.
func TestDropFlushed_RecreatedSeriesUntouched(t *testing.T) {
	st := mustOpen(t, testConfig(t.TempDir()))
	a := labels.FromStrings("__name__", "a")
	mustPush(t, st, "t1", ser(a, samplesRange(0, 9)...))
	old := snapshotRefs(t, st)["t1/"+a.String()]
	if _, err := st.DropFlushed(map[uint64]int64{old: 10}); err != nil {
		t.Fatal(err)
	}
	mustPush(t, st, "t1", ser(a, samplesRange(5, 7)...))
	if _, err := st.DropFlushed(map[uint64]int64{old: 10}); err != nil {
		t.Fatal(err)
	}
	requireSameData(t, map[string][]Sample{"t1/" + a.String(): samplesRange(5, 7)}, dump(t, st))
}
