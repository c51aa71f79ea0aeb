package ringstate

import (
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"unicode"
	"unicode/utf8"
)

// Op is the kind of a ring command.
type Op uint8

// The ring commands. Each is applied atomically: it either makes every change it describes or none.
const (
	OpRegister         Op = 1 // add a PENDING member, or resume a known one (with restart fix-ups)
	OpClaimTokens      Op = 2 // PENDING -> JOINING with tokens; JOINING or ACTIVE: replace the token set
	OpActivate         Op = 3 // JOINING or PENDING (with tokens) -> ACTIVE
	OpHeartbeat        Op = 4 // record that the member is alive at the entry's time
	OpLeave            Op = 5 // ACTIVE -> LEAVING
	OpClaimJoiner      Op = 6 // leaver (LEAVING) claims joiner: PENDING -> JOINING, receiving
	OpCompleteHandover Op = 7 // the joiner takes every token of the leaver and is ACTIVE; the leaver is removed
	OpAbortHandover    Op = 8 // the joiner returns to PENDING; the leaver stays LEAVING, unpaired
	OpRemove           Op = 9 // forget a member and free its tokens
	// OpClaimCompactor claims or renews the compactor lease for Member, for LeaseMs of ring time
	// (see CompactorLease). It changes nothing but the lease: no member's state or heartbeat.
	OpClaimCompactor Op = 10
	// OpHeartbeatBatch records that each member of Beats is alive at the entry's time: the N
	// heartbeats of one Raft entry (see heartbeat.go). It takes no Member.
	OpHeartbeatBatch Op = 11
)

var opNames = [...]string{"", "register", "claim-tokens", "activate", "heartbeat", "leave",
	"claim-joiner", "complete-handover", "abort-handover", "remove", "claim-compactor", "heartbeat-batch"}

// String returns the command's name as logs and the CLI show it.
func (o Op) String() string {
	if n, ok := haName(o); ok {
		return n
	}
	if int(o) < len(opNames) && o != 0 {
		return opNames[o]
	}
	return fmt.Sprintf("Op(%d)", uint8(o))
}

// Command is one ring change. Fields not used by an Op must be zero.
type Command struct {
	Op Op
	// RequestID, when set, makes the command idempotent: applying a command whose RequestID the ring
	// remembers returns the first outcome and changes nothing. Clients set it so that a command whose
	// outcome was lost (leadership lost, timeout) can be retried safely.
	RequestID string

	Member MemberID // the subject; for hand-over commands, the leaver
	Peer   MemberID // for hand-over commands, the joiner

	// For OpRegister.
	RaftAddr, GRPCAddr, HTTPAddr, Zone string
	// For OpClaimTokens.
	Tokens Tokens
	// Replace, for OpClaimTokens, says which claim this is. False: a join — the member must be PENDING
	// (it becomes JOINING). True: a resize of the set a JOINING or ACTIVE member already owns (a
	// restart with another -ring.num-tokens). The distinction is a compare-and-set on the state: a
	// join claim decided on a stale ring must not replace tokens the member received in a hand-over
	// that committed in between.
	Replace bool
	// LeaseMs, for OpClaimCompactor, is how long the lease is granted for, in ring-time
	// milliseconds from the command's time: 1 to MaxLeaseMs.
	LeaseMs int64
	// CommandVersion, for OpRegister and OpHeartbeat, is the highest Raft command version the
	// member's build reads (Member.CommandVersion). Register stores it as given (0: the build does
	// not advertise); a Heartbeat stores it when it is not 0. Any value is accepted: an older
	// build drops the field and applies the command anyway, so refusing a value here would make
	// the two builds' rings differ.
	CommandVersion uint32
	// Readers, for OpClaimCompactor, are the members the proposing Raft leader found advertising
	// LeaseCommandVersion (sorted, unique, valid ids): the claim is refused with ErrMixedVersions
	// unless it names every member of the ring at the time it applies. The leader's attestation,
	// not Member.CommandVersion, decides in Apply, because a replica that restored a snapshot
	// written by an older build lost the advertisements the older build dropped: deciding on them
	// would let that replica refuse a claim the others grant.
	Readers []MemberID
	// Beats, for OpHeartbeatBatch only, are the heartbeats the entry carries: 1 to MaxBeats.
	Beats []Beat
	// HA, for OpHAElect and OpHAGC only, holds their fields (see hatracker.go); nil otherwise.
	HA *HACommand
}

