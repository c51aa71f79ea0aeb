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
	"strconv"
	"time"

	"github.com/oklog/ulid/v2"
	"github.com/prometheus/prometheus/model/labels"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

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
	// WorkDir is where Evacuate splits blocks by series; it is emptied when a move starts and
	// removed when it ends, so nothing else may live there ("": blocks-evacuate beside BucketDir).
	WorkDir string
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
// without blaming t, when gone reports that the local block b comes from was marked or deleted
// meanwhile. A member that answers FailedPrecondition (it is leaving, and takes no block any more)
// is not asked again.
func (m *Mover) storeWithRetry(ctx context.Context, b LocalBlock, t Target, gone func() bool) (present bool, err error) {
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
		var c blockspb.BlocksClient
		if c, err = m.Client(t.Addr); err != nil {
			err = fmt.Errorf("member %s at %s: %w", t.ID, t.Addr, err)
			continue
		}
		// As late as possible: a part split from a block reads nothing of it any more, so only
		// this check keeps a replaced block from being copied again.
		if gone() {
			return false, errGone
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
		if status.Code(err) == codes.FailedPrecondition {
			return false, fmt.Errorf("member %s refuses blocks: %w", t.ID, err)
		}
		m.log().Warn("could not store a block on a member; retrying", "tenant", b.Tenant, "block", b.ID,
			"member", t.ID, "attempt", attempt+1, "of", m.attempts(), "err", err)
	}
	return false, err
}

// blockKey names a block of a bucket in a Mover's bookkeeping.
func blockKey(b LocalBlock) string { return b.Tenant + "/" + b.ID.String() }

// maxPasses bounds the listings of one move. A leaver takes no writes and flushes nothing new once
// it moves, so blocks appear only from StoreBlock calls that were under way when it began to
// refuse them: two passes normally, a third when one landed during the first.
const maxPasses = 100

// passes calls do with every block of the bucket not handled by an earlier pass, listing the
// bucket again after each pass, until a listing finds nothing new: a block that lands in the
// bucket while the move runs (a compacted part stored before this member refused blocks, a flush
// that finished late) is moved too, instead of staying on this member when it exits. It returns
// the number of blocks handled.
func (m *Mover) passes(ctx context.Context, do func(LocalBlock) error) (int, error) {
	done := map[string]bool{}
	for pass := 1; ; pass++ {
		blocks, err := LocalBlocks(m.BucketDir)
		if err != nil {
			return len(done), err
		}
		var fresh []LocalBlock
		for _, b := range blocks {
			if !done[blockKey(b)] {
				fresh = append(fresh, b)
			}
		}
		if len(fresh) == 0 {
			return len(done), nil
		}
		if pass > maxPasses {
			return len(done), fmt.Errorf("blocksvc: new blocks keep appearing in the bucket after %d listings (%d new, first %s)",
				maxPasses, len(fresh), blockKey(fresh[0]))
		}
		if pass > 1 {
			m.log().Info("blocks appeared in the bucket while it was being moved; moving them too", "pass", pass, "blocks", len(fresh))
		}
		for _, b := range fresh {
			done[blockKey(b)] = true
			if err := do(b); err != nil {
				return len(done), err
			}
			if err := ctx.Err(); err != nil {
				return len(done), err
			}
		}
	}
}

