package querier

import (
	"context"
	"flag"
	"net"
	"slices"
	"sync"
	"testing"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/raftingest/raftingest/ingesterpb"
	"github.com/raftingest/raftingest/ringstate"
)

// fakeIngester is a real gRPC Ingester server on 127.0.0.1 serving canned series per tenant. It
// answers QueryStream (its memory: data) and QueryBlocks (its blocks: blocks) with every canned
// series matching the request's matchers (chunks untouched, even for a labels-only request:
// trimming and dropping are the querier's job), or fails with Unavailable when fail is set (both
// RPCs), failStream (QueryStream only) or failBlocks (QueryBlocks only).
type fakeIngester struct {
	ingesterpb.UnimplementedIngesterServer
	addr                   string
	fail                   bool
	failStream, failBlocks bool
	// onePerMessage sends each canned series in its own message.
	onePerMessage bool
	// served, when not nil, is called with the RPC's name ("QueryStream" or "QueryBlocks") once
	// its answer is sent, before the handler returns (so before the client sees the stream end).
	served func(rpc string)

	mu         sync.Mutex
	data       map[string][]*ingesterpb.StreamSeries // memory, by tenant
	blocks     map[string][]*ingesterpb.StreamSeries // blocks, by tenant
	tenants    []string                              // tenant of every QueryStream call, in order
	blockCalls []*ingesterpb.QueryRequest            // every QueryBlocks request, in order
	streamReqs []*ingesterpb.QueryRequest            // every QueryStream request, in order
}

func startFakeIngester(t testing.TB) *fakeIngester {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeIngester{addr: ln.Addr().String(), data: map[string][]*ingesterpb.StreamSeries{},
		blocks: map[string][]*ingesterpb.StreamSeries{}}
	srv := grpc.NewServer()
	ingesterpb.RegisterIngesterServer(srv, f)
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(srv.Stop)
	return f
}

// deadAddr returns a loopback address nothing listens on.
func deadAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

func (f *fakeIngester) add(tenantID string, ls labels.Labels, chunks ...*ingesterpb.Chunk) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.data[tenantID] = append(f.data[tenantID], streamSeries(ls, chunks))
}

// addBlocks adds a series to the fake's blocks (what QueryBlocks answers).
func (f *fakeIngester) addBlocks(tenantID string, ls labels.Labels, chunks ...*ingesterpb.Chunk) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.blocks[tenantID] = append(f.blocks[tenantID], streamSeries(ls, chunks))
}

func streamSeries(ls labels.Labels, chunks []*ingesterpb.Chunk) *ingesterpb.StreamSeries {
	ss := &ingesterpb.StreamSeries{Chunks: chunks}
	ls.Range(func(l labels.Label) { ss.Labels = append(ss.Labels, &ingesterpb.Label{Name: l.Name, Value: l.Value}) })
	return ss
}

func (f *fakeIngester) QueryStream(req *ingesterpb.QueryRequest, stream ingesterpb.Ingester_QueryStreamServer) error {
	return f.serve(req, stream, false)
}

func (f *fakeIngester) QueryBlocks(req *ingesterpb.QueryRequest, stream ingesterpb.Ingester_QueryBlocksServer) error {
	return f.serve(req, stream, true)
}

func (f *fakeIngester) serve(req *ingesterpb.QueryRequest, stream ingesterpb.Ingester_QueryStreamServer, blocks bool) error {
	tenantID, err := ingesterpb.TenantFromIncomingContext(stream.Context())
	if err != nil {
		return status.Error(codes.InvalidArgument, err.Error())
	}
	f.mu.Lock()
	var data []*ingesterpb.StreamSeries
	if blocks {
		f.blockCalls = append(f.blockCalls, req)
		data = slices.Clone(f.blocks[tenantID])
	} else {
		f.tenants = append(f.tenants, tenantID)
		f.streamReqs = append(f.streamReqs, req)
		data = slices.Clone(f.data[tenantID])
	}
	fail := f.fail || (blocks && f.failBlocks) || (!blocks && f.failStream)
	f.mu.Unlock()
	if fail {
		return status.Error(codes.Unavailable, "fake ingester down")
	}
	var ms []*labels.Matcher
	for _, pm := range req.GetMatchers() {
		ms = append(ms, labels.MustNewMatcher(labels.MatchType(pm.GetType()), pm.GetName(), pm.GetValue()))
	}
	resp := &ingesterpb.QueryStreamResponse{}
	for _, ss := range data {
		var b labels.ScratchBuilder
		for _, l := range ss.GetLabels() {
			b.Add(l.GetName(), l.GetValue())
		}
		ls := b.Labels()
		ok := true
		for _, m := range ms {
			ok = ok && m.Matches(ls.Get(m.Name))
		}
		if !ok {
			continue
		}
		if f.onePerMessage {
			if err := stream.Send(&ingesterpb.QueryStreamResponse{Series: []*ingesterpb.StreamSeries{ss}}); err != nil {
				return err
			}
			continue
		}
		resp.Series = append(resp.Series, ss)
	}
	if !f.onePerMessage {
		if err := stream.Send(resp); err != nil {
			return err
		}
	}
	if f.served != nil {
		f.served(map[bool]string{false: "QueryStream", true: "QueryBlocks"}[blocks])
	}
	return nil
}

