package distributor

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/prometheus/prompb"
	"google.golang.org/grpc"

	"github.com/raftingest/raftingest/ingesterpb"
	"github.com/raftingest/raftingest/ringstate"
)

// fencingIngester is a testIngester that fences as a real ingester does: it refuses a request
// stamped below its ownership index (ingesterpb.FencedError), and records every stamp it saw.
type fencingIngester struct {
	*testIngester
	owned atomic.Uint64
	// slowAccept delays every request it takes (not the refusals), so that every fenced answer
	// of a push is in before the first retry's answer.
	slowAccept time.Duration

	smu    sync.Mutex
	stamps []uint64
}

func (s *fencingIngester) Push(ctx context.Context, req *ingesterpb.PushRequest) (*ingesterpb.PushResponse, error) {
	s.smu.Lock()
	s.stamps = append(s.stamps, req.GetRingIndex())
	s.smu.Unlock()
	if owned := s.owned.Load(); req.GetRingIndex() != 0 && req.GetRingIndex() < owned {
		return nil, ingesterpb.FencedError(s.addr, req.GetRingIndex(), owned)
	}
	time.Sleep(s.slowAccept)
	return s.testIngester.Push(ctx, req)
}

func (s *fencingIngester) seen() []uint64 {
	s.smu.Lock()
	defer s.smu.Unlock()
	return append([]uint64(nil), s.stamps...)
}

func startFencingIngester(t *testing.T, owned uint64, slowAccept time.Duration) *fencingIngester {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &fencingIngester{testIngester: &testIngester{addr: lis.Addr().String(), srv: grpc.NewServer()}, slowAccept: slowAccept}
	s.owned.Store(owned)
	ingesterpb.RegisterIngesterServer(s.srv, s)
	done := make(chan struct{})
	go func() { defer close(done); _ = s.srv.Serve(lis) }()
	t.Cleanup(func() { s.srv.Stop(); <-done })
	return s
}

// laggingRing is an IndexedRingSource whose ring is stale until someone waits for a later index:
// then it catches up to fresh (if allowed), as a node's FSM applies the entries it was behind on.
type laggingRing struct {
	mu         sync.Mutex
	ring       *ringstate.Ring
	index      uint64
	fresh      *ringstate.Ring
	freshIndex uint64
	neverCatch bool
	waitedFor  []uint64
}

func (l *laggingRing) Ring() *ringstate.Ring { r, _ := l.RingIndex(); return r }

func (l *laggingRing) RingIndex() (*ringstate.Ring, uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.ring, l.index
}

func (l *laggingRing) WaitApplied(ctx context.Context, index uint64) error {
	l.mu.Lock()
	l.waitedFor = append(l.waitedFor, index)
	if !l.neverCatch && index <= l.freshIndex {
		l.ring, l.index = l.fresh, l.freshIndex
	}
	ok := l.index >= index
	l.mu.Unlock()
	if ok {
		return nil
	}
	<-ctx.Done()
	return ctx.Err()
}

