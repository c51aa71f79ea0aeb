package ingester

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/golang/snappy"
	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/prompb"
)

func postWrite(t *testing.T, addr string, wr *prompb.WriteRequest) (int, string) {
	t.Helper()
	raw, err := wr.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest(http.MethodPost, "http://"+addr+"/api/v1/push", bytes.NewReader(snappy.Encode(nil, raw)))
	req.Header.Set("Content-Encoding", "snappy")
	req.Header.Set("Content-Type", "application/x-protobuf")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func getJSON(t *testing.T, u string, into any) {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d %s", u, resp.StatusCode, b)
	}
	var env struct {
		Status string          `json:"status"`
		Data   json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(b, &env); err != nil || env.Status != "success" {
		t.Fatalf("GET %s: %s (%v)", u, b, err)
	}
	if err := json.Unmarshal(env.Data, into); err != nil {
		t.Fatalf("GET %s: data %s: %v", u, env.Data, err)
	}
}

type exemplarResult struct {
	SeriesLabels map[string]string `json:"seriesLabels"`
	Exemplars    []struct {
		Labels    map[string]string `json:"labels"`
		Value     string            `json:"value"`
		Timestamp float64           `json:"timestamp"`
	} `json:"exemplars"`
}

// TestExemplarsAndMetadata_ThroughAThreeNodeCluster pushes exemplars and metadata to one member of
// a real 3-node cluster (Raft, gRPC, WAL) and reads them back through another, merged across the
// replicas.
func TestExemplarsAndMetadata_ThroughAThreeNodeCluster(t *testing.T) {
	c := startInProcess(t, 3, "-ingester.max-global-exemplars-per-user", "1000")
	now := time.Now().Truncate(time.Second)
	var wr prompb.WriteRequest
	for i, job := range []string{"a", "b", "c", "d"} {
		ts := prompb.TimeSeries{Labels: []prompb.Label{{Name: "__name__", Value: "req_total"}, {Name: "job", Value: job}},
			Samples: []prompb.Sample{{Value: float64(i), Timestamp: now.UnixMilli()}}}
		ts.Exemplars = []prompb.Exemplar{{Labels: []prompb.Label{{Name: "trace_id", Value: "t-" + job}}, Value: float64(i) + 0.5, Timestamp: now.UnixMilli()}}
		wr.Timeseries = append(wr.Timeseries, ts)
	}
	if code, msg := postWrite(t, c.cfgs[0].HTTPAddr, &wr); code/100 != 2 {
		t.Fatalf("push: %d %s", code, msg)
	}
	md := &prompb.WriteRequest{Metadata: []prompb.MetricMetadata{
		{Type: prompb.MetricMetadata_COUNTER, MetricFamilyName: "req_total", Help: "Requests served."},
		{Type: prompb.MetricMetadata_GAUGE, MetricFamilyName: "temp", Help: "Temperature.", Unit: "celsius"},
	}}
	if code, msg := postWrite(t, c.cfgs[0].HTTPAddr, md); code/100 != 2 {
		t.Fatalf("metadata push: %d %s", code, msg)
	}
	check := func(via int) {
		t.Helper()
		base := "http://" + c.cfgs[via].HTTPAddr + "/prometheus/api/v1/"
		var ex []exemplarResult
		getJSON(t, base+"query_exemplars?"+url.Values{"query": {`rate(req_total{job=~"a|c"}[5m]) or temp`}}.Encode(), &ex)
		if len(ex) != 2 || ex[0].SeriesLabels["job"] != "a" || ex[1].SeriesLabels["job"] != "c" {
			t.Fatalf("via member %d: exemplars %+v, want req_total of jobs a and c", via, ex)
		}
		for _, r := range ex {
			if len(r.Exemplars) != 1 || r.Exemplars[0].Labels["trace_id"] != "t-"+r.SeriesLabels["job"] ||
				r.Exemplars[0].Timestamp != float64(now.Unix()) {
				t.Errorf("via member %d: series %v has exemplars %+v, want its one exemplar once (replicas merged)", via, r.SeriesLabels, r.Exemplars)
			}
		}
		if ex[1].Exemplars[0].Value != "2.5" {
			t.Errorf("value %q, want \"2.5\"", ex[1].Exemplars[0].Value)
		}
		var meta map[string][]map[string]string
		getJSON(t, base+"metadata", &meta)
		want := map[string][]map[string]string{
			"req_total": {{"type": "counter", "help": "Requests served.", "unit": ""}},
			"temp":      {{"type": "gauge", "help": "Temperature.", "unit": "celsius"}},
		}
		if got, _ := json.Marshal(meta); string(got) != mustJSON(t, want) {
			t.Errorf("via member %d: metadata %s, want %s", via, got, mustJSON(t, want))
		}
		meta = nil
		getJSON(t, base+"metadata?limit=1", &meta)
		if len(meta) != 1 {
			t.Errorf("limit=1: %v", meta)
		}
		meta = nil
		getJSON(t, base+"metadata?metric=temp", &meta)
		if len(meta) != 1 || meta["temp"] == nil {
			t.Errorf("metric=temp: %v", meta)
		}
	}
	check(1)
	check(2)
}

func mustJSON(t *testing.T, v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// Exemplars that come in a native histogram's own series (as remote-write 2.0 senders put them)
// are stored like a float series' exemplars: the ingester's push path must not skip them for
// histogram series (a merge regression a review caught).
func TestExemplars_OfHistogramSeriesStored(t *testing.T) {
	_, cfg := startSingleNode(t, nil, "-ingester.max-global-exemplars-per-user", "1000")
	now := time.Now().Truncate(time.Second)
	h := &histogram.Histogram{Count: 2, Sum: 3, Schema: 0, ZeroThreshold: 0.001,
		PositiveSpans: []histogram.Span{{Offset: 0, Length: 1}}, PositiveBuckets: []int64{2}}
	mk := func(name string, withHist bool) prompb.TimeSeries {
		ts := prompb.TimeSeries{Labels: []prompb.Label{{Name: "__name__", Value: name}}}
		if withHist {
			ts.Histograms = []prompb.Histogram{prompb.FromIntHistogram(now.UnixMilli(), h)}
		} else {
			ts.Samples = []prompb.Sample{{Value: 1, Timestamp: now.UnixMilli()}}
		}
		ts.Exemplars = []prompb.Exemplar{{Labels: []prompb.Label{{Name: "trace_id", Value: "x-" + name}}, Value: 1, Timestamp: now.UnixMilli()}}
		return ts
	}
	wr := &prompb.WriteRequest{Timeseries: []prompb.TimeSeries{mk("h_hist", true), mk("f_float", false)}}
	if code, msg := postWrite(t, cfg.HTTPAddr, wr); code/100 != 2 {
		t.Fatalf("push: %d %s", code, msg)
	}
	for _, q := range []string{"f_float", "h_hist"} {
		var ex []exemplarResult
		getJSON(t, "http://"+cfg.HTTPAddr+"/prometheus/api/v1/query_exemplars?"+url.Values{"query": {q}}.Encode(), &ex)
		if len(ex) != 1 || len(ex[0].Exemplars) != 1 {
			t.Errorf("%s: %+v, want the one exemplar of the acknowledged push", q, ex)
		}
	}
}
