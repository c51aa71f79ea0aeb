// Package bench is raftingest's whole-system benchmark: a Prometheus remote-write load generator
// (Generator) and the scenario runner behind `make bench` (Run), which starts bin/ingester and
// Debian's prometheus on loopback, drives the same workload through each, and writes one table
// of figures and ratios measured in the same run. cmd/bench is its command line.
package bench

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/golang/snappy"
)

// LoadConfig describes a remote-write workload. Series are split between the senders (each sender
// owns its series and has one request in flight), so every series' samples arrive in timestamp
// order even under concurrency. Immutable once a Generator is built from it.
type LoadConfig struct {
	URLs              []string      // push endpoints; sender i uses URLs[i%len(URLs)] (-url, comma-separated)
	Series            int           // active series (-series)
	LabelsPerSeries   int           // labels per series including __name__ (-labels)
	Metrics           int           // distinct metric names the series are spread over (-metrics)
	SamplesPerRequest int           // samples in one request (-samples-per-request)
	Senders           int           // concurrent senders (-senders)
	ScrapeInterval    time.Duration // simulated scrape interval: timestamp step between rounds (-scrape-interval)
	StartMs           int64         // timestamp of round 0 (int64 ms); 0 means six hours ago
	Tenants           int           // tenants X-Scope-OrgID bench-0..N-1; sender i writes as tenant i%N (-tenants)
	Churn             float64       // fraction of each sender's series replaced by new ones every round (-churn)
	Rate              float64       // target samples/s over all senders; 0 = as fast as acknowledged (-rate)
	Timeout           time.Duration // per-request timeout (-timeout)
	Seed              uint64        // varies the values; the same seed gives the same requests
	// Protocol is the remote-write version sent (-protocol): "1.0" (the default when empty) or "2.0".
	Protocol string
}

// The remote-write versions a Generator can send.
const (
	Protocol1 = "1.0"
	Protocol2 = "2.0"
)

// v2 reports whether the generator sends remote-write 2.0.
func (c *LoadConfig) v2() bool { return c.Protocol == Protocol2 }

// RegisterFlags registers the workload flags with the defaults of the ingest scenario.
func (c *LoadConfig) RegisterFlags(f *flag.FlagSet) {
	f.Func("url", "comma-separated remote-write URLs (http://127.0.0.1:8080/api/v1/push); senders are spread over them", func(s string) error {
		for _, u := range strings.Split(s, ",") {
			if u = strings.TrimSpace(u); u != "" {
				c.URLs = append(c.URLs, u)
			}
		}
		return nil
	})
	f.IntVar(&c.Series, "series", 100_000, "number of active series")
	f.IntVar(&c.LabelsPerSeries, "labels", 10, "labels per series, __name__ included (2 to 16)")
	f.IntVar(&c.Metrics, "metrics", 100, "number of distinct metric names the series are spread over")
	f.IntVar(&c.SamplesPerRequest, "samples-per-request", 2000, "samples per remote-write request")
	f.IntVar(&c.Senders, "senders", 4, "concurrent senders, each with one request in flight")
	f.DurationVar(&c.ScrapeInterval, "scrape-interval", 15*time.Second, "simulated scrape interval: the timestamp step between two samples of a series")
	f.IntVar(&c.Tenants, "tenants", 1, "number of tenants (X-Scope-OrgID bench-0 ... bench-N-1)")
	f.Float64Var(&c.Churn, "churn", 0, "fraction of series replaced by new series every round (0 to 1)")
	f.Float64Var(&c.Rate, "rate", 0, "target samples per second over all senders; 0 sends as fast as requests are acknowledged")
	f.DurationVar(&c.Timeout, "timeout", 10*time.Second, "timeout of one request")
	f.StringVar(&c.Protocol, "protocol", Protocol1, "remote-write version to send: 1.0 or 2.0 (symbols table, Content-Type proto=io.prometheus.write.v2.Request)")
}

