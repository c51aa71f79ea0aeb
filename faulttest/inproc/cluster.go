// Package inproc is the in-process tier of the fault tests: several whole ingester.Servers run as
// goroutines of the test, each on a loopback address of its own, with real Raft over TCP, real
// gRPC and HTTP and real bbolt files. Every connection a node opens to another goes through the
// node's dial hook (ingester.Config.Dial) and a toxiproxy proxy per directed link (Network), so the
// nemesis can add latency, jitter, bandwidth limits and silent drops per link, and make the dialer
// refuse (fail fast) or hang (silent) new connections; each node's clock (ingester.Config.Clock)
// can be skewed and jumped. Nodes are stopped by cancelling Run (files are closed cleanly: kill -9
// is the process tier's job) and restarted with ingester.New on the same data directory.
//
// It needs no root and no namespaces: it only binds and dials 127.0.0.0/8 addresses.
package inproc

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/raftingest/raftingest/faulttest/ringhist"
	"github.com/raftingest/raftingest/ingester"
	"github.com/raftingest/raftingest/raftfsm"
	"github.com/raftingest/raftingest/ringstate"
)

// Timing of the nodes: the product's Raft defaults (1s heartbeat and election timeouts, which hold
// on 2 busy cores), faster ring heartbeats so that health and recovery show within a run, and the
// product's default -ring.heartbeat-timeout (1m): above ringstate.MaxRingTimeGap (30s) plus the
// heartbeat period, it is what promises that no clock step makes a member UNHEALTHY — the promise
// the clock nemesis tests. (With a timeout under 31s a forward step of the leader's clock ages every
// heartbeat by up to 30s and members read UNHEALTHY until they heartbeat again; ingester.New warns.)
var nodeFlags = []string{
	"-raft.heartbeat-timeout", "1s", "-raft.election-timeout", "1s",
	"-ring.heartbeat-period", "1s", "-ring.heartbeat-timeout", "1m",
	"-ingester.join-after", "0s", "-log.level", "info",
}

// ringHeartbeatTimeout is -ring.heartbeat-timeout above, in ring milliseconds.
const ringHeartbeatTimeout = time.Minute

// Node is one ingester Server of the cluster and what survives its restarts: identity, addresses,
// data directory, log file and clock.
type Node struct {
	Idx      int
	ID       string
	IP       string
	RaftAddr string
	GRPCAddr string
	HTTPAddr string
	DataDir  string
	LogPath  string
	Clock    *Clock

	mu     sync.Mutex
	srv    *ingester.Server
	cancel context.CancelFunc
	done   chan struct{}
	runErr error
	conn   *grpc.ClientConn // the harness's own connection, not through the proxies
	logf   *os.File
	starts int
}

// Cluster is the nodes and the network between them.
type Cluster struct {
	Dir   string
	Nodes []*Node
	Net   *Network
}

// runCounter makes every cluster of this process use a different /24 of 127.0.0.0/8.
var runCounter atomic.Uint32

// NewCluster defines n nodes with data under dir, each on an address 127.<a>.<b>.<i+1> of its own
// (a from the process id, b from a per-process counter, so parallel tests do not meet), with free
// ports, and starts the proxies between them. It starts no node.
func NewCluster(dir string, n int) (*Cluster, error) {
	a := 20 + os.Getpid()%200
	b := 1 + int(runCounter.Add(1)%250)
	c := &Cluster{Dir: dir}
	var eps []Endpoint
	// The nodes' ports stay held until the proxies listen: a proxy listens on its node's address
	// with port 0, and the kernel hands out a port released a moment before (a CI run's proxy took
	// n0's gRPC port: "bind: address already in use").
	var held []net.Listener
	defer func() {
		for _, l := range held {
			l.Close()
		}
	}()
	for i := range n {
		ip := fmt.Sprintf("127.%d.%d.%d", a, b, i+1)
		ports, lns, err := freePorts(ip, 3)
		held = append(held, lns...)
		if err != nil {
			return nil, err
		}
		nd := &Node{Idx: i, ID: fmt.Sprintf("n%d", i), IP: ip,
			RaftAddr: net.JoinHostPort(ip, ports[0]), GRPCAddr: net.JoinHostPort(ip, ports[1]),
			HTTPAddr: net.JoinHostPort(ip, ports[2]),
			DataDir:  filepath.Join(dir, fmt.Sprintf("n%d", i)), LogPath: filepath.Join(dir, fmt.Sprintf("n%d.log", i)),
			Clock: &Clock{}}
		c.Nodes = append(c.Nodes, nd)
		eps = append(eps, Endpoint{IP: ip, RaftAddr: nd.RaftAddr, GRPCAddr: nd.GRPCAddr})
	}
	var err error
	if c.Net, err = NewNetwork(eps); err != nil {
		return nil, err
	}
	return c, nil
}

