package auth

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
)

// Config is the cluster plane's TLS: -tls.* flags. All three paths or none.
type Config struct {
	CertPath string // -tls.cert-path
	KeyPath  string // -tls.key-path
	CAPath   string // -tls.ca-path
	// OperatorNames are the certificate Common Names that hold operator rights (-tls.operator-names).
	OperatorNames []string
}

// DefaultOperatorName is the Common Name `ringctl tls operator` gives an operator certificate and
// -tls.operator-names lists by default.
const DefaultOperatorName = "operator"

// RegisterFlags registers the -tls.* flags on f.
func (c *Config) RegisterFlags(f *flag.FlagSet) {
	f.StringVar(&c.CertPath, "tls.cert-path", "", "PEM certificate of this node for the cluster plane (Raft, gRPC, ringctl); its Common Name must be -node.id. With -tls.key-path and -tls.ca-path it turns on mutual TLS: plain connections are refused. Re-read when the file changes.")
	f.StringVar(&c.KeyPath, "tls.key-path", "", "PEM private key of -tls.cert-path. Re-read when the file changes.")
	f.StringVar(&c.CAPath, "tls.ca-path", "", "PEM bundle of the CA(s) that sign members' and operators' certificates; only certificates it verifies are accepted. Re-read when the file changes.")
	c.OperatorNames = []string{DefaultOperatorName}
	f.Func("tls.operator-names", "comma-separated certificate Common Names with operator rights: ringctl join, remove, leave of another member, transfer-leadership, Raft membership changes (default \""+DefaultOperatorName+"\")", func(s string) error {
		c.OperatorNames = nil
		for _, n := range strings.Split(s, ",") {
			if n = strings.TrimSpace(n); n != "" {
				c.OperatorNames = append(c.OperatorNames, n)
			}
		}
		return nil
	})
}

// Enabled reports whether mutual TLS is configured.
func (c *Config) Enabled() bool { return c.CertPath != "" || c.KeyPath != "" || c.CAPath != "" }

// Validate checks that the paths come together and the files exist, naming the flags.
func (c *Config) Validate() error {
	if !c.Enabled() {
		return nil
	}
	var errs []error
	for _, p := range []struct{ flag, v string }{{"-tls.cert-path", c.CertPath}, {"-tls.key-path", c.KeyPath}, {"-tls.ca-path", c.CAPath}} {
		if p.v == "" {
			errs = append(errs, fmt.Errorf("%s must be set with the other -tls.* paths (mutual TLS needs a certificate, its key and a CA)", p.flag))
			continue
		}
		if _, err := os.Stat(p.v); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", p.flag, err))
		}
	}
	if len(c.OperatorNames) == 0 {
		errs = append(errs, errors.New("-tls.operator-names is empty: no certificate could run operator commands"))
	}
	return errors.Join(errs...)
}
