package querier

import (
	"errors"
	"fmt"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"

	"github.com/raftingest/raftingest/ingesterpb"
	"github.com/raftingest/raftingest/ringstate"
	"github.com/raftingest/raftingest/tenant"
)

func newBlocksQueryable(t *testing.T, rf int, ring RingSource) *MemberQueryable {
	t.Helper()
	pool := NewGRPCPool(16 << 20)
	t.Cleanup(func() { pool.Close() })
	q, err := NewBlocksQueryable(IngestersConfig{Ring: ring, Clients: pool, ReplicationFactor: rf, HeartbeatTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return q
}

// Blocks outlive the state that flushed them: every healthy member is asked for its blocks whatever
// its state (a PENDING or JOINING member may hold blocks handed over to it), over QueryBlocks and
// never QueryStream. The copies of one series in several members' blocks, cut into chunks at other
// samples, come back as one series with every sample once.
func TestBlocksQueryable_AsksEveryHealthyMemberWhateverItsState(t *testing.T) {
	states := []ringstate.State{ringstate.ACTIVE, ringstate.LEAVING, ringstate.JOINING, ringstate.PENDING, ringstate.ACTIVE}
	var fs []*fakeIngester
	var ms []member
	all := samplesRange(0, 599_000, 15_000)
	shared := labels.FromStrings("__name__", "m", "series", "shared")
	want := map[string][]sample{shared.String(): all}
	for i, st := range states {
		f := startFakeIngester(t)
		own := labels.FromStrings("__name__", "m", "series", fmt.Sprintf("only-on-%s-%d", st, i))
		f.addBlocks("t", own, xorChunks(t, all, 120)...)
		want[own.String()] = all
		if i < 3 {
			f.addBlocks("t", shared, xorChunks(t, all, 7+3*i)...)
		}
		f.add("t", labels.FromStrings("__name__", "m", "series", "in-memory"), xorChunks(t, all, 120)...)
		fs = append(fs, f)
		ms = append(ms, member{addr: f.addr, state: st})
	}
	q := newBlocksQueryable(t, 3, newRing(t, ms...))
	got, order, err := selectAll(t, q, "t", 0, 599_000)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("got %d series %v, want %d %v", len(got), order, len(want), want)
	}
	for i := 1; i < len(order); i++ {
		if order[i-1] >= order[i] {
			t.Fatalf("series not sorted: %v", order)
		}
	}
	for i, f := range fs {
		if len(f.blockCalls) != 1 || len(f.tenants) != 0 {
			t.Fatalf("member %d (%s): %d QueryBlocks and %d QueryStream calls, want 1 and 0", i, states[i], len(f.blockCalls), len(f.tenants))
		}
	}
}

// The failure budget is the ingesters' floor(RF/2), with five (or six) members and RF 3. Only a
// member that may hold the only copy of something — ACTIVE or LEAVING — uses it up, unhealthy or
// failing; a PENDING or JOINING member is asked as a best effort and its absence or failure is
// logged, never counted (a joiner receives copies its LEAVING peer still serves; a PENDING member
// holds at most copies of an aborted hand-over).
func TestBlocksQueryable_FailureBudget(t *testing.T) {
	all := samplesRange(0, 60_000, 15_000)
	ls := labels.FromStrings("__name__", "m")
	type kind int
	const (
		holds   kind = iota // healthy, holds a copy of the series
		failing             // healthy, every call fails
		stale               // unhealthy in the ring (and unreachable)
	)
	type m struct {
		k  kind
		st ringstate.State
	}
	A, P, J, L := ringstate.ACTIVE, ringstate.PENDING, ringstate.JOINING, ringstate.LEAVING
	cases := []struct {
		name    string
		members []m
		wantErr bool
	}{
		{"all answer", []m{{holds, A}, {holds, A}, {holds, A}, {holds, A}, {holds, P}}, false},
		{"one unhealthy ACTIVE", []m{{holds, A}, {holds, A}, {holds, A}, {holds, A}, {stale, A}}, false},
		{"one failing PENDING", []m{{holds, A}, {holds, A}, {holds, A}, {holds, A}, {failing, P}}, false},
		{"an unhealthy PENDING does not count, one failing", []m{{holds, A}, {holds, A}, {holds, A}, {failing, A}, {stale, P}}, false},
		{"one failing PENDING plus one failing ACTIVE", []m{{holds, A}, {holds, A}, {holds, A}, {holds, A}, {failing, A}, {failing, P}}, false},
		{"an unhealthy JOINING does not count, one failing", []m{{holds, A}, {holds, A}, {holds, A}, {failing, A}, {stale, J}}, false},
		{"one failing JOINING plus one failing ACTIVE", []m{{holds, A}, {holds, A}, {holds, A}, {failing, A}, {failing, J}}, false},
		{"unhealthy LEAVING and ACTIVE", []m{{holds, A}, {holds, A}, {holds, A}, {stale, L}, {stale, A}}, true},
		{"two failing ACTIVE", []m{{holds, A}, {holds, A}, {holds, A}, {failing, A}, {failing, A}}, true},
		{"failing LEAVING, unhealthy ACTIVE", []m{{holds, A}, {holds, A}, {holds, A}, {failing, L}, {stale, A}}, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var ms []member
			for _, x := range tc.members {
				switch x.k {
				case holds:
					f := startFakeIngester(t)
					f.addBlocks("t", ls, xorChunks(t, all, 120)...)
					ms = append(ms, member{addr: f.addr, state: x.st})
				case failing:
					f := startFakeIngester(t)
					f.fail = true
					ms = append(ms, member{addr: f.addr, state: x.st})
				case stale:
					ms = append(ms, member{addr: deadAddr(t), state: x.st, stale: true})
				}
			}
			q := newBlocksQueryable(t, 3, newRing(t, ms...))
			got, _, err := selectAll(t, q, "t", 0, 60_000)
			if tc.wantErr {
				if !errors.Is(err, ErrTooManyIngesterFailures) || !strings.Contains(err.Error(), "reading blocks") {
					t.Fatalf("err %v, want ErrTooManyIngesterFailures reading blocks", err)
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

// The fetch limits count the blocks' streams as they arrive, with the ingesters' on the same
// limiter: a series in memory and in blocks counts once; every copy of a chunk counts, in memory
// and in every member's blocks. Each limit admits exactly its value and refuses one less.
func TestBlocksQueryable_FetchLimitsCountBlocksAsTheyStream(t *testing.T) {
	fs, ring, memBytesOneCopy := threeReplicas(t, 2) // i=0, i=1 in memory: 3 replicas x 2 series x 2 chunks
	blockChunks := xorChunks(t, samplesRange(0, 19_000, 1000), 10)
	blockBytes := 0
	for _, i := range []int{1, 2} { // i=1 also in memory; i=2 only in blocks
		for _, f := range fs {
			f.addBlocks("t1", labels.FromStrings("__name__", "m", "i", fmt.Sprint(i)), blockChunks...)
			for _, c := range blockChunks {
				blockBytes += len(c.Data)
			}
		}
	}
	ing := newIngesterQueryable(t, 3, ring)
	blocks := newBlocksQueryable(t, 3, ring)
	q := NewQueryable(ing, blocks, 0, 0, func() time.Time { return time.UnixMilli(1_000_000) })
	const series, chunks = 3, 12 + 12
	bytes := 3*memBytesOneCopy + blockBytes
	for _, c := range []struct {
		maxS, maxC, maxB int
		ok               bool
	}{
		{series, 0, 0, true}, {series - 1, 0, 0, false},
		{0, chunks, 0, true}, {0, chunks - 1, 0, false},
		{0, 0, bytes, true}, {0, 0, bytes - 1, false},
	} {
		n, err := selectWithLimits(t, q, newQueryLimiter(c.maxS, c.maxC, c.maxB, nil), nil)
		if c.ok != (err == nil) || (err != nil && !IsLimitError(err)) || (c.ok && n != series) {
			t.Errorf("limits series=%d chunks=%d bytes=%d: %d series, %v", c.maxS, c.maxC, c.maxB, n, err)
		}
	}
}

// QueryBlocks of the endless ingester streams like its QueryStream: one new series per message.
func (e *endlessIngester) QueryBlocks(req *ingesterpb.QueryRequest, stream ingesterpb.Ingester_QueryBlocksServer) error {
	return e.QueryStream(req, stream)
}

// Against members whose blocks would stream forever, a query fails with the limit's error as soon
// as it is crossed and every blocks stream is cancelled.
func TestBlocksQueryable_FetchLimitsStopStreamsWhenCrossed(t *testing.T) {
	a, b := startEndlessIngester(t), startEndlessIngester(t)
	q := newBlocksQueryable(t, 2, newRing(t, member{addr: a.addr, state: ringstate.ACTIVE}, member{addr: b.addr, state: ringstate.JOINING}))
	done := make(chan error, 1)
	go func() {
		_, err := selectWithLimits(t, q, newQueryLimiter(0, 50, 0, nil), nil)
		done <- err
	}()
	select {
	case err := <-done:
		if !IsLimitError(err) || !strings.Contains(err.Error(), "err-mimir-max-chunks-per-query") {
			t.Fatalf("got %v, want the chunks limit's error", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("the query did not stop at the limit: %d and %d messages sent so far", a.sent.Load(), b.sent.Load())
	}
	for _, e := range []*endlessIngester{a, b} {
		if !e.started.Load() {
			continue // the limit was crossed before this call reached its server
		}
		select {
		case <-e.cancelled:
		case <-time.After(10 * time.Second):
			t.Fatalf("member %s: stream not cancelled after %d messages", e.addr, e.sent.Load())
		}
	}
}

// The series and label endpoints ask for labels only (QueryRequest.labels_only), of the members'
// memory and of their blocks; PromQL asks for chunks. Chunks a member sends anyway with labels only
// are dropped.
func TestQuerier_LabelsOnlyRequests(t *testing.T) {
	f := startFakeIngester(t)
	all := samplesRange(0, 600_000, 15_000)
	f.add("anonymous", labels.FromStrings("__name__", "up", "job", "mem"), xorChunks(t, all, 120)...)
	f.addBlocks("anonymous", labels.FromStrings("__name__", "up", "job", "blk"), xorChunks(t, all, 120)...)
	reg := prometheus.NewRegistry()
	var cfg Config
	cfg.RegisterFlags(flagSet())
	q, err := New(cfg, Deps{Ring: newRing(t, member{addr: f.addr, state: ringstate.ACTIVE}), ReplicationFactor: 1,
		HeartbeatTimeout: 10 * time.Second, DefaultTenant: "anonymous", NodeLocalStore: true, Registerer: reg,
		Now: func() time.Time { return time.UnixMilli(600_000) }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { q.Close() })
	take := func() (stream, blocks []*ingesterpb.QueryRequest) {
		f.mu.Lock()
		defer f.mu.Unlock()
		stream, blocks = f.streamReqs, f.blockCalls
		f.streamReqs, f.blockCalls = nil, nil
		return stream, blocks
	}
	for _, c := range []struct {
		name       string
		labelsOnly bool
		run        func() (string, error)
	}{
		{"series", true, func() (string, error) {
			qr, _ := q.Queryable().Querier(0, 600_000)
			defer qr.Close()
			set := qr.Select(tenant.With(bg, "anonymous"), true, &storage.SelectHints{Start: 0, End: 600_000, Func: "series"},
				labels.MustNewMatcher(labels.MatchEqual, "__name__", "up"))
			var out []string
			for set.Next() {
				n := 0
				it := set.At().Iterator(nil)
				for it.Next() != 0 {
					n++
				}
				out = append(out, fmt.Sprintf("%s:%d", set.At().Labels(), n))
			}
			return strings.Join(out, " "), set.Err()
		}},
		{"label values", true, func() (string, error) {
			qr, _ := q.Queryable().Querier(0, 600_000)
			defer qr.Close()
			vals, _, err := qr.LabelValues(tenant.With(bg, "anonymous"), "job", nil)
			return fmt.Sprint(vals), err
		}},
		{"promql", false, func() (string, error) {
			qr, err := q.Engine().NewInstantQuery(bg, q.Queryable(), nil, `count_over_time(up[10m])`, time.UnixMilli(600_000))
			if err != nil {
				return "", err
			}
			defer qr.Close()
			res := qr.Exec(tenant.With(bg, "anonymous"))
			return res.String(), res.Err
		}},
	} {
		got, err := c.run()
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		stream, blocks := take()
		if len(stream) != 1 || len(blocks) != 1 {
			t.Fatalf("%s: %d QueryStream and %d QueryBlocks calls, want 1 and 1", c.name, len(stream), len(blocks))
		}
		if stream[0].GetLabelsOnly() != c.labelsOnly || blocks[0].GetLabelsOnly() != c.labelsOnly {
			t.Fatalf("%s: labels_only %v (memory) and %v (blocks), want %v", c.name, stream[0].GetLabelsOnly(), blocks[0].GetLabelsOnly(), c.labelsOnly)
		}
		t.Logf("%s: %s", c.name, got)
		switch c.name {
		case "series":
			if got != `{__name__="up", job="blk"}:0 {__name__="up", job="mem"}:0` {
				t.Fatalf("series: %s, want both series without samples", got)
			}
		case "label values":
			if got != "[blk mem]" {
				t.Fatalf("label values: %s", got)
			}
		case "promql":
			if !strings.Contains(got, `{job="blk"} => 40`) || !strings.Contains(got, `{job="mem"} => 40`) {
				t.Fatalf("promql: %s, want 40 samples of each series", got)
			}
		}
	}
	for src, want := range map[string]float64{"ingesters": 3, "blocks": 3} {
		if got := testutil.ToFloat64(q.metrics.fanoutRequests.WithLabelValues(src, "success")); got != want {
			t.Errorf("cortex_querier_fanout_requests_total{source=%q,status=\"success\"} = %v, want %v", src, got, want)
		}
	}
	if n, err := testutil.GatherAndCount(reg, "cortex_querier_fanout_requests_total"); err != nil || n != 4 {
		t.Errorf("cortex_querier_fanout_requests_total: %d series (%v), want 4 (two sources, two outcomes)", n, err)
	}
}

// With a shared bucket (NodeLocalStore false) the querier reads Store itself and asks no member for
// blocks; with a node-local one it ignores Store and asks the members.
func TestQuerier_SharedStoreAsksNoMemberForBlocks(t *testing.T) {
	f := startFakeIngester(t)
	f.addBlocks("anonymous", labels.FromStrings("__name__", "up", "job", "blk"), xorChunks(t, samplesRange(0, 600_000, 15_000), 120)...)
	store := listQueryable{series: []storage.Series{list(labels.FromStrings("__name__", "up", "job", "shared"), 0, 600_000)}, asked: &[][2]int64{}}
	for _, nodeLocal := range []bool{false, true} {
		var cfg Config
		cfg.RegisterFlags(flagSet())
		q, err := New(cfg, Deps{Ring: newRing(t, member{addr: f.addr, state: ringstate.ACTIVE}), ReplicationFactor: 1,
			HeartbeatTimeout: 10 * time.Second, DefaultTenant: "anonymous", Store: store, NodeLocalStore: nodeLocal,
			Now: func() time.Time { return time.UnixMilli(600_000) }})
		if err != nil {
			t.Fatal(err)
		}
		srv := httptest.NewServer(q.Handler())
		code, body := get(t, srv, "/prometheus/api/v1/series", url.Values{"match[]": {"up"}, "start": {"0"}, "end": {"600"}}, "")
		srv.Close()
		q.Close()
		f.mu.Lock()
		calls := len(f.blockCalls)
		f.blockCalls = nil
		f.mu.Unlock()
		want, notWant := `"job":"shared"`, `"job":"blk"`
		wantCalls := 0
		if nodeLocal {
			want, notWant, wantCalls = notWant, want, 1
		}
		if code != 200 || !strings.Contains(body, want) || strings.Contains(body, notWant) || calls != wantCalls {
			t.Fatalf("node-local %v: %d %s with %d QueryBlocks calls; want %s, not %s, %d calls", nodeLocal, code, body, calls, want, notWant, wantCalls)
		}
	}
}
