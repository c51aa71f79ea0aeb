package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"
)

// RunConfig configures the scenario runner.
type RunConfig struct {
	Scale      Scale
	BinDir     string    // holds ingester (make build)
	Prometheus string    // path of the prometheus binary
	SrcDir     string    // module root, for the Go ring benchmarks
	OutDir     string    // results file directory ("" = do not write one)
	Out        io.Writer // progress and the table
	Command    string    // the command line that started the run, for the results file
	// Only, when not empty, names the scenarios to run by number ("7") or name ("query"); the others
	// are skipped and their keys are na.
	Only []string
}

// Report is everything a run measured: the table rows and the machine-readable keys.
type Report struct {
	Rows    []Row
	Keys    []KV
	Failed  []string // scenarios that failed (not the n/a ones)
	Profile string   // pprof -top of our ingester under the ingest scenario
	// ProfileFile is where that CPU profile was saved (beside the results file), or "".
	ProfileFile string
	Cmds        []string
	File        string // results file written
}

// Row is one line of the table.
type Row struct {
	Scenario, Metric, Ours, Peer, Ratio, Target string
}

// KV is one key=value of the last line.
type KV struct{ K, V string }

func (r *Report) row(scenario, metric, ours, peer, ratio, target string) {
	r.Rows = append(r.Rows, Row{scenario, metric, ours, peer, ratio, target})
}

func (r *Report) key(k string, v float64) {
	s := "na"
	if !math.IsNaN(v) && !math.IsInf(v, 0) {
		s = strconv.FormatFloat(v, 'g', 4, 64)
	}
	r.Keys = append(r.Keys, KV{k, s})
}

func (r *Report) keyNA(k string) { r.Keys = append(r.Keys, KV{k, "na"}) }

// fail records a scenario that failed to run, so the run exits non-zero.
func (r *Report) fail(scenario string, err error) {
	msg := err.Error()
	r.Failed = append(r.Failed, scenario+": "+clip(msg, 2000))
	if i := strings.IndexByte(msg, '\n'); i >= 0 {
		msg = msg[:i]
	}
	msg = strings.ReplaceAll(clip(msg, 300), "|", "\\|")
	r.row(scenario, "failed", "error: "+msg, "", "", "")
}

// clip shortens s to about n bytes: server errors list every failed series.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// na records a scenario whose endpoint this build lacks.
func (r *Report) na(scenario, metric, why string) {
	r.row(scenario, metric, "n/a (not available: "+why+")", "", "", "")
}

// LastLine renders the machine-readable key=value line.
func (r *Report) LastLine() string {
	var parts []string
	for _, kv := range r.Keys {
		parts = append(parts, kv.K+"="+kv.V)
	}
	return strings.Join(parts, " ")
}

// Table renders the rows as a Markdown table.
func (r *Report) Table() string {
	var b strings.Builder
	b.WriteString("| scenario | metric | raftingest | Prometheus 2.42 | ratio | target |\n|---|---|---|---|---|---|\n")
	for _, x := range r.Rows {
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s |\n", x.Scenario, x.Metric, x.Ours, x.Peer, x.Ratio, x.Target)
	}
	return b.String()
}

// runner holds one run's state.
type runner struct {
	cfg RunConfig
	sc  Scale
	p   *procs
	rep *Report
	log io.Writer

	singleRate float64 // scenario 1, for rf3_vs_single
	loadStart  string  // /proc/loadavg when the run started: other work on the machine skews ratios
}

// loadAvg is the first three fields of /proc/loadavg.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	return strings.Join(f[:min(3, len(f))], " ")
}

// Run runs every scenario and returns the report. Every process it starts is killed and every
// temporary directory removed before it returns.
func Run(ctx context.Context, cfg RunConfig) (*Report, error) {
	if cfg.Out == nil {
		cfg.Out = io.Discard
	}
	if _, err := os.Stat(filepath.Join(cfg.BinDir, "ingester")); err != nil {
		return nil, fmt.Errorf("-bin %s: %w (run make build)", cfg.BinDir, err)
	}
	dir, err := os.MkdirTemp("", "raftingest-bench-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	r := &runner{cfg: cfg, sc: cfg.Scale, p: &procs{dir: dir}, rep: &Report{}, log: cfg.Out, loadStart: loadAvg()}
	defer r.p.killAll()

	steps := []struct {
		name string
		fn   func(context.Context) error
	}{
		{"8 ring", r.ring},
		{"1 ingest RF1", r.ingestSingle},
		{"2 ingest RF3", r.ingestRF3},
		{"3 WAL", r.walNoSync},
		{"4 memory", r.memory},
		{"5 restart", r.restart},
		{"6 hand-over", r.handover},
		{"7 query", r.query},
		{"9 remote-write 2.0", r.remoteWrite2},
		{"10 native histograms", r.nativeHistograms},
	}
	for _, o := range cfg.Only {
		known := false
		var names []string
		for _, s := range steps {
			known = known || selected([]string{o}, s.name)
			names = append(names, strconv.Quote(s.name))
		}
		if !known {
			return nil, fmt.Errorf("bench: -only %q: no such scenario; the scenarios are %s (give the number or the first word)", o, strings.Join(names, ", "))
		}
	}
	for _, s := range steps {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if !selected(cfg.Only, s.name) {
			continue
		}
		fmt.Fprintf(r.log, "== scenario %s\n", s.name)
		t0 := time.Now()
		if err := s.fn(ctx); err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			fmt.Fprintf(r.log, "   failed: %v\n", err)
			r.rep.fail(s.name, err)
		}
		fmt.Fprintf(r.log, "   %.1fs\n", time.Since(t0).Seconds())
	}
	r.p.mu.Lock()
	r.rep.Cmds = slices.Clone(r.p.cmds)
	r.p.mu.Unlock()
	r.sortKeys()
	if cfg.OutDir != "" {
		if err := r.writeResults(); err != nil {
			return r.rep, err
		}
	}
	return r.rep, nil
}

// sizeName names a scenario size in a key: 100000 → 100k, 1000000 → 1m, 1500 → 1500.
func sizeName(n int64) string {
	switch {
	case n > 0 && n%1_000_000 == 0:
		return strconv.FormatInt(n/1_000_000, 10) + "m"
	case n > 0 && n%1000 == 0:
		return strconv.FormatInt(n/1000, 10) + "k"
	default:
		return strconv.FormatInt(n, 10)
	}
}

// selected reports whether scenario name ("7 query") is among only (numbers or names), or only is empty.
func selected(only []string, name string) bool {
	if len(only) == 0 {
		return true
	}
	num, rest, _ := strings.Cut(name, " ")
	word, _, _ := strings.Cut(rest, " ")
	for _, o := range only {
		if o == num || o == word || o == name {
			return true
		}
	}
	return false
}

// sortKeys puts the keys the issues require first, in their order, and writes each of them that
// no scenario gave (skipped with -only, failed, or not available in this build) as na, so the
// line always has them.
func (r *runner) sortKeys() {
	first := []string{"ingest_vs_prometheus", "cpu_per_sample_vs_prometheus", "rss_per_series_vs_prometheus",
		"wal_bytes_per_sample_vs_prometheus", "rf3_vs_single", "handover_series_per_s", "wal_replay_samples_per_s",
		"rss_per_series_after_ingest_vs_prometheus", "rss_per_series_2h_head_vs_prometheus",
		"heap_inuse_per_series", "heap_inuse_per_series_vs_prometheus"}
	for _, n := range r.sc.HandoverSeries {
		first = append(first, "handover_series_per_s_"+sizeName(int64(n)))
	}
	for _, n := range r.sc.RestartSamples {
		first = append(first, "wal_replay_samples_per_s_"+sizeName(n))
	}
	have := map[string]bool{}
	for _, kv := range r.rep.Keys {
		have[kv.K] = true
	}
	for _, k := range first {
		if !have[k] {
			r.rep.keyNA(k)
		}
	}
	rank := func(k string) int {
		if i := slices.Index(first, k); i >= 0 {
			return i
		}
		return len(first)
	}
	slices.SortStableFunc(r.rep.Keys, func(a, b KV) int { return rank(a.K) - rank(b.K) })
}

