// Package ingester assembles one raftingest process: the Raft node holding the ring, the member's
// lifecycle, and the gRPC and HTTP servers. cmd/ingester parses flags into a Config and runs a Server;
// tests start several Servers in one process on loopback addresses.
package ingester

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/raftingest/raftingest/overrides"

	"github.com/raftingest/raftingest/auth"
	"github.com/raftingest/raftingest/distributor"
	"github.com/raftingest/raftingest/lifecycle"
	"github.com/raftingest/raftingest/memstore"
	"github.com/raftingest/raftingest/raftfsm"
	"github.com/raftingest/raftingest/ringstate"
)

// Config is everything one ingester process is configured with.
type Config struct {
	NodeID    string
	DataDir   string
	RaftAddr  string
	GRPCAddr  string
	HTTPAddr  string
	Bootstrap bool
	// Join lists gRPC addresses of running members to ask to add this node (comma-separated flag).
	Join []string

	LogLevel  string
	LogFormat string
	// RingHistoryFile is -debug.ring-history-file: when set, every ring command this node submits
	// is appended there as JSON lines (raftfsm.HistoryFile), for the fault tests' linearizability
	// check. Empty: off.
	RingHistoryFile string

	// Set by code, not flags (tests and the fault harness).

	// Clock, when set, replaces time.Now as the node's wall clock: the ring time this node stamps on
	// the commands it commits as leader, the distributor's grace-period and rate-limit checks, and
	// the flusher's ages. The fault tests skew and jump it. nil means time.Now.
	Clock func() time.Time
	// Dial, when set, opens every outgoing TCP connection of the node — Raft, ring forwarding,
	// distributor pushes, hand-over streams, joins — so that tests can cut, delay or proxy links
	// per peer. nil means a plain net.Dialer.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)

	// TLS is the cluster plane's mutual TLS (-tls.*): Raft, gRPC, ringctl. Off when no path is set.
	TLS auth.Config
	// HTTPServer is the admin listener (-admin.http-addr) and HTTPS (-server.http-tls-*); see http.go.
	HTTPServer httpServerConfig
	// GRPCServer is the gRPC server's stream cap and keepalive (-server.grpc*); see grpcserver.go.
	GRPCServer grpcServerConfig

	Raft        raftfsm.Config
	Lifecycle   lifecycle.Config
	Store       memstore.Config
	Distributor distributor.Config
	Storage     storageConfig
	Querier     querierConfig
	Transfer    transferConfig
	Compactor   compactConfig // wire_compact.go

	// SeriesLimits is -ingester.max-global-series-per-user; see limits.go.
	SeriesLimits seriesLimitsConfig
	// RuntimeConfig is -runtime-config.file and its reload period: per-tenant limits that change
	// without a restart (overrides.Manager).
	RuntimeConfig overrides.Config

	// MemoryLimitRatio is -runtime.memory-limit-ratio: the Go runtime's soft memory limit
	// (GOMEMLIMIT) is set to this fraction of the cgroup's memory limit when there is one, unless
	// the GOMEMLIMIT environment variable is set; 0 leaves the limit alone. Applied by
	// cmd/ingester before the server starts (docs/memory.md).
	MemoryLimitRatio float64
	// GOGC is -runtime.gogc: the garbage collector's percentage, unless the GOGC environment
	// variable is set; 0 leaves the runtime's. Applied by cmd/ingester before the server starts
	// (docs/memory.md).
	GOGC int
	// BulkLoadGOGC is -runtime.bulk-load-gogc: the garbage collector's percentage while a joiner
	// imports a hand-over; 0 leaves GOGC alone (bulkgc.go).
	BulkLoadGOGC int
}

// DefaultGOGC is the default of -runtime.gogc: the runtime's own. 50 halves the resident
// headroom and costs float ingest little, but native-histogram ingest about a quarter of its
// speed (docs/memory.md has the measurements), so it is the operator's choice.
const DefaultGOGC = 100

// DefaultBulkLoadGOGC is the default of -runtime.bulk-load-gogc (bulkgc.go, docs/memory.md).
const DefaultBulkLoadGOGC = 400

// DefaultMemoryLimitRatio is the default of -runtime.memory-limit-ratio: 10% of the cgroup's
// limit left to what the Go runtime does not count (thread stacks outside the heap, the binary's
// mapped text, the WAL's mapped pages, the kernel's page tables).
const DefaultMemoryLimitRatio = 0.9

