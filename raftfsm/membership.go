package raftfsm

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/raft"

	"github.com/raftingest/raftingest/ringpb"
	"github.com/raftingest/raftingest/ringstate"
)

// AddPeer adds server id at raftAddr to the Raft cluster: as a voter while there are fewer than
// -raft.max-voters voters or when forceVoter is set, else as a non-voter (promoted later by the
// leader's voter management). It returns whether the peer is a voter. Idempotent for the same id and
// address (a non-voter added again with forceVoter is promoted); an id already present with another
// address, or an address used by another id, is refused with ErrPeerExists.
func (n *Node) AddPeer(ctx context.Context, id, raftAddr string, forceVoter bool) (voter bool, err error) {
	_, voter, err = n.addPeer(ctx, id, raftAddr, forceVoter, 0)
	return voter, err
}

type joinResult struct {
	index uint64
	voter bool
}

func (n *Node) addPeer(ctx context.Context, id, raftAddr string, forceVoter bool, hops uint32) (uint64, bool, error) {
	if err := checkID(id); err != nil {
		return 0, false, fmt.Errorf("%w: %v", ErrInvalidPeer, err)
	}
	if host, port, err := net.SplitHostPort(raftAddr); err != nil || host == "" || port == "" {
		return 0, false, fmt.Errorf("%w: %s: raft address %q is not host:port", ErrInvalidPeer, id, raftAddr)
	}
	r, err := route(ctx, n, hops, "add peer",
		func() (joinResult, error) { return n.addPeerLocal(ctx, id, raftAddr, forceVoter) },
		func(ctx context.Context, c ringpb.RingClient, h uint32) (joinResult, error) {
			resp, err := c.Join(ctx, &ringpb.JoinRequest{Id: id, RaftAddr: raftAddr, Voter: forceVoter, Hops: h})
			if err != nil {
				return joinResult{}, fromStatus(err, true)
			}
			return joinResult{index: resp.GetIndex(), voter: resp.GetVoter()}, nil
		})
	return r.index, r.voter, err
}

// configuration reads the latest Raft configuration (committed or not) and its index.
func (n *Node) configuration(ctx context.Context) (raft.Configuration, uint64, error) {
	f := n.raft.GetConfiguration()
	if err := wait(ctx, f, n.timeout(ctx)); err != nil {
		return raft.Configuration{}, 0, fmt.Errorf("raftfsm: read raft configuration: %w", err)
	}
	return f.Configuration(), f.Index(), nil
}

func (n *Node) addPeerLocal(ctx context.Context, id, raftAddr string, forceVoter bool) (joinResult, error) {
	n.confMu.Lock()
	defer n.confMu.Unlock()
	for attempt := 0; ; attempt++ {
		conf, prev, err := n.configuration(ctx)
		if err != nil {
			return joinResult{}, err
		}
		voters := 0
		promote := false
		for _, s := range conf.Servers {
			if s.Suffrage == raft.Voter {
				voters++
			}
		}
		for _, s := range conf.Servers {
			switch {
			case string(s.ID) == id && string(s.Address) != raftAddr:
				return joinResult{}, fmt.Errorf("%w: %s is in the raft configuration at %s, not %s (remove it first)",
					ErrPeerExists, id, s.Address, raftAddr)
			case string(s.ID) == id:
				if s.Suffrage == raft.Voter || !forceVoter {
					// The latest configuration may not be committed yet (an AddVoter whose outcome
					// was unknown): confirm it before reporting success.
					if err := n.barrier(ctx); err != nil {
						return joinResult{}, err
					}
					return joinResult{index: prev, voter: s.Suffrage == raft.Voter}, nil
				}
				promote = true
			case string(s.Address) == raftAddr:
				return joinResult{}, fmt.Errorf("%w: raft address %s is used by %s, not %s (remove it first)",
					ErrPeerExists, raftAddr, s.ID, id)
			}
		}
		voter := forceVoter || voters < n.cfg.MaxVoters
		timeout := n.timeout(ctx)
		var f raft.IndexFuture
		if voter {
			f = n.raft.AddVoter(raft.ServerID(id), raft.ServerAddress(raftAddr), prev, timeout)
		} else {
			f = n.raft.AddNonvoter(raft.ServerID(id), raft.ServerAddress(raftAddr), prev, timeout)
		}
		err = wait(ctx, f, timeout)
		switch {
		case err == nil:
			n.logger.Info("added raft peer", "peer", id, "raft_addr", raftAddr, "voter", voter, "promoted", promote,
				"voters", voters+btoi(voter && !promote), "index", f.Index())
			n.poke()
			return joinResult{index: f.Index(), voter: voter}, nil
		case errors.Is(err, raft.ErrNotLeader):
			return joinResult{}, errNotLeader
		case strings.Contains(err.Error(), "configuration changed since") && attempt < 5:
			continue // another change won the compare-and-set on the configuration index; re-read
		}
		return joinResult{}, fmt.Errorf("%w: add peer %s: %w", ErrUnknownOutcome, id, err)
	}
}

