package auth

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// Kind is what an identity is.
type Kind uint8

const (
	// Anonymous is a caller without a verified certificate: every caller when TLS is off.
	Anonymous Kind = iota
	// Node is a member: a certificate whose Common Name is not an operator name.
	Node
	// Operator is a certificate whose Common Name is listed in -tls.operator-names.
	Operator
)

// Principal is the identity of a caller, from its verified certificate.
type Principal struct {
	Name string // the certificate's Common Name; empty for Anonymous
	Kind Kind
}

// String names the principal as refusals and logs show it: "node a", "operator alice", "anonymous".
func (p Principal) String() string {
	switch p.Kind {
	case Node:
		return "node " + p.Name
	case Operator:
		return "operator " + p.Name
	}
	return "anonymous (no certificate)"
}

// Authority holds the cluster plane's certificates and who may do what. A nil *Authority is a
// cluster without TLS: its methods answer as if everyone were allowed and every caller Anonymous.
//
// Safe for concurrent use; immutable after New but for the files it re-reads.
type Authority struct {
	files     *Files
	operators []string
	log       *slog.Logger

	refused *prometheus.CounterVec
	reloads prometheus.CounterFunc
	expiry  prometheus.GaugeFunc

	// reloadSeen and errSeen are what current logged last, so that each reload and each new reload
	// failure is logged once.
	mu         sync.Mutex
	reloadSeen int
	errSeen    string
}

// New loads cfg's files for a node whose member id is self: the certificate's Common Name must be
// self, and it must be usable both to serve and to dial (extended key usages serverAuth and
// clientAuth), as `ringctl tls node` makes it. It returns nil, nil when cfg does not enable TLS.
// Metrics go to reg when it is not nil.
func New(cfg Config, self string, reg prometheus.Registerer, log *slog.Logger) (*Authority, error) {
	if !cfg.Enabled() {
		return nil, nil
	}
	a, err := newAuthority(cfg, log)
	if err != nil {
		return nil, err
	}
	leaf, _ := a.files.Current()
	if cn := leaf.Leaf.Subject.CommonName; cn != self {
		return nil, fmt.Errorf("-tls.cert-path %s: its Common Name is %q, not this node's id %q (-node.id): a node's certificate names the member it is", cfg.CertPath, cn, self)
	}
	if slices.Contains(a.operators, self) {
		return nil, fmt.Errorf("-node.id %q is listed in -tls.operator-names: a member id cannot be an operator name", self)
	}
	for _, u := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
		if !hasUsage(leaf.Leaf, u) {
			return nil, fmt.Errorf("-tls.cert-path %s: a node certificate needs the extended key usages serverAuth and clientAuth (make one with `ringctl tls node %s`)", cfg.CertPath, self)
		}
	}
	a.register(reg)
	return a, nil
}

// NewClient loads cfg's files for a client that only dials (ringctl): no identity is required of
// its own certificate. It returns nil, nil when cfg does not enable TLS.
func NewClient(cfg Config) (*Authority, error) {
	if !cfg.Enabled() {
		return nil, nil
	}
	return newAuthority(cfg, nil)
}

func newAuthority(cfg Config, log *slog.Logger) (*Authority, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	files, err := LoadFiles(cfg.CertPath, cfg.KeyPath, cfg.CAPath)
	if err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Authority{files: files, operators: slices.Clone(cfg.OperatorNames), log: log}, nil
}

func hasUsage(c *x509.Certificate, u x509.ExtKeyUsage) bool {
	return len(c.ExtKeyUsage) == 0 || slices.Contains(c.ExtKeyUsage, u) || slices.Contains(c.ExtKeyUsage, x509.ExtKeyUsageAny)
}

func (a *Authority) register(reg prometheus.Registerer) {
	a.refused = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "raftingest_auth_refused_total",
		Help: "Requests refused with PermissionDenied because the caller's identity lacks the right, by right.",
	}, []string{"right"})
	a.reloads = prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "raftingest_tls_certificate_reloads_total",
		Help: "Times the cluster-plane certificate, key and CA files were re-read after they changed.",
	}, func() float64 { return float64(a.files.Reloads()) })
	a.expiry = prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "raftingest_tls_certificate_expiry_timestamp_seconds",
		Help: "When the cluster-plane certificate in use expires (Unix seconds).",
	}, func() float64 { c, _ := a.current(); return float64(c.Leaf.NotAfter.Unix()) })
	if reg != nil {
		reg.MustRegister(a.refused, a.reloads, a.expiry)
	}
}

