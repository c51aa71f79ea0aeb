// Package sim is the simulated tier of the fault tests: the ring FSM (raftfsm.FSM over ringstate)
// on real hashicorp/raft nodes in one process, talking over raft.InmemTransport with raft.InmemStore
// logs, inside a testing/synctest bubble so that a minute of cluster time costs well under a second
// of wall time. Nemeses cut transports (partitions, one-way links, bridges), shut nodes down and
// restart them from their stores, transfer leadership and force snapshots; clients issue random ring
// commands with request ids and linearizable reads. Every run ends the Jepsen way — heal, restart,
// wait for recovery, read — and is judged by the checkers in faulttest/check.
//
// A seed fixes the workload (every command, its client and think times) and the fault schedule.
// It does not fix goroutine interleavings or hashicorp/raft's election timers (drawn from its own
// global source), so a replay explores the same schedule, not the same execution.
package sim

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"

	"github.com/raftingest/raftingest/faulttest"
	"github.com/raftingest/raftingest/faulttest/check"
	"github.com/raftingest/raftingest/raftfsm"
	"github.com/raftingest/raftingest/ringstate"
)

// Fault kinds the simulated nemesis knows.
const (
	FaultIsolateOne      = "isolate-one"      // cut one node from every other, both ways
	FaultIsolateLeader   = "isolate-leader"   // the same, for the current leader
	FaultSplit           = "split"            // a random minority from the majority
	FaultOneWay          = "one-way"          // the leader can no longer send to the others; they can send to it
	FaultBridge          = "bridge"           // two halves that see only one bridge node
	FaultRestartOne      = "restart-one"      // shut a node down, restart it from its stores later
	FaultRestartLeader   = "restart-leader"   // the same, for the leader
	FaultRestartAll      = "restart-all"      // every node down at once, then all back
	FaultLeaderTransfer  = "leader-transfer"  // hand leadership to another node
	FaultSnapshotIsolate = "snapshot-isolate" // isolate one node, compact everyone else's log: it needs InstallSnapshot
	FaultRemoveRejoin    = "remove-rejoin"    // remove a voter from the configuration, wipe it, add it back
)

// Bugs a run can inject to test the harness itself.
const (
	// BugStaleReads serves reads from any node's FSM without a barrier (the read a follower could
	// serve locally): the linearizability checker must catch the stale reads partitions cause.
	BugStaleReads = "stale-reads"
	// BugSkewedFSM makes node n0's FSM stamp ring time from its own (skewed) clock instead of the
	// entry's AppendedAt — Apply reading the clock: the convergence checker must catch it.
	BugSkewedFSM = "skewed-fsm"
)

// AllFaults is every fault kind, the default mix.
var AllFaults = []string{FaultIsolateOne, FaultIsolateLeader, FaultSplit, FaultOneWay, FaultBridge,
	FaultRestartOne, FaultRestartLeader, FaultRestartAll, FaultLeaderTransfer, FaultSnapshotIsolate, FaultRemoveRejoin}

// Config is one simulated run.
type Config struct {
	Scenario string
	Seed     int64
	Nodes    int           // 3 or 5
	Clients  int           // concurrent ring clients
	Workload time.Duration // cluster time with clients and nemesis running
	Recovery time.Duration // liveness bound after the final heal
	Faults   []string      // kinds to draw from; nil: AllFaults; empty non-nil: none
	// Bug injects a known bug into the harness's own system under test, to show the checkers catch
	// it: BugStaleReads, BugSkewedFSM. Empty for real runs.
	Bug string
	// KeepDir, when set, receives the evidence of a failed run (history, fault timeline, raft logs,
	// porcupine page); when empty, faulttest.KeepDir chooses one.
	KeepDir string
}

func (c *Config) defaults() {
	if c.Nodes == 0 {
		c.Nodes = 3
	}
	if c.Clients == 0 {
		c.Clients = 3
	}
	if c.Workload == 0 {
		c.Workload = 60 * time.Second
	}
	if c.Recovery == 0 {
		c.Recovery = 30 * time.Second
	}
	if c.Faults == nil {
		c.Faults = AllFaults
	}
	if c.Scenario == "" {
		c.Scenario = "sim-mixed"
	}
}

