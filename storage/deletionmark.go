package storage

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/oklog/ulid/v2"
	"github.com/thanos-io/objstore"

	"github.com/raftingest/raftingest/tenant"
)

// Deletion marks, as Thanos and Mimir write them: a block that a compaction replaced (or that
// retention expired) is not deleted at once but marked with <tenant>/<ULID>/deletion-mark.json. A
// marked block stays complete and readable — every reader keeps serving it, and the replica merge
// drops what it shares with its replacement — so a query that listed the blocks of one member or
// bucket before the replacement arrived there, and reads another member or the sources after, still
// sees every sample. It is deleted for real by a sweeper (SweepDeletionMarked) once the mark is
// older than the deletion delay (-compactor.deletion-delay), which outlasts the longest query.
//
// Crash safety: a mark is written only after the replacement is durable (the compactor's order), and
// it is durable itself before MarkForDeletion returns (the filesystem bucket fsyncs every upload,
// S3 acknowledges a PUT once stored). DeleteBlock removes meta.json first — readers ignore a block
// without it from then on — and the mark last, so a sweep killed half-way leaves a marked block
// that the next sweep finishes.
const (
	// DeletionMarkFilename is the mark's name inside the block directory (Thanos's).
	DeletionMarkFilename = "deletion-mark.json"
	// DeletionMarkVersion1 is the only version of the mark's format.
	DeletionMarkVersion1 = 1
	// maxDeletionMarkBytes bounds a mark read from a bucket (a real one is about 100 bytes).
	maxDeletionMarkBytes = 64 << 10
)

// DeletionMark is deletion-mark.json (thanos-io/thanos pkg/block/metadata.DeletionMark).
type DeletionMark struct {
	// ID is the marked block's ULID.
	ID ulid.ULID `json:"id"`
	// DeletionTime is when the block was marked, in Unix seconds (Thanos's unit): the sweeper
	// deletes it once DeletionTime + the deletion delay has passed.
	DeletionTime int64 `json:"deletion_time"`
	// Version is DeletionMarkVersion1.
	Version int `json:"version"`
	// Details says why the block was marked (optional, for people).
	Details string `json:"details,omitempty"`
}

// DeletableAt is when the sweeper may delete the marked block, given the deletion delay.
func (m DeletionMark) DeletableAt(delay time.Duration) time.Time {
	return time.Unix(m.DeletionTime, 0).Add(delay)
}

// ErrInvalidDeletionMark wraps a deletion-mark.json that does not decode, has another version, or
// names another block.
var ErrInvalidDeletionMark = errors.New("storage: invalid deletion mark")

// ReadDeletionMark reads the deletion mark of block id of tenantID; found is false when the block
// has none. A mark that does not check is an error wrapping ErrInvalidDeletionMark.
func ReadDeletionMark(ctx context.Context, bkt objstore.BucketReader, tenantID string, id ulid.ULID) (m DeletionMark, found bool, err error) {
	key, err := BlockKey(tenantID, id, DeletionMarkFilename)
	if err != nil {
		return m, false, err
	}
	rc, err := bkt.Get(ctx, key)
	if err != nil {
		if bkt.IsObjNotFoundErr(err) {
			return m, false, nil
		}
		return m, false, fmt.Errorf("storage: reading %s: %w", key, err)
	}
	defer rc.Close()
	raw, err := io.ReadAll(io.LimitReader(rc, maxDeletionMarkBytes+1))
	if err != nil {
		return m, true, fmt.Errorf("storage: reading %s: %w", key, err)
	}
	if len(raw) > maxDeletionMarkBytes {
		return m, true, fmt.Errorf("%w: %s is larger than %d bytes", ErrInvalidDeletionMark, key, maxDeletionMarkBytes)
	}
	if err := json.Unmarshal(raw, &m); err != nil {
		return m, true, fmt.Errorf("%w: %s: %v", ErrInvalidDeletionMark, key, err)
	}
	if m.Version != DeletionMarkVersion1 || m.ID != id {
		return m, true, fmt.Errorf("%w: %s: version %d for block %s, want version %d for block %s", ErrInvalidDeletionMark,
			key, m.Version, m.ID, DeletionMarkVersion1, id)
	}
	return m, true, nil
}

