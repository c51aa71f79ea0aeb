package memstore

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/prometheus/prometheus/model/labels"
)

// A flush's drop removes from the WAL only the exemplars of the series it flushed, each older
// than its own bound: an idle series flushed to its last sample must not take from the WAL the
// exemplars of an active series flushed to an earlier cutoff, nor those of a tenant not flushed.
func TestExemplars_FlushDropKeepsExemplarsOfOtherSeriesAndTenantsInTheWAL(t *testing.T) {
	dir := t.TempDir()
	st := mustOpen(t, testConfig(dir))
	st.SetExemplarLimit(limitOf(100))
	active := labels.FromStrings("__name__", "active")
	idle := labels.FromStrings("__name__", "idle")
	for i := range 10 {
		ts := int64(100 * (i + 1))
		pushEx(t, st, "t", active, Sample{ts, 1}, ex(fmt.Sprint("a", i), ts, 1))
		pushEx(t, st, "u", active, Sample{ts, 1}, ex(fmt.Sprint("u", i), ts, 1))
		if ts <= 800 {
			pushEx(t, st, "t", idle, Sample{ts, 1}, ex(fmt.Sprint("i", i), ts, 1))
		}
	}
	refs := snapshotRefs(t, st)
	// The flusher's bounds: the active series up to the periodic cutoff 550, the idle one whole.
	if _, err := st.DropFlushed(map[uint64]int64{refs["t/"+active.String()]: 550, refs["t/"+idle.String()]: 801}); err != nil {
		t.Fatal(err)
	}
	back, err := Open(testConfig(copyWAL(t, dir)), nil, testLogger())
	if err != nil {
		t.Fatal(err)
	}
	defer back.Close()
	back.SetExemplarLimit(limitOf(100))
	got, _ := queryAll(t, back, "t", 0)
	if want := `{__name__="active"} {trace_id="a5"}@600=1 {trace_id="a6"}@700=1 {trace_id="a7"}@800=1 {trace_id="a8"}@900=1 {trace_id="a9"}@1000=1;`; render(got) != want {
		t.Errorf("tenant t after replay: %s\nwant the active series' exemplars from its bound 550 on (the idle series is gone): %s", render(got), want)
	}
	gotU, _ := queryAll(t, back, "u", 0)
	if n := strings.Count(render(gotU), "trace_id"); n != 10 {
		t.Errorf("tenant u, not flushed, replays %d exemplars, want 10: %s", n, render(gotU))
	}
}

// Replay puts back at most replayExemplarsCap exemplars per tenant, the newest, however many the
// WAL holds (the limit is not known during Open).
func TestExemplars_ReplayKeepsTheNewestUpToTheCap(t *testing.T) {
	defer func(c int) { replayExemplarsCap = c }(replayExemplarsCap)
	replayExemplarsCap = 100
	dir := t.TempDir()
	st := mustOpen(t, testConfig(dir))
	st.SetExemplarLimit(limitOf(1000))
	a := labels.FromStrings("__name__", "a")
	b := labels.FromStrings("__name__", "b")
	for i := range 1000 {
		ts := int64(1000 + i)
		pushEx(t, st, "t", a, Sample{ts, 1}, ex(fmt.Sprint("a", i), ts, 1), ex(fmt.Sprint("a", i, "x"), ts, 2))
		pushEx(t, st, "u", b, Sample{ts, 1}, ex(fmt.Sprint("b", i), ts, 1))
	}
	st.Close()
	back := mustOpen(t, testConfig(dir))
	if got := back.ReplayReport().Exemplars; got != 200 {
		t.Errorf("replayed %d exemplars, want 100 per tenant", got)
	}
	back.exemplars.mu.RLock()
	sizeT, sizeU := back.exemplars.tenants["t"].size.Load(), back.exemplars.tenants["u"].size.Load()
	back.exemplars.mu.RUnlock()
	if sizeT != 100 || sizeU != 100 {
		t.Errorf("replayed stores of sizes %d, %d, want 100 (the cap)", sizeT, sizeU)
	}
	back.SetExemplarLimit(limitOf(1000))
	res, _ := queryAll(t, back, "t", 0)
	if len(res) != 1 || len(res[0].Exemplars) != 100 || res[0].Exemplars[0].Ts != 1950 || res[0].Exemplars[99].Ts != 1999 {
		t.Fatalf("tenant t after replay: %s, want the newest 100 (1950..1999)", render(res))
	}
}