// Raft timing: hashicorp's defaults for a LAN (1s heartbeat and election timeouts), which cost
// nothing in virtual time.
const (
	heartbeatTimeout = time.Second
	electionTimeout  = time.Second
	applyTimeout     = 2 * time.Second
	trailingLogs     = 32
)

// Run runs one simulated scenario inside a synctest bubble and returns its report. It fails t when
// a checker fails, after writing the evidence to the kept directory and the report to t's log.
func Run(t *testing.T, cfg Config) *faulttest.Report {
	cfg.defaults()
	var rep *faulttest.Report
	wallStart := time.Now()
	synctest.Test(t, func(t *testing.T) {
		c := newCluster(cfg)
		rep = c.run()
		c.shutdown()
		rep.Duration = time.Since(c.start)
	})
	rep.Wall = time.Since(wallStart)
	return rep
}

// logBuffer keeps the last lines of every node's raft log for the kept directory.
type logBuffer struct {
	mu    sync.Mutex
	lines []string
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	b.lines = append(b.lines, strings.TrimRight(string(p), "\n"))
	if len(b.lines) > 20000 {
		b.lines = slices.Clone(b.lines[10000:])
	}
	b.mu.Unlock()
	return len(p), nil
}

type node struct {
	idx   int
	id    raft.ServerID
	addr  raft.ServerAddress
	store *raft.InmemStore
	snaps *raft.InmemSnapshotStore
	// The current incarnation, nil while the node is down. Guarded by cluster.mu.
	r     *raft.Raft
	trans *raft.InmemTransport
	fsm   *raftfsm.FSM
}

type cluster struct {
	cfg   Config
	start time.Time
	logs  *logBuffer
	nodes []*node

	mu      sync.Mutex
	blocked map[[2]int]bool // directed: blocked[{a,b}] means a cannot send to b
	faults  []faulttest.FaultWindow
	active  int // faults in progress
	lastEnd time.Time

	obsMu   sync.Mutex
	applied []check.FSMObservation
	// appliedAt is the earliest time any replica applied each index: by then the entry was
	// committed and in effect.
	appliedAt map[uint64]time.Time
	// committed is every request id any replica applied, with its first outcome: unlike the logs,
	// it survives compaction, so unknown outcomes of long runs can still be resolved.
	committed map[string]check.Committed
	leaders   map[uint64]string // term -> first leader seen
	leaderT   []leaderSighting
	twoLead   []check.LeaderObservation

	histMu sync.Mutex
	hist   []check.RingOp
}

type leaderSighting struct {
	term       uint64
	member     string
	at         time.Time
	unprovoked bool
}

func newCluster(cfg Config) *cluster {
	c := &cluster{cfg: cfg, start: time.Now(), logs: &logBuffer{}, blocked: map[[2]int]bool{},
		leaders: map[uint64]string{}, appliedAt: map[uint64]time.Time{}, committed: map[string]check.Committed{}}
	var servers []raft.Server
	for i := range cfg.Nodes {
		n := &node{idx: i, id: raft.ServerID(fmt.Sprintf("n%d", i)), addr: raft.ServerAddress(fmt.Sprintf("n%d", i)),
			store: raft.NewInmemStore(), snaps: raft.NewInmemSnapshotStore()}
		c.nodes = append(c.nodes, n)
		servers = append(servers, raft.Server{Suffrage: raft.Voter, ID: n.id, Address: n.addr})
	}
	for _, n := range c.nodes {
		_, trans := raft.NewInmemTransport(n.addr)
		if err := raft.BootstrapCluster(c.raftConfig(n), n.store, n.store, n.snaps, trans,
			raft.Configuration{Servers: servers}); err != nil {
			panic(fmt.Sprintf("sim: bootstrap %s: %v", n.id, err)) // in-memory stores cannot fail here
		}
		trans.Close()
	}
	for _, n := range c.nodes {
		c.startNode(n)
	}
	return c
}

func (c *cluster) raftConfig(n *node) *raft.Config {
	conf := raft.DefaultConfig()
	conf.LocalID = n.id
	conf.HeartbeatTimeout = heartbeatTimeout
	conf.ElectionTimeout = electionTimeout
	conf.LeaderLeaseTimeout = electionTimeout / 2
	conf.CommitTimeout = 50 * time.Millisecond
	conf.SnapshotThreshold = 1 << 30 // snapshots only when a nemesis asks for one
	conf.SnapshotInterval = time.Hour
	conf.TrailingLogs = trailingLogs
	conf.Logger = hclog.New(&hclog.LoggerOptions{Name: string(n.id), Output: c.logs, Level: hclog.Info,
		TimeFn: time.Now})
	return conf
}

