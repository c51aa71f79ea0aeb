package monitoring

import (
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

// Every metric an expression selects is one the code exports: its full name appears as a string
// literal in the repository's non-test Go code (metric names are never assembled from parts here).
func TestAlerts_NameOnlyMetricsTheCodeExports(t *testing.T) {
	groups, errs := rulefmt.ParseFile("alerts.yml", false)
	if len(errs) > 0 {
		t.Fatalf("alerts.yml: %v", errs)
	}
	var src strings.Builder
	err := filepath.WalkDir("..", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == "bench" || strings.HasPrefix(d.Name(), ".") && d.Name() != "..") {
			return filepath.SkipDir // the bench reads Prometheus's own metrics by name
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
	code := src.String()
	n := 0
	for _, g := range groups.Groups {
		for _, r := range g.Rules {
			expr, err := parser.ParseExpr(r.Expr)
			if err != nil {
				t.Errorf("%s: %v", r.Alert, err)
				continue
			}
			for _, sel := range parser.ExtractSelectors(expr) {
				i := slices.IndexFunc(sel, func(m *labels.Matcher) bool { return m.Name == labels.MetricName })
				if i < 0 || sel[i].Type != labels.MatchEqual {
					t.Errorf("%s: selector %v does not name one metric", r.Alert, sel)
					continue
				}
				n++
				if name := sel[i].Value; !strings.Contains(code, `"`+name+`"`) {
					t.Errorf("%s selects %s, which no non-test Go file of the repository exports", r.Alert, name)
				}
			}
		}
	}
	if n < 10 {
		t.Fatalf("only %d selectors checked: the walk or the parse is broken", n)
	}
}