// current returns the certificate and CA pool in use, logging a reload or a failed one once.
func (a *Authority) current() (*tls.Certificate, *x509.CertPool) {
	cert, pool := a.files.Current()
	n, err := a.files.Reloads(), a.files.Err()
	a.mu.Lock()
	defer a.mu.Unlock()
	if n != a.reloadSeen {
		a.reloadSeen = n
		a.log.Info("tls certificates reloaded", "cert", a.files.certPath, "not_after", cert.Leaf.NotAfter)
	}
	if msg := errString(err); msg != a.errSeen {
		a.errSeen = msg
		if err != nil {
			a.log.Warn("tls certificates changed on disk but could not be loaded; the previous ones stay in use", "err", err)
		}
	}
	return cert, pool
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// principal classifies a verified leaf certificate.
func (a *Authority) principal(leaf *x509.Certificate) Principal {
	cn := leaf.Subject.CommonName
	if slices.Contains(a.operators, cn) {
		return Principal{Name: cn, Kind: Operator}
	}
	return Principal{Name: cn, Kind: Node}
}

// verify checks a peer's chain against the CA pool in use for usage, and returns the leaf.
func (a *Authority) verify(chain []*x509.Certificate, usage x509.ExtKeyUsage) (*x509.Certificate, error) {
	if len(chain) == 0 {
		return nil, errors.New("auth: the peer presented no certificate")
	}
	_, pool := a.current()
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	if _, err := chain[0].Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{usage}}); err != nil {
		return nil, fmt.Errorf("auth: certificate %q is not signed by -tls.ca-path's CA: %w", chain[0].Subject.CommonName, err)
	}
	return chain[0], nil
}

// minVersion is the oldest TLS the cluster plane speaks: every client of it is ours.
const minVersion = tls.VersionTLS13

// ServerTLS is the tls.Config of a cluster-plane listener. It presents the certificate in use and
// accepts only clients whose certificate the CA in use verifies for client authentication; then
// check, when not nil, may refuse the client's principal (the handshake fails with its error).
// nextProtos are the ALPN protocols offered ("h2" for gRPC).
func (a *Authority) ServerTLS(nextProtos []string, check func(Principal) error) *tls.Config {
	return &tls.Config{
		MinVersion: minVersion,
		NextProtos: nextProtos,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			cert, pool := a.current()
			return &tls.Config{
				MinVersion:   minVersion,
				NextProtos:   nextProtos,
				Certificates: []tls.Certificate{*cert},
				ClientAuth:   tls.RequireAndVerifyClientCert,
				ClientCAs:    pool,
				VerifyConnection: func(cs tls.ConnectionState) error {
					if len(cs.VerifiedChains) == 0 || len(cs.VerifiedChains[0]) == 0 {
						return errors.New("auth: no verified client certificate")
					}
					if check == nil {
						return nil
					}
					return check(a.principal(cs.VerifiedChains[0][0]))
				},
			}, nil
		},
	}
}

// ClientTLS is the tls.Config of a cluster-plane client. It presents the certificate in use and
// accepts only a server whose certificate the CA in use verifies for server authentication and
// whose Common Name is a node's: expect when it is not empty (the member the caller means to
// reach), any member otherwise. Host names are not checked: a member is who its certificate
// names, wherever it listens.
func (a *Authority) ClientTLS(expect string) *tls.Config {
	return &tls.Config{
		MinVersion: minVersion,
		// The chain and the identity are verified below, against the CA in use (it may have rotated
		// since this config was made) and the member id; the host name is not what we trust.
		InsecureSkipVerify: true, //nolint:gosec
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			cert, _ := a.current()
			return cert, nil
		},
		VerifyConnection: func(cs tls.ConnectionState) error {
			leaf, err := a.verify(cs.PeerCertificates, x509.ExtKeyUsageServerAuth)
			if err != nil {
				return err
			}
			p := a.principal(leaf)
			if p.Kind != Node {
				return fmt.Errorf("auth: the server presented %s's certificate, not a member's", p)
			}
			if expect != "" && p.Name != expect {
				return fmt.Errorf("auth: the server presented the certificate of member %q, not of %q", p.Name, expect)
			}
			return nil
		},
	}
}
