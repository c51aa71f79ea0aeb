package ingester

// This file wires the hand-over protocol (transfer) into the Server. It is owned by the hand-over
// work; the Server calls wireTransfer in New (after the gRPC server exists) and closeTransfer when it
// closes.

import (
	"context"
	"flag"
	"fmt"
	"sync"

	"github.com/raftingest/raftingest/ringstate"
	"github.com/raftingest/raftingest/transfer"
	"github.com/raftingest/raftingest/transferpb"
)

// transferConfig holds the hand-over's flags (-ingester.max-transfer-retries,
// -ingester.transfer-timeout, -ingester.transfer-frame-bytes, -ingester.transfer-max-recv-msg-size
// (the gRPC receive limit of TransferChunks, see grpcserver.go), -ingester.transfer-test-delay).
type transferConfig struct {
	transfer.Config
}

// RegisterFlags registers the hand-over flags on f.
func (c *transferConfig) RegisterFlags(f *flag.FlagSet) { c.Config.RegisterFlags(f) }

// Validate checks the hand-over flags.
func (c *transferConfig) Validate() error { return c.Config.Validate() }

// transferParts is what the transfer wiring adds to the Server.
type transferParts struct {
	leaver   *transfer.Leaver
	receiver *transfer.Receiver
	cancel   context.CancelFunc
	wg       sync.WaitGroup
}

// wireTransfer registers the Transfer service, makes the lifecycle hand over (or flush) when the
// member leaves, and starts the receiver's watcher (aborts silent hand-overs, discards partial ones).
func (s *Server) wireTransfer() error {
	m, err := transfer.NewMetrics(s.reg)
	if err != nil {
		return fmt.Errorf("transfer metrics: %w", err)
	}
	id := ringstate.MemberID(s.cfg.NodeID)
	log := s.log.With("component", "transfer")
	// storage.FlushAll is read when the member leaves, not now: nil means no storage is configured,
	// and the leaver then stays LEAVING rather than drop data.
	var flush func(context.Context) error
	if s.storage.FlushAll != nil {
		flush = s.storage.FlushAll
	}
	if s.transfer.leaver, err = transfer.NewLeaver(s.cfg.Transfer.Config, transfer.LeaverDeps{
		ID: id, Ring: s.node, Store: s.store, Flush: flush, Metrics: m, Logger: log, Dial: s.transferDialer(),
	}); err != nil {
		return err
	}
	if s.transfer.receiver, err = transfer.NewReceiver(s.cfg.Transfer.Config, transfer.ReceiverDeps{
		ID: id, Ring: s.node, Store: s.store, DataDir: s.cfg.DataDir, Metrics: m, Logger: log,
		Authorize: s.authorizeHandover(),
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
}
