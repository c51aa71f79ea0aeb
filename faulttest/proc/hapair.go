package proc

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/prometheus/prompb"

	"github.com/raftingest/raftingest/faulttest/check"
	"github.com/raftingest/raftingest/faulttest/samples"
)

// The HA-pair workload (Scenario.HAPair): two writers act as the two replicas of a Prometheus HA
// pair — same cluster label, replica labels r1 and r2 — beside the unique-samples writers. Each
// "scrapes" its own clock every 20-40ms and remote-writes one sample of faulttest_ha through a
// random running node, retrying it on anything but 2xx and 4xx as Prometheus does; replica r writes
// at timestamps of parity r-1, so the two never share one, and the value is 10*timestamp + r, so a
// sample read back names its replica although the replica label is removed before storage. Each
// replica falls silent in turn (a crashed Prometheus) for longer than the failover timeout, so the
// tracker fails over while the nemesis partitions the cluster. The ha checker judges it at the end.
const haMetric = "faulttest_ha"

// The HA tracker's flags for the scenario: short timeouts, so a 20s workload sees failovers.
const (
	haFailover = 3 * time.Second
	haUpdate   = time.Second
)

var haFlags = []string{"-distributor.ha-tracker.enable=true", "-distributor.ha-tracker.update-timeout=" + haUpdate.String(),
	"-distributor.ha-tracker.update-timeout-jitter-max=0s", "-distributor.ha-tracker.failover-timeout=" + haFailover.String()}

// haSilent reports whether replica r (1 or 2) is silent at d into the workload: r1 from 4s, r2 from
// 12s, each for the failover timeout plus 3s, every 16s.
func haSilent(r int, d time.Duration) bool {
	const period = 16 * time.Second
	off := 4*time.Second + time.Duration(r-1)*8*time.Second
	return d >= off && (d-off)%period < haFailover+3*time.Second
}

type haPair struct {
	c     *Cluster
	start time.Time
	http  *http.Client
	mu    sync.Mutex
	hist  []check.HAWrite
	fails map[string]int
	endMs int64
}

func newHAPair(c *Cluster, start time.Time) *haPair {
	return &haPair{c: c, start: start, http: &http.Client{Timeout: 5 * time.Second}, fails: map[string]int{}}
}

