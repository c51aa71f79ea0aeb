// Package certgen makes the PEM certificates of a raftingest cluster, as `cockroach cert` and
// `consul tls` do for theirs: a self-signed CA, node certificates (Common Name = member id, usable to
// serve and to dial), operator certificates (client only) and plain server certificates for HTTPS
// listeners. `ringctl tls` is its command line; tests use it to build throwaway PKIs.
//
// Every key is ECDSA P-256, written as PKCS#8 ("PRIVATE KEY" PEM): every TLS stack the cluster
// meets (Go, Prometheus, Grafana, curl/OpenSSL) reads it, and signatures are small and fast.
// Only the standard library is used.
package certgen

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Lifetimes used when the caller has no opinion.
const (
	// DefaultCALifetime is 10 years: replacing a CA means touching every node and operator at
	// once, so it should outlive the cluster's hardware; its key is meant to stay offline, which
	// is what makes a long life acceptable.
	DefaultCALifetime = 10 * 365 * 24 * time.Hour
	// DefaultNodeLifetime is 1 year: long enough that a small cluster is not paged by expiries,
	// short enough that a leaked node key does not stay useful for the life of the CA (there is
	// no revocation list). Nodes re-read their files, so rotation needs no restart.
	DefaultNodeLifetime = 365 * 24 * time.Hour
	// DefaultOperatorLifetime is 1 year, for the reasons of DefaultNodeLifetime: an operator
	// certificate carries the most power in the cluster, and expiry is its only revocation.
	DefaultOperatorLifetime = 365 * 24 * time.Hour
	// DefaultServerLifetime is 1 year, the lifetime of a node certificate; public clients
	// (browsers) refuse longer ones anyway (398 days).
	DefaultServerLifetime = 365 * 24 * time.Hour

	// ClockSkew is how far before its issue time a certificate is valid: a node whose clock is a
	// little behind the issuer's must not refuse a certificate issued a moment ago.
	ClockSkew = 5 * time.Minute
)

// Errors at the package boundary; each returned error wraps one of them with the file or name
// involved.
var (
	// ErrExists refuses to replace an existing file without overwrite.
	ErrExists = errors.New("certgen: file exists")
	// ErrNotCA is a certificate that cannot sign others (not a CA, or no certSign key usage).
	ErrNotCA = errors.New("certgen: not a CA certificate")
	// ErrKeyMismatch is a private key that does not belong to the certificate.
	ErrKeyMismatch = errors.New("certgen: private key does not match the certificate")
	// ErrInvalid is an argument that cannot go into a certificate: an empty name, a bad host, a
	// lifetime that is not positive or that would outlive the CA.
	ErrInvalid = errors.New("certgen: invalid certificate request")
)

// CA is a certificate authority: its certificate and the key that signs with it. The PEM fields
// are the encodings of Cert and Key (what NewCA made or LoadCA read).
//
// Immutable after NewCA or LoadCA; safe for concurrent use.
type CA struct {
	Cert    *x509.Certificate // IsCA, may sign certificates
	Key     crypto.Signer     // the private key of Cert
	CertPEM []byte            // Cert as PEM: what nodes and ringctl read as -tls.ca-path
	KeyPEM  []byte            // Key as PEM; PKCS#8 when NewCA made it
}

// NewCA makes a self-signed CA named commonName, valid from ClockSkew ago for lifetime. It may
// sign end-entity certificates only (MaxPathLen 0): no intermediate CA can be minted from it.
func NewCA(commonName string, lifetime time.Duration) (*CA, error) {
	if strings.TrimSpace(commonName) == "" {
		return nil, fmt.Errorf("%w: the CA needs a Common Name", ErrInvalid)
	}
	if lifetime <= 0 {
		return nil, fmt.Errorf("%w: CA lifetime %s is not positive", ErrInvalid, lifetime)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("certgen: generate CA key: %w", err)
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	t := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: commonName},
		NotBefore:             t.Add(-ClockSkew),
		NotAfter:              t.Add(lifetime),
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLen:            0,
		MaxPathLenZero:        true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("certgen: create CA certificate %q: %w", commonName, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("certgen: parse CA certificate %q: %w", commonName, err)
	}
	keyPEM, err := encodeKey(key)
	if err != nil {
		return nil, err
	}
	return &CA{Cert: cert, Key: key, CertPEM: encodeCert(der), KeyPEM: keyPEM}, nil
}

