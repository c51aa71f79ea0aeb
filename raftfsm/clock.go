package raftfsm

import (
	"math"
	"sync"
	"time"
)

// ringClock makes the ring-time stamps of the commands a node proposes as leader (see DESIGN.md,
// "Ring time and clocks"). The stamps follow the node's clock forward and never backward:
//
//   - the first stamp is the clock's reading;
//   - each later stamp is the previous anchor's stamp plus the time elapsed since it by the clock
//     (time.Time.Sub: Go's monotonic reading when both readings carry one, so a wall-clock step of
//     the host does not show here, while an injected clock built with time.Now().Add(offset) shows
//     its offset changes), so a forward jump of the clock passes through;
//   - when the clock reads earlier than at the previous stamp (a backward jump), the stamps do not
//     follow it: they continue from the previous stamp at the clock's rate. Ring time therefore
//     keeps advancing after a backward jump, instead of freezing until the clock catches up — which
//     would freeze every heartbeat age and hide a dead member for as long as the jump;
//   - a stamp is never below floorMs, the ring time this node has applied: a leader whose clock is
//     behind the ring's (leadership moved from a node whose clock is ahead) continues the ring's
//     time at its own rate, rather than stamping entries that would not move ring time at all.
//
// Stamps of one ringClock never decrease. Safe for concurrent use: concurrent proposals may reach
// the log in another order than their stamps, which does not matter, since ringstate keeps the
// largest ring time applied.
type ringClock struct {
	mu sync.Mutex
	// anchor is the clock reading at which the stamp was base; zero before the first stamp.
	anchor time.Time
	base   int64
	// prev and last are the previous reading and stamp. Invariant: last >= every earlier stamp.
	prev time.Time
	last int64
}

// stamp returns the ring time (Unix milliseconds) of a command proposed at clock reading now, never
// below floorMs nor below an earlier stamp.
func (c *ringClock) stamp(now time.Time, floorMs int64) int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stampLocked(now, floorMs)
}

// stampClock is stamp with the clock read under the lock: readings taken before it could reach the
// lock in another order than they were taken, and a later reading processed first would make the
// earlier one look like a backward jump and re-anchor, moving every later stamp ahead by the
// difference (found in review: concurrent proposals would slowly run ring time fast).
func (c *ringClock) stampClock(clock func() time.Time, floorMs int64) int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stampLocked(clock(), floorMs)
}

func (c *ringClock) stampLocked(now time.Time, floorMs int64) int64 {
	switch {
	case c.anchor.IsZero():
		c.anchor, c.base = now, now.UnixMilli()
	case now.Before(c.prev):
		// The clock went backwards: go on from the last stamp at the clock's rate.
		c.anchor, c.base = now, c.last
	}
	s := addSaturating(c.base, now.Sub(c.anchor).Milliseconds())
	if s < floorMs {
		c.anchor, c.base, s = now, floorMs, floorMs
	}
	s = max(s, c.last)
	c.prev, c.last = now, s
	return s
}

// addSaturating returns a+b clamped to the int64 range, so an absurd clock cannot wrap a stamp.
func addSaturating(a, b int64) int64 {
	switch {
	case b > 0 && a > math.MaxInt64-b:
		return math.MaxInt64
	case b < 0 && a < math.MinInt64-b:
		return math.MinInt64
	}
	return a + b
}
