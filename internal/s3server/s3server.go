// Package s3server runs a real S3-compatible server for tests: Versity Gateway (versitygw,
// Apache-2.0, installed into bin/tools by the Makefile) serving S3 from a temporary directory on
// 127.0.0.1, with one bucket made through the S3 API. The tests that use it run the product's S3
// backend (-blocks-storage.backend=s3) against a server that checks signatures, answers S3's error
// codes and stores what it is sent: nothing is mocked.
//
// versitygw's posix backend keeps bucket B's object K in the file <Dir>/B/K, written whole before it
// is linked in (O_TMPFILE), so a test may also read what the product uploaded straight from the
// disk (promtool, the faulttest checkers) as it would read a filesystem bucket.
package s3server

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	pc "github.com/raftingest/raftingest/internal/proccluster"
	"github.com/raftingest/raftingest/internal/toolbin"
)

// Region is the region the server runs in (versitygw's default).
const Region = "us-east-1"

// BinaryName is the server's executable, looked up by Binary.
const BinaryName = "versitygw"

// Binary returns the path of versitygw: $RAFTINGEST_VERSITYGW when set, else bin/tools/versitygw
// next to $RAFTINGEST_BIN (make test sets it to bin/), else versitygw on $PATH, else
// bin/tools/versitygw of the module this test runs in. When none exists the test is skipped —
// unless RAFTINGEST_BIN is set, which means make test or make faulttest, whose prerequisites
// install it: then a missing server is a broken setup and the test fails.
func Binary(t testing.TB) string {
	t.Helper()
	return toolbin.Require(t, BinaryName, "RAFTINGEST_VERSITYGW", "bin/tools/versitygw")
}

// Find is Binary without a test: the path of versitygw, or an error saying where it was looked for.
func Find() (string, error) { return toolbin.Find(BinaryName, "RAFTINGEST_VERSITYGW") }

// Options are Start's settings; the zero value is a server on a free port of 127.0.0.1 with
// random keys and a bucket named "blocks" in a directory removed when the test ends.
type Options struct {
	// Listen is the host:port to listen on; empty: 127.0.0.1 and a free port. Tests listen on
	// loopback only; the fault tests listen on their private bridge, inside their own network
	// namespace (faulttest/netns).
	Listen string
	// Dir is the server's root directory (bucket B is <Dir>/B); empty: a new t.TempDir().
	Dir string
	// Bucket is the bucket made at start; empty: "blocks". NoBucket makes none.
	Bucket   string
	NoBucket bool
	// AccessKey and SecretKey are the root user's keys; empty: random ones.
	AccessKey, SecretKey string
	// Log, when set, receives the server's output; else it goes to <Dir>.log beside Dir (shown
	// by the test's log when it fails).
	Log string
}

