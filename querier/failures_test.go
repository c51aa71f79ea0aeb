package querier

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"

	"github.com/raftingest/raftingest/ingesterpb"
	"github.com/raftingest/raftingest/ringstate"
	"github.com/raftingest/raftingest/tenant"
)

// The review's scenario: RF 3, a sample acknowledged by m0 and m1 only; m0 has flushed it (in its
// blocks, gone from its memory), m1 has not (in its memory only). m0's QueryBlocks and m1's
// QueryStream fail: one failure per source, but two members lost for the query, and the sample is
// in no answer. One budget across both sources refuses the read. With only one of the two failing,
// the sample is answered.
func TestNewQueryable_OneFailureBudgetAcrossSources(t *testing.T) {
	all := samplesRange(0, 60_000, 15_000)
	ls := labels.FromStrings("__name__", "m")
	for _, c := range []struct {
		name                        string
		m0BlocksFail, m1StreamFails bool
		wantErr                     bool
	}{
		{"m0's blocks and m1's memory fail", true, true, true},
		{"only m0's blocks fail", true, false, false},
		{"only m1's memory fails", false, true, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			m0, m1, m2 := startFakeIngester(t), startFakeIngester(t), startFakeIngester(t)
			m0.addBlocks("t", ls, xorChunks(t, all, 120)...)
			m1.add("t", ls, xorChunks(t, all, 120)...)
			m0.failBlocks, m1.failStream = c.m0BlocksFail, c.m1StreamFails
			ring := newRing(t, member{addr: m0.addr, state: ringstate.ACTIVE}, member{addr: m1.addr, state: ringstate.ACTIVE},
				member{addr: m2.addr, state: ringstate.ACTIVE})
			blocks := newBlocksQueryable(t, 3, ring)
			q := NewQueryable(newIngesterQueryable(t, 3, ring), blocks, 0, 0, func() time.Time { return time.UnixMilli(1_000_000) })
			got, err := selectOrErr(t, q, "t", 0, 60_000)
			if c.wantErr {
				if !errors.Is(err, ErrTooManyIngesterFailures) || !strings.Contains(err.Error(), "m0") || !strings.Contains(err.Error(), "m1") {
					t.Fatalf("got %v (%v), want ErrTooManyIngesterFailures naming m0 and m1", err, got)
				}
				if n := testutil.ToFloat64(blocks.cfg.metrics.fanoutQueriesFailed.WithLabelValues("blocks")); n != 1 {
					t.Fatalf("cortex_querier_fanout_quorum_failures_total{source=\"blocks\"} = %v, want 1", n)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if fmt.Sprint(got[ls.String()]) != fmt.Sprint(all) {
				t.Fatalf("got %v, want %v", got, all)
			}
		})
	}
}

// Where the two sources' ranges do not overlap (the time split gives each its own part of the
// query), each instant is read from one source only, and their failures are not added up: m0's
// blocks failing for the old part and m1's memory failing for the recent part lose nothing.
func TestNewQueryable_DisjointRangesKeepTheirOwnBudgets(t *testing.T) {
	old, recent := samplesRange(0, 60_000, 15_000), samplesRange(950_000, 1_000_000, 10_000)
	ls := labels.FromStrings("__name__", "m")
	fs := []*fakeIngester{startFakeIngester(t), startFakeIngester(t), startFakeIngester(t)}
	var ms []member
	for _, f := range fs {
		f.addBlocks("t", ls, xorChunks(t, old, 120)...)
		f.add("t", ls, xorChunks(t, recent, 120)...)
		ms = append(ms, member{addr: f.addr, state: ringstate.ACTIVE})
	}
	fs[0].failBlocks, fs[1].failStream = true, true
	ring := newRing(t, ms...)
	// Ingesters answer [900 000, 1 000 000], the store [0, 800 000].
	q := NewQueryable(newIngesterQueryable(t, 3, ring), newBlocksQueryable(t, 3, ring), 200*time.Second, 100*time.Second,
		func() time.Time { return time.UnixMilli(1_000_000) })
	got, err := selectOrErr(t, q, "t", 0, 1_000_000)
	if err != nil {
		t.Fatal(err)
	}
	if want := append(slices.Clone(old), recent...); fmt.Sprint(got[ls.String()]) != fmt.Sprint(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
}

// The failure set is shared between reads of the same selection only: a member failing for one
// selection does not use up the budget of another in the same query.
func TestNewQueryable_FailuresOfAnotherSelectionDoNotCount(t *testing.T) {
	all := samplesRange(0, 60_000, 15_000)
	a, b := labels.FromStrings("__name__", "a"), labels.FromStrings("__name__", "b")
	fs := []*fakeIngester{startFakeIngester(t), startFakeIngester(t), startFakeIngester(t)}
	var ms []member
	for _, f := range fs {
		f.add("t", a, xorChunks(t, all, 120)...)
		f.add("t", b, xorChunks(t, all, 120)...)
		ms = append(ms, member{addr: f.addr, state: ringstate.ACTIVE})
	}
	ring := newRing(t, ms...)
	q := NewQueryable(newIngesterQueryable(t, 3, ring), newBlocksQueryable(t, 3, ring), 0, 0, func() time.Time { return time.UnixMilli(1_000_000) })
	qr, err := q.Querier(0, 60_000)
	if err != nil {
		t.Fatal(err)
	}
	defer qr.Close()
	ctx := tenant.With(bg, "t")
	setFail := func(f *fakeIngester, v bool) {
		f.mu.Lock()
		f.failStream = v
		f.mu.Unlock()
	}
	setFail(fs[0], true)
	if got, _ := collect(t, qr.Select(ctx, true, nil, labels.MustNewMatcher(labels.MatchEqual, "__name__", "a"))); len(got[a.String()]) != len(all) {
		t.Fatalf("a: %v", got)
	}
	setFail(fs[0], false)
	setFail(fs[1], true)
	if got, _ := collect(t, qr.Select(ctx, true, nil, labels.MustNewMatcher(labels.MatchEqual, "__name__", "b"))); len(got[b.String()]) != len(all) {
		t.Fatalf("b: %v", got)
	}
}

// Memory is read before blocks, and each read is over before the next starts: a flush between the
// two (the block uploaded, then the samples dropped from memory) leaves the samples in the blocks'
// answer. Read the other way round, they would be in neither.
func TestNewQueryable_ReadsMemoryBeforeBlocks(t *testing.T) {
	all := samplesRange(0, 60_000, 15_000)
	ls := labels.FromStrings("__name__", "m")
	f := startFakeIngester(t)
	f.add("t", ls, xorChunks(t, all, 120)...)
	var (
		mu      sync.Mutex
		order   []string
		flushed bool
	)
	f.served = func(rpc string) {
		mu.Lock()
		defer mu.Unlock()
		order = append(order, rpc)
		if flushed {
			return
		}
		flushed = true
		// A flush right after the first read: upload, then drop from memory. (f.mu is not held
		// while served runs.)
		f.mu.Lock()
		f.blocks["t"] = append(f.blocks["t"], f.data["t"]...)
		f.data["t"] = nil
		f.mu.Unlock()
	}
	ring := newRing(t, member{addr: f.addr, state: ringstate.ACTIVE})
	q := NewQueryable(newIngesterQueryable(t, 1, ring), newBlocksQueryable(t, 1, ring), 0, 0, func() time.Time { return time.UnixMilli(1_000_000) })
	got, _, err := selectAll(t, q, "t", 0, 60_000)
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if fmt.Sprint(order) != "[QueryStream QueryBlocks]" {
		t.Fatalf("reads in order %v, want memory then blocks", order)
	}
	if fmt.Sprint(got[ls.String()]) != fmt.Sprint(all) {
		t.Fatalf("got %v, want %v: a flush between the reads lost samples", got, all)
	}
}

// Once the budget is crossed the fetch cancels the other members' streams; those cancellations are
// the fetch's own doing, not the members' failures: neither counted in the error metric nor named
// in the error.
func TestMemberQueryable_OwnCancellationsAreNotFailures(t *testing.T) {
	a, b := startFakeIngester(t), startFakeIngester(t)
	a.fail, b.fail = true, true
	e := startEndlessIngester(t) // streams until cancelled
	q := newIngesterQueryable(t, 3, newRing(t, member{addr: a.addr, state: ringstate.ACTIVE},
		member{addr: b.addr, state: ringstate.ACTIVE}, member{addr: e.addr, state: ringstate.ACTIVE}))
	done := make(chan error, 1)
	go func() {
		_, err := selectOrErr(t, q, "t1", 0, 1_000_000)
		done <- err
	}()
	var err error
	select {
	case err = <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("the query did not stop when the budget was crossed")
	}
	if !errors.Is(err, ErrTooManyIngesterFailures) || strings.Contains(err.Error(), "m2") || strings.Contains(strings.ToLower(err.Error()), "cancel") {
		t.Fatalf("got %v, want ErrTooManyIngesterFailures naming m0 and m1 only", err)
	}
	if n := testutil.ToFloat64(q.cfg.metrics.fanoutRequests.WithLabelValues("ingesters", "error")); n != 2 {
		t.Fatalf("cortex_querier_fanout_requests_total{source=\"ingesters\",status=\"error\"} = %v, want 2 (the cancelled stream is not an error)", n)
	}
}

// A member may split one series over several messages (its labels repeated with the next chunks):
// the parts make one series with every sample, counted once against the series limit, each chunk
// once against the chunks limit.
func TestBlocksQueryable_SeriesSplitAcrossMessages(t *testing.T) {
	f := startFakeIngester(t)
	f.onePerMessage = true
	all := samplesRange(0, 19_000, 1000)
	chks := xorChunks(t, all, 5) // 4 chunks
	ls := labels.FromStrings("__name__", "m")
	f.addBlocks("t1", ls, chks[:2]...)
	f.addBlocks("t1", ls, chks[2:]...)
	q := newBlocksQueryable(t, 1, newRing(t, member{addr: f.addr, state: ringstate.ACTIVE}))
	if n, err := selectWithLimits(t, q, newQueryLimiter(1, 4, 0, nil), nil); err != nil || n != 1 {
		t.Fatalf("series limit 1, chunks limit 4: %d series, %v; want one series", n, err)
	}
	if _, err := selectWithLimits(t, q, newQueryLimiter(0, 3, 0, nil), nil); !IsLimitError(err) {
		t.Fatalf("chunks limit 3: %v, want the limit's error (4 chunks)", err)
	}
	got, _, err := selectAll(t, q, "t1", 0, 19_000)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || fmt.Sprint(got[ls.String()]) != fmt.Sprint(all) {
		t.Fatalf("got %v, want one series with %v", got, all)
	}
}

// The label endpoints keep a set of names or values as the members' messages arrive, not the
// series: fanOut with a callback returns no series, and the label answers are complete.
func TestMemberQueryable_LabelQueriesKeepNoSeries(t *testing.T) {
	fs, ring, _ := threeReplicas(t, 50)
	for _, f := range fs {
		f.add("t1", labels.FromStrings("__name__", "other", "zone", "z"))
	}
	q := newIngesterQueryable(t, 3, ring)
	n := 0
	var mu sync.Mutex
	results, err := q.fanOut(tenant.With(bg, "t1"), 0, 1_000_000, true, nil, func(*ingesterpb.StreamSeries) {
		mu.Lock()
		n++
		mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range results {
		if len(r.series) != 0 {
			t.Fatalf("member %s: %d series kept", r.member, len(r.series))
		}
	}
	if n != 3*51 {
		t.Fatalf("%d series passed to the callback, want %d", n, 3*51)
	}
	qr, _ := q.Querier(0, 1_000_000)
	defer qr.Close()
	names, _, err := qr.LabelNames(tenant.With(bg, "t1"), nil)
	if err != nil || fmt.Sprint(names) != "[__name__ i zone]" {
		t.Fatalf("label names %v, %v", names, err)
	}
	vals, _, err := qr.LabelValues(tenant.With(bg, "t1"), "__name__", &storage.LabelHints{})
	if err != nil || fmt.Sprint(vals) != "[m other]" {
		t.Fatalf("__name__ values %v, %v", vals, err)
	}
}

// selectOrErr selects every series of tenantID in [mint, maxt] and returns their samples, or the
// series set's error.
func selectOrErr(t *testing.T, q storage.Queryable, tenantID string, mint, maxt int64) (map[string][]sample, error) {
	t.Helper()
	qr, err := q.Querier(mint, maxt)
	if err != nil {
		return nil, err
	}
	defer qr.Close()
	set := qr.Select(tenant.With(bg, tenantID), true, nil, labels.MustNewMatcher(labels.MatchRegexp, "__name__", ".+"))
	out := map[string][]sample{}
	for set.Next() {
		it := set.At().Iterator(nil)
		for it.Next() != 0 {
			ts, v := it.At()
			out[set.At().Labels().String()] = append(out[set.At().Labels().String()], sample{ts, v})
		}
		if it.Err() != nil {
			return out, it.Err()
		}
	}
	return out, set.Err()
}
