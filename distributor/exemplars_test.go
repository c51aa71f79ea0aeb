package distributor

import (
	"errors"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/golang/snappy"
	"github.com/prometheus/prometheus/prompb"

	"github.com/raftingest/raftingest/ingesterpb"
	"github.com/raftingest/raftingest/ringstate"
)

func withExemplars(enabled bool) func(*Deps) {
	return func(d *Deps) { d.ExemplarsEnabled = func(string) bool { return enabled } }
}

func exemplar(v float64, offset time.Duration, kv ...string) prompb.Exemplar {
	return prompb.Exemplar{Labels: lbls(kv...), Value: v, Timestamp: ts(offset)}
}

// storedExemplars is every exemplar the fake ingesters stored for tenant, per replica, rendered.
func storedExemplars(p *fakePool, tenant string) map[string][]string {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := map[string][]string{}
	for addr, f := range p.ings {
		f.mu.Lock()
		for _, ts := range f.stored[tenant] {
			for _, e := range ts.Exemplars {
				var ls []Label
				for _, l := range e.Labels {
					ls = append(ls, Label{l.Name, l.Value})
				}
				out[addr] = append(out[addr], renderPB(ts)+" "+renderSeries(ls)+" "+itoa(e.Timestamp)+"@"+strconv.FormatFloat(e.Value, 'g', -1, 64))
			}
		}
		f.mu.Unlock()
	}
	return out
}

func TestPush_ExemplarsGoWithTheirSeriesToEveryReplica(t *testing.T) {
	e := newEnvDeps(t, defaultConfig(), withExemplars(true), active("a", "b", "c", "d", "e")...)
	withEx := series(lbls("__name__", "req_total", "job", "x"), sample(1, 0))
	withEx.Exemplars = []prompb.Exemplar{exemplar(1, 0, "trace_id", "abc"), exemplar(2, time.Second, "trace_id", "def", "span_id", "1")}
	plain := series(lbls("__name__", "other", "job", "x"), sample(5, 0))
	if code, msg := e.post(t, encode(t, withEx, plain)); code != http.StatusNoContent && code != http.StatusOK {
		t.Fatalf("push: %d %s", code, msg)
	}
	got := storedExemplars(e.pool, DefaultTenant)
	if len(got) != 3 {
		t.Fatalf("exemplars on %d ingesters, want the series' 3 replicas: %v", len(got), got)
	}
	for addr, exs := range got {
		if len(exs) != 2 || !strings.Contains(exs[0], `{trace_id="abc"}`) || !strings.Contains(exs[1], `{trace_id="def", span_id="1"}`) {
			t.Errorf("%s stored %q, want both exemplars of req_total in order", addr, exs)
		}
	}
	if n := e.pool.replicasOf(DefaultTenant, `{__name__="other", job="x"} `+itoa(ts(0))+"@5"); n != 3 {
		t.Errorf("the series without exemplars is on %d replicas, want 3", n)
	}
}

func TestPush_ExemplarsDroppedForATenantWithoutExemplarStorage(t *testing.T) {
	for _, deps := range []func(*Deps){nil, withExemplars(false)} {
		e := newEnvDeps(t, defaultConfig(), deps, active("a", "b", "c")...)
		s := series(lbls("__name__", "req_total"), sample(1, 0))
		s.Exemplars = []prompb.Exemplar{exemplar(1, 0, "trace_id", "abc")}
		if code, msg := e.post(t, encode(t, s)); code/100 != 2 {
			t.Fatalf("push: %d %s", code, msg)
		}
		if got := storedExemplars(e.pool, DefaultTenant); len(got) != 0 {
			t.Errorf("exemplars forwarded for a tenant that stores none: %v", got)
		}
		if n := e.pool.replicasOf(DefaultTenant, `{__name__="req_total"} `+itoa(ts(0))+"@1"); n != 3 {
			t.Errorf("the series is on %d replicas, want 3", n)
		}
	}
}

func itoa(v int64) string { return strconv.FormatInt(v, 10) }

