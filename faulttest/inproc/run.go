package inproc

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/raftingest/raftingest/faulttest"
	"github.com/raftingest/raftingest/faulttest/check"
	"github.com/raftingest/raftingest/faulttest/ringhist"
	"github.com/raftingest/raftingest/faulttest/samples"
	"github.com/raftingest/raftingest/ringstate"
)

// Scenario is one in-process run.
type Scenario struct {
	Name     string
	Seed     int64
	Nodes    int           // default 3
	Writers  int           // default 3
	Workload time.Duration // default 12s
	Recovery time.Duration // liveness bound after the final heal; default 30s
	Faults   []string      // kinds the schedule deals; nil: AllFaults; empty: none (calm)
	// Fixed, when set, replaces the dealt schedule (regression scenarios). Its steps may overlap:
	// each is injected at its own time.
	Fixed []Step
	// KnownBug, when set, names the product bug this scenario finds; the test skips it with this
	// message until the bug is fixed.
	KnownBug string
}

// Step is a fault at a fixed time, for scenarios that need one exact schedule.
type Step struct {
	Kind string
	At   time.Duration
	Dur  time.Duration
}

// Env is where a scenario runs.
type Env struct {
	Base string // parent of the run's directory; the directory is kept on failure
	Logf func(format string, args ...any)
}

// healthGrace is how long after a fault window a member may still be seen UNHEALTHY without it
// counting against the product: a restarted member's first heartbeat commits within about one
// ring heartbeat period plus an election.
const healthGrace = 3 * time.Second

