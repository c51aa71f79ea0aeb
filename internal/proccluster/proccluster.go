// Package proccluster runs raftingest clusters of real processes for tests: every member is a
// bin/ingester process on 127.0.0.1 with its data on disk, and the operator CLI is the real
// bin/ringctl. It is the harness of the process-level tests; it never sends traffic off loopback.
package proccluster

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Binaries returns the directory holding ingester and ringctl: $RAFTINGEST_BIN when set (make test
// sets it to bin/), else a directory the binaries are built into once per test process.
func Binaries(t testing.TB) string {
	if d := os.Getenv("RAFTINGEST_BIN"); d != "" {
		for _, b := range []string{"ingester", "ringctl"} {
			if _, err := os.Stat(filepath.Join(d, b)); err != nil {
				t.Fatalf("RAFTINGEST_BIN=%s: %v (run make build)", d, err)
			}
		}
		return d
	}
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "raftingest-bin-")
		if err != nil {
			buildErr = err
			return
		}
		for _, b := range []string{"ingester", "ringctl"} {
			out, err := exec.Command("go", "build", "-o", filepath.Join(dir, b), "github.com/raftingest/raftingest/cmd/"+b).CombinedOutput()
			if err != nil {
				buildErr = fmt.Errorf("go build %s: %v\n%s", b, err, out)
				return
			}
		}
		buildDir = dir
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return buildDir
}

var (
	buildOnce sync.Once
	buildDir  string
	buildErr  error
)

// handedOut is every port FreePorts has returned in this process. The kernel may hand a port that
// was just released to the next listen, so two nodes defined one after the other (Add b, Add c,
// then start both) could get the same port: c's raft port was b's gRPC port in a CI run
// (TestQuery_OracleAgainstPrometheus, "bind: address already in use"). No port is handed out twice.
var (
	portsMu   sync.Mutex
	handedOut = map[int]bool{}
)

// FreePorts returns n distinct free TCP ports on 127.0.0.1, none returned before by this process.
// The ports are released before they are returned, so another process could take one in between;
// on loopback in a test run that is rare enough that a failed bind is reported rather than retried.
func FreePorts(t testing.TB, n int) []int {
	portsMu.Lock()
	defer portsMu.Unlock()
	ports := make([]int, 0, n)
	var lns []net.Listener
	defer func() {
		for _, ln := range lns {
			ln.Close()
		}
	}()
	for len(ports) < n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns = append(lns, ln) // held until all n are picked, so the kernel cannot repeat one
		if p := ln.Addr().(*net.TCPAddr).Port; !handedOut[p] {
			handedOut[p] = true
			ports = append(ports, p)
		}
	}
	return ports
}

// Cluster is a set of ingester processes sharing a temporary directory.
type Cluster struct {
	t   testing.TB
	Bin string
	Dir string
	// Flags are added to every node's command line (before the node's own).
	Flags []string

	mu    sync.Mutex
	nodes map[string]*Node
}

// New returns an empty cluster whose processes are all killed when the test ends.
func New(t testing.TB, flags ...string) *Cluster {
	c := &Cluster{t: t, Bin: Binaries(t), Dir: t.TempDir(), Flags: flags, nodes: map[string]*Node{}}
	t.Cleanup(c.cleanup)
	return c
}

// Node is one ingester process (possibly stopped).
type Node struct {
	c        *Cluster
	ID       string
	RaftAddr string
	GRPCAddr string
	HTTPAddr string
	// AdminAddr is -admin.http-addr: POST /ingester/shutdown, POST /ingester/flush, /debug/pprof/.
	AdminAddr string
	DataDir   string
	LogPath   string
	args      []string

	mu       sync.Mutex
	cmd      *exec.Cmd
	done     chan struct{}
	exitCode int
}

// Add defines a node with fresh loopback ports without starting it.
func (c *Cluster) Add(id string, extra ...string) *Node {
	p := FreePorts(c.t, 4)
	n := &Node{c: c, ID: id,
		RaftAddr:  fmt.Sprintf("127.0.0.1:%d", p[0]),
		GRPCAddr:  fmt.Sprintf("127.0.0.1:%d", p[1]),
		HTTPAddr:  fmt.Sprintf("127.0.0.1:%d", p[2]),
		AdminAddr: fmt.Sprintf("127.0.0.1:%d", p[3]),
		DataDir:   filepath.Join(c.Dir, id),
		LogPath:   filepath.Join(c.Dir, id+".log"),
	}
	n.args = append([]string{"-node.id", id, "-data.dir", n.DataDir, "-raft.addr", n.RaftAddr,
		"-grpc.addr", n.GRPCAddr, "-http.addr", n.HTTPAddr, "-admin.http-addr", n.AdminAddr}, c.Flags...)
	n.args = append(n.args, extra...)
	c.mu.Lock()
	c.nodes[id] = n
	c.mu.Unlock()
	return n
}

// Start defines and starts a node.
func (c *Cluster) Start(id string, extra ...string) *Node {
	n := c.Add(id, extra...)
	n.Start()
	return n
}

// Node returns a node by id.
func (c *Cluster) Node(id string) *Node {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.nodes[id]
}

// Start starts (or restarts) the node's process with its arguments; its output is appended to LogPath.
func (n *Node) Start(extra ...string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd != nil && n.done != nil {
		select {
		case <-n.done:
		default:
			n.c.t.Fatalf("start %s: already running", n.ID)
		}
	}
	logf, err := os.OpenFile(n.LogPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		n.c.t.Fatal(err)
	}
	fmt.Fprintf(logf, "=== start %s %s\n", time.Now().Format(time.RFC3339Nano), strings.Join(append(n.args, extra...), " "))
	cmd := exec.Command(filepath.Join(n.c.Bin, "ingester"), append(slicesClone(n.args), extra...)...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		n.c.t.Fatalf("start %s: %v", n.ID, err)
	}
	done := make(chan struct{})
	n.cmd, n.done = cmd, done
	go func() {
		err := cmd.Wait()
		logf.Close()
		code := 0
		if err != nil {
			code = -1
			if ee, ok := err.(*exec.ExitError); ok {
				code = ee.ExitCode()
			}
		}
		n.mu.Lock()
		n.exitCode = code
		n.mu.Unlock()
		close(done)
	}()
}

