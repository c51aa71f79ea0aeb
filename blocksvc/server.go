package blocksvc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/oklog/ulid/v2"
	"github.com/thanos-io/objstore"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/raftingest/raftingest/blockspb"
	"github.com/raftingest/raftingest/storage"
	"github.com/raftingest/raftingest/tenant"
)

// Deps are the server's collaborators.
type Deps struct {
	// Bucket is this member's bucket, where received blocks go and whose blocks are served.
	Bucket objstore.Bucket
	// BucketDir is the bucket's directory when it is a filesystem bucket ("" otherwise): its free
	// space is checked before a block is received.
	BucketDir string
	// StagingDir is where StoreBlock writes a block while it receives and verifies it, one
	// subdirectory per call. It is created, and emptied of a crashed process's leftovers, by
	// NewServer: nothing else may live there.
	StagingDir string
	// AuthorizeDelete decides whether a DeleteBlocks call of tenant, fenced by the compactor lease's
	// epoch, may delete: nil or a gRPC status error (any other error is answered
	// FailedPrecondition). It is called for every DeleteBlocks, after the request checked. nil
	// refuses every delete with FailedPrecondition.
	AuthorizeDelete func(ctx context.Context, tenant string, epoch uint64) error
	// DeletionDelay is -compactor.deletion-delay: how long a block marked by DeleteBlocks stays
	// (served, listed nowhere else) before Sweep deletes it. Must be positive.
	DeletionDelay time.Duration
	// Accepting reports whether this member may take blocks now: nil, or why not (StoreBlock then
	// answers FailedPrecondition). The daemon refuses once the ring shows this member LEAVING: a
	// leaver lists its blocks to move them, and a block stored after that listing would leave with
	// it. It still accepts while JOINING (its hand-over peer sends it the leaver's blocks). It is
	// asked before a block is received and again just before it enters the bucket. nil accepts.
	Accepting func() error
	// Progress, when set, is called with the call's context for every message a StoreBlock
	// receives (the header, each piece of at most PieceSize): the daemon counts a hand-over
	// leaver's blocks as activity of its claim, so the joiner does not abort a hand-over whose
	// blocks take longer than -ingester.transfer-timeout. It must be cheap and safe for concurrent
	// use.
	Progress func(ctx context.Context)
	// statFS replaces the filesystem statistics in tests (nil: statFS).
	statFS func(dir string) (fsStat, error)
	// Now is the clock of marks and sweeps (nil: time.Now).
	Now     func() time.Time
	Metrics *Metrics
	Logger  *slog.Logger
}

// Server is the Blocks service over one member's bucket. Safe for concurrent use.
type Server struct {
	blockspb.UnimplementedBlocksServer
	cfg  Config
	d    Deps
	sem  chan struct{} // store slots
	log  *slog.Logger
	disk *diskBudget

	// commit is held shared by a StoreBlock from its last acceptance check until its block is in
	// the bucket (or failed), and exclusively by StopAccepting: once StopAccepting returns, every
	// block a store accepted is in the bucket, and no store accepts another.
	commit  sync.RWMutex
	stopped atomic.Pointer[string] // StopAccepting's reason

	// locks serialise a store's upload with the sweep of the same block (storage.BlockLocks).
	locks storage.BlockLocks
}

var _ blockspb.BlocksServer = (*Server)(nil)

// NewServer validates cfg and d and prepares the staging directory.
func NewServer(cfg Config, d Deps) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if d.Bucket == nil || d.StagingDir == "" || d.Metrics == nil {
		return nil, errors.New("blocksvc: NewServer needs a bucket, a staging directory and metrics")
	}
	if d.DeletionDelay <= 0 {
		return nil, fmt.Errorf("blocksvc: the deletion delay (-compactor.deletion-delay) must be positive, got %s", d.DeletionDelay)
	}
	if d.Logger == nil {
		d.Logger = slog.Default()
	}
	if d.Now == nil {
		d.Now = time.Now
	}
	if err := os.RemoveAll(d.StagingDir); err != nil {
		return nil, fmt.Errorf("blocksvc: wiping the staging directory: %w", err)
	}
	if err := os.MkdirAll(d.StagingDir, 0o755); err != nil {
		return nil, fmt.Errorf("blocksvc: staging directory: %w", err)
	}
	stat := statFS
	if d.statFS != nil {
		stat = d.statFS
	}
	return &Server{cfg: cfg, d: d, sem: make(chan struct{}, cfg.MaxConcurrentStores), log: d.Logger,
		disk: &diskBudget{stat: stat, minFreePct: cfg.MinFreeDiskPercent}}, nil
}

