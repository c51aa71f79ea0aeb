package e2e

import (
	"fmt"
	"net/url"
	"reflect"
	"strconv"
	"testing"
	"time"

	pc "github.com/raftingest/raftingest/internal/proccluster"
	"github.com/raftingest/raftingest/internal/toolbin"
)

// TestProcess_Prometheus3RemoteWrite2 runs a real Prometheus 3 (built from the prometheus module
// in go.mod into bin/tools by the Makefile) scraping itself every second and remote-writing with
// remote-write 2.0 to one member of a 5-member cluster, then checks that the cluster answers
// PromQL over what it scraped exactly as that Prometheus answers from its own TSDB, through two
// members, and that what arrived was 2.0 (the distributor counts requests by version) with
// nothing failed on Prometheus's side.
func TestProcess_Prometheus3RemoteWrite2(t *testing.T) {
	skipShort(t)
	bin := toolbin.Require(t, "prometheus3", "RAFTINGEST_PROMETHEUS3", "bin/tools/prometheus3")
	_, nodes := startCluster5(t)
	a, d := nodes[0], nodes[3]
	// One shard, and a batch deadline well under the comparison's margin, so that everything
	// scraped up to a few seconds ago has been sent.
	prom := startPrometheusBin(t, bin, fmt.Sprintf(`global:
  scrape_interval: 1s
scrape_configs:
  - job_name: self
    static_configs:
      - targets: ['$SELF']
remote_write:
  - url: http://%s/api/v1/push
    protobuf_message: io.prometheus.write.v2.Request
    queue_config:
      max_shards: 1
      batch_send_deadline: 200ms
      min_backoff: 50ms
`, a.HTTPAddr))

	start := time.Now().Add(2 * time.Second).Truncate(time.Second)
	time.Sleep(12 * time.Second)
	end := time.Now().Add(-4 * time.Second).Truncate(time.Second)
	sec := func(t time.Time) string { return strconv.FormatInt(t.Unix(), 10) }
	queries := []string{
		`up{job="self"}`,
		`count({job="self"})`, // every series scraped, each at every step
		`sum by (__name__) (prometheus_tsdb_head_series)`,
		`sum(rate(prometheus_http_requests_total[5s]))`,
	}
	for _, q := range queries {
		p := url.Values{"query": {q}, "start": {sec(start)}, "end": {sec(end)}, "step": {"1"}}
		pc.Eventually(t, 20*time.Second, "the cluster answers "+q+" as Prometheus 3 does", func() (bool, string) {
			_, want, _ := getAPI(t, prom.addr, "/api/v1/query_range", p)
			if want.Status != "success" {
				return false, "prometheus: " + want.Error
			}
			wantN := normalise(t, want.Data.ResultType, want.Data.Result)
			if len(wantN) == 0 {
				return false, "prometheus has no data yet"
			}
			for _, n := range []*pc.Node{a, d} {
				_, got, _ := getAPI(t, n.HTTPAddr, "/prometheus/api/v1/query_range", p)
				if got.Status != "success" {
					return false, n.ID + ": " + got.Error
				}
				if gotN := normalise(t, got.Data.ResultType, got.Data.Result); !reflect.DeepEqual(gotN, wantN) {
					return false, fmt.Sprintf("%s answers %d series, prometheus %d: %.300v vs %.300v", n.ID, len(gotN), len(wantN), gotN, wantN)
				}
			}
			return true, ""
		})
	}

	code, body, _ := pc.HTTPGet(prom.addr, "/metrics", "")
	if code != 200 {
		t.Fatalf("prometheus /metrics: %d", code)
	}
	if sent := metricValue(body, "prometheus_remote_storage_samples_total"); sent < 100 {
		t.Errorf("prometheus sent %v samples", sent)
	}
	for _, m := range []string{"prometheus_remote_storage_samples_failed_total", "prometheus_remote_storage_samples_dropped_total"} {
		if v := metricValue(body, m); v > 0 {
			t.Errorf("prometheus: %s = %v", m, v)
		}
	}
	_, ours, _ := pc.HTTPGet(a.HTTPAddr, "/metrics", "")
	if v2 := metricValue(ours, `raftingest_distributor_remote_write_requests_total{version="2.0"}`); v2 < 5 {
		t.Errorf("%s received %v remote-write 2.0 requests", a.ID, v2)
	}
	if v1 := metricValue(ours, `raftingest_distributor_remote_write_requests_total{version="1.0"}`); v1 != 0 {
		t.Errorf("%s received %v remote-write 1.0 requests from a Prometheus configured for 2.0", a.ID, v1)
	}
}
