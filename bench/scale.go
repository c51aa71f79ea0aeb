package bench

import (
	"fmt"
	"time"
)

// Scale sizes every scenario of a run. "default" is the scale the targets are quoted at;
// "large" sizes every scenario for 1M active series and runs in under 15 minutes on 2 cores;
// "small" runs everything in about two minutes; "smoke" only proves the runner works
// (go test ./bench/).
type Scale struct {
	Name              string
	Series            int // ingest scenarios: active series
	Labels            int // labels per series
	SamplesPerRequest int // samples per request
	Senders           int // concurrent senders
	// ScrapeInterval is the simulated scrape interval. Rounds go by far faster than real time
	// (at 250k samples/s, 20k series advance 2 minutes of sample time a second); the runs stay
	// within the 6 hours the generator starts in the past, or the distributor would refuse samples
	// too far in the future, and scenario 1's head stays under the 3 hours at which Prometheus
	// compacts it (1080 rounds at 10s). The query scenario keeps its own 15s.
	ScrapeInterval time.Duration
	Warmup         time.Duration // after the first round (which creates every series)
	Measure        time.Duration // measured ingest, one node vs Prometheus
	// HeadSamples is the age of the head at scenario 1's second memory reading, in samples a
	// series: after the measured and fixed-rate runs, each server is topped up, as fast as it
	// acknowledges, until every series holds this many (or as many as our ingester already
	// reached, if more; 0: just that), the same number for both. At a 10s ScrapeInterval 720 is
	// the simulated 2h head.
	HeadSamples     int64
	FixedRate       float64 // samples/s of the latency-at-fixed-rate run
	FixedRateFor    time.Duration
	RF3For          time.Duration // measured ingest, 3 nodes RF3
	WALFor          time.Duration // measured ingest with -wal.sync=false
	RestartSamples  []int64       // WAL sizes of the restart scenario, in samples
	HandoverSeries  []int         // series handed over
	QuerySeries     int           // series of the range query (1h of 15s samples each)
	QueryRepeats    int
	MemSeries       int // in-process memory scenario
	MemSamples      int // samples per series in the memory scenario
	LoopbackBytes   int64
	RingBenchtime   string // -benchtime of the ring lookup benchmark
	CommitBenchtime string // -benchtime of the ring commit benchmark
	ProfileSeconds  int    // CPU profile of our ingester during the measured ingest (0: none)
}

// Scales are the known scales by name.
var Scales = map[string]Scale{
	"default": {
		Name: "default", Series: 100_000, Labels: 10, SamplesPerRequest: 2000, Senders: 4, ScrapeInterval: 10 * time.Second,
		Warmup: 10 * time.Second, Measure: 60 * time.Second, FixedRate: 250_000, FixedRateFor: 20 * time.Second, HeadSamples: 720,
		RF3For: 30 * time.Second, WALFor: 30 * time.Second,
		RestartSamples: []int64{1_000_000, 10_000_000}, HandoverSeries: []int{100_000, 1_000_000},
		QuerySeries: 10_000, QueryRepeats: 5, MemSeries: 100_000, MemSamples: 240,
		LoopbackBytes: 2 << 30, RingBenchtime: "2s", CommitBenchtime: "2000x", ProfileSeconds: 20,
	},
	// large: 1M active series in every scenario that has series of its own. Prometheus ingests
	// 45k-90k samples/s at 1M series here (16 CPU seconds per million samples, against 6-10 at
	// 100k; 20k samples/s when other work loads the machine), so each sample a series costs it
	// 10-50 s: the timed runs are shorter than default's, and the head is not aged beyond what our
	// ingester reaches in them (HeadSamples 0: about 10 samples a series), Prometheus being
	// topped up to the same. 720 samples a series would be 720M samples, hours of Prometheus.
	// The row and head_samples_per_series say how many. The whole run: 9 min here.
	"large": {
		Name: "large", Series: 1_000_000, Labels: 10, SamplesPerRequest: 2000, Senders: 4, ScrapeInterval: 10 * time.Second,
		Warmup: 5 * time.Second, Measure: 20 * time.Second, FixedRate: 250_000, FixedRateFor: 5 * time.Second, HeadSamples: 0,
		RF3For: 20 * time.Second, WALFor: 20 * time.Second,
		RestartSamples: []int64{1_000_000, 10_000_000}, HandoverSeries: []int{100_000, 1_000_000},
		QuerySeries: 10_000, QueryRepeats: 5, MemSeries: 1_000_000, MemSamples: 240,
		LoopbackBytes: 2 << 30, RingBenchtime: "2s", CommitBenchtime: "2000x", ProfileSeconds: 15,
	},
	"small": {
		Name: "small", Series: 20_000, Labels: 10, SamplesPerRequest: 2000, Senders: 4, ScrapeInterval: 10 * time.Second,
		Warmup: 2 * time.Second, Measure: 10 * time.Second, FixedRate: 250_000, FixedRateFor: 5 * time.Second, HeadSamples: 360,
		RF3For: 8 * time.Second, WALFor: 6 * time.Second,
		RestartSamples: []int64{200_000, 1_000_000}, HandoverSeries: []int{10_000, 50_000},
		QuerySeries: 2_000, QueryRepeats: 3, MemSeries: 20_000, MemSamples: 240,
		LoopbackBytes: 512 << 20, RingBenchtime: "300ms", CommitBenchtime: "300x", ProfileSeconds: 8,
	},
	"smoke": {
		Name: "smoke", Series: 2_000, Labels: 10, SamplesPerRequest: 500, Senders: 2, ScrapeInterval: time.Second,
		Warmup: 300 * time.Millisecond, Measure: 2 * time.Second, FixedRate: 50_000, FixedRateFor: time.Second, HeadSamples: 200,
		RF3For: 2 * time.Second, WALFor: time.Second,
		RestartSamples: []int64{20_000, 60_000}, HandoverSeries: []int{1_000, 2_000},
		QuerySeries: 200, QueryRepeats: 2, MemSeries: 2_000, MemSamples: 240,
		LoopbackBytes: 64 << 20, RingBenchtime: "50ms", CommitBenchtime: "30x", ProfileSeconds: 0,
	},
}

// ScaleNamed returns the scale called name.
func ScaleNamed(name string) (Scale, error) {
	s, ok := Scales[name]
	if !ok {
		return Scale{}, fmt.Errorf("BENCH_SCALE / -scale %q: want default, large, small or smoke", name)
	}
	return s, nil
}