// Exemplars of series replay does not bring back (flushed and dropped) are not replayed.
func TestExemplars_ReplaySkipsExemplarsOfSeriesNotInMemory(t *testing.T) {
	dir := t.TempDir()
	st := mustOpen(t, testConfig(dir))
	st.SetExemplarLimit(limitOf(100))
	a := labels.FromStrings("__name__", "a")
	pushEx(t, st, "gone", a, Sample{100, 1}, ex("future", 5000, 1)) // an exemplar newer than every sample
	if _, err := st.DropFlushed(map[uint64]int64{snapshotRefs(t, st)["gone/"+a.String()]: 101}); err != nil {
		t.Fatal(err)
	}
	st.Close()
	back := mustOpen(t, testConfig(dir))
	back.exemplars.mu.RLock()
	n := len(back.exemplars.tenants)
	back.exemplars.mu.RUnlock()
	if back.ReplayReport().Exemplars != 0 || n != 0 {
		t.Errorf("replayed %d exemplars into %d stores, want none: their series is gone", back.ReplayReport().Exemplars, n)
	}
}

// A tenant's store is created only when an exemplar is kept, and freed when the tenant retires.
func TestExemplars_StoreCreatedWhenKeptAndFreedWithItsTenant(t *testing.T) {
	st := mustOpen(t, testConfig(t.TempDir()))
	st.SetExemplarLimit(limitOf(100_000))
	stores := func() int {
		st.exemplars.mu.RLock()
		defer st.exemplars.mu.RUnlock()
		return len(st.exemplars.tenants)
	}
	a := labels.FromStrings("__name__", "a")
	// Exemplars of a series the push does not hold: nothing kept, no store.
	app := st.Appender("tenant-0")
	if n := app.AppendExemplars(a, []Exemplar{ex("x", 1, 1)}); n != 0 {
		t.Fatalf("took %d exemplars of a series that does not exist", n)
	}
	if _, err := app.Commit(); err != nil {
		t.Fatal(err)
	}
	if n := stores(); n != 0 {
		t.Fatalf("%d exemplar stores after exemplars of no series, want 0", n)
	}
	for i := range 5 {
		pushEx(t, st, fmt.Sprint("tenant-", i), a, Sample{1000, 1}, ex("x", 1000, 1))
	}
	if n := stores(); n != 5 {
		t.Fatalf("%d exemplar stores, want 5", n)
	}
	if _, err := st.DropAll(); err != nil {
		t.Fatal(err)
	}
	if len(st.Tenants()) != 0 {
		t.Fatalf("tenants %v left after DropAll", st.Tenants())
	}
	if n := stores(); n != 0 {
		t.Errorf("%d exemplar stores after every tenant retired, want 0", n)
	}
	// The tenant comes back: a new store, with only the new exemplar.
	pushEx(t, st, "tenant-0", a, Sample{2000, 1}, ex("y", 2000, 1))
	if res, _ := queryAll(t, st, "tenant-0", 0); render(res) != `{__name__="a"} {trace_id="y"}@2000=1;` {
		t.Errorf("after the tenant came back: %s", render(res))
	}
	// A limit of 0 frees it at the next push.
	st.SetExemplarLimit(limitOf(0))
	pushEx(t, st, "tenant-0", a, Sample{3000, 1}, ex("z", 3000, 1))
	if n := stores(); n != 0 {
		t.Errorf("%d exemplar stores with a limit of 0, want 0", n)
	}
}