// An invalid exemplar is dropped and counted by reason; its series' samples and its valid
// exemplars are stored (Mimir's rule since OpenTelemetry senders began to send empty exemplars:
// never a 400, which Prometheus does not retry). For a tenant that stores no exemplars they are
// not even looked at: an exemplar it would not keep never costs it its samples.
func TestPush_InvalidExemplarDroppedSeriesKept(t *testing.T) {
	long := strings.Repeat("é", 121) // 121 runes (242 bytes): with "trace_id", 129 runes
	cfg := defaultConfig()
	for _, tc := range []struct {
		name   string
		ex     prompb.Exemplar
		reason string
	}{
		{"labels over 128 runes", exemplar(1, 0, "trace_id", long), reasonExemplarLabelsTooLong},
		{"no timestamp", prompb.Exemplar{Labels: lbls("trace_id", "a"), Value: 1}, reasonExemplarTimestamp},
		{"no labels", prompb.Exemplar{Value: 1, Timestamp: ts(0)}, reasonExemplarLabelsMissing},
		{"bad label name", exemplar(1, 0, "0trace", "a"), reasonExemplarLabelInvalid},
		{"too far in the future", exemplar(1, cfg.Limits.CreationGracePeriod+time.Hour, "trace_id", "f"), reasonExemplarTooFarInFuture},
		{"older than the past grace period", exemplar(1, -cfg.Limits.PastGracePeriod-time.Hour, "trace_id", "p"), reasonExemplarTooOld},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnvDeps(t, cfg, withExemplars(true), active("a", "b", "c")...)
			s := series(lbls("__name__", "req_total", "job", "x"), sample(1, 0))
			s.Exemplars = []prompb.Exemplar{tc.ex, exemplar(2, 0, "trace_id", "ok")}
			if code, msg := e.post(t, encode(t, s)); code/100 != 2 {
				t.Fatalf("got %d %q, want 2xx: a bad exemplar is dropped, not its series", code, msg)
			}
			if n := e.pool.replicasOf(DefaultTenant, `{__name__="req_total", job="x"} `+itoa(ts(0))+"@1"); n != 3 {
				t.Errorf("the series is on %d replicas, want 3", n)
			}
			got := storedExemplars(e.pool, DefaultTenant)
			if len(got) != 3 {
				t.Fatalf("exemplars on %d replicas, want 3: %v", len(got), got)
			}
			for addr, exs := range got {
				if len(exs) != 1 || !strings.Contains(exs[0], `{trace_id="ok"}`) {
					t.Errorf("%s stored %q, want only the valid exemplar", addr, exs)
				}
			}
			if v := testutil.ToFloat64(e.d.xm.discardedExemplars.WithLabelValues(DefaultTenant, tc.reason)); v != 1 {
				t.Errorf("cortex_discarded_exemplars_total{reason=%q} = %v, want 1", tc.reason, v)
			}
		})
	}
	// Exactly 128 runes is accepted.
	e := newEnvDeps(t, cfg, withExemplars(true), active("a", "b", "c")...)
	s := series(lbls("__name__", "ok_total"), sample(1, 0))
	s.Exemplars = []prompb.Exemplar{exemplar(1, 0, "trace_id", strings.Repeat("é", 120))}
	if code, msg := e.post(t, encode(t, s)); code/100 != 2 {
		t.Fatalf("an exemplar of exactly 128 runes: %d %s", code, msg)
	}
	if got := storedExemplars(e.pool, DefaultTenant); len(got) != 3 {
		t.Fatalf("the 128-rune exemplar is on %d replicas, want 3", len(got))
	}
	// Exemplars off: the invalid exemplar is not looked at, the samples are stored.
	e = newEnvDeps(t, cfg, withExemplars(false), active("a", "b", "c")...)
	s = series(lbls("__name__", "off_total"), sample(1, 0))
	s.Exemplars = []prompb.Exemplar{exemplar(1, 0, "trace_id", long)}
	if code, msg := e.post(t, encode(t, s)); code/100 != 2 {
		t.Fatalf("exemplars off, invalid exemplar: %d %s", code, msg)
	}
	if n := e.pool.replicasOf(DefaultTenant, `{__name__="off_total"} `+itoa(ts(0))+"@1"); n != 3 {
		t.Errorf("exemplars off: the series is on %d replicas, want 3", n)
	}
}