// StopAccepting makes every later StoreBlock answer FailedPrecondition with reason, and returns
// once every store that had accepted its block has put it in the bucket or failed. A leaver calls
// it before it lists its blocks to move them: after it, the bucket gains no block from another
// member (Deps.Accepting says the same once the ring shows the leave, but a follower's ring may
// lag the commit that made it LEAVING).
//
// When ctx ends first (a store's upload into the local bucket hangs) it returns an error naming
// the wait: the caller must not list its blocks then. Stores stay refused either way, and a later
// call waits again.
func (s *Server) StopAccepting(ctx context.Context, reason string) error {
	s.stopped.Store(&reason)
	done := make(chan struct{})
	go func() {
		s.commit.Lock()
		//lint:ignore SA2001 an empty critical section: waiting for the stores that hold commit shared is the point
		s.commit.Unlock()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("blocksvc: stores in progress did not put their blocks in the bucket before the leave had to list it: %w", context.Cause(ctx))
	}
}

// accepting is nil, or why this member takes no block now.
func (s *Server) accepting() error {
	if r := s.stopped.Load(); r != nil {
		return fmt.Errorf("blocksvc: this member takes no blocks: %s", *r)
	}
	if s.d.Accepting != nil {
		if err := s.d.Accepting(); err != nil {
			return fmt.Errorf("blocksvc: this member takes no blocks: %w", err)
		}
	}
	return nil
}

// blockPrefix is the bucket directory of a block: "<tenant>/<ULID>/". tenantID must be valid.
func blockPrefix(tenantID string, id ulid.ULID) string { return tenantID + "/" + id.String() + "/" }