// Max keeps the newest exemplars across series, whatever the ties and the series' order.
func TestExemplars_MaxKeepsTheNewestAcrossSeriesOnTies(t *testing.T) {
	st := mustOpen(t, testConfig(t.TempDir()))
	st.SetExemplarLimit(limitOf(100))
	a := labels.FromStrings("__name__", "a")
	b := labels.FromStrings("__name__", "b")
	pushEx(t, st, "t", a, Sample{10, 1}, ex("newest", 10, 1))
	pushEx(t, st, "t", b, Sample{5, 1}, ex("b1", 5, 1), ex("b2", 5, 2), ex("b3", 5, 3))
	for range 3 { // deterministic
		res, truncated := queryAll(t, st, "t", 2)
		if want := `{__name__="a"} {trace_id="newest"}@10=1;{__name__="b"} {trace_id="b3"}@5=3;`; !truncated || render(res) != want {
			t.Fatalf("max 2: %s (truncated %v), want %s", render(res), truncated, want)
		}
	}
	res, _ := queryAll(t, st, "t", 3)
	if want := `{__name__="a"} {trace_id="newest"}@10=1;{__name__="b"} {trace_id="b2"}@5=2 {trace_id="b3"}@5=3;`; render(res) != want {
		t.Fatalf("max 3: %s, want %s", render(res), want)
	}
}

// Exemplars of a push whose WAL commit failed become visible once the retry commits them, as its
// samples do (and are replayed).
func TestExemplars_OfAFailedCommitVisibleOnceTheRetryCommits(t *testing.T) {
	dir := t.TempDir()
	st, fault := openFaulty(t, testConfig(dir), nil)
	st.SetExemplarLimit(limitOf(100))
	a := labels.FromStrings("__name__", "a")
	pushEx(t, st, "t", a, Sample{1, 1}, ex("first", 1, 1))
	fault.set(enospc(filepath.Join(dir, WALFileName)))
	app := st.Appender("t")
	app.Append(a, []Sample{{2, 2}})
	if n := app.AppendExemplars(a, []Exemplar{ex("second", 2, 2)}); n != 1 {
		t.Fatalf("took %d exemplars", n)
	}
	if _, err := app.Commit(); !errors.Is(err, ErrWALFailed) {
		t.Fatalf("commit while failing: %v", err)
	}
	if res, _ := queryAll(t, st, "t", 0); strings.Contains(render(res), "second") {
		t.Fatalf("an exemplar the WAL does not hold is visible: %s", render(res))
	}
	fault.set(nil)
	waitWALHealthy(t, st)
	requireNothingPending(t, st)
	want := `{__name__="a"} {trace_id="first"}@1=1 {trace_id="second"}@2=2;`
	if res, _ := queryAll(t, st, "t", 0); render(res) != want {
		t.Errorf("after the retry committed: %s, want %s", render(res), want)
	}
	st.Close()
	back := mustOpen(t, testConfig(dir))
	back.SetExemplarLimit(limitOf(100))
	if res, _ := queryAll(t, back, "t", 0); render(res) != want {
		t.Errorf("after replay: %s, want %s", render(res), want)
	}
}

// The tenant's exemplar limit (which the ingester computes from the ring) is asked once per push,
// not once per series with exemplars.
func TestExemplars_LimitAskedOncePerPush(t *testing.T) {
	st := mustOpen(t, testConfig(t.TempDir()))
	var asked atomic.Int64
	st.SetExemplarLimit(func(string) int { asked.Add(1); return 100 })
	asked.Store(0)
	app := st.Appender("t")
	for i := range 10 {
		ls := labels.FromStrings("__name__", "m", "i", fmt.Sprint(i))
		app.Append(ls, []Sample{{100, 1}})
		if n := app.AppendExemplars(ls, []Exemplar{ex(fmt.Sprint(i), 100, 1)}); n != 1 {
			t.Fatalf("took %d exemplars", n)
		}
	}
	if _, err := app.Commit(); err != nil {
		t.Fatal(err)
	}
	if n := asked.Load(); n != 1 {
		t.Errorf("the limit was asked %d times for one push of 10 series, want 1", n)
	}
	if res, _ := queryAll(t, st, "t", 0); len(res) != 10 {
		t.Errorf("%d series with exemplars, want 10", len(res))
	}
}
