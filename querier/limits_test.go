package querier

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/prompb"
	"github.com/prometheus/prometheus/storage"
	"google.golang.org/grpc"

	"github.com/raftingest/raftingest/ingesterpb"
	"github.com/raftingest/raftingest/ringstate"
	"github.com/raftingest/raftingest/tenant"
)

// Mimir's messages, verbatim (pkg/util/limiter with globalerror's ids), so that Mimir's clients and
// runbooks recognise them.
func TestLimits_MessagesAreMimirs(t *testing.T) {
	cases := []struct{ got, want string }{
		{fmt.Sprintf(maxSeriesHitMsgFormat, 1), "the query exceeded the maximum number of series (limit: 1 series) (err-mimir-max-series-per-query). Consider reducing the time range and/or number of series selected by the query. One way to reduce the number of selected series is to add more label matchers to the query. Otherwise, to adjust the related per-tenant limit, configure -querier.max-fetched-series-per-query, or contact your service administrator."},
		{fmt.Sprintf(maxChunksHitMsgFormat, 11), "the query exceeded the maximum number of chunks (limit: 11 chunks) (err-mimir-max-chunks-per-query). Consider reducing the time range and/or number of series selected by the query. One way to reduce the number of selected series is to add more label matchers to the query. Otherwise, to adjust the related per-tenant limit, configure -querier.max-fetched-chunks-per-query, or contact your service administrator."},
		{fmt.Sprintf(maxChunkBytesHitMsgFormat, 100), "the query exceeded the aggregated chunks size limit (limit: 100 bytes) (err-mimir-max-chunks-bytes-per-query). Consider reducing the time range and/or number of series selected by the query. One way to reduce the number of selected series is to add more label matchers to the query. Otherwise, to adjust the related per-tenant limit, configure -querier.max-fetched-chunk-bytes-per-query, or contact your service administrator."},
	}
	for _, c := range cases {
		if c.got != c.want {
			t.Errorf("got  %s\nwant %s", c.got, c.want)
		}
	}
}

// Every fetch limit is finite by default, so one query is bounded out of the box: Mimir's 2,000,000
// chunks, and (where Mimir has none) 150,000 series and 1 GiB of chunks; the label-query window is
// ours (24h).
func TestLimits_Defaults(t *testing.T) {
	var cfg Config
	cfg.RegisterFlags(flagSet())
	if cfg.MaxFetchedSeriesPerQuery != 150_000 || cfg.MaxFetchedChunksPerQuery != 2_000_000 || cfg.MaxFetchedChunkBytesPerQuery != 1<<30 ||
		cfg.MaxLabelsQueryLength != 24*time.Hour {
		t.Fatalf("defaults: %+v", cfg)
	}
	cfg.MaxFetchedChunksPerQuery = -1
	cfg.MaxLabelsQueryLength = -time.Second
	err := cfg.Validate()
	if err == nil || !strings.Contains(err.Error(), "-querier.max-fetched-chunks-per-query=-1") || !strings.Contains(err.Error(), "-store.max-labels-query-length") {
		t.Fatalf("negative limits: %v", err)
	}
}

// threeReplicas starts three fake ingesters holding the same nSeries series of tenant t1, each with
// two chunks of 10 samples, and returns them with a ring of the three.
func threeReplicas(t *testing.T, nSeries int) ([]*fakeIngester, RingSource, int) {
	t.Helper()
	fs := []*fakeIngester{startFakeIngester(t), startFakeIngester(t), startFakeIngester(t)}
	chunkBytes := 0
	for i := range nSeries {
		chks := xorChunks(t, samplesRange(0, 19_000, 1000), 10)
		for _, f := range fs {
			f.add("t1", labels.FromStrings("__name__", "m", "i", fmt.Sprint(i)), chks...)
		}
		for _, c := range chks {
			chunkBytes += len(c.Data)
		}
	}
	var ms []member
	for _, f := range fs {
		ms = append(ms, member{addr: f.addr, state: ringstate.ACTIVE})
	}
	return fs, newRing(t, ms...), chunkBytes
}

// selectWithLimits selects every series of t1 in [0, 1e6] with a limiter of the given limits.
func selectWithLimits(t *testing.T, q storage.Queryable, lim *queryLimiter, hints *storage.SelectHints) (int, error) {
	t.Helper()
	qr, err := q.Querier(0, 1_000_000)
	if err != nil {
		t.Fatal(err)
	}
	defer qr.Close()
	ctx := withLimiter(tenant.With(bg, "t1"), lim)
	set := qr.Select(ctx, true, hints, labels.MustNewMatcher(labels.MatchEqual, "__name__", "m"))
	n := 0
	for set.Next() {
		n++
	}
	return n, set.Err()
}

