// Package toolbin finds the tools the Makefile installs into bin/tools (versitygw, a Prometheus 3
// built from the prometheus module in go.mod) for the tests that run them as real processes.
package toolbin

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// Find returns the path of the tool name: $env when set (it must exist), else bin/tools/name next
// to $RAFTINGEST_BIN (make test sets it to bin/), else name on $PATH, else bin/tools/name of the
// module the test runs in. The error says where it looked.
func Find(name, env string) (string, error) {
	if p := os.Getenv(env); p != "" {
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("%s=%s: %w", env, p, err)
		}
		return p, nil
	}
	var tried []string
	if d := os.Getenv("RAFTINGEST_BIN"); d != "" {
		p := filepath.Join(d, "tools", name)
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
		tried = append(tried, p)
	}
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	tried = append(tried, "$PATH")
	if root, ok := moduleRoot(); ok {
		p := filepath.Join(root, "bin", "tools", name)
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
		tried = append(tried, p)
	}
	return "", fmt.Errorf("%s not found (looked in %s)", name, strings.Join(tried, ", "))
}

// Require is Find for a test: when the tool is missing the test is skipped — unless RAFTINGEST_BIN
// is set, which means make test or make faulttest, whose prerequisites install it: then a missing
// tool is a broken setup and the test fails. install is the make target that installs it.
func Require(t testing.TB, name, env, install string) string {
	t.Helper()
	p, err := Find(name, env)
	if err == nil {
		return p
	}
	if os.Getenv("RAFTINGEST_BIN") != "" {
		t.Fatalf("%v (make test installs it: make %s)", err, install)
	}
	t.Skipf("%v: skipped (make %s installs it)", err, install)
	return ""
}

// moduleRoot is the nearest directory above the working directory (a test's package directory)
// holding go.mod.
func moduleRoot() (string, bool) {
	dir, err := os.Getwd()
	if err != nil {
		return "", false
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, true
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", false
		}
		dir = parent
	}
}
