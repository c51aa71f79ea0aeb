package ingester

import (
	"context"
	"errors"
	"flag"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// TestStartup_ServesProgressBeforeTheWALIsOpen holds the WAL file's lock (as a second process on
// the same data directory would) so that New is stuck opening it, and checks that the HTTP port
// answers meanwhile: /ready and pushes 503 with what the node is doing, /metrics with the replay's
// gauge at 0. Once the lock goes, New finishes and the full handler takes over.
func TestStartup_ServesProgressBeforeTheWALIsOpen(t *testing.T) {
	var cfg Config
	fs := flag.NewFlagSet("ingester", flag.ContinueOnError)
	cfg.RegisterFlags(fs)
	if err := fs.Parse([]string{"-node.id", "n0", "-data.dir", filepath.Join(t.TempDir(), "n0"), "-bootstrap",
		"-raft.addr", freeAddr(t), "-grpc.addr", freeAddr(t), "-http.addr", freeAddr(t), "-admin.http-addr", "",
		"-ring.heartbeat-period", "200ms", "-ingester.join-after", "0s"}); err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(cfg.Store.WALDir, 0o700); err != nil {
		t.Fatal(err)
	}
	lock, err := bolt.Open(filepath.Join(cfg.Store.WALDir, "wal.bolt"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close()

	type result struct {
		s   *Server
		err error
	}
	created := make(chan result, 1)
	go func() {
		s, err := New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
		created <- result{s, err}
	}()

	get := func(method, path string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(method, "http://"+cfg.HTTPAddr+path, strings.NewReader(""))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	var code int
	var body string
	for deadline := time.Now().Add(3 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if code, body = get(http.MethodGet, "/ready"); code != 0 || time.Now().After(deadline) {
			break
		}
	}
	if want := "not ready: ingester n0 is starting: opening the WAL"; code != http.StatusServiceUnavailable || !strings.Contains(body, want) {
		t.Fatalf("/ready while the WAL is locked: %d %q, want 503 with %q", code, body, want)
	}
	if code, body := get(http.MethodPost, "/api/v1/push"); code != http.StatusServiceUnavailable || !strings.Contains(body, "is starting") {
		t.Errorf("push while starting: %d %q, want 503 saying the node is starting", code, body)
	}
	if code, body := get(http.MethodGet, "/metrics"); code != http.StatusOK || !strings.Contains(body, "\nraftingest_wal_replay_progress_ratio 0\n") {
		t.Errorf("/metrics while starting: %d, want 200 with raftingest_wal_replay_progress_ratio 0; got:\n%.2000s", code, body)
	}

	lock.Close()
	var r result
	select {
	case r = <-created:
	case <-time.After(20 * time.Second):
		t.Fatal("New did not return within 20s of the WAL's lock going")
	}
	if r.err != nil {
		t.Fatal(r.err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.s.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("run: %v", err)
		}
	}()
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if code, body = get(http.MethodGet, "/ready"); code == http.StatusOK || time.Now().After(deadline) {
			break
		}
	}
	if code != http.StatusOK || body != "ready\n" {
		t.Fatalf("/ready after start: %d %q, want 200 ready", code, body)
	}
	if _, body := get(http.MethodGet, "/metrics"); !strings.Contains(body, "\nraftingest_wal_replay_progress_ratio 1\n") {
		t.Errorf("/metrics after start lacks raftingest_wal_replay_progress_ratio 1")
	}
}
