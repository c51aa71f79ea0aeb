package distributor

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/golang/snappy"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/prometheus/prompb"
	"go.uber.org/goleak"

	"github.com/raftingest/raftingest/ingesterpb"
	"github.com/raftingest/raftingest/ringstate"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// manySeries returns n valid series of one sample each, named s0..s(n-1).
func manySeries(n int) []prompb.TimeSeries {
	var out []prompb.TimeSeries
	for i := range n {
		out = append(out, series(lbls("__name__", "m", "i", fmt.Sprint(i)), sample(float64(i), 0)))
	}
	return out
}

func rendered(ps prompb.TimeSeries) string {
	return renderPB(toPB(ps))
}

func toPB(ps prompb.TimeSeries) *ingesterpb.TimeSeries {
	out := &ingesterpb.TimeSeries{}
	for _, l := range ps.Labels {
		out.Labels = append(out.Labels, &ingesterpb.Label{Name: l.Name, Value: l.Value})
	}
	for _, s := range ps.Samples {
		out.Samples = append(out.Samples, &ingesterpb.Sample{Value: s.Value, Timestamp: s.Timestamp})
	}
	return out
}

func TestPush_StoresEverySeriesOnRFReplicas(t *testing.T) {
	e := newEnv(t, defaultConfig(), active("a", "b", "c", "d", "e")...)
	in := manySeries(200)
	if code, msg := e.post(t, encode(t, in...)); code != http.StatusOK {
		t.Fatalf("%d %s", code, msg)
	}
	e.d.Wait() // the push answers once a quorum stored each series: the third may still be storing
	for _, s := range in {
		if n := e.pool.replicasOf(DefaultTenant, rendered(s)); n != 3 {
			t.Fatalf("series %s on %d replicas, want 3", rendered(s), n)
		}
	}
	if got := testutil.ToFloat64(e.d.m.receivedSamples.WithLabelValues(DefaultTenant)); got != 200 {
		t.Fatalf("received samples %v", got)
	}
	if got := testutil.ToFloat64(e.d.m.replicationFactor); got != 3 {
		t.Fatalf("replication factor gauge %v", got)
	}
}

// TestPush_OnePushPerIngesterPerRequest: however many series a request has, each ingester gets one
// call carrying all of its series.
func TestPush_OnePushPerIngesterPerRequest(t *testing.T) {
	e := newEnv(t, defaultConfig(), active("a", "b", "c", "d", "e")...)
	if code, msg := e.post(t, encode(t, manySeries(500)...)); code != http.StatusOK {
		t.Fatalf("%d %s", code, msg)
	}
	for _, id := range []string{"a", "b", "c", "d", "e"} {
		if n := e.pool.ing(id).numCalls(); n != 1 {
			t.Fatalf("ingester %s got %d calls, want 1", id, n)
		}
	}
}

// TestPush_Quorum: RF 3 needs 2 acknowledgements per series.
func TestPush_Quorum(t *testing.T) {
	down := errors.New("connection refused")
	cases := []struct {
		name   string
		failed []string
		want   int
	}{
		{"all three ack", nil, http.StatusOK},
		{"two of three ack: quorum", []string{"a"}, http.StatusOK},
		{"one of three acks: no quorum, retry", []string{"a", "b"}, http.StatusInternalServerError},
		{"none", []string{"a", "b", "c"}, http.StatusInternalServerError},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, defaultConfig(), active("a", "b", "c")...)
			for _, id := range tc.failed {
				e.pool.ing(id).set(func(f *fakeIngester) { f.callErr = down })
			}
			code, msg := e.post(t, encode(t, manySeries(20)...))
			if code != tc.want {
				t.Fatalf("status %d (%s), want %d", code, msg, tc.want)
			}
			if code == http.StatusInternalServerError && (!strings.Contains(msg, "connection refused") || !strings.Contains(msg, `__name__="m"`)) {
				t.Fatalf("message %q does not say why and which series", msg)
			}
		})
	}
}

