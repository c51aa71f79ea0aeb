package distributor

// Tests of the push path's bounds (issue 12): what a hostile or careless sender can make one push
// cost in memory, in-flight slots and bytes, timestamps, rate limits and per-tenant state.

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang/snappy"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/prometheus/prompb"

	"github.com/raftingest/raftingest/ringstate"
)

// allocatedBy returns the bytes the Go heap allocated while fn ran (an upper bound of what fn
// allocated: a test runs alone in its package, but the runtime may allocate a little meanwhile).
func allocatedBy(fn func()) uint64 {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	fn()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// serveDirect runs the handler on req in this goroutine and returns the status and message.
func serveDirect(d *Distributor, req *http.Request) (int, string) {
	rec := httptest.NewRecorder()
	d.ServeHTTP(rec, req)
	d.Wait()
	return rec.Code, strings.TrimSpace(rec.Body.String())
}

func pushRequest(body io.Reader) *http.Request {
	req := httptest.NewRequest(http.MethodPost, "/api/v1/push", body)
	req.Header.Set("Content-Encoding", "snappy")
	req.Header.Set("Content-Type", "application/x-protobuf")
	return req
}

// TestHandler_EmptySeriesBomb: a body of empty TimeSeries (2 bytes each) is refused with 413
// before the decoder builds a ~136-byte Series for each: by the series cap when it is on, by the
// expansion bound when it is off. Before the fix, 4 MiB of them cost 2M Series (> 400 MB).
func TestHandler_EmptySeriesBomb(t *testing.T) {
	raw := bytes.Repeat([]byte{0x0a, 0x00}, 2<<20) // 2M empty series, 4 MiB decompressed
	body := snappy.Encode(nil, raw)
	for _, tc := range []struct {
		name      string
		maxSeries int
		msg       string
	}{
		{"series cap", 100_000, "-distributor.max-series-per-request"},
		{"expansion bound", 0, "empty or near-empty"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := defaultConfig()
			cfg.MaxRecvMsgSize = 8 << 20
			cfg.MaxSeriesPerRequest = tc.maxSeries
			e := newEnv(t, cfg, active("a", "b", "c")...)
			var code int
			var msg string
			alloc := allocatedBy(func() { code, msg = serveDirect(e.d, pushRequest(bytes.NewReader(body))) })
			if code != http.StatusRequestEntityTooLarge || !strings.Contains(msg, tc.msg) {
				t.Fatalf("%d %q, want 413 naming %q", code, msg, tc.msg)
			}
			// The body, compressed and decompressed, plus the arenas: at most DefaultMaxExpansion
			// times the decompressed size at the end, about three times that summed over their
			// doubling steps. Not 2M Series (285 MB, 570 MB allocated while doubling).
			if limit := uint64(len(body) + (2+3*DefaultMaxExpansion)*len(raw)); alloc > limit {
				t.Fatalf("the refused request allocated %d bytes, more than %d", alloc, limit)
			}
			if e.pool.totalCalls() != 0 {
				t.Fatal("something was sent to the ingesters")
			}
		})
	}
}