// LeaseCommandVersion is the Raft command version (raftfsm's format byte) that carries
// OpClaimCompactor. A member that does not advertise it (Member.CommandVersion) runs a build that
// halts on such an entry, so the leader proposes no claim while one is in the ring.
const LeaseCommandVersion uint32 = 3

// MaxReaders bounds a claim's Readers (it is stored in every replica's log).
const MaxReaders = 4096

// Applied is the remembered outcome of a command that carried a RequestID.
type Applied struct {
	RequestID string
	Code      Code   // CodeOK when the command succeeded
	Message   string // the error's text when it did not
}

// Code classifies a command's outcome so it can be stored, sent over the wire and turned back into an
// error that errors.Is recognises.
type Code uint8

// Outcome codes, one per sentinel error.
const (
	CodeOK Code = iota
	CodeUnknownMember
	CodeMemberExists
	CodeInvalidMember
	CodeIllegalTransition
	CodeTokenOwned
	CodeInvalidTokens
	CodeJoinerNotPending
	CodeHandoverMismatch
	CodeHandoverInProgress
	CodeInvalidCommand
	CodeLeaseHeld
	CodeMixedVersions
	codeEnd
)

// MaxCode is the largest outcome code this build knows; decoders refuse larger ones.
const MaxCode = codeEnd - 1

var codeErrs = [...]error{nil, ErrUnknownMember, ErrMemberExists, ErrInvalidMember, ErrIllegalTransition,
	ErrTokenOwned, ErrInvalidTokens, ErrJoinerNotPending, ErrHandoverMismatch, ErrHandoverInProgress,
	ErrInvalidCommand, ErrLeaseHeld, ErrMixedVersions}

// CodeOf returns the code of an error returned by Apply (CodeInvalidCommand for errors not from here).
func CodeOf(err error) Code {
	if err == nil {
		return CodeOK
	}
	for c := CodeOK + 1; c < codeEnd; c++ {
		if errors.Is(err, codeErrs[c]) {
			return c
		}
	}
	return CodeInvalidCommand
}

// ResultError is an outcome rebuilt from a Code and a message: a remembered outcome, or one sent
// over the wire. errors.Is matches it against the sentinel of its code.
type ResultError struct {
	Code    Code
	Message string
}

func (e *ResultError) Error() string { return e.Message }

// Unwrap returns the sentinel error of the code.
func (e *ResultError) Unwrap() error {
	if e.Code > CodeOK && e.Code < codeEnd {
		return codeErrs[e.Code]
	}
	return ErrInvalidCommand
}

// ErrorOf turns a code and message back into an error; nil for CodeOK.
func ErrorOf(c Code, msg string) error {
	if c == CodeOK {
		return nil
	}
	return &ResultError{Code: c, Message: msg}
}

// EventKind says what happened to a member.
type EventKind uint8

// Event kinds.
const (
	EventAdded         EventKind = iota + 1 // a member registered
	EventStateChanged                       // a member's state changed (From -> To)
	EventTokensChanged                      // a member's token set changed
	EventRemoved                            // a member left the ring (From is its last state)
	// EventHeartbeatSkipped: a heartbeat of a batch (OpHeartbeatBatch) named a member the ring
	// does not know; it changed nothing, and its sender is told ErrUnknownMember.
	EventHeartbeatSkipped
	// EventZoneChanged: a member registered again with another zone. For a member that owns
	// tokens it moves series under zone-aware placement (OwnershipChanged).
	EventZoneChanged
)

// Event reports one effect of a command, so callers can log and count without diffing rings.
type Event struct {
	Kind     EventKind
	Member   MemberID
	From, To State
}

