package proc

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/golang/snappy"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/prompb"
	"github.com/prometheus/prometheus/tsdb/chunkenc"

	"github.com/raftingest/raftingest/faulttest/check"
	"github.com/raftingest/raftingest/faulttest/samples"
	"github.com/raftingest/raftingest/storage"
	tenantctx "github.com/raftingest/raftingest/tenant"
)

// The unique-samples workload: writer w pushes, one sample per request, sample seq of series
// faulttest_samples{series="s<seq mod seriesPerWriter>", writer="w<w>"} at timestamp t0+seq with
// value seq. The timestamp and the writer label identify the sample; the value double-checks it.
// (faulttest/samples holds the names, the encoding, the placement hash and the QueryStream decoding,
// shared with the in-process tier.)
const (
	metricName = samples.MetricName
	tenant     = samples.Tenant
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
	// skip, when set, names running nodes the writers leave alone for now (the hand-over family:
	// a restarted node until it has caught up with the leader, see roller.catchUp).
	skip func(*Node) bool
	// oooBlock, when > 1, makes each writer push every block of oooBlock consecutive sequence
	// numbers in a random order: within a series, some samples are then older than its newest one
	// by up to oooBlock-1 ms, accepted out of order under -ingester.out-of-order-time-window
	// (Scenario.OutOfOrder). The checkers need nothing else: a sample is still identified by its
	// writer and sequence number, whatever order it was sent in.
	oooBlock int
}

func newWriter(c *Cluster) *Writer {
	return &Writer{c: c, t0: time.Now().UnixMilli(), fails: map[string]int{},
		http: &http.Client{Timeout: 5 * time.Second}}
}

func writeRequest(w int, seq uint64, t0 int64) *prompb.WriteRequest {
	return samples.WriteRequest(w, seq, t0)
}

// SeriesHash is the distributor's placement hash of the sample's series.
func SeriesHash(id check.SampleID) uint32 { return samples.SeriesHash(id) }

