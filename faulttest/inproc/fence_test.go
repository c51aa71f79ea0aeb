package inproc

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang/snappy"
	"github.com/prometheus/prometheus/prompb"

	"github.com/raftingest/raftingest/distributor"
	"github.com/raftingest/raftingest/faulttest/check"
	"github.com/raftingest/raftingest/ingesterpb"
	"github.com/raftingest/raftingest/raftfsm"
	"github.com/raftingest/raftingest/ringstate"
)

// frozenRing is a distributor's ring that stopped following the cluster: RingIndex returns the
// ring and index captured at freeze until the distributor waits for a later index (a fenced push),
// from then on the node's live ring — a distributor whose node was cut off from Raft for a while
// and catches up when asked.
type frozenRing struct {
	node *raftfsm.Node

	mu    sync.Mutex
	ring  *ringstate.Ring
	index uint64
	live  bool
}

func freeze(n *raftfsm.Node) *frozenRing {
	r, i := n.RingIndex()
	return &frozenRing{node: n, ring: r, index: i}
}

func (f *frozenRing) Ring() *ringstate.Ring { r, _ := f.RingIndex(); return r }

func (f *frozenRing) RingIndex() (*ringstate.Ring, uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.live {
		return f.node.RingIndex()
	}
	return f.ring, f.index
}

func (f *frozenRing) WaitApplied(ctx context.Context, index uint64) error {
	f.mu.Lock()
	f.live = true
	f.mu.Unlock()
	return f.node.WaitApplied(ctx, index)
}

// unindexed hides the index of a ring source: the distributor then sends unstamped pushes, which
// ingesters take unfenced. It is the checker's bug switch: fencing disabled.
type unindexed struct{ src *frozenRing }

func (u unindexed) Ring() *ringstate.Ring { return u.src.Ring() }

// recordingPool records, for every push that succeeded, which member acknowledged which series
// (every series not in the answer's errors), with the request's stamp; and counts fenced refusals.
type recordingPool struct {
	inner  distributor.ClientPool
	member map[string]string // gRPC address -> member ID

	mu     sync.Mutex
	acks   []check.FenceAck
	fenced int
}

func (p *recordingPool) GetClientFor(addr string) (distributor.IngesterClient, error) {
	c, err := p.inner.GetClientFor(addr)
	if err != nil {
		return nil, err
	}
	return &recordingClient{inner: c, pool: p, member: p.member[addr]}, nil
}

type recordingClient struct {
	inner  distributor.IngesterClient
	pool   *recordingPool
	member string
}

func (c *recordingClient) Push(ctx context.Context, tenant string, req *ingesterpb.RawPushRequest) (*ingesterpb.PushResponse, error) {
	// Decode before the call: the request's bytes belong to gRPC from then on.
	var v ingesterpb.PushRequestView
	if err := v.Unmarshal(*req.Data); err != nil {
		return nil, err
	}
	names := make([]string, len(v.Series))
	for i, s := range v.Series {
		names[i] = seriesName(s.Labels)
	}
	stamp := v.RingIndex
	resp, err := c.inner.Push(ctx, tenant, req)
	c.pool.mu.Lock()
	defer c.pool.mu.Unlock()
	if _, ok := ingesterpb.AsFenced(err); ok {
		c.pool.fenced++
	}
	if err != nil {
		return resp, err
	}
	refused := map[uint32]bool{}
	for _, e := range resp.GetErrors() {
		refused[e.GetIndex()] = true
	}
	for i, n := range names {
		if !refused[uint32(i)] {
			c.pool.acks = append(c.pool.acks, check.FenceAck{Series: n, Member: c.member, Stamp: stamp})
		}
	}
	return resp, nil
}

func seriesName(ls []ingesterpb.LabelView) string {
	var b strings.Builder // copies: the view's strings alias the request
	for _, l := range ls {
		b.WriteString(l.Name + "=" + l.Value + ",")
	}
	return b.String()
}

// fenceSeries are the test's series, by name, with their labels as the distributor hashes them.
func fenceSeries(batch, n int) (map[string][]distributor.Label, []prompb.TimeSeries) {
	names := map[string][]distributor.Label{}
	var ts []prompb.TimeSeries
	for i := range n {
		ls := []distributor.Label{{Name: "__name__", Value: "fence_test"}, {Name: "i", Value: fmt.Sprintf("%d-%d", batch, i)}}
		var pl []prompb.Label
		var name strings.Builder
		for _, l := range ls {
			pl = append(pl, prompb.Label{Name: l.Name, Value: l.Value})
			name.WriteString(l.Name + "=" + l.Value + ",")
		}
		names[name.String()] = ls
		ts = append(ts, prompb.TimeSeries{Labels: pl, Samples: []prompb.Sample{{Value: 1, Timestamp: time.Now().UnixMilli()}}})
	}
	return names, ts
}

