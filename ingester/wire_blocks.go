package ingester

// This file wires block movement (package blocksvc) into the Server: the Blocks gRPC service over
// the node's bucket, a pool of Blocks clients to the other members, and the two moves a leaver
// with a node-local bucket makes — its blocks to its joiner in a hand-over (transfer's
// HandOverBlocks), and, in the flush fallback, to the members that take over its data. It is owned
// by the block-movement work; the Server calls wireBlocks in New (after wireStorage, before
// wireTransfer) and closeBlocks when it closes. See docs/storage.md, "Leaving with a node-local
// bucket".

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"
	"time"

	"github.com/prometheus/prometheus/model/labels"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/raftingest/raftingest/auth"
	"github.com/raftingest/raftingest/blockspb"
	"github.com/raftingest/raftingest/blocksvc"
	"github.com/raftingest/raftingest/distributor"
	"github.com/raftingest/raftingest/ringstate"
)

// blocksParts is what the block-movement wiring adds to the Server.
type blocksParts struct {
	// AuthorizeDelete is the compactor lease check of DeleteBlocks: nil or a gRPC status error
	// (another error is answered FailedPrecondition). It is set by the compactor's wiring
	// (wire_compact.go) in New, before Run, and read at every DeleteBlocks; while it is nil every
	// delete is refused with FailedPrecondition.
	AuthorizeDelete func(ctx context.Context, tenant string, epoch uint64) error

	server  *blocksvc.Server // nil when no bucket is configured
	metrics *blocksvc.Metrics

	mu     sync.Mutex
	conns  map[string]*grpc.ClientConn // by gRPC address
	closed bool

	// moveFailures counts the leave's block moves (evacuateBlocks) that failed in a row; the next
	// one waits moveRetryWait(moveFailures) first. Only the lifecycle's leave worker uses it, one
	// call at a time.
	moveFailures int
}

// wireBlocks registers the Blocks service over the node's bucket. Without a bucket (storage not
// configured) the service is not registered: its methods answer Unimplemented, and a leaver has
// no blocks to move.
func (s *Server) wireBlocks() error {
	m, err := blocksvc.NewMetrics(s.reg)
	if err != nil {
		return fmt.Errorf("blocks metrics: %w", err)
	}
	s.blocks.metrics = m
	if s.storage.bucket == nil {
		return nil
	}
	s.blocks.server, err = blocksvc.NewServer(s.cfg.Transfer.Blocks, blocksvc.Deps{
		Bucket:     s.storage.bucket,
		BucketDir:  s.cfg.Storage.Bucket.LocalDir(),
		StagingDir: filepath.Join(s.cfg.DataDir, "blocks-staging"),
		AuthorizeDelete: func(ctx context.Context, tenant string, epoch uint64) error {
			if f := s.blocks.AuthorizeDelete; f != nil {
				return f(ctx, tenant, epoch)
			}
			return status.Error(codes.FailedPrecondition, "this member has no compactor lease check: it deletes no blocks")
		},
		// Marked blocks are swept by this member (runCompactor starts the sweeper) after
		// -compactor.deletion-delay, a compactor flag that matters whether or not this member
		// compacts: the lease holder marks blocks in every member's bucket.
		DeletionDelay: s.cfg.Compactor.DeletionDelay,
		Accepting:     s.blocksAccepting,
		Progress:      s.blocksProgress,
		Now:           s.cfg.Clock,
		Metrics:       m,
		Logger:        s.log.With("component", "blocks"),
	})
	if err != nil {
		return err
	}
	blockspb.RegisterBlocksServer(s.grpc, s.blocks.server)
	return nil
}

// BlocksClient returns a Blocks client of the member at the gRPC address addr, over a connection
// kept for the process's life and opened with the node's dial options (mutual TLS expecting the
// member the ring has at addr, or plain).
func (s *Server) BlocksClient(addr string) (blockspb.BlocksClient, error) {
	s.blocks.mu.Lock()
	defer s.blocks.mu.Unlock()
	if s.blocks.closed {
		return nil, errors.New("blocks: the server is closing")
	}
	if c, ok := s.blocks.conns[addr]; ok {
		return blockspb.NewBlocksClient(c), nil
	}
	c, err := grpc.NewClient(addr, s.dialOptions()...)
	if err != nil {
		return nil, fmt.Errorf("blocks: dial %s: %w", addr, err)
	}
	if s.blocks.conns == nil {
		s.blocks.conns = map[string]*grpc.ClientConn{}
	}
	s.blocks.conns[addr] = c
	return blockspb.NewBlocksClient(c), nil
}

func (s *Server) closeBlocks() {
	s.blocks.mu.Lock()
	defer s.blocks.mu.Unlock()
	s.blocks.closed = true
	for addr, c := range s.blocks.conns {
		if err := c.Close(); err != nil {
			s.log.Debug("close a blocks client", "addr", addr, "err", err)
		}
	}
	s.blocks.conns = nil
}

