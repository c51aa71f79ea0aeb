// Package samples is the unique-samples workload shared by the fault-test tiers that push real
// remote-write requests: how sample seq of writer w is named, encoded and placed, how a push's
// outcome is classified, how an ingester's QueryStream answer is decoded back into sample ids, and
// the union of several ingesters' answers.
//
// Sample seq of writer w is faulttest_samples{series="s<seq mod SeriesPerWriter>", writer="w<w>"}
// at timestamp t0+seq with value seq: the timestamp and the writer label identify the sample, the
// value double-checks it. t0 is the run's start in milliseconds, fixed by the caller.
package samples

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/golang/snappy"
	"github.com/prometheus/prometheus/prompb"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"google.golang.org/grpc"

	"github.com/raftingest/raftingest/distributor"
	"github.com/raftingest/raftingest/faulttest/check"
	"github.com/raftingest/raftingest/ingesterpb"
)

// The workload's names.
const (
	MetricName      = "faulttest_samples"
	SeriesPerWriter = 4
	Tenant          = distributor.DefaultTenant
)

// Labels are the labels of sample seq of writer w (sorted by name, as remote write wants).
func Labels(w int, seq uint64) []prompb.Label {
	return []prompb.Label{{Name: "__name__", Value: MetricName},
		{Name: "series", Value: fmt.Sprintf("s%d", seq%SeriesPerWriter)}, {Name: "writer", Value: fmt.Sprintf("w%d", w)}}
}

// WriteRequest is the remote-write request carrying exactly sample seq of writer w.
func WriteRequest(w int, seq uint64, t0 int64) *prompb.WriteRequest {
	return &prompb.WriteRequest{Timeseries: []prompb.TimeSeries{{Labels: Labels(w, seq),
		Samples: []prompb.Sample{{Timestamp: t0 + int64(seq), Value: float64(seq)}}}}}
}

// Encode is the snappy-compressed protobuf body of req, as Prometheus sends it.
func Encode(req *prompb.WriteRequest) ([]byte, error) {
	raw, err := req.Marshal()
	if err != nil {
		return nil, fmt.Errorf("marshal write request: %w", err)
	}
	return snappy.Encode(nil, raw), nil
}

// Push posts sample seq of writer w to http://addr/api/v1/push and returns the status code and
// the response body; err is a transport error (no status).
func Push(ctx context.Context, c *http.Client, addr string, w int, seq uint64, t0 int64) (int, string, error) {
	body, err := Encode(WriteRequest(w, seq, t0))
	if err != nil {
		return 0, "", err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+addr+"/api/v1/push", bytes.NewReader(body))
	if err != nil {
		return 0, "", err
	}
	req.Header.Set("Content-Encoding", "snappy")
	req.Header.Set("Content-Type", "application/x-protobuf")
	req.Header.Set("X-Prometheus-Remote-Write-Version", "0.1.0")
	resp, err := c.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	return resp.StatusCode, string(b), nil
}

// Outcome classifies a push as Prometheus would treat it: 2xx ok; 4xx fail (bad input or a
// limit: refused, never retried, not stored); 5xx and transport errors unknown (a quorum failed or
// the answer was lost: some replicas may hold the sample).
func Outcome(code int, err error) check.Outcome {
	switch {
	case err != nil:
		return check.OutcomeUnknown
	case code/100 == 2:
		return check.OutcomeOK
	case code/100 == 4:
		return check.OutcomeFail
	default:
		return check.OutcomeUnknown
	}
}

// SeriesHash is the distributor's placement hash of the sample's series. Series that differ only in
// the writer label (the last one) hash within about 0.03% of the ring of each other — FNV-1a
// spreads a difference in the last bytes little — so the workload's series sit on about
// SeriesPerWriter ring positions whatever the number of writers, and on 5 or more members some
// member may own a replica of none of them.
func SeriesHash(id check.SampleID) uint32 {
	var ls []distributor.Label
	for _, l := range Labels(id.Writer, id.Seq) {
		ls = append(ls, distributor.Label{Name: l.Name, Value: l.Value})
	}
	return distributor.SeriesHash(Tenant, ls)
}

// IngesterRead is what one ingester returned: its samples (with repeats, if it returned any) and
// the samples whose timestamp or value does not fit the workload.
type IngesterRead struct {
	Samples []check.SampleID
	Corrupt []check.SampleID
}

