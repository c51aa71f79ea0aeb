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
	"strings"
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
	// Abandoned names the blocks ("<tenant>/<ULID>") left behind because they are corrupt: they do
	// not read here, or a receiver found them invalid (see abandon).
	Abandoned []string
	// Whole counts the blocks sent whole, without a split, for lack of disk space to split them.
	Whole int
}

// abandon records that local block b is left behind because it is corrupt (err says how): it does
// not read here, or a member found it invalid (InvalidArgument), which every member would, since
// all check a block the same way. Retrying it, or offering it to other members, cannot succeed and
// used to give up each member in turn and strand every later block, keeping the leaver LEAVING for
// ever. Leaving it behind loses no sample that queries could read: a querier reading this bucket
// fails on the same corruption, and each of its series has its other replicas, which flushed
// their own copies. It is logged as an error naming the block, and counted in
// raftingest_blocks_unmovable_total{reason="invalid"}.
func (m *Mover) abandon(mv *Moved, b LocalBlock, err error) {
	mv.Abandoned = append(mv.Abandoned, blockKey(b))
	m.Metrics.unmovable.WithLabelValues(refusedInvalid).Inc()
	m.log().Error("a block is corrupt (it does not read here, or a member found it invalid): it is left behind and leaves with this member; its series have their other replicas",
		"tenant", b.Tenant, "block", b.ID, "dir", b.Dir, "err", err)
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
	// MinFreeDiskPercent is the share of WorkDir's filesystem Evacuate keeps free when it splits a
	// block there (the WAL and the bucket usually share it); a block whose split would not fit is
	// sent whole instead (0: none kept).
	MinFreeDiskPercent float64
	// statFS replaces the filesystem statistics in tests (nil: statFS).
	statFS func(dir string) (fsStat, error)
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

// storeTimeout bounds one Store of a block of n bytes. A member that takes a block slower than
// 1 MiB/s, or does not answer at all (a network that drops packets leaves the stream hanging, not
// failing), is taken as failing; receiving and verifying runs at about 120 MB/s
// (BenchmarkStoreBlock). It is never shorter than what a receiver with the default configuration
// may take without failing: up to DefaultIdleTimeout waiting for a store slot, then
// DefaultIdleTimeout plus the size at DefaultMinStoreRate to receive; 10s more for verifying and
// uploading. It used to be 30s plus a second per MiB, so a small store waiting its turn at a busy
// member timed out on the sender after 30s, and the member was given up.
func storeTimeout(n int64) time.Duration {
	return 2*DefaultIdleTimeout + 10*time.Second + time.Duration(float64(max(n, 0))/DefaultMinStoreRate*float64(time.Second))
}

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

// refusedError is a store refused because of the block, not the member (refusalOf): the block
// is corrupt (refusedInvalid) or above the receiver's size limit (refusedTooLarge). The Mover
// gives up the block, never the member.
type refusedError struct {
	reason string // refusedInvalid or refusedTooLarge
	err    error
}

func (e *refusedError) Error() string { return e.err.Error() }
func (e *refusedError) Unwrap() error { return e.err }

// refusal returns why err says the block itself cannot be moved: refusedInvalid when a receiver
// found it invalid or it does not read here (storage.ErrUnreadableBlock), refusedTooLarge when it
// is above a receiver's size limit, "" otherwise.
func refusal(err error) string {
	var re *refusedError
	switch {
	case errors.As(err, &re):
		return re.reason
	case errors.Is(err, storage.ErrUnreadableBlock):
		return refusedInvalid
	}
	return ""
}

// storeWithRetry stores b on t, up to Attempts times with doubling backoff. It returns errGone,
// without blaming t, when gone reports that the local block b comes from was marked or deleted
// meanwhile. A member that answers FailedPrecondition (it is leaving, and takes no block any more)
// is not asked again, and neither is one that refuses the block itself (a *refusedError: it is
// invalid or too large, which every member would answer).
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
		if r := refusalOf(err); r != "" {
			// Every member checks a block the same way: asking again, or another member, is no use.
			return false, &refusedError{reason: r, err: fmt.Errorf("member %s refuses the block itself: %w", t.ID, err)}
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
		if refusal(err) == refusedInvalid {
			// The joiner found the block corrupt; every member would. See abandon.
			m.abandon(&mv, b, err)
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

// maxNamedStranded bounds the stranded blocks an Evacuate error names (all are logged).
const maxNamedStranded = 10

// ErrStranded is returned by Evacuate when some series of a block could be stored on no other
// member, or a block is above the size limit of the members that must take it: the leaver must
// not leave.
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
// regains RF distinct copies.
//
// The parts keep the block's level and sources but get a compaction group of this move's own
// (storage.LeaveGroup: "<the block's group>/leave-<move ULID>"): the planner then finds the
// block's window holding two groups and merges it once more, which removes what a leave cannot
// get right on its own — duplicates of a retried or interrupted move (parts are re-sent under new
// ULIDs), a series two leavers at once both sent to the same member — and puts each series back
// on exactly its replication set. Keeping the block's group made the window look compacted, and
// such copies stayed for ever.
//
// A block is split in WorkDir, which needs up to about twice its size free there (its parts, and
// a second split of one that a member failed) on top of MinFreeDiskPercent; when that is not free
// (a leaver draining a full disk) the block is sent whole, unsplit, to every member place names
// for one of its series (more bytes on the wire, none on this disk; the re-merge above trims the
// copies).
//
// A member that fails a part Attempts times, or refuses blocks (it is leaving too), is given up
// for the rest of the move: its part is split again and each of its series goes where place says
// with that member skipped. A refusal of the block itself is not held against the member (see
// refusedError): a corrupt block is left behind (Moved.Abandoned, see abandon) and the move goes
// on; a block above a receiver's size limit, or with a series no member can take, is stranded.
// Evacuate tries every block, then fails with ErrStranded naming the stranded blocks: the caller
// must not leave, and retries later. The bucket is listed again after each pass (see HandOver).
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
		move     = ulid.Make() // names this move's compaction groups
	)
	n, err := m.passes(ctx, func(b LocalBlock) error {
		seq++
		err := m.moveBlock(ctx, b, filepath.Join(work, strconv.Itoa(seq)), move, place, failed, &mv)
		switch {
		case ctx.Err() != nil:
			return ctx.Err()
		case errors.Is(err, errGone) || (err != nil && b.gone()):
			m.log().Info("block deleted locally while moved (compacted); skipped", "tenant", b.Tenant, "block", b.ID)
		case refusal(err) == refusedInvalid:
			m.abandon(&mv, b, err)
		case refusal(err) == refusedTooLarge:
			m.Metrics.unmovable.WithLabelValues(refusedTooLarge).Inc()
			m.log().Error("a block is larger than the members that must take it accept: this member stays LEAVING until they do ("+
				tooLargeFlagAdvice+")", "tenant", b.Tenant, "block", b.ID, "bytes", b.Bytes, "err", err)
			stranded = append(stranded, fmt.Sprintf("%s: too large (%d bytes; %s): %v", blockKey(b), b.Bytes, tooLargeFlagAdvice, err))
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
		// Each stranded block was logged with its error; the error names the first few.
		named := stranded
		if len(named) > maxNamedStranded {
			named = append(named[:maxNamedStranded:maxNamedStranded], fmt.Sprintf("and %d more, each logged", len(stranded)-maxNamedStranded))
		}
		return mv, fmt.Errorf("%w: %d of %d blocks (%s); members given up: %v", ErrStranded, len(stranded), n,
			strings.Join(named, "; "), errors.Join(errs...))
	}
	m.log().Info("blocks moved, each series to the member that takes it over", "blocks", mv.Blocks, "parts", mv.Copies,
		"already_present", mv.AlreadyPresent, "bytes", mv.Bytes, "sent_whole", mv.Whole, "abandoned_corrupt", mv.Abandoned,
		"members_given_up", sortedMapKeys(failed), "took", time.Since(start).Round(time.Millisecond))
	return mv, nil
}

// moveBlock moves local block b for Evacuate: split into out when the work directory has room
// (placeSeries), else whole (placeWhole).
func (m *Mover) moveBlock(ctx context.Context, b LocalBlock, out string, move ulid.ULID, place Placement, failed map[string]error, mv *Moved) error {
	raw, err := os.ReadFile(filepath.Join(b.Dir, storage.MetaFilename))
	if err != nil {
		return fmt.Errorf("reading its meta.json: %w", err)
	}
	meta, err := storage.ReadMeta(raw)
	if err != nil {
		return fmt.Errorf("%w: reading its meta.json: %w", storage.ErrUnreadableBlock, err)
	}
	group := storage.CompactionGroup(&meta.BlockMeta)
	if group == "" {
		group = meta.ULID.String() // a flushed block is a group of its own, keyed by its ULID
	}
	if room, why := m.roomToSplit(b.Bytes); !room {
		m.log().Warn("not enough free disk space to split a block by series: sending it whole to every member that takes one of its series",
			"tenant", b.Tenant, "block", b.ID, "bytes", b.Bytes, "why", why)
		return m.placeWhole(ctx, b, place, failed, mv)
	}
	return m.placeSeries(ctx, b, b.Dir, out, storage.LeaveGroup(group, move), place, failed, mv)
}

// roomToSplit reports whether the work directory's filesystem can take a split of a block of n
// bytes: twice n (its parts, and a second split of one part a member failed; parts repeat a little
// index each) with MinFreeDiskPercent of the filesystem still free. A filesystem that cannot tell
// its free space is taken as having room.
func (m *Mover) roomToSplit(n int64) (bool, string) {
	stat := m.statFS
	if stat == nil {
		stat = statFS
	}
	st, err := stat(m.workDir())
	if err != nil {
		return true, ""
	}
	need := 2*uint64(max(n, 0)) + uint64(m.MinFreeDiskPercent/100*float64(st.total))
	if st.free < need {
		return false, fmt.Sprintf("%d bytes free in %s, %d needed (twice the block, and %v%% of the filesystem kept free)",
			st.free, m.workDir(), need, m.MinFreeDiskPercent)
	}
	return true, ""
}

// placeWhole stores local block b, as it is, on every member place names for one of its series
// (reading only its index: nothing is written on this disk). A member that fails is given up and
// the members are chosen again without it, until every series' member holds the block. The copies
// keep the block's ULID and group: each member holding more than its series is harmless (queries
// merge replicas) and trimmed by the compactor's next merge of the window.
func (m *Mover) placeWhole(ctx context.Context, b LocalBlock, place Placement, failed map[string]error, mv *Moved) error {
	stored := map[string]bool{}
	for {
		skip := func(id string) bool { return failed[id] != nil }
		targets := map[string]Target{}
		var unplaced error
		if err := storage.BlockSeries(ctx, b.Dir, func(lset labels.Labels) {
			if t, ok := place(b.Tenant, lset, skip); ok {
				targets[t.ID] = t
			} else if unplaced == nil {
				unplaced = fmt.Errorf("series %s has no member left to take it", lset)
			}
		}); err != nil {
			return err
		}
		if unplaced != nil {
			return unplaced
		}
		again := false
		for _, id := range sortedMapKeys(targets) {
			if stored[id] {
				continue
			}
			present, err := m.storeWithRetry(ctx, b, targets[id], b.gone)
			switch {
			case err == nil:
				stored[id] = true
				mv.add(b, present)
				continue
			case errors.Is(err, errGone) || ctx.Err() != nil || refusal(err) != "":
				return err
			}
			failed[id] = err
			m.log().Warn("giving up storing blocks on a member for this leave; its series go to other members",
				"member", id, "err", err)
			again = true
		}
		if !again {
			mv.Whole++
			return nil
		}
	}
}

// placeSeries splits the block in src (b itself, or a part of it) into one part per member place
// chooses, under out, with compaction group group, and stores each part on its member. A part
// whose member fails is split again, with that member skipped; each round gives up at least one
// more member, so the recursion is at most as deep as there are members. A series place finds no
// member for fails the split (SplitBlock refuses to drop a series).
func (m *Mover) placeSeries(ctx context.Context, b LocalBlock, src, out, group string, place Placement, failed map[string]error, mv *Moved) error {
	skip := func(id string) bool { return failed[id] != nil }
	targets := map[string]Target{}
	parts, err := storage.SplitBlock(ctx, src, out, storage.SplitOptions{Tenant: b.Tenant, Group: group, Logger: m.log(),
		Place: func(lset labels.Labels) []string {
			t, ok := place(b.Tenant, lset, skip)
			if !ok {
				return nil
			}
			targets[t.ID] = t
			return []string{t.ID}
		}})
	if err != nil {
		return fmt.Errorf("splitting it by series: %w", err)
	}
	defer os.RemoveAll(out)
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
		case errors.Is(err, errGone) || ctx.Err() != nil || refusal(err) != "":
			// A refusal of the part itself is the block's, not the member's: another member
			// would refuse it too.
			return err
		}
		failed[id] = err
		m.log().Warn("giving up storing blocks on a member for this leave; its series go to other members",
			"member", id, "err", err)
		if err := m.placeSeries(ctx, b, pdir, filepath.Join(out, id+"-again"), group, place, failed, mv); err != nil {
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
