package querier

import (
	"bytes"
	"encoding/binary"
	"hash/crc32"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/golang/snappy"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/prompb"
	"github.com/prometheus/prometheus/tsdb/chunkenc"

	"github.com/raftingest/raftingest/ringstate"
)

// testAPI serves a Querier over two fake ingesters holding tenant "t1": up{job="api"} = 1 every 15 s
// from 0 to 600 s, and tenant "t2": up{job="other"}.
func testAPI(t *testing.T, multitenancy bool, mutate func(*Config)) *httptest.Server {
	t.Helper()
	a, b := startFakeIngester(t), startFakeIngester(t)
	var ones []sample
	for ts := int64(0); ts <= 600_000; ts += 15_000 {
		ones = append(ones, sample{ts, 1})
	}
	for _, f := range []*fakeIngester{a, b} {
		f.add("t1", labels.FromStrings("__name__", "up", "job", "api"), xorChunks(t, ones, 120)...)
		f.add("anonymous", labels.FromStrings("__name__", "up", "job", "api"), xorChunks(t, ones, 120)...)
		f.add("t2", labels.FromStrings("__name__", "up", "job", "other"), xorChunks(t, ones, 120)...)
	}
	var cfg Config
	cfg.RegisterFlags(flagSet())
	if mutate != nil {
		mutate(&cfg)
	}
	q, err := New(cfg, Deps{
		Ring:                newRing(t, member{addr: a.addr, state: ringstate.ACTIVE}, member{addr: b.addr, state: ringstate.ACTIVE}),
		ReplicationFactor:   2,
		HeartbeatTimeout:    10 * time.Second,
		MultitenancyEnabled: multitenancy,
		DefaultTenant:       "anonymous",
		ValidateTenant: func(s string) error {
			if strings.ContainsAny(s, "/|") {
				return io.ErrUnexpectedEOF
			}
			return nil
		},
		Registerer: prometheus.NewRegistry(),
		Now:        func() time.Time { return time.UnixMilli(300_000) },
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(q.Handler())
	t.Cleanup(func() { srv.Close(); q.Close() })
	return srv
}

func get(t *testing.T, srv *httptest.Server, path string, params url.Values, tenantID string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, srv.URL+path+"?"+params.Encode(), nil)
	if tenantID != "" {
		req.Header.Set(TenantHeader, tenantID)
	}
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// The success envelope, byte for byte as Prometheus writes it: integer timestamps without a
// fraction, string values, labels in order, no warnings key when there are none.
func TestAPI_QueryBytesMatchPrometheus(t *testing.T) {
	srv := testAPI(t, false, nil)
	cases := []struct {
		path   string
		params url.Values
		want   string
	}{
		{"/prometheus/api/v1/query", url.Values{"query": {"up"}, "time": {"300"}},
			`{"status":"success","data":{"resultType":"vector","result":[{"metric":{"__name__":"up","job":"api"},"value":[300,"1"]}]}}`},
		{"/prometheus/api/v1/query", url.Values{"query": {"sum(up) / 0"}, "time": {"300.5"}},
			`{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[300.500,"+Inf"]}]}}`},
		{"/prometheus/api/v1/query", url.Values{"query": {"1e-7"}, "time": {"1"}},
			`{"status":"success","data":{"resultType":"scalar","result":[1,"0.0000001"]}}`},
		{"/prometheus/api/v1/query_range", url.Values{"query": {`up{job="api"} * 2`}, "start": {"0"}, "end": {"30"}, "step": {"15"}},
			`{"status":"success","data":{"resultType":"matrix","result":[{"metric":{"job":"api"},"values":[[0,"2"],[15,"2"],[30,"2"]]}]}}`},
		{"/prometheus/api/v1/labels", url.Values{}, `{"status":"success","data":["__name__","job"]}`},
		{"/prometheus/api/v1/label/job/values", url.Values{}, `{"status":"success","data":["api"]}`},
		{"/prometheus/api/v1/series", url.Values{"match[]": {"up"}},
			`{"status":"success","data":[{"__name__":"up","job":"api"}]}`},
		{"/prometheus/api/v1/query", url.Values{"query": {`label_replace(vector(1), "x", "<&>", "", "")`}, "time": {"1"}},
			`{"status":"success","data":{"resultType":"vector","result":[{"metric":{"x":"\u003c\u0026\u003e"},"value":[1,"1"]}]}}`},
	}
	for _, c := range cases {
		code, body := get(t, srv, c.path, c.params, "")
		if code != http.StatusOK || body != c.want {
			t.Errorf("%s %v:\n got %d %s\nwant 200 %s", c.path, c.params, code, body, c.want)
		}
	}
}

// Bad input gets Prometheus' error envelope and status codes.
func TestAPI_BadInput(t *testing.T) {
	srv := testAPI(t, false, func(c *Config) { c.MaxSamples = 5 })
	cases := []struct {
		why, path string
		params    url.Values
		code      int
		errType   string
		contains  string
	}{
		{"unparsable PromQL", "/prometheus/api/v1/query", url.Values{"query": {"sum(rate(up[5m]"}}, 400, "bad_data", `invalid parameter \"query\": 1:`},
		{"bad time", "/prometheus/api/v1/query", url.Values{"query": {"up"}, "time": {"yesterday"}}, 400, "bad_data", `invalid parameter \"time\"`},
		{"bad start", "/prometheus/api/v1/query_range", url.Values{"query": {"up"}, "start": {"x"}, "end": {"1"}, "step": {"1"}}, 400, "bad_data", `invalid parameter \"start\"`},
		{"end before start", "/prometheus/api/v1/query_range", url.Values{"query": {"up"}, "start": {"10"}, "end": {"1"}, "step": {"1"}}, 400, "bad_data", "end timestamp must not be before start time"},
		{"zero step", "/prometheus/api/v1/query_range", url.Values{"query": {"up"}, "start": {"0"}, "end": {"1"}, "step": {"0"}}, 400, "bad_data", "zero or negative query resolution step"},
		{"too many points", "/prometheus/api/v1/query_range", url.Values{"query": {"up"}, "start": {"0"}, "end": {"11001"}, "step": {"1"}}, 400, "bad_data", "exceeded maximum resolution of 11,000 points"},
		{"series without match[]", "/prometheus/api/v1/series", url.Values{}, 400, "bad_data", "no match[] parameter provided"},
		{"empty matcher", "/prometheus/api/v1/series", url.Values{"match[]": {`{job=~".*"}`}}, 400, "bad_data", "at least one non-empty matcher"},
		{"invalid label name", "/prometheus/api/v1/label/%FF/values", url.Values{}, 400, "bad_data", "invalid label name"},
		{"over -querier.max-samples", "/prometheus/api/v1/query_range", url.Values{"query": {"up"}, "start": {"0"}, "end": {"600"}, "step": {"15"}}, 422, "execution", "too many samples"},
	}
	for _, c := range cases {
		code, body := get(t, srv, c.path, c.params, "")
		if code != c.code || !strings.HasPrefix(body, `{"status":"error","errorType":"`+c.errType+`","error":"`) || !strings.Contains(body, c.contains) {
			t.Errorf("%s: got %d %s; want %d %s containing %q", c.why, code, body, c.code, c.errType, c.contains)
		}
	}
}

func TestAPI_Multitenancy(t *testing.T) {
	srv := testAPI(t, true, nil)
	p := url.Values{"query": {"up"}, "time": {"300"}}
	if code, body := get(t, srv, "/prometheus/api/v1/query", p, ""); code != http.StatusUnauthorized || !strings.Contains(body, "no org id") {
		t.Fatalf("no header: %d %s, want 401 no org id", code, body)
	}
	if code, body := get(t, srv, "/prometheus/api/v1/query", p, "a|b"); code != http.StatusBadRequest {
		t.Fatalf("invalid tenant: %d %s, want 400", code, body)
	}
	if _, body := get(t, srv, "/prometheus/api/v1/query", p, "t2"); !strings.Contains(body, `"job":"other"`) || strings.Contains(body, `"api"`) {
		t.Fatalf("tenant t2 sees %s", body)
	}
	if _, body := get(t, srv, "/prometheus/api/v1/query", p, "nobody"); body != `{"status":"success","data":{"resultType":"vector","result":[]}}` {
		t.Fatalf("tenant without data: %s", body)
	}
}

func remoteReadReq(t *testing.T, srv *httptest.Server, rr *prompb.ReadRequest) (*http.Response, []byte) {
	t.Helper()
	raw, err := rr.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	resp, err := srv.Client().Post(srv.URL+"/prometheus/api/v1/read", "application/x-protobuf", bytes.NewReader(snappy.Encode(nil, raw)))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp, body
}

func TestRemoteRead_SamplesAndStreamedChunks(t *testing.T) {
	srv := testAPI(t, false, nil)
	query := &prompb.Query{StartTimestampMs: 100_000, EndTimestampMs: 200_000,
		Matchers: []*prompb.LabelMatcher{{Type: prompb.LabelMatcher_EQ, Name: "__name__", Value: "up"}}}
	wantTs := []int64{105_000, 120_000, 135_000, 150_000, 165_000, 180_000, 195_000}

	resp, body := remoteReadReq(t, srv, &prompb.ReadRequest{Queries: []*prompb.Query{query}})
	if resp.StatusCode != 200 || resp.Header.Get("Content-Encoding") != "snappy" {
		t.Fatalf("samples: %d %s", resp.StatusCode, body)
	}
	raw, err := snappy.Decode(nil, body)
	if err != nil {
		t.Fatal(err)
	}
	var rr prompb.ReadResponse
	if err := rr.Unmarshal(raw); err != nil {
		t.Fatal(err)
	}
	if len(rr.Results) != 1 || len(rr.Results[0].Timeseries) != 1 {
		t.Fatalf("want one series: %v", rr.Results)
	}
	var got []int64
	for _, s := range rr.Results[0].Timeseries[0].Samples {
		got = append(got, s.Timestamp)
	}
	if !equalInts(got, wantTs) {
		t.Fatalf("samples response timestamps %v, want %v", got, wantTs)
	}

	resp, body = remoteReadReq(t, srv, &prompb.ReadRequest{Queries: []*prompb.Query{query},
		AcceptedResponseTypes: []prompb.ReadRequest_ResponseType{prompb.ReadRequest_STREAMED_XOR_CHUNKS}})
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/x-streamed-protobuf; proto=prometheus.ChunkedReadResponse") {
		t.Fatalf("streamed: %d %s %s", resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}
	got = nil
	for len(body) > 0 {
		size, n := binary.Uvarint(body)
		if n <= 0 || len(body) < n+4+int(size) {
			t.Fatalf("truncated frame")
		}
		sum := binary.BigEndian.Uint32(body[n:])
		data := body[n+4 : n+4+int(size)]
		if crc32.Checksum(data, crc32.MakeTable(crc32.Castagnoli)) != sum {
			t.Fatalf("frame checksum mismatch")
		}
		body = body[n+4+int(size):]
		var cr prompb.ChunkedReadResponse
		if err := cr.Unmarshal(data); err != nil {
			t.Fatal(err)
		}
		for _, cs := range cr.ChunkedSeries {
			for _, c := range cs.Chunks {
				chk, err := chunkenc.FromData(chunkenc.Encoding(c.Type), c.Data)
				if err != nil {
					t.Fatal(err)
				}
				it := chk.Iterator(nil)
				for it.Next() == chunkenc.ValFloat {
					ts, _ := it.At()
					got = append(got, ts)
				}
			}
		}
	}
	if !equalInts(got, wantTs) {
		t.Fatalf("streamed chunks timestamps %v, want %v", got, wantTs)
	}

	if resp, body := remoteReadReq(t, srv, &prompb.ReadRequest{Queries: []*prompb.Query{query},
		AcceptedResponseTypes: []prompb.ReadRequest_ResponseType{42}}); resp.StatusCode != 400 {
		t.Fatalf("unknown response type: %d %s, want 400", resp.StatusCode, body)
	}
	if r, err := srv.Client().Post(srv.URL+"/prometheus/api/v1/read", "application/x-protobuf", strings.NewReader("not snappy")); err != nil || r.StatusCode != 400 {
		t.Fatalf("garbage body: %v %v, want 400", r, err)
	} else {
		r.Body.Close()
	}
}

func equalInts(a, b []int64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

var pointOne, pointTwo = 0.1, 0.2 // variables: constant arithmetic would be exact

// The encoders match json-iterator's output (jsonutil pads the millisecond fraction to three
// digits and keeps trailing zeros: 300.500, not 300.5) for Prometheus' edge cases.
func TestJSON_MatchesPrometheusEncoding(t *testing.T) {
	for _, c := range []struct {
		got, want string
	}{
		{string(appendTimestamp(nil, 1_700_000_000_005)), "1700000000.005"},
		{string(appendTimestamp(nil, 1_700_000_000_050)), "1700000000.050"},
		{string(appendTimestamp(nil, -1_500)), "-1.500"},
		{string(appendTimestamp(nil, 0)), "0"},
		{string(appendFloat(nil, math.NaN())), `"NaN"`},
		{string(appendFloat(nil, math.Inf(-1))), `"-Inf"`},
		{string(appendFloat(nil, 1e21)), `"1e+21"`},
		{string(appendFloat(nil, 1e20)), `"100000000000000000000"`},
		{string(appendFloat(nil, 1e-7)), `"1e-07"`},
		{string(appendFloat(nil, pointOne+pointTwo)), `"0.30000000000000004"`},
		{string(appendString(nil, "a\"b\\c\n\t\x01<>&\u2028\xff")), `"a\"b\\c\n\t\u0001\u003c\u003e\u0026\u2028\ufffd"`},
	} {
		if c.got != c.want {
			t.Errorf("got %s, want %s", c.got, c.want)
		}
	}
}
