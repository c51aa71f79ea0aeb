// Package compact is the compactor that runs inside the cluster: on every member, working only
// while that member holds the ring's compactor lease (ringstate.CompactorLease, claimed by the Raft
// leader). Per tenant it merges the replicas' overlapping blocks of one range into one
// deduplicated block, then complete aligned ranges into larger blocks (-compactor.block-ranges),
// places the result — with node-local buckets, one part per member holding exactly the series
// that member replicates, so every series keeps replication-factor copies; with a shared bucket,
// once — and only then deletes what it replaced, fenced by the lease's epoch. It also deletes blocks
// older than -blocks-storage.retention-period.
//
// Deleting is marking, as in Mimir: a replaced or expired block gets a deletion mark
// (deletion-mark.json, Thanos's format) and keeps being served to queries; it is deleted for real
// once the mark is older than -compactor.deletion-delay — by every member from its own node-local
// bucket (blocksvc's sweeper), or by the lease holder from a shared bucket (at the start of each
// run). Marked blocks are no longer listed to the compactor, so no run merges them again.
//
// The planner (Plan) is pure; the executor (Compactor.RunOnce) talks to the members' buckets
// through the Bucket interface, so it is tested with real filesystem buckets and adapted to the
// Blocks gRPC service by the ingester's wiring. See docs/storage.md, "Compaction and retention".
package compact

import (
	"errors"
	"flag"
	"fmt"
	"slices"
	"strings"
	"time"
)

// Config is the compactor's configuration, with Mimir's flag names where Mimir has the setting.
type Config struct {
	// Enabled runs the compactor on this member (it still works only while holding the lease).
	// Flag: -compactor.enabled.
	Enabled bool
	// Interval is how often the lease holder plans and runs a compaction. Flag: -compactor.interval.
	Interval time.Duration
	// BlockRanges are the aligned ranges blocks are merged into, ascending; the first is the
	// flushed blocks' range. Flag: -compactor.block-ranges.
	BlockRanges DurationList
	// Retention deletes blocks whose newest sample is older than now - Retention; 0 keeps every
	// block. Flag: -blocks-storage.retention-period (Mimir: -compactor.blocks-retention-period).
	Retention time.Duration
	// LeaseDuration is how long one claim of the compactor lease lasts in ring time; the holder
	// renews it every third of it and stops working when a renewal fails. Flag:
	// -compactor.lease-duration.
	LeaseDuration time.Duration
	// CompletionDelay is how long after a range's end (on top of the flush period, which the
	// wiring adds) a range above the first is considered complete: every member has flushed it.
	// Flag: -compactor.completion-delay.
	CompletionDelay time.Duration
	// DeletionDelay is how long a block replaced by a compaction (or expired by retention) stays
	// marked for deletion, and served, before it is deleted for real. Flag:
	// -compactor.deletion-delay (Mimir's name).
	DeletionDelay time.Duration
}

// Defaults.
const (
	DefaultInterval        = time.Hour
	DefaultLeaseDuration   = time.Minute
	DefaultCompletionDelay = 30 * time.Minute
	// DefaultDeletionDelay is -compactor.deletion-delay's default. Mimir's is 12h because its
	// store-gateways and queriers discover blocks by a periodic bucket scan; ours list blocks live
	// at every query, so the delay only has to outlast the longest query (-querier.timeout, 2m by
	// default) plus a margin for clock skew between members and a query's retries.
	DefaultDeletionDelay = 15 * time.Minute
)

// DefaultBlockRanges are Mimir's: 2h, 12h, 24h.
func DefaultBlockRanges() DurationList {
	return DurationList{2 * time.Hour, 12 * time.Hour, 24 * time.Hour}
}

