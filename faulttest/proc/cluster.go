// Package proc is the multi-process tier of the fault tests: every ingester is a real bin/ingester
// process with its data on disk, each in a network namespace of its own (faulttest/netns), driven
// from a test that runs in its own namespace. Nemeses kill, pause, partition, drop packets and
// corrupt WALs; a writer pushes unique samples through the distributors; every run ends with heal,
// restart, recovery and a full read, judged by faulttest/check.
package proc

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/raftingest/raftingest/faulttest/netns"
	"github.com/raftingest/raftingest/ringpb"
	"github.com/raftingest/raftingest/ringstate"
)

// Ports every node uses on its own address.
const (
	raftPort = 9096
	// adminPort is the admin listener's port on the node's address when ExposeAdmin is called.
	adminPort = 9094
	grpcPort  = 9095
	httpPort  = 8080
)

// Timing of the nodes: the product's defaults for Raft (1s heartbeat and election timeouts, which
// hold on 2 busy cores), faster ring heartbeats so that health and recovery show within a run.
var nodeFlags = []string{
	"-raft.heartbeat-timeout", "1s", "-raft.election-timeout", "1s",
	"-ring.heartbeat-period", "1s", "-ring.heartbeat-timeout", "15s",
	"-ingester.join-after", "0s", "-log.level", "info",
}

// electionTimeout is the -raft.election-timeout above; pauses are sized against it.
const electionTimeout = time.Second

// Node is one ingester process in its namespace.
type Node struct {
	Idx      int
	ID       string
	IP       string
	DataDir  string
	LogPath  string
	RaftAddr string
	GRPCAddr string
	HTTPAddr string
	// Zone is the node's -ingester.ring.instance-zone when the scenario has zones, else "".
	Zone string
	// AdminAddr is the admin listener (/ingester/flush) on the node's address after ExposeAdmin;
	// "" while it stays on the loopback of the node's namespace, out of the driver's reach.
	AdminAddr string
	args      []string

	mu     sync.Mutex
	cmd    *exec.Cmd
	done   chan struct{}
	paused bool
	conn   *grpc.ClientConn
	// creds are the driver's credentials for this node (EnableTLS); nil: plain.
	creds grpc.DialOption
	// spare marks a member meant to be PENDING (a hand-over target in the rolling-restart workload),
	// not ACTIVE, when the cluster is healthy.
	spare bool
}

// Cluster is the nodes, their network and the binaries.
type Cluster struct {
	Net   *netns.Net
	Bin   string
	Dir   string
	Nodes []*Node
	// ringctlTLS are the TLS flags of the driver's ringctl runs (EnableTLS); nil: plain.
	ringctlTLS []string
	// Bucket is the filesystem bucket every node flushes to and its querier reads
	// (-blocks-storage.filesystem.dir, -blocks-storage.filesystem.shared): one directory shared by
	// all, as one object store would be. Empty after LocalBuckets.
	Bucket string
}

// LocalBuckets gives every node its own node-local filesystem bucket, the product's default
// (<data.dir>/blocks), instead of the shared Bucket. Call it before the first Start.
func (c *Cluster) LocalBuckets() {
	for _, n := range c.Nodes {
		n.mu.Lock()
		for i := 0; i < len(n.args); i++ {
			switch n.args[i] {
			case "-blocks-storage.filesystem.dir":
				n.args = append(n.args[:i], n.args[i+2:]...)
				i--
			case "-blocks-storage.filesystem.shared=true":
				n.args = append(n.args[:i], n.args[i+1:]...)
				i--
			}
		}
		n.mu.Unlock()
	}
	c.Bucket = ""
}

// ExposeAdmin moves every node's admin listener (flush, shutdown, pprof) from the loopback of its
// namespace to its address, so the driver can flush nodes (Flush). Call it before the first Start.
func (c *Cluster) ExposeAdmin() {
	for _, n := range c.Nodes {
		n.mu.Lock()
		n.AdminAddr = fmt.Sprintf("%s:%d", n.IP, adminPort)
		n.args = append(n.args, "-admin.http-addr", n.AdminAddr) // the last value of a flag wins
		n.mu.Unlock()
	}
}

