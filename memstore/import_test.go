package memstore

import (
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/value"
)

// ExportSeries → ImportBatch (what a hand-over does) carries the data and the frontier's last
// value without decoding, replays from chunks records, and DropAll then empties memory and WAL.
func TestImportBatch_ExportRoundTripReplayAndDropAll(t *testing.T) {
	src := mustOpen(t, testConfig(""))
	for i := range 30 {
		var smps []Sample
		for j := range 130 + i {
			v := float64(i*j) + 0.5
			if j == 129+i && i%2 == 0 {
				v = math.Float64frombits(value.StaleNaN) // the last value must survive bit-exact
			}
			smps = append(smps, Sample{int64(j * 1000), v})
		}
		mustPush(t, src, fmt.Sprintf("u%d", i%3), ser(labels.FromStrings("__name__", "m", "i", fmt.Sprint(i)), smps...))
	}
	want := dump(t, src)
	dir := t.TempDir()
	dst := mustOpen(t, testConfig(dir))
	var batch []ImportSeries
	if err := src.ExportSeries(func(s *ImportSeries) error {
		if !s.HasLastV {
			t.Fatal("ExportSeries without the last value")
		}
		c := *s
		c.Chunks = slices.Clone(s.Chunks) // reused by the walk, and so is the head chunk's data
		c.Chunks[len(c.Chunks)-1].Data = slices.Clone(c.Chunks[len(c.Chunks)-1].Data)
		batch = append(batch, c)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	commits := dst.wal.commits.Load()
	if err := dst.ImportBatch(batch); err != nil {
		t.Fatal(err)
	}
	// Usually one commit; more when the committer starts before the batch's last series is queued
	// (it does not wait for more: group commit never delays a waiting writer).
	first := dst.wal.commits.Load() - commits
	if first < 1 {
		t.Fatal("the batch was not committed to the WAL")
	}
	if err := dst.ImportBatch(batch); err != nil { // a retried hand-over is idempotent
		t.Fatal(err)
	}
	if n := dst.wal.commits.Load() - commits - first; n != 0 {
		t.Fatalf("%d WAL commits for a retried batch, want 0 (the retry logs nothing)", n)
	}
	requireSameData(t, want, dump(t, dst))
	// The frontier carries the last value: an idempotent duplicate is accepted, another value refused.
	lset := labels.FromStrings("__name__", "m", "i", "0")
	last := Sample{129_000, math.Float64frombits(value.StaleNaN)}
	res := mustPush(t, dst, "u0", ser(lset, last, Sample{129_000, 1}))
	if res.Duplicates != 1 || res.Refused != 1 || !errors.Is(res.Errors[0], ErrDuplicateSampleForTimestamp) {
		t.Fatalf("%+v", res)
	}
	want = dump(t, dst)
	dst.Close()
	re := mustOpen(t, testConfig(dir))
	requireSameData(t, want, dump(t, re))
	if r := re.ReplayReport(); r.Chunks != 60 || r.Skipped != 0 {
		t.Fatalf("replay %+v", r)
	}
	if res := mustPush(t, re, "u0", ser(lset, last)); res.Duplicates != 1 {
		t.Fatalf("after replay, the frontier lost the last value: %+v", res)
	}
	ts, err := re.DropAll()
	if err != nil || ts.SeriesRemoved != 30 || ts.WALRecordsDeleted == 0 {
		t.Fatalf("DropAll: %+v, %v", ts, err)
	}
	if len(dump(t, re)) != 0 || re.Stats("u0").Series != 0 || len(re.LabelNames("u0")) != 0 {
		t.Fatal("DropAll left data in memory")
	}
	mustPush(t, re, "u0", ser(lset, Sample{1, 1})) // writes go on after it
	want = dump(t, re)
	re.Close()
	again := mustOpen(t, testConfig(dir))
	requireSameData(t, want, dump(t, again))
}

// A chunk whose header contradicts its bounds is refused before anything is logged, with or
// without a last value; a batch with one bad series imports nothing.
func TestImportBatch_InvalidSeriesFailsTheWholeBatch(t *testing.T) {
	st := mustOpen(t, testConfig(t.TempDir()))
	good := Chunk{MinTime: 1, MaxTime: 3, Encoding: 1, Data: xorChunk(Sample{1, 1}, Sample{3, 2})}
	for _, bad := range []Chunk{
		{MinTime: 2, MaxTime: 3, Encoding: 1, Data: good.Data},    // first timestamp is 1
		{MinTime: 4, MaxTime: 3, Encoding: 1, Data: good.Data},    // inverted bounds
		{MinTime: 1, MaxTime: 3, Encoding: 1, Data: []byte{0, 0}}, // no samples
	} {
		for _, hasLast := range []bool{false, true} {
			err := st.ImportBatch([]ImportSeries{
				{Tenant: "u", Labels: labels.FromStrings("a", "1"), Chunks: []Chunk{good}, LastV: 2, HasLastV: hasLast},
				{Tenant: "u", Labels: labels.FromStrings("a", "2"), Chunks: []Chunk{bad}, LastV: 2, HasLastV: hasLast},
			})
			if !errors.Is(err, ErrInvalidChunk) {
				t.Fatalf("chunk %+v: %v, want ErrInvalidChunk", bad, err)
			}
		}
	}
	if st.Stats("u").Series != 0 {
		t.Fatal("a refused batch imported series")
	}
}

// A WAL written by the version 1 build (memstore/testdata/wal-v1: series, samples records with NaN
// and stale markers, and one chunk record per imported chunk; written by writeFixtureData) still
// replays to the same data, and Open upgrades its meta/format to the current format.
func TestWAL_ReplaysVersion1Fixture(t *testing.T) {
	testReplaysFixture(t, "wal-v1", 1, recordVersion1)
}

// The same for a WAL written by the version 2 build (memstore/testdata/wal-v2, format 2: version
// 2 records, imported chunks in chunks records of type 4; written by writeFixtureData before
// version 3 existed).
func TestWAL_ReplaysVersion2Fixture(t *testing.T) {
	testReplaysFixture(t, "wal-v2", 2, recordVersion2)
}

// testReplaysFixture checks that the fixture in testdata/<name> is what it claims (meta/format
// and every record's version), that it replays to what writeFixtureData builds, that Open
// upgrades meta/format, and that records written after the upgrade (version 3) and the old ones
// replay together.
func testReplaysFixture(t *testing.T, name string, format, version byte) {
	dir := t.TempDir()
	b, err := os.ReadFile(filepath.Join("testdata", name, WALFileName))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, WALFileName), b, 0o600); err != nil {
		t.Fatal(err)
	}
	if f, vs := recordVersions(t, dir); len(f) != 1 || f[0] != format || len(vs) != 1 || vs[version] == 0 {
		t.Fatalf("fixture %s: meta/format %v, record versions %v; want format %d, version %d only", name, f, vs, format, version)
	}
	model := mustOpen(t, testConfig(""))
	writeFixtureData(t, model)
	st := mustOpen(t, testConfig(dir))
	if r := st.ReplayReport(); r.Skipped != 0 || r.Corruption != nil || r.Chunks == 0 || r.Samples == 0 {
		t.Fatalf("replay of the %s fixture: %+v", name, r)
	}
	requireSameData(t, dump(t, model), dump(t, st))
	extra := ser(labels.FromStrings("__name__", "after_upgrade"), Sample{1, 1}, Sample{2, 2.5})
	mustPush(t, st, "tenant-0", extra)
	mustPush(t, model, "tenant-0", extra)
	st.Close()
	if f, vs := recordVersions(t, dir); len(f) != 1 || f[0] != walFormatVersion || vs[version] == 0 || vs[recordVersion] == 0 {
		t.Fatalf("after opening the %s fixture and writing: meta/format %v, record versions %v; want format %d, old and new records", name, f, vs, walFormatVersion)
	}
	re := mustOpen(t, testConfig(dir))
	if r := re.ReplayReport(); r.Skipped != 0 || r.Corruption != nil {
		t.Fatalf("replay of old and new records: %+v", r)
	}
	requireSameData(t, dump(t, model), dump(t, re))
}