// IsMarkedForDeletion reports whether block id of tenantID has a deletion-mark.json (valid or
// not: a mark that does not decode was still written by someone who meant the block to go, and
// such a block is offered to nobody; the sweeper leaves it, logged).
func IsMarkedForDeletion(ctx context.Context, bkt objstore.BucketReader, tenantID string, id ulid.ULID) (bool, error) {
	key, err := BlockKey(tenantID, id, DeletionMarkFilename)
	if err != nil {
		return false, err
	}
	ok, err := bkt.Exists(ctx, key)
	if err != nil {
		return false, fmt.Errorf("storage: %s: %w", key, err)
	}
	return ok, nil
}

// MarkForDeletion marks block id of tenantID for deletion at now, durably (see the package's
// deletion marks). marked is false when nothing was written: the block has no meta.json (absent,
// partial or being deleted: nothing to keep readable), or it is marked already (the first mark's
// time stands, so retrying never postpones a deletion).
func MarkForDeletion(ctx context.Context, bkt objstore.Bucket, tenantID string, id ulid.ULID, now time.Time, details string) (marked bool, err error) {
	metaKey, err := BlockKey(tenantID, id, MetaFilename)
	if err != nil {
		return false, err
	}
	markKey, err := BlockKey(tenantID, id, DeletionMarkFilename)
	if err != nil {
		return false, err
	}
	// Some buckets (objstore's filesystem one) answer an absent object without an error: ask.
	switch ok, err := bkt.Exists(ctx, metaKey); {
	case err != nil:
		return false, fmt.Errorf("storage: marking block %s of tenant %q: %w", id, tenantID, err)
	case !ok:
		return false, nil
	}
	switch ok, err := bkt.Exists(ctx, markKey); {
	case err != nil:
		return false, fmt.Errorf("storage: marking block %s of tenant %q: %w", id, tenantID, err)
	case ok:
		return false, nil
	}
	raw, err := json.Marshal(DeletionMark{ID: id, DeletionTime: now.Unix(), Version: DeletionMarkVersion1, Details: details})
	if err != nil {
		return false, fmt.Errorf("storage: encoding the deletion mark of block %s: %w", id, err)
	}
	if err := bkt.Upload(ctx, markKey, bytes.NewReader(raw)); err != nil {
		return false, fmt.Errorf("storage: marking block %s of tenant %q for deletion in bucket %s: %w", id, tenantID, bkt.Name(), err)
	}
	return true, nil
}

// DeleteBlock deletes every object of block id of tenantID: meta.json first (a reader ignores the
// block from then on, and nothing lists it), then every other file, then its deletion mark last, so
// that a deletion cut short leaves a marked block the sweeper finds again. Absent objects are not an
// error; had reports whether meta.json was there.
func DeleteBlock(ctx context.Context, bkt objstore.Bucket, tenantID string, id ulid.ULID) (had bool, err error) {
	metaKey, err := BlockKey(tenantID, id, MetaFilename)
	if err != nil {
		return false, err
	}
	markKey, err := BlockKey(tenantID, id, DeletionMarkFilename)
	if err != nil {
		return false, err
	}
	prefix := strings.TrimSuffix(metaKey, MetaFilename)
	del := func(key string) error {
		if err := bkt.Delete(ctx, key); err != nil && !bkt.IsObjNotFoundErr(err) {
			return fmt.Errorf("storage: deleting %s: %w", key, err)
		}
		return nil
	}
	// Some buckets (objstore's filesystem one) delete an absent object without an error: ask first.
	if had, err = bkt.Exists(ctx, metaKey); err != nil {
		return false, fmt.Errorf("storage: deleting block %s of tenant %q: %w", id, tenantID, err)
	}
	if had {
		if err := del(metaKey); err != nil {
			return false, err
		}
	}
	var rest []string
	if err := bkt.Iter(ctx, prefix, func(name string) error {
		if !strings.HasSuffix(name, objstore.DirDelim) && name != markKey && name != metaKey {
			rest = append(rest, name)
		}
		return nil
	}, objstore.WithRecursiveIter()); err != nil {
		return had, fmt.Errorf("storage: listing block %s of tenant %q: %w", id, tenantID, err)
	}
	for _, name := range rest {
		if err := del(name); err != nil {
			return had, err
		}
	}
	return had, del(markKey)
}

// Swept is one block SweepDeletionMarked deleted.
type Swept struct {
	Tenant string
	ID     ulid.ULID
	// MarkedAt is the mark's deletion time; for a partial block, the time its newest object was
	// written.
	MarkedAt time.Time
	// Partial: the block had neither meta.json nor a deletion mark (an upload or a deletion cut
	// short by a crash) and nothing had been written to it for the delay.
	Partial bool
}

