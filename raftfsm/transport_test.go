package raftfsm

import (
	"context"
	"errors"
	"net"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/raftingest/raftingest/ringstate"
)

// hookDialer is a Config.Dial that records every address dialled and refuses the ones in cut;
// cutting an address also closes the connections it made to it.
type hookDialer struct {
	mu     sync.Mutex
	dialed map[string]int
	cut    map[string]bool
	conns  map[string][]net.Conn
}

func (h *hookDialer) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	h.mu.Lock()
	h.dialed[addr]++
	cut := h.cut[addr]
	h.mu.Unlock()
	if cut {
		return nil, &net.OpError{Op: "dial", Net: network, Err: syscall.ECONNREFUSED}
	}
	var d net.Dialer
	c, err := d.DialContext(ctx, network, addr)
	if err == nil {
		h.mu.Lock()
		h.conns[addr] = append(h.conns[addr], c)
		h.mu.Unlock()
	}
	return c, err
}

func (h *hookDialer) count(addr string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.dialed[addr]
}

func (h *hookDialer) setCut(addr string, cut bool) {
	h.mu.Lock()
	h.cut[addr] = cut
	var open []net.Conn
	if cut {
		open, h.conns[addr] = h.conns[addr], nil
	}
	h.mu.Unlock()
	for _, c := range open {
		c.Close()
	}
}

// With Config.Dial set, the Raft transport and the forwarding gRPC clients open their connections
// through it: the leader's appends dial the followers' Raft addresses, a follower's forwarded
// Apply dials the leader's gRPC address, and a hook that refuses the leader's gRPC address makes
// the forward fail until it lets it through again.
func TestTransport_DialHookCarriesRaftAndForwarding(t *testing.T) {
	h := &hookDialer{dialed: map[string]int{}, cut: map[string]bool{}, conns: map[string][]net.Conn{}}
	c := newCluster(t)
	c.cfg.Dial = h.dial
	c.cluster(3)
	l, f := c.leader(), c.follower()
	if h.count(f.raftAddr) == 0 {
		t.Fatalf("the leader never dialled follower %s's raft address %s through the hook", f.id, f.raftAddr)
	}
	c.mustApply(f, ringstate.Command{Op: ringstate.OpRegister, Member: "x", RaftAddr: "127.0.0.1:9"})
	if h.count(l.grpcAddr) == 0 {
		t.Fatalf("the follower's forward to leader %s at %s did not go through the hook", l.id, l.grpcAddr)
	}

	h.setCut(l.grpcAddr, true) // closes the cached forwarding connection: gRPC must dial again
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	_, err := f.node.Apply(ctx, ringstate.Command{Op: ringstate.OpRegister, Member: "y", RaftAddr: "127.0.0.1:10", RequestID: randomID()})
	cancel()
	if err == nil {
		t.Fatal("a forward whose every dial is refused by the hook succeeded: it bypassed the hook")
	}
	h.setCut(l.grpcAddr, false)
	c.mustApply(f, ringstate.Command{Op: ringstate.OpRegister, Member: "y", RaftAddr: "127.0.0.1:10"})
	c.checkConsistent()
}

// A hook that returns neither a connection nor an error is refused, not dereferenced.
func TestTransport_NilConnFromHookIsAnError(t *testing.T) {
	s := &dialStreamLayer{dial: func(context.Context, string, string) (net.Conn, error) { return nil, nil }}
	if _, err := s.Dial("127.0.0.1:1", time.Second); err == nil || errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("dial: %v, want an error naming the hook", err)
	}
}