// recFSM records the state hash after every applied entry, for the convergence checker.
type recFSM struct {
	*raftfsm.FSM
	c    *cluster
	node string
}

func (f *recFSM) Apply(l *raft.Log) interface{} {
	if f.c.cfg.Bug == BugSkewedFSM && f.node == "n0" {
		skewed := *l
		skewed.AppendedAt = time.Now().Add(7 * time.Millisecond)
		l = &skewed
	}
	res := f.FSM.Apply(l)
	h := check.StateHash(f.FSM.Ring())
	var cmd ringstate.Command
	if l.Type == raft.LogCommand {
		cmd, _ = raftfsm.DecodeCommand(l.Data)
	}
	f.c.obsMu.Lock()
	f.c.applied = append(f.c.applied, check.FSMObservation{Member: f.node, Applied: l.Index, Hash: h})
	if _, ok := f.c.appliedAt[l.Index]; !ok {
		f.c.appliedAt[l.Index] = time.Now()
	}
	if r, ok := res.(*raftfsm.ApplyResult); ok && cmd.RequestID != "" {
		if prev, seen := f.c.committed[cmd.RequestID]; !seen || l.Index < prev.Index {
			f.c.committed[cmd.RequestID] = check.Committed{Index: l.Index, Cmd: cmd, Code: r.Code, At: f.c.appliedAt[l.Index]}
		}
	}
	f.c.obsMu.Unlock()
	return res
}

func (c *cluster) startNode(n *node) {
	_, trans := raft.NewInmemTransportWithTimeout(n.addr, 500*time.Millisecond)
	fsm := raftfsm.NewFSM(nil)
	r, err := raft.NewRaft(c.raftConfig(n), &recFSM{FSM: fsm, c: c, node: string(n.id)}, n.store, n.store, n.snaps, trans)
	if err != nil {
		panic(fmt.Sprintf("sim: start %s: %v", n.id, err))
	}
	c.mu.Lock()
	n.r, n.trans, n.fsm = r, trans, fsm
	c.rewireLocked()
	c.mu.Unlock()
}

func (c *cluster) stopNode(n *node) {
	c.mu.Lock()
	r, trans := n.r, n.trans
	n.r, n.trans, n.fsm = nil, nil, nil
	c.rewireLocked()
	c.mu.Unlock()
	if r == nil {
		return
	}
	_ = r.Shutdown().Error()
	trans.Close()
}

// rewireLocked makes every running node's transport match the blocked set.
func (c *cluster) rewireLocked() {
	for _, a := range c.nodes {
		if a.trans == nil {
			continue
		}
		for _, b := range c.nodes {
			if a == b {
				continue
			}
			if b.trans == nil || c.blocked[[2]int{a.idx, b.idx}] {
				a.trans.Disconnect(b.addr)
			} else {
				a.trans.Connect(b.addr, b.trans)
			}
		}
	}
}

// cut blocks traffic between every node of side a and every node of side b (both ways unless
// oneWay: then only a -> b).
func (c *cluster) cut(a, b []int, oneWay bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, x := range a {
		for _, y := range b {
			if x == y {
				continue
			}
			c.blocked[[2]int{x, y}] = true
			if !oneWay {
				c.blocked[[2]int{y, x}] = true
			}
		}
	}
	c.rewireLocked()
}

func (c *cluster) healNet() {
	c.mu.Lock()
	c.blocked = map[[2]int]bool{}
	c.rewireLocked()
	c.mu.Unlock()
}

type inc struct {
	n   *node
	r   *raft.Raft
	fsm *raftfsm.FSM
}

func (c *cluster) running() []inc {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []inc
	for _, n := range c.nodes {
		if n.r != nil {
			out = append(out, inc{n, n.r, n.fsm})
		}
	}
	return out
}

func (c *cluster) leader() (inc, bool) {
	for _, i := range c.running() {
		if i.r.State() == raft.Leader {
			return i, true
		}
	}
	return inc{}, false
}

