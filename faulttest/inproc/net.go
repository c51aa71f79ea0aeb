package inproc

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"syscall"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/rs/zerolog"
)

// Services a node dials on its peers. HTTP is only dialed by the harness, never between nodes.
const (
	svcRaft = "raft"
	svcGRPC = "grpc"
)

// DialMode is what a node's dialer does with a new connection on a directed link.
type DialMode int

const (
	// DialOK connects through the link's toxiproxy proxy.
	DialOK DialMode = iota
	// DialRefuse fails at once with ECONNREFUSED, as a peer that rejects the SYN (fail fast).
	DialRefuse
	// DialHang blocks until the caller's context ends, as a SYN dropped on the floor (silent).
	DialHang
)

func (m DialMode) String() string {
	switch m {
	case DialRefuse:
		return "refuse"
	case DialHang:
		return "hang"
	}
	return "ok"
}

// link is the directed pair src→dst: the connections src opens to dst's services.
type link struct{ src, dst int }

// Network routes every connection one node opens to another through a toxiproxy proxy per
// (src, dst, service), so that the harness can add toxics per directed link, and decides per link
// whether new connections are made, refused or left hanging. It only ever dials loopback
// addresses: a dial to anything else is refused with an error.
//
// Safe for concurrent use. Invariant: proxies holds one started proxy per (src≠dst, service) for
// the whole life of the Network; conns holds the client side of every proxied connection still
// open, by link.
type Network struct {
	server *toxiproxy.ApiServer
	// addrs maps a node's raft and gRPC address to (node, service); immutable after NewNetwork.
	addrs map[string]target

	mu      sync.Mutex
	proxies map[link]map[string]*toxiproxy.Proxy
	modes   map[link]DialMode
	conns   map[link]map[net.Conn]struct{}
	closed  bool
	// dials counts the connections made through each link's proxies, by service.
	dials map[link]map[string]int
	// hangs is closed by Close, so that hanging dials return.
	hangs chan struct{}
}

type target struct {
	node int
	svc  string
}

// Endpoint is what the network needs to know of one node: its IP (proxies for connections it
// opens listen there) and the raft and gRPC addresses it serves.
type Endpoint struct {
	IP, RaftAddr, GRPCAddr string
}

// NewNetwork starts the proxies for every ordered pair of the given nodes. Close stops them.
func NewNetwork(nodes []Endpoint) (*Network, error) {
	// Some toxics log through zerolog's global logger, not the server's: silence it (nothing else
	// in a test binary of this package logs through zerolog).
	zerolog.SetGlobalLevel(zerolog.Disabled)
	n := &Network{
		server:  toxiproxy.NewServer(toxiproxy.NewMetricsContainer(nil), zerolog.Nop()),
		addrs:   map[string]target{},
		proxies: map[link]map[string]*toxiproxy.Proxy{},
		modes:   map[link]DialMode{},
		conns:   map[link]map[net.Conn]struct{}{},
		dials:   map[link]map[string]int{},
		hangs:   make(chan struct{}),
	}
	for i, e := range nodes {
		for _, a := range []string{e.IP, hostOf(e.RaftAddr), hostOf(e.GRPCAddr)} {
			if ip := net.ParseIP(a); ip == nil || !ip.IsLoopback() {
				return nil, fmt.Errorf("inproc: node %d address %q is not loopback: the in-process tier only uses 127.0.0.0/8", i, a)
			}
		}
		n.addrs[e.RaftAddr] = target{i, svcRaft}
		n.addrs[e.GRPCAddr] = target{i, svcGRPC}
	}
	for i, src := range nodes {
		for j, dst := range nodes {
			if i == j {
				continue
			}
			l := link{i, j}
			n.proxies[l] = map[string]*toxiproxy.Proxy{}
			for svc, up := range map[string]string{svcRaft: dst.RaftAddr, svcGRPC: dst.GRPCAddr} {
				p := toxiproxy.NewProxy(n.server, fmt.Sprintf("n%d-n%d-%s", i, j, svc), net.JoinHostPort(src.IP, "0"), up)
				if err := p.Start(); err != nil {
					n.Close()
					return nil, fmt.Errorf("inproc: start proxy n%d→n%d %s: %w", i, j, svc, err)
				}
				n.proxies[l][svc] = p
			}
		}
	}
	return n, nil
}

func hostOf(addr string) string {
	h, _, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	return h
}