func (h *haPair) run(ctx context.Context, r int, rng *rand.Rand) {
	for ctx.Err() == nil {
		time.Sleep(time.Duration(20+rng.IntN(20)) * time.Millisecond)
		if haSilent(r, time.Since(h.start)) {
			continue
		}
		ts := time.Now().UnixMilli()
		ts = ts&^1 | int64(r-1)
		req := &prompb.WriteRequest{Timeseries: []prompb.TimeSeries{{
			Labels: []prompb.Label{{Name: "__name__", Value: haMetric}, {Name: "__replica__", Value: fmt.Sprintf("r%d", r)},
				{Name: "cluster", Value: "pair"}},
			Samples: []prompb.Sample{{Timestamp: ts, Value: float64(ts*10 + int64(r))}}}}}
		out := check.HAUnknown
		maybe := false // an earlier attempt failed after the HA tracker may have let it through
		for ctx.Err() == nil {
			var targets []*Node
			for _, n := range h.c.Nodes {
				if n.Running() {
					targets = append(targets, n)
				}
			}
			if len(targets) > 0 {
				code, body, err := (&Writer{http: h.http}).push(ctx, targets[rng.IntN(len(targets))].HTTPAddr, req)
				switch {
				case err == nil && code == http.StatusOK:
					out = check.HAStored
				case err == nil && code == http.StatusAccepted:
					out = check.HADeduped
				case err == nil && code/100 == 4:
					out = check.HAFailed
				}
				if out != check.HAStored && out != check.HADeduped && ctx.Err() == nil {
					h.mu.Lock()
					h.fails[samples.FailureKey(code, body, err)]++
					h.mu.Unlock()
				}
				if out == check.HAUnknown {
					maybe = true
				}
			}
			if out != check.HAUnknown {
				if maybe && out != check.HAStored {
					// A 5xx or a lost answer before: some replicas may hold the sample whatever
					// this answer says (the elected replica changed between the attempts).
					out = check.HAUnknown
				}
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		h.mu.Lock()
		h.hist = append(h.hist, check.HAWrite{HASample: check.HASample{Replica: r, T: ts}, Outcome: out})
		h.endMs = max(h.endMs, ts)
		h.mu.Unlock()
	}
}

// read returns every faulttest_ha sample the query API of a running node answers, and the number
// of series still carrying the replica label.
func (h *haPair) read(ctx context.Context) ([]check.HASample, int, error) {
	var err error
	for range 20 {
		for _, n := range h.c.Nodes {
			if !n.Running() || n.Paused() {
				continue
			}
			var s []check.HASample
			var leaks int
			if s, leaks, err = h.readFrom(ctx, n); err == nil {
				return s, leaks, nil
			}
		}
		if ctx.Err() != nil {
			break
		}
		time.Sleep(time.Second)
	}
	return nil, 0, err
}

func (h *haPair) readFrom(ctx context.Context, n *Node) ([]check.HASample, int, error) {
	endMs := time.Now().UnixMilli() + 1000
	q := url.Values{}
	q.Set("query", fmt.Sprintf("%s[%dms]", haMetric, endMs-h.start.UnixMilli()+60_000))
	q.Set("time", fmt.Sprintf("%d.%03d", endMs/1000, endMs%1000))
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+n.HTTPAddr+"/prometheus/api/v1/query?"+q.Encode(), nil)
	if err != nil {
		return nil, 0, err
	}
	resp, err := h.http.Do(req)
	if err != nil {
		return nil, 0, fmt.Errorf("ha read via %s: %w", n.ID, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return nil, 0, fmt.Errorf("ha read via %s: %d %s", n.ID, resp.StatusCode, firstLine(string(body)))
	}
	var r struct {
		Status string `json:"status"`
		Data   struct {
			Result []struct {
				Metric map[string]string    `json:"metric"`
				Values [][2]json.RawMessage `json:"values"`
			} `json:"result"`
		} `json:"data"`
	}
	if err := json.Unmarshal(body, &r); err != nil || r.Status != "success" {
		return nil, 0, fmt.Errorf("ha read via %s: %v %s", n.ID, err, firstLine(string(body)))
	}
	var out []check.HASample
	leaks := 0
	for _, s := range r.Data.Result {
		if _, ok := s.Metric["__replica__"]; ok {
			leaks++
		}
		for _, p := range s.Values {
			ts, err := parseAPITime(string(p[0]))
			if err != nil {
				return nil, 0, err
			}
			var vs string
			if err := json.Unmarshal(p[1], &vs); err != nil {
				return nil, 0, err
			}
			v, err := strconv.ParseFloat(vs, 64)
			if err != nil || v != math.Trunc(v) {
				return nil, 0, fmt.Errorf("ha read via %s: value %q", n.ID, vs)
			}
			iv := int64(v)
			smp := check.HASample{Replica: int(iv % 10), T: iv / 10}
			if smp.T != ts {
				smp = check.HASample{Replica: 0, T: ts} // a value that does not match its time: foreign
			}
			out = append(out, smp)
		}
	}
	return out, leaks, nil
}

// check runs the ha checker on what was written and what the cluster holds now.
func (h *haPair) check(ctx context.Context) (check.HAResult, int, error) {
	read, leaks, err := h.read(ctx)
	if err != nil {
		return check.HAResult{}, 0, err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	// A drop is justified by the other replica's data within the failover timeout plus a refresh
	// period plus 2s of slack (retries, apply lag).
	return check.CheckHA(h.hist, read, haFailover, haFailover+haUpdate+2*time.Second, h.endMs), leaks, nil
}