// barrier waits, on the leader, until every entry before it is committed and applied.
func (n *Node) barrier(ctx context.Context) error {
	timeout := n.timeout(ctx)
	if err := wait(ctx, n.raft.Barrier(timeout), timeout); err != nil {
		if errors.Is(err, raft.ErrNotLeader) {
			return errNotLeader
		}
		return fmt.Errorf("%w: barrier: %w", ErrUnknownOutcome, err)
	}
	return nil
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// RemovePeer forgets server id: it removes its ring member (OpRemove; absent members are fine) and
// then its Raft server. Removing the leader transfers leadership first and lets the new leader do
// it. Refused: an id in neither the ring nor the configuration (ErrUnknownPeer), and the last voter
// (ErrLastVoter). The removed node, if alive, learns it with ErrRemovedFromCluster.
func (n *Node) RemovePeer(ctx context.Context, id string) error {
	_, err := n.removePeer(ctx, id, 0)
	return err
}

func (n *Node) removePeer(ctx context.Context, id string, hops uint32) (uint64, error) {
	if id == "" {
		return 0, fmt.Errorf("%w: empty id", ErrInvalidPeer)
	}
	return route(ctx, n, hops, "remove peer",
		func() (uint64, error) { return n.removePeerLocal(ctx, id, hops) },
		func(ctx context.Context, c ringpb.RingClient, h uint32) (uint64, error) {
			resp, err := c.RemovePeer(ctx, &ringpb.RemovePeerRequest{Id: id, Hops: h})
			if err != nil {
				return 0, fromStatus(err, true)
			}
			return resp.GetIndex(), nil
		})
}

func (n *Node) removePeerLocal(ctx context.Context, id string, hops uint32) (uint64, error) {
	n.confMu.Lock()
	locked := true
	defer func() {
		if locked {
			n.confMu.Unlock()
		}
	}()
	// Read the ring and the configuration only once every committed entry is applied here: a new
	// leader may not have applied the latest ring yet.
	if err := n.barrier(ctx); err != nil {
		return 0, err
	}
	conf, _, err := n.configuration(ctx)
	if err != nil {
		return 0, err
	}
	voters := 0
	var srv *raft.Server
	for i, s := range conf.Servers {
		if s.Suffrage == raft.Voter {
			voters++
		}
		if string(s.ID) == id {
			srv = &conf.Servers[i]
		}
	}
	if srv != nil && srv.Suffrage == raft.Voter && voters == 1 {
		return 0, fmt.Errorf("%w: %s", ErrLastVoter, id)
	}
	if id == n.cfg.ID {
		// The leader cannot remove itself cleanly: hand leadership over, then let the new leader
		// remove us (the request counts as one more hop).
		n.confMu.Unlock()
		locked = false
		if _, err := n.transferLocal(ctx, ""); err != nil {
			return 0, fmt.Errorf("raftfsm: remove leader %s: transfer leadership first: %w", id, err)
		}
		return n.removePeer(ctx, id, hops+1)
	}
	_, inRing := n.fsm.Ring().Member(ringstate.MemberID(id))
	if srv == nil && !inRing {
		return 0, fmt.Errorf("%w: %s is neither in the raft configuration nor in the ring", ErrUnknownPeer, id)
	}
	var index uint64
	if inRing {
		cmd := ringstate.Command{Op: ringstate.OpRemove, Member: ringstate.MemberID(id),
			RequestID: "raftfsm-remove-" + id + "-" + randomID()}
		data, err := EncodeCommand(cmd)
		if err != nil {
			return 0, err
		}
		// The request id is made here, so only this leader can record the command in its history.
		call := n.historyInvoke(HistoryClientRemovePeer, cmd)
		index, err = n.leaderApply(ctx, data)
		n.historyReturn(call, index, err)
		if err != nil && !errors.Is(err, ringstate.ErrUnknownMember) {
			return 0, fmt.Errorf("raftfsm: remove ring member %s: %w", id, err)
		}
	}
	if srv != nil {
		timeout := n.timeout(ctx)
		f := n.raft.RemoveServer(srv.ID, 0, timeout)
		if err := wait(ctx, f, timeout); err != nil {
			if errors.Is(err, raft.ErrNotLeader) {
				return 0, errNotLeader
			}
			return 0, fmt.Errorf("%w: remove raft server %s: %w", ErrUnknownOutcome, id, err)
		}
		index = f.Index()
		n.trans.forget(srv.ID)
	}
	n.lastRemoval.Store(time.Now())
	n.logger.Info("removed peer", "peer", id, "from_ring", inRing, "from_raft", srv != nil, "index", index)
	n.poke()
	return index, nil
}

func randomID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// TransferLeadership hands leadership to voter id, or to the most up-to-date voter Raft picks when
// id is empty, and returns the new leader's id once it is known. Forwarded to the leader when this
// node does not lead; asking the leader to transfer to itself does nothing.
func (n *Node) TransferLeadership(ctx context.Context, id string) (string, error) {
	return n.transfer(ctx, id, 0)
}

func (n *Node) transfer(ctx context.Context, id string, hops uint32) (string, error) {
	return route(ctx, n, hops, "transfer leadership",
		func() (string, error) { return n.transferLocal(ctx, id) },
		func(ctx context.Context, c ringpb.RingClient, h uint32) (string, error) {
			resp, err := c.TransferLeadership(ctx, &ringpb.TransferLeadershipRequest{Id: id, Hops: h})
			if err != nil {
				return "", fromStatus(err, false)
			}
			return resp.GetNewLeaderId(), nil
		})
}

func (n *Node) transferLocal(ctx context.Context, id string) (string, error) {
	if id == n.cfg.ID {
		return id, nil
	}
	var f raft.Future
	if id == "" {
		f = n.raft.LeadershipTransfer()
	} else {
		conf, _, err := n.configuration(ctx)
		if err != nil {
			return "", err
		}
		i := slices.IndexFunc(conf.Servers, func(s raft.Server) bool { return string(s.ID) == id })
		if i < 0 {
			return "", fmt.Errorf("%w: %s is not in the raft configuration", ErrUnknownPeer, id)
		}
		if conf.Servers[i].Suffrage != raft.Voter {
			return "", fmt.Errorf("%w: %s is not a voter and cannot lead", ErrInvalidPeer, id)
		}
		f = n.raft.LeadershipTransferToServer(conf.Servers[i].ID, conf.Servers[i].Address)
	}
	if err := wait(ctx, f, n.timeout(ctx)); err != nil {
		if errors.Is(err, raft.ErrNotLeader) {
			return "", errNotLeader
		}
		return "", fmt.Errorf("raftfsm: transfer leadership to %q: %w", id, err)
	}
	// The transfer future resolves when the target was told to campaign; wait until it is seen
	// leading (or someone else is), so callers can act on the new leader at once.
	new, err := n.waitLeader(ctx, func(l string) bool { return l != "" && l != n.cfg.ID })
	if err != nil {
		return "", err
	}
	n.logger.Info("transferred leadership", "to", new)
	return new, nil
}

// waitLeader polls until ok(leader id) or two election timeouts pass (bounded by ctx).
func (n *Node) waitLeader(ctx context.Context, ok func(string) bool) (string, error) {
	deadline := time.Now().Add(3 * n.cfg.ElectionTimeout)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		if l, _ := n.Leader(); ok(l) {
			return l, nil
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("%w: waiting for a new leader", ErrNoLeader)
		}
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("%w: waiting for a new leader: %w", ErrNoLeader, ctx.Err())
		case <-tick.C:
		}
	}
}

