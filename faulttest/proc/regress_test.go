package proc

import (
	"net"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	pc "github.com/raftingest/raftingest/internal/proccluster"
)

// TestRegression_IngesterNewNilServerPanic is the regression test of the bug the WAL nemesis found:
// a startup failure (here the simplest one, the gRPC port already taken) must end the process
// with the error, not with a nil-pointer panic in ingester.New's deferred cleanup. It binds only
// on 127.0.0.1 and needs no namespace.
func TestRegression_IngesterNewNilServerPanic(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a process")
	}
	bin := pc.Binaries(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ports := pc.FreePorts(t, 2)
	cmd := exec.Command(filepath.Join(bin, "ingester"), "-node.id", "a", "-data.dir", t.TempDir(),
		"-grpc.addr", ln.Addr().String(), "-raft.addr", "127.0.0.1:"+itoa(ports[0]),
		"-http.addr", "127.0.0.1:"+itoa(ports[1]), "-admin.http-addr", "", "-bootstrap")
	done := make(chan struct{})
	var out []byte
	go func() { out, _ = cmd.CombinedOutput(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		_ = cmd.Process.Kill()
		<-done
		t.Fatal("ingester with a taken gRPC port did not exit")
	}
	if strings.Contains(string(out), "panic:") || cmd.ProcessState.ExitCode() == 2 {
		t.Fatalf("startup failure panicked instead of reporting the error:\n%s", out)
	}
	if !strings.Contains(string(out), "grpc.addr") {
		t.Fatalf("the error does not name the flag:\n%s", out)
	}
}

func itoa(i int) string { return strconv.Itoa(i) }