// BlockLocks serialises the writers of one block directory of a bucket: a StoreBlock that
// (re-)uploads a block under a known ULID (hand-over and Mover retries reuse ULIDs) and the sweep
// that deletes a marked or partial block of that ULID. Without it a sweep could judge a directory
// partial (or marked), then delete, object by object, what a new upload had just written there —
// leaving a meta.json with missing files, or deleting a block acknowledged as durable. The zero
// value is ready; a nil *BlockLocks locks nothing.
type BlockLocks struct {
	mu   sync.Mutex
	held map[string]*blockLock
}

type blockLock struct {
	mu   sync.Mutex
	refs int // holders and waiters; the entry goes when it drops to 0
}

// Lock locks block id of tenantID and returns its unlock.
func (l *BlockLocks) Lock(tenantID string, id ulid.ULID) (unlock func()) {
	if l == nil {
		return func() {}
	}
	k := tenantID + "/" + id.String()
	l.mu.Lock()
	if l.held == nil {
		l.held = map[string]*blockLock{}
	}
	bl := l.held[k]
	if bl == nil {
		bl = &blockLock{}
		l.held[k] = bl
	}
	bl.refs++
	l.mu.Unlock()
	bl.mu.Lock()
	return func() {
		bl.mu.Unlock()
		l.mu.Lock()
		if bl.refs--; bl.refs == 0 {
			delete(l.held, k)
		}
		l.mu.Unlock()
	}
}

// SweepDeletionMarked is SweepDeletionMarkedLocked without locks: for a bucket no StoreBlock
// writes into under a ULID that may have been there before (a shared bucket).
func SweepDeletionMarked(ctx context.Context, bkt objstore.Bucket, delay time.Duration, now time.Time, log *slog.Logger) ([]Swept, error) {
	return SweepDeletionMarkedLocked(ctx, bkt, delay, now, log, nil)
}

// SweepDeletionMarkedLocked deletes (DeleteBlock) every block of bkt whose deletion mark is at
// least delay old at now, and returns them. Blocks with a younger mark, or with a mark that does not
// decode (logged: a person should look) are left, and so are complete blocks without a mark.
//
// It also deletes the remains of a partial block — a block directory with neither meta.json nor a
// deletion mark, none of whose objects was written in the last delay: an upload that a crash cut
// short before its meta.json (uploads write it last), or a deletion cut short after meta.json went
// by a path that keeps no mark (DeletePartialBlock after a failed upload). Nothing else reads or
// lists such a directory, so without this it would stay for ever. An upload in progress writes an
// object at least every few seconds, far within any delay, and is left alone.
//
// Each block is judged again, and deleted, under locks.Lock of its ULID, which a StoreBlock holds
// while it uploads (see BlockLocks): what the first look saw may have been replaced by a new
// upload of the same ULID since.
//
// Cost: one recursive listing per tenant tells which blocks have a meta.json or a mark; only marked
// blocks are read (their mark) and only partial ones are looked at object by object, so a sweep of
// a bucket of complete blocks makes no request per block (it used to make two: on S3, HEAD and GET
// for each block on every sweep).
//
// It goes on after a block that fails to delete and returns every error joined; what it did not
// delete is found again by the next sweep.
func SweepDeletionMarkedLocked(ctx context.Context, bkt objstore.Bucket, delay time.Duration, now time.Time, log *slog.Logger, locks *BlockLocks) ([]Swept, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	var tenants []string
	if err := bkt.Iter(ctx, "", func(name string) error {
		if t, ok := strings.CutSuffix(name, objstore.DirDelim); ok && tenant.Validate(t) == nil {
			tenants = append(tenants, t)
		}
		return nil
	}); err != nil {
		return nil, fmt.Errorf("storage: sweeping bucket %s: listing tenants: %w", bkt.Name(), err)
	}
	var (
		out  []Swept
		errs []error
	)
	for _, t := range tenants {
		type look struct{ meta, mark bool }
		var ids []ulid.ULID
		seen := map[ulid.ULID]*look{}
		if err := bkt.Iter(ctx, t+objstore.DirDelim, func(name string) error {
			d, rest, ok := strings.Cut(strings.TrimPrefix(name, t+objstore.DirDelim), objstore.DirDelim)
			id, err := ulid.ParseStrict(d)
			if !ok || err != nil || rest == "" || strings.HasSuffix(rest, objstore.DirDelim) {
				return nil // not an object inside a block directory
			}
			lk := seen[id]
			if lk == nil {
				lk = &look{}
				seen[id] = lk
				ids = append(ids, id)
			}
			lk.meta = lk.meta || rest == MetaFilename
			lk.mark = lk.mark || rest == DeletionMarkFilename
			return nil
		}, objstore.WithRecursiveIter()); err != nil {
			errs = append(errs, fmt.Errorf("storage: sweeping bucket %s: listing tenant %q: %w", bkt.Name(), t, err))
			continue
		}
		for _, id := range ids {
			if err := ctx.Err(); err != nil {
				return out, errors.Join(append(errs, err)...)
			}
			lk := seen[id]
			if lk.meta && !lk.mark {
				continue // complete and unmarked: the common case, no request
			}
			sw, err := sweepBlock(ctx, bkt, t, id, delay, now, log, locks)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			if sw != nil {
				out = append(out, *sw)
			}
		}
	}
	return out, errors.Join(errs...)
}