// TestDecode_Limits: the series cap and the expansion bound refuse near-empty bombs with
// ErrTooLarge, and never a real request; within them UnmarshalLimited reads what Unmarshal reads.
func TestDecode_Limits(t *testing.T) {
	lim := DecodeLimits{MaxSeries: 1000, MaxExpansion: DefaultMaxExpansion}
	oneSeries := func(content []byte) []byte {
		return append(append([]byte{0x0a}, binaryUvarint(uint64(len(content)))...), content...)
	}
	bombs := map[string][]byte{
		"empty series":                        bytes.Repeat([]byte{0x0a, 0x00}, 100_000),             // 68 times
		"empty labels":                        oneSeries(bytes.Repeat([]byte{0x0a, 0x00}, 1<<20)),    // 16 times
		"empty series, one empty sample each": bytes.Repeat([]byte{0x0a, 0x02, 0x12, 0x00}, 100_000), // 38 times
	}
	for _, maxSeries := range []int{0, 1000} { // the expansion bound alone, then with the cap
		lim.MaxSeries = maxSeries
		for name, b := range bombs {
			var wr WriteRequest
			if err := wr.UnmarshalLimited(b, lim); !errors.Is(err, ErrTooLarge) {
				t.Errorf("%s (cap %d): %v, want ErrTooLarge", name, maxSeries, err)
			} else if used := wr.ArenaBytes(); used > lim.MaxExpansion*len(b)+decodeSlackBytes {
				t.Errorf("%s (cap %d): arenas of %d bytes for a body of %d", name, maxSeries, used, len(b))
			}
		}
	}
	// Empty samples (2 bytes for a 16-byte Sample, 8 times) are within the bound: decoded, and
	// within it.
	emptySamples := oneSeries(bytes.Repeat([]byte{0x12, 0x00}, 1<<20))
	var wr0 WriteRequest
	if err := wr0.UnmarshalLimited(emptySamples, lim); err != nil {
		t.Fatalf("empty samples: %v", err)
	} else if used := wr0.ArenaBytes(); used > lim.MaxExpansion*len(emptySamples)+decodeSlackBytes {
		t.Errorf("empty samples: arenas of %d bytes for a body of %d", used, len(emptySamples))
	}
	// The smallest plausible series, many of them: {__name__="a"} with one sample of value 0.
	var tiny prompb.WriteRequest
	for i := range 1000 {
		tiny.Timeseries = append(tiny.Timeseries, prompb.TimeSeries{Labels: lbls("__name__", "a"), Samples: []prompb.Sample{{Timestamp: 1_700_000_000_000 + int64(i)}}})
	}
	tinyBody, _ := tiny.Marshal()
	for name, b := range map[string][]byte{"prometheus-like": benchBody(t, 1000, 1), "tiny series": tinyBody, "test request": func() []byte { tr := testRequest(); b, _ := tr.Marshal(); return b }()} {
		var got, want WriteRequest
		if err := got.UnmarshalLimited(b, DecodeLimits{MaxSeries: 1000, MaxExpansion: DefaultMaxExpansion}); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if err := want.Unmarshal(b); err != nil {
			t.Fatal(err)
		}
		if fmt.Sprint(got.Series) != fmt.Sprint(want.Series) {
			t.Fatalf("%s: limited decode differs", name)
		}
		t.Logf("%s: %d bytes decode to %d bytes of series, labels and samples (%.1fx)", name, len(b), got.DecodedBytes(), float64(got.DecodedBytes())/float64(len(b)))
	}
	var wr WriteRequest
	if err := wr.UnmarshalLimited(benchBody(t, 1001, 1), lim); !errors.Is(err, ErrTooLarge) || !strings.Contains(err.Error(), "-distributor.max-series-per-request") {
		t.Fatalf("1001 series with a cap of 1000: %v", err)
	}
	if len(wr.labels) > 1000*10 {
		t.Fatalf("the decoder went on past the cap: %d labels", len(wr.labels))
	}
}

// TestSnappy_LyingHeader: a header claiming more than the limit, or more than the body can hold,
// is refused before anything is allocated for it.
func TestSnappy_LyingHeader(t *testing.T) {
	claim := func(n uint64) []byte {
		b := binaryUvarint(n)
		return append(b, 0x00, 0x61) // a literal of one byte
	}
	if _, err := DecompressSnappy(claim(4<<30-1), 100<<20); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("4 GiB claimed: %v", err)
	}
	var err error
	alloc := allocatedBy(func() { _, err = DecompressSnappy(claim(50<<20), 100<<20) })
	if !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), "more than a body") {
		t.Fatalf("50 MiB claimed by 6 bytes: %v", err)
	}
	if alloc > 1<<20 {
		t.Fatalf("a 6-byte body claiming 50 MiB allocated %d bytes", alloc)
	}
	// A real bomb within the ratio decodes (and is then a decode problem, not an allocation one).
	zeros := make([]byte, 1<<20)
	if b, err := DecompressSnappy(snappy.Encode(nil, zeros), 100<<20); err != nil || len(*b) != len(zeros) {
		t.Fatalf("1 MiB of zeros: %v", err)
	}
}

