package ingester

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/raftingest/raftingest/internal/certgen"
)

// testPKI is a CA with a server certificate for 127.0.0.1 and a client certificate, in files.
type testPKI struct {
	ca                    *certgen.CA
	dir                   string
	caPath                string
	serverCert, serverKey string
	clientCert, clientKey string
}

func newTestPKI(t *testing.T) *testPKI {
	t.Helper()
	ca, err := certgen.NewCA("test-ca", 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	p := &testPKI{ca: ca, dir: t.TempDir()}
	p.caPath = filepath.Join(p.dir, "ca.pem")
	if err := os.WriteFile(p.caPath, ca.CertPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	p.serverCert, p.serverKey = p.issue(t, "server", func() ([]byte, []byte, error) {
		return ca.IssueServer("server", []string{"127.0.0.1"}, time.Hour)
	})
	p.clientCert, p.clientKey = p.issue(t, "client", func() ([]byte, []byte, error) { return ca.IssueOperator("client", time.Hour) })
	return p
}

func (p *testPKI) issue(t *testing.T, name string, f func() ([]byte, []byte, error)) (string, string) {
	t.Helper()
	c, k, err := f()
	if err != nil {
		t.Fatal(err)
	}
	cp, kp := filepath.Join(p.dir, name+".pem"), filepath.Join(p.dir, name+"-key.pem")
	if err := certgen.WriteFiles(cp, kp, c, k, true); err != nil {
		t.Fatal(err)
	}
	return cp, kp
}

// TestConfig_ValidateHTTPServer: every bad combination of the admin address and the HTTPS flags is
// refused with the flag named; the good ones pass.
func TestConfig_ValidateHTTPServer(t *testing.T) {
	p := newTestPKI(t)
	for _, tc := range []struct {
		name string
		args []string
		want string // "" for valid; else a part of the error
	}{
		{"defaults", nil, ""},
		{"no admin server", []string{"-admin.http-addr="}, ""},
		{"admin address without a port", []string{"-admin.http-addr=127.0.0.1"}, "-admin.http-addr"},
		{"admin address equal to -http.addr", []string{"-admin.http-addr=127.0.0.1:8080"}, "-http.addr and -admin.http-addr"},
		{"admin address equal to -grpc.addr", []string{"-admin.http-addr=127.0.0.1:9095"}, "-grpc.addr and -admin.http-addr"},
		{"https without client certificates", []string{"-server.http-tls-cert-path=" + p.serverCert, "-server.http-tls-key-path=" + p.serverKey}, ""},
		{"mutual https", []string{"-server.http-tls-cert-path=" + p.serverCert, "-server.http-tls-key-path=" + p.serverKey,
			"-server.http-tls-ca-path=" + p.caPath, "-server.http-tls-client-auth=RequireAndVerifyClientCert"}, ""},
		{"any client certificate, no CA", []string{"-server.http-tls-cert-path=" + p.serverCert, "-server.http-tls-key-path=" + p.serverKey,
			"-server.http-tls-client-auth=RequireAnyClientCert"}, ""},
		{"certificate without key", []string{"-server.http-tls-cert-path=" + p.serverCert}, "-server.http-tls-cert-path and -server.http-tls-key-path must be set together"},
		{"key without certificate", []string{"-server.http-tls-key-path=" + p.serverKey}, "must be set together"},
		{"unknown client auth", []string{"-server.http-tls-cert-path=" + p.serverCert, "-server.http-tls-key-path=" + p.serverKey,
			"-server.http-tls-client-auth=require"}, "-server.http-tls-client-auth \"require\""},
		{"verifying without a CA", []string{"-server.http-tls-cert-path=" + p.serverCert, "-server.http-tls-key-path=" + p.serverKey,
			"-server.http-tls-client-auth=VerifyClientCertIfGiven"}, "set -server.http-tls-ca-path"},
		{"a CA that verifies nothing (refused as Mimir refuses it)", []string{"-server.http-tls-cert-path=" + p.serverCert, "-server.http-tls-key-path=" + p.serverKey,
			"-server.http-tls-ca-path=" + p.caPath}, "NoClientCert"},
		{"client auth without https", []string{"-server.http-tls-client-auth=RequireAndVerifyClientCert", "-server.http-tls-ca-path=" + p.caPath}, "need -server.http-tls-cert-path"},
		{"a missing file", []string{"-server.http-tls-cert-path=" + p.serverCert, "-server.http-tls-key-path=" + filepath.Join(p.dir, "nope")}, "-server.http-tls-key-path"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var cfg Config
			fs := flag.NewFlagSet("ingester", flag.ContinueOnError)
			cfg.RegisterFlags(fs)
			if err := fs.Parse(append([]string{"-node.id=a", "-data.dir=" + t.TempDir()}, tc.args...)); err != nil {
				t.Fatal(err)
			}
			err := cfg.validateHTTPServer()
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("err = %v, want one containing %q", err, tc.want)
			}
		})
	}
}

// serveTLSOnce serves a handler answering the client certificate's CN with cfg on a loopback
// listener, as the Server does, until the test ends.
func serveTLSOnce(t *testing.T, c httpServerConfig) string {
	t.Helper()
	tlsCfg, err := httpTLSConfig(c)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := newHTTPServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if len(r.TLS.PeerCertificates) > 0 {
			fmt.Fprint(w, r.TLS.PeerCertificates[0].Subject.CommonName)
		}
	}), tlsCfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	go func() { _ = serveHTTP(srv, ln) }()
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

