package main

import (
	"crypto/x509"
	"encoding/pem"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/raftingest/raftingest/auth"
	"github.com/raftingest/raftingest/internal/certgen"
	"github.com/raftingest/raftingest/ringpb"
)

// pki is a throwaway CA in a temporary directory, with the files ringctl and nodes read.
type pki struct {
	dir    string
	ca     *certgen.CA
	caPath string
}

func newPKI(t *testing.T) *pki {
	t.Helper()
	ca, err := certgen.NewCA("test CA", 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	p := &pki{dir: dir, ca: ca, caPath: filepath.Join(dir, "ca.crt")}
	if err := certgen.WriteFiles(p.caPath, filepath.Join(dir, "ca.key"), ca.CertPEM, ca.KeyPEM, false); err != nil {
		t.Fatal(err)
	}
	return p
}

// files writes a certificate and key made by issue as DIR/name.crt and DIR/name.key.
func (p *pki) files(t *testing.T, name string, issue func() ([]byte, []byte, error)) (certPath, keyPath string) {
	t.Helper()
	c, k, err := issue()
	if err != nil {
		t.Fatal(err)
	}
	certPath, keyPath = filepath.Join(p.dir, name+".crt"), filepath.Join(p.dir, name+".key")
	if err := certgen.WriteFiles(certPath, keyPath, c, k, true); err != nil {
		t.Fatal(err)
	}
	return certPath, keyPath
}

func (p *pki) node(t *testing.T, id string) (string, string) {
	return p.files(t, id, func() ([]byte, []byte, error) { return p.ca.IssueNode(id, []string{"127.0.0.1"}, time.Hour) })
}

func (p *pki) operator(t *testing.T, name string) (string, string) {
	return p.files(t, name, func() ([]byte, []byte, error) { return p.ca.IssueOperator(name, time.Hour) })
}

// tlsArgs are ringctl's flags for the certificate name of p.
func (p *pki) tlsArgs(t *testing.T, name string, issue func(*testing.T, string) (string, string)) []string {
	c, k := issue(t, name)
	return []string{"-tls.cert-path", c, "-tls.key-path", k, "-tls.ca-path", p.caPath}
}

// serveTLS serves f over mutual TLS as member self of p, as a node started with -tls.* does.
func serveTLS(t *testing.T, f *fakeRing, p *pki, self string) string {
	t.Helper()
	c, k := p.node(t, self)
	a, err := auth.New(auth.Config{CertPath: c, KeyPath: k, CAPath: p.caPath, OperatorNames: []string{auth.DefaultOperatorName}}, self, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	f.auth = a
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer(a.ServerOption())
	ringpb.RegisterRingServer(s, f)
	go func() { _ = s.Serve(lis) }()
	t.Cleanup(s.Stop)
	return lis.Addr().String()
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func loadCert(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	block, _ := pem.Decode([]byte(readFile(t, path)))
	if block == nil {
		t.Fatalf("%s: no PEM", path)
	}
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func mode(t *testing.T, path string) os.FileMode {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode().Perm()
}

// The three tls commands, one after the other as an operator runs them, make files that a node
// (auth.New) and ringctl (auth.NewClient) accept, and a TLS round trip works with them.
func TestTLSCommands_MakeAWorkingPKI(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "certs")

	code, out, errOut := runCLI(t, nil, "tls", "ca", "-dir", dir, "-cn", "acme ring CA")
	mustCode(t, 0, code, out, errOut)
	t.Logf("tls ca:\n%s", out)
	caCert, caKey := filepath.Join(dir, "ca.crt"), filepath.Join(dir, "ca.key")
	if !strings.Contains(out, "wrote "+caCert) || !strings.Contains(out, "wrote "+caKey) || !strings.Contains(out, "-tls.ca-path "+caCert) {
		t.Errorf("tls ca output does not name the files and the flag:\n%s", out)
	}
	if ca := loadCert(t, caCert); !ca.IsCA || ca.Subject.CommonName != "acme ring CA" {
		t.Errorf("CA: IsCA %v, CN %q", ca.IsCA, ca.Subject.CommonName)
	}
	if m := mode(t, caKey); m != 0o600 {
		t.Errorf("CA key mode %v", m)
	}
	if m := mode(t, dir); m != 0o700 {
		t.Errorf("certificate directory mode %v", m)
	}

	code, out, errOut = runCLI(t, nil, "tls", "node", "ingester-1", "-dir", dir, "-host", "ingester-1.example.com,10.0.0.1", "-host", "10.0.0.1", "-host", "10.0.0.2")
	mustCode(t, 0, code, out, errOut)
	t.Logf("tls node:\n%s", out)
	nodeCert, nodeKey := filepath.Join(dir, "ingester-1.crt"), filepath.Join(dir, "ingester-1.key")
	wantFlags := "-node.id ingester-1 -tls.cert-path " + nodeCert + " -tls.key-path " + nodeKey + " -tls.ca-path " + caCert
	if !strings.Contains(out, "\n  "+wantFlags+"\n") {
		t.Errorf("tls node output lacks the flags line %q:\n%s", wantFlags, out)
	}
	nc := loadCert(t, nodeCert)
	var ips []string
	for _, ip := range nc.IPAddresses {
		ips = append(ips, ip.String())
	}
	if nc.Subject.CommonName != "ingester-1" || !slices.Equal(nc.DNSNames, []string{"localhost", "ingester-1.example.com"}) ||
		!slices.Equal(ips, []string{"127.0.0.1", "::1", "10.0.0.1", "10.0.0.2"}) {
		t.Errorf("node certificate: CN %q, DNS %q, IPs %q", nc.Subject.CommonName, nc.DNSNames, ips)
	}
	if d := time.Until(nc.NotAfter); d < certgen.DefaultNodeLifetime-time.Hour || d > certgen.DefaultNodeLifetime {
		t.Errorf("node certificate expires in %s, want the default %s", d, certgen.DefaultNodeLifetime)
	}
	if m := mode(t, nodeKey); m != 0o600 {
		t.Errorf("node key mode %v", m)
	}

	code, out, errOut = runCLI(t, nil, "tls", "operator", "-dir", dir, "-lifetime", "30d")
	mustCode(t, 0, code, out, errOut)
	t.Logf("tls operator:\n%s", out)
	opCert, opKey := filepath.Join(dir, "operator.crt"), filepath.Join(dir, "operator.key")
	if !strings.Contains(out, "ringctl -tls.cert-path "+opCert+" -tls.key-path "+opKey+" -tls.ca-path "+caCert+" status") ||
		!strings.Contains(out, tlsCertEnv+"="+opCert) || strings.Contains(out, "-tls.operator-names") {
		t.Errorf("tls operator output:\n%s", out)
	}
	oc := loadCert(t, opCert)
	if oc.Subject.CommonName != auth.DefaultOperatorName || !slices.Equal(oc.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}) {
		t.Errorf("operator certificate: CN %q, usages %v", oc.Subject.CommonName, oc.ExtKeyUsage)
	}
	if d := time.Until(oc.NotAfter); d < 30*24*time.Hour-time.Hour || d > 30*24*time.Hour {
		t.Errorf("-lifetime 30d: expires in %s", d)
	}

	// The files work: a node with them serves, ringctl with the operator's calls it.
	a, err := auth.New(auth.Config{CertPath: nodeCert, KeyPath: nodeKey, CAPath: caCert, OperatorNames: []string{auth.DefaultOperatorName}}, "ingester-1", nil, nil)
	if err != nil {
		t.Fatalf("auth.New refuses the node's files: %v", err)
	}
	f := newFake()
	f.operatorOnly = true
	addr := serveWith(t, f, a)
	code, out, errOut = runCLI(t, nil, "-addr", addr, "-tls.cert-path", opCert, "-tls.key-path", opKey, "-tls.ca-path", caCert, "remove", "ingester-2")
	mustCode(t, 0, code, out, errOut)
	if f.callers[0] != "operator operator" {
		t.Errorf("the node saw %q", f.callers)
	}
}

// serveWith serves f with a's credentials (plain when a is nil).
func serveWith(t *testing.T, f *fakeRing, a *auth.Authority) string {
	t.Helper()
	f.auth = a
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer(a.ServerOption())
	ringpb.RegisterRingServer(s, f)
	go func() { _ = s.Serve(lis) }()
	t.Cleanup(s.Stop)
	return lis.Addr().String()
}

func TestTLSCommands_JSON(t *testing.T) {
	dir := t.TempDir()
	code, out, errOut := runCLI(t, nil, "tls", "ca", "-dir", dir, "-o", "json")
	mustCode(t, 0, code, out, errOut)
	m := decodeObject(t, out)
	caCert := filepath.Join(dir, "ca.crt")
	if !slices.Equal(keys(m), []string{"ca_path", "cert_path", "common_name", "flags", "key_path", "kind", "not_after"}) ||
		m["kind"] != "ca" || m["cert_path"] != caCert || m["key_path"] != filepath.Join(dir, "ca.key") || m["ca_path"] != caCert ||
		m["common_name"] != defaultCACN {
		t.Errorf("tls ca json: %v", m)
	}
	if na, err := time.Parse(time.RFC3339, m["not_after"].(string)); err != nil || time.Until(na) < certgen.DefaultCALifetime-time.Hour {
		t.Errorf("not_after %v (%v)", m["not_after"], err)
	}

	code, out, errOut = runCLI(t, nil, "-o", "json", "tls", "node", "n1", "-dir", dir, "-host", "n1.local")
	mustCode(t, 0, code, out, errOut)
	m = decodeObject(t, out)
	wantFlags := []any{"-node.id", "n1", "-tls.cert-path", filepath.Join(dir, "n1.crt"), "-tls.key-path", filepath.Join(dir, "n1.key"), "-tls.ca-path", caCert}
	if m["kind"] != "node" || m["common_name"] != "n1" || !slices.Equal(m["flags"].([]any), wantFlags) ||
		!slices.Equal(m["hosts"].([]any), []any{"localhost", "127.0.0.1", "::1", "n1.local"}) {
		t.Errorf("tls node json: %v", m)
	}

	code, out, errOut = runCLI(t, nil, "tls", "operator", "alice", "-dir", dir, "-o", "json")
	mustCode(t, 0, code, out, errOut)
	m = decodeObject(t, out)
	wantFlags = []any{"-tls.cert-path", filepath.Join(dir, "alice.crt"), "-tls.key-path", filepath.Join(dir, "alice.key"), "-tls.ca-path", caCert}
	if m["kind"] != "operator" || m["common_name"] != "alice" || !slices.Equal(m["flags"].([]any), wantFlags) {
		t.Errorf("tls operator json: %v", m)
	}
	if _, ok := m["hosts"]; ok {
		t.Errorf("an operator certificate has no hosts: %v", m)
	}
}

// An operator name other than the default works only where the nodes list it: say so.
func TestTLSOperator_OtherNameSaysToListIt(t *testing.T) {
	dir := t.TempDir()
	code, out, errOut := runCLI(t, nil, "tls", "ca", "-dir", dir)
	mustCode(t, 0, code, out, errOut)
	code, out, errOut = runCLI(t, nil, "tls", "operator", "alice@ops", "-dir", dir)
	mustCode(t, 0, code, out, errOut)
	if !strings.Contains(out, "-tls.operator-names operator,alice@ops") {
		t.Errorf("output does not say to list alice@ops:\n%s", out)
	}
	if cn := loadCert(t, filepath.Join(dir, "alice@ops.crt")).Subject.CommonName; cn != "alice@ops" {
		t.Errorf("CN %q", cn)
	}
}

func TestTLSCommands_RefuseToOverwriteWithoutForce(t *testing.T) {
	dir := t.TempDir()
	for _, args := range [][]string{
		{"tls", "ca", "-dir", dir},
		{"tls", "node", "n1", "-dir", dir},
		{"tls", "operator", "-dir", dir},
	} {
		t.Run(args[1], func(t *testing.T) {
			code, out, errOut := runCLI(t, nil, args...)
			mustCode(t, 0, code, out, errOut)
			written, _ := filepath.Glob(filepath.Join(dir, "*"))
			before := map[string]string{}
			for _, p := range written {
				before[p] = readFile(t, p)
			}

			code, out, errOut = runCLI(t, nil, args...)
			mustCode(t, 1, code, out, errOut)
			if !strings.Contains(errOut, "file exists") || !strings.Contains(errOut, "nothing was written: pass -force") {
				t.Errorf("stderr %q", errOut)
			}
			if args[1] == "ca" && !strings.Contains(errOut, "invalidates every certificate") {
				t.Errorf("replacing a CA is not explained: %q", errOut)
			}
			for p, b := range before {
				if readFile(t, p) != b {
					t.Errorf("a refused command changed %s", p)
				}
			}

			code, out, errOut = runCLI(t, nil, append(args, "-force")...)
			mustCode(t, 0, code, out, errOut)
			name := map[string]string{"ca": "ca", "node": "n1", "operator": "operator"}[args[1]]
			for _, ext := range []string{".crt", ".key"} {
				p := filepath.Join(dir, name+ext)
				if readFile(t, p) == before[p] {
					t.Errorf("-force did not replace %s", p)
				}
			}
			if name == "ca" {
				// Put the first CA back: the next commands are signed by it.
				for p, b := range before {
					if err := os.WriteFile(p, []byte(b), 0o600); err != nil {
						t.Fatal(err)
					}
				}
			}
		})
	}
}

func TestTLSCommands_Errors(t *testing.T) {
	dir := t.TempDir()
	empty := t.TempDir()
	if code, out, errOut := runCLI(t, nil, "tls", "ca", "-dir", dir); code != 0 {
		t.Fatalf("tls ca: %d %s %s", code, out, errOut)
	}
	short := t.TempDir()
	if code, out, errOut := runCLI(t, nil, "tls", "ca", "-dir", short, "-lifetime", "48h"); code != 0 {
		t.Fatalf("tls ca: %d %s %s", code, out, errOut)
	}
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"tls"}, 2, "ringctl: tls: missing subcommand: ca, node or operator"},
		{[]string{"tls", "bogus"}, 2, `ringctl: tls: unknown command "bogus": want ca, node or operator`},
		{[]string{"tls", "node"}, 2, "ringctl: tls node: missing ID (usage: ringctl tls node ID)"},
		{[]string{"tls", "node", "a", "b", "-dir", dir}, 2, `ringctl: tls node: unexpected argument "b" (usage: ringctl tls node ID)`},
		{[]string{"tls", "ca", "extra"}, 2, `ringctl: tls ca: unexpected argument "extra" (usage: ringctl tls ca)`},
		{[]string{"tls", "operator", "a", "b"}, 2, `ringctl: tls operator: unexpected argument "b" (usage: ringctl tls operator [NAME])`},
		{[]string{"tls", "node", "bad/id", "-dir", dir}, 2, `ringctl: tls node: ID "bad/id" is not a member id`},
		{[]string{"tls", "node", ".hidden", "-dir", dir}, 2, `ID ".hidden" is not a member id`},
		{[]string{"tls", "operator", "a,b", "-dir", dir}, 2, `ringctl: tls operator: NAME "a,b": only letters`},
		{[]string{"tls", "ca", "-bogus"}, 2, "ringctl: tls ca: flag provided but not defined: -bogus"},
		// The tls commands make no network call: the network flags are not theirs.
		{[]string{"tls", "ca", "-addr", "127.0.0.1:1"}, 2, "ringctl: tls ca: flag provided but not defined: -addr"},
		{[]string{"tls", "ca", "-lifetime", "0s"}, 2, `invalid value "0s" for flag -lifetime: must be positive`},
		{[]string{"tls", "ca", "-lifetime", "soon"}, 2, `invalid value "soon" for flag -lifetime: want a duration such as 365d or 720h`},
		{[]string{"tls", "ca", "-lifetime", "99999999d"}, 2, `longer than 100 years`},
		{[]string{"tls", "ca", "-o", "yaml"}, 2, `ringctl: tls ca: -o "yaml": want text or json`},
		{[]string{"tls", "node", "ca", "-dir", dir}, 2, "is the signing CA's file: choose another name or -dir"},
		{[]string{"tls", "node", "n1", "-dir", dir, "-host", "not a host"}, 2, `host "not a host"`},
		{[]string{"tls", "node", "n1", "-dir", short}, 2, "would expire on"},
		{[]string{"tls", "node", "n1", "-dir", empty}, 1, "make a CA with 'ringctl tls ca -dir " + empty + "', or pass -ca-cert and -ca-key"},
		{[]string{"tls", "operator", "-dir", dir, "-ca-key", filepath.Join(dir, "nope.key")}, 1, "nope.key"},
	} {
		t.Run(strings.Join(tc.args, "_"), func(t *testing.T) {
			// A garbage RINGCTL_ADDR does not matter to commands that make no network call.
			code, out, errOut := runCLI(t, map[string]string{addrEnv: "garbage"}, tc.args...)
			mustCode(t, tc.code, code, out, errOut)
			if !strings.Contains(errOut, tc.want) {
				t.Errorf("stderr %q does not contain %q", errOut, tc.want)
			}
		})
	}
	if left, _ := filepath.Glob(filepath.Join(empty, "*")); len(left) != 0 {
		t.Errorf("failed commands wrote %v", left)
	}
	for _, p := range []string{"n1.crt", "n1.key", "ca.crt"} {
		if _, err := os.Stat(filepath.Join(short, p)); p != "ca.crt" && err == nil {
			t.Errorf("a refused node certificate was written: %s", p)
		}
	}
}

