package certgen

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func newTestCA(t *testing.T) *CA {
	t.Helper()
	ca, err := NewCA("test CA", DefaultCALifetime)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func parseCert(t *testing.T, certPEM []byte) *x509.Certificate {
	t.Helper()
	block, rest := pem.Decode(certPEM)
	if block == nil || block.Type != "CERTIFICATE" || len(rest) != 0 {
		t.Fatalf("not one PEM certificate:\n%s", certPEM)
	}
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func pool(ca *CA) *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.Cert)
	return p
}

func TestNewCA_SelfSignedEndEntityOnly(t *testing.T) {
	before := time.Now()
	ca := newTestCA(t)
	after := time.Now()
	c := parseCert(t, ca.CertPEM)
	if !c.IsCA || !c.BasicConstraintsValid || c.MaxPathLen != 0 || !c.MaxPathLenZero {
		t.Errorf("IsCA %v, basic constraints %v, MaxPathLen %d/%v: want a CA that signs end entities only",
			c.IsCA, c.BasicConstraintsValid, c.MaxPathLen, c.MaxPathLenZero)
	}
	if c.KeyUsage != x509.KeyUsageCertSign|x509.KeyUsageCRLSign {
		t.Errorf("key usage %b", c.KeyUsage)
	}
	if c.Subject.CommonName != "test CA" || c.Issuer.CommonName != "test CA" {
		t.Errorf("subject %q issuer %q", c.Subject, c.Issuer)
	}
	if err := c.CheckSignatureFrom(c); err != nil {
		t.Errorf("not self-signed: %v", err)
	}
	if k, ok := c.PublicKey.(*ecdsa.PublicKey); !ok || k.Curve != elliptic.P256() {
		t.Errorf("public key %T, want ECDSA P-256", c.PublicKey)
	}
	checkValidity(t, c, before, after, DefaultCALifetime)
	if c.SerialNumber.Sign() <= 0 || c.SerialNumber.BitLen() > 129 {
		t.Errorf("serial %v", c.SerialNumber)
	}
	if other := newTestCA(t); other.Cert.SerialNumber.Cmp(c.SerialNumber) == 0 {
		t.Errorf("two CAs share serial %v", c.SerialNumber)
	}
	if block, _ := pem.Decode(ca.KeyPEM); block == nil || block.Type != "PRIVATE KEY" {
		t.Errorf("key PEM is not PKCS#8:\n%s", ca.KeyPEM)
	}
}

// checkValidity: NotBefore is ClockSkew before the call, NotAfter lifetime after it.
func checkValidity(t *testing.T, c *x509.Certificate, before, after time.Time, lifetime time.Duration) {
	t.Helper()
	// Certificate times have a resolution of one second.
	lo, hi := before.Truncate(time.Second), after.Add(time.Second)
	if nb := c.NotBefore; nb.Before(lo.Add(-ClockSkew)) || nb.After(hi.Add(-ClockSkew)) {
		t.Errorf("NotBefore %s, want %s before %s..%s", nb, ClockSkew, before, after)
	}
	if na := c.NotAfter; na.Before(lo.Add(lifetime)) || na.After(hi.Add(lifetime)) {
		t.Errorf("NotAfter %s, want %s after %s..%s", na, lifetime, before, after)
	}
}