// Apply applies one command at the leader-stamped time nowMs (Unix milliseconds) and returns the new
// ring, what changed, and the command's outcome. It is deterministic and total: the same ring and
// command always give the same result, and a refused command returns a ring that differs from the
// receiver only in ring time and, when the command has a RequestID, in the remembered outcomes.
//
// A jump of ring time by more than MaxRingTimeGap (the cluster committed nothing for that long: no
// quorum) credits every member's heartbeat with the excess, so heartbeat ages advance by at most
// MaxRingTimeGap across the outage (see advance).
func (r *Ring) Apply(cmd Command, nowMs int64) (*Ring, []Event, error) {
	r = r.advance(nowMs)
	next := *r
	next.timeMs = max(r.timeMs, nowMs)
	if len(cmd.RequestID) > MaxRequestIDLen {
		// Refused and not remembered: the memory is for retries, not for arbitrary payloads.
		return &next, nil, fmt.Errorf("%w: %s %s: request id of %d bytes, at most %d", ErrInvalidCommand,
			cmd.Op, cmd.Member, len(cmd.RequestID), MaxRequestIDLen)
	}
	if cmd.RequestID != "" {
		for i := len(r.recent) - 1; i >= 0; i-- {
			if a := &r.recent[i]; a.RequestID == cmd.RequestID {
				return &next, nil, ErrorOf(a.Code, a.Message)
			}
		}
	}
	b := builder{r: &next}
	err := b.apply(&cmd)
	var events []Event
	if err != nil {
		// Refused: nothing but ring time (and the request memory below) changes.
		next = *r
		next.timeMs = max(r.timeMs, nowMs)
	} else {
		events = b.events
		if b.tokensChanged {
			if rerr := next.rebuildTokens(); rerr != nil {
				// Unreachable while the checks above hold; refuse rather than publish a broken ring.
				next = *r
				next.timeMs = max(r.timeMs, nowMs)
				events, err = nil, fmt.Errorf("%w: %v", ErrInvalidCommand, rerr)
			}
		}
	}
	if cmd.RequestID != "" {
		rec := Applied{RequestID: cmd.RequestID, Code: CodeOf(err)}
		if err != nil {
			rec.Message = err.Error()
		}
		keep := r.recent
		if len(keep) >= maxRecent {
			keep = keep[len(keep)-maxRecent+1:]
		}
		next.recent = append(slices.Clip(keep), rec) // clip: never write into a parent's array
	}
	return &next, events, err
}

// MaxRingTimeGap is the longest step ring time may take between two consecutive entries without
// the step counting as an outage. A live cluster commits at least one heartbeat per
// -ring.heartbeat-period (5s by default) from every member, so consecutive entries are seconds
// apart; a gap longer than 30s means nothing could commit (no quorum, or every node down). Then the
// first entry after recovery would age every heartbeat by the whole outage at once and turn every
// member whose own heartbeat has not committed yet UNHEALTHY — the cortex#157 failure, at recovery
// instead of during the outage. Counting at most MaxRingTimeGap of such a gap keeps health coasting
// across it; a member that was already stale stays stale, since every member is credited alike.
//
// It is a constant, not a flag: Apply must be deterministic and configuration-free, and every
// replica must credit the same amount. It must stay well above any -ring.heartbeat-period (the
// lifecycle's config refuses periods longer than half of it), else a dead member's age would grow
// too slowly between the live members' heartbeats; and -ring.heartbeat-timeout should exceed it for
// an outage to leave members healthy (the default, 1m, does).
const MaxRingTimeGap int64 = 30_000

// advance returns r with ring time moved to nowMs when nowMs is more than MaxRingTimeGap past it,
// with every member's heartbeat credited with the excess (gap - MaxRingTimeGap); else r itself.
// Heartbeats stay at or before ring time. An empty ring (ring time 0) has nothing to credit.
func (r *Ring) advance(nowMs int64) *Ring {
	if r.timeMs <= 0 || nowMs <= r.timeMs || uint64(nowMs)-uint64(r.timeMs) <= uint64(MaxRingTimeGap) {
		return r
	}
	credit := nowMs - r.timeMs - MaxRingTimeGap
	next := *r
	next.timeMs = nowMs
	if len(r.members) > 0 {
		next.members = slices.Clone(r.members)
		for i := range next.members {
			// A restored ring may hold a heartbeat after ring time; crediting it could overflow.
			if m := &next.members[i]; m.HeartbeatMs <= r.timeMs {
				m.HeartbeatMs += credit
			}
		}
	}
	return &next
}

