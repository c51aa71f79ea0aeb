package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/prometheus/prompb"

	pc "github.com/raftingest/raftingest/internal/proccluster"
)

// TestProcess_RuntimeConfigOverridesApplyWithoutRestart: a tenant's ingestion rate and query
// limits come from -runtime-config.file and change while the node runs: a push over t1's override
// is refused with 429 while another tenant's passes on the defaults; the file is rewritten and the
// next push passes; a broken file leaves the last good overrides in force and says so in a metric;
// /runtime_config shows what is in force.
func TestProcess_RuntimeConfigOverridesApplyWithoutRestart(t *testing.T) {
	skipShort(t)
	dir := t.TempDir()
	rc := filepath.Join(dir, "runtime.yaml")
	write := func(content string) {
		t.Helper()
		tmp := rc + ".tmp"
		if err := os.WriteFile(tmp, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, rc); err != nil { // atomic, as a config management tool writes it
			t.Fatal(err)
		}
	}
	write("overrides:\n  t1:\n    ingestion_rate: 1\n    ingestion_burst_size: 5\n    max_fetched_series_per_query: 1\n" +
		"  t3:\n    max_global_series_per_user: 3\n")
	c := pc.New(t, append(slicesClone(fastFlags), "-auth.multitenancy-enabled", "-runtime-config.file", rc,
		"-runtime-config.reload-period", "200ms", "-distributor.replication-factor", "1")...)
	a := c.Start("a", "-bootstrap")
	waitActive(t, c, a.GRPCAddr, "a")
	ts := time.Now().UnixMilli()
	req := func(n int) *prompb.WriteRequest {
		r := &prompb.WriteRequest{}
		for i := range n {
			r.Timeseries = append(r.Timeseries, series([]string{"__name__", "rc_test", "i", fmt.Sprint(i)}, prompb.Sample{Timestamp: ts, Value: 1}))
		}
		return r
	}
	code, body, err := push(a.HTTPAddr, "t1", req(10))
	if err != nil || code != 429 || !strings.Contains(body, `tenant "t1": 1 samples/s`) || !strings.Contains(body, "bursts of 5") {
		t.Fatalf("t1 over its override: %d %s %v", code, body, err)
	}
	if code, body, err := push(a.HTTPAddr, "t2", req(10)); err != nil || code/100 != 2 {
		t.Fatalf("t2 on the defaults: %d %s %v", code, body, err)
	}
	// t3's series limit: 3 across the cluster, 3 / 1 member * RF 1 here.
	if code, body, err := push(a.HTTPAddr, "t3", req(5)); err != nil || code != 400 || !strings.Contains(body, "runtime override") {
		t.Fatalf("t3 over its series override: %d %s %v", code, body, err)
	}
	_, cfgBody, _ := pc.HTTPGet(a.HTTPAddr, "/runtime_config?mode=diff", "")
	if !strings.Contains(cfgBody, "ingestion_rate: 1") || !strings.Contains(cfgBody, "t1:") {
		t.Fatalf("/runtime_config?mode=diff:\n%s", cfgBody)
	}

	write("overrides:\n  t1:\n    ingestion_rate: 1000\n    ingestion_burst_size: 1000\n")
	pc.Eventually(t, 10*time.Second, "t1's new override in force", func() (bool, string) {
		code, body, err := push(a.HTTPAddr, "t1", req(10))
		return err == nil && code/100 == 2, fmt.Sprintf("%d %s %v", code, body, err)
	})

	write("overrides:\n  t1:\n    ingestion_rat: 1\n")
	pc.Eventually(t, 10*time.Second, "the broken file reported", func() (bool, string) {
		v := metricOf(t, a, "cortex_runtime_config_last_reload_successful")
		return v == 0, fmt.Sprintf("cortex_runtime_config_last_reload_successful %v", v)
	})
	if code, body, err := push(a.HTTPAddr, "t1", req(10)); err != nil || code/100 != 2 {
		t.Fatalf("after a broken file the last good override must stay: %d %s %v", code, body, err)
	}
	if !strings.Contains(a.Log(), `unknown limit \"ingestion_rat\"`) && !strings.Contains(a.Log(), `unknown limit "ingestion_rat"`) {
		t.Errorf("the log does not name the bad key:\n%s", a.Log())
	}
}
