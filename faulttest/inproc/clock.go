package inproc

import (
	"sync"
	"time"
)

// Clock is a node's skewable wall clock: the real clock plus an offset the nemesis sets. Its Now
// is the node's ingester.Config.Clock. Safe for concurrent use.
//
// A skew is a constant offset (the node's clock is wrong); a jump is a step change of the offset
// (NTP stepping the clock, a VM resumed): +90s then back to 0 at the heal is a forward jump
// followed by a backward one.
type Clock struct {
	mu     sync.Mutex
	offset time.Duration
}

// Now is the real time plus the current offset.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	off := c.offset
	c.mu.Unlock()
	return time.Now().Add(off)
}

// Set replaces the offset.
func (c *Clock) Set(offset time.Duration) {
	c.mu.Lock()
	c.offset = offset
	c.mu.Unlock()
}

// Offset returns the current offset.
func (c *Clock) Offset() time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.offset
}
