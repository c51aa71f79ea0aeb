package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/raftingest/raftingest/auth"
	"github.com/raftingest/raftingest/raftfsm"
	"github.com/raftingest/raftingest/ringpb"
)

// setupTLS checks the -tls.* flags (after their environment fallbacks) and makes o.authority; it
// leaves it nil when none is set. Its errors are usage errors: they name the flag or the file,
// and nothing has been sent.
func (c *cli) setupTLS(o *options) error {
	cfg := o.tls
	if !cfg.Enabled() {
		return nil
	}
	// The client needs no operator list of its own, but auth refuses an empty one; with the
	// default, a server presenting an operator's certificate is refused as no member.
	cfg.OperatorNames = []string{auth.DefaultOperatorName}
	note := ""
	if c.getenv(tlsCertEnv) != "" || c.getenv(tlsKeyEnv) != "" || c.getenv(tlsCAEnv) != "" {
		note = fmt.Sprintf(" (the -tls.* flags default to $%s, $%s and $%s)", tlsCertEnv, tlsKeyEnv, tlsCAEnv)
	}
	a, err := auth.NewClient(cfg)
	if err != nil {
		return usagef("%s%s", oneLine(err), note)
	}
	if err := checkClientCert(cfg.CertPath, cfg.KeyPath, time.Now()); err != nil {
		return usagef("%v%s", err, note)
	}
	o.authority = a
	return nil
}

