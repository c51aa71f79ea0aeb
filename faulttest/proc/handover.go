package proc

// The hand-over family: rolling restarts with hand-overs, and faults fired in the middle of one.
//
// The cluster is Scenario.Nodes ACTIVE members plus one spare, PENDING (-ingester.join-after 1h, so
// it waits to be claimed instead of taking tokens of its own). Round after round, the roller reads an
// ACTIVE member's samples, sends it SIGINT — it commits LEAVING, claims the spare and streams it
// everything — and, once the ring shows the pair, fires the round's fault. When the leave is over
// (the leaver exited, or resumed ACTIVE after a kill), the member that now holds the leaver's data is
// read, and the leaver restarts as the next spare: the product wiped its Raft state when it left, so
// it rejoins with -join through a live member (never -bootstrap, which on an empty Raft directory
// would found a second cluster), with -ingester.join-after 1h; its WAL is empty (dropped after the
// hand-over, or flushed). A leave that ended in a flush leaves one ACTIVE member short: a spare is
// restarted with -ingester.join-after 0s and claims tokens of its own.
//
// Every round is a fault window whose note tells the hand-over's story; the records feed checker 6
// (check.CheckHandovers).

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/raftingest/raftingest/faulttest"
	"github.com/raftingest/raftingest/faulttest/check"
	"github.com/raftingest/raftingest/faulttest/netns"
	"github.com/raftingest/raftingest/ringstate"
)

// Hand-over faults: each is fired while a hand-over is in progress (the ring shows the leaver
// LEAVING with a hand-over peer).
const (
	// HandoverClean fires nothing: a plain rolling restart.
	HandoverClean = "handover-clean"
	// HandoverKillLeaver kills -9 the leaver mid-stream and restarts it with its data after 1s: the
	// register fix-up makes it ACTIVE again with its tokens and WAL, the joiner PENDING.
	HandoverKillLeaver = "handover-kill-leaver"
	// HandoverKillJoiner kills -9 the joiner mid-stream and restarts it after 1s: the leaver aborts and
	// retries, with the same joiner once it is PENDING again.
	HandoverKillJoiner = "handover-kill-joiner"
	// HandoverKillJoinerLong kills -9 the joiner mid-stream and keeps it down until the leaver has
	// given up (-ingester.max-transfer-retries) and flushed to the bucket; the joiner then comes back
	// and claims tokens of its own.
	HandoverKillJoinerLong = "handover-kill-joiner-until-flush"
	// HandoverPartition cuts leaver and joiner from each other (nftables, silent drop) for 4s, longer
	// than -ingester.transfer-timeout: the joiner aborts on its own; Raft still reaches both.
	HandoverPartition = "handover-partition-pair"
	// HandoverPauseLeaver stops the leaver (SIGSTOP) for 4s, longer than -ingester.transfer-timeout.
	HandoverPauseLeaver = "handover-pause-leaver"
	// HandoverLeaderChange asks for a leadership transfer (ringctl transfer-leadership) twice, 1s
	// apart, while the hand-over's commits are under way.
	HandoverLeaderChange = "handover-leader-change"
)

// HandoverFaults are all the hand-over faults.
var HandoverFaults = []string{HandoverKillLeaver, HandoverKillJoiner, HandoverKillJoinerLong, HandoverPartition,
	HandoverPauseLeaver, HandoverLeaderChange}

// handoverNodeFlags go to every node of a hand-over scenario. The test delay (before each frame, and
// before the joiner's CompleteHandover) with small frames makes a hand-over last a few seconds, so a
// fault lands in its middle; the short transfer timeout makes the joiner give up on a silent leaver
// within a fault window; few retries (0.1+0.2+0.4+0.8s of backoff) let a leaver whose joiner stays
// down fall back on flushing within a round.
var handoverNodeFlags = []string{
	"-ingester.transfer-test-delay", "400ms",
	"-ingester.transfer-frame-bytes", "2048",
	"-ingester.transfer-timeout", "3s",
	"-ingester.max-transfer-retries", "5",
}

// handoverFaultFor is how long the pause and partition last: above -ingester.transfer-timeout.
const handoverFaultFor = 4 * time.Second

// Bounds of a round's waits.
const (
	pairWait   = 20 * time.Second // SIGINT to the ring showing the leaver paired
	settleWait = 90 * time.Second // the fault to the end of the leave (exit, or ACTIVE again)
	readWait   = 30 * time.Second // a member to answer a read
)

