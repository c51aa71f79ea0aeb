package inproc

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"time"

	"github.com/raftingest/raftingest/faulttest"
)

// Fault kinds of the in-process tier.
const (
	LatencyLinks  = "latency-links"  // 50–300ms ± jitter on random directed links
	SlowLeader    = "slow-leader"    // 150–300ms ± jitter on every link to and from the leader
	Bandwidth     = "bandwidth"      // the leader's outgoing bytes limited to 16–64 KB/s
	IsolateOne    = "isolate-one"    // one node cut off, silently (bytes dropped, dials hang)
	IsolateLeader = "isolate-leader" // the leader cut off, silently
	RefuseLeader  = "refuse-leader"  // the leader cut off, fail fast (dials refused, connections reset)
	RefuseOne     = "refuse-one"     // one node cut off, fail fast
	OneWayLeader  = "one-way-leader" // the leader's dials to the others refused; theirs to it work
	StopOne       = "stop-one"       // one node's Run cancelled, restarted at the heal
	StopLeader    = "stop-leader"    // the leader stopped, restarted at the heal
	StopAll       = "stop-all"       // every node stopped at once, all restarted at the heal
	ClockSkew     = "clock-skew"     // every node's clock off by its own ±2–20s, the leader's included
	ClockJumpFwd  = "clock-jump-forward"
	ClockJumpBack = "clock-jump-back"
)

// Fault families.
var (
	LatencyFaults   = []string{LatencyLinks, SlowLeader}
	PartitionFaults = []string{IsolateOne, IsolateLeader, RefuseLeader, OneWayLeader}
	RestartFaults   = []string{StopOne, StopLeader, StopAll}
	ClockFaults     = []string{ClockSkew, ClockJumpFwd, ClockJumpBack}
	// AllFaults is every kind, for the mixed scenarios.
	AllFaults = []string{LatencyLinks, SlowLeader, Bandwidth, IsolateOne, IsolateLeader, RefuseLeader, RefuseOne,
		OneWayLeader, StopOne, StopLeader, StopAll, ClockSkew, ClockJumpFwd, ClockJumpBack}
)

// Clock jumps: forward past ringstate.MaxRingTimeGap (30s) and past the ring heartbeat timeout, and
// backward by as much as the heartbeat timeout twice over.
const (
	jumpForward  = 90 * time.Second
	jumpBackward = -30 * time.Second
)

type step struct {
	kind string
	at   time.Duration
	dur  time.Duration
}

// schedule draws the faults of a run from its seed: a calm first stretch, then faults of
// minDur..2*minDur with calm gaps between them, ending before the workload does so that the final
// stretch is calm again. The kinds are dealt from a seeded shuffle, every kind once before any
// repeats, so a short run still meets each of them.
func schedule(seed int64, kinds []string, workload time.Duration) []step {
	if len(kinds) == 0 {
		return nil
	}
	rng := rand.New(rand.NewPCG(uint64(seed), 1))
	calm := min(2*time.Second, workload/6)
	minDur := max(1200*time.Millisecond, workload/12)
	var deck []string
	var out []step
	for t := calm; ; {
		d := minDur + time.Duration(rng.Int64N(int64(minDur)))
		if t+d > workload-calm {
			return out
		}
		if len(deck) == 0 {
			deck = append(deck, kinds...)
			rng.Shuffle(len(deck), func(i, j int) { deck[i], deck[j] = deck[j], deck[i] })
		}
		out = append(out, step{kind: deck[0], at: t, dur: d})
		deck = deck[1:]
		t += d + 300*time.Millisecond + time.Duration(rng.Int64N(int64(700*time.Millisecond)))
	}
}

type nemesis struct {
	c     *Cluster
	start time.Time
	rng   *rand.Rand
	logf  func(string, ...any)

	mu     sync.Mutex
	faults []faulttest.FaultWindow
}

func (n *nemesis) record(fw faulttest.FaultWindow) {
	n.mu.Lock()
	n.faults = append(n.faults, fw)
	n.mu.Unlock()
}

// windows returns the fault windows so far.
func (n *nemesis) windows() []faulttest.FaultWindow {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]faulttest.FaultWindow(nil), n.faults...)
}

// intN draws from the nemesis' seeded source; safe for the concurrent steps of a Fixed schedule.
func (n *nemesis) intN(k int) int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.rng.IntN(k)
}

func (n *nemesis) pick(leader bool) int {
	if leader {
		if l := n.c.Leader(); l >= 0 {
			return l
		}
	}
	return n.intN(len(n.c.Nodes))
}

func (n *nemesis) run(ctx context.Context, steps []step) {
	for _, s := range steps {
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Until(n.start.Add(s.at))):
		}
		n.inject(ctx, s)
	}
}

