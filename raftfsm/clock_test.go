package raftfsm

// Ring time under clock skew and jumps. Unit and property tests of the leader's stamping clock
// (ringClock), the FSM's use of the stamp, and real 3-node clusters (Raft over loopback TCP, bbolt,
// gRPC forwarding, 1s Raft timeouts) whose nodes' clocks (Config.Clock) are skewed and jumped while
// every member heartbeats. Every cluster test ends by replaying a node's whole Raft log through
// DecodeLog and ringstate and checking every ring at every index: ring time never goes backwards,
// no heartbeat is after ring time (no negative age), heartbeat ages stay within the documented
// bound, and the replay reproduces the node's FSM byte for byte.

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"pgregory.net/rapid"

	"github.com/raftingest/raftingest/ringstate"
)

// ---- ringClock ----

// TestRingClock_FollowsForwardNeverBackward: each rule of ringClock, in order.
func TestRingClock_FollowsForwardNeverBackward(t *testing.T) {
	t0 := time.UnixMilli(1_700_000_000_000)
	var c ringClock
	steps := []struct {
		why     string
		at      time.Time
		floorMs int64
		want    int64
	}{
		{"the first stamp is the clock's reading", t0, 0, t0.UnixMilli()},
		{"time passes: the stamp follows", t0.Add(time.Second), 0, t0.UnixMilli() + 1000},
		{"a forward jump passes through", t0.Add(2 * time.Minute), 0, t0.UnixMilli() + 120_000},
		{"a backward jump is not followed: the stamp stays", t0.Add(time.Minute), 0, t0.UnixMilli() + 120_000},
		{"after it, the stamp advances at the clock's rate", t0.Add(time.Minute + 500*time.Millisecond), 0, t0.UnixMilli() + 120_500},
		{"a floor above the stamp (ring time from a leader ahead) lifts it", t0.Add(time.Minute + time.Second), t0.UnixMilli() + 200_000, t0.UnixMilli() + 200_000},
		{"and the stamp goes on from the floor", t0.Add(time.Minute + 3*time.Second), t0.UnixMilli() + 200_000, t0.UnixMilli() + 202_000},
		{"a floor below the stamp changes nothing", t0.Add(time.Minute + 4*time.Second), 5, t0.UnixMilli() + 203_000},
		{"the same reading twice gives the same stamp", t0.Add(time.Minute + 4*time.Second), 0, t0.UnixMilli() + 203_000},
	}
	for _, s := range steps {
		if got := c.stamp(s.at, s.floorMs); got != s.want {
			t.Fatalf("%s: stamp %d, want %d (off by %dms)", s.why, got, s.want, got-s.want)
		}
	}
}

// TestRingClock_ExtremeReadings: absurd clocks (zero time, far future) never wrap a stamp or make it
// decrease.
func TestRingClock_ExtremeReadings(t *testing.T) {
	var c ringClock
	last := int64(math.MinInt64)
	for _, at := range []time.Time{{}, time.Unix(1<<62, 0), time.Unix(-1<<62, 0), time.UnixMilli(1), time.Unix(1<<62, 0)} {
		s := c.stamp(at, 0)
		if s < last || s < 0 {
			t.Fatalf("reading %v: stamp %d after %d", at, s, last)
		}
		last = s
	}
}

// TestRingClock_Property: over random readings (time passing, forward and backward jumps) and
// floors, stamps never decrease, are never below the floor, and between two readings without a
// backward jump and without a floor above the stamp they advance by exactly the clock's elapsed
// time.
func TestRingClock_Property(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		var c ringClock
		now := time.UnixMilli(rapid.Int64Range(0, 1<<45).Draw(t, "start"))
		floor := int64(0)
		var prevStamp int64
		var prevAt time.Time
		for i := range rapid.IntRange(1, 60).Draw(t, "steps") {
			step := time.Duration(rapid.Int64Range(-int64(time.Hour), int64(time.Hour)).Draw(t, "step")) / time.Millisecond * time.Millisecond
			now = now.Add(step)
			if rapid.Bool().Draw(t, "raise floor") {
				floor += rapid.Int64Range(0, 1<<40).Draw(t, "floor step")
			}
			s := c.stamp(now, floor)
			if s < floor {
				t.Fatalf("step %d: stamp %d below floor %d", i, s, floor)
			}
			if i > 0 {
				if s < prevStamp {
					t.Fatalf("step %d: stamp %d after %d", i, s, prevStamp)
				}
				if el := now.Sub(prevAt).Milliseconds(); el >= 0 && prevStamp+el >= floor && s != prevStamp+el {
					t.Fatalf("step %d: clock moved %dms, stamp moved %dms", i, el, s-prevStamp)
				}
			}
			prevStamp, prevAt = s, now
		}
	})
}

