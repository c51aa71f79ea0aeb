// Package auth is who is on the other end of a connection, and what they may do: mutual TLS for the
// cluster plane (Raft, gRPC between members, ringctl), certificates re-read when their files change,
// identities taken from a verified certificate's Common Name, and the refusals of what an identity
// has no right to do.
//
// A node's certificate Common Name is its member id; a Common Name listed in -tls.operator-names is
// an operator. Without -tls.* flags there is no Authority (nil), every connection is plain and every
// caller is Anonymous, allowed everything: the behaviour of a cluster before this package existed.
package auth

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"sync"
	"time"
)

// reloadCheckInterval bounds how often the files are stat'ed: at most once a second, on a
// handshake, so rotation needs no goroutine and a busy listener no syscall per connection.
const reloadCheckInterval = time.Second

// Files is a certificate, its key and a CA bundle read from disk and re-read when any of the three
// files changes (size or modification time), so that certificates rotate without a restart. A new
// set that does not load (a certificate written before its key, say) is ignored, the old one stays
// in use and the next check tries again; Err reports the last such failure.
//
// Safe for concurrent use.
type Files struct {
	certPath, keyPath, caPath string
	now                       func() time.Time

	mu        sync.Mutex
	cert      *tls.Certificate
	pool      *x509.CertPool
	stamps    [3]fileStamp
	lastCheck time.Time
	lastErr   error
	reloads   int
}

type fileStamp struct {
	size    int64
	modTime time.Time
}

// LoadFiles reads the certificate, key and CA bundle. caPath may be empty (a server that verifies
// no client certificates): Current then returns a nil pool. Every error names the file at fault.
func LoadFiles(certPath, keyPath, caPath string) (*Files, error) {
	f := &Files{certPath: certPath, keyPath: keyPath, caPath: caPath, now: time.Now}
	stamps, err := f.stat()
	if err != nil {
		return nil, err
	}
	cert, pool, err := f.read()
	if err != nil {
		return nil, err
	}
	f.cert, f.pool, f.stamps, f.lastCheck = cert, pool, stamps, f.now()
	return f, nil
}

func (f *Files) stat() ([3]fileStamp, error) {
	var s [3]fileStamp
	for i, p := range []string{f.certPath, f.keyPath, f.caPath} {
		if p == "" {
			continue
		}
		fi, err := os.Stat(p)
		if err != nil {
			return s, err
		}
		s[i] = fileStamp{size: fi.Size(), modTime: fi.ModTime()}
	}
	return s, nil
}

func (f *Files) read() (*tls.Certificate, *x509.CertPool, error) {
	cert, err := tls.LoadX509KeyPair(f.certPath, f.keyPath)
	if err != nil {
		return nil, nil, fmt.Errorf("auth: load certificate %s with key %s: %w", f.certPath, f.keyPath, err)
	}
	if cert.Leaf == nil {
		if cert.Leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return nil, nil, fmt.Errorf("auth: parse certificate %s: %w", f.certPath, err)
		}
	}
	if f.caPath == "" {
		return &cert, nil, nil
	}
	caPEM, err := os.ReadFile(f.caPath)
	if err != nil {
		return nil, nil, fmt.Errorf("auth: read CA bundle: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, nil, fmt.Errorf("auth: CA bundle %s holds no PEM certificate", f.caPath)
	}
	return &cert, pool, nil
}

// Current returns the certificate and CA pool in use, re-reading the files first when they changed
// (checked at most once a second).
func (f *Files) Current() (*tls.Certificate, *x509.CertPool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if now := f.now(); now.Sub(f.lastCheck) >= reloadCheckInterval {
		f.lastCheck = now
		if stamps, err := f.stat(); err != nil {
			f.lastErr = fmt.Errorf("auth: check certificate files: %w", err)
		} else if stamps != f.stamps {
			if cert, pool, err := f.read(); err != nil {
				f.lastErr = err
			} else {
				f.cert, f.pool, f.stamps, f.lastErr = cert, pool, stamps, nil
				f.reloads++
			}
		}
	}
	return f.cert, f.pool
}

// Err is the last reload failure, nil after a successful reload.
func (f *Files) Err() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.lastErr
}

// Reloads counts the successful reloads since LoadFiles.
func (f *Files) Reloads() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.reloads
}