// roller is the rolling-restart workload with its hand-over faults.
type roller struct {
	c      *Cluster
	w      *Writer
	start  time.Time
	rng    *rand.Rand
	kinds  []string
	active int // the ACTIVE members a healthy cluster has
	logf   func(string, ...any)

	// Written by run's goroutine only; read after run returned.
	records []check.LeaveRecord
	faults  []faulttest.FaultWindow
	// fired counts, per fault kind, the rounds in which it hit a hand-over in progress; a kind that
	// never did leaves the scenario untested for it (handoverFaultsFired).
	fired map[string]int
	// promoted is the member that last claimed tokens of its own (it holds only what was written
	// since): the next leaver is drawn among the others, whose hand-overs carry data.
	promoted int
	// pushDuringReplay lets the writers push to a node the roller just (re)started before it has
	// caught up with the leader (Scenario.PushDuringReplay); otherwise they leave it alone until then.
	pushDuringReplay bool
	mu               sync.Mutex
	catching         map[int]bool // guarded by mu
	watchers         sync.WaitGroup
}

// catchingUp reports whether node n was restarted by the roller and has not yet applied the
// leader's commit index: the writers leave it alone meanwhile (Writer.skip), because its
// distributor would place pushes on the ring of its log replay — which it refused
// only after the stale-ring fix (see staleRingPushes); with PushDuringReplay they do not wait.
func (r *roller) catchingUp(n *Node) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.catching[n.Idx]
}

// startNode starts node i and, unless pushDuringReplay, keeps the writers off it until its applied
// index reaches the leader's commit index (watched in the background, at most 30s; run waits for the
// watchers before it returns).
func (r *roller) startNode(ctx context.Context, i int) error {
	if r.pushDuringReplay {
		return r.c.Start(i)
	}
	r.mu.Lock()
	if r.catching == nil {
		r.catching = map[int]bool{}
	}
	r.catching[i] = true
	r.mu.Unlock()
	done := func() {
		r.mu.Lock()
		delete(r.catching, i)
		r.mu.Unlock()
	}
	if err := r.c.Start(i); err != nil {
		done()
		return err
	}
	r.watchers.Add(1)
	go func() {
		defer r.watchers.Done()
		defer done()
		_ = waitFor(ctx, 30*time.Second, func() bool {
			l := r.c.Leader(ctx)
			if l < 0 {
				return false
			}
			lst, err := r.c.Status(ctx, l)
			if err != nil || lst.GetCommitIndex() == 0 {
				return false
			}
			st, err := r.c.Status(ctx, i)
			return err == nil && st.GetAppliedIndex() >= lst.GetCommitIndex()
		})
	}()
	return nil
}

// addSpare makes the cluster's last node the spare: PENDING until a leaver claims it.
func addSpare(c *Cluster) {
	n := c.Nodes[len(c.Nodes)-1]
	n.SetSpare(true)
	setFlag(n, "-ingester.join-after", "1h")
}

// setFlag replaces every occurrence of flag (with its value) in the node's arguments by one.
func setFlag(n *Node, flag, value string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.args = append(dropFlag(n.args, flag, true), flag, value)
}

// dropFlag removes flag from args, with the value that follows it when hasValue.
func dropFlag(args []string, flag string, hasValue bool) []string {
	out := make([]string, 0, len(args))
	for k := 0; k < len(args); k++ {
		if args[k] == flag {
			if hasValue {
				k++
			}
			continue
		}
		out = append(out, args[k])
	}
	return out
}

// interrupt sends SIGINT to the node's process (a graceful leave) and returns the channel closed
// when that process exits, and a function giving its exit code once it has (nil, nil when the node
// is not running).
func (n *Node) interrupt() (<-chan struct{}, func() int) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd == nil || n.cmd.Process == nil || n.done == nil {
		return nil, nil
	}
	cmd, done := n.cmd, n.done
	_ = syscall.Kill(cmd.Process.Pid, syscall.SIGINT)
	return done, func() int { return cmd.ProcessState.ExitCode() } // valid once done is closed
}

