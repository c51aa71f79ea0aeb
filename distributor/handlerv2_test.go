package distributor

import (
	"bytes"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/golang/snappy"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/prompb"
	writev2 "github.com/prometheus/prometheus/prompb/io/prometheus/write/v2"
)

// toV2 is the same series as a remote-write 2.0 request (snappy-compressed), as Prometheus 3 sends
// it; histograms and exemplars are added to the series named in extra.
func toV2(t testing.TB, in []prompb.TimeSeries, withHistogram, withExemplar map[int]bool) []byte {
	t.Helper()
	st := writev2.NewSymbolTable()
	req := writev2.Request{}
	for i, ps := range in {
		var kv []string
		for _, l := range ps.Labels {
			kv = append(kv, l.Name, l.Value)
		}
		ts := writev2.TimeSeries{LabelsRefs: st.SymbolizeLabels(labels.FromStrings(kv...), nil),
			Metadata: writev2.Metadata{Type: writev2.Metadata_METRIC_TYPE_COUNTER, HelpRef: st.Symbolize("a counter")}}
		for _, s := range ps.Samples {
			ts.Samples = append(ts.Samples, writev2.Sample{Value: s.Value, Timestamp: s.Timestamp})
		}
		if withHistogram[i] {
			ts.Histograms = append(ts.Histograms, writev2.Histogram{Count: &writev2.Histogram_CountInt{CountInt: 1}, Timestamp: ts.Samples[0].Timestamp})
			ts.Samples = nil
		}
		if withExemplar[i] {
			ts.Exemplars = append(ts.Exemplars, writev2.Exemplar{LabelsRefs: st.SymbolizeLabels(labels.FromStrings("trace_id", "t1"), nil), Value: 1, Timestamp: ts.Samples[0].Timestamp})
		}
		req.Timeseries = append(req.Timeseries, ts)
	}
	req.Symbols = st.Symbols()
	b, err := req.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return snappy.Encode(nil, b)
}

func postV2(t testing.TB, e *testEnv, body []byte, contentType string) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, e.srv.URL+"/api/v1/push", bytes.NewReader(body))
	req.Header.Set("Content-Encoding", "snappy")
	req.Header.Set("Content-Type", contentType)
	req.Header.Set("X-Prometheus-Remote-Write-Version", "2.0.0")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(resp.Body)
	return resp, string(msg)
}

func written(resp *http.Response) [3]string {
	return [3]string{resp.Header.Get(HeaderSamplesWritten), resp.Header.Get(HeaderHistogramsWritten), resp.Header.Get(HeaderExemplarsWritten)}
}

func TestPushV2_StoresLikeV1AndSaysWhatWasWritten(t *testing.T) {
	e := newEnv(t, defaultConfig(), active("a", "b", "c", "d", "e")...)
	in := manySeries(50)
	resp, msg := postV2(t, e, toV2(t, in, nil, map[int]bool{3: true}), ContentTypeV2)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("push: %d %s", resp.StatusCode, msg)
	}
	if got, want := written(resp), [3]string{"50", "0", "0"}; got != want {
		t.Errorf("written headers %v, want %v", got, want)
	}
	e.d.Wait() // the push answers once a quorum stored each series: the third may still be storing
	for _, s := range in {
		if n := e.pool.replicasOf(DefaultTenant, rendered(s)); n != 3 {
			t.Fatalf("series %s stored on %d replicas, want 3", rendered(s), n)
		}
	}
	// 1.0 on the same endpoint: stored, and no 2.0 headers.
	code, msg := e.post(t, encode(t, manySeries(2)...))
	if code != http.StatusOK {
		t.Fatalf("1.0 push after 2.0: %d %s", code, msg)
	}
	for v, want := range map[string]float64{"1.0": 1, "2.0": 1} {
		if got := testutil.ToFloat64(e.d.m.requestsByVersion.WithLabelValues(v)); got != want {
			t.Errorf("raftingest_distributor_remote_write_requests_total{version=%q} = %v, want %v", v, got, want)
		}
	}
}

func TestPushV2_PartialRefusalCountsWhatWasWritten(t *testing.T) {
	e := newEnv(t, defaultConfig(), active("a", "b", "c", "d", "e")...)
	in := manySeries(10)
	in[7].Labels = lbls("__name__", "bad name!", "i", "7") // invalid metric name: refused with 400
	resp, msg := postV2(t, e, toV2(t, in, map[int]bool{2: true}, nil), "application/x-protobuf; proto=io.prometheus.write.v2.Request")
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(msg, "native histogram") {
		t.Fatalf("push: %d %q, want 400 naming the native histogram refusal", resp.StatusCode, msg)
	}
	// 10 series: one histogram series refused, one with a bad name refused, 8 samples stored.
	if got, want := written(resp), [3]string{"8", "0", "0"}; got != want {
		t.Errorf("written headers %v, want %v", got, want)
	}
	e.d.Wait()
	if n := e.pool.replicasOf(DefaultTenant, rendered(in[0])); n != 3 {
		t.Errorf("a valid series of the request is on %d replicas, want 3", n)
	}
}

func TestPushV2_RefusalsCarryHeaders(t *testing.T) {
	e := newEnv(t, defaultConfig(), active("a", "b", "c")...)
	resp, msg := postV2(t, e, []byte("garbage"), ContentTypeV2)
	if resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("garbage: %d %s", resp.StatusCode, msg)
	}
	if got, want := written(resp), [3]string{"0", "0", "0"}; got != want {
		t.Errorf("written headers on a 400 %v, want %v", got, want)
	}
	resp, msg = postV2(t, e, toV2(t, manySeries(1), nil, nil), "application/x-protobuf;proto=io.prometheus.write.v3.Request")
	if resp.StatusCode != http.StatusUnsupportedMediaType || !strings.Contains(msg, "io.prometheus.write.v2.Request (2.0)") {
		t.Fatalf("unknown message: %d %q, want 415 naming both supported ones", resp.StatusCode, msg)
	}
	if resp.Header.Get(HeaderSamplesWritten) != "" {
		t.Errorf("a 415 for an unknown message carries 2.0 headers")
	}
}
