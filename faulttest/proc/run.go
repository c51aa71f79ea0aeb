package proc

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/raftingest/raftingest/faulttest"
	"github.com/raftingest/raftingest/faulttest/check"
	"github.com/raftingest/raftingest/faulttest/ringhist"
	"github.com/raftingest/raftingest/ringstate"
)

// Scenario is one process-tier run.
type Scenario struct {
	Name     string
	Seed     int64
	Nodes    int           // default 3
	Writers  int           // default 3
	Workload time.Duration // default 30s
	Recovery time.Duration // liveness bound after the final heal; default 60s
	Faults   []string      // kinds drawn by the schedule; nil: AllFaults
	// Fixed, when set, replaces the drawn schedule (regression scenarios).
	Fixed []Step
	// ExtraFlags are added to every node's command line (for example small snapshot thresholds).
	ExtraFlags []string
	// OneReplicaLosesData marks a scenario whose faults destroy WAL data of one member by design
	// (memstore cuts a corrupt tail, or the operator moves a refused file aside) while nothing
	// re-replicates it yet: an acked sample whose second copy lived there is left on one replica, so
	// the replication checker requires one copy and reports those under quorum as information.
	OneReplicaLosesData bool
	// KnownBug, when set, names the product bug this scenario finds; the test skips it with this
	// message until the bug is fixed.
	KnownBug string
	// Handover runs the rolling-restart workload (handover.go) instead of a drawn fault schedule:
	// Nodes ACTIVE members plus one spare PENDING member, round after round an ACTIVE member
	// SIGINTed into a hand-over to the spare, with one of Faults (HandoverFaults) fired in its middle.
	Handover bool
	// TLS runs the cluster plane with mutual TLS (EnableTLS): Raft, gRPC and ringctl, with every
	// node's identity and the operator's rights checked.
	TLS bool
	// LocalBuckets gives every member its own node-local bucket (the product's default) instead of
	// one shared directory: each querier must then read every member's blocks.
	LocalBuckets bool
	// PushDuringReplay (hand-over family) lets the writers push to a node the roller just restarted
	// before it has caught up with the leader (the product answers 503 until then); by default they wait.
	PushDuringReplay bool
	// Zones, when set, spreads the members round-robin over that many zones (zone-0, zone-1, ...;
	// -ingester.ring.instance-zone) with -ingester.ring.zone-awareness-enabled, and the replication
	// checker judges the zone-aware replication sets. KillZone needs it.
	Zones int
	// MaxVoters and VoterReplaceAfter, when set, are every member's -raft.max-voters and
	// -raft.voter-replace-after; the voters checker bounds a replacement by the latter plus
	// voterReplaceSlack. KillVoter and KillLeaderVoter need a member beyond MaxVoters.
	MaxVoters         int
	VoterReplaceAfter time.Duration
	// OutOfOrder, when > 1, runs every node with -ingester.out-of-order-time-window=1m and has the
	// writers send each block of OutOfOrder consecutive samples in a random order (Writer.oooBlock).
	OutOfOrder int
	// HAPair runs the HA-pair workload (hapair.go) beside the writers, with the HA tracker on
	// every member, and the ha checker: no sample acked and lost, none deduplicated and stored, no
	// two replicas stored at overlapping times, no drop without the other replica's data around it.
	HAPair bool
}

// voterReplaceSlack is what a voter replacement may take beyond -raft.voter-replace-after: the
// leader's reconcile period, two configuration changes, and an election when the leader died.
const voterReplaceSlack = 10 * time.Second

// Step is a fault at a fixed time, for scenarios that need one exact schedule.
type Step struct {
	Kind string
	At   time.Duration
	Dur  time.Duration
}

// Env is where a scenario runs: the binaries and a base directory for its data.
type Env struct {
	Bin  string
	Base string // parent of the run's directory; kept on failure
	Logf func(format string, args ...any)
}