// Exemplars and metadata count toward the tenant's ingestion rate, as in Mimir; a push refused
// with 429 stores none of its metadata.
func TestPush_RateLimitCountsExemplarsAndMetadata(t *testing.T) {
	cfg := defaultConfig()
	cfg.IngestionRateLimit, cfg.IngestionBurstSize = 1, 10
	e := newEnvDeps(t, cfg, withExemplars(true), active("a", "b", "c")...)
	s := series(lbls("__name__", "req_total"), sample(1, 0))
	for i := range 20 {
		s.Exemplars = append(s.Exemplars, exemplar(float64(i), time.Duration(i)*time.Millisecond, "trace_id", itoa(int64(i))))
	}
	code, msg := e.post(t, encode(t, s))
	if code != http.StatusTooManyRequests || !strings.Contains(msg, "20 exemplars") {
		t.Fatalf("1 sample and 20 exemplars over a burst of 10: %d %q, want 429 naming the exemplars", code, msg)
	}
	md := []prompb.MetricMetadata{}
	for i := range 20 {
		md = append(md, prompb.MetricMetadata{MetricFamilyName: "m_" + itoa(int64(i)), Type: prompb.MetricMetadata_COUNTER, Help: "h"})
	}
	code, msg = e.post(t, encodeMetadata(t, md))
	if code != http.StatusTooManyRequests || !strings.Contains(msg, "20 metadata entries") {
		t.Fatalf("20 metadata entries over a burst of 10: %d %q, want 429", code, msg)
	}
	if addrs, _ := metadataHolders(e.pool, DefaultTenant, "m_0"); len(addrs) != 0 {
		t.Fatalf("metadata of a 429 push stored on %v", addrs)
	}
}

func encodeMetadata(t testing.TB, md []prompb.MetricMetadata, series ...prompb.TimeSeries) []byte {
	t.Helper()
	wr := prompb.WriteRequest{Timeseries: series, Metadata: md}
	b, err := wr.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return snappy.Encode(nil, b)
}

// metadataHolders returns the addresses of the fake ingesters that stored metadata of metric.
func metadataHolders(p *fakePool, tenant, metric string) (addrs []string, entries []*ingesterpb.MetricMetadata) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for addr, f := range p.ings {
		f.mu.Lock()
		for _, m := range f.meta[tenant] {
			if m.MetricFamilyName == metric {
				addrs = append(addrs, addr)
				entries = append(entries, m)
				break
			}
		}
		f.mu.Unlock()
	}
	slices.Sort(addrs)
	return addrs, entries
}

func TestPush_MetadataGoesToTheReplicasOfItsMetricName(t *testing.T) {
	e := newEnv(t, defaultConfig(), active("a", "b", "c", "d", "e", "f")...)
	md := []prompb.MetricMetadata{
		{Type: prompb.MetricMetadata_COUNTER, MetricFamilyName: "http_requests_total", Help: "Requests.", Unit: ""},
		{Type: prompb.MetricMetadata_HISTOGRAM, MetricFamilyName: "latency_seconds", Help: "Latency.", Unit: "seconds"},
	}
	// Prometheus sends metadata in requests of its own, without series.
	if code, msg := e.post(t, encodeMetadata(t, md)); code/100 != 2 {
		t.Fatalf("metadata-only push: %d %s", code, msg)
	}
	r := e.ring.Ring()
	place := ringstate.Placement{RF: 3}
	for _, m := range md {
		got, entries := metadataHolders(e.pool, DefaultTenant, m.MetricFamilyName)
		var want []string
		for _, mem := range r.ReplicationSetFor(SeriesHash(DefaultTenant, []Label{{"__name__", m.MetricFamilyName}}), place, testHeartbeatTime.Milliseconds(), nil) {
			want = append(want, mem.GRPCAddr)
		}
		slices.Sort(want)
		if !slices.Equal(got, want) {
			t.Errorf("metadata of %s on %v, want the replicas of its name's series %v", m.MetricFamilyName, got, want)
		}
		for _, x := range entries {
			if int32(x.Type) != int32(m.Type) || x.Help != m.Help || x.Unit != m.Unit {
				t.Errorf("stored %v, sent %v", x, m)
			}
		}
	}
}