// run plays one round of every fault kind (in an order drawn from the seed), then more rounds while
// the workload lasts (until end), each on ctx and bounded by its own waits; then, after 3s more of
// writes (the "after" throughput), stopWork ends the writers.
func (r *roller) run(ctx context.Context, end time.Time, stopWork context.CancelFunc) {
	defer stopWork()
	defer r.watchers.Wait()
	order := slices.Clone(r.kinds)
	if len(order) == 0 {
		order = []string{HandoverClean}
	}
	r.rng.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
	pause := func(d time.Duration) bool {
		select {
		case <-ctx.Done():
			return false
		case <-time.After(d):
			return true
		}
	}
	// A calm start, as the drawn schedules have: the "before" throughput.
	if !pause(3 * time.Second) {
		return
	}
	for k := 0; ctx.Err() == nil && (k < len(order) || time.Until(end) > 3*time.Second); k++ {
		if !r.round(ctx, order[k%len(order)]) {
			break // the cluster did not recover from the last round: the checkers say why
		}
		if !pause(time.Second) {
			return
		}
	}
	pause(max(time.Until(end), 3*time.Second))
}

// ringVia reads the ring through a running, unpaused node other than skip.
func (r *roller) ringVia(ctx context.Context, skip ...int) (*ringstate.Ring, error) {
	var last error = fmt.Errorf("no live node to read the ring through")
	for i, n := range r.c.Nodes {
		if slices.Contains(skip, i) || !n.Running() || n.Paused() {
			continue
		}
		rg, _, err := r.c.Ring(ctx, i)
		if err == nil {
			return rg, nil
		}
		last = err
	}
	return nil, last
}

func (r *roller) index(id ringstate.MemberID) int {
	for i, n := range r.c.Nodes {
		if n.ID == string(id) {
			return i
		}
	}
	return -1
}

// readMember reads node i's samples, retrying until it answers or readWait passes.
func (r *roller) readMember(ctx context.Context, i int) (check.MemberRead, error) {
	n := r.c.Nodes[i]
	var err error
	deadline := time.Now().Add(readWait)
	for time.Now().Before(deadline) {
		var rd IngesterRead
		if rd, err = r.w.readIngester(ctx, n); err == nil {
			return check.MemberRead{Member: n.ID, At: time.Now(), Samples: rd.Samples}, nil
		}
		if ctx.Err() != nil {
			break
		}
		time.Sleep(300 * time.Millisecond)
	}
	return check.MemberRead{}, fmt.Errorf("read %s: %w", n.ID, err)
}