// node starts one bin/ingester on fresh loopback ports.
func (r *runner) node(name string, extra ...string) (*proc, error) {
	a, err := freeAddrs(4)
	if err != nil {
		return nil, err
	}
	dataDir := filepath.Join(r.p.dir, name)
	args := []string{"-node.id", name, "-data.dir", dataDir, "-raft.addr", a[0], "-grpc.addr", a[1], "-http.addr", a[2],
		"-admin.http-addr", a[3],
		"-ingester.join-after", "0s", "-log.level", "warn",
		// The workloads are the benchmark's to size: no per-tenant rate or series limit (the
		// hand-over scenario loads 1M series into one node, past -ingester.max-global-series-per-user).
		"-distributor.ingestion-rate-limit", "0", "-ingester.max-global-series-per-user", "0",
		// No flush while a scenario runs, as Prometheus compacts no head in it. The generator
		// packs hours of sample time into minutes, starting six hours ago: with the defaults the
		// node's first flush check, a minute in, finds every series idle (its newest sample more
		// than -ingester.flush-idle-timeout behind the wall clock) and every range closed, flushes
		// everything and drops the chunks from memory. That costs the measured run a flush of all
		// its data (CPU, throughput) and leaves memory figures measured on a node that holds a
		// fraction of what Prometheus holds. Prometheus compacts only once its head spans 3 h of
		// sample time, and the scales keep every head below that. Scenario 7 flushes explicitly.
		"-ingester.flush-idle-timeout", "0", "-ingester.flush-period", "24h", "-compactor.block-ranges", "24h"}
	args = append(args, extra...)
	p, err := r.p.start(name, filepath.Join(r.cfg.BinDir, "ingester"), args, a[2], dataDir)
	if err != nil {
		return nil, err
	}
	p.admin = a[3]
	return p, nil
}

func grpcAddrOf(p *proc) string {
	for i, a := range p.args {
		if a == "-grpc.addr" && i+1 < len(p.args) {
			return p.args[i+1]
		}
	}
	return ""
}

// singleNode starts a bootstrapped RF1 node and waits until it is ACTIVE.
func (r *runner) singleNode(ctx context.Context, name string, extra ...string) (*proc, error) {
	p, err := r.node(name, append([]string{"-bootstrap", "-distributor.replication-factor", "1"}, extra...)...)
	if err != nil {
		return nil, err
	}
	if err := waitHTTP(ctx, p, "/ready", 60*time.Second); err != nil {
		return nil, err
	}
	return p, nil
}

// prometheus starts Debian's prometheus with the remote-write receiver and a temporary TSDB.
func (r *runner) prometheus(ctx context.Context, name string, extra ...string) (*proc, error) {
	if r.cfg.Prometheus == "" {
		return nil, errors.New("prometheus not found (make deps installs it)")
	}
	a, err := freeAddrs(1)
	if err != nil {
		return nil, err
	}
	dataDir := filepath.Join(r.p.dir, name)
	if err := os.MkdirAll(dataDir, 0o755); err != nil {
		return nil, err
	}
	cfgPath := filepath.Join(r.p.dir, name+".yml")
	// No scrape configs: Prometheus only ingests what the generator writes.
	if err := os.WriteFile(cfgPath, []byte("global:\n  scrape_interval: 15s\n"), 0o644); err != nil {
		return nil, err
	}
	p, err := r.p.start(name, r.cfg.Prometheus, append([]string{"--config.file=" + cfgPath, "--storage.tsdb.path=" + dataDir,
		"--web.listen-address=" + a[0], "--web.enable-remote-write-receiver", "--log.level=warn"}, extra...), a[0], dataDir)
	if err != nil {
		return nil, err
	}
	if err := waitHTTP(ctx, p, "/-/ready", 60*time.Second); err != nil {
		return nil, err
	}
	return p, nil
}

// loadConfig is the scale's ingest workload against urls.
func (r *runner) loadConfig(urls ...string) LoadConfig {
	return LoadConfig{URLs: urls, Series: r.sc.Series, LabelsPerSeries: r.sc.Labels, Metrics: 100,
		SamplesPerRequest: r.sc.SamplesPerRequest, Senders: r.sc.Senders, ScrapeInterval: r.sc.ScrapeInterval,
		Tenants: 1, Timeout: 30 * time.Second, Seed: 1}
}

// ingestFigures is what one saturation run against one server measured.
type ingestFigures struct {
	res      *Result
	cpuPerM  float64    // server CPU seconds per million acknowledged samples
	mem      memReading // right after the measured run, summed over the servers
	series   float64
	walBytes float64 // WAL bytes logged during the measured run (ours only)
	ingested float64 // samples the server counted during the measured run
	allAcked int64   // samples acknowledged over warm-up and measured run
	sent     int64   // the most samples a series had been sent by the end of the measured run
	gen      *Generator
}

// saturate warms a server up with the workload (one round creates every series, then
// r.sc.Warmup more) and measures d of sending as fast as acknowledged.
func (r *runner) saturate(ctx context.Context, srv []*proc, cfg LoadConfig, d time.Duration, seriesMetric, ingestedMetric string, onStart func()) (*ingestFigures, error) {
	g, err := NewGenerator(cfg)
	if err != nil {
		return nil, err
	}
	wctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	w, err := g.Run(wctx, RunOptions{Rounds: 1})
	if err != nil {
		return nil, err
	}
	// The first round creates every series, the costliest thing a server does; on a busy machine
	// some of its requests may time out. The series they carried are created by the next rounds,
	// so only a warm-up in which nothing got through is an error; the measured run is held to 1%.
	if w.Samples == 0 {
		return nil, fmt.Errorf("warm-up: all %d requests failed: %v", w.Requests, w.FirstErr)
	}
	if w.Errors() > 0 {
		fmt.Fprintf(r.log, "   warm-up: %d of %d requests failed (not measured): %.200s\n", w.Errors(), w.Requests, fmt.Sprint(w.FirstErr))
	}
	w2, err := g.Run(ctx, RunOptions{Duration: r.sc.Warmup})
	if err != nil {
		return nil, err
	}
	before := make([]map[string]float64, len(srv))
	for i, p := range srv {
		if before[i], err = metrics(p.http); err != nil {
			return nil, err
		}
	}
	if onStart != nil {
		onStart()
	}
	res, err := g.Run(ctx, RunOptions{Duration: d})
	if err != nil {
		return nil, err
	}
	if res.ErrorRatio() > 0.01 {
		return nil, fmt.Errorf("%d of %d requests failed: %v", res.Errors(), res.Requests, res.FirstErr)
	}
	f := &ingestFigures{res: res, allAcked: w.Samples + w2.Samples + res.Samples, gen: g}
	_, f.sent = g.SamplesPerSeries()
	var cpu float64
	for i, p := range srv {
		after, err := metrics(p.http)
		if err != nil {
			return nil, err
		}
		mem, err := readMem(p, seriesMetric)
		if err != nil {
			return nil, err
		}
		f.mem.add(mem)
		cpu += after["process_cpu_seconds_total"] - before[i]["process_cpu_seconds_total"]
		f.series += after[seriesMetric]
		f.walBytes += after["cortex_ingester_wal_logged_bytes_total"] - before[i]["cortex_ingester_wal_logged_bytes_total"]
		f.ingested += after[ingestedMetric] - before[i][ingestedMetric]
	}
	if res.Samples == 0 || f.series == 0 {
		return nil, fmt.Errorf("nothing ingested (acked %d samples, %s=%v)", res.Samples, seriesMetric, f.series)
	}
	f.cpuPerM = cpu / (float64(res.Samples) / 1e6)
	return f, nil
}

