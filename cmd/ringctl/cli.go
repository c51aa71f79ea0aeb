package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"time"

	"github.com/raftingest/raftingest/auth"
	"github.com/raftingest/raftingest/raftfsm"
	"github.com/raftingest/raftingest/ringstate"
)

// Exit codes. Scripts rely on them: 1 means the cluster said no (or could not be reached), 2 means
// the command line was wrong and nothing was sent.
const (
	exitOK    = 0
	exitFail  = 1
	exitUsage = 2
)

const (
	defaultAddr         = "127.0.0.1:9095"
	addrEnv             = "RINGCTL_ADDR"
	defaultTimeout      = 10 * time.Second
	defaultLeaveTimeout = 10 * time.Minute
	defaultPoll         = 500 * time.Millisecond
	defaultProgress     = 5 * time.Second
	// joinDialTimeout bounds join's check that something listens at RAFT_ADDR (a node just
	// started may take a moment to listen).
	joinDialTimeout = 5 * time.Second

	// The -tls.* flags fall back to these, as -addr does to $RINGCTL_ADDR, so that an operator
	// exports their certificate once per shell.
	tlsCertEnv = "RINGCTL_TLS_CERT_PATH"
	tlsKeyEnv  = "RINGCTL_TLS_KEY_PATH"
	tlsCAEnv   = "RINGCTL_TLS_CA_PATH"

	// maxRedirects bounds how many times one request follows a redirect to another node. Nodes
	// that briefly disagree on who leads could otherwise pass it around forever; it is the bound
	// the nodes themselves use when they forward (raftfsm.MaxForwardHops).
	maxRedirects = raftfsm.MaxForwardHops
	// A redirect without an address (the node knows the leader's id, not yet its gRPC address,
	// as right after an election) is retried on the same node redirectWait apart, at most
	// maxRedirectWaits times (and never past -timeout).
	redirectWait     = 300 * time.Millisecond
	maxRedirectWaits = 10
)

// usageError is a command-line mistake: exit 2, nothing was sent to the cluster.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return &usageError{fmt.Sprintf(format, args...)} }

// durationFlag remembers whether it was set, so that leave can tell "-timeout not given" (wait up
// to 10m) from an explicit value.
type durationFlag struct {
	d   time.Duration
	set bool
}

func (f *durationFlag) String() string { return f.d.String() }

func (f *durationFlag) Set(s string) error {
	d, err := time.ParseDuration(s)
	if err != nil {
		return errors.New("want a duration such as 10s or 5m")
	}
	if d <= 0 {
		return errors.New("must be positive")
	}
	f.d, f.set = d, true
	return nil
}

// options are the parsed flags, global and per command.
type options struct {
	addr    string
	output  string
	timeout durationFlag
	tls     auth.Config // -tls.*: the client's certificate, key and CA

	// authority is the client side of mutual TLS, made from tls once the flags are checked; nil
	// when TLS is off (then every connection is plain). Immutable once set.
	authority *auth.Authority

	linearizable bool // ring
	tokens       bool // ring
	voter        bool // join
	wait         bool // leave
	force        bool // join, remove: skip the safety check

	certDir  string       // tls *: -dir
	caCert   string       // tls node|operator: -ca-cert (default DIR/ca.crt)
	caKey    string       // tls node|operator: -ca-key (default DIR/ca.key)
	caCN     string       // tls ca: -cn
	lifetime lifetimeFlag // tls *
	hosts    []string     // tls node: -host
}

// cli runs one invocation. Its fields are what tests substitute.
type cli struct {
	stdout, stderr io.Writer
	getenv         func(string) string
	poll           time.Duration // leave's GetRing interval
	// progress is how long leave stays silent while nothing changes before it says what it is
	// waiting for (the hand-over's retries alone take about 21 s).
	progress time.Duration
}

// run is main without os: it parses args, runs the command and returns the exit code.
func run(args []string, stdout, stderr io.Writer) int {
	c := &cli{stdout: stdout, stderr: stderr, getenv: os.Getenv, poll: defaultPoll, progress: defaultProgress}
	return c.run(args)
}

// command is one subcommand.
type command struct {
	name    string // "tls node" for a command of the tls group
	args    string // positional arguments, for usage
	summary string
	example string
	minArgs int
	maxArgs int
	// offline commands make no network call: of the global flags they take only -o, and
	// neither -addr nor -tls.* is checked.
	offline bool
	flags   func(fs *flag.FlagSet, o *options)
	run     func(c *cli, o *options, args []string) error
}

// tlsGroup is the prefix of the commands that make certificates: `ringctl tls ca|node|operator`.
const tlsGroup = "tls"

var commands []*command

