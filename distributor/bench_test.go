package distributor

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/golang/snappy"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/prometheus/prompb"
	writev2 "github.com/prometheus/prometheus/prompb/io/prometheus/write/v2"

	"github.com/raftingest/raftingest/ingesterpb"
	"github.com/raftingest/raftingest/ringstate"
)

// sinkPool is a ClientPool whose ingesters accept everything at once without decoding, so the
// benchmark measures the distributor, not the ingesters.
type sinkPool struct{}

type sinkClient struct{}

func (sinkPool) GetClientFor(string) (IngesterClient, error) { return sinkClient{}, nil }

func (sinkClient) Push(_ context.Context, _ string, req *ingesterpb.RawPushRequest) (*ingesterpb.PushResponse, error) {
	if req.Pool != nil {
		req.Pool.Put(req.Data)
	}
	return &ingesterpb.PushResponse{}, nil
}

// indexedRing is a staticRing at a fixed Raft index (an IndexedRingSource).
type indexedRing struct {
	*staticRing
	index uint64
}

func (r indexedRing) RingIndex() (*ringstate.Ring, uint64)      { return r.Ring(), r.index }
func (r indexedRing) WaitApplied(context.Context, uint64) error { return nil }

// BenchmarkPush pushes Prometheus-like requests (2000 series of 10 labels, one sample each) through
// the HTTP handler — read, snappy, decode, validate, hash, route, build one request per ingester —
// into 3 in-memory ingesters (RF 3).
//
//	go test -run '^$' -bench 'Push' -count 10 ./distributor/ | tee new.txt; benchstat new.txt
func BenchmarkPush(b *testing.B) {
	benchmarkPush(b, "application/x-protobuf", func(raw []byte) []byte { return raw })
}

// BenchmarkPushV2 is BenchmarkPush with the same series sent as remote-write 2.0.
func BenchmarkPushV2(b *testing.B) {
	benchmarkPush(b, ContentTypeV2, func(raw []byte) []byte { return v1ToV2(b, raw) })
}

// v1ToV2 re-encodes a remote-write 1.0 body (uncompressed) as 2.0, as Prometheus 3 would send it.
func v1ToV2(tb testing.TB, raw []byte) []byte {
	var v1 prompb.WriteRequest
	if err := v1.Unmarshal(raw); err != nil {
		tb.Fatal(err)
	}
	st := writev2.NewSymbolTable()
	var v2 writev2.Request
	for _, ts := range v1.Timeseries {
		refs := make([]uint32, 0, 2*len(ts.Labels))
		for _, l := range ts.Labels {
			refs = append(refs, st.Symbolize(l.Name), st.Symbolize(l.Value))
		}
		out := writev2.TimeSeries{LabelsRefs: refs}
		for _, smp := range ts.Samples {
			out.Samples = append(out.Samples, writev2.Sample{Value: smp.Value, Timestamp: smp.Timestamp})
		}
		v2.Timeseries = append(v2.Timeseries, out)
	}
	v2.Symbols = st.Symbols()
	b, err := v2.Marshal()
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

func benchmarkPush(b *testing.B, contentType string, convert func([]byte) []byte) {
	cfg := defaultConfig()
	// An indexed ring, as a node's: every request is stamped for write fencing.
	d, err := New(cfg, Deps{Ring: indexedRing{ringOf(buildRing(b, active("a", "b", "c")...)), 12345}, Clients: sinkPool{},
		Registerer: prometheus.NewRegistry(), Logger: testLogger(), Now: testNow,
		OldestInMemory: func(at int64) int64 { return at - 3_600_000 }}) // as wired: every bound checked
	if err != nil {
		b.Fatal(err)
	}
	const nSeries = 2000
	body := snappy.Encode(nil, convert(benchBody(b, nSeries, 1)))
	rec := httptest.NewRecorder()
	b.ReportAllocs()
	for b.Loop() {
		req := httptest.NewRequest(http.MethodPost, "/api/v1/push", bytes.NewReader(body))
		req.Header.Set("Content-Encoding", "snappy")
		req.Header.Set("Content-Type", contentType)
		rec.Body.Reset()
		d.ServeHTTP(rec, req)
		if rec.Code != http.StatusOK {
			b.Fatalf("%d %s", rec.Code, rec.Body)
		}
	}
	d.Wait()
	b.ReportMetric(float64(b.N*nSeries)/b.Elapsed().Seconds(), "samples/s")
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*nSeries), "ns/sample")
}
