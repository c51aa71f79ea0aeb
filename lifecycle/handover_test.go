package lifecycle

import (
	"context"
	"slices"
	"testing"
	"testing/synctest"
	"time"

	"github.com/raftingest/raftingest/ringstate"
)

// TestLifecycle_HandoverInOnLeavingRemovesUsFromTheRing: CompleteHandover, committed by the joiner
// while OnLeaving runs, removes the leaver from the ring. Heartbeats refused meanwhile (unknown
// member) and the Remove that follows OnLeaving must be taken as the leave succeeding, not as an
// operator's removal: Run returns nil and the member leaves the Raft cluster.
func TestLifecycle_HandoverInOnLeavingRemovesUsFromTheRing(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeRing()
		f.commit(t, ringstate.Command{Op: ringstate.OpRegister, Member: "j", RaftAddr: "j:9001", GRPCAddr: "j:9095", HTTPAddr: "j:8080"})
		m := startMember(t, f, testConfig("a"), 1, func(l *Lifecycle) {
			l.OnLeaving = func(ctx context.Context) error {
				f.commit(t, ringstate.Command{Op: ringstate.OpClaimJoiner, Member: "a", Peer: "j"})
				time.Sleep(3 * time.Second) // streaming
				f.commit(t, ringstate.Command{Op: ringstate.OpCompleteHandover, Member: "a", Peer: "j"})
				time.Sleep(10 * time.Second) // heartbeats of a are refused from now on
				return nil
			}
		})
		synctest.Wait()
		tokens := f.member(t, "a").Tokens
		m.l.Leave()
		if err := m.wait(); err != nil {
			t.Fatalf("Run after a completed hand-over: %v, want nil", err)
		}
		if got := f.member(t, "j"); got.State != ringstate.ACTIVE || !slices.Equal(got.Tokens, tokens) {
			t.Fatalf("joiner %s with %d tokens, want ACTIVE with the leaver's %d", got.State, len(got.Tokens), len(tokens))
		}
		if evs := f.eventList(); !slices.Contains(evs, "leave-cluster a") {
			t.Fatalf("a did not leave the raft cluster: %v", evs)
		}
		f.checkInvariants(t)
	})
}
