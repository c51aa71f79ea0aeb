package bench

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/golang/snappy"
	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/prompb"
)

// Scenario 10: native histograms. The same remote-write 1.0 load of integer native histograms
// (exponential, schema 3, 24 populated buckets in two spans, counts growing like a busy latency
// histogram's) is sent to one RF1 node and to Prometheus 2.42 (--enable-feature=native-histograms,
// remote-write receiver), as fast as acknowledged, by the same senders. Reported: histogram
// samples/s, and bytes written ahead per histogram sample (our WAL's logged bytes; Prometheus's
// wal/ directory's growth).

// histLoad is the scenario's generator: series histograms per request, one sample a series a round.
type histLoad struct {
	urls     []string
	series   int
	perReq   int
	senders  int
	interval time.Duration

	round atomic.Int64
	acked atomic.Int64
	errs  atomic.Int64
	first atomic.Value
}

// histAt is series s's histogram in round k: counts grow with k, by an amount that depends on the
// series and the bucket, so that XOR and delta encodings meet realistic, irregular numbers.
func histAt(s, k int) *histogram.Histogram {
	h := &histogram.Histogram{Schema: 3, ZeroThreshold: 1e-9,
		PositiveSpans: []histogram.Span{{Offset: -8, Length: 12}, {Offset: 4, Length: 12}},
		Sum:           float64(k) * (1.5 + float64(s%7)),
	}
	h.PositiveBuckets = make([]int64, 24)
	var prev, count int64
	for b := range h.PositiveBuckets {
		abs := int64(k) * int64(1+(s+b*b)%9)
		h.PositiveBuckets[b] = abs - prev
		prev = abs
		count += abs
	}
	h.ZeroCount = uint64(k % 3)
	h.Count = uint64(count) + h.ZeroCount
	return h
}

// body encodes the requests of one round of series [from, to).
func (l *histLoad) body(from, to, round int, t0 int64) []byte {
	var wr prompb.WriteRequest
	ts := t0 + int64(round)*l.interval.Milliseconds()
	for s := from; s < to; s++ {
		wr.Timeseries = append(wr.Timeseries, prompb.TimeSeries{
			Labels: []prompb.Label{{Name: "__name__", Value: "bench_latency_seconds"}, {Name: "instance", Value: fmt.Sprintf("host-%d:9100", s/10)},
				{Name: "job", Value: "bench"}, {Name: "route", Value: fmt.Sprintf("/r/%d", s%10)}},
			Histograms: []prompb.Histogram{prompb.FromIntHistogram(ts, histAt(s, round+1))},
		})
	}
	raw, err := wr.Marshal()
	if err != nil {
		panic("bench: marshal: " + err.Error())
	}
	return snappy.Encode(nil, raw)
}

// run sends rounds (every series once a round) until d passes (or rounds rounds when d is 0), and
// returns the histogram samples acknowledged.
func (l *histLoad) run(ctx context.Context, d time.Duration, rounds int, t0 int64) int64 {
	start := l.acked.Load()
	deadline := time.Now().Add(d)
	client := &http.Client{Timeout: 30 * time.Second}
	type job struct{ from, to, round int }
	jobs := make(chan job)
	var wg sync.WaitGroup
	for w := range l.senders {
		wg.Add(1)
		go func(url string) {
			defer wg.Done()
			for j := range jobs {
				req, _ := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(l.body(j.from, j.to, j.round, t0)))
				req.Header.Set("Content-Encoding", "snappy")
				req.Header.Set("Content-Type", "application/x-protobuf")
				req.Header.Set("X-Prometheus-Remote-Write-Version", "0.1.0")
				resp, err := client.Do(req)
				if err == nil {
					b, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					if resp.StatusCode/100 != 2 {
						err = fmt.Errorf("%d %s", resp.StatusCode, b)
					}
				}
				if err != nil {
					l.errs.Add(1)
					l.first.CompareAndSwap(nil, err.Error())
					continue
				}
				l.acked.Add(int64(j.to - j.from))
			}
		}(l.urls[w%len(l.urls)])
	}
	for n := 0; ctx.Err() == nil && ((d > 0 && time.Now().Before(deadline)) || (d == 0 && n < rounds)); n++ {
		round := int(l.round.Add(1) - 1)
		for from := 0; from < l.series; from += l.perReq {
			jobs <- job{from, min(from+l.perReq, l.series), round}
		}
	}
	close(jobs)
	wg.Wait()
	return l.acked.Load() - start
}

// histFigures is what one histogram run measured on one server.
type histFigures struct {
	perSec   float64
	bytesPer float64
	errs     int64
}

// histRun warms p up (one round creates every series) and measures d of sending; walBytes reads the
// bytes p has written ahead so far.
func (r *runner) histRun(ctx context.Context, url string, walBytes func() float64) (*histFigures, error) {
	series := min(r.sc.Series, 20000)
	l := &histLoad{urls: []string{url}, series: series, perReq: 500, senders: max(2, r.sc.Senders), interval: 15 * time.Second}
	t0 := time.Now().Add(-6 * time.Hour).UnixMilli() // within -validation.past-grace-period and the head
	if got := l.run(ctx, 0, 1, t0); got == 0 {
		return nil, fmt.Errorf("warm-up: nothing acknowledged: %v", l.first.Load())
	}
	w0 := walBytes()
	t := time.Now()
	n := l.run(ctx, r.sc.Measure, 0, t0)
	el := time.Since(t).Seconds()
	f := &histFigures{perSec: float64(n) / el, bytesPer: (walBytes() - w0) / float64(max(n, 1)), errs: l.errs.Load()}
	if n == 0 {
		return nil, fmt.Errorf("nothing acknowledged: %v", l.first.Load())
	}
	return f, nil
}

// nativeHistograms is scenario 10.
func (r *runner) nativeHistograms(ctx context.Context) error {
	n, err := r.singleNode(ctx, "hist")
	if err != nil {
		return err
	}
	ours, err := r.histRun(ctx, "http://"+n.http+"/api/v1/push", func() float64 {
		m, err := metrics(n.http)
		if err != nil {
			return 0
		}
		return m["cortex_ingester_wal_logged_bytes_total"]
	})
	n.kill()
	if err != nil {
		return fmt.Errorf("raftingest: %w", err)
	}
	s := "10 native histograms"
	pr, err := r.prometheus(ctx, "prometheus-hist", "--enable-feature=native-histograms")
	if err != nil {
		r.rep.row(s, "histogram samples/s", human(ours.perSec), "", "", "")
		r.rep.row(s, "WAL bytes per histogram sample", fmt.Sprintf("%.1f", ours.bytesPer), "", "", "")
		return err
	}
	prom, err := r.histRun(ctx, "http://"+pr.http+"/api/v1/write", func() float64 {
		return float64(dirSize(filepath.Join(pr.dataDir, "wal")))
	})
	pr.kill()
	if err != nil {
		return fmt.Errorf("prometheus: %w", err)
	}
	x := ratio(ours.perSec, prom.perSec)
	r.rep.row(s, "histogram samples/s (24 buckets)", human(ours.perSec), human(prom.perSec), fmtRatio(x), "")
	y := ratio(ours.bytesPer, prom.bytesPer)
	r.rep.row(s, "WAL bytes per histogram sample", fmt.Sprintf("%.1f", ours.bytesPer), fmt.Sprintf("%.1f", prom.bytesPer), fmtRatio(y), "")
	r.rep.key("hist_samples_per_s", ours.perSec)
	r.rep.key("hist_vs_prometheus", x)
	r.rep.key("hist_wal_bytes_per_sample_vs_prometheus", y)
	return nil
}