// Server is one running versitygw process.
type Server struct {
	t testing.TB
	// Endpoint is host:port, without a scheme (plain HTTP), as -blocks-storage.s3.endpoint takes it.
	Endpoint string
	// Dir is the root directory: bucket B's objects are files under <Dir>/B.
	Dir       string
	Bucket    string
	AccessKey string
	SecretKey string
	bin       string
	log       string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

// Start starts versitygw (Binary) with opts, waits until it answers S3 requests, makes the bucket
// and returns the server; it is killed and its directory removed when the test ends.
func Start(t testing.TB, opts Options) *Server {
	t.Helper()
	bin := Binary(t)
	if opts.Listen == "" {
		// proccluster's ports: never one it handed to a node of this test process.
		opts.Listen = net.JoinHostPort("127.0.0.1", strconv.Itoa(pc.FreePorts(t, 1)[0]))
	}
	s, err := start(bin, opts, t.TempDir)
	if err != nil {
		t.Fatal(err)
	}
	s.t = t
	t.Cleanup(func() {
		s.Kill()
		if t.Failed() {
			if b, err := os.ReadFile(s.log); err == nil && len(b) > 0 {
				t.Logf("---- log of %s ----\n%s", BinaryName, tail(string(b), 8000))
			}
		}
	})
	return s
}

// StartProcess is Start outside a test (make run, the fault tests' driver): bin is the path of
// versitygw (Find); opts.Dir and opts.Listen must be set. The caller stops it with Kill.
func StartProcess(bin string, opts Options) (*Server, error) {
	if opts.Dir == "" || opts.Listen == "" {
		return nil, errors.New("s3server: Options.Dir and Options.Listen must be set")
	}
	return start(bin, opts, nil)
}

func start(bin string, opts Options, tempDir func() string) (*Server, error) {
	if opts.Dir == "" {
		opts.Dir = tempDir()
	}
	if err := os.MkdirAll(opts.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("s3server: %w", err)
	}
	if opts.Bucket == "" {
		opts.Bucket = "blocks"
	}
	if opts.AccessKey == "" {
		opts.AccessKey = "AK" + strings.ToUpper(randomHex(9))
	}
	if opts.SecretKey == "" {
		opts.SecretKey = randomHex(20)
	}
	if opts.Log == "" {
		opts.Log = filepath.Clean(opts.Dir) + ".log"
	}
	s := &Server{Endpoint: opts.Listen, Dir: opts.Dir, Bucket: opts.Bucket, AccessKey: opts.AccessKey,
		SecretKey: opts.SecretKey, bin: bin, log: opts.Log}
	if err := s.Restart(); err != nil {
		return nil, err
	}
	if !opts.NoBucket {
		if err := s.CreateBucket(opts.Bucket); err != nil {
			s.Kill()
			return nil, err
		}
	}
	return s, nil
}

// Restart starts the server again (after Kill) on the same address, directory and keys: what it
// stored is still there. It waits until the server answers.
func (s *Server) Restart() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.done != nil {
		select {
		case <-s.done:
		default:
			return fmt.Errorf("s3server %s: already running", s.Endpoint)
		}
	}
	logf, err := os.OpenFile(s.log, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return fmt.Errorf("s3server: %w", err)
	}
	// The keys go through the environment (versitygw reads ROOT_ACCESS_KEY_ID and
	// ROOT_SECRET_ACCESS_KEY), not the command line, so process listings do not show them.
	cmd := exec.Command(s.bin, "--port", s.Endpoint, "--quiet", "posix", s.Dir)
	cmd.Env = append(os.Environ(), "ROOT_ACCESS_KEY_ID="+s.AccessKey, "ROOT_SECRET_ACCESS_KEY="+s.SecretKey)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("s3server: start %s: %w", s.bin, err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		logf.Close()
		close(done)
	}()
	s.cmd, s.done = cmd, done
	// Ready when it answers HTTP at all (an anonymous request is refused with 403, which is an answer).
	deadline := time.Now().Add(20 * time.Second)
	cl := &http.Client{Timeout: time.Second}
	for {
		resp, err := cl.Get("http://" + s.Endpoint + "/")
		if err == nil {
			resp.Body.Close()
			return nil
		}
		select {
		case <-done:
			b, _ := os.ReadFile(s.log)
			return fmt.Errorf("s3server: %s exited at start: %s", BinaryName, tail(string(b), 2000))
		default:
		}
		if time.Now().After(deadline) {
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-done
			return fmt.Errorf("s3server: %s not answering on %s after 20s: %v", BinaryName, s.Endpoint, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Kill stops the server at once (SIGKILL to its process group) and waits for it; its directory
// stays, so Restart brings the same objects back.
func (s *Server) Kill() {
	s.mu.Lock()
	cmd, done := s.cmd, s.done
	s.mu.Unlock()
	if cmd == nil || cmd.Process == nil {
		return
	}
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGCONT) // a paused server must not stay stopped
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	<-done
}

// Pause stops the server's process (SIGSTOP): connections are accepted by the kernel and hang
// until Resume, as with a server that stopped answering.
//
// SIGSTOP is delivered asynchronously: Pause returns once /proc says the process is stopped, so
// that nothing it answers afterwards was answered before the pause.
func (s *Server) Pause() {
	s.signal(syscall.SIGSTOP)
	s.mu.Lock()
	cmd := s.cmd
	s.mu.Unlock()
	if cmd == nil || cmd.Process == nil {
		return
	}
	tasks := fmt.Sprintf("/proc/%d/task", cmd.Process.Pid)
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		if allStopped(tasks) {
			return
		}
	}
}

// allStopped reports whether every thread under /proc/PID/task is stopped (or the process is gone).
func allStopped(tasks string) bool {
	ents, err := os.ReadDir(tasks)
	if err != nil {
		return true // gone
	}
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(tasks, e.Name(), "stat"))
		if err != nil {
			continue // the thread exited
		}
		// The state follows the command name in parentheses: "TID (comm) S ...".
		i := bytes.LastIndexByte(b, ')')
		if i < 0 || i+2 >= len(b) || (b[i+2] != 'T' && b[i+2] != 't') {
			return false
		}
	}
	return true
}

// Resume continues a paused server (SIGCONT).
func (s *Server) Resume() { s.signal(syscall.SIGCONT) }

func (s *Server) signal(sig syscall.Signal) {
	s.mu.Lock()
	cmd := s.cmd
	s.mu.Unlock()
	if cmd != nil && cmd.Process != nil {
		_ = syscall.Kill(-cmd.Process.Pid, sig)
	}
}

// Client is an S3 client of the server with its root keys.
func (s *Server) Client() (*minio.Client, error) {
	return minio.New(s.Endpoint, &minio.Options{
		Creds: credentials.NewStaticV4(s.AccessKey, s.SecretKey, ""), Secure: false, Region: Region,
	})
}

// CreateBucket makes bucket name through the S3 API (CreateBucket).
func (s *Server) CreateBucket(name string) error {
	cl, err := s.Client()
	if err != nil {
		return fmt.Errorf("s3server: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := cl.MakeBucket(ctx, name, minio.MakeBucketOptions{Region: Region}); err != nil {
		return fmt.Errorf("s3server: create bucket %q at %s: %w", name, s.Endpoint, err)
	}
	return nil
}

// BucketDir is the directory holding the objects of bucket (Bucket when empty): object K is the
// file <BucketDir>/K.
func (s *Server) BucketDir(bucket string) string {
	if bucket == "" {
		bucket = s.Bucket
	}
	return filepath.Join(s.Dir, bucket)
}

// Flags are the ingester's flags for this server's bucket: -blocks-storage.backend=s3, the
// endpoint (plain HTTP), the bucket, the region and the keys.
func (s *Server) Flags() []string {
	return []string{"-blocks-storage.backend=s3", "-blocks-storage.s3.endpoint=" + s.Endpoint,
		"-blocks-storage.s3.bucket-name=" + s.Bucket, "-blocks-storage.s3.region=" + Region,
		"-blocks-storage.s3.insecure", "-blocks-storage.s3.access-key-id=" + s.AccessKey,
		"-blocks-storage.s3.secret-access-key=" + s.SecretKey}
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func tail(s string, n int) string {
	if len(s) > n {
		return "...\n" + s[len(s)-n:]
	}
	return s
}