// Validate checks the workload, naming the flags.
func (c *LoadConfig) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if len(c.URLs) == 0 {
		bad("-url must name at least one remote-write endpoint")
	}
	for _, u := range c.URLs {
		if !strings.HasPrefix(u, "http://") {
			bad("-url %q: want http://host:port/path", u)
		}
	}
	if c.Series < 1 {
		bad("-series=%d: want at least 1", c.Series)
	}
	if c.LabelsPerSeries < 2 || c.LabelsPerSeries > len(labelNames)+2 {
		bad("-labels=%d: want 2 to %d (__name__ and a unique instance label are always there)", c.LabelsPerSeries, len(labelNames)+2)
	}
	if c.Metrics < 1 {
		bad("-metrics=%d: want at least 1", c.Metrics)
	}
	if c.SamplesPerRequest < 1 {
		bad("-samples-per-request=%d: want at least 1", c.SamplesPerRequest)
	}
	if c.Senders < 1 || c.Senders > 1024 {
		bad("-senders=%d: want 1 to 1024", c.Senders)
	}
	if c.Senders > c.Series {
		bad("-senders=%d is more than -series=%d: every sender needs series of its own", c.Senders, c.Series)
	}
	if c.ScrapeInterval < time.Millisecond {
		bad("-scrape-interval=%s: want at least 1ms (timestamps are milliseconds)", c.ScrapeInterval)
	}
	if c.Tenants < 1 {
		bad("-tenants=%d: want at least 1", c.Tenants)
	}
	if c.Tenants > c.Senders {
		bad("-tenants=%d is more than -senders=%d: each tenant needs a sender", c.Tenants, c.Senders)
	}
	if c.Churn < 0 || c.Churn > 1 || math.IsNaN(c.Churn) {
		bad("-churn=%v: want 0 to 1", c.Churn)
	}
	if c.Rate < 0 || math.IsNaN(c.Rate) {
		bad("-rate=%v: want 0 (as fast as acknowledged) or more", c.Rate)
	}
	if c.Timeout <= 0 {
		bad("-timeout=%s: want more than zero", c.Timeout)
	}
	if c.Protocol != "" && c.Protocol != Protocol1 && c.Protocol != Protocol2 {
		bad("-protocol=%q: want %s or %s", c.Protocol, Protocol1, Protocol2)
	}
	return errors.Join(errs...)
}

// labelNames are the label names after __name__ and instance, in the order they are added; a
// series with L labels has __name__, instance and the first L-2 of these (sorted on encoding).
// The values have the low cardinalities of real targets, so the postings index looks real.
var labelNames = []string{"job", "cluster", "namespace", "pod", "container", "env", "region", "zone", "team", "service", "version", "shard", "az", "tier"}

// labelCard is the number of distinct values of each of labelNames.
var labelCard = []int{1, 3, 20, 1000, 10, 3, 4, 12, 8, 50, 5, 16, 6, 3}

// Error classes of a request's outcome.
const (
	Class2xx       = "2xx"
	Class4xx       = "4xx"
	Class429       = "429"
	Class5xx       = "5xx"
	ClassTransport = "transport"
)

// Result is what one Generator.Run measured.
type Result struct {
	Elapsed   time.Duration
	Requests  int
	Samples   int64          // samples in requests acknowledged with 2xx
	Sent      int64          // samples in all requests sent
	WireBytes int64          // compressed request bodies sent
	RawBytes  int64          // uncompressed protobuf
	Classes   map[string]int // requests by class (Class2xx, ...)
	FirstErr  map[string]string
	Latencies []time.Duration // of every request, sorted
	GenCPU    time.Duration   // user+system CPU of this process during the run (the generator's cost)
}

// SamplesPerSec is the acknowledged sample rate.
func (r *Result) SamplesPerSec() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Samples) / r.Elapsed.Seconds()
}

// Quantile returns the q-quantile of request latency (0 without requests).
func (r *Result) Quantile(q float64) time.Duration {
	if len(r.Latencies) == 0 {
		return 0
	}
	i := int(math.Ceil(q*float64(len(r.Latencies)))) - 1
	return r.Latencies[max(0, min(i, len(r.Latencies)-1))]
}

// Errors counts requests that did not get a 2xx.
func (r *Result) Errors() int { return r.Requests - r.Classes[Class2xx] }

