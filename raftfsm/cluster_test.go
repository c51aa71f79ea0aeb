package raftfsm

// The cluster harness: several real Nodes in one process, each with real Raft over loopback TCP,
// real bbolt files in t.TempDir(), and its own gRPC server serving its Ring service on 127.0.0.1.
// Copy it freely; every cluster test ends with checkConsistent (same applied index, byte-identical
// FSM snapshots on every running node), the hashicorp "fuzzy" end check.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/raftingest/raftingest/ringpb"
	"github.com/raftingest/raftingest/ringstate"
)

// testLog collects every node's log lines and prints the tail only if the test failed.
type testLog struct {
	mu    sync.Mutex
	lines []string
}

func (l *testLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	l.lines = append(l.lines, strings.TrimRight(string(p), "\n"))
	l.mu.Unlock()
	return len(p), nil
}

func (l *testLog) dump(tb testing.TB) {
	l.mu.Lock()
	defer l.mu.Unlock()
	lines := l.lines
	if len(lines) > 300 {
		lines = lines[len(lines)-300:]
	}
	tb.Logf("last %d log lines:\n%s", len(lines), strings.Join(lines, "\n"))
}

type testNode struct {
	id       string
	dir      string
	raftAddr string // after the first start: the port the transport got
	grpcAddr string
	node     *Node
	srv      *grpc.Server
	reg      *prometheus.Registry
	leaves   atomic.Int32 // calls of the Leave hook
}

type testCluster struct {
	tb    testing.TB
	log   *testLog
	mu    sync.Mutex
	nodes []*testNode // in creation order
	// leaderCache is the leader leader() found last.
	leaderCache *testNode
	base        string // parent of the nodes' data dirs
	// cfg is the template for every node's Config; tests tune it before starting nodes.
	cfg Config
}

// fastConfig has timeouts short enough for tests yet long enough for the race detector on 2 cores.
func fastConfig() Config {
	c := DefaultConfig()
	c.HeartbeatTimeout = 300 * time.Millisecond
	c.ElectionTimeout = 300 * time.Millisecond
	c.CommitTimeout = 5 * time.Millisecond
	c.ApplyTimeout = 5 * time.Second
	c.SnapshotInterval = 100 * time.Millisecond
	c.ReconcileInterval = 100 * time.Millisecond
	c.RingHeartbeatTimeout = time.Minute
	// The tests claim hand-picked tokens (one or two a member): the spread bound, which real joiners'
	// balanced tokens keep, is tested on its own (TestCluster_ClaimSpreadRefused).
	c.MaxOwnershipSpread = 0
	return c
}

func newCluster(tb testing.TB) *testCluster {
	// The data dirs' parent is created before the cleanup below is registered, so the nodes are
	// shut down before TempDir removes their files (cleanups run last-registered first).
	c := &testCluster{tb: tb, log: &testLog{}, cfg: fastConfig(), base: tb.TempDir()}
	tb.Cleanup(func() {
		c.mu.Lock()
		nodes := slices.Clone(c.nodes)
		c.mu.Unlock()
		for _, n := range nodes {
			c.stop(n)
		}
		if tb.Failed() {
			c.log.dump(tb)
		}
	})
	return c
}

// running returns the nodes that are started.
func (c *testCluster) running() []*testNode {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []*testNode
	for _, n := range c.nodes {
		if n.node != nil {
			out = append(out, n)
		}
	}
	return out
}

// start creates (first call for id) or restarts node id from its data dir and serves its Ring
// service on gRPC.
func (c *testCluster) start(id string, bootstrap bool) *testNode {
	c.tb.Helper()
	c.mu.Lock()
	var tn *testNode
	for _, n := range c.nodes {
		if n.id == id {
			tn = n
		}
	}
	if tn == nil {
		tn = &testNode{id: id, dir: filepath.Join(c.base, id), raftAddr: "127.0.0.1:0", grpcAddr: "127.0.0.1:0"}
		c.nodes = append(c.nodes, tn)
	}
	c.mu.Unlock()

	lis, err := listenRetry(tn.grpcAddr)
	if err != nil {
		c.tb.Fatalf("%s: grpc listen: %v", id, err)
	}
	tn.grpcAddr = lis.Addr().String()
	cfg := c.cfg
	cfg.ID, cfg.DataDir, cfg.RaftAddr, cfg.Bootstrap = id, tn.dir, tn.raftAddr, bootstrap
	cfg.Logger = slog.New(slog.NewTextHandler(c.log, &slog.HandlerOptions{Level: slog.LevelInfo})).With("node", id)
	tn.reg = prometheus.NewRegistry()
	cfg.Registerer = tn.reg
	var n *Node
	for deadline := time.Now().Add(5 * time.Second); ; {
		n, err = NewNode(cfg)
		// A restarted node reuses its raft port; the old listener may take a moment to go.
		if err == nil || !strings.Contains(err.Error(), "address already in use") || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond) // backoff between bind attempts, not synchronization
	}
	if err != nil {
		lis.Close()
		c.tb.Fatalf("%s: NewNode: %v", id, err)
	}
	tn.raftAddr = n.RaftAddr()
	srv := grpc.NewServer()
	ringpb.RegisterRingServer(srv, NewService(n, func(ctx context.Context) error {
		tn.leaves.Add(1)
		return n.LeaveCluster(ctx)
	}))
	go srv.Serve(lis)
	c.mu.Lock()
	tn.node, tn.srv = n, srv
	c.mu.Unlock()
	return tn
}