func init() {
	// Assigned in init because the run functions refer to usage, which reads commands.
	commands = []*command{
		{name: "status", summary: "Raft status of the node: leader, term, indexes, servers",
			example: "ringctl status", run: (*cli).status},
		{name: "ring", summary: "ring members: state, address, zone, tokens, ownership, heartbeat age, hand-over",
			example: "ringctl -addr 127.0.0.1:9096 ring -o json",
			flags: func(fs *flag.FlagSet, o *options) {
				fs.BoolVar(&o.linearizable, "linearizable", false, "read through the leader (confirms leadership and applies every committed entry first)")
				fs.BoolVar(&o.tokens, "tokens", false, "list every member's tokens (text output)")
			},
			run: (*cli).ring},
		{name: "join", args: "ID RAFT_ADDR", minArgs: 2, maxArgs: 2,
			summary: "add server ID at RAFT_ADDR to the Raft configuration (through the leader)",
			example: "ringctl join ingester-4 127.0.0.1:7004 -voter",
			flags: func(fs *flag.FlagSet, o *options) {
				fs.BoolVar(&o.voter, "voter", false, "ask for a voter even when the leader would add a non-voter")
				fs.BoolVar(&o.force, "force", false, "add the server even if nothing answers at RAFT_ADDR from here (a voter that never answers counts against the quorum)")
			},
			run: (*cli).join},
		{name: "leave", args: "ID", minArgs: 1, maxArgs: 1,
			summary: "ask member ID to leave gracefully and follow its hand-over until it is gone",
			example: "ringctl leave ingester-3 -timeout 30m",
			flags: func(fs *flag.FlagSet, o *options) {
				fs.BoolVar(&o.wait, "wait", true, "follow the leave until the member is gone (-wait=false returns once the request is accepted)")
			},
			run: (*cli).leave},
		{name: "remove", args: "ID", minArgs: 1, maxArgs: 1,
			summary: "forget a dead member, in the ring and in the Raft configuration (a live one leaves with 'leave')",
			example: "ringctl remove ingester-3",
			flags: func(fs *flag.FlagSet, o *options) {
				fs.BoolVar(&o.force, "force", false, "remove the member even if it is alive: it exits without handing over or flushing its in-memory samples")
			},
			run: (*cli).remove},
		{name: "transfer-leadership", args: "[ID]", maxArgs: 1,
			summary: "hand Raft leadership to ID, or to the most up-to-date follower",
			example: "ringctl transfer-leadership ingester-2", run: (*cli).transferLeadership},
		{name: "tls ca", offline: true,
			summary: "make the cluster's CA for mutual TLS: DIR/ca.crt, DIR/ca.key (offline)",
			example: "ringctl tls ca -dir certs",
			flags:   tlsFlags(kindCA), run: (*cli).tlsCA},
		{name: "tls node", args: "ID", minArgs: 1, maxArgs: 1, offline: true,
			summary: "make member ID's certificate, signed by the CA: DIR/ID.crt, DIR/ID.key (offline)",
			example: "ringctl tls node ingester-1 -host ingester-1.example.com,10.0.0.1 -dir certs",
			flags:   tlsFlags(kindNode), run: (*cli).tlsNode},
		{name: "tls operator", args: "[NAME]", maxArgs: 1, offline: true,
			summary: "make an operator's certificate: DIR/NAME.crt, DIR/NAME.key; NAME defaults to \"" + auth.DefaultOperatorName + "\" (offline)",
			example: "ringctl tls operator -dir certs",
			flags:   tlsFlags(kindOperator), run: (*cli).tlsOperator},
	}
}

func lookup(name string) *command {
	for _, c := range commands {
		if c.name == name {
			return c
		}
	}
	return nil
}

// registerGlobal adds the global flags to fs. Every command's FlagSet has them too, so that
// `ringctl ring -o json` works as well as `ringctl -o json ring`; an offline command's has -o only.
func registerGlobal(fs *flag.FlagSet, o *options, offline bool) {
	fs.StringVar(&o.output, "o", o.output, "output `format`: text or json")
	if offline {
		return
	}
	fs.StringVar(&o.addr, "addr", o.addr, "gRPC `HOST:PORT` of any node; $"+addrEnv+" overrides the default")
	fs.Var(&o.timeout, "timeout", "`duration` to wait for the node; for leave, for the whole leave (default 10m there)")
	fs.StringVar(&o.tls.CertPath, "tls.cert-path", o.tls.CertPath, "PEM client certificate `file` for mutual TLS ('ringctl tls operator' makes one); $"+tlsCertEnv+" overrides the default")
	fs.StringVar(&o.tls.KeyPath, "tls.key-path", o.tls.KeyPath, "PEM private key `file` of -tls.cert-path; $"+tlsKeyEnv+" overrides the default")
	fs.StringVar(&o.tls.CAPath, "tls.ca-path", o.tls.CAPath, "PEM CA bundle `file` that verifies the nodes' certificates; $"+tlsCAEnv+" overrides the default")
}

