package main

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/raftingest/raftingest/auth"
	"github.com/raftingest/raftingest/internal/certgen"
)

// The `ringctl tls` commands write PEM files with internal/certgen and make no network call.

const (
	defaultCertDir = "certs"
	defaultCACN    = "raftingest CA"
	caCertFile     = "ca.crt"
	caKeyFile      = "ca.key"
	maxLifetime    = 100 * 365 * 24 * time.Hour
)

// defaultNodeHosts are in every node certificate, so that a local cluster and curl on the node
// itself work with no -host at all.
var defaultNodeHosts = []string{"localhost", "127.0.0.1", "::1"}

// certKind is what a `ringctl tls` command makes.
type certKind string

const (
	kindCA       certKind = "ca"
	kindNode     certKind = "node"
	kindOperator certKind = "operator"
)

// lifetimeFlag is a certificate lifetime: a Go duration ("8760h") or a whole number of days
// ("365d"), positive and at most 100 years.
type lifetimeFlag struct{ d time.Duration }

func (f *lifetimeFlag) String() string {
	if f.d > 0 && f.d%(24*time.Hour) == 0 {
		return strconv.FormatInt(int64(f.d/(24*time.Hour)), 10) + "d"
	}
	return f.d.String()
}

func (f *lifetimeFlag) Set(s string) error {
	var d time.Duration
	if days, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.ParseInt(days, 10, 64)
		if err != nil {
			return errors.New("want a duration such as 365d or 720h")
		}
		if n > int64(maxLifetime/(24*time.Hour)) {
			return errors.New("longer than 100 years")
		}
		d = time.Duration(n) * 24 * time.Hour
	} else {
		var err error
		if d, err = time.ParseDuration(s); err != nil {
			return errors.New("want a duration such as 365d or 720h")
		}
	}
	if d <= 0 {
		return errors.New("must be positive")
	}
	if d > maxLifetime {
		return errors.New("longer than 100 years")
	}
	f.d = d
	return nil
}

// tlsFlags registers the flags of `ringctl tls <kind>`.
func tlsFlags(kind certKind) func(fs *flag.FlagSet, o *options) {
	return func(fs *flag.FlagSet, o *options) {
		o.certDir = defaultCertDir
		fs.StringVar(&o.certDir, "dir", defaultCertDir, "`directory` to write the files in (created mode 0700 when missing)")
		switch kind {
		case kindCA:
			o.lifetime = lifetimeFlag{d: certgen.DefaultCALifetime}
			o.caCN = defaultCACN
			fs.StringVar(&o.caCN, "cn", defaultCACN, "Common Name of the CA")
			fs.BoolVar(&o.force, "force", false, "replace existing files (a new CA invalidates every certificate the old one signed)")
		case kindNode:
			o.lifetime = lifetimeFlag{d: certgen.DefaultNodeLifetime}
			fs.Func("host", "comma-separated host `names or IPs` the node is reached at, added to "+strings.Join(defaultNodeHosts, ",")+" (repeatable)", func(s string) error {
				for _, h := range strings.Split(s, ",") {
					if h = strings.TrimSpace(h); h != "" {
						o.hosts = append(o.hosts, h)
					}
				}
				return nil
			})
			fs.BoolVar(&o.force, "force", false, "replace existing files (to renew: the node re-reads them without a restart)")
		case kindOperator:
			o.lifetime = lifetimeFlag{d: certgen.DefaultOperatorLifetime}
			fs.BoolVar(&o.force, "force", false, "replace existing files (to renew)")
		}
		fs.Var(&o.lifetime, "lifetime", "how long the certificate is valid: a `duration` such as 8760h or 365d")
		if kind != kindCA {
			fs.StringVar(&o.caCert, "ca-cert", "", "PEM `file` of the signing CA's certificate (default DIR/"+caCertFile+")")
			fs.StringVar(&o.caKey, "ca-key", "", "PEM `file` of the signing CA's private key (default DIR/"+caKeyFile+")")
		}
	}
}

// tlsFilesJSON is `ringctl tls ... -o json`. Field names are a scripting contract.
type tlsFilesJSON struct {
	Kind       string    `json:"kind"` // ca, node, operator
	CommonName string    `json:"common_name"`
	CertPath   string    `json:"cert_path"`
	KeyPath    string    `json:"key_path"`
	CAPath     string    `json:"ca_path"` // the CA certificate that verifies cert_path (cert_path itself for a CA)
	Hosts      []string  `json:"hosts,omitempty"`
	NotAfter   time.Time `json:"not_after"`
	Flags      []string  `json:"flags"` // the flags that use these files, one argument per element
}

