package ingester

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"github.com/prometheus/prometheus/tsdb/chunks"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

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
func readQueryBlocks(ctx context.Context, c ingesterpb.IngesterClient, req *ingesterpb.QueryRequest) ([]*ingesterpb.QueryStreamResponse, error) {
	stream, err := c.QueryBlocks(ctx, req)
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
// the series arrive in label order, each label set once across the whole stream, in batches of at
// most queryBatchSeries, with chunks that never overlap and hold every sample once; labels_only
// sends no chunk; a node without storage answers an empty stream.
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
	if msgs, err := readQueryBlocks(ctx, c, &ingesterpb.QueryRequest{EndTimestampMs: 3 * h, Matchers: all}); err != nil || len(msgs) != 0 {
		t.Fatalf("without storage: %d messages, %v; want an empty stream", len(msgs), err)
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