// The limits count what the ingesters send, as Mimir does: a series once however many replicas
// return it; every replica's copy of a chunk, and its bytes. Each limit admits exactly its value
// and refuses one more, with its own Mimir message; the refusal is counted in
// cortex_querier_queries_rejected_total by Mimir's reason.
func TestIngesterQueryable_FetchLimits_SeriesUniqueChunksAsFetched(t *testing.T) {
	_, ring, bytesOneCopy := threeReplicas(t, 5)
	q := newIngesterQueryable(t, 3, ring)
	const series, chunks = 5, 5 * 2 * 3 // 5 series, 2 chunks each, 3 replicas
	bytes := 3 * bytesOneCopy
	for _, c := range []struct {
		name                  string
		maxS, maxC, maxB      int
		wantErr, wantReason   string
		labelsOnlyStillPasses bool
	}{
		{name: "at every limit", maxS: series, maxC: chunks, maxB: bytes},
		{name: "one series less", maxS: series - 1, wantErr: "(limit: 4 series) (err-mimir-max-series-per-query)", wantReason: rejectReasonMaxSeries},
		{name: "one chunk less", maxC: chunks - 1, wantErr: "(limit: 29 chunks) (err-mimir-max-chunks-per-query)", wantReason: rejectReasonMaxChunks, labelsOnlyStillPasses: true},
		{name: "one byte less", maxB: bytes - 1, wantErr: fmt.Sprintf("(limit: %d bytes) (err-mimir-max-chunks-bytes-per-query)", bytes-1), wantReason: rejectReasonMaxChunkBytes, labelsOnlyStillPasses: true},
	} {
		t.Run(c.name, func(t *testing.T) {
			m := newMetrics(nil)
			lim := newQueryLimiter(c.maxS, c.maxC, c.maxB, func(r string) { m.queriesRejected.WithLabelValues(r).Inc() })
			n, err := selectWithLimits(t, q, lim, nil)
			if c.wantErr == "" {
				if err != nil || n != series {
					t.Fatalf("got %d series, %v; want %d", n, err, series)
				}
				return
			}
			if !IsLimitError(err) || !strings.Contains(err.Error(), c.wantErr) {
				t.Fatalf("got %d series, %v; want a limit error containing %q", n, err, c.wantErr)
			}
			if got := testutil.ToFloat64(m.queriesRejected.WithLabelValues(c.wantReason)); got != 1 {
				t.Fatalf("cortex_queries_rejected_total{reason=%q} = %v, want 1", c.wantReason, got)
			}
			// The series and label endpoints fetch no chunks: only the series limit applies.
			lim = newQueryLimiter(c.maxS, c.maxC, c.maxB, nil)
			n, err = selectWithLimits(t, q, lim, &storage.SelectHints{Start: 0, End: 1_000_000, Func: "series"})
			if c.labelsOnlyStillPasses != (err == nil) {
				t.Fatalf("labels only: %d series, %v", n, err)
			}
		})
	}
}

// endlessIngester streams one new series per message until its stream is cancelled, and records
// how many messages it sent and whether the cancellation reached it.
type endlessIngester struct {
	ingesterpb.UnimplementedIngesterServer
	addr      string
	chunks    []*ingesterpb.Chunk // every series' chunk
	started   atomic.Bool
	sent      atomic.Int64
	cancelled chan struct{}
}

func startEndlessIngester(t *testing.T) *endlessIngester {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e := &endlessIngester{addr: ln.Addr().String(), cancelled: make(chan struct{}, 1),
		chunks: xorChunks(t, samplesRange(0, 9_000, 1000), 10)}
	srv := grpc.NewServer()
	ingesterpb.RegisterIngesterServer(srv, e)
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(srv.Stop)
	return e
}

func (e *endlessIngester) QueryStream(_ *ingesterpb.QueryRequest, stream ingesterpb.Ingester_QueryStreamServer) error {
	e.started.Store(true)
	for i := 0; ; i++ {
		select {
		case <-stream.Context().Done():
			e.cancelled <- struct{}{}
			return stream.Context().Err()
		default:
		}
		resp := &ingesterpb.QueryStreamResponse{Series: []*ingesterpb.StreamSeries{{
			Labels: []*ingesterpb.Label{{Name: "__name__", Value: "m"}, {Name: "i", Value: fmt.Sprint(i)}},
			Chunks: e.chunks,
		}}}
		if err := stream.Send(resp); err != nil {
			e.cancelled <- struct{}{}
			return err
		}
		e.sent.Add(1)
	}
}