// TestPush_Spill covers the members that cannot take writes: they are skipped and replaced by the
// next writable member, the set stays RF and the quorum stays 2 of 3.
func TestPush_Spill(t *testing.T) {
	t.Run("cortex#1290: 3 members, RF 3, one LEAVING still accepts writes", func(t *testing.T) {
		e := newEnv(t, defaultConfig(), memberSpec{id: "a"}, memberSpec{id: "b"}, memberSpec{id: "c", state: ringstate.LEAVING})
		in := manySeries(50)
		if code, msg := e.post(t, encode(t, in...)); code != http.StatusOK {
			t.Fatalf("%d %s", code, msg)
		}
		if n := e.pool.ing("c").numCalls(); n != 0 {
			t.Fatalf("the LEAVING member got %d calls", n)
		}
		for _, s := range in {
			if n := e.pool.replicasOf(DefaultTenant, rendered(s)); n != 2 {
				t.Fatalf("series on %d replicas, want 2", n)
			}
		}
	})
	for _, skipped := range []memberSpec{
		{id: "c", state: ringstate.LEAVING},
		{id: "c", state: ringstate.JOINING},
		{id: "c", stale: true},
	} {
		t.Run(fmt.Sprintf("4 members, one %v stale=%v: replaced, every series still on 3", skipped.state, skipped.stale), func(t *testing.T) {
			e := newEnv(t, defaultConfig(), memberSpec{id: "a"}, memberSpec{id: "b"}, skipped, memberSpec{id: "d"})
			in := manySeries(100)
			if code, msg := e.post(t, encode(t, in...)); code != http.StatusOK {
				t.Fatalf("%d %s", code, msg)
			}
			if n := e.pool.ing("c").numCalls(); n != 0 {
				t.Fatalf("the skipped member got %d calls", n)
			}
			for _, s := range in {
				if n := e.pool.replicasOf(DefaultTenant, rendered(s)); n != 3 {
					t.Fatalf("series on %d replicas, want 3", n)
				}
			}
		})
	}
	t.Run("spill does not inflate the quorum: with one member LEAVING, one more failure fails", func(t *testing.T) {
		e := newEnv(t, defaultConfig(), memberSpec{id: "a"}, memberSpec{id: "b"}, memberSpec{id: "c", state: ringstate.LEAVING})
		e.pool.ing("a").set(func(f *fakeIngester) { f.callErr = errors.New("down") })
		if code, msg := e.post(t, encode(t, manySeries(5)...)); code != http.StatusInternalServerError {
			t.Fatalf("%d %s", code, msg)
		}
	})
	t.Run("too few writable members for a quorum: 5xx naming the numbers", func(t *testing.T) {
		e := newEnv(t, defaultConfig(), memberSpec{id: "a"}, memberSpec{id: "b", state: ringstate.LEAVING}, memberSpec{id: "c", stale: true})
		code, msg := e.post(t, encode(t, manySeries(3)...))
		if code != http.StatusInternalServerError || !strings.Contains(msg, "too few healthy ingesters: have 1, need quorum 2 of RF 3") {
			t.Fatalf("%d %s", code, msg)
		}
		if n := e.pool.totalCalls(); n != 0 {
			t.Fatalf("%d calls, want none", n)
		}
	})
}

// TestPush_RFCappedOnSmallRing: a one-node cluster works with the default RF of 3.
func TestPush_RFCappedOnSmallRing(t *testing.T) {
	e := newEnv(t, defaultConfig(), active("solo")...)
	in := manySeries(10)
	if code, msg := e.post(t, encode(t, in...)); code != http.StatusOK {
		t.Fatalf("%d %s", code, msg)
	}
	if n := e.pool.replicasOf(DefaultTenant, rendered(in[0])); n != 1 {
		t.Fatalf("%d replicas", n)
	}
	if got := e.d.cappedRF.Load(); got != 1 {
		t.Fatalf("capped RF noted as %d, want 1", got)
	}
	// Two nodes: RF 2, quorum 2: one failure fails the write.
	e2 := newEnv(t, defaultConfig(), active("a", "b")...)
	e2.pool.ing("a").set(func(f *fakeIngester) { f.callErr = errors.New("down") })
	if code, _ := e2.post(t, encode(t, in...)); code != http.StatusInternalServerError {
		t.Fatalf("2 nodes, one down: %d", code)
	}
}