// checkClientCert refuses, before any connection, a certificate every node would refuse with an
// opaque "bad certificate": one that may not authenticate a client, or that is not valid now.
func checkClientCert(certPath, keyPath string, now time.Time) error {
	pair, err := tls.LoadX509KeyPair(certPath, keyPath)
	if err != nil {
		return fmt.Errorf("-tls.cert-path %s with -tls.key-path %s: %v", certPath, keyPath, err)
	}
	leaf := pair.Leaf
	if leaf == nil {
		if leaf, err = x509.ParseCertificate(pair.Certificate[0]); err != nil {
			return fmt.Errorf("-tls.cert-path %s: %v", certPath, err)
		}
	}
	if len(leaf.ExtKeyUsage) > 0 && !slices.Contains(leaf.ExtKeyUsage, x509.ExtKeyUsageClientAuth) &&
		!slices.Contains(leaf.ExtKeyUsage, x509.ExtKeyUsageAny) {
		return fmt.Errorf("-tls.cert-path %s: certificate %q cannot authenticate a client (its extended key usages lack clientAuth); make one with 'ringctl tls operator'",
			certPath, leaf.Subject.CommonName)
	}
	if now.After(leaf.NotAfter) {
		return fmt.Errorf("-tls.cert-path %s: certificate %q expired on %s; make a new one with 'ringctl tls operator -force'",
			certPath, leaf.Subject.CommonName, leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	if now.Before(leaf.NotBefore) {
		return fmt.Errorf("-tls.cert-path %s: certificate %q is not valid before %s (is this machine's clock right?)",
			certPath, leaf.Subject.CommonName, leaf.NotBefore.UTC().Format(time.RFC3339))
	}
	return nil
}

// oneLine joins the lines of an errors.Join into one.
func oneLine(err error) string { return strings.ReplaceAll(err.Error(), "\n", "; ") }

// dial returns a client for addr, over mutual TLS when o.authority is set. member, when not
// empty, is the member id the node at addr must present in its certificate (the leaver, or the
// leader a redirect named); otherwise any member of the cluster's CA will do, as -addr may be
// any node. grpc.NewClient does not connect: the first RPC does, once, and fails fast when nobody
// listens. Retries are disabled: an admin command is one RPC, and a change whose answer was lost
// must be looked at by the operator, not sent again behind their back.
func dial(o *options, addr, member string) (ringpb.RingClient, func(), error) {
	var expect func(string) string
	if member != "" {
		expect = func(string) string { return member }
	}
	conn, err := grpc.NewClient(addr, o.authority.DialOption(expect), grpc.WithDisableRetry())
	if err != nil {
		return nil, nil, fmt.Errorf("cannot reach %s: %v (check -addr)", addr, err)
	}
	return ringpb.NewRingClient(conn), func() { _ = conn.Close() }, nil
}

// call sends one request to addr and follows redirects: a node that will not forward the request
// (under mutual TLS a forwarded request would carry the node's identity, not the operator's)
// answers with the node to ask instead (raftfsm.RedirectOf), and call asks that node, at most
// maxRedirects times. A redirect means nothing was applied, so following it never repeats a
// change whose outcome is unknown. ctx bounds the whole, redirects included. call returns the
// answer and the address that gave it, or the error of the last node asked, ready to print
// (timeout is the bound it names).
func call[T any](ctx context.Context, o *options, addr, member string, timeout time.Duration,
	rpc func(context.Context, ringpb.RingClient) (T, error)) (T, string, error) {
	var zero T
	redirects, waits := 0, 0
	for {
		cl, closeConn, err := dial(o, addr, member)
		if err != nil {
			return zero, addr, err
		}
		resp, err := rpc(ctx, cl)
		closeConn()
		if err == nil {
			return resp, addr, nil
		}
		id, next, ok := raftfsm.RedirectOf(err)
		switch {
		case !ok:
			return zero, addr, o.rpcError(addr, timeout, err)
		case next == "":
			// The node knows who leads but not yet where: ask it again shortly.
			if waits >= maxRedirectWaits {
				return zero, addr, fmt.Errorf("%s (from %s); still no address for the leader after %d tries, retry later",
					status.Convert(err).Message(), addr, waits)
			}
			waits++
			t := time.NewTimer(redirectWait)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				return zero, addr, o.rpcError(addr, timeout, status.FromContextError(ctx.Err()).Err())
			}
		default:
			if redirects >= maxRedirects {
				return zero, addr, fmt.Errorf("%s (from %s); gave up after %d redirects: the nodes disagree on who leads, retry shortly",
					status.Convert(err).Message(), addr, redirects)
			}
			redirects++
			addr, member = next, id
		}
	}
}

// unreachableError is a node nobody answers for: nothing listens, no route, a name that does not
// resolve.
type unreachableError struct{ addr, reason string }

func (e *unreachableError) Error() string {
	return fmt.Sprintf("cannot reach %s: %s (is the node running? -addr)", e.addr, e.reason)
}

// rpcError turns a gRPC error into the one line an operator needs: which node, what happened, and,
// for errors the server sent, its message (a PermissionDenied names the identity and the right
// it lacks). A TLS mismatch between ringctl and the node gets the hint of what to change.
func (o *options) rpcError(addr string, timeout time.Duration, err error) error {
	st, ok := status.FromError(err)
	if !ok {
		return fmt.Errorf("%s: %v", addr, err)
	}
	msg := st.Message()
	if st.Code() == codes.Unavailable {
		if hint := o.portHint(addr, msg); hint != nil {
			return hint
		}
		if hint := o.tlsHint(addr, msg); hint != nil {
			return hint
		}
	}
	switch st.Code() {
	case codes.Unavailable:
		if isConnError(msg) {
			return &unreachableError{addr: addr, reason: dialReason(msg)}
		}
	case codes.DeadlineExceeded:
		return fmt.Errorf("no answer from %s within %s (%s); the operation may still complete — check with 'ringctl status' and 'ringctl ring', or raise -timeout",
			addr, timeout, msg)
	case codes.Canceled:
		return fmt.Errorf("canceled while waiting for %s", addr)
	}
	return fmt.Errorf("%s (%s from %s)", msg, st.Code(), addr)
}

// portHint recognises a node's other ports answering ringctl's gRPC call, and names the port to
// use; nil for any other failure. The HTTP port answers the HTTP/2 preface in HTTP/1.1. The Raft
// port closes the connection without a word, which is also how a TLS node meets a plain client:
// without TLS of our own, a TLS handshake probe tells the two apart.
func (o *options) portHint(addr, msg string) error {
	for _, s := range []string{"HTTP/1.1", "frame too large", "malformed HTTP"} {
		if strings.Contains(msg, s) {
			return fmt.Errorf("%s answered in HTTP/1.1, not gRPC: it looks like a node's HTTP port (-http.addr); -addr takes a node's gRPC port (-grpc.addr, %s by default)",
				addr, defaultAddr)
		}
	}
	if o.authority != nil {
		return nil
	}
	for _, s := range []string{"server preface: EOF", "server preface: connection reset by peer", "closed before server preface"} {
		if strings.Contains(msg, s) {
			if speaksTLS(addr, time.Second) {
				return nil // tlsHint says what to pass
			}
			return fmt.Errorf("%s closed the connection without answering gRPC or TLS: it looks like a node's Raft port (-raft.addr); -addr takes a node's gRPC port (-grpc.addr, %s by default)",
				addr, defaultAddr)
		}
	}
	return nil
}

// speaksTLS reports whether a TLS server answers at addr: the handshake completes, or fails with
// an alert the server sent (a node refusing a client without a certificate). It verifies nothing:
// it only asks which protocol the port speaks, and sends no request.
func speaksTLS(addr string, timeout time.Duration) bool {
	d := &net.Dialer{Timeout: timeout}
	conn, err := tls.DialWithDialer(d, "tcp", addr, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"h2"}}) //nolint:gosec // a protocol probe, no data is exchanged
	if err == nil {
		_ = conn.Close()
		return true
	}
	var alert tls.AlertError
	return errors.As(err, &alert) || strings.Contains(err.Error(), "remote error: tls")
}

