// Package netns gives the multi-process fault tests a network of their own: the test driver re-execs
// itself under `unshare --net` (a network namespace with nothing but its own loopback), creates a
// bridge there, and puts every node in a namespace of its own joined to the bridge by a veth pair, on
// a private subnet that exists only inside those namespaces. Partitions and packet loss are nftables
// rules inside the node namespaces. Nothing here runs outside the driver's namespace: every
// function that touches the network refuses to unless InDriverNamespace reports true.
package netns

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// envDriver marks the re-exec'd driver with the network namespace of the process that started it.
// It is only a hint: InDriverNamespace also checks that this process's namespace differs from that
// one and has no default route.
const envDriver = "FAULTTEST_NETNS_PARENT"

// Subnet is the private subnet of the test network (bridge .1, nodes .10 and up). It is routed only
// inside the namespaces this package creates.
const (
	subnetPrefix = "10.213.77."
	BridgeIP     = subnetPrefix + "1"
)

// ErrNotIsolated is returned by everything that would touch a network outside the driver's
// namespace.
var ErrNotIsolated = errors.New("netns: refusing: not inside the fault-test driver's own network namespace (run through Reexec)")

func nsInode(pid string) (string, error) { return os.Readlink("/proc/" + pid + "/ns/net") }

// InDriverNamespace reports whether this process runs in a network namespace of its own, created by
// Reexec: the marker is set, the namespace differs from the parent's (the machine's; PID 1's is not
// readable in every sandbox), and it has no default route, so nothing sent from it can leave the
// machine.
func InDriverNamespace() bool {
	parent := os.Getenv(envDriver)
	if parent == "" {
		return false
	}
	self, err := nsInode("self")
	if err != nil || self == parent {
		return false
	}
	return !hasDefaultRoute()
}

// hasDefaultRoute reports whether the current namespace routes anything outward (a 0.0.0.0/0 IPv4
// route or a ::/0 IPv6 route not on lo); unreadable tables count as routed.
func hasDefaultRoute() bool {
	b, err := os.ReadFile("/proc/self/net/route")
	if err != nil {
		return true
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) > 7 && f[1] == "00000000" && f[7] == "00000000" {
			return true
		}
	}
	if b, err := os.ReadFile("/proc/self/net/ipv6_route"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if f := strings.Fields(l); len(f) > 9 && f[0] == strings.Repeat("0", 32) && f[1] == "00" && f[9] != "lo" {
				return true
			}
		}
	}
	return false
}

// Available reports why the namespace tier cannot run here ("" when it can): it needs root, unshare,
// ip and nft.
func Available() string {
	if os.Geteuid() != 0 {
		return "needs root (network namespaces, veth, nftables)"
	}
	for _, b := range []string{"unshare", "ip", "nft"} {
		if _, err := exec.LookPath(b); err != nil {
			return b + " not installed (make deps)"
		}
	}
	return ""
}

