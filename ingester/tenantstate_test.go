package ingester

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// TestServer_IdleTenantsLeaveNoState runs one whole node (real HTTP, gRPC, Raft, WAL and bucket)
// with a clock the test moves, pushes from many tenant ids that then go quiet, and checks that
// nothing of theirs is left: the ingester forgets a tenant's head and metric series once a flush
// leaves it without series, and the distributor forgets its rate limiter and metric series once it
// has been idle for 15 minutes. Rotating tenant ids must not grow a node's memory without bound.
func TestServer_IdleTenantsLeaveNoState(t *testing.T) {
	var skew atomic.Int64
	s, cfg := startSingleNode(t, func() time.Time { return time.Now().Add(time.Duration(skew.Load())) },
		"-auth.multitenancy-enabled", "-ingester.flush-check-period", "1h")
	push := func(tenant string) {
		t.Helper()
		if code, body := pushSample(t, cfg.HTTPAddr, tenant, "m", cfg.Clock()); code/100 != 2 {
			t.Fatalf("push for %s: %d %s", tenant, code, body)
		}
	}
	// seriesOf counts the metric series (of every family) labelled with a rotating tenant.
	seriesOf := func() int {
		t.Helper()
		mfs, err := s.reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, mf := range mfs {
			for _, m := range mf.GetMetric() {
				for _, l := range m.GetLabel() {
					if l.GetName() == "user" && strings.HasPrefix(l.GetValue(), "rot-") {
						n++
					}
				}
			}
		}
		return n
	}

	const tenants = 100
	for i := range tenants {
		push(fmt.Sprint("rot-", i))
	}
	if n := len(s.store.Tenants()); n != tenants {
		t.Fatalf("%d tenant heads after the pushes, want %d", n, tenants)
	}
	before := seriesOf()
	if before < 3*tenants { // received, samples in (distributor), ingested (ingester) at least
		t.Fatalf("only %d metric series name the rotating tenants", before)
	}

	// The flush leaves them without series: the ingester forgets their heads and metric series.
	fctx, fcancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer fcancel()
	if err := s.storage.FlushAll(fctx); err != nil {
		t.Fatal(err)
	}
	if n := len(s.store.Tenants()); n != 0 {
		t.Fatalf("%d tenant heads after everything was flushed, want 0", n)
	}
	// 16 minutes later, one push of another tenant sweeps the distributor's idle tenants.
	skew.Store(int64(16 * time.Minute))
	push("live")
	if n := seriesOf(); n != 0 {
		mfs, _ := s.reg.Gather()
		for _, mf := range mfs {
			for _, m := range mf.GetMetric() {
				for _, l := range m.GetLabel() {
					if l.GetName() == "user" && l.GetValue() == "rot-1" {
						t.Logf("left: %s %v", mf.GetName(), m.GetLabel())
					}
				}
			}
		}
		t.Fatalf("%d metric series still name the idle tenants (%d before)", n, before)
	}
	t.Logf("metric series of %d idle tenants: %d before, 0 after", tenants, before)
}