// ErrorRatio is Errors / Requests.
func (r *Result) ErrorRatio() float64 {
	if r.Requests == 0 {
		return 0
	}
	return float64(r.Errors()) / float64(r.Requests)
}

// GenCores is the generator's average CPU use in cores.
func (r *Result) GenCores() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return r.GenCPU.Seconds() / r.Elapsed.Seconds()
}

// Summary renders the result as the load command prints it.
func (r *Result) Summary() string {
	var b strings.Builder
	fmt.Fprintf(&b, "elapsed %.2fs  requests %d  samples acked %d of %d sent\n", r.Elapsed.Seconds(), r.Requests, r.Samples, r.Sent)
	fmt.Fprintf(&b, "samples/s %.0f\n", r.SamplesPerSec())
	fmt.Fprintf(&b, "latency p50 %s  p90 %s  p99 %s  max %s\n", fmtDur(r.Quantile(0.5)), fmtDur(r.Quantile(0.9)), fmtDur(r.Quantile(0.99)), fmtDur(r.Quantile(1)))
	fmt.Fprintf(&b, "wire bytes %d (%.1f B/sample, snappy of %d protobuf bytes)\n", r.WireBytes, float64(r.WireBytes)/math.Max(1, float64(r.Sent)), r.RawBytes)
	var cls []string
	for _, c := range []string{Class2xx, Class4xx, Class429, Class5xx, ClassTransport} {
		cls = append(cls, fmt.Sprintf("%s=%d", c, r.Classes[c]))
	}
	fmt.Fprintf(&b, "requests by class: %s\n", strings.Join(cls, " "))
	for _, c := range []string{Class4xx, Class429, Class5xx, ClassTransport} {
		if e := r.FirstErr[c]; e != "" {
			fmt.Fprintf(&b, "first %s: %s\n", c, e)
		}
	}
	fmt.Fprintf(&b, "generator CPU %.2fs (%.2f cores)\n", r.GenCPU.Seconds(), r.GenCores())
	return b.String()
}

func fmtDur(d time.Duration) string {
	return strconv.FormatFloat(float64(d)/float64(time.Millisecond), 'f', 2, 64) + "ms"
}

// Generator sends a LoadConfig's workload. Its state (the round each series is at) survives
// between Runs, so a warm-up Run followed by a measured Run continues the same series in order.
// Run must not be called concurrently with itself.
type Generator struct {
	cfg     LoadConfig
	client  *http.Client
	senders []*sender
}

// sender owns a disjoint slice of the series and sends their samples in order.
type sender struct {
	g      *Generator
	url    string
	tenant string
	first  int        // global index of the first series it owns
	ids    []int      // global series index of each owned series (churn replaces entries)
	gen    []int      // churn generation of each owned series
	lbls   [][]byte   // pre-encoded labels of each owned series (remote-write 1.0)
	kv     [][]string // labels of each owned series as name, value pairs (remote-write 2.0)
	v2     v2Encoder
	next   int   // index into ids of the next series to send
	round  int64 // current round (the timestamp is StartMs + round*ScrapeInterval)
	perTS  int   // samples per series in one request
	churnI int   // rotating position of the next series to churn

	raw, comp []byte
	tsBuf     []int64
	vsBuf     []float64
}