func TestPush_InvalidMetadataIs400AndTheRestIsStored(t *testing.T) {
	e := newEnv(t, defaultConfig(), active("a", "b", "c")...)
	md := []prompb.MetricMetadata{
		{Type: prompb.MetricMetadata_COUNTER, MetricFamilyName: "ok_total", Help: "fine"},
		{Type: prompb.MetricMetadata_GAUGE, MetricFamilyName: "long_help", Help: strings.Repeat("h", DefaultMaxMetadataLength+1)},
		{Type: prompb.MetricMetadata_GAUGE, Help: "nameless"},
	}
	code, msg := e.post(t, encodeMetadata(t, md, series(lbls("__name__", "ok_total"), sample(1, 0))))
	if code != http.StatusBadRequest || !strings.Contains(msg, `help is 1025 bytes long`) || !strings.Contains(msg, `"long_help"`) ||
		!strings.Contains(msg, "-validation.max-metadata-length") || !strings.Contains(msg, "without a metric name") {
		t.Fatalf("got %d %q, want 400 naming both refusals", code, msg)
	}
	if got, _ := metadataHolders(e.pool, DefaultTenant, "ok_total"); len(got) != 3 {
		t.Errorf("the valid entry is on %v, want 3 replicas", got)
	}
	if got, _ := metadataHolders(e.pool, DefaultTenant, "long_help"); len(got) != 0 {
		t.Errorf("the refused entry is on %v", got)
	}
	if n := e.pool.replicasOf(DefaultTenant, `{__name__="ok_total"} `+itoa(ts(0))+"@1"); n != 3 {
		t.Errorf("the series is on %d replicas, want 3", n)
	}
}

func TestPushV2_ExemplarsAndMetadataAreStoredAndCounted(t *testing.T) {
	e := newEnvDeps(t, defaultConfig(), withExemplars(true), active("a", "b", "c", "d")...)
	in := []prompb.TimeSeries{
		series(lbls("__name__", "req_total", "job", "a"), sample(1, 0)),
		series(lbls("__name__", "req_total", "job", "b"), sample(2, 0)),
		series(lbls("__name__", "other_total"), sample(3, 0)),
	}
	resp, msg := postV2(t, e, toV2(t, in, nil, map[int]bool{0: true, 2: true}), ContentTypeV2)
	if resp.StatusCode/100 != 2 {
		t.Fatalf("push: %d %s", resp.StatusCode, msg)
	}
	if got := written(resp); got != [3]string{"3", "0", "2"} {
		t.Errorf("written headers %v, want 3 samples, 0 histograms, 2 exemplars", got)
	}
	total := 0
	for _, exs := range storedExemplars(e.pool, DefaultTenant) {
		total += len(exs)
		for _, x := range exs {
			if !strings.Contains(x, `{trace_id="t1"}`) {
				t.Errorf("stored exemplar %q", x)
			}
		}
	}
	if total != 6 {
		t.Errorf("%d exemplars stored over the replicas, want 2 × 3", total)
	}
	// toV2 writes the same metadata on every series: one entry per metric name reaches its replicas.
	for _, name := range []string{"req_total", "other_total"} {
		got, entries := metadataHolders(e.pool, DefaultTenant, name)
		if len(got) != 3 {
			t.Errorf("metadata of %s on %v, want 3 replicas", name, got)
		}
		for _, m := range entries {
			if m.Type != ingesterpb.MetricType_METRIC_TYPE_COUNTER || m.Help != "a counter" {
				t.Errorf("metadata %v", m)
			}
		}
	}
	e.pool.mu.Lock()
	for _, f := range e.pool.ings {
		f.mu.Lock()
		n := 0
		for _, m := range f.meta[DefaultTenant] {
			if m.MetricFamilyName == "req_total" {
				n++
			}
		}
		f.mu.Unlock()
		if n > 1 {
			t.Errorf("%s got req_total's metadata %d times, want once per request", f.addr, n)
		}
	}
	e.pool.mu.Unlock()
	// Exemplars disabled: the header says 0.
	e2 := newEnv(t, defaultConfig(), active("a", "b", "c")...)
	resp, _ = postV2(t, e2, toV2(t, in, nil, map[int]bool{0: true}), ContentTypeV2)
	if got := written(resp); got != [3]string{"3", "0", "0"} {
		t.Errorf("written headers without exemplar storage %v, want 0 exemplars", got)
	}
}