// RegisterFlags registers the compactor's flags with their defaults on f. The retention flag is
// registered here too: it is the compactor that applies it.
func (c *Config) RegisterFlags(f *flag.FlagSet) {
	c.BlockRanges = DefaultBlockRanges()
	f.BoolVar(&c.Enabled, "compactor.enabled", true, "Run the in-cluster compactor on this member. It works only while this member holds the ring's compactor lease, which the Raft leader claims; set false on every member to never compact.")
	f.DurationVar(&c.Interval, "compactor.interval", DefaultInterval, "How often the compactor lease holder plans and runs a compaction.")
	f.Var(&c.BlockRanges, "compactor.block-ranges", "Comma-separated aligned block ranges to compact into, ascending; the first must be the flushed blocks' range (-ingester.flush-period).")
	f.DurationVar(&c.Retention, "blocks-storage.retention-period", 0, "Delete blocks whose newest sample is older than this (Mimir's -compactor.blocks-retention-period). 0 keeps every block.")
	f.DurationVar(&c.LeaseDuration, "compactor.lease-duration", DefaultLeaseDuration, "How long one claim of the compactor lease lasts; the holder renews it every third of it and stops compacting when it cannot.")
	f.DurationVar(&c.CompletionDelay, "compactor.completion-delay", DefaultCompletionDelay, "A range above the first is compacted only once its end is older than -ingester.flush-period plus this delay, so that every member has flushed it.")
	f.DurationVar(&c.DeletionDelay, "compactor.deletion-delay", DefaultDeletionDelay, "How long a block replaced by a compaction, or expired by retention, stays marked for deletion (deletion-mark.json) and still served before it is deleted for real: by every member from its node-local bucket, by the compactor lease holder from a shared bucket. A query's fan-out reads members at slightly different instants, so a source deleted at once could be missed by a query that read its replacement's member before the replacement arrived; queriers list blocks at every query, so the delay must only outlast the longest query (-querier.timeout) with a margin, hence 15m rather than Mimir's 12h. Must be positive; a value below -querier.timeout is logged as a warning at start.")
}

// Validate reports every invalid setting, naming its flag. flushPeriod is -ingester.flush-period:
// the first block range must equal it (the flushed blocks' range).
func (c *Config) Validate(flushPeriod time.Duration) error {
	var errs []error
	if c.Interval <= 0 {
		errs = append(errs, fmt.Errorf("-compactor.interval must be positive, got %s", c.Interval))
	}
	if c.Retention < 0 {
		errs = append(errs, fmt.Errorf("-blocks-storage.retention-period must not be negative, got %s", c.Retention))
	}
	if c.LeaseDuration < 3*time.Second || c.LeaseDuration > time.Hour {
		errs = append(errs, fmt.Errorf("-compactor.lease-duration must be from 3s to 1h, got %s", c.LeaseDuration))
	}
	if c.DeletionDelay <= 0 {
		// Checked whatever -compactor.enabled says: every member sweeps its own node-local bucket
		// with it, since the lease holder marks blocks in every member's bucket.
		errs = append(errs, fmt.Errorf("-compactor.deletion-delay must be positive (a replaced block must stay readable while queries that missed its replacement run), got %s", c.DeletionDelay))
	}
	if c.CompletionDelay < 0 {
		errs = append(errs, fmt.Errorf("-compactor.completion-delay must not be negative, got %s", c.CompletionDelay))
	}
	if len(c.BlockRanges) == 0 {
		errs = append(errs, errors.New("-compactor.block-ranges must list at least one range"))
	}
	for i, r := range c.BlockRanges {
		switch {
		case r <= 0 || r%time.Millisecond != 0:
			errs = append(errs, fmt.Errorf("-compactor.block-ranges: %s is not a positive whole number of milliseconds", r))
		case i > 0 && r%c.BlockRanges[i-1] != 0:
			errs = append(errs, fmt.Errorf("-compactor.block-ranges: %s is not a multiple of %s (ranges must nest)", r, c.BlockRanges[i-1]))
		}
	}
	if len(c.BlockRanges) > 0 && flushPeriod > 0 && c.BlockRanges[0] != flushPeriod {
		errs = append(errs, fmt.Errorf("-compactor.block-ranges starts at %s, but -ingester.flush-period is %s: the first range must be the flushed blocks' range",
			c.BlockRanges[0], flushPeriod))
	}
	return errors.Join(errs...)
}

// DurationList is a comma-separated list of durations as a flag value (Mimir's
// tsdb.DurationList).
type DurationList []time.Duration

// String returns the list as the flag takes it.
func (d *DurationList) String() string {
	parts := make([]string, len(*d))
	for i, v := range *d {
		parts[i] = v.String()
	}
	return strings.Join(parts, ",")
}

// Set parses a comma-separated list of durations.
func (d *DurationList) Set(s string) error {
	var out DurationList
	for _, p := range strings.Split(s, ",") {
		v, err := time.ParseDuration(strings.TrimSpace(p))
		if err != nil {
			return fmt.Errorf("block range %q: %w", p, err)
		}
		out = append(out, v)
	}
	if !slices.IsSorted(out) {
		return fmt.Errorf("block ranges %q are not ascending", s)
	}
	*d = out
	return nil
}

// millis returns the ranges in milliseconds.
func (d DurationList) millis() []int64 {
	out := make([]int64, len(d))
	for i, v := range d {
		out[i] = v.Milliseconds()
	}
	return out
}