// ---- the FSM reads the stamp ----

// TestFSM_RingTimeFromStamp: a stamped entry is applied at its stamp, whatever AppendedAt says (the
// leader's clock is in the stamp; AppendedAt is hashicorp/raft's time.Now); unstamped entries keep
// using AppendedAt, so a log mixing both replays identically on every replica.
func TestFSM_RingTimeFromStamp(t *testing.T) {
	hb := must(EncodeCommand(ringstate.Command{Op: ringstate.OpHeartbeat, Member: "a"}))
	reg := must(EncodeCommand(ringstate.Command{Op: ringstate.OpRegister, Member: "a", RaftAddr: "127.0.0.1:1"}))
	log := []*raft.Log{
		{Index: 1, Type: raft.LogCommand, Data: reg, AppendedAt: time.UnixMilli(1000)},                          // old entry: 1000
		{Index: 2, Type: raft.LogCommand, Data: must(StampCommand(hb, 5000)), AppendedAt: time.UnixMilli(2000)}, // stamp wins: 5000
		{Index: 3, Type: raft.LogCommand, Data: hb, AppendedAt: time.UnixMilli(3000)},                           // behind: ring time stays 5000
		{Index: 4, Type: raft.LogCommand, Data: must(StampCommand(hb, 4000)), AppendedAt: time.UnixMilli(9000)}, // behind: stays 5000
		{Index: 5, Type: raft.LogCommand, Data: must(StampCommand(hb, 6000))},                                   // 6000
	}
	wantTime := []int64{1000, 5000, 5000, 5000, 6000}
	a, b := NewFSM(nil), NewFSM(nil)
	for i, l := range log {
		for _, f := range []*FSM{a, b} {
			if res := f.Apply(l).(*ApplyResult); res.Code != ringstate.CodeOK {
				t.Fatalf("entry %d: %+v", l.Index, res)
			}
		}
		r := a.Ring()
		m, _ := r.Member("a")
		if r.TimeMs() != wantTime[i] || m.HeartbeatMs != wantTime[i] {
			t.Fatalf("after entry %d: ring time %d, heartbeat %d; want both %d", l.Index, r.TimeMs(), m.HeartbeatMs, wantTime[i])
		}
	}
	if !bytes.Equal(snapshotBytes(t, a), snapshotBytes(t, b)) {
		t.Fatal("two replicas of one log differ")
	}
}

// ---- clusters with skewed clocks ----

// skewClock is a node's clock: the host's, plus an offset the test moves. Readings keep Go's
// monotonic clock, shifted by the offset, as time.Time.Add does.
type skewClock struct{ off atomic.Int64 }

func (c *skewClock) Now() time.Time { return time.Now().Add(time.Duration(c.off.Load())) }

func (c *skewClock) jump(d time.Duration) { c.off.Add(int64(d)) }

// clockCluster is a testCluster whose nodes each have a skewClock and whose members heartbeat every
// heartbeatEvery through their own node (followers forward), as the lifecycle does.
type clockCluster struct {
	*testCluster
	t      *testing.T
	clocks map[string]*skewClock
	nodes  map[string]*testNode

	stopAll chan struct{}
	mu      sync.Mutex
	stopOne map[string]chan struct{}
	wg      sync.WaitGroup
	once    sync.Once
}

const (
	heartbeatEvery = 100 * time.Millisecond
	// ringTimeout is -ring.heartbeat-timeout in these tests: the default.
	ringTimeout = time.Minute
)

// clockConfig is fastConfig with realistic Raft timeouts (the daemon's defaults).
func clockConfig() Config {
	c := fastConfig()
	d := DefaultConfig()
	c.HeartbeatTimeout, c.ElectionTimeout, c.CommitTimeout = d.HeartbeatTimeout, d.ElectionTimeout, d.CommitTimeout
	c.RingHeartbeatTimeout = ringTimeout
	c.SnapshotInterval = time.Hour // the end-of-test replay reads the whole log
	return c
}