// defaultOptions are the flags' defaults, before the environment.
func defaultOptions() *options {
	return &options{addr: defaultAddr, output: "text", timeout: durationFlag{d: defaultTimeout}}
}

func (c *cli) run(args []string) int {
	o := defaultOptions()
	if env := c.getenv(addrEnv); env != "" {
		o.addr = env
	}
	o.tls.CertPath, o.tls.KeyPath, o.tls.CAPath = c.getenv(tlsCertEnv), c.getenv(tlsKeyEnv), c.getenv(tlsCAEnv)
	global := flag.NewFlagSet("ringctl", flag.ContinueOnError)
	global.SetOutput(io.Discard) // we print our own messages, once
	registerGlobal(global, o, false)
	if err := global.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			c.usage(c.stdout)
			return exitOK
		}
		return c.usageFail("", err.Error())
	}
	rest := global.Args()
	if len(rest) == 0 {
		c.usage(c.stderr)
		return exitUsage
	}
	name, rest := rest[0], rest[1:]
	if name == "help" {
		if len(rest) == 0 {
			c.usage(c.stdout)
			return exitOK
		}
		if rest[0] == tlsGroup && len(rest) == 1 {
			c.groupUsage(c.stdout)
			return exitOK
		}
		asked := strings.Join(rest[:min(len(rest), 2)], " ")
		if rest[0] != tlsGroup {
			asked = rest[0]
		}
		cmd := lookup(asked)
		if cmd == nil {
			return c.usageFail("help", fmt.Sprintf("unknown command %q", asked))
		}
		c.commandUsage(c.stdout, cmd)
		return exitOK
	}
	if name == tlsGroup {
		switch {
		case len(rest) == 0:
			return c.usageFail(tlsGroup, "missing subcommand: ca, node or operator")
		case rest[0] == "-h" || rest[0] == "-help" || rest[0] == "--help" || rest[0] == "help":
			c.groupUsage(c.stdout)
			return exitOK
		case lookup(tlsGroup+" "+rest[0]) == nil:
			return c.usageFail(tlsGroup, fmt.Sprintf("unknown command %q: want ca, node or operator", rest[0]))
		}
		name, rest = tlsGroup+" "+rest[0], rest[1:]
	}
	cmd := lookup(name)
	if cmd == nil {
		return c.usageFail("", fmt.Sprintf("unknown command %q", name))
	}
	fs := flag.NewFlagSet("ringctl "+name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	registerGlobal(fs, o, cmd.offline)
	if cmd.name == "leave" {
		o.wait = true
	}
	if cmd.flags != nil {
		cmd.flags(fs, o)
	}
	pos, err := parseInterspersed(fs, rest)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			c.commandUsage(c.stdout, cmd)
			return exitOK
		}
		return c.usageFail(name, err.Error())
	}
	if err := checkGlobal(o, cmd.offline); err != nil {
		return c.usageFail(name, err.Error())
	}
	switch {
	case len(pos) < cmd.minArgs:
		missing := strings.Fields(cmd.args)[len(pos)]
		return c.usageFail(name, fmt.Sprintf("missing %s (usage: ringctl %s %s)", missing, name, cmd.args))
	case len(pos) > cmd.maxArgs:
		return c.usageFail(name, fmt.Sprintf("unexpected argument %q (usage: ringctl %s)", pos[cmd.maxArgs], strings.TrimSpace(name+" "+cmd.args)))
	}
	if !cmd.offline {
		if err := c.setupTLS(o); err != nil {
			return c.usageFail(name, err.Error())
		}
	}
	err = cmd.run(c, o, pos)
	var ue *usageError
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &ue):
		return c.usageFail(name, ue.msg)
	default:
		fmt.Fprintf(c.stderr, "ringctl: %s: %v\n", name, err)
		return exitFail
	}
}

func (c *cli) usageFail(cmd, msg string) int {
	if cmd == "" {
		fmt.Fprintf(c.stderr, "ringctl: %s\nRun 'ringctl help' for usage.\n", msg)
	} else {
		fmt.Fprintf(c.stderr, "ringctl: %s: %s\nRun 'ringctl help %s' for usage.\n", cmd, msg, cmd)
	}
	return exitUsage
}

