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

// startSingleNode runs one whole node (Raft, gRPC, HTTP, WAL, filesystem bucket) on loopback with
// clock as its Config.Clock and extra flags, bootstrapped alone, and returns once it is ready as
// /ready means it: ACTIVE, with its ring caught up (the push gate answers 503 until then). The node
// stops when t ends.
func startSingleNode(t *testing.T, clock func() time.Time, extra ...string) (*Server, Config) {
	t.Helper()
	var cfg Config
	fs := flag.NewFlagSet("ingester", flag.ContinueOnError)
	cfg.RegisterFlags(fs)
	args := append([]string{"-node.id", "n0", "-data.dir", filepath.Join(t.TempDir(), "n0"), "-bootstrap",
		"-raft.addr", freeAddr(t), "-grpc.addr", freeAddr(t), "-http.addr", freeAddr(t), "-admin.http-addr", "",
		"-ring.heartbeat-period", "200ms", "-ingester.join-after", "0s"}, extra...)
	if err := fs.Parse(args); err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	cfg.Clock = clock
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
	return s, cfg
}

// pushSample remote-writes one sample of series {__name__=name} at ts to the node's HTTP push
// endpoint, for tenant (no X-Scope-OrgID when empty), and returns the status and body.
func pushSample(t *testing.T, httpAddr, tenant, name string, ts time.Time) (int, string) {
	t.Helper()
	raw, err := (&prompb.WriteRequest{Timeseries: []prompb.TimeSeries{{
		Labels:  []prompb.Label{{Name: "__name__", Value: name}},
		Samples: []prompb.Sample{{Timestamp: ts.UnixMilli(), Value: 1}},
	}}}).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest(http.MethodPost, "http://"+httpAddr+"/api/v1/push", bytes.NewReader(snappy.Encode(nil, raw)))
	req.Header.Set("Content-Encoding", "snappy")
	req.Header.Set("Content-Type", "application/x-protobuf")
	if tenant != "" {
		req.Header.Set("X-Scope-OrgID", tenant)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp.StatusCode, string(bytes.TrimSpace(body))
}
