package proc

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"google.golang.org/grpc"

	"github.com/raftingest/raftingest/auth"
	"github.com/raftingest/raftingest/internal/certgen"
)

// EnableTLS turns on mutual TLS for the cluster plane of every node, as an operator would with
// `ringctl tls`: a CA and one certificate per member (its Common Name the member id, its hosts the
// node's address) under Dir/certs, and an operator certificate for the driver's ringctl runs. The
// driver's own gRPC connection to a node presents that node's certificate: it reads the ring and
// queries the node's data as a member would. Call it before the nodes start.
func (c *Cluster) EnableTLS() error {
	dir := filepath.Join(c.Dir, "certs")
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return err
	}
	ca, err := certgen.NewCA("faulttest-ca", 24*time.Hour)
	if err != nil {
		return err
	}
	caPath := filepath.Join(dir, "ca.crt")
	if err := os.WriteFile(caPath, ca.CertPEM, 0o644); err != nil {
		return err
	}
	write := func(name string, cert, key []byte) (auth.Config, error) {
		cfg := auth.Config{CertPath: filepath.Join(dir, name+".crt"), KeyPath: filepath.Join(dir, name+".key"),
			CAPath: caPath, OperatorNames: []string{auth.DefaultOperatorName}}
		return cfg, certgen.WriteFiles(cfg.CertPath, cfg.KeyPath, cert, key, false)
	}
	for _, n := range c.Nodes {
		cert, key, err := ca.IssueNode(n.ID, []string{n.IP}, 12*time.Hour)
		if err != nil {
			return fmt.Errorf("certificate for %s: %w", n.ID, err)
		}
		cfg, err := write(n.ID, cert, key)
		if err != nil {
			return err
		}
		a, err := auth.NewClient(cfg)
		if err != nil {
			return err
		}
		n.mu.Lock()
		n.args = append(n.args, "-tls.cert-path", cfg.CertPath, "-tls.key-path", cfg.KeyPath, "-tls.ca-path", cfg.CAPath)
		id := n.ID
		n.creds = a.DialOption(func(string) string { return id })
		n.mu.Unlock()
	}
	cert, key, err := ca.IssueOperator(auth.DefaultOperatorName, 12*time.Hour)
	if err != nil {
		return err
	}
	op, err := write(auth.DefaultOperatorName, cert, key)
	if err != nil {
		return err
	}
	c.ringctlTLS = []string{"-tls.cert-path", op.CertPath, "-tls.key-path", op.KeyPath, "-tls.ca-path", op.CAPath}
	return nil
}

// Ringctl is bin/ringctl with args, presenting the operator certificate when TLS is on.
func (c *Cluster) Ringctl(ctx context.Context, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, filepath.Join(c.Bin, "ringctl"), append(append([]string(nil), c.ringctlTLS...), args...)...)
}

// dialCreds are the driver's credentials for the node: its own certificate under TLS, else plain.
func (n *Node) dialCreds() grpc.DialOption {
	if n.creds != nil {
		return n.creds
	}
	return insecureCreds
}