// TestPush_PerSeriesErrors: an ingester's per-series refusal counts as that replica's answer.
func TestPush_PerSeriesErrors(t *testing.T) {
	bad := series(lbls("__name__", "bad"), sample(1, 0))
	good := manySeries(10)
	refuse := func(code ingesterpb.ErrorCode) func(*ingesterpb.TimeSeries) *ingesterpb.SeriesError {
		return func(ts *ingesterpb.TimeSeries) *ingesterpb.SeriesError {
			if ts.Labels[0].Value == "bad" {
				return &ingesterpb.SeriesError{Code: code, Message: "sample timestamp out of order", TimestampMs: ts.Samples[0].Timestamp}
			}
			return nil
		}
	}
	cases := []struct {
		name  string
		codes map[string]ingesterpb.ErrorCode
		want  int
	}{
		{"one replica refuses: quorum stored it", map[string]ingesterpb.ErrorCode{"a": ingesterpb.ErrorCode_OUT_OF_ORDER}, http.StatusOK},
		{"two replicas out of order: 400", map[string]ingesterpb.ErrorCode{"a": ingesterpb.ErrorCode_OUT_OF_ORDER, "b": ingesterpb.ErrorCode_OUT_OF_ORDER}, http.StatusBadRequest},
		{"one out of order, one internal: 5xx (retry)", map[string]ingesterpb.ErrorCode{"a": ingesterpb.ErrorCode_OUT_OF_ORDER, "b": ingesterpb.ErrorCode_INTERNAL}, http.StatusInternalServerError},
		{"two internal: 5xx", map[string]ingesterpb.ErrorCode{"a": ingesterpb.ErrorCode_INTERNAL, "b": ingesterpb.ErrorCode_INTERNAL}, http.StatusInternalServerError},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, defaultConfig(), active("a", "b", "c")...)
			for id, c := range tc.codes {
				e.pool.ing(id).set(func(f *fakeIngester) { f.refuse = refuse(c) })
			}
			code, msg := e.post(t, encode(t, append([]prompb.TimeSeries{bad}, good...)...))
			if code != tc.want {
				t.Fatalf("status %d (%s), want %d", code, msg, tc.want)
			}
			if code != http.StatusOK && (!strings.Contains(msg, `{__name__="bad"}`) || !strings.Contains(msg, "out of order") && !strings.Contains(msg, "timestamp")) {
				t.Fatalf("message %q does not name the series and the reason", msg)
			}
			for _, s := range good { // the other series are never lost
				if n := e.pool.replicasOf(DefaultTenant, rendered(s)); n != 3 {
					t.Fatalf("good series on %d replicas", n)
				}
			}
		})
	}
}

// TestPush_ReturnsOnceQuorumIsKnown: a hung ingester does not hold the answer once a quorum of the
// others stored every series (it would otherwise cost every request the remote timeout). Its push
// still completes in the background and Wait waits for it.
func TestPush_ReturnsOnceQuorumIsKnown(t *testing.T) {
	cfg := defaultConfig()
	cfg.RemoteTimeout = time.Hour // if Push waited for the hung ingester, the test would time out
	cfg.ClientIdleTimeout = 0
	e := newEnv(t, cfg, active("a", "b", "c")...)
	hang := make(chan struct{})
	e.pool.ing("c").set(func(f *fakeIngester) { f.hang = hang })
	raw, _ := (&prompb.WriteRequest{Timeseries: manySeries(10)}).Marshal()
	var req WriteRequest
	if err := req.Unmarshal(raw); err != nil {
		t.Fatal(err)
	}
	if err := e.d.Push(context.Background(), DefaultTenant, &req); err != nil {
		t.Fatal(err)
	}
	clear(raw) // the caller may reuse its body at once: the straggler has its own copy
	if n := len(e.pool.ing("c").series(DefaultTenant)); n != 0 {
		t.Fatalf("the hung ingester stored %d series already", n)
	}
	close(hang)
	e.d.Wait()
	if n := len(e.pool.ing("c").series(DefaultTenant)); n != 10 {
		t.Fatalf("the straggler stored %d series, want 10", n)
	}
}

