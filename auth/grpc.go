package auth

import (
	"context"
	"fmt"
	"net"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// ServerCredentials are the gRPC server's transport credentials: mutual TLS with ServerTLS, or
// plain when a is nil.
func (a *Authority) ServerCredentials() credentials.TransportCredentials {
	if a == nil {
		return insecure.NewCredentials()
	}
	return credentials.NewTLS(a.ServerTLS([]string{"h2"}, nil))
}

// ServerOption is the grpc.ServerOption of ServerCredentials.
func (a *Authority) ServerOption() grpc.ServerOption { return grpc.Creds(a.ServerCredentials()) }

// DialOption is the grpc.DialOption of every cluster-plane client: plain when a is nil, else mutual
// TLS with ClientTLS, expecting at each address the member expect(address) names (any member when
// expect is nil or returns "").
func (a *Authority) DialOption(expect func(addr string) string) grpc.DialOption {
	if a == nil {
		return grpc.WithTransportCredentials(insecure.NewCredentials())
	}
	return grpc.WithTransportCredentials(&clientCreds{a: a, expect: expect, TransportCredentials: credentials.NewTLS(a.ClientTLS(""))})
}

// clientCreds is grpc's TLS client credentials with a tls.Config made per connection, so that the
// member expected at the dialed address is checked in the handshake.
type clientCreds struct {
	credentials.TransportCredentials // Info, and the server side (never used)
	a                                *Authority
	expect                           func(addr string) string
}

func (c *clientCreds) ClientHandshake(ctx context.Context, authority string, raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	want := ""
	if c.expect != nil {
		want = c.expect(authority)
	}
	return credentials.NewTLS(c.a.ClientTLS(want)).ClientHandshake(ctx, authority, raw)
}

func (c *clientCreds) Clone() credentials.TransportCredentials {
	return &clientCreds{TransportCredentials: c.TransportCredentials.Clone(), a: c.a, expect: c.expect}
}

// Caller is the principal of the gRPC call ctx belongs to: from the verified client certificate,
// Anonymous when a is nil.
func (a *Authority) Caller(ctx context.Context) Principal {
	if a == nil {
		return Principal{}
	}
	p, ok := peer.FromContext(ctx)
	if !ok {
		return Principal{}
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(info.State.VerifiedChains) == 0 || len(info.State.VerifiedChains[0]) == 0 {
		return Principal{}
	}
	return a.principal(info.State.VerifiedChains[0][0])
}

// Enabled reports whether a enforces identities (a is not nil).
func (a *Authority) Enabled() bool { return a != nil }

// The rights, as refusals name them and raftingest_auth_refused_total counts them.
const (
	// RightOperator: ringctl join, remove, leave of another member, transfer-leadership.
	RightOperator = "operator"
	// RightSelf: act on the ring as the member the certificate names, and as no other.
	RightSelf = "act-as-member"
	// RightMember: a member's calls to another member (Push, QueryStream, ring reads).
	RightMember = "member"
	// RightHandover: stream a hand-over into this node (only the leaver the ring pairs it with).
	RightHandover = "handover"
)

// Deny counts and logs a refusal and returns its PermissionDenied error, whose message names the
// identity, the right it lacks and what it asked for.
func (a *Authority) Deny(p Principal, right, asked string) error {
	msg := fmt.Sprintf("permission denied: %s lacks the right %q to %s", p, right, asked)
	if a != nil {
		if a.refused != nil {
			a.refused.WithLabelValues(right).Inc()
		}
		a.log.Warn("request refused", "principal", p.String(), "right", right, "asked", asked)
	}
	return status.Error(codes.PermissionDenied, msg)
}