// freePorts finds k ports free on ip and returns them with the listeners that hold them; the caller
// closes the listeners just before the ports are used. On this address nobody else listens.
func freePorts(ip string, k int) ([]string, []net.Listener, error) {
	var out []string
	var lns []net.Listener
	for range k {
		ln, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
		if err != nil {
			return nil, lns, fmt.Errorf("inproc: no free port on %s: %w", ip, err)
		}
		lns = append(lns, ln)
		_, p, _ := net.SplitHostPort(ln.Addr().String())
		out = append(out, p)
	}
	return out, lns, nil
}

func (c *Cluster) config(i int) (ingester.Config, error) {
	n := c.Nodes[i]
	var cfg ingester.Config
	fs := flag.NewFlagSet(n.ID, flag.ContinueOnError)
	cfg.RegisterFlags(fs)
	// The ring history (checker 5) lives in the run directory, outside the data directory, and is
	// appended to by every restart of the node. No admin listener: the nodes share this process's
	// loopback, where the default -admin.http-addr would collide, and no scenario uses it.
	args := append([]string{"-node.id", n.ID, "-data.dir", n.DataDir, "-raft.addr", n.RaftAddr,
		"-grpc.addr", n.GRPCAddr, "-http.addr", n.HTTPAddr, "-admin.http-addr", "",
		"-debug.ring-history-file", ringhist.Path(c.Dir, n.ID)},
		nodeFlags...)
	if i == 0 {
		args = append(args, "-bootstrap")
	} else {
		args = append(args, "-join", c.Nodes[0].GRPCAddr)
	}
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	cfg.Clock = n.Clock.Now
	cfg.Dial = c.Net.Dialer(i)
	return cfg, cfg.Validate()
}

// Start creates node i's Server on its data directory (a restart keeps its data) and runs it. It
// retries New for a few seconds while its addresses are still held by the previous run.
func (c *Cluster) Start(i int) error {
	n := c.Nodes[i]
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.srv != nil {
		return nil
	}
	cfg, err := c.config(i)
	if err != nil {
		return fmt.Errorf("config of %s: %w", n.ID, err)
	}
	if n.logf == nil {
		if n.logf, err = os.OpenFile(n.LogPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644); err != nil {
			return err
		}
	}
	n.starts++
	fmt.Fprintf(n.logf, "=== start %d %s\n", n.starts, time.Now().Format(time.RFC3339Nano))
	log := slog.New(slog.NewTextHandler(n.logf, &slog.HandlerOptions{Level: slog.LevelInfo})).With("node", n.ID)
	var srv *ingester.Server
	deadline := time.Now().Add(10 * time.Second)
	for {
		srv, err = ingester.New(cfg, log)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("start %s: %w", n.ID, err)
		}
		time.Sleep(100 * time.Millisecond) // an address or file lock of the previous run is held: poll
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	n.srv, n.cancel, n.done, n.runErr = srv, cancel, done, nil
	go func() {
		err := srv.Run(ctx)
		n.mu.Lock()
		if err != nil && !errors.Is(err, context.Canceled) {
			n.runErr = err
			fmt.Fprintf(n.logf, "=== run returned %s: %v\n", time.Now().Format(time.RFC3339Nano), err)
		}
		n.mu.Unlock()
		close(done)
	}()
	return nil
}

// Stop cancels node i's Run and waits for it to close everything (bounded: an error when it takes
// longer than 30s, which is a product bug worth reporting).
func (c *Cluster) Stop(i int) error {
	n := c.Nodes[i]
	n.mu.Lock()
	cancel, done := n.cancel, n.done
	n.mu.Unlock()
	if cancel == nil {
		return nil
	}
	cancel()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		return fmt.Errorf("%s did not stop within 30s of its Run being cancelled", n.ID)
	}
	n.mu.Lock()
	n.srv, n.cancel, n.done = nil, nil, nil
	n.mu.Unlock()
	return nil
}

// Close stops every node and the network, and closes the harness's connections and log files.
func (c *Cluster) Close() {
	var wg sync.WaitGroup
	for i := range c.Nodes {
		wg.Add(1)
		go func() { defer wg.Done(); _ = c.Stop(i) }()
	}
	wg.Wait()
	for _, n := range c.Nodes {
		n.mu.Lock()
		if n.conn != nil {
			n.conn.Close()
			n.conn = nil
		}
		if n.logf != nil {
			n.logf.Close()
			n.logf = nil
		}
		n.mu.Unlock()
	}
	c.Net.Close()
}

