package distributor

import (
	"context"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/prometheus/prompb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/raftingest/raftingest/ingesterpb"
)

// testIngester is a tiny real gRPC Ingester server on 127.0.0.1: it stores what it receives per
// tenant, and can fail, delay, or refuse series with per-series errors.
type testIngester struct {
	ingesterpb.UnimplementedIngesterServer
	addr string
	srv  *grpc.Server

	mu     sync.Mutex
	stored map[string][]string // tenant -> rendered series
	fail   bool
	refuse string // refuse series with this metric name as out of order
}

func (s *testIngester) Push(ctx context.Context, req *ingesterpb.PushRequest) (*ingesterpb.PushResponse, error) {
	tenant, err := ingesterpb.TenantFromIncomingContext(ctx)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail {
		return nil, status.Error(codes.Unavailable, "test ingester failing on purpose")
	}
	resp := &ingesterpb.PushResponse{}
	for i, ts := range req.Timeseries {
		if s.refuse != "" && ts.Labels[0].Value == s.refuse {
			resp.Errors = append(resp.Errors, &ingesterpb.SeriesError{Index: uint32(i), Code: ingesterpb.ErrorCode_OUT_OF_ORDER,
				Message: "sample timestamp out of order", TimestampMs: ts.Samples[0].Timestamp})
			continue
		}
		if s.stored == nil {
			s.stored = map[string][]string{}
		}
		s.stored[tenant] = append(s.stored[tenant], renderPB(ts))
		resp.SamplesIngested += uint64(len(ts.Samples))
	}
	return resp, nil
}

func (s *testIngester) has(tenant, series string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, x := range s.stored[tenant] {
		if x == series {
			return true
		}
	}
	return false
}

func startTestIngester(t *testing.T) *testIngester {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &testIngester{addr: lis.Addr().String(), srv: grpc.NewServer()}
	ingesterpb.RegisterIngesterServer(s.srv, s)
	done := make(chan struct{})
	go func() { defer close(done); _ = s.srv.Serve(lis) }()
	t.Cleanup(func() { s.srv.Stop(); <-done })
	return s
}

// grpcEnv is a distributor over real gRPC ingesters and the real client pool.
func grpcEnv(t *testing.T, cfg Config, n int) (*testEnv, []*testIngester, *GRPCClientPool) {
	t.Helper()
	var ings []*testIngester
	var specs []memberSpec
	for i := range n {
		ing := startTestIngester(t)
		ings = append(ings, ing)
		specs = append(specs, memberSpec{id: string(rune('a' + i)), addr: ing.addr})
	}
	pool := NewGRPCClientPool(time.Minute, testLogger())
	e := &testEnv{ring: ringOf(buildRing(t, specs...)), clock: newClock(testNow())}
	d, err := New(cfg, Deps{Ring: e.ring, Clients: pool, Logger: testLogger(), Now: e.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	e.d = d
	e.srv = newHTTPServer(d)
	t.Cleanup(func() { e.srv.Close(); d.Wait(); _ = pool.Close() })
	return e, ings, pool
}

// TestGRPC_RealIngesters runs the push path end to end over real gRPC on 127.0.0.1: raw request
// bytes decode on the server as PushRequest, the tenant travels in the metadata, one ingester down
// keeps the quorum, two down fail it, and per-series errors come back as 400 naming the series.
func TestGRPC_RealIngesters(t *testing.T) {
	cfg := defaultConfig()
	cfg.MultitenancyEnabled = true
	e, ings, pool := grpcEnv(t, cfg, 3)
	in := manySeries(50)
	in = append(in, series(lbls("__name__", "unsorted_with_empty", "z", "1", "a", ""), sample(1, 0)))
	if code, msg := e.post(t, encode(t, in...), "X-Scope-OrgID: team-a"); code != http.StatusOK {
		t.Fatalf("%d %s", code, msg)
	}
	for _, s := range manySeries(50) {
		for _, ing := range ings {
			if !ing.has("team-a", rendered(s)) {
				t.Fatalf("%s missing %s", ing.addr, rendered(s))
			}
		}
	}
	norm := rendered(series(lbls("__name__", "unsorted_with_empty", "z", "1"), sample(1, 0)))
	if !ings[0].has("team-a", norm) {
		t.Fatalf("re-encoded series not stored as %s", norm)
	}
	if pool.Len() != 3 {
		t.Fatalf("pool has %d connections", pool.Len())
	}

	ings[0].mu.Lock()
	ings[0].fail = true
	ings[0].mu.Unlock()
	if code, msg := e.post(t, encode(t, manySeries(5)...), "X-Scope-OrgID: team-a"); code != http.StatusOK {
		t.Fatalf("one down: %d %s", code, msg)
	}
	ings[1].srv.Stop() // really gone: connection refused
	code, msg := e.post(t, encode(t, manySeries(5)...), "X-Scope-OrgID: team-a")
	if code != http.StatusInternalServerError || !strings.Contains(msg, "failed to push to ingester") {
		t.Fatalf("two down: %d %s", code, msg)
	}

	ings[0].mu.Lock()
	ings[0].fail, ings[0].refuse = false, "late"
	ings[0].mu.Unlock()
	ings[2].mu.Lock()
	ings[2].refuse = "late"
	ings[2].mu.Unlock()
	e2Series := []prompb.TimeSeries{series(lbls("__name__", "late"), sample(1, 0))}
	code, msg = e.post(t, encode(t, e2Series...), "X-Scope-OrgID: team-a")
	if code != http.StatusBadRequest || !strings.Contains(msg, `{__name__="late"}`) || !strings.Contains(msg, "out of order") {
		t.Fatalf("refused by a quorum: %d %s", code, msg)
	}
}

func TestGRPCClientPool_IdleCleanupAndClose(t *testing.T) {
	ing := startTestIngester(t)
	pool := NewGRPCClientPool(time.Minute, testLogger())
	c, err := pool.GetClientFor(ing.addr)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := (&prompb.WriteRequest{Timeseries: manySeries(2)}).Marshal()
	resp, err := c.Push(context.Background(), "t", &ingesterpb.RawPushRequest{Data: &raw})
	if err != nil || resp.SamplesIngested != 2 {
		t.Fatalf("push: %v %v", resp, err)
	}
	if c2, _ := pool.GetClientFor(ing.addr); c2 != c {
		t.Fatal("a second client for the same address")
	}
	if n := pool.CloseIdle(time.Now()); n != 0 {
		t.Fatalf("closed %d fresh connections", n)
	}
	if n := pool.CloseIdle(time.Now().Add(2 * time.Minute)); n != 1 || pool.Len() != 0 {
		t.Fatalf("closed %d idle connections, %d left", n, pool.Len())
	}
	if _, err := pool.GetClientFor(ing.addr); err != nil {
		t.Fatal(err)
	}
	if err := pool.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.GetClientFor(ing.addr); err != ErrPoolClosed {
		t.Fatalf("after Close: %v", err)
	}
}