func TestIssue_UsagesVerifyAgainstTheCA(t *testing.T) {
	ca := newTestCA(t)
	other := newTestCA(t)
	type issueFunc func() ([]byte, []byte, error)
	for _, tc := range []struct {
		name      string
		why       string
		issue     issueFunc
		cn        string
		usages    []x509.ExtKeyUsage
		lifetime  time.Duration
		verifies  []x509.ExtKeyUsage
		refusedAs []x509.ExtKeyUsage
	}{
		{
			name: "node", why: "a node serves (gRPC, Raft) and dials (to its peers) with one certificate",
			issue: func() ([]byte, []byte, error) {
				return ca.IssueNode("ingester-1", []string{"localhost"}, DefaultNodeLifetime)
			},
			cn: "ingester-1", usages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
			lifetime: DefaultNodeLifetime,
			verifies: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		},
		{
			name: "operator", why: "an operator certificate must never pass for a server (a member)",
			issue: func() ([]byte, []byte, error) { return ca.IssueOperator("alice", 24*time.Hour) },
			cn:    "alice", usages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, lifetime: 24 * time.Hour,
			verifies:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
			refusedAs: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		},
		{
			name: "server", why: "an HTTPS listener's certificate is no client identity",
			issue: func() ([]byte, []byte, error) {
				return ca.IssueServer("www", []string{"example.test"}, DefaultServerLifetime)
			},
			cn: "www", usages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, lifetime: DefaultServerLifetime,
			verifies:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
			refusedAs: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Log(tc.why)
			before := time.Now()
			certPEM, keyPEM, err := tc.issue()
			after := time.Now()
			if err != nil {
				t.Fatal(err)
			}
			c := parseCert(t, certPEM)
			if c.Subject.CommonName != tc.cn || c.Issuer.CommonName != "test CA" {
				t.Errorf("subject %q issuer %q", c.Subject, c.Issuer)
			}
			if c.IsCA {
				t.Error("an end-entity certificate is a CA")
			}
			if c.KeyUsage != x509.KeyUsageDigitalSignature {
				t.Errorf("key usage %b, want digitalSignature only", c.KeyUsage)
			}
			if !slices.Equal(c.ExtKeyUsage, tc.usages) {
				t.Errorf("extended key usages %v, want %v", c.ExtKeyUsage, tc.usages)
			}
			if k, ok := c.PublicKey.(*ecdsa.PublicKey); !ok || k.Curve != elliptic.P256() {
				t.Errorf("public key %T, want ECDSA P-256", c.PublicKey)
			}
			checkValidity(t, c, before, after, tc.lifetime)
			for _, u := range tc.verifies {
				if _, err := c.Verify(x509.VerifyOptions{Roots: pool(ca), KeyUsages: []x509.ExtKeyUsage{u}}); err != nil {
					t.Errorf("does not verify for %v: %v", u, err)
				}
				if _, err := c.Verify(x509.VerifyOptions{Roots: pool(other), KeyUsages: []x509.ExtKeyUsage{u}}); err == nil {
					t.Errorf("verifies against another CA")
				}
			}
			for _, u := range tc.refusedAs {
				var inv x509.CertificateInvalidError
				if _, err := c.Verify(x509.VerifyOptions{Roots: pool(ca), KeyUsages: []x509.ExtKeyUsage{u}}); !errors.As(err, &inv) || inv.Reason != x509.IncompatibleUsage {
					t.Errorf("verified for %v (err %v), want IncompatibleUsage", u, err)
				}
			}
			if _, err := tls.X509KeyPair(certPEM, keyPEM); err != nil {
				t.Errorf("certificate and key do not pair: %v", err)
			}
			if block, _ := pem.Decode(keyPEM); block == nil || block.Type != "PRIVATE KEY" {
				t.Errorf("key PEM is not PKCS#8:\n%s", keyPEM)
			}
		})
	}
}

func TestIssueNode_SubjectAlternativeNames(t *testing.T) {
	ca := newTestCA(t)
	for _, tc := range []struct {
		name  string
		hosts []string
		dns   []string
		ips   []string
	}{
		{"none: hosts are optional, identity is the CN", nil, nil, nil},
		{"loopback defaults", []string{"localhost", "127.0.0.1", "::1"}, []string{"localhost"}, []string{"127.0.0.1", "::1"}},
		{"names and addresses", []string{"ingester-1.example.com", "10.0.0.7", "*.ring.local", "fe80::1"},
			[]string{"ingester-1.example.com", "*.ring.local"}, []string{"10.0.0.7", "fe80::1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			certPEM, _, err := ca.IssueNode("n1", tc.hosts, time.Hour)
			if err != nil {
				t.Fatal(err)
			}
			c := parseCert(t, certPEM)
			if !slices.Equal(c.DNSNames, tc.dns) {
				t.Errorf("DNS names %q, want %q", c.DNSNames, tc.dns)
			}
			var ips []string
			for _, ip := range c.IPAddresses {
				ips = append(ips, ip.String())
			}
			if !slices.Equal(ips, tc.ips) {
				t.Errorf("IP addresses %q, want %q", ips, tc.ips)
			}
			for _, h := range tc.hosts {
				if strings.HasPrefix(h, "*.") {
					h = "x" + h[1:]
				}
				if err := c.VerifyHostname(h); err != nil {
					t.Errorf("host %s: %v", h, err)
				}
			}
		})
	}
}