// headFigures is a server's state after its head was topped up to a given age (ageHead).
type headFigures struct {
	target  int64      // samples a series the top-up aimed at
	lo, hi  int64      // samples a series the generator sent over the server's life (fewest, most)
	acked   int64      // samples acknowledged over the server's life
	counted float64    // samples the server itself counted as appended over its life
	mem     memReading // right after the top-up
}

// ageHead continues f's workload on p (same series, timestamps in order, as fast as acknowledged)
// until every series has been sent target samples, then reads p's memory: the head of a server
// that has been scraping for target × ScrapeInterval. fixed is the fixed-rate run that followed
// the measured one, whose samples count towards the server's life.
func (r *runner) ageHead(ctx context.Context, p *proc, f *ingestFigures, fixed *Result, target int64, seriesMetric, samplesMetric string) (*headFigures, error) {
	t0 := time.Now()
	res, err := f.gen.Run(ctx, RunOptions{UntilRound: target})
	if err != nil {
		return nil, err
	}
	if res.ErrorRatio() > 0.01 {
		return nil, fmt.Errorf("head top-up to %d samples a series: %d of %d requests failed: %v", target, res.Errors(), res.Requests, res.FirstErr)
	}
	h := &headFigures{target: target, acked: f.allAcked + fixed.Samples + res.Samples}
	h.lo, h.hi = f.gen.SamplesPerSeries()
	m, err := metrics(p.http)
	if err != nil {
		return nil, err
	}
	h.counted = m[samplesMetric]
	if h.mem, err = readMem(p, seriesMetric); err != nil {
		return nil, err
	}
	fmt.Fprintf(r.log, "   %s: head topped up to %d samples a series: %s samples in %.1fs (%s samples/s)\n",
		p.name, h.hi, human(float64(res.Samples)), time.Since(t0).Seconds(), human(res.SamplesPerSec()))
	return h, nil
}

// describe is a table cell's account of how the head was aged: what was acknowledged and what
// the server counted over its life, and the spread if some series were sent more or fewer
// samples than the target (a failed request's samples are lost; a time-bound run stops mid-round).
func (h *headFigures) describe() string {
	s := fmt.Sprintf("%s samples acked, %s counted by the server", human(float64(h.acked)), human(h.counted))
	if h.lo != h.target || h.hi != h.target {
		s += fmt.Sprintf("; series were sent %d to %d samples", h.lo, h.hi)
	}
	return s
}

// fmtSpan renders a simulated head age: "2 h", "10 min", or Go's form when neither is whole.
func fmtSpan(d time.Duration) string {
	switch {
	case d > 0 && d%time.Hour == 0:
		return fmt.Sprintf("%d h", d/time.Hour)
	case d > 0 && d%time.Minute == 0:
		return fmt.Sprintf("%d min", d/time.Minute)
	default:
		return d.String()
	}
}

// fixedRate measures latency at the scale's fixed rate, continuing the saturation run's series
// (so samples stay in order and no series is created).
func (r *runner) fixedRate(ctx context.Context, f *ingestFigures) (*Result, error) {
	res, err := f.gen.Run(ctx, RunOptions{Duration: r.sc.FixedRateFor, Rate: r.sc.FixedRate})
	if err != nil {
		return nil, err
	}
	if res.ErrorRatio() > 0.01 {
		return nil, fmt.Errorf("fixed rate: %d of %d requests failed: %v", res.Errors(), res.Requests, res.FirstErr)
	}
	return res, nil
}

func ms(d time.Duration) string { return strconv.FormatFloat(float64(d)/1e6, 'f', 1, 64) + " ms" }

func ratio(a, b float64) float64 {
	if b == 0 {
		return math.NaN()
	}
	return a / b
}

func fmtRatio(x float64) string {
	if math.IsNaN(x) {
		return "n/a"
	}
	return strconv.FormatFloat(x, 'f', 2, 64) + "x"
}

func human(x float64) string {
	switch {
	case x >= 1e6:
		return strconv.FormatFloat(x/1e6, 'f', 2, 64) + "M"
	case x >= 1e3:
		return strconv.FormatFloat(x/1e3, 'f', 1, 64) + "k"
	default:
		return strconv.FormatFloat(x, 'f', 0, 64)
	}
}

func verdict(ok bool) string {
	if ok {
		return "met"
	}
	return "**missed**"
}