func TestHandler_BadRequests(t *testing.T) {
	cfg := defaultConfig()
	cfg.MaxRecvMsgSize = 4096
	e := newEnv(t, cfg, active("a", "b", "c")...)
	okBody := encode(t, manySeries(1)...)
	huge := snappy.Encode(nil, make([]byte, 5000)) // decompresses past the limit
	incompressible := make([]byte, 5000)
	for i := range incompressible {
		incompressible[i] = byte(i*7919 + i/13)
	}
	cases := []struct {
		name    string
		body    []byte
		headers []string
		want    int
		msg     string
	}{
		{"garbage, not snappy", []byte("this is not snappy"), nil, 400, "snappy"},
		{"snappy of garbage protobuf", snappy.Encode(nil, []byte{0x0a, 0x7f, 0x01}), nil, 400, "protobuf"},
		{"empty body", nil, nil, 400, "empty request body"},
		{"gzip encoding", okBody, []string{"Content-Encoding: gzip"}, 415, "Content-Encoding"},
		{"unknown remote-write message", okBody, []string{"Content-Type: application/x-protobuf;proto=io.prometheus.write.v3.Request"}, 415, "remote-write 1.0"},
		{"json", okBody, []string{"Content-Type: application/json"}, 415, "Content-Type"},
		{"decompresses too large", huge, nil, 413, "-distributor.max-recv-msg-size"},
		{"body too large", incompressible, nil, 413, "-distributor.max-recv-msg-size"},
		{"no content-encoding is tolerated", okBody, []string{"Content-Encoding: "}, 200, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, msg := e.post(t, tc.body, tc.headers...)
			if code != tc.want || !strings.Contains(msg, tc.msg) {
				t.Fatalf("%d %q, want %d containing %q", code, msg, tc.want, tc.msg)
			}
		})
	}
	req, _ := http.NewRequest(http.MethodGet, e.srv.URL+"/api/v1/push", nil)
	resp, err := e.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Fatalf("GET: %d", resp.StatusCode)
	}
}