func binaryUvarint(v uint64) []byte {
	var b []byte
	for v >= 0x80 {
		b = append(b, byte(v)|0x80)
		v >>= 7
	}
	return append(b, byte(v))
}

// TestHandler_LyingContentLength: a body announced as 50 MiB that brings 10 bytes costs a small
// buffer, not 50 MiB, and is refused with 400 (before the fix: 50 MiB allocated before reading).
func TestHandler_LyingContentLength(t *testing.T) {
	e := newEnv(t, defaultConfig(), active("a", "b", "c")...)
	req := pushRequest(strings.NewReader("0123456789"))
	req.ContentLength = 50 << 20
	var code int
	var msg string
	alloc := allocatedBy(func() { code, msg = serveDirect(e.d, req) })
	if code != http.StatusBadRequest || !strings.Contains(msg, "shorter than its Content-Length") {
		t.Fatalf("%d %q", code, msg)
	}
	if alloc > 2*firstBodyBuffer {
		t.Fatalf("a lying Content-Length of 50 MiB allocated %d bytes", alloc)
	}
	// An honest large body still arrives whole, through the doubling buffers.
	var in []prompb.TimeSeries
	for i := range 20000 {
		in = append(in, series(lbls("__name__", "m", "id", fmt.Sprintf("%x", uint64(i)*0x9e3779b97f4a7c15)), sample(float64(i), 0)))
	}
	body := encode(t, in...)
	if len(body) <= firstBodyBuffer {
		t.Fatalf("test body of %d bytes does not exercise growth", len(body))
	}
	if code, msg := e.post(t, body); code != http.StatusOK {
		t.Fatalf("large body: %d %s", code, msg)
	}
	if n := e.pool.replicasOf(DefaultTenant, rendered(in[19999])); n != 3 {
		t.Fatalf("last series on %d replicas", n)
	}
}

// blockedPush starts a push whose body never ends until release is called; it returns once the
// handler holds its in-flight slot.
func blockedPush(t *testing.T, d *Distributor, chunked bool) (release func() (int, string)) {
	t.Helper()
	pr, pw := io.Pipe()
	req := pushRequest(pr)
	req.ContentLength = -1
	if !chunked {
		req.ContentLength = 1 << 20
	}
	before := d.inflightRequests.Load()
	done := make(chan struct{})
	var code int
	var msg string
	go func() {
		defer close(done)
		code, msg = serveDirect(d, req)
	}()
	deadline := time.Now().Add(10 * time.Second)
	for d.inflightRequests.Load() == before {
		if time.Now().After(deadline) {
			t.Fatal("the blocked push never started")
		}
		time.Sleep(time.Millisecond)
	}
	_, _ = pw.Write([]byte{0}) // the handler has reserved its first buffer once this returns
	return func() (int, string) {
		pw.CloseWithError(errors.New("test: released"))
		<-done
		return code, msg
	}
}

// TestInstanceLimits_InflightRequests: over -distributor.instance-limits.max-inflight-push-requests
// a push is refused with 503 and Mimir's message, and counted; slots come back when pushes end.
func TestInstanceLimits_InflightRequests(t *testing.T) {
	cfg := defaultConfig()
	cfg.InstanceLimits.MaxInflightPushRequests = 2
	e := newEnv(t, cfg, active("a", "b", "c")...)
	r1, r2 := blockedPush(t, e.d, true), blockedPush(t, e.d, false)
	code, msg := e.post(t, encode(t, manySeries(1)...))
	if code != http.StatusServiceUnavailable || !strings.Contains(msg, "-distributor.instance-limits.max-inflight-push-requests") {
		t.Fatalf("third push: %d %q", code, msg)
	}
	if got := testutil.ToFloat64(e.d.m.rejectedRequests.WithLabelValues(reasonMaxInflightRequests)); got != 1 {
		t.Fatalf("rejected %v", got)
	}
	if got := testutil.ToFloat64(e.d.m.inflightRequests); got != 2 {
		t.Fatalf("inflight gauge %v", got)
	}
	r1()
	r2()
	if code, msg := e.post(t, encode(t, manySeries(1)...)); code != http.StatusOK {
		t.Fatalf("after the slots came back: %d %s", code, msg)
	}
	if e.d.inflightRequests.Load() != 0 || e.d.inflightBytes.Load() != 0 {
		t.Fatalf("leaked: %d requests, %d bytes", e.d.inflightRequests.Load(), e.d.inflightBytes.Load())
	}
}

