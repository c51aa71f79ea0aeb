package e2e

import (
	"bytes"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/prometheus/prompb"

	pc "github.com/raftingest/raftingest/internal/proccluster"
)

// adminDo sends one request to http://addr+path and returns the status, the Allow header and the body.
func adminDo(t *testing.T, method, addr, path string) (int, string, string) {
	t.Helper()
	req, err := http.NewRequest(method, "http://"+addr+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := (&http.Client{Timeout: 60 * time.Second}).Do(req)
	if err != nil {
		t.Fatalf("%s %s%s: %v", method, addr, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header.Get("Allow"), string(b)
}

// logAfterStart is a node's log without the harness's "=== start" lines, which echo the command
// line as the test typed it: what remains is what the process itself wrote.
func logAfterStart(n *pc.Node) string {
	var out []string
	for _, l := range strings.Split(n.Log(), "\n") {
		if !strings.HasPrefix(l, "=== start ") {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// TestProcess_AdminListener: shutdown, flush and pprof answer on -admin.http-addr only; the actions
// take POST only (a GET cannot trigger them from a web page); /debug/pprof/cmdline and the node's
// log never show the S3 secret access key, whichever way it was spelled on the command line.
func TestProcess_AdminListener(t *testing.T) {
	skipShort(t)
	const sepSecret, eqSecret = "SEP-wJalrXUtnFEMI-K7MDENG", "EQ-bPxRfiCYEXAMPLEKEY"
	// The filesystem bucket ignores the S3 flags, but they are parsed and held like any other: the
	// way an operator preparing a switch to S3 would leave them. The second spelling wins.
	c := pc.New(t, append(slicesClone(fastFlags), "-blocks-storage.s3.secret-access-key", sepSecret)...)
	a := c.Start("a", "-bootstrap", "-blocks-storage.s3.secret-access-key="+eqSecret, "-ingester.max-transfer-retries=1")
	waitActive(t, c, a.GRPCAddr, "a")

	now := time.Now().UnixMilli()
	req := &prompb.WriteRequest{Timeseries: []prompb.TimeSeries{
		series([]string{"__name__", "e2e_admin", "job", "admin"}, prompb.Sample{Timestamp: now - 60_000, Value: 1}, prompb.Sample{Timestamp: now, Value: 2})}}
	if code, body, err := push(a.HTTPAddr, "", req); err != nil || code/100 != 2 {
		t.Fatalf("push: %d %q %v", code, body, err)
	}

	// The public listener no longer serves the admin endpoints, whatever the method.
	for _, p := range []struct{ method, path string }{
		{"POST", "/ingester/shutdown"}, {"POST", "/ingester/flush"}, {"GET", "/ingester/shutdown"},
		{"GET", "/debug/pprof/"}, {"GET", "/debug/pprof/cmdline"}, {"GET", "/debug/pprof/goroutine?debug=1"},
	} {
		if code, _, body := adminDo(t, p.method, a.HTTPAddr, p.path); code != http.StatusNotFound {
			t.Errorf("public %s %s: %d %q, want 404", p.method, p.path, code, body)
		}
	}

	// Actions refuse every method but POST, and say which one they take.
	for _, path := range []string{"/ingester/shutdown", "/ingester/flush"} {
		for _, m := range []string{"GET", "HEAD", "PUT", "DELETE"} {
			code, allow, _ := adminDo(t, m, a.AdminAddr, path)
			if code != http.StatusMethodNotAllowed || allow != "POST" {
				t.Errorf("admin %s %s: %d Allow=%q, want 405 Allow=POST", m, path, code, allow)
			}
		}
	}
	if v := waitActive(t, c, a.GRPCAddr, "a"); len(v.Members) != 1 {
		t.Fatalf("ring after refused GETs: %+v", v)
	}

	// Flush works on the admin listener.
	if code, body := storagePostFlush(t, a.AdminAddr); code != http.StatusOK || !strings.Contains(body, "flushed 1 series") {
		t.Fatalf("admin POST /ingester/flush: %d %q", code, body)
	}
	if blocks := storageBlockDirs(t, filepath.Join(a.DataDir, "blocks"), "anonymous"); len(blocks) == 0 {
		t.Fatal("no block in the bucket after the admin flush")
	}

	// pprof is there, and its command line hides the secret in both spellings.
	if code, _, body := adminDo(t, "GET", a.AdminAddr, "/debug/pprof/"); code != http.StatusOK || !strings.Contains(body, "goroutine") {
		t.Fatalf("admin GET /debug/pprof/: %d %.200q", code, body)
	}
	code, _, cmdline := adminDo(t, "GET", a.AdminAddr, "/debug/pprof/cmdline")
	if code != http.StatusOK {
		t.Fatalf("admin GET /debug/pprof/cmdline: %d %q", code, cmdline)
	}
	args := strings.Split(cmdline, "\x00")
	if !strings.Contains(cmdline, "-node.id\x00a") {
		t.Fatalf("/debug/pprof/cmdline is not the command line: %q", args)
	}
	if strings.Contains(cmdline, sepSecret) || strings.Contains(cmdline, eqSecret) {
		t.Fatalf("/debug/pprof/cmdline shows the secret: %q", args)
	}
	if !strings.Contains(cmdline, "-blocks-storage.s3.secret-access-key\x00********") ||
		!strings.Contains(cmdline, "-blocks-storage.s3.secret-access-key=********") {
		t.Fatalf("/debug/pprof/cmdline does not show the masked flags: %q", args)
	}

	// Shutdown on the admin listener makes the member leave (no successor: it flushes) and exit 0.
	if code, _, body := adminDo(t, "POST", a.AdminAddr, "/ingester/shutdown"); code != http.StatusAccepted {
		t.Fatalf("admin POST /ingester/shutdown: %d %q", code, body)
	}
	if code, err := a.Wait(90 * time.Second); err != nil || code != 0 {
		t.Fatalf("after POST /ingester/shutdown: exit %d, %v", code, err)
	}
	if log := logAfterStart(a); strings.Contains(log, sepSecret) || strings.Contains(log, eqSecret) {
		t.Fatalf("the node's log shows the secret:\n%s", log)
	}
	if !strings.Contains(a.Log(), "admin="+a.AdminAddr) {
		t.Errorf("the start-up line does not name the admin address:\n%s", a.Log())
	}
}

// TestProcess_AdminListenerOff: -admin.http-addr= runs no admin server, and the node still works.
func TestProcess_AdminListenerOff(t *testing.T) {
	skipShort(t)
	c := pc.New(t, fastFlags...)
	a := c.Start("a", "-bootstrap", "-admin.http-addr=")
	waitActive(t, c, a.GRPCAddr, "a")
	if _, err := http.Get("http://" + a.AdminAddr + "/debug/pprof/"); err == nil {
		t.Fatal("something answers on the admin address of a node started without one")
	}
	if !strings.Contains(a.Log(), "admin=off") {
		t.Errorf("the start-up line does not say the admin server is off:\n%s", a.Log())
	}
}

// TestProcess_SecretsNotInHelp: `ingester -help` prints no secret given on its command line or in
// its environment.
func TestProcess_SecretsNotInHelp(t *testing.T) {
	skipShort(t)
	const flagSecret, envSecret = "FLAG-wJalrXUtnFEMI-K7MDENG", "ENV-bPxRfiCYEXAMPLEKEY"
	cmd := exec.Command(filepath.Join(pc.Binaries(t), "ingester"), "-blocks-storage.s3.secret-access-key="+flagSecret, "-help")
	cmd.Env = append(cmd.Environ(), "AWS_SECRET_ACCESS_KEY="+envSecret, "AWS_ACCESS_KEY_ID=AKIDEXAMPLE")
	out, _ := cmd.CombinedOutput()
	if !strings.Contains(string(out), "-blocks-storage.s3.secret-access-key") || !strings.Contains(string(out), "-admin.http-addr") {
		t.Fatalf("-help does not list the flags:\n%s", out)
	}
	if bytes.Contains(out, []byte(flagSecret)) || bytes.Contains(out, []byte(envSecret)) {
		t.Fatalf("-help shows a secret:\n%s", out)
	}
}

// TestProcess_S3SecretFromEnvironmentOrFile: with the s3 backend, the secret access key comes from
// a file or from AWS_SECRET_ACCESS_KEY when no flag gives it, and a node so configured starts (its
// bucket, a closed loopback port here, is only dialled when it flushes or reads blocks); without
// any secret next to -blocks-storage.s3.access-key-id the node refuses to start and says why.
func TestProcess_S3SecretFromEnvironmentOrFile(t *testing.T) {
	skipShort(t)
	closed := pc.FreePorts(t, 1)[0]
	s3 := []string{"-blocks-storage.backend=s3", "-blocks-storage.s3.bucket-name=b", "-blocks-storage.s3.insecure",
		"-blocks-storage.s3.endpoint=127.0.0.1:" + strconv.Itoa(closed), "-blocks-storage.s3.access-key-id=AKIDEXAMPLE"}
	bin := filepath.Join(pc.Binaries(t), "ingester")

	t.Run("no secret anywhere is refused", func(t *testing.T) {
		ports := pc.FreePorts(t, 4)
		cmd := exec.Command(bin, append([]string{"-node.id=a", "-data.dir=" + t.TempDir(), "-bootstrap",
			"-raft.addr=127.0.0.1:" + strconv.Itoa(ports[0]), "-grpc.addr=127.0.0.1:" + strconv.Itoa(ports[1]),
			"-http.addr=127.0.0.1:" + strconv.Itoa(ports[2]), "-admin.http-addr=127.0.0.1:" + strconv.Itoa(ports[3])}, s3...)...)
		cmd.Env = withoutAWS(cmd.Environ())
		out, err := cmd.CombinedOutput()
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 2 || !strings.Contains(string(out), "-blocks-storage.s3.secret-access-key") {
			t.Fatalf("want exit 2 naming the flag, got %v:\n%s", err, out)
		}
	})

	t.Run("environment", func(t *testing.T) {
		t.Setenv("AWS_SECRET_ACCESS_KEY", "ENV-bPxRfiCYEXAMPLEKEY") // inherited by the node
		c := pc.New(t, append(slicesClone(fastFlags), s3...)...)
		a := c.Start("a", "-bootstrap")
		waitActive(t, c, a.GRPCAddr, "a")
		if strings.Contains(logAfterStart(a), "ENV-bPxRfiCYEXAMPLEKEY") {
			t.Fatalf("the log shows the secret:\n%s", a.Log())
		}
	})

	t.Run("file", func(t *testing.T) {
		keyFile := filepath.Join(t.TempDir(), "s3-secret")
		if err := os.WriteFile(keyFile, []byte("FILE-bPxRfiCYEXAMPLEKEY\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		c := pc.New(t, append(slicesClone(fastFlags), s3...)...)
		a := c.Start("a", "-bootstrap", "-blocks-storage.s3.secret-access-key-file="+keyFile)
		waitActive(t, c, a.GRPCAddr, "a")
		if strings.Contains(logAfterStart(a), "FILE-bPxRfiCYEXAMPLEKEY") {
			t.Fatalf("the log shows the secret:\n%s", a.Log())
		}
	})
}

// withoutAWS is env without the AWS credential variables.
func withoutAWS(env []string) []string {
	var out []string
	for _, kv := range env {
		if !strings.HasPrefix(kv, "AWS_") {
			out = append(out, kv)
		}
	}
	return out
}
