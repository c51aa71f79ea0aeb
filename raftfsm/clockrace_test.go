package raftfsm

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestRingClock_ConcurrentStampsDoNotRunFast: many proposers stamping at once from a clock that
// only moves forward must never get a stamp ahead of the clock. When the clock was read before the
// stamper's lock, a later reading could be processed first; the earlier one then looked like a
// backward jump, re-anchored, and every later stamp ran ahead by the difference (found in review).
func TestRingClock_ConcurrentStampsDoNotRunFast(t *testing.T) {
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var ticks atomic.Int64
	clock := func() time.Time { return base.Add(time.Duration(ticks.Add(1)) * time.Millisecond) }
	var c ringClock
	var wg sync.WaitGroup
	var ahead atomic.Int64
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 2000 {
				s := c.stampClock(clock, 0)
				// The clock has moved at least to s if the stamp follows it; a stamp beyond the
				// newest reading ran ahead.
				if now := base.Add(time.Duration(ticks.Load()) * time.Millisecond).UnixMilli(); s > now {
					ahead.Store(s - now)
				}
			}
		}()
	}
	wg.Wait()
	if d := ahead.Load(); d != 0 {
		t.Fatalf("a stamp ran %dms ahead of the clock", d)
	}
	if last, now := c.stampClock(clock, 0), clock().UnixMilli(); last > now {
		t.Fatalf("after 16000 stamps the stamper is %dms ahead of the clock", last-now)
	}
}
