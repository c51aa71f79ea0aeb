package ingester

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"github.com/prometheus/prometheus/tsdb/chunks"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/raftingest/raftingest/ingesterpb"
	"github.com/raftingest/raftingest/memstore"
	"github.com/raftingest/raftingest/storage"
)

// blockSeries returns n series m{i="000".."n-1"} with a sample every step ms in [from, to), in XOR
// chunks of per samples.
func blockSeries(t *testing.T, n int, from, to, step int64, per int) []storage.Series {
	t.Helper()
	var out []storage.Series
	for i := range n {
		var chks []chunks.Meta
		var c *chunkenc.XORChunk
		var app chunkenc.Appender
		var first, last int64
		for ts := from; ts < to; ts += step {
			if c == nil || c.NumSamples() == per {
				if c != nil {
					chks = append(chks, chunks.Meta{Chunk: c, MinTime: first, MaxTime: last})
				}
				c = chunkenc.NewXORChunk()
				var err error
				if app, err = c.Appender(); err != nil {
					t.Fatal(err)
				}
				first = ts
			}
			app.Append(ts, float64(ts)+float64(i))
			last = ts
		}
		chks = append(chks, chunks.Meta{Chunk: c, MinTime: first, MaxTime: last})
		out = append(out, storage.Series{Labels: labels.FromStrings("__name__", "m", "i", fmt.Sprintf("%03d", i)), Chunks: chks})
	}
	return out
}

// uploadBlock writes ss as one block of [mint, maxt) into bkt for tenantID.
func uploadBlock(t *testing.T, bkt *storage.FilesystemBucket, tenantID string, ss []storage.Series, mint, maxt int64) {
	t.Helper()
	dir := t.TempDir()
	meta, err := storage.WriteBlock(context.Background(), dir, ss, storage.BlockOptions{MinTime: mint, MaxTime: maxt})
	if err != nil {
		t.Fatal(err)
	}
	if err := storage.UploadBlock(context.Background(), bkt, tenantID, filepath.Join(dir, meta.ULID.String()), meta); err != nil {
		t.Fatal(err)
	}
}

// readQueryBlocks calls QueryBlocks and returns its messages.
func readQueryBlocks(ctx context.Context, c ingesterpb.IngesterClient, req *ingesterpb.QueryRequest, opts ...grpc.CallOption) ([]*ingesterpb.QueryStreamResponse, error) {
	stream, err := c.QueryBlocks(ctx, req, opts...)
	if err != nil {
		return nil, err
	}
	var out []*ingesterpb.QueryStreamResponse
	for {
		resp, err := stream.Recv()
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		out = append(out, resp)
	}
}