func (c *cli) tlsCA(o *options, _ []string) error {
	ca, err := certgen.NewCA(o.caCN, o.lifetime.d)
	if err != nil {
		return certError(err)
	}
	certPath, keyPath := filepath.Join(o.certDir, caCertFile), filepath.Join(o.certDir, caKeyFile)
	if err := writeCertFiles(certPath, keyPath, ca.CertPEM, ca.KeyPEM, o.force, " (a new CA invalidates every certificate the old one signed)"); err != nil {
		return err
	}
	out := tlsFilesJSON{Kind: string(kindCA), CommonName: ca.Cert.Subject.CommonName, CertPath: certPath, KeyPath: keyPath,
		CAPath: certPath, NotAfter: ca.Cert.NotAfter.UTC(), Flags: []string{"-tls.ca-path", certPath}}
	if o.output == "json" {
		return c.printJSON(out)
	}
	dirFlag := ""
	if o.certDir != defaultCertDir {
		dirFlag = " -dir " + shellQuote(o.certDir)
	}
	_, err = fmt.Fprintf(c.stdout, `wrote %s (CA private key: it signs members and operators; keep it off the nodes)
wrote %s (CA %q, valid until %s)
Every node and every ringctl trusts it with:
  %s
Next: ringctl tls node ID%s -host HOST,...   and   ringctl tls operator%s
`, keyPath, certPath, out.CommonName, out.NotAfter.Format(time.DateOnly), shellJoin(out.Flags), dirFlag, dirFlag)
	return err
}

func (c *cli) tlsNode(o *options, args []string) error {
	id := args[0]
	if err := checkID("ID", id); err != nil {
		return err
	}
	hosts := dedupe(append(slices.Clone(defaultNodeHosts), o.hosts...))
	certPath, keyPath := filepath.Join(o.certDir, id+".crt"), filepath.Join(o.certDir, id+".key")
	ca, caPath, err := loadSigningCA(o, certPath, keyPath)
	if err != nil {
		return err
	}
	certPEM, keyPEM, err := ca.IssueNode(id, hosts, o.lifetime.d)
	if err != nil {
		return certError(err)
	}
	if err := writeCertFiles(certPath, keyPath, certPEM, keyPEM, o.force, ""); err != nil {
		return err
	}
	out := tlsFilesJSON{Kind: string(kindNode), CommonName: id, CertPath: certPath, KeyPath: keyPath, CAPath: caPath,
		Hosts: hosts, NotAfter: notAfter(certPEM),
		Flags: []string{"-node.id", id, "-tls.cert-path", certPath, "-tls.key-path", keyPath, "-tls.ca-path", caPath}}
	if o.output == "json" {
		return c.printJSON(out)
	}
	_, err = fmt.Fprintf(c.stdout, `wrote %s (private key of member %s: keep it on that node only)
wrote %s (member %s, serves and dials, hosts %s, valid until %s)
Start member %s with:
  %s
`, keyPath, id, certPath, id, strings.Join(hosts, ","), out.NotAfter.Format(time.DateOnly), id, shellJoin(out.Flags))
	return err
}

func (c *cli) tlsOperator(o *options, args []string) error {
	name := auth.DefaultOperatorName
	if len(args) == 1 {
		name = args[0]
	}
	if err := checkOperatorName(name); err != nil {
		return err
	}
	certPath, keyPath := filepath.Join(o.certDir, name+".crt"), filepath.Join(o.certDir, name+".key")
	ca, caPath, err := loadSigningCA(o, certPath, keyPath)
	if err != nil {
		return err
	}
	certPEM, keyPEM, err := ca.IssueOperator(name, o.lifetime.d)
	if err != nil {
		return certError(err)
	}
	if err := writeCertFiles(certPath, keyPath, certPEM, keyPEM, o.force, ""); err != nil {
		return err
	}
	out := tlsFilesJSON{Kind: string(kindOperator), CommonName: name, CertPath: certPath, KeyPath: keyPath, CAPath: caPath,
		NotAfter: notAfter(certPEM), Flags: []string{"-tls.cert-path", certPath, "-tls.key-path", keyPath, "-tls.ca-path", caPath}}
	if o.output == "json" {
		return c.printJSON(out)
	}
	var b strings.Builder
	fmt.Fprintf(&b, `wrote %s (private key of operator %q: it holds the operator rights, keep it with the operator)
wrote %s (operator %q, client only, valid until %s)
Use it with ringctl:
  ringctl %s status
or once per shell:
  export %s=%s %s=%s %s=%s
`, keyPath, name, certPath, name, out.NotAfter.Format(time.DateOnly), shellJoin(out.Flags),
		tlsCertEnv, shellQuote(certPath), tlsKeyEnv, shellQuote(keyPath), tlsCAEnv, shellQuote(caPath))
	if name != auth.DefaultOperatorName {
		fmt.Fprintf(&b, "Nodes grant operator rights only to the names in their -tls.operator-names (default %q): start them with e.g. -tls.operator-names %s,%s\n",
			auth.DefaultOperatorName, auth.DefaultOperatorName, name)
	}
	_, err = c.stdout.Write([]byte(b.String()))
	return err
}