// round is one leave with one fault. It returns false when it could not start because the cluster
// was not healthy (every member ACTIVE, the spare PENDING) within 45s.
func (r *roller) round(ctx context.Context, kind string) bool {
	c := r.c
	fw := faulttest.FaultWindow{Kind: kind, Start: time.Since(r.start)}
	var notes []string
	say := func(format string, args ...any) {
		notes = append(notes, fmt.Sprintf("@%v ", time.Since(r.start).Round(time.Millisecond))+fmt.Sprintf(format, args...))
	}
	var rec *check.LeaveRecord
	defer func() {
		fw.End = time.Since(r.start)
		fw.Note = strings.Join(notes, "; ")
		r.faults = append(r.faults, fw)
		if rec != nil {
			rec.Note = fw.Note
			r.records = append(r.records, *rec)
		}
		r.logf("hand-over round %s: %s", kind, fw.Note)
	}()

	if err := c.WaitHealthy(ctx, 45*time.Second); err != nil {
		say("round skipped, rolling restarts stopped: %v", err)
		return false
	}
	var actives []int
	for i, n := range c.Nodes {
		if !n.Spare() && i != r.promoted {
			actives = append(actives, i)
		}
	}
	if len(actives) == 0 {
		say("round skipped: no ACTIVE member to restart")
		return true
	}
	li := actives[r.rng.IntN(len(actives))]
	leaver := c.Nodes[li]
	rg, err := r.ringVia(ctx, li)
	if err != nil {
		say("round skipped: ring: %v", err)
		return true
	}
	me, _ := rg.Member(ringstate.MemberID(leaver.ID))
	tokens := me.Tokens
	if c.Bucket == "" && leaver.AdminAddr != "" {
		// Node-local buckets: every round starts with every member's memory flushed, so the leaver
		// has blocks of its own to hand over (to the joiner, or in the flush fallback to the members
		// that take its data) besides what it receives until the signal, and the compactor has the
		// replicas' blocks to merge.
		for i, n := range c.Nodes {
			if n.Running() && !n.Paused() {
				if note, err := c.Flush(ctx, i); err != nil {
					say("flush %s: %v", n.ID, err)
				} else {
					say("flush %s: %s", n.ID, note)
				}
			}
		}
	}
	held, err := r.readMember(ctx, li)
	if err != nil {
		say("round skipped: %v", err)
		return true
	}
	rec = &check.LeaveRecord{Member: leaver.ID, Held: held.Samples, HeldRead: true}
	rec.SignalAt = time.Now()
	exited, exitCode := leaver.interrupt()
	if exited == nil {
		say("round skipped: %s is not running", leaver.ID)
		return true
	}
	fw.Targets = []string{leaver.ID}
	say("SIGINT %s (held %d samples, %d tokens)", leaver.ID, len(held.Samples), len(tokens))

	// Wait for the pair: the fault belongs in the middle of the hand-over.
	ji := -1
	deadline := time.Now().Add(pairWait)
	for ji < 0 && time.Now().Before(deadline) {
		select {
		case <-exited:
			deadline = time.Now() // the leave ended before a pair was seen
			continue
		case <-time.After(100 * time.Millisecond):
		}
		if rg, err := r.ringVia(ctx, li); err == nil {
			if m, ok := rg.Member(ringstate.MemberID(leaver.ID)); ok && m.State == ringstate.LEAVING && m.HandoverPeer != "" {
				ji = r.index(m.HandoverPeer)
			}
		}
	}
	if ji < 0 {
		say("no hand-over seen in progress: %s not fired", kind)
	} else {
		joiner := c.Nodes[ji]
		fw.Targets = append(fw.Targets, joiner.ID)
		say("%s hands over to %s", leaver.ID, joiner.ID)
		// Into the stream: the claim is committed, a frame or two is on its way.
		time.Sleep(time.Duration(100+r.rng.IntN(300)) * time.Millisecond)
		r.fire(ctx, kind, li, ji, exited, say)
		if r.fired == nil {
			r.fired = map[string]int{}
		}
		r.fired[kind]++
		if kind == HandoverKillLeaver {
			// The signalled process is gone; what follows is about its restart, which resumes ACTIVE
			// (or, if the hand-over completed just before the kill, registers anew or exits).
			exited = make(chan struct{})
		}
	}

	// The end of the leave: the process we signalled exits (it left), or the leaver is ACTIVE again
	// (killed and restarted: the register fix-up resumed it).
	resumed, left := false, false
	deadline = time.Now().Add(settleWait)
	for !resumed && !left && time.Now().Before(deadline) {
		select {
		case <-exited:
			left = true
			rec.Exited, rec.ExitCode = true, exitCode()
			say("%s exited with code %d", leaver.ID, rec.ExitCode)
			continue
		case <-time.After(200 * time.Millisecond):
		}
		if !leaver.Running() {
			left = true // the signalled process was killed by the fault, and the restart exited too
			say("%s is not running", leaver.ID)
			continue
		}
		rg, err := r.ringVia(ctx, li)
		if err != nil {
			continue
		}
		switch m, ok := rg.Member(ringstate.MemberID(leaver.ID)); {
		case ok && m.State == ringstate.PENDING:
			// Registered anew: a restart after a kill that came after the hand-over completed. (Gone
			// from the ring is not the end yet: the process still leaves Raft and wipes its state.)
			left = true
		case ok && m.State == ringstate.ACTIVE && m.HandoverPeer == "":
			resumed = true
		}
	}
	if !resumed && !left {
		say("leave of %s not over after %v: left as it is (checker 6 judges it)", leaver.ID, settleWait)
		return true
	}
	if resumed {
		say("%s resumed ACTIVE (restart fix-up)", leaver.ID)
		if rd, err := r.readMember(ctx, li); err != nil {
			say("%v", err)
		} else {
			rec.Reads = append(rec.Reads, rd)
			say("%s holds %d samples", leaver.ID, len(rd.Samples))
		}
		return true
	}

	// Left: who holds the leaver's tokens now? Nobody: it flushed to the bucket and removed itself.
	heir := -1
	var lastErr error
	for end := time.Now().Add(readWait); heir < 0 && time.Now().Before(end); {
		rg, err := r.ringVia(ctx, li)
		if err != nil {
			lastErr = err
			time.Sleep(300 * time.Millisecond)
			continue
		}
		lastErr = nil
		if len(tokens) > 0 {
			if o, ok := rg.Owner(tokens[0]); ok && string(o) != leaver.ID {
				heir = r.index(o)
			}
		}
		break
	}
	if lastErr != nil {
		say("cannot read the ring: %v", lastErr)
	}
	if heir >= 0 {
		h := c.Nodes[heir]
		if !h.Running() { // a joiner killed after it completed
			if err := r.startNode(ctx, heir); err != nil {
				say("restart %s: %v", h.ID, err)
			}
		}
		h.SetSpare(false)
		if rd, err := r.readMember(ctx, heir); err != nil {
			say("%v", err)
		} else {
			rec.Reads = append(rec.Reads, rd)
			say("completed: %s holds %d samples", h.ID, len(rd.Samples))
		}
	} else {
		say("no member holds %s's tokens: it flushed to the bucket and removed itself", leaver.ID)
	}
	if err := r.restartAsSpare(ctx, li); err != nil {
		say("restart %s as the spare: %v", leaver.ID, err)
	} else {
		say("%s restarted as the spare (-join, PENDING)", leaver.ID)
	}
	// An ACTIVE member short (the leaver flushed instead of handing over) is made up by a spare
	// claiming tokens of its own — the joiner kept down, if there is one; then a joiner kept down
	// (or killed after an abort) comes back.
	nActive := 0
	for _, n := range c.Nodes {
		if !n.Spare() {
			nActive++
		}
	}
	for pass := 0; pass < 2 && nActive < r.active; pass++ {
		for i, n := range c.Nodes {
			if nActive >= r.active || i == li || !n.Spare() || (pass == 0 && n.Running()) {
				continue
			}
			n.Kill() // PENDING: it holds nothing the ring lets it keep
			setFlag(n, "-ingester.join-after", "0s")
			n.SetSpare(false)
			if err := r.startNode(ctx, i); err != nil {
				say("restart %s to join: %v", n.ID, err)
			} else {
				say("%s restarted to claim tokens of its own (-ingester.join-after 0s)", n.ID)
			}
			r.promoted = i
			nActive++
		}
	}
	for i, n := range c.Nodes {
		if i != li && !n.Running() {
			if err := r.startNode(ctx, i); err != nil {
				say("restart %s: %v", n.ID, err)
			}
		}
	}
	return true
}

