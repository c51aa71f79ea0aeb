package memstore

import (
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"testing"

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
		batch = append(batch, *s)
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