// ingestSingle is scenario 1 (and the WAL-sync half of scenario 3): one RF1 node vs Prometheus.
func (r *runner) ingestSingle(ctx context.Context) error {
	n, err := r.singleNode(ctx, "single")
	if err != nil {
		return err
	}
	profPath := filepath.Join(r.p.dir, "ingester.cpu.pprof")
	profDone := make(chan error, 1)
	onStart := func() { profDone <- nil }
	if r.sc.ProfileSeconds > 0 {
		onStart = func() {
			go func() { profDone <- fetchProfile(n.admin, r.sc.ProfileSeconds, profPath) }()
		}
	}
	cfg := r.loadConfig("http://" + n.http + "/api/v1/push")
	ours, err := r.saturate(ctx, []*proc{n}, cfg, r.sc.Measure, "cortex_ingester_memory_series", "cortex_ingester_ingested_samples_total", onStart)
	if err != nil {
		return fmt.Errorf("raftingest: %w", err)
	}
	if perr := <-profDone; perr != nil {
		fmt.Fprintf(r.log, "   profile: %v\n", perr)
	} else if r.sc.ProfileSeconds > 0 {
		r.rep.Profile = pprofTop(profPath)
		if r.cfg.OutDir != "" {
			// Kept beside the table: the profile that justifies an optimisation.
			if b, err := os.ReadFile(profPath); err == nil && os.MkdirAll(r.cfg.OutDir, 0o755) == nil {
				r.rep.ProfileFile = filepath.Join(r.cfg.OutDir, time.Now().Format("2006-01-02")+"-"+r.sc.Name+"-ingester.cpu.pprof")
				if err := os.WriteFile(r.rep.ProfileFile, b, 0o644); err != nil {
					r.rep.ProfileFile = ""
				}
			}
		}
	}
	oursFixed, err := r.fixedRate(ctx, ours)
	if err != nil {
		return err
	}
	// The aged head: every series topped up to HeadSamples samples, or to as many as the runs
	// above already sent (a fast build may pass HeadSamples), so both servers end with the same.
	_, sent := ours.gen.SamplesPerSeries()
	target := max(r.sc.HeadSamples, sent)
	oursHead, err := r.ageHead(ctx, n, ours, oursFixed, target, "cortex_ingester_memory_series", "cortex_ingester_ingested_samples_total")
	if err != nil {
		return fmt.Errorf("raftingest: %w", err)
	}
	walFile := fileSize(filepath.Join(n.dataDir, "wal", "wal.bolt"))
	// Every byte logged over the node's life (series records included, head top-up included),
	// for the comparison with Prometheus's wal/ directory below, which holds its whole life too.
	var oursLogged float64
	if m, err := metrics(n.http); err == nil {
		oursLogged = m["cortex_ingester_wal_logged_bytes_total"]
	}
	n.kill()
	r.singleRate = ours.res.SamplesPerSec()

	pr, err := r.prometheus(ctx, "prometheus-ingest")
	if err != nil {
		return err
	}
	cfg.URLs = []string{"http://" + pr.http + "/api/v1/write"}
	prom, err := r.saturate(ctx, []*proc{pr}, cfg, r.sc.Measure, "prometheus_tsdb_head_series", "prometheus_tsdb_head_samples_appended_total", nil)
	if err != nil {
		return fmt.Errorf("prometheus: %w", err)
	}
	promFixed, err := r.fixedRate(ctx, prom)
	if err != nil {
		return err
	}
	promHead, err := r.ageHead(ctx, pr, prom, promFixed, target, "prometheus_tsdb_head_series", "prometheus_tsdb_head_samples_appended_total")
	if err != nil {
		return fmt.Errorf("prometheus: %w", err)
	}
	promWAL := dirSize(filepath.Join(pr.dataDir, "wal"))
	pr.kill()

	s := "1 ingest RF1"
	or, pr1 := ours.res.SamplesPerSec(), prom.res.SamplesPerSec()
	rt := ratio(or, pr1)
	r.rep.row(s, "samples/s at saturation", human(or), human(pr1), fmtRatio(rt), "≥1.5x: "+verdict(rt >= 1.5))
	r.rep.row(s, "p99 at saturation", ms(ours.res.Quantile(0.99)), ms(prom.res.Quantile(0.99)), fmtRatio(ratio(float64(ours.res.Quantile(0.99)), float64(prom.res.Quantile(0.99)))), "")
	fr := r.sc.FixedRate
	r.rep.row(s, fmt.Sprintf("p99 at %s samples/s (achieved %s / %s)", human(fr), human(oursFixed.SamplesPerSec()), human(promFixed.SamplesPerSec())),
		ms(oursFixed.Quantile(0.99)), ms(promFixed.Quantile(0.99)), fmtRatio(ratio(float64(oursFixed.Quantile(0.99)), float64(promFixed.Quantile(0.99)))),
		"≤40 ms: "+verdict(oursFixed.Quantile(0.99) <= 40*time.Millisecond && oursFixed.SamplesPerSec() >= 0.97*fr))
	cr := ratio(ours.cpuPerM, prom.cpuPerM)
	r.rep.row(s, "CPU seconds per million samples", fmt.Sprintf("%.2f", ours.cpuPerM), fmt.Sprintf("%.2f", prom.cpuPerM), fmtRatio(cr), "≤0.55x: "+verdict(cr <= 0.55))
	r.rep.row(s, "generator CPU during the measured run", fmt.Sprintf("%.2f cores", ours.res.GenCores()), fmt.Sprintf("%.2f cores", prom.res.GenCores()), "", "of 2 cores")
	r.rep.key("ingest_vs_prometheus", rt)
	r.rep.key("cpu_per_sample_vs_prometheus", cr)
	r.rep.key("ours_samples_per_s", or)
	r.rep.key("prometheus_samples_per_s", pr1)
	r.rep.key("p99_at_fixed_rate_ms", float64(oursFixed.Quantile(0.99))/1e6)
	r.rep.key("generator_cores", ours.res.GenCores())

	// Memory at two moments: right after the measured run, and after the head has aged.
	after := fmt.Sprintf("after ingest (right after the measured run: up to %d samples a series sent to ours, %d to Prometheus)", ours.sent, prom.sent)
	aged := fmt.Sprintf("after a simulated %s head (%d samples a series at %s, pushed as fast as acknowledged, the same for both)",
		fmtSpan(time.Duration(target)*cfg.ScrapeInterval), target, cfg.ScrapeInterval)
	rssIngest := ratio(ours.mem.perSeries(ours.mem.rss), prom.mem.perSeries(prom.mem.rss))
	rssHead := ratio(oursHead.mem.perSeries(oursHead.mem.rss), promHead.mem.perSeries(promHead.mem.rss))
	r.rep.row(s, "RSS per active series "+after, fmt.Sprintf("%.0f B (%s series)", ours.mem.perSeries(ours.mem.rss), human(ours.mem.series)),
		fmt.Sprintf("%.0f B (%s series)", prom.mem.perSeries(prom.mem.rss), human(prom.mem.series)), fmtRatio(rssIngest), "≤0.7x: "+verdict(rssIngest <= 0.7))
	r.rep.row(s, "RSS per active series "+aged, fmt.Sprintf("%.0f B (%s series; %s)", oursHead.mem.perSeries(oursHead.mem.rss), human(oursHead.mem.series), oursHead.describe()),
		fmt.Sprintf("%.0f B (%s series; %s)", promHead.mem.perSeries(promHead.mem.rss), human(promHead.mem.series), promHead.describe()),
		fmtRatio(rssHead), "≤0.7x: "+verdict(rssHead <= 0.7))
	for _, m := range []struct {
		when     string
		us, them memReading
	}{{"after ingest", ours.mem, prom.mem}, {fmt.Sprintf("after the %d-sample head", target), oursHead.mem, promHead.mem}} {
		r.rep.row(s, "RSS per series, anonymous + file-backed (/proc/PID/smaps_rollup), "+m.when,
			fmt.Sprintf("%.0f B anon + %.0f B file", m.us.perSeries(m.us.anon), m.us.perSeries(m.us.file)),
			fmt.Sprintf("%.0f B anon + %.0f B file", m.them.perSeries(m.them.anon), m.them.perSeries(m.them.file)),
			fmt.Sprintf("anon %s, file %s", fmtRatio(ratio(m.us.perSeries(m.us.anon), m.them.perSeries(m.them.anon))),
				fmtRatio(ratio(m.us.perSeries(m.us.file), m.them.perSeries(m.them.file)))), "")
	}
	heapIngest := ratio(ours.mem.perSeries(ours.mem.heapInuse), prom.mem.perSeries(prom.mem.heapInuse))
	heapHead := ratio(oursHead.mem.perSeries(oursHead.mem.heapInuse), promHead.mem.perSeries(promHead.mem.heapInuse))
	r.rep.row(s, "Go heap in use per active series (go_memstats_heap_inuse_bytes) after ingest",
		fmt.Sprintf("%.0f B", ours.mem.perSeries(ours.mem.heapInuse)), fmt.Sprintf("%.0f B", prom.mem.perSeries(prom.mem.heapInuse)), fmtRatio(heapIngest), "")
	r.rep.row(s, fmt.Sprintf("Go heap in use per active series (go_memstats_heap_inuse_bytes) after the %d-sample head", target),
		fmt.Sprintf("%.0f B", oursHead.mem.perSeries(oursHead.mem.heapInuse)), fmt.Sprintf("%.0f B", promHead.mem.perSeries(promHead.mem.heapInuse)), fmtRatio(heapHead), "")
	// The target is at every age of the head: the key is the worse of the two moments.
	r.rep.key("rss_per_series_vs_prometheus", math.Max(rssIngest, rssHead))
	r.rep.key("rss_per_series_after_ingest_vs_prometheus", rssIngest)
	r.rep.key("rss_per_series_2h_head_vs_prometheus", rssHead)
	r.rep.key("head_samples_per_series", float64(target))
	r.rep.key("rss_per_series_after_ingest", ours.mem.perSeries(ours.mem.rss))
	r.rep.key("rss_per_series_2h_head", oursHead.mem.perSeries(oursHead.mem.rss))
	r.rep.key("rss_anon_per_series_2h_head", oursHead.mem.perSeries(oursHead.mem.anon))
	r.rep.key("rss_file_per_series_2h_head", oursHead.mem.perSeries(oursHead.mem.file))
	r.rep.key("heap_inuse_per_series", math.Max(ours.mem.perSeries(ours.mem.heapInuse), oursHead.mem.perSeries(oursHead.mem.heapInuse)))
	r.rep.key("heap_inuse_per_series_vs_prometheus", math.Max(heapIngest, heapHead))

	// Scenario 3, the sync half: bytes logged per sample in the measured run and the file.
	w := "3 WAL"
	life := fmt.Sprintf("whole server life: ingest runs and the %d-sample head", target)
	r.rep.row(w, "WAL bytes logged per sample (-wal.sync=true run)", fmt.Sprintf("%.2f B", ours.walBytes/math.Max(1, ours.ingested)), "", "", "")
	r.rep.row(w, "wal.bolt size per sample acknowledged ("+life+")", fmt.Sprintf("%.2f B", float64(walFile)/math.Max(1, float64(oursHead.acked))), "", "", "")
	r.rep.key("wal_bytes_per_sample", ours.walBytes/math.Max(1, ours.ingested))
	oursLife := oursLogged / math.Max(1, float64(oursHead.acked))
	promLife := float64(promWAL) / math.Max(1, float64(promHead.acked))
	if oursLogged > 0 && promWAL > 0 {
		wr := ratio(oursLife, promLife)
		r.rep.row(w, "WAL bytes per sample, "+life+" (ours: logged; Prometheus: its wal/ directory, snappy)",
			fmt.Sprintf("%.2f B", oursLife), fmt.Sprintf("%.2f B", promLife), fmtRatio(wr), "≤1x: "+verdict(wr <= 1))
		r.rep.key("wal_bytes_per_sample_vs_prometheus", wr)
	} else {
		r.rep.na(w, "WAL bytes per sample beside Prometheus", fmt.Sprintf("ours logged %.0f bytes, Prometheus's wal/ holds %d", oursLogged, promWAL))
		r.rep.keyNA("wal_bytes_per_sample_vs_prometheus")
	}
	return nil
}

