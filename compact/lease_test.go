package compact_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/raftingest/raftingest/compact"
	"github.com/raftingest/raftingest/ringstate"
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
// previous leader, stops at most 5/6 of a lease after its last claim through the previous leader
// began, by its own clock, which the ring's expiry (after an election, possibly in another leader's
// clock) cannot vouch for; its later renewals through the new leader are fenced by the FSM — and
// waits again after losing and regaining the leadership. It used to claim at its first tick as
// leader.
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

// TestRun_LongIntervalClaimsALeaseAfterElection: with -compactor.interval much longer than the
// lease (the defaults are 1h and 1m), a member that leads claims the lease one lease duration after
// it became the leader — not at the next interval tick, which left compaction waiting up to two
// intervals after every election — and a claim that failed is retried one lease duration later,
// not an interval later.
func TestRun_LongIntervalClaimsALeaseAfterElection(t *testing.T) {
	start := time.Now()
	var at [2]atomic.Int64 // when the first two claims came, ns since start
	ran := make(chan struct{}, 1)
	lease := &scriptedLease{grant: func(n int32) (uint64, error) {
		if n <= 2 {
			at[n-1].Store(int64(time.Since(start)))
		}
		if n == 1 {
			return 0, fmt.Errorf("claim refused: %w", ringstate.ErrLeaseHeld)
		}
		return 7, nil
	}}
	lease.leader.Store(true)
	cfg := compact.Config{Enabled: true, Interval: time.Hour, BlockRanges: compact.DefaultBlockRanges(),
		LeaseDuration: 3 * time.Second, DeletionDelay: compact.DefaultDeletionDelay}
	comp, err := compact.New(cfg, compact.Deps{Lease: lease, WorkDir: t.TempDir(),
		Cluster: func(ctx context.Context) (compact.Cluster, error) {
			select {
			case ran <- struct{}{}:
			default:
			}
			return compact.Cluster{}, nil
		}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { comp.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()

	select {
	case <-ran:
	case <-time.After(10 * time.Second):
		t.Fatalf("no run within 10s of leading with a %s interval and a %s lease (claims: %d)", cfg.Interval,
			cfg.LeaseDuration, lease.claims.Load())
	}
	const slack = 700 * time.Millisecond
	if got := time.Duration(at[0].Load()); got < cfg.LeaseDuration || got > cfg.LeaseDuration+slack {
		t.Fatalf("first claim %s after leading, want one lease duration (%s) later", got, cfg.LeaseDuration)
	}
	if got := time.Duration(at[1].Load() - at[0].Load()); got < cfg.LeaseDuration || got > cfg.LeaseDuration+slack {
		t.Fatalf("a failed claim was retried %s later, want one lease duration (%s)", got, cfg.LeaseDuration)
	}
}

// logCounter is a slog handler that counts records by level and message.
type logCounter struct {
	mu sync.Mutex
	n  map[string]int // "LEVEL message"
}

func (h *logCounter) Enabled(context.Context, slog.Level) bool { return true }
func (h *logCounter) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.n == nil {
		h.n = map[string]int{}
	}
	h.n[r.Level.String()+" "+r.Message]++
	return nil
}
func (h *logCounter) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *logCounter) WithGroup(string) slog.Handler      { return h }

// count returns how many records of level have a message starting with prefix.
func (h *logCounter) count(level slog.Level, prefix string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for k, v := range h.n {
		if strings.HasPrefix(k, level.String()+" "+prefix) {
			n += v
		}
	}
	return n
}

// TestRun_BlockedLeaseIsLoggedOnceAndShown: while the leader's claims keep failing for one reason,
// the compactor logs it at Warn once (not at every attempt) and raftingest_compactor_lease_blocked
// shows that reason; a new reason logs once more and moves the gauge; a successful claim clears it,
// and so does losing the leadership. It used to log every refusal at Debug and show nothing.
func TestRun_BlockedLeaseIsLoggedOnceAndShown(t *testing.T) {
	var refusal atomic.Pointer[error] // what claims return; nil grants
	refuse := func(err error) { refusal.Store(&err) }
	refuse(fmt.Errorf("claim-compactor n1: members [old] do not advertise command version 3: %w", ringstate.ErrMixedVersions))
	lease := &scriptedLease{grant: func(n int32) (uint64, error) {
		if err := refusal.Load(); err != nil {
			return 0, *err
		}
		return 3, nil
	}}
	lease.leader.Store(true)
	logs := &logCounter{}
	reg := prometheus.NewRegistry()
	cfg := compact.Config{Enabled: true, Interval: 50 * time.Millisecond, BlockRanges: compact.DefaultBlockRanges(),
		LeaseDuration: 3 * time.Second, DeletionDelay: compact.DefaultDeletionDelay}
	comp, err := compact.New(cfg, compact.Deps{Lease: lease, WorkDir: t.TempDir(), Registerer: reg, Logger: slog.New(logs),
		Cluster: func(ctx context.Context) (compact.Cluster, error) { return compact.Cluster{}, nil }})
	if err != nil {
		t.Fatal(err)
	}
	blocked := func() map[string]float64 {
		t.Helper()
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]float64{}
		for _, mf := range mfs {
			if mf.GetName() != "raftingest_compactor_lease_blocked" {
				continue
			}
			for _, m := range mf.GetMetric() {
				out[m.GetLabel()[0].GetValue()] = m.GetGauge().GetValue()
			}
		}
		return out
	}
	only := func(reason string) map[string]float64 {
		out := map[string]float64{"mixed_versions": 0, "raft_server_not_member": 0, "held": 0, "not_active": 0,
			"claim_failed": 0}
		if reason != "" {
			out[reason] = 1
		}
		return out
	}
	if got := blocked(); !maps.Equal(got, only("")) {
		t.Fatalf("gauge at start %v, want every reason exported at 0", got)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { comp.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()

	waitClaims := func(n int32) {
		t.Helper()
		if !pollUntil(10*time.Second, func() bool { return lease.claims.Load() >= n }) {
			t.Fatalf("%d claims, want %d", lease.claims.Load(), n)
		}
	}
	const warn = "compactor: the compactor lease cannot be claimed"
	waitClaims(10) // the wait of a lease, then a claim every 50ms
	if n := logs.count(slog.LevelWarn, warn); n != 1 {
		t.Fatalf("%d Warn lines for 10 refusals of one reason, want 1", n)
	}
	if got := blocked(); !maps.Equal(got, only("mixed_versions")) {
		t.Fatalf("gauge %v, want mixed_versions", got)
	}

	refuse(fmt.Errorf("raft servers [n9] are not ring members: %w", ringstate.ErrReplicaNotMember))
	waitClaims(lease.claims.Load() + 10)
	if n := logs.count(slog.LevelWarn, warn); n != 2 {
		t.Fatalf("%d Warn lines after the reason changed, want 2", n)
	}
	if got := blocked(); !maps.Equal(got, only("raft_server_not_member")) {
		t.Fatalf("gauge %v, want raft_server_not_member", got)
	}

	refusal.Store(nil)
	if !pollUntil(5*time.Second, func() bool { return maps.Equal(blocked(), only("")) }) {
		t.Fatalf("gauge %v after a granted claim, want all 0", blocked())
	}
	if n := logs.count(slog.LevelInfo, "compactor: the compactor lease is no longer blocked"); n != 1 {
		t.Fatalf("%d lines saying the lease is no longer blocked, want 1", n)
	}

	// Blocked again, then not the leader: the gauge is the leader's to show.
	refuse(fmt.Errorf("%w: n1 is LEAVING", ringstate.ErrIllegalTransition))
	if !pollUntil(5*time.Second, func() bool { return maps.Equal(blocked(), only("not_active")) }) {
		t.Fatalf("gauge %v, want not_active", blocked())
	}
	lease.leader.Store(false)
	if !pollUntil(5*time.Second, func() bool { return maps.Equal(blocked(), only("")) }) {
		t.Fatalf("gauge %v after losing the leadership, want all 0", blocked())
	}
	if n := logs.count(slog.LevelWarn, warn); n != 3 {
		t.Fatalf("%d Warn lines, want 3 (one per reason)", n)
	}
}

func pollUntil(d time.Duration, cond func() bool) bool {
	for deadline := time.Now().Add(d); ; time.Sleep(10 * time.Millisecond) {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
	}
}
