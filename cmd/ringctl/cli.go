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
	"unicode"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/raftingest/raftingest/ringpb"
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

	linearizable bool // ring
	tokens       bool // ring
	voter        bool // join
	wait         bool // leave
}

// cli runs one invocation. Its fields are what tests substitute.
type cli struct {
	stdout, stderr io.Writer
	getenv         func(string) string
	poll           time.Duration // leave's GetRing interval
}

// run is main without os: it parses args, runs the command and returns the exit code.
func run(args []string, stdout, stderr io.Writer) int {
	c := &cli{stdout: stdout, stderr: stderr, getenv: os.Getenv, poll: defaultPoll}
	return c.run(args)
}

// command is one subcommand.
type command struct {
	name    string
	args    string // positional arguments, for usage
	summary string
	example string
	minArgs int
	maxArgs int
	flags   func(fs *flag.FlagSet, o *options)
	run     func(c *cli, o *options, args []string) error
}

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
			summary: "add server ID at RAFT_ADDR to the Raft configuration (forwarded to the leader)",
			example: "ringctl join ingester-4 127.0.0.1:7004 -voter",
			flags: func(fs *flag.FlagSet, o *options) {
				fs.BoolVar(&o.voter, "voter", false, "ask for a voter even when the leader would add a non-voter")
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
			summary: "forget a dead member, in the ring and in the Raft configuration",
			example: "ringctl remove ingester-3", run: (*cli).remove},
		{name: "transfer-leadership", args: "[ID]", maxArgs: 1,
			summary: "hand Raft leadership to ID, or to the most up-to-date follower",
			example: "ringctl transfer-leadership ingester-2", run: (*cli).transferLeadership},
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
// `ringctl ring -o json` works as well as `ringctl -o json ring`.
func registerGlobal(fs *flag.FlagSet, o *options) {
	fs.StringVar(&o.addr, "addr", o.addr, "gRPC `HOST:PORT` of any node; $"+addrEnv+" overrides the default")
	fs.StringVar(&o.output, "o", o.output, "output `format`: text or json")
	fs.Var(&o.timeout, "timeout", "`duration` to wait for the node; for leave, for the whole leave (default 10m there)")
}