// dirSize is the total size of the regular files under dir (0 when it cannot be read).
func dirSize(dir string) int64 {
	var total int64
	_ = filepath.WalkDir(dir, func(_ string, d os.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		if d.Type().IsRegular() {
			if fi, err := d.Info(); err == nil {
				total += fi.Size()
			}
		}
		return nil
	})
	return total
}

func fileSize(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// fetchProfile saves a CPU profile of the ingester whose admin server is at addr.
func fetchProfile(addr string, seconds int, path string) error {
	code, body, err := httpStatus("GET", fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", addr, seconds), "", nil)
	if err != nil {
		return err
	}
	if code != 200 {
		return fmt.Errorf("pprof: %d %s", code, body)
	}
	return os.WriteFile(path, body, 0o644)
}

// pprofTop renders the top of a CPU profile with `go tool pprof -top`, by flat and by cumulative
// time: flat names the leaf functions, cumulative the call paths that own them.
func pprofTop(path string) string {
	var b strings.Builder
	for _, args := range [][]string{{"-top", "-nodecount=25"}, {"-top", "-cum", "-nodecount=40"}} {
		out, err := exec.Command("go", append(append([]string{"tool", "pprof"}, args...), path)...).CombinedOutput()
		if err != nil {
			return fmt.Sprintf("go tool pprof: %v\n%s", err, out)
		}
		fmt.Fprintf(&b, "$ go tool pprof %s ingester.cpu.pprof\n%s\n", strings.Join(args, " "), out)
	}
	return b.String()
}

// ingestRF3 is scenario 2: three nodes, RF3, senders spread over the three distributors.
func (r *runner) ingestRF3(ctx context.Context) error {
	n1, err := r.node("rf3-a", "-bootstrap", "-distributor.replication-factor", "3")
	if err != nil {
		return err
	}
	if err := waitHTTP(ctx, n1, "/ready", 60*time.Second); err != nil {
		return err
	}
	nodes := []*proc{n1}
	for _, id := range []string{"rf3-b", "rf3-c"} {
		n, err := r.node(id, "-join", grpcAddrOf(n1), "-distributor.replication-factor", "3")
		if err != nil {
			return err
		}
		nodes = append(nodes, n)
	}
	var urls []string
	for _, n := range nodes {
		if err := waitHTTP(ctx, n, "/ready", 60*time.Second); err != nil {
			return err
		}
		urls = append(urls, "http://"+n.http+"/api/v1/push")
	}
	f, err := r.saturate(ctx, nodes, r.loadConfig(urls...), r.sc.RF3For, "cortex_ingester_memory_series", "cortex_ingester_ingested_samples_total", nil)
	if err != nil {
		return err
	}
	for _, n := range nodes {
		n.kill()
	}
	s := "2 ingest RF3"
	cr := f.res.SamplesPerSec()
	per := f.ingested / f.res.Elapsed.Seconds() / 3
	x := ratio(cr, r.singleRate)
	r.rep.row(s, "client-visible samples/s (3 nodes)", human(cr), "", fmtRatio(x)+" of RF1", "≥0.33x: "+verdict(x >= 0.33))
	r.rep.row(s, "per-replica samples/s", human(per), "", "", "")
	r.rep.row(s, "p99", ms(f.res.Quantile(0.99)), "", "", "")
	r.rep.row(s, "CPU seconds per million client samples (3 nodes)", fmt.Sprintf("%.2f", f.cpuPerM), "", "", "")
	r.rep.key("rf3_vs_single", x)
	r.rep.key("rf3_samples_per_s", cr)
	return nil
}

// remoteWrite2 is scenario 9: scenario 1's workload sent as remote-write 1.0 then as 2.0, each to
// a fresh RF1 node for WALFor, back to back so that both meet the same machine. Prometheus 2.42
// receives 1.0 only: the peer column stays empty.
func (r *runner) remoteWrite2(ctx context.Context) error {
	var figs [2]*ingestFigures
	for i, proto := range []string{Protocol1, Protocol2} {
		n, err := r.singleNode(ctx, "rw-"+proto)
		if err != nil {
			return err
		}
		cfg := r.loadConfig("http://" + n.http + "/api/v1/push")
		cfg.Protocol = proto
		f, err := r.saturate(ctx, []*proc{n}, cfg, r.sc.WALFor, "cortex_ingester_memory_series", "cortex_ingester_ingested_samples_total", nil)
		n.kill()
		if err != nil {
			return fmt.Errorf("remote-write %s: %w", proto, err)
		}
		figs[i] = f
	}
	s := "9 remote-write 2.0"
	v1, v2 := figs[0].res.SamplesPerSec(), figs[1].res.SamplesPerSec()
	x := ratio(v2, v1)
	wire := func(f *ingestFigures) float64 { return float64(f.res.WireBytes) / math.Max(1, float64(f.res.Sent)) }
	r.rep.row(s, "samples/s, 2.0 / 1.0", human(v2)+" / "+human(v1), "", fmtRatio(x), "≥0.95x: "+verdict(x >= 0.95))
	r.rep.row(s, "CPU seconds per million samples, 2.0 / 1.0", fmt.Sprintf("%.2f / %.2f", figs[1].cpuPerM, figs[0].cpuPerM), "", fmtRatio(ratio(figs[1].cpuPerM, figs[0].cpuPerM)), "")
	r.rep.row(s, "wire bytes per sample (snappy), 2.0 / 1.0", fmt.Sprintf("%.1f / %.1f", wire(figs[1]), wire(figs[0])), "", fmtRatio(ratio(wire(figs[1]), wire(figs[0]))), "")
	r.rep.key("rw2_vs_rw1", x)
	r.rep.key("rw2_samples_per_s", v2)
	return nil
}

// walNoSync is the -wal.sync=false half of scenario 3.
func (r *runner) walNoSync(ctx context.Context) error {
	n, err := r.singleNode(ctx, "nosync", "-wal.sync=false")
	if err != nil {
		return err
	}
	f, err := r.saturate(ctx, []*proc{n}, r.loadConfig("http://"+n.http+"/api/v1/push"), r.sc.WALFor, "cortex_ingester_memory_series", "cortex_ingester_ingested_samples_total", nil)
	if err != nil {
		return err
	}
	n.kill()
	x := ratio(r.singleRate, f.res.SamplesPerSec())
	r.rep.row("3 WAL", "samples/s -wal.sync=true / -wal.sync=false", human(r.singleRate)+" / "+human(f.res.SamplesPerSec()), "", fmtRatio(x), "")
	r.rep.key("wal_sync_vs_nosync", x)
	return nil
}

// restart is scenario 5: load a WAL of N samples, kill -9, restart, time the replay and ACTIVE.
func (r *runner) restart(ctx context.Context) error {
	// The target is at every size, so the headline key is the slowest size.
	worst := math.Inf(1)
	for i, total := range r.sc.RestartSamples {
		n, err := r.singleNode(ctx, fmt.Sprintf("restart-%d", i), "-wal.sync=false")
		if err != nil {
			return err
		}
		cfg := r.loadConfig("http://" + n.http + "/api/v1/push")
		series := min(int64(r.sc.Series), total)
		cfg.Series = int(series)
		rounds := int(total / series)
		g, err := NewGenerator(cfg)
		if err != nil {
			return err
		}
		res, err := g.Run(ctx, RunOptions{Rounds: rounds})
		if err != nil {
			return err
		}
		if res.Errors() > 0 {
			return fmt.Errorf("loading %d samples: %d requests failed: %v", total, res.Errors(), res.FirstErr)
		}
		n.kill() // kill -9: the WAL is all there is
		t0 := time.Now()
		n2, err := r.p.restart(n)
		if err != nil {
			return err
		}
		if err := waitHTTP(ctx, n2, "/ready", 10*time.Minute); err != nil {
			return err
		}
		toActive := time.Since(t0)
		m, err := metrics(n2.http)
		if err != nil {
			return err
		}
		n2.kill()
		replay := m["cortex_ingester_wal_replay_duration_seconds"]
		if replay <= 0 {
			return errors.New("cortex_ingester_wal_replay_duration_seconds is 0 after a restart")
		}
		if got := m["cortex_ingester_memory_series"]; got != float64(series) {
			return fmt.Errorf("after replay %v series in memory, want %d", got, series)
		}
		rate := float64(res.Samples) / replay
		worst = min(worst, rate)
		r.rep.key("wal_replay_samples_per_s_"+sizeName(total), rate)
		r.rep.row("5 restart", fmt.Sprintf("WAL replay, %s samples of %s series", human(float64(res.Samples)), human(float64(series))),
			fmt.Sprintf("%s samples/s (%.2fs); ACTIVE after %.2fs", human(rate), replay, toActive.Seconds()), "", "", "≥3M samples/s: "+verdict(rate >= 3e6))
	}
	r.rep.key("wal_replay_samples_per_s", worst)
	return nil
}

// loopbackMBps measures the loopback TCP bandwidth of this machine now: one connection, 1 MiB
// writes, the reader discarding.
func loopbackMBps(total int64) (float64, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	done := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			done <- err
			return
		}
		defer c.Close()
		_, err = io.Copy(io.Discard, c)
		done <- err
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		return 0, err
	}
	buf := make([]byte, 1<<20)
	t0 := time.Now()
	for sent := int64(0); sent < total; sent += int64(len(buf)) {
		if _, err := c.Write(buf); err != nil {
			c.Close()
			return 0, err
		}
	}
	c.Close()
	if err := <-done; err != nil {
		return 0, err
	}
	return float64(total) / 1e6 / time.Since(t0).Seconds(), nil
}