// importBatchOf returns n series of tenant, each with one chunk of k samples from t0 on, labels
// owned (as a hand-over frame's decoder gives them) when owned.
func importBatchOf(tenant string, n, k int, t0 int64, owned bool) []ImportSeries {
	out := make([]ImportSeries, n)
	for i := range out {
		smps := make([]Sample, k)
		for j := range smps {
			smps[j] = Sample{t0 + int64(j)*1000, float64(i*j) + 0.25}
		}
		out[i] = ImportSeries{Tenant: tenant, Labels: labels.FromStrings("__name__", "m", "job", fmt.Sprint(i%7), "i", fmt.Sprint(i)),
			Chunks: []Chunk{{MinTime: t0, MaxTime: smps[k-1].T, Encoding: 1, Data: xorChunk(smps...)}},
			LastV:  smps[k-1].V, HasLastV: true, LabelsOwned: owned}
	}
	return out
}

// A bulk import (every series new) whose WAL commit fails makes nothing visible and is not
// acknowledged; once the WAL recovers by itself the committed entries become visible, a retry of
// the same batch is idempotent (nothing logged again), and a restart replays exactly memory.
func TestImportBatch_BulkFailedCommitNothingVisibleThenRetryIdempotent(t *testing.T) {
	dir := t.TempDir()
	st, fault := openFaulty(t, testConfig(dir), nil)
	batch := importBatchOf("u", 600, 30, 1_000_000, true)
	fault.set(enospc("wal.bolt"))
	if err := st.ImportBatch(batch); !errors.Is(err, ErrWALFailed) {
		t.Fatalf("ImportBatch with a failing commit: %v, want ErrWALFailed", err)
	}
	if got := dump(t, st); len(got) != 0 {
		t.Fatalf("%d series visible after a failed commit", len(got))
	}
	if got, _ := st.Select("u", math.MinInt64, math.MaxInt64); len(got) != 0 {
		t.Fatalf("Select shows %d series after a failed commit", len(got))
	}
	if err := st.ImportBatch(batch); !errors.Is(err, ErrWALFailed) { // refused at once while failing
		t.Fatalf("ImportBatch while failing: %v", err)
	}
	fault.set(nil)
	waitWALHealthy(t, st)
	// The retried transaction committed the entries; their applies are deferred to the committer,
	// which runs them right after that commit: wait for them.
	for deadline := time.Now().Add(10 * time.Second); len(dump(t, st)) != len(batch); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d series visible after recovery", len(dump(t, st)), len(batch))
		}
	}
	requireNothingPending(t, st)
	commits := st.wal.commits.Load()
	if err := st.ImportBatch(batch); err != nil {
		t.Fatalf("retried import after recovery: %v", err)
	}
	if n := st.wal.commits.Load() - commits; n != 0 {
		t.Fatalf("the retry logged %d commits, want 0", n)
	}
	want := dump(t, st)
	for i := range batch {
		smps := want[fmt.Sprintf("u/%s", batch[i].Labels)]
		if len(smps) != 30 || smps[29].V != batch[i].LastV {
			t.Fatalf("series %s: %d samples, want 30 ending with %v", batch[i].Labels, len(smps), batch[i].LastV)
		}
	}
	if got := st.Stats("u").Series; got != int64(len(batch)) {
		t.Fatalf("%d series, want %d", got, len(batch))
	}
	st.Close()
	re := mustOpen(t, testConfig(dir))
	requireSameData(t, want, dump(t, re))
	if got := re.Stats("u").Series; got != int64(len(batch)) {
		t.Fatalf("after replay %d series, want %d", got, len(batch))
	}
}