// fenceEnv is four real gRPC ingesters a..d, every one of which has applied d's activation at
// index 9, and a distributor whose ring is still at index 5, where d is JOINING.
func fenceEnv(t *testing.T, neverCatch bool) (*Distributor, *testEnv, []*fencingIngester, *laggingRing, *prometheus.Registry) {
	t.Helper()
	var ings []*fencingIngester
	var stale, fresh []memberSpec
	for i := range 4 {
		ing := startFencingIngester(t, 9, 100*time.Millisecond)
		ings = append(ings, ing)
		id := string(rune('a' + i))
		st := ringstate.ACTIVE
		if i == 3 {
			st = ringstate.JOINING
		}
		stale = append(stale, memberSpec{id: id, addr: ing.addr, state: st})
		fresh = append(fresh, memberSpec{id: id, addr: ing.addr})
	}
	src := &laggingRing{ring: buildRing(t, stale...), index: 5, fresh: buildRing(t, fresh...), freshIndex: 9, neverCatch: neverCatch}
	pool := NewGRPCClientPool(time.Minute, testLogger())
	reg := prometheus.NewRegistry()
	cfg := defaultConfig()
	cfg.RemoteTimeout = 500 * time.Millisecond
	e := &testEnv{clock: newClock(testNow())}
	d, err := New(cfg, Deps{Ring: src, Clients: pool, Registerer: reg, Logger: testLogger(), Now: e.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	e.d, e.srv = d, newHTTPServer(d)
	t.Cleanup(func() { e.srv.Close(); d.Wait(); _ = pool.Close() })
	return d, e, ings, src, reg
}

// TestFence_RetriesOnTheFreshRing: every ingester refuses the stale push; the distributor catches
// up to the index they name, places the series again and the push succeeds, each series stored on
// every one of its owners on the fresh ring and on no other member: the retries that decide the
// push are waited for, and the fenced answer that came in meanwhile (every ingester's: they refuse
// at once and take the retries slowly) is sent again in the background, so no series is left with
// fewer than RF copies.
func TestFence_RetriesOnTheFreshRing(t *testing.T) {
	d, e, ings, src, _ := fenceEnv(t, false)
	in := manySeries(200)
	if code, msg := e.post(t, encode(t, in...)); code != http.StatusOK {
		t.Fatalf("%d %s", code, msg)
	}
	d.Wait()
	byID := map[ringstate.MemberID]*fencingIngester{"a": ings[0], "b": ings[1], "c": ings[2], "d": ings[3]}
	rf := src.fresh.EffectiveRF(3)
	movedToD := 0
	for _, s := range in {
		owners := src.fresh.ReplicationSet(SeriesHash(DefaultTenant, seriesLabels(s)), rf, testHeartbeatTime.Milliseconds(), nil)
		isOwner := map[ringstate.MemberID]bool{}
		for _, m := range owners {
			isOwner[m.ID] = true
		}
		onOwners := 0
		for id, ing := range byID {
			has := ing.has(DefaultTenant, rendered(s))
			if has && !isOwner[id] {
				t.Fatalf("%s is stored on %s, which does not own it on the fresh ring", rendered(s), id)
			}
			if has {
				onOwners++
				if id == "d" {
					movedToD++
				}
			}
		}
		if onOwners != rf {
			t.Fatalf("%s is on %d of its %d owners", rendered(s), onOwners, rf)
		}
	}
	if movedToD == 0 {
		t.Fatal("no series went to d, the member that became ACTIVE: the test proves nothing")
	}
	// Every first request was stamped 5 and refused; the retries were stamped 9.
	for _, ing := range ings[:3] {
		if st := ing.seen(); len(st) == 0 || st[0] != 5 {
			t.Fatalf("%s saw stamps %v, want 5 first", ing.addr, st)
		}
	}
	if got := testutil.ToFloat64(d.fence.retries.WithLabelValues("retried")); got != 3 {
		t.Fatalf("fenced_retries_total{outcome=retried} = %v, want 3 (every target was fenced)", got)
	}
	// Once caught up, a push goes straight through, stamped with the fresh index.
	before := make([]int, len(ings))
	for i, ing := range ings {
		before[i] = len(ing.seen())
	}
	if code, msg := e.post(t, encode(t, manySeries(30)...)); code != http.StatusOK {
		t.Fatalf("%d %s", code, msg)
	}
	d.Wait()
	later := 0
	for i, ing := range ings {
		for _, stamp := range ing.seen()[before[i]:] {
			later++
			if stamp != 9 {
				t.Fatalf("%s: stamp %d after catching up, want 9", ing.addr, stamp)
			}
		}
	}
	if later < 3 {
		t.Fatalf("%d requests after catching up, want at least 3", later)
	}
}

// TestFence_RingThatCannotCatchUpFailsThePush: when this node's ring does not reach the fenced
// index within the remote timeout, the series fail with 5xx (Prometheus retries), nothing is
// stored on a member that refused it, and the lag is counted.
func TestFence_RingThatCannotCatchUpFailsThePush(t *testing.T) {
	d, e, ings, src, _ := fenceEnv(t, true)
	code, msg := e.post(t, encode(t, manySeries(20)...))
	if code != http.StatusInternalServerError {
		t.Fatalf("%d %s, want 500", code, msg)
	}
	d.Wait()
	for _, ing := range ings {
		ing.mu.Lock()
		n := len(ing.stored)
		ing.mu.Unlock()
		if n != 0 {
			t.Fatalf("%s stored series although every push was fenced", ing.addr)
		}
	}
	if got := testutil.ToFloat64(d.fence.retries.WithLabelValues("ring_lagging")); got < 2 {
		t.Fatalf("fenced_retries_total{outcome=ring_lagging} = %v", got)
	}
	src.mu.Lock()
	defer src.mu.Unlock()
	if len(src.waitedFor) == 0 || src.waitedFor[0] != 9 {
		t.Fatalf("waited for %v, want the ingesters' ownership index 9", src.waitedFor)
	}
}

// TestFence_UnindexedRingSourceSendsUnstamped: a RingSource without an index stamps nothing (0),
// which an ingester takes unfenced: the rolling-upgrade path, and the bug switch of the fault test.
func TestFence_UnindexedRingSourceSendsUnstamped(t *testing.T) {
	ing := startFencingIngester(t, 9, 0)
	pool := NewGRPCClientPool(time.Minute, testLogger())
	e := &testEnv{clock: newClock(testNow())}
	d, err := New(defaultConfig(), Deps{Ring: ringOf(buildRing(t, memberSpec{id: "a", addr: ing.addr})), Clients: pool,
		Logger: testLogger(), Now: e.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	e.d, e.srv = d, newHTTPServer(d)
	t.Cleanup(func() { e.srv.Close(); d.Wait(); _ = pool.Close() })
	if code, msg := e.post(t, encode(t, manySeries(2)...)); code != http.StatusOK {
		t.Fatalf("%d %s", code, msg)
	}
	if st := ing.seen(); len(st) != 1 || st[0] != 0 {
		t.Fatalf("stamps %v, want one unstamped request", st)
	}
}

func TestSubstitute(t *testing.T) {
	m := func(id string) *ringstate.Member { return &ringstate.Member{ID: ringstate.MemberID(id)} }
	targets := []*ringstate.Member{m("a"), m("b"), m("c"), m("x")}
	old := []int32{0, 1, 2} // a, b, c
	for _, tc := range []struct {
		refused string
		fresh   []*ringstate.Member
		want    string
	}{
		{"a", []*ringstate.Member{m("a"), m("b"), m("c")}, "a"},         // still an owner: sent again to it
		{"a", []*ringstate.Member{m("d"), m("b"), m("c")}, "d"},         // replaced by the newcomer
		{"b", []*ringstate.Member{m("d"), m("e"), m("c")}, "e"},         // a and b left: b takes the second newcomer
		{"a", []*ringstate.Member{m("d"), m("e"), m("c")}, "d"},         // ... and a the first
		{"c", []*ringstate.Member{m("a"), m("b")}, ""},                  // the set shrank: nobody
		{"b", []*ringstate.Member{m("a"), m("c"), m("x"), m("y")}, "x"}, // a member of the push already, new to this series
	} {
		got := substitute(ringstate.MemberID(tc.refused), old, targets, tc.fresh)
		gotID := ""
		if got != nil {
			gotID = string(got.ID)
		}
		if gotID != tc.want {
			t.Errorf("refused %s, fresh %v: substitute %q, want %q", tc.refused, tc.fresh, gotID, tc.want)
		}
	}
}

// seriesLabels are a prompb series' labels as the distributor hashes them (sorted, as manySeries
// makes them).
func seriesLabels(s prompb.TimeSeries) []Label {
	out := make([]Label, len(s.Labels))
	for i, l := range s.Labels {
		out[i] = Label{Name: l.Name, Value: l.Value}
	}
	return out
}

// TestFence_RetryDoesNotHoldADecidedPush: one replica fences the push and this node's ring cannot
// reach its index; the other two store every series. The push is answered once they have (its
// quorum), not after the retry's wait for the ring, which lasts the remote timeout; the waiting
// retry is then given up (counted as ring_lagging) without touching the finished push's state.
func TestFence_RetryDoesNotHoldADecidedPush(t *testing.T) {
	var ings []*fencingIngester
	var specs []memberSpec
	for i := range 3 {
		// a fences at once; b and c take their requests slowly, so that a's refusal is in, and its
		// retry waiting, before the push is decided.
		owned, slow := uint64(0), 300*time.Millisecond
		if i == 0 {
			owned = 9
		}
		ing := startFencingIngester(t, owned, slow)
		ings = append(ings, ing)
		specs = append(specs, memberSpec{id: string(rune('a' + i)), addr: ing.addr})
	}
	r := buildRing(t, specs...)
	src := &laggingRing{ring: r, index: 5, fresh: r, freshIndex: 5, neverCatch: true}
	pool := NewGRPCClientPool(time.Minute, testLogger())
	cfg := defaultConfig()
	cfg.RemoteTimeout = 10 * time.Second
	e := &testEnv{clock: newClock(testNow())}
	d, err := New(cfg, Deps{Ring: src, Clients: pool, Registerer: prometheus.NewRegistry(), Logger: testLogger(), Now: e.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	e.d, e.srv = d, newHTTPServer(d)
	t.Cleanup(func() { e.srv.Close(); d.Wait(); _ = pool.Close() })

	in := manySeries(50)
	req, err := http.NewRequest(http.MethodPost, e.srv.URL+"/api/v1/push", bytes.NewReader(encode(t, in...)))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Encoding", "snappy")
	req.Header.Set("Content-Type", "application/x-protobuf")
	start := time.Now()
	resp, err := e.srv.Client().Do(req) // not e.post: it waits for every send, the retry's too
	if err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	msg, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("%d %s", resp.StatusCode, msg)
	}
	if took > cfg.RemoteTimeout/2 {
		t.Fatalf("push answered after %v: it waited for the fenced retry (remote timeout %v)", took, cfg.RemoteTimeout)
	}
	start = time.Now()
	d.Wait()
	if took := time.Since(start); took > cfg.RemoteTimeout/2 {
		t.Fatalf("the given-up retry kept waiting for the ring %v after the push was answered", took)
	}
	for _, s := range in {
		for _, ing := range ings[1:] {
			if !ing.has(DefaultTenant, rendered(s)) {
				t.Fatalf("%s missing on %s", rendered(s), ing.addr)
			}
		}
		if ings[0].has(DefaultTenant, rendered(s)) {
			t.Fatalf("%s stored on the fencing member", rendered(s))
		}
	}
	d.Wait()
	if got := testutil.ToFloat64(d.fence.retries.WithLabelValues("ring_lagging")); got != 1 {
		t.Fatalf("fenced_retries_total{outcome=ring_lagging} = %v, want 1 (the retry given up)", got)
	}
}
