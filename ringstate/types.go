// Package ringstate is the pure, deterministic model of the hash ring: its members, their states and
// tokens, the legal transitions between states, and the lookups the data plane makes against it.
//
// Nothing here starts a goroutine, reads a clock, draws a random number from a global source, logs or
// performs I/O: time and randomness are arguments. A *Ring is an immutable value; every change returns a
// new *Ring and leaves the receiver untouched, so a published ring can be read by any number of
// goroutines without locks while the Raft FSM builds the next one.
package ringstate

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// MemberID names a ring member. It is also the member's Raft server ID.
type MemberID string

// Token is a position on the 32-bit hash ring.
type Token uint32

// Tokens is a set of tokens kept sorted ascending and free of duplicates wherever this package stores
// or returns one.
type Tokens []Token

// State is a member's lifecycle state. The numbering matches Cortex's ring.proto so that dashboards and
// tools that know Cortex's values read ours the same way.
type State int32

// The lifecycle states. UNHEALTHY is not a state: it is derived from heartbeat age (see Member.Healthy).
const (
	ACTIVE  State = 0 // owns tokens and takes writes and reads
	LEAVING State = 1 // shutting down: takes no writes, still serves reads, hands over or flushes
	PENDING State = 2 // registered, owns no tokens, waiting to be claimed by a leaver or to join
	JOINING State = 3 // owns or is receiving tokens, takes no writes yet
)

// String returns the upper-case name Cortex uses for the state.
func (s State) String() string {
	switch s {
	case ACTIVE:
		return "ACTIVE"
	case LEAVING:
		return "LEAVING"
	case PENDING:
		return "PENDING"
	case JOINING:
		return "JOINING"
	}
	return "State(" + strconv.Itoa(int(s)) + ")"
}

// Valid reports whether s is one of the four lifecycle states.
func (s State) Valid() bool { return s >= ACTIVE && s <= JOINING }

// ParseState is the inverse of State.String.
func ParseState(s string) (State, error) {
	for st := ACTIVE; st <= JOINING; st++ {
		if strings.EqualFold(s, st.String()) {
			return st, nil
		}
	}
	return 0, fmt.Errorf("ringstate: unknown state %q", s)
}

// Member is one ingester in the ring. Values returned by a Ring are copies except for Tokens, which
// shares the ring's immutable backing array: callers must not modify it.
type Member struct {
	ID       MemberID
	RaftAddr string // host:port of the member's Raft transport
	GRPCAddr string // host:port of the member's gRPC server (ingester, transfer, forwarding)
	HTTPAddr string // host:port of the member's HTTP server
	Zone     string // availability zone: placement is one member per zone when zone-aware (Placement), and Raft voters spread over zones

	State State
	// Tokens the member owns. Invariant: sorted, unique, and no token is owned by two members.
	// PENDING members own none.
	Tokens Tokens

	// RegisteredMs is the ring time (Unix milliseconds) of the member's first registration.
	RegisteredMs int64
	// HeartbeatMs is the ring time (Unix milliseconds) of the member's last heartbeat or command.
	HeartbeatMs int64

	// HandoverPeer is the other side of a hand-over in progress: for a LEAVING member, the JOINING
	// member it claimed; for a JOINING member that is receiving, the LEAVING member that claimed it.
	// Invariant: the relation is symmetric — a.HandoverPeer == b.ID iff b.HandoverPeer == a.ID.
	HandoverPeer MemberID

	// CommandVersion is the highest Raft command version (raftfsm's format byte) the member's build
	// reads, as the member last advertised it: set by every Register (0 when the register carries
	// none: a build that predates the field, which reads at most version 2) and by a Heartbeat that
	// carries one. It is informational to Apply (see OpClaimCompactor's Readers for why): the Raft
	// leader reads it to decide whether it may propose a command of a newer version at all.
	CommandVersion uint32
}

// Healthy reports whether the member's last heartbeat is at most timeoutMs old at nowMs. Callers
// normally pass Ring.TimeMs as nowMs, so that a ring that stops advancing (no quorum) keeps every
// member as healthy as it was instead of declaring the whole cluster dead (cortex#157).
// A timeout of zero or less disables the check.
func (m *Member) Healthy(nowMs, timeoutMs int64) bool {
	if timeoutMs <= 0 || nowMs <= m.HeartbeatMs {
		return true
	}
	// nowMs > HeartbeatMs, so the true age is in (0, 2^64): computed in uint64 it cannot overflow, where
	// nowMs-HeartbeatMs in int64 would wrap negative (and read as healthy) for extreme timestamps.
	return uint64(nowMs)-uint64(m.HeartbeatMs) <= uint64(timeoutMs)
}