// procReadBytes is rchar of /proc/PID/io: bytes the process read through read(2)-like calls,
// sockets included.
func procReadBytes(p *proc) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/io", p.cmd.Process.Pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "rchar: "); ok {
			return strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		}
	}
	return 0, errors.New("no rchar in /proc/PID/io")
}

// handover is scenario 6: a LEAVING node hands its series to a PENDING one.
func (r *runner) handover(ctx context.Context) error {
	s := "6 hand-over"
	bw, err := loopbackMBps(r.sc.LoopbackBytes)
	if err != nil {
		return err
	}
	r.rep.row(s, "loopback TCP bandwidth (measured now, 1 connection)", fmt.Sprintf("%.0f MB/s", bw), "", "", "")
	r.rep.key("loopback_mb_per_s", bw)
	// The target is at every size, so the headline key is the slowest size.
	worst := math.Inf(1)
	for i, series := range r.sc.HandoverSeries {
		leaver, err := r.singleNode(ctx, fmt.Sprintf("handover-%d-a", i), "-wal.sync=false")
		if err != nil {
			return err
		}
		m, err := metrics(leaver.http)
		if err != nil {
			return err
		}
		if _, ok := m["cortex_ingester_sent_chunks"]; !ok {
			leaver.kill()
			r.rep.na(s, "hand-over time, MB/s", "the transfer is not wired in this build: no cortex_ingester_sent_chunks on /metrics")
			return nil // sortKeys writes every hand-over key as na
		}
		cfg := r.loadConfig("http://" + leaver.http + "/api/v1/push")
		cfg.Series = series
		cfg.Senders = min(cfg.Senders, series)
		g, err := NewGenerator(cfg)
		if err != nil {
			return err
		}
		// Two rounds: every series has a head chunk with samples to move.
		if res, err := g.Run(ctx, RunOptions{Rounds: 2}); err != nil {
			return err
		} else if res.Errors() > 0 {
			return fmt.Errorf("loading %d series: %v", series, res.FirstErr)
		}
		// The joiner waits PENDING (a long -ingester.join-after) so that the leaver claims it.
		joiner, err := r.node(fmt.Sprintf("handover-%d-b", i), "-join", grpcAddrOf(leaver), "-distributor.replication-factor", "1", "-ingester.join-after", "1h")
		if err != nil {
			return err
		}
		if err := waitHTTP(ctx, joiner, "/metrics", 60*time.Second); err != nil {
			return err
		}
		if err := waitPending(ctx, joiner, 60*time.Second); err != nil {
			return err
		}
		rb0, err := procReadBytes(joiner)
		if err != nil {
			return err
		}
		t0 := time.Now()
		if code, body, err := httpStatus("POST", "http://"+leaver.admin+"/ingester/shutdown", "", nil); err != nil || code/100 != 2 {
			return fmt.Errorf("POST /ingester/shutdown: %d %s %v", code, body, err)
		}
		if err := waitHTTP(ctx, joiner, "/ready", 10*time.Minute); err != nil {
			return err
		}
		el := time.Since(t0)
		rb1, _ := procReadBytes(joiner)
		jm, err := metrics(joiner.http)
		if err != nil {
			return err
		}
		leaver.kill()
		joiner.kill()
		if got := jm["cortex_ingester_memory_series"]; got < float64(series) {
			return fmt.Errorf("joiner has %v series after the hand-over, want %d", got, series)
		}
		sps := float64(series) / el.Seconds()
		mbps := float64(rb1-rb0) / 1e6 / el.Seconds()
		worst = min(worst, sps)
		r.rep.key("handover_series_per_s_"+sizeName(int64(series)), sps)
		r.rep.row(s, fmt.Sprintf("hand-over of %s series (%.0f chunks received)", human(float64(series)), jm["cortex_ingester_received_chunks"]),
			fmt.Sprintf("%.2fs, %s series/s, %.1f MB/s read by the joiner", el.Seconds(), human(sps), mbps), "", "", "≥500k series/s: "+verdict(sps >= 5e5))
	}
	r.rep.key("handover_series_per_s", worst)
	return nil
}