// builder applies one command to a shallow copy of a ring. It copies the members slice before its
// first write (copy on write), so the parent ring is never modified.
type builder struct {
	r             *Ring
	copied        bool
	tokensChanged bool
	events        []Event
}

func (b *builder) own() {
	if !b.copied {
		b.r.members = slices.Clone(b.r.members)
		b.copied = true
	}
}

// member returns a writable pointer to member id.
func (b *builder) member(op Op, id MemberID) (*Member, error) {
	i, ok := b.r.find(id)
	if !ok {
		return nil, fmt.Errorf("%w: %s %s", ErrUnknownMember, op, id)
	}
	b.own()
	return &b.r.members[i], nil
}

func (b *builder) setState(m *Member, to State) {
	if m.State != to {
		b.events = append(b.events, Event{Kind: EventStateChanged, Member: m.ID, From: m.State, To: to})
		m.State = to
	}
}

func (b *builder) setTokens(m *Member, ts Tokens) {
	m.Tokens = ts
	b.tokensChanged = true
	b.events = append(b.events, Event{Kind: EventTokensChanged, Member: m.ID, From: m.State, To: m.State})
}

func (b *builder) remove(id MemberID) {
	i, _ := b.r.find(id)
	b.own()
	m := b.r.members[i]
	b.r.members = slices.Delete(b.r.members, i, i+1)
	// Member indices shift: the token arrays must be rebuilt even if the member owned none.
	b.tokensChanged = true
	b.events = append(b.events, Event{Kind: EventRemoved, Member: m.ID, From: m.State, To: m.State})
}

func (b *builder) apply(c *Command) error {
	if err := checkFields(c); err != nil {
		return err
	}
	t := b.r.timeMs
	switch c.Op {
	case OpRegister:
		return b.register(c, t)
	case OpClaimTokens:
		return b.claimTokens(c, t)
	case OpActivate:
		return b.activate(c, t)
	case OpHeartbeat:
		m, err := b.member(c.Op, c.Member)
		if err != nil {
			return err
		}
		m.HeartbeatMs = t
		if c.CommandVersion != 0 {
			// A heartbeat that advertises restates the member's build; one that does not (an older
			// build, or an older leader that dropped the field) leaves what the member said last.
			m.CommandVersion = c.CommandVersion
		}
		return nil
	case OpLeave:
		return b.leave(c, t)
	case OpClaimJoiner:
		return b.claimJoiner(c, t)
	case OpCompleteHandover:
		return b.completeHandover(c, t)
	case OpAbortHandover:
		return b.abortHandover(c, t)
	case OpRemove:
		return b.removeMember(c)
	case OpClaimCompactor:
		return b.claimCompactor(c, t)
	case OpHeartbeatBatch:
		b.heartbeatBatch(c.Beats, t)
		return nil
	case OpHAElect, OpHAGC:
		return b.applyHA(c, t)
	}
	return fmt.Errorf("%w: unknown op %d", ErrInvalidCommand, uint8(c.Op))
}