// Flush asks node i to flush everything in memory to its bucket (POST /ingester/flush on its admin
// listener, ExposeAdmin) and returns the node's answer.
func (c *Cluster) Flush(ctx context.Context, i int) (string, error) {
	n := c.Nodes[i]
	if n.AdminAddr == "" {
		return "", fmt.Errorf("flush %s: its admin listener is not exposed (Cluster.ExposeAdmin)", n.ID)
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+n.AdminAddr+"/ingester/flush", nil)
	if err != nil {
		return "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", fmt.Errorf("flush %s: %w", n.ID, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("flush %s: %s: %s", n.ID, resp.Status, strings.TrimSpace(string(body)))
	}
	return strings.TrimSpace(string(body)), nil
}

// BucketDirs are the bucket directories of every node: one per node under LocalBuckets, else the
// shared Bucket once.
func (c *Cluster) BucketDirs() []string {
	if c.Bucket != "" {
		return []string{c.Bucket}
	}
	out := make([]string, len(c.Nodes))
	for i := range c.Nodes {
		out[i] = c.BucketDir(i)
	}
	return out
}

// BucketDir is node i's bucket directory: its own under LocalBuckets, else the shared Bucket.
func (c *Cluster) BucketDir(i int) string {
	if c.Bucket == "" {
		return filepath.Join(c.Nodes[i].DataDir, "blocks")
	}
	return c.Bucket
}

// NewCluster creates n namespaces and defines (does not start) n nodes with data under dir.
func NewCluster(bin, dir string, n int) (*Cluster, error) {
	nt, err := netns.New(n)
	if err != nil {
		return nil, err
	}
	c := &Cluster{Net: nt, Bin: bin, Dir: dir, Bucket: filepath.Join(dir, "bucket")}
	for i := range n {
		ip := nt.Nodes[i].IP
		nd := &Node{Idx: i, ID: fmt.Sprintf("n%d", i), IP: ip,
			DataDir:  filepath.Join(dir, fmt.Sprintf("n%d", i)),
			LogPath:  filepath.Join(dir, fmt.Sprintf("n%d.log", i)),
			RaftAddr: fmt.Sprintf("%s:%d", ip, raftPort), GRPCAddr: fmt.Sprintf("%s:%d", ip, grpcPort),
			HTTPAddr: fmt.Sprintf("%s:%d", ip, httpPort)}
		// The admin listener stays on the loopback of the node's own namespace (the product's
		// default, spelled out): no scenario uses it, and the driver cannot reach it there.
		nd.args = append([]string{"-node.id", nd.ID, "-data.dir", nd.DataDir, "-raft.addr", nd.RaftAddr,
			"-grpc.addr", nd.GRPCAddr, "-http.addr", nd.HTTPAddr, "-admin.http-addr", "127.0.0.1:9094",
			"-blocks-storage.backend", "filesystem", "-blocks-storage.filesystem.dir", c.Bucket,
			"-blocks-storage.filesystem.shared=true",
			"-debug.ring-history-file", ringHistoryPath(dir, nd.ID)}, nodeFlags...)
		if i == 0 {
			nd.args = append(nd.args, "-bootstrap")
		} else {
			nd.args = append(nd.args, "-join", fmt.Sprintf("%s:%d", nt.Nodes[0].IP, grpcPort))
		}
		c.Nodes = append(c.Nodes, nd)
	}
	return c, nil
}

// insecureCreds are the driver's credentials without TLS.
var insecureCreds = grpc.WithTransportCredentials(insecure.NewCredentials())

// Close kills every process and removes the network.
func (c *Cluster) Close() {
	for _, n := range c.Nodes {
		n.Resume()
		n.Kill()
		n.mu.Lock()
		if n.conn != nil {
			n.conn.Close()
			n.conn = nil
		}
		n.mu.Unlock()
	}
	c.Net.Close()
}

// Start starts node i's process in its namespace (a restart keeps its data).
func (c *Cluster) Start(i int) error {
	n := c.Nodes[i]
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.done != nil {
		select {
		case <-n.done:
		default:
			return nil // running
		}
	}
	logf, err := os.OpenFile(n.LogPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	fmt.Fprintf(logf, "=== start %s %s\n", time.Now().Format(time.RFC3339Nano), strings.Join(n.args, " "))
	cmd := c.Net.Command(i, filepath.Join(c.Bin, "ingester"), n.args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("start %s: %w", n.ID, err)
	}
	done := make(chan struct{})
	n.cmd, n.done, n.paused = cmd, done, false
	go func() {
		_ = cmd.Wait()
		fmt.Fprintf(logf, "=== exit %s %v\n", time.Now().Format(time.RFC3339Nano), cmd.ProcessState)
		logf.Close()
		close(done)
	}()
	return nil
}

// Rejoin brings node i back when the cluster no longer lists it, as docs tell an operator: kill
// it, wipe its Raft state (raftfsm refuses to rejoin with it), start it without -join (it waits to
// be added) and add it with `ringctl -addr <member> join <id> <raft addr>` through another member,
// retried until it is accepted. Its WAL and tokens file stay. A node still in the Raft
// configuration is only (re)started. It returns what it did, for the fault note.
func (c *Cluster) Rejoin(ctx context.Context, i int) (string, error) {
	n := c.Nodes[i]
	listed := false
	for j := range c.Nodes {
		if j == i {
			continue
		}
		if st, err := c.Status(ctx, j); err == nil && len(st.GetServers()) > 0 {
			for _, s := range st.GetServers() {
				listed = listed || s.GetId() == n.ID
			}
			break
		}
	}
	if listed {
		return "still in the raft configuration: restarted", c.Start(i)
	}
	n.Kill()
	if err := os.RemoveAll(filepath.Join(n.DataDir, "raft")); err != nil {
		return "", err
	}
	var args []string
	for k := 0; k < len(n.args); k++ {
		switch n.args[k] {
		case "-bootstrap":
			continue
		case "-join":
			k++
			continue
		}
		args = append(args, n.args[k])
	}
	n.mu.Lock()
	n.args = args
	n.mu.Unlock()
	if err := c.Start(i); err != nil {
		return "", err
	}
	via := (i + 1) % len(c.Nodes)
	var out []byte
	err := waitFor(ctx, 20*time.Second, func() bool {
		var e error
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		out, e = c.Ringctl(cctx, "-addr", c.Nodes[via].GRPCAddr, "join", n.ID, n.RaftAddr).CombinedOutput()
		cancel()
		return e == nil
	})
	note := fmt.Sprintf("raft state wiped; ringctl -addr %s join %s %s: %s", c.Nodes[via].ID, n.ID, n.RaftAddr,
		strings.TrimSpace(string(out)))
	if err != nil {
		return note, fmt.Errorf("ringctl join %s: %w", n.ID, err)
	}
	return note, nil
}

// Running reports whether node i's process is alive.
func (n *Node) Running() bool {
	n.mu.Lock()
	done := n.done
	n.mu.Unlock()
	if done == nil {
		return false
	}
	select {
	case <-done:
		return false
	default:
		return true
	}
}

// Kill sends SIGKILL to the node's process group and waits for it to exit.
func (n *Node) Kill() {
	n.mu.Lock()
	cmd, done := n.cmd, n.done
	n.mu.Unlock()
	if cmd == nil || cmd.Process == nil {
		return
	}
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	<-done
	n.mu.Lock()
	n.paused = false
	n.mu.Unlock()
}

// Pause stops the process (SIGSTOP); Resume continues it.
func (n *Node) Pause() {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd != nil && n.cmd.Process != nil {
		_ = syscall.Kill(-n.cmd.Process.Pid, syscall.SIGSTOP)
		n.paused = true
	}
}

// Resume continues a paused process.
func (n *Node) Resume() {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.paused && n.cmd != nil && n.cmd.Process != nil {
		_ = syscall.Kill(-n.cmd.Process.Pid, syscall.SIGCONT)
	}
	n.paused = false
}

// Paused reports whether the node is stopped by Pause.
func (n *Node) Paused() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.paused
}

// Conn is the node's gRPC connection (created once, reconnects by itself).
func (n *Node) Conn() (*grpc.ClientConn, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.conn == nil {
		cc, err := grpc.NewClient(n.GRPCAddr, n.dialCreds())
		if err != nil {
			return nil, err
		}
		n.conn = cc
	}
	return n.conn, nil
}

// Status asks node i for its Raft status.
func (c *Cluster) Status(ctx context.Context, i int) (*ringpb.StatusResponse, error) {
	cc, err := c.Nodes[i].Conn()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	return ringpb.NewRingClient(cc).Status(ctx, &ringpb.StatusRequest{})
}

// Ring reads the ring through node i (linearizable: through the leader).
func (c *Cluster) Ring(ctx context.Context, i int) (*ringstate.Ring, int64, error) {
	cc, err := c.Nodes[i].Conn()
	if err != nil {
		return nil, 0, err
	}
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	resp, err := ringpb.NewRingClient(cc).GetRing(ctx, &ringpb.GetRingRequest{Linearizable: true})
	if err != nil {
		return nil, 0, err
	}
	r, err := ringpb.ToRing(resp.GetMembers(), resp.GetTimeMs())
	return r, resp.GetHeartbeatTimeoutMs(), err
}

// Leader returns the index of the node that some node names leader, or -1.
func (c *Cluster) Leader(ctx context.Context) int {
	for i, n := range c.Nodes {
		if !n.Running() || n.Paused() {
			continue
		}
		st, err := c.Status(ctx, i)
		if err != nil || st.GetLeaderId() == "" {
			continue
		}
		for j, m := range c.Nodes {
			if m.ID == st.GetLeaderId() {
				return j
			}
		}
	}
	return -1
}

// Healthy reports whether every node is up, one leader is known, and the ring has every node
// ACTIVE, with a reason when not.
func (c *Cluster) Healthy(ctx context.Context) (bool, string) {
	l := c.Leader(ctx)
	if l < 0 {
		return false, "no leader"
	}
	r, _, err := c.Ring(ctx, l)
	if err != nil {
		return false, "ring: " + err.Error()
	}
	for _, n := range c.Nodes {
		want := ringstate.ACTIVE
		if n.Spare() {
			want = ringstate.PENDING
		}
		m, ok := r.Member(ringstate.MemberID(n.ID))
		if !ok {
			return false, fmt.Sprintf("%s is not in the ring, want %v", n.ID, want)
		}
		if m.State != want || m.HandoverPeer != "" {
			return false, fmt.Sprintf("%s is %v in the ring (peer %q), want %v", n.ID, m.State, m.HandoverPeer, want)
		}
	}
	return true, ""
}

// Spare reports whether the node is meant to be PENDING (see SetSpare).
func (n *Node) Spare() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.spare
}

// SetSpare marks the node as meant to be PENDING (a hand-over target) or ACTIVE in a healthy cluster.
func (n *Node) SetSpare(spare bool) {
	n.mu.Lock()
	n.spare = spare
	n.mu.Unlock()
}

// waitServing polls node i until it answers Status — it has opened its stores and serves — or its
// process exits, for at most d.
func (c *Cluster) waitServing(i int, d time.Duration) (up, exited bool) {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if !c.Nodes[i].Running() {
			return false, true
		}
		if _, err := c.Status(context.Background(), i); err == nil {
			return true, false
		}
		time.Sleep(200 * time.Millisecond)
	}
	return false, !c.Nodes[i].Running()
}

// WaitHealthy polls Healthy until it holds or timeout passes.
func (c *Cluster) WaitHealthy(ctx context.Context, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	var why string
	for time.Now().Before(deadline) {
		var ok bool
		if ok, why = c.Healthy(ctx); ok {
			return nil
		}
		time.Sleep(200 * time.Millisecond)
	}
	return fmt.Errorf("cluster not healthy after %v: %s", timeout, why)
}