// NewGenerator validates cfg and encodes every series' labels once.
func NewGenerator(cfg LoadConfig) (*Generator, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.StartMs == 0 {
		// Six hours back leaves room for hours of simulated rounds before the distributor's
		// -validation.create-grace-period (10m ahead of now) refuses them, while Prometheus' head
		// never spans the 3h that would make it compact during a run.
		cfg.StartMs = time.Now().Add(-6 * time.Hour).UnixMilli()
	}
	g := &Generator{cfg: cfg, client: &http.Client{
		Timeout: cfg.Timeout,
		Transport: &http.Transport{
			DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
			MaxIdleConnsPerHost: cfg.Senders,
			DisableCompression:  true,
			IdleConnTimeout:     90 * time.Second,
		},
	}}
	per := cfg.Series / cfg.Senders
	for i := range cfg.Senders {
		n := per
		if i == cfg.Senders-1 {
			n = cfg.Series - per*(cfg.Senders-1)
		}
		s := &sender{g: g, url: cfg.URLs[i%len(cfg.URLs)], tenant: "bench-" + strconv.Itoa(i%cfg.Tenants), first: i * per,
			ids: make([]int, n), gen: make([]int, n), lbls: make([][]byte, n)}
		// A request holds SamplesPerRequest samples; when a sender owns fewer series than that,
		// each series carries several consecutive samples, as a lagging Prometheus shard sends.
		s.perTS = max(1, cfg.SamplesPerRequest/n)
		if cfg.v2() {
			s.kv = make([][]string, n)
		}
		for j := range n {
			s.ids[j] = s.first + j
			if cfg.v2() {
				s.kv[j] = g.labelKV(s.ids[j], 0)
			} else {
				s.lbls[j] = g.labelsFor(s.ids[j], 0, nil)
			}
		}
		g.senders = append(g.senders, s)
	}
	return g, nil
}

// Config returns the generator's configuration (with StartMs filled in).
func (g *Generator) Config() LoadConfig { return g.cfg }

// labelsFor encodes the labels of series id at churn generation gen into b.
func (g *Generator) labelsFor(id, gen int, b []byte) []byte {
	return encodeLabels(b[:0], g.labelKV(id, gen))
}

// labelKV returns the labels of series id at churn generation gen as name, value pairs sorted
// by name.
func (g *Generator) labelKV(id, gen int) []string {
	pairs := make([][2]string, 0, g.cfg.LabelsPerSeries)
	pairs = append(pairs, [2]string{"__name__", "bench_metric_" + strconv.Itoa(id%g.cfg.Metrics)},
		[2]string{"instance", "host-" + strconv.Itoa(id) + "-" + strconv.Itoa(gen) + ":9100"})
	for k, name := range labelNames[:g.cfg.LabelsPerSeries-2] {
		pairs = append(pairs, [2]string{name, name + "-" + strconv.Itoa((id/(k+1))%labelCard[k])})
	}
	sort.Slice(pairs, func(i, j int) bool { return pairs[i][0] < pairs[j][0] })
	kv := make([]string, 0, 2*len(pairs))
	for _, p := range pairs {
		kv = append(kv, p[0], p[1])
	}
	return kv
}

// value is the sample of series id at round r: a counter with a per-series slope and a little
// noise, so XOR chunks compress as real counters do (neither all-equal nor random).
func (g *Generator) value(id int, r int64) float64 {
	h := uint64(id)*0x9e3779b97f4a7c15 ^ uint64(r)*0xbf58476d1ce4e5b9 ^ g.cfg.Seed
	h ^= h >> 31
	return float64(r*int64(1+id%10)) + float64(h&7)
}

// RunOptions bounds one Run. At least one of Duration, Rounds and UntilRound must be set; a run
// stops at the first bound it meets.
type RunOptions struct {
	Duration time.Duration // stop sending new requests after this long (0: no time bound)
	Rounds   int           // stop each sender after this many rounds over its series (0: no bound)
	// UntilRound stops each sender once it has completed this many rounds since the generator
	// was built, so that every series has been sent exactly UntilRound samples (fewer if a
	// request failed: requests are never retried); a sender already past it sends nothing.
	// It tops a head up to a given age whatever the earlier, time-bound runs reached. 0: no bound.
	UntilRound int64
	Rate       float64 // target samples/s of this run; 0 = LoadConfig.Rate
}

// SamplesPerSeries returns the fewest and the most samples any series has been sent so far
// (acknowledged or not): a time-bound run stops senders in the middle of a round, so the
// series before a sender's position hold one round (perTS samples) more than those after it.
// Not safe to call during a Run.
func (g *Generator) SamplesPerSeries() (lo, hi int64) {
	lo = math.MaxInt64
	for _, s := range g.senders {
		top := s.round
		if s.next > 0 {
			top += int64(s.perTS)
		}
		lo, hi = min(lo, s.round), max(hi, top)
	}
	return lo, hi
}

