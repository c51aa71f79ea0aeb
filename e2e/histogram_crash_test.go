package e2e

import (
	"context"
	"fmt"
	"io"
	"math"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/prompb"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"google.golang.org/grpc"

	"github.com/raftingest/raftingest/ingesterpb"
	pc "github.com/raftingest/raftingest/internal/proccluster"
)

// histogramsOn returns the histogram samples (timestamp → count) a node's own store holds of
// series name, read from its chunks over QueryStream.
func histogramsOn(t *testing.T, grpcAddr, name string) map[string]uint64 {
	t.Helper()
	conn, err := grpc.NewClient(grpcAddr, insecureCreds)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	stream, err := ingesterpb.NewIngesterClient(conn).QueryStream(ingesterpb.WithTenant(ctx, "anonymous"), &ingesterpb.QueryRequest{
		StartTimestampMs: math.MinInt64, EndTimestampMs: math.MaxInt64,
		Matchers: []*ingesterpb.LabelMatcher{{Type: ingesterpb.MatchType_EQUAL, Name: "__name__", Value: name}},
	})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]uint64{}
	for {
		resp, err := stream.Recv()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatalf("query %s: %v", grpcAddr, err)
		}
		for _, s := range resp.GetSeries() {
			for _, c := range s.GetChunks() {
				ch, err := chunkenc.FromData(chunkenc.Encoding(c.GetEncoding()), c.GetData())
				if err != nil {
					t.Fatal(err)
				}
				it := ch.Iterator(nil)
				for vt := it.Next(); vt != chunkenc.ValNone; vt = it.Next() {
					if vt != chunkenc.ValHistogram {
						t.Fatalf("%s: a %v sample in a %v chunk", grpcAddr, vt, ch.Encoding())
					}
					ts, h := it.AtHistogram(nil)
					out[fmt.Sprintf("%v %d", s.GetLabels(), ts)] = h.Count
				}
			}
		}
	}
}

// pushHistogramRounds remote-writes rounds of one integer native histogram for each of n series,
// 15 s apart from t0, and returns how many it sent.
func pushHistogramRounds(t *testing.T, url string, n, rounds int, t0 int64) int {
	t.Helper()
	sent := 0
	for r := range rounds {
		var wr prompb.WriteRequest
		for s := range n {
			k := int64(r + 1)
			h := &histogram.Histogram{Schema: 2, PositiveSpans: []histogram.Span{{Offset: int32(s % 3), Length: 4}},
				PositiveBuckets: []int64{k, 0, k, -k}, Count: uint64(5 * k), Sum: float64(k * int64(s+1))}
			wr.Timeseries = append(wr.Timeseries, prompb.TimeSeries{
				Labels:     []prompb.Label{{Name: "__name__", Value: "crash_hist"}, {Name: "i", Value: fmt.Sprint(s)}},
				Histograms: []prompb.Histogram{prompb.FromIntHistogram(t0+int64(r)*15_000, h)},
			})
		}
		if err := remoteWrite(url, &wr); err != nil {
			t.Fatalf("round %d: %v", r, err)
		}
		sent += n
	}
	return sent
}

// Native histograms survive kill -9 of every member (WAL replay) and a graceful leave (hand-over
// over real gRPC to a PENDING member): every acknowledged histogram is on each of its replicas
// after the restart, and on the joiner after the hand-over.
func TestProcess_NativeHistogramsKillAndHandover(t *testing.T) {
	skipShort(t)
	c, abc, d, w := startHandoverCluster(t, 5)
	w.Stop()
	a, b, cc := abc[0], abc[1], abc[2]
	t0 := time.Now().Add(-40 * time.Minute).UnixMilli()                              // within the oldest block range in memory
	sent := pushHistogramRounds(t, "http://"+a.HTTPAddr+"/api/v1/push", 30, 150, t0) // 150 rounds: chunks cut at 120
	// 3 members, RF 3: every acknowledged histogram is on a quorum (2) of them. Not necessarily on
	// all 3: a push is answered once a quorum stored it, its third copy may still be on its way, or
	// refused as out of order when the next round's push overtook it (as for float samples).
	before := map[string]map[string]uint64{}
	copies := map[string]int{}
	for _, n := range []*pc.Node{a, b, cc} {
		before[n.ID] = histogramsOn(t, n.GRPCAddr, "crash_hist")
		for k := range before[n.ID] {
			copies[k]++
		}
	}
	if len(copies) != sent {
		t.Fatalf("the members hold %d distinct histograms of the %d sent and acknowledged", len(copies), sent)
	}
	for k, n := range copies {
		if n < 2 {
			t.Fatalf("acknowledged histogram %s is on %d of 3 members, want at least a quorum of 2", k, n)
		}
	}
	for _, n := range []*pc.Node{a, b, cc} {
		n.Kill()
	}
	for _, n := range []*pc.Node{a, b, cc} {
		n.Start()
	}
	waitActive(t, c, a.GRPCAddr, "a", "b", "c")
	for _, n := range []*pc.Node{a, b, cc} {
		// Everything the member held before the kill, it holds after the replay (copies still on their
		// way at the first read may have landed since: more is fine).
		after := histogramsOn(t, n.GRPCAddr, "crash_hist")
		if len(after) < len(before[n.ID]) {
			t.Fatalf("%s holds %d histograms after kill -9 and replay, %d before", n.ID, len(after), len(before[n.ID]))
		}
		for k, v := range before[n.ID] {
			if after[k] != v {
				t.Fatalf("%s: %s count %d after replay, %d before", n.ID, k, after[k], v)
			}
		}
	}
	cc.Signal(syscall.SIGINT)
	if code, err := cc.Wait(60 * time.Second); err != nil || code != 0 {
		t.Fatalf("leaver exit code %d, err %v; log:\n%s", code, err, cc.Log())
	}
	waitActive(t, c, a.GRPCAddr, "a", "b", "d")
	got := histogramsOn(t, d.GRPCAddr, "crash_hist")
	for k, v := range before["c"] {
		if got[k] != v {
			t.Fatalf("joiner: %s count %d, the leaver had %d (joiner holds %d histograms)", k, got[k], v, len(got))
		}
	}
	if sentChunks := sentChunksInLog(t, cc); sentChunks == 0 {
		t.Fatal("the leaver sent no chunks")
	}
}
