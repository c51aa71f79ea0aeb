package sim

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/raftingest/raftingest/faulttest"
	"github.com/raftingest/raftingest/faulttest/check"
	"github.com/raftingest/raftingest/raftfsm"
)

func (c *cluster) run() *faulttest.Report {
	rep := &faulttest.Report{Scenario: c.cfg.Scenario, Tier: "sim", Seed: c.cfg.Seed}
	steps := schedule(c.cfg)

	obsCtx, stopObs := context.WithCancel(context.Background())
	var obsWG sync.WaitGroup
	obsWG.Add(1)
	go func() { defer obsWG.Done(); c.watchLeaders(obsCtx) }()

	ctx, stop := context.WithTimeout(context.Background(), c.cfg.Workload)
	var wg sync.WaitGroup
	for i := range c.cfg.Clients {
		wg.Add(1)
		go func() { defer wg.Done(); c.client(ctx, i) }()
	}
	wg.Add(1)
	go func() { defer wg.Done(); c.nemesis(ctx, steps) }()
	wg.Wait()
	stop()

	// The final heal: every link back, every node up; then measure recovery.
	c.healNet()
	c.restartStopped()
	healAt := time.Now()
	var leaderAt, writeAt, convergedAt time.Time
	deadline := healAt.Add(c.cfg.Recovery)
	for time.Now().Before(deadline) {
		l, ok := c.leader()
		if !ok {
			time.Sleep(20 * time.Millisecond)
			continue
		}
		if leaderAt.IsZero() {
			leaderAt = time.Now()
		}
		if writeAt.IsZero() {
			if l.r.Barrier(applyTimeout).Error() != nil {
				continue
			}
			writeAt = time.Now()
		}
		if c.converged(l) {
			convergedAt = time.Now()
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	live := c.liveObservations()
	// The final read, as a client of its own.
	var finalErr error
	for range 5 {
		if _, finalErr = c.read(c.cfg.Clients); finalErr == nil {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	stopObs()
	obsWG.Wait()
	c.shutdown()

	// Gather the logs and judge.
	var logs []*check.MemberLog
	for _, n := range c.nodes {
		ml, err := check.ReadLogStore(string(n.id), n.store)
		if err == nil {
			err = c.baseFromSnapshot(n, ml)
		}
		if err != nil {
			rep.Add("logs", false, fmt.Sprintf("FAIL reading %s's log: %v", n.id, err), nil)
			continue
		}
		ml.Commit = commitOf(ml, live)
		logs = append(logs, ml)
	}
	tok, replays := check.CheckTokens(logs)
	rep.Add("tokens", tok.Valid(), tok.String(), tok)

	c.obsMu.Lock()
	var leaders []check.LeaderObservation
	for term, m := range c.leaders {
		leaders = append(leaders, check.LeaderObservation{Term: term, Member: m})
	}
	leaders = append(leaders, c.twoLead...)
	applied := append(c.applied, live...)
	c.obsMu.Unlock()
	conv := check.CheckConvergence(logs, replays, applied, leaders, !convergedAt.IsZero())
	rep.Add("convergence", conv.Valid(), conv.String(), conv)

	// Request ids resolve from what the replicas applied (complete even when every log was
	// compacted), cross-checked against the logs: a log's outcome must agree with it.
	committed := map[string]check.Committed{}
	c.obsMu.Lock()
	for id, o := range c.committed {
		committed[id] = o
	}
	c.obsMu.Unlock()
	var disagree []string
	for _, rp := range replays {
		for id, o := range rp.Outcomes {
			if a, ok := committed[id]; ok && a.Code != o.Code && len(disagree) < 5 {
				disagree = append(disagree, fmt.Sprintf("%s: applied with code %d, %s's log replays to %d", id, a.Code, rp.Member, o.Code))
			}
		}
	}
	if len(disagree) > 0 {
		rep.Add("outcomes", false, fmt.Sprintf("FAIL request outcomes differ between replicas and logs: %v", disagree), nil)
	}
	for _, rp := range replays {
		for id, o := range rp.Outcomes {
			if prev, ok := committed[id]; !ok || o.Index < prev.Index {
				c.obsMu.Lock()
				o.At = c.appliedAt[o.Index] // zero for entries applied before a restart of every node
				c.obsMu.Unlock()
				committed[id] = o
			}
		}
	}
	c.histMu.Lock()
	hist := c.hist
	c.histMu.Unlock()
	keep := c.cfg.KeepDir
	lin := check.CheckRingLinearizable(hist, committed, "", 60*time.Second)
	live8 := check.CheckLiveness(healAt, leaderAt, writeAt, convergedAt, true, c.cfg.Recovery)
	if finalErr != nil {
		live8.Converged = -1
	}
	failed := !tok.Valid() || !conv.Valid() || !lin.Valid() || !live8.Valid() || !rep.Valid()
	if failed {
		if keep == "" {
			keep, _ = faulttest.KeepDir(c.cfg.Scenario, c.cfg.Seed)
		}
		if !lin.Valid() {
			lin = check.CheckRingLinearizable(hist, committed, keep, 60*time.Second)
		}
		c.keep(keep, logs)
		rep.Kept = keep
	}
	rep.Add("linearizable", lin.Valid(), lin.String(), lin)
	rep.Add("liveness", live8.Valid(), live8.String(), live8)
	rep.Skip("set", "samples are not written in the simulated tier (ring only); see the process tier")

	// Figures.
	c.mu.Lock()
	rep.Faults = append(rep.Faults, c.faults...)
	c.mu.Unlock()
	var firstFault, lastFault time.Duration
	if len(rep.Faults) > 0 {
		firstFault, lastFault = rep.Faults[0].Start, rep.Faults[len(rep.Faults)-1].End
	}
	var before, during, after int
	for _, op := range hist {
		if op.Read {
			continue
		}
		rep.Ops.Attempted++
		switch {
		case op.Unknown:
			rep.Ops.Unknown++
		case op.Code == 0:
			rep.Ops.Acked++
		default:
			rep.Ops.Failed++ // refused by the ring: a definite outcome
		}
		if op.Unknown {
			continue
		}
		switch at := op.Return.Sub(c.start); {
		case len(rep.Faults) == 0 || at < firstFault:
			before++
		case at <= lastFault:
			during++
		default:
			after++
		}
	}
	rate := func(n int, d time.Duration) float64 {
		if d <= 0 {
			return 0
		}
		return float64(n) / d.Seconds()
	}
	if len(rep.Faults) == 0 {
		rep.Throughput.Before = rate(before, c.cfg.Workload)
	} else {
		rep.Throughput.Before = rate(before, firstFault)
		rep.Throughput.During = rate(during, lastFault-firstFault)
		rep.Throughput.After = rate(after, healAt.Sub(c.start)-lastFault)
	}
	for _, s := range c.sortedLeaders() {
		rep.Elections++
		if s.unprovoked {
			rep.Unprovoked++
		}
	}
	if rep.Kept != "" {
		_ = rep.WriteFiles(rep.Kept)
	}
	return rep
}

// converged reports whether every node applied everything the leader has and holds the same ring.
func (c *cluster) converged(l inc) bool {
	last := l.r.LastIndex()
	want := check.RingHash(l.fsm.Ring())
	rs := c.running()
	if len(rs) != len(c.nodes) {
		return false
	}
	for _, i := range rs {
		if i.r.AppliedIndex() < last || check.RingHash(i.fsm.Ring()) != want {
			return false
		}
	}
	return true
}

// liveObservations is every running FSM's state hash at its applied index.
func (c *cluster) liveObservations() []check.FSMObservation {
	var out []check.FSMObservation
	for _, i := range c.running() {
		out = append(out, check.FSMObservation{Member: string(i.n.id), Applied: i.fsm.AppliedIndex(),
			Hash: check.StateHash(i.fsm.Ring())})
	}
	return out
}

// commitOf is the highest index the member is known to have applied (so committed).
func commitOf(ml *check.MemberLog, live []check.FSMObservation) uint64 {
	for _, o := range live {
		if o.Member == ml.Member {
			return o.Applied
		}
	}
	return 0
}

// baseFromSnapshot gives a log the ring of the node's newest snapshot, when it has one.
func (c *cluster) baseFromSnapshot(n *node, ml *check.MemberLog) error {
	// Replay from the newest snapshot when there is one (see check.ReadBoltLog for why).
	need := ml.NeedsBase()
	metas, err := n.snaps.List()
	if err != nil || len(metas) == 0 || metas[0].Index < need {
		if need == 0 {
			return nil
		}
		return fmt.Errorf("log is contiguous only from %d and there is no snapshot to replay it from: %v", need+1, err)
	}
	_, rc, err := n.snaps.Open(metas[0].ID)
	if err != nil {
		return err
	}
	defer rc.Close()
	f := raftfsm.NewFSM(nil)
	if err := f.Restore(rc); err != nil {
		return err
	}
	ml.Base, ml.BaseIndex = f.Ring(), metas[0].Index
	return nil
}
