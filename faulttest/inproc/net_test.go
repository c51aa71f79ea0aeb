package inproc

import (
	"context"
	"errors"
	"io"
	"net"
	"syscall"
	"testing"
	"time"
)

// echoServer answers every byte it reads with the same byte, on a loopback address of its own.
func echoServer(t *testing.T, ip string) string {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); _, _ = io.Copy(c, c) }()
		}
	}()
	return ln.Addr().String()
}

// twoNodes is a Network of two endpoints whose "raft" services are echo servers.
func twoNodes(t *testing.T) (*Network, []Endpoint) {
	t.Helper()
	a, b := 20+runCounter.Add(1)%200, 251
	var eps []Endpoint
	for i := range 2 {
		ip := net.IPv4(127, byte(b), byte(a), byte(i+1)).String()
		eps = append(eps, Endpoint{IP: ip, RaftAddr: echoServer(t, ip), GRPCAddr: echoServer(t, ip)})
	}
	n, err := NewNetwork(eps)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.Close)
	return n, eps
}

func roundTrip(t *testing.T, c net.Conn) time.Duration {
	t.Helper()
	start := time.Now()
	if _, err := c.Write([]byte{42}); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1)
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(c, buf); err != nil {
		t.Fatal(err)
	}
	if buf[0] != 42 {
		t.Fatalf("echo returned %d", buf[0])
	}
	return time.Since(start)
}

// A latency toxic on the bytes a→b delays a's requests, and on b→a its answers: one round trip
// through a's dialer pays both.
func TestNetwork_LatencyDelaysBothDirectionsOfALink(t *testing.T) {
	n, eps := twoNodes(t)
	c, err := n.Dialer(0)(context.Background(), "tcp", eps[1].RaftAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if d := roundTrip(t, c); d > 100*time.Millisecond {
		t.Fatalf("round trip without toxics took %v", d)
	}
	if err := n.Latency(0, 1, 100, 0); err != nil {
		t.Fatal(err)
	}
	if err := n.Latency(1, 0, 100, 0); err != nil {
		t.Fatal(err)
	}
	if d := roundTrip(t, c); d < 190*time.Millisecond {
		t.Fatalf("round trip with 100ms each way took %v", d)
	}
	n.HealLink(0, 1)
	if d := roundTrip(t, c); d > 100*time.Millisecond {
		t.Fatalf("round trip after the heal took %v", d)
	}
}

// Refuse fails new dials at once with ECONNREFUSED and resets the open connections of that link
// only; the other direction keeps working (a one-way cut).
func TestNetwork_RefuseIsFailFastAndOneWay(t *testing.T) {
	n, eps := twoNodes(t)
	ab, err := n.Dialer(0)(context.Background(), "tcp", eps[1].RaftAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer ab.Close()
	ba, err := n.Dialer(1)(context.Background(), "tcp", eps[0].RaftAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer ba.Close()
	n.SetMode(0, 1, DialRefuse)
	start := time.Now()
	_, err = n.Dialer(0)(context.Background(), "tcp", eps[1].GRPCAddr)
	if !errors.Is(err, syscall.ECONNREFUSED) || time.Since(start) > time.Second {
		t.Fatalf("dial 0→1 under refuse: %v after %v, want ECONNREFUSED at once", err, time.Since(start))
	}
	_ = ab.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := ab.Write([]byte{1}); err == nil {
		if _, err := ab.Read(make([]byte, 1)); err == nil {
			t.Fatal("the open 0→1 connection still carries bytes after the cut")
		}
	}
	roundTrip(t, ba) // 1→0 is untouched
	n.SetMode(0, 1, DialOK)
	c, err := n.Dialer(0)(context.Background(), "tcp", eps[1].RaftAddr)
	if err != nil {
		t.Fatalf("dial after the heal: %v", err)
	}
	defer c.Close()
	roundTrip(t, c)
}

// Drop is silent: dials in both directions hang until the caller gives up, open connections
// carry nothing; the heal resets them (their streams have holes) and new dials work.
func TestNetwork_DropIsSilent(t *testing.T) {
	n, eps := twoNodes(t)
	open, err := n.Dialer(0)(context.Background(), "tcp", eps[1].RaftAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer open.Close()
	if err := n.Drop(0, 1); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	if _, err := n.Dialer(1)(ctx, "tcp", eps[0].RaftAddr); !errors.Is(err, context.DeadlineExceeded) || time.Since(start) < 250*time.Millisecond {
		t.Fatalf("dial 1→0 under drop: %v after %v, want a hang until the deadline", err, time.Since(start))
	}
	if _, err := open.Write([]byte{7}); err != nil {
		t.Fatal(err)
	}
	_ = open.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	var ne net.Error
	if _, err := open.Read(make([]byte, 1)); !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("read on a dropped link: %v, want a timeout", err)
	}
	n.HealLink(0, 1)
	c, err := n.Dialer(0)(context.Background(), "tcp", eps[1].RaftAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	roundTrip(t, c)
}

// The dialer never dials outside 127.0.0.0/8.
func TestNetwork_RefusesNonLoopback(t *testing.T) {
	n, _ := twoNodes(t)
	if _, err := n.Dialer(0)(context.Background(), "tcp", "192.0.2.1:80"); err == nil {
		t.Fatal("dialed a non-loopback address")
	}
	if _, err := NewNetwork([]Endpoint{{IP: "10.0.0.1", RaftAddr: "10.0.0.1:1", GRPCAddr: "10.0.0.1:2"}}); err == nil {
		t.Fatal("NewNetwork accepted a non-loopback endpoint")
	}
}
