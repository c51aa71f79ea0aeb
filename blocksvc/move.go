package blocksvc

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/oklog/ulid/v2"

	"github.com/raftingest/raftingest/blockspb"
	"github.com/raftingest/raftingest/storage"
	"github.com/raftingest/raftingest/tenant"
)

// LocalBlock is a complete block (with meta.json) in a node-local filesystem bucket.
type LocalBlock struct {
	Tenant string
	ID     ulid.ULID
	Dir    string // <bucket dir>/<tenant>/<ULID>
	Bytes  int64  // its files' bytes, meta.json included
}

// LocalBlocks returns the complete blocks in the filesystem bucket rooted at bucketDir that are not
// marked for deletion, by tenant then ULID: directories <tenant>/<ULID>/ with a meta.json and
// without a deletion-mark.json, whose tenant passes tenant.Validate. A bucket directory that does
// not exist holds none.
//
// A marked block is left out, so a leaver does not move it: the compactor marked it only after its
// replacement was durable on the members of each series' replication set (or it expired), so its
// samples are all elsewhere — in this member's replacement parts too, which are moved. Moving it
// would copy it, unmarked, to a member that then serves and re-merges it for nothing.
func LocalBlocks(bucketDir string) ([]LocalBlock, error) {
	tenants, err := os.ReadDir(bucketDir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("blocksvc: bucket %s: %w", bucketDir, err)
	}
	var out []LocalBlock
	for _, t := range tenants {
		if !t.IsDir() || tenant.Validate(t.Name()) != nil {
			continue
		}
		ents, err := os.ReadDir(filepath.Join(bucketDir, t.Name()))
		if err != nil {
			return nil, fmt.Errorf("blocksvc: bucket %s: %w", bucketDir, err)
		}
		for _, e := range ents {
			id, err := ulid.ParseStrict(e.Name())
			if err != nil || !e.IsDir() {
				continue
			}
			dir := filepath.Join(bucketDir, t.Name(), e.Name())
			fi, err := os.Stat(filepath.Join(dir, storage.MetaFilename))
			if errors.Is(err, fs.ErrNotExist) {
				continue // partial: an upload that never finished
			}
			if err != nil {
				return nil, fmt.Errorf("blocksvc: bucket %s: %w", bucketDir, err)
			}
			if _, err := os.Stat(filepath.Join(dir, storage.DeletionMarkFilename)); err == nil {
				continue // marked for deletion: its data is in its replacement
			} else if !errors.Is(err, fs.ErrNotExist) {
				return nil, fmt.Errorf("blocksvc: bucket %s: %w", bucketDir, err)
			}
			files, err := LocalFiles(dir)
			if err != nil {
				return nil, fmt.Errorf("blocksvc: bucket %s: %w", bucketDir, err)
			}
			b := LocalBlock{Tenant: t.Name(), ID: id, Dir: dir, Bytes: fi.Size()}
			for _, f := range files {
				b.Bytes += f.SizeBytes
			}
			out = append(out, b)
		}
	}
	return out, nil
}

// Target is a member a Mover stores blocks on.
type Target struct {
	ID   string
	Addr string // its gRPC address
}

// Moved sums up what a Mover did.
type Moved struct {
	Blocks         int   // local blocks handled
	Copies         int   // blocks made durable on a target (a block on two targets counts twice)
	AlreadyPresent int   // of Copies, those the target had before
	Bytes          int64 // bytes of the copies sent (already present ones not included)
}

// Mover sends the blocks of a leaving member's node-local bucket to other members.
type Mover struct {
	// BucketDir is this member's filesystem bucket directory.
	BucketDir string
	// Client returns a Blocks client of the member at a gRPC address (pooled by the caller).
	Client  func(addr string) (blockspb.BlocksClient, error)
	Metrics *Metrics
	Logger  *slog.Logger
	// Attempts is how many times a block is offered to one target before the target is given up
	// for the rest of the move (0: 3). Backoff is the first wait between attempts, doubling (0: 500ms).
	Attempts int
	Backoff  time.Duration
}