// loadSigningCA loads the CA of -ca-cert and -ca-key (DIR/ca.crt and DIR/ca.key by default),
// refusing first, as a usage error, outputs that would overwrite it (`ringctl tls node ca`).
func loadSigningCA(o *options, certPath, keyPath string) (*certgen.CA, string, error) {
	caCert, caKey := o.caCert, o.caKey
	if caCert == "" {
		caCert = filepath.Join(o.certDir, caCertFile)
	}
	if caKey == "" {
		caKey = filepath.Join(o.certDir, caKeyFile)
	}
	for _, out := range []string{certPath, keyPath} {
		for _, in := range []string{caCert, caKey} {
			if filepath.Clean(out) == filepath.Clean(in) {
				return nil, "", usagef("%s is the signing CA's file: choose another name or -dir", out)
			}
		}
	}
	ca, err := certgen.LoadCA(caCert, caKey)
	if err != nil {
		return nil, "", fmt.Errorf("%v (make a CA with 'ringctl tls ca -dir %s', or pass -ca-cert and -ca-key)", err, shellQuote(o.certDir))
	}
	return ca, caCert, nil
}

// writeCertFiles writes with certgen.WriteFiles and says what to do when the files exist.
func writeCertFiles(certPath, keyPath string, certPEM, keyPEM []byte, force bool, forceNote string) error {
	err := certgen.WriteFiles(certPath, keyPath, certPEM, keyPEM, force)
	if errors.Is(err, certgen.ErrExists) {
		return fmt.Errorf("%v; nothing was written: pass -force to replace the files%s", err, forceNote)
	}
	return err
}

// certError makes a refused certificate request (a bad host, a lifetime past the CA's) a usage
// error: the fix is on the command line, and nothing was written.
func certError(err error) error {
	if errors.Is(err, certgen.ErrInvalid) {
		return usagef("%v", err)
	}
	return err
}

// checkOperatorName accepts what can be a file name in -dir and an entry of the nodes'
// comma-separated -tls.operator-names: letters, digits, '-', '_', '.' and '@', starting with a
// letter or digit.
func checkOperatorName(name string) error {
	if name == "" || len(name) > 128 {
		return usagef("NAME %q must have 1 to 128 characters", name)
	}
	for i, r := range name {
		if !(unicode.IsLetter(r) || unicode.IsDigit(r) || (i > 0 && strings.ContainsRune("-_.@", r))) {
			return usagef("NAME %q: only letters, digits, '-', '_', '.' and '@' are allowed, starting with a letter or digit", name)
		}
	}
	return nil
}

func notAfter(certPEM []byte) time.Time {
	block, _ := pem.Decode(certPEM)
	if block == nil {
		return time.Time{}
	}
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return time.Time{}
	}
	return c.NotAfter.UTC()
}

// dedupe keeps the first of each value, in order.
func dedupe(xs []string) []string {
	out := xs[:0]
	seen := map[string]bool{}
	for _, x := range xs {
		if !seen[x] {
			seen[x] = true
			out = append(out, x)
		}
	}
	return out
}

// shellQuote quotes s for a POSIX shell when it needs it, so that printed command lines can be
// pasted.
func shellQuote(s string) string {
	if s != "" && strings.IndexFunc(s, func(r rune) bool {
		return !(r < 128 && (unicode.IsLetter(r) || unicode.IsDigit(r) || strings.ContainsRune("-_./:,=@+", r)))
	}) < 0 {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

func shellJoin(args []string) string {
	q := make([]string, len(args))
	for i, a := range args {
		q[i] = shellQuote(a)
	}
	return strings.Join(q, " ")
}