// A batch naming one label set twice: the first is created in bulk, the second finds it (still
// pending, so not the same chunk yet) and is refused as out of order — as the per-series path
// does; each series is imported whole or not at all, and labels given as not owned are copied.
func TestImportBatch_BulkSameLabelsTwiceInOneBatch(t *testing.T) {
	st := mustOpen(t, testConfig(t.TempDir()))
	batch := importBatchOf("u", 10, 5, 0, false)
	dup := batch[3]
	batch = append(batch, dup)
	err := st.ImportBatch(batch)
	if !errors.Is(err, ErrOutOfOrderSample) {
		t.Fatalf("batch with a label set twice: %v, want ErrOutOfOrderSample", err)
	}
	if got := st.Stats("u").Series; got != 10 {
		t.Fatalf("%d series, want 10", got)
	}
	got := dump(t, st)
	for i := range 10 {
		if smps := got["u/"+batch[i].Labels.String()]; len(smps) != 5 {
			t.Fatalf("series %d holds %d samples, want 5", i, len(smps))
		}
	}
	// The postings index found them all, once each.
	if vals := st.LabelValues("u", "i"); len(vals) != 10 {
		t.Fatalf("label values of i: %v", vals)
	}
}

// Bulk imports racing each other and pushes on overlapping label sets of two tenants (run with
// -race): every label set exists once, postings select every series once, nothing stays pending,
// and a restart replays exactly what memory holds.
func TestImportBatch_BulkConcurrentWithPushesReplaysTheSame(t *testing.T) {
	dir := t.TempDir()
	st := mustOpen(t, testConfig(dir))
	const series = 300
	var wg sync.WaitGroup
	for g := range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tenant := fmt.Sprintf("t%d", g%2)
			if g%3 == 2 {
				// Pushes of later samples to the same label sets: they create some series first,
				// or land after the imported chunks, or are refused as out of order.
				for i := range series {
					lset := labels.FromStrings("__name__", "m", "job", fmt.Sprint(i%7), "i", fmt.Sprint(i))
					if _, err := st.Push(tenant, []SeriesSamples{ser(lset, Sample{int64(100_000 + g), 1})}); err != nil {
						t.Error(err)
						return
					}
				}
				return
			}
			// Imports of the same label sets, each goroutine with its own time range: whichever
			// comes second for a series is refused unless its chunk is newer.
			b := importBatchOf(tenant, series, 10, int64(g)*10_000, true)
			for off := 0; off < series; off += 50 {
				err := st.ImportBatch(b[off : off+50])
				if err != nil && !errors.Is(err, ErrOutOfOrderSample) {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	requireNothingPending(t, st)
	for _, tenant := range []string{"t0", "t1"} {
		if got := st.Stats(tenant).Series; got != series {
			t.Fatalf("tenant %s: %d series, want %d (one per label set)", tenant, got, series)
		}
		sel, err := st.Select(tenant, math.MinInt64, math.MaxInt64)
		if err != nil || len(sel) != series {
			t.Fatalf("tenant %s: Select gives %d series (%v), want %d", tenant, len(sel), err, series)
		}
		if vals := st.LabelValues(tenant, "i"); len(vals) != series {
			t.Fatalf("tenant %s: %d values of i, want %d", tenant, len(vals), series)
		}
	}
	want := dump(t, st)
	st.Close()
	requireSameData(t, want, dump(t, mustOpen(t, testConfig(dir))))
}