// TestDecode_ExemplarsAndMetadataAsPrompbReadsThem decodes a request with both and compares with
// the generated prompb code.
func TestDecode_ExemplarsAndMetadataAsPrompbReadsThem(t *testing.T) {
	s := series(lbls("__name__", "m", "a", "b"), sample(1, 0), sample(2, time.Second))
	s.Exemplars = []prompb.Exemplar{exemplar(0.5, 0, "trace_id", "x"), {Labels: lbls("t", "y"), Value: math.Copysign(0, -1), Timestamp: -5}}
	md := []prompb.MetricMetadata{{Type: prompb.MetricMetadata_SUMMARY, MetricFamilyName: "m", Help: "h", Unit: "u"}}
	wr := prompb.WriteRequest{Timeseries: []prompb.TimeSeries{s, series(lbls("__name__", "n"))}, Metadata: md}
	b, err := wr.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	var r WriteRequest
	if err := r.UnmarshalLimited(b, DecodeLimits{MaxExpansion: DefaultMaxExpansion}); err != nil {
		t.Fatal(err)
	}
	if r.Exemplars != 2 || r.Series[0].Exemplars != 2 || r.Series[1].Exemplars != 0 || r.Metadata != 1 {
		t.Fatalf("counts: %d %d %d %d", r.Exemplars, r.Series[0].Exemplars, r.Series[1].Exemplars, r.Metadata)
	}
	exs := r.SeriesExemplars(&r.Series[0])
	for i, want := range s.Exemplars {
		got := exs[i]
		if got.Value != want.Value || got.TimestampMs != want.Timestamp || len(got.Labels) != len(want.Labels) || got.Labels[0].Name != want.Labels[0].Name || got.Labels[0].Value != want.Labels[0].Value {
			t.Errorf("exemplar %d: %+v, want %+v", i, got, want)
		}
	}
	m := r.MetricMetadata()
	if len(m) != 1 || m[0].Type != 5 || m[0].MetricName != "m" || m[0].Help != "h" || m[0].Unit != "u" {
		t.Errorf("metadata %+v", m)
	}
	// Re-encoded with its exemplars, the series reads back in prompb the same.
	enc := appendSeriesEx(nil, &r.Series[0], exs)
	if len(enc) != seriesSizeEx(&r.Series[0], exs) {
		t.Fatalf("seriesSizeEx %d, encoded %d", seriesSizeEx(&r.Series[0], exs), len(enc))
	}
	var back prompb.WriteRequest
	if err := back.Unmarshal(enc); err != nil {
		t.Fatal(err)
	}
	if len(back.Timeseries) != 1 || len(back.Timeseries[0].Exemplars) != 2 || back.Timeseries[0].Exemplars[1].Timestamp != -5 || back.Timeseries[0].Exemplars[0].Value != 0.5 {
		t.Errorf("re-encoded: %+v", back.Timeseries)
	}
	menc := appendMetadata(nil, &m[0])
	if len(menc) != metadataFieldSize(&m[0]) {
		t.Fatalf("metadataFieldSize %d, encoded %d", metadataFieldSize(&m[0]), len(menc))
	}
	var mb prompb.WriteRequest
	if err := mb.Unmarshal(menc); err != nil || len(mb.Metadata) != 1 || mb.Metadata[0].String() != md[0].String() {
		t.Errorf("metadata re-encoded: %+v %v", mb.Metadata, err)
	}
}

