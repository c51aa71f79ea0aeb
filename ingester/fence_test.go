package ingester

import (
	"bytes"
	"context"
	"net/http"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang/snappy"
	"github.com/prometheus/prometheus/prompb"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/raftingest/raftingest/ingesterpb"
	"github.com/raftingest/raftingest/memstore"
)

// TestPushFence: on every way in (the generated Push, PushRaw, the local client) a push stamped
// before the member's ownership index is refused whole with the fenced status, nothing stored; one
// stamped at or after it, and an unstamped one, are stored; the counters say which was which.
func TestPushFence(t *testing.T) {
	var owned atomic.Uint64
	owned.Store(10)
	reg := prometheus.NewRegistry()
	fence := newPushFence("n1", owned.Load, reg)
	st := openTestStore(t, memstore.DefaultConfig())
	svc := &ingesterService{store: st, writable: func() (bool, string) { return true, "" }, fence: fence}
	req := validPushCases()[0]
	paths := map[string]func(stamp uint64) (*ingesterpb.PushResponse, error){
		"Push": func(stamp uint64) (*ingesterpb.PushResponse, error) {
			r := proto.Clone(req).(*ingesterpb.PushRequest)
			r.RingIndex = stamp
			return svc.Push(ingesterTenantCtx("t-push"), r)
		},
		"PushRaw": func(stamp uint64) (*ingesterpb.PushResponse, error) {
			b, _ := proto.Marshal(req)
			return rawIngesterService{svc}.PushRaw(ingesterTenantCtx("t-raw"), ingesterpb.AppendRingIndex(b, stamp))
		},
		"local": func(stamp uint64) (*ingesterpb.PushResponse, error) {
			b, _ := proto.Marshal(req)
			b = ingesterpb.AppendRingIndex(b, stamp)
			return newLocalClient(svc).Push(context.Background(), "t-local", &ingesterpb.RawPushRequest{Data: &b})
		},
	}
	wantFenced, wantUnstamped := 0, 0
	for name, push := range paths {
		tenant := map[string]string{"Push": "t-push", "PushRaw": "t-raw", "local": "t-local"}[name]
		_, err := push(9)
		f, ok := ingesterpb.AsFenced(err)
		if !ok || f.GetRingIndex() != 9 || f.GetOwnershipIndex() != 10 || status.Code(err) != codes.FailedPrecondition {
			t.Fatalf("%s stamped 9 < 10: %v, want the fenced refusal", name, err)
		}
		wantFenced++
		if n := len(st.LabelNames(tenant)); n != 0 {
			t.Fatalf("%s: a fenced push stored %d series", name, n)
		}
		for _, stamp := range []uint64{10, 11, 0} {
			resp, err := push(stamp)
			if err != nil || resp.GetSamplesIngested() == 0 {
				t.Fatalf("%s stamped %d (ownership 10): %v, %v", name, stamp, resp, err)
			}
			if stamp == 0 {
				wantUnstamped++
			}
		}
		// The ownership index moves on: the stamp that passed is now stale.
		owned.Store(12)
		if _, err := push(11); status.Code(err) != codes.FailedPrecondition {
			t.Fatalf("%s stamped 11 after ownership moved to 12: %v", name, err)
		}
		wantFenced++
		owned.Store(10)
	}
	if got := testutil.ToFloat64(fence.fenced); got != float64(wantFenced) {
		t.Errorf("raftingest_ingester_push_fenced_total = %v, want %d", got, wantFenced)
	}
	if got := testutil.ToFloat64(fence.unstamped); got != float64(wantUnstamped) {
		t.Errorf("raftingest_ingester_push_unstamped_total = %v, want %d", got, wantUnstamped)
	}
	if n, err := testutil.GatherAndCount(reg, "raftingest_ingester_push_fenced_total", "raftingest_ingester_push_unstamped_total"); err != nil || n != 2 {
		t.Errorf("registered metrics: %d, %v", n, err)
	}
}

// TestPushFence_BeforeTheWritableCheck: a member that went LEAVING after a push was placed fences
// it (the distributor places it again, spilling past this member) rather than failing it as not
// writable; a push placed by a ring that already knew is refused as not writable.
func TestPushFence_BeforeTheWritableCheck(t *testing.T) {
	svc := &ingesterService{store: openTestStore(t, memstore.DefaultConfig()), writable: func() (bool, string) { return false, "leaving" },
		fence: newPushFence("n1", func() uint64 { return 10 }, nil)}
	b, _ := proto.Marshal(validPushCases()[0])
	if _, err := (rawIngesterService{svc}).PushRaw(ingesterTenantCtx("t"), ingesterpb.AppendRingIndex(b, 9)); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("stale stamp on a leaving member: %v, want the fenced refusal", err)
	}
	if _, err := (rawIngesterService{svc}).PushRaw(ingesterTenantCtx("t"), ingesterpb.AppendRingIndex(b, 10)); status.Code(err) != codes.Unavailable {
		t.Fatalf("fresh stamp on a leaving member: %v, want Unavailable", err)
	}
}

// TestServer_PushesAreStamped: in a real 3-node cluster, every push a node's distributor sends
// (to the others over gRPC, to itself through the local client) carries the ring index: no member
// counts an unstamped push, and the ownership index is exported.
func TestServer_PushesAreStamped(t *testing.T) {
	c := startInProcess(t, 3, "-distributor.ingestion-rate-limit", "0")
	req := &prompb.WriteRequest{}
	for i := range 50 {
		req.Timeseries = append(req.Timeseries, prompb.TimeSeries{
			Labels:  []prompb.Label{{Name: "__name__", Value: "stamped"}, {Name: "i", Value: strconv.Itoa(i)}},
			Samples: []prompb.Sample{{Timestamp: time.Now().UnixMilli(), Value: 1}}})
	}
	raw, err := req.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	for i := range c.servers {
		hreq, _ := http.NewRequest(http.MethodPost, "http://"+c.cfgs[i].HTTPAddr+"/api/v1/push", bytes.NewReader(snappy.Encode(nil, raw)))
		hreq.Header.Set("Content-Encoding", "snappy")
		resp, err := http.DefaultClient.Do(hreq)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("push to n%d: %s", i, resp.Status)
		}
	}
	for i, s := range c.servers {
		s.dist.Wait()
		if n := testutil.ToFloat64(s.ingest.fence.unstamped); n != 0 {
			t.Errorf("n%d took %v unstamped pushes from its own cluster", i, n)
		}
		if got, want := s.store.Stats("anonymous").Series, int64(50); got != want {
			t.Errorf("n%d holds %d series, want %d (RF 3 on 3 members)", i, got, want)
		}
		if n, err := testutil.GatherAndCount(s.reg, "raftingest_ring_ownership_index"); err != nil || n != 1 {
			t.Errorf("n%d: raftingest_ring_ownership_index: %d, %v", i, n, err)
		}
		if s.node.OwnershipIndex() == 0 {
			t.Errorf("n%d: ownership index 0 in a cluster whose members joined", i)
		}
	}
}