// run pushes until ctx is done, through a random running node each time.
func (w *Writer) run(ctx context.Context, id int, rng *rand.Rand) {
	var perm []int
	for i := uint64(0); ctx.Err() == nil; i++ {
		seq := i
		if w.oooBlock > 1 {
			b := uint64(w.oooBlock)
			if i%b == 0 || perm == nil {
				perm = rng.Perm(w.oooBlock)
			}
			seq = i/b*b + uint64(perm[i%b])
		}
		var targets []*Node
		for _, n := range w.c.Nodes {
			if n.Running() && (w.skip == nil || !w.skip(n)) {
				targets = append(targets, n)
			}
		}
		if len(targets) == 0 {
			time.Sleep(50 * time.Millisecond)
			i-- // the same sample again: the block's order is kept
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
			key := "error" // the run's own end cancelled it
			if err == nil || ctx.Err() == nil {
				key = samples.FailureKey(code, body, err)
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

// IngesterRead is what one ingester (or the bucket, or a query API) returned: its samples, with
// repeats if it returned any, and the samples whose value did not match their sequence number.
type IngesterRead = samples.IngesterRead

// readIngester asks node n directly (gRPC QueryStream) for every sample of the workload.
func (w *Writer) readIngester(ctx context.Context, n *Node) (IngesterRead, error) {
	cc, err := n.Conn()
	if err != nil {
		return IngesterRead{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	r, err := samples.Query(ctx, cc, w.t0)
	if err != nil {
		return r, fmt.Errorf("query %s: %w", n.ID, err)
	}
	return r, nil
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

// union is the set of samples any ingester returned, each once, and the samples some ingester
// returned more than once (a duplicate within one replica).
func union(per map[string]IngesterRead) (ids, dupWithin []check.SampleID) { return samples.Union(per) }

// The final read goes through the product's read path, as a user's would: a node's querier merges
// every readable ingester's replicas with the blocks in the bucket. A sample is identified by its
// writer label and timestamp, its value double-checks it (as in readIngester).

// sampleOf turns one returned sample into its id, or reports it corrupt.
func (w *Writer) sampleOf(out *IngesterRead, writerLabel string, ts int64, v float64) {
	writer, err := strconv.Atoi(strings.TrimPrefix(writerLabel, "w"))
	if err != nil {
		writer = -1
	}
	id := check.SampleID{Writer: writer, Seq: uint64(ts - w.t0)}
	if writer < 0 || ts < w.t0 || v != float64(id.Seq) {
		out.Corrupt = append(out.Corrupt, id)
		return
	}
	out.Samples = append(out.Samples, id)
}

// readPromQL reads every sample of the workload through node n's Prometheus API: the instant query
// faulttest_samples[<range>] at endMs, with a range reaching back before t0 (a range selector is
// left-open: (endMs-range, endMs]). Every sample the writers can have written has a timestamp in
// [t0, endMs]. A repeated timestamp within one series is returned as two samples (a duplicate).
func (w *Writer) readPromQL(ctx context.Context, n *Node, endMs int64) (IngesterRead, error) {
	var out IngesterRead
	rangeMs := endMs - w.t0 + 1000
	q := url.Values{}
	q.Set("query", fmt.Sprintf("%s[%dms]", metricName, rangeMs))
	q.Set("time", fmt.Sprintf("%d.%03d", endMs/1000, endMs%1000))
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+n.HTTPAddr+"/prometheus/api/v1/query?"+q.Encode(), nil)
	if err != nil {
		return out, err
	}
	resp, err := w.http.Do(req)
	if err != nil {
		return out, fmt.Errorf("promql via %s: %w", n.ID, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return out, fmt.Errorf("promql via %s: %w", n.ID, err)
	}
	if resp.StatusCode != http.StatusOK {
		return out, fmt.Errorf("promql via %s: %d %s", n.ID, resp.StatusCode, firstLine(string(body)))
	}
	var r struct {
		Status string `json:"status"`
		Data   struct {
			ResultType string `json:"resultType"`
			Result     []struct {
				Metric map[string]string    `json:"metric"`
				Values [][2]json.RawMessage `json:"values"`
			} `json:"result"`
		} `json:"data"`
	}
	if err := json.Unmarshal(body, &r); err != nil {
		return out, fmt.Errorf("promql via %s: %w", n.ID, err)
	}
	if r.Status != "success" || r.Data.ResultType != "matrix" {
		return out, fmt.Errorf("promql via %s: status %q, result type %q", n.ID, r.Status, r.Data.ResultType)
	}
	for _, s := range r.Data.Result {
		for _, p := range s.Values {
			ts, err := parseAPITime(string(p[0]))
			if err != nil {
				return out, fmt.Errorf("promql via %s: %w", n.ID, err)
			}
			var vs string
			if err := json.Unmarshal(p[1], &vs); err != nil {
				return out, fmt.Errorf("promql via %s: value %s: %w", n.ID, p[1], err)
			}
			v, err := strconv.ParseFloat(vs, 64)
			if err != nil {
				return out, fmt.Errorf("promql via %s: value %q: %w", n.ID, vs, err)
			}
			w.sampleOf(&out, s.Metric["writer"], ts, v)
		}
	}
	return out, nil
}

// parseAPITime parses the Prometheus API's timestamp (seconds with up to three decimals) to exact
// milliseconds, without going through a float.
func parseAPITime(s string) (int64, error) {
	sec, frac, _ := strings.Cut(s, ".")
	if len(frac) > 3 {
		return 0, fmt.Errorf("timestamp %q: more than millisecond precision", s)
	}
	frac += strings.Repeat("0", 3-len(frac))
	a, err1 := strconv.ParseInt(sec, 10, 64)
	b, err2 := strconv.ParseInt(frac, 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("timestamp %q: %w", s, err)
	}
	return a*1000 + b, nil
}

// readRemote reads every sample of the workload through node n's remote-read endpoint (SAMPLES
// responses), over [t0, endMs].
func (w *Writer) readRemote(ctx context.Context, n *Node, endMs int64) (IngesterRead, error) {
	var out IngesterRead
	rr := &prompb.ReadRequest{Queries: []*prompb.Query{{StartTimestampMs: w.t0, EndTimestampMs: endMs,
		Matchers: []*prompb.LabelMatcher{{Type: prompb.LabelMatcher_EQ, Name: "__name__", Value: metricName}}}},
		AcceptedResponseTypes: []prompb.ReadRequest_ResponseType{prompb.ReadRequest_SAMPLES}}
	raw, err := rr.Marshal()
	if err != nil {
		return out, err
	}
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+n.HTTPAddr+"/prometheus/api/v1/read", bytes.NewReader(snappy.Encode(nil, raw)))
	if err != nil {
		return out, err
	}
	req.Header.Set("Content-Encoding", "snappy")
	req.Header.Set("Content-Type", "application/x-protobuf")
	req.Header.Set("X-Prometheus-Remote-Read-Version", "0.1.0")
	resp, err := w.http.Do(req)
	if err != nil {
		return out, fmt.Errorf("remote read via %s: %w", n.ID, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return out, fmt.Errorf("remote read via %s: %w", n.ID, err)
	}
	if resp.StatusCode != http.StatusOK {
		return out, fmt.Errorf("remote read via %s: %d %s", n.ID, resp.StatusCode, firstLine(string(body)))
	}
	dec, err := snappy.Decode(nil, body)
	if err != nil {
		return out, fmt.Errorf("remote read via %s: %w", n.ID, err)
	}
	var res prompb.ReadResponse
	if err := res.Unmarshal(dec); err != nil {
		return out, fmt.Errorf("remote read via %s: %w", n.ID, err)
	}
	if len(res.Results) != 1 {
		return out, fmt.Errorf("remote read via %s: %d results for 1 query", n.ID, len(res.Results))
	}
	for _, ts := range res.Results[0].Timeseries {
		var writer string
		for _, l := range ts.Labels {
			if l.Name == "writer" {
				writer = l.Value
			}
		}
		for _, s := range ts.Samples {
			w.sampleOf(&out, writer, s.Timestamp, s.Value)
		}
	}
	return out, nil
}

// readBuckets reads every sample of the workload from every bucket directory of the cluster
// (Cluster.BucketDirs: the shared one, or every node's own, whether the node still runs, left or
// was removed), as readBucket does, and returns their union with the repeats of each copy. A block
// left behind in a departed member's directory is therefore in this direct read: a read through
// the query API that misses it is judged missing.
func (w *Writer) readBuckets(ctx context.Context, scratch string) (IngesterRead, error) {
	var out IngesterRead
	for i, dir := range w.c.BucketDirs() {
		r, err := w.readBucket(ctx, dir, filepath.Join(scratch, strconv.Itoa(i)))
		if err != nil {
			return out, err
		}
		out.Samples = append(out.Samples, r.Samples...)
		out.Corrupt = append(out.Corrupt, r.Corrupt...)
	}
	return out, nil
}

// readBucket reads every sample of the workload from the blocks in the filesystem bucket dir (what
// the nodes flushed), the way the querier's store half does. A missing directory is an empty bucket.
func (w *Writer) readBucket(ctx context.Context, dir, scratch string) (IngesterRead, error) {
	var out IngesterRead
	if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
		return out, nil
	}
	bkt, err := storage.NewBucket(storage.Config{Backend: storage.BackendFilesystem, Filesystem: storage.FilesystemConfig{Dir: dir}}, nil)
	if err != nil {
		return out, err
	}
	defer bkt.Close()
	bq := storage.NewBucketQueryable(bkt, dir, scratch, nil)
	defer bq.Close()
	q, err := bq.Querier(math.MinInt64, math.MaxInt64)
	if err != nil {
		return out, err
	}
	defer q.Close()
	ss := q.Select(tenantctx.With(ctx, tenant), true, nil, labels.MustNewMatcher(labels.MatchEqual, "__name__", metricName))
	var it chunkenc.Iterator
	for ss.Next() {
		s := ss.At()
		it = s.Iterator(it)
		for it.Next() == chunkenc.ValFloat {
			ts, v := it.At()
			w.sampleOf(&out, s.Labels().Get("writer"), ts, v)
		}
		if err := it.Err(); err != nil {
			return out, fmt.Errorf("bucket %s: %w", dir, err)
		}
	}
	if err := ss.Err(); err != nil {
		return out, fmt.Errorf("bucket %s: %w", dir, err)
	}
	return out, nil
}

// APIRead is the final read through the query API (see queryReadAll).
type APIRead struct {
	Samples []check.SampleID // what the PromQL read returned, repeats included
	Corrupt []string
	Summary string
	OK      bool // both reads answered, agree with each other and with the direct reads
	// Answers is the same PromQL read through every running member (the same-answer checker).
	Answers []check.Answer
}

// answerOf is node n's PromQL read for the same-answer checker.
func answerOf(n *Node, r IngesterRead, err error) check.Answer {
	if err != nil {
		return check.Answer{Member: n.ID, Err: err.Error()}
	}
	return check.Answer{Member: n.ID, Samples: r.Samples}
}

// queryReadAll is the final read through the product's read path: a PromQL read (readPromQL)
// through one node and a remote read (readRemote) through another, chosen by seed; each is retried
// until it answers (20 tries, 1s apart). Both must return the same samples, and the same samples as
// the direct reads (direct: every ACTIVE member's QueryStream and the bucket, merged): a querier
// that dropped a replica's or the bucket's samples, or invented some, fails here. The PromQL read is
// also sent through every other running member (Answers, for check.CheckSameAnswer).
func (w *Writer) queryReadAll(ctx context.Context, seed int64, direct map[check.SampleID]bool, inBucket int) APIRead {
	var res APIRead
	var running []*Node
	for _, n := range w.c.Nodes {
		if n.Running() && !n.Paused() {
			running = append(running, n)
		}
	}
	if len(running) == 0 {
		res.Summary = "FAIL no node to query"
		return res
	}
	k := int(uint64(seed) % uint64(len(running)))
	a, b := running[k], running[(k+1)%len(running)]
	endMs := time.Now().UnixMilli()
	for _, wr := range w.History() {
		endMs = max(endMs, w.t0+int64(wr.ID.Seq)+1)
	}
	try := func(read func(context.Context, *Node, int64) (IngesterRead, error), n *Node) (IngesterRead, error) {
		var err error
		for range 20 {
			var r IngesterRead
			if r, err = read(ctx, n, endMs); err == nil {
				return r, nil
			}
			if ctx.Err() != nil {
				break
			}
			time.Sleep(time.Second)
		}
		return IngesterRead{}, err
	}
	pq, err := try(w.readPromQL, a)
	// The same query through every other running member: each must answer exactly what a did.
	res.Answers = append(res.Answers, answerOf(a, pq, err))
	for _, n := range running {
		if n != a {
			r, nerr := try(w.readPromQL, n)
			res.Answers = append(res.Answers, answerOf(n, r, nerr))
		}
	}
	if err != nil {
		res.Summary = "FAIL " + err.Error()
		return res
	}
	rr, err := try(w.readRemote, b)
	if err != nil {
		res.Summary = "FAIL " + err.Error()
		return res
	}
	res.Samples = pq.Samples
	for _, id := range pq.Corrupt {
		res.Corrupt = append(res.Corrupt, "promql@"+a.ID+":"+id.String())
	}
	for _, id := range rr.Corrupt {
		res.Corrupt = append(res.Corrupt, "remote-read@"+b.ID+":"+id.String())
	}
	count := func(ids []check.SampleID) map[check.SampleID]int {
		m := make(map[check.SampleID]int, len(ids))
		for _, id := range ids {
			m[id]++
		}
		return m
	}
	pc, rc := count(pq.Samples), count(rr.Samples)
	var differ, missing, extra []check.SampleID
	for id, n := range pc {
		if rc[id] != n {
			differ = append(differ, id)
		}
		if !direct[id] {
			extra = append(extra, id)
		}
	}
	for id, n := range rc {
		if _, ok := pc[id]; !ok && n > 0 {
			differ = append(differ, id)
		}
	}
	for id := range direct {
		if pc[id] == 0 {
			missing = append(missing, id)
		}
	}
	res.OK = len(differ) == 0 && len(missing) == 0 && len(extra) == 0
	res.Summary = fmt.Sprintf("%s promql@%s=%d remote-read@%s=%d direct(ingesters+bucket)=%d in-bucket=%d promql-vs-remote-differ=%d missing-via-api=%d only-via-api=%d",
		passFail(res.OK), a.ID, len(pq.Samples), b.ID, len(rr.Samples), len(direct), inBucket, len(differ), len(missing), len(extra))
	for _, l := range []struct {
		what string
		ids  []check.SampleID
	}{{"differ", differ}, {"missing-via-api", missing}, {"only-via-api", extra}} {
		if len(l.ids) > 0 {
			res.Summary += fmt.Sprintf("\n    %s: %v", l.what, l.ids[:min(5, len(l.ids))])
		}
	}
	return res
}
