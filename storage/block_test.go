package storage

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/tsdb"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"github.com/prometheus/prometheus/tsdb/chunks"
)

type sample struct {
	t int64
	v float64
}

// xorChunks encodes smps into XOR chunks of at most per samples each.
func xorChunks(t testing.TB, smps []sample, per int) []chunks.Meta {
	t.Helper()
	var out []chunks.Meta
	for i := 0; i < len(smps); i += per {
		part := smps[i:min(i+per, len(smps))]
		c := chunkenc.NewXORChunk()
		app, err := c.Appender()
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range part {
			app.Append(s.t, s.v)
		}
		out = append(out, chunks.Meta{Chunk: c, MinTime: part[0].t, MaxTime: part[len(part)-1].t})
	}
	return out
}

// key renders a sample of a series for comparisons: labels, timestamp, value bits.
func key(lset labels.Labels, s sample) string {
	return fmt.Sprintf("%s %d %x", lset, s.t, math.Float64bits(s.v))
}

// testSeries builds n series with samples every step ms in [from, to), values including a NaN
// and a stale-marker-like bit pattern, and returns them with the set of their sample keys in [mint, maxt).
func testSeries(t testing.TB, n int, from, to, step, mint, maxt int64) ([]Series, map[string]bool) {
	t.Helper()
	want := map[string]bool{}
	var ss []Series
	for i := range n {
		lset := labels.FromStrings("__name__", "flush_test", "series", fmt.Sprintf("s%03d", i), "job", `a "quoted" job`)
		var smps []sample
		for ts := from; ts < to; ts += step {
			v := float64(ts)/1000 + float64(i)
			if ts == from+step*7 {
				v = math.NaN()
			}
			smps = append(smps, sample{ts, v})
			if ts >= mint && ts < maxt {
				want[key(lset, sample{ts, v})] = true
			}
		}
		ss = append(ss, Series{Labels: lset, Chunks: xorChunks(t, smps, 120)})
	}
	return ss, want
}