// parseInterspersed parses flags that may appear before, between and after positional arguments
// (`join ID RAFT_ADDR -voter`); the flag package alone stops at the first positional one. A "--"
// ends flag parsing, so an argument starting with '-' can still be passed.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return pos, nil
		}
		if consumed := len(args) - len(rest); consumed > 0 && args[consumed-1] == "--" {
			return append(pos, rest...), nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

func checkGlobal(o *options, offline bool) error {
	if o.output != "text" && o.output != "json" {
		return fmt.Errorf("-o %q: want text or json", o.output)
	}
	if offline {
		return nil
	}
	if err := checkHostPort(o.addr); err != nil {
		return fmt.Errorf("-addr %q is not host:port", o.addr)
	}
	return nil
}

func checkHostPort(a string) error {
	host, port, err := net.SplitHostPort(a)
	if err != nil {
		return err
	}
	if host == "" || port == "" {
		return errors.New("empty host or port")
	}
	return nil
}

// checkID applies ringstate's rule for member ids, so that a typo is refused here with a usage
// error instead of travelling to the leader and back.
func checkID(arg, id string) error {
	if err := ringstate.ValidateMemberID(ringstate.MemberID(id)); err != nil {
		return usagef("%s %q is not a member id (%v)", arg, id, err)
	}
	return nil
}

func (c *cli) usage(w io.Writer) {
	var b bytes.Buffer
	b.WriteString(`ringctl is the operator CLI of a raftingest cluster. It talks to any node's gRPC address;
the node forwards changes to the Raft leader, or, under mutual TLS, names the leader and ringctl
asks it directly. The tls commands make the cluster's certificates and need no node.

Usage:
  ringctl [-addr HOST:PORT] [-o text|json] [-timeout D] [-tls.cert-path F -tls.key-path F -tls.ca-path F]
          COMMAND [ARGS] [FLAGS]

Commands:
`)
	for _, cmd := range commands {
		fmt.Fprintf(&b, "  %-28s %s\n", strings.TrimSpace(cmd.name+" "+cmd.args), cmd.summary)
	}
	fmt.Fprintf(&b, "  %-28s %s\n", "help [COMMAND]", "show this help, or a command's flags (e.g. help tls node)")
	b.WriteString(`
Global flags (before or after the command):
  -addr HOST:PORT   gRPC address of any node (default ` + defaultAddr + `; $` + addrEnv + ` overrides the default)
  -o text|json      output format (default text)
  -timeout D        how long to wait for the node (default 10s); for leave, for the whole leave (default 10m)
  -tls.cert-path F  PEM client certificate, for a cluster run with mutual TLS ($` + tlsCertEnv + `)
  -tls.key-path F   its PEM private key ($` + tlsKeyEnv + `)
  -tls.ca-path F    PEM CA that verifies the nodes' certificates ($` + tlsCAEnv + `)
                    Give all three or none; an operator certificate holds the operator rights
                    (join, remove, leave, transfer-leadership).

Examples:
`)
	for _, cmd := range commands {
		fmt.Fprintf(&b, "  %s\n", cmd.example)
	}
	b.WriteString(`
Exit status: 0 success, 1 the operation failed, 2 usage error.
`)
	_, _ = w.Write(b.Bytes())
}

// groupUsage is `ringctl help tls`.
func (c *cli) groupUsage(w io.Writer) {
	var b bytes.Buffer
	b.WriteString(`Usage: ringctl tls ca|node|operator [ARGS] [FLAGS]

Make the PEM files of a cluster run with mutual TLS (ECDSA P-256 keys, mode 0600). Nothing is sent
to a node. Existing files are never replaced without -force.

Commands:
`)
	for _, cmd := range commands {
		if strings.HasPrefix(cmd.name, tlsGroup+" ") {
			fmt.Fprintf(&b, "  %-28s %s\n", strings.TrimSpace(cmd.name+" "+cmd.args), cmd.summary)
		}
	}
	b.WriteString("\nExamples:\n")
	for _, cmd := range commands {
		if strings.HasPrefix(cmd.name, tlsGroup+" ") {
			fmt.Fprintf(&b, "  %s\n", cmd.example)
		}
	}
	b.WriteString("\nRun 'ringctl help tls COMMAND' for a command's flags.\n")
	_, _ = w.Write(b.Bytes())
}

func (c *cli) commandUsage(w io.Writer, cmd *command) {
	fmt.Fprintf(w, "Usage: ringctl %s\n\n%s.\n\nFlags:\n", strings.Join(strings.Fields(cmd.name+" "+cmd.args+" [FLAGS]"), " "), cmd.summary)
	fs := flag.NewFlagSet(cmd.name, flag.ContinueOnError)
	o := defaultOptions()
	registerGlobal(fs, o, cmd.offline)
	if cmd.flags != nil {
		cmd.flags(fs, o)
	}
	fs.SetOutput(w)
	fs.PrintDefaults()
	fmt.Fprintf(w, "\nExample:\n  %s\n", cmd.example)
}

func (c *cli) printJSON(v any) error {
	enc := json.NewEncoder(c.stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// rpcContext bounds one RPC by -timeout.
func rpcContext(o *options) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), o.timeout.d)
}