// fire applies the round's fault to leaver li and joiner ji, and heals it.
func (r *roller) fire(ctx context.Context, kind string, li, ji int, leaverExited <-chan struct{}, say func(string, ...any)) {
	c := r.c
	leaver, joiner := c.Nodes[li], c.Nodes[ji]
	switch kind {
	case HandoverClean:
	case HandoverKillLeaver:
		leaver.Kill()
		say("kill -9 %s", leaver.ID)
		time.Sleep(time.Second)
		if err := r.startNode(ctx, li); err != nil {
			say("restart %s: %v", leaver.ID, err)
		} else {
			say("%s restarted with its data", leaver.ID)
		}
	case HandoverKillJoiner:
		joiner.Kill()
		say("kill -9 %s", joiner.ID)
		time.Sleep(time.Second)
		if err := r.startNode(ctx, ji); err != nil {
			say("restart %s: %v", joiner.ID, err)
		} else {
			say("%s restarted", joiner.ID)
		}
	case HandoverKillJoinerLong:
		joiner.Kill()
		say("kill -9 %s, kept down until %s has left", joiner.ID, leaver.ID)
		select {
		case <-leaverExited:
		case <-time.After(settleWait):
			say("%s still there after %v", leaver.ID, settleWait)
		}
		// The round restarts the joiner once it knows whether the leaver handed over to it.
	case HandoverPartition:
		if err := c.Net.Apply(li, netns.Rule{Peers: []int{ji}, In: true, Out: true}); err != nil {
			say("partition: %v", err)
			return
		}
		say("%s and %s cut from each other", leaver.ID, joiner.ID)
		time.Sleep(handoverFaultFor)
		if err := c.Net.Apply(li); err != nil {
			say("heal: %v", err)
		} else {
			say("healed")
		}
	case HandoverPauseLeaver:
		leaver.Pause()
		say("SIGSTOP %s", leaver.ID)
		time.Sleep(handoverFaultFor)
		leaver.Resume()
		say("SIGCONT %s", leaver.ID)
	case HandoverLeaderChange:
		tctx, cancel := context.WithTimeout(ctx, transferEvery+transferEvery/2)
		calls := (&nemesis{c: c, start: r.start, rng: r.rng}).transferLoop(tctx)
		cancel()
		say("transfer-leadership: %s", strings.Join(calls, "; "))
	default:
		say("unknown hand-over fault %q", kind)
	}
}