// sweepBlock deletes block id of tenantID, under its lock, if it is marked for at least delay or
// partial and untouched for delay at now; nil when it is left.
func sweepBlock(ctx context.Context, bkt objstore.Bucket, t string, id ulid.ULID, delay time.Duration, now time.Time, log *slog.Logger, locks *BlockLocks) (*Swept, error) {
	unlock := locks.Lock(t, id)
	defer unlock()
	m, found, err := ReadDeletionMark(ctx, bkt, t, id)
	switch {
	case errors.Is(err, ErrInvalidDeletionMark):
		log.Warn("a block's deletion mark does not decode: the block is left in the bucket", "tenant", t, "block", id, "err", err)
		return nil, nil
	case err != nil:
		return nil, err
	case found:
		if now.Before(m.DeletableAt(delay)) {
			return nil, nil
		}
		if _, err := DeleteBlock(ctx, bkt, t, id); err != nil {
			return nil, err
		}
		return &Swept{Tenant: t, ID: id, MarkedAt: time.Unix(m.DeletionTime, 0)}, nil
	}
	p, ok, err := partialSince(ctx, bkt, t, id)
	if err != nil || !ok || now.Before(p.Add(delay)) {
		return nil, err
	}
	if _, err := DeleteBlock(ctx, bkt, t, id); err != nil {
		return nil, err
	}
	log.Info("deleted a partial block (no meta.json, no deletion mark, untouched for the deletion delay)",
		"tenant", t, "block", id, "last_written", p.UTC(), "delay", delay)
	return &Swept{Tenant: t, ID: id, MarkedAt: p, Partial: true}, nil
}

// partialSince reports whether block id of tenantID is partial (it has no meta.json; the caller
// knows it has no deletion mark) and, if so, when its newest object was written. A directory with
// no object at all is not reported: there is nothing to delete.
func partialSince(ctx context.Context, bkt objstore.Bucket, tenantID string, id ulid.ULID) (time.Time, bool, error) {
	metaKey, err := BlockKey(tenantID, id, MetaFilename)
	if err != nil {
		return time.Time{}, false, err
	}
	switch ok, err := bkt.Exists(ctx, metaKey); {
	case err != nil:
		return time.Time{}, false, fmt.Errorf("storage: sweeping block %s of tenant %q: %w", id, tenantID, err)
	case ok:
		return time.Time{}, false, nil
	}
	var (
		newest time.Time
		found  bool
	)
	prefix := strings.TrimSuffix(metaKey, MetaFilename)
	err = bkt.Iter(ctx, prefix, func(name string) error {
		if strings.HasSuffix(name, objstore.DirDelim) {
			return nil
		}
		a, err := bkt.Attributes(ctx, name)
		if bkt.IsObjNotFoundErr(err) {
			return nil // deleted meanwhile
		}
		if err != nil {
			return err
		}
		found = true
		if a.LastModified.After(newest) {
			newest = a.LastModified
		}
		return nil
	}, objstore.WithRecursiveIter())
	if err != nil {
		return time.Time{}, false, fmt.Errorf("storage: sweeping block %s of tenant %q: %w", id, tenantID, err)
	}
	return newest, found, nil
}