// QueryBlocks over real gRPC and a real filesystem bucket holding two replicas' blocks of the same
// 300 series (chunks cut at other samples) and a later block: the tenant comes from the metadata;
// the series arrive in label order, each label set once across the whole stream (none is large
// enough to be split across messages), in batches of at most queryBatchSeries, with chunks that never overlap and hold every sample once; labels_only
// sends no chunk; a node without storage answers Unavailable (a member that does not serve its
// blocks must count as a failed one, not as one that holds nothing).
func TestQueryBlocks_ServesTheNodesOwnBucket(t *testing.T) {
	const h = int64(3600_000)
	root := t.TempDir()
	bkt, err := storage.NewFilesystemBucket(root)
	if err != nil {
		t.Fatal(err)
	}
	bq := storage.NewBucketQueryable(bkt, root, t.TempDir(), nil)
	t.Cleanup(func() { bq.Close() })
	const n = 300
	uploadBlock(t, bkt, "t1", blockSeries(t, n, 0, 2*h, 30_000, 120), 0, 2*h)
	uploadBlock(t, bkt, "t1", blockSeries(t, n, 0, 2*h, 30_000, 50), 0, 2*h)
	uploadBlock(t, bkt, "t1", blockSeries(t, n, 2*h, 3*h, 30_000, 120), 2*h, 3*h)
	uploadBlock(t, bkt, "t2", blockSeries(t, 1, 0, 2*h, 30_000, 120), 0, 2*h)

	svc := &ingesterService{store: openTestStore(t, memstore.DefaultConfig()), writable: func() (bool, string) { return true, "" }, blocks: bq}
	ts := startGRPCTestServer(t, testGRPCConfig(t), rawIngesterService{svc}, nil)
	c := ingesterpb.NewIngesterClient(ts.conn)
	all := []*ingesterpb.LabelMatcher{{Type: ingesterpb.MatchType_REGEX_MATCH, Name: "__name__", Value: ".+"}}
	ctx := ingesterpb.WithTenant(context.Background(), "t1")

	if _, err := readQueryBlocks(context.Background(), c, &ingesterpb.QueryRequest{EndTimestampMs: 3 * h, Matchers: all}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("without a tenant: %v, want InvalidArgument", err)
	}
	if _, err := readQueryBlocks(ingesterpb.WithTenant(context.Background(), "../t1"), c, &ingesterpb.QueryRequest{EndTimestampMs: 3 * h, Matchers: all}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("an invalid tenant: %v, want InvalidArgument (bad input, not the member's failure)", err)
	}
	if _, err := readQueryBlocks(ctx, c, &ingesterpb.QueryRequest{StartTimestampMs: 2, EndTimestampMs: 1, Matchers: all}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("start after end: %v, want InvalidArgument", err)
	}

	msgs, err := readQueryBlocks(ctx, c, &ingesterpb.QueryRequest{StartTimestampMs: 0, EndTimestampMs: 3 * h, Matchers: all})
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs) < (n+queryBatchSeries-1)/queryBatchSeries {
		t.Fatalf("%d messages for %d series, want batches of at most %d", len(msgs), n, queryBatchSeries)
	}
	var prev labels.Labels
	seen := 0
	for _, m := range msgs {
		if len(m.GetSeries()) > queryBatchSeries {
			t.Fatalf("a message of %d series", len(m.GetSeries()))
		}
		for _, ss := range m.GetSeries() {
			var b labels.ScratchBuilder
			for _, l := range ss.GetLabels() {
				b.Add(l.GetName(), l.GetValue())
			}
			lset := b.Labels()
			if seen > 0 && labels.Compare(prev, lset) >= 0 {
				t.Fatalf("series %s after %s: not sorted, or twice", lset, prev)
			}
			prev, seen = lset, seen+1
			i, err := strconv.Atoi(lset.Get("i"))
			if err != nil {
				t.Fatal(err)
			}
			want := int64(0)
			maxT := int64(math.MinInt64)
			for _, ch := range ss.GetChunks() {
				if ch.GetMinTimeMs() <= maxT {
					t.Fatalf("series %s: chunk [%d, %d] overlaps the one before", lset, ch.GetMinTimeMs(), ch.GetMaxTimeMs())
				}
				maxT = ch.GetMaxTimeMs()
				chk, err := chunkenc.FromData(chunkenc.Encoding(ch.GetEncoding()), ch.GetData())
				if err != nil {
					t.Fatal(err)
				}
				it := chk.Iterator(nil)
				for it.Next() == chunkenc.ValFloat {
					ts, v := it.At()
					if ts != want || v != float64(ts)+float64(i) {
						t.Fatalf("series %s: sample (%d, %v), want (%d, %v)", lset, ts, v, want, float64(want)+float64(i))
					}
					want += 30_000
				}
			}
			if want != 3*h {
				t.Fatalf("series %s: samples up to %d, want every 30s up to %d", lset, want, 3*h)
			}
		}
	}
	if seen != n {
		t.Fatalf("%d series, want %d", seen, n)
	}

	msgs, err = readQueryBlocks(ctx, c, &ingesterpb.QueryRequest{EndTimestampMs: 3 * h, Matchers: all, LabelsOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	seen = 0
	for _, m := range msgs {
		for _, ss := range m.GetSeries() {
			seen++
			if len(ss.GetChunks()) != 0 {
				t.Fatalf("labels only: %d chunks", len(ss.GetChunks()))
			}
		}
	}
	if seen != n {
		t.Fatalf("labels only: %d series, want %d", seen, n)
	}

	svc.blocks = nil // a node without storage
	if msgs, err := readQueryBlocks(ctx, c, &ingesterpb.QueryRequest{EndTimestampMs: 3 * h, Matchers: all}); status.Code(err) != codes.Unavailable || len(msgs) != 0 {
		t.Fatalf("without storage: %d messages, %v; want Unavailable", len(msgs), err)
	}
}

// QueryStream honours labels_only: the label sets of the series in memory, without their chunks.
func TestQueryStream_LabelsOnly(t *testing.T) {
	st := openTestStore(t, memstore.DefaultConfig())
	if _, err := st.Push("t1", []memstore.SeriesSamples{{Labels: labels.FromStrings("__name__", "m", "i", "1"), Samples: []memstore.Sample{{T: 1000, V: 1}}}}); err != nil {
		t.Fatal(err)
	}
	svc := &ingesterService{store: st, writable: func() (bool, string) { return true, "" }}
	ts := startGRPCTestServer(t, testGRPCConfig(t), rawIngesterService{svc}, nil)
	c := ingesterpb.NewIngesterClient(ts.conn)
	for _, labelsOnly := range []bool{false, true} {
		stream, err := c.QueryStream(ingesterpb.WithTenant(context.Background(), "t1"), &ingesterpb.QueryRequest{EndTimestampMs: 2000,
			Matchers: []*ingesterpb.LabelMatcher{{Name: "__name__", Value: "m"}}, LabelsOnly: labelsOnly})
		if err != nil {
			t.Fatal(err)
		}
		resp, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.GetSeries()) != 1 || (len(resp.GetSeries()[0].GetChunks()) == 0) != labelsOnly {
			t.Fatalf("labels_only %v: %v", labelsOnly, resp)
		}
	}
}