// StoreBlock receives one block, verifies it and puts it into the bucket, meta.json last; it
// answers once the block is durable there. A block the bucket has (meta.json present) is answered
// already_present at once, without reading the rest of the stream (the sender's next Send ends with
// io.EOF and its CloseAndRecv returns the answer). Nothing of a refused or failed block stays in
// the bucket or the staging directory.
func (s *Server) StoreBlock(stream blockspb.Blocks_StoreBlockServer) (err error) {
	ctx := stream.Context()
	reason := ""
	defer func() {
		if reason != "" {
			s.d.Metrics.refused.WithLabelValues(reason).Inc()
		}
	}()
	// Before anything, already_present included (a leaving member must not tell a sender that a
	// block is durable here), and before waiting for a slot.
	if err := s.accepting(); err != nil {
		reason = "leaving"
		return status.Error(codes.FailedPrecondition, err.Error())
	}
	// A slot first: a stalled or slow store holds one, so a bounded number can hold any at all.
	t := time.NewTimer(s.cfg.IdleTimeout)
	select {
	case s.sem <- struct{}{}:
		t.Stop()
	case <-t.C:
		reason = "limit"
		return status.Errorf(codes.ResourceExhausted, "blocksvc: %d blocks are being stored already; none finished within %s",
			s.cfg.MaxConcurrentStores, s.cfg.IdleTimeout)
	case <-ctx.Done():
		t.Stop()
		reason = "cancelled"
		return status.FromContextError(ctx.Err()).Err()
	}
	defer func() { <-s.sem }()

	recv := stream.Recv
	if s.d.Progress != nil {
		recv = func() (*blockspb.BlockPart, error) {
			p, err := stream.Recv()
			if err == nil {
				s.d.Progress(ctx)
			}
			return p, err
		}
	}
	src := startRecv(recv, s.cfg.IdleTimeout)
	defer src.stop() // then returning ends the call, which ends a Recv in progress
	first, err := src.next(ctx)
	if err != nil {
		reason = "invalid"
		if ctx.Err() != nil {
			reason = "cancelled"
			return status.FromContextError(ctx.Err()).Err()
		}
		if errors.Is(err, ErrStalled) {
			reason = "timeout"
			return status.Errorf(codes.DeadlineExceeded, "%v (waiting for the header)", err)
		}
		if err == io.EOF {
			return status.Error(codes.InvalidArgument, "blocksvc: empty stream: a block starts with its header")
		}
		return err
	}
	h, err := checkHeader(first.GetHeader(), s.cfg.MaxBlockUploadBytes)
	if err != nil {
		if errors.Is(err, ErrTooLarge) {
			reason = "limit"
			return tooLargeStatus(err)
		}
		reason = "invalid"
		return status.Error(codes.InvalidArgument, err.Error())
	}
	log := s.log.With("tenant", h.tenant, "block", h.id)
	metaKey, err := storage.BlockKey(h.tenant, h.id, storage.MetaFilename)
	if err != nil {
		reason = "invalid"
		return status.Error(codes.InvalidArgument, err.Error())
	}
	switch ok, err := s.d.Bucket.Exists(ctx, metaKey); {
	case err != nil:
		reason = "error"
		return status.Errorf(codes.Unavailable, "blocksvc: block %s of tenant %q: bucket: %v", h.id, h.tenant, err)
	case ok:
		log.Debug("block already in the bucket")
		return stream.SendAndClose(&blockspb.StoreBlockResponse{AlreadyPresent: true})
	}
	release, err := s.disk.reserve(s.d.StagingDir, s.d.BucketDir, h.total)
	if err != nil {
		reason = "limit"
		return status.Errorf(codes.ResourceExhausted, "block %s of tenant %q: %v", h.id, h.tenant, err)
	}
	defer release()
	dir, err := os.MkdirTemp(s.d.StagingDir, h.id.String()+"-")
	if err != nil {
		reason = "error"
		return status.Errorf(codes.Internal, "blocksvc: staging directory: %v", err)
	}
	defer os.RemoveAll(dir)
	start := time.Now()
	// The whole store, not only each message, is bounded: a peer trickling one piece per idle
	// timeout would otherwise hold a slot (and its reservation) for ever.
	limit := s.cfg.IdleTimeout + time.Duration(float64(h.total)/float64(s.cfg.MinStoreRate)*float64(time.Second))
	rctx, rcancel := context.WithTimeout(ctx, limit)
	defer rcancel()
	n, err := receiveBlock(rctx, src, dir, h)
	s.d.Metrics.receivedBytes.Add(float64(n))
	switch {
	case err == nil:
	case errors.Is(err, ErrInvalidBlock):
		reason = "invalid"
		return status.Error(codes.InvalidArgument, err.Error())
	case errors.Is(err, ErrStalled):
		reason = "timeout"
		return status.Errorf(codes.DeadlineExceeded, "block %s of tenant %q after %d of %d bytes: %v", h.id, h.tenant, n, h.total, err)
	case ctx.Err() == nil && rctx.Err() != nil:
		reason = "timeout"
		return status.Errorf(codes.DeadlineExceeded, "block %s of tenant %q after %d of %d bytes: not received within %s (the idle timeout plus its size at %d bytes/s)",
			h.id, h.tenant, n, h.total, limit.Round(time.Millisecond), s.cfg.MinStoreRate)
	case ctx.Err() != nil:
		reason = "cancelled"
		return status.FromContextError(ctx.Err()).Err()
	default:
		if st, ok := status.FromError(err); ok && st.Code() != codes.Unknown {
			reason = "invalid" // the sender's stream ended with an error
			return err
		}
		reason = "error"
		return status.Errorf(codes.Internal, "blocksvc: block %s of tenant %q: %v", h.id, h.tenant, err)
	}
	// Checked again, and held until the block is in the bucket: a leave that began while the block
	// was received must either see it in the bucket when it lists (StopAccepting waits for this)
	// or have it refused here.
	s.commit.RLock()
	defer s.commit.RUnlock()
	if err := s.accepting(); err != nil {
		reason = "leaving"
		return status.Error(codes.FailedPrecondition, err.Error())
	}
	// The block's lock, shared with the sweeper (storage.BlockLocks), until meta.json is in: a
	// sweep must neither delete what this upload writes (it judged the directory partial or marked
	// before) nor leave its own half-done deletion under the new block.
	unlock := s.locks.Lock(h.tenant, h.id)
	defer unlock()
	switch ok, err := s.d.Bucket.Exists(ctx, metaKey); {
	case err != nil:
		reason = "error"
		return status.Errorf(codes.Unavailable, "blocksvc: block %s of tenant %q: bucket: %v", h.id, h.tenant, err)
	case ok:
		log.Debug("block stored in the bucket meanwhile")
		return stream.SendAndClose(&blockspb.StoreBlockResponse{AlreadyPresent: true})
	}
	// Leftovers of this ULID — an upload cut short, or a deletion cut short (its mark would make
	// the new block deleted at the next sweep) — go first, so the block starts clean.
	if _, err := storage.DeleteBlock(ctx, s.d.Bucket, h.tenant, h.id); err != nil {
		reason = "error"
		return status.Errorf(codes.Unavailable, "blocksvc: block %s of tenant %q: removing the leftovers of an earlier upload: %v", h.id, h.tenant, err)
	}
	if err := storage.UploadBlock(ctx, s.d.Bucket, h.tenant, dir, h.uploadMeta()); err != nil {
		reason = "error"
		// Without meta.json the rest reads as partial; remove it anyway (best effort).
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		if derr := storage.DeletePartialBlock(dctx, s.d.Bucket, h.tenant, h.uploadMeta()); derr != nil {
			log.Warn("could not remove a partly stored block", "err", derr)
		}
		cancel()
		return status.Errorf(codes.Unavailable, "blocksvc: %v", err)
	}
	s.d.Metrics.receivedBlocks.Inc()
	log.Info("stored a block from another member", "bytes", n, "took", time.Since(start).Round(time.Millisecond))
	return stream.SendAndClose(&blockspb.StoreBlockResponse{Bytes: n})
}