// blocksMove reports whether a leaver must move its blocks: its bucket is node-local (a
// filesystem directory not declared shared). With a shared bucket (S3, or a shared directory)
// every member reads what it flushed already.
func (s *Server) blocksMove() bool {
	return s.storage.bucket != nil && !s.cfg.Storage.Bucket.Shared() && s.cfg.Storage.Bucket.LocalDir() != ""
}

func (s *Server) mover() *blocksvc.Mover {
	return &blocksvc.Mover{BucketDir: s.cfg.Storage.Bucket.LocalDir(), WorkDir: filepath.Join(s.cfg.DataDir, "blocks-evacuate"),
		Client: s.BlocksClient, Metrics: s.blocks.metrics, Logger: s.log.With("component", "blocks"),
		MinFreeDiskPercent: s.cfg.Transfer.Blocks.MinFreeDiskPercent}
}

// blocksHandOver is transfer's HandOverBlocks: every block of the node-local bucket to the
// joiner. nil when blocks need not move.
func (s *Server) blocksHandOver() func(ctx context.Context, joiner ringstate.Member) error {
	if !s.blocksMove() {
		return nil
	}
	return func(ctx context.Context, joiner ringstate.Member) error {
		if joiner.GRPCAddr == "" {
			return fmt.Errorf("joiner %s has no gRPC address in the ring", joiner.ID)
		}
		if err := s.refuseBlocks(ctx); err != nil {
			return err
		}
		_, err := s.mover().HandOver(ctx, blocksvc.Target{ID: string(joiner.ID), Addr: joiner.GRPCAddr})
		return err
	}
}

// stopPeriodicFlush stops the periodic flush loop, waiting for a flush in progress: a leaver
// with a node-local bucket lists its blocks before it streams its memory (hand-over) and must not
// have a flush move data from memory into a block after that listing. A leaver takes no writes, so
// nothing new would need flushing; the flush fallback calls FlushAll itself.
func (s *Server) stopPeriodicFlush() {
	if s.storage.cancel != nil {
		s.storage.cancel()
		s.storage.wg.Wait()
	}
}

// evacuateBlocks, in the flush fallback after FlushAll, moves every block of the node-local
// bucket to the members that take over this member's series: each block is split by series and
// each series goes to the one member that enters its replication set once this member is gone
// (leavePlacement), so the leave writes about one copy of this member's data and every series
// regains RF copies. It returns nil only when every series is durable on another member — or when
// no other member will remain (see below). An error keeps the member LEAVING; the lifecycle
// retries.
func (s *Server) evacuateBlocks(ctx context.Context) error {
	if !s.blocksMove() {
		return nil
	}
	log := s.log.With("component", "blocks")
	if n := s.blocks.moveFailures; n > 0 {
		// The lifecycle retries a failed leave at once (its backoff stops at 5s); a move that
		// failed re-sends every block before the one that failed, so repeat it less and less often.
		wait := moveRetryWait(n)
		log.Warn("the last moves of this member's blocks failed; waiting before moving them again", "failed_moves", n, "wait", wait)
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		}
	}
	err := s.evacuate(ctx, log)
	if err != nil {
		s.blocks.moveFailures++
	} else {
		s.blocks.moveFailures = 0
	}
	return err
}

// moveRetryWait is how long evacuateBlocks waits after n moves failed in a row: 5s, doubling, at
// most 5 minutes.
func moveRetryWait(n int) time.Duration {
	const first, most = 5 * time.Second, 5 * time.Minute
	if n <= 0 {
		return 0
	}
	if n > 7 {
		return most
	}
	return min(first<<(n-1), most)
}

// evacuate is one attempt of evacuateBlocks.
func (s *Server) evacuate(ctx context.Context, log *slog.Logger) error {
	if err := s.refuseBlocks(ctx); err != nil {
		return err
	}
	self := ringstate.MemberID(s.cfg.NodeID)
	r := s.node.Ring()
	timeoutMs := s.cfg.Lifecycle.HeartbeatTimeout.Milliseconds()
	var remaining, writable int
	for _, m := range r.Members() {
		if m.ID == self || m.State == ringstate.LEAVING {
			continue
		}
		remaining++
		if m.Writable(r.TimeMs(), timeoutMs) && m.GRPCAddr != "" {
			writable++
		}
	}
	if remaining == 0 {
		// Nowhere to go. Right for a cluster of one (the data stays where the next start of this
		// member finds it); when every other member is leaving too it strands these blocks on this
		// disk, which an operator must know about: an error naming them.
		blocks, err := blocksvc.LocalBlocks(s.cfg.Storage.Bucket.LocalDir())
		names := make([]string, 0, len(blocks))
		for _, b := range blocks {
			names = append(names, b.Tenant+"/"+b.ID.String())
		}
		level, msg := slog.LevelError, "no other member remains (every other one is leaving too): this member's blocks stay in its bucket and leave the cluster with it"
		if r.Len() == 1 {
			level, msg = slog.LevelInfo, "this is the only member: its blocks stay in its bucket"
		}
		log.Log(ctx, level, msg, "blocks", names, "bucket", s.cfg.Storage.Bucket.LocalDir(), "err", err)
		return nil
	}
	if writable == 0 {
		return fmt.Errorf("blocks: %d other members remain but none is ACTIVE and healthy to take this member's blocks; staying LEAVING", remaining)
	}
	log.Info("moving this member's blocks, each series to the member that enters its replication set",
		"writable_members", writable, "successors", r.SuccessorsFor(self, s.cfg.Distributor.Placement(), timeoutMs))
	_, err := s.mover().Evacuate(ctx, leavePlacement(r, self, s.cfg.Distributor.Placement(), timeoutMs))
	return err
}