// HandOver stores every local block on the joiner of a hand-over, and returns when each is durable
// there — listing the bucket again after each pass, so a block that landed meanwhile goes too. Any
// block that cannot be stored fails the hand-over attempt (the leaver aborts and tries again, with
// this joiner or another).
func (m *Mover) HandOver(ctx context.Context, joiner Target) (Moved, error) {
	var mv Moved
	start := time.Now()
	n, err := m.passes(ctx, func(b LocalBlock) error {
		present, err := m.storeWithRetry(ctx, b, joiner, b.gone)
		if errors.Is(err, errGone) || (err != nil && b.gone()) {
			m.log().Info("block deleted locally while handed over (compacted); skipped", "tenant", b.Tenant, "block", b.ID)
			return nil
		}
		if err != nil {
			return fmt.Errorf("blocksvc: hand block %s of tenant %q over to %s: %w", b.ID, b.Tenant, joiner.ID, err)
		}
		mv.add(b, present)
		m.Metrics.moved.WithLabelValues("handover").Inc()
		return nil
	})
	mv.Blocks = n
	if err != nil {
		return mv, err
	}
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

// ErrStranded is returned by Evacuate when some series of a block could be stored on no other
// member: the leaver must not leave.
var ErrStranded = errors.New("blocksvc: a block could be stored on no other member")

// Placement chooses the member that takes a leaver's copy of one series of tenant in the flush
// fallback: the member that enters the series' replication set when the leaver is gone
// (ringstate's LeaveSuccessor), passing over the members skip reports (those that could not take
// a block during this move) for another ACTIVE member that does not hold the series already. ok
// is false when no member can take it. It must be safe to call from one goroutine at a time.
type Placement func(tenant string, lset labels.Labels, skip func(memberID string) bool) (t Target, ok bool)

// workDir is where Evacuate writes the parts it splits blocks into.
func (m *Mover) workDir() string {
	if m.WorkDir != "" {
		return m.WorkDir
	}
	return filepath.Join(filepath.Dir(filepath.Clean(m.BucketDir)), "blocks-evacuate")
}

// Evacuate moves every local block to the members that take over this member's series, and
// returns once each series is durable on the member place chose for it. Each block is split by
// series (storage.SplitBlock, as the compactor splits its results) and each series sent to one
// member only — its successor, the member that enters its replication set once this one is gone —
// so a leave writes about one copy of this member's data in total and every series it held
// regains RF distinct copies. The parts keep the block's compaction (level, sources) and its
// compaction group (the block's own ULID for a flushed block), so the planner reads them as the
// one block they replace.
//
// A member that fails a part Attempts times, or refuses blocks (it is leaving too), is given up
// for the rest of the move: its part is split again and each of its series goes where place says
// with that member skipped. A block with a series no member can take is stranded; Evacuate tries
// every block, then fails with ErrStranded: the caller must not leave, and retries later. The
// bucket is listed again after each pass (see HandOver). A retried move sends the parts again
// under new ULIDs: the duplicates are harmless (queries merge replicas; the compactor merges
// them away).
func (m *Mover) Evacuate(ctx context.Context, place Placement) (Moved, error) {
	work := m.workDir()
	if err := os.RemoveAll(work); err != nil {
		return Moved{}, fmt.Errorf("blocksvc: evacuation work directory: %w", err)
	}
	if err := os.MkdirAll(work, 0o755); err != nil {
		return Moved{}, fmt.Errorf("blocksvc: evacuation work directory: %w", err)
	}
	defer os.RemoveAll(work)
	var (
		mv       Moved
		failed   = map[string]error{} // members given up, with their last error
		stranded []string
		start    = time.Now()
		seq      int
	)
	n, err := m.passes(ctx, func(b LocalBlock) error {
		seq++
		err := m.placeSeries(ctx, b, b.Dir, filepath.Join(work, strconv.Itoa(seq)), place, failed, &mv)
		switch {
		case ctx.Err() != nil:
			return ctx.Err()
		case errors.Is(err, errGone) || (err != nil && b.gone()):
			m.log().Info("block deleted locally while moved (compacted); skipped", "tenant", b.Tenant, "block", b.ID)
		case err != nil:
			m.log().Error("block could not be moved to the members that take over its series", "tenant", b.Tenant,
				"block", b.ID, "err", err)
			stranded = append(stranded, fmt.Sprintf("%s: %v", blockKey(b), err))
		default:
			m.Metrics.moved.WithLabelValues("leave").Inc()
		}
		return nil
	})
	mv.Blocks = n
	if err != nil {
		return mv, err
	}
	if len(stranded) > 0 {
		var errs []error
		for _, id := range sortedMapKeys(failed) {
			errs = append(errs, fmt.Errorf("%s: %w", id, failed[id]))
		}
		return mv, fmt.Errorf("%w: %d of %d blocks (first %s); members given up: %w", ErrStranded, len(stranded), n,
			stranded[0], errors.Join(errs...))
	}
	m.log().Info("blocks moved, each series to the member that takes it over", "blocks", mv.Blocks, "parts", mv.Copies,
		"already_present", mv.AlreadyPresent, "bytes", mv.Bytes, "members_given_up", sortedMapKeys(failed),
		"took", time.Since(start).Round(time.Millisecond))
	return mv, nil
}

// placeSeries splits the block in src (b itself, or a part of it) into one part per member place
// chooses, under out, and stores each part on its member. A part whose member fails is split
// again, with that member skipped; each round gives up at least one more member, so the recursion
// is at most as deep as there are members.
func (m *Mover) placeSeries(ctx context.Context, b LocalBlock, src, out string, place Placement, failed map[string]error, mv *Moved) error {
	raw, err := os.ReadFile(filepath.Join(src, storage.MetaFilename))
	if err != nil {
		return fmt.Errorf("reading its meta.json: %w", err)
	}
	meta, err := storage.ReadMeta(raw)
	if err != nil {
		return fmt.Errorf("reading its meta.json: %w", err)
	}
	group := storage.CompactionGroup(&meta.BlockMeta)
	if group == "" {
		// A flushed block is its own group, keyed by its ULID: its parts, one per member, are read
		// by the planner as that one block.
		group = meta.ULID.String()
	}
	skip := func(id string) bool { return failed[id] != nil }
	targets := map[string]Target{}
	var (
		unplaced      int
		firstUnplaced labels.Labels
	)
	parts, err := storage.SplitBlock(ctx, src, out, storage.SplitOptions{Tenant: b.Tenant, Group: group, Logger: m.log(),
		Place: func(lset labels.Labels) []string {
			t, ok := place(b.Tenant, lset, skip)
			if !ok {
				if unplaced == 0 {
					firstUnplaced = lset.Copy()
				}
				unplaced++
				return nil
			}
			targets[t.ID] = t
			return []string{t.ID}
		}})
	if err != nil {
		return fmt.Errorf("splitting it by series: %w", err)
	}
	defer os.RemoveAll(out)
	if unplaced > 0 {
		return fmt.Errorf("%d series (first %s) have no member left to take them", unplaced, firstUnplaced)
	}
	for _, id := range sortedMapKeys(parts) {
		pm := parts[id]
		pdir := filepath.Join(out, id, pm.ULID.String())
		bytes, err := blockBytes(pdir)
		if err != nil {
			return err
		}
		part := LocalBlock{Tenant: b.Tenant, ID: pm.ULID, Dir: pdir, Bytes: bytes}
		present, err := m.storeWithRetry(ctx, part, targets[id], b.gone)
		switch {
		case err == nil:
			mv.add(part, present)
			continue
		case errors.Is(err, errGone) || ctx.Err() != nil:
			return err
		}
		failed[id] = err
		m.log().Warn("giving up storing blocks on a member for this leave; its series go to other members",
			"member", id, "err", err)
		if err := m.placeSeries(ctx, b, pdir, filepath.Join(out, id+"-again"), place, failed, mv); err != nil {
			return err
		}
	}
	return nil
}

// blockBytes sums the sizes of a local block's files, meta.json included.
func blockBytes(dir string) (int64, error) {
	fi, err := os.Stat(filepath.Join(dir, storage.MetaFilename))
	if err != nil {
		return 0, err
	}
	files, err := LocalFiles(dir)
	if err != nil {
		return 0, err
	}
	n := fi.Size()
	for _, f := range files {
		n += f.SizeBytes
	}
	return n, nil
}

func sortedMapKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
