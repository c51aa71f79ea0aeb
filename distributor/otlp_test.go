package distributor

import (
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/pmetric"
	"go.opentelemetry.io/collector/pdata/pmetric/pmetricotlp"
	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// otlpMetrics is one resource (service.name=checkout, instance i-1, region eu) with a monotonic
// cumulative sum in seconds, a gauge, an explicit-bucket histogram and, when withExp, an
// exponential histogram, each with one data point at at.
func otlpMetrics(at time.Time, withExp bool) pmetric.Metrics {
	md := pmetric.NewMetrics()
	rm := md.ResourceMetrics().AppendEmpty()
	rm.Resource().Attributes().PutStr("service.name", "checkout")
	rm.Resource().Attributes().PutStr("service.instance.id", "i-1")
	rm.Resource().Attributes().PutStr("cloud.region", "eu")
	ms := rm.ScopeMetrics().AppendEmpty().Metrics()
	ts := pcommon.NewTimestampFromTime(at)

	sum := ms.AppendEmpty()
	sum.SetName("http.server.busy")
	sum.SetUnit("s")
	s := sum.SetEmptySum()
	s.SetIsMonotonic(true)
	s.SetAggregationTemporality(pmetric.AggregationTemporalityCumulative)
	dp := s.DataPoints().AppendEmpty()
	dp.SetTimestamp(ts)
	dp.SetDoubleValue(12.5)
	dp.Attributes().PutStr("http.method", "GET")

	g := ms.AppendEmpty()
	g.SetName("queue.length")
	gdp := g.SetEmptyGauge().DataPoints().AppendEmpty()
	gdp.SetTimestamp(ts)
	gdp.SetIntValue(7)

	h := ms.AppendEmpty()
	h.SetName("rpc.latency")
	h.SetUnit("ms")
	hh := h.SetEmptyHistogram()
	hh.SetAggregationTemporality(pmetric.AggregationTemporalityCumulative)
	hdp := hh.DataPoints().AppendEmpty()
	hdp.SetTimestamp(ts)
	hdp.SetCount(3)
	hdp.SetSum(30)
	hdp.ExplicitBounds().FromRaw([]float64{5, 50})
	hdp.BucketCounts().FromRaw([]uint64{1, 2, 0})

	if withExp {
		e := ms.AppendEmpty()
		e.SetName("rpc.size")
		eh := e.SetEmptyExponentialHistogram()
		eh.SetAggregationTemporality(pmetric.AggregationTemporalityCumulative)
		edp := eh.DataPoints().AppendEmpty()
		edp.SetTimestamp(ts)
		edp.SetCount(2)
		edp.SetSum(3)
		edp.SetScale(0)
		edp.Positive().BucketCounts().FromRaw([]uint64{1, 1})
	}
	return md
}

func postOTLP(t *testing.T, e *testEnv, body []byte, contentType, encoding string) (int, string, []byte) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, e.srv.URL+"/otlp/v1/metrics", bytes.NewReader(body))
	req.Header.Set("Content-Type", contentType)
	if encoding != "" {
		req.Header.Set("Content-Encoding", encoding)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header.Get("Content-Type"), b
}

func newOTLPEnv(t *testing.T, cfg Config) *testEnv {
	e := newEnv(t, cfg, active("a", "b", "c", "d", "e")...)
	e.srv.Config.Handler = e.d.OTLPHandler()
	return e
}

// stored returns every series stored on any fake ingester for the default tenant, rendered.
func (e *testEnv) stored() []string {
	seen := map[string]bool{}
	var out []string
	for _, f := range e.pool.ings {
		for _, s := range f.series(DefaultTenant) {
			if !seen[s] {
				seen[s] = true
				out = append(out, s)
			}
		}
	}
	return out
}

