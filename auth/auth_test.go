package auth

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/raftingest/raftingest/internal/certgen"
)

// pki is a CA and a directory of certificates it signed, for tests.
type pki struct {
	t   *testing.T
	dir string
	ca  *certgen.CA
}

func newPKI(t *testing.T, name string) *pki {
	t.Helper()
	ca, err := certgen.NewCA(name, 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "ca.crt"), ca.CertPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	return &pki{t: t, dir: dir, ca: ca}
}

// node issues a member certificate for id and returns a Config using it.
func (p *pki) node(id string) Config {
	p.t.Helper()
	c, k, err := p.ca.IssueNode(id, []string{"127.0.0.1"}, time.Hour)
	if err != nil {
		p.t.Fatal(err)
	}
	return p.write(id, c, k)
}

func (p *pki) operator(name string) Config {
	p.t.Helper()
	c, k, err := p.ca.IssueOperator(name, time.Hour)
	if err != nil {
		p.t.Fatal(err)
	}
	return p.write(name, c, k)
}

func (p *pki) write(name string, c, k []byte) Config {
	p.t.Helper()
	cfg := Config{CertPath: filepath.Join(p.dir, name+".crt"), KeyPath: filepath.Join(p.dir, name+".key"),
		CAPath: filepath.Join(p.dir, "ca.crt"), OperatorNames: []string{DefaultOperatorName}}
	if err := certgen.WriteFiles(cfg.CertPath, cfg.KeyPath, c, k, true); err != nil {
		p.t.Fatal(err)
	}
	return cfg
}

func TestNew_ChecksTheCertificateNamesThisNode(t *testing.T) {
	p := newPKI(t, "ca")
	if _, err := New(p.node("a"), "b", nil, nil); err == nil || !strings.Contains(err.Error(), `Common Name is "a", not this node's id "b"`) {
		t.Fatalf("a certificate for a accepted for node b: %v", err)
	}
	if _, err := New(p.operator("operator"), "operator", nil, nil); err == nil || !strings.Contains(err.Error(), "-tls.operator-names") {
		t.Fatalf("an operator name accepted as a node id: %v", err)
	}
	op := p.operator("alice")
	op.OperatorNames = []string{"operator"}
	if _, err := New(op, "alice", nil, nil); err == nil || !strings.Contains(err.Error(), "serverAuth and clientAuth") {
		t.Fatalf("a client-only certificate accepted for a node: %v", err)
	}
	if a, err := New(Config{}, "a", nil, nil); a != nil || err != nil {
		t.Fatalf("no -tls.* flags: want no authority and no error, got %v, %v", a, err)
	}
	bad := p.node("a")
	bad.KeyPath = ""
	if _, err := New(bad, "a", nil, nil); err == nil || !strings.Contains(err.Error(), "-tls.key-path must be set") {
		t.Fatalf("a certificate without its key: %v", err)
	}
}

