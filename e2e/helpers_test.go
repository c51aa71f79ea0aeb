package e2e

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"sort"
	"strings"
	"time"

	"github.com/golang/snappy"
	"github.com/prometheus/prometheus/prompb"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/raftingest/raftingest/ingesterpb"
)

// push sends one remote-write request to http://addr/api/v1/push and returns the status and body.
func push(addr, tenant string, req *prompb.WriteRequest) (int, string, error) {
	raw, err := req.Marshal()
	if err != nil {
		return 0, "", err
	}
	return pushRaw(addr, tenant, snappy.Encode(nil, raw), "snappy")
}

func pushRaw(addr, tenant string, body []byte, encoding string) (int, string, error) {
	hreq, err := http.NewRequest(http.MethodPost, "http://"+addr+"/api/v1/push", bytes.NewReader(body))
	if err != nil {
		return 0, "", err
	}
	if encoding != "" {
		hreq.Header.Set("Content-Encoding", encoding)
	}
	hreq.Header.Set("Content-Type", "application/x-protobuf")
	hreq.Header.Set("X-Prometheus-Remote-Write-Version", "0.1.0")
	if tenant != "" {
		hreq.Header.Set("X-Scope-OrgID", tenant)
	}
	cl := &http.Client{Timeout: 10 * time.Second}
	resp, err := cl.Do(hreq)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), nil
}

// series builds a prompb series from alternating label names and values (sorted by the caller)
// and samples.
func series(lbls []string, samples ...prompb.Sample) prompb.TimeSeries {
	ts := prompb.TimeSeries{Samples: samples}
	for i := 0; i+1 < len(lbls); i += 2 {
		ts.Labels = append(ts.Labels, prompb.Label{Name: lbls[i], Value: lbls[i+1]})
	}
	return ts
}

// sampleKey identifies one sample of one series: the series' labels rendered, and its timestamp.
type sampleKey struct {
	series string
	t      int64
}

// queryIngester asks one ingester directly (gRPC QueryStream) for the tenant's series matching
// name, and returns every sample it holds, keyed by series and timestamp, with its value.
func queryIngester(ctx context.Context, grpcAddr, tenant, name string) (map[sampleKey]float64, error) {
	return queryIngesterWith(ctx, grpcAddr, tenant, name, insecureCreds)
}

// insecureCreds are a plain gRPC client's credentials.
var insecureCreds = grpc.WithTransportCredentials(insecure.NewCredentials())

// queryIngesterWith is queryIngester over a client with creds.
func queryIngesterWith(ctx context.Context, grpcAddr, tenant, name string, creds grpc.DialOption) (map[sampleKey]float64, error) {
	conn, err := grpc.NewClient(grpcAddr, creds)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	stream, err := ingesterpb.NewIngesterClient(conn).QueryStream(ingesterpb.WithTenant(ctx, tenant), &ingesterpb.QueryRequest{
		StartTimestampMs: math.MinInt64, EndTimestampMs: math.MaxInt64,
		Matchers: []*ingesterpb.LabelMatcher{{Type: ingesterpb.MatchType_EQUAL, Name: "__name__", Value: name}},
	})
	if err != nil {
		return nil, err
	}
	out := map[sampleKey]float64{}
	for {
		resp, err := stream.Recv()
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("query %s: %w", grpcAddr, err)
		}
		for _, s := range resp.GetSeries() {
			var parts []string
			for _, l := range s.GetLabels() {
				parts = append(parts, l.GetName()+"="+l.GetValue())
			}
			sort.Strings(parts)
			key := strings.Join(parts, ",")
			for _, c := range s.GetChunks() {
				chk, err := chunkenc.FromData(chunkenc.Encoding(c.GetEncoding()), c.GetData())
				if err != nil {
					return nil, fmt.Errorf("chunk of %s: %w", key, err)
				}
				it := chk.Iterator(nil)
				for it.Next() == chunkenc.ValFloat {
					t, v := it.At()
					out[sampleKey{key, t}] = v
				}
				if it.Err() != nil {
					return nil, it.Err()
				}
			}
		}
	}
}

// keyOf renders a series' labels the way queryIngester keys them.
func keyOf(lbls []prompb.Label) string {
	parts := make([]string, len(lbls))
	for i, l := range lbls {
		parts[i] = l.Name + "=" + l.Value
	}
	sort.Strings(parts)
	return strings.Join(parts, ",")
}
