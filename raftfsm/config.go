package raftfsm

import (
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/raftingest/raftingest/auth"
	"github.com/raftingest/raftingest/ringstate"
)

// Config configures a Node. Flags hold the tunables; the identity and the wiring are set by code
// (the daemon's main) before NewNode. A Config is read once by NewNode and not retained by
// reference.
type Config struct {
	// Set by code.

	// ID is this node's Raft server ID, which is also its ring member ID.
	ID string
	// DataDir holds the Raft state under DataDir/raft: raft.db (log and stable store) and
	// snapshots/.
	DataDir string
	// RaftAddr is the Raft transport's bind and advertise address, IP:port (the host must be an IP
	// literal: it is advertised to peers and stored in the Raft configuration). Port 0 picks a free
	// port (tests); Node.RaftAddr reports it.
	RaftAddr string
	// Bootstrap makes a node with no Raft state bootstrap a single-voter cluster of itself. It is
	// ignored when the data dir already holds Raft state, so leaving it on across restarts is safe.
	Bootstrap bool
	// Logger receives the node's and Raft's logs; nil discards them.
	Logger *slog.Logger
	// Registerer receives the node's metrics; nil registers nothing.
	Registerer prometheus.Registerer
	// ResolveGRPC, when set, maps a Raft server ID to the gRPC address of its Ring service, for
	// forwarding to the leader. When unset, or when it reports false, the address is the ring
	// member's GRPCAddr.
	ResolveGRPC func(id string) (string, bool)
	// RingHeartbeatTimeout is -ring.heartbeat-timeout: voter promotion prefers members healthy by it,
	// and GetRing reports it. Zero disables the health check.
	RingHeartbeatTimeout time.Duration
	// RingHeartbeatPeriod is -ring.heartbeat-period: the leader's heartbeat batches wait at most a
	// quarter of it (HeartbeatBatchWindow is capped there), so that a member's heartbeat, which
	// waits for its outcome at most one period, is acknowledged well within it. 0: no cap.
	RingHeartbeatPeriod time.Duration
	// RegisterRequiresPeer makes the leader admit a ring Register only for a member id that is in
	// the Raft configuration at the command's raft address. The daemon sets it: a node removed from
	// Raft (ringctl remove) and restarted on its old data must not re-enter the ring as a ghost
	// member that no Raft server backs. Checked before proposing, never inside FSM.Apply.
	RegisterRequiresPeer bool
	// ReconcileInterval is how often the leader checks voter counts and every node checks whether it
	// was removed; zero means 5s. Configuration changes also trigger a check at once.
	ReconcileInterval time.Duration
	// History, when set, records this node's ring-operation history (a fault-test aid; see
	// history.go): it is called synchronously with an invoke event before Node.Apply proposes or
	// forwards a command, and with its return event once the call returns — and likewise around the
	// Remove the leader proposes for a removed peer. It runs on the caller's goroutine, inside
	// Node.Apply, and concurrently with other calls: it may read Ring but must not call Node methods
	// that wait for Raft. HistoryFile.Record is one. nil records nothing.
	History func(HistoryEvent)
	// Dial, when set, opens every outgoing TCP connection of the node: the Raft transport's
	// connections to peers and the gRPC connections that forward commands to the leader. Fault
	// tests set it to cut, delay or proxy links per peer. nil keeps the plain dialers (hashicorp/raft's
	// TCP stream layer and grpc's own), exactly as without the hook.
	Dial DialFunc
	// TLS, when set, is the cluster plane's mutual TLS: the Raft transport speaks TLS 1.3 with it
	// (a peer is accepted only with a certificate the CA verifies whose member id is in this node's
	// Raft configuration, or any member's while the configuration is empty; a dialed peer must
	// present the certificate of the server id the configuration has at that address), the
	// forwarding clients present this node's certificate, and the Ring service checks every
	// caller's rights. nil: plain TCP and gRPC, everyone allowed.
	TLS *auth.Authority
	// Clock, when set, is this node's wall clock for the ring time it stamps on every command it
	// proposes as leader (nil: time.Now). Only the proposing leader's clock counts: a follower that
	// forwards a command never stamps it, and replicas apply the stamp from the entry. The stamps
	// follow the clock forward but never backward, and never fall below the ring time already
	// applied (see ringClock and DESIGN.md, "Ring time and clocks"). The fault tests skew and jump it.
	Clock func() time.Time

	// ZoneAware is -ingester.ring.zone-awareness-enabled, for AutoForgetPeriods' safety rule: the
	// replication sets it checks are the zone-aware ones when set. Set by code.
	ZoneAware bool
	// ReplicationFactor is -distributor.replication-factor, for AutoForgetPeriods' safety rule.
	ReplicationFactor int
	// AutoForgetHoldoff is how long the leader waits, after it became leader and after any member
	// was removed through it, before it auto-forgets one: a write acknowledged by a quorum may
	// have one copy left once a member is forgotten, until it is flushed and compacted back to RF
	// copies, so two forgets close together could take both of its copies. The daemon sets twice
	// -ingester.flush-period; 0 waits not at all (tests).
	AutoForgetHoldoff time.Duration

	// Flags.

	MaxVoters         int           // -raft.max-voters
	HeartbeatTimeout  time.Duration // -raft.heartbeat-timeout
	ElectionTimeout   time.Duration // -raft.election-timeout
	CommitTimeout     time.Duration // -raft.commit-timeout
	SnapshotThreshold uint64        // -raft.snapshot-threshold
	SnapshotInterval  time.Duration // -raft.snapshot-interval
	TrailingLogs      uint64        // -raft.trailing-logs
	ApplyTimeout      time.Duration // -raft.apply-timeout
	// VoterReplaceAfter is -raft.voter-replace-after: the leader demotes a voter it has not heard
	// from for this long and promotes a healthy non-voter in its place (reconcile.go). 0 disables.
	VoterReplaceAfter time.Duration
	// AutoForgetPeriods is -ring.auto-forget-unhealthy-periods: the leader forgets a member whose
	// heartbeat is this many -ring.heartbeat-timeout periods old, when that loses no acknowledged
	// data (ringstate.Ring.AutoForget). 0 (the default) never forgets on its own.
	AutoForgetPeriods int
	// HeartbeatBatchWindow is -ring.heartbeat-batch-window: how long the leader collects heartbeats
	// (its own and those followers forward) before proposing them as one entry
	// (HeartbeatBatcher). 0 proposes every heartbeat as an entry of its own.
	HeartbeatBatchWindow time.Duration
	// MaxOwnershipSpread is -ring.max-ownership-spread: the leader refuses a token claim after which
	// the largest owner holds more than this many times what the smallest holds (per zone under
	// zone awareness) and more unevenly than before (ringstate.Ring.CheckClaimSpread). 0 disables.
	MaxOwnershipSpread float64
	// Recover is -raft.recover: before starting, rebuild a Raft configuration in which this node
	// is the only voter, from its own log and snapshot (recover.go). For a majority of voters lost
	// for good; a one-shot, refused once the configuration has changed after a recovery.
	Recover bool
}