// readMeta reads and decodes a meta.json of at most maxMetaBytes; found is false when the object
// does not exist.
func readMeta(ctx context.Context, bkt objstore.BucketReader, key string) (raw []byte, m storage.Meta, found bool, err error) {
	rc, err := bkt.Get(ctx, key)
	if err != nil {
		if bkt.IsObjNotFoundErr(err) {
			return nil, m, false, nil
		}
		return nil, m, false, err
	}
	defer rc.Close()
	raw, err = io.ReadAll(io.LimitReader(rc, maxMetaBytes+1))
	if err != nil {
		return nil, m, true, err
	}
	if len(raw) > maxMetaBytes {
		return nil, m, true, fmt.Errorf("%s is larger than %d bytes", key, maxMetaBytes)
	}
	m, err = storage.ReadMeta(raw)
	return raw, m, true, err
}

// checkTenantAndID validates a request's tenant and ULID.
func checkTenantAndID(tenantID, id string) (ulid.ULID, error) {
	if err := tenant.Validate(tenantID); err != nil {
		return ulid.ULID{}, status.Errorf(codes.InvalidArgument, "blocksvc: tenant: %v", err)
	}
	u, err := ulid.ParseStrict(id)
	if err != nil {
		return ulid.ULID{}, status.Errorf(codes.InvalidArgument, "blocksvc: ULID %q: %v", trim(id), err)
	}
	return u, nil
}

// FetchBlock streams one complete block: its header (meta.json as stored, the other files with
// their sizes), then the files' bytes in pieces of PieceSize. A block without meta.json is
// NotFound.
func (s *Server) FetchBlock(req *blockspb.FetchBlockRequest, stream blockspb.Blocks_FetchBlockServer) error {
	ctx := stream.Context()
	id, err := checkTenantAndID(req.GetTenant(), req.GetUlid())
	if err != nil {
		return err
	}
	prefix := blockPrefix(req.GetTenant(), id)
	raw, meta, found, err := readMeta(ctx, s.d.Bucket, prefix+storage.MetaFilename)
	switch {
	case err != nil:
		return status.Errorf(codes.Internal, "blocksvc: block %s of tenant %q: %v", id, req.GetTenant(), err)
	case !found:
		return status.Errorf(codes.NotFound, "blocksvc: no block %s of tenant %q", id, req.GetTenant())
	case meta.ULID != id:
		return status.Errorf(codes.Internal, "blocksvc: the meta.json of block %s of tenant %q names %s", id, req.GetTenant(), meta.ULID)
	}
	var files []*blockspb.BlockFile
	err = s.d.Bucket.Iter(ctx, prefix, func(name string) error {
		rel := strings.TrimPrefix(name, prefix)
		if rel == storage.MetaFilename || rel == storage.DeletionMarkFilename || strings.HasSuffix(name, "/") {
			return nil // the deletion mark is this bucket's state, not the block's content
		}
		if len(files) == maxFilesInBlock {
			return fmt.Errorf("more than %d files", maxFilesInBlock)
		}
		a, err := s.d.Bucket.Attributes(ctx, name)
		if err != nil {
			return err
		}
		files = append(files, &blockspb.BlockFile{RelPath: rel, SizeBytes: a.Size})
		return nil
	}, objstore.WithRecursiveIter())
	if err != nil {
		return status.Errorf(codes.Internal, "blocksvc: listing block %s of tenant %q: %v", id, req.GetTenant(), err)
	}
	slices.SortFunc(files, func(a, b *blockspb.BlockFile) int { return strings.Compare(a.RelPath, b.RelPath) })
	if err := stream.Send(&blockspb.BlockPart{Part: &blockspb.BlockPart_Header{Header: &blockspb.BlockHeader{
		Tenant: req.GetTenant(), Ulid: id.String(), MetaJson: raw, Files: files}}}); err != nil {
		return err
	}
	buf := make([]byte, PieceSize)
	for _, f := range files {
		if err := s.sendFile(ctx, stream, prefix+f.RelPath, f, buf); err != nil {
			return err
		}
	}
	s.d.Metrics.sentBlocks.Inc()
	return nil
}

