package memstore

import (
	"errors"
	"flag"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/value"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"pgregory.net/rapid"
)

func TestConfig_FlagsAndValidate(t *testing.T) {
	var c Config
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	c.RegisterFlags(fs)
	if c.MaxChunkAge != 2*time.Hour || c.MaxSeriesPerTenant != DefaultMaxSeriesPerTenant || !c.WALSync || c.WALDir != "" || c.OutOfOrderTimeWindow != 0 {
		t.Fatalf("defaults: %+v", c)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if err := fs.Parse([]string{"-ingester.max-chunk-age=0s", "-ingester.max-series-per-tenant=-1", "-wal.sync=false", "-wal.dir=/x",
		"-ingester.out-of-order-time-window=-1m"}); err != nil {
		t.Fatal(err)
	}
	err := c.Validate()
	if err == nil || !strings.Contains(err.Error(), "-ingester.max-chunk-age") || !strings.Contains(err.Error(), "-ingester.max-series-per-tenant") ||
		!strings.Contains(err.Error(), "-ingester.out-of-order-time-window") {
		t.Fatalf("Validate must name every bad flag, got %v", err)
	}
}

// TestPush_AppendRules covers each rule of the append path; every case runs on
// a series already holding the sample (t=100, v=1).
func TestPush_AppendRules(t *testing.T) {
	staleNaN := math.Float64frombits(value.StaleNaN)
	otherNaN := math.Float64frombits(0x7ff8000000000002)
	cases := []struct {
		name       string
		why        string
		first      Sample
		push       []Sample
		accepted   int
		duplicates int
		errs       []error // per refused sample, in order
		want       []Sample
	}{
		{"in order", "newer samples append", Sample{100, 1}, []Sample{{101, 2}, {200, 3}}, 2, 0, nil, []Sample{{100, 1}, {101, 2}, {200, 3}}},
		{"idempotent duplicate", "retries and replicas resend the last sample", Sample{100, 1}, []Sample{{100, 1}}, 1, 1, nil, []Sample{{100, 1}}},
		{"conflicting duplicate", "same timestamp, another value is a conflict", Sample{100, 1}, []Sample{{100, 2}}, 0, 0, []error{ErrDuplicateSampleForTimestamp}, []Sample{{100, 1}}},
		{"out of order", "older samples are refused", Sample{100, 1}, []Sample{{99, 1}}, 0, 0, []error{ErrOutOfOrderSample}, []Sample{{100, 1}}},
		{"NaN idempotent", "NaN != NaN as floats but its bits match", Sample{100, math.NaN()}, []Sample{{100, math.NaN()}}, 1, 1, nil, []Sample{{100, math.NaN()}}},
		{"stale marker idempotent", "stale markers are a NaN payload and must compare by bits", Sample{100, staleNaN}, []Sample{{100, staleNaN}, {101, 5}}, 2, 1, nil, []Sample{{100, staleNaN}, {101, 5}}},
		{"stale vs other NaN", "a different NaN payload is a different value", Sample{100, staleNaN}, []Sample{{100, otherNaN}}, 0, 0, []error{ErrDuplicateSampleForTimestamp}, []Sample{{100, staleNaN}}},
		{"refused sample does not stop others", "one bad sample must not lose the rest", Sample{100, 1}, []Sample{{50, 1}, {100, 7}, {150, 2}, {140, 3}, {160, 4}}, 2, 0,
			[]error{ErrOutOfOrderSample, ErrDuplicateSampleForTimestamp, ErrOutOfOrderSample}, []Sample{{100, 1}, {150, 2}, {160, 4}}},
	}
	for _, withWAL := range []bool{false, true} {
		for _, tc := range cases {
			t.Run(fmt.Sprintf("%s/wal=%v", tc.name, withWAL), func(t *testing.T) {
				dir := ""
				if withWAL {
					dir = t.TempDir()
				}
				st := mustOpen(t, testConfig(dir))
				lset := labels.FromStrings("__name__", "m", "job", "j")
				mustPush(t, st, "u", ser(lset, tc.first))
				res := mustPush(t, st, "u", ser(labels.FromStrings("__name__", "other"), Sample{1, 1}), ser(lset, tc.push...))
				if res.Accepted != tc.accepted+1 || res.Duplicates != tc.duplicates || res.Refused != len(tc.errs) {
					t.Fatalf("%s: result %+v", tc.why, res)
				}
				for i, e := range res.Errors {
					if !errors.Is(e, tc.errs[i]) || e.SeriesIndex != 1 || !labels.Equal(e.Labels, lset) {
						t.Fatalf("error %d: %v (index %d)", i, e, e.SeriesIndex)
					}
					if !strings.Contains(e.Error(), `job="j"`) || !strings.Contains(e.Error(), fmt.Sprint(e.T)) {
						t.Fatalf("error must name series and timestamp: %v", e)
					}
				}
				got, err := st.Select("u", math.MinInt64, math.MaxInt64, labels.MustNewMatcher(labels.MatchEqual, "job", "j"))
				if err != nil || len(got) != 1 {
					t.Fatalf("select: %v %v", got, err)
				}
				if s := decodeChunks(t, got[0].Chunks); !samplesEqual(s, tc.want) {
					t.Fatalf("%s: got %v want %v", tc.why, s, tc.want)
				}
			})
		}
	}
}

func TestPush_SeriesLimitPerTenant(t *testing.T) {
	cfg := testConfig(t.TempDir())
	cfg.MaxSeriesPerTenant = 2
	st := mustOpen(t, cfg)
	l := func(i int) labels.Labels { return labels.FromStrings("__name__", "m", "i", fmt.Sprint(i)) }
	res := mustPush(t, st, "a", ser(l(1), Sample{1, 1}), ser(l(2), Sample{1, 1}), ser(l(3), Sample{1, 1}, Sample{2, 2}), ser(l(1), Sample{2, 1}))
	if res.Accepted != 3 || res.Refused != 2 || len(res.Errors) != 1 || res.Errors[0].Count != 2 {
		t.Fatalf("result %+v", res)
	}
	e := res.Errors[0]
	if !errors.Is(e, ErrTooManySeries) || !strings.Contains(e.Error(), `"a"`) || !strings.Contains(e.Error(), "limit 2") {
		t.Fatalf("error must name tenant and limit: %v", e)
	}
	// The limit is per tenant.
	if res := mustPush(t, st, "b", ser(l(3), Sample{1, 1})); res.Refused != 0 {
		t.Fatalf("tenant b: %+v", res)
	}
	if s := st.Stats("a"); s.Series != 2 {
		t.Fatalf("stats %+v", s)
	}
}

func TestPush_InvalidLabelsRefused(t *testing.T) {
	st := mustOpen(t, testConfig(""))
	dup := labels.New(labels.Label{Name: "a", Value: "1"}, labels.Label{Name: "a", Value: "2"})
	res := mustPush(t, st, "u", ser(labels.EmptyLabels(), Sample{1, 1}), ser(dup, Sample{1, 1}), ser(labels.FromStrings("a", "1"), Sample{1, 1}))
	if res.Accepted != 1 || res.Refused != 2 || !errors.Is(res.Errors[0], ErrInvalidLabels) || !errors.Is(res.Errors[1], ErrInvalidLabels) {
		t.Fatalf("%+v", res)
	}
}

func TestChunks_CutAt120SamplesAndMaxAge(t *testing.T) {
	cfg := testConfig("")
	cfg.MaxChunkAge = time.Minute
	st := mustOpen(t, cfg)
	lset := labels.FromStrings("__name__", "m")
	var smps []Sample
	for i := range 250 { // 120 + 120 + 10 at 1s spacing: cut by count, never by age
		smps = append(smps, Sample{int64(i) * 100, float64(i)})
	}
	mustPush(t, st, "u", ser(lset, smps...))
	got, _ := st.Select("u", math.MinInt64, math.MaxInt64)
	if n := len(got[0].Chunks); n != 3 {
		t.Fatalf("want 3 chunks, got %d", n)
	}
	for i, want := range []int{120, 120, 10} {
		c, _ := chunkenc.FromData(chunkenc.EncXOR, got[0].Chunks[i].Data)
		if c.NumSamples() != want {
			t.Fatalf("chunk %d: %d samples, want %d", i, c.NumSamples(), want)
		}
	}
	// Age: head starts at t0; a sample exactly MaxChunkAge later stays, one more ms cuts.
	lset2 := labels.FromStrings("__name__", "age")
	mustPush(t, st, "u", ser(lset2, Sample{0, 1}, Sample{60_000, 2}, Sample{120_001, 3}))
	got, _ = st.Select("u", math.MinInt64, math.MaxInt64, labels.MustNewMatcher(labels.MatchEqual, "__name__", "age"))
	c := got[0].Chunks
	if len(c) != 2 || c[0].MinTime != 0 || c[0].MaxTime != 60_000 || c[1].MinTime != 120_001 {
		t.Fatalf("age cut: %+v", c)
	}
	if s := st.Stats("u"); s.Chunks != 5 || s.Series != 2 {
		t.Fatalf("stats %+v", s)
	}
	// Select trims by time: only the chunk overlapping [120_001, 130_000].
	got, _ = st.Select("u", 120_001, 130_000, labels.MustNewMatcher(labels.MatchEqual, "__name__", "age"))
	if len(got) != 1 || len(got[0].Chunks) != 1 {
		t.Fatalf("time filter: %+v", got)
	}
}

// TestSelect_MatchersAgainstLinearScan compares the postings index with a
// linear scan applying labels.Matcher.Matches to every series (missing labels
// read as "", which is Prometheus' empty-match semantics).
func TestSelect_MatchersAgainstLinearScan(t *testing.T) {
	names := []string{"a", "b", "c"}
	vals := []string{"", "x", "y", "xy", "z"}
	rapid.Check(t, func(rt *rapid.T) {
		st, err := Open(testConfig(""), nil, testLogger())
		if err != nil {
			rt.Fatal(err)
		}
		defer st.Close()
		n := rapid.IntRange(0, 40).Draw(rt, "series")
		var all []labels.Labels
		for i := range n {
			b := labels.NewScratchBuilder(4)
			b.Add("__name__", "m")
			b.Add("id", fmt.Sprint(i))
			for _, name := range names {
				if v := rapid.SampledFrom(vals).Draw(rt, "v"); v != "" {
					b.Add(name, v)
				}
			}
			b.Sort()
			all = append(all, b.Labels())
			if _, err := st.Push("t", []SeriesSamples{ser(b.Labels(), Sample{1, 1})}); err != nil {
				rt.Fatal(err)
			}
		}
		var ms []*labels.Matcher
		for range rapid.IntRange(0, 3).Draw(rt, "matchers") {
			typ := labels.MatchType(rapid.IntRange(0, 3).Draw(rt, "type"))
			v := rapid.SampledFrom([]string{"", "x", "y", "x.*", ".*", ".+", "x|", "z?", "q"}).Draw(rt, "mv")
			m, err := labels.NewMatcher(typ, rapid.SampledFrom(append(names, "missing")).Draw(rt, "name"), v)
			if err != nil {
				rt.Fatal(err)
			}
			ms = append(ms, m)
		}
		var want []string
	series:
		for _, l := range all {
			for _, m := range ms {
				if !m.Matches(l.Get(m.Name)) {
					continue series
				}
			}
			want = append(want, l.String())
		}
		res, err := st.Select("t", math.MinInt64, math.MaxInt64, ms...)
		if err != nil {
			rt.Fatal(err)
		}
		var got []string
		for _, s := range res {
			got = append(got, s.Labels.String())
		}
		slices.Sort(want)
		slices.Sort(got)
		if !slices.Equal(want, got) {
			rt.Fatalf("matchers %v: want %v got %v", ms, want, got)
		}
	})
}

func TestLabelNamesAndValues(t *testing.T) {
	st := mustOpen(t, testConfig(""))
	mustPush(t, st, "u", ser(labels.FromStrings("__name__", "a", "job", "x"), Sample{1, 1}), ser(labels.FromStrings("__name__", "b", "job", "y"), Sample{1, 1}))
	if got := st.LabelNames("u"); !slices.Equal(got, []string{"__name__", "job"}) {
		t.Fatal(got)
	}
	if got := st.LabelValues("u", "job"); !slices.Equal(got, []string{"x", "y"}) {
		t.Fatal(got)
	}
	if got := st.LabelNames("nobody"); got != nil {
		t.Fatal(got)
	}
	if _, err := st.Select("u", 0, 1, nil); !errors.Is(err, ErrInvalidMatcher) {
		t.Fatalf("nil matcher: %v", err)
	}
}

// TestHashCollision_SeriesStayDistinct forces every label set onto one hash.
func TestHashCollision_SeriesStayDistinct(t *testing.T) {
	dir := t.TempDir()
	constHash := func(labels.Labels) uint64 { return 42 }
	st, err := open(testConfig(dir), nil, testLogger(), openOptions{hashFn: constHash})
	if err != nil {
		t.Fatal(err)
	}
	var batch []SeriesSamples
	for i := range 5 {
		batch = append(batch, ser(labels.FromStrings("__name__", "m", "i", fmt.Sprint(i)), Sample{int64(i), float64(i)}))
	}
	if res, err := st.Push("u", batch); err != nil || res.Accepted != 5 || res.NewSeries != 5 {
		t.Fatalf("%+v %v", res, err)
	}
	// Second push finds series 3 and 4 again through the conflict list.
	batch = batch[3:]
	for i := range batch {
		batch[i].Samples = []Sample{{int64(i) + 13, 1}}
	}
	if res, _ := st.Push("u", batch); res.NewSeries != 0 || res.Accepted != 2 {
		t.Fatalf("%+v", res)
	}
	// Truncate removes colliding series 0..2; 3 and 4 stay findable.
	if ts, err := st.Truncate(3); err != nil || ts.SeriesRemoved != 3 {
		t.Fatalf("%+v %v", ts, err)
	}
	if res, _ := st.Push("u", batch); res.NewSeries != 0 || res.Duplicates != 2 {
		t.Fatalf("%+v", res)
	}
	want := dump(t, st)
	if len(want) != 2 {
		t.Fatalf("%v", want)
	}
	st.Close()
	st2, err := open(testConfig(dir), nil, testLogger(), openOptions{hashFn: constHash})
	if err != nil {
		t.Fatal(err)
	}
	defer st2.Close()
	requireSameData(t, want, dump(t, st2))
	m := &seriesHashmap{unique: map[uint64]*memSeries{}}
	a, b, c := &memSeries{ref: 1, lset: labels.FromStrings("a", "1")}, &memSeries{ref: 2, lset: labels.FromStrings("a", "2")}, &memSeries{ref: 3, lset: labels.FromStrings("a", "3")}
	m.set(7, a)
	m.set(7, b)
	m.set(7, c)
	m.del(7, 1)
	if m.get(7, a.lset) != nil || m.get(7, b.lset) != b || m.get(7, c.lset) != c {
		t.Fatal("del of the unique entry must promote a conflict")
	}
	m.del(7, 3)
	m.del(7, 2)
	if len(m.unique) != 0 || len(m.conflicts) != 0 {
		t.Fatalf("not empty: %v %v", m.unique, m.conflicts)
	}
}

func TestImportChunks_ForEachSeriesRoundTrip(t *testing.T) {
	src := mustOpen(t, testConfig(""))
	for i := range 3 {
		var smps []Sample
		for j := range 300 {
			smps = append(smps, Sample{int64(j * 1000), float64(i*j) + 0.5})
		}
		mustPush(t, src, "u", ser(labels.FromStrings("__name__", "m", "i", fmt.Sprint(i)), smps...))
	}
	want := dump(t, src)
	dir := t.TempDir()
	dst := mustOpen(t, testConfig(dir))
	err := src.ForEachSeries(func(tenant string, lset labels.Labels, chks []Chunk) error {
		if err := dst.ImportChunks(tenant, lset, chks); err != nil {
			return err
		}
		return dst.ImportChunks(tenant, lset, chks) // a retried hand-over is idempotent
	})
	if err != nil {
		t.Fatal(err)
	}
	requireSameData(t, want, dump(t, dst))
	// Appends continue after imported chunks; older ones are refused.
	lset := labels.FromStrings("__name__", "m", "i", "0")
	res := mustPush(t, dst, "u", ser(lset, Sample{299_000, 0.5}, Sample{1, 1}, Sample{400_000, 1}))
	if res.Accepted != 2 || res.Duplicates != 1 || res.Refused != 1 {
		t.Fatalf("%+v", res)
	}
	// Chunk records replay.
	want = dump(t, dst)
	dst.Close()
	re := mustOpen(t, testConfig(dir))
	requireSameData(t, want, dump(t, re))
	if r := re.ReplayReport(); r.Chunks == 0 || r.Skipped != 0 {
		t.Fatalf("replay %+v", r)
	}
	// Garbage chunks are refused without panicking.
	for _, c := range []Chunk{
		{Encoding: chunkenc.EncXOR, Data: []byte{0, 5, 1, 2}},
		{Encoding: chunkenc.EncXOR, Data: nil},
		{Encoding: chunkenc.EncHistogram, Data: []byte{0, 0}},
		{MinTime: 1, MaxTime: 2, Encoding: chunkenc.EncXOR, Data: xorChunk(Sample{1, 1}, Sample{3, 1})},
	} {
		if err := re.ImportChunks("u", labels.FromStrings("x", "y"), []Chunk{c}); !errors.Is(err, ErrInvalidChunk) {
			t.Fatalf("chunk %v: %v", c, err)
		}
	}
}

func xorChunk(smps ...Sample) []byte {
	c := chunkenc.NewXORChunk()
	app, _ := c.Appender()
	for _, s := range smps {
		app.Append(s.T, s.V)
	}
	return c.Bytes()
}

func TestTruncate_DropsOldChunksAndSeriesAndWAL(t *testing.T) {
	dir := t.TempDir()
	st := mustOpen(t, testConfig(dir))
	old := labels.FromStrings("__name__", "old")
	live := labels.FromStrings("__name__", "live")
	var smps []Sample
	for i := range 240 {
		smps = append(smps, Sample{int64(i), float64(i)})
	}
	mustPush(t, st, "u", ser(old, smps[:100]...), ser(live, smps[:200]...))
	mustPush(t, st, "u", ser(live, smps[200:]...))
	ts, err := st.Truncate(120) // drops old entirely and live's first chunk [0,119]
	if err != nil {
		t.Fatal(err)
	}
	if ts.SeriesRemoved != 1 || ts.ChunksRemoved != 2 || ts.WALRecordsDeleted+ts.WALRecordsRewritten == 0 { // records pack both series
		t.Fatalf("%+v", ts)
	}
	if s := st.Stats("u"); s.Series != 1 || s.Chunks != 1 {
		t.Fatalf("%+v", s)
	}
	if got := st.LabelValues("u", "__name__"); !slices.Equal(got, []string{"live"}) {
		t.Fatal(got)
	}
	// The removed series can come back as new.
	mustPush(t, st, "u", ser(old, Sample{5, 5}))
	want := dump(t, st)
	st.Close()
	re := mustOpen(t, testConfig(dir))
	requireSameData(t, want, dump(t, re))
}

// TestPush_ConcurrentSameSeriesConsistent has many pushers race on one
// series; whatever each was told must be what memory and the replayed WAL
// hold: the visibility/durability invariant under contention.
func TestPush_ConcurrentSameSeriesConsistent(t *testing.T) {
	dir := t.TempDir()
	st := mustOpen(t, testConfig(dir))
	lset := labels.FromStrings("__name__", "hot")
	var (
		mu    sync.Mutex
		acked = map[int64]float64{}
		wg    sync.WaitGroup
	)
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 200 {
				ts := int64(i*8 + g%3) // overlapping timestamps: many OOO and duplicates
				v := float64(ts % 5)
				res, err := st.Push("u", []SeriesSamples{ser(lset, Sample{ts, v})})
				if err != nil {
					t.Error(err)
					return
				}
				if res.Accepted == 1 {
					mu.Lock()
					acked[ts] = v
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	got := dump(t, st)["u/"+lset.String()]
	if len(got) != len(acked) {
		t.Fatalf("acked %d samples, memory has %d", len(acked), len(got))
	}
	for i, s := range got {
		if v, ok := acked[s.T]; !ok || v != s.V || (i > 0 && s.T <= got[i-1].T) {
			t.Fatalf("sample %v not acked or out of order", s)
		}
	}
	want := dump(t, st)
	st.Close()
	re := mustOpen(t, testConfig(dir))
	requireSameData(t, want, dump(t, re))
}

// TestPush_VisibleOnlyAfterCommit holds the committer before its transaction:
// a pending push is neither visible nor acknowledged, and an idempotent
// duplicate of a pending sample is not acknowledged before the original is
// committed either.
func TestPush_VisibleOnlyAfterCommit(t *testing.T) {
	st := mustOpen(t, testConfig(t.TempDir()))
	gate := make(chan struct{})
	entered := make(chan struct{}, 16)
	st.wal.beforeCommit = func() { entered <- struct{}{}; <-gate }
	lset := labels.FromStrings("__name__", "m")
	done := make(chan PushResult, 2)
	go func() { r, _ := st.Push("u", []SeriesSamples{ser(lset, Sample{10, 1})}); done <- r }()
	<-entered // the committer holds the first push's records
	if got, _ := st.Select("u", math.MinInt64, math.MaxInt64); len(got) != 0 {
		t.Fatalf("uncommitted sample visible: %+v", got)
	}
	go func() { r, _ := st.Push("u", []SeriesSamples{ser(lset, Sample{10, 1})}); done <- r }()
	// Wait (polling, with a deadline) until the duplicate's push queued its waiter.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
		st.wal.mu.Lock()
		n := len(st.wal.queue)
		st.wal.mu.Unlock()
		if n > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("second push never waited for the WAL")
		}
	}
	select {
	case r := <-done:
		t.Fatalf("a push returned before its sample (or the original of its duplicate) was committed: %+v", r)
	default:
	}
	close(gate)
	r1, r2 := <-done, <-done
	if r1.Accepted != 1 || r2.Accepted != 1 || r1.Duplicates+r2.Duplicates != 1 {
		t.Fatalf("%+v %+v", r1, r2)
	}
	if got, _ := st.Select("u", math.MinInt64, math.MaxInt64); len(got) != 1 {
		t.Fatalf("committed sample not visible: %+v", got)
	}
}

// TestTruncate_ConcurrentWithPushes runs Truncate in a loop while pushers
// write; afterwards memory and the replayed WAL agree on everything at or
// after the last truncation point, and no acknowledged sample there is lost.
func TestTruncate_ConcurrentWithPushes(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(dir)
	cfg.WALSync = false // speed only: this test does not crash
	st := mustOpen(t, cfg)
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		acked    = map[string][]Sample{}
		stop     = make(chan struct{})
		lastCut  int64
		progress [4]atomic.Int64
	)
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := int64(0); i < 600; i++ {
				// Series come and go: each lives for 100 timestamps.
				lset := labels.FromStrings("__name__", "m", "g", fmt.Sprint(g), "gen", fmt.Sprint(i/100))
				res, err := st.Push("u", []SeriesSamples{ser(lset, Sample{i, float64(i)})})
				if err != nil {
					t.Error(err)
					return
				}
				if res.Accepted == 1 {
					mu.Lock()
					acked["u/"+lset.String()] = append(acked["u/"+lset.String()], Sample{i, float64(i)})
					mu.Unlock()
				}
				progress[g].Store(i)
			}
		}()
	}
	truncDone := make(chan struct{})
	go func() {
		defer close(truncDone)
		for {
			select {
			case <-stop:
				return
			default:
			}
			// Cut 150 behind the slowest pusher: series of older generations go,
			// the current ones keep a chunk spanning the cut.
			cut := int64(math.MaxInt64)
			for g := range progress {
				cut = min(cut, progress[g].Load()-150)
			}
			if _, err := st.Truncate(cut); err != nil {
				t.Error(err)
				return
			}
			lastCut = cut
			time.Sleep(time.Millisecond) // let pushers progress between truncations
		}
	}()
	wg.Wait()
	close(stop)
	<-truncDone
	filter := func(m map[string][]Sample) map[string][]Sample {
		out := map[string][]Sample{}
		for k, smps := range m {
			for _, s := range smps {
				if s.T >= lastCut {
					out[k] = append(out[k], s)
				}
			}
		}
		return out
	}
	mem := filter(dump(t, st))
	requireSameData(t, filter(acked), mem)
	st.Close()
	re := mustOpen(t, cfg)
	requireSameData(t, mem, filter(dump(t, re)))
	t.Logf("last truncation at %d; %d series at or after it", lastCut, len(mem))
}