// refuseWait bounds refuseBlocks' wait for the stores in progress. A store's upload into the local
// bucket normally ends in well under a second; one that hangs (a stuck disk) must fail the leave
// attempt, which the lifecycle retries, rather than hang it.
const refuseWait = 2 * time.Minute

// refuseBlocks makes this member's Blocks service refuse every later StoreBlock and waits for the
// stores in progress: a leaver calls it before it lists its blocks, so no block lands after the
// listing (the compactor's, or another leaver's). It fails, and the caller must not list, when
// they have not ended within refuseWait.
func (s *Server) refuseBlocks(ctx context.Context) error {
	if s.blocks.server == nil {
		return nil
	}
	ctx, cancel := context.WithTimeoutCause(ctx, refuseWait, fmt.Errorf("waited %s", refuseWait))
	defer cancel()
	if err := s.blocks.server.StopAccepting(ctx, "this member is leaving the ring"); err != nil {
		return fmt.Errorf("blocks: %w", err)
	}
	return nil
}

// blocksAccepting is the Blocks service's acceptance check: it refuses once the ring shows this
// member LEAVING. JOINING accepts: a joiner receives its hand-over peer's blocks.
func (s *Server) blocksAccepting() error {
	if s.node == nil {
		return nil
	}
	if m, ok := s.node.Ring().Member(ringstate.MemberID(s.cfg.NodeID)); ok && m.State == ringstate.LEAVING {
		return errors.New("the ring shows this member LEAVING")
	}
	return nil
}

// blocksProgress is the Blocks service's progress hook: a block arriving is activity of a
// hand-over claim for the transfer receiver's watcher when its sender is the paired leaver. Under
// mutual TLS the sender is the member its certificate names; without it the sender is unknown
// and the receiver decides (see transfer.Receiver.BlocksActivity).
func (s *Server) blocksProgress(ctx context.Context) {
	rcv := s.transfer.receiver
	if rcv == nil {
		return
	}
	var from ringstate.MemberID
	if s.auth != nil {
		p := s.auth.Caller(ctx)
		if p.Kind != auth.Node {
			return // an operator or unknown caller is no hand-over peer
		}
		from = ringstate.MemberID(p.Name)
	}
	rcv.BlocksActivity(from)
}

// leavePlacement is the Placement of a leave of self over ring r (taken when the move starts):
// a series goes to ringstate's LeaveSuccessorFor, the member that enters its replication set (with
// the placement p made effective, as the distributor and the compactor place it), or, when that
// member is skipped (it failed during this move), the next ACTIVE member outside the set. When no
// member enters the set — self was not in it (it held the series through a spill or under an older
// ring), or every writable member is already in it (a ring of at most RF members) — the copy goes
// to the first other member of the set that is not skipped: the series stays at least as
// replicated as it was, for one copy at most, and the compactor's next merge places it.
func leavePlacement(r *ringstate.Ring, self ringstate.MemberID, p ringstate.Placement, timeoutMs int64) blocksvc.Placement {
	p.RF = r.EffectiveRFFor(p)
	var (
		ls  []distributor.Label
		old []*ringstate.Member
	)
	return func(tenant string, lset labels.Labels, skip func(string) bool) (blocksvc.Target, bool) {
		ls = ls[:0]
		lset.Range(func(l labels.Label) {
			if l.Value != "" {
				ls = append(ls, distributor.Label{Name: l.Name, Value: l.Value})
			}
		})
		unusable := func(m *ringstate.Member) bool { return m.ID == self || m.GRPCAddr == "" || skip(string(m.ID)) }
		var succ *ringstate.Member
		old, succ = r.LeaveSuccessorFor(self, distributor.SeriesHash(tenant, ls), p, timeoutMs,
			func(id ringstate.MemberID) bool {
				m, ok := r.Member(id)
				return !ok || unusable(&m)
			}, old)
		if succ != nil {
			return blocksvc.Target{ID: string(succ.ID), Addr: succ.GRPCAddr}, true
		}
		for _, m := range old {
			if !unusable(m) {
				return blocksvc.Target{ID: string(m.ID), Addr: m.GRPCAddr}, true
			}
		}
		return blocksvc.Target{}, false
	}
}
