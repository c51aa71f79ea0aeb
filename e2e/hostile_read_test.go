package e2e

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang/snappy"
	"github.com/prometheus/prometheus/prompb"

	pc "github.com/raftingest/raftingest/internal/proccluster"
)

// The read path's limits, small enough for a test: see TestProcess_HostileReads.
var hostileReadFlags = []string{
	"-querier.max-fetched-series-per-query=100",
	"-querier.max-fetched-chunks-per-query=500",
	"-querier.max-fetched-chunk-bytes-per-query=200000",
	"-store.max-labels-query-length=10m",
}

// hrGet sends GET http://addr+path?params and returns the status and body.
func hrGet(t *testing.T, addr, path string, params url.Values) (int, string) {
	t.Helper()
	resp, err := (&http.Client{Timeout: 30 * time.Second}).Get("http://" + addr + path + "?" + params.Encode())
	if err != nil {
		t.Fatalf("GET %s%s: %v", addr, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// hrRemoteRead posts body (snappy-compressed already, or not) to addr's remote-read endpoint.
func hrRemoteRead(addr string, body []byte) (int, string, error) {
	req, err := http.NewRequest(http.MethodPost, "http://"+addr+"/prometheus/api/v1/read", bytes.NewReader(body))
	if err != nil {
		return 0, "", err
	}
	req.Header.Set("Content-Encoding", "snappy")
	req.Header.Set("Content-Type", "application/x-protobuf")
	resp, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), nil
}

func hrReadRequest(t *testing.T, name string, mint, maxt int64, typ prompb.ReadRequest_ResponseType) []byte {
	t.Helper()
	rr := &prompb.ReadRequest{AcceptedResponseTypes: []prompb.ReadRequest_ResponseType{typ},
		Queries: []*prompb.Query{{StartTimestampMs: mint, EndTimestampMs: maxt,
			Matchers: []*prompb.LabelMatcher{{Type: prompb.LabelMatcher_EQ, Name: "__name__", Value: name}}}}}
	raw, err := rr.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return snappy.Encode(nil, raw)
}

// hrPush writes series in batches of 10 to addr, failing the test on anything but 2xx.
func hrPush(t *testing.T, addr string, ss []prompb.TimeSeries) {
	t.Helper()
	for len(ss) > 0 {
		n := min(10, len(ss))
		if code, body, err := push(addr, "", &prompb.WriteRequest{Timeseries: ss[:n]}); err != nil || code/100 != 2 {
			t.Fatalf("push: %d %q %v", code, body, err)
		}
		ss = ss[n:]
	}
}

// hrSeries returns n series name{i="000".."n-1"}, each with k samples every step ms ending at end;
// random values (which compress badly) when noisy, else a constant.
func hrSeries(name string, n, k int, step, end int64, noisy bool) []prompb.TimeSeries {
	rng := rand.New(rand.NewPCG(1, 2))
	var out []prompb.TimeSeries
	for i := range n {
		var smps []prompb.Sample
		for j := range k {
			ts := end - int64(k-1-j)*step
			v := 1.0
			if noisy {
				ts -= rng.Int64N(step / 2)
				v = rng.Float64() * 1e6
			}
			smps = append(smps, prompb.Sample{Timestamp: ts, Value: v})
		}
		out = append(out, series([]string{"__name__", name, "i", fmt.Sprintf("%03d", i)}, smps...))
	}
	return out
}

// hrAPIError decodes Prometheus' error envelope.
func hrAPIError(body string) (status, errorType, msg string) {
	var env struct{ Status, ErrorType, Error string }
	_ = json.Unmarshal([]byte(body), &env)
	return env.Status, env.ErrorType, env.Error
}

// TestProcess_HostileReads sends a real 3-node cluster the reads a hostile or careless client
// would: snappy bombs to remote read, queries that fetch more series, chunks or chunk bytes than the
// limits allow (from the ingesters, then from the bucket), and label queries without a time range.
// Each gets its status and message; the node keeps answering, and its RSS and goroutine count stay
// bounded.
func TestProcess_HostileReads(t *testing.T) {
	skipShort(t)
	_, a, b, cc := startCluster3(t, hostileReadFlags...)
	now := time.Now().Truncate(time.Second).UnixMilli() - 1000
	nowSec := strconv.FormatInt(now/1000, 10)

	// The data. hr_old first: a sample 30 minutes old, outside the label queries' 10m window.
	hrPush(t, a.HTTPAddr, []prompb.TimeSeries{series([]string{"__name__", "hr_old", "hr_old_label", "x"}, prompb.Sample{Timestamp: now - 30*60_000, Value: 1})})
	hrPush(t, a.HTTPAddr, []prompb.TimeSeries{series([]string{"__name__", "hr_new", "hr_new_label", "y"}, prompb.Sample{Timestamp: now, Value: 1})})
	// 150 series of one sample: 150 unique series (over 100), 450 chunks (3 replicas), a few KB.
	hrPush(t, a.HTTPAddr, hrSeries("hr_wide", 150, 1, 1000, now, false))
	// 60 series of 1200 constant samples: 10 chunks each, 1800 with the replicas (over 500), ~100 KB.
	hrPush(t, a.HTTPAddr, hrSeries("hr_chunks", 60, 1200, 250, now, false))
	// 40 series of 360 random samples: 360 chunks with the replicas, ~1 KB each (over 200,000 bytes).
	hrPush(t, a.HTTPAddr, hrSeries("hr_bytes", 40, 360, 250, now, true))

	rss0 := storageMetric(t, a.HTTPAddr, "process_resident_memory_bytes")
	gor0 := storageMetric(t, a.HTTPAddr, "go_goroutines")
	if rss0 <= 0 || gor0 <= 0 {
		t.Fatalf("no process metrics: rss %v goroutines %v", rss0, gor0)
	}

	t.Run("snappy bomb to remote read", func(t *testing.T) {
		// 6 bytes whose snappy header claims 4 GiB; 16 at once.
		bomb := append(binary.AppendUvarint(nil, 1<<32-1), 0x00)
		var wg sync.WaitGroup
		errs := make(chan string, 16)
		for range 16 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				code, body, err := hrRemoteRead(a.HTTPAddr, bomb)
				if err != nil || code != http.StatusRequestEntityTooLarge || !strings.Contains(body, "decodes to 4294967295 bytes, more than the limit of 1048576 bytes") {
					errs <- fmt.Sprintf("%d %q %v", code, body, err)
				}
			}()
		}
		wg.Wait()
		close(errs)
		for e := range errs {
			t.Errorf("snappy bomb: %s; want 413 naming the claimed size and the limit", e)
		}
		// A body over the compressed bound: 413 too.
		if code, body, err := hrRemoteRead(a.HTTPAddr, bytes.Repeat([]byte{0xff}, 2<<20)); err != nil || code != http.StatusRequestEntityTooLarge {
			t.Errorf("2 MiB body: %d %q %v; want 413", code, body, err)
		}
	})

	// Each limit: the API answers 422 with Mimir's message, for PromQL, the series endpoint and remote
	// read, while a query within the limits succeeds.
	limits := []struct {
		name, metric, want string
		seriesAPIFails     bool
	}{
		{"series", "hr_wide", "the query exceeded the maximum number of series (limit: 100 series) (err-mimir-max-series-per-query)", true},
		{"chunks", "hr_chunks", "the query exceeded the maximum number of chunks (limit: 500 chunks) (err-mimir-max-chunks-per-query)", false},
		{"chunk bytes", "hr_bytes", "the query exceeded the aggregated chunks size limit (limit: 200000 bytes) (err-mimir-max-chunks-bytes-per-query)", false},
	}
	for _, l := range limits {
		t.Run("max fetched "+l.name, func(t *testing.T) {
			for _, c := range []struct {
				path   string
				params url.Values
			}{
				{"/prometheus/api/v1/query", url.Values{"query": {"count_over_time(" + l.metric + "[10m])"}, "time": {nowSec}}},
				{"/prometheus/api/v1/query_range", url.Values{"query": {"sum(" + l.metric + ")"}, "start": {strconv.FormatInt(now/1000-300, 10)}, "end": {nowSec}, "step": {"15"}}},
			} {
				code, body := hrGet(t, a.HTTPAddr, c.path, c.params)
				status, typ, msg := hrAPIError(body)
				if code != http.StatusUnprocessableEntity || status != "error" || typ != "execution" || !strings.Contains(msg, l.want) {
					t.Errorf("%s %v: %d %s; want 422 execution with %q", c.path, c.params, code, body, l.want)
				}
			}
			for _, typ := range []prompb.ReadRequest_ResponseType{prompb.ReadRequest_SAMPLES, prompb.ReadRequest_STREAMED_XOR_CHUNKS} {
				code, body, err := hrRemoteRead(a.HTTPAddr, hrReadRequest(t, l.metric, now-600_000, now, typ))
				if err != nil || code != http.StatusUnprocessableEntity || !strings.Contains(body, l.want) {
					t.Errorf("remote read %s of %s: %d %q %v; want 422 with Mimir's message", typ, l.metric, code, body, err)
				}
			}
			code, body := hrGet(t, a.HTTPAddr, "/prometheus/api/v1/series", url.Values{"match[]": {l.metric}, "start": {strconv.FormatInt(now/1000-300, 10)}, "end": {nowSec}})
			if l.seriesAPIFails != (code == http.StatusUnprocessableEntity) || (l.seriesAPIFails && !strings.Contains(body, l.want)) {
				t.Errorf("/series of %s: %d %.300s", l.metric, code, body)
			}
			// One series of the same metric is within every limit.
			code, body = hrGet(t, b.HTTPAddr, "/prometheus/api/v1/query", url.Values{"query": {"count_over_time(" + l.metric + `{i="001"}[10m])`}, "time": {nowSec}})
			if code != http.StatusOK || !strings.Contains(body, `"result":[{`) {
				t.Errorf("one series of %s: %d %.300s", l.metric, code, body)
			}
		})
	}

	t.Run("label queries without a range read the last 10m", func(t *testing.T) {
		code, body := hrGet(t, a.HTTPAddr, "/prometheus/api/v1/labels", nil)
		if code != http.StatusOK || !strings.Contains(body, `"hr_new_label"`) || strings.Contains(body, "hr_old_label") {
			t.Errorf("/labels without a range: %d %s; want hr_new_label and not hr_old_label (30m old)", code, body)
		}
		code, body = hrGet(t, a.HTTPAddr, "/prometheus/api/v1/label/__name__/values", nil)
		if code != http.StatusOK || !strings.Contains(body, `"hr_new"`) || strings.Contains(body, `"hr_old"`) {
			t.Errorf("/label/__name__/values without a range: %d %s", code, body)
		}
		code, body = hrGet(t, a.HTTPAddr, "/prometheus/api/v1/series", url.Values{"match[]": {`{__name__=~"hr_old|hr_new"}`}})
		if code != http.StatusOK || !strings.Contains(body, `"hr_new"`) || strings.Contains(body, `"hr_old"`) {
			t.Errorf("/series without a range: %d %s", code, body)
		}
		// A longer range loses its start too (Mimir's rule); PromQL is not affected.
		code, body = hrGet(t, a.HTTPAddr, "/prometheus/api/v1/labels", url.Values{"start": {strconv.FormatInt(now/1000-3600, 10)}, "end": {nowSec}})
		if code != http.StatusOK || strings.Contains(body, "hr_old_label") {
			t.Errorf("/labels over the last hour: %d %s; want it clamped to 10m", code, body)
		}
		code, body = hrGet(t, a.HTTPAddr, "/prometheus/api/v1/query", url.Values{"query": {"hr_old"}, "time": {strconv.FormatInt(now/1000-30*60, 10)}})
		if code != http.StatusOK || !strings.Contains(body, `"hr_old_label":"x"`) {
			t.Errorf("hr_old at its time: %d %s", code, body)
		}
	})

	t.Run("many over-limit queries at once", func(t *testing.T) {
		var wg sync.WaitGroup
		errs := make(chan string, 24)
		for i := range 24 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				l := limits[i%len(limits)]
				code, body := hrGet(t, a.HTTPAddr, "/prometheus/api/v1/query", url.Values{"query": {"count_over_time(" + l.metric + "[10m])"}, "time": {nowSec}})
				if code != http.StatusUnprocessableEntity {
					errs <- fmt.Sprintf("%s: %d %.200s", l.metric, code, body)
				}
			}()
		}
		wg.Wait()
		close(errs)
		for e := range errs {
			t.Errorf("concurrent over-limit query: %s", e)
		}
	})

	// The node stays bounded: RSS within 256 MiB of where it was with the data loaded, goroutines
	// back to about where they were (the cancelled streams and handlers are gone).
	rss := storageMetric(t, a.HTTPAddr, "process_resident_memory_bytes")
	t.Logf("node a: RSS %.0f MiB before the hostile reads, %.0f MiB after; %v goroutines before", rss0/(1<<20), rss/(1<<20), gor0)
	if rss > rss0+256<<20 {
		t.Errorf("RSS grew from %.0f MiB to %.0f MiB", rss0/(1<<20), rss/(1<<20))
	}
	pc.Eventually(t, 15*time.Second, "goroutines back to the baseline", func() (bool, string) {
		g := storageMetric(t, a.HTTPAddr, "go_goroutines")
		return g <= gor0+30, fmt.Sprintf("%v goroutines, %v before", g, gor0)
	})

	// The bucket counts too: once every node has flushed, the ingesters hold nothing and the
	// chunks come from a's blocks (one copy: 600 chunks, over 500).
	t.Run("max fetched chunks from the bucket", func(t *testing.T) {
		for _, n := range []*pc.Node{a, b, cc} {
			if code, body := storagePostFlush(t, n.AdminAddr); code/100 != 2 {
				t.Fatalf("%s: POST /ingester/flush: %d %s", n.ID, code, body)
			}
		}
		code, body := hrGet(t, a.HTTPAddr, "/prometheus/api/v1/query", url.Values{"query": {"count_over_time(hr_chunks[10m])"}, "time": {nowSec}})
		if _, _, msg := hrAPIError(body); code != http.StatusUnprocessableEntity || !strings.Contains(msg, limits[1].want) {
			t.Errorf("hr_chunks from the bucket: %d %.400s; want 422 with %q", code, body, limits[1].want)
		}
		code, body = hrGet(t, a.HTTPAddr, "/prometheus/api/v1/query", url.Values{"query": {`count_over_time(hr_chunks{i="001"}[10m])`}, "time": {nowSec}})
		if code != http.StatusOK || !strings.Contains(body, `"1200"`) {
			t.Errorf("one series of hr_chunks from the bucket: %d %.300s; want its 1200 samples", code, body)
		}
	})
}