// sendFile streams one file of exactly f.SizeBytes bytes.
func (s *Server) sendFile(ctx context.Context, stream blockspb.Blocks_FetchBlockServer, key string, f *blockspb.BlockFile, buf []byte) error {
	rc, err := s.d.Bucket.Get(ctx, key)
	if err != nil {
		return status.Errorf(codes.Internal, "blocksvc: %s: %v", key, err)
	}
	defer rc.Close()
	var off int64
	for off < f.SizeBytes {
		n, err := io.ReadFull(rc, buf[:min(int64(len(buf)), f.SizeBytes-off)])
		if err != nil {
			return status.Errorf(codes.Internal, "blocksvc: %s at %d of %d bytes: %v", key, off, f.SizeBytes, err)
		}
		if err := stream.Send(&blockspb.BlockPart{Part: &blockspb.BlockPart_Piece{Piece: &blockspb.FilePiece{
			RelPath: f.RelPath, Offset: off, Data: buf[:n]}}}); err != nil {
			return err
		}
		off += int64(n)
		s.d.Metrics.sentBytes.Add(float64(n))
	}
	return nil
}

// ListBlocks streams the complete blocks of one tenant, or of every tenant, in batches of about
// listBatchBytes of meta.json. Directories that are not a valid tenant or ULID, and blocks without
// meta.json (partial), are left out; so is a block whose meta.json does not decode or names
// another block (logged), and a block marked for deletion: the compactor, its only caller, must
// not merge or fetch again what it has replaced (the block is still served to queries until swept).
func (s *Server) ListBlocks(req *blockspb.ListBlocksRequest, stream blockspb.Blocks_ListBlocksServer) error {
	ctx := stream.Context()
	var tenants []string
	if t := req.GetTenant(); t != "" {
		if err := tenant.Validate(t); err != nil {
			return status.Errorf(codes.InvalidArgument, "blocksvc: tenant: %v", err)
		}
		tenants = []string{t}
	} else {
		err := s.d.Bucket.Iter(ctx, "", func(name string) error {
			if t, ok := strings.CutSuffix(name, "/"); ok && tenant.Validate(t) == nil {
				tenants = append(tenants, t)
			}
			return nil
		})
		if err != nil {
			return status.Errorf(codes.Internal, "blocksvc: listing tenants: %v", err)
		}
	}
	var (
		batch []*blockspb.BlockInfo
		size  int
	)
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		err := stream.Send(&blockspb.ListBlocksResponse{Blocks: batch})
		batch, size = nil, 0
		return err
	}
	for _, t := range tenants {
		var ids []ulid.ULID
		err := s.d.Bucket.Iter(ctx, t+"/", func(name string) error {
			d, isDir := strings.CutSuffix(strings.TrimPrefix(name, t+"/"), "/")
			if id, err := ulid.ParseStrict(d); err == nil && isDir {
				ids = append(ids, id)
			}
			return nil
		})
		if err != nil {
			return status.Errorf(codes.Internal, "blocksvc: listing blocks of tenant %q: %v", t, err)
		}
		slices.SortFunc(ids, func(a, b ulid.ULID) int { return a.Compare(b) })
		for _, id := range ids {
			raw, meta, found, err := readMeta(ctx, s.d.Bucket, blockPrefix(t, id)+storage.MetaFilename)
			switch {
			case err != nil && ctx.Err() != nil:
				return status.FromContextError(ctx.Err()).Err()
			case err != nil || (found && meta.ULID != id):
				s.log.Warn("block with an unreadable meta.json left out of a listing", "tenant", t, "block", id, "err", err)
				continue
			case !found:
				continue // partial
			}
			switch marked, err := storage.IsMarkedForDeletion(ctx, s.d.Bucket, t, id); {
			case err != nil && ctx.Err() != nil:
				return status.FromContextError(ctx.Err()).Err()
			case err != nil:
				return status.Errorf(codes.Internal, "blocksvc: block %s of tenant %q: %v", id, t, err)
			case marked:
				continue // replaced or expired: swept after the deletion delay
			}
			batch = append(batch, &blockspb.BlockInfo{Tenant: t, Ulid: id.String(), MetaJson: raw})
			if size += len(raw); size >= listBatchBytes {
				if err := flush(); err != nil {
					return err
				}
			}
		}
	}
	return flush()
}