func TestOTLP_TranslatesAsPrometheusAndStores(t *testing.T) {
	at := testNow()
	for _, enc := range []struct{ name, contentType, encoding string }{
		{"protobuf", "application/x-protobuf", ""},
		{"protobuf gzip", "application/x-protobuf", "gzip"},
		{"json", "application/json", ""},
	} {
		t.Run(enc.name, func(t *testing.T) {
			cfg := defaultConfig()
			cfg.OTel.PromoteResourceAttributes = "cloud.region"
			e := newOTLPEnv(t, cfg)
			req := pmetricotlp.NewExportRequestFromMetrics(otlpMetrics(at, false))
			var body []byte
			var err error
			if enc.contentType == "application/json" {
				body, err = req.MarshalJSON()
			} else {
				body, err = req.MarshalProto()
			}
			if err != nil {
				t.Fatal(err)
			}
			if enc.encoding == "gzip" {
				var zb bytes.Buffer
				zw := gzip.NewWriter(&zb)
				_, _ = zw.Write(body)
				_ = zw.Close()
				body = zb.Bytes()
			}
			code, ct, resp := postOTLP(t, e, body, enc.contentType, enc.encoding)
			if code != http.StatusOK || ct != enc.contentType {
				t.Fatalf("push: %d %s %q", code, ct, resp)
			}
			got := strings.Join(e.stored(), "\n")
			ms := at.UnixMilli()
			for _, want := range []string{
				// Prometheus 3's names: unit and type suffixes, dots to underscores, job and
				// instance from the service attributes, the promoted attribute on every series.
				`{__name__="http_server_busy_seconds_total", cloud_region="eu", http_method="GET", instance="i-1", job="checkout"} ` + strconv.FormatInt(ms, 10) + "@12.5",
				`{__name__="queue_length", cloud_region="eu", instance="i-1", job="checkout"} ` + strconv.FormatInt(ms, 10) + "@7",
				`{__name__="rpc_latency_milliseconds_bucket", cloud_region="eu", instance="i-1", job="checkout", le="50"} ` + strconv.FormatInt(ms, 10) + "@3",
				`{__name__="rpc_latency_milliseconds_count", cloud_region="eu", instance="i-1", job="checkout"} ` + strconv.FormatInt(ms, 10) + "@3",
				`{__name__="target_info", cloud_region="eu", instance="i-1", job="checkout"} ` + strconv.FormatInt(ms, 10) + "@1",
			} {
				if !strings.Contains(got, want) {
					t.Errorf("missing %s; stored:\n%s", want, got)
				}
			}
		})
	}
}

// OTLP exponential histograms become native histograms (Prometheus's translator) and are stored
// with the request's other metrics.
func TestOTLP_ExponentialHistogramsStored(t *testing.T) {
	e := newOTLPEnv(t, defaultConfig())
	body, _ := pmetricotlp.NewExportRequestFromMetrics(otlpMetrics(testNow(), true)).MarshalProto()
	code, ct, resp := postOTLP(t, e, body, "application/x-protobuf", "")
	if code != http.StatusOK || ct != "application/x-protobuf" {
		t.Fatalf("push: %d %s %q, want 200", code, ct, resp)
	}
	got := strings.Join(e.stored(), "\n")
	if !strings.Contains(got, `__name__="queue_length"`) {
		t.Errorf("the other metrics of the request were not stored:\n%s", got)
	}
	// count 2, sum 3, scale 0, one observation in each of the buckets (1, 2] and (2, 4].
	if !strings.Contains(got, `rpc_size`) || !strings.Contains(got, "{count:2, sum:3, (1,2]:1, (2,4]:1}") {
		t.Errorf("the exponential histogram was not stored as a native histogram:\n%s", got)
	}
}

func TestOTLP_Refusals(t *testing.T) {
	cfg := defaultConfig()
	cfg.MaxRecvMsgSize = 64 << 10
	e := newOTLPEnv(t, cfg)
	// A gzip bomb: 1 MiB of zeros in about 1 KiB.
	var zb bytes.Buffer
	zw := gzip.NewWriter(&zb)
	_, _ = zw.Write(make([]byte, 1<<20))
	_ = zw.Close()
	for _, tc := range []struct {
		name, contentType, encoding string
		body                        []byte
		code                        int
		msg                         string
	}{
		{"gzip bomb", "application/x-protobuf", "gzip", zb.Bytes(), http.StatusRequestEntityTooLarge, "exceeds the limit of 65536 bytes, decompressed"},
		{"not gzip", "application/x-protobuf", "gzip", []byte("plain"), http.StatusBadRequest, "gzip"},
		{"zstd", "application/x-protobuf", "zstd", []byte("x"), http.StatusUnsupportedMediaType, `Content-Encoding "zstd"`},
		{"text", "text/plain", "", []byte("x"), http.StatusUnsupportedMediaType, "application/x-protobuf or application/json"},
		{"garbage", "application/x-protobuf", "", []byte{0xff, 0xff, 0xff}, http.StatusBadRequest, "decoding the OTLP"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, resp := postOTLP(t, e, tc.body, tc.contentType, tc.encoding)
			var st spb.Status
			if err := proto.Unmarshal(resp, &st); err != nil {
				t.Fatalf("body is not a Status: %v", err)
			}
			if code != tc.code || !strings.Contains(st.Message, tc.msg) {
				t.Fatalf("%d %q, want %d with %q", code, st.Message, tc.code, tc.msg)
			}
		})
	}
}