// Run runs one scenario and returns its report; the error says why it failed (evidence kept).
func Run(ctx context.Context, env Env, sc Scenario) (*faulttest.Report, error) {
	if sc.Nodes == 0 {
		sc.Nodes = 3
	}
	if sc.Writers == 0 {
		sc.Writers = 3
	}
	if sc.Workload == 0 {
		sc.Workload = 12 * time.Second
	}
	if sc.Recovery == 0 {
		sc.Recovery = 30 * time.Second
	}
	if sc.Faults == nil {
		sc.Faults = AllFaults
	}
	if env.Logf == nil {
		env.Logf = func(string, ...any) {}
	}
	if env.Base == "" {
		env.Base = os.TempDir()
	}
	wall := time.Now()
	dir, err := os.MkdirTemp(env.Base, "faulttest-inproc-"+sc.Name+"-")
	if err != nil {
		return nil, err
	}
	c, err := NewCluster(dir, sc.Nodes)
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	closed := false
	defer func() {
		if !closed {
			c.Close()
		}
	}()
	rep := &faulttest.Report{Scenario: sc.Name, Tier: "in-process", Seed: sc.Seed}
	// Linearizable ring reads from the bring-up on (checker 5), straight to the nodes (the harness
	// is not a node: its reads do not go through the proxies); stopped once recovery is measured.
	ringReads := ringhist.StartReader(ctx, sc.Seed, func() []ringhist.Target {
		var up []ringhist.Target
		for _, n := range c.Nodes {
			if n.Running() {
				up = append(up, n)
			}
		}
		return up
	})
	defer ringReads.Stop()
	keep := func(why string) (*faulttest.Report, error) {
		ringReads.Stop() // before the close: a read after it would open a connection nobody closes
		if !closed {
			c.Close()
			closed = true
		}
		rep.Kept = dir
		rep.Wall = time.Since(wall)
		_ = rep.WriteFiles(dir)
		return rep, fmt.Errorf("%s (evidence in %s)", why, dir)
	}

	// Bring the cluster up: the bootstrap node first, then the others join it.
	if err := c.Start(0); err != nil {
		return keep(err.Error())
	}
	if err := waitFor(ctx, 20*time.Second, 50*time.Millisecond, func() bool { return c.Leader() == 0 }); err != nil {
		return keep("bootstrap node never led: " + err.Error())
	}
	for i := 1; i < sc.Nodes; i++ {
		if err := c.Start(i); err != nil {
			return keep(err.Error())
		}
	}
	if err := c.WaitHealthy(ctx, 30*time.Second); err != nil {
		return keep(err.Error())
	}
	// Every node's ring, not only the leader's, holds the members ACTIVE before the first push. A
	// distributor whose ring has not applied the last activate or claim places a push by the ring
	// before it, and a target that has not applied it either takes it (fencing refuses only on a
	// target that has): the sample lands on the old owners, under quorum on the ring that follows.
	// That start-up window is a product race of its own (a scenario's subject is its faults), and
	// it failed clock-step-spill about one run in three, always on the writers' first samples.
	if ok, why := c.Converged(ctx); !ok {
		return keep("the cluster did not converge before the workload: " + why)
	}

	start := time.Now()
	w := &writer{c: c, t0: start.UnixMilli(), fails: map[string]int{}, http: &http.Client{Timeout: 5 * time.Second}}
	defer w.http.CloseIdleConnections()
	steps := schedule(sc.Seed, sc.Faults, sc.Workload)
	nem := &nemesis{c: c, start: start, rng: rand.New(rand.NewPCG(uint64(sc.Seed), 2)), logf: env.Logf}

	watchCtx, stopWatch := context.WithCancel(ctx)
	lw := &leaderWatch{c: c, start: start}
	hw := &healthWatch{c: c, start: start}
	var watchWG sync.WaitGroup
	var periodic []check.Read
	var perMu sync.Mutex
	watchWG.Add(3)
	go func() { defer watchWG.Done(); lw.run(watchCtx) }()
	go func() { defer watchWG.Done(); hw.run(watchCtx) }()
	go func() {
		defer watchWG.Done()
		for {
			select {
			case <-watchCtx.Done():
				return
			case <-time.After(3 * time.Second):
			}
			inv := time.Now()
			per, complete, _ := w.readAll(watchCtx)
			if !complete || watchCtx.Err() != nil {
				continue
			}
			ids, _ := samples.Union(per)
			perMu.Lock()
			periodic = append(periodic, check.Read{Invoke: inv, Return: time.Now(), Samples: ids})
			perMu.Unlock()
		}
	}()

	wctx, stopWork := context.WithTimeout(ctx, sc.Workload)
	var wg sync.WaitGroup
	for i := range sc.Writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w.run(wctx, i, rand.New(rand.NewPCG(uint64(sc.Seed), uint64(10+i))))
		}()
	}
	if sc.Fixed == nil {
		wg.Add(1)
		go func() { defer wg.Done(); nem.run(wctx, steps) }()
	}
	for _, f := range sc.Fixed {
		wg.Add(1)
		go func() { defer wg.Done(); nem.run(wctx, []step{{kind: f.Kind, at: f.At, dur: f.Dur}}) }()
	}
	wg.Wait()
	stopWork()

	// The final heal: every link healed, every clock right, every node running.
	c.Net.HealAll(sc.Nodes)
	for i, n := range c.Nodes {
		n.Clock.Set(0)
		if !n.Running() {
			if err := c.Stop(i); err != nil { // a Run that returned by itself: collect it first
				env.Logf("collect %s: %v", n.ID, err)
			}
			if err := c.Start(i); err != nil {
				env.Logf("final restart of %s: %v", n.ID, err)
			}
		}
	}
	healAt := time.Now()
	var leaderAt, writeAt, convergedAt time.Time
	deadline := healAt.Add(sc.Recovery)
	probe := uint64(0)
	var why string
	for time.Now().Before(deadline) && convergedAt.IsZero() {
		if leaderAt.IsZero() && c.Leader() >= 0 {
			leaderAt = time.Now()
		}
		if !leaderAt.IsZero() && writeAt.IsZero() {
			// One acknowledged write after the heal, recorded in the history like any other.
			if w.probe(ctx, sc.Writers, probe) {
				writeAt = time.Now()
			}
			probe++
		}
		if !writeAt.IsZero() {
			var ok bool
			if ok, why = c.Converged(ctx); ok {
				convergedAt = time.Now()
				break
			}
		}
		select {
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond):
		}
	}
	stopWatch()
	reads := ringReads.Stop()
	watchWG.Wait()

	// The final read: every node must answer.
	var final check.Read
	var per map[string]samples.IngesterRead
	err = waitFor(ctx, 20*time.Second, 500*time.Millisecond, func() bool {
		final.Invoke = time.Now()
		var complete bool
		var errs []string
		per, complete, errs = w.readAll(ctx)
		final.Return = time.Now()
		why = strings.Join(errs, "; ")
		return complete
	})
	if err != nil {
		rep.Add("final-read", false, "FAIL not every node answered the final read: "+why, nil)
	}
	ids, dup := samples.Union(per)
	final.Samples = append(ids, dup...)
	var corrupt []string
	for node, r := range per {
		for _, id := range r.Corrupt {
			corrupt = append(corrupt, fmt.Sprintf("%s:%s", node, id))
		}
	}

	hist := w.history()
	perMu.Lock()
	set := check.CheckSet(hist, periodic, final)
	perMu.Unlock()
	rep.Add("set", set.Valid(), set.String(), set)
	rep.Add("values", len(corrupt) == 0, fmt.Sprintf("%s samples-with-wrong-value=%d %v", passFail(len(corrupt) == 0), len(corrupt), firstN(corrupt, 5)), nil)

	// Replication against the recovered ring, read linearizably through the leader.
	if l := c.Leader(); l >= 0 {
		if r, err := c.LinearizableRing(ctx, l); err == nil {
			var acked []check.SampleID
			for _, wr := range hist {
				if wr.Outcome == check.OutcomeOK {
					acked = append(acked, wr.ID)
				}
			}
			holds := map[string]map[check.SampleID]bool{}
			for node, rd := range per {
				holds[node] = map[check.SampleID]bool{}
				for _, id := range rd.Samples {
					holds[node][id] = true
				}
			}
			rf := r.EffectiveRF(3)
			var buf []*ringstate.Member
			repl := check.CheckReplication(acked, func(id check.SampleID) []string {
				buf = r.ReplicationSet(samples.SeriesHash(id), rf, ringHeartbeatTimeout.Milliseconds(), buf)
				out := make([]string, len(buf))
				for i, m := range buf {
					out[i] = string(m.ID)
				}
				return out
			}, func(node string, id check.SampleID) bool { return holds[node][id] }, ringstate.Quorum(rf))
			rep.Add("replication", repl.Valid(), repl.String(), repl)
		} else {
			rep.Add("replication", false, "FAIL cannot read the ring: "+err.Error(), nil)
		}
	} else {
		rep.Add("replication", false, "FAIL no leader to read the ring from", nil)
	}

	live := check.CheckLiveness(healAt, leaderAt, writeAt, convergedAt, true, sc.Recovery)
	live.Why = why
	rep.Add("liveness", live.Valid(), live.String(), live)

	faults := nem.windows()
	hr := hw.result(faults, healAt)
	rep.Add("health", hr.Valid(), hr.String(), hr)

	// The nemesis only bites if every connection between nodes goes through the dial hook: Raft
	// (the leader's appends) and every node's gRPC (its distributor pushes to the other replicas,
	// forwarding, -join). A plumbing gap shows here, not as a fault that silently did nothing. (Not
	// every directed link: the workload's series sit on few ring positions, see samples.SeriesHash,
	// so some member may own no replica of any of them.)
	perSvc, noGRPC := c.Net.DialCounts(sc.Nodes)
	hookOK := perSvc[svcRaft] > 0 && len(noGRPC) == 0
	rep.Add("dial-hook", hookOK, fmt.Sprintf("%s proxied-connections raft=%d grpc=%d nodes-without-outgoing-grpc=%v",
		passFail(hookOK), perSvc[svcRaft], perSvc[svcGRPC], noGRPC), perSvc)

	// Stop everything, look for Runs that ended by themselves, read every member's Raft log.
	c.Close()
	closed = true
	var runErrs []string
	for _, n := range c.Nodes {
		if err := n.RunErr(); err != nil {
			runErrs = append(runErrs, n.ID+": "+err.Error())
		}
	}
	rep.Add("run-errors", len(runErrs) == 0, fmt.Sprintf("%s servers-whose-run-failed=%d %v", passFail(len(runErrs) == 0), len(runErrs), firstN(runErrs, 3)), nil)
	var members []faulttest.LogMember
	for _, n := range c.Nodes {
		members = append(members, faulttest.LogMember{ID: n.ID, DataDir: n.DataDir})
	}
	_, replays := rep.CheckLogs(members, filepath.Join(dir, "scratch"), lw.Observations(), !convergedAt.IsZero())
	// Checker 5: every node's recorded ring commands and the harness's reads, after every Server is
	// stopped (their history files are closed).
	var histories []string
	for _, n := range c.Nodes {
		histories = append(histories, ringhist.Path(dir, n.ID))
	}
	lin := ringhist.Check(histories, reads, replays, dir)
	rep.Add("linearizable", lin.Valid(), lin.String(), lin)

	// Figures.
	rep.Faults = faults
	rep.Duration = time.Since(start)
	for _, wr := range hist {
		rep.Ops.Attempted++
		switch wr.Outcome {
		case check.OutcomeOK:
			rep.Ops.Acked++
		case check.OutcomeFail:
			rep.Ops.Failed++
		default:
			rep.Ops.Unknown++
		}
	}
	rep.Throughput = faulttest.ThroughputOf(hist, start, faults, healAt)
	rep.Elections, rep.Unprovoked = lw.Elections(faults)
	rep.Wall = time.Since(wall)
	w.mu.Lock()
	env.Logf("%s seed=%d: push failures by cause: %v; longest stretch without an acked push: %s",
		sc.Name, sc.Seed, w.fails, longestAckGap(hist, start, healAt))
	w.mu.Unlock()
	if !rep.Valid() {
		_ = faulttest.WriteHistory(filepath.Join(dir, "history.txt"), hist, start)
		return keep("scenario " + sc.Name + " failed")
	}
	if err := os.RemoveAll(dir); err != nil {
		return rep, fmt.Errorf("remove %s: %w", dir, err)
	}
	return rep, nil
}

