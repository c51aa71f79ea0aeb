package ingester

// This file is the HTTP side of the Server: the flags of its two listeners (the public one,
// -http.addr, and the admin one, -admin.http-addr), HTTPS with optional client certificates
// (-server.http-tls-*, Mimir's names and values), and the http.Server both run on.

import (
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/raftingest/raftingest/auth"
)

// httpServerConfig holds the flags of the HTTP listeners beyond -http.addr.
type httpServerConfig struct {
	// AdminAddr is -admin.http-addr: the listener of /ingester/shutdown, /ingester/flush and
	// /debug/pprof/. Empty: no admin listener (a Config built in code without flags has none).
	AdminAddr string

	// HTTPS for the public listener, and the admin one when it is on (-server.http-tls-*). Off
	// when no path is set. Invariant after Validate: CertPath and KeyPath are both set or both
	// empty; ClientAuth is one of clientAuthModes' names or empty (NoClientCert).
	TLSCertPath   string
	TLSKeyPath    string
	TLSCAPath     string
	TLSClientAuth string

	// Timeouts of both listeners (Mimir's -server.http-* flags; 0: none). The admin listener has
	// no WriteTimeout: POST /ingester/flush runs up to -ingester.flush-op-timeout and
	// /debug/pprof/profile?seconds=N for N seconds.
	ReadTimeout       time.Duration // -server.http-read-timeout: the whole request, headers and body
	ReadHeaderTimeout time.Duration // -server.http-read-header-timeout: the request headers
	WriteTimeout      time.Duration // -server.http-write-timeout: from the end of the headers to the end of the answer
	IdleTimeout       time.Duration // -server.http-idle-timeout: a keep-alive connection between requests
}

// Defaults of the HTTP timeouts. Read and idle are Mimir's (dskit's). The header timeout is ours:
// dskit's 0 means "the read timeout", 30s in which a slow sender holds a connection without having
// sent a request yet. The write timeout is above Mimir's 2m, which equals its -querier.timeout: a
// query that runs into that deadline then has no time left to write its 503; 30s more gives it some.
const (
	DefaultHTTPReadTimeout       = 30 * time.Second
	DefaultHTTPReadHeaderTimeout = 10 * time.Second
	DefaultHTTPWriteTimeout      = 2*time.Minute + 30*time.Second
	DefaultHTTPIdleTimeout       = 2 * time.Minute
)

// DefaultAdminHTTPAddr is -admin.http-addr's default: loopback only, one port below -grpc.addr's
// default, so an operator on the host can reach it and nobody else.
const DefaultAdminHTTPAddr = "127.0.0.1:9094"

// clientAuthModes are -server.http-tls-client-auth's values: Go's tls.ClientAuthType names, as
// Mimir (dskit, through Prometheus exporter-toolkit) accepts them. Empty is NoClientCert.
var clientAuthModes = map[string]tls.ClientAuthType{
	"NoClientCert":               tls.NoClientCert,
	"RequestClientCert":          tls.RequestClientCert,
	"RequireAnyClientCert":       tls.RequireAnyClientCert,
	"VerifyClientCertIfGiven":    tls.VerifyClientCertIfGiven,
	"RequireAndVerifyClientCert": tls.RequireAndVerifyClientCert,
}

const clientAuthNames = "NoClientCert, RequestClientCert, RequireAnyClientCert, VerifyClientCertIfGiven, RequireAndVerifyClientCert"