// checkFields refuses commands that carry fields their op does not use, or lack ones it needs: a
// malformed command must not half-apply.
func checkFields(c *Command) error {
	bad := func(why string) error { return fmt.Errorf("%w: %s %s: %s", ErrInvalidCommand, c.Op, c.Member, why) }
	if c.Op == OpHeartbeatBatch {
		return checkBatchFields(c)
	}
	if c.Member == "" {
		return bad("no member id")
	}
	if len(c.Beats) > 0 {
		return bad("only heartbeat-batch takes beats")
	}
	if c.HA != nil || isHAOp(c.Op) {
		return checkHAFields(c)
	}
	hasAddr := c.RaftAddr != "" || c.GRPCAddr != "" || c.HTTPAddr != "" || c.Zone != ""
	if c.LeaseMs != 0 && c.Op != OpClaimCompactor {
		return bad("only claim-compactor takes a lease duration")
	}
	if c.CommandVersion != 0 && c.Op != OpRegister && c.Op != OpHeartbeat {
		return bad("only register and heartbeat take a command version")
	}
	if len(c.Readers) > 0 && c.Op != OpClaimCompactor {
		return bad("only claim-compactor takes readers")
	}
	switch c.Op {
	case OpRegister:
		if c.Replace {
			return bad("register takes no replace flag")
		}
		if c.Peer != "" || len(c.Tokens) > 0 {
			return bad("register takes no peer and no tokens")
		}
		return nil
	case OpClaimTokens:
		if c.Peer != "" || hasAddr {
			return bad("claim-tokens takes only tokens")
		}
		return nil
	case OpClaimJoiner, OpCompleteHandover, OpAbortHandover:
		if c.Peer == "" {
			return bad("no joiner")
		}
		if c.Peer == c.Member {
			return bad("a member cannot hand over to itself")
		}
	case OpClaimCompactor:
		if c.Peer != "" {
			return bad("takes no peer")
		}
		if len(c.Readers) > MaxReaders {
			return bad(fmt.Sprintf("%d readers, at most %d", len(c.Readers), MaxReaders))
		}
		for i, id := range c.Readers {
			if err := ValidateMemberID(id); err != nil {
				return bad(fmt.Sprintf("reader: %v", err))
			}
			if i > 0 && c.Readers[i-1] >= id {
				return bad("readers must be sorted and unique")
			}
		}
	default:
		if c.Peer != "" {
			return bad("takes no peer")
		}
	}
	if c.Replace {
		return bad("only claim-tokens takes the replace flag")
	}
	if hasAddr || len(c.Tokens) > 0 {
		return bad("takes no addresses and no tokens")
	}
	return nil
}

// Limits on what a command may carry. Every string below is stored in the ring, in every snapshot and
// in the request memory of every replica, so none may be arbitrarily large.
const (
	// MaxIDLen bounds member ids: they appear in metrics labels, Raft configuration and file names.
	MaxIDLen = 128
	// MaxAddrLen bounds addresses (a DNS name has at most 253 characters, plus the port).
	MaxAddrLen = 261
	// MaxZoneLen bounds zone names.
	MaxZoneLen = 128
	// MaxRequestIDLen bounds request ids.
	MaxRequestIDLen = 256
	// MaxTokensPerMember bounds a member's token set (Cortex and Mimir use 128 to 512).
	MaxTokensPerMember = 1 << 16
)

// ValidateMemberID checks a member id against the rules every member id obeys: 1 to MaxIDLen
// letters, digits, '-', '_' and '.', starting with a letter or digit. A Raft server id is also a
// member id, so raftfsm and the daemon's flag validation use this too: an id the ring would refuse
// must never become a Raft voter. The error wraps ErrInvalidMember.
func ValidateMemberID(id MemberID) error {
	if id == "" || len(id) > MaxIDLen {
		return fmt.Errorf("%w: id %q must have 1 to %d characters", ErrInvalidMember, id, MaxIDLen)
	}
	for i, c := range id {
		if !(unicode.IsLetter(c) || unicode.IsDigit(c) || (i > 0 && (c == '-' || c == '_' || c == '.'))) {
			// A leading '.' would allow "." and ".." (ids name files); a leading '-' reads as a flag.
			return fmt.Errorf("%w: id %q: only letters, digits, '-', '_' and '.' are allowed, starting with a letter or digit",
				ErrInvalidMember, id)
		}
	}
	return nil
}

