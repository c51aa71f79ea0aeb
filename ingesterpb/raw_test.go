package ingesterpb

import (
	"context"
	"fmt"
	"math"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/prometheus/prompb"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/encoding/protowire"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// recorder is an Ingester server that keeps the last request and tenant it received.
type recorder struct {
	UnimplementedIngesterServer
	mu     sync.Mutex
	req    *PushRequest
	tenant string
}

func (r *recorder) Push(ctx context.Context, req *PushRequest) (*PushResponse, error) {
	tenant, err := TenantFromIncomingContext(ctx)
	if err != nil {
		return nil, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.req, r.tenant = req, tenant
	n := 0
	for _, ts := range req.Timeseries {
		n += len(ts.Samples)
	}
	return &PushResponse{SamplesIngested: uint64(n), Errors: []*SeriesError{{Index: 1, Code: ErrorCode_OUT_OF_ORDER, Message: "x"}}}, nil
}

func startServer(t *testing.T, srv IngesterServer) *grpc.ClientConn {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer()
	RegisterIngesterServer(s, srv)
	go func() { _ = s.Serve(lis) }()
	t.Cleanup(s.Stop)
	cc, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close() })
	return cc
}

// countingPool is a mem.BufferPool that counts the buffers gRPC gives back.
type countingPool struct {
	mu   sync.Mutex
	puts int
}

func (p *countingPool) Get(n int) *[]byte { b := make([]byte, n); return &b }
func (p *countingPool) Put(*[]byte)       { p.mu.Lock(); p.puts++; p.mu.Unlock() }
func (p *countingPool) count() int        { p.mu.Lock(); defer p.mu.Unlock(); return p.puts }

// TestPushRaw_DecodesAsPushRequest checks the wire compatibility the distributor relies on: the
// bytes of a prompb.WriteRequest (here with a NaN, a stale marker and negative timestamps), sent raw,
// arrive at the server as the generated PushRequest with the same series, and the tenant arrives in
// the metadata.
func TestPushRaw_DecodesAsPushRequest(t *testing.T) {
	rec := &recorder{}
	cc := startServer(t, rec)

	stale := math.Float64frombits(0x7ff0000000000002)
	wr := prompb.WriteRequest{}
	for i := range 40 { // big enough (>1 KiB) for gRPC to pool-manage the buffer
		wr.Timeseries = append(wr.Timeseries, prompb.TimeSeries{
			Labels:  []prompb.Label{{Name: "__name__", Value: "up"}, {Name: "i", Value: fmt.Sprint(i)}},
			Samples: []prompb.Sample{{Value: float64(i), Timestamp: int64(i) - 5}, {Value: math.NaN(), Timestamp: 7}, {Value: stale, Timestamp: 8}},
		})
	}
	data, err := wr.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	pool := &countingPool{}
	ctx, cancel := context.WithTimeout(WithTenant(context.Background(), "team-a"), 5*time.Second)
	defer cancel()
	resp, err := PushRaw(ctx, cc, &RawPushRequest{Data: &data, Pool: pool})
	if err != nil {
		t.Fatal(err)
	}
	if resp.SamplesIngested != 120 || len(resp.Errors) != 1 || resp.Errors[0].Code != ErrorCode_OUT_OF_ORDER {
		t.Fatalf("response %v", resp)
	}
	rec.mu.Lock()
	got, tenant := rec.req, rec.tenant
	rec.mu.Unlock()
	if tenant != "team-a" {
		t.Fatalf("tenant %q", tenant)
	}
	if len(got.Timeseries) != len(wr.Timeseries) {
		t.Fatalf("%d series, want %d", len(got.Timeseries), len(wr.Timeseries))
	}
	for i, ts := range got.Timeseries {
		want := wr.Timeseries[i]
		for j, l := range ts.Labels {
			if l.Name != want.Labels[j].Name || l.Value != want.Labels[j].Value {
				t.Fatalf("series %d label %d: %v, want %v", i, j, l, want.Labels[j])
			}
		}
		for j, s := range ts.Samples {
			w := want.Samples[j]
			if math.Float64bits(s.Value) != math.Float64bits(w.Value) || s.Timestamp != w.Timestamp {
				t.Fatalf("series %d sample %d: %v, want %v", i, j, s, w)
			}
		}
	}
	// gRPC releases the buffer once the transport is done with it: it comes back to our pool.
	deadline := time.Now().Add(5 * time.Second)
	for pool.count() != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("buffer returned %d times, want 1", pool.count())
		}
		time.Sleep(time.Millisecond)
	}
}

// TestPushRequest_FieldNumbersMatchPrompb pins the wire compatibility with prompb in the generated
// code itself: a PushRequest marshalled by the generated code decodes as the same prompb request.
func TestPushRequest_FieldNumbersMatchPrompb(t *testing.T) {
	req := &PushRequest{Timeseries: []*TimeSeries{{
		Labels:  []*Label{{Name: "__name__", Value: "x"}},
		Samples: []*Sample{{Value: 1.5, Timestamp: -3}},
	}}}
	b, err := marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	var wr prompb.WriteRequest
	if err := wr.Unmarshal(b); err != nil {
		t.Fatal(err)
	}
	if len(wr.Timeseries) != 1 || wr.Timeseries[0].Labels[0].Value != "x" || wr.Timeseries[0].Samples[0].Timestamp != -3 ||
		wr.Timeseries[0].Samples[0].Value != 1.5 {
		t.Fatalf("decoded %+v", wr)
	}
	if num, typ, n := protowire.ConsumeTag(b); n <= 0 || num != 1 || typ != protowire.BytesType {
		t.Fatalf("first tag %d/%d", num, typ)
	}
}

func TestTenantFromIncomingContext_Refusals(t *testing.T) {
	if _, err := TenantFromIncomingContext(context.Background()); err != ErrNoTenant {
		t.Fatalf("no metadata: %v", err)
	}
}