func TestIssue_RefusesBadRequests(t *testing.T) {
	ca := newTestCA(t)
	short, err := NewCA("short", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		err  error
	}{
		{"empty id", func() error { _, _, err := ca.IssueNode("", nil, time.Hour); return err }()},
		{"empty operator", func() error { _, _, err := ca.IssueOperator(" ", time.Hour); return err }()},
		{"zero lifetime", func() error { _, _, err := ca.IssueNode("a", nil, 0); return err }()},
		{"negative lifetime", func() error { _, _, err := ca.IssueOperator("op", -time.Hour); return err }()},
		{"host with a space", func() error { _, _, err := ca.IssueNode("a", []string{"my host"}, time.Hour); return err }()},
		{"empty host", func() error { _, _, err := ca.IssueNode("a", []string{""}, time.Hour); return err }()},
		{"host:port is not a host", func() error { _, _, err := ca.IssueNode("a", []string{"127.0.0.1:9095"}, time.Hour); return err }()},
		// It would stop verifying when the CA expires: a silent shortening of what was asked.
		{"outlives the CA", func() error { _, _, err := short.IssueNode("a", nil, 2*time.Hour); return err }()},
		{"CA without a name", func() error { _, err := NewCA("", time.Hour); return err }()},
		{"CA without a lifetime", func() error { _, err := NewCA("x", 0); return err }()},
	} {
		if !errors.Is(tc.err, ErrInvalid) {
			t.Errorf("%s: err %v, want ErrInvalid", tc.name, tc.err)
		}
	}
}

func TestLoadCA_RoundTripAndErrorsNameTheFile(t *testing.T) {
	dir := t.TempDir()
	ca := newTestCA(t)
	certPath, keyPath := filepath.Join(dir, "ca.crt"), filepath.Join(dir, "ca.key")
	if err := WriteFiles(certPath, keyPath, ca.CertPEM, ca.KeyPEM, false); err != nil {
		t.Fatal(err)
	}
	loaded, err := LoadCA(certPath, keyPath)
	if err != nil {
		t.Fatal(err)
	}
	if !loaded.Cert.Equal(ca.Cert) {
		t.Error("loaded another certificate")
	}
	// What the loaded CA signs verifies against the original.
	certPEM, _, err := loaded.IssueNode("n1", nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := parseCert(t, certPEM).Verify(x509.VerifyOptions{Roots: pool(ca), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("issued by the loaded CA, does not verify: %v", err)
	}

	// A SEC 1 key, as openssl ecparam writes it, with its EC PARAMETERS block first.
	sec1, err := x509.MarshalECPrivateKey(ca.Key.(*ecdsa.PrivateKey))
	if err != nil {
		t.Fatal(err)
	}
	sec1Path := filepath.Join(dir, "sec1.key")
	sec1PEM := append(pem.EncodeToMemory(&pem.Block{Type: "EC PARAMETERS", Bytes: []byte{6, 8, 42, 134, 72, 206, 61, 3, 1, 7}}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: sec1})...)
	writeRaw(t, sec1Path, sec1PEM)
	if _, err := LoadCA(certPath, sec1Path); err != nil {
		t.Errorf("SEC 1 key: %v", err)
	}

	other := newTestCA(t)
	node, nodeKey, err := ca.IssueNode("n1", nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, cert, key string
		want            error
		mentions        string
	}{
		{"missing certificate", filepath.Join(dir, "nope.crt"), keyPath, os.ErrNotExist, "nope.crt"},
		{"missing key", certPath, filepath.Join(dir, "nope.key"), os.ErrNotExist, "nope.key"},
		{"key of another CA", certPath, writeRaw(t, filepath.Join(dir, "other.key"), other.KeyPEM), ErrKeyMismatch, "other.key"},
		{"not a CA", writeRaw(t, filepath.Join(dir, "n1.crt"), node), writeRaw(t, filepath.Join(dir, "n1.key"), nodeKey), ErrNotCA, "n1.crt"},
		{"key file holds a certificate", certPath, certPath, nil, "ca.crt"},
		{"certificate file holds a key", keyPath, keyPath, nil, "ca.key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := LoadCA(tc.cert, tc.key)
			if err == nil {
				t.Fatal("loaded")
			}
			if tc.want != nil && !errors.Is(err, tc.want) {
				t.Errorf("err %v, want %v", err, tc.want)
			}
			if !strings.Contains(err.Error(), tc.mentions) {
				t.Errorf("err %q does not name %s", err, tc.mentions)
			}
		})
	}
}

