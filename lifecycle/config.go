package lifecycle

import (
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"time"

	"github.com/raftingest/raftingest/ringstate"
)

// Defaults of the lifecycle flags. They are chosen so that a local cluster works out of the box.
const (
	DefaultNumTokens        = 128
	DefaultHeartbeatPeriod  = 5 * time.Second
	DefaultHeartbeatTimeout = time.Minute
	// DefaultJoinAfter is 0: claim tokens as soon as the member is registered. Cortex waits so that a
	// LEAVING ingester can claim a newcomer and hand its chunks over; in a local or monolithic cluster
	// nobody is leaving while nodes start, and waiting only delays the first ACTIVE member (and /ready).
	// Set it (e.g. 30s) when rolling restarts should hand over instead of replaying the WAL.
	DefaultJoinAfter = 0 * time.Second

	// TokensBalanced and TokensRandom are the values of -ring.token-generation-strategy.
	TokensBalanced = "balanced"
	TokensRandom   = "random"

	// MaxNumTokens bounds -ring.num-tokens. Every token is carried by Raft commands and snapshots and
	// by the ring every distributor walks; Cortex and Mimir deployments use 128 to 512. 4096 leaves
	// headroom while keeping a 30-member ring around 100k tokens.
	MaxNumTokens = 4096
)

// Config holds one member's lifecycle settings. It is read by New and never changed afterwards.
//
// The flag-backed fields are registered by RegisterFlags; ID, RaftAddr, GRPCAddr and HTTPAddr are set
// by the cmd from its own flags (they are shared with other components) before Validate.
type Config struct {
	// NumTokens is how many tokens the member owns once ACTIVE. Flag: -ring.num-tokens.
	NumTokens int
	// HeartbeatPeriod is how often the member commits a heartbeat, in every state.
	// Flag: -ring.heartbeat-period.
	HeartbeatPeriod time.Duration
	// HeartbeatTimeout is the heartbeat age (in ring time) past which readers treat the member as
	// UNHEALTHY. Flag: -ring.heartbeat-timeout.
	HeartbeatTimeout time.Duration
	// TokensFilePath, when set, is where tokens are read from on a fresh join (if the file exists) and
	// written to after every change of the member's tokens. Flag: -ring.tokens-file-path.
	TokensFilePath string
	// TokenGeneration is how a joining member without a tokens file picks its tokens:
	// TokensBalanced (the default; empty means it) computes them from the committed ring so that
	// ownership is even (ringstate.Ring.BalancedTokens); TokensRandom draws them at random, as
	// Cortex does. Flag: -ring.token-generation-strategy.
	TokenGeneration string
	// JoinAfter is how long a PENDING member waits to be claimed by a leaver before it claims tokens
	// of its own. 0 claims at once. Flag: -ingester.join-after.
	JoinAfter time.Duration
	// FinalSleep is how long a member that has left the ring keeps its HTTP server (and so its
	// /metrics) up before the process exits, so that the last scrape sees how its hand-over or
	// flush went (Cortex's final_sleep). 0 exits at once. Flag: -ingester.final-sleep. The
	// lifecycle itself does not use it: the daemon does, after Run.
	FinalSleep time.Duration
	// Zone is the member's availability zone. Flag: -ingester.ring.instance-zone (Mimir's name), or
	// its older alias -ring.zone: both set this one value (the last given wins).
	Zone string
	// ZoneAwarenessEnabled is -ingester.ring.zone-awareness-enabled: a series' replicas go to
	// members of distinct zones (ringstate.Placement). It must be the same on every member, like
	// the replication factor; on, it requires Zone.
	ZoneAwarenessEnabled bool

	// ID is the member's ring id and Raft server id (set by the cmd).
	ID ringstate.MemberID
	// RaftAddr, GRPCAddr and HTTPAddr are the addresses other members reach this one at (set by the
	// cmd). RaftAddr is the member's identity together with ID: registering the same ID with another
	// RaftAddr is refused.
	RaftAddr, GRPCAddr, HTTPAddr string
}