// The limits are enforced while the ingesters stream, not after: against ingesters that would
// stream forever, the query fails with the limit's error as soon as it is crossed and cancels every
// stream. (Collecting first and checking after never returns here.)
func TestIngesterQueryable_FetchLimits_StopStreamsWhenCrossed(t *testing.T) {
	for _, c := range []struct {
		name             string
		maxS, maxC, maxB int
		want             string
	}{
		{"series", 50, 0, 0, "err-mimir-max-series-per-query"},
		{"chunks", 0, 50, 0, "err-mimir-max-chunks-per-query"},
		{"bytes", 0, 0, 5000, "err-mimir-max-chunks-bytes-per-query"},
	} {
		t.Run(c.name, func(t *testing.T) {
			a, b := startEndlessIngester(t), startEndlessIngester(t)
			q := newIngesterQueryable(t, 2, newRing(t, member{addr: a.addr, state: ringstate.ACTIVE}, member{addr: b.addr, state: ringstate.ACTIVE}))
			done := make(chan error, 1)
			go func() {
				_, err := selectWithLimits(t, q, newQueryLimiter(c.maxS, c.maxC, c.maxB, nil), nil)
				done <- err
			}()
			select {
			case err := <-done:
				if !IsLimitError(err) || !strings.Contains(err.Error(), c.want) {
					t.Fatalf("got %v, want the %s limit's error", err, c.want)
				}
			case <-time.After(20 * time.Second):
				t.Fatalf("the query did not stop at the limit: %d and %d messages sent so far", a.sent.Load(), b.sent.Load())
			}
			if !a.started.Load() && !b.started.Load() {
				t.Fatal("no stream started")
			}
			for _, e := range []*endlessIngester{a, b} {
				if !e.started.Load() {
					continue // the limit was crossed before this call reached its server
				}
				select {
				case <-e.cancelled:
				case <-time.After(10 * time.Second):
					t.Fatalf("ingester %s: stream not cancelled after %d messages", e.addr, e.sent.Load())
				}
			}
		})
	}
}

// countedStore is an in-memory store that can count a selection before reading it (a fetchCounter,
// as the bucket is): each series sits in copies blocks of chunks chunks of size bytes each.
type countedStore struct {
	series               []labels.Labels
	copies, chunks, size int
	counted              *int // CountSelect calls
}

func (s countedStore) Querier(mint, maxt int64) (storage.Querier, error) {
	var ss []storage.Series
	for _, ls := range s.series {
		ss = append(ss, list(ls, 0, 19_000))
	}
	return listQuerier{series: ss, asked: &[][2]int64{}}, nil
}

func (s countedStore) CountSelect(_ context.Context, _, _ int64, withBytes bool, ms []*labels.Matcher, count func(labels.Labels, int, int) error) error {
	*s.counted++
	for range s.copies {
		for _, ls := range s.series {
			ok := true
			for _, m := range ms {
				ok = ok && m.Matches(ls.Get(m.Name))
			}
			if !ok {
				continue
			}
			size := 0
			if withBytes {
				size = s.chunks * s.size
			}
			if err := count(ls, s.chunks, size); err != nil {
				return err
			}
		}
	}
	return nil
}

// The store's series and chunks count against the same limiter as the ingesters', before the store
// is read: a series in both counts once, every block's copy of a chunk counts.
func TestQueryable_FetchLimits_CountTheStore(t *testing.T) {
	_, ring, _ := threeReplicas(t, 2) // series i=0 and i=1 on the ingesters: 12 chunks
	ing := newIngesterQueryable(t, 3, ring)
	// The store holds i=1 (also on the ingesters) and i=2, in three blocks (one per replica) of
	// 2 chunks of 100 bytes each: 2 series, 12 chunks, 1200 bytes.
	counted := 0
	store := countedStore{series: []labels.Labels{labels.FromStrings("__name__", "m", "i", "1"), labels.FromStrings("__name__", "m", "i", "2")},
		copies: 3, chunks: 2, size: 100, counted: &counted}
	q := NewQueryable(ing, store, 0, 0, func() time.Time { return time.UnixMilli(1_000_000) })
	for _, c := range []struct {
		maxS, maxC, maxB int
		ok               bool
	}{
		{3, 0, 0, true}, {2, 0, 0, false}, // i=0, 1, 2: three unique series
		{0, 24, 0, true}, {0, 23, 0, false}, // 12 + 12 chunks
		{0, 0, 1200 + 10_000, true}, {0, 0, 1200, false}, // the ingesters' chunks weigh more than 0
	} {
		n, err := selectWithLimits(t, q, newQueryLimiter(c.maxS, c.maxC, c.maxB, nil), nil)
		if c.ok != (err == nil) || (err != nil && !IsLimitError(err)) || (c.ok && n != 3) {
			t.Errorf("limits series=%d chunks=%d bytes=%d: %d series, %v", c.maxS, c.maxC, c.maxB, n, err)
		}
	}
	// Without a limiter, or with every limit off, the store is read without counting.
	counted = 0
	for _, lim := range []*queryLimiter{nil, newQueryLimiter(0, 0, 0, nil)} {
		if n, err := selectWithLimits(t, q, lim, nil); err != nil || n != 3 {
			t.Fatalf("no limits: %d series, %v", n, err)
		}
	}
	if counted != 0 {
		t.Fatalf("the store was counted %d times without limits", counted)
	}
	// A labels-only select with only chunk limits on needs no count either.
	if n, err := selectWithLimits(t, q, newQueryLimiter(0, 1, 1, nil), &storage.SelectHints{Start: 0, End: 1_000_000, Func: "series"}); err != nil || n != 3 || counted != 0 {
		t.Fatalf("labels only: %d series, %v, counted %d times", n, err, counted)
	}
}