// TestInstanceLimits_InflightBytes: over -distributor.instance-limits.max-inflight-push-requests-bytes
// a push is refused with 503 before its buffers are allocated, unless it is alone in flight.
func TestInstanceLimits_InflightBytes(t *testing.T) {
	cfg := defaultConfig()
	cfg.InstanceLimits.MaxInflightPushRequestsBytes = firstBodyBuffer + 1000
	e := newEnv(t, cfg, active("a", "b", "c")...)
	// Alone, a push larger than the limit goes through.
	if code, msg := e.post(t, encode(t, manySeries(100)...)); code != http.StatusOK {
		t.Fatalf("alone: %d %s", code, msg)
	}
	release := blockedPush(t, e.d, true) // holds firstBodyBuffer bytes
	code, msg := e.post(t, encode(t, manySeries(100)...))
	if code != http.StatusServiceUnavailable || !strings.Contains(msg, "-distributor.instance-limits.max-inflight-push-requests-bytes") {
		t.Fatalf("second push: %d %q", code, msg)
	}
	if got := testutil.ToFloat64(e.d.m.rejectedRequests.WithLabelValues(reasonMaxInflightBytes)); got != 1 {
		t.Fatalf("rejected %v", got)
	}
	release()
	if e.d.inflightBytes.Load() != 0 {
		t.Fatalf("leaked %d bytes", e.d.inflightBytes.Load())
	}
}

// TestTimestamps_LowerBounds: samples older than -validation.past-grace-period, and samples older
// than the oldest block range in memory, are refused with 400 naming the series, the reason and
// the flag; the series' other samples are stored. A sample at -9e18 no longer reaches an ingester
// (it used to make the flusher loop ~1e12 times).
func TestTimestamps_LowerBounds(t *testing.T) {
	cfg := defaultConfig()
	cfg.Limits.PastGracePeriod = 3 * time.Hour
	oldest := ts(-time.Hour)
	e := newEnvDeps(t, cfg, func(d *Deps) { d.OldestInMemory = func(int64) int64 { return oldest } }, active("a", "b", "c")...)
	in := series(lbls("__name__", "old", "job", "x"),
		prompb.Sample{Value: 1, Timestamp: -9e18},
		sample(2, -4*time.Hour),
		sample(3, -2*time.Hour),
		sample(4, -30*time.Minute),
		sample(5, 0),
		sample(6, time.Hour))
	code, msg := e.post(t, encode(t, in))
	if code != http.StatusBadRequest {
		t.Fatalf("%d %s", code, msg)
	}
	for _, want := range []string{"-validation.past-grace-period", "sample-too-far-in-past", "-9000000000000000000",
		"oldest block range still in memory", "sample-out-of-bounds", "-validation.create-grace-period", `__name__="old"`} {
		if !strings.Contains(msg, want) {
			t.Errorf("message lacks %q: %s", want, msg)
		}
	}
	kept := series(lbls("__name__", "old", "job", "x"), sample(4, -30*time.Minute), sample(5, 0))
	if n := e.pool.replicasOf(DefaultTenant, rendered(kept)); n != 3 {
		t.Fatalf("the in-bounds samples are on %d replicas", n)
	}
	for reason, want := range map[string]float64{reasonTooFarInPast: 2, reasonOutOfBounds: 1, reasonTooFarInFuture: 1} {
		if got := testutil.ToFloat64(e.d.m.discardedSamples.WithLabelValues(DefaultTenant, reason)); got != want {
			t.Errorf("discarded %s: %v, want %v", reason, got, want)
		}
	}
	// 0 disables the past grace period; the in-memory bound stays.
	cfg.Limits.PastGracePeriod = 0
	e = newEnvDeps(t, cfg, func(d *Deps) { d.OldestInMemory = func(int64) int64 { return oldest } }, active("a", "b", "c")...)
	code, msg = e.post(t, encode(t, series(lbls("__name__", "old"), prompb.Sample{Value: 1, Timestamp: math.MinInt64 + 1})))
	if code != http.StatusBadRequest || !strings.Contains(msg, "sample-out-of-bounds") {
		t.Fatalf("without a past grace period: %d %s", code, msg)
	}
}

