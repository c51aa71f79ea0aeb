package monitoring

import (
	"encoding/json"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql/parser"
)

// promtool finds Prometheus's promtool. `make test` installs it (Debian package prometheus) and
// sets RAFTINGEST_BIN: there its absence fails the test; a bare `go test` skips.
func promtool(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("promtool")
	if err != nil {
		if os.Getenv("RAFTINGEST_BIN") != "" {
			t.Fatalf("promtool not found (make deps installs the Debian package prometheus): %v", err)
		}
		t.Skip("promtool not installed (Debian package prometheus)")
	}
	return p
}

func TestAlerts_PromtoolChecksAndUnitTests(t *testing.T) {
	pt := promtool(t)
	for _, args := range [][]string{{"check", "rules", "alerts.yml"}, {"test", "rules", "alerts.test.yml"}} {
		out, err := exec.Command(pt, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		if !strings.Contains(string(out), "SUCCESS") {
			t.Fatalf("promtool %s did not say SUCCESS:\n%s", strings.Join(args, " "), out)
		}
	}
}

// Every alert has a unit test that fires it: an alert nobody saw fire may never fire.
func TestAlerts_EveryAlertIsUnitTested(t *testing.T) {
	groups, errs := rulefmt.ParseFile("alerts.yml", false)
	if len(errs) > 0 {
		t.Fatalf("alerts.yml: %v", errs)
	}
	tests, err := os.ReadFile("alerts.test.yml")
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range groups.Groups {
		for _, r := range g.Rules {
			if r.Alert == "" {
				continue
			}
			// A test that expects it to fire names it and lists exp_labels under it.
			i := strings.Index(string(tests), "alertname: "+r.Alert+"\n")
			fired := false
			for i >= 0 {
				rest := string(tests[i+len("alertname: "+r.Alert+"\n"):])
				next := strings.Index(rest, "alertname:")
				if next < 0 {
					next = len(rest)
				}
				fired = fired || strings.Contains(rest[:next], "exp_labels:")
				j := strings.Index(rest, "alertname: "+r.Alert+"\n")
				if j < 0 {
					break
				}
				i += len("alertname: "+r.Alert+"\n") + j
			}
			if !fired {
				t.Errorf("alert %s has no unit test in alerts.test.yml that expects it to fire", r.Alert)
			}
		}
	}
}

// exportedSource is the repository's non-test Go code, where every exported metric's full name
// appears as a string literal (metric names are never assembled from parts here).
func exportedSource(t *testing.T) string {
	t.Helper()
	var src strings.Builder
	err := filepath.WalkDir("..", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == "bench" || d.Name() == "monitoring" || strings.HasPrefix(d.Name(), ".") && d.Name() != "..") {
			return filepath.SkipDir // the bench reads Prometheus's own metrics by name; this package names them
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		b, err := os.ReadFile(path)
		src.Write(b)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return src.String()
}

// checkExpr parses expr as PromQL and reports every selector that does not name exactly one metric
// the code exports (a histogram's _bucket, _count and _sum series count as the histogram). It
// returns how many selectors it checked.
func checkExpr(t *testing.T, code, where, expr string) int {
	t.Helper()
	e, err := parser.ParseExpr(expr)
	if err != nil {
		t.Errorf("%s: %q does not parse: %v", where, expr, err)
		return 0
	}
	n := 0
	for _, sel := range parser.ExtractSelectors(e) {
		i := slices.IndexFunc(sel, func(m *labels.Matcher) bool { return m.Name == labels.MetricName })
		if i < 0 || sel[i].Type != labels.MatchEqual {
			t.Errorf("%s: selector %v does not name one metric", where, sel)
			continue
		}
		n++
		name := sel[i].Value
		found := strings.Contains(code, `"`+name+`"`)
		for _, suffix := range []string{"_bucket", "_count", "_sum"} {
			if base, ok := strings.CutSuffix(name, suffix); ok && !found {
				found = strings.Contains(code, `"`+base+`"`)
			}
		}
		if !found {
			t.Errorf("%s selects %s, which no non-test Go file of the repository exports", where, name)
		}
	}
	return n
}

// Every metric an alert expression selects is one the code exports.
func TestAlerts_NameOnlyMetricsTheCodeExports(t *testing.T) {
	groups, errs := rulefmt.ParseFile("alerts.yml", false)
	if len(errs) > 0 {
		t.Fatalf("alerts.yml: %v", errs)
	}
	code := exportedSource(t)
	n := 0
	for _, g := range groups.Groups {
		for _, r := range g.Rules {
			n += checkExpr(t, code, r.Alert, r.Expr)
		}
	}
	if n < 10 {
		t.Fatalf("only %d selectors checked: the walk or the parse is broken", n)
	}
}

// The committed JSON is what the code builds: `go generate ./monitoring/` after a change.
func TestDashboards_CommittedJSONIsGenerated(t *testing.T) {
	want, err := Dashboards()
	if err != nil {
		t.Fatal(err)
	}
	files, err := filepath.Glob("dashboards/*.json")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != len(want) {
		t.Errorf("dashboards/ holds %d files, the code builds %d: %v", len(files), len(want), files)
	}
	for name, b := range want {
		got, err := os.ReadFile(filepath.Join("dashboards", name))
		if err != nil {
			t.Errorf("%s: %v (run go generate ./monitoring/)", name, err)
			continue
		}
		if string(got) != string(b) {
			t.Errorf("dashboards/%s differs from what the code builds: run go generate ./monitoring/", name)
		}
	}
}

// Every dashboard query, and the job variable's, parses as PromQL (Grafana's $__rate_interval and
// $job substituted) and names only metrics the code exports.
func TestDashboards_QueriesParseAndNameExportedMetrics(t *testing.T) {
	ds, err := Dashboards()
	if err != nil {
		t.Fatal(err)
	}
	code := exportedSource(t)
	n := 0
	for name, b := range ds {
		var d struct {
			Panels []struct {
				Title   string `json:"title"`
				Targets []struct {
					Expr string `json:"expr"`
				} `json:"targets"`
			} `json:"panels"`
			Templating struct {
				List []struct {
					Name  string `json:"name"`
					Query any    `json:"query"`
				} `json:"list"`
			} `json:"templating"`
		}
		if err := json.Unmarshal(b, &d); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		for _, p := range d.Panels {
			for _, tg := range p.Targets {
				expr := strings.ReplaceAll(tg.Expr, "$__rate_interval", "5m")
				n += checkExpr(t, code, name+": "+p.Title, expr)
			}
		}
		for _, v := range d.Templating.List {
			if q, ok := v.Query.(string); ok && strings.HasPrefix(q, "label_values(") {
				metric, _, _ := strings.Cut(strings.TrimPrefix(q, "label_values("), ",")
				n += checkExpr(t, code, name+": variable "+v.Name, metric)
			}
		}
	}
	if n < 40 {
		t.Fatalf("only %d selectors checked across the dashboards: the walk or the parse is broken", n)
	}
}