// limitsAPI serves a Querier over two fake ingesters that both hold up{job="a"}, up{job="b"} and
// up{job="c"} of the default tenant, one chunk each (samples every 15 s from 0 to 600 s): a query
// for up fetches 3 unique series and 6 chunks.
func limitsAPI(t *testing.T, mutate func(*Config)) *httptest.Server {
	t.Helper()
	return limitsAPIDeps(t, mutate, nil)
}

// limitsAPIDeps is limitsAPI with Deps.Limits set to limits.
func limitsAPIDeps(t *testing.T, mutate func(*Config), limits func(string) (int, int, int)) *httptest.Server {
	t.Helper()
	a, b := startFakeIngester(t), startFakeIngester(t)
	chk := xorChunks(t, samplesRange(0, 600_000, 15_000), 120)
	for _, f := range []*fakeIngester{a, b} {
		for _, job := range []string{"a", "b", "c"} {
			f.add("anonymous", labels.FromStrings("__name__", "up", "job", job), chk...)
		}
	}
	var cfg Config
	cfg.RegisterFlags(flagSet())
	mutate(&cfg)
	q, err := New(cfg, Deps{
		Ring:              newRing(t, member{addr: a.addr, state: ringstate.ACTIVE}, member{addr: b.addr, state: ringstate.ACTIVE}),
		ReplicationFactor: 2, HeartbeatTimeout: 10 * time.Second, DefaultTenant: "anonymous",
		Registerer: prometheus.NewRegistry(), Now: func() time.Time { return time.UnixMilli(300_000) },
		Limits: limits,
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(q.Handler())
	t.Cleanup(func() { srv.Close(); q.Close() })
	return srv
}

// Through the HTTP API: query, query_range, series and remote read (both response types) answer a
// crossed limit with 422 and Mimir's message — the query APIs in Prometheus' error envelope with
// errorType "execution" — and succeed at the limit.
func TestAPI_FetchLimits_422WithMimirsMessage(t *testing.T) {
	query := url.Values{"query": {"up"}, "time": {"300"}}
	queryRange := url.Values{"query": {"sum(up)"}, "start": {"0"}, "end": {"600"}, "step": {"15"}}
	series := url.Values{"match[]": {"up"}}
	labelsAll := url.Values{}
	rr := &prompb.ReadRequest{Queries: []*prompb.Query{{StartTimestampMs: 0, EndTimestampMs: 600_000,
		Matchers: []*prompb.LabelMatcher{{Type: prompb.LabelMatcher_EQ, Name: "__name__", Value: "up"}}}}}
	for _, c := range []struct {
		name    string
		mutate  func(*Config)
		fails   []string // paths that must answer 422
		passes  []string // paths that must answer 200
		message string
	}{
		{"series at the limit", func(c *Config) { c.MaxFetchedSeriesPerQuery = 3 }, nil,
			[]string{"query", "query_range", "series", "labels", "read"}, ""},
		// Label names and values are not limited, as in Mimir (its ingesters answer them from
		// their index).
		{"series over", func(c *Config) { c.MaxFetchedSeriesPerQuery = 2 },
			[]string{"query", "query_range", "series", "read"}, []string{"labels", "label values"},
			"the query exceeded the maximum number of series (limit: 2 series) (err-mimir-max-series-per-query)"},
		{"chunks at the limit (both replicas' copies)", func(c *Config) { c.MaxFetchedChunksPerQuery = 6 }, nil,
			[]string{"query", "query_range", "series", "labels", "read"}, ""},
		{"chunks over", func(c *Config) { c.MaxFetchedChunksPerQuery = 5 },
			[]string{"query", "query_range", "read"}, []string{"series", "labels", "label values"},
			"the query exceeded the maximum number of chunks (limit: 5 chunks) (err-mimir-max-chunks-per-query)"},
		{"bytes over", func(c *Config) { c.MaxFetchedChunkBytesPerQuery = 100 },
			[]string{"query", "query_range", "read"}, []string{"series", "labels", "label values"},
			"the query exceeded the aggregated chunks size limit (limit: 100 bytes) (err-mimir-max-chunks-bytes-per-query)"},
	} {
		t.Run(c.name, func(t *testing.T) {
			srv := limitsAPI(t, c.mutate)
			do := func(what string) (int, string) {
				switch what {
				case "query":
					return get(t, srv, "/prometheus/api/v1/query", query, "")
				case "query_range":
					return get(t, srv, "/prometheus/api/v1/query_range", queryRange, "")
				case "series":
					return get(t, srv, "/prometheus/api/v1/series", series, "")
				case "labels":
					return get(t, srv, "/prometheus/api/v1/labels", labelsAll, "")
				case "label values":
					return get(t, srv, "/prometheus/api/v1/label/job/values", labelsAll, "")
				}
				// Remote read: both response types.
				code, body := 0, ""
				for _, typ := range []prompb.ReadRequest_ResponseType{prompb.ReadRequest_SAMPLES, prompb.ReadRequest_STREAMED_XOR_CHUNKS} {
					rr.AcceptedResponseTypes = []prompb.ReadRequest_ResponseType{typ}
					resp, b := remoteReadReq(t, srv, rr)
					if code != 0 && resp.StatusCode != code {
						t.Fatalf("remote read: SAMPLES answered %d, STREAMED_XOR_CHUNKS %d %s", code, resp.StatusCode, b)
					}
					code, body = resp.StatusCode, string(b)
				}
				return code, body
			}
			for _, what := range c.passes {
				if code, body := do(what); code != http.StatusOK {
					t.Errorf("%s: %d %s; want 200", what, code, body)
				}
			}
			for _, what := range c.fails {
				code, body := do(what)
				if code != http.StatusUnprocessableEntity || !strings.Contains(body, c.message) {
					t.Errorf("%s: %d %s; want 422 with %q", what, code, body, c.message)
				}
				if what != "read" && !strings.HasPrefix(body, `{"status":"error","errorType":"execution","error":"`) {
					t.Errorf("%s: %s; want Prometheus' error envelope with errorType execution", what, body)
				}
			}
		})
	}
}

// The rejections are exported as Mimir's cortex_querier_queries_rejected_total{reason}, at 0 from
// the start.
func TestLimits_RejectedMetricRegistered(t *testing.T) {
	reg := prometheus.NewRegistry()
	newMetrics(reg)
	n, err := testutil.GatherAndCount(reg, "cortex_querier_queries_rejected_total")
	if err != nil || n != 3 {
		t.Fatalf("cortex_querier_queries_rejected_total: %d series, %v; want 3 reasons exported", n, err)
	}
}

// A tenant's runtime overrides (Deps.Limits) replace the flags' fetch limits for its queries,
// asked at every query: a change applies to the next one.
func TestAPI_FetchLimits_PerTenantOverrides(t *testing.T) {
	var mu sync.Mutex
	series := 0 // unlimited
	srv := limitsAPIDeps(t, func(c *Config) { c.MaxFetchedSeriesPerQuery = 1 }, func(tenant string) (int, int, int) {
		mu.Lock()
		defer mu.Unlock()
		if tenant != "anonymous" {
			t.Errorf("limits asked for tenant %q", tenant)
		}
		return series, 0, 0
	})
	q := url.Values{"query": {"up"}, "time": {"300"}}
	if code, body := get(t, srv, "/prometheus/api/v1/query", q, ""); code != http.StatusOK {
		t.Fatalf("with the tenant's override (unlimited) over the flag's 1: %d %s", code, body)
	}
	mu.Lock()
	series = 2
	mu.Unlock()
	if code, body := get(t, srv, "/prometheus/api/v1/query", q, ""); code != http.StatusUnprocessableEntity || !strings.Contains(body, "limit: 2 series") {
		t.Fatalf("after the override dropped to 2: %d %s", code, body)
	}
}
