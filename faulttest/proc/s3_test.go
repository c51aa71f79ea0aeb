package proc

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/raftingest/raftingest/faulttest"
	"github.com/raftingest/raftingest/faulttest/netns"
	pc "github.com/raftingest/raftingest/internal/proccluster"
	"github.com/raftingest/raftingest/internal/s3server"
)

// The S3 scenario: the storage scenario's schedule on a shared S3 bucket served by a real S3 server
// (versitygw, internal/s3server), which is itself killed and paused while the members flush into
// it and the compactor merges, marks and deletes blocks there.
//
// The server runs in the driver's namespace and listens on the test bridge's address
// (netns.BridgeIP), the one address of the driver's namespace the node namespaces reach: never on
// an address of the machine's own network. Its root directory is the run's directory and its
// bucket is named "bucket", so the objects land in <run dir>/bucket — the directory the checkers
// read the shared bucket from (Cluster.Bucket) — written whole before they appear (versitygw writes
// each object to an unnamed temporary file and links it in).
const (
	s3Port   = 9000
	s3Bucket = "bucket" // = filepath.Base(Cluster.Bucket)
	s3Key    = "AKFAULTTEST"
	s3Secret = "faulttest-secret-0123456789"
)

// s3Scenario has the storage-local scenario's fixed schedule (flushes among a kill of the leader,
// the compactor, an isolation and a pause) on a shared S3 bucket with the compactor running every
// 2s; runS3Scenario adds the S3 server's own outages. Three members: with a shared bucket every
// member's querier reads every block whatever the replication, so five buy nothing here.
var s3Scenario = Scenario{Name: "storage-s3", Fixed: []Step{{Kind: FlushAll, At: 3 * time.Second},
	{Kind: KillLeader, At: 5 * time.Second, Dur: 3 * time.Second}, {Kind: FlushOne, At: 9 * time.Second},
	{Kind: IsolateOne, At: 10 * time.Second, Dur: 3 * time.Second}, {Kind: FlushAll, At: 15 * time.Second},
	{Kind: PauseShort, At: 16 * time.Second, Dur: time.Second}},
	ExtraFlags: append([]string{"-blocks-storage.backend", "s3",
		"-blocks-storage.s3.endpoint", fmt.Sprintf("%s:%d", netns.BridgeIP, s3Port), "-blocks-storage.s3.bucket-name", s3Bucket,
		"-blocks-storage.s3.region", s3server.Region, "-blocks-storage.s3.insecure",
		"-blocks-storage.s3.access-key-id", s3Key, "-blocks-storage.s3.secret-access-key", s3Secret}, compactorFlags...),
}

// TestProcessS3 runs s3Scenario (20s of workload, like the short set, and part of go test's run
// as the short set is; make faulttest's matrix runs it with longer workloads among its rounds).
// The S3 server's outages, on top of the schedule: killed (-9) as soon as the first block's
// meta.json lands in the bucket — in the middle of the first flush-all, the other members' uploads
// still going — and restarted 4s later on the same directory; then stopped (SIGSTOP) for 2s, 3s
// after that. Flushes retry until it is back, and every checker of the run judges the result:
// every acknowledged sample readable (through the query API, which reads the bucket over S3, and
// directly from the bucket's files), none with a wrong value, the same answer from every member,
// and blocks written by the compactor in the bucket.
func TestProcessS3(t *testing.T) {
	if testing.Short() {
		t.Skip("process tier: not in -short")
	}
	if f := os.Getenv("FAULTTEST_SCENARIO"); f != "" && f != s3Scenario.Name {
		t.Skip("FAULTTEST_SCENARIO=" + f)
	}
	if why := netns.Available(); why != "" {
		t.Skip(why)
	}
	if !netns.InDriverNamespace() {
		// Found (or the test skipped, or failed under make) before RAFTINGEST_BIN is set below.
		t.Setenv("RAFTINGEST_VERSITYGW", s3server.Binary(t))
		t.Setenv("RAFTINGEST_BIN", pc.Binaries(t))
	}
	if !netns.Reexec(t) {
		return
	}
	seeds, err := faulttest.Seeds(1)
	if err != nil {
		t.Fatal(err)
	}
	sc := s3Scenario
	sc.Seed, sc.Workload = seeds[0], workload(t, 20*time.Second)
	t.Run(fmt.Sprintf("%s/seed=%d", sc.Name, sc.Seed), func(t *testing.T) { runS3Scenario(t, sc) })
}

