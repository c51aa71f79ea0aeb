// Command ingester runs one raftingest member: a Raft node holding the ring, an ingester, and the
// HTTP and gRPC servers. See `ingester -help` and the README.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/raftingest/raftingest/ingester"
)

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	fs := flag.NewFlagSet("ingester", flag.ContinueOnError)
	var cfg ingester.Config
	cfg.RegisterFlags(fs)
	if err := fs.Parse(args); err != nil {
		return 2 // the flag package has printed the error and the usage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "ingester: unexpected argument %q (flags only; see -help)\n", fs.Arg(0))
		return 2
	}
	if err := cfg.Validate(); err != nil {
		fmt.Fprintf(os.Stderr, "ingester: invalid configuration:\n%v\n", err)
		return 2
	}
	log := newLogger(cfg.LogLevel, cfg.LogFormat)
	applyMemoryLimit(cfg.MemoryLimitRatio, log)

	// Signals are caught before anything is opened: the WAL replay, the bolt files and the snapshot
	// restore in ingester.New can take a while, and a SIGTERM then must not kill the process
	// abruptly. The first SIGINT or SIGTERM leaves the ring gracefully (once the server exists:
	// New is not interruptible, so a leave asked for during it is passed on when it returns); a
	// second one stops at once, as a crash would (the WAL and the ring's restart fix-ups make that
	// safe).
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	leave := make(chan struct{})
	go func() {
		sig := <-sigs
		log.Info("leaving the ring", "signal", sig.String())
		close(leave)
		sig = <-sigs
		log.Warn("stopping without leaving", "signal", sig.String())
		cancel()
	}()

	srv, err := ingester.New(cfg, log)
	if err != nil {
		log.Error("cannot start", "err", err)
		return 1
	}
	go func() {
		select {
		case <-leave:
			srv.Leave()
		case <-ctx.Done():
		}
	}()

	if err := srv.Run(ctx); err != nil {
		if errors.Is(err, context.Canceled) {
			return 1
		}
		log.Error("stopped", "err", err)
		return 1
	}
	log.Info("left the ring; bye")
	return 0
}

func newLogger(level, format string) *slog.Logger {
	var lv slog.Level
	_ = lv.UnmarshalText([]byte(level)) // validated by Config.Validate
	opts := &slog.HandlerOptions{Level: lv}
	if format == "json" {
		return slog.New(slog.NewJSONHandler(os.Stderr, opts))
	}
	return slog.New(slog.NewTextHandler(os.Stderr, opts))
}