// TestTimestamps_InMemoryBoundFollowsTheTenantsData: the oldest range in memory is reckoned from
// the tenant's newest sample (not after now), as Prometheus' head does: a tenant writing live data
// cannot write below the flusher's cutoff, one replaying history in order (the benchmark writes
// from 6h back) is not refused for being behind the clock, and neither can go back more than a
// range and a half behind its own newest sample.
func TestTimestamps_InMemoryBoundFollowsTheTenantsData(t *testing.T) {
	const p = 2 * time.Hour
	cutoff := func(at int64) int64 { // flush.CutoffAt(2h, at)
		x := at - p.Milliseconds()/2
		return x - ((x%p.Milliseconds())+p.Milliseconds())%p.Milliseconds()
	}
	cfg := defaultConfig()
	cfg.MultitenancyEnabled = true
	e := newEnvDeps(t, cfg, func(d *Deps) { d.OldestInMemory = cutoff }, active("a", "b", "c")...)
	pushAs := func(tenant string, name string, offsets ...time.Duration) (int, string) {
		var smps []prompb.Sample
		for _, o := range offsets {
			smps = append(smps, sample(1, o))
		}
		return serveDirect(e.d, withTenant(pushRequest(bytes.NewReader(encode(t, series(lbls("__name__", name), smps...)))), tenant))
	}
	// Live: now is testNow, whose cutoff is at most now-1h.
	liveBound := cutoff(ts(0))
	if code, msg := pushAs("live", "m", 0); code != 200 {
		t.Fatalf("live: %d %s", code, msg)
	}
	below := time.Duration(liveBound-ts(0)-1) * time.Millisecond
	if code, msg := pushAs("live", "n", below); code != 400 || !strings.Contains(msg, "sample-out-of-bounds") {
		t.Fatalf("live, 1ms below the cutoff: %d %s", code, msg)
	}
	// History, in order from 6h back: accepted, round after round.
	for r := range 40 {
		at := -6*time.Hour + time.Duration(r)*5*time.Minute
		if code, msg := pushAs("history", fmt.Sprint("h", r), at); code != 200 {
			t.Fatalf("history round %d at %s: %d %s", r, at, code, msg)
		}
	}
	// ... but not back before the range its newest sample keeps in memory.
	if code, msg := pushAs("history", "late", -6*time.Hour); code != 400 || !strings.Contains(msg, "sample-out-of-bounds") {
		t.Fatalf("history, 3h15m behind its newest sample: %d %s", code, msg)
	}
}