// LinearizableRing returns a ring that reflects every command committed before the call, and the
// index it reflects. On the leader it confirms leadership (VerifyLeader) and waits until every
// committed entry is applied (Barrier); a follower asks the leader. A ring obtained from another node
// carries no request memory (Recent() is empty).
func (n *Node) LinearizableRing(ctx context.Context) (*ringstate.Ring, uint64, error) {
	return n.linearizableRing(ctx, 0)
}

type ringAt struct {
	ring  *ringstate.Ring
	index uint64
}

func (n *Node) linearizableRing(ctx context.Context, hops uint32) (*ringstate.Ring, uint64, error) {
	r, err := route(ctx, n, hops, "linearizable read",
		func() (ringAt, error) {
			timeout := n.timeout(ctx)
			if err := wait(ctx, n.raft.VerifyLeader(), timeout); err != nil {
				if errors.Is(err, raft.ErrNotLeader) {
					return ringAt{}, errNotLeader
				}
				return ringAt{}, fmt.Errorf("%w: verify leadership: %w", ErrNoLeader, err)
			}
			if err := wait(ctx, n.raft.Barrier(timeout), timeout); err != nil {
				if errors.Is(err, raft.ErrNotLeader) {
					return ringAt{}, errNotLeader
				}
				return ringAt{}, fmt.Errorf("%w: barrier: %w", ErrNoLeader, err)
			}
			s := n.fsm.state.Load()
			return ringAt{ring: s.ring, index: s.index}, nil
		},
		func(ctx context.Context, c ringpb.RingClient, h uint32) (ringAt, error) {
			resp, err := c.GetRing(ctx, &ringpb.GetRingRequest{Linearizable: true, Hops: h})
			if err != nil {
				return ringAt{}, fromStatus(err, false)
			}
			r, err := ringpb.RingFromResponse(resp)
			if err != nil {
				return ringAt{}, fmt.Errorf("raftfsm: ring from leader: %w", err)
			}
			return ringAt{ring: r, index: resp.GetAppliedIndex()}, nil
		})
	return r.ring, r.index, err
}