func slicesClone(s []string) []string { return append([]string(nil), s...) }

// Signal sends sig to the node's process.
func (n *Node) Signal(sig syscall.Signal) {
	n.mu.Lock()
	cmd := n.cmd
	n.mu.Unlock()
	if cmd != nil && cmd.Process != nil {
		_ = cmd.Process.Signal(sig)
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
}

// Running reports whether the process is running.
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

// Wait waits up to timeout for the process to exit and returns its exit code.
func (n *Node) Wait(timeout time.Duration) (int, error) {
	n.mu.Lock()
	done := n.done
	n.mu.Unlock()
	if done == nil {
		return 0, fmt.Errorf("%s was never started", n.ID)
	}
	select {
	case <-done:
		n.mu.Lock()
		defer n.mu.Unlock()
		return n.exitCode, nil
	case <-time.After(timeout):
		return 0, fmt.Errorf("%s still running after %v", n.ID, timeout)
	}
}

// Log returns the node's log so far.
func (n *Node) Log() string {
	b, _ := os.ReadFile(n.LogPath)
	return string(b)
}

func (c *Cluster) cleanup() {
	c.mu.Lock()
	nodes := make([]*Node, 0, len(c.nodes))
	for _, n := range c.nodes {
		nodes = append(nodes, n)
	}
	c.mu.Unlock()
	for _, n := range nodes {
		n.Kill()
	}
	if c.t.Failed() {
		for _, n := range nodes {
			log := n.Log()
			if len(log) > 12000 {
				log = "...\n" + log[len(log)-12000:]
			}
			c.t.Logf("---- log of %s ----\n%s", n.ID, log)
		}
	}
}

// Ringctl runs bin/ringctl with args and returns its stdout, stderr and exit code.
func (c *Cluster) Ringctl(args ...string) (stdout, stderr string, code int) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(c.Bin, "ringctl"), args...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	if err != nil {
		code = -1
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		}
	}
	return o.String(), e.String(), code
}

// RingMember is the part of `ringctl ring -o json` the tests read.
type RingMember struct {
	ID                  string   `json:"id"`
	State               string   `json:"state"`
	RingState           string   `json:"ring_state"`
	Healthy             bool     `json:"healthy"`
	Tokens              []uint32 `json:"tokens"`
	Ownership           float64  `json:"ownership"`
	HeartbeatAgeSeconds float64  `json:"heartbeat_age_seconds"`
	HandoverPeer        string   `json:"handover_peer"`
	GRPCAddr            string   `json:"grpc_addr"`
}

// RingView is `ringctl ring -o json`.
type RingView struct {
	TimeMs  int64        `json:"time_ms"`
	Members []RingMember `json:"members"`
}

// Member returns the member with id, if present.
func (v RingView) Member(id string) (RingMember, bool) {
	for _, m := range v.Members {
		if m.ID == id {
			return m, true
		}
	}
	return RingMember{}, false
}

// Ring reads the ring through `ringctl -addr ADDR ring -o json`.
func (c *Cluster) Ring(addr string) (RingView, error) {
	out, errOut, code := c.Ringctl("-addr", addr, "ring", "-o", "json")
	if code != 0 {
		return RingView{}, fmt.Errorf("ringctl ring: exit %d: %s", code, strings.TrimSpace(errOut))
	}
	var v RingView
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		return RingView{}, fmt.Errorf("ringctl ring -o json: %v: %q", err, out)
	}
	return v, nil
}

// Status is the part of `ringctl status -o json` the tests read.
type Status struct {
	Leader       string `json:"leader"`
	Term         uint64 `json:"term"`
	CommitIndex  uint64 `json:"commit_index"`
	AppliedIndex uint64 `json:"applied_index"`
	Servers      []struct {
		ID      string `json:"id"`
		Address string `json:"address"`
		Voter   bool   `json:"voter"`
	} `json:"servers"`
}

// Status reads `ringctl -addr ADDR status -o json`.
func (c *Cluster) Status(addr string) (Status, error) {
	out, errOut, code := c.Ringctl("-addr", addr, "status", "-o", "json")
	if code != 0 {
		return Status{}, fmt.Errorf("ringctl status: exit %d: %s", code, strings.TrimSpace(errOut))
	}
	var s Status
	if err := json.Unmarshal([]byte(out), &s); err != nil {
		return Status{}, fmt.Errorf("ringctl status -o json: %v: %q", err, out)
	}
	return s, nil
}

// Eventually polls cond every 100ms until it returns true or timeout passes, then fails the test
// with the last reason cond gave.
func Eventually(t testing.TB, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	last := ""
	for {
		ok, why := cond()
		if ok {
			return
		}
		last = why
		if time.Now().After(deadline) {
			t.Fatalf("%s: not true after %v: %s", what, timeout, last)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// HTTPGet fetches http://ADDR/PATH with an optional Accept header and returns status and body.
func HTTPGet(addr, path, accept string) (int, string, error) {
	req, err := http.NewRequest(http.MethodGet, "http://"+addr+path, nil)
	if err != nil {
		return 0, "", err
	}
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	cl := &http.Client{Timeout: 5 * time.Second}
	resp, err := cl.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	_, _ = b.ReadFrom(resp.Body)
	return resp.StatusCode, b.String(), nil
}
