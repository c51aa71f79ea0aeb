package proc

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/golang/snappy"
	"github.com/prometheus/prometheus/prompb"
	"github.com/prometheus/prometheus/tsdb/chunkenc"

	"github.com/raftingest/raftingest/distributor"
	"github.com/raftingest/raftingest/faulttest/check"
	"github.com/raftingest/raftingest/ingesterpb"
)

// The unique-samples workload: writer w pushes, one sample per request, sample seq of series
// faulttest_samples{series="s<seq mod seriesPerWriter>", writer="w<w>"} at timestamp t0+seq with
// value seq. The timestamp and the writer label identify the sample; the value double-checks it.
const (
	metricName      = "faulttest_samples"
	seriesPerWriter = 4
	tenant          = distributor.DefaultTenant
)

// Writer is the history of the unique-samples workload.
type Writer struct {
	c    *Cluster
	t0   int64
	mu   sync.Mutex
	hist []check.Write
	// fails counts failed pushes by status or error, for the report.
	fails map[string]int
	http  *http.Client
}

func newWriter(c *Cluster) *Writer {
	return &Writer{c: c, t0: time.Now().UnixMilli(), fails: map[string]int{},
		http: &http.Client{Timeout: 5 * time.Second}}
}

func seriesLabels(w int, seq uint64) []prompb.Label {
	return []prompb.Label{{Name: "__name__", Value: metricName},
		{Name: "series", Value: fmt.Sprintf("s%d", seq%seriesPerWriter)}, {Name: "writer", Value: fmt.Sprintf("w%d", w)}}
}

func writeRequest(w int, seq uint64, t0 int64) *prompb.WriteRequest {
	return &prompb.WriteRequest{Timeseries: []prompb.TimeSeries{{Labels: seriesLabels(w, seq),
		Samples: []prompb.Sample{{Timestamp: t0 + int64(seq), Value: float64(seq)}}}}}
}

// SeriesHash is the distributor's placement hash of the sample's series.
func SeriesHash(id check.SampleID) uint32 {
	var ls []distributor.Label
	for _, l := range seriesLabels(id.Writer, id.Seq) {
		ls = append(ls, distributor.Label{Name: l.Name, Value: l.Value})
	}
	return distributor.SeriesHash(tenant, ls)
}

// run pushes until ctx is done, through a random running node each time.
func (w *Writer) run(ctx context.Context, id int, rng *rand.Rand) {
	for seq := uint64(0); ctx.Err() == nil; seq++ {
		var targets []*Node
		for _, n := range w.c.Nodes {
			if n.Running() {
				targets = append(targets, n)
			}
		}
		if len(targets) == 0 {
			time.Sleep(50 * time.Millisecond)
			seq--
			continue
		}
		n := targets[rng.IntN(len(targets))]
		req := writeRequest(id, seq, w.t0)
		wr := check.Write{ID: check.SampleID{Writer: id, Seq: seq}, Invoke: time.Now()}
		code, body, err := w.push(ctx, n.HTTPAddr, req)
		wr.Return = time.Now()
		switch {
		case err != nil:
			wr.Outcome = check.OutcomeUnknown
		case code/100 == 2:
			wr.Outcome = check.OutcomeOK
		case code/100 == 4:
			wr.Outcome = check.OutcomeFail // bad input or a limit: refused, never retried, not stored
		default:
			wr.Outcome = check.OutcomeUnknown // 5xx: a quorum failed, some replicas may hold it
		}
		w.mu.Lock()
		w.hist = append(w.hist, wr)
		if wr.Outcome != check.OutcomeOK {
			key := "error"
			if err == nil {
				key = strconv.Itoa(code) + " " + firstLine(body)
			} else if ctx.Err() == nil {
				key = "error " + shortErr(err)
			}
			w.fails[key]++
		}
		w.mu.Unlock()
		time.Sleep(time.Duration(2+rng.IntN(8)) * time.Millisecond)
	}
}

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	if len(s) > 80 {
		s = s[:80]
	}
	return s
}

