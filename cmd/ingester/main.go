// Command ingester runs one raftingest member: a Raft node holding the ring, an ingester, and the
// HTTP and gRPC servers. See `ingester -help` and the README.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"syscall"

	"github.com/raftingest/raftingest/ingester"
	"github.com/raftingest/raftingest/querier"
)

func main() {
	os.Exit(run(os.Args[1:]))
}

// registerFlags registers every flag of the command on fs: the configuration's and the ones that
// say how to read it.
func registerFlags(fs *flag.FlagSet, cfg *ingester.Config) (version, printConfig *bool, configFile *string) {
	cfg.RegisterFlags(fs)
	version = fs.Bool("version", false, "print the version and exit")
	configFile = fs.String("config.file", "", "YAML file of flag values, keys being the flags' names (nested at the dots or flat); flags given on the command line override it")
	printConfig = fs.Bool("print.config", false, "print the configuration in effect (the file, the flags and the defaults; secrets masked) as a -config.file, and exit")
	return version, printConfig, configFile
}

func run(args []string) int {
	fs := flag.NewFlagSet("ingester", flag.ContinueOnError)
	var cfg ingester.Config
	version, printConfig, configFile := registerFlags(fs, &cfg)
	// -join accumulates across repetitions; every other flag's last value wins.
	rec := ingester.NewRecorder(fs, "join")
	// A mistake gets one line and a pointer, not the whole flag list after it; -help gets the list
	// on stdout.
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			// From a flag set of its own: the recorder's wrappers would hide the flags' types and
			// defaults from PrintDefaults.
			fmt.Fprintf(os.Stdout, "Usage of ingester (a raftingest member; README.md explains the flags that matter most):\n")
			help := flag.NewFlagSet("ingester", flag.ContinueOnError)
			registerFlags(help, &ingester.Config{})
			help.SetOutput(os.Stdout)
			help.PrintDefaults()
			return 0
		}
		fmt.Fprintf(os.Stderr, "ingester: %v\nRun 'ingester -help' for the flags.\n", err)
		return 2
	}
	if *version {
		fmt.Fprintln(os.Stdout, versionString())
		return 0
	}
	if *configFile != "" {
		cmdline := map[string]bool{}
		fs.Visit(func(f *flag.Flag) { cmdline[f.Name] = true })
		if err := ingester.LoadConfigFile(fs, *configFile, cmdline); err != nil {
			fmt.Fprintf(os.Stderr, "ingester: %v\n", err)
			return 2
		}
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "ingester: unexpected argument %q (flags only; see -help)\n", fs.Arg(0))
		return 2
	}
	if err := cfg.Validate(); err != nil {
		fmt.Fprintf(os.Stderr, "ingester: invalid configuration:\n%v\n", err)
		return 2
	}
	if *printConfig {
		if err := ingester.PrintConfig(os.Stdout, fs, rec); err != nil {
			fmt.Fprintf(os.Stderr, "ingester: -print.config: %v\n", err)
			return 1
		}
		return 0
	}
	log := newLogger(cfg.LogLevel, cfg.LogFormat)
	applyMemoryLimit(cfg.MemoryLimitRatio, log)
	applyGOGC(cfg.GOGC, log)

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

// versionString is -version's line: the release the querier's buildinfo reports, the VCS revision
// and time the binary was built from (when the build recorded them), and the Go version.
func versionString() string {
	rev, when, dirty := "unknown", "", ""
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.time":
				when = " " + s.Value
			case "vcs.modified":
				if s.Value == "true" {
					dirty = "+modified"
				}
			}
		}
	}
	return fmt.Sprintf("raftingest ingester %s (revision %s%s%s, %s)", querier.Version, rev, dirty, when, runtime.Version())
}