// A whole node with its default (node-local) bucket answers PromQL over what it flushed: after the
// flush its memory is empty, so the answer comes from its blocks, read by its querier through
// QueryBlocks (to itself: every member is asked, this one included).
func TestSingleNode_QueriesItsFlushedBlocksThroughQueryBlocks(t *testing.T) {
	now := time.Now()
	s, cfg := startSingleNode(t, nil, "-ingester.flush-check-period", "1h")
	for i := range 5 {
		if code, body := pushSample(t, cfg.HTTPAddr, "", "flushed", now.Add(time.Duration(i-5)*time.Second)); code/100 != 2 {
			t.Fatalf("push: %d %s", code, body)
		}
	}
	fctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.storage.FlushAll(fctx); err != nil {
		t.Fatal(err)
	}
	if n := len(s.store.Tenants()); n != 0 {
		t.Fatalf("%d tenants in memory after the flush, want 0", n)
	}
	q := url.Values{"query": {"count_over_time(flushed[1m])"}, "time": {fmt.Sprint(now.Unix())}}
	resp, err := http.Get("http://" + cfg.HTTPAddr + "/prometheus/api/v1/query?" + q.Encode())
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct {
		Status string
		Data   struct {
			Result []struct{ Value [2]any }
		}
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatal(err)
	}
	if body.Status != "success" || len(body.Data.Result) != 1 || body.Data.Result[0].Value[1] != "5" {
		t.Fatalf("count_over_time(flushed[1m]) = %+v, want 5", body)
	}
	if got := counterOf(t, s, "cortex_querier_fanout_requests_total", "blocks", "success"); got < 1 {
		t.Fatalf("cortex_querier_fanout_requests_total{source=\"blocks\",status=\"success\"} = %v, want at least 1", got)
	}
}

// counterOf finds the value of metric{source, status} in s's registry.
func counterOf(t *testing.T, s *Server, name, source, st string) float64 {
	t.Helper()
	mfs, err := s.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			var src, stat string
			for _, l := range m.GetLabel() {
				switch l.GetName() {
				case "source":
					src = l.GetValue()
				case "status":
					stat = l.GetValue()
				}
			}
			if src == source && stat == st {
				return m.GetCounter().GetValue()
			}
		}
	}
	t.Fatalf("no %s{source=%q,status=%q}", name, source, st)
	return 0
}