func (c *cli) run(args []string) int {
	o := &options{addr: defaultAddr, output: "text", timeout: durationFlag{d: defaultTimeout}}
	if env := c.getenv(addrEnv); env != "" {
		o.addr = env
	}
	global := flag.NewFlagSet("ringctl", flag.ContinueOnError)
	global.SetOutput(io.Discard) // we print our own messages, once
	registerGlobal(global, o)
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
		cmd := lookup(rest[0])
		if cmd == nil {
			return c.usageFail("help", fmt.Sprintf("unknown command %q", rest[0]))
		}
		c.commandUsage(c.stdout, cmd)
		return exitOK
	}
	cmd := lookup(name)
	if cmd == nil {
		return c.usageFail("", fmt.Sprintf("unknown command %q", name))
	}
	fs := flag.NewFlagSet("ringctl "+name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	registerGlobal(fs, o)
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
	if err := checkGlobal(o); err != nil {
		return c.usageFail(name, err.Error())
	}
	switch {
	case len(pos) < cmd.minArgs:
		missing := strings.Fields(cmd.args)[len(pos)]
		return c.usageFail(name, fmt.Sprintf("missing %s (usage: ringctl %s %s)", missing, name, cmd.args))
	case len(pos) > cmd.maxArgs:
		return c.usageFail(name, fmt.Sprintf("unexpected argument %q (usage: ringctl %s %s)", pos[cmd.maxArgs], name, cmd.args))
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

func checkGlobal(o *options) error {
	if o.output != "text" && o.output != "json" {
		return fmt.Errorf("-o %q: want text or json", o.output)
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

// checkID mirrors ringstate's rule for member ids, so that a typo is refused here with a usage
// error instead of travelling to the leader and back.
func checkID(arg, id string) error {
	if id == "" || len(id) > 128 {
		return usagef("%s %q must have 1 to 128 characters", arg, id)
	}
	for _, r := range id {
		if !(unicode.IsLetter(r) || unicode.IsDigit(r) || r == '-' || r == '_' || r == '.') {
			return usagef("%s %q is not a member id: only letters, digits, '-', '_' and '.' are allowed", arg, id)
		}
	}
	return nil
}

func (c *cli) usage(w io.Writer) {
	var b bytes.Buffer
	b.WriteString(`ringctl is the operator CLI of a raftingest cluster. It talks to any node's gRPC address;
the node forwards changes to the Raft leader.

Usage:
  ringctl [-addr HOST:PORT] [-o text|json] [-timeout D] COMMAND [ARGS] [FLAGS]

Commands:
`)
	for _, cmd := range commands {
		fmt.Fprintf(&b, "  %-28s %s\n", strings.TrimSpace(cmd.name+" "+cmd.args), cmd.summary)
	}
	fmt.Fprintf(&b, "  %-28s %s\n", "help [COMMAND]", "show this help, or a command's flags")
	b.WriteString(`
Global flags (before or after the command):
  -addr HOST:PORT   gRPC address of any node (default ` + defaultAddr + `; $` + addrEnv + ` overrides the default)
  -o text|json      output format (default text)
  -timeout D        how long to wait for the node (default 10s); for leave, for the whole leave (default 10m)

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

func (c *cli) commandUsage(w io.Writer, cmd *command) {
	fmt.Fprintf(w, "Usage: ringctl %s\n\n%s.\n\nFlags:\n", strings.TrimSpace(cmd.name+" "+cmd.args+" [FLAGS]"), cmd.summary)
	fs := flag.NewFlagSet(cmd.name, flag.ContinueOnError)
	o := &options{addr: defaultAddr, output: "text", timeout: durationFlag{d: defaultTimeout}}
	registerGlobal(fs, o)
	if cmd.flags != nil {
		cmd.flags(fs, o)
	}
	fs.SetOutput(w)
	fs.PrintDefaults()
	fmt.Fprintf(w, "\nExample:\n  %s\n", cmd.example)
}

// dial returns a client for addr. grpc.NewClient does not connect: the first RPC does, once, and
// fails fast when nobody listens. Retries are disabled: an admin command is one RPC, and a change
// whose answer was lost must be looked at by the operator, not sent again behind their back.
func dial(addr string) (ringpb.RingClient, func(), error) {
	conn, err := grpc.NewClient(addr,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDisableRetry())
	if err != nil {
		return nil, nil, fmt.Errorf("cannot reach %s: %v (check -addr)", addr, err)
	}
	return ringpb.NewRingClient(conn), func() { _ = conn.Close() }, nil
}

// rpcError turns a gRPC error into the one line an operator needs: which node, what happened, and,
// for errors the server sent, its message.
func rpcError(addr string, timeout time.Duration, err error) error {
	st, ok := status.FromError(err)
	if !ok {
		return fmt.Errorf("%s: %v", addr, err)
	}
	msg := st.Message()
	switch st.Code() {
	case codes.Unavailable:
		if isConnError(msg) {
			return fmt.Errorf("cannot reach %s: %s (is the node running? -addr)", addr, dialReason(msg))
		}
	case codes.DeadlineExceeded:
		return fmt.Errorf("no answer from %s within %s (%s); the operation may still complete — check with 'ringctl status' and 'ringctl ring', or raise -timeout",
			addr, timeout, msg)
	case codes.Canceled:
		return fmt.Errorf("canceled while waiting for %s", addr)
	}
	return fmt.Errorf("%s (%s from %s)", msg, st.Code(), addr)
}

// isConnError tells a connection failure (produced by the client) from an Unavailable the server
// chose to send, such as "no leader".
func isConnError(msg string) bool {
	for _, s := range []string{"connection error", "transport:", "error reading from server", "connection closed",
		"name resolver", "produced zero addresses", "connection refused"} {
		if strings.Contains(msg, s) {
			return true
		}
	}
	return false
}

// dialReason extracts the operating system's reason from a gRPC connection error, e.g.
// `connection error: desc = "transport: Error while dialing: dial tcp 127.0.0.1:9095: connect:
// connection refused"` becomes "connection refused".
func dialReason(msg string) string {
	m := strings.TrimRight(msg, `"`)
	if i := strings.LastIndex(m, ": "); i >= 0 && i+2 < len(m) {
		return m[i+2:]
	}
	return msg
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
