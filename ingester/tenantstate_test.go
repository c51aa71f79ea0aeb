package ingester

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang/snappy"
	"github.com/prometheus/prometheus/prompb"
)

// TestServer_IdleTenantsLeaveNoState runs one whole node (real HTTP, gRPC, Raft, WAL and bucket)
// with a clock the test moves, pushes from many tenant ids that then go quiet, and checks that
// nothing of theirs is left: the ingester forgets a tenant's head and metric series once a flush
// leaves it without series, and the distributor forgets its rate limiter and metric series once it
// has been idle for 15 minutes. Rotating tenant ids must not grow a node's memory without bound.
func TestServer_IdleTenantsLeaveNoState(t *testing.T) {
	var cfg Config
	fs := flag.NewFlagSet("ingester", flag.ContinueOnError)
	cfg.RegisterFlags(fs)
	if err := fs.Parse([]string{"-node.id", "n0", "-data.dir", filepath.Join(t.TempDir(), "n0"), "-bootstrap",
		"-raft.addr", freeAddr(t), "-grpc.addr", freeAddr(t), "-http.addr", freeAddr(t), "-admin.http-addr", "",
		"-ring.heartbeat-period", "200ms", "-ingester.join-after", "0s", "-auth.multitenancy-enabled",
		"-ingester.flush-check-period", "1h"}); err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	var skew atomic.Int64
	cfg.Clock = func() time.Time { return time.Now().Add(time.Duration(skew.Load())) }
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
	caughtUp := func() bool { ok, _, _ := s.node.CaughtUp(); return ok }
	for deadline := time.Now().Add(20 * time.Second); !s.lc.Ready() || !caughtUp(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the node did not become ready within 20s")
		}
	}
	push := func(tenant string) {
		t.Helper()
		raw, err := (&prompb.WriteRequest{Timeseries: []prompb.TimeSeries{{
			Labels:  []prompb.Label{{Name: "__name__", Value: "m"}},
			Samples: []prompb.Sample{{Timestamp: cfg.Clock().UnixMilli(), Value: 1}},
		}}}).Marshal()
		if err != nil {
			t.Fatal(err)
		}
		req, _ := http.NewRequest(http.MethodPost, "http://"+cfg.HTTPAddr+"/api/v1/push", bytes.NewReader(snappy.Encode(nil, raw)))
		req.Header.Set("Content-Encoding", "snappy")
		req.Header.Set("X-Scope-OrgID", tenant)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode/100 != 2 {
			t.Fatalf("push for %s: %d %s", tenant, resp.StatusCode, body)
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