func TestTLSHelp(t *testing.T) {
	for _, args := range [][]string{{"help", "tls"}, {"tls", "-h"}, {"tls", "help"}} {
		code, out, errOut := runCLI(t, nil, args...)
		mustCode(t, 0, code, out, errOut)
		for _, want := range []string{"tls ca", "tls node ID", "tls operator [NAME]", "ringctl tls node ingester-1"} {
			if !strings.Contains(out, want) {
				t.Errorf("%v: help lacks %q:\n%s", args, want, out)
			}
		}
	}
	for _, tc := range []struct {
		args []string
		want []string
		not  []string
	}{
		{[]string{"help", "tls", "node"}, []string{"Usage: ringctl tls node ID [FLAGS]", "-host", "-ca-cert", "-ca-key", "-lifetime", "(default 365d)", "-force", "-dir", "-o"}, []string{"-addr", "-tls.cert-path", "-cn"}},
		{[]string{"tls", "ca", "-h"}, []string{"Usage: ringctl tls ca [FLAGS]", "-cn", "(default 3650d)", "(default \"certs\")"}, []string{"-ca-cert", "-host", "-timeout"}},
		{[]string{"help", "tls", "operator"}, []string{"Usage: ringctl tls operator [NAME] [FLAGS]", "-ca-cert"}, []string{"-host"}},
		{[]string{"help", "status"}, []string{"-tls.cert-path", "-tls.key-path", "-tls.ca-path", tlsCertEnv}, nil},
		{[]string{"help"}, []string{"-tls.cert-path", tlsCertEnv, tlsKeyEnv, tlsCAEnv, "tls node ID"}, nil},
	} {
		code, out, errOut := runCLI(t, nil, tc.args...)
		mustCode(t, 0, code, out, errOut)
		for _, w := range tc.want {
			if !strings.Contains(out, w) {
				t.Errorf("%v lacks %q:\n%s", tc.args, w, out)
			}
		}
		for _, w := range tc.not {
			if strings.Contains(out, w) {
				t.Errorf("%v shows %q:\n%s", tc.args, w, out)
			}
		}
	}
	code, out, errOut := runCLI(t, nil, "help", "tls", "nope")
	mustCode(t, 2, code, out, errOut)
	if !strings.Contains(errOut, `unknown command "tls nope"`) {
		t.Errorf("stderr %q", errOut)
	}
}