// newClockCluster starts nodes n1..n<len(skews)> (n1 bootstraps; the others join through n1 as
// voters while there are fewer than maxVoters, else as non-voters), each with its clock skewed by
// skews[i], registers every member and starts the heartbeats.
func newClockCluster(t *testing.T, maxVoters int, skews ...time.Duration) *clockCluster {
	c := &clockCluster{testCluster: newCluster(t), t: t, clocks: map[string]*skewClock{}, nodes: map[string]*testNode{},
		stopAll: make(chan struct{}), stopOne: map[string]chan struct{}{}}
	c.cfg = clockConfig()
	c.cfg.MaxVoters = maxVoters
	for i, s := range skews {
		id := fmt.Sprintf("n%d", i+1)
		c.clocks[id] = &skewClock{}
		c.clocks[id].jump(s)
		c.cfg.Clock = c.clocks[id].Now
		if i == 0 {
			c.nodes[id] = c.bootstrap(id)
		} else {
			c.nodes[id], _ = c.join(id, c.nodes["n1"])
		}
	}
	c.cfg.Clock = nil
	t.Cleanup(c.stopHeartbeats) // registered after newCluster's: runs before the nodes stop
	i := 0
	for id := range c.nodes {
		c.stopOne[id] = make(chan struct{})
		c.wg.Add(1)
		// Spread the members' heartbeats over the period, as independent processes would be.
		go c.heartbeat(id, time.Duration(i)*heartbeatEvery/time.Duration(len(c.nodes)), c.stopOne[id])
		i++
	}
	// Every member has heartbeated since it registered: the ring is alive before any fault.
	if !poll(t, 10*time.Second, func() bool {
		for _, m := range c.nodes["n1"].node.Ring().Members() {
			if m.HeartbeatMs <= m.RegisteredMs {
				return false
			}
		}
		return true
	}) {
		t.Fatal("the members' heartbeats do not commit")
	}
	return c
}

// restart starts a stopped node again on its data dir, with its own clock.
func (c *clockCluster) restart(id string) {
	c.cfg.Clock = c.clocks[id].Now
	c.start(id, false)
	c.cfg.Clock = nil
}

// node returns id's running Node, or nil while it is stopped.
func (c *clockCluster) node(id string) *Node {
	c.testCluster.mu.Lock()
	defer c.testCluster.mu.Unlock()
	return c.nodes[id].node
}

// heartbeat commits a heartbeat of member id through its own node every heartbeatEvery, the first
// after phase, until stop. Failures (no leader, node stopped) are expected under the faults and
// simply retried next tick.
func (c *clockCluster) heartbeat(id string, phase time.Duration, stop chan struct{}) {
	defer c.wg.Done()
	select { // the phase offset of this member's heartbeats, not synchronization
	case <-stop:
		return
	case <-c.stopAll:
		return
	case <-time.After(phase):
	}
	tick := time.NewTicker(heartbeatEvery)
	defer tick.Stop()
	for {
		select {
		case <-stop:
			return
		case <-c.stopAll:
			return
		case <-tick.C:
		}
		if n := c.node(id); n != nil {
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			_, _ = n.Apply(ctx, ringstate.Command{Op: ringstate.OpHeartbeat, Member: ringstate.MemberID(id), RequestID: randomID()})
			cancel()
		}
	}
}

// silence stops member id's heartbeats: from now on it looks dead to the ring.
func (c *clockCluster) silence(id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if ch, ok := c.stopOne[id]; ok {
		close(ch)
		delete(c.stopOne, id)
	}
}

func (c *clockCluster) stopHeartbeats() {
	c.once.Do(func() { close(c.stopAll) })
	c.wg.Wait()
}

// ages returns every member's heartbeat age (ring time - heartbeat) in id's current ring.
func (c *clockCluster) ages(id string) map[string]time.Duration {
	n := c.node(id)
	if n == nil {
		return nil
	}
	r := n.Ring()
	out := map[string]time.Duration{}
	for _, m := range r.Members() {
		out[string(m.ID)] = time.Duration(r.TimeMs()-m.HeartbeatMs) * time.Millisecond
	}
	return out
}

