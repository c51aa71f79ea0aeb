package overrides

import (
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

var defaults = Limits{IngestionRate: 10000, IngestionBurstSize: 200000, MaxGlobalSeriesPerUser: 150000,
	MaxFetchedSeriesPerQuery: 150000, MaxFetchedChunksPerQuery: 2000000, MaxFetchedChunkBytesPerQuery: 1 << 30}

func write(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// A tenant's overrides replace the limits they name and keep the defaults for the others; a tenant
// without overrides gets the defaults.
func TestManager_ForMergesOverridesWithDefaults(t *testing.T) {
	p := filepath.Join(t.TempDir(), "runtime.yaml")
	write(t, p, `
overrides:
  big:
    ingestion_rate: 50000
    ingestion_burst_size: 500000
    max_global_series_per_user: 2000000
    max_global_exemplars_per_user: 100000
  reader:
    max_fetched_series_per_query: 10
`)
	m, err := New(Config{File: p, ReloadPeriod: 1}, defaults, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	big := defaults
	big.IngestionRate, big.IngestionBurstSize, big.MaxGlobalSeriesPerUser = 50000, 500000, 2000000
	big.MaxGlobalExemplarsPerUser = 100000
	reader := defaults
	reader.MaxFetchedSeriesPerQuery = 10
	for tenant, want := range map[string]Limits{"big": big, "reader": reader, "other": defaults} {
		if got := m.For(tenant); got != want {
			t.Errorf("%s: %+v, want %+v", tenant, got, want)
		}
	}
}

// Every mistake refuses the file and says where: at start an error; on reload the previous
// overrides stay and the success gauge drops to 0, then back to 1 on a good file.
func TestManager_BadFilesRefusedWhole(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "runtime.yaml")
	for name, tc := range map[string]struct{ content, want string }{
		"unknown limit":      {"overrides:\n  t1:\n    ingestion_rat: 5\n", `line 3: unknown limit "ingestion_rat"`},
		"negative":           {"overrides:\n  t1:\n    max_fetched_series_per_query: -1\n", "max_fetched_series_per_query -1"},
		"negative exemplars": {"overrides:\n  t1:\n    max_global_exemplars_per_user: -1\n", "max_global_exemplars_per_user -1"},
		"rate, no burst":     {"overrides:\n  t1:\n    ingestion_rate: 5\n    ingestion_burst_size: 0\n", "ingestion_burst_size 0"},
		"invalid tenant":     {"overrides:\n  \"a/b\":\n    ingestion_rate: 5\n", `tenant "a/b"`},
		"unknown section":    {"limits:\n  t1: {}\n", "field limits not found"},
		"not a mapping":      {"overrides:\n  t1: 5\n", "want a mapping of limits"},
		"wrong value type":   {"overrides:\n  t1:\n    ingestion_rate: fast\n", "line 3: cannot unmarshal"},
	} {
		write(t, p, tc.content)
		if _, err := New(Config{File: p, ReloadPeriod: 1}, defaults, nil, nil); err == nil || !strings.Contains(err.Error(), tc.want) ||
			!strings.Contains(err.Error(), p) {
			t.Errorf("%s: %v, want an error naming %s and %q", name, err, p, tc.want)
		}
	}
	write(t, p, "overrides:\n  t1:\n    ingestion_rate: 5\n")
	reg := prometheus.NewRegistry()
	m, err := New(Config{File: p, ReloadPeriod: 1}, defaults, reg, nil)
	if err != nil {
		t.Fatal(err)
	}
	write(t, p, "overrides:\n  t1:\n    ingestion_rate: [\n")
	if err := m.reload(); err == nil {
		t.Fatal("a broken file reloaded")
	}
	if got := m.For("t1").IngestionRate; got != 5 {
		t.Fatalf("after a failed reload t1's rate is %v, want the previous 5", got)
	}
	if v := testutil.ToFloat64(m.lastOK); v != 0 {
		t.Errorf("cortex_runtime_config_last_reload_successful %v after a failure", v)
	}
	write(t, p, "overrides:\n  t1:\n    ingestion_rate: 7\n")
	if err := m.reload(); err != nil || m.For("t1").IngestionRate != 7 || testutil.ToFloat64(m.lastOK) != 1 {
		t.Fatalf("good file after a bad one: %v, rate %v", err, m.For("t1").IngestionRate)
	}
	if n := testutil.CollectAndCount(m.hash); n != 1 {
		t.Errorf("%d cortex_runtime_config_hash series, want the one in force", n)
	}
	// An empty file clears every override.
	write(t, p, "")
	if err := m.reload(); err != nil || m.For("t1") != defaults {
		t.Fatalf("empty file: %v, %+v", err, m.For("t1"))
	}
}

// /runtime_config shows every overridden tenant's limits; mode=diff only those that differ.
func TestManager_Handler(t *testing.T) {
	p := filepath.Join(t.TempDir(), "runtime.yaml")
	write(t, p, "overrides:\n  t1:\n    ingestion_rate: 5\n")
	m, err := New(Config{File: p, ReloadPeriod: 1}, defaults, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	get := func(target string) (int, string) {
		rec := httptest.NewRecorder()
		m.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, target, nil))
		return rec.Code, rec.Body.String()
	}
	code, body := get("/runtime_config")
	if code != 200 || !strings.Contains(body, "ingestion_rate: 5") || !strings.Contains(body, "max_fetched_series_per_query: 150000") {
		t.Errorf("full: %d\n%s", code, body)
	}
	code, body = get("/runtime_config?mode=diff")
	if code != 200 || !strings.Contains(body, "ingestion_rate: 5") || strings.Contains(body, "max_fetched_series_per_query") {
		t.Errorf("diff: %d\n%s", code, body)
	}
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/runtime_config", nil))
	if rec.Code != http.StatusMethodNotAllowed {
		t.Errorf("POST: %d", rec.Code)
	}
}

// out_of_order_time_window reads as Mimir writes it and changes on reload, without a restart.
func TestManager_OutOfOrderTimeWindowReloads(t *testing.T) {
	p := filepath.Join(t.TempDir(), "runtime.yaml")
	write(t, p, "overrides:\n  t1:\n    out_of_order_time_window: 30m\n")
	m, err := New(Config{File: p, ReloadPeriod: 1}, defaults, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := time.Duration(m.For("t1").OutOfOrderTimeWindow); got != 30*time.Minute {
		t.Fatalf("t1: window %s, want 30m", got)
	}
	if got := m.For("t2").OutOfOrderTimeWindow; got != 0 {
		t.Fatalf("t2: window %s, want the default 0", got)
	}
	write(t, p, "overrides:\n  t1:\n    out_of_order_time_window: 2h\n")
	if err := m.reload(); err != nil {
		t.Fatal(err)
	}
	if got := time.Duration(m.For("t1").OutOfOrderTimeWindow); got != 2*time.Hour {
		t.Fatalf("t1 after reload: window %s, want 2h", got)
	}
	write(t, p, "overrides:\n  t1:\n    out_of_order_time_window: soon\n")
	if err := m.reload(); err == nil || !strings.Contains(err.Error(), "soon") {
		t.Fatalf("a bad duration: want an error naming it, got %v", err)
	}
	if got := time.Duration(m.For("t1").OutOfOrderTimeWindow); got != 2*time.Hour {
		t.Fatalf("after a bad file: window %s, want 2h kept", got)
	}
}