// tlsHint recognises a connection that failed because ringctl and the node disagree about TLS,
// and says what to change; nil for any other failure.
//
// A plain client meets a TLS node as a connection the node closes without a word (its TLS stack
// reads our HTTP/2 preface as a broken handshake): `error reading server preface: EOF`, or a
// reset when our preface was still unread. A TLS client meets a plain node as an answer that is
// no TLS record. Between two TLS ends, the handshake fails with crypto/tls's or auth's reason
// (an unknown CA, a certificate refused, an unexpected member), or the node just closes the
// connection.
func (o *options) tlsHint(addr, msg string) error {
	if o.authority == nil {
		for _, s := range []string{"server preface: EOF", "server preface: connection reset by peer", "closed before server preface", "tls:", "authentication handshake failed"} {
			if strings.Contains(msg, s) {
				return fmt.Errorf("%s requires TLS: pass -tls.cert-path, -tls.key-path and -tls.ca-path (or $%s, $%s, $%s)",
					addr, tlsCertEnv, tlsKeyEnv, tlsCAEnv)
			}
		}
		return nil
	}
	if strings.Contains(msg, "first record does not look like a TLS handshake") {
		return fmt.Errorf("%s does not speak TLS: the node runs without -tls.* flags; call it without -tls.cert-path, -tls.key-path and -tls.ca-path (and $%s, $%s, $%s)",
			addr, tlsCertEnv, tlsKeyEnv, tlsCAEnv)
	}
	for _, s := range []string{"broken pipe", "connection reset by peer", "server preface: EOF", "closed before server preface"} {
		if strings.Contains(msg, s) {
			// Under TLS 1.3 a client learns that its certificate was refused only after its
			// side of the handshake is done, and often as a closed connection, not the alert.
			return fmt.Errorf("%s closed the TLS connection (%s): the node probably refused our certificate; is -tls.cert-path signed by the cluster's CA, and valid?",
				addr, dialReason(msg))
		}
	}
	i := strings.Index(msg, "tls: ")
	if j := strings.Index(msg, "auth: "); j >= 0 && (i < 0 || j < i) {
		i = j
	}
	if i < 0 {
		return nil
	}
	// The reason sits inside gRPC's quoted `desc = "..."`: unquote it.
	reason := strings.ReplaceAll(strings.TrimSuffix(msg[i:], `"`), `\"`, `"`)
	hint := ""
	switch {
	case strings.Contains(reason, "not signed by"), strings.Contains(reason, "unknown authority"):
		hint = "; is -tls.ca-path the CA that signed the nodes' certificates?"
	case strings.Contains(reason, "unknown certificate authority"), strings.Contains(reason, "bad certificate"),
		strings.Contains(reason, "certificate required"), strings.Contains(reason, "unsupported certificate"):
		hint = "; the node refused our certificate: is -tls.cert-path signed by the cluster's CA, and valid?"
	case strings.Contains(reason, "expired certificate"), strings.Contains(reason, "certificate has expired"):
		hint = "; renew it with 'ringctl tls operator -force' (or 'ringctl tls node ID -force')"
	}
	return fmt.Errorf("TLS handshake with %s failed: %s%s", addr, reason, hint)
}

// isConnError tells a connection failure (produced by the client) from an Unavailable the server
// chose to send, such as "no leader".
func isConnError(msg string) bool {
	for _, s := range []string{"connection error", "transport:", "error reading from server", "connection closed",
		"name resolver", "produced zero addresses", "connection refused"} {
		if strings.Contains(msg, s) {
			return true
		}
	}
	return false
}

// dialReason extracts the operating system's reason from a gRPC connection error, e.g.
// `connection error: desc = "transport: Error while dialing: dial tcp 127.0.0.1:9095: connect:
// connection refused"` becomes "connection refused".
func dialReason(msg string) string {
	m := strings.TrimRight(msg, `"`)
	if i := strings.LastIndex(m, ": "); i >= 0 && i+2 < len(m) {
		return m[i+2:]
	}
	return msg
}