// RegisterFlags registers -admin.http-addr and the -server.http-tls-* flags with their defaults.
func (c *httpServerConfig) RegisterFlags(f *flag.FlagSet) {
	f.StringVar(&c.AdminAddr, "admin.http-addr", DefaultAdminHTTPAddr, "address of the admin HTTP server: POST /ingester/shutdown, POST /ingester/flush and /debug/pprof/, which the public -http.addr does not serve; keep it on loopback or behind -server.http-tls-client-auth=RequireAndVerifyClientCert (empty: no admin server)")
	f.StringVar(&c.TLSCertPath, "server.http-tls-cert-path", "", "PEM certificate of the HTTP servers (-http.addr and -admin.http-addr): with -server.http-tls-key-path they serve HTTPS only. It must name the addresses clients use in its SANs. Re-read when the file changes.")
	f.StringVar(&c.TLSKeyPath, "server.http-tls-key-path", "", "PEM private key of -server.http-tls-cert-path. Re-read when the file changes.")
	f.StringVar(&c.TLSCAPath, "server.http-tls-ca-path", "", "PEM bundle of the CA(s) that verify HTTP clients' certificates (needed by -server.http-tls-client-auth=VerifyClientCertIfGiven or RequireAndVerifyClientCert). Re-read when the file changes.")
	f.StringVar(&c.TLSClientAuth, "server.http-tls-client-auth", "", "HTTPS client certificate policy, as in Mimir: "+clientAuthNames+" (empty: NoClientCert)")
	f.DurationVar(&c.ReadTimeout, "server.http-read-timeout", DefaultHTTPReadTimeout, "Read timeout for entire HTTP request, including headers and body, on -http.addr and -admin.http-addr; a push whose body is not in by then is answered 408. 0: none.")
	f.DurationVar(&c.ReadHeaderTimeout, "server.http-read-header-timeout", DefaultHTTPReadHeaderTimeout, "Read timeout for HTTP request headers; the connection is closed when they are not in by then. 0: -server.http-read-timeout applies.")
	f.DurationVar(&c.WriteTimeout, "server.http-write-timeout", DefaultHTTPWriteTimeout, "Write timeout for HTTP server: the longest a request on -http.addr may take from the end of its headers to the end of its answer. Must not be below -querier.timeout. Not applied to -admin.http-addr (flushes and profiles run longer). 0: none.")
	f.DurationVar(&c.IdleTimeout, "server.http-idle-timeout", DefaultHTTPIdleTimeout, "Idle timeout for HTTP server: how long a keep-alive connection may wait for its next request. 0: -server.http-read-timeout applies.")
}

// setTimeouts applies the -server.http-*-timeout flags to srv; admin servers get no write timeout.
func (c *httpServerConfig) setTimeouts(srv *http.Server, admin bool) {
	srv.ReadTimeout, srv.ReadHeaderTimeout, srv.IdleTimeout = c.ReadTimeout, c.ReadHeaderTimeout, c.IdleTimeout
	srv.WriteTimeout = c.WriteTimeout
	if admin {
		srv.WriteTimeout = 0
	}
}

// TLSEnabled reports whether the HTTP servers serve HTTPS.
func (c *httpServerConfig) TLSEnabled() bool { return c.TLSCertPath != "" || c.TLSKeyPath != "" }

// validateHTTPServer checks -admin.http-addr against the other listeners and the
// -server.http-tls-* flags, naming the flags in its messages.
func (c *Config) validateHTTPServer() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	h := &c.HTTPServer
	for _, d := range []struct {
		flag string
		v    time.Duration
	}{{"-server.http-read-timeout", h.ReadTimeout}, {"-server.http-read-header-timeout", h.ReadHeaderTimeout},
		{"-server.http-write-timeout", h.WriteTimeout}, {"-server.http-idle-timeout", h.IdleTimeout}} {
		if d.v < 0 {
			bad("%s=%s: want zero (none) or more", d.flag, d.v)
		}
	}
	if h.WriteTimeout > 0 && c.Querier.Timeout > h.WriteTimeout {
		// Mimir's rule: a query allowed to run longer than the server may write is cut mid-answer.
		bad("-querier.timeout=%s must not be above -server.http-write-timeout=%s", c.Querier.Timeout, h.WriteTimeout)
	}
	if h.AdminAddr != "" {
		if _, port, err := net.SplitHostPort(h.AdminAddr); err != nil || port == "" {
			bad("-admin.http-addr %q: want host:port (or empty for no admin server)", h.AdminAddr)
		}
		for _, o := range []struct{ flag, v string }{{"-raft.addr", c.RaftAddr}, {"-grpc.addr", c.GRPCAddr}, {"-http.addr", c.HTTPAddr}} {
			if o.v == h.AdminAddr {
				bad("%s and -admin.http-addr are both %q", o.flag, o.v)
			}
		}
	}

	if (h.TLSCertPath == "") != (h.TLSKeyPath == "") {
		bad("-server.http-tls-cert-path and -server.http-tls-key-path must be set together")
	}
	mode, known := clientAuthModes[h.TLSClientAuth]
	if h.TLSClientAuth != "" && !known {
		bad("-server.http-tls-client-auth %q: want one of %s", h.TLSClientAuth, clientAuthNames)
	}
	if !h.TLSEnabled() {
		if h.TLSCAPath != "" || h.TLSClientAuth != "" {
			bad("-server.http-tls-ca-path and -server.http-tls-client-auth need -server.http-tls-cert-path and -server.http-tls-key-path (HTTPS)")
		}
		return errors.Join(errs...)
	}
	if known && (mode == tls.VerifyClientCertIfGiven || mode == tls.RequireAndVerifyClientCert) && h.TLSCAPath == "" {
		bad("-server.http-tls-client-auth=%s verifies client certificates: set -server.http-tls-ca-path to the CA that signs them", h.TLSClientAuth)
	}
	if h.TLSCAPath != "" && mode == tls.NoClientCert && (known || h.TLSClientAuth == "") {
		// As Mimir (exporter-toolkit) refuses it: a CA that verifies nothing is a mistake, not a policy.
		bad("-server.http-tls-ca-path is set but -server.http-tls-client-auth is %q (NoClientCert): set it to VerifyClientCertIfGiven or RequireAndVerifyClientCert, or drop the CA", h.TLSClientAuth)
	}
	for _, p := range []struct{ flag, v string }{{"-server.http-tls-cert-path", h.TLSCertPath}, {"-server.http-tls-key-path", h.TLSKeyPath}, {"-server.http-tls-ca-path", h.TLSCAPath}} {
		if p.v == "" {
			continue
		}
		if _, err := os.Stat(p.v); err != nil {
			bad("%s: %w", p.flag, err)
		}
	}
	return errors.Join(errs...)
}

