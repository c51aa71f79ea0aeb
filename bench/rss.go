package bench

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// memReading is one server's memory at one moment, from its /metrics and /proc/PID/smaps_rollup.
type memReading struct {
	rss       float64 // process_resident_memory_bytes
	anon      float64 // smaps_rollup Anonymous: heap, stacks, Go's arenas
	file      float64 // smaps_rollup Rss - Anonymous: mapped files (binary, bbolt's WAL, Prometheus' mmapped chunks)
	heapInuse float64 // go_memstats_heap_inuse_bytes
	series    float64 // active series, by the server's own metric
}

func (m *memReading) add(o memReading) {
	m.rss += o.rss
	m.anon += o.anon
	m.file += o.file
	m.heapInuse += o.heapInuse
	m.series += o.series
}

// perSeries returns x per active series (NaN-free: 0 series gives 0).
func (m memReading) perSeries(x float64) float64 {
	if m.series == 0 {
		return 0
	}
	return x / m.series
}

// readMem reads p's memory now: the gauges from its /metrics, the anon/file split from the
// kernel. The two are read a few milliseconds apart, so anon+file may differ from rss slightly.
func readMem(p *proc, seriesMetric string) (memReading, error) {
	m, err := metrics(p.http)
	if err != nil {
		return memReading{}, err
	}
	r := memReading{rss: m["process_resident_memory_bytes"], heapInuse: m["go_memstats_heap_inuse_bytes"], series: m[seriesMetric]}
	if r.rss == 0 || r.heapInuse == 0 {
		return memReading{}, fmt.Errorf("%s: /metrics lacks process_resident_memory_bytes or go_memstats_heap_inuse_bytes", p.name)
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", p.cmd.Process.Pid))
	if err != nil {
		return memReading{}, fmt.Errorf("%s: %w", p.name, err)
	}
	rss, anon, err := parseSmapsRollup(b)
	if err != nil {
		return memReading{}, fmt.Errorf("%s: /proc/%d/smaps_rollup: %w", p.name, p.cmd.Process.Pid, err)
	}
	r.anon, r.file = anon, rss-anon
	return r, nil
}

// parseSmapsRollup returns the Rss and Anonymous fields of /proc/PID/smaps_rollup, in bytes.
// Shmem (none in either server) would count as file.
func parseSmapsRollup(b []byte) (rss, anon float64, err error) {
	var haveRss, haveAnon bool
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 3 || f[2] != "kB" {
			continue
		}
		v, err := strconv.ParseFloat(f[1], 64)
		if err != nil {
			return 0, 0, fmt.Errorf("field %s: %w", f[0], err)
		}
		switch f[0] {
		case "Rss:":
			rss, haveRss = v*1024, true
		case "Anonymous:":
			anon, haveAnon = v*1024, true
		}
	}
	if !haveRss || !haveAnon {
		return 0, 0, fmt.Errorf("no Rss or no Anonymous line in %d bytes", len(b))
	}
	return rss, anon, nil
}