// TestRateLimit_Global: under the global strategy a tenant's limit is the cluster's, shared by the
// healthy distributors (ACTIVE and healthy members); the share follows the ring.
func TestRateLimit_Global(t *testing.T) {
	cfg := defaultConfig()
	cfg.IngestionRateLimit, cfg.IngestionBurstSize = 30, 1000
	e := newEnv(t, cfg, active("a", "b", "c")...)
	if rate, n := e.d.rateLimit(); rate != 10 || n != 3 {
		t.Fatalf("3 healthy members: rate %v over %d", rate, n)
	}
	if got := testutil.ToFloat64(e.d.m.rateLimit); got != 10 {
		t.Fatalf("rate gauge %v", got)
	}
	e.ring.r.Store(buildRing(t, memberSpec{id: "a"}, memberSpec{id: "b"}, memberSpec{id: "c", stale: true}, memberSpec{id: "d", state: ringstate.JOINING}))
	if rate, n := e.d.rateLimit(); rate != 15 || n != 2 {
		t.Fatalf("2 healthy ACTIVE members of 4: rate %v over %d", rate, n)
	}
	// The bucket refills at the share: 1000 burst, then 15 samples/s.
	if code, msg := e.post(t, encode(t, manySeries(1000)...)); code != http.StatusOK {
		t.Fatalf("burst: %d %s", code, msg)
	}
	e.clock.Advance(time.Second)
	code, msg := e.post(t, encode(t, manySeries(20)...))
	if code != http.StatusTooManyRequests || !strings.Contains(msg, "shared by 2 healthy distributors") {
		t.Fatalf("20 samples after 1s at 15/s: %d %s", code, msg)
	}
	if got := testutil.ToFloat64(e.d.m.discardedSamples.WithLabelValues(DefaultTenant, reasonRateLimited)); got != 20 {
		t.Fatalf("the shared tenant's rate_limited discards: %v", got)
	}
	e.clock.Advance(time.Second)
	if code, msg := e.post(t, encode(t, manySeries(20)...)); code != http.StatusOK {
		t.Fatalf("20 samples after 2s at 15/s: %d %s", code, msg)
	}
}

// TestTenants_IdleStateReleased: rotating tenant ids leave no state behind: each tenant's bucket
// and metric series are released once it has been idle for tenantIdleTimeout.
func TestTenants_IdleStateReleased(t *testing.T) {
	cfg := defaultConfig()
	cfg.MultitenancyEnabled = true
	cfg.IngestionRateLimit, cfg.IngestionBurstSize = 100, 1000
	e := newEnv(t, cfg, active("a", "b", "c")...)
	body := encode(t, append(manySeries(1), series(lbls("bad name", "x"), sample(1, 0)))...)
	const n = 300
	for i := range n {
		if code, _ := serveDirect(e.d, withTenant(pushRequest(bytes.NewReader(body)), fmt.Sprintf("t%d", i))); code != http.StatusBadRequest {
			t.Fatalf("tenant %d: %d", i, code)
		}
	}
	count := func() (tenants, series int) {
		return e.d.tenants.len(), testutil.CollectAndCount(e.d.m.receivedSamples) + testutil.CollectAndCount(e.d.m.samplesIn) + testutil.CollectAndCount(e.d.m.discardedSamples)
	}
	if tn, sn := count(); tn != n || sn != 3*n {
		t.Fatalf("after %d tenants: %d tenants, %d metric series", n, tn, sn)
	}
	e.clock.Advance(tenantIdleTimeout + time.Second)
	if code, _ := serveDirect(e.d, withTenant(pushRequest(bytes.NewReader(encode(t, manySeries(1)...))), "last")); code != http.StatusOK {
		t.Fatal("last push")
	}
	if tn, sn := count(); tn != 1 || sn != 2 {
		t.Fatalf("after the idle timeout: %d tenants, %d metric series (want 1 and 2: the last tenant's)", tn, sn)
	}
	if got := testutil.ToFloat64(e.d.m.tenants); got != 1 {
		t.Fatalf("tenants gauge %v", got)
	}
}

// TestTenants_BucketKeptUntilFull: forgetting an idle tenant's bucket must not grant it a burst a
// kept bucket would not: with a slow refill the bucket stays until it would be full anyway.
func TestTenants_BucketKeptUntilFull(t *testing.T) {
	l := newTenantTracker(time.Minute)
	now := testNow()
	l.note("slow", now)
	if !l.allow("slow", 1000, 0.1, 1000, now) {
		t.Fatal("burst refused")
	}
	now = now.Add(2 * time.Minute) // idle, but only 12 tokens back
	l.note("other", now)
	if l.allow("slow", 100, 0.1, 1000, now) {
		t.Fatal("an idle tenant got its burst back by being forgotten")
	}
}