// DeleteBlocks deletes blocks of one tenant, the way Mimir's compactor does: it marks each for
// deletion (storage.MarkForDeletion: deletion-mark.json, durable before this answers) and deletes
// it for real Deps.DeletionDelay later (Sweep). Until then the block is served to queries as
// before, but ListBlocks and a leaver's move no longer offer it. Absent blocks, and blocks without
// meta.json, are not an error; the answer's deleted counts the blocks now marked (those marked
// before included). The caller must be allowed by Deps.AuthorizeDelete with the request's lease
// epoch.
func (s *Server) DeleteBlocks(ctx context.Context, req *blockspb.DeleteBlocksRequest) (*blockspb.DeleteBlocksResponse, error) {
	if err := tenant.Validate(req.GetTenant()); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "blocksvc: tenant: %v", err)
	}
	if n := len(req.GetUlids()); n > maxDeleteIDs {
		return nil, status.Errorf(codes.InvalidArgument, "blocksvc: %d blocks in one delete, at most %d", n, maxDeleteIDs)
	}
	ids := make([]ulid.ULID, len(req.GetUlids()))
	for i, u := range req.GetUlids() {
		id, err := ulid.ParseStrict(u)
		if err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "blocksvc: ULID %q: %v", trim(u), err)
		}
		ids[i] = id
	}
	if s.d.AuthorizeDelete == nil {
		return nil, status.Error(codes.FailedPrecondition, "blocksvc: this member accepts no DeleteBlocks: no compactor lease check is configured")
	}
	if err := s.d.AuthorizeDelete(ctx, req.GetTenant(), req.GetLeaseEpoch()); err != nil {
		if _, ok := status.FromError(err); ok {
			return nil, err
		}
		return nil, status.Errorf(codes.FailedPrecondition, "blocksvc: delete refused: %v", err)
	}
	var marked uint32
	now := s.d.Now()
	for _, id := range ids {
		wrote, err := storage.MarkForDeletion(ctx, s.d.Bucket, req.GetTenant(), id, now,
			fmt.Sprintf("DeleteBlocks with compactor lease epoch %d", req.GetLeaseEpoch()))
		if err != nil {
			return nil, status.Errorf(codes.Internal, "blocksvc: marking block %s of tenant %q for deletion (%d marked before it): %v",
				id, req.GetTenant(), marked, err)
		}
		if wrote {
			s.d.Metrics.markedBlocks.Inc()
		}
		switch has, err := storage.IsMarkedForDeletion(ctx, s.d.Bucket, req.GetTenant(), id); {
		case err != nil:
			return nil, status.Errorf(codes.Internal, "blocksvc: block %s of tenant %q: %v", id, req.GetTenant(), err)
		case has:
			marked++
		}
		s.log.Info("marked a block for deletion", "tenant", req.GetTenant(), "block", id, "new_mark", wrote,
			"lease_epoch", req.GetLeaseEpoch(), "deletable_at", now.Add(s.d.DeletionDelay).UTC())
	}
	return &blockspb.DeleteBlocksResponse{Deleted: marked}, nil
}