// waitPending waits until the node's own ring row says PENDING.
func waitPending(ctx context.Context, p *proc, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		m, err := metrics(p.http)
		if err == nil && m["cortex_ring_members"] > 0 {
			code, body, err := httpStatus("GET", "http://"+p.http+"/ring", "", nil)
			if err == nil && code == 200 && strings.Contains(string(body), "PENDING") {
				return nil
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("%s did not register PENDING within %s", p.name, timeout)
}

// query is scenario 7: a 1h range query at 15s step over QuerySeries series.
func (r *runner) query(ctx context.Context) error {
	s := "7 query"
	n, err := r.singleNode(ctx, "query", "-wal.sync=false")
	if err != nil {
		return err
	}
	end := time.Now().Truncate(time.Second)
	start := end.Add(-time.Hour)
	q := url.Values{"query": {`sum(rate(bench_metric_0[5m]))`}, "start": {strconv.FormatInt(start.Unix(), 10)},
		"end": {strconv.FormatInt(end.Unix(), 10)}, "step": {"15"}}
	oursURL := "http://" + n.http + "/prometheus/api/v1/query_range"
	if code, _, err := httpStatus("POST", oursURL, "application/x-www-form-urlencoded", strings.NewReader(q.Encode())); err != nil {
		return err
	} else if code == 404 || code == 405 || code == 501 {
		n.kill()
		r.rep.na(s, "range query", fmt.Sprintf("POST /prometheus/api/v1/query_range answers %d in this build", code))
		r.rep.keyNA("query_vs_prometheus")
		return nil
	}
	pr, err := r.prometheus(ctx, "prometheus-query")
	if err != nil {
		return err
	}
	// The same workload, generated twice with the same seed, goes to each server in turn.
	cfg := r.loadConfig()
	cfg.Series, cfg.Metrics = r.sc.QuerySeries, 1
	cfg.ScrapeInterval = 15 * time.Second // the query's own workload, whatever the scale's interval
	cfg.StartMs = start.UnixMilli()
	rounds := int(time.Hour / cfg.ScrapeInterval)
	for _, u := range []string{"http://" + n.http + "/api/v1/push", "http://" + pr.http + "/api/v1/write"} {
		c := cfg
		c.URLs = []string{u}
		g, err := NewGenerator(c)
		if err != nil {
			return err
		}
		res, err := g.Run(ctx, RunOptions{Rounds: rounds})
		if err != nil {
			return err
		}
		if res.Errors() > 0 {
			return fmt.Errorf("loading %s: %v", u, res.FirstErr)
		}
	}
	timeQ := func(base string) (time.Duration, int, error) {
		var lat []time.Duration
		size := 0
		for range r.sc.QueryRepeats {
			t0 := time.Now()
			code, body, err := httpStatus("POST", base, "application/x-www-form-urlencoded", strings.NewReader(q.Encode()))
			if err != nil {
				return 0, 0, err
			}
			if code != 200 {
				return 0, 0, fmt.Errorf("%s: %d %.300s", base, code, body)
			}
			lat = append(lat, time.Since(t0))
			size = len(body)
		}
		slices.Sort(lat)
		return lat[len(lat)/2], size, nil
	}
	om, osz, err := timeQ(oursURL)
	if err != nil {
		return err
	}
	pm, psz, err := timeQ("http://" + pr.http + "/api/v1/query_range")
	if err != nil {
		return err
	}
	metric := fmt.Sprintf("median of %d: sum(rate(...[5m])) over %s series, 1h, step 15s", r.sc.QueryRepeats, human(float64(r.sc.QuerySeries)))
	r.rep.row(s, metric+", from memory", fmt.Sprintf("%s (%d B)", ms(om), osz), fmt.Sprintf("%s (%d B, head)", ms(pm), psz), fmtRatio(ratio(float64(om), float64(pm))), "")
	r.rep.key("query_vs_prometheus", ratio(float64(om), float64(pm)))
	code, body, err := httpStatus("POST", "http://"+n.admin+"/ingester/flush", "", nil)
	switch {
	case err != nil:
		return err
	case code == 404 || code == 405 || code == 501:
		r.rep.na(s, metric+", from blocks", fmt.Sprintf("POST /ingester/flush answers %d in this build", code))
		r.rep.keyNA("query_blocks_remote_vs_prometheus")
	case code/100 != 2:
		return fmt.Errorf("POST /ingester/flush: %d %s", code, body)
	default:
		bm, bsz, err := timeQ(oursURL)
		if err != nil {
			return err
		}
		r.rep.row(s, metric+", after POST /ingester/flush", fmt.Sprintf("%s (%d B)", ms(bm), bsz), "n/a (Prometheus cannot compact its head on demand)", "", "")
		if err := r.queryThroughNonOwner(ctx, s, metric, n, oursURL, q, timeQ, pm); err != nil {
			return err
		}
	}
	n.kill()
	pr.kill()
	return nil
}

// queryThroughNonOwner is scenario 7's last row: a second member joins the query node after its
// flush, so it holds none of the data, neither in memory nor in its own (node-local) bucket; the same
// query through it reads the first member's blocks over gRPC (Ingester.QueryBlocks). Its answer must
// be the first member's, byte for byte, or the figure would time a partial answer.
func (r *runner) queryThroughNonOwner(ctx context.Context, s, metric string, owner *proc, ownerURL string, q url.Values,
	timeQ func(string) (time.Duration, int, error), promMedian time.Duration) error {
	b, err := r.node("query-b", "-join", grpcAddrOf(owner), "-distributor.replication-factor", "1", "-wal.sync=false")
	if err != nil {
		return err
	}
	defer b.kill()
	if err := waitHTTP(ctx, b, "/ready", 60*time.Second); err != nil {
		return err
	}
	_, want, err := httpStatus("POST", ownerURL, "application/x-www-form-urlencoded", strings.NewReader(q.Encode()))
	if err != nil {
		return err
	}
	bURL := "http://" + b.http + "/prometheus/api/v1/query_range"
	code, got, err := httpStatus("POST", bURL, "application/x-www-form-urlencoded", strings.NewReader(q.Encode()))
	if err != nil {
		return err
	}
	row := metric + ", from blocks, through a member that holds none of them"
	if code != 200 || !bytes.Equal(got, want) {
		r.rep.keyNA("query_blocks_remote_vs_prometheus")
		r.rep.na(s, row, fmt.Sprintf("the member that holds none of the data answers %d with %d bytes, not the owner's %d-byte answer: this build does not read other members' node-local blocks", code, len(got), len(want)))
		return nil
	}
	nm, nsz, err := timeQ(bURL)
	if err != nil {
		return err
	}
	r.rep.row(s, row, fmt.Sprintf("%s (%d B)", ms(nm), nsz), fmt.Sprintf("%s (head)", ms(promMedian)), fmtRatio(ratio(float64(nm), float64(promMedian))), "")
	r.rep.key("query_blocks_remote_vs_prometheus", ratio(float64(nm), float64(promMedian)))
	return nil
}

var (
	benchLine = regexp.MustCompile(`^(Benchmark\S+)\s+\d+\s+(.*)$`)
	benchVal  = regexp.MustCompile(`([0-9.e+-]+) (\S+)`)
)

// goBench runs a Go benchmark of the module and returns, per benchmark name, its unit → value.
func (r *runner) goBench(ctx context.Context, pattern, benchtime, pkg string) (map[string]map[string]float64, error) {
	cmd := exec.CommandContext(ctx, "go", "test", "-run", "^$", "-bench", pattern, "-benchtime", benchtime, "-count", "1", pkg)
	cmd.Dir = r.cfg.SrcDir
	r.p.mu.Lock()
	r.p.cmds = append(r.p.cmds, strings.Join(cmd.Args, " "))
	r.p.mu.Unlock()
	out, err := cmd.CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("%s: %v\n%s", strings.Join(cmd.Args, " "), err, out)
	}
	res := map[string]map[string]float64{}
	for _, line := range strings.Split(string(out), "\n") {
		m := benchLine.FindStringSubmatch(strings.TrimSpace(line))
		if m == nil {
			continue
		}
		vals := map[string]float64{}
		for _, v := range benchVal.FindAllStringSubmatch(m[2], -1) {
			if f, err := strconv.ParseFloat(v[1], 64); err == nil {
				vals[v[2]] = f
			}
		}
		res[m[1]] = vals
	}
	if len(res) == 0 {
		return nil, fmt.Errorf("%s printed no benchmark lines:\n%s", strings.Join(cmd.Args, " "), out)
	}
	return res, nil
}

// ring is scenario 8: the ring's Go benchmarks.
func (r *runner) ring(ctx context.Context) error {
	s := "8 ring"
	look, err := r.goBench(ctx, "^BenchmarkReplicationSet(ZoneAware)?$", r.sc.RingBenchtime, "./ringstate/")
	if err != nil {
		return err
	}
	var healthy float64
	for _, name := range sortedKeys(look) {
		v := look[name]
		short := strings.TrimPrefix(name, "BenchmarkReplicationSet/")
		if z, ok := strings.CutPrefix(name, "BenchmarkReplicationSetZoneAware/"); ok {
			short = "zone-aware " + z
		}
		r.rep.row(s, "replication-set lookup "+short, fmt.Sprintf("%.1f ns/op, %.0f allocs/op", v["ns/op"], v["allocs/op"]), "", "", "")
		if strings.Contains(name, "healthy") && !strings.Contains(name, "unhealthy") {
			healthy = v["ns/op"]
		}
	}
	r.rep.key("ring_lookup_ns", healthy)
	commit, err := r.goBench(ctx, "^BenchmarkCommitLatency$", r.sc.CommitBenchtime, "./raftfsm/")
	if err != nil {
		return err
	}
	for _, name := range sortedKeys(commit) {
		v := commit[name]
		short := strings.TrimPrefix(name, "BenchmarkCommitLatency/")
		r.rep.row(s, "ring commit (3 voters, loopback) "+short, fmt.Sprintf("p50 %.2f ms, p99 %.2f ms", v["p50-ms"], v["p99-ms"]), "", "", "")
		if strings.Contains(name, "leader") {
			r.rep.key("ring_commit_p99_ms", v["p99-ms"])
		}
	}
	return nil
}

func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

// writeResults writes the results file: date, machine, commands, table, profile, last line.
func (r *runner) writeResults() error {
	if err := os.MkdirAll(r.cfg.OutDir, 0o755); err != nil {
		return err
	}
	now := time.Now()
	path := filepath.Join(r.cfg.OutDir, now.Format("2006-01-02")+"-"+r.sc.Name+".md")
	var b strings.Builder
	fmt.Fprintf(&b, "# raftingest benchmark, scale %s, %s\n\n", r.sc.Name, now.Format(time.RFC3339))
	fmt.Fprintf(&b, "Machine: %s\n\n", machine(r.cfg.Prometheus))
	fmt.Fprintf(&b, "Load average (1, 5, 15 min) at the start: %s; at the end: %s. Above the core count, other work shared the CPUs and the ratios are noisy.\n\n", r.loadStart, loadAvg())
	fmt.Fprintf(&b, "Workload: %d series, %d labels each, %d samples per request, %d senders, %s simulated scrape interval; "+
		"warm-up = one round creating every series + %s; measured %s (RF1 and Prometheus, in turn), %s (RF3), %s (-wal.sync=false); "+
		"RF1 and Prometheus then aged to a head of at least %d samples a series.\n\n",
		r.sc.Series, r.sc.Labels, r.sc.SamplesPerRequest, r.sc.Senders, r.sc.ScrapeInterval, r.sc.Warmup, r.sc.Measure, r.sc.RF3For, r.sc.WALFor, r.sc.HeadSamples)
	fmt.Fprintf(&b, "Command: `%s`\n\n", r.cfg.Command)
	b.WriteString(r.rep.Table())
	if len(r.rep.Failed) > 0 {
		b.WriteString("\nFailed scenarios:\n\n")
		for _, f := range r.rep.Failed {
			fmt.Fprintf(&b, "- %s\n", strings.ReplaceAll(f, "\n", "\n  "))
		}
	}
	if r.rep.Profile != "" {
		fmt.Fprintf(&b, "\nCPU profile of the RF1 ingester during the measured ingest (`/debug/pprof/profile?seconds=%d`, saved as `%s`):\n\n```\n%s```\n",
			r.sc.ProfileSeconds, filepath.Base(r.rep.ProfileFile), r.rep.Profile)
	}
	b.WriteString("\nProcesses and commands the runner started (temporary paths):\n\n```\n")
	for _, c := range r.rep.Cmds {
		b.WriteString(c + "\n")
	}
	b.WriteString("```\n\n")
	b.WriteString(r.rep.LastLine() + "\n")
	r.rep.File = path
	return os.WriteFile(path, []byte(b.String()), 0o644)
}

// machine describes the host: cores, memory, kernel, Go and Prometheus versions.
func machine(prom string) string {
	mem := "?"
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "MemTotal:"); ok {
				if kb, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64); err == nil {
					mem = fmt.Sprintf("%.1f GiB", kb/(1<<20))
				}
			}
		}
	}
	kernel := "?"
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		kernel = strings.TrimSpace(string(b))
	}
	cpu := ""
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "model name"); ok {
				cpu = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
	}
	goV := runtime.Version()
	if out, err := exec.Command("go", "env", "GOVERSION").Output(); err == nil {
		goV = strings.TrimSpace(string(out))
	}
	promV := "?"
	if prom != "" {
		if out, err := exec.Command(prom, "--version").CombinedOutput(); err == nil {
			promV = strings.SplitN(strings.TrimSpace(string(out)), "\n", 2)[0]
		}
	}
	return fmt.Sprintf("%d cores (%s), %s memory, Linux %s, %s, %s", runtime.NumCPU(), cpu, mem, kernel, goV, promV)
}