func tlsClient(t *testing.T, caPath, certPath, keyPath string) *http.Client {
	t.Helper()
	caPEM, err := os.ReadFile(caPath)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	cfg := &tls.Config{RootCAs: pool}
	if certPath != "" {
		cert, err := tls.LoadX509KeyPair(certPath, keyPath)
		if err != nil {
			t.Fatal(err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: cfg}}
}

// TestHTTPTLS_ClientAuthModes: the modes behave as Go's (and so Mimir's) do: verifying modes refuse
// a client without a certificate or with one from another CA; NoClientCert asks for none.
func TestHTTPTLS_ClientAuthModes(t *testing.T) {
	p := newTestPKI(t)
	// Another CA with the same name, as an attacker would name it: a Go client offers its
	// certificate to a server that asks for that CA's name, so the server's verification is tested.
	other := newTestPKI(t)
	for _, tc := range []struct {
		mode, ca                  string
		noCert, otherCA, withCert string // "ok" or "refused"; for withCert "ok" means the CN comes through
	}{
		{mode: "", noCert: "ok", otherCA: "ok", withCert: "ok-no-cn"},
		{mode: "RequireAndVerifyClientCert", ca: p.caPath, noCert: "refused", otherCA: "refused", withCert: "ok"},
		{mode: "VerifyClientCertIfGiven", ca: p.caPath, noCert: "ok", otherCA: "refused", withCert: "ok"},
		{mode: "RequireAnyClientCert", noCert: "refused", otherCA: "ok", withCert: "ok"},
	} {
		t.Run("mode="+tc.mode, func(t *testing.T) {
			addr := serveTLSOnce(t, httpServerConfig{TLSCertPath: p.serverCert, TLSKeyPath: p.serverKey, TLSCAPath: tc.ca, TLSClientAuth: tc.mode})
			get := func(cl *http.Client) (string, error) {
				resp, err := cl.Get("https://" + addr + "/")
				if err != nil {
					return "", err
				}
				defer resp.Body.Close()
				b, _ := io.ReadAll(resp.Body)
				return string(b), nil
			}
			check := func(what, want string, cl *http.Client, cn string) {
				got, err := get(cl)
				switch {
				case want == "refused" && err == nil:
					t.Errorf("%s: accepted, want the handshake refused", what)
				case want != "refused" && err != nil:
					t.Errorf("%s: %v", what, err)
				case want == "ok" && cn != "" && got != cn:
					t.Errorf("%s: the server saw CN %q, want %q", what, got, cn)
				}
			}
			check("no client certificate", tc.noCert, tlsClient(t, p.caPath, "", ""), "")
			check("a certificate from another CA", tc.otherCA, tlsClient(t, p.caPath, other.clientCert, other.clientKey), "")
			check("a certificate from the CA", tc.withCert, tlsClient(t, p.caPath, p.clientCert, p.clientKey), "client")
		})
	}
}

// TestHTTPTLS_CertificateRotation: a new certificate written over the old files is served without
// a restart.
func TestHTTPTLS_CertificateRotation(t *testing.T) {
	p := newTestPKI(t)
	addr := serveTLSOnce(t, httpServerConfig{TLSCertPath: p.serverCert, TLSKeyPath: p.serverKey})
	serial := func() (string, error) {
		conn, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true}) //nolint:gosec // reads the served certificate only
		if err != nil {
			return "", err
		}
		defer conn.Close()
		return conn.ConnectionState().PeerCertificates[0].SerialNumber.String(), nil
	}
	first, err := serial()
	if err != nil {
		t.Fatal(err)
	}
	c, k, err := p.ca.IssueServer("server", []string{"127.0.0.1"}, 2*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := certgen.WriteFiles(p.serverCert, p.serverKey, c, k, true); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		got, err := serial()
		if err != nil {
			t.Fatal(err)
		}
		if got != first {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal(errors.New("the rotated certificate is not served after 10s"))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestServer_WarnsAboutPlainHTTPOffLoopback: a listener reachable from other hosts without TLS is
// logged as a warning naming it; loopback listeners and HTTPS are not.
func TestServer_WarnsAboutPlainHTTPOffLoopback(t *testing.T) {
	for _, tc := range []struct {
		name, http, admin string
		tls               bool
		want              []string // addresses warned about
	}{
		{"loopback", "127.0.0.1:8080", "127.0.0.1:9094", false, nil},
		{"localhost", "localhost:8080", "[::1]:9094", false, nil},
		{"every interface", ":8080", "127.0.0.1:9094", false, []string{":8080"}},
		{"a routable address, admin too", "10.0.0.1:8080", "0.0.0.0:9094", false, []string{"10.0.0.1:8080", "0.0.0.0:9094"}},
		{"no admin server", "0.0.0.0:8080", "", false, []string{"0.0.0.0:8080"}},
		{"https", "0.0.0.0:8080", "0.0.0.0:9094", true, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var buf strings.Builder
			s := &Server{log: slog.New(slog.NewTextHandler(&buf, nil))}
			s.cfg.HTTPAddr, s.cfg.HTTPServer.AdminAddr = tc.http, tc.admin
			if tc.tls {
				s.cfg.HTTPServer.TLSCertPath, s.cfg.HTTPServer.TLSKeyPath = "c", "k"
			}
			s.warnPlainHTTP()
			lines := strings.Count(buf.String(), "level=WARN")
			if lines != len(tc.want) {
				t.Fatalf("%d warnings, want %d:\n%s", lines, len(tc.want), buf.String())
			}
			for _, a := range tc.want {
				if !strings.Contains(buf.String(), a) {
					t.Errorf("no warning names %s:\n%s", a, buf.String())
				}
			}
		})
	}
}
