// Package blocksvc moves TSDB blocks between the node-local buckets of ring members: the server of
// the Blocks gRPC service (proto/blocks.proto, package blockspb) over a member's bucket, and the
// client functions that list, fetch, store and delete a member's blocks (List, Fetch, Store,
// Delete). A leaver uses it to hand its blocks to its joiner, or, in the flush fallback, to the
// members that take over its data (Mover); the compactor uses it to gather the replicas' blocks
// and to place and delete merged ones.
//
// A block travels as one header (tenant, ULID, meta.json, the files with their sizes) followed by
// every file's bytes in the header's order, in pieces of at most PieceSize. Whoever receives a
// block — the server in StoreBlock, the client in Fetch — checks the header before it writes a
// byte, writes into a private staging directory, and believes the block only once every size
// matches and the block opens with every series' chunks decoding (verifyBlock). The server then
// uploads it into its bucket with meta.json last: a block without meta.json is partial, and
// nothing here lists, serves or counts it.
//
// Deletion is delayed, as Mimir's compactor delays it (-compactor.deletion-delay): DeleteBlocks
// only marks blocks (storage.MarkForDeletion), which stay listed nowhere for the compactor or a
// leaver but keep being served to queries, and the member's sweeper (Server.RunSweeper) deletes
// them once their mark is older than the delay. A query's fan-out reads members at slightly
// different instants; the delay makes sure none of them has lost a source before every query that
// may have missed its replacement has ended.
//
// Identity: every method is for ring members only (ingester/wire_auth.go checks the caller before
// a handler runs); DeleteBlocks is also fenced by the compactor lease (Deps.AuthorizeDelete).
package blocksvc

