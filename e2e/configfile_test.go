package e2e

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	pc "github.com/raftingest/raftingest/internal/proccluster"
)

// TestProcess_ConfigFileAndPrintConfig: a real node takes its configuration from -config.file
// (nested and flat keys), the command line overriding it; -print.config shows the result with the
// secret masked, and loads back; a bad key stops the start naming the file and line; -version
// prints one line.
func TestProcess_ConfigFileAndPrintConfig(t *testing.T) {
	c := pc.New(t)
	ingester := filepath.Join(c.Bin, "ingester")
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "raftingest.yaml")
	run := func(args ...string) (string, string, int) {
		t.Helper()
		cmd := exec.Command(ingester, args...)
		var out, errb bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errb
		err := cmd.Run()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return out.String(), errb.String(), code
	}

	n := c.Add("a") // its free ports and data directory; the process is started below from the file
	// The node's addresses come from the file, nested at the dots; -node.id from the command line.
	yaml := "node.id: from-file\ndata.dir: " + n.DataDir + "\nraft:\n  addr: " + n.RaftAddr + "\ngrpc.addr: " + n.GRPCAddr +
		"\nhttp.addr: " + n.HTTPAddr + "\nadmin.http-addr: " + n.AdminAddr + "\nring:\n  heartbeat-period: 200ms\n  heartbeat-timeout: 3s\n" +
		"blocks-storage.s3.secret-access-key: hunter2\n"
	if err := os.WriteFile(cfgPath, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	out, errOut, code := run("-config.file", cfgPath, "-node.id", "a", "-print.config")
	if code != 0 || strings.Contains(out, "hunter2") || !strings.Contains(out, `node.id: "a"`) ||
		!strings.Contains(out, `grpc.addr: "`+n.GRPCAddr+`"`) || !strings.Contains(out, `ring.heartbeat-period: "200ms"`) {
		t.Fatalf("-print.config: exit %d, stderr %s\n%s", code, errOut, out)
	}
	// Loaded back, the output gives the same configuration; its masked secret is refused, so it
	// goes first (a real file would put the secret or its -file form back).
	printed := filepath.Join(dir, "printed.yaml")
	if err := os.WriteFile(printed, []byte(out), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, errOut, code := run("-config.file", printed, "-print.config"); code != 2 || !strings.Contains(errOut, "the mask -print.config writes") {
		t.Fatalf("a masked secret loaded back: exit %d %s", code, errOut)
	}
	var kept []string
	for _, line := range strings.Split(out, "\n") {
		if !strings.HasPrefix(line, "blocks-storage.s3.secret-access-key:") {
			kept = append(kept, line)
		}
	}
	if err := os.WriteFile(printed, []byte(strings.Join(kept, "\n")), 0o600); err != nil {
		t.Fatal(err)
	}
	if out2, errOut, code := run("-config.file", printed, "-print.config"); code != 0 || out2 != strings.Join(kept, "\n") {
		t.Fatalf("-print.config's output does not load back to the same configuration: exit %d %s\n%s", code, errOut, out2)
	}

	// A real node started from the file alone (the command line gives only -node.id and
	// -bootstrap) answers on the file's addresses as member a.
	proc := exec.Command(ingester, "-config.file", cfgPath, "-node.id", "a", "-bootstrap")
	logf, err := os.Create(filepath.Join(dir, "a.log"))
	if err != nil {
		t.Fatal(err)
	}
	proc.Stdout, proc.Stderr = logf, logf
	if err := proc.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = proc.Process.Kill(); _ = proc.Wait(); logf.Close() })
	waitActive(t, c, n.GRPCAddr, "a")
	pc.Eventually(t, 10*time.Second, "a's /ready", func() (bool, string) {
		code, body, err := pc.HTTPGet(n.HTTPAddr, "/ready", "")
		return err == nil && code == 200, body
	})

	if err := os.WriteFile(cfgPath, []byte("node.id: a\nring:\n  heartbeat-perod: 1s\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, errOut, code = run("-config.file", cfgPath)
	if code != 2 || !strings.Contains(errOut, cfgPath+" line 3") || !strings.Contains(errOut, `"ring.heartbeat-perod"`) {
		t.Fatalf("a misspelt key: exit %d, stderr %q", code, errOut)
	}
	out, _, code = run("-version")
	if code != 0 || !strings.HasPrefix(out, "raftingest ingester ") {
		t.Fatalf("-version: exit %d %q", code, out)
	}
}