// Run runs one scenario and returns its report. The caller must be inside the driver namespace
// (netns.Reexec).
func Run(ctx context.Context, env Env, sc Scenario) (*faulttest.Report, error) {
	if sc.Nodes == 0 {
		sc.Nodes = 3
	}
	if sc.Writers == 0 {
		sc.Writers = 3
	}
	if sc.Workload == 0 {
		sc.Workload = 30 * time.Second
	}
	if sc.Recovery == 0 {
		sc.Recovery = 60 * time.Second
	}
	if sc.Faults == nil {
		sc.Faults = AllFaults
		if sc.Handover {
			sc.Faults = HandoverFaults
		}
	}
	if env.Logf == nil {
		env.Logf = func(string, ...any) {}
	}
	wall := time.Now()
	dir, err := os.MkdirTemp(env.Base, "faulttest-"+sc.Name+"-")
	if err != nil {
		return nil, err
	}
	total := sc.Nodes
	if sc.Handover {
		total++ // the spare
	}
	c, err := NewCluster(env.Bin, dir, total)
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	if sc.TLS {
		if err := c.EnableTLS(); err != nil {
			c.Close()
			os.RemoveAll(dir)
			return nil, fmt.Errorf("enable tls: %w", err)
		}
	}
	if sc.LocalBuckets {
		c.LocalBuckets()
	}
	flushes := func(k string) bool { return k == FlushOne || k == FlushAll }
	if slices.ContainsFunc(sc.Faults, flushes) || slices.ContainsFunc(sc.Fixed, func(s Step) bool { return flushes(s.Kind) }) ||
		(sc.Handover && sc.LocalBuckets) { // the roller flushes members (roller.round)
		c.ExposeAdmin()
	}
	for i, n := range c.Nodes {
		if sc.OutOfOrder > 1 {
			n.args = append(n.args, "-ingester.out-of-order-time-window", "1m")
		}
		n.args = append(n.args, sc.ExtraFlags...)
		if sc.MaxVoters > 0 {
			n.args = append(n.args, "-raft.max-voters", strconv.Itoa(sc.MaxVoters))
		}
		if sc.VoterReplaceAfter > 0 {
			n.args = append(n.args, "-raft.voter-replace-after", sc.VoterReplaceAfter.String())
		}
		if sc.Zones > 0 {
			n.Zone = fmt.Sprintf("zone-%d", i%sc.Zones)
			n.args = append(n.args, "-ingester.ring.zone-awareness-enabled", "-ingester.ring.instance-zone", n.Zone)
		}
		if sc.Handover {
			n.args = append(n.args, handoverNodeFlags...)
		}
		if sc.HAPair {
			n.args = append(n.args, haFlags...)
		}
	}
	if sc.Handover {
		addSpare(c)
	}
	defer c.Close()
	rep := &faulttest.Report{Scenario: sc.Name, Tier: "process", Seed: sc.Seed}
	// Linearizable ring reads from the bring-up on (checker 5); stopped once recovery is measured.
	ringReads := startRingReader(ctx, c, sc.Seed)
	defer ringReads.Stop()
	keep := func(why string) (*faulttest.Report, error) {
		rep.Kept = dir
		rep.Wall = time.Since(wall)
		_ = rep.WriteFiles(dir)
		return rep, fmt.Errorf("%s (evidence in %s)", why, dir)
	}

	// Bring the cluster up: the bootstrap node first, then the others join it.
	if err := c.Start(0); err != nil {
		return keep(err.Error())
	}
	if err := waitFor(ctx, 30*time.Second, func() bool { return c.Leader(ctx) == 0 }); err != nil {
		return keep("bootstrap node never led: " + err.Error())
	}
	for i := 1; i < len(c.Nodes); i++ {
		if err := c.Start(i); err != nil {
			return keep(err.Error())
		}
	}
	if err := c.WaitHealthy(ctx, 60*time.Second); err != nil {
		return keep(err.Error())
	}

	start := time.Now()
	w := newWriter(c)
	w.oooBlock = sc.OutOfOrder
	steps := schedule(sc.Seed, sc.Faults, sc.Workload)
	if sc.Fixed != nil {
		steps = nil
		for _, s := range sc.Fixed {
			steps = append(steps, step{kind: s.Kind, at: s.At, dur: s.Dur})
		}
	}
	nem := &nemesis{c: c, start: start, rng: rand.New(rand.NewPCG(uint64(sc.Seed), 2)), logf: env.Logf}
	nem.readBack = func(ctx context.Context) ([]check.SampleID, bool) {
		per, complete, _ := w.readAll(ctx)
		if !complete {
			return nil, false
		}
		ids, _ := union(per)
		// The bucket too: a sample flushed between its ack and the crash is durable there.
		br, err := w.readBuckets(ctx, filepath.Join(dir, "bucket-cache-crash"))
		if err != nil {
			return nil, false
		}
		return append(ids, br.Samples...), true
	}

	watchCtx, stopWatch := context.WithCancel(ctx)
	lw := &leaderWatch{c: c, start: start}
	var watchWG sync.WaitGroup
	watchWG.Add(2)
	go func() { defer watchWG.Done(); lw.run(watchCtx) }()
	var periodic []check.Read
	var perMu sync.Mutex
	go func() {
		defer watchWG.Done()
		for watchCtx.Err() == nil {
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
			ids, _ := union(per)
			// And the bucket, after the ingesters: a sample a flush moves out of memory between the
			// two reads was uploaded before it was dropped, so one of them sees it. Without it, a
			// sample whose only copy a leaver flushed would look vanished.
			br, err := w.readBuckets(watchCtx, filepath.Join(dir, "bucket-cache-periodic"))
			if err != nil || watchCtx.Err() != nil {
				continue
			}
			ids = append(ids, br.Samples...)
			perMu.Lock()
			periodic = append(periodic, check.Read{Invoke: inv, Return: time.Now(), Samples: ids})
			perMu.Unlock()
		}
	}()

	var wctx context.Context
	var stopWork context.CancelFunc
	if sc.Handover {
		// The rolling restarts play every fault kind once however long that takes (and go on while
		// the workload lasts); the writers write until the rounds are over (roller.run stops them).
		wctx, stopWork = context.WithCancel(ctx)
	} else {
		wctx, stopWork = context.WithTimeout(ctx, sc.Workload)
	}
	roll := &roller{c: c, w: w, start: start, rng: rand.New(rand.NewPCG(uint64(sc.Seed), 3)), kinds: sc.Faults,
		active: sc.Nodes, logf: env.Logf, promoted: -1, pushDuringReplay: sc.PushDuringReplay}
	if sc.Handover {
		w.skip = roll.catchingUp
	}
	var wg sync.WaitGroup
	for i := range sc.Writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w.run(wctx, i, rand.New(rand.NewPCG(uint64(sc.Seed), uint64(10+i))))
		}()
	}
	var ha *haPair
	if sc.HAPair {
		ha = newHAPair(c, start)
		for r := 1; r <= 2; r++ {
			wg.Add(1)
			go func() { defer wg.Done(); ha.run(wctx, r, rand.New(rand.NewPCG(uint64(sc.Seed), uint64(100+r)))) }()
		}
	}
	wg.Add(1)
	if sc.Handover {
		go func() { defer wg.Done(); roll.run(ctx, start.Add(sc.Workload), stopWork) }()
	} else {
		go func() { defer wg.Done(); nem.run(wctx, steps) }()
	}
	wg.Wait()
	stopWork()

	// The final heal: network back, every process resumed and started.
	_ = c.Net.HealAll()
	for i, n := range c.Nodes {
		n.Resume()
		if !n.Running() {
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
		if leaderAt.IsZero() && c.Leader(ctx) >= 0 {
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
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	stopWatch()
	reads := ringReads.Stop()
	watchWG.Wait()

	// The final read: every node must answer.
	var final check.Read
	var per map[string]IngesterRead
	for try := 0; ; try++ {
		final.Invoke = time.Now()
		var complete bool
		var errs []string
		per, complete, errs = w.readAll(ctx)
		final.Return = time.Now()
		if complete {
			break
		}
		if try == 20 {
			rep.Add("final-read", false, "FAIL not every node answered the final read: "+strings.Join(errs, "; "), nil)
			break
		}
		time.Sleep(time.Second)
	}
	_, dup := union(per)
	var corrupt []string
	for node, r := range per {
		for _, id := range r.Corrupt {
			corrupt = append(corrupt, fmt.Sprintf("%s:%s", node, id))
		}
	}
	// The bucket, read directly: flushed samples are durable there (hand-overs that fell back on a
	// flush, and any periodic flush).
	inBucket := map[check.SampleID]bool{}
	if br, err := w.readBuckets(ctx, filepath.Join(dir, "bucket-cache")); err != nil {
		rep.Add("bucket-read", false, "FAIL "+err.Error(), nil)
	} else {
		for _, id := range br.Samples {
			inBucket[id] = true
		}
		for _, id := range br.Corrupt {
			corrupt = append(corrupt, "bucket:"+id.String())
		}
	}
	// The set checker's final read goes through the query API (ingesters and bucket merged by the
	// querier, as a user reads); per-replica duplicates come from the direct reads.
	direct := map[check.SampleID]bool{}
	pendingHeld := 0
	for _, n := range c.Nodes {
		for _, id := range per[n.ID].Samples {
			if n.Spare() {
				pendingHeld++
				continue
			}
			direct[id] = true
		}
	}
	for id := range inBucket {
		direct[id] = true
	}
	final.Invoke = time.Now()
	api := w.queryReadAll(ctx, sc.Seed, direct, len(inBucket))
	final.Return = time.Now()
	corrupt = append(corrupt, api.Corrupt...)
	summary := api.Summary
	if pendingHeld > 0 {
		summary += fmt.Sprintf(" (information: PENDING members hold %d samples, a partial hand-over not yet discarded or a stale copy)", pendingHeld)
	}
	rep.Add("query-api", api.OK, summary, nil)
	same := check.CheckSameAnswer(api.Answers)
	rep.Add("same-answer", same.Valid(), same.String(), same)
	if slices.Contains(sc.ExtraFlags, "-compactor.interval") {
		// The scenario runs the compactor often and flushes every member at least twice: blocks a
		// compaction wrote must be in the buckets, or the checks above judged no compaction at all.
		blocks, merged, err := bucketBlocks(c.BucketDirs())
		switch {
		case err != nil:
			rep.Add("compaction", false, "FAIL reading the buckets: "+err.Error(), nil)
		default:
			rep.Add("compaction", merged > 0, fmt.Sprintf("%s blocks=%d written-by-the-compactor=%d", passFail(merged > 0), blocks, merged), nil)
		}
	}
	if api.OK || len(api.Samples) > 0 {
		final.Samples = append(api.Samples, dup...)
	} else {
		// No answer from the API: judge the set on the direct reads, so the report still says what
		// is where (query-api has failed the run).
		for id := range direct {
			final.Samples = append(final.Samples, id)
		}
		final.Samples = append(final.Samples, dup...)
	}

	hist := w.History()
	perMu.Lock()
	set := check.CheckSet(hist, periodic, final)
	perMu.Unlock()
	rep.Add("set", set.Valid(), set.String(), set)
	if ha != nil {
		res, leaks, err := ha.check(ctx)
		switch {
		case err != nil:
			rep.Add("ha", false, "FAIL reading the HA pair's samples: "+err.Error(), nil)
		case leaks > 0:
			rep.Add("ha", false, fmt.Sprintf("FAIL %d series kept the replica label; %s", leaks, res.String()), res)
		default:
			rep.Add("ha", res.Valid(), res.String(), res)
		}
		if !res.Valid() {
			ha.mu.Lock()
			env.Logf("HA pair push failures: %v", ha.fails)
			ha.mu.Unlock()
		}
	}
	rep.Add("values", len(corrupt) == 0, fmt.Sprintf("%s samples-with-wrong-value=%d %v", passFail(len(corrupt) == 0), len(corrupt), firstN(corrupt, 5)), nil)

	// Replication against the recovered ring.
	if l := c.Leader(ctx); l >= 0 {
		if r, hbTimeout, err := c.Ring(ctx, l); err == nil {
			var acked []check.SampleID
			durable := 0
			for _, wr := range hist {
				if wr.Outcome == check.OutcomeOK {
					if inBucket[wr.ID] {
						durable++ // in the bucket: durable, whatever copies the ingesters hold
						continue
					}
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
			place := ringstate.Placement{RF: 3, ZoneAware: sc.Zones > 0}
			rf := r.EffectiveRFFor(place)
			place.RF = rf
			required := ringstate.Quorum(rf)
			if sc.OneReplicaLosesData {
				required = 1
			}
			var buf []*ringstate.Member
			repl := check.CheckReplicationRelaxed(acked, func(id check.SampleID) []string {
				buf = r.ReplicationSetFor(SeriesHash(id), place, hbTimeout, buf)
				out := make([]string, len(buf))
				for i, m := range buf {
					out[i] = string(m.ID)
				}
				return out
			}, func(node string, id check.SampleID) bool { return holds[node][id] }, ringstate.Quorum(rf), required,
				"a member's WAL data was destroyed (corrupt tail cut, or the file moved aside by the operator step) "+
					"and nothing re-replicates yet, so a sample acked with one of its two copies there is left with one; lost=0 is the set checker's verdict")
			line, more, _ := strings.Cut(repl.String(), "\n")
			line += fmt.Sprintf(" in-bucket=%d (durable: not judged by copies)", durable)
			if more != "" {
				line += "\n" + more
			}
			rep.Add("replication", repl.Valid(), line, repl)
		} else {
			rep.Add("replication", false, "FAIL cannot read the ring: "+err.Error(), nil)
		}
	} else {
		rep.Add("replication", false, "FAIL no leader to read the ring from", nil)
	}

	if len(nem.crashes) > 0 {
		cr := check.CheckCrashRecovery(hist, nem.crashes)
		rep.Add("crash-recovery", cr.Valid(), cr.String(), cr)
	}
	if len(nem.voterDeaths) > 0 {
		vd := check.CheckVoterDeaths(nem.voterDeaths, sc.VoterReplaceAfter+voterReplaceSlack)
		rep.Add("voters", vd.Valid(), vd.String(), vd)
	}
	if len(nem.walRestarts) > 0 || sc.OneReplicaLosesData {
		wr := check.CheckWALRestarts(nem.walRestarts)
		rep.Add("wal-restart", wr.Valid(), wr.String(), wr)
	}

	live := check.CheckLiveness(healAt, leaderAt, writeAt, convergedAt, true, sc.Recovery)
	live.Why = why
	rep.Add("liveness", live.Valid(), live.String(), live)

	// Stop everything, then look for crashes and read every member's Raft log from disk.
	for _, n := range c.Nodes {
		n.Kill()
	}
	var crashes []string
	for _, n := range c.Nodes {
		b, _ := os.ReadFile(n.LogPath)
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, "panic:") || strings.HasPrefix(l, "fatal error:") {
				crashes = append(crashes, n.ID+": "+l)
			}
		}
	}
	rep.Add("crashes", len(crashes) == 0, fmt.Sprintf("%s processes-that-panicked=%d %v", passFail(len(crashes) == 0), len(crashes), firstN(crashes, 3)), nil)
	if sc.Handover {
		stale := staleRingPushes(c, start)
		rep.Add("stale-ring", len(stale) == 0, fmt.Sprintf("%s pushes-placed-with-replication-factor-1=%d %v", passFail(len(stale) == 0), len(stale), firstN(stale, 3)), nil)
	}
	var members []faulttest.LogMember
	for _, n := range c.Nodes {
		members = append(members, faulttest.LogMember{ID: n.ID, DataDir: n.DataDir})
	}
	logs, replays := rep.CheckLogs(members, filepath.Join(dir, "scratch"), lw.Observations(), !convergedAt.IsZero())
	// Checker 6 in every scenario: outside the hand-over family there is no signal, so any leave
	// found in the log fails it.
	ackedSet := map[check.SampleID]bool{}
	for _, wr := range hist {
		if wr.Outcome == check.OutcomeOK {
			ackedSet[wr.ID] = true
		}
	}
	ho := check.CheckHandovers(logs, roll.records, func(id check.SampleID) bool { return ackedSet[id] },
		func(id check.SampleID) bool { return inBucket[id] })
	rep.Add("handover", ho.Valid(), ho.String(), ho)
	if sc.Handover {
		ok, summary := handoverFaultsFired(sc.Faults, roll.fired)
		rep.Add("handover-faults", ok, summary, roll.fired)
	}
	// Checker 5: every node's recorded ring commands and the harness's reads, after every process
	// is gone (no history line is still being written).
	var histories []string
	for _, n := range c.Nodes {
		histories = append(histories, ringHistoryPath(dir, n.ID))
	}
	lin := ringhist.Check(histories, reads, replays, dir)
	rep.Add("linearizable", lin.Valid(), lin.String(), lin)

	// Figures.
	rep.Faults = append(nem.faults, roll.faults...)
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
	rep.Throughput = faulttest.ThroughputOf(hist, start, rep.Faults, healAt)
	rep.Elections, rep.Unprovoked = lw.Elections(rep.Faults)
	rep.Wall = time.Since(wall)
	if !rep.Valid() {
		w.mu.Lock()
		env.Logf("push failures: %v", w.fails)
		w.mu.Unlock()
		_ = faulttest.WriteHistory(filepath.Join(dir, "history.txt"), hist, start)
		return keep("scenario " + sc.Name + " failed")
	}
	os.RemoveAll(dir)
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

func waitFor(ctx context.Context, d time.Duration, cond func() bool) error {
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			return fmt.Errorf("not within %v", d)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	return nil
}

// probe pushes one sample of writer id (the liveness probe) and reports whether it was acked.
func (w *Writer) probe(ctx context.Context, id int, seq uint64) bool {
	for _, n := range w.c.Nodes {
		if !n.Running() {
			continue
		}
		wr := check.Write{ID: check.SampleID{Writer: id, Seq: seq}, Invoke: time.Now()}
		req := writeRequest(id, seq, w.t0)
		code, _, err := w.push(ctx, n.HTTPAddr, req)
		wr.Return = time.Now()
		switch {
		case err == nil && code/100 == 2:
			wr.Outcome = check.OutcomeOK
		case err == nil && code/100 == 4:
			wr.Outcome = check.OutcomeFail
		}
		w.mu.Lock()
		w.hist = append(w.hist, wr)
		w.mu.Unlock()
		return wr.Outcome == check.OutcomeOK
	}
	return false
}

// Converged reports whether every node is up, the ring is healthy and every node has applied at
// least the leader's commit index as it was when the check began (the nodes' own heartbeats keep
// the log moving, so "equal indexes" would be a race).
func (c *Cluster) Converged(ctx context.Context) (bool, string) {
	if ok, why := c.Healthy(ctx); !ok {
		return false, why
	}
	l := c.Leader(ctx)
	if l < 0 {
		return false, "no leader"
	}
	lst, err := c.Status(ctx, l)
	if err != nil {
		return false, err.Error()
	}
	want := lst.GetCommitIndex()
	// A follower learns a commit index with the next append: give them a few heartbeats.
	var why string
	err = waitFor(ctx, 5*time.Second, func() bool {
		for i := range c.Nodes {
			st, err := c.Status(ctx, i)
			if err != nil {
				why = err.Error()
				return false
			}
			if st.GetAppliedIndex() < want {
				why = fmt.Sprintf("%s applied %d, leader committed %d", c.Nodes[i].ID, st.GetAppliedIndex(), want)
				return false
			}
		}
		return true
	})
	return err == nil, why
}

// leaderWatch polls every node's Raft status and records who claimed leadership in which term.
type leaderWatch struct {
	c     *Cluster
	start time.Time
	faulttest.Leaders
}

func (lw *leaderWatch) run(ctx context.Context) {
	for ctx.Err() == nil {
		for i, n := range lw.c.Nodes {
			if !n.Running() || n.Paused() {
				continue
			}
			st, err := lw.c.Status(ctx, i)
			if err != nil || st.GetState() != "Leader" {
				continue
			}
			lw.Saw(st.GetTerm(), n.ID, time.Since(lw.start))
		}
		select {
		case <-ctx.Done():
		case <-time.After(250 * time.Millisecond):
		}
	}
}