// Writable reports whether the member may take writes at nowMs: ACTIVE and healthy.
func (m *Member) Writable(nowMs, timeoutMs int64) bool {
	return m.State == ACTIVE && m.Healthy(nowMs, timeoutMs)
}

// Readable reports whether the member may serve reads at nowMs: ACTIVE or LEAVING, and healthy.
func (m *Member) Readable(nowMs, timeoutMs int64) bool {
	return (m.State == ACTIVE || m.State == LEAVING) && m.Healthy(nowMs, timeoutMs)
}

func (m *Member) clone() Member {
	c := *m
	c.Tokens = cloneTokens(m.Tokens)
	return c
}

// cloneTokens copies ts into an array of exactly its length (nil stays nil), so that a caller who
// appends to a Tokens slice the ring handed out gets a new array instead of writing into spare
// capacity that other readers share.
func cloneTokens(ts Tokens) Tokens {
	if ts == nil {
		return nil
	}
	out := make(Tokens, len(ts))
	copy(out, ts)
	return out
}

// Errors returned by ring changes. Every refusal wraps exactly one of these, so callers and the FSM's
// result codes can classify a failure with errors.Is.
var (
	ErrUnknownMember      = errors.New("ringstate: unknown member")
	ErrMemberExists       = errors.New("ringstate: member already registered with other addresses")
	ErrInvalidMember      = errors.New("ringstate: invalid member")
	ErrIllegalTransition  = errors.New("ringstate: illegal state transition")
	ErrTokenOwned         = errors.New("ringstate: token already owned")
	ErrInvalidTokens      = errors.New("ringstate: invalid tokens")
	ErrJoinerNotPending   = errors.New("ringstate: joiner is not PENDING")
	ErrHandoverMismatch   = errors.New("ringstate: members are not handing over to each other")
	ErrHandoverInProgress = errors.New("ringstate: hand-over in progress")
	ErrInvalidCommand     = errors.New("ringstate: invalid command")
	ErrCorruptState       = errors.New("ringstate: corrupt state")
	// ErrLeaseHeld is a claim of the compactor lease refused because another member holds it.
	ErrLeaseHeld = errors.New("ringstate: compactor lease held by another member")
	// ErrMixedVersions is a command refused because a member of the ring does not read the
	// command version the command is written in (a member still on an older build).
	ErrMixedVersions = errors.New("ringstate: not every member reads the command's version")
)

// TransitionError is an illegal state transition. It wraps ErrIllegalTransition.
type TransitionError struct {
	Member   MemberID
	From, To State
	Op       string // the operation that asked for it
}

func (e *TransitionError) Error() string {
	return fmt.Sprintf("ringstate: %s %s: illegal transition %s -> %s", e.Op, e.Member, e.From, e.To)
}

// Unwrap makes errors.Is(err, ErrIllegalTransition) true.
func (e *TransitionError) Unwrap() error { return ErrIllegalTransition }

// TokenOwnedError is a token claim refused because another member owns the token. It wraps
// ErrTokenOwned.
type TokenOwnedError struct {
	Member MemberID // the claimant
	Token  Token
	Owner  MemberID
}

func (e *TokenOwnedError) Error() string {
	return fmt.Sprintf("ringstate: claim tokens for %s: token %d already owned by %s", e.Member, e.Token, e.Owner)
}

// Unwrap makes errors.Is(err, ErrTokenOwned) true.
func (e *TokenOwnedError) Unwrap() error { return ErrTokenOwned }

// legal lists the transitions a command may make, mirroring Cortex's table. Removal is not a
// transition: any member may be removed.
var legal = map[[2]State]bool{
	{PENDING, JOINING}: true,
	{JOINING, PENDING}: true,
	{JOINING, ACTIVE}:  true,
	{PENDING, ACTIVE}:  true,
	{ACTIVE, LEAVING}:  true,
}

// LegalTransition reports whether a command may move a member from -> to. A state to itself is always
// allowed (it makes retries idempotent). The restart fix-ups that Register applies (JOINING -> PENDING,
// LEAVING -> ACTIVE) are not commands a caller can ask for and are not listed here.
func LegalTransition(from, to State) bool {
	return from == to || legal[[2]State{from, to}]
}