func shortErr(err error) string {
	s := err.Error()
	if i := strings.LastIndex(s, ": "); i >= 0 {
		s = s[i+2:]
	}
	return s
}

func (w *Writer) push(ctx context.Context, addr string, req *prompb.WriteRequest) (int, string, error) {
	raw, err := req.Marshal()
	if err != nil {
		return 0, "", err
	}
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+addr+"/api/v1/push", bytes.NewReader(snappy.Encode(nil, raw)))
	if err != nil {
		return 0, "", err
	}
	hreq.Header.Set("Content-Encoding", "snappy")
	hreq.Header.Set("Content-Type", "application/x-protobuf")
	hreq.Header.Set("X-Prometheus-Remote-Write-Version", "0.1.0")
	resp, err := w.http.Do(hreq)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), nil
}

// History returns a copy of the writes so far.
func (w *Writer) History() []check.Write {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]check.Write(nil), w.hist...)
}

// IngesterRead is what one ingester returned: its samples (with repeats, if it returned any) and
// the samples whose value did not match their sequence number.
type IngesterRead struct {
	Samples []check.SampleID
	Corrupt []check.SampleID
}

// readIngester asks node i directly (gRPC QueryStream) for every sample of the workload.
func (w *Writer) readIngester(ctx context.Context, n *Node) (IngesterRead, error) {
	var out IngesterRead
	cc, err := n.Conn()
	if err != nil {
		return out, err
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	stream, err := ingesterpb.NewIngesterClient(cc).QueryStream(ingesterpb.WithTenant(ctx, tenant), &ingesterpb.QueryRequest{
		StartTimestampMs: math.MinInt64, EndTimestampMs: math.MaxInt64,
		Matchers: []*ingesterpb.LabelMatcher{{Type: ingesterpb.MatchType_EQUAL, Name: "__name__", Value: metricName}},
	})
	if err != nil {
		return out, err
	}
	for {
		resp, err := stream.Recv()
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return out, fmt.Errorf("query %s: %w", n.ID, err)
		}
		for _, s := range resp.GetSeries() {
			writer := -1
			for _, l := range s.GetLabels() {
				if l.GetName() == "writer" {
					writer, _ = strconv.Atoi(strings.TrimPrefix(l.GetValue(), "w"))
				}
			}
			for _, c := range s.GetChunks() {
				chk, err := chunkenc.FromData(chunkenc.Encoding(c.GetEncoding()), c.GetData())
				if err != nil {
					return out, fmt.Errorf("chunk from %s: %w", n.ID, err)
				}
				it := chk.Iterator(nil)
				for it.Next() == chunkenc.ValFloat {
					ts, v := it.At()
					id := check.SampleID{Writer: writer, Seq: uint64(ts - w.t0)}
					if ts < w.t0 || v != float64(id.Seq) {
						out.Corrupt = append(out.Corrupt, id)
						continue
					}
					out.Samples = append(out.Samples, id)
				}
				if it.Err() != nil {
					return out, it.Err()
				}
			}
		}
	}
}

// readAll reads every node. complete is false when a node did not answer (down, paused, cut off).
func (w *Writer) readAll(ctx context.Context) (per map[string]IngesterRead, complete bool, errs []string) {
	per = map[string]IngesterRead{}
	complete = true
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, n := range w.c.Nodes {
		if !n.Running() || n.Paused() {
			complete = false
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := w.readIngester(ctx, n)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				complete = false
				errs = append(errs, fmt.Sprintf("%s: %v", n.ID, err))
				return
			}
			per[n.ID] = r
		}()
	}
	wg.Wait()
	return per, complete, errs
}

// union is the set of samples any ingester returned, each once, and the number of samples some
// ingester returned more than once (a duplicate within one replica).
func union(per map[string]IngesterRead) (ids []check.SampleID, dupWithin []check.SampleID) {
	seen := map[check.SampleID]bool{}
	for _, r := range per {
		local := map[check.SampleID]bool{}
		for _, id := range r.Samples {
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