// Close stops every proxy, closes every proxied connection and releases hanging dials.
func (n *Network) Close() {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return
	}
	n.closed = true
	close(n.hangs)
	var all []net.Conn
	for _, cs := range n.conns {
		for c := range cs {
			all = append(all, c)
		}
	}
	n.conns = map[link]map[net.Conn]struct{}{}
	ps := n.proxies
	n.mu.Unlock()
	for _, c := range all {
		c.Close()
	}
	for _, m := range ps {
		for _, p := range m {
			p.Stop()
		}
	}
}

// Dialer returns node src's dial hook (ingester.Config.Dial).
func (n *Network) Dialer(src int) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		return n.dial(ctx, src, network, addr)
	}
}

func (n *Network) dial(ctx context.Context, src int, network, addr string) (net.Conn, error) {
	host := hostOf(addr)
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return nil, fmt.Errorf("inproc: refusing to dial %s: not a loopback address", addr)
	}
	var d net.Dialer
	t, known := n.addrs[addr]
	if !known || t.node == src {
		return d.DialContext(ctx, network, addr)
	}
	l := link{src, t.node}
	n.mu.Lock()
	mode, closed := n.modes[l], n.closed
	p := n.proxies[l][t.svc]
	n.mu.Unlock()
	if closed {
		return nil, errors.New("inproc: network closed")
	}
	switch mode {
	case DialRefuse:
		return nil, &net.OpError{Op: "dial", Net: network, Addr: tcpAddr(addr), Err: syscall.ECONNREFUSED}
	case DialHang:
		select {
		case <-ctx.Done():
			return nil, &net.OpError{Op: "dial", Net: network, Addr: tcpAddr(addr), Err: ctx.Err()}
		case <-n.hangs:
			return nil, errors.New("inproc: network closed")
		}
	}
	c, err := d.DialContext(ctx, network, p.Listen)
	if err != nil {
		return nil, fmt.Errorf("inproc: dial %s through proxy %s: %w", addr, p.Name, err)
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed || n.modes[l] != DialOK {
		// The link was cut while this dial was in flight: the connection must not outlive the cut.
		c.Close()
		return nil, &net.OpError{Op: "dial", Net: network, Addr: tcpAddr(addr), Err: syscall.ECONNREFUSED}
	}
	if n.conns[l] == nil {
		n.conns[l] = map[net.Conn]struct{}{}
		n.dials[l] = map[string]int{}
	}
	n.dials[l][t.svc]++
	tc := &trackedConn{Conn: c, n: n, l: l}
	n.conns[l][tc] = struct{}{}
	return tc, nil
}

func tcpAddr(addr string) net.Addr {
	a, _ := net.ResolveTCPAddr("tcp", addr)
	return a
}

// trackedConn removes itself from the Network's set when closed.
type trackedConn struct {
	net.Conn
	n    *Network
	l    link
	once sync.Once
}

func (c *trackedConn) Close() error {
	c.once.Do(func() {
		c.n.mu.Lock()
		delete(c.n.conns[c.l], c)
		c.n.mu.Unlock()
	})
	return c.Conn.Close()
}

// SetMode sets what new connections src→dst do. Any mode but DialOK also resets the connections
// src has open to dst, so that a cut takes effect at once (a peer that refuses now would have reset
// them; a silent cut's stale streams are cut by the silent toxic, see Drop).
func (n *Network) SetMode(src, dst int, m DialMode) {
	n.mu.Lock()
	n.modes[link{src, dst}] = m
	var victims []net.Conn
	if m == DialRefuse {
		for c := range n.conns[link{src, dst}] {
			victims = append(victims, c)
		}
	}
	n.mu.Unlock()
	for _, c := range victims {
		c.Close()
	}
}

// ResetConns closes every connection src has open to dst.
func (n *Network) ResetConns(src, dst int) {
	n.mu.Lock()
	var victims []net.Conn
	for c := range n.conns[link{src, dst}] {
		victims = append(victims, c)
	}
	n.mu.Unlock()
	for _, c := range victims {
		c.Close()
	}
}

// Mode reports the dial mode of src→dst.
func (n *Network) Mode(src, dst int) DialMode {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.modes[link{src, dst}]
}