// readBlock returns every sample of the block in dir, keyed like key.
func readBlock(t testing.TB, dir string) map[string]bool {
	t.Helper()
	b, err := tsdb.OpenBlock(nil, dir, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	q, err := tsdb.NewBlockQuerier(b, math.MinInt64, math.MaxInt64)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	got := map[string]bool{}
	ss := q.Select(context.Background(), false, nil, labels.MustNewMatcher(labels.MatchRegexp, "__name__", ".+"))
	for ss.Next() {
		s := ss.At()
		it := s.Iterator(nil)
		for it.Next() == chunkenc.ValFloat {
			ts, v := it.At()
			k := key(s.Labels(), sample{ts, v})
			if got[k] {
				t.Fatalf("sample %s twice", k)
			}
			got[k] = true
		}
		if it.Err() != nil {
			t.Fatal(it.Err())
		}
	}
	if ss.Err() != nil {
		t.Fatal(ss.Err())
	}
	return got
}

func requireSameKeys(t testing.TB, want, got map[string]bool) {
	t.Helper()
	for k := range want {
		if !got[k] {
			t.Fatalf("missing sample %s (want %d samples, got %d)", k, len(want), len(got))
		}
	}
	for k := range got {
		if !want[k] {
			t.Fatalf("unexpected sample %s (want %d samples, got %d)", k, len(want), len(got))
		}
	}
}

// A block holds exactly the samples of its range: chunks inside are written as they are,
// chunks straddling a bound are cut, and tsdb.OpenBlock reads every sample back bit for bit.
func TestWriteBlock_RoundTripThroughOpenBlock(t *testing.T) {
	const h = int64(3600_000)
	// Samples every 15s from 1h30 to 4h30: the block [2h, 4h) cuts chunks at both ends.
	ss, want := testSeries(t, 20, h+h/2, 4*h+h/2, 15_000, 2*h, 4*h)
	dir := t.TempDir()
	meta, err := WriteBlock(context.Background(), dir, ss, BlockOptions{MinTime: 2 * h, MaxTime: 4 * h,
		Labels: map[string]string{TenantLabel: "t1"}})
	if err != nil {
		t.Fatal(err)
	}
	if meta.MinTime != 2*h || meta.MaxTime != 4*h-15_000+1 {
		t.Fatalf("block [%d, %d), want [%d, %d)", meta.MinTime, meta.MaxTime, 2*h, 4*h-15_000+1)
	}
	if int(meta.Stats.NumSamples) != len(want) || meta.Stats.NumSeries != 20 {
		t.Fatalf("stats %+v, want %d samples of 20 series", meta.Stats, len(want))
	}
	requireSameKeys(t, want, readBlock(t, filepath.Join(dir, meta.ULID.String())))

	raw, err := os.ReadFile(filepath.Join(dir, meta.ULID.String(), MetaFilename))
	if err != nil {
		t.Fatal(err)
	}
	back, err := ReadMeta(raw)
	if err != nil {
		t.Fatal(err)
	}
	if back.Thanos.Source != SourceIngester || back.Thanos.Labels[TenantLabel] != "t1" || back.Thanos.Downsample.Resolution != 0 ||
		len(back.Thanos.SegmentFiles) != 1 || back.BlockSize() <= 0 {
		t.Fatalf("thanos section %+v", back.Thanos)
	}
	if _, err := WriteBlock(context.Background(), dir, ss, BlockOptions{MinTime: 10 * h, MaxTime: 12 * h}); err != ErrEmptyBlock {
		t.Fatalf("block with no sample in range: err %v, want ErrEmptyBlock", err)
	}
}

// promtool, Prometheus' own tool, reads our blocks: analyze succeeds, and dump prints exactly
// the samples written.
func TestWriteBlock_PromtoolAnalyzeAndDump(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Skip("promtool not installed (Debian package prometheus)")
	}
	const h = int64(3600_000)
	ss, want := testSeries(t, 5, 0, 2*h, 60_000, 0, 2*h)
	dir := t.TempDir()
	meta, err := WriteBlock(context.Background(), dir, ss, BlockOptions{MinTime: 0, MaxTime: 2 * h})
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(promtool, "tsdb", "analyze", dir, meta.ULID.String()).CombinedOutput()
	if err != nil {
		t.Fatalf("promtool tsdb analyze: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "Block ID: "+meta.ULID.String()) {
		t.Fatalf("promtool tsdb analyze does not name the block:\n%s", out)
	}
	requireSameKeys(t, want, PromtoolDump(t, promtool, filepath.Join(dir, meta.ULID.String())))
}

// PromtoolDump runs promtool tsdb dump on a TSDB directory made of copies of blockDirs (promtool
// opens a whole TSDB, which needs a wal directory) and returns the samples keyed like key.
func PromtoolDump(t testing.TB, promtool string, blockDirs ...string) map[string]bool {
	t.Helper()
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "wal"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, b := range blockDirs {
		if err := os.CopyFS(filepath.Join(dir, filepath.Base(b)), os.DirFS(b)); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command(promtool, "tsdb", "dump", "--min-time="+strconv.FormatInt(math.MinInt64, 10),
		"--max-time="+strconv.FormatInt(math.MaxInt64, 10), dir)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("promtool tsdb dump: %v\n%s", err, stderr.String())
	}
	got := map[string]bool{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		// {a="1", b="2"} <value> <timestamp>
		end := strings.LastIndex(line, "} ")
		if end < 0 {
			t.Fatalf("promtool dump line %q", line)
		}
		lset, err := parseLabels(line[:end+1])
		if err != nil {
			t.Fatalf("promtool dump line %q: %v", line, err)
		}
		f := strings.Fields(line[end+2:])
		if len(f) != 2 {
			t.Fatalf("promtool dump line %q", line)
		}
		v, err1 := strconv.ParseFloat(f[0], 64)
		ts, err2 := strconv.ParseInt(f[1], 10, 64)
		if err1 != nil || err2 != nil {
			t.Fatalf("promtool dump line %q: %v %v", line, err1, err2)
		}
		k := key(lset, sample{ts, v})
		if math.IsNaN(v) {
			k = key(lset, sample{ts, math.NaN()}) // promtool prints NaN; compare with Go's NaN bits
		}
		got[k] = true
	}
	return got
}

// parseLabels parses {a="x", b="y"} as promtool prints it (Go-quoted values).
func parseLabels(s string) (labels.Labels, error) {
	s = strings.TrimSuffix(strings.TrimPrefix(s, "{"), "}")
	var b labels.ScratchBuilder
	for s != "" {
		eq := strings.Index(s, "=")
		if eq < 0 {
			return labels.EmptyLabels(), fmt.Errorf("no = in %q", s)
		}
		name := s[:eq]
		rest := s[eq+1:]
		q, err := strconv.QuotedPrefix(rest)
		if err != nil {
			return labels.EmptyLabels(), err
		}
		v, err := strconv.Unquote(q)
		if err != nil {
			return labels.EmptyLabels(), err
		}
		b.Add(name, v)
		s = strings.TrimPrefix(strings.TrimPrefix(rest[len(q):], ","), " ")
	}
	b.Sort()
	return b.Labels(), nil
}