func (m *Mover) attempts() int {
	if m.Attempts > 0 {
		return m.Attempts
	}
	return 3
}

func (m *Mover) log() *slog.Logger {
	if m.Logger == nil {
		return slog.Default()
	}
	return m.Logger
}

// storeTimeout bounds one Store of a block of n bytes: 30s, plus a second per MiB. A member that
// takes a block slower than 1 MiB/s, or does not answer at all (a network that drops packets
// leaves the stream hanging, not failing), is taken as failing; receiving and verifying runs at
// about 120 MB/s (BenchmarkStoreBlock).
func storeTimeout(n int64) time.Duration { return 30*time.Second + time.Duration(n>>20)*time.Second }

// errGone: a local block was marked for deletion, or deleted (its meta.json first), while it was
// being moved — the compactor replaced it, and the merged block is elsewhere already. It is
// skipped, not retried.
var errGone = errors.New("blocksvc: the block was marked for deletion or deleted in the local bucket while it was being moved")

// gone reports whether b is marked for deletion or its meta.json is no longer in the local bucket.
func (b LocalBlock) gone() bool {
	if _, err := os.Stat(filepath.Join(b.Dir, storage.DeletionMarkFilename)); err == nil {
		return true
	}
	_, err := os.Stat(filepath.Join(b.Dir, storage.MetaFilename))
	return errors.Is(err, fs.ErrNotExist)
}

// storeWithRetry stores b on t, up to Attempts times with doubling backoff. It returns errGone,
// without blaming t, when b was deleted locally meanwhile.
func (m *Mover) storeWithRetry(ctx context.Context, b LocalBlock, t Target) (present bool, err error) {
	wait := m.Backoff
	if wait <= 0 {
		wait = 500 * time.Millisecond
	}
	for attempt := range m.attempts() {
		if attempt > 0 {
			timer := time.NewTimer(wait)
			select {
			case <-timer.C:
			case <-ctx.Done():
				timer.Stop()
				return false, ctx.Err()
			}
			wait *= 2
		}
		if b.gone() {
			return false, errGone
		}
		var c blockspb.BlocksClient
		if c, err = m.Client(t.Addr); err != nil {
			err = fmt.Errorf("member %s at %s: %w", t.ID, t.Addr, err)
			continue
		}
		sctx, cancel := context.WithTimeout(ctx, storeTimeout(b.Bytes))
		present, err = Store(sctx, c, b.Tenant, b.Dir)
		cancel()
		if err == nil {
			m.Metrics.sentBlocks.Inc()
			if !present {
				m.Metrics.sentBytes.Add(float64(b.Bytes))
			}
			return present, nil
		}
		if ctx.Err() != nil {
			return false, ctx.Err()
		}
		m.log().Warn("could not store a block on a member; retrying", "tenant", b.Tenant, "block", b.ID,
			"member", t.ID, "attempt", attempt+1, "of", m.attempts(), "err", err)
	}
	return false, err
}

// HandOver stores every local block on the joiner of a hand-over, and returns when each is durable
// there. Any block that cannot be stored fails the hand-over attempt (the leaver aborts and tries
// again, with this joiner or another).
func (m *Mover) HandOver(ctx context.Context, joiner Target) (Moved, error) {
	blocks, err := LocalBlocks(m.BucketDir)
	if err != nil {
		return Moved{}, err
	}
	var mv Moved
	start := time.Now()
	for _, b := range blocks {
		present, err := m.storeWithRetry(ctx, b, joiner)
		if errors.Is(err, errGone) || (err != nil && b.gone()) {
			m.log().Info("block deleted locally while handed over (compacted); skipped", "tenant", b.Tenant, "block", b.ID)
			continue
		}
		if err != nil {
			return mv, fmt.Errorf("blocksvc: hand block %s of tenant %q over to %s: %w", b.ID, b.Tenant, joiner.ID, err)
		}
		mv.add(b, present)
		m.Metrics.moved.WithLabelValues("handover").Inc()
	}
	mv.Blocks = len(blocks)
	m.log().Info("blocks handed over", "joiner", joiner.ID, "blocks", mv.Blocks, "already_present", mv.AlreadyPresent,
		"bytes", mv.Bytes, "took", time.Since(start).Round(time.Millisecond))
	return mv, nil
}