func writeRaw(t *testing.T, path string, b []byte) string {
	t.Helper()
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestWriteFiles_ModesAndRefusalToOverwrite(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "certs", "sub") // parents are created
	certPath, keyPath := filepath.Join(dir, "a.crt"), filepath.Join(dir, "a.key")
	if err := WriteFiles(certPath, keyPath, []byte("cert 1"), []byte("key 1"), false); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		path string
		mode os.FileMode
		why  string
	}{
		{keyPath, 0o600, "only the owner may read a private key"},
		{certPath, 0o644, "a certificate is public"},
		{dir, 0o700 | os.ModeDir, "a directory made for a key lists nothing to others"},
	} {
		fi, err := os.Stat(tc.path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode() != tc.mode {
			t.Errorf("%s: mode %v, want %v (%s)", tc.path, fi.Mode(), tc.mode, tc.why)
		}
	}

	for _, tc := range []struct {
		name       string
		cert, key  string
		wantExists string
	}{
		{"both exist", certPath, keyPath, certPath},
		{"only the key exists", filepath.Join(dir, "b.crt"), keyPath, keyPath},
		{"only the certificate exists", certPath, filepath.Join(dir, "b.key"), certPath},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := WriteFiles(tc.cert, tc.key, []byte("cert 2"), []byte("key 2"), false)
			if !errors.Is(err, ErrExists) || !strings.Contains(err.Error(), tc.wantExists) {
				t.Errorf("err %v, want ErrExists naming %s", err, tc.wantExists)
			}
			for _, p := range []string{filepath.Join(dir, "b.crt"), filepath.Join(dir, "b.key")} {
				if _, err := os.Stat(p); err == nil {
					t.Errorf("a refused write left %s behind", p)
				}
			}
		})
	}
	if b, _ := os.ReadFile(certPath); string(b) != "cert 1" {
		t.Errorf("a refused write changed the certificate: %q", b)
	}

	if err := WriteFiles(certPath, keyPath, []byte("cert 2"), []byte("key 2"), true); err != nil {
		t.Fatal(err)
	}
	for p, want := range map[string]string{certPath: "cert 2", keyPath: "key 2"} {
		if b, _ := os.ReadFile(p); string(b) != want {
			t.Errorf("%s: %q after overwrite, want %q", p, b, want)
		}
	}
	if fi, _ := os.Stat(keyPath); fi.Mode() != 0o600 {
		t.Errorf("overwritten key: mode %v", fi.Mode())
	}
	if fi, _ := os.Stat(certPath); fi.Mode() != 0o644 {
		t.Errorf("overwritten certificate: mode %v", fi.Mode())
	}
	if left, _ := filepath.Glob(filepath.Join(dir, ".certgen-*")); len(left) != 0 {
		t.Errorf("temporary files left: %v", left)
	}
	if err := WriteFiles(certPath, certPath, nil, nil, true); !errors.Is(err, ErrInvalid) {
		t.Errorf("same path for certificate and key: %v", err)
	}
}

// A node's files, as WriteFiles leaves them, make a working mutual TLS connection with the CA:
// what auth does with them, with nothing but crypto/tls.
func TestNodeCertificate_MutualTLSHandshake(t *testing.T) {
	ca := newTestCA(t)
	dir := t.TempDir()
	for _, id := range []string{"n1", "n2"} {
		c, k, err := ca.IssueNode(id, []string{"127.0.0.1"}, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		if err := WriteFiles(filepath.Join(dir, id+".crt"), filepath.Join(dir, id+".key"), c, k, false); err != nil {
			t.Fatal(err)
		}
	}
	load := func(id string) tls.Certificate {
		c, err := tls.LoadX509KeyPair(filepath.Join(dir, id+".crt"), filepath.Join(dir, id+".key"))
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	server := &tls.Config{Certificates: []tls.Certificate{load("n1")}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: pool(ca), MinVersion: tls.VersionTLS13}
	client := &tls.Config{Certificates: []tls.Certificate{load("n2")}, RootCAs: pool(ca), ServerName: "127.0.0.1", MinVersion: tls.VersionTLS13}

	lis, err := tls.Listen("tcp", "127.0.0.1:0", server)
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	got := make(chan string, 1)
	go func() {
		conn, err := lis.Accept()
		if err != nil {
			got <- err.Error()
			return
		}
		defer conn.Close()
		tc := conn.(*tls.Conn)
		if err := tc.Handshake(); err != nil {
			got <- err.Error()
			return
		}
		got <- tc.ConnectionState().PeerCertificates[0].Subject.CommonName
	}()
	conn, err := tls.Dial("tcp", lis.Addr().String(), client)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if cn := conn.ConnectionState().PeerCertificates[0].Subject.CommonName; cn != "n1" {
		t.Errorf("client saw server %q", cn)
	}
	if cn := <-got; cn != "n2" {
		t.Errorf("server saw client %q", cn)
	}
}
