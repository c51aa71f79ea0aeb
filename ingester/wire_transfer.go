package ingester

// This file wires the hand-over protocol (transfer) into the Server. It is owned by the hand-over
// work; the Server calls wireTransfer in New (after the gRPC server exists and wireStorage) and
// closeTransfer when it closes. wireTransfer also wires block movement (wire_blocks.go), which the
// hand-over and its flush fallback use.

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"sync"

	"github.com/raftingest/raftingest/blocksvc"
	"github.com/raftingest/raftingest/ringstate"
	"github.com/raftingest/raftingest/transfer"
	"github.com/raftingest/raftingest/transferpb"
)

// transferConfig holds the hand-over's flags (-ingester.max-transfer-retries,
// -ingester.transfer-timeout, -ingester.transfer-frame-bytes, -ingester.transfer-max-recv-msg-size
// (the gRPC receive limit of TransferChunks, see grpcserver.go), -ingester.transfer-test-delay), and
// those of moving blocks between members (-blocks-storage.max-block-upload-bytes).
type transferConfig struct {
	transfer.Config
	Blocks blocksvc.Config
}

// RegisterFlags registers the hand-over and block movement flags on f.
func (c *transferConfig) RegisterFlags(f *flag.FlagSet) {
	c.Config.RegisterFlags(f)
	c.Blocks.RegisterFlags(f)
}

// Validate checks the hand-over and block movement flags.
func (c *transferConfig) Validate() error {
	return errors.Join(c.Config.Validate(), c.Blocks.Validate())
}

// transferParts is what the transfer wiring adds to the Server.
type transferParts struct {
	leaver   *transfer.Leaver
	receiver *transfer.Receiver
	cancel   context.CancelFunc
	wg       sync.WaitGroup
}

// wireTransfer registers the Transfer and Blocks services, makes the lifecycle hand over (or flush)
// when the member leaves, and starts the receiver's watcher (aborts silent hand-overs, discards
// partial ones).
//
// With a node-local bucket a leaver's blocks leave with it: to the joiner before the chunk stream
// (transfer's HandOverBlocks), or, when it flushes instead, to the members that take over its data
// once the flush is done and before it removes itself (evacuateBlocks). With a shared bucket
// neither is needed.
func (s *Server) wireTransfer() error {
	if err := s.wireBlocks(); err != nil {
		return err
	}
	m, err := transfer.NewMetrics(s.reg)
	if err != nil {
		return fmt.Errorf("transfer metrics: %w", err)
	}
	id := ringstate.MemberID(s.cfg.NodeID)
	log := s.log.With("component", "transfer")
	// nil means no storage is configured, and the leaver then stays LEAVING rather than drop data.
	// The fallback is the flush, then, with a node-local bucket, its blocks to the members that take
	// over this member's data: it returns nil only once they hold every block.
	var flush func(context.Context) error
	if flushAll := s.storage.FlushAll; flushAll != nil {
		flush = func(ctx context.Context) error {
			if err := flushAll(ctx); err != nil {
				return err
			}
			return s.evacuateBlocks(ctx)
		}
	}
	if s.transfer.leaver, err = transfer.NewLeaver(s.cfg.Transfer.Config, transfer.LeaverDeps{
		ID: id, Ring: s.node, Store: s.store, Flush: flush, HandOverBlocks: s.blocksHandOver(),
		Metrics: m, Logger: log, Dial: s.transferDialer(), ZoneAware: s.cfg.Distributor.ZoneAware,
	}); err != nil {
		return err
	}
	if s.transfer.receiver, err = transfer.NewReceiver(s.cfg.Transfer.Config, transfer.ReceiverDeps{
		ID: id, Ring: s.node, Store: s.store, DataDir: s.cfg.DataDir, Metrics: m, Logger: log,
		Authorize: s.authorizeHandover(),
		BulkLoad:  func() func() { return processBulkGC.begin(s.cfg.BulkLoadGOGC) },
	}); err != nil {
		return err
	}
	transferpb.RegisterTransferServer(s.grpc, s.transfer.receiver)
	s.lc.OnLeaving = func(ctx context.Context) error {
		// A Push that passed the ACTIVE check just before LEAVING committed may still be writing:
		// wait for it before streaming the store, or its samples would miss the hand-over.
		if err := s.drainWrites(ctx); err != nil {
			return err
		}
		if s.blocksMove() {
			// The blocks are listed before the memory is streamed: no flush may move data from one
			// to the other in between.
			s.stopPeriodicFlush()
		}
		return s.transfer.leaver.Leave(ctx)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s.transfer.cancel = cancel
	s.transfer.wg.Add(1)
	go func() {
		defer s.transfer.wg.Done()
		s.transfer.receiver.Run(ctx)
	}()
	return nil
}

func (s *Server) closeTransfer() {
	if s.transfer.cancel != nil {
		s.transfer.cancel()
		s.transfer.wg.Wait()
	}
	s.closeBlocks()
}