// waitFresh waits until, on every running node, every member (but those in except) has a
// heartbeat age below d.
func (c *clockCluster) waitFresh(what string, d time.Duration, except ...string) {
	c.t.Helper()
	var why string
	if !poll(c.t, 15*time.Second, func() bool {
		for id := range c.nodes {
			ages := c.ages(id)
			if ages == nil {
				continue
			}
			if len(ages) != len(c.nodes) {
				why = fmt.Sprintf("%s's ring has %d members", id, len(ages))
				return false
			}
			for m, a := range ages {
				if a >= d && !contains(except, m) {
					why = fmt.Sprintf("on %s, %s's heartbeat is %s old", id, m, a)
					return false
				}
			}
		}
		return true
	}) {
		c.t.Fatalf("%s: heartbeats not fresh (< %s) on every node: %s", what, d, why)
	}
}

func contains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// waitRingTime waits until every running node's ring time is at least atLeastMs.
func (c *clockCluster) waitRingTime(what string, atLeastMs int64, within time.Duration) {
	c.t.Helper()
	var why string
	if !poll(c.t, within, func() bool {
		for id := range c.nodes {
			if n := c.node(id); n != nil && n.Ring().TimeMs() < atLeastMs {
				why = fmt.Sprintf("%s's ring time is %dms short", id, atLeastMs-n.Ring().TimeMs())
				return false
			}
		}
		return true
	}) {
		c.t.Fatalf("%s: ring time did not reach %d within %s: %s", what, atLeastMs, within, why)
	}
}

// transferTo hands leadership to id.
func (c *clockCluster) transferTo(id string) {
	c.t.Helper()
	retry(c.t, "transfer leadership to "+id, func(ctx context.Context) error {
		if c.leader().id == id {
			return nil
		}
		_, err := c.leader().node.TransferLeadership(ctx, id)
		return err
	})
	if l := c.leader(); l.id != id {
		c.t.Fatalf("leadership went to %s, not %s", l.id, id)
	}
}

// replayStats is what the replay of a log saw over every index.
type replayStats struct {
	entries     int
	maxAge      time.Duration // largest heartbeat age of any member at any index
	maxAgeAt    uint64
	maxStep     time.Duration // largest step of ring time between consecutive command entries
	maxStepAt   uint64
	finalTimeMs int64
}

// replayAndCheck stops the heartbeats, lets every node apply the same index, then replays the
// whole Raft log of node id from index 1 through DecodeLog and ringstate (as FSM.Apply does) and
// checks every ring at every index: ring time never decreases, no heartbeat is after ring time, and
// every member is healthy by ringTimeout. The replay must reproduce id's FSM exactly.
func (c *clockCluster) replayAndCheck(id string) replayStats {
	c.t.Helper()
	c.stopHeartbeats()
	c.checkConsistent()
	n := c.node(id)
	first, _ := n.store.FirstIndex()
	if first > 1 {
		c.t.Fatalf("%s's log starts at %d: it was compacted, the replay cannot start from an empty ring", id, first)
	}
	applied := n.AppliedIndex()
	var st replayStats
	r := ringstate.New()
	for i := uint64(1); i <= applied; i++ {
		var l raft.Log
		if err := n.store.GetLog(i, &l); err != nil {
			c.t.Fatalf("%s: entry %d: %v", id, i, err)
		}
		if l.Type != raft.LogCommand {
			continue
		}
		cmd, nowMs, err := DecodeLog(&l, r.TimeMs())
		if err != nil {
			c.t.Fatalf("%s: entry %d does not decode: %v", id, i, err)
		}
		if l.Data[0] != StampedCommandVersion {
			c.t.Fatalf("%s: entry %d has version %d: a node proposed an unstamped command", id, i, l.Data[0])
		}
		prev := r.TimeMs()
		r, _, _ = r.Apply(cmd, nowMs)
		st.entries++
		if r.TimeMs() < prev {
			c.t.Fatalf("%s: ring time went back by %dms at entry %d", id, prev-r.TimeMs(), i)
		}
		if step := time.Duration(r.TimeMs()-prev) * time.Millisecond; prev > 0 && step > st.maxStep {
			st.maxStep, st.maxStepAt = step, i
		}
		for _, m := range r.Members() {
			age := time.Duration(r.TimeMs()-m.HeartbeatMs) * time.Millisecond
			if age < 0 {
				c.t.Fatalf("%s: entry %d: %s's heartbeat is %s in the future of ring time", id, i, m.ID, -age)
			}
			if !m.Healthy(r.TimeMs(), ringTimeout.Milliseconds()) {
				c.t.Fatalf("%s: entry %d: %s is UNHEALTHY (heartbeat %s old, timeout %s)", id, i, m.ID, age, ringTimeout)
			}
			if age > st.maxAge {
				st.maxAge, st.maxAgeAt = age, i
			}
		}
	}
	want, _ := EncodeSnapshot(n.Ring())
	if got, _ := EncodeSnapshot(r); !bytes.Equal(got, want) {
		c.t.Fatalf("%s: replaying its log to %d does not reproduce its FSM", id, applied)
	}
	st.finalTimeMs = r.TimeMs()
	c.t.Logf("replayed %d command entries of %s: largest heartbeat age %s (entry %d), largest ring-time step %s (entry %d)",
		st.entries, id, st.maxAge, st.maxAgeAt, st.maxStep, st.maxStepAt)
	return st
}