// httpTLSConfig returns the HTTP servers' TLS configuration, or nil without HTTPS. The certificate
// and the client CA bundle are re-read when their files change (auth.Files): each handshake takes
// the current pair, so a rotated certificate is served without a restart.
func httpTLSConfig(c httpServerConfig) (*tls.Config, error) {
	if !c.TLSEnabled() {
		return nil, nil
	}
	files, err := auth.LoadFiles(c.TLSCertPath, c.TLSKeyPath, c.TLSCAPath)
	if err != nil {
		return nil, fmt.Errorf("-server.http-tls-*: %w", err)
	}
	mode := clientAuthModes[c.TLSClientAuth] // "" is NoClientCert
	base := &tls.Config{
		MinVersion: tls.VersionTLS12,
		ClientAuth: mode,
		NextProtos: []string{"h2", "http/1.1"},
	}
	cfg := base.Clone()
	cfg.GetConfigForClient = func(*tls.ClientHelloInfo) (*tls.Config, error) {
		cert, pool := files.Current()
		hc := base.Clone()
		hc.Certificates = []tls.Certificate{*cert}
		hc.ClientCAs = pool
		return hc, nil
	}
	return cfg, nil
}

// newHTTPServer is an http.Server for h with the timeouts every listener of the node uses and
// its TLS configuration (nil: plain HTTP). Its errors (failed TLS handshakes among them) go to log.
func newHTTPServer(h http.Handler, tlsCfg *tls.Config, log *slog.Logger) *http.Server {
	return &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, TLSConfig: tlsCfg,
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelInfo)}
}

// serveHTTP serves srv on ln, over TLS when srv has a TLS configuration.
func serveHTTP(srv *http.Server, ln net.Listener) error {
	if srv.TLSConfig != nil {
		return srv.ServeTLS(ln, "", "")
	}
	return srv.Serve(ln)
}

// warnPlainHTTP logs a warning for each HTTP listener reachable from other hosts without TLS.
func (s *Server) warnPlainHTTP() {
	if s.cfg.HTTPServer.TLSEnabled() {
		return
	}
	if !isLoopback(s.cfg.HTTPAddr) {
		s.log.Warn("the HTTP server listens on a non-loopback address without TLS: pushes, queries and /metrics travel in clear and anyone who reaches it can read and write every tenant; set -server.http-tls-cert-path and -server.http-tls-key-path (and -server.http-tls-client-auth)",
			"http", s.cfg.HTTPAddr)
	}
	if a := s.cfg.HTTPServer.AdminAddr; a != "" && !isLoopback(a) {
		s.log.Warn("the admin HTTP server listens on a non-loopback address without TLS: anyone who reaches it can make this member leave the ring, flush it, or profile it; keep -admin.http-addr on loopback or set -server.http-tls-* with -server.http-tls-client-auth=RequireAndVerifyClientCert",
			"admin", a)
	}
}
