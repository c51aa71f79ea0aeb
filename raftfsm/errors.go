package raftfsm

import (
	"errors"
	"fmt"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/status"
)

// MaxForwardHops bounds how many times a request may be forwarded between nodes looking for the
// leader. Nodes that briefly disagree about who leads could otherwise bounce a request forever.
const MaxForwardHops = 3

// Errors returned by Node and by the Ring service's clients. Remote calls rebuild them from the gRPC
// status, so errors.Is works the same whether the leader was this node or another.
var (
	// ErrNoLeader means no leader is known right now (an election is under way, or this node cannot
	// reach a quorum). Nothing was applied; retry after a short wait.
	ErrNoLeader = errors.New("raftfsm: no known raft leader")
	// ErrUnknownOutcome means the command may or may not have been committed: leadership was lost
	// after it was proposed, the apply timed out, the node shut down, or the connection to the
	// leader broke mid-call. Retry with the same Command.RequestID: ringstate remembers request ids,
	// so a command that did commit returns its first outcome instead of applying twice.
	ErrUnknownOutcome = errors.New("raftfsm: command outcome unknown")
	// ErrTooManyHops means a request was forwarded more than MaxForwardHops times; nodes disagree on
	// who leads. Retryable.
	ErrTooManyHops = errors.New("raftfsm: request forwarded too many times")
	// ErrUnknownPeer is a peer that is neither in the Raft configuration nor in the ring.
	ErrUnknownPeer = errors.New("raftfsm: unknown peer")
	// ErrPeerExists is a peer id already in the Raft configuration with another address (or an
	// address already used by another id). Remove the old peer first.
	ErrPeerExists = errors.New("raftfsm: peer exists with another address")
	// ErrInvalidPeer is an empty or malformed peer id or an address that is not host:port.
	ErrInvalidPeer = errors.New("raftfsm: invalid peer")
	// ErrLastVoter refuses to remove the only voter: the cluster could never commit again.
	ErrLastVoter = errors.New("raftfsm: cannot remove the last raft voter")
	// ErrRemovedFromCluster means this node's Raft state says it was removed from the cluster: the
	// configuration no longer contains it. It can no longer take part; its Raft state must be wiped
	// (DataDir/raft) before it rejoins with AddPeer, or its stale log would confuse the cluster.
	ErrRemovedFromCluster = errors.New("raftfsm: this node was removed from the raft cluster; wipe its raft data before it rejoins")
	// ErrNotPeer refuses, before anything is proposed, a ring Register for a member that is not
	// in the Raft configuration at the command's raft address (Config.RegisterRequiresPeer): a
	// node removed from the cluster must wipe its Raft state and be added again first.
	ErrNotPeer = errors.New("raftfsm: not a raft peer")
	// ErrAddressChange refuses, before anything is proposed, a Register that would change a live
	// member's gRPC or HTTP address, from a caller that cannot prove it is that member.
	ErrAddressChange = errors.New("raftfsm: refused to change a live member's addresses")
	// ErrShutdown is returned by every method after Shutdown.
	ErrShutdown = errors.New("raftfsm: node is shut down")

	// errNotLeader is internal: the local path found it is not the leader (before anything was
	// proposed), so the caller routes the request to the leader instead.
	errNotLeader = errors.New("raftfsm: not the leader")
)

// Retryable reports whether err is a transient cluster condition after which the same call (with
// the same request id, for commands) may simply be retried.
func Retryable(err error) bool {
	return errors.Is(err, ErrNoLeader) || errors.Is(err, ErrUnknownOutcome) || errors.Is(err, ErrTooManyHops)
}

// wireError is an error rebuilt from a gRPC status: its text is the remote error's text and it
// unwraps to the sentinel the status named, so errors.Is works across the network.
type wireError struct {
	msg      string
	sentinel error
}

func (e *wireError) Error() string { return e.msg }
func (e *wireError) Unwrap() error { return e.sentinel }

// ErrRedirect is the answer of a node that will not forward a request under mutual TLS: a
// forwarded request would carry the forwarding node's identity, not the caller's, so the caller
// must ask the node named in the error itself (see RedirectOf). Nothing was applied.
var ErrRedirect = errors.New("raftfsm: ask another node")

// Redirect metadata keys of the ErrorInfo that carries ErrRedirect.
const (
	redirectIDKey   = "id"
	redirectAddrKey = "grpc_addr"
)

// redirectError is ErrRedirect with the node to ask.
type redirectError struct {
	id, addr, why string
}

func (e *redirectError) Error() string {
	if e.addr == "" {
		return fmt.Sprintf("%s: %s, and its address is not known yet; retry", ErrRedirect, e.why)
	}
	return fmt.Sprintf("%s: %s: ask %s at %s", ErrRedirect, e.why, e.id, e.addr)
}

func (e *redirectError) Unwrap() error { return ErrRedirect }

// RedirectOf reports whether err (a gRPC error from the Ring service, or a Node error) is a
// redirect, and to which node: its member id and gRPC address (empty when the answering node did
// not know it; retry later). ringctl and joining nodes follow it.
func RedirectOf(err error) (id, grpcAddr string, ok bool) {
	var re *redirectError
	if errors.As(err, &re) {
		return re.id, re.addr, true
	}
	st, isStatus := status.FromError(err)
	if !isStatus {
		return "", "", false
	}
	for _, d := range st.Details() {
		if info, isInfo := d.(*errdetails.ErrorInfo); isInfo && info.GetDomain() == errorDomain && info.GetReason() == "REDIRECT" {
			return info.GetMetadata()[redirectIDKey], info.GetMetadata()[redirectAddrKey], true
		}
	}
	return "", "", false
}