// LoadCA reads a CA certificate and its private key from PEM files. The key may be PKCS#8
// ("PRIVATE KEY"), SEC 1 ("EC PRIVATE KEY") or PKCS#1 ("RSA PRIVATE KEY"), so that a CA made by
// openssl works too. Every error names the file at fault.
func LoadCA(certPath, keyPath string) (*CA, error) {
	certPEM, err := os.ReadFile(certPath)
	if err != nil {
		return nil, fmt.Errorf("certgen: read CA certificate: %w", err)
	}
	keyPEM, err := os.ReadFile(keyPath)
	if err != nil {
		return nil, fmt.Errorf("certgen: read CA key: %w", err)
	}
	block, _ := pem.Decode(certPEM)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("certgen: %s holds no PEM CERTIFICATE block", certPath)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("certgen: parse CA certificate %s: %w", certPath, err)
	}
	if !cert.IsCA || cert.KeyUsage&x509.KeyUsageCertSign == 0 {
		return nil, fmt.Errorf("%w: %s (%q) may not sign certificates", ErrNotCA, certPath, cert.Subject.CommonName)
	}
	key, err := decodeKey(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("certgen: CA key %s: %w", keyPath, err)
	}
	pub, ok := key.Public().(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(cert.PublicKey) {
		return nil, fmt.Errorf("%w: %s is not the key of %s", ErrKeyMismatch, keyPath, certPath)
	}
	return &CA{Cert: cert, Key: key, CertPEM: certPEM, KeyPEM: keyPEM}, nil
}

// IssueNode makes the certificate of member id: Common Name id (the cluster reads a node's
// identity from it), extended key usages serverAuth and clientAuth (a node both serves and
// dials with it), and a subject alternative name for each of hosts (IP literals as IP
// addresses, the rest as DNS names) so that clients checking host names, such as curl or
// Prometheus against an HTTPS listener using the same files, accept it. hosts may be empty.
func (ca *CA) IssueNode(id string, hosts []string, lifetime time.Duration) (certPEM, keyPEM []byte, err error) {
	return ca.issue("node", id, hosts, lifetime, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth})
}

// IssueOperator makes the certificate of operator name: Common Name name and the extended key
// usage clientAuth only, so that it can never pose as a server (a member). It grants operator
// rights where name is listed in the nodes' -tls.operator-names.
func (ca *CA) IssueOperator(name string, lifetime time.Duration) (certPEM, keyPEM []byte, err error) {
	return ca.issue("operator", name, nil, lifetime, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth})
}

// IssueServer makes a server-only certificate (extended key usage serverAuth) named cn for hosts,
// for HTTPS listeners that are not a cluster identity.
func (ca *CA) IssueServer(cn string, hosts []string, lifetime time.Duration) (certPEM, keyPEM []byte, err error) {
	return ca.issue("server", cn, hosts, lifetime, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth})
}

func (ca *CA) issue(kind, cn string, hosts []string, lifetime time.Duration, usages []x509.ExtKeyUsage) ([]byte, []byte, error) {
	if strings.TrimSpace(cn) == "" {
		return nil, nil, fmt.Errorf("%w: a %s certificate needs a Common Name", ErrInvalid, kind)
	}
	if lifetime <= 0 {
		return nil, nil, fmt.Errorf("%w: %s certificate %q: lifetime %s is not positive", ErrInvalid, kind, cn, lifetime)
	}
	var ips []net.IP
	var dns []string
	for _, h := range hosts {
		h = strings.TrimSpace(h)
		if ip := net.ParseIP(h); ip != nil {
			ips = append(ips, ip)
			continue
		}
		if err := checkDNSName(h); err != nil {
			return nil, nil, fmt.Errorf("%w: %s certificate %q: host %q: %v", ErrInvalid, kind, cn, h, err)
		}
		dns = append(dns, h)
	}
	t := time.Now()
	notAfter := t.Add(lifetime)
	// A certificate that outlives its CA stops verifying when the CA expires, silently
	// shortening the lifetime asked for: refuse instead, so the operator chooses.
	if notAfter.After(ca.Cert.NotAfter) {
		return nil, nil, fmt.Errorf("%w: %s certificate %q would expire on %s, after its CA %q (%s): shorten the lifetime or make a new CA",
			ErrInvalid, kind, cn, notAfter.UTC().Format(time.DateOnly), ca.Cert.Subject.CommonName, ca.Cert.NotAfter.UTC().Format(time.DateOnly))
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("certgen: generate key of %s %q: %w", kind, cn, err)
	}
	serial, err := newSerial()
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             t.Add(-ClockSkew),
		NotAfter:              notAfter,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           usages,
		IPAddresses:           ips,
		DNSNames:              dns,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, key.Public(), ca.Key)
	if err != nil {
		return nil, nil, fmt.Errorf("certgen: sign %s certificate %q: %w", kind, cn, err)
	}
	keyPEM, err := encodeKey(key)
	if err != nil {
		return nil, nil, err
	}
	return encodeCert(der), keyPEM, nil
}