// watchLeaders samples every running node's (term, state) and records who was leader in which
// term. Reading the term before and after the state makes a sighting sound: hashicorp/raft sets the
// follower state before it adopts a higher term, and becomes leader only within its current term.
func (c *cluster) watchLeaders(ctx context.Context) {
	for ctx.Err() == nil {
		for _, i := range c.running() {
			t1 := i.r.CurrentTerm()
			st := i.r.State()
			t2 := i.r.CurrentTerm()
			if st != raft.Leader || t1 != t2 {
				continue
			}
			id := string(i.n.id)
			c.obsMu.Lock()
			if prev, ok := c.leaders[t1]; !ok {
				c.leaders[t1] = id
				c.mu.Lock()
				calm := c.active == 0 && time.Since(c.lastEnd) > 3*electionTimeout && time.Since(c.start) > 3*electionTimeout
				c.mu.Unlock()
				c.leaderT = append(c.leaderT, leaderSighting{term: t1, member: id, at: time.Now(), unprovoked: calm})
			} else if prev != id {
				c.twoLead = append(c.twoLead, check.LeaderObservation{Term: t1, Member: id})
			}
			c.obsMu.Unlock()
		}
		sleep(ctx, 10*time.Millisecond)
	}
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

func (c *cluster) shutdown() {
	for _, n := range c.nodes {
		c.stopNode(n)
	}
}

// keep writes the evidence of a run into dir.
func (c *cluster) keep(dir string, logs []*check.MemberLog) {
	c.histMu.Lock()
	var b strings.Builder
	for _, op := range c.hist {
		fmt.Fprintf(&b, "%s client=%d call=%s return=%s %s\n", opKind(op), op.Client, op.Call.Sub(c.start),
			op.Return.Sub(c.start), describe(op))
	}
	c.histMu.Unlock()
	_ = os.WriteFile(filepath.Join(dir, "history.txt"), []byte(b.String()), 0o644)
	b.Reset()
	for _, f := range c.faults {
		fmt.Fprintf(&b, "%s %v %s..%s %s\n", f.Kind, f.Targets, f.Start, f.End, f.Note)
	}
	_ = os.WriteFile(filepath.Join(dir, "faults.txt"), []byte(b.String()), 0o644)
	c.logs.mu.Lock()
	_ = os.WriteFile(filepath.Join(dir, "raft.log"), []byte(strings.Join(c.logs.lines, "\n")), 0o644)
	c.logs.mu.Unlock()
	for _, ml := range logs {
		b.Reset()
		for _, e := range ml.Entries {
			line := fmt.Sprintf("%d term=%d %s at=%s", e.Index, e.Term, e.Type, e.AppendedAt.Sub(c.start))
			if e.Type == raft.LogCommand {
				if cmd, err := raftfsm.DecodeCommand(e.Data); err == nil {
					line += " " + describe(check.RingOp{Cmd: cmd})
				}
			}
			b.WriteString(line + "\n")
		}
		_ = os.WriteFile(filepath.Join(dir, "log-"+ml.Member+".txt"), []byte(b.String()), 0o644)
	}
}

func opKind(op check.RingOp) string {
	switch {
	case op.Read:
		return "read"
	case op.Unknown:
		return "info"
	case op.Code == ringstate.CodeOK:
		return "ok"
	}
	return "refused"
}

func describe(op check.RingOp) string {
	if op.Read {
		return strings.ReplaceAll(strings.TrimSpace(op.Digest), "\n", "; ")
	}
	c := op.Cmd
	s := fmt.Sprintf("%s %s", c.Op, c.Member)
	if c.Peer != "" {
		s += "->" + string(c.Peer)
	}
	if len(c.Tokens) > 0 {
		s += fmt.Sprintf(" tokens=%v replace=%v", c.Tokens, c.Replace)
	}
	if op.Unknown {
		return s + fmt.Sprintf(" [%s] outcome unknown", c.RequestID)
	}
	return s + fmt.Sprintf(" [%s] code=%d", c.RequestID, op.Code)
}

// sortedLeaders is the leader sightings in term order.
func (c *cluster) sortedLeaders() []leaderSighting {
	c.obsMu.Lock()
	defer c.obsMu.Unlock()
	out := slices.Clone(c.leaderT)
	sort.Slice(out, func(i, j int) bool { return out[i].term < out[j].term })
	return out
}

var errNoLeader = errors.New("sim: no leader")

func newRand(seed int64, stream uint64) *rand.Rand {
	return rand.New(rand.NewPCG(uint64(seed), stream))
}