// validateMember checks what a member says about itself: id, addresses and zone. Register and
// Restore apply the same rules, so a ring that Apply built always restores.
func validateMember(id MemberID, raftAddr, grpcAddr, httpAddr, zone string) error {
	if err := ValidateMemberID(id); err != nil {
		return err
	}
	if err := checkAddr(raftAddr); err != nil {
		return fmt.Errorf("%w: %s: raft address: %v", ErrInvalidMember, id, err)
	}
	for _, a := range []struct{ name, v string }{{"grpc", grpcAddr}, {"http", httpAddr}} {
		if a.v == "" {
			continue
		}
		if err := checkAddr(a.v); err != nil {
			return fmt.Errorf("%w: %s: %s address: %v", ErrInvalidMember, id, a.name, err)
		}
	}
	if len(zone) > MaxZoneLen || !printable(zone) {
		return fmt.Errorf("%w: %s: zone %q: at most %d printable characters", ErrInvalidMember, id, zone, MaxZoneLen)
	}
	return nil
}

// printable reports whether s is valid UTF-8 without control characters.
func printable(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	for _, c := range s {
		if unicode.IsControl(c) {
			return false
		}
	}
	return true
}

func checkAddr(a string) error {
	if len(a) > MaxAddrLen {
		return fmt.Errorf("%d bytes, at most %d", len(a), MaxAddrLen)
	}
	host, port, err := net.SplitHostPort(a)
	if err != nil {
		return err
	}
	if host == "" || port == "" {
		return fmt.Errorf("%q: want host:port", a)
	}
	for _, c := range host {
		if c <= ' ' || c >= 0x7f {
			return fmt.Errorf("%q: host has a space, control or non-ASCII character", a)
		}
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		return fmt.Errorf("%q: port must be a number from 0 to 65535", a)
	}
	return nil
}

func (b *builder) register(c *Command, t int64) error {
	if err := validateMember(c.Member, c.RaftAddr, c.GRPCAddr, c.HTTPAddr, c.Zone); err != nil {
		return err
	}
	i, ok := b.r.find(c.Member)
	if !ok {
		b.own()
		m := Member{ID: c.Member, RaftAddr: c.RaftAddr, GRPCAddr: c.GRPCAddr, HTTPAddr: c.HTTPAddr,
			Zone: c.Zone, State: PENDING, RegisteredMs: t, HeartbeatMs: t, CommandVersion: c.CommandVersion}
		b.r.members = slices.Insert(b.r.members, i, m)
		b.tokensChanged = true // indices after i shift
		b.events = append(b.events, Event{Kind: EventAdded, Member: m.ID, From: PENDING, To: PENDING})
		return nil
	}
	if cur := b.r.members[i].RaftAddr; cur != c.RaftAddr {
		return fmt.Errorf("%w: %s is registered with raft address %s, not %s (remove it first)",
			ErrMemberExists, c.Member, cur, c.RaftAddr)
	}
	// A known member registering again has restarted. It resumes with its tokens, after the fix-ups
	// below, each learned from a Cortex incident.
	b.own()
	m := &b.r.members[i]
	if m.Zone != c.Zone {
		b.events = append(b.events, Event{Kind: EventZoneChanged, Member: m.ID, From: m.State, To: m.State})
	}
	m.GRPCAddr, m.HTTPAddr, m.Zone, m.HeartbeatMs = c.GRPCAddr, c.HTTPAddr, c.Zone, t
	// A register restates the member's build: a member rolled back to a build that does not
	// advertise goes back to 0, and the leader stops proposing commands it cannot read.
	m.CommandVersion = c.CommandVersion
	switch {
	case m.State == JOINING && m.HandoverPeer != "":
		// It crashed while receiving a hand-over and lost what it received: back to PENDING
		// (cortex#2508), and the leaver is free to look for another joiner.
		b.unpair(m)
		b.setState(m, PENDING)
	case m.State == LEAVING:
		// It crashed while leaving and still has its tokens and its WAL: ACTIVE again (cortex#1921).
		// A joiner it had claimed goes back to PENDING.
		if m.HandoverPeer != "" {
			peer := b.unpair(m)
			b.setState(peer, PENDING)
		}
		b.setState(m, ACTIVE)
	}
	return nil
}