// maxAgeAfterGap is the documented bound on a heartbeat age across a ring-time jump: the credit rule
// lets ages grow by at most ringstate.MaxRingTimeGap, on top of the age a heartbeating member has
// anyway (its period plus commit latency; 5s of slack for a loaded 2-core machine).
const maxAgeAfterGap = time.Duration(ringstate.MaxRingTimeGap)*time.Millisecond + 5*time.Second

// TestClock_LeaderJumpsForwardThenBackward: the leader's clock jumps forward by twice the ring
// heartbeat timeout: ring time jumps with it, but heartbeat ages grow by at most MaxRingTimeGap, so no
// member turns UNHEALTHY, and one heartbeat period later every age is small again. Then the
// leader's clock jumps back by more than it went forward: ring time neither goes back nor freezes —
// it goes on at the clock's rate, so a member whose heartbeats stop is still seen ageing (with a
// frozen ring time it would look healthy for as long as the jump).
func TestClock_LeaderJumpsForwardThenBackward(t *testing.T) {
	c := newClockCluster(t, 5, 0, 0, 0)
	c.waitFresh("start", time.Second)

	// Forward.
	l := c.leader()
	t0 := l.node.Ring().TimeMs()
	jump := 2 * ringTimeout
	c.clocks[l.id].jump(jump)
	c.waitRingTime("forward jump", t0+jump.Milliseconds(), 10*time.Second)
	start := time.Now()
	c.waitFresh("after the forward jump", time.Second)
	t.Logf("forward jump of %s: every age below 1s again %s after ring time took the jump", jump, time.Since(start).Round(time.Millisecond))

	// Backward, by more than the forward jump: the leader's clock ends a minute behind the host's
	// and three minutes behind ring time.
	l = c.leader()
	c.clocks[l.id].jump(-3 * ringTimeout)
	dead := "n3"
	if l.id == dead {
		dead = "n2"
	}
	c.silence(dead)
	r0, w0 := l.node.Ring().TimeMs(), time.Now()
	// Ring time keeps advancing: 2s of it within a few seconds of wall time.
	c.waitRingTime("after the backward jump", r0+2000, 8*time.Second)
	t.Logf("backward jump: ring time advanced 2s in %s of wall time", time.Since(w0).Round(time.Millisecond))
	// The silent member ages; the others stay fresh.
	var why string
	if !poll(t, 10*time.Second, func() bool {
		ages := c.ages(l.id)
		if ages[dead] < 2*time.Second {
			why = fmt.Sprintf("%s's age is %s", dead, ages[dead])
			return false
		}
		for m, a := range ages {
			if m != dead && a >= 1500*time.Millisecond {
				t.Errorf("after the backward jump %s's heartbeat is %s old although it heartbeats", m, a)
			}
		}
		return true
	}) {
		t.Fatalf("a member without heartbeats does not age after the leader's clock jumped back: %s", why)
	}

	st := c.replayAndCheck(c.leader().id)
	if st.maxStep < jump-5*time.Second {
		t.Fatalf("the forward jump never reached the log: largest ring-time step %s, jump %s", st.maxStep, jump)
	}
	if st.maxAge > maxAgeAfterGap {
		t.Fatalf("a heartbeat age reached %s at entry %d; the credit rule bounds it by %s", st.maxAge, st.maxAgeAt, maxAgeAfterGap)
	}
}

