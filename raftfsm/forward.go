package raftfsm

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/raft"

	"github.com/raftingest/raftingest/ringpb"
	"github.com/raftingest/raftingest/ringstate"
)

func route[T any](ctx context.Context, n *Node, hops uint32, what string, local func() (T, error),
	remote func(ctx context.Context, c ringpb.RingClient, hops uint32) (T, error)) (T, error) {
	var zero T
	for attempt := 0; attempt < 3; attempt++ {
		if err := n.Err(); err != nil {
			return zero, err
		}
		if n.raft.State() == raft.Leader {
			v, err := local()
			if errors.Is(err, errNotLeader) {
				continue
			}
			return v, err
		}
		if n.mustRedirect(ctx) {
			return zero, n.redirect(what)
		}
		if hops+1 > MaxForwardHops {
			return zero, fmt.Errorf("%w: %s reached %s after %d hops", ErrTooManyHops, what, n.cfg.ID, hops)
		}
		c, leader, err := n.leaderClient(ctx)
		if errors.Is(err, errNotLeader) { // we became the leader meanwhile
			continue
		}
		if err != nil {
			return zero, err
		}
		fctx, cancel := ctx, context.CancelFunc(func() {})
		if _, ok := ctx.Deadline(); !ok {
			fctx, cancel = context.WithTimeout(ctx, 2*n.cfg.ApplyTimeout)
		}
		v, err := remote(fctx, c, hops+1)
		cancel()
		if errors.Is(err, ErrRedirect) {
			// Under TLS the node we took for the leader no longer leads and does not forward:
			// look for the leader again.
			n.logger.Debug("forwarded request redirected", "op", what, "to", leader, "err", err)
			continue
		}
		if err != nil {
			n.logger.Debug("forwarded request failed", "op", what, "leader", leader, "err", err)
		}
		return v, err
	}
	return zero, fmt.Errorf("%w: leadership kept moving during %s", ErrNoLeader, what)
}

// leaderClient waits (up to two election timeouts, bounded by ctx) for a leader other than this
// node to be known, and returns a client for its Ring service. errNotLeader means this node leads.
func (n *Node) leaderClient(ctx context.Context) (ringpb.RingClient, string, error) {
	deadline := time.Now().Add(2 * n.cfg.ElectionTimeout)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		_, lid := n.raft.LeaderWithID()
		id := string(lid)
		switch {
		case n.raft.State() == raft.Leader:
			return nil, "", errNotLeader
		case id != "" && id != n.cfg.ID:
			addr, err := n.grpcAddr(id)
			if err != nil {
				return nil, id, err
			}
			c, err := n.conns.get(addr)
			if err != nil {
				return nil, id, fmt.Errorf("%w: leader %s at %s: %v", ErrNoLeader, id, addr, err)
			}
			return c, id, nil
		}
		if time.Now().After(deadline) {
			if f := n.raft.GetConfiguration(); f.Error() == nil && len(f.Configuration().Servers) == 0 {
				return nil, "", fmt.Errorf("%w: %s is not in a cluster yet: start it with -join ADDR or run "+
					"`ringctl -addr MEMBER join %s %s`", ErrNoLeader, n.cfg.ID, n.cfg.ID, n.RaftAddr())
			}
			return nil, "", fmt.Errorf("%w (asked %s)", ErrNoLeader, n.cfg.ID)
		}
		select {
		case <-ctx.Done():
			return nil, "", fmt.Errorf("%w (asked %s): %w", ErrNoLeader, n.cfg.ID, ctx.Err())
		case <-tick.C:
		}
	}
}

// grpcAddr finds the Ring service address of server id: the ResolveGRPC hook, else the ring.
func (n *Node) grpcAddr(id string) (string, error) {
	if n.cfg.ResolveGRPC != nil {
		if a, ok := n.cfg.ResolveGRPC(id); ok && a != "" {
			return a, nil
		}
	}
	if m, ok := n.fsm.Ring().Member(ringstate.MemberID(id)); ok && m.GRPCAddr != "" {
		return m.GRPCAddr, nil
	}
	if a := n.knownGRPC(id); a != "" {
		return a, nil
	}
	return "", fmt.Errorf("%w: leader %s has no known gRPC address (not registered yet?)", ErrNoLeader, id)
}

// MemberAt is the member id whose gRPC address is addr, from the ring or the addresses seen
// before; "" when none is known. Under TLS a client of addr (forwarding, and the ingester's
// member clients) requires that member's certificate there.
func (n *Node) MemberAt(addr string) string {
	r := n.fsm.Ring()
	for i := range r.Len() {
		if m := r.MemberAt(i); m.GRPCAddr == addr {
			return string(m.ID)
		}
	}
	n.addrMu.Lock()
	defer n.addrMu.Unlock()
	for id, a := range n.lastGRPC {
		if a == addr {
			return id
		}
	}
	return ""
}

// knownGRPC returns the last gRPC address seen for server id, or "".
func (n *Node) knownGRPC(id string) string {
	n.addrMu.Lock()
	defer n.addrMu.Unlock()
	return n.lastGRPC[id]
}

// learnAddrs records the gRPC addresses of r's members. The FSM calls it after every publish; it
// only reads r.
func (n *Node) learnAddrs(r *ringstate.Ring) {
	n.addrMu.Lock()
	defer n.addrMu.Unlock()
	for i := range r.Len() {
		if m := r.MemberAt(i); m.GRPCAddr != "" {
			n.lastGRPC[string(m.ID)] = m.GRPCAddr
		}
	}
}

// learnAddrsFromLog reads the gRPC addresses that Register commands in the stored log carry. A
// restarted node applies its log only once a leader tells it the commit index; a removed node never
// hears from one, and needs the addresses to ask the others whether it is still a member. Errors
// only mean fewer addresses.
func (n *Node) learnAddrsFromLog() {
	first, err1 := n.store.FirstIndex()
	last, err2 := n.store.LastIndex()
	if err1 != nil || err2 != nil || first == 0 {
		return
	}
	n.addrMu.Lock()
	defer n.addrMu.Unlock()
	for i := first; i <= last; i++ {
		var l raft.Log
		if n.store.GetLog(i, &l) != nil || l.Type != raft.LogCommand {
			continue
		}
		if cmd, err := DecodeCommand(l.Data); err == nil && cmd.Op == ringstate.OpRegister && cmd.GRPCAddr != "" {
			n.lastGRPC[string(cmd.Member)] = cmd.GRPCAddr
		}
	}
}