// packetToxic adds (replacing one of the same name) a toxic to the bytes that travel from node a
// to node b: the upstream of a's connections to b and the downstream of b's connections to a.
func (n *Network) packetToxic(a, b int, name, typ string, attrs string) error {
	n.mu.Lock()
	ab, ba := n.proxies[link{a, b}], n.proxies[link{b, a}]
	n.mu.Unlock()
	for _, x := range []struct {
		ps     map[string]*toxiproxy.Proxy
		stream string
	}{{ab, "upstream"}, {ba, "downstream"}} {
		for _, p := range x.ps {
			tn := fmt.Sprintf("%s-n%d-n%d-%s", name, a, b, x.stream)
			if p.Toxics.GetToxic(tn) != nil {
				if err := p.Toxics.RemoveToxic(context.Background(), tn); err != nil {
					return fmt.Errorf("remove toxic %s from %s: %w", tn, p.Name, err)
				}
			}
			js := fmt.Sprintf(`{"name":%q,"type":%q,"stream":%q,"toxicity":1,"attributes":%s}`, tn, typ, x.stream, attrs)
			if _, err := p.Toxics.AddToxicJson(strings.NewReader(js)); err != nil {
				return fmt.Errorf("add toxic %s to %s: %w", tn, p.Name, err)
			}
		}
	}
	return nil
}

// removePacketToxic removes what packetToxic(a, b, name) added, if present.
func (n *Network) removePacketToxic(a, b int, name string) {
	n.mu.Lock()
	ab, ba := n.proxies[link{a, b}], n.proxies[link{b, a}]
	n.mu.Unlock()
	for _, x := range []struct {
		ps     map[string]*toxiproxy.Proxy
		stream string
	}{{ab, "upstream"}, {ba, "downstream"}} {
		for _, p := range x.ps {
			tn := fmt.Sprintf("%s-n%d-n%d-%s", name, a, b, x.stream)
			if p.Toxics.GetToxic(tn) != nil {
				_ = p.Toxics.RemoveToxic(context.Background(), tn)
			}
		}
	}
}

// Latency delays the bytes from a to b by latency ± jitter (milliseconds).
func (n *Network) Latency(a, b int, latencyMs, jitterMs int) error {
	return n.packetToxic(a, b, "latency", "latency", fmt.Sprintf(`{"latency":%d,"jitter":%d}`, latencyMs, jitterMs))
}

// Bandwidth limits the bytes from a to b to kbps kilobytes per second.
func (n *Network) Bandwidth(a, b int, kbps int) error {
	return n.packetToxic(a, b, "bandwidth", "bandwidth", fmt.Sprintf(`{"rate":%d}`, kbps))
}

// Drop silently drops the bytes from a to b (toxiproxy's timeout toxic with no timeout: the
// connections stay open, nothing arrives), and makes new connections between them hang in both
// directions, as a dropped SYN (a→b) or SYN-ACK (b→a) would.
func (n *Network) Drop(a, b int) error {
	n.SetMode(a, b, DialHang)
	n.SetMode(b, a, DialHang)
	return n.packetToxic(a, b, "drop", "timeout", `{"timeout":0}`)
}

// HealLink removes every toxic between a and b (both directions), makes new connections work
// again, and resets the connections that lost bytes to a silent drop: a TCP stream with a hole in
// it cannot be resumed (real TCP would have retransmitted; the proxy discarded), so the peers must
// reconnect.
func (n *Network) HealLink(a, b int) {
	for _, pair := range [][2]int{{a, b}, {b, a}} {
		dropped := n.hasToxic(pair[0], pair[1], "drop")
		for _, name := range []string{"latency", "bandwidth", "drop"} {
			n.removePacketToxic(pair[0], pair[1], name)
		}
		n.SetMode(pair[0], pair[1], DialOK)
		if dropped {
			n.ResetConns(pair[0], pair[1])
			n.ResetConns(pair[1], pair[0])
		}
	}
}

func (n *Network) hasToxic(a, b int, name string) bool {
	n.mu.Lock()
	ab := n.proxies[link{a, b}]
	n.mu.Unlock()
	for _, p := range ab {
		if p.Toxics.GetToxic(fmt.Sprintf("%s-n%d-n%d-upstream", name, a, b)) != nil {
			return true
		}
	}
	return false
}

// HealAll heals every link.
func (n *Network) HealAll(nodes int) {
	for a := range nodes {
		for b := a + 1; b < nodes; b++ {
			n.HealLink(a, b)
		}
	}
}

// DialCounts returns, per service, how many connections went through the proxies, and the nodes
// that opened no gRPC connection to any other node through them.
func (n *Network) DialCounts(nodes int) (perService map[string]int, noGRPCOut []string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	perService = map[string]int{}
	for a := range nodes {
		out := 0
		for b := range nodes {
			if a == b {
				continue
			}
			for svc, k := range n.dials[link{a, b}] {
				perService[svc] += k
			}
			out += n.dials[link{a, b}][svcGRPC]
		}
		if out == 0 {
			noGRPCOut = append(noGRPCOut, fmt.Sprintf("n%d", a))
		}
	}
	return perService, noGRPCOut
}