func passFail(ok bool) string {
	if ok {
		return "PASS"
	}
	return "FAIL"
}

func firstN(s []string, n int) []string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// writer is the unique-samples workload (faulttest/samples) and its history.
type writer struct {
	c     *Cluster
	t0    int64
	http  *http.Client
	mu    sync.Mutex
	hist  []check.Write
	fails map[string]int // failed pushes by status or error, for the log of a failed run
}

// run pushes until ctx is done, one sample per request, each through a random running node.
func (w *writer) run(ctx context.Context, id int, rng *rand.Rand) {
	for seq := uint64(0); ctx.Err() == nil; {
		var targets []*Node
		for _, n := range w.c.Nodes {
			if n.Running() {
				targets = append(targets, n)
			}
		}
		if len(targets) == 0 {
			select { // every node is stopped (stop-all): wait for one, without recording anything
			case <-ctx.Done():
			case <-time.After(50 * time.Millisecond):
			}
			continue
		}
		n := targets[rng.IntN(len(targets))]
		wr := check.Write{ID: check.SampleID{Writer: id, Seq: seq}, Invoke: time.Now()}
		code, body, err := samples.Push(ctx, w.http, n.HTTPAddr, id, seq, w.t0)
		wr.Return = time.Now()
		wr.Outcome = samples.Outcome(code, err)
		w.mu.Lock()
		w.hist = append(w.hist, wr)
		if wr.Outcome != check.OutcomeOK {
			key := "error" // the run's own end cancelled it
			if err == nil || ctx.Err() == nil {
				key = samples.FailureKey(code, body, err)
			}
			w.fails[key]++
		}
		w.mu.Unlock()
		seq++
		select {
		case <-ctx.Done():
		case <-time.After(time.Duration(2+rng.IntN(8)) * time.Millisecond):
		}
	}
}