// randomSeries returns one series name{} with n samples, one a second from 0, of random values
// (XOR compresses them badly: about 9 bytes a sample), in chunks of 120.
func randomSeries(t *testing.T, name string, n int) storage.Series {
	t.Helper()
	rnd := rand.New(rand.NewPCG(1, 2))
	var chks []chunks.Meta
	for first := 0; first < n; first += 120 {
		c := chunkenc.NewXORChunk()
		app, err := c.Appender()
		if err != nil {
			t.Fatal(err)
		}
		last := min(first+120, n) - 1
		for i := first; i <= last; i++ {
			app.Append(int64(i)*1000, rnd.Float64())
		}
		chks = append(chks, chunks.Meta{Chunk: c, MinTime: int64(first) * 1000, MaxTime: int64(last) * 1000})
	}
	return storage.Series{Labels: labels.FromStrings("__name__", name), Chunks: chks}
}

// streamReader reads a QueryStream or QueryBlocks stream.
type streamReader interface {
	Recv() (*ingesterpb.QueryStreamResponse, error)
}

// readAll reads a stream to its end, checking that each message fits in queryBatchBytes plus
// slack (one chunk, one label set, the framing), and returns the messages.
func readAll(t *testing.T, stream streamReader, slack int) []*ingesterpb.QueryStreamResponse {
	t.Helper()
	var out []*ingesterpb.QueryStreamResponse
	for {
		resp, err := stream.Recv()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatalf("after %d messages: %v", len(out), err)
		}
		if n := proto.Size(resp); n > queryBatchBytes+slack {
			t.Fatalf("message %d: %d bytes, want at most %d", len(out), n, queryBatchBytes+slack)
		}
		out = append(out, resp)
	}
}

// checkSplitSeries checks that msgs carry one series named name, possibly split across consecutive
// messages, whose chunks hold n samples at 0, 1000, ... ms once each, in order.
func checkSplitSeries(t *testing.T, msgs []*ingesterpb.QueryStreamResponse, name string, n int) {
	t.Helper()
	want := int64(0)
	parts := 0
	for _, m := range msgs {
		for _, ss := range m.GetSeries() {
			if len(ss.GetLabels()) != 1 || ss.GetLabels()[0].GetValue() != name {
				t.Fatalf("series %v, want only %s", ss.GetLabels(), name)
			}
			parts++
			for _, ch := range ss.GetChunks() {
				chk, err := chunkenc.FromData(chunkenc.Encoding(ch.GetEncoding()), ch.GetData())
				if err != nil {
					t.Fatal(err)
				}
				it := chk.Iterator(nil)
				for it.Next() == chunkenc.ValFloat {
					if ts, _ := it.At(); ts != want {
						t.Fatalf("sample at %d, want %d", ts, want)
					}
					want += 1000
				}
			}
		}
	}
	if want != int64(n)*1000 || parts < 2 {
		t.Fatalf("%d samples in %d parts, want %d samples split over several messages", want/1000, parts, n)
	}
}

