package compact_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/raftingest/raftingest/compact"
)

// scriptedLease grants claims while grant says so, and records them.
type scriptedLease struct {
	leader atomic.Bool
	claims atomic.Int32
	grant  func(n int32) (uint64, error)
}

func (l *scriptedLease) IsLeader() bool { return l.leader.Load() }
func (l *scriptedLease) Claim(ctx context.Context, d time.Duration) (uint64, error) {
	return l.grant(l.claims.Add(1))
}

// TestRun_WorksOnlyWhileTheLeaseIsRenewed: a member that is not the leader never claims; the
// leader claims, runs, and its run is cancelled as soon as a renewal fails (it stops working
// before the lease could pass to another member), and the lease gauge drops to 0.
func TestRun_WorksOnlyWhileTheLeaseIsRenewed(t *testing.T) {
	lease := &scriptedLease{grant: func(n int32) (uint64, error) {
		if n <= 2 { // the claim and one renewal
			return 4, nil
		}
		return 0, errors.New("lease held by another member")
	}}
	runStarted := make(chan struct{})
	var once sync.Once
	var stoppedAfter time.Duration
	stopped := make(chan error, 1)
	reg := prometheus.NewRegistry()
	cfg := compact.Config{Enabled: true, Interval: 200 * time.Millisecond, BlockRanges: compact.DefaultBlockRanges(),
		LeaseDuration: 3 * time.Second, DeletionDelay: compact.DefaultDeletionDelay}
	comp, err := compact.New(cfg, compact.Deps{
		Lease: lease,
		Cluster: func(ctx context.Context) (compact.Cluster, error) {
			// A long run: it ends only when the compactor cancels it.
			start := time.Now()
			once.Do(func() { close(runStarted) })
			<-ctx.Done()
			stoppedAfter = time.Since(start)
			stopped <- context.Cause(ctx)
			return compact.Cluster{}, ctx.Err()
		},
		WorkDir: t.TempDir(), Registerer: reg,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { comp.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()

	time.Sleep(700 * time.Millisecond)
	if n := lease.claims.Load(); n != 0 {
		t.Fatalf("a member that is not the leader claimed the lease %d times", n)
	}
	lease.leader.Store(true)
	select {
	case <-runStarted:
	case <-time.After(5 * time.Second):
		t.Fatal("the leader never ran")
	}
	if g := testutil.ToFloat64(gauge(t, reg, "cortex_compactor_lease_held")); g != 1 {
		t.Fatalf("lease gauge %v while running", g)
	}
	select {
	case cause := <-stopped:
		// Renewals every lease/3 = 1s: the first succeeds, the second fails at about 2s.
		if stoppedAfter > 3*time.Second || stoppedAfter < 1500*time.Millisecond {
			t.Fatalf("the run stopped after %s, want at the failed renewal (~2s), before the lease's 3s", stoppedAfter)
		}
		if cause == nil || !errorsContain(cause, "renewing the compactor lease (epoch 4)") {
			t.Fatalf("cause %v", cause)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the run went on after the lease could not be renewed")
	}
	deadline := time.Now().Add(5 * time.Second)
	for testutil.ToFloat64(gauge(t, reg, "cortex_compactor_lease_held")) != 0 {
		if time.Now().After(deadline) {
			t.Fatal("lease gauge still 1 after the run stopped")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if testutil.ToFloat64(gauge(t, reg, "cortex_compactor_runs_failed_total")) != 1 {
		t.Fatal("the cancelled run was not counted as failed")
	}
}

func errorsContain(err error, s string) bool { return err != nil && strings.Contains(err.Error(), s) }

func gauge(t *testing.T, reg *prometheus.Registry, name string) prometheus.Collector {
	return counter(t, reg, name)
}

// TestRun_NewLeaderWaitsALeaseBeforeItsFirstClaim: a member that becomes the Raft leader claims
// the lease only once a whole lease duration has passed by its own clock — the old holder, the
// previous leader, stops at most 5/6 of a lease after its last claim by its own clock, which the
// ring's expiry (the leader's clock) cannot vouch for — and waits again after losing and
// regaining the leadership. It used to claim at its first tick as leader.
func TestRun_NewLeaderWaitsALeaseBeforeItsFirstClaim(t *testing.T) {
	var firstClaim atomic.Int64 // ns since start
	start := time.Now()
	lease := &scriptedLease{grant: func(n int32) (uint64, error) {
		firstClaim.CompareAndSwap(0, int64(time.Since(start)))
		return 0, errors.New("lease held by another member") // no run: every tick claims again
	}}
	lease.leader.Store(true)
	cfg := compact.Config{Enabled: true, Interval: 100 * time.Millisecond, BlockRanges: compact.DefaultBlockRanges(),
		LeaseDuration: 3 * time.Second, DeletionDelay: compact.DefaultDeletionDelay}
	comp, err := compact.New(cfg, compact.Deps{Lease: lease, WorkDir: t.TempDir(),
		Cluster: func(ctx context.Context) (compact.Cluster, error) { return compact.Cluster{}, nil }})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { comp.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()

	deadline := time.Now().Add(6 * time.Second)
	for firstClaim.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if got := time.Duration(firstClaim.Load()); got < cfg.LeaseDuration || got > cfg.LeaseDuration+time.Second {
		t.Fatalf("first claim %s after becoming the leader, want one lease duration (%s) later", got, cfg.LeaseDuration)
	}
	// Leadership lost and regained: no claim for another lease duration.
	lease.leader.Store(false)
	time.Sleep(300 * time.Millisecond)
	before := lease.claims.Load()
	lease.leader.Store(true)
	time.Sleep(cfg.LeaseDuration - 500*time.Millisecond)
	if n := lease.claims.Load(); n != before {
		t.Fatalf("%d claims within %s of regaining the leadership, want none", n-before, cfg.LeaseDuration-500*time.Millisecond)
	}
}