func listenRetry(addr string) (net.Listener, error) {
	deadline := time.Now().Add(5 * time.Second)
	for {
		lis, err := net.Listen("tcp", addr)
		if err == nil || time.Now().After(deadline) {
			return lis, err
		}
		time.Sleep(20 * time.Millisecond) // backoff between bind attempts
	}
}

// stop shuts the node and its gRPC server down, keeping its data dir and addresses for a restart.
func (c *testCluster) stop(tn *testNode) {
	c.mu.Lock()
	n, srv := tn.node, tn.srv
	tn.node, tn.srv = nil, nil
	c.mu.Unlock()
	if n == nil {
		return
	}
	srv.Stop()
	if err := n.Shutdown(); err != nil {
		c.tb.Errorf("%s: shutdown: %v", tn.id, err)
	}
}

// leader waits for a running node that leads and that every running voter agrees on.
func (c *testCluster) leader() *testNode {
	c.tb.Helper()
	var last string
	ok := poll(c.tb, 10*time.Second, func() bool {
		var lead *testNode
		for _, n := range c.running() {
			if n.node.IsLeader() {
				if lead != nil {
					last = "two leaders"
					return false
				}
				lead = n
			}
		}
		if lead == nil {
			last = "no leader"
			return false
		}
		for _, n := range c.running() {
			if l, _ := n.node.Leader(); l != lead.id && !n.node.removed.Load() && inConfig(n.node, n.id) {
				last = fmt.Sprintf("%s thinks %q leads, %s does", n.id, l, lead.id)
				return false
			}
		}
		c.mu.Lock()
		c.leaderCache = lead
		c.mu.Unlock()
		return true
	})
	if !ok {
		c.tb.Fatalf("no stable leader: %s", last)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.leaderCache
}

func inConfig(n *Node, id string) bool {
	for _, s := range n.Status().Servers {
		if s.ID == id {
			return true
		}
	}
	return false
}

// follower returns a running node that is not the leader.
func (c *testCluster) follower() *testNode {
	c.tb.Helper()
	l := c.leader()
	for _, n := range c.running() {
		if n != l {
			return n
		}
	}
	c.tb.Fatal("no follower")
	return nil
}

// poll calls cond every 10ms until it is true or d passes.
func poll(tb testing.TB, d time.Duration, cond func() bool) bool {
	tb.Helper()
	deadline := time.Now().Add(d)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		<-tick.C
	}
}

func ctxT(tb testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	tb.Cleanup(cancel)
	return ctx
}

// apply applies cmd through via, retrying retryable failures with the same request id (as every
// client must), and returns the index and ringstate's outcome.
func (c *testCluster) apply(via *testNode, cmd ringstate.Command) (uint64, error) {
	c.tb.Helper()
	if cmd.RequestID == "" {
		cmd.RequestID = randomID()
	}
	ctx := ctxT(c.tb, 20*time.Second)
	for {
		idx, err := via.node.Apply(ctx, cmd)
		if err == nil || !Retryable(err) {
			return idx, err
		}
		if ctx.Err() != nil {
			c.tb.Fatalf("apply %s via %s: %v", cmd.Op, via.id, err)
		}
		select {
		case <-ctx.Done():
		case <-time.After(20 * time.Millisecond): // retry backoff
		}
	}
}

func (c *testCluster) mustApply(via *testNode, cmd ringstate.Command) uint64 {
	c.tb.Helper()
	idx, err := c.apply(via, cmd)
	if err != nil {
		c.tb.Fatalf("apply %+v via %s: %v", cmd, via.id, err)
	}
	return idx
}