// A series whose chunks alone exceed the message byte bound is split across messages (its labels
// repeated), in QueryBlocks and in QueryStream, so a client whose receive limit is the bound plus a
// little reads it: no message is the bound plus a whole series. Label bytes count too: series with
// large labels and no chunks (labels_only) are spread over several messages.
func TestQueryStreams_MessagesStayWithinTheByteBound(t *testing.T) {
	const n = 400_000 // ~3.5 MiB of chunks
	big := randomSeries(t, "big", n)
	root := t.TempDir()
	bkt, err := storage.NewFilesystemBucket(root)
	if err != nil {
		t.Fatal(err)
	}
	bq := storage.NewBucketQueryable(bkt, root, t.TempDir(), nil)
	t.Cleanup(func() { bq.Close() })
	uploadBlock(t, bkt, "t1", []storage.Series{big}, 0, n*1000)
	var wide []storage.Series
	for i := range 100 {
		wide = append(wide, storage.Series{Labels: labels.FromStrings("__name__", "wide", "i", fmt.Sprint(i),
			"v", strings.Repeat("x", 30_000)), Chunks: randomSeries(t, "wide", 10).Chunks})
	}
	uploadBlock(t, bkt, "t2", wide, 0, 10_000)

	st := openTestStore(t, memstore.DefaultConfig())
	rnd := rand.New(rand.NewPCG(3, 4))
	for from := 0; from < n; from += 10_000 {
		smps := make([]memstore.Sample, 0, 10_000)
		for i := from; i < min(from+10_000, n); i++ {
			smps = append(smps, memstore.Sample{T: int64(i) * 1000, V: rnd.Float64()})
		}
		if _, err := st.Push("t1", []memstore.SeriesSamples{{Labels: big.Labels, Samples: smps}}); err != nil {
			t.Fatal(err)
		}
	}
	svc := &ingesterService{store: st, writable: func() (bool, string) { return true, "" }, blocks: bq}
	ts := startGRPCTestServer(t, testGRPCConfig(t), rawIngesterService{svc}, nil)
	c := ingesterpb.NewIngesterClient(ts.conn)
	const slack = 64 << 10
	limit := grpc.MaxCallRecvMsgSize(queryBatchBytes + slack)
	req := &ingesterpb.QueryRequest{EndTimestampMs: n * 1000, Matchers: []*ingesterpb.LabelMatcher{{Name: "__name__", Value: "big"}}}
	ctx := ingesterpb.WithTenant(context.Background(), "t1")

	blocks, err := c.QueryBlocks(ctx, req, limit)
	if err != nil {
		t.Fatal(err)
	}
	checkSplitSeries(t, readAll(t, blocks, slack), "big", n)
	mem, err := c.QueryStream(ctx, req, limit)
	if err != nil {
		t.Fatal(err)
	}
	checkSplitSeries(t, readAll(t, mem, slack), "big", n)

	wideReq := &ingesterpb.QueryRequest{EndTimestampMs: 10_000, Matchers: []*ingesterpb.LabelMatcher{{Name: "__name__", Value: "wide"}}, LabelsOnly: true}
	labelsOnly, err := c.QueryBlocks(ingesterpb.WithTenant(context.Background(), "t2"), wideReq, limit)
	if err != nil {
		t.Fatal(err)
	}
	msgs := readAll(t, labelsOnly, slack)
	got := 0
	for _, m := range msgs {
		got += len(m.GetSeries())
	}
	if got != 100 || len(msgs) < 3 {
		t.Fatalf("labels only: %d series in %d messages, want 100 in at least 3 (3 MB of labels)", got, len(msgs))
	}
}

// countingBlocks is a blockReader that counts the series its reader walked and reports the end of
// each walk.
type countingBlocks struct {
	blockReader
	walked atomic.Int64
	done   chan error
}

func (c *countingBlocks) SelectChunks(ctx context.Context, mint, maxt int64, labelsOnly bool, ms []*labels.Matcher,
	fn func(lset labels.Labels, chks []chunks.Meta) error) error {
	err := c.blockReader.SelectChunks(ctx, mint, maxt, labelsOnly, ms, func(lset labels.Labels, chks []chunks.Meta) error {
		c.walked.Add(1)
		return fn(lset, chks)
	})
	c.done <- err
	return err
}