// LeaveCluster removes this node from the Raft cluster, for a node shutting down for good: if it
// leads, it hands leadership over first; then the leader removes it (ring member and Raft server).
// It returns once the leader has committed the removal; a node that is the only server, or is not
// in the configuration, has nothing to do. Afterwards Err() reports ErrRemovedFromCluster, as
// expected.
func (n *Node) LeaveCluster(ctx context.Context) error {
	if n.confirmed.Load() {
		return nil // a retry after an unknown outcome that did commit, or removed by an operator
	}
	conf, _, err := n.configuration(ctx)
	if err != nil {
		return err
	}
	inConf := slices.ContainsFunc(conf.Servers, func(s raft.Server) bool { return s.ID == n.id })
	if !inConf || len(conf.Servers) == 1 {
		return nil
	}
	n.leaving.Store(true)
	if n.IsLeader() {
		if _, err := n.transferLocal(ctx, ""); err != nil && !errors.Is(err, errNotLeader) {
			n.leaving.Store(false)
			return fmt.Errorf("raftfsm: leave: %w", err)
		}
	}
	if _, err := n.removePeer(ctx, n.cfg.ID, 0); err != nil {
		switch {
		case n.confirmed.Load():
			return nil
		case errors.Is(err, ErrUnknownPeer):
			// Neither in the leader's configuration nor in its ring: an earlier attempt whose
			// outcome we did not learn removed us.
			n.markRemoved(true)
			return nil
		}
		n.leaving.Store(false)
		return fmt.Errorf("raftfsm: leave: %w", err)
	}
	// The leader committed our removal: that is confirmation, whether or not the removing entry
	// ever reaches our own log (the leader stops replicating to a removed server).
	n.markRemoved(true)
	return nil
}
