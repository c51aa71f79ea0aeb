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
	"path/filepath"
	"slices"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/raftingest/raftingest/blockspb"
	"github.com/raftingest/raftingest/blocksvc"
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
	return &blocksvc.Mover{BucketDir: s.cfg.Storage.Bucket.LocalDir(), Client: s.BlocksClient, Metrics: s.blocks.metrics,
		Logger: s.log.With("component", "blocks")}
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

// evacuateBlocks, in the flush fallback after FlushAll, stores every block of the node-local
// bucket on the members that take over this member's data (ringstate's Successors: the member that
// enters each replication set this member leaves), with the other writable members (ACTIVE and
// healthy) as stand-ins for a target that cannot take them — not PENDING or JOINING ones, which the
// compactor does not gather blocks from. It returns nil
// only when every block is durable on at least one of them — or when no other member will remain
// (this is the last member, or every other one is leaving too: the blocks have nowhere to go and
// stay in this bucket, logged). An error keeps the member LEAVING; the lifecycle retries.
func (s *Server) evacuateBlocks(ctx context.Context) error {
	if !s.blocksMove() {
		return nil
	}
	log := s.log.With("component", "blocks")
	self := ringstate.MemberID(s.cfg.NodeID)
	r := s.node.Ring()
	timeoutMs := s.cfg.Lifecycle.HeartbeatTimeout.Milliseconds()
	succ := r.Successors(self, s.cfg.Distributor.ReplicationFactor, timeoutMs)
	var (
		targets, spares []blocksvc.Target
		remaining       int
	)
	for _, m := range r.Members() {
		if m.ID == self || m.State == ringstate.LEAVING {
			continue
		}
		remaining++
		t := blocksvc.Target{ID: string(m.ID), Addr: m.GRPCAddr}
		switch {
		case m.GRPCAddr == "":
		case slices.Contains(succ, m.ID):
			targets = append(targets, t)
		case m.Writable(r.TimeMs(), timeoutMs):
			spares = append(spares, t)
		}
	}
	if remaining == 0 {
		blocks, err := blocksvc.LocalBlocks(s.cfg.Storage.Bucket.LocalDir())
		log.Warn("no other member remains in the ring (this is the last one, or every other one is leaving too): this member's blocks stay in its bucket",
			"blocks", len(blocks), "bucket", s.cfg.Storage.Bucket.LocalDir(), "err", err)
		return nil
	}
	if len(targets)+len(spares) == 0 {
		return fmt.Errorf("blocks: %d other members remain but none is ACTIVE and healthy to take this member's blocks; staying LEAVING", remaining)
	}
	log.Info("moving this member's blocks to the members that take over its data", "targets", targets, "spares", len(spares))
	_, err := s.mover().Evacuate(ctx, targets, spares)
	return err
}