// RegisterFlags registers the lifecycle flags with their defaults on f.
func (c *Config) RegisterFlags(f *flag.FlagSet) {
	f.IntVar(&c.NumTokens, "ring.num-tokens", DefaultNumTokens,
		"Number of tokens this ingester owns in the ring.")
	f.DurationVar(&c.HeartbeatPeriod, "ring.heartbeat-period", DefaultHeartbeatPeriod,
		"Period at which this ingester commits a heartbeat to the ring.")
	f.DurationVar(&c.HeartbeatTimeout, "ring.heartbeat-timeout", DefaultHeartbeatTimeout,
		"Heartbeat age, in ring time, after which an ingester is considered unhealthy and skipped by distributors. Must be greater than -ring.heartbeat-period.")
	f.StringVar(&c.TokensFilePath, "ring.tokens-file-path", "",
		"File holding this ingester's tokens as JSON {\"tokens\":[...]}: used on a fresh join if it exists, rewritten whenever the tokens change. Empty: random tokens, not saved.")
	f.StringVar(&c.TokenGeneration, "ring.token-generation-strategy", TokensBalanced,
		"How a new ingester without a tokens file picks its tokens: balanced (computed from the ring so that every member owns an even share: largest/smallest share within 1.1 from 3 to 300 members of 128 tokens) or random (Cortex's way: about 1.5 at 10 members and more).")
	f.DurationVar(&c.JoinAfter, "ingester.join-after", DefaultJoinAfter,
		"How long a new ingester waits in PENDING to be claimed by a leaving one before claiming tokens of its own. 0 claims at once.")
	f.DurationVar(&c.FinalSleep, "ingester.final-sleep", 0,
		"How long an ingester that has left the ring keeps serving /metrics before it exits, so that the last scrape sees its hand-over or flush (a second SIGINT or SIGTERM cuts it short). 0 exits at once.")
	f.StringVar(&c.Zone, "ingester.ring.instance-zone", "",
		"Availability zone of this ingester, as registered in the ring. With -ingester.ring.zone-awareness-enabled, a series' replicas go to distinct zones. -ring.zone is an alias.")
	f.StringVar(&c.Zone, "ring.zone", "",
		"Alias of -ingester.ring.instance-zone.")
	f.BoolVar(&c.ZoneAwarenessEnabled, "ingester.ring.zone-awareness-enabled", false,
		"Place each series' replicas on ingesters of distinct zones (-ingester.ring.instance-zone), so that losing a whole zone loses no acknowledged write and leaves reads complete. Must be the same on every member, like -distributor.replication-factor; needs -ingester.ring.instance-zone.")
}

// DefaultConfig returns the configuration RegisterFlags would set, without identity.
func DefaultConfig() Config {
	var c Config
	c.RegisterFlags(flag.NewFlagSet("lifecycle", flag.ContinueOnError))
	return c
}

// Validate reports every invalid setting, naming its flag (or field, for the ones the cmd sets). It
// never clamps. It reads the tokens file, if one exists, so that a malformed file stops the process
// at start instead of at join time.
func (c *Config) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf("lifecycle: "+format, args...)) }
	if c.ID == "" {
		bad("member id (Config.ID) is empty")
	}
	if c.RaftAddr == "" {
		bad("raft address (Config.RaftAddr) of %q is empty", c.ID)
	}
	if c.NumTokens < 1 || c.NumTokens > MaxNumTokens {
		bad("-ring.num-tokens must be between 1 and %d, got %d", MaxNumTokens, c.NumTokens)
	}
	if c.HeartbeatPeriod <= 0 {
		bad("-ring.heartbeat-period must be positive, got %s", c.HeartbeatPeriod)
	}
	// Ring time coasts across gaps longer than ringstate.MaxRingTimeGap (an outage); a member
	// heartbeating less often than that would make normal gaps look like outages.
	if maxP := time.Duration(ringstate.MaxRingTimeGap/2) * time.Millisecond; c.HeartbeatPeriod > maxP {
		bad("-ring.heartbeat-period (%s) must be at most %s (half the ring's outage gap, %s)",
			c.HeartbeatPeriod, maxP, time.Duration(ringstate.MaxRingTimeGap)*time.Millisecond)
	}
	// A member is judged by the age of its last heartbeat: with a timeout not above the period, a
	// healthy member looks UNHEALTHY between two heartbeats and distributors spill away from it.
	if c.HeartbeatTimeout <= c.HeartbeatPeriod {
		bad("-ring.heartbeat-timeout (%s) must be greater than -ring.heartbeat-period (%s), or healthy members look unhealthy between heartbeats",
			c.HeartbeatTimeout, c.HeartbeatPeriod)
	}
	switch c.TokenGeneration {
	case "", TokensBalanced, TokensRandom:
	default:
		bad("-ring.token-generation-strategy %q: want %s or %s", c.TokenGeneration, TokensBalanced, TokensRandom)
	}
	if c.FinalSleep < 0 {
		bad("-ingester.final-sleep must be >= 0, got %s", c.FinalSleep)
	}
	if c.JoinAfter < 0 {
		bad("-ingester.join-after must be >= 0, got %s", c.JoinAfter)
	}
	if c.ZoneAwarenessEnabled && c.Zone == "" {
		bad("-ingester.ring.zone-awareness-enabled needs this ingester's zone: set -ingester.ring.instance-zone")
	}
	if c.TokensFilePath != "" {
		if _, _, err := readTokensFile(c.TokensFilePath); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// readTokensFile reads and parses the tokens file at path. A missing file is not an error: found is
// false. Every error names the flag and the path.
func readTokensFile(path string) (ts ringstate.Tokens, found bool, err error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("lifecycle: -ring.tokens-file-path %s: %w", path, err)
	}
	ts, err = ringstate.ParseTokensFile(data)
	if err != nil {
		return nil, true, fmt.Errorf("lifecycle: -ring.tokens-file-path %s: malformed: %w", path, err)
	}
	return ts, true, nil
}