// unpair clears the hand-over relation of m and returns its former peer.
func (b *builder) unpair(m *Member) *Member {
	j, _ := b.r.find(m.HandoverPeer)
	peer := &b.r.members[j]
	peer.HandoverPeer, m.HandoverPeer = "", ""
	return peer
}

func (b *builder) claimTokens(c *Command, t int64) error {
	m, err := b.member(c.Op, c.Member)
	if err != nil {
		return err
	}
	if len(c.Tokens) == 0 {
		return fmt.Errorf("%w: claim tokens for %s: no tokens", ErrInvalidTokens, c.Member)
	}
	if len(c.Tokens) > MaxTokensPerMember {
		return fmt.Errorf("%w: claim tokens for %s: %d tokens, at most %d", ErrInvalidTokens, c.Member,
			len(c.Tokens), MaxTokensPerMember)
	}
	ts := cloneTokens(c.Tokens) // exact capacity: the ring hands this array out to readers
	slices.Sort(ts)
	for i := 1; i < len(ts); i++ {
		if ts[i] == ts[i-1] {
			return fmt.Errorf("%w: claim tokens for %s: token %d listed twice", ErrInvalidTokens, c.Member, ts[i])
		}
	}
	if m.HandoverPeer != "" {
		return fmt.Errorf("%w: claim tokens for %s: it is handing over with %s", ErrHandoverInProgress, c.Member, m.HandoverPeer)
	}
	to := m.State
	switch {
	case !c.Replace && m.State == PENDING:
		to = JOINING
	case !c.Replace && m.State == JOINING && slices.Equal(m.Tokens, ts):
		// The same join claim again (a retry without a request id): nothing changes.
	case c.Replace && (m.State == JOINING || m.State == ACTIVE):
		// Replacing the set: a restart with another -ring.num-tokens tops up or trims (mimir#3801).
	case c.Replace:
		return &TransitionError{Member: c.Member, From: m.State, To: m.State, Op: "claim-tokens (replace needs JOINING or ACTIVE)"}
	default:
		return &TransitionError{Member: c.Member, From: m.State, To: JOINING, Op: c.Op.String()}
	}
	for _, tok := range ts {
		if owner, ok := b.r.Owner(tok); ok && owner != c.Member {
			return &TokenOwnedError{Member: c.Member, Token: tok, Owner: owner}
		}
	}
	m.HeartbeatMs = t
	if !slices.Equal(m.Tokens, ts) {
		// A retry of the same claim changes nothing but the heartbeat: no event, no rebuild.
		b.setTokens(m, ts)
	}
	b.setState(m, to)
	return nil
}

func (b *builder) activate(c *Command, t int64) error {
	m, err := b.member(c.Op, c.Member)
	if err != nil {
		return err
	}
	if !LegalTransition(m.State, ACTIVE) {
		return &TransitionError{Member: c.Member, From: m.State, To: ACTIVE, Op: c.Op.String()}
	}
	if m.HandoverPeer != "" {
		return fmt.Errorf("%w: activate %s: it is receiving from %s (complete the hand-over instead)",
			ErrHandoverInProgress, c.Member, m.HandoverPeer)
	}
	if len(m.Tokens) == 0 {
		return fmt.Errorf("%w: activate %s: it owns no tokens", ErrInvalidTokens, c.Member)
	}
	m.HeartbeatMs = t
	b.setState(m, ACTIVE)
	return nil
}

func (b *builder) leave(c *Command, t int64) error {
	m, err := b.member(c.Op, c.Member)
	if err != nil {
		return err
	}
	if !LegalTransition(m.State, LEAVING) {
		return &TransitionError{Member: c.Member, From: m.State, To: LEAVING, Op: c.Op.String()}
	}
	m.HeartbeatMs = t
	b.setState(m, LEAVING)
	return nil
}