// nestedOTLP is an ExportMetricsServiceRequest whose one resource attribute is an array holding an
// array ... depth deep: about 8 bytes of body a level.
func nestedOTLP(depth int) []byte {
	inner := protowire.AppendTag(nil, 1, protowire.BytesType) // AnyValue.string_value
	inner = protowire.AppendString(inner, "x")
	// Level i is AnyValue{array_value: ArrayValue{values: level i-1}}: two prefixes, no suffix, so
	// the body is the prefixes outermost first, then the innermost value (built in linear time).
	sizes, arrs := make([]int, depth+1), make([]int, depth+1)
	sizes[0] = len(inner)
	for i := 1; i <= depth; i++ {
		arrs[i] = protowire.SizeTag(1) + protowire.SizeBytes(sizes[i-1])
		sizes[i] = protowire.SizeTag(5) + protowire.SizeBytes(arrs[i])
	}
	v := make([]byte, 0, sizes[depth])
	for i := depth; i >= 1; i-- {
		v = protowire.AppendTag(v, 5, protowire.BytesType) // AnyValue.array_value
		v = protowire.AppendVarint(v, uint64(arrs[i]))
		v = protowire.AppendTag(v, 1, protowire.BytesType) // ArrayValue.values
		v = protowire.AppendVarint(v, uint64(sizes[i-1]))
	}
	v = append(v, inner...)
	kv := protowire.AppendTag(nil, 1, protowire.BytesType)
	kv = protowire.AppendString(kv, "k")
	kv = protowire.AppendTag(kv, 2, protowire.BytesType)
	kv = protowire.AppendBytes(kv, v)
	res := protowire.AppendTag(nil, 1, protowire.BytesType) // Resource.attributes
	res = protowire.AppendBytes(res, kv)
	rm := protowire.AppendTag(nil, 1, protowire.BytesType) // ResourceMetrics.resource
	rm = protowire.AppendBytes(rm, res)
	req := protowire.AppendTag(nil, 1, protowire.BytesType) // ExportMetricsServiceRequest.resource_metrics
	return protowire.AppendBytes(req, rm)
}

// TestOTLP_DeepNestingRefusedBeforeDecoding: pdata's protobuf decoder recurses once per nested
// attribute value without a limit, so about 16 MB of nesting overflows a goroutine's 1 GB stack
// and kills the process. 100,000 levels (under 1 MB) must be refused with 400 before pdata sees
// them; a handful of levels, as real attributes have, must pass.
func TestOTLP_DeepNestingRefusedBeforeDecoding(t *testing.T) {
	e := newOTLPEnv(t, defaultConfig())
	code, _, resp := postOTLP(t, e, nestedOTLP(100_000), "application/x-protobuf", "")
	var st spb.Status
	if err := proto.Unmarshal(resp, &st); err != nil {
		t.Fatal(err)
	}
	if code != http.StatusBadRequest || !strings.Contains(st.Message, "nest at most 64 deep") {
		t.Fatalf("100,000 levels: %d %q, want 400 naming the nesting bound", code, st.Message)
	}
	if code, _, resp := postOTLP(t, e, nestedOTLP(5), "application/x-protobuf", ""); code != http.StatusOK {
		t.Fatalf("5 levels: %d %q", code, resp)
	}
}

