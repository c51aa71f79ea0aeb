package ingester

import (
	"context"
	"net/http"
	"testing"
	"time"
)

// TestServer_ClockReachesRingDistributorAndFlusher: Config.Clock is the node's wall clock for the
// three parts that decide by it. One real node (Raft, gRPC, HTTP, WAL, filesystem bucket) runs with
// its clock an hour ahead of the host's:
//   - the ring time it stamps as leader is its clock's, an hour ahead;
//   - its distributor judges "too far in the future" (-validation.create-grace-period, 10m) by it:
//     a sample 30m ahead of the host is accepted, one 80m ahead is refused;
//   - its flusher judges idleness (-ingester.flush-idle-timeout, 30m here) by it: a series whose
//     newest sample is a minute old by the host's clock is 61 minutes old by the node's, and flushed.
//     (The periodic flush is set to 1h so that only the test flushes.)
//
// Each of the three outcomes is the opposite with the host's clock.
func TestServer_ClockReachesRingDistributorAndFlusher(t *testing.T) {
	const skew = time.Hour
	s, cfg := startSingleNode(t, func() time.Time { return time.Now().Add(skew) },
		"-ingester.flush-idle-timeout", "30m", "-ingester.flush-check-period", "1h")

	// Raft: ring time is the node's clock.
	if ahead := time.Duration(s.node.Ring().TimeMs()-time.Now().UnixMilli()) * time.Millisecond; ahead < skew-10*time.Second || ahead > skew+10*time.Second {
		t.Fatalf("ring time is %s ahead of the host's clock, want about %s: the leader does not stamp from Config.Clock", ahead, skew)
	}

	// Distributor: the grace period counts from the node's clock.
	now := time.Now()
	push := func(name string, ts time.Time) int {
		t.Helper()
		code, body := pushSample(t, cfg.HTTPAddr, "", name, ts)
		t.Logf("push %s at host time %s: %d %s", name, ts.Sub(now).Round(time.Minute), code, body)
		return code
	}
	if code := push("ahead_30m", now.Add(30*time.Minute)); code/100 != 2 {
		t.Fatalf("a sample 30m ahead of the host (30m behind the node's clock) was refused with %d", code)
	}
	if code := push("ahead_80m", now.Add(80*time.Minute)); code != http.StatusBadRequest {
		t.Fatalf("a sample 20m ahead of the node's clock (grace 10m) got %d, want 400", code)
	}

	// Flusher: idleness counts from the node's clock.
	if code := push("one_minute_old", now.Add(-time.Minute)); code/100 != 2 {
		t.Fatalf("push: %d", code)
	}
	fctx, fcancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer fcancel()
	res, err := s.storage.flusher.FlushDue(fctx)
	if err != nil {
		t.Fatal(err)
	}
	if res.Samples < 1 {
		t.Fatalf("FlushDue flushed %+v: a series idle for 61 minutes by the node's clock was not flushed", res)
	}
}