// checkDNSName accepts what can stand in a dNSName SAN: letters, digits, '-', '.', and a leading
// "*." wildcard label.
func checkDNSName(h string) error {
	if h == "" || len(h) > 253 {
		return errors.New("a host name has 1 to 253 characters")
	}
	for i, label := range strings.Split(strings.TrimPrefix(h, "*."), ".") {
		if label == "" || len(label) > 63 {
			return fmt.Errorf("label %d is empty or longer than 63 characters", i+1)
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
				return fmt.Errorf("%q is not allowed in a host name (want an IP address or a DNS name)", r)
			}
		}
	}
	return nil
}

// newSerial is a random positive 128-bit serial number: unique without any state to keep, as RFC
// 5280 asks (at most 20 octets).
func newSerial() (*big.Int, error) {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return nil, fmt.Errorf("certgen: serial number: %w", err)
	}
	return n.Add(n, big.NewInt(1)), nil // never zero
}

func encodeCert(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func encodeKey(key crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("certgen: encode private key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// decodeKey reads the first private key PEM block of b.
func decodeKey(b []byte) (crypto.Signer, error) {
	for {
		var block *pem.Block
		block, b = pem.Decode(b)
		if block == nil {
			return nil, errors.New("no PEM private key block (PRIVATE KEY, EC PRIVATE KEY or RSA PRIVATE KEY)")
		}
		var key any
		var err error
		switch block.Type {
		case "PRIVATE KEY":
			key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
		case "EC PRIVATE KEY":
			key, err = x509.ParseECPrivateKey(block.Bytes)
		case "RSA PRIVATE KEY":
			key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
		default:
			continue // "EC PARAMETERS" precedes the key in openssl's output
		}
		if err != nil {
			return nil, fmt.Errorf("parse %s: %w", block.Type, err)
		}
		if s, ok := key.(crypto.Signer); ok {
			return s, nil
		}
		return nil, fmt.Errorf("a %T cannot sign", key)
	}
}

// WriteFiles writes a certificate (mode 0644: it is public) and its private key (mode 0600),
// creating missing parent directories (0700 for the key's, so that not even the key file names
// are listed to others; 0750 for a directory that holds only the certificate). Unless overwrite,
// it refuses, with ErrExists and before writing anything, when either file exists. With
// overwrite, each file is replaced by a rename of a complete file beside it, so a node re-reading
// its files never sees a half-written one (it may see a new certificate before its new key, and
// keeps its old pair until both match).
func WriteFiles(certPath, keyPath string, certPEM, keyPEM []byte, overwrite bool) error {
	if certPath == "" || keyPath == "" {
		return fmt.Errorf("%w: empty certificate or key path", ErrInvalid)
	}
	if certPath == keyPath {
		return fmt.Errorf("%w: certificate and key would both be written to %s", ErrInvalid, certPath)
	}
	if !overwrite {
		for _, p := range []string{certPath, keyPath} {
			if _, err := os.Lstat(p); err == nil {
				return fmt.Errorf("%w: %s", ErrExists, p)
			} else if !errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("certgen: %w", err)
			}
		}
	}
	if err := os.MkdirAll(filepath.Dir(keyPath), 0o700); err != nil {
		return fmt.Errorf("certgen: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(certPath), 0o750); err != nil {
		return fmt.Errorf("certgen: %w", err)
	}
	// The key first: a certificate on disk without its key is useless, a key without its
	// certificate is harmless.
	if err := writeFile(keyPath, keyPEM, 0o600, overwrite); err != nil {
		return err
	}
	if err := writeFile(certPath, certPEM, 0o644, overwrite); err != nil {
		if !overwrite {
			_ = os.Remove(keyPath) // this call created it; leave nothing half-made
		}
		return err
	}
	return nil
}

// writeFile writes data to path with exactly mode (whatever the umask), durably: O_EXCL when the
// file must be new, a temporary file renamed over it otherwise.
func writeFile(path string, data []byte, mode os.FileMode, overwrite bool) error {
	var f *os.File
	var err error
	if overwrite {
		f, err = os.CreateTemp(filepath.Dir(path), ".certgen-*.tmp")
	} else {
		f, err = os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
		if errors.Is(err, os.ErrExist) {
			return fmt.Errorf("%w: %s", ErrExists, path)
		}
	}
	if err != nil {
		return fmt.Errorf("certgen: %w", err)
	}
	name := f.Name()
	fail := func(err error) error {
		_ = f.Close()
		_ = os.Remove(name)
		return fmt.Errorf("certgen: write %s: %w", path, err)
	}
	if err := f.Chmod(mode); err != nil {
		return fail(err)
	}
	if _, err := f.Write(data); err != nil {
		return fail(err)
	}
	if err := f.Sync(); err != nil {
		return fail(err)
	}
	if err := f.Close(); err != nil {
		_ = os.Remove(name)
		return fmt.Errorf("certgen: write %s: %w", path, err)
	}
	if overwrite {
		if err := os.Rename(name, path); err != nil {
			_ = os.Remove(name)
			return fmt.Errorf("certgen: %w", err)
		}
	}
	return nil
}