// RegisterFlags registers every flag with its default on f.
func (c *Config) RegisterFlags(f *flag.FlagSet) {
	host, _ := os.Hostname()
	f.StringVar(&c.NodeID, "node.id", host, "this member's id in the ring and in Raft (letters, digits, '-', '_', '.')")
	f.StringVar(&c.DataDir, "data.dir", "./data", "directory for the Raft log, snapshots, the WAL and the tokens file")
	f.StringVar(&c.RaftAddr, "raft.addr", "127.0.0.1:9096", "address the Raft transport listens on and advertises (IP:port)")
	f.StringVar(&c.GRPCAddr, "grpc.addr", "127.0.0.1:9095", "address of the gRPC server (ring service, ingester API)")
	f.StringVar(&c.HTTPAddr, "http.addr", "127.0.0.1:8080", "address of the HTTP server (/ring, /metrics, /ready, push and query APIs)")
	f.BoolVar(&c.Bootstrap, "bootstrap", false, "bootstrap a new cluster with this node as its only voter (first node only; ignored when the data directory already holds Raft state)")
	f.Func("join", "comma-separated gRPC addresses of running members to ask to add this node; without it a new node waits for 'ringctl join'", func(s string) error {
		for _, a := range strings.Split(s, ",") {
			if a = strings.TrimSpace(a); a != "" {
				c.Join = append(c.Join, a)
			}
		}
		return nil
	})
	f.StringVar(&c.LogLevel, "log.level", "info", "log level: debug, info, warn, error")
	f.StringVar(&c.LogFormat, "log.format", "logfmt", "log format: logfmt or json")
	f.StringVar(&c.RingHistoryFile, "debug.ring-history-file", "", "fault-test aid: append every ring command this node submits (invoke before it is proposed, return with its outcome) to this file as JSON lines, for the linearizability checker; the file is never rotated (empty: off)")
	c.TLS.RegisterFlags(f)
	c.HTTPServer.RegisterFlags(f)
	c.GRPCServer.RegisterFlags(f)
	c.Raft.RegisterFlags(f)
	c.Lifecycle.RegisterFlags(f)
	c.Store.RegisterFlags(f)
	c.SeriesLimits.RegisterFlags(f)
	c.Distributor.RegisterFlags(f)
	c.Storage.RegisterFlags(f)
	c.Querier.RegisterFlags(f)
	c.Transfer.RegisterFlags(f)
	c.Compactor.RegisterFlags(f)
	c.RuntimeConfig.RegisterFlags(f)
	f.Float64Var(&c.MemoryLimitRatio, "runtime.memory-limit-ratio", DefaultMemoryLimitRatio,
		"set the Go runtime's soft memory limit (GOMEMLIMIT) to this fraction of the cgroup's memory limit when the process runs under one, so that the garbage collector works harder before the cgroup's OOM killer would act instead of letting the heap double between collections; the GOMEMLIMIT environment variable, when set, wins; 0 disables. Range 0 to 1")
	f.IntVar(&c.GOGC, "runtime.gogc", DefaultGOGC,
		"the garbage collector's percentage (what GOGC sets): the heap may grow by this percentage of the live heap between collections, and that headroom is resident (50 halves it for more GC CPU); the GOGC environment variable, when set, wins; 0 leaves the runtime's. 0 or 10 to 10000")
	f.IntVar(&c.BulkLoadGOGC, "runtime.bulk-load-gogc", DefaultBulkLoadGOGC,
		"the garbage collector's percentage (GOGC) while a joiner imports a hand-over, restored when the imports end: most of what an import allocates stays live, so frequent collections mostly mark it again; a GOGC already higher, or off, is left alone, and GOMEMLIMIT still applies; 0 leaves GOGC alone. 0 or 100 to 10000")
}