// probe pushes one sample of writer id (the liveness probe) through the first running node and
// reports whether it was acked. It is recorded in the history like any other write.
func (w *writer) probe(ctx context.Context, id int, seq uint64) bool {
	for _, n := range w.c.Nodes {
		if !n.Running() {
			continue
		}
		wr := check.Write{ID: check.SampleID{Writer: id, Seq: seq}, Invoke: time.Now()}
		code, _, err := samples.Push(ctx, w.http, n.HTTPAddr, id, seq, w.t0)
		wr.Return = time.Now()
		wr.Outcome = samples.Outcome(code, err)
		w.mu.Lock()
		w.hist = append(w.hist, wr)
		w.mu.Unlock()
		return wr.Outcome == check.OutcomeOK
	}
	return false
}

func (w *writer) history() []check.Write {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]check.Write(nil), w.hist...)
}

// readAll reads every node over gRPC QueryStream. complete is false when a node is stopped or did
// not answer.
func (w *writer) readAll(ctx context.Context) (per map[string]samples.IngesterRead, complete bool, errs []string) {
	per = map[string]samples.IngesterRead{}
	complete = true
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, n := range w.c.Nodes {
		if !n.Running() {
			complete = false
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := w.read(ctx, n)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				complete = false
				errs = append(errs, fmt.Sprintf("%s: %v", n.ID, err))
				return
			}
			per[n.ID] = r
		}()
	}
	wg.Wait()
	return per, complete, errs
}

