package ingester

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	pc "github.com/raftingest/raftingest/internal/proccluster"
)

// inProcessCluster runs n whole ingester Servers in this process, on loopback ports, with real
// Raft, gRPC, HTTP and bbolt files. It is the in-process twin of internal/proccluster.
type inProcessCluster struct {
	servers []*Server
	cfgs    []Config
	cancel  context.CancelFunc
	done    []chan error
}

// freeAddr is a loopback address on a port no other freeAddr or proccluster.FreePorts call of this
// test process returned (a port released by one pick can come back from the next).
func freeAddr(tb testing.TB) string {
	return fmt.Sprintf("127.0.0.1:%d", pc.FreePorts(tb, 1)[0])
}

func startInProcess(tb testing.TB, n int, extra ...string) *inProcessCluster {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	c := &inProcessCluster{cancel: cancel}
	dir := tb.TempDir()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	for i := range n {
		var cfg Config
		fs := flag.NewFlagSet("ingester", flag.ContinueOnError)
		cfg.RegisterFlags(fs)
		args := []string{"-node.id", fmt.Sprintf("n%d", i), "-data.dir", filepath.Join(dir, fmt.Sprint(i)),
			"-raft.addr", freeAddr(tb), "-grpc.addr", freeAddr(tb), "-http.addr", freeAddr(tb), "-admin.http-addr", "",
			"-ring.heartbeat-period", "200ms", "-ring.heartbeat-timeout", "5s", "-ingester.join-after", "0s"}
		if i == 0 {
			args = append(args, "-bootstrap")
		} else {
			args = append(args, "-join", c.cfgs[0].GRPCAddr)
		}
		if err := fs.Parse(append(args, extra...)); err != nil {
			tb.Fatal(err)
		}
		if err := cfg.Validate(); err != nil {
			tb.Fatal(err)
		}
		s, err := New(cfg, log)
		if err != nil {
			tb.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- s.Run(ctx) }()
		c.servers, c.cfgs, c.done = append(c.servers, s), append(c.cfgs, cfg), append(c.done, done)
	}
	tb.Cleanup(c.stop)
	deadline := time.Now().Add(30 * time.Second)
	for _, s := range c.servers {
		for !s.lc.Ready() || s.node.Ring().EffectiveRF(n) < n {
			if time.Now().After(deadline) {
				tb.Fatalf("cluster of %d not ACTIVE within 30s", n)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	return c
}

func (c *inProcessCluster) stop() {
	c.cancel()
	for _, d := range c.done {
		if err := <-d; err != nil && !errors.Is(err, context.Canceled) {
			slog.Default().Warn("server stopped", "err", err)
		}
	}
}