type sample struct {
	t int64
	v float64
}

// xorChunks encodes samples into XOR chunks of at most perChunk samples each.
func xorChunks(t testing.TB, samples []sample, perChunk int) []*ingesterpb.Chunk {
	t.Helper()
	var out []*ingesterpb.Chunk
	for len(samples) > 0 {
		n := min(perChunk, len(samples))
		c := chunkenc.NewXORChunk()
		app, err := c.Appender()
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range samples[:n] {
			app.Append(s.t, s.v)
		}
		out = append(out, &ingesterpb.Chunk{MinTimeMs: samples[0].t, MaxTimeMs: samples[n-1].t,
			Encoding: uint32(chunkenc.EncXOR), Data: slices.Clone(c.Bytes())})
		samples = samples[n:]
	}
	return out
}

func samplesRange(from, to, step int64) []sample {
	var out []sample
	for ts := from; ts <= to; ts += step {
		out = append(out, sample{ts, float64(ts) / 1000})
	}
	return out
}

// staticRing serves one ring snapshot.
type staticRing struct{ r *ringstate.Ring }

func (s staticRing) Ring() *ringstate.Ring { return s.r }

// member describes one ring member for newRing.
type member struct {
	addr  string
	state ringstate.State
	stale bool   // heartbeat older than the timeout
	zone  string // the member's ring zone
}

// newRing builds a ring at time 100000 ms of members m0, m1, ... with a token each; the heartbeat
// timeout to use with it is 10 s.
func newRing(t testing.TB, ms ...member) RingSource {
	t.Helper()
	const now = 100_000
	var members []ringstate.Member
	for i, m := range ms {
		hb := int64(now)
		if m.stale {
			hb = now - 60_000
		}
		var tokens ringstate.Tokens
		if m.state != ringstate.PENDING {
			tokens = ringstate.Tokens{ringstate.Token(1000 * (i + 1))}
		}
		members = append(members, ringstate.Member{ID: ringstate.MemberID("m" + string(rune('0'+i))),
			RaftAddr: m.addr, GRPCAddr: m.addr, HTTPAddr: m.addr, Zone: m.zone, State: m.state,
			Tokens: tokens, RegisteredMs: 1, HeartbeatMs: hb})
	}
	r, err := ringstate.Restore(members, now, nil)
	if err != nil {
		t.Fatal(err)
	}
	return staticRing{r}
}

// collect reads a series set into rendered labels -> samples, and the labels in the set's order.
func collect(t testing.TB, set storage.SeriesSet) (map[string][]sample, []string) {
	t.Helper()
	out := map[string][]sample{}
	var order []string
	for set.Next() {
		s := set.At()
		key := s.Labels().String()
		order = append(order, key)
		it := s.Iterator(nil)
		for vt := it.Next(); vt != chunkenc.ValNone; vt = it.Next() {
			ts, v := it.At()
			out[key] = append(out[key], sample{ts, v})
		}
		if err := it.Err(); err != nil {
			t.Fatalf("iterate %s: %v", key, err)
		}
	}
	if err := set.Err(); err != nil {
		t.Fatalf("series set: %v", err)
	}
	return out, order
}

var bg = context.Background()

func flagSet() *flag.FlagSet { return flag.NewFlagSet("test", flag.ContinueOnError) }