func (mv *Moved) add(b LocalBlock, present bool) {
	mv.Copies++
	if present {
		mv.AlreadyPresent++
	} else {
		mv.Bytes += b.Bytes
	}
}

// ErrStranded is returned by Evacuate when a block could be stored on no other member: the leaver
// must not leave.
var ErrStranded = errors.New("blocksvc: a block could be stored on no other member")

// Evacuate stores every local block on every target (the members that take over this member's
// data), and returns once each is durable there. A target that fails a block Attempts times is
// given up for the rest of the move, and for each block it should have taken the first spare (a
// remaining member that is not a target) that takes it stands in. A block that ends on fewer
// members than there were targets is logged; one that ends on none fails the move (ErrStranded)
// after every block was tried: the caller must not leave, and retries later. Without targets,
// the spares are the targets. Blocks are
// immutable and stores idempotent, so a retried move sends only what the targets lack.
func (m *Mover) Evacuate(ctx context.Context, targets, spares []Target) (Moved, error) {
	blocks, err := LocalBlocks(m.BucketDir)
	if err != nil {
		return Moved{}, err
	}
	if len(targets) == 0 {
		// Every remaining member already replicates each of this member's ranges (a cluster of at
		// most RF members): none enters a replication set, so every remaining one is a target.
		targets, spares = spares, nil
	}
	var (
		mv       = Moved{Blocks: len(blocks)}
		failed   = map[string]error{} // targets and spares given up, with their last error
		stranded []string
		start    = time.Now()
	)
	for _, b := range blocks {
		holders, want := 0, len(targets)
		queue := slices.Clone(targets)
		used := map[string]bool{}
		for _, t := range targets {
			used[t.ID] = true
		}
		for len(queue) > 0 {
			t := queue[0]
			queue = queue[1:]
			if failed[t.ID] == nil {
				present, err := m.storeWithRetry(ctx, b, t)
				if err == nil {
					holders++
					mv.add(b, present)
					m.Metrics.moved.WithLabelValues("leave").Inc()
					continue
				}
				if ctx.Err() != nil {
					return mv, ctx.Err()
				}
				if errors.Is(err, errGone) || b.gone() {
					holders = -1 // nothing to keep
					break
				}
				failed[t.ID] = err
				m.log().Warn("giving up storing blocks on a member for this leave", "member", t.ID, "err", err)
			}
			// t cannot take it: the first spare not yet asked for this block stands in.
			for _, sp := range spares {
				if !used[sp.ID] && failed[sp.ID] == nil {
					used[sp.ID] = true
					queue = append(queue, sp)
					break
				}
			}
		}
		switch {
		case holders < 0:
			m.log().Info("block deleted locally while moved (compacted); skipped", "tenant", b.Tenant, "block", b.ID)
		case holders == 0:
			stranded = append(stranded, fmt.Sprintf("%s/%s", b.Tenant, b.ID))
		case holders < want:
			m.log().Warn("block stored on fewer members than take over this member's data", "tenant", b.Tenant,
				"block", b.ID, "members", holders, "wanted", want)
		}
	}
	if len(stranded) > 0 {
		var errs []error
		for id, err := range failed {
			errs = append(errs, fmt.Errorf("%s: %w", id, err))
		}
		return mv, fmt.Errorf("%w: %d of %d blocks (first %s); %d targets, %d spares: %w", ErrStranded, len(stranded), len(blocks),
			stranded[0], len(targets), len(spares), errors.Join(errs...))
	}
	m.log().Info("blocks moved to the members that take over this member's data", "blocks", mv.Blocks,
		"copies", mv.Copies, "already_present", mv.AlreadyPresent, "bytes", mv.Bytes, "targets", len(targets),
		"took", time.Since(start).Round(time.Millisecond))
	return mv, nil
}
