package transfer

// Fakes of the package's interfaces (Ring, Store, Dialer and the gRPC stream) for the fast unit
// tests of the Leaver and the Receiver. Each has a real-component twin: memRing applies the real
// ringstate (only Raft is missing), and the same code paths run over real gRPC and real memstores in
// BenchmarkHandover and in the process tests of e2e/handover_test.go.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/raftingest/raftingest/memstore"
	"github.com/raftingest/raftingest/ringstate"
	"github.com/raftingest/raftingest/transferpb"
)

// memRing is a Ring without Raft: every Apply is committed at once to a real ringstate.Ring, at the
// next index. Safe for concurrent use.
type memRing struct {
	mu      sync.Mutex
	ring    *ringstate.Ring
	index   uint64
	changed chan struct{}
	applied []ringstate.Command // committed commands, refused ones included
	// fail, when set, is asked before each Apply; a non-nil error is returned as an unknown outcome
	// and nothing is applied.
	fail func(cmd ringstate.Command) error
}

func newMemRing() *memRing { return &memRing{ring: ringstate.New(), changed: make(chan struct{})} }

func (f *memRing) Ring() *ringstate.Ring {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.ring
}

func (f *memRing) Changed() <-chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.changed
}

func (f *memRing) Apply(ctx context.Context, cmd ringstate.Command) (uint64, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	f.mu.Lock()
	fail := f.fail
	f.mu.Unlock()
	if fail != nil {
		if err := fail(cmd); err != nil {
			return 0, err
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	next, _, err := f.ring.Apply(cmd, time.Now().UnixMilli())
	f.ring = next
	f.index++
	f.applied = append(f.applied, cmd)
	close(f.changed)
	f.changed = make(chan struct{})
	return f.index, err
}

func (f *memRing) WaitApplied(ctx context.Context, index uint64) error {
	for {
		f.mu.Lock()
		done, ch := f.index >= index, f.changed
		f.mu.Unlock()
		if done {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (f *memRing) LinearizableRing(context.Context) (*ringstate.Ring, uint64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.ring, f.index, nil
}

// must commits cmds and fails the test on a refusal; it returns the last index.
func (f *memRing) must(t testing.TB, cmds ...ringstate.Command) uint64 {
	t.Helper()
	var idx uint64
	for _, c := range cmds {
		var err error
		if idx, err = f.Apply(context.Background(), c); err != nil {
			t.Fatalf("%s %s %s: %v", c.Op, c.Member, c.Peer, err)
		}
	}
	return idx
}

// ops returns the committed commands of op, in order.
func (f *memRing) ops(op ringstate.Op) []ringstate.Command {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []ringstate.Command
	for _, c := range f.applied {
		if c.Op == op {
			out = append(out, c)
		}
	}
	return out
}

func (f *memRing) member(t testing.TB, id ringstate.MemberID) ringstate.Member {
	t.Helper()
	m, ok := f.Ring().Member(id)
	if !ok {
		t.Fatalf("%s not in the ring", id)
	}
	return m
}

func registerCmd(id ringstate.MemberID, grpcAddr string) ringstate.Command {
	return ringstate.Command{Op: ringstate.OpRegister, Member: id, RaftAddr: "127.0.0.1:1",
		GRPCAddr: grpcAddr, HTTPAddr: "127.0.0.1:3"}
}

// addActive registers id and makes it ACTIVE with tokens.
func (f *memRing) addActive(t testing.TB, id ringstate.MemberID, grpcAddr string, tokens ringstate.Tokens) {
	t.Helper()
	f.must(t, registerCmd(id, grpcAddr),
		ringstate.Command{Op: ringstate.OpClaimTokens, Member: id, Tokens: tokens},
		ringstate.Command{Op: ringstate.OpActivate, Member: id})
}

// fakeStore is an in-memory Store. Safe for concurrent use.
type fakeStore struct {
	mu     sync.Mutex
	series map[string]Series // by tenant + labels
	// importErr, when set, is returned by ImportChunks.
	importErr error
	imports   int
}

func newFakeStore() *fakeStore { return &fakeStore{series: map[string]Series{}} }

func seriesKey(tenant string, lset labels.Labels) string { return tenant + "\xff" + lset.String() }

// add puts n series of tenant "t" into the store, each with one chunk.
func (s *fakeStore) add(t testing.TB, n int) {
	for i := range n {
		lset := labels.FromStrings("__name__", "m", "i", fmt.Sprint(i))
		s.series[seriesKey("t", lset)] = Series{Tenant: "t", Labels: lset,
			Chunks: []memstore.Chunk{xorChunk(t, []int64{1, 2, 3}, []float64{float64(i), 1, 2})}}
	}
}

func (s *fakeStore) len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.series)
}

func (s *fakeStore) ExportSeries(fn func(s *memstore.ImportSeries) error) error {
	s.mu.Lock()
	ss := make([]Series, 0, len(s.series))
	for _, v := range s.series {
		ss = append(ss, v)
	}
	s.mu.Unlock()
	slices.SortFunc(ss, func(a, b Series) int { return labels.Compare(a.Labels, b.Labels) })
	for _, v := range ss {
		v.LastV, v.HasLastV = lastValue(v.Chunks), true
		if err := fn(&v); err != nil {
			return err
		}
	}
	return nil
}

// lastValue decodes the last sample's value of the last chunk (0 without chunks).
func lastValue(chunks []memstore.Chunk) float64 {
	if len(chunks) == 0 {
		return 0
	}
	c, err := chunkenc.FromData(chunks[len(chunks)-1].Encoding, chunks[len(chunks)-1].Data)
	if err != nil {
		panic(err)
	}
	var v float64
	it := c.Iterator(nil)
	for it.Next() == chunkenc.ValFloat {
		_, v = it.At()
	}
	return v
}

func (s *fakeStore) ImportBatch(batch []memstore.ImportSeries) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.imports++
	if s.importErr != nil {
		return s.importErr
	}
	for _, in := range batch {
		// Like memstore: labels and chunk data are read only during the call, so copy them.
		lset := in.Labels.Copy()
		k := seriesKey(in.Tenant, lset)
		cur := s.series[k]
		cur.Tenant, cur.Labels = strings.Clone(in.Tenant), lset
		for _, c := range in.Chunks {
			c.Data = slices.Clone(c.Data)
			cur.Chunks = append(cur.Chunks, c)
		}
		s.series[k] = cur
	}
	return nil
}

func (s *fakeStore) DropAll() (memstore.TruncateStats, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := memstore.TruncateStats{SeriesRemoved: len(s.series)}
	clear(s.series)
	return st, nil
}

func (s *fakeStore) Tenants() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, v := range s.series {
		if !slices.Contains(out, v.Tenant) {
			out = append(out, v.Tenant)
		}
	}
	slices.Sort(out)
	return out
}

func (s *fakeStore) Stats(tenant string) memstore.TenantStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	var st memstore.TenantStats
	for _, v := range s.series {
		if v.Tenant == tenant {
			st.Series++
			st.Chunks += int64(len(v.Chunks))
		}
	}
	return st
}