// TestOTLP_TranslationBoundedBeforeTranslating: a histogram of 20,000 buckets with four 2 KB
// attributes is a 330 KB body that translates to about 160 MB of series (every bucket repeats the
// attributes): refused with 413 before the translation, by the estimate.
func TestOTLP_TranslationBoundedBeforeTranslating(t *testing.T) {
	e := newOTLPEnv(t, defaultConfig())
	md := pmetric.NewMetrics()
	rm := md.ResourceMetrics().AppendEmpty()
	h := rm.ScopeMetrics().AppendEmpty().Metrics().AppendEmpty()
	h.SetName("wide")
	hh := h.SetEmptyHistogram()
	hh.SetAggregationTemporality(pmetric.AggregationTemporalityCumulative)
	dp := hh.DataPoints().AppendEmpty()
	dp.SetTimestamp(pcommon.NewTimestampFromTime(testNow()))
	bounds := make([]float64, 20_000)
	for i := range bounds {
		bounds[i] = float64(i)
	}
	dp.ExplicitBounds().FromRaw(bounds)
	dp.BucketCounts().FromRaw(make([]uint64, len(bounds)+1))
	for i := range 4 {
		dp.Attributes().PutStr(fmt.Sprintf("a%d", i), strings.Repeat("v", 2000))
	}
	body, _ := pmetricotlp.NewExportRequestFromMetrics(md).MarshalProto()
	code, _, resp := postOTLP(t, e, body, "application/x-protobuf", "")
	var st spb.Status
	_ = proto.Unmarshal(resp, &st)
	if code != http.StatusRequestEntityTooLarge || !strings.Contains(st.Message, "-distributor.max-recv-msg-size") {
		t.Fatalf("%d-byte body: %d %q, want 413 naming the limit", len(body), code, st.Message)
	}
	if n := e.pool.totalCalls(); n != 0 {
		t.Errorf("%d pushes reached the ingesters", n)
	}
	series, bytes := otlpEstimate(md, nil)
	if series != 20_003+1 || bytes < 20_003*8000 {
		t.Errorf("estimate %d series %d bytes, want 20004 series and at least %d bytes", series, bytes, 20_003*8000)
	}
}

// TestOTLP_ServerFailuresAre503: OTLP clients retry 429, 502, 503 and 504 only; a quorum lost must
// not drop the batch for good, so it is answered 503 with Retry-After, not 500.
func TestOTLP_ServerFailuresAre503(t *testing.T) {
	e := newOTLPEnv(t, defaultConfig())
	for _, id := range []string{"a", "b", "c", "d", "e"} {
		e.pool.ing(id).set(func(f *fakeIngester) { f.callErr = errors.New("connection refused") })
	}
	body, _ := pmetricotlp.NewExportRequestFromMetrics(otlpMetrics(testNow(), false)).MarshalProto()
	req, _ := http.NewRequest(http.MethodPost, e.srv.URL+"/otlp/v1/metrics", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/x-protobuf")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("%d, Retry-After %q: want 503 with Retry-After", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
}

// TestOTLP_CollectorBatchAccepted: the Collector's default batch, 8192 histogram points of the 11
// default bounds (114,688 series once translated, over -distributor.max-series-per-request's 100k),
// is accepted: OTLP clients drop a 413 for good, and the bytes bound the memory.
func TestOTLP_CollectorBatchAccepted(t *testing.T) {
	e := newOTLPEnv(t, defaultConfig())
	md := pmetric.NewMetrics()
	rm := md.ResourceMetrics().AppendEmpty()
	rm.Resource().Attributes().PutStr("service.name", "svc")
	rm.Resource().Attributes().PutStr("host.name", strings.Repeat("h", 200)) // on target_info only
	hh := rm.ScopeMetrics().AppendEmpty().Metrics().AppendEmpty()
	hh.SetName("http.server.duration")
	hist := hh.SetEmptyHistogram()
	hist.SetAggregationTemporality(pmetric.AggregationTemporalityCumulative)
	bounds := []float64{0, 5, 10, 25, 50, 75, 100, 250, 500, 1000, 2500}
	for i := range 8192 {
		dp := hist.DataPoints().AppendEmpty()
		dp.SetTimestamp(pcommon.NewTimestampFromTime(testNow()))
		dp.ExplicitBounds().FromRaw(bounds)
		dp.BucketCounts().FromRaw(make([]uint64, len(bounds)+1))
		dp.Attributes().PutStr("route", fmt.Sprintf("/r%d", i))
	}
	body, _ := pmetricotlp.NewExportRequestFromMetrics(md).MarshalProto()
	if code, _, resp := postOTLP(t, e, body, "application/x-protobuf", ""); code != http.StatusOK {
		var st spb.Status
		_ = proto.Unmarshal(resp, &st)
		t.Fatalf("a Collector-sized batch: %d %q", code, st.Message)
	}
}
