package ingester

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"io"
	"log/slog"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/golang/snappy"
	"github.com/prometheus/prometheus/prompb"
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
	var cfg Config
	fs := flag.NewFlagSet("ingester", flag.ContinueOnError)
	cfg.RegisterFlags(fs)
	if err := fs.Parse([]string{"-node.id", "n0", "-data.dir", filepath.Join(t.TempDir(), "n0"), "-bootstrap",
		"-raft.addr", freeAddr(t), "-grpc.addr", freeAddr(t), "-http.addr", freeAddr(t), "-admin.http-addr", "",
		"-ring.heartbeat-period", "200ms", "-ingester.join-after", "0s", "-ingester.flush-idle-timeout", "30m",
		"-ingester.flush-check-period", "1h"}); err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	cfg.Clock = func() time.Time { return time.Now().Add(skew) }
	s, err := New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("run: %v", err)
		}
	})
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	// Ready as /ready means it: ACTIVE, and the ring caught up (the push gate answers 503 until then).
	caughtUp := func() bool { ok, _, _ := s.node.CaughtUp(); return ok }
	for deadline := time.Now().Add(20 * time.Second); !s.lc.Ready() || !caughtUp(); <-tick.C {
		if time.Now().After(deadline) {
			t.Fatal("the node did not become ready within 20s")
		}
	}

	// Raft: ring time is the node's clock.
	if ahead := time.Duration(s.node.Ring().TimeMs()-time.Now().UnixMilli()) * time.Millisecond; ahead < skew-10*time.Second || ahead > skew+10*time.Second {
		t.Fatalf("ring time is %s ahead of the host's clock, want about %s: the leader does not stamp from Config.Clock", ahead, skew)
	}

	// Distributor: the grace period counts from the node's clock.
	now := time.Now()
	push := func(name string, ts time.Time) int {
		t.Helper()
		raw, err := (&prompb.WriteRequest{Timeseries: []prompb.TimeSeries{{
			Labels:  []prompb.Label{{Name: "__name__", Value: name}},
			Samples: []prompb.Sample{{Timestamp: ts.UnixMilli(), Value: 1}},
		}}}).Marshal()
		if err != nil {
			t.Fatal(err)
		}
		req, _ := http.NewRequest(http.MethodPost, "http://"+cfg.HTTPAddr+"/api/v1/push", bytes.NewReader(snappy.Encode(nil, raw)))
		req.Header.Set("Content-Encoding", "snappy")
		req.Header.Set("Content-Type", "application/x-protobuf")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		t.Logf("push %s at host time %s: %d %s", name, ts.Sub(now).Round(time.Minute), resp.StatusCode, bytes.TrimSpace(body))
		return resp.StatusCode
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