// Reexec runs the calling test again, alone, in a child of this test binary started under
// `unshare --net`, and reports whether the caller is that child. In the parent it returns false
// after the child finished (failing t if the child failed): the caller must return at once. In the
// child it brings up loopback and returns true. It skips t when namespaces are unavailable.
func Reexec(t *testing.T) bool {
	t.Helper()
	if InDriverNamespace() {
		if err := run("ip", "link", "set", "lo", "up"); err != nil {
			t.Fatalf("netns: lo up: %v", err)
		}
		return true
	}
	if os.Getenv(envDriver) != "" {
		// We were re-exec'd but the namespace is not what it must be: never re-exec again.
		self, err := nsInode("self")
		t.Fatalf("netns: re-exec'd driver is not in an isolated network namespace (%s=%s, self %s %v, default route %v)",
			envDriver, os.Getenv(envDriver), self, err, hasDefaultRoute())
	}
	if why := Available(); why != "" {
		t.Skip("netns: " + why)
	}
	var pat []string
	for _, p := range strings.Split(t.Name(), "/") {
		pat = append(pat, "^"+regexp.QuoteMeta(p)+"$")
	}
	args := []string{"--net", "--", os.Args[0], "-test.run", strings.Join(pat, "/"), "-test.v", "-test.count=1"}
	if d, ok := t.Deadline(); ok {
		args = append(args, "-test.timeout", time.Until(d).Round(time.Second).String())
	}
	cmd := exec.Command("unshare", args...)
	self, err := nsInode("self")
	if err != nil {
		t.Skipf("netns: cannot read this process's network namespace: %v", err)
	}
	cmd.Env = append(os.Environ(), envDriver+"="+self)
	// Verbose runs (make faulttest) stream the driver's output as it comes; others show it once
	// the driver is done (go test prints it when the test fails).
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if testing.Verbose() {
		cmd.Stdout, cmd.Stderr = os.Stdout, os.Stdout
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	err = cmd.Run()
	if !testing.Verbose() {
		t.Logf("driver in its own network namespace (unshare --net):\n%s", out.String())
	}
	if err != nil {
		t.Fatalf("netns driver: %v", err)
	}
	if o := out.String(); strings.Contains(o, "\n--- SKIP") && !strings.Contains(o, "\n--- PASS") {
		t.Skip("skipped in the driver namespace")
	}
	return false
}

func run(name string, args ...string) error {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// Node is one node's namespace.
type Node struct {
	Name string // named namespace (ip netns)
	IP   string
	veth string
}

// Net is the test network.
type Net struct {
	Nodes  []*Node
	bridge string
	prefix string
}

// New creates the bridge and n node namespaces. Close removes them.
func New(n int) (*Net, error) {
	if !InDriverNamespace() {
		return nil, ErrNotIsolated
	}
	sweepStale()
	pid := os.Getpid()
	nt := &Net{bridge: "ftbr0", prefix: fmt.Sprintf("ft%d-", pid)}
	if err := run("ip", "link", "add", nt.bridge, "type", "bridge"); err != nil {
		return nil, err
	}
	if err := run("ip", "addr", "add", BridgeIP+"/24", "dev", nt.bridge); err != nil {
		return nil, err
	}
	if err := run("ip", "link", "set", nt.bridge, "up"); err != nil {
		return nil, err
	}
	for i := range n {
		nd := &Node{Name: fmt.Sprintf("%sn%d", nt.prefix, i), IP: fmt.Sprintf("%s%d", subnetPrefix, 10+i), veth: fmt.Sprintf("ftv%d", i)}
		nt.Nodes = append(nt.Nodes, nd)
		steps := [][]string{
			{"ip", "netns", "add", nd.Name},
			{"ip", "link", "add", nd.veth, "type", "veth", "peer", "name", "eth0", "netns", nd.Name},
			{"ip", "link", "set", nd.veth, "master", nt.bridge},
			{"ip", "link", "set", nd.veth, "up"},
			{"ip", "netns", "exec", nd.Name, "ip", "addr", "add", nd.IP + "/24", "dev", "eth0"},
			{"ip", "netns", "exec", nd.Name, "ip", "link", "set", "eth0", "up"},
			{"ip", "netns", "exec", nd.Name, "ip", "link", "set", "lo", "up"},
		}
		for _, s := range steps {
			if err := run(s[0], s[1:]...); err != nil {
				nt.Close()
				return nil, err
			}
		}
	}
	return nt, nil
}

// sweepStale deletes namespaces left by drivers that died without cleaning up (ft<pid>-n<i> whose
// pid is gone).
func sweepStale() {
	ents, err := os.ReadDir("/run/netns")
	if err != nil {
		return
	}
	re := regexp.MustCompile(`^ft(\d+)-n\d+$`)
	for _, e := range ents {
		m := re.FindStringSubmatch(e.Name())
		if m == nil {
			continue
		}
		pid, _ := strconv.Atoi(m[1])
		if pid == os.Getpid() || syscall.Kill(pid, 0) == nil {
			continue
		}
		_ = run("ip", "netns", "del", e.Name())
	}
}

// Close deletes the node namespaces (which removes their nftables tables) and the bridge. Each
// veth is deleted first, explicitly: the kernel tears a deleted namespace down asynchronously (and
// not at all while a process still holds it), so its veth could otherwise outlive Close and make
// the next New fail with "File exists".
func (nt *Net) Close() {
	for _, nd := range nt.Nodes {
		_ = run("ip", "link", "del", nd.veth)
		_ = run("ip", "netns", "del", nd.Name)
	}
	_ = run("ip", "link", "del", nt.bridge)
}

// Command returns a command that runs name inside node i's namespace. `ip netns exec` execs the
// program, so the command's process is the program itself (signals reach it directly).
func (nt *Net) Command(i int, name string, args ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", nt.Nodes[i].Name, name}, args...)...)
}

// Rule is the fault a node applies to its traffic with some peers.
type Rule struct {
	Peers   []int // nodes whose traffic is affected
	In, Out bool  // drop what comes from them / what goes to them
	// Reject answers with a TCP reset / ICMP admin-prohibited (connections fail fast) instead of
	// dropping silently (connections hang until they time out).
	Reject bool
	// LossPercent, when > 0, drops that share of packets at random instead of all of them.
	LossPercent int
	// Ports, when set, limits the rule to these TCP ports (on either side): for example only the
	// gRPC port, to cut distributor-to-ingester traffic while Raft still flows.
	Ports []int
}

// Apply replaces node i's fault rules with rules (none: heal). It refuses outside the driver's
// namespace.
func (nt *Net) Apply(i int, rules ...Rule) error {
	if !InDriverNamespace() {
		return ErrNotIsolated
	}
	var b strings.Builder
	b.WriteString("table inet faulttest\ndelete table inet faulttest\n")
	if len(rules) > 0 {
		b.WriteString("table inet faulttest {\n")
		var in, out []string
		for _, r := range rules {
			var ips []string
			for _, p := range r.Peers {
				ips = append(ips, nt.Nodes[p].IP)
			}
			if len(ips) == 0 {
				continue
			}
			set := "{ " + strings.Join(ips, ", ") + " }"
			ports := ""
			if len(r.Ports) > 0 {
				var ps []string
				for _, p := range r.Ports {
					ps = append(ps, strconv.Itoa(p))
				}
				ports = " tcp dport { " + strings.Join(ps, ", ") + " }"
			}
			verdictIn, verdictOut := "drop", "drop"
			if r.Reject {
				verdictIn, verdictOut = "reject with tcp reset", "reject with icmpx type admin-prohibited"
			}
			loss := ""
			if r.LossPercent > 0 {
				loss = fmt.Sprintf(" numgen random mod 100 < %d", r.LossPercent)
			}
			if r.In {
				if r.Reject {
					in = append(in, "ip saddr "+set+ports+loss+" meta l4proto tcp "+verdictIn)
				}
				in = append(in, "ip saddr "+set+ports+loss+" drop")
				if ports != "" { // the replies of connections we opened to their port
					in = append(in, "ip saddr "+set+strings.Replace(ports, "dport", "sport", 1)+loss+" drop")
				}
			}
			if r.Out {
				out = append(out, "ip daddr "+set+ports+loss+" "+verdictOut)
				if ports != "" {
					out = append(out, "ip daddr "+set+strings.Replace(ports, "dport", "sport", 1)+loss+" "+verdictOut)
				}
			}
		}
		b.WriteString("  chain input {\n    type filter hook input priority 0; policy accept;\n")
		for _, l := range in {
			b.WriteString("    " + l + "\n")
		}
		b.WriteString("  }\n  chain output {\n    type filter hook output priority 0; policy accept;\n")
		for _, l := range out {
			b.WriteString("    " + l + "\n")
		}
		b.WriteString("  }\n}\n")
	}
	cmd := nt.Command(i, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(b.String())
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("netns: nft in %s: %v: %s\nruleset:\n%s", nt.Nodes[i].Name, err, out, b.String())
	}
	return nil
}

// HealAll removes every node's fault rules.
func (nt *Net) HealAll() error {
	var errs []error
	for i := range nt.Nodes {
		errs = append(errs, nt.Apply(i))
	}
	return errors.Join(errs...)
}