func (w *writer) read(ctx context.Context, n *Node) (samples.IngesterRead, error) {
	cc, err := n.Conn()
	if err != nil {
		return samples.IngesterRead{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	return samples.Query(ctx, cc, w.t0)
}

// leaderWatch polls every running node's Raft status and records who led in which term.
type leaderWatch struct {
	c     *Cluster
	start time.Time
	faulttest.Leaders
}

func (lw *leaderWatch) run(ctx context.Context) {
	for ctx.Err() == nil {
		for i, n := range lw.c.Nodes {
			st, ok := lw.c.Status(i)
			if !ok || st.State != "Leader" {
				continue
			}
			lw.Saw(st.Term, n.ID, time.Since(lw.start))
		}
		select {
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// healthWatch samples, every 200ms, each running node's applied ring and records which members
// that ring calls UNHEALTHY (heartbeat older than -ring.heartbeat-timeout by ring time) while their
// node is running: what distributors on that node would skip.
type healthWatch struct {
	c     *Cluster
	start time.Time
	mu    sync.Mutex
	obs   []unhealthyObs
}

type unhealthyObs struct {
	at       time.Duration
	observer string
	member   string
	ageMs    int64
}

func (hw *healthWatch) run(ctx context.Context) {
	for ctx.Err() == nil {
		at := time.Since(hw.start)
		for _, n := range hw.c.Nodes {
			s := n.Server()
			if s == nil {
				continue
			}
			r := s.Node().Ring()
			for _, m := range r.Members() {
				if m.State != ringstate.ACTIVE || m.Healthy(r.TimeMs(), ringHeartbeatTimeout.Milliseconds()) {
					continue
				}
				var target *Node
				for _, x := range hw.c.Nodes {
					if x.ID == string(m.ID) {
						target = x
					}
				}
				if target == nil || !target.Running() {
					continue
				}
				hw.mu.Lock()
				hw.obs = append(hw.obs, unhealthyObs{at: at, observer: n.ID, member: string(m.ID), ageMs: r.TimeMs() - m.HeartbeatMs})
				hw.mu.Unlock()
			}
		}
		select {
		case <-ctx.Done():
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// HealthResult is the health figures of a run: how long running ACTIVE members were seen
// UNHEALTHY by some node's ring, inside fault windows (plus healthGrace) and outside them.
type HealthResult struct {
	// Samples counts (time, observer, member) observations of a running member seen UNHEALTHY.
	Samples int `json:"samples"`
	// InFault and Outside are the spans (first to last observation, per member) inside a fault
	// window plus grace, and outside any.
	InFault  time.Duration `json:"in_fault"`
	Outside  time.Duration `json:"outside"`
	MaxAgeMs int64         `json:"max_heartbeat_age_ms"`
	Examples []string      `json:"examples,omitempty"`
}

// Valid: no running member was UNHEALTHY in anyone's ring, inside the fault windows or outside.
// The tier runs the product's default -ring.heartbeat-timeout (1m), and no fault here keeps a
// running member from heartbeating for that long: a clock step ages heartbeats by at most
// ringstate.MaxRingTimeGap (30s), a partition or pause lasts seconds. InFault and Outside still
// say where an observation fell, to line it up with the timeline.
func (r *HealthResult) Valid() bool { return r.Samples == 0 }

func (r *HealthResult) String() string {
	s := fmt.Sprintf("%s unhealthy-observations=%d in-fault=%s outside-fault=%s max-heartbeat-age=%dms",
		passFail(r.Valid()), r.Samples, r.InFault.Round(time.Millisecond), r.Outside.Round(time.Millisecond), r.MaxAgeMs)
	if len(r.Examples) > 0 {
		s += " " + strings.Join(r.Examples, " ")
	}
	return s
}

// result classifies the observations against the fault windows; the final heal (healAt) ends the
// last window.
func (hw *healthWatch) result(faults []faulttest.FaultWindow, healAt time.Time) HealthResult {
	hw.mu.Lock()
	defer hw.mu.Unlock()
	var res HealthResult
	inFault := func(at time.Duration) bool {
		for _, f := range faults {
			end := f.End
			if end == 0 {
				end = healAt.Sub(hw.start)
			}
			if at >= f.Start && at <= end+healthGrace {
				return true
			}
		}
		return false
	}
	// Spans per member and class: consecutive observations (within 1s) form one span.
	type key struct {
		member string
		in     bool
	}
	last := map[key]time.Duration{}
	first := map[key]time.Duration{}
	sorted := slices.Clone(hw.obs)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].at < sorted[j].at })
	flush := func(k key) {
		d := last[k] - first[k] + 200*time.Millisecond
		if k.in {
			res.InFault += d
		} else {
			res.Outside += d
			if len(res.Examples) < 3 {
				res.Examples = append(res.Examples, fmt.Sprintf("%s@%s..%s", k.member, first[k].Round(time.Millisecond), last[k].Round(time.Millisecond)))
			}
		}
		delete(first, k)
		delete(last, k)
	}
	for _, o := range sorted {
		res.Samples++
		res.MaxAgeMs = max(res.MaxAgeMs, o.ageMs)
		k := key{o.member, inFault(o.at)}
		if l, ok := last[k]; ok && o.at-l > time.Second {
			flush(k)
		}
		if _, ok := first[k]; !ok {
			first[k] = o.at
		}
		last[k] = o.at
	}
	keys := make([]key, 0, len(first))
	for k := range first {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i].member < keys[j].member })
	for _, k := range keys {
		flush(k)
	}
	return res
}

// longestAckGap is the longest stretch of the workload (from start to the final heal) with no
// acknowledged push, and where it began: how long the faults kept the cluster from taking writes.
func longestAckGap(hist []check.Write, start, healAt time.Time) string {
	var acks []time.Duration
	for _, w := range hist {
		if w.Outcome == check.OutcomeOK && w.Return.Before(healAt) {
			acks = append(acks, w.Return.Sub(start))
		}
	}
	slices.Sort(acks)
	acks = append(acks, healAt.Sub(start))
	var gap, at, prev time.Duration
	for _, a := range acks {
		if a-prev > gap {
			gap, at = a-prev, prev
		}
		prev = a
	}
	return fmt.Sprintf("%s from %s", gap.Round(time.Millisecond), at.Round(time.Millisecond))
}