func TestTLSClient_RoundTripAsOperator(t *testing.T) {
	p := newPKI(t)
	f := newFake()
	f.operatorOnly = true
	addr := serveTLS(t, f, p, "ingester-1")
	args := p.tlsArgs(t, "operator", p.operator)

	code, out, errOut := runCLI(t, nil, append([]string{"-addr", addr, "remove", "ingester-2"}, args...)...)
	mustCode(t, 0, code, out, errOut)
	if out != "removed ingester-2 from the ring and the Raft configuration at index 18\n" {
		t.Errorf("stdout %q", out)
	}

	// The same from the environment, with the flags after the command.
	env := map[string]string{tlsCertEnv: args[1], tlsKeyEnv: args[3], tlsCAEnv: args[5], addrEnv: addr}
	code, out, errOut = runCLI(t, env, "status", "-o", "json")
	mustCode(t, 0, code, out, errOut)
	// remove: GetRing (is the member alive?) and RemovePeer; then status: Status and GetRing
	// (who compacts).
	if !slices.Equal(f.callers, []string{"operator operator", "operator operator", "operator operator", "operator operator"}) {
		t.Errorf("the node saw %q", f.callers)
	}
}

func TestTLSClient_FlagsOverrideEnvironment(t *testing.T) {
	p := newPKI(t)
	addr := serveTLS(t, newFake(), p, "ingester-1")
	args := p.tlsArgs(t, "operator", p.operator)
	missing := filepath.Join(p.dir, "missing.pem")
	env := map[string]string{tlsCertEnv: missing, tlsKeyEnv: missing, tlsCAEnv: missing}
	code, out, errOut := runCLI(t, env, append([]string{"-addr", addr, "status"}, args...)...)
	mustCode(t, 0, code, out, errOut)

	// And the environment fills what the flags leave out.
	env = map[string]string{tlsKeyEnv: args[3], tlsCAEnv: args[5]}
	code, out, errOut = runCLI(t, env, "-addr", addr, "status", "-tls.cert-path", args[1])
	mustCode(t, 0, code, out, errOut)
}

