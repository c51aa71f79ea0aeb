package ingester

import (
	"bytes"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/golang/snappy"
	"github.com/prometheus/prometheus/prompb"
)

// BenchmarkPushPath measures the whole write path: remote-write requests to one node's
// /api/v1/push, distributed with RF 3 to 3 in-process ingesters over gRPC, each appending to its
// memstore and committing its bbolt WAL (fsync on, the default). It reports samples/s as the
// client sees them.
//
//	go test -run '^$' -bench PushPath -benchtime 5s ./ingester/ | tee new.txt; benchstat old.txt new.txt
func BenchmarkPushPath(b *testing.B) {
	for _, seriesPerReq := range []int{100, 1000} {
		b.Run(fmt.Sprintf("series=%d", seriesPerReq), func(b *testing.B) {
			c := startInProcess(b, 3, "-distributor.ingestion-rate-limit", "0")
			url := "http://" + c.cfgs[0].HTTPAddr + "/api/v1/push"
			client := &http.Client{Timeout: 10 * time.Second}
			t0 := time.Now().UnixMilli()
			b.ReportAllocs()
			round := int64(0)
			for b.Loop() {
				req := &prompb.WriteRequest{Timeseries: make([]prompb.TimeSeries, seriesPerReq)}
				for i := range req.Timeseries {
					req.Timeseries[i] = prompb.TimeSeries{
						Labels: []prompb.Label{{Name: "__name__", Value: "bench_metric"}, {Name: "instance", Value: fmt.Sprintf("host-%04d", i)},
							{Name: "job", Value: "bench"}},
						Samples: []prompb.Sample{{Timestamp: t0 + round, Value: float64(round)}},
					}
				}
				raw, err := req.Marshal()
				if err != nil {
					b.Fatal(err)
				}
				hreq, _ := http.NewRequest(http.MethodPost, url, bytes.NewReader(snappy.Encode(nil, raw)))
				hreq.Header.Set("Content-Encoding", "snappy")
				resp, err := client.Do(hreq)
				if err != nil {
					b.Fatal(err)
				}
				resp.Body.Close()
				if resp.StatusCode/100 != 2 {
					b.Fatalf("push: %s", resp.Status)
				}
				round++
			}
			b.ReportMetric(float64(round)*float64(seriesPerReq)/b.Elapsed().Seconds(), "samples/s")
		})
	}
}