// Run sends until opts is met or ctx is done and returns what it measured. Requests are never
// retried: a refused request's samples are lost for the benchmark, counted in Result.Classes.
func (g *Generator) Run(ctx context.Context, opts RunOptions) (*Result, error) {
	if opts.Duration <= 0 && opts.Rounds <= 0 && opts.UntilRound <= 0 {
		return nil, errors.New("bench: a run needs a duration, a number of rounds or a round to stop at")
	}
	if opts.Rate < 0 || math.IsNaN(opts.Rate) {
		return nil, fmt.Errorf("bench: run rate %v: want 0 or more", opts.Rate)
	}
	cpu0 := processCPU()
	start := time.Now()
	// Duration stops new requests; the ones in flight complete (within LoadConfig.Timeout) and
	// count, so every sample a sender built reaches the server or is counted as an error: what
	// SamplesPerSeries reports is what the server was sent. Only ctx cancels requests.
	var deadline time.Time
	if opts.Duration > 0 {
		deadline = start.Add(opts.Duration)
	}
	res := make([]*Result, len(g.senders))
	var wg sync.WaitGroup
	for i, s := range g.senders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res[i] = s.run(ctx, opts, start, deadline)
		}()
	}
	wg.Wait()
	total := &Result{Elapsed: time.Since(start), Classes: map[string]int{}, FirstErr: map[string]string{}, GenCPU: processCPU() - cpu0}
	for _, r := range res {
		total.Requests += r.Requests
		total.Samples += r.Samples
		total.Sent += r.Sent
		total.WireBytes += r.WireBytes
		total.RawBytes += r.RawBytes
		for c, n := range r.Classes {
			total.Classes[c] += n
		}
		for c, e := range r.FirstErr {
			if total.FirstErr[c] == "" {
				total.FirstErr[c] = e
			}
		}
		total.Latencies = append(total.Latencies, r.Latencies...)
	}
	slices.Sort(total.Latencies)
	return total, nil
}

func (s *sender) run(ctx context.Context, opts RunOptions, start, deadline time.Time) *Result {
	r := &Result{Classes: map[string]int{}, FirstErr: map[string]string{}, Latencies: make([]time.Duration, 0, 4096)}
	stopRound := int64(math.MaxInt64)
	if opts.Rounds > 0 {
		stopRound = s.round + int64(opts.Rounds)
	}
	if opts.UntilRound > 0 {
		stopRound = min(stopRound, opts.UntilRound)
	}
	var rate float64 // this sender's share of the target rate, samples/s
	if total := cmp.Or(opts.Rate, s.g.cfg.Rate); total > 0 {
		rate = total / float64(len(s.g.senders))
	}
	var scheduled float64 // samples this sender was due to have sent, for pacing
	open := func(t time.Time) bool { return deadline.IsZero() || t.Before(deadline) }
	for s.round < stopRound && ctx.Err() == nil && open(time.Now()) {
		if rate > 0 {
			due := start.Add(time.Duration(scheduled / rate * float64(time.Second)))
			if !open(due) {
				return r
			}
			if d := time.Until(due); d > 0 {
				select {
				case <-ctx.Done():
					return r
				case <-time.After(d):
				}
			}
		}
		n := s.build()
		scheduled += float64(n)
		s.send(ctx, n, r)
	}
	return r
}

// build encodes the next request into s.comp and returns its sample count, advancing the
// sender's position (and round, with churn, at the end of a pass over its series).
func (s *sender) build() int {
	cfg := &s.g.cfg
	step := cfg.ScrapeInterval.Milliseconds()
	s.raw = s.raw[:0]
	if cfg.v2() {
		s.v2.reset()
	}
	samples := 0
	for samples < cfg.SamplesPerRequest && s.next < len(s.ids) {
		id := s.ids[s.next]
		k := min(s.perTS, cfg.SamplesPerRequest-samples)
		s.tsBuf, s.vsBuf = s.tsBuf[:0], s.vsBuf[:0]
		for j := range k {
			r := s.round + int64(j)
			// A fixed per-series offset inside the interval spreads the series' scrapes as
			// Prometheus' scrape jitter does, and keeps every series' steps regular.
			s.tsBuf = append(s.tsBuf, cfg.StartMs+r*step+int64(id%1000)*step/1000)
			s.vsBuf = append(s.vsBuf, s.g.value(id, r))
		}
		if cfg.v2() {
			s.v2.appendSeries(s.kv[s.next], s.tsBuf, s.vsBuf)
		} else {
			s.raw = appendTimeSeries(s.raw, s.lbls[s.next], s.tsBuf, s.vsBuf)
		}
		samples += k
		s.next++
	}
	if s.next == len(s.ids) {
		s.next = 0
		s.round += int64(s.perTS)
		s.churn()
	}
	if cfg.v2() {
		s.raw = s.v2.finish(s.raw)
	}
	s.comp = snappy.Encode(s.comp[:cap(s.comp)], s.raw)
	return samples
}