// Validate checks every flag and their relations, naming the flags in its messages. It also copies
// the node's identity into the component configs.
func (c *Config) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if err := c.RuntimeConfig.Validate(); err != nil {
		errs = append(errs, err)
	}
	if c.NodeID == "" {
		bad("-node.id must be set")
	} else if err := ringstate.ValidateMemberID(ringstate.MemberID(c.NodeID)); err != nil {
		bad("-node.id: %v", err)
	}
	if c.DataDir == "" {
		bad("-data.dir must be set")
	}
	addrs := map[string]string{}
	for _, a := range []struct{ flag, v string }{{"-raft.addr", c.RaftAddr}, {"-grpc.addr", c.GRPCAddr}, {"-http.addr", c.HTTPAddr}} {
		host, port, err := net.SplitHostPort(a.v)
		if err != nil || port == "" {
			bad("%s %q: want host:port", a.flag, a.v)
			continue
		}
		if a.flag == "-raft.addr" {
			ip := net.ParseIP(host)
			if ip == nil || ip.IsUnspecified() {
				bad("-raft.addr %q: the host must be an IP address other peers can reach (it is advertised as is)", a.v)
			}
		} else if ip := net.ParseIP(host); host == "" || a.flag == "-grpc.addr" && ip != nil && ip.IsUnspecified() {
			// The address is advertised in the ring as given: the other members and ringctl dial
			// -grpc.addr, so ":9095" or "0.0.0.0:9095" would send them nowhere; the ring refuses
			// an -http.addr without a host (0.0.0.0 there only makes /ring's links local).
			bad("%s %q: give the host other members reach this node at (e.g. 10.0.0.1:%s, or 127.0.0.1:%s for a local cluster): the address is advertised in the ring as is", a.flag, a.v, port, port)
		}
		if prev, dup := addrs[a.v]; dup {
			bad("%s and %s are both %q", prev, a.flag, a.v)
		}
		addrs[a.v] = a.flag
	}
	if err := c.validateHTTPServer(); err != nil {
		errs = append(errs, err)
	}
	if c.Bootstrap && len(c.Join) > 0 {
		bad("-bootstrap and -join conflict: the first node bootstraps, the others join it")
	}
	for _, j := range c.Join {
		if _, _, err := net.SplitHostPort(j); err != nil {
			bad("-join %q: want host:port of a member's gRPC server", j)
		}
		if j == c.GRPCAddr {
			bad("-join %q is this node's own -grpc.addr", j)
		}
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		bad("-log.level %q: want debug, info, warn or error", c.LogLevel)
	}
	if c.LogFormat != "logfmt" && c.LogFormat != "json" {
		bad("-log.format %q: want logfmt or json", c.LogFormat)
	}
	if !(c.MemoryLimitRatio >= 0 && c.MemoryLimitRatio <= 1) { // NaN fails both
		bad("-runtime.memory-limit-ratio %v: want a fraction of the cgroup's memory limit from 0 (off) to 1", c.MemoryLimitRatio)
	}
	if c.GOGC != 0 && (c.GOGC < 10 || c.GOGC > 10000) {
		bad("-runtime.gogc %d: want 0 (leave the runtime's) or a percentage from 10 to 10000", c.GOGC)
	}
	if c.BulkLoadGOGC != 0 && (c.BulkLoadGOGC < 100 || c.BulkLoadGOGC > 10000) {
		bad("-runtime.bulk-load-gogc %d: want 0 (leave GOGC alone) or a percentage from 100 to 10000", c.BulkLoadGOGC)
	}

	c.Raft.ID, c.Raft.DataDir, c.Raft.RaftAddr, c.Raft.Bootstrap = c.NodeID, c.DataDir, c.RaftAddr, c.Bootstrap
	c.Lifecycle.ID, c.Lifecycle.RaftAddr, c.Lifecycle.GRPCAddr, c.Lifecycle.HTTPAddr = ringstate.MemberID(c.NodeID), c.RaftAddr, c.GRPCAddr, c.HTTPAddr
	c.Raft.RingHeartbeatTimeout = c.Lifecycle.HeartbeatTimeout
	c.Raft.RingHeartbeatPeriod = c.Lifecycle.HeartbeatPeriod
	c.Raft.ReplicationFactor = c.Distributor.ReplicationFactor
	c.Raft.AutoForgetHoldoff = 2 * c.Storage.Flush.FlushPeriod
	c.Raft.RegisterRequiresPeer = true
	c.Distributor.RingHeartbeatTimeout = c.Lifecycle.HeartbeatTimeout
	c.Distributor.ZoneAware, c.Raft.ZoneAware = c.Lifecycle.ZoneAwarenessEnabled, c.Lifecycle.ZoneAwarenessEnabled
	if c.Store.WALDir == "" && c.DataDir != "" {
		c.Store.WALDir = filepath.Join(c.DataDir, "wal")
	}
	for _, v := range []interface{ Validate() error }{&c.TLS, &c.GRPCServer, &c.Raft, &c.Lifecycle, &c.Store, &c.SeriesLimits, &c.Distributor, &c.Storage, &c.Querier, &c.Transfer} {
		if err := v.Validate(); err != nil {
			errs = append(errs, err)
		}
	}
	// The compactor's first range must be the flushed blocks' range (-ingester.flush-period): a
	// mismatch is refused at start, naming both flags, rather than found when the compactor runs.
	flushPeriod := time.Duration(0)
	if c.Compactor.Enabled {
		flushPeriod = c.Storage.Flush.FlushPeriod
	}
	if err := c.Compactor.Config.Validate(flushPeriod); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