// Sweep deletes for good (storage.DeleteBlock: meta.json first, the mark last) every block of the
// bucket whose deletion mark is at least Deps.DeletionDelay old, and returns how many. A block it
// could not delete is found again by the next sweep; the error joins every failure.
func (s *Server) Sweep(ctx context.Context) (int, error) {
	swept, err := storage.SweepDeletionMarkedLocked(ctx, s.d.Bucket, s.d.DeletionDelay, s.d.Now(), s.log, &s.locks)
	for _, b := range swept {
		if b.Partial {
			continue // logged by the sweep itself
		}
		s.log.Info("deleted a block marked for deletion", "tenant", b.Tenant, "block", b.ID,
			"marked_at", b.MarkedAt.UTC(), "deletion_delay", s.d.DeletionDelay)
	}
	s.d.Metrics.cleanedBlocks.Add(float64(len(swept)))
	if err != nil {
		return len(swept), fmt.Errorf("blocksvc: sweeping blocks marked for deletion: %w", err)
	}
	return len(swept), nil
}

// SweepPeriod is how often RunSweeper sweeps for a deletion delay: a tenth of it, from 1s to 1m,
// so a block outlives its delay by at most a tenth more (a sweep of a filesystem bucket reads one
// directory per tenant and looks for one file per block).
func SweepPeriod(delay time.Duration) time.Duration {
	return min(max(delay/10, time.Second), time.Minute)
}

// RunSweeper sweeps (Sweep) at once and then every SweepPeriod of the deletion delay, until ctx is
// done. The first sweep at start finishes what a process killed before or during a sweep left.
// Failures are logged; the next sweep retries.
func (s *Server) RunSweeper(ctx context.Context) {
	t := time.NewTicker(SweepPeriod(s.d.DeletionDelay))
	defer t.Stop()
	for {
		if _, err := s.Sweep(ctx); err != nil && ctx.Err() == nil {
			s.log.Warn("sweeping blocks marked for deletion failed; retried at the next sweep", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Reasons of the google.rpc.ErrorInfo a StoreBlock refusal carries when the block itself is the
// cause (any member would refuse it), in domain errorDomain. A sender gives up the block, not the
// member (Mover, refusalOf).
const (
	errorDomain        = "raftingest.blocks"
	reasonTooLarge     = "BLOCK_TOO_LARGE"
	refusedInvalid     = "invalid"   // refusalOf: the block does not verify (or does not read here)
	refusedTooLarge    = "too_large" // refusalOf: the block is above the receiver's size limit
	tooLargeFlagAdvice = "raise -blocks-storage.max-block-upload-bytes on the members that take it"
)

// tooLargeStatus is the ResourceExhausted refusal of a block above -blocks-storage.max-block-upload-bytes.
// It shares its code with refusals for lack of space or of a store slot, which are the member's
// state, not the block's; the ErrorInfo detail tells them apart.
func tooLargeStatus(err error) error {
	st := status.New(codes.ResourceExhausted, err.Error())
	if d, derr := st.WithDetails(&errdetails.ErrorInfo{Reason: reasonTooLarge, Domain: errorDomain}); derr == nil {
		st = d
	}
	return st.Err()
}

// refusalOf classifies a StoreBlock error by its cause: refusedInvalid (InvalidArgument: the block,
// or the stream the sender made of it, does not check — every member checks the same way),
// refusedTooLarge (above the receiver's size limit), or "" when the member, not the block, is the
// cause (unreachable, busy, out of space, leaving, stalled).
func refusalOf(err error) string {
	st, ok := status.FromError(err)
	if !ok {
		return ""
	}
	switch st.Code() {
	case codes.InvalidArgument:
		return refusedInvalid
	case codes.ResourceExhausted:
		for _, d := range st.Details() {
			if ei, ok := d.(*errdetails.ErrorInfo); ok && ei.Domain == errorDomain && ei.Reason == reasonTooLarge {
				return refusedTooLarge
			}
		}
		// A member of an older build answers without the detail; its message names the cause.
		if strings.Contains(st.Message(), ErrTooLarge.Error()) {
			return refusedTooLarge
		}
	}
	return ""
}