// RegisterFlags registers the Raft tunables on f with their defaults. The defaults suit 2-core
// machines on a LAN: 1s heartbeat and election timeouts tolerate GC and scheduling pauses without
// spurious elections, and a ring changes rarely, so snapshots are cheap and infrequent.
func (c *Config) RegisterFlags(f *flag.FlagSet) {
	f.IntVar(&c.MaxVoters, "raft.max-voters", 5, "Most Raft voters; further peers join as non-voters and are promoted when a voter leaves. Odd numbers tolerate as many failures as the next even one.")
	f.DurationVar(&c.HeartbeatTimeout, "raft.heartbeat-timeout", time.Second, "Time a follower waits without contact from the leader before it starts an election.")
	f.DurationVar(&c.ElectionTimeout, "raft.election-timeout", time.Second, "Time a candidate waits for votes before it starts another election.")
	f.DurationVar(&c.CommitTimeout, "raft.commit-timeout", 50*time.Millisecond, "Longest the leader waits before sending a heartbeat that carries the commit index.")
	f.Uint64Var(&c.SnapshotThreshold, "raft.snapshot-threshold", 8192, "Log entries since the last snapshot that trigger a new one.")
	f.DurationVar(&c.SnapshotInterval, "raft.snapshot-interval", 2*time.Minute, "How often Raft checks whether -raft.snapshot-threshold is reached.")
	f.Uint64Var(&c.TrailingLogs, "raft.trailing-logs", 10240, "Log entries kept after a snapshot, so a briefly lagging follower catches up without a snapshot transfer.")
	f.DurationVar(&c.ApplyTimeout, "raft.apply-timeout", 10*time.Second, "Longest a ring command waits to be committed before its outcome is reported unknown.")
	f.DurationVar(&c.VoterReplaceAfter, "raft.voter-replace-after", time.Minute, "A voter the leader has not heard from for this long is replaced: a healthy non-voter (preferably in its zone) is promoted, then the silent voter demoted to non-voter, one change at a time and only while a majority of the voters answers. 0 disables. At least 3 times -raft.heartbeat-timeout.")
	f.IntVar(&c.AutoForgetPeriods, "ring.auto-forget-unhealthy-periods", 0, "Forget, on the leader, a member whose heartbeat is this many -ring.heartbeat-timeout periods old — as 'ringctl remove' would — but only when that loses no acknowledged data: with a replication factor of at least 3, only while every member sharing a replication set with it is ACTIVE and healthy (every sample it held keeps a copy elsewhere), and at most one member per twice -ingester.flush-period (by then what had one copy left is flushed and compacted back to the replication factor). Logged with the reason and counted (raftingest_ring_auto_forgotten_total). 0 never forgets on its own.")
	f.DurationVar(&c.HeartbeatBatchWindow, "ring.heartbeat-batch-window", DefaultHeartbeatBatchWindow, "How long the Raft leader collects ring heartbeats (its own and those the other members send it) before it commits them as one entry, so that the entry rate stays about one per window however many members heartbeat. A heartbeat counts from the entry's time, as before, at most this much later. At most a quarter of -ring.heartbeat-period is used (a heartbeat waits for its outcome at most one period). Used only while every member runs a build that reads batches; else each heartbeat is an entry of its own. 0 never batches; at most 5s.")
	f.Float64Var(&c.MaxOwnershipSpread, "ring.max-ownership-spread", 1.1, "The leader refuses a token claim after which the largest token owner holds more than this many times what the smallest holds (within each zone under -ingester.ring.zone-awareness-enabled; rings or zones of fewer than 3 owners are not judged), unless the claim makes an uneven ring more even. Balanced tokens (-ring.token-generation-strategy=balanced) stay near 1.01; random ones or a hand-edited tokens file are what it stops. 0 disables.")
	f.BoolVar(&c.Recover, "raft.recover", false, "Disaster recovery when a majority of Raft voters is lost for good: start as the only voter, from this node's own Raft log (what the lost majority committed without it is gone). Then remove the dead members with 'ringctl remove', add new nodes, and restart without this flag; a restart with it is refused once the configuration has changed. See README, \"Losing a majority\".")
}