func TestTLSClient_BadFlagsExit2NamingTheFlag(t *testing.T) {
	p := newPKI(t)
	opCert, opKey := p.operator(t, "operator")
	srvCert, srvKey := p.files(t, "www", func() ([]byte, []byte, error) { return p.ca.IssueServer("www", nil, time.Hour) })
	missing := filepath.Join(p.dir, "missing.pem")
	for _, tc := range []struct {
		name string
		env  map[string]string
		args []string
		want []string
	}{
		{"cert alone", nil, []string{"-tls.cert-path", opCert},
			[]string{"-tls.key-path must be set with the other -tls.* paths", "-tls.ca-path must be set"}},
		{"missing file", nil, []string{"-tls.cert-path", missing, "-tls.key-path", opKey, "-tls.ca-path", p.caPath},
			[]string{"-tls.cert-path: stat " + missing}},
		{"key of another certificate", nil, []string{"-tls.cert-path", opCert, "-tls.key-path", srvKey, "-tls.ca-path", p.caPath},
			[]string{opCert, srvKey, "private key does not match"}},
		{"CA file holds no certificate", nil, []string{"-tls.cert-path", opCert, "-tls.key-path", opKey, "-tls.ca-path", opKey},
			[]string{opKey, "holds no PEM certificate"}},
		{"a server-only certificate cannot be a client", nil, []string{"-tls.cert-path", srvCert, "-tls.key-path", srvKey, "-tls.ca-path", p.caPath},
			[]string{"-tls.cert-path " + srvCert + `: certificate "www" cannot authenticate a client`}},
		{"environment partly set", map[string]string{tlsCAEnv: p.caPath}, nil,
			[]string{"-tls.cert-path must be set", "(the -tls.* flags default to $" + tlsCertEnv}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errOut := runCLI(t, tc.env, append([]string{"-addr", "127.0.0.1:1", "status"}, tc.args...)...)
			mustCode(t, 2, code, out, errOut)
			for _, w := range tc.want {
				if !strings.Contains(errOut, w) {
					t.Errorf("stderr %q does not contain %q", errOut, w)
				}
			}
			if strings.Count(strings.TrimSpace(errOut), "\n") != 1 {
				t.Errorf("want one line and the help hint: %q", errOut)
			}
		})
	}
}