func TestFiles_ReloadWhenChanged_KeepOldWhenBroken(t *testing.T) {
	p := newPKI(t, "ca")
	cfg := p.node("a")
	f, err := LoadFiles(cfg.CertPath, cfg.KeyPath, cfg.CAPath)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	f.now = func() time.Time { return now }
	first, _ := f.Current()

	// A new certificate for the same member: picked up at the next check, not before.
	time.Sleep(10 * time.Millisecond) // a distinct modification time
	p.node("a")
	if c, _ := f.Current(); c != first {
		t.Fatal("files re-read before the check interval passed")
	}
	now = now.Add(reloadCheckInterval)
	second, _ := f.Current()
	if second == first || second.Leaf.SerialNumber.Cmp(first.Leaf.SerialNumber) == 0 {
		t.Fatal("the rotated certificate was not loaded")
	}
	if f.Reloads() != 1 || f.Err() != nil {
		t.Fatalf("reloads %d, err %v; want 1, nil", f.Reloads(), f.Err())
	}

	// A half-written rotation (a certificate that does not parse) keeps the previous pair in use.
	if err := os.WriteFile(cfg.CertPath, []byte("-----BEGIN CERTIFICATE-----\nnot base64\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	now = now.Add(reloadCheckInterval)
	if c, _ := f.Current(); c != second {
		t.Fatal("a broken certificate file replaced the working one")
	}
	if f.Err() == nil || !strings.Contains(f.Err().Error(), cfg.CertPath) {
		t.Fatalf("the reload failure does not name the file: %v", f.Err())
	}
}

// handshake runs a TLS handshake over loopback between the two configs and returns the client's
// and the server's errors.
func handshake(t *testing.T, server, client *tls.Config) (clientErr, serverErr error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	srvErr := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			srvErr <- err
			return
		}
		defer c.Close()
		tc := tls.Server(c, server)
		_ = tc.SetDeadline(time.Now().Add(5 * time.Second))
		err = tc.Handshake()
		if err == nil {
			// TLS 1.3: the client's certificate is checked after the client's handshake returns;
			// make the client read so that it sees the server's verdict.
			_, err = tc.Write([]byte{1})
		}
		srvErr <- err
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	tc := tls.Client(c, client)
	_ = tc.SetDeadline(time.Now().Add(5 * time.Second))
	clientErr = tc.Handshake()
	if clientErr == nil {
		_, clientErr = tc.Read(make([]byte, 1))
	}
	return clientErr, <-srvErr
}

func TestTLS_WhoIsAccepted(t *testing.T) {
	p := newPKI(t, "ca")
	other := newPKI(t, "other-ca")
	mustNew := func(cfg Config, self string) *Authority {
		a, err := New(cfg, self, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	mustClient := func(cfg Config) *Authority {
		a, err := NewClient(cfg)
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	srvA := mustNew(p.node("a"), "a")
	var seen Principal
	record := func(pr Principal) error { seen = pr; return nil }

	for _, tc := range []struct {
		name   string
		server *tls.Config
		client *tls.Config
		ok     bool
		who    Principal
		errHas string
	}{
		{"a member dials a member it expects", srvA.ServerTLS(nil, record), mustNew(p.node("b"), "b").ClientTLS("a"), true, Principal{"b", Node}, ""},
		{"an operator dials a member", srvA.ServerTLS(nil, record), mustClient(p.operator("operator")).ClientTLS(""), true, Principal{"operator", Operator}, ""},
		{"the server is not the member expected", srvA.ServerTLS(nil, record), mustNew(p.node("b"), "b").ClientTLS("c"), false, Principal{}, `not of "c"`},
		{"a client of another CA", srvA.ServerTLS(nil, record), mustNew(other.node("b"), "b").ClientTLS(""), false, Principal{}, ""},
		{"a server of another CA", mustNew(other.node("a"), "a").ServerTLS(nil, record), mustNew(p.node("b"), "b").ClientTLS(""), false, Principal{}, "not signed by -tls.ca-path's CA"},
		{"a client without a certificate", srvA.ServerTLS(nil, record), &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13}, false, Principal{}, ""},
		{"the server's check refuses the caller", srvA.ServerTLS(nil, func(Principal) error { return errors.New("no") }), mustNew(p.node("b"), "b").ClientTLS(""), false, Principal{}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			seen = Principal{}
			cerr, serr := handshake(t, tc.server, tc.client)
			if tc.ok != (cerr == nil && serr == nil) {
				t.Fatalf("ok %v, client err %v, server err %v", tc.ok, cerr, serr)
			}
			if tc.ok && seen != tc.who {
				t.Fatalf("server saw %v, want %v", seen, tc.who)
			}
			if tc.errHas != "" && (cerr == nil || !strings.Contains(cerr.Error(), tc.errHas)) {
				t.Fatalf("client error %v, want it to contain %q", cerr, tc.errHas)
			}
		})
	}
}

// TestGRPC_CallerAndDeny runs a real gRPC server with the server credentials and checks what
// Caller reports and what Deny answers and counts.
func TestGRPC_CallerAndDeny(t *testing.T) {
	p := newPKI(t, "ca")
	reg := prometheus.NewRegistry()
	srvAuth, err := New(p.node("a"), "a", reg, nil)
	if err != nil {
		t.Fatal(err)
	}
	callers := make(chan Principal, 4)
	srv := grpc.NewServer(srvAuth.ServerOption(), grpc.UnaryInterceptor(
		func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			pr := srvAuth.Caller(ctx)
			callers <- pr
			if pr.Kind != Operator {
				return nil, srvAuth.Deny(pr, RightOperator, "check health")
			}
			return h(ctx, req)
		}))
	healthpb.RegisterHealthServer(srv, health.NewServer())
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Stop()

	call := func(a *Authority) error {
		cc, err := grpc.NewClient(ln.Addr().String(), a.DialOption(func(string) string { return "a" }))
		if err != nil {
			t.Fatal(err)
		}
		defer cc.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err = healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{})
		return err
	}
	op, err := NewClient(p.operator("operator"))
	if err != nil {
		t.Fatal(err)
	}
	if err := call(op); err != nil {
		t.Fatalf("operator: %v", err)
	}
	if got := <-callers; got != (Principal{"operator", Operator}) {
		t.Fatalf("caller %v, want operator", got)
	}
	b, err := New(p.node("b"), "b", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = call(b)
	if status.Code(err) != codes.PermissionDenied || !strings.Contains(status.Convert(err).Message(), `node b lacks the right "operator" to check health`) {
		t.Fatalf("member b: %v", err)
	}
	if got := <-callers; got != (Principal{"b", Node}) {
		t.Fatalf("caller %v, want node b", got)
	}
	if n := testutil.ToFloat64(srvAuth.refused.WithLabelValues(RightOperator)); n != 1 {
		t.Fatalf("refusals counted %v, want 1", n)
	}
	// A plain client never reaches the handler.
	var none *Authority
	if err := call(none); status.Code(err) != codes.Unavailable {
		t.Fatalf("plain client: %v, want Unavailable", err)
	}
	select {
	case got := <-callers:
		t.Fatalf("a plain client reached the handler as %v", got)
	default:
	}
}
