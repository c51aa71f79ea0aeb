package raftfsm

import (
	"context"
	"fmt"

	"github.com/raftingest/raftingest/auth"
	"github.com/raftingest/raftingest/ringstate"
)

// Who may do what on the Ring service, under mutual TLS (Config.TLS set; without it every caller is
// anonymous and allowed everything, as before identities existed):
//
//	Apply                a member, for itself only: the command's subject (Member) is the caller,
//	                     but for complete-handover, whose caller is the joiner (Peer), and
//	                     abort-handover, which either side may send; claim-compactor only for
//	                     itself (the compactor lease names its holder, which must be the caller)
//	Join                 an operator; or a member adding itself (-join), not as a forced voter
//	RemovePeer           an operator; or a member removing itself (its own leave)
//	TransferLeadership   an operator
//	Leave                an operator; or the member itself
//	Status, GetRing      any verified certificate
//
// A node never forwards a request it received under TLS: the forward would carry its own identity,
// not the caller's. A follower answers ErrRedirect, naming the leader, and the caller asks it.
// (Reads are forwarded: any member may read the ring.)

// callerKey marks a context as serving an RPC of the Ring service, and carries its caller.
type callerKey struct{}

func withCaller(ctx context.Context, p auth.Principal) context.Context {
	return context.WithValue(ctx, callerKey{}, p)
}

// callerOf returns the RPC caller ctx carries; ok is false for the node's own calls.
func callerOf(ctx context.Context) (p auth.Principal, ok bool) {
	p, ok = ctx.Value(callerKey{}).(auth.Principal)
	return p, ok
}

// mustRedirect reports whether a request in ctx that this node cannot serve itself must be
// redirected instead of forwarded: it came from another identity over TLS.
func (n *Node) mustRedirect(ctx context.Context) bool {
	_, external := callerOf(ctx)
	return external && n.cfg.TLS != nil
}

// redirect is the error that names the leader to ask, for a request this follower does not
// forward.
func (n *Node) redirect(what string) error {
	_, lid := n.raft.LeaderWithID()
	id := string(lid)
	why := fmt.Sprintf("%s is not the raft leader and does not forward %s under mutual TLS", n.cfg.ID, what)
	if id == "" || id == n.cfg.ID {
		return fmt.Errorf("%w: %s", ErrNoLeader, why)
	}
	addr, _ := n.grpcAddr(id)
	return &redirectError{id: id, addr: addr, why: why}
}

// authorizeCommand checks that p may apply cmd (see the table above).
func (n *Node) authorizeCommand(p auth.Principal, cmd *ringstate.Command) error {
	a := n.cfg.TLS
	if a == nil {
		return nil
	}
	asked := fmt.Sprintf("apply %s for member %q", cmd.Op, cmd.Member)
	if cmd.Peer != "" {
		asked += fmt.Sprintf(" with peer %q", cmd.Peer)
	}
	if p.Kind != auth.Node {
		return a.Deny(p, auth.RightSelf, asked+" (only members apply ring commands, each for itself)")
	}
	me := ringstate.MemberID(p.Name)
	var ok bool
	switch cmd.Op {
	case ringstate.OpCompleteHandover:
		ok = cmd.Peer == me
	case ringstate.OpAbortHandover:
		ok = cmd.Member == me || cmd.Peer == me
	default:
		ok = cmd.Member == me
	}
	if !ok {
		return a.Deny(p, auth.RightSelf, asked)
	}
	return nil
}

// authorizeJoin checks that p may add id at raftAddr to the Raft configuration.
func (n *Node) authorizeJoin(p auth.Principal, id, raftAddr string, voter bool) error {
	a := n.cfg.TLS
	if a == nil || p.Kind == auth.Operator || (p.Kind == auth.Node && p.Name == id && !voter) {
		return nil
	}
	asked := fmt.Sprintf("add %q at %s to the raft cluster", id, raftAddr)
	if voter {
		asked += " as a voter"
	}
	return a.Deny(p, auth.RightOperator, asked)
}

// authorizeRemove checks that p may remove id from the ring and the Raft configuration.
func (n *Node) authorizeRemove(p auth.Principal, id string) error {
	a := n.cfg.TLS
	if a == nil || p.Kind == auth.Operator || (p.Kind == auth.Node && p.Name == id) {
		return nil
	}
	return a.Deny(p, auth.RightOperator, fmt.Sprintf("remove %q from the cluster", id))
}

// authorizeOperator checks that p is an operator, for asked.
func (n *Node) authorizeOperator(p auth.Principal, asked string) error {
	a := n.cfg.TLS
	if a == nil || p.Kind == auth.Operator {
		return nil
	}
	return a.Deny(p, auth.RightOperator, asked)
}