// pipeNet connects Leavers to Receivers in memory: Dial(addr) returns a client whose streams are
// served by the Receiver registered at addr, each on its own goroutine, as gRPC would. Unlike real
// gRPC it has no goroutines of its own and no timers, so it runs inside a synctest bubble.
type pipeNet struct {
	mu   sync.Mutex
	srvs map[string]transferpb.TransferServer
}

func newPipeNet() *pipeNet { return &pipeNet{srvs: map[string]transferpb.TransferServer{}} }

func (n *pipeNet) register(addr string, s transferpb.TransferServer) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.srvs[addr] = s
}

func (n *pipeNet) Dial(_ context.Context, addr string) (transferpb.TransferClient, func() error, error) {
	n.mu.Lock()
	s, ok := n.srvs[addr]
	n.mu.Unlock()
	if !ok {
		return nil, nil, fmt.Errorf("pipenet: connection refused: %s", addr)
	}
	return pipeClient{s}, func() error { return nil }, nil
}

type pipeClient struct{ srv transferpb.TransferServer }

func (c pipeClient) TransferChunks(ctx context.Context, _ ...grpc.CallOption) (grpc.ClientStreamingClient[transferpb.Frame, transferpb.TransferResult], error) {
	p := newPipe(ctx)
	go p.serve(c.srv)
	return p.client(), nil
}