// TestValidation: each rule refuses its series with a 400 that names the series and the reason, and
// never costs the other series of the request.
func TestValidation(t *testing.T) {
	long := strings.Repeat("v", 2049)
	cases := []struct {
		name   string
		series prompb.TimeSeries
		reason string // discard reason
		msg    string // in the message, besides the series
	}{
		{"no metric name", series(lbls("job", "x"), sample(1, 0)), reasonMissingMetricName, "without a metric name"},
		{"metric name invalid", series(lbls("__name__", "1up"), sample(1, 0)), reasonInvalidMetricName, `invalid metric name "1up"`},
		{"label name invalid", series(lbls("__name__", "up", "a-b", "x"), sample(1, 0)), reasonInvalidLabel, `invalid label name "a-b"`},
		{"label name too long", series(lbls("__name__", "up", "a"+strings.Repeat("b", 1024), "x"), sample(1, 0)), reasonLabelNameTooLong, "-validation.max-length-label-name"},
		{"label value too long", series(lbls("__name__", "up", "a", long), sample(1, 0)), reasonLabelValueTooLong, "-validation.max-length-label-value"},
		{"label value not UTF-8", series(lbls("__name__", "up", "a", "\xff\xfe"), sample(1, 0)), reasonInvalidLabelValue, "not valid UTF-8"},
		{"duplicate label name", series(lbls("__name__", "up", "a", "1", "a", "2"), sample(1, 0)), reasonDuplicateLabelNames, `label name "a" more than once`},
		{"duplicate label name, unsorted", series(lbls("a", "1", "__name__", "up", "a", "2"), sample(1, 0)), reasonDuplicateLabelNames, `label name "a" more than once`},
		{"too many labels", series(append(lbls("__name__", "up"), manyLabels(30)...), sample(1, 0)), reasonMaxLabelNames, "31 labels"},
		{"sample too far in the future", series(lbls("__name__", "up"), sample(1, 11*time.Minute)), reasonTooFarInFuture, "-validation.create-grace-period"},
		{"invalid native histogram", prompb.TimeSeries{Labels: lbls("__name__", "h"), Histograms: []prompb.Histogram{{Count: &prompb.Histogram_CountInt{CountInt: 1}, Timestamp: ts(0)}}}, reasonInvalidHistogram, "native histogram sample at"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, defaultConfig(), active("a", "b", "c")...)
			good := manySeries(3)
			code, msg := e.post(t, encode(t, append([]prompb.TimeSeries{tc.series}, good...)...))
			if code != http.StatusBadRequest {
				t.Fatalf("%d %s", code, msg)
			}
			if !strings.Contains(msg, tc.msg) || !strings.Contains(msg, "series: {") || !strings.Contains(msg, "(err-raftingest-") {
				t.Fatalf("message %q: want %q and the series", msg, tc.msg)
			}
			if strings.Contains(msg, long) {
				t.Fatalf("message carries the whole 2 KiB value")
			}
			for _, s := range good {
				if n := e.pool.replicasOf(DefaultTenant, rendered(s)); n != 3 {
					t.Fatalf("good series on %d replicas", n)
				}
			}
			if got := testutil.ToFloat64(e.d.m.discardedSamples.WithLabelValues(DefaultTenant, tc.reason)); got != 1 {
				t.Fatalf("discarded{reason=%s} = %v", tc.reason, got)
			}
		})
	}
}

func manyLabels(n int) []prompb.Label {
	var out []prompb.Label
	for i := range n {
		out = append(out, prompb.Label{Name: fmt.Sprintf("l%02d", i), Value: "v"})
	}
	return out
}

// TestValidation_Normalizes: empty label values are dropped and unsorted labels sorted (as Mimir
// does) before hashing and storing, so the series is the same one, on the same ingesters, as its
// canonical form; samples too far ahead are dropped while the series' others are kept.
func TestValidation_Normalizes(t *testing.T) {
	e := newEnv(t, defaultConfig(), active("a", "b", "c", "d", "e")...)
	in := []prompb.TimeSeries{
		series(lbls("__name__", "up", "a", "", "b", "1"), sample(1, 0)),
		series(lbls("b", "2", "__name__", "up"), sample(2, 0)),
	}
	if code, msg := e.post(t, encode(t, in...)); code != http.StatusOK {
		t.Fatalf("%d %s", code, msg)
	}
	for _, want := range []prompb.TimeSeries{
		series(lbls("__name__", "up", "b", "1"), sample(1, 0)),
		series(lbls("__name__", "up", "b", "2"), sample(2, 0)),
	} {
		if n := e.pool.replicasOf(DefaultTenant, rendered(want)); n != 3 {
			t.Fatalf("%s on %d replicas", rendered(want), n)
		}
	}
	mixed := series(lbls("__name__", "mixed"), sample(1, 0), sample(2, time.Hour), sample(3, time.Second))
	code, msg := e.post(t, encode(t, mixed))
	if code != http.StatusBadRequest || !strings.Contains(msg, fmt.Sprint(ts(time.Hour))) {
		t.Fatalf("%d %s", code, msg)
	}
	kept := series(lbls("__name__", "mixed"), sample(1, 0), sample(3, time.Second))
	if n := e.pool.replicasOf(DefaultTenant, rendered(kept)); n != 3 {
		t.Fatalf("the in-range samples of a series with a future one: on %d replicas", n)
	}
}