func TestCheckClientCert_Expiry(t *testing.T) {
	p := newPKI(t)
	c, k := p.operator(t, "operator")
	if err := checkClientCert(c, k, time.Now().Add(2*time.Hour)); err == nil || !strings.Contains(err.Error(), "expired on") {
		t.Errorf("expired: %v", err)
	}
	if err := checkClientCert(c, k, time.Now().Add(-time.Hour)); err == nil || !strings.Contains(err.Error(), "not valid before") {
		t.Errorf("not yet valid: %v", err)
	}
	if err := checkClientCert(c, k, time.Now()); err != nil {
		t.Error(err)
	}
}

// A TLS mismatch between ringctl and the node is one line that says what to change.
func TestTLSClient_MismatchHints(t *testing.T) {
	p := newPKI(t)
	other := newPKI(t)
	tlsAddr := serveTLS(t, newFake(), p, "ingester-1")
	plainAddr := serve(t, newFake())
	opArgs := p.tlsArgs(t, "operator", p.operator)
	otherArgs := other.tlsArgs(t, "operator", other.operator)
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"plain ringctl, TLS node", []string{"-addr", tlsAddr},
			"ringctl: status: " + tlsAddr + " requires TLS: pass -tls.cert-path, -tls.key-path and -tls.ca-path (or $RINGCTL_TLS_CERT_PATH, $RINGCTL_TLS_KEY_PATH, $RINGCTL_TLS_CA_PATH)\n"},
		{"TLS ringctl, plain node", append([]string{"-addr", plainAddr}, opArgs...),
			"ringctl: status: " + plainAddr + " does not speak TLS: the node runs without -tls.* flags; call it without -tls.cert-path, -tls.key-path and -tls.ca-path (and $RINGCTL_TLS_CERT_PATH, $RINGCTL_TLS_KEY_PATH, $RINGCTL_TLS_CA_PATH)\n"},
		{"another cluster's files", append([]string{"-addr", tlsAddr}, otherArgs...),
			`ringctl: status: TLS handshake with ` + tlsAddr + ` failed: auth: certificate "ingester-1" is not signed by -tls.ca-path's CA`},
		{"our CA, another cluster's certificate", append([]string{"-addr", tlsAddr, "-tls.ca-path", p.caPath}, otherArgs[:4]...),
			// The refusal arrives as the alert or as a closed connection, as TLS 1.3 allows.
			"refused our certificate"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errOut := runCLI(t, nil, append(tc.args, "status")...)
			mustCode(t, 1, code, out, errOut)
			if !strings.HasPrefix(errOut, "ringctl: status: ") || !strings.Contains(errOut, tc.want) || strings.Count(errOut, "\n") != 1 {
				t.Errorf("stderr %q, want one line with %q", errOut, tc.want)
			}
		})
	}
}

// A refusal is the node's message, which names the identity and the right it lacks; exit 1.
func TestTLSClient_PermissionDeniedShowsTheServersMessage(t *testing.T) {
	p := newPKI(t)
	f := newFake()
	f.operatorOnly = true
	addr := serveTLS(t, f, p, "ingester-1")
	nodeArgs := p.tlsArgs(t, "ingester-2", p.node) // a member, not an operator
	code, out, errOut := runCLI(t, nil, append([]string{"-addr", addr, "remove", "ingester-3", "-force"}, nodeArgs...)...)
	mustCode(t, 1, code, out, errOut)
	want := `ringctl: remove: permission denied: node ingester-2 lacks the right "operator" to removepeer (PermissionDenied from ` + addr + ")\n"
	if errOut != want {
		t.Errorf("stderr %q, want %q", errOut, want)
	}
	if n := len(f.callsOf("RemovePeer")); n != 1 {
		t.Errorf("RemovePeer sent %d times", n)
	}
}
