package transfer

import (
	"context"
	"errors"
	"log/slog"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/raftingest/raftingest/ringstate"
)

// TestLeaver_HandOverBlocks_AfterClaimBeforeStream_FailureRetries: the leaver hands its blocks to
// the joiner once the claim committed and before the first chunk frame (the joiner is JOINING,
// paired with the leaver, and holds no series yet); a failure there fails the attempt like a failed
// stream (aborted: the joiner is PENDING again, it got no series) and the next attempt hands the
// blocks over again, then streams and completes. No flush.
func TestLeaver_HandOverBlocks_AfterClaimBeforeStream_FailureRetries(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := testConfig()
		cfg.MaxRetries = 3
		r := leavingRing(t)
		net := newPipeNet()
		fl := &countingFlush{}
		_, js := addJoiner(t, cfg, r, net)
		var calls []ringstate.MemberID
		blocks := func(_ context.Context, joiner ringstate.Member) error {
			calls = append(calls, joiner.ID)
			me := r.member(t, leaverID)
			j := r.member(t, joiner.ID)
			if me.HandoverPeer != joiner.ID || j.State != ringstate.JOINING || j.HandoverPeer != leaverID {
				t.Errorf("blocks handed over with the leaver paired to %q and the joiner %s paired to %q; want a committed claim",
					me.HandoverPeer, j.State, j.HandoverPeer)
			}
			if n := js.store.len(); n != 0 {
				t.Errorf("blocks handed over after %d series were streamed, want before the stream", n)
			}
			if joiner.GRPCAddr != joinAddr {
				t.Errorf("joiner's address %q, want %q", joiner.GRPCAddr, joinAddr)
			}
			if len(calls) == 1 {
				return errors.New("injected: the joiner's disk is full")
			}
			return nil
		}
		s := &side{store: newFakeStore()}
		s.m, _ = NewMetrics(nil)
		lv, err := NewLeaver(cfg, LeaverDeps{ID: leaverID, Ring: r, Store: s.store, Dial: net.Dial, Flush: fl.flush,
			HandOverBlocks: blocks, Metrics: s.m, Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		s.store.add(t, 20)
		if err := lv.Leave(t.Context()); err != nil {
			t.Fatalf("Leave: %v", err)
		}
		if len(calls) != 2 || calls[0] != joinerID || calls[1] != joinerID {
			t.Fatalf("blocks handed over to %v, want the joiner twice (a failed attempt, then the good one)", calls)
		}
		if n := len(r.ops(ringstate.OpAbortHandover)); n != 1 {
			t.Fatalf("%d aborts, want 1 (the attempt whose blocks failed)", n)
		}
		if got := testutil.ToFloat64(s.m.attempts.WithLabelValues("failed")); got != 1 {
			t.Fatalf("%v failed attempts, want 1", got)
		}
		if got := testutil.ToFloat64(s.m.attempts.WithLabelValues("ok")); got != 1 {
			t.Fatalf("%v ok attempts, want 1", got)
		}
		if len(fl.calls) != 0 {
			t.Fatalf("%d flushes, want none: the hand-over succeeded", len(fl.calls))
		}
		if _, ok := r.Ring().Member(leaverID); ok {
			t.Fatal("the leaver is still in the ring after a completed hand-over")
		}
		if j := r.member(t, joinerID); j.State != ringstate.ACTIVE || js.store.len() != 20 {
			t.Fatalf("joiner %s with %d series, want ACTIVE with 20", j.State, js.store.len())
		}
	})
}

// TestReceiver_BlocksFromTheLeaverKeepTheClaimAlive: a leaver hands over a large bucket (blocks
// stored through the Blocks service, before any Transfer frame) for three times
// -ingester.transfer-timeout: its StoreBlock progress counts as activity and the joiner does not
// abort the claim. Progress of another member counts for nothing, so once only that remains the
// claim is aborted after the timeout, as for a silent leaver. The watcher used to count Transfer
// frames only, and aborted every hand-over whose blocks took longer than the timeout.
func TestReceiver_BlocksFromTheLeaverKeepTheClaimAlive(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := testConfig()
		r, rcv, _, _ := claimed(t, cfg)
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan struct{})
		go func() { rcv.Run(ctx); close(done) }()
		for i := range 12 { // 3 timeouts, a store's progress every quarter of one
			from := ringstate.MemberID(leaverID)
			if i%2 == 1 {
				from = "" // an unidentified caller (no mutual TLS) counts while paired
			}
			rcv.BlocksActivity(from)
			rcv.BlocksActivity("someone-else")
			time.Sleep(cfg.Timeout / 4)
			synctest.Wait()
			if j := r.member(t, joinerID); j.State != ringstate.JOINING || j.HandoverPeer != leaverID {
				t.Fatalf("after %s of blocks from the leaver the joiner is %s paired with %q, want JOINING with %s",
					time.Duration(i+1)*cfg.Timeout/4, j.State, j.HandoverPeer, leaverID)
			}
		}
		for range 8 {
			rcv.BlocksActivity("someone-else")
			time.Sleep(cfg.Timeout / 4)
		}
		synctest.Wait()
		if j := r.member(t, joinerID); j.State != ringstate.PENDING || j.HandoverPeer != "" {
			t.Fatalf("with blocks from another member only, the joiner is %s paired with %q; want the claim aborted (PENDING)",
				j.State, j.HandoverPeer)
		}
		cancel()
		<-done
	})
}