func TestTenants(t *testing.T) {
	cfg := defaultConfig()
	cfg.MultitenancyEnabled = true
	e := newEnv(t, cfg, active("a", "b", "c", "d", "e")...)
	body := encode(t, series(lbls("__name__", "up"), sample(1, 0)))
	if code, msg := e.post(t, body); code != http.StatusUnauthorized || !strings.Contains(msg, "no org id") {
		t.Fatalf("no tenant: %d %s", code, msg)
	}
	for _, bad := range []string{"a/b", "..", strings.Repeat("x", 151), "tenant with spaces"} {
		code, msg := e.post(t, body, "X-Scope-OrgID: "+bad)
		if code != http.StatusBadRequest || !strings.Contains(msg, "tenant id") {
			t.Fatalf("tenant %q: %d %s", bad, code, msg)
		}
	}
	for _, tenant := range []string{"team-a", "team-b"} {
		if code, msg := e.post(t, body, "X-Scope-OrgID: "+tenant); code != http.StatusOK {
			t.Fatalf("%s: %d %s", tenant, code, msg)
		}
	}
	want := rendered(series(lbls("__name__", "up"), sample(1, 0)))
	for _, tenant := range []string{"team-a", "team-b"} {
		if n := e.pool.replicasOf(tenant, want); n != 3 {
			t.Fatalf("tenant %s: series on %d replicas", tenant, n)
		}
	}
	if n := e.pool.replicasOf(DefaultTenant, want); n != 0 {
		t.Fatalf("stored under the default tenant too")
	}
	// Routing is per tenant: the same labels hash differently.
	ls := []Label{{"__name__", "up"}}
	if SeriesHash("team-a", ls) == SeriesHash("team-b", ls) {
		t.Fatal("same hash for two tenants")
	}

	// Multi-tenancy off: the header is ignored and everything is "anonymous".
	e2 := newEnv(t, defaultConfig(), active("a", "b", "c")...)
	if code, _ := e2.post(t, body, "X-Scope-OrgID: team-a"); code != http.StatusOK {
		t.Fatal(code)
	}
	if n := e2.pool.replicasOf(DefaultTenant, want); n != 3 {
		t.Fatalf("anonymous: %d", n)
	}
}

// TestSeriesHash_Frozen pins the placement hash: if this test fails, every existing series would
// move to other ingesters. Do not update the values; fix the hash.
func TestSeriesHash_Frozen(t *testing.T) {
	cases := []struct {
		tenant string
		ls     []Label
		want   uint32
	}{
		{"anonymous", []Label{{"__name__", "up"}, {"job", "prometheus"}}, SeriesHash("anonymous", []Label{{"__name__", "up"}, {"job", "prometheus"}})},
	}
	// Independent reference: FNV-1a over the documented byte string.
	ref := func(b []byte) uint32 {
		h := uint32(2166136261)
		for _, c := range b {
			h ^= uint32(c)
			h *= 16777619
		}
		return h
	}
	for _, c := range cases {
		b := []byte(c.tenant + "\xff")
		for _, l := range c.ls {
			b = append(b, l.Name+"\xff"+l.Value+"\xff"...)
		}
		if got := SeriesHash(c.tenant, c.ls); got != ref(b) {
			t.Fatalf("hash %d, reference %d", got, ref(b))
		}
	}
	if got := SeriesHash("anonymous", []Label{{"__name__", "up"}, {"job", "prometheus"}}); got != 0x72ae0776 {
		t.Fatalf("frozen hash changed: %#x", got)
	}
	// Separators make label boundaries unambiguous.
	if SeriesHash("t", []Label{{"a", "bc"}}) == SeriesHash("t", []Label{{"ab", "c"}}) {
		t.Fatal("label boundary ambiguity")
	}
	if SeriesHash("a", []Label{{"b", "c"}}) == SeriesHash("ab", []Label{{"", "c"}}) {
		t.Fatal("tenant boundary ambiguity")
	}
}

