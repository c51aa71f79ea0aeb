package sim

import (
	"context"
	"math/rand/v2"
	"time"

	"github.com/hashicorp/raft"

	"github.com/raftingest/raftingest/faulttest"
)

// step is one scheduled fault: kind, when (from the start of the run) and for how long.
type step struct {
	kind string
	at   time.Duration
	dur  time.Duration
}

// schedule draws the fault schedule of a run from its seed: after a calm start of 3s, faults of
// 0.5–8s separated by 0.5–4s of calm, until 2s before the end of the workload.
func schedule(cfg Config) []step {
	rng := newRand(cfg.Seed, 1)
	var out []step
	if len(cfg.Faults) == 0 {
		return nil
	}
	for t := 3 * time.Second; ; {
		d := time.Duration(500+rng.IntN(7500)) * time.Millisecond
		if t+d > cfg.Workload-2*time.Second {
			return out
		}
		out = append(out, step{kind: cfg.Faults[rng.IntN(len(cfg.Faults))], at: t, dur: d})
		t += d + time.Duration(500+rng.IntN(3500))*time.Millisecond
	}
}

func (c *cluster) nemesis(ctx context.Context, steps []step) {
	rng := newRand(c.cfg.Seed, 2)
	for _, s := range steps {
		sleep(ctx, time.Until(c.start.Add(s.at)))
		if ctx.Err() != nil {
			return
		}
		c.inject(ctx, s, rng)
	}
}

func (c *cluster) beginFault(kind string, targets []int, note string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	var names []string
	for _, t := range targets {
		names = append(names, string(c.nodes[t].id))
	}
	c.faults = append(c.faults, faulttest.FaultWindow{Kind: kind, Targets: names, Start: time.Since(c.start), Note: note})
	c.active++
	return len(c.faults) - 1
}

func (c *cluster) endFault(i int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.faults[i].End = time.Since(c.start)
	c.active--
	c.lastEnd = time.Now()
}

func (c *cluster) leaderIdx(rng *rand.Rand) int {
	if l, ok := c.leader(); ok {
		return l.n.idx
	}
	return rng.IntN(len(c.nodes))
}

func (c *cluster) others(x ...int) []int {
	var out []int
	for i := range c.nodes {
		skip := false
		for _, y := range x {
			skip = skip || i == y
		}
		if !skip {
			out = append(out, i)
		}
	}
	return out
}

// inject applies one fault, waits its duration and heals it.
func (c *cluster) inject(ctx context.Context, s step, rng *rand.Rand) {
	n := len(c.nodes)
	var fi int
	heal := c.healNet
	switch s.kind {
	case FaultIsolateOne, FaultIsolateLeader:
		x := rng.IntN(n)
		if s.kind == FaultIsolateLeader {
			x = c.leaderIdx(rng)
		}
		fi = c.beginFault(s.kind, []int{x}, "")
		c.cut([]int{x}, c.others(x), false)
	case FaultSplit:
		perm := rng.Perm(n)
		minority := perm[:1+rng.IntN((n-1)/2)]
		fi = c.beginFault(s.kind, minority, "minority cut from majority")
		c.cut(minority, c.others(minority...), false)
	case FaultOneWay:
		x := c.leaderIdx(rng)
		fi = c.beginFault(s.kind, []int{x}, "cannot send, can receive")
		c.cut([]int{x}, c.others(x), true)
	case FaultBridge:
		perm := rng.Perm(n)
		bridge, a, b := perm[0], perm[1:1+(n-1)/2], perm[1+(n-1)/2:]
		fi = c.beginFault(s.kind, []int{bridge}, "the bridge node sees both halves")
		c.cut(a, b, false)
	case FaultRestartOne, FaultRestartLeader:
		x := rng.IntN(n)
		if s.kind == FaultRestartLeader {
			x = c.leaderIdx(rng)
		}
		fi = c.beginFault(s.kind, []int{x}, "shut down, restarted from its stores")
		c.stopNode(c.nodes[x])
		heal = func() { c.startNode(c.nodes[x]) }
	case FaultRestartAll:
		fi = c.beginFault(s.kind, c.others(), "every node down, then all restarted")
		for _, nd := range c.nodes {
			c.stopNode(nd)
		}
		heal = func() {
			for _, nd := range c.nodes {
				c.startNode(nd)
			}
		}
	case FaultLeaderTransfer:
		x := c.leaderIdx(rng)
		fi = c.beginFault(s.kind, []int{x}, "leadership transferred away")
		if l, ok := c.leader(); ok {
			_ = l.r.LeadershipTransfer().Error()
		}
		heal = func() {}
	case FaultSnapshotIsolate:
		x := rng.IntN(n)
		fi = c.beginFault(s.kind, []int{x}, "isolated while the others compact their logs")
		c.cut([]int{x}, c.others(x), false)
		sleep(ctx, s.dur/2)
		for _, i := range c.running() {
			if i.n.idx != x {
				_ = i.r.Snapshot().Error() // ErrNothingNewToSnapshot is fine
			}
		}
		s.dur -= s.dur / 2
	case FaultRemoveRejoin:
		// A follower is shut down and removed from the configuration; its stores are wiped (a
		// removed member must not rejoin with its old Raft state) and it is added back as a voter.
		x := rng.IntN(n)
		if l := c.leaderIdx(rng); l == x {
			x = (x + 1) % n
		}
		fi = c.beginFault(s.kind, []int{x}, "removed from the configuration, wiped, added back")
		c.stopNode(c.nodes[x])
		if l, ok := c.leader(); ok {
			_ = l.r.RemoveServer(c.nodes[x].id, 0, applyTimeout).Error() // the outcome may be unknown
		}
		heal = func() { c.rejoin(c.nodes[x]) }
	default:
		panic("sim: unknown fault " + s.kind)
	}
	sleep(ctx, s.dur)
	heal()
	c.endFault(fi)
}

// restartStopped starts every node that is down (the final heal).
func (c *cluster) restartStopped() {
	for _, n := range c.nodes {
		c.mu.Lock()
		down := n.r == nil
		c.mu.Unlock()
		if down {
			c.startNode(n)
		}
	}
}

// rejoin starts a node that a remove-rejoin fault shut down: as it was when the configuration still
// lists it (the removal failed), else with wiped stores, added back as a voter.
func (c *cluster) rejoin(nd *node) {
	listed := true
	for range 20 {
		if l, ok := c.leader(); ok {
			f := l.r.GetConfiguration()
			if f.Error() == nil {
				listed = false
				for _, s := range f.Configuration().Servers {
					listed = listed || s.ID == nd.id
				}
				break
			}
		}
		time.Sleep(250 * time.Millisecond)
	}
	if listed {
		c.startNode(nd)
		return
	}
	nd.store, nd.snaps = raft.NewInmemStore(), raft.NewInmemSnapshotStore()
	c.startNode(nd)
	for range 20 {
		if l, ok := c.leader(); ok && l.r.AddVoter(nd.id, nd.addr, 0, applyTimeout).Error() == nil {
			return
		}
		time.Sleep(500 * time.Millisecond)
	}
}