// TestDecode_ExemplarsAreWithinTheExpansionBound: a body of near-empty exemplars is refused by
// the expansion bound, as near-empty series are.
func TestDecode_ExemplarsAreWithinTheExpansionBound(t *testing.T) {
	// One series holding 200k empty exemplars (2 bytes each in the body, ~64 bytes decoded).
	body := []byte{}
	inner := []byte{0x0a, 0x03, 0x0a, 0x01, 'a'}
	for range 200_000 {
		inner = append(inner, 0x1a, 0x00)
	}
	body = append(body, 0x0a)
	body = appendUvarintForTest(body, uint64(len(inner)))
	body = append(body, inner...)
	var r WriteRequest
	err := r.UnmarshalLimited(body, DecodeLimits{MaxExpansion: DefaultMaxExpansion})
	if err == nil || !strings.Contains(err.Error(), "exemplar") {
		t.Fatalf("got %v, want the expansion bound to refuse at an exemplar", err)
	}
	if r.DecodedBytes() > DefaultMaxExpansion*len(body)+decodeSlackBytes {
		t.Errorf("decoded %d bytes, over the bound", r.DecodedBytes())
	}
}

func appendUvarintForTest(b []byte, v uint64) []byte {
	for v >= 0x80 {
		b = append(b, byte(v)|0x80)
		v >>= 7
	}
	return append(b, byte(v))
}

// TestPush_ExemplarsWithoutSamplesAreForwarded: Prometheus sends a scrape's exemplars in TimeSeries
// of their own, without samples, in a request that may hold nothing else.
func TestPush_ExemplarsWithoutSamplesAreForwarded(t *testing.T) {
	e := newEnvDeps(t, defaultConfig(), withExemplars(true), active("a", "b", "c")...)
	s := series(lbls("__name__", "req_total", "job", "x"))
	s.Exemplars = []prompb.Exemplar{exemplar(1, 0, "trace_id", "abc")}
	if code, msg := e.post(t, encode(t, s)); code/100 != 2 {
		t.Fatalf("push: %d %s", code, msg)
	}
	got := storedExemplars(e.pool, DefaultTenant)
	if len(got) != 3 {
		t.Fatalf("exemplars on %d replicas, want 3: %v", len(got), got)
	}
	// Without exemplar storage such a series is nothing: no call at all.
	e2 := newEnv(t, defaultConfig(), active("a", "b", "c")...)
	if code, msg := e2.post(t, encode(t, s)); code/100 != 2 {
		t.Fatalf("push: %d %s", code, msg)
	}
	if n := e2.pool.totalCalls(); n != 0 {
		t.Errorf("%d ingester calls for a request of dropped exemplars", n)
	}
}

// TestPush_MetadataWithoutQuorumIs5xx: metadata no quorum of its replicas stored fails the push
// with a retryable 5xx, whether it came alone or with series that were stored.
func TestPush_MetadataWithoutQuorumIs5xx(t *testing.T) {
	e := newEnv(t, defaultConfig(), active("a", "b", "c")...)
	for _, id := range []string{"a", "b"} {
		e.pool.ing(id).set(func(f *fakeIngester) { f.callErr = errors.New("down") })
	}
	md := []prompb.MetricMetadata{{Type: prompb.MetricMetadata_COUNTER, MetricFamilyName: "x_total", Help: "X."}}
	code, msg := e.post(t, encodeMetadata(t, md))
	if code != http.StatusInternalServerError || !strings.Contains(msg, `metric metadata of "x_total": stored by 1 of 3 replicas, need quorum 2`) {
		t.Fatalf("metadata-only push with 2 of 3 replicas down: %d %q", code, msg)
	}
	// With one replica down the quorum holds.
	e.pool.ing("b").set(func(f *fakeIngester) { f.callErr = nil })
	if code, msg := e.post(t, encodeMetadata(t, md, series(lbls("__name__", "x_total"), sample(1, 0)))); code/100 != 2 {
		t.Fatalf("one replica down: %d %q", code, msg)
	}
}