// TestClock_LeadershipMovesBetweenSkewedNodes: n1's clock is a minute ahead and it leads first;
// leadership moves to n2, whose clock is right, and back. Ring time neither freezes when n2 takes
// over (n2 continues it at its own rate instead of waiting a minute for its clock to catch up) nor
// jumps when n1 takes over again; no heartbeat age ever exceeds a few seconds. n3's clock is an
// hour ahead, but it is a non-voter that only forwards its heartbeats: ring time never shows its
// clock, because only the proposing leader stamps.
func TestClock_LeadershipMovesBetweenSkewedNodes(t *testing.T) {
	c := newClockCluster(t, 2, time.Minute, 0, time.Hour)
	if v, nv := voters(c.nodes["n1"].node); len(v) != 2 || len(nv) != 1 || nv[0] != "n3" {
		t.Fatalf("voters %v, non-voters %v; want n3 the only non-voter", v, nv)
	}
	c.transferTo("n1")
	c.waitFresh("start", time.Second)

	for _, to := range []string{"n2", "n1"} {
		c.transferTo(to)
		r0, w0 := c.node(to).Ring().TimeMs(), time.Now()
		c.waitRingTime("after leadership moved to "+to, r0+2000, 8*time.Second)
		t.Logf("leadership moved to %s: ring time advanced 2s in %s of wall time", to, time.Since(w0).Round(time.Millisecond))
		c.waitFresh("after leadership moved to "+to, time.Second)
	}

	st := c.replayAndCheck(c.leader().id)
	// Nothing in this test should make ring time step: a step or an age of more than a few seconds
	// means a leader's clock showed through.
	if st.maxStep > 5*time.Second || st.maxAge > 5*time.Second {
		t.Fatalf("ring time stepped %s (entry %d), a heartbeat aged %s (entry %d): want both under 5s",
			st.maxStep, st.maxStepAt, st.maxAge, st.maxAgeAt)
	}
	// Ring time is the fastest voter's clock (n1, a minute ahead), never n3's.
	if ahead := time.Duration(st.finalTimeMs-time.Now().UnixMilli()) * time.Millisecond; ahead > time.Minute+10*time.Second || ahead < time.Minute-10*time.Second {
		t.Fatalf("ring time is %s ahead of the host's clock; want n1's minute (n3, an hour ahead, must never stamp)", ahead)
	}
}

// TestClock_OutageCoasting: the outage test of ringstate's MaxRingTimeGap rule on a real cluster.
// Two of three nodes stop: no quorum. The outage lasts two ring heartbeat timeouts in ring time —
// every node's clock jumps forward by that much, as if the outage had lasted that long (the wall time
// it really takes is a few seconds, to keep the test short). Quorum comes back; the first entry's
// stamp carries ring time across the outage at once, yet no member is ever UNHEALTHY: heartbeat
// ages grow by at most MaxRingTimeGap across the outage, and every age is small again one heartbeat
// period later.
func TestClock_OutageCoasting(t *testing.T) {
	c := newClockCluster(t, 5, 0, 0, 0)
	c.waitFresh("start", time.Second)

	survivor := c.leader().id // stop the two others: the leader loses its quorum
	var stopped []string
	for _, id := range []string{"n1", "n2", "n3"} {
		if id != survivor {
			c.stop(c.nodes[id])
			stopped = append(stopped, id)
		}
	}
	if !poll(t, 10*time.Second, func() bool { return !c.node(survivor).IsLeader() }) {
		t.Fatalf("%s still leads without a quorum", survivor)
	}
	before := c.node(survivor).Ring().TimeMs()
	outage := 2 * ringTimeout
	for _, clk := range c.clocks {
		clk.jump(outage)
	}
	for _, id := range stopped {
		c.restart(id)
	}
	c.waitRingTime("after the outage", before+outage.Milliseconds(), 15*time.Second)
	start := time.Now()
	c.waitFresh("after the outage", time.Second)
	t.Logf("outage of %s in ring time: every age below 1s again %s after quorum came back", outage, time.Since(start).Round(time.Millisecond))

	st := c.replayAndCheck(c.leader().id)
	if st.maxStep < outage {
		t.Fatalf("the outage never showed in ring time: largest step %s, outage %s", st.maxStep, outage)
	}
	if st.maxAge > maxAgeAfterGap {
		t.Fatalf("a heartbeat age reached %s at entry %d; the credit rule bounds it by %s", st.maxAge, st.maxAgeAt, maxAgeAfterGap)
	}
}