// churn replaces Churn of the sender's series with new ones (a new instance label value), as a
// rollout does; the replaced series simply stop receiving samples.
func (s *sender) churn() {
	n := int(math.Round(s.g.cfg.Churn * float64(len(s.ids))))
	for range n {
		i := s.churnI % len(s.ids)
		s.churnI++
		s.gen[i]++
		if s.g.cfg.v2() {
			s.kv[i] = s.g.labelKV(s.ids[i], s.gen[i])
		} else {
			s.lbls[i] = s.g.labelsFor(s.ids[i], s.gen[i], s.lbls[i])
		}
	}
}

func (s *sender) send(ctx context.Context, n int, r *Result) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.url, bytes.NewReader(s.comp))
	if err != nil {
		r.Classes[ClassTransport]++
		r.FirstErr[ClassTransport] = err.Error()
		return
	}
	req.Header.Set("Content-Encoding", "snappy")
	if s.g.cfg.v2() {
		req.Header.Set("Content-Type", "application/x-protobuf;proto=io.prometheus.write.v2.Request")
		req.Header.Set("X-Prometheus-Remote-Write-Version", "2.0.0")
	} else {
		req.Header.Set("Content-Type", "application/x-protobuf")
		req.Header.Set("X-Prometheus-Remote-Write-Version", "0.1.0")
	}
	req.Header.Set("User-Agent", "raftingest-bench")
	req.Header.Set("X-Scope-OrgID", s.tenant)
	t0 := time.Now()
	resp, err := s.g.client.Do(req)
	var body []byte
	if err == nil {
		body, _ = io.ReadAll(io.LimitReader(resp.Body, 4096))
		_, _ = io.Copy(io.Discard, resp.Body) // drain, so the connection is reused
		resp.Body.Close()
	}
	lat := time.Since(t0)
	if err != nil && ctx.Err() != nil {
		return // cut off by the end of the run: not a server failure
	}
	r.Requests++
	r.Sent += int64(n)
	r.WireBytes += int64(len(s.comp))
	r.RawBytes += int64(len(s.raw))
	r.Latencies = append(r.Latencies, lat)
	class := ClassTransport
	msg := ""
	if err != nil {
		msg = err.Error()
	} else {
		switch c := resp.StatusCode; {
		case c >= 200 && c < 300 && s.g.cfg.v2() && resp.Header.Get("X-Prometheus-Remote-Write-Samples-Written") != strconv.Itoa(n):
			// A 2.0 receiver says what it wrote; a 1.0-only one answers 2xx without writing.
			class = Class4xx
			body = []byte(fmt.Sprintf("2xx, but X-Prometheus-Remote-Write-Samples-Written is %q of %d samples sent",
				resp.Header.Get("X-Prometheus-Remote-Write-Samples-Written"), n))
		case c >= 200 && c < 300:
			class = Class2xx
			r.Samples += int64(n)
		case c == http.StatusTooManyRequests:
			class = Class429
		case c >= 400 && c < 500:
			class = Class4xx
		default:
			class = Class5xx
		}
		msg = fmt.Sprintf("%d %s", resp.StatusCode, strings.TrimSpace(string(body)))
	}
	r.Classes[class]++
	if class != Class2xx && r.FirstErr[class] == "" {
		r.FirstErr[class] = msg
	}
}

// processCPU is this process's user+system CPU time so far.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