func TestMetrics_RegisteredUnderCortexNames(t *testing.T) {
	reg := prometheus.NewRegistry()
	st, err := Open(testConfig(t.TempDir()), reg, testLogger())
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	lset := labels.FromStrings("__name__", "m")
	mustPush(t, st, "u", ser(lset, Sample{1, 1}, Sample{0, 1}))
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			switch {
			case m.GetCounter() != nil:
				got[mf.GetName()] += m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				got[mf.GetName()] += m.GetGauge().GetValue()
			case m.GetHistogram() != nil:
				got[mf.GetName()] += float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	for name, want := range map[string]float64{
		"cortex_ingester_ingested_samples_total":          1,
		"cortex_ingester_ingested_samples_failures_total": 1,
		"cortex_ingester_memory_series":                   1,
		"cortex_ingester_memory_series_created_total":     1,
		"cortex_ingester_memory_chunks":                   1,
		"cortex_ingester_wal_records_logged_total":        2, // series + samples
		"cortex_ingester_wal_commit_duration_seconds":     1,
	} {
		if got[name] != want {
			t.Errorf("%s = %v, want %v", name, got[name], want)
		}
	}
	for _, name := range []string{"cortex_ingester_wal_logged_bytes_total", "cortex_ingester_wal_replay_duration_seconds"} {
		if _, ok := got[name]; !ok {
			t.Errorf("%s not registered", name)
		}
	}
	// A second Store on the same registry is an error, not a panic.
	if _, err := Open(testConfig(""), reg, testLogger()); err == nil {
		t.Fatal("duplicate registration must fail")
	}
}