// restartAsSpare brings a member that left back as the spare: killed if a restart of it is still
// running, its Raft state wiped unless the Raft configuration still lists it (the product wipes it
// when it leaves cleanly; a kill can come first), and started with -join through a live member
// (never -bootstrap) and -ingester.join-after 1h so that it waits PENDING to be claimed.
func (r *roller) restartAsSpare(ctx context.Context, i int) error {
	c, n := r.c, r.c.Nodes[i]
	n.Kill()
	via, listed := -1, false
	for j, m := range c.Nodes {
		if j == i || m.Spare() || !m.Running() {
			continue
		}
		st, err := c.Status(ctx, j)
		if err != nil || len(st.GetServers()) == 0 {
			continue
		}
		via = j
		for _, s := range st.GetServers() {
			listed = listed || s.GetId() == n.ID
		}
		break
	}
	if via < 0 {
		return fmt.Errorf("no live ACTIVE member to join through")
	}
	if !listed {
		if err := os.RemoveAll(filepath.Join(n.DataDir, "raft")); err != nil {
			return err
		}
	}
	if c.Bucket == "" {
		// A node-local bucket goes with the machine that left: the member comes back as a new
		// machine would, so its old blocks must be on the members that remain, not found here.
		if err := os.RemoveAll(c.BucketDir(i)); err != nil {
			return err
		}
	}
	n.mu.Lock()
	args := dropFlag(dropFlag(n.args, "-bootstrap", false), "-join", true)
	n.args = append(dropFlag(args, "-ingester.join-after", true), "-join", c.Nodes[via].GRPCAddr, "-ingester.join-after", "1h")
	n.mu.Unlock()
	n.SetSpare(true)
	return r.startNode(ctx, i)
}

// The stale-ring check is the regression of a product bug the hand-over family found (seed 58863677883 of `handover`,
// replication FAIL "w0/727 on 1 of owners [n3 n0 n1], quorum 2"): a restarted node's distributor
// served pushes from its local ring while that ring was still replaying the Raft log, so it placed
// samples on a historical ring. Early in the log only the bootstrap member owned tokens: the node
// logged "replication factor capped ... effective=1" at the same millisecond its FSM replayed
// entries 3 to 84, and acknowledged a push stored on one member. Fixed: raftfsm.Node.CaughtUp, and
// the ingester answers pushes and queries with 503 until it holds (ingester/ringgate.go).

// staleRingPushes returns the distributor warnings, logged after since, that placed a push with an
// effective replication factor of 1: once the workload runs the ring always has at least 2 token
// owners (3, or 2 while a leaver that flushed is not yet replaced), so only a stale ring — the
// replay of an old part of the log — gives 1.
func staleRingPushes(c *Cluster, since time.Time) []string {
	var out []string
	for _, n := range c.Nodes {
		b, _ := os.ReadFile(n.LogPath)
		for _, l := range strings.Split(string(b), "\n") {
			if !strings.Contains(l, `msg="replication factor capped by the ring`) || !strings.Contains(l, " effective=1") {
				continue
			}
			ts, _, _ := strings.Cut(strings.TrimPrefix(l, "time="), " ")
			at, err := time.Parse(time.RFC3339Nano, ts)
			if err != nil || at.Before(since) {
				continue
			}
			out = append(out, n.ID+": "+ts)
		}
	}
	return out
}

// handoverFaultsFired is the verdict that every fault kind of a hand-over scenario hit at least one
// hand-over in progress: a round whose leaver flushed at once, or whose pairing the harness never
// saw, fires nothing, and a scenario whose rounds all did so would pass every checker while
// testing none of its faults.
func handoverFaultsFired(kinds []string, fired map[string]int) (bool, string) {
	var missing []string
	var got []string
	for _, k := range kinds {
		if k == HandoverClean {
			continue
		}
		if fired[k] == 0 {
			missing = append(missing, k)
		}
		got = append(got, fmt.Sprintf("%s=%d", k, fired[k]))
	}
	if len(missing) > 0 {
		return false, fmt.Sprintf("FAIL never hit a hand-over in progress: %v; fired %s", missing, strings.Join(got, " "))
	}
	return true, "PASS fired " + strings.Join(got, " ")
}