// TestFencing_StaleDistributorAcrossAJoin: a distributor whose ring stopped at a 3-member cluster
// keeps writing after a 4th member joined and took ranges from the others. With fencing, every
// ingester refuses its pushes, it catches up and places them again: every acknowledgement comes
// from an owner on the ring every member has applied (checker passes). With fencing disabled (the
// same distributor sending unstamped pushes), members that no longer own a series take it, and
// the checker must fail — the proof that it can.
func TestFencing_StaleDistributorAcrossAJoin(t *testing.T) {
	if testing.Short() {
		t.Skip("in-process tier: not in -short")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	dir := t.TempDir()
	c, err := NewCluster(dir, 4)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	keepLogs := func() {
		if t.Failed() {
			for _, n := range c.Nodes {
				if b, err := os.ReadFile(n.LogPath); err == nil {
					t.Logf("=== %s log (tail):\n%s", n.ID, tail(string(b), 3000))
				}
			}
		}
	}
	defer keepLogs()

	if err := c.Start(0); err != nil {
		t.Fatal(err)
	}
	if err := waitFor(ctx, 20*time.Second, 50*time.Millisecond, func() bool { return c.Leader() == 0 }); err != nil {
		t.Fatal("bootstrap node never led: ", err)
	}
	for i := 1; i < 3; i++ {
		if err := c.Start(i); err != nil {
			t.Fatal(err)
		}
	}
	activeOn := func(node int, ids ...string) bool {
		s := c.Nodes[node].Server()
		if s == nil {
			return false
		}
		r := s.Node().Ring()
		for _, id := range ids {
			if m, ok := r.Member(ringstate.MemberID(id)); !ok || m.State != ringstate.ACTIVE || len(m.Tokens) == 0 {
				return false
			}
		}
		return true
	}
	if err := waitFor(ctx, 60*time.Second, 100*time.Millisecond, func() bool {
		return activeOn(0, "n0", "n1", "n2") && activeOn(1, "n0", "n1", "n2") && activeOn(2, "n0", "n1", "n2")
	}); err != nil {
		t.Fatal("three members never ACTIVE: ", err)
	}
	src := freeze(c.Nodes[0].Server().Node())
	t.Logf("distributor ring frozen at index %d with %d members", src.index, src.ring.Len())

	// The fourth member joins: ownership changes on every node.
	if err := c.Start(3); err != nil {
		t.Fatal(err)
	}
	if err := waitFor(ctx, 60*time.Second, 100*time.Millisecond, func() bool {
		for i := range 4 {
			if !activeOn(i, "n0", "n1", "n2", "n3") {
				return false
			}
		}
		return true
	}); err != nil {
		t.Fatal("n3 never ACTIVE on every node: ", err)
	}
	for i := range 4 {
		t.Logf("%s: ownership index %d", c.Nodes[i].ID, c.Nodes[i].Server().Node().OwnershipIndex())
	}

	var cfg distributor.Config
	fs := flag.NewFlagSet("d", flag.ContinueOnError)
	cfg.RegisterFlags(fs)
	cfg.RingHeartbeatTimeout = ringHeartbeatTimeout
	cfg.IngestionRateLimit = 0
	cfg.RemoteTimeout = 10 * time.Second
	members := map[string]string{}
	for _, n := range c.Nodes {
		members[n.GRPCAddr] = n.ID
	}

	// run pushes batches of series through a distributor over ring source rs and checks them.
	run := func(name string, rs distributor.RingSource) (check.FenceResult, *recordingPool) {
		grpcPool := distributor.NewGRPCClientPool(time.Minute, nil)
		defer grpcPool.Close()
		pool := &recordingPool{inner: grpcPool, member: members}
		d, err := distributor.New(cfg, distributor.Deps{Ring: rs, Clients: pool})
		if err != nil {
			t.Fatal(err)
		}
		srv := httptest.NewServer(d)
		defer func() { srv.Close(); d.Wait() }()
		all := map[string][]distributor.Label{}
		var acked []string
		for batch := range 5 {
			names, ts := fenceSeries(len(name)*100+batch, 60)
			body, err := (&prompb.WriteRequest{Timeseries: ts}).Marshal()
			if err != nil {
				t.Fatal(err)
			}
			req, _ := http.NewRequest(http.MethodPost, srv.URL+"/api/v1/push", bytes.NewReader(snappy.Encode(nil, body)))
			req.Header.Set("Content-Encoding", "snappy")
			req.Header.Set("Content-Type", "application/x-protobuf")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("%s: batch %d answered %d", name, batch, resp.StatusCode)
			}
			for n, ls := range names {
				all[n] = ls
				acked = append(acked, n)
			}
		}
		d.Wait()
		// Owners on the ring every member applied before the writes (no ownership change since).
		ring := c.Nodes[0].Server().Node().Ring()
		rf := ring.EffectiveRF(cfg.ReplicationFactor)
		owners := func(series string) []string {
			var out []string
			for _, m := range ring.ReplicationSet(distributor.SeriesHash(distributor.DefaultTenant, all[series]), rf, ringHeartbeatTimeout.Milliseconds(), nil) {
				out = append(out, string(m.ID))
			}
			return out
		}
		pool.mu.Lock()
		defer pool.mu.Unlock()
		res := check.CheckFencing(acked, pool.acks, owners, ringstate.Quorum(rf))
		t.Logf("%s: fenced refusals %d, %s", name, pool.fenced, res.String())
		return res, pool
	}

	// The bug switch first (the ring source must still be frozen for it): fencing disabled.
	bug, bugPool := run("fencing-disabled", unindexed{src})
	if bug.Valid() || bug.NonOwnerAcks == 0 || bugPool.fenced != 0 {
		t.Errorf("with fencing disabled a stale distributor wrote to members that lost the series, yet the checker passed: %s", bug.String())
	}
	if src.live {
		t.Fatal("the unstamped distributor caught up: the bug run proves nothing")
	}
	res, pool := run("fenced", src)
	if !res.Valid() {
		t.Errorf("fencing on: %s", res.String())
	}
	if pool.fenced == 0 || res.Writes == 0 {
		t.Errorf("fencing on: %d fenced refusals, %d writes: the stale ring was never fenced, the run proves nothing", pool.fenced, res.Writes)
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}