// DefaultConfig returns the flag defaults, for code that does not parse flags (tests, tools).
func DefaultConfig() Config {
	var c Config
	c.RegisterFlags(flag.NewFlagSet("", flag.ContinueOnError))
	return c
}

// Validate checks every field and the relations between them, naming the flag at fault. It never
// clamps a bad value.
func (c *Config) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf("raftfsm: "+format, args...)) }
	if c.ID == "" {
		bad("node id is empty")
	} else if err := checkID(c.ID); err != nil {
		bad("node id: %v", err)
	}
	if c.DataDir == "" {
		bad("data dir is empty")
	}
	if host, port, err := net.SplitHostPort(c.RaftAddr); err != nil {
		bad("raft address %q: %v", c.RaftAddr, err)
	} else if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
		bad("raft address %q: host must be an IP address peers can reach (not a name, not 0.0.0.0)", c.RaftAddr)
	} else if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		bad("raft address %q: bad port: %v", c.RaftAddr, err)
	}
	if c.MaxVoters < 1 {
		bad("-raft.max-voters=%d: want at least 1", c.MaxVoters)
	}
	if c.HeartbeatTimeout < 5*time.Millisecond {
		bad("-raft.heartbeat-timeout=%s: want at least 5ms", c.HeartbeatTimeout)
	}
	if c.ElectionTimeout < 5*time.Millisecond {
		bad("-raft.election-timeout=%s: want at least 5ms", c.ElectionTimeout)
	}
	if c.ElectionTimeout < c.HeartbeatTimeout {
		bad("-raft.election-timeout=%s is shorter than -raft.heartbeat-timeout=%s", c.ElectionTimeout, c.HeartbeatTimeout)
	}
	if c.CommitTimeout < time.Millisecond {
		bad("-raft.commit-timeout=%s: want at least 1ms", c.CommitTimeout)
	}
	if c.CommitTimeout >= c.HeartbeatTimeout {
		bad("-raft.commit-timeout=%s must be shorter than -raft.heartbeat-timeout=%s", c.CommitTimeout, c.HeartbeatTimeout)
	}
	if c.SnapshotThreshold < 1 {
		bad("-raft.snapshot-threshold=%d: want at least 1", c.SnapshotThreshold)
	}
	if c.SnapshotInterval < 5*time.Millisecond {
		bad("-raft.snapshot-interval=%s: want at least 5ms", c.SnapshotInterval)
	}
	if c.AutoForgetPeriods < 0 {
		bad("-ring.auto-forget-unhealthy-periods=%d: want 0 (off) or more", c.AutoForgetPeriods)
	} else if c.AutoForgetPeriods > 0 && c.RingHeartbeatTimeout <= 0 {
		bad("-ring.auto-forget-unhealthy-periods needs the health check (-ring.heartbeat-timeout above 0)")
	}
	if c.MaxOwnershipSpread != 0 && !(c.MaxOwnershipSpread >= 1) {
		bad("-ring.max-ownership-spread=%v: want 0 (off) or at least 1", c.MaxOwnershipSpread)
	}
	if c.HeartbeatBatchWindow < 0 || c.HeartbeatBatchWindow > 5*time.Second {
		bad("-ring.heartbeat-batch-window=%s: want 0 (off) to 5s (a heartbeat waits up to this long)", c.HeartbeatBatchWindow)
	}
	if c.VoterReplaceAfter < 0 {
		bad("-raft.voter-replace-after=%s: want 0 (off) or more", c.VoterReplaceAfter)
	} else if c.VoterReplaceAfter > 0 && c.VoterReplaceAfter < 3*c.HeartbeatTimeout {
		bad("-raft.voter-replace-after=%s is shorter than 3 times -raft.heartbeat-timeout=%s: a voter slow for a moment would be replaced", c.VoterReplaceAfter, c.HeartbeatTimeout)
	}
	if c.ApplyTimeout <= 0 {
		bad("-raft.apply-timeout=%s: want more than 0", c.ApplyTimeout)
	}
	if c.ReconcileInterval < 0 {
		bad("reconcile interval %s is negative", c.ReconcileInterval)
	}
	if c.RingHeartbeatTimeout < 0 {
		bad("ring heartbeat timeout %s is negative", c.RingHeartbeatTimeout)
	}
	return errors.Join(errs...)
}

// checkID applies ringstate's member id rules, since a Raft server ID is also a ring member ID: an
// id the ring would refuse must never become a Raft server.
func checkID(id string) error {
	return ringstate.ValidateMemberID(ringstate.MemberID(id))
}