// Server returns node i's running Server, or nil when it is stopped (or its Run has returned).
func (n *Node) Server() *ingester.Server {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.srv == nil {
		return nil
	}
	select {
	case <-n.done:
		return nil
	default:
		return n.srv
	}
}

// Running reports whether the node's Run is going.
func (n *Node) Running() bool { return n.Server() != nil }

// RunErr is the error Run returned, if it returned by itself (not by a stop).
func (n *Node) RunErr() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.runErr
}

// Conn is the harness's gRPC connection to the node (direct, not through the proxies: the
// harness is not a node and its reads must not suffer the nemesis).
func (n *Node) Conn() (*grpc.ClientConn, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.conn == nil {
		cc, err := grpc.NewClient(n.GRPCAddr, grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20)))
		if err != nil {
			return nil, err
		}
		n.conn = cc
	}
	return n.conn, nil
}

// Status is node i's Raft status, read in process; ok is false when the node is stopped.
func (c *Cluster) Status(i int) (raftfsm.Status, bool) {
	s := c.Nodes[i].Server()
	if s == nil {
		return raftfsm.Status{}, false
	}
	return s.Node().Status(), true
}

// Leader returns the index of the running node that leads in the highest term, or -1.
func (c *Cluster) Leader() int {
	best, term := -1, uint64(0)
	for i := range c.Nodes {
		st, ok := c.Status(i)
		if ok && st.State == "Leader" && (best < 0 || st.Term > term) {
			best, term = i, st.Term
		}
	}
	return best
}

// LinearizableRing reads the ring through node i (a barrier through the leader).
func (c *Cluster) LinearizableRing(ctx context.Context, i int) (*ringstate.Ring, error) {
	s := c.Nodes[i].Server()
	if s == nil {
		return nil, fmt.Errorf("%s is stopped", c.Nodes[i].ID)
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	r, _, err := s.Node().LinearizableRing(ctx)
	return r, err
}

// Healthy reports whether every node runs, a leader is known and its ring has every node ACTIVE
// and healthy by ring time, with a reason when not.
func (c *Cluster) Healthy() (bool, string) {
	l := c.Leader()
	if l < 0 {
		return false, "no leader"
	}
	s := c.Nodes[l].Server()
	if s == nil {
		return false, "leader stopped"
	}
	r := s.Node().Ring()
	for _, n := range c.Nodes {
		if !n.Running() {
			return false, n.ID + " is stopped"
		}
		m, ok := r.Member(ringstate.MemberID(n.ID))
		if !ok || m.State != ringstate.ACTIVE {
			return false, fmt.Sprintf("%s is %v in the ring (present %v)", n.ID, m.State, ok)
		}
		if !m.Healthy(r.TimeMs(), ringHeartbeatTimeout.Milliseconds()) {
			return false, fmt.Sprintf("%s is UNHEALTHY in the leader's ring", n.ID)
		}
	}
	return true, ""
}

// Converged reports whether the cluster is Healthy and every node has applied at least the
// leader's commit index as it was when the check began (the nodes' heartbeats keep the log
// moving, so equal indexes would be a race), waiting up to 5s for the followers to learn it.
func (c *Cluster) Converged(ctx context.Context) (bool, string) {
	if ok, why := c.Healthy(); !ok {
		return false, why
	}
	l := c.Leader()
	lst, ok := c.Status(l)
	if !ok {
		return false, "leader stopped"
	}
	want := lst.CommitIndex
	var why string
	err := waitFor(ctx, 5*time.Second, 50*time.Millisecond, func() bool {
		for i, n := range c.Nodes {
			st, ok := c.Status(i)
			if !ok {
				why = n.ID + " stopped"
				return false
			}
			if st.AppliedIndex < want {
				why = fmt.Sprintf("%s applied %d, leader committed %d", n.ID, st.AppliedIndex, want)
				return false
			}
		}
		return true
	})
	return err == nil, why
}

// waitFor polls cond every period until it holds, d passes (an error) or ctx ends.
func waitFor(ctx context.Context, d, period time.Duration, cond func() bool) error {
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			return fmt.Errorf("not within %v", d)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(period):
		}
	}
	return nil
}

// WaitHealthy polls Healthy until it holds or timeout passes.
func (c *Cluster) WaitHealthy(ctx context.Context, timeout time.Duration) error {
	var why string
	if err := waitFor(ctx, timeout, 100*time.Millisecond, func() bool {
		var ok bool
		ok, why = c.Healthy()
		return ok
	}); err != nil {
		return fmt.Errorf("cluster not healthy: %w: %s", err, why)
	}
	return nil
}
