// Command bench is raftingest's load generator and benchmark runner.
//
//	bench load -url http://127.0.0.1:8080/api/v1/push [-series N -labels N -samples-per-request N
//	           -senders N -duration D | -rounds N -scrape-interval D -tenants N -churn F -rate R
//	           -max-error-ratio F]
//	bench run  [-scale default|large|small|smoke] [-bin bin] [-out bench/results]
//
// `load` sends Prometheus remote-write 1.0 and prints samples/s, latency quantiles, bytes on the
// wire and errors by class; it exits 1 when the error ratio passes -max-error-ratio. `run` is
// `make bench`: it starts bin/ingester and prometheus on loopback and prints the table (see
// docs/benchmarks.md). BENCH_SCALE sets the default of -scale.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/raftingest/raftingest/bench"
)

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "-help" || args[0] == "help" {
		fmt.Fprintln(os.Stderr, "usage: bench load [flags]   (remote-write load generator; bench load -help)\n       bench run [flags]    (scenario runner behind make bench; bench run -help)")
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	switch args[0] {
	case "load":
		return load(ctx, args[1:])
	case "run":
		return runScenarios(ctx, args[1:])
	default:
		fmt.Fprintf(os.Stderr, "bench: unknown command %q: want load or run\n", args[0])
		return 2
	}
}

func load(ctx context.Context, args []string) int {
	fs := flag.NewFlagSet("bench load", flag.ContinueOnError)
	var cfg bench.LoadConfig
	cfg.RegisterFlags(fs)
	duration := fs.Duration("duration", 30*time.Second, "how long to send (0: only -rounds bounds the run)")
	rounds := fs.Int("rounds", 0, "stop after this many rounds over every series (0: only -duration bounds the run)")
	maxErr := fs.Float64("max-error-ratio", 0.01, "exit 1 when more than this fraction of requests fail")
	warmup := fs.Int("warmup-rounds", 0, "rounds sent before measuring (the first round creates every series)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	var errs []error
	if *duration < 0 || *rounds < 0 || (*duration == 0 && *rounds == 0) {
		errs = append(errs, errors.New("-duration and -rounds: want at least one of them above zero, neither negative"))
	}
	if *duration > 24*time.Hour {
		errs = append(errs, fmt.Errorf("-duration=%s: want at most 24h", *duration))
	}
	if *maxErr < 0 || *maxErr > 1 {
		errs = append(errs, fmt.Errorf("-max-error-ratio=%v: want 0 to 1", *maxErr))
	}
	if *warmup < 0 {
		errs = append(errs, fmt.Errorf("-warmup-rounds=%d: want zero or more", *warmup))
	}
	if err := errors.Join(append(errs, cfg.Validate())...); err != nil {
		fmt.Fprintf(os.Stderr, "bench load: %v\n", err)
		return 2
	}
	g, err := bench.NewGenerator(cfg)
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench load: %v\n", err)
		return 2
	}
	if *warmup > 0 {
		w, err := g.Run(ctx, bench.RunOptions{Rounds: *warmup, Duration: max(*duration, time.Hour)})
		if err != nil {
			fmt.Fprintf(os.Stderr, "bench load: warm-up: %v\n", err)
			return 1
		}
		fmt.Printf("warm-up: %d requests, %d samples acked, %d errors\n", w.Requests, w.Samples, w.Errors())
	}
	res, err := g.Run(ctx, bench.RunOptions{Duration: *duration, Rounds: *rounds})
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench load: %v\n", err)
		return 1
	}
	fmt.Print(res.Summary())
	if r := res.ErrorRatio(); r > *maxErr || res.Requests == 0 {
		fmt.Fprintf(os.Stderr, "bench load: %d of %d requests failed (%.2f%% > -max-error-ratio %.2f%%)\n", res.Errors(), res.Requests, 100*r, 100**maxErr)
		return 1
	}
	return 0
}

func runScenarios(ctx context.Context, args []string) int {
	fs := flag.NewFlagSet("bench run", flag.ContinueOnError)
	scaleDef := os.Getenv("BENCH_SCALE")
	if scaleDef == "" {
		scaleDef = "default"
	}
	scale := fs.String("scale", scaleDef, "scale of every scenario: default (the issues' figures), large (1M active series, under 15 minutes), small (about two minutes) or smoke (default: $BENCH_SCALE, else default)")
	binDir := fs.String("bin", "bin", "directory holding the ingester binary (make build)")
	out := fs.String("out", "bench/results", "directory of the results file <date>-<scale>.md (empty: do not write one)")
	prom := fs.String("prometheus", "", "path of the prometheus binary (default: prometheus on $PATH)")
	only := fs.String("only", "", "comma-separated scenarios to run, by number or name (e.g. 7 or query,hand-over); empty runs all")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	var onlyList []string
	for _, o := range strings.Split(*only, ",") {
		if o = strings.TrimSpace(o); o != "" {
			onlyList = append(onlyList, o)
		}
	}
	sc, err := bench.ScaleNamed(*scale)
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench run: %v\n", err)
		return 2
	}
	if *prom == "" {
		if p, err := exec.LookPath("prometheus"); err == nil {
			*prom = p
		} else {
			fmt.Fprintln(os.Stderr, "bench run: prometheus is not on $PATH (make deps installs it); the comparisons will fail")
		}
	}
	bin, _ := filepath.Abs(*binDir)
	src, _ := os.Getwd()
	rep, err := bench.Run(ctx, bench.RunConfig{Scale: sc, BinDir: bin, Prometheus: *prom, SrcDir: src, OutDir: *out, Out: os.Stderr,
		Command: "BENCH_SCALE=" + sc.Name + " bench run " + strings.Join(args, " "), Only: onlyList})
	if rep != nil {
		fmt.Println()
		fmt.Print(rep.Table())
		if rep.Profile != "" {
			fmt.Printf("\nCPU profile of the RF1 ingester under the ingest scenario (top):\n%s\n", rep.Profile)
		}
		if rep.File != "" {
			fmt.Printf("\nwritten to %s\n", rep.File)
		}
		fmt.Println(rep.LastLine())
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench run: %v\n", err)
		return 1
	}
	if len(rep.Failed) > 0 {
		fmt.Fprintf(os.Stderr, "bench run: %d scenario(s) failed:\n  %s\n", len(rep.Failed), strings.Join(rep.Failed, "\n  "))
		return 1
	}
	return 0
}