// Query asks one ingester (cc: a connection to its gRPC server) for every sample of the workload
// with QueryStream, and decodes the answer. The caller bounds it with ctx.
func Query(ctx context.Context, cc grpc.ClientConnInterface, t0 int64) (IngesterRead, error) {
	var out IngesterRead
	stream, err := ingesterpb.NewIngesterClient(cc).QueryStream(ingesterpb.WithTenant(ctx, Tenant), &ingesterpb.QueryRequest{
		StartTimestampMs: math.MinInt64, EndTimestampMs: math.MaxInt64,
		Matchers: []*ingesterpb.LabelMatcher{{Type: ingesterpb.MatchType_EQUAL, Name: "__name__", Value: MetricName}},
	})
	if err != nil {
		return out, fmt.Errorf("query stream: %w", err)
	}
	for {
		resp, err := stream.Recv()
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return out, fmt.Errorf("query stream: %w", err)
		}
		if err := Decode(resp, t0, &out); err != nil {
			return out, err
		}
	}
}

// Decode appends the samples of one QueryStream response to into. A sample whose writer label
// does not parse, whose timestamp is before t0, or whose value is not its sequence number is
// recorded as corrupt.
func Decode(resp *ingesterpb.QueryStreamResponse, t0 int64, into *IngesterRead) error {
	for _, s := range resp.GetSeries() {
		writer := -1
		for _, l := range s.GetLabels() {
			if l.GetName() == "writer" {
				if w, err := strconv.Atoi(strings.TrimPrefix(l.GetValue(), "w")); err == nil {
					writer = w
				}
			}
		}
		for _, c := range s.GetChunks() {
			chk, err := chunkenc.FromData(chunkenc.Encoding(c.GetEncoding()), c.GetData())
			if err != nil {
				return fmt.Errorf("chunk of writer %d [%d..%d]: %w", writer, c.GetMinTimeMs(), c.GetMaxTimeMs(), err)
			}
			it := chk.Iterator(nil)
			for it.Next() == chunkenc.ValFloat {
				ts, v := it.At()
				var seq uint64
				if ts >= t0 {
					seq = uint64(ts - t0)
				}
				id := check.SampleID{Writer: writer, Seq: seq}
				if writer < 0 || ts < t0 || math.Float64bits(v) != math.Float64bits(float64(seq)) {
					into.Corrupt = append(into.Corrupt, id)
					continue
				}
				into.Samples = append(into.Samples, id)
			}
			if err := it.Err(); err != nil {
				return fmt.Errorf("chunk of writer %d: %w", writer, err)
			}
		}
	}
	return nil
}

// Union is the set of samples any ingester returned, each once (in first-seen order over the
// sorted ingester names, so it is deterministic), and the samples some ingester returned more than
// once (a duplicate within one replica).
func Union(per map[string]IngesterRead) (ids, dupWithin []check.SampleID) {
	names := make([]string, 0, len(per))
	for n := range per {
		names = append(names, n)
	}
	slices.Sort(names)
	seen := map[check.SampleID]bool{}
	for _, n := range names {
		local := map[check.SampleID]bool{}
		for _, id := range per[n].Samples {
			if local[id] {
				dupWithin = append(dupWithin, id)
			}
			local[id] = true
			if !seen[id] {
				seen[id] = true
				ids = append(ids, id)
			}
		}
	}
	return ids, dupWithin
}

// FailureKey is how a failed push is counted in a run's report: "<status> <first line of the
// body>" (80 characters at most) for an answer, "error <last part of the error>" ("timeout" for a
// timeout) for a transport error.
func FailureKey(code int, body string, err error) string {
	if err == nil {
		body = strings.TrimSpace(body)
		if i := strings.IndexByte(body, '\n'); i >= 0 {
			body = body[:i]
		}
		if len(body) > 80 {
			body = body[:80]
		}
		return strconv.Itoa(code) + " " + body
	}
	var ne interface{ Timeout() bool }
	if errors.As(err, &ne) && ne.Timeout() {
		return "error timeout"
	}
	s := err.Error()
	if i := strings.LastIndex(s, ": "); i >= 0 {
		s = s[i+2:]
	}
	return "error " + s
}
