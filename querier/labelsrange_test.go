package querier

import (
	"net"
	"net/http/httptest"
	"net/url"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/prometheus/model/labels"
	"google.golang.org/grpc"

	"github.com/raftingest/raftingest/ingesterpb"
	"github.com/raftingest/raftingest/ringstate"
)

// rangeRecorder is a fake ingester that records the time range of every QueryStream it receives.
type rangeRecorder struct {
	*fakeIngester
	mu     sync.Mutex
	ranges [][2]int64
}

func (r *rangeRecorder) QueryStream(req *ingesterpb.QueryRequest, stream ingesterpb.Ingester_QueryStreamServer) error {
	r.mu.Lock()
	r.ranges = append(r.ranges, [2]int64{req.GetStartTimestampMs(), req.GetEndTimestampMs()})
	r.mu.Unlock()
	return r.fakeIngester.QueryStream(req, stream)
}

func (r *rangeRecorder) take() [][2]int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := r.ranges
	r.ranges = nil
	return out
}

// The series, label names and label values endpoints read a bounded time range, with Mimir's
// -store.max-labels-query-length rule: without start and end, the last limit before now (not all
// time, as Prometheus would); a longer range loses its beginning; a shorter one is untouched.
func TestAPI_LabelQueriesReadABoundedRange(t *testing.T) {
	const nowMs = int64(100 * 24 * 3600 * 1000) // day 100
	const day = int64(24 * 3600 * 1000)
	rec := &rangeRecorder{fakeIngester: startFakeIngester(t)}
	rec.add("anonymous", labels.FromStrings("__name__", "up", "job", "api"), xorChunks(t, samplesRange(nowMs-60_000, nowMs, 15_000), 120)...)
	srv := startAPIWith(t, rec, func(c *Config) {})
	sec := func(ms int64) string { return strconv.FormatInt(ms/1000, 10) }

	for _, path := range []string{"/prometheus/api/v1/labels", "/prometheus/api/v1/label/job/values", "/prometheus/api/v1/series"} {
		for _, c := range []struct {
			why        string
			start, end string
			want       [2]int64
		}{
			{"no range: the last 24h (Prometheus: all time)", "", "", [2]int64{nowMs - day, MaxTime.UnixMilli()}},
			{"only end: 24h before it", "", sec(nowMs - 10*day), [2]int64{nowMs - 11*day, nowMs - 10*day}},
			{"only start, long ago: 24h before now", sec(nowMs - 50*day), "", [2]int64{nowMs - day, MaxTime.UnixMilli()}},
			{"only start, recent: untouched", sec(nowMs - 3_600_000), "", [2]int64{nowMs - 3_600_000, MaxTime.UnixMilli()}},
			{"a week: its last 24h", sec(nowMs - 7*day), sec(nowMs), [2]int64{nowMs - day, nowMs}},
			{"an hour: untouched", sec(nowMs - 3_600_000), sec(nowMs), [2]int64{nowMs - 3_600_000, nowMs}},
		} {
			p := url.Values{}
			if path == "/prometheus/api/v1/series" {
				p.Set("match[]", "up")
			}
			if c.start != "" {
				p.Set("start", c.start)
			}
			if c.end != "" {
				p.Set("end", c.end)
			}
			rec.take()
			if code, body := get(t, srv, path, p, ""); code != 200 {
				t.Fatalf("%s %s: %d %s", path, c.why, code, body)
			}
			got := rec.take()
			if len(got) != 1 || got[0] != c.want {
				t.Errorf("%s, %s: ingesters asked for %v, want %v", path, c.why, got, c.want)
			}
		}
	}

	// 0 turns the limit off: all time, as Prometheus.
	rec2 := &rangeRecorder{fakeIngester: startFakeIngester(t)}
	srv = startAPIWith(t, rec2, func(c *Config) { c.MaxLabelsQueryLength = 0 })
	get(t, srv, "/prometheus/api/v1/labels", url.Values{}, "")
	if got := rec2.take(); len(got) != 1 || got[0] != [2]int64{MinTime.UnixMilli(), MaxTime.UnixMilli()} {
		t.Errorf("-store.max-labels-query-length=0: ingesters asked for %v, want all time", got)
	}
}

// serveIngester serves ing on a loopback gRPC server and returns its address.
func serveIngester(t *testing.T, ing ingesterpb.IngesterServer) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	ingesterpb.RegisterIngesterServer(srv, ing)
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(srv.Stop)
	return ln.Addr().String()
}

// startAPIWith serves a Querier over one ingester (any Ingester implementation) at day 100.
func startAPIWith(t *testing.T, ing ingesterpb.IngesterServer, mutate func(*Config)) *httptest.Server {
	t.Helper()
	addr := serveIngester(t, ing)
	var cfg Config
	cfg.RegisterFlags(flagSet())
	cfg.QueryIngestersWithin = 0 // the ingesters see the whole range the endpoint reads
	mutate(&cfg)
	q, err := New(cfg, Deps{
		Ring:              newRing(t, member{addr: addr, state: ringstate.ACTIVE}),
		ReplicationFactor: 1, HeartbeatTimeout: 10 * time.Second, DefaultTenant: "anonymous",
		Registerer: prometheus.NewRegistry(), Now: func() time.Time { return time.UnixMilli(100 * 24 * 3600 * 1000) },
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(q.Handler())
	t.Cleanup(func() { srv.Close(); q.Close() })
	return srv
}