// runS3Scenario is runScenario for a scenario on the shared S3 bucket: it starts the S3 server in
// the run's directory as soon as Run has made it, subjects it to s3Outages, and kills it after the
// run. The test must be in the driver namespace with RAFTINGEST_VERSITYGW and RAFTINGEST_BIN set.
func runS3Scenario(t *testing.T, sc Scenario) *faulttest.Report {
	t.Helper()
	bin := s3server.Binary(t)
	base := os.Getenv("FAULTTEST_KEEP_DIR")
	if base == "" {
		base = os.TempDir()
	}
	// A directory of its own in which Run makes the run's directory, so the watcher below finds it.
	base, err := os.MkdirTemp(base, "faulttest-s3-")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var srv *s3server.Server
	done := make(chan struct{})
	go func() {
		defer close(done)
		var err error
		if srv, err = startS3ForRun(ctx, bin, base, sc.Name); err != nil {
			t.Errorf("S3 server: %v", err)
			return
		}
		s3Outages(ctx, t, srv)
	}()
	rep, err := Run(context.Background(), Env{Bin: os.Getenv("RAFTINGEST_BIN"), Base: base, Logf: t.Logf}, sc)
	if rep != nil {
		t.Logf("FAULTTEST_SEED=%d\n%s", sc.Seed, rep.Text())
		if err := rep.Save(); err != nil {
			t.Error(err)
		}
	}
	if err != nil {
		t.Errorf("%s seed %d: %v", sc.Name, sc.Seed, err)
	}
	cancel()
	<-done // srv is set, or was never
	if srv != nil {
		srv.Kill()
	}
	if !t.Failed() {
		os.RemoveAll(base)
	}
	return rep
}

// startS3ForRun waits for Run to make the run's directory in base and for the test bridge to have
// its address, then starts the S3 server there (root: the run's directory; listening on the
// bridge) with the scenario's bucket and keys. Run makes both within a second of its start; the
// nodes need the server only at their first flush or query, seconds after that.
func startS3ForRun(ctx context.Context, bin, base, name string) (*s3server.Server, error) {
	if !netns.InDriverNamespace() {
		return nil, netns.ErrNotIsolated // never listen on the machine's own network
	}
	deadline := time.Now().Add(60 * time.Second)
	var dir string
	for dir == "" || !hasAddr(netns.BridgeIP) {
		if ctx.Err() != nil || time.Now().After(deadline) {
			return nil, fmt.Errorf("no run directory in %s or no bridge address %s after 60s", base, netns.BridgeIP)
		}
		if m, _ := filepath.Glob(filepath.Join(base, "faulttest-"+name+"-*")); len(m) == 1 {
			dir = m[0]
		}
		time.Sleep(10 * time.Millisecond)
	}
	return s3server.StartProcess(bin, s3server.Options{Listen: fmt.Sprintf("%s:%d", netns.BridgeIP, s3Port), Dir: dir,
		Bucket: s3Bucket, AccessKey: s3Key, SecretKey: s3Secret, Log: filepath.Join(dir, "versitygw.log")})
}

// hasAddr reports whether an interface of this namespace has ip.
func hasAddr(ip string) bool {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return false
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.String() == ip {
			return true
		}
	}
	return false
}

// s3Outages kills the server when the first meta.json appears in its bucket, restarts it 4s
// later, then pauses it for 2s 3s after that.
func s3Outages(ctx context.Context, t *testing.T, srv *s3server.Server) {
	sleep := func(d time.Duration) bool {
		select {
		case <-ctx.Done():
			return false
		case <-time.After(d):
			return true
		}
	}
	for {
		m, _ := filepath.Glob(filepath.Join(srv.BucketDir(""), "*", "*", "meta.json"))
		if len(m) > 0 {
			break
		}
		if !sleep(20 * time.Millisecond) {
			return
		}
	}
	srv.Kill()
	t.Logf("%s S3 server killed (first block in the bucket)", time.Now().Format(time.TimeOnly))
	sleep(4 * time.Second) // restarted even when cancelled: the run's last reads need it
	if err := srv.Restart(); err != nil {
		t.Errorf("restarting the S3 server: %v", err)
		return
	}
	t.Logf("%s S3 server restarted", time.Now().Format(time.TimeOnly))
	if !sleep(3 * time.Second) {
		return
	}
	srv.Pause()
	t.Logf("%s S3 server paused", time.Now().Format(time.TimeOnly))
	sleep(2 * time.Second)
	srv.Resume()
	t.Logf("%s S3 server resumed", time.Now().Format(time.TimeOnly))
}