import (
	"errors"
	"flag"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// PieceSize is the largest data a FilePiece carries (the proto's contract). Senders cut files into
// pieces of exactly this size (the last one shorter); receivers refuse larger ones. With the
// message's framing it stays far below gRPC's default 4 MiB receive limit, so StoreBlock needs no
// receive limit of its own.
const PieceSize = 1 << 20

// Defaults of the configuration.
const (
	// DefaultMaxBlockUploadBytes bounds one block received by StoreBlock or Fetch: a day's block
	// of a large tenant (tens of millions of series) stays below it.
	DefaultMaxBlockUploadBytes = 64 << 30
	// DefaultIdleTimeout is how long a receiver waits for the next message of a block stream (or
	// for a free store slot) before it gives up and releases everything it held for it.
	DefaultIdleTimeout = time.Minute
	// DefaultMaxConcurrentStores bounds the StoreBlock calls that receive at once; more wait (up to
	// the idle timeout) for a slot. Each holds one message in memory and a staging directory.
	DefaultMaxConcurrentStores = 4
	// DefaultMinFreeDiskPercent is the share of the bucket's (and staging's) filesystem StoreBlock
	// keeps free: the WAL and the flushes of this member live on the same disk, and a peer's block
	// must not take the space they need.
	DefaultMinFreeDiskPercent = 5
	// DefaultMinStoreRate is the slowest a StoreBlock may receive on average: a store must end
	// within the idle timeout plus its declared size at this rate, so a peer that trickles one
	// message per idle timeout cannot hold a store slot for ever. The sender's own limit (Mover,
	// storeTimeout) covers the wait for a slot and this whole limit, so the sender never gives up
	// a store the receiver still counts as on time.
	DefaultMinStoreRate = 1 << 20
)

// Limits on what a header or a listing may claim, so that neither can make a member allocate
// without bound before it checks anything else.
const (
	maxMetaBytes    = 1 << 20 // meta.json
	maxFilesInBlock = 10_000  // files of one block: an index and chunk segments of 512 MiB each
	maxDeleteIDs    = 10_000  // ULIDs in one DeleteBlocks request
	listBatchBytes  = 1 << 20 // meta.json bytes in one ListBlocksResponse
)

// Config is the block service's configuration.
type Config struct {
	// MaxBlockUploadBytes is the largest block (sum of its files but meta.json) a member accepts
	// in StoreBlock. Flag: -blocks-storage.max-block-upload-bytes.
	MaxBlockUploadBytes int64
	// IdleTimeout bounds the wait for each message of a block stream and for a store slot. Not a
	// flag (tests shorten it).
	IdleTimeout time.Duration
	// MaxConcurrentStores bounds concurrent StoreBlock calls. Not a flag.
	MaxConcurrentStores int
	// MinFreeDiskPercent is the share of each filesystem StoreBlock writes on (staging, bucket)
	// that must stay free once every store in progress has written all it declared. Flag:
	// -blocks-storage.min-free-disk-percent.
	MinFreeDiskPercent float64
	// MinStoreRate (bytes per second) bounds a whole StoreBlock: it must end within IdleTimeout
	// plus its declared size at this rate. Not a flag.
	MinStoreRate int64
}

// RegisterFlags registers the block service's flags with their defaults on f.
func (c *Config) RegisterFlags(f *flag.FlagSet) {
	f.Int64Var(&c.MaxBlockUploadBytes, "blocks-storage.max-block-upload-bytes", DefaultMaxBlockUploadBytes,
		"Largest block in bytes (index and chunks) this member accepts from another member: a leaver's blocks in a hand-over or when it leaves without a successor, and the compactor's merged blocks. The node's free disk space is also checked before a byte is written.")
	f.Float64Var(&c.MinFreeDiskPercent, "blocks-storage.min-free-disk-percent", DefaultMinFreeDiskPercent,
		"Share of the filesystem (percent, 0 to 50) a block received from another member must leave free, counting what every store in progress declared: the WAL and this member's own flushes need the same disk.")
	c.IdleTimeout = DefaultIdleTimeout
	c.MaxConcurrentStores = DefaultMaxConcurrentStores
	c.MinStoreRate = DefaultMinStoreRate
}

// DefaultConfig returns the configuration RegisterFlags would set.
func DefaultConfig() Config {
	var c Config
	c.RegisterFlags(flag.NewFlagSet("blocksvc", flag.ContinueOnError))
	return c
}

// Validate reports every invalid setting, naming its flag.
func (c *Config) Validate() error {
	var errs []error
	if c.MaxBlockUploadBytes <= 0 {
		errs = append(errs, fmt.Errorf("blocksvc: -blocks-storage.max-block-upload-bytes must be positive, got %d", c.MaxBlockUploadBytes))
	}
	if c.IdleTimeout <= 0 {
		errs = append(errs, fmt.Errorf("blocksvc: Config.IdleTimeout must be positive, got %s", c.IdleTimeout))
	}
	if c.MinFreeDiskPercent < 0 || c.MinFreeDiskPercent > 50 {
		errs = append(errs, fmt.Errorf("blocksvc: -blocks-storage.min-free-disk-percent must be from 0 to 50, got %v", c.MinFreeDiskPercent))
	}
	if c.MinStoreRate <= 0 {
		errs = append(errs, fmt.Errorf("blocksvc: Config.MinStoreRate must be positive, got %d", c.MinStoreRate))
	}
	if c.MaxConcurrentStores < 1 {
		errs = append(errs, fmt.Errorf("blocksvc: Config.MaxConcurrentStores must be at least 1, got %d", c.MaxConcurrentStores))
	}
	return errors.Join(errs...)
}

// Metrics count what the block service and the Mover moved. One set per process, shared by the
// server and the mover.
type Metrics struct {
	sentBlocks, receivedBlocks, markedBlocks prometheus.Counter
	cleanedBlocks                            prometheus.Counter
	sentBytes, receivedBytes                 prometheus.Counter
	refused                                  *prometheus.CounterVec // reason
	moved                                    *prometheus.CounterVec // why: handover, leave
	unmovable                                *prometheus.CounterVec // reason: invalid, too_large
}

// NewMetrics creates the metrics and registers them on reg (nil: unregistered).
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		sentBlocks: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "raftingest_blocks_sent_total",
			Help: "Blocks this member streamed to another member (FetchBlock served, or a block it stored on another member).",
		}),
		receivedBlocks: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "raftingest_blocks_received_total",
			Help: "Blocks this member received, verified and stored in its bucket through StoreBlock (blocks it already had not included).",
		}),
		markedBlocks: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "raftingest_blocks_marked_for_deletion_total",
			Help: "Blocks of this member's bucket marked for deletion through DeleteBlocks (replaced by a compaction, or expired by retention); they are deleted -compactor.deletion-delay later.",
		}),
		cleanedBlocks: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cortex_compactor_blocks_cleaned_total",
			Help: "Blocks deleted for good by the sweeper once marked for deletion longer than -compactor.deletion-delay: by every member from its node-local bucket, by the compactor lease holder from a shared bucket.",
		}),
		sentBytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "raftingest_blocks_sent_bytes_total",
			Help: "File bytes of blocks this member streamed to other members.",
		}),
		receivedBytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "raftingest_blocks_received_bytes_total",
			Help: "File bytes of blocks this member received through StoreBlock, refused ones included.",
		}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "raftingest_blocks_store_refused_total",
			Help: "StoreBlock calls this member refused, by reason: invalid (header, pieces or block did not check), limit (size, free space or concurrency), timeout (stalled stream), cancelled (the sender gave up), leaving (this member is leaving and takes no blocks), error (local I/O or bucket).",
		}, []string{"reason"}),
		moved: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "raftingest_blocks_moved_total",
			Help: "Blocks a leaving member made durable on other members, by why: handover (to its joiner) or leave (split by series among the members that take over its series, when no joiner came; a block counts once however many members its series went to).",
		}, []string{"why"}),
		unmovable: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "raftingest_blocks_unmovable_total",
			Help: "Blocks a leaving member could not move because of the block itself, by reason, once per move attempt: invalid (corrupt: it does not read, or a member found it invalid; it is left behind and the leave goes on) or too_large (above the receivers' -blocks-storage.max-block-upload-bytes; the member stays LEAVING until they take it). Each is logged with its name.",
		}, []string{"reason"}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.sentBlocks, m.receivedBlocks, m.markedBlocks, m.cleanedBlocks, m.sentBytes,
			m.receivedBytes, m.refused, m.moved, m.unmovable} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return m, nil
}

// AddCleaned counts n blocks a sweeper deleted for good outside a Server (the compactor lease
// holder's sweep of a shared bucket), in cortex_compactor_blocks_cleaned_total.
func (m *Metrics) AddCleaned(n int) { m.cleanedBlocks.Add(float64(n)) }