// A querier that stops reading (it gave up, or crossed a limit) and cancels stops the walk of the
// blocks: the member reads a small part of them, not every series.
func TestQueryBlocks_CancelStopsTheWalk(t *testing.T) {
	const n = 5000
	root := t.TempDir()
	bkt, err := storage.NewFilesystemBucket(root)
	if err != nil {
		t.Fatal(err)
	}
	bq := storage.NewBucketQueryable(bkt, root, t.TempDir(), nil)
	t.Cleanup(func() { bq.Close() })
	var ss []storage.Series
	for i := range n {
		s := randomSeries(t, "m", 240)
		s.Labels = labels.FromStrings("__name__", "m", "i", fmt.Sprintf("%05d", i))
		ss = append(ss, s)
	}
	uploadBlock(t, bkt, "t1", ss, 0, 240_000)
	cb := &countingBlocks{blockReader: bq, done: make(chan error, 1)}
	svc := &ingesterService{store: openTestStore(t, memstore.DefaultConfig()), writable: func() (bool, string) { return true, "" }, blocks: cb}
	ts := startGRPCTestServer(t, testGRPCConfig(t), rawIngesterService{svc}, nil)
	c := ingesterpb.NewIngesterClient(ts.conn)
	ctx, cancel := context.WithCancel(ingesterpb.WithTenant(context.Background(), "t1"))
	defer cancel()
	stream, err := c.QueryBlocks(ctx, &ingesterpb.QueryRequest{EndTimestampMs: 240_000,
		Matchers: []*ingesterpb.LabelMatcher{{Name: "__name__", Value: "m"}}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatal(err)
	}
	cancel()
	select {
	case err := <-cb.done:
		if err == nil {
			t.Fatalf("the walk ended without an error after %d series: it was not stopped", cb.walked.Load())
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("the walk did not stop after the cancel (%d series walked)", cb.walked.Load())
	}
	if w := cb.walked.Load(); w >= n {
		t.Fatalf("%d series walked of %d: the cancel did not stop the walk", w, n)
	}
	t.Logf("%d of %d series walked before the cancel stopped the walk", cb.walked.Load(), n)
}

// A range that cuts through blocks: every series of the blocks it overlaps, with the chunks that
// overlap the range (boundary chunks whole: the querier trims), every sample in range once.
func TestQueryBlocks_RangeCuttingThroughBlocks(t *testing.T) {
	const h = int64(3600_000)
	root := t.TempDir()
	bkt, err := storage.NewFilesystemBucket(root)
	if err != nil {
		t.Fatal(err)
	}
	bq := storage.NewBucketQueryable(bkt, root, t.TempDir(), nil)
	t.Cleanup(func() { bq.Close() })
	uploadBlock(t, bkt, "t1", blockSeries(t, 3, 0, 2*h, 30_000, 120), 0, 2*h)
	uploadBlock(t, bkt, "t1", blockSeries(t, 3, 2*h, 4*h, 30_000, 120), 2*h, 4*h)
	uploadBlock(t, bkt, "t1", blockSeries(t, 3, 0, 2*h, 30_000, 50), 0, 2*h) // a replica's copy, cut elsewhere
	svc := &ingesterService{store: openTestStore(t, memstore.DefaultConfig()), writable: func() (bool, string) { return true, "" }, blocks: bq}
	ts := startGRPCTestServer(t, testGRPCConfig(t), rawIngesterService{svc}, nil)
	c := ingesterpb.NewIngesterClient(ts.conn)
	mint, maxt := 3*h/2+15_000, 5*h/2+7_000
	msgs, err := readQueryBlocks(ingesterpb.WithTenant(context.Background(), "t1"), c, &ingesterpb.QueryRequest{StartTimestampMs: mint,
		EndTimestampMs: maxt, Matchers: []*ingesterpb.LabelMatcher{{Name: "__name__", Value: "m"}}})
	if err != nil {
		t.Fatal(err)
	}
	series := 0
	for _, m := range msgs {
		for _, ss := range m.GetSeries() {
			series++
			var inRange []int64
			for _, ch := range ss.GetChunks() {
				if ch.GetMaxTimeMs() < mint || ch.GetMinTimeMs() > maxt {
					t.Fatalf("chunk [%d, %d] outside [%d, %d]", ch.GetMinTimeMs(), ch.GetMaxTimeMs(), mint, maxt)
				}
				chk, err := chunkenc.FromData(chunkenc.Encoding(ch.GetEncoding()), ch.GetData())
				if err != nil {
					t.Fatal(err)
				}
				it := chk.Iterator(nil)
				for it.Next() == chunkenc.ValFloat {
					if ts, _ := it.At(); ts >= mint && ts <= maxt {
						inRange = append(inRange, ts)
					}
				}
			}
			var want []int64
			for ts := (mint + 29_999) / 30_000 * 30_000; ts <= maxt; ts += 30_000 {
				want = append(want, ts)
			}
			if fmt.Sprint(inRange) != fmt.Sprint(want) {
				t.Fatalf("series %v: samples in range %v, want %v", ss.GetLabels(), inRange, want)
			}
		}
	}
	if series != 3 {
		t.Fatalf("%d series, want 3", series)
	}
}
