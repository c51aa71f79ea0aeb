package memstore

import (
	"errors"
	"flag"
	"fmt"
	"time"
)

// Config holds the memstore settings. It is read once by Open and never
// changed afterwards; callers must not mutate it while a Store uses it.
type Config struct {
	// MaxChunkAge cuts the head chunk of a series once a sample's timestamp
	// is more than MaxChunkAge past the head chunk's first sample. It is
	// measured in sample time (int64 milliseconds), not wall-clock time.
	// Flag: -ingester.max-chunk-age (default 2h).
	MaxChunkAge time.Duration

	// MaxSeriesPerTenant caps the number of in-memory series of one tenant
	// on this ingester; 0 means unlimited. Replay and hand-over imports
	// ignore the limit so that a lowered limit never drops acknowledged data.
	// The ingester replaces it at run time (Store.SetSeriesLimit) by the
	// smaller of it and -ingester.max-global-series-per-user converted to a
	// local limit. Flag: -ingester.max-series-per-tenant.
	MaxSeriesPerTenant int

	// WALDir is the directory holding the bbolt write-ahead log
	// (<WALDir>/wal.bolt). Empty disables the WAL: nothing survives a
	// restart. Flag: -wal.dir.
	WALDir string

	// WALSync fsyncs every group commit before acknowledging it (default
	// true). With false, bbolt runs with NoSync: committed records are handed
	// to the kernel with write(2) but not fsynced, so a killed process (even
	// kill -9) loses nothing acknowledged, while a machine crash or power
	// loss can lose acknowledged samples and can even leave the bbolt file
	// unopenable (bbolt's meta page may then point at pages that never
	// reached the disk). Flag: -wal.sync.
	WALSync bool

	// OutOfOrderTimeWindow accepts a sample older than its series' newest one by at most this
	// much (sample time), kept apart and merged on read (ooo.go); 0 refuses every sample older
	// than the series' newest, as before. The ingester overrides it per tenant at run time
	// (Store.SetOutOfOrderWindow, the runtime overrides' out_of_order_time_window). Replay
	// ignores it. Flag: -ingester.out-of-order-time-window.
	OutOfOrderTimeWindow time.Duration

	// ReplayTracker, when not nil, follows Open's WAL replay while it runs (for /ready and logs
	// during a long replay). Not a flag.
	ReplayTracker *ReplayTracker
}

// DefaultMaxSeriesPerTenant is the default of -ingester.max-series-per-tenant: Cortex's default
// for its local -ingester.max-series-per-user. It is a per-node backstop, high enough not to get in
// the way of -ingester.max-global-series-per-user (Mimir's 150000 by default), which is what
// normally bounds a tenant.
const DefaultMaxSeriesPerTenant = 5_000_000

// DefaultMaxChunkAge is the default of -ingester.max-chunk-age.
const DefaultMaxChunkAge = 2 * time.Hour

// RegisterFlags registers the memstore flags with their defaults on f.
func (c *Config) RegisterFlags(f *flag.FlagSet) {
	f.DurationVar(&c.MaxChunkAge, "ingester.max-chunk-age", DefaultMaxChunkAge,
		"Cut the head chunk of a series when a sample is this much newer (in sample time) than the chunk's first sample.")
	f.IntVar(&c.MaxSeriesPerTenant, "ingester.max-series-per-tenant", DefaultMaxSeriesPerTenant,
		"Maximum number of in-memory series per tenant on this ingester, whatever the cluster's size (a memory backstop; Cortex's -ingester.max-series-per-user default). A push creating a series over it is refused with 400 for that series. The limit in force is the smaller of this and -ingester.max-global-series-per-user converted to a local limit. 0 means unlimited.")
	f.DurationVar(&c.OutOfOrderTimeWindow, "ingester.out-of-order-time-window", 0,
		"Accept a sample up to this much older than its series' newest sample (out of order), as Mimir does; older ones are refused (sample-too-old). 0 refuses every sample older than its series' newest (out-of-order). Overridden per tenant by the runtime configuration's out_of_order_time_window. Samples older than the oldest block range in memory are refused anyway (sample-out-of-bounds).")
	f.StringVar(&c.WALDir, "wal.dir", "",
		"Directory of the write-ahead log (wal.bolt); empty means <-data.dir>/wal.")
	f.BoolVar(&c.WALSync, "wal.sync", true,
		"Fsync every WAL group commit before acknowledging a push. false survives process crashes but can lose acknowledged samples on machine crash or power loss.")
}

// DefaultConfig returns the configuration RegisterFlags would set.
func DefaultConfig() Config {
	var c Config
	c.RegisterFlags(flag.NewFlagSet("memstore", flag.ContinueOnError))
	return c
}

// Validate reports every invalid setting, naming its flag. It never clamps.
func (c *Config) Validate() error {
	var errs []error
	if c.MaxChunkAge <= 0 {
		errs = append(errs, fmt.Errorf("memstore: -ingester.max-chunk-age must be positive, got %s", c.MaxChunkAge))
	} else if c.MaxChunkAge < time.Millisecond {
		errs = append(errs, fmt.Errorf("memstore: -ingester.max-chunk-age must be at least 1ms (sample time is in milliseconds), got %s", c.MaxChunkAge))
	}
	if c.OutOfOrderTimeWindow < 0 {
		errs = append(errs, fmt.Errorf("memstore: -ingester.out-of-order-time-window must be >= 0 (0 = refuse out-of-order samples), got %s", c.OutOfOrderTimeWindow))
	}
	if c.MaxSeriesPerTenant < 0 {
		errs = append(errs, fmt.Errorf("memstore: -ingester.max-series-per-tenant must be >= 0 (0 = unlimited), got %d", c.MaxSeriesPerTenant))
	}
	return errors.Join(errs...)
}