func withTenant(req *http.Request, tenant string) *http.Request {
	req.Header.Set(TenantHeader, tenant)
	return req
}

// TestConfig_ValidateNewLimits: the new flags are checked and named.
func TestConfig_ValidateNewLimits(t *testing.T) {
	c := defaultConfig()
	c.MaxSeriesPerRequest, c.IngestionRateStrategy, c.Limits.PastGracePeriod = -1, "shared", -time.Second
	c.InstanceLimits.MaxInflightPushRequests, c.InstanceLimits.MaxInflightPushRequestsBytes = -1, -1
	err := c.Validate()
	for _, flag := range []string{"-distributor.max-series-per-request", "-distributor.ingestion-rate-limit-strategy",
		"-validation.past-grace-period", "-distributor.instance-limits.max-inflight-push-requests=", "-distributor.instance-limits.max-inflight-push-requests-bytes"} {
		if err == nil || !strings.Contains(err.Error(), flag) {
			t.Errorf("error %v does not name %s", err, flag)
		}
	}
}

// TestHandler_ConcurrentPushesReleaseEverything: after many concurrent pushes, good and bad, no
// slot or byte stays reserved.
func TestHandler_ConcurrentPushesReleaseEverything(t *testing.T) {
	e := newEnv(t, defaultConfig(), active("a", "b", "c")...)
	bodies := [][]byte{encode(t, manySeries(50)...), []byte("garbage"), snappy.Encode(nil, bytes.Repeat([]byte{0x0a, 0x00}, 200_000))}
	var wg sync.WaitGroup
	for i := range 30 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			e.d.ServeHTTP(httptest.NewRecorder(), pushRequest(bytes.NewReader(bodies[i%len(bodies)])))
		}()
	}
	wg.Wait()
	e.d.Wait()
	if e.d.inflightRequests.Load() != 0 || e.d.inflightBytes.Load() != 0 {
		t.Fatalf("leaked: %d requests, %d bytes", e.d.inflightRequests.Load(), e.d.inflightBytes.Load())
	}
}

// TestRateLimit_PerTenantOverrides: Deps.Limits (the runtime overrides) gives each tenant its own
// rate and burst, and a change applies to the next push without a restart; the 429 names the
// tenant's own limit.
func TestRateLimit_PerTenantOverrides(t *testing.T) {
	cfg := defaultConfig()
	cfg.MultitenancyEnabled = true
	cfg.IngestionRateLimit, cfg.IngestionBurstSize = 10, 20
	cfg.IngestionRateStrategy = RateStrategyLocal
	var mu sync.Mutex
	big := [2]int{1000, 2000}
	e := newEnvDeps(t, cfg, func(d *Deps) {
		d.Limits = func(tenant string) (float64, int) {
			mu.Lock()
			defer mu.Unlock()
			if tenant == "big" {
				return float64(big[0]), big[1]
			}
			return 10, 20
		}
	}, active("a", "b", "c")...)
	push := func(tenant string, n int) (int, string) {
		return serveDirect(e.d, withTenant(pushRequest(bytes.NewReader(encode(t, manySeries(n)...))), tenant))
	}
	if code, msg := push("big", 500); code != http.StatusOK {
		t.Fatalf("big tenant within its override: %d %s", code, msg)
	}
	if code, msg := push("small", 50); code != http.StatusTooManyRequests || !strings.Contains(msg, "10 samples/s") || !strings.Contains(msg, "bursts of 20") {
		t.Fatalf("small tenant over the default: %d %s", code, msg)
	}
	// The override drops at runtime: the next push of big is judged by it.
	mu.Lock()
	big = [2]int{5, 10}
	mu.Unlock()
	if code, msg := push("big", 50); code != http.StatusTooManyRequests || !strings.Contains(msg, "5 samples/s") || !strings.Contains(msg, "bursts of 10") {
		t.Fatalf("big tenant after its override dropped: %d %s", code, msg)
	}
}
