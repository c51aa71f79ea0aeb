package raftfsm

import (
	"errors"
	"strings"
	"testing"

	"github.com/raftingest/raftingest/ringstate"
)

// TestCluster_ClaimSpreadRefused: with -ring.max-ownership-spread the leader refuses, before
// proposing, a claim that would leave ownership too uneven — sent through a follower, the refusal
// comes back as ringstate.ErrSpread — and takes a balanced claim. Nothing of the refused claim is
// committed.
func TestCluster_ClaimSpreadRefused(t *testing.T) {
	c := newCluster(t)
	c.cfg.MaxOwnershipSpread = 1.1
	nodes := c.cluster(3)
	l := c.leader()
	follower := c.follower()
	for _, tn := range nodes {
		ts, err := l.node.Ring().BalancedTokens(64)
		if err != nil {
			t.Fatal(err)
		}
		c.mustApply(tn, ringstate.Command{Op: ringstate.OpClaimTokens, Member: ringstate.MemberID(tn.id), Tokens: ts})
		c.mustApply(tn, ringstate.Command{Op: ringstate.OpActivate, Member: ringstate.MemberID(tn.id)})
	}
	c.mustApply(follower, ringstate.Command{Op: ringstate.OpRegister, Member: "joiner", RaftAddr: "127.0.0.1:1", GRPCAddr: "127.0.0.1:2"})
	_, err := c.apply(follower, ringstate.Command{Op: ringstate.OpClaimTokens, Member: "joiner", Tokens: ringstate.Tokens{10, 20, 30}})
	if !errors.Is(err, ringstate.ErrSpread) || !strings.Contains(err.Error(), "-ring.max-ownership-spread") {
		t.Fatalf("three tokens on a balanced ring of three: %v, want ErrSpread", err)
	}
	if m, _ := l.node.Ring().Member("joiner"); len(m.Tokens) != 0 || m.State != ringstate.PENDING {
		t.Fatalf("the refused claim changed the joiner: %+v", m)
	}
	ts, err := l.node.Ring().BalancedTokens(64)
	if err != nil {
		t.Fatal(err)
	}
	c.mustApply(follower, ringstate.Command{Op: ringstate.OpClaimTokens, Member: "joiner", Tokens: ts})
	if s := l.node.Ring().OwnershipSpread(); s > 1.1 {
		t.Errorf("spread %v after the balanced claim", s)
	}
}