// register adds tn to the ring with its addresses, as the lifecycle does at start; followers then
// find its gRPC address there when it leads.
func (c *testCluster) register(tn *testNode) {
	c.tb.Helper()
	c.mustApply(tn, ringstate.Command{Op: ringstate.OpRegister, Member: ringstate.MemberID(tn.id),
		RaftAddr: tn.raftAddr, GRPCAddr: tn.grpcAddr})
}

// bootstrap starts a one-node cluster of id and registers it in the ring.
func (c *testCluster) bootstrap(id string) *testNode {
	c.tb.Helper()
	tn := c.start(id, true)
	c.leader()
	c.register(tn)
	return tn
}

// join starts node id, adds it through via (any member: followers forward), waits until it has
// caught up, and registers it in the ring.
func (c *testCluster) join(id string, via *testNode) (*testNode, bool) {
	c.tb.Helper()
	tn := c.start(id, false)
	var voter bool
	retry(c.tb, "add "+id, func(ctx context.Context) (err error) {
		voter, err = via.node.AddPeer(ctx, id, tn.raftAddr, false)
		return err
	})
	if !poll(c.tb, 10*time.Second, func() bool { l, _ := tn.node.Leader(); return l != "" }) {
		c.tb.Fatalf("%s never heard from a leader", id)
	}
	c.register(tn)
	return tn, voter
}

// cluster starts n nodes (n1 bootstraps) and returns them.
func (c *testCluster) cluster(n int) []*testNode {
	c.tb.Helper()
	out := []*testNode{c.bootstrap("n1")}
	for i := 2; i <= n; i++ {
		tn, _ := c.join(fmt.Sprintf("n%d", i), out[len(out)-1])
		out = append(out, tn)
	}
	return out
}

// checkConsistent waits until every running node still in the configuration has applied the same
// index, then requires byte-identical FSM snapshots.
func (c *testCluster) checkConsistent() {
	c.tb.Helper()
	var nodes []*testNode
	for _, n := range c.running() {
		if n.node.Err() == nil {
			nodes = append(nodes, n)
		}
	}
	// A barrier through the leader makes every node's commit index reach the latest entry.
	c.mustApply(c.leader(), ringstate.Command{Op: ringstate.OpHeartbeat, Member: ringstate.MemberID(c.leader().id)})
	var why string
	if !poll(c.tb, 10*time.Second, func() bool {
		want := nodes[0].node.AppliedIndex()
		for _, n := range nodes[1:] {
			if got := n.node.AppliedIndex(); got != want {
				why = fmt.Sprintf("%s applied %d, %s applied %d", nodes[0].id, want, n.id, got)
				return false
			}
		}
		return true
	}) {
		c.tb.Fatalf("nodes did not converge: %s", why)
	}
	want, err := EncodeSnapshot(nodes[0].node.Ring())
	if err != nil {
		c.tb.Fatal(err)
	}
	for _, n := range nodes[1:] {
		got, _ := EncodeSnapshot(n.node.Ring())
		if !bytes.Equal(got, want) {
			c.tb.Fatalf("FSM of %s differs from %s's at index %d", n.id, nodes[0].id, n.node.AppliedIndex())
		}
	}
}

// retry calls fn until it returns nil or an error that is not Retryable, as every client of a
// Raft cluster must (leadership can move under any call; a loaded machine makes that common).
// ErrUnknownPeer after a retryable failure counts as success: the earlier attempt removed it.
// gRPC errors are classified with fromStatus.
func retry(tb testing.TB, what string, fn func(ctx context.Context) error) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	retried := false
	for {
		err := fn(ctx)
		if _, ok := status.FromError(err); ok && err != nil {
			err = fromStatus(err, true)
		}
		switch {
		case err == nil:
			return
		case retried && errors.Is(err, ErrUnknownPeer):
			return
		case !Retryable(err):
			tb.Fatalf("%s: %v", what, err)
		case ctx.Err() != nil:
			tb.Fatalf("%s: still failing after 30s: %v", what, err)
		}
		retried = true
		select {
		case <-ctx.Done():
		case <-time.After(50 * time.Millisecond): // retry backoff
		}
	}
}

// dial returns a Ring client for tn's gRPC server, as ringctl would use.
func dial(tb testing.TB, tn *testNode) ringpb.RingClient {
	cc, err := grpc.NewClient(tn.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { cc.Close() })
	return ringpb.NewRingClient(cc)
}

func voters(n *Node) (v, nv []string) {
	for _, s := range n.Status().Servers {
		if s.Voter {
			v = append(v, s.ID)
		} else {
			nv = append(nv, s.ID)
		}
	}
	return v, nv
}