// inject applies one fault, waits its duration (or the end of the workload), heals it and records
// the window.
func (n *nemesis) inject(ctx context.Context, s step) {
	c := n.c
	fw := faulttest.FaultWindow{Kind: s.kind, Start: time.Since(n.start)}
	var notes []string
	note := func(format string, args ...any) { notes = append(notes, fmt.Sprintf(format, args...)) }
	heal := func() {}
	all := len(c.Nodes)
	isolate := func(x int, mode DialMode) {
		fw.Targets = []string{c.Nodes[x].ID}
		for j := range all {
			if j == x {
				continue
			}
			if mode == DialHang {
				if err := c.Net.Drop(x, j); err != nil {
					note("error: %v", err)
				}
				if err := c.Net.Drop(j, x); err != nil {
					note("error: %v", err)
				}
			} else {
				c.Net.SetMode(x, j, DialRefuse)
				c.Net.SetMode(j, x, DialRefuse)
			}
		}
		heal = func() {
			for j := range all {
				if j != x {
					c.Net.HealLink(x, j)
				}
			}
		}
	}
	switch s.kind {
	case LatencyLinks:
		type pair struct{ a, b int }
		var pairs []pair
		for k := 0; k < 1+n.intN(all); k++ {
			a := n.intN(all)
			b := (a + 1 + n.intN(all-1)) % all
			lat, jit := 50+n.intN(251), 10+n.intN(41)
			if err := c.Net.Latency(a, b, lat, jit); err != nil {
				note("error: %v", err)
			}
			pairs = append(pairs, pair{a, b})
			fw.Targets = append(fw.Targets, fmt.Sprintf("%s>%s", c.Nodes[a].ID, c.Nodes[b].ID))
			note("%s→%s %d±%dms", c.Nodes[a].ID, c.Nodes[b].ID, lat, jit)
		}
		heal = func() {
			for _, p := range pairs {
				c.Net.HealLink(p.a, p.b)
			}
		}
	case SlowLeader:
		x := n.pick(true)
		fw.Targets = []string{c.Nodes[x].ID}
		lat, jit := 150+n.intN(151), 20+n.intN(31)
		note("%d±%dms both ways", lat, jit)
		for j := range all {
			if j != x {
				for _, p := range [][2]int{{x, j}, {j, x}} {
					if err := c.Net.Latency(p[0], p[1], lat, jit); err != nil {
						note("error: %v", err)
					}
				}
			}
		}
		heal = func() {
			for j := range all {
				if j != x {
					c.Net.HealLink(x, j)
				}
			}
		}
	case Bandwidth:
		x := n.pick(true)
		fw.Targets = []string{c.Nodes[x].ID}
		rate := 16 << n.intN(3)
		note("%d KB/s out of the leader", rate)
		for j := range all {
			if j != x {
				if err := c.Net.Bandwidth(x, j, rate); err != nil {
					note("error: %v", err)
				}
			}
		}
		heal = func() {
			for j := range all {
				if j != x {
					c.Net.HealLink(x, j)
				}
			}
		}
	case IsolateOne:
		isolate(n.pick(false), DialHang)
	case IsolateLeader:
		isolate(n.pick(true), DialHang)
	case RefuseOne:
		isolate(n.pick(false), DialRefuse)
	case RefuseLeader:
		isolate(n.pick(true), DialRefuse)
	case OneWayLeader:
		x := n.pick(true)
		fw.Targets = []string{c.Nodes[x].ID}
		note("dials from %s refused, its open connections reset; the others' dials to it work", c.Nodes[x].ID)
		for j := range all {
			if j != x {
				c.Net.SetMode(x, j, DialRefuse)
			}
		}
		heal = func() {
			for j := range all {
				if j != x {
					c.Net.SetMode(x, j, DialOK)
				}
			}
		}
	case StopOne, StopLeader:
		x := n.pick(s.kind == StopLeader)
		fw.Targets = []string{c.Nodes[x].ID}
		t := time.Now()
		if err := c.Stop(x); err != nil {
			note("error: %v", err)
		}
		note("stopped in %s", time.Since(t).Round(time.Millisecond))
		heal = func() {
			if err := c.Start(x); err != nil {
				note("error: restart: %v", err)
			}
		}
	case StopAll:
		for _, nd := range c.Nodes {
			fw.Targets = append(fw.Targets, nd.ID)
		}
		var wg sync.WaitGroup
		var mu sync.Mutex
		for i := range all {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := c.Stop(i); err != nil {
					mu.Lock()
					note("error: %v", err)
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		heal = func() {
			for i := range all {
				if err := c.Start(i); err != nil {
					note("error: restart %s: %v", c.Nodes[i].ID, err)
				}
			}
		}
	case ClockSkew:
		var offs []string
		for _, nd := range c.Nodes {
			off := time.Duration(2000+n.intN(18001)) * time.Millisecond
			if n.intN(2) == 0 {
				off = -off
			}
			nd.Clock.Set(off)
			fw.Targets = append(fw.Targets, nd.ID)
			offs = append(offs, fmt.Sprintf("%s%+.1fs", nd.ID, off.Seconds()))
		}
		note("offsets %s", strings.Join(offs, " "))
		heal = func() {
			for _, nd := range c.Nodes {
				nd.Clock.Set(0)
			}
		}
	case ClockJumpFwd, ClockJumpBack:
		x := n.pick(true)
		fw.Targets = []string{c.Nodes[x].ID}
		j := jumpForward
		if s.kind == ClockJumpBack {
			j = jumpBackward
		}
		c.Nodes[x].Clock.Set(j)
		note("the leader's clock stepped %+v, stepped back at the heal", j)
		heal = func() { c.Nodes[x].Clock.Set(0) }
	default:
		note("error: unknown fault kind %q", s.kind)
	}
	select {
	case <-ctx.Done():
	case <-time.After(s.dur):
	}
	heal()
	fw.End = time.Since(n.start)
	fw.Note = strings.Join(notes, "; ")
	n.logf("fault %s %v [%s..%s] %s", fw.Kind, fw.Targets, fw.Start.Round(time.Millisecond), fw.End.Round(time.Millisecond), fw.Note)
	n.record(fw)
}