func TestRateLimit(t *testing.T) {
	cfg := defaultConfig()
	cfg.IngestionRateLimit, cfg.IngestionBurstSize = 10, 20
	cfg.IngestionRateStrategy = RateStrategyLocal
	e := newEnv(t, cfg, active("a", "b", "c")...)
	push := func() (int, string) { return e.post(t, encode(t, manySeries(15)...)) }
	if code, msg := push(); code != http.StatusOK {
		t.Fatalf("first: %d %s", code, msg)
	}
	code, msg := push()
	if code != http.StatusTooManyRequests || !strings.Contains(msg, "-distributor.ingestion-rate-limit") {
		t.Fatalf("second: %d %s", code, msg)
	}
	calls := e.pool.totalCalls()
	e.clock.Advance(time.Second) // 5 left + 10 refilled = 15
	if code, msg := push(); code != http.StatusOK {
		t.Fatalf("after a second: %d %s", code, msg)
	}
	if e.pool.totalCalls() == calls {
		t.Fatal("nothing sent after the refill")
	}
	if got := testutil.ToFloat64(e.d.m.discardedSamples.WithLabelValues(DefaultTenant, reasonRateLimited)); got != 15 {
		t.Fatalf("discarded rate_limited %v", got)
	}
	// Another tenant has its own bucket (multi-tenancy off: only one tenant; check the limiter).
	now := e.clock.Now()
	burst := e.d.cfg.IngestionBurstSize
	if !e.d.tenants.allow("other", burst, 10, burst, now) || e.d.tenants.allow("other", 1, 10, burst, now) {
		t.Fatal("per-tenant buckets")
	}
}

func TestConfig_Validate(t *testing.T) {
	c := defaultConfig()
	if err := c.Validate(); err != nil {
		t.Fatalf("defaults: %v", err)
	}
	c.ReplicationFactor, c.RemoteTimeout, c.Limits.MaxLabelNamesPerSeries = 0, 0, 0
	err := c.Validate()
	for _, flag := range []string{"-distributor.replication-factor", "-distributor.remote-timeout", "-validation.max-label-names-per-series"} {
		if err == nil || !strings.Contains(err.Error(), flag) {
			t.Fatalf("error %v does not name %s", err, flag)
		}
	}
}

// TestPush_API: Push works on a decoded request without the HTTP handler.
func TestPush_API(t *testing.T) {
	e := newEnv(t, defaultConfig(), active("a", "b", "c")...)
	raw, _ := (&prompb.WriteRequest{Timeseries: manySeries(4)}).Marshal()
	var req WriteRequest
	if err := req.Unmarshal(raw); err != nil {
		t.Fatal(err)
	}
	if err := e.d.Push(context.Background(), "t1", &req); err != nil {
		t.Fatal(err)
	}
	var pe *PushError
	if err := e.d.Push(context.Background(), "t1", &WriteRequest{Series: []Series{{Labels: []Label{{"a", "b"}}, Samples: []Sample{{1, ts(0)}}}}}); !errors.As(err, &pe) || pe.Status != 400 {
		t.Fatalf("invalid series: %v", err)
	}
}

// TestRegression_RateLimiterFrozenByBackwardClockJump: a clock stepped back by J must not stop a
// tenant's bucket from refilling for J (found by the fault tests' clock nemesis: with an injected
// clock, which has no monotonic reading, a tenant past its burst got 429s for the whole jump).
func TestRegression_RateLimiterFrozenByBackwardClockJump(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	l := newTenantTracker(tenantIdleTimeout)
	if !l.allow("t", 100, 100, 100, now) {
		t.Fatal("a full bucket refused its burst")
	}
	now = now.Add(-time.Hour) // the clock steps back an hour
	if l.allow("t", 1, 100, 100, now) {
		t.Fatal("an empty bucket took a sample with no time passed")
	}
	now = now.Add(time.Second) // one second later by the stepped clock
	if !l.allow("t", 100, 100, 100, now) {
		t.Fatal("one second after a backward clock jump the bucket has not refilled: it waits for the clock to come back")
	}
}
