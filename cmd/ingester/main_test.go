package main

import (
	"io"
	"os"
	"strings"
	"testing"
)

// capture runs run(args) with stdout and stderr captured.
func capture(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	outR, outW, _ := os.Pipe()
	errR, errW, _ := os.Pipe()
	oldOut, oldErr := os.Stdout, os.Stderr
	os.Stdout, os.Stderr = outW, errW
	code = run(args)
	os.Stdout, os.Stderr = oldOut, oldErr
	outW.Close()
	errW.Close()
	o, _ := io.ReadAll(outR)
	e, _ := io.ReadAll(errR)
	return code, string(o), string(e)
}

// A bad flag value is one line and a pointer to -help (it used to print the 120-line flag list
// after the error); -help prints the list on stdout and exits 0; -version prints one line.
func TestRun_FlagErrorsVersionAndHelp(t *testing.T) {
	code, out, errOut := capture(t, "-raft.max-voters", "x")
	if code != 2 || out != "" || strings.Count(errOut, "\n") != 2 || !strings.Contains(errOut, "-raft.max-voters") ||
		!strings.Contains(errOut, "Run 'ingester -help'") {
		t.Errorf("bad value: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	code, out, errOut = capture(t, "-no-such-flag")
	if code != 2 || out != "" || !strings.Contains(errOut, "-no-such-flag") || strings.Count(errOut, "\n") != 2 {
		t.Errorf("unknown flag: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	code, out, errOut = capture(t, "-help")
	if code != 0 || errOut != "" || !strings.Contains(out, "-raft.voter-replace-after") || !strings.Contains(out, "Usage of ingester") {
		t.Errorf("-help: exit %d, stderr %q, stdout %d bytes", code, errOut, len(out))
	}
	if strings.Contains(out, "-join ringctl join") || strings.Contains(out, "empty disables the WAL") {
		t.Errorf("-help still has the misleading texts")
	}
	for _, want := range []string{`-grpc.addr string`, `(default "127.0.0.1:9095")`, `-raft.heartbeat-timeout duration`, `(default 1s)`} {
		if !strings.Contains(out, want) {
			t.Errorf("-help lacks %q (the flags' types and defaults)", want)
		}
	}
	if strings.Contains(out, "panic") {
		t.Errorf("-help printed a panic:\n%s", out)
	}
	code, out, errOut = capture(t, "-version")
	if code != 0 || !strings.HasPrefix(out, "raftingest ingester ") || strings.Count(out, "\n") != 1 || errOut != "" {
		t.Errorf("-version: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
}
