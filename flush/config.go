// Package flush moves an ingester's in-memory samples into long-term storage: it cuts Prometheus
// TSDB blocks from memstore chunks, uploads them to the bucket, and only then drops what they
// hold from memory and from the WAL.
//
// Three triggers, one procedure (Flusher.flush):
//   - periodic: every -ingester.flush-check-period, the block ranges (-ingester.flush-period,
//     aligned to the Unix epoch as Prometheus aligns its 2h blocks) that closed more than half a
//     period ago are flushed — Mimir's rule (a head is compacted once it spans 1.5 ranges), which
//     leaves late samples time to arrive before their range is cut;
//   - idle: a series whose newest sample is older than -ingester.flush-idle-timeout (sample
//     time) is flushed whole and removed from memory, so series that stopped — or were written
//     here only while writes spilled during a hand-over — do not linger;
//   - forced: FlushAll (POST /ingester/flush, shutdown without hand-over) flushes everything.
//
// A flush writes one block per tenant and block range holding data: the ranges come from the
// chunks (and, for a chunk spanning many ranges, its samples), never from the time between a
// series' oldest and newest samples, so extreme timestamps cost what their samples cost. CutoffAt
// is also the distributor's bound on old samples (the oldest range still in memory).
package flush

import (
	"errors"
	"flag"
	"fmt"
	"time"
)

// Config holds the flush settings, with Cortex's flag names where Cortex has them.
type Config struct {
	// FlushPeriod is the block range, and the period of flushes: blocks cover
	// [k*FlushPeriod, (k+1)*FlushPeriod) (Unix epoch aligned). Flag: -ingester.flush-period.
	FlushPeriod time.Duration
	// CheckPeriod is how often the flush loop looks for closed ranges and idle series.
	// Flag: -ingester.flush-check-period.
	CheckPeriod time.Duration
	// IdleTimeout flushes and drops a series whose newest sample is this old (sample time
	// against the wall clock); 0 disables idle flushing. Flag: -ingester.flush-idle-timeout.
	IdleTimeout time.Duration
	// OpTimeout bounds one flush, upload retries included; when it passes the flush fails and
	// its data stays in memory and in the WAL for the next one. Flag: -ingester.flush-op-timeout.
	OpTimeout time.Duration
	// RetryMinBackoff and RetryMaxBackoff bound the wait between upload attempts (doubling).
	// No flags: tests shorten them.
	RetryMinBackoff, RetryMaxBackoff time.Duration
}

// Defaults of the flags.
const (
	DefaultFlushPeriod = 2 * time.Hour
	DefaultCheckPeriod = time.Minute
	DefaultIdleTimeout = time.Hour
	DefaultOpTimeout   = 10 * time.Minute
)

// RegisterFlags registers the flush flags with their defaults on f.
func (c *Config) RegisterFlags(f *flag.FlagSet) {
	f.DurationVar(&c.FlushPeriod, "ingester.flush-period", DefaultFlushPeriod,
		"Block range and period of flushes to the bucket. Blocks are aligned to multiples of it since the Unix epoch; a range is flushed once it closed half a period ago.")
	f.DurationVar(&c.CheckPeriod, "ingester.flush-check-period", DefaultCheckPeriod,
		"How often to look for closed block ranges and idle series to flush.")
	f.DurationVar(&c.IdleTimeout, "ingester.flush-idle-timeout", DefaultIdleTimeout,
		"Flush and drop from memory a series whose newest sample is older than this; 0 disables.")
	f.DurationVar(&c.OpTimeout, "ingester.flush-op-timeout", DefaultOpTimeout,
		"Timeout of one flush, upload retries included. A flush that times out keeps its data in memory and the WAL for the next one.")
	c.RetryMinBackoff, c.RetryMaxBackoff = time.Second, 30*time.Second
}

// Validate reports every invalid setting, naming its flag.
func (c *Config) Validate() error {
	var errs []error
	if c.FlushPeriod < time.Minute || c.FlushPeriod%time.Millisecond != 0 {
		errs = append(errs, fmt.Errorf("flush: -ingester.flush-period must be at least 1m and a whole number of milliseconds, got %s", c.FlushPeriod))
	}
	if c.CheckPeriod <= 0 {
		errs = append(errs, fmt.Errorf("flush: -ingester.flush-check-period must be positive, got %s", c.CheckPeriod))
	}
	if c.IdleTimeout < 0 {
		errs = append(errs, fmt.Errorf("flush: -ingester.flush-idle-timeout must be >= 0 (0 disables), got %s", c.IdleTimeout))
	}
	if c.OpTimeout <= 0 {
		errs = append(errs, fmt.Errorf("flush: -ingester.flush-op-timeout must be positive, got %s", c.OpTimeout))
	}
	if c.RetryMinBackoff <= 0 || c.RetryMaxBackoff < c.RetryMinBackoff {
		errs = append(errs, fmt.Errorf("flush: retry backoff [%s, %s] must be positive and ordered", c.RetryMinBackoff, c.RetryMaxBackoff))
	}
	return errors.Join(errs...)
}
