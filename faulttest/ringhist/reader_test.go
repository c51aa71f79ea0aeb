package ringhist

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/raftingest/raftingest/faulttest/check"
	"github.com/raftingest/raftingest/ringpb"
	"github.com/raftingest/raftingest/ringstate"
)

// ringServer serves a fixed ring at a fixed applied index, and only to linearizable reads: a
// reader that forgot to ask for one would read a follower's possibly stale ring.
type ringServer struct {
	ringpb.UnimplementedRingServer
	ring  *ringstate.Ring
	index uint64
}

func (s *ringServer) GetRing(_ context.Context, req *ringpb.GetRingRequest) (*ringpb.GetRingResponse, error) {
	if !req.GetLinearizable() {
		return nil, status.Error(codes.FailedPrecondition, "not a linearizable read")
	}
	return &ringpb.GetRingResponse{Members: ringpb.FromRing(s.ring), TimeMs: s.ring.TimeMs(), AppliedIndex: s.index}, nil
}

type connTarget struct{ cc *grpc.ClientConn }

func (t connTarget) Conn() (*grpc.ClientConn, error) { return t.cc, nil }

type brokenTarget struct{}

func (brokenTarget) Conn() (*grpc.ClientConn, error) { return nil, errors.New("no connection") }

// The reader records what a real gRPC GetRing{Linearizable} served — the ring's digest and the
// applied index — and records a read through a node it cannot reach as unknown.
func TestReader_RecordsLinearizableReadsAndFailuresAsUnknown(t *testing.T) {
	ring := ringstate.New()
	for _, c := range []ringstate.Command{regN1, claimN1, actN1, regN2} {
		ring, _, _ = ring.Apply(c, 0)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	ringpb.RegisterRingServer(srv, &ringServer{ring: ring, index: 42})
	go func() { _ = srv.Serve(ln) }()
	defer srv.Stop()
	cc, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()

	r := StartReader(context.Background(), 1, func() []Target { return []Target{connTarget{cc}, brokenTarget{}} })
	defer r.Stop()
	count := func() (ok, unknown int) {
		r.mu.Lock()
		defer r.mu.Unlock()
		for _, rd := range r.reads {
			if rd.Op.Unknown {
				unknown++
			} else {
				ok++
			}
		}
		return ok, unknown
	}
	deadline := time.Now().Add(20 * time.Second)
	for ok, unknown := count(); ok < 2 || unknown < 2; ok, unknown = count() {
		if time.Now().After(deadline) {
			t.Fatalf("not 2 answered and 2 unknown reads within 20s: %d and %d", ok, unknown)
		}
		time.Sleep(50 * time.Millisecond) // polling with the deadline above
	}
	reads := r.Stop()
	if again := r.Stop(); len(again) != len(reads) {
		t.Fatalf("a second Stop returned %d reads, the first %d", len(again), len(reads))
	}
	want := check.RingDigest(ring)
	for i, rd := range reads {
		if !rd.Op.Read || rd.Op.Call.IsZero() || rd.Op.Return.Before(rd.Op.Call) {
			t.Fatalf("read %d: not a read with invoke before return: %+v", i, rd.Op)
		}
		if i > 0 && rd.Op.Call.Before(reads[i-1].Op.Return) {
			t.Fatalf("read %d invoked before read %d returned: reads must be in order and one at a time", i, i-1)
		}
		if rd.Op.Unknown {
			if rd.Op.Digest != "" || rd.Index != 0 {
				t.Fatalf("read %d is unknown but carries a ring: %+v", i, rd)
			}
			continue
		}
		if rd.Op.Digest != want || rd.Index != 42 {
			t.Fatalf("read %d: digest %q index %d, want the served ring's %q at 42", i, rd.Op.Digest, rd.Index, want)
		}
	}
}