func (b *builder) claimJoiner(c *Command, t int64) error {
	l, err := b.member(c.Op, c.Member)
	if err != nil {
		return err
	}
	j, err := b.member(c.Op, c.Peer)
	if err != nil {
		return err
	}
	if l.State == LEAVING && l.HandoverPeer == j.ID && j.HandoverPeer == l.ID {
		return nil // already claimed by this leaver: a retry (not the pair named the other way round)
	}
	if l.State != LEAVING {
		return &TransitionError{Member: l.ID, From: l.State, To: LEAVING, Op: "claim-joiner (leaver must be LEAVING)"}
	}
	if l.HandoverPeer != "" {
		return fmt.Errorf("%w: %s already hands over to %s", ErrHandoverInProgress, l.ID, l.HandoverPeer)
	}
	if j.State != PENDING || j.HandoverPeer != "" {
		return fmt.Errorf("%w: %s cannot claim %s, which is %s", ErrJoinerNotPending, l.ID, j.ID, j.State)
	}
	l.HandoverPeer, j.HandoverPeer = j.ID, l.ID
	l.HeartbeatMs = t
	b.setState(j, JOINING)
	return nil
}

func (b *builder) completeHandover(c *Command, t int64) error {
	l, err := b.member(c.Op, c.Member)
	if err != nil {
		return err
	}
	j, err := b.member(c.Op, c.Peer)
	if err != nil {
		return err
	}
	if l.State != LEAVING || j.State != JOINING || l.HandoverPeer != j.ID || j.HandoverPeer != l.ID {
		return fmt.Errorf("%w: complete hand-over %s (%s, peer %q) -> %s (%s, peer %q)", ErrHandoverMismatch,
			l.ID, l.State, l.HandoverPeer, j.ID, j.State, j.HandoverPeer)
	}
	// One commit: the joiner owns every token the leaver owned and the leaver is gone, so there is no
	// index at which a token has two owners or none.
	j.HandoverPeer = ""
	j.HeartbeatMs = t
	b.setTokens(j, l.Tokens)
	b.setState(j, ACTIVE)
	b.remove(l.ID)
	return nil
}

func (b *builder) abortHandover(c *Command, t int64) error {
	// Read the parent's members first: an abort that changes nothing must not copy them.
	l, lok := b.r.find(c.Member)
	j, jok := b.r.find(c.Peer)
	var lm, jm *Member
	if lok {
		lm = &b.r.members[l]
	}
	if jok {
		jm = &b.r.members[j]
	}
	paired := lm != nil && jm != nil && lm.HandoverPeer == jm.ID && jm.HandoverPeer == lm.ID
	if paired && (lm.State != LEAVING || jm.State != JOINING) {
		// Named the other way round: aborting it would unpair the two and leave the real joiner
		// JOINING with no leaver and no tokens, claimable by nobody.
		return fmt.Errorf("%w: abort hand-over %s (%s) -> %s (%s): name the LEAVING member first",
			ErrHandoverMismatch, c.Member, lm.State, c.Peer, jm.State)
	}
	if !paired {
		// Already aborted (or completed, or one side removed): aborting again changes nothing, but
		// only if neither side is still paired with the other.
		if (lm != nil && lm.HandoverPeer == c.Peer) || (jm != nil && jm.HandoverPeer == c.Member) {
			return fmt.Errorf("%w: abort hand-over %s -> %s: relation is one-sided", ErrHandoverMismatch, c.Member, c.Peer)
		}
		if lm == nil && jm == nil {
			return fmt.Errorf("%w: abort hand-over: neither %s nor %s is a member", ErrUnknownMember, c.Member, c.Peer)
		}
		return nil
	}
	b.own()
	lm, jm = &b.r.members[l], &b.r.members[j]
	b.unpair(lm)
	jm.HeartbeatMs = max(jm.HeartbeatMs, t)
	b.setState(jm, PENDING)
	return nil
}

func (b *builder) removeMember(c *Command) error {
	m, err := b.member(c.Op, c.Member)
	if err != nil {
		return err
	}
	if m.HandoverPeer != "" {
		peer := b.unpair(m)
		if peer.State == JOINING {
			// A joiner whose leaver is forgotten received nothing it may keep.
			b.setState(peer, PENDING)
		}
	}
	b.remove(c.Member)
	return nil
}
