package ingester

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/raftingest/raftingest/lifecycle"
)

// Regression (a removed node never exits): after `ringctl remove n2` while n2 runs, every Apply of
// n2 failed as transient, its lifecycle retried forever and Run never returned; with 200ms
// heartbeats the old tests passed by luck. With the DEFAULT heartbeat period (5s) and timeout (1m),
// n2's Run must return ErrRemoved, naming the raft directory to wipe, within a few seconds.
func TestServer_RemovedByOperator_RunReturnsErrRemoved(t *testing.T) {
	c := startInProcess(t, 3, "-ring.heartbeat-period", "5s", "-ring.heartbeat-timeout", "1m")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := c.servers[0].node.RemovePeer(ctx, "n2"); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-c.done[2]:
		c.done[2] <- err // for the cleanup
		if !errors.Is(err, lifecycle.ErrRemoved) {
			t.Fatalf("n2's Run = %v, want ErrRemoved", err)
		}
		if !strings.Contains(err.Error(), "wipe") || !strings.Contains(err.Error(), c.cfgs[2].DataDir+"/raft") {
			t.Fatalf("error does not say to wipe %s/raft: %v", c.cfgs[2].DataDir, err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("n2's Run did not return within 20s of its removal")
	}
	if _, ok := c.servers[0].node.Ring().Member("n2"); ok {
		t.Fatal("n2 still in the ring")
	}
}