// pipe is one client stream: frames go through an unbuffered channel, so a frame whose Send
// returned has been received.
type pipe struct {
	ctx       context.Context // the client's
	srvCtx    context.Context // the handler's: ends with the client's or when the handler returns
	srvCancel context.CancelFunc
	frames    chan *transferpb.Frame
	closeSend chan struct{}
	closeOnce sync.Once
	done      chan struct{} // the handler returned
	res       *transferpb.TransferResult
	err       error
}

func newPipe(ctx context.Context) *pipe {
	sctx, cancel := context.WithCancel(ctx)
	return &pipe{ctx: ctx, srvCtx: sctx, srvCancel: cancel, frames: make(chan *transferpb.Frame), closeSend: make(chan struct{}), done: make(chan struct{})}
}

func (p *pipe) serve(srv transferpb.TransferServer) {
	p.err = srv.TransferChunks(pipeServer{p: p})
	p.srvCancel()
	close(p.done)
}

func (p *pipe) client() *pipeClientStream { return &pipeClientStream{p: p} }

type pipeClientStream struct {
	grpc.ClientStream // nil: only the methods below are used
	p                 *pipe
}

func (c *pipeClientStream) Send(f *transferpb.Frame) error {
	// gRPC marshals the frame in Send; the Leaver reuses the payload once Send returns.
	f = proto.Clone(f).(*transferpb.Frame)
	select {
	case c.p.frames <- f:
		return nil
	case <-c.p.done:
		return io.EOF // as gRPC: the status comes from CloseAndRecv
	case <-c.p.ctx.Done():
		return status.FromContextError(c.p.ctx.Err()).Err()
	}
}

func (c *pipeClientStream) CloseSend() error {
	c.p.closeOnce.Do(func() { close(c.p.closeSend) })
	return nil
}

func (c *pipeClientStream) CloseAndRecv() (*transferpb.TransferResult, error) {
	_ = c.CloseSend()
	select {
	case <-c.p.done:
		if c.p.err != nil {
			return nil, c.p.err
		}
		if c.p.res == nil {
			return nil, status.Error(codes.Internal, "pipenet: handler returned nil without SendAndClose")
		}
		return c.p.res, nil
	case <-c.p.ctx.Done():
		return nil, status.FromContextError(c.p.ctx.Err()).Err()
	}
}

type pipeServer struct {
	grpc.ServerStream // nil: only the methods below are used
	p                 *pipe
}

func (s pipeServer) Context() context.Context { return s.p.srvCtx }

func (s pipeServer) Recv() (*transferpb.Frame, error) {
	select {
	case f := <-s.p.frames:
		return f, nil
	case <-s.p.closeSend:
		return nil, io.EOF
	case <-s.p.srvCtx.Done():
		return nil, status.FromContextError(s.p.srvCtx.Err()).Err()
	}
}

func (s pipeServer) SendAndClose(r *transferpb.TransferResult) error {
	s.p.res = r
	return nil
}

func (s pipeServer) SetHeader(metadata.MD) error  { return nil }
func (s pipeServer) SendHeader(metadata.MD) error { return nil }
func (s pipeServer) SetTrailer(metadata.MD)       {}

var errInjected = errors.New("fake: injected failure")
