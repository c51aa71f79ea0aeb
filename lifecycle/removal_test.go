package lifecycle

import (
	"errors"
	"testing"
	"testing/synctest"
	"time"

	"github.com/raftingest/raftingest/ringstate"
)

// Regression (a removed node never exits and ignores SIGTERM): after an operator removed the
// member from the ring and its node from Raft, every Apply failed as if there were no leader, the
// lifecycle retried forever, and a leave request did nothing because reconcile returned early for a
// member absent from its ring. With the default heartbeat period, Run must end with ErrRemoved as
// soon as the removal is confirmed.
func TestLifecycle_RemovedByOperator_RunEndsWithErrRemoved(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeRing()
		cfg := testConfig("a") // default 5s heartbeat period
		cfg.JoinAfter = 0
		m := startMember(t, f, cfg, 1)
		synctest.Wait()
		if m.l.State() != ringstate.ACTIVE {
			t.Fatalf("state %s, want ACTIVE", m.l.State())
		}
		f.commit(t, ringstate.Command{Op: ringstate.OpRemove, Member: "a"})
		f.removeFromCluster("a")
		start := time.Now()
		err := m.wait()
		if !errors.Is(err, ErrRemoved) {
			t.Fatalf("Run = %v, want ErrRemoved", err)
		}
		if d := time.Since(start); d > time.Second {
			t.Fatalf("Run returned %s after the confirmed removal", d)
		}
	})
}

// The same removal confirmed only through failing Applies (a heartbeat), with a leave requested
// while the member is absent from the ring: Run must still end, not retry forever.
func TestLifecycle_RemovedThenLeave_Finishes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeRing()
		cfg := testConfig("a")
		cfg.JoinAfter = 0
		m := startMember(t, f, cfg, 1)
		synctest.Wait()
		// The ring member is gone, but the node's removal is not confirmed yet: a leave request
		// must finish at once (nothing to hand over) rather than wait for the member to reappear.
		f.commit(t, ringstate.Command{Op: ringstate.OpRemove, Member: "a"})
		synctest.Wait()
		m.l.Leave()
		if err := m.wait(); err != nil {
			t.Fatalf("Run = %v, want nil (left)", err)
		}
		wantOps(t, f, "a", "register a", "claim-tokens a", "activate a", "remove a", "leave-cluster a")
	})
}

// Regression (SIGTERM while register cannot commit was ignored): a node in no cluster retries its
// register forever; a leave request must cancel it and end Run.
func TestLifecycle_LeaveWhileRegisterCannotCommit_Finishes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeRing()
		f.setNoQuorum(true)
		cfg := testConfig("a")
		m := startMember(t, f, cfg, 1)
		time.Sleep(30 * time.Second) // virtual: register attempts keep failing
		synctest.Wait()
		if !m.running() {
			t.Fatal("Run ended without a leave")
		}
		f.setNoQuorum(false) // the remove and leave-cluster that follow must be able to commit
		m.l.Leave()
		if err := m.wait(); err != nil {
			t.Fatalf("Run = %v, want nil", err)
		}
		if _, ok := f.Ring().Member("a"); ok {
			t.Fatal("a is in the ring after leaving")
		}
		// The stuck register was cancelled, not committed once quorum returned.
		wantOps(t, f, "a", "remove a refused", "leave-cluster a")
	})
}
