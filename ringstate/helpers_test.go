package ringstate

import (
	"errors"
	"fmt"
	"math"
	"reflect"
	"slices"
	"testing"
)

// ---- building rings ----

func addr(id MemberID) string { return "10.0.0.1:" + fmt.Sprint(7000+len(id)) }

func register(id MemberID) Command {
	return Command{Op: OpRegister, Member: id, RaftAddr: addr(id), GRPCAddr: "10.0.0.1:9095", Zone: "z1"}
}
func claim(id MemberID, ts ...Token) Command {
	return Command{Op: OpClaimTokens, Member: id, Tokens: ts}
}

// resize is a claim that replaces the set of a JOINING or ACTIVE member.
func resize(id MemberID, ts ...Token) Command {
	return Command{Op: OpClaimTokens, Member: id, Tokens: ts, Replace: true}
}
func activate(id MemberID) Command      { return Command{Op: OpActivate, Member: id} }
func heartbeat(id MemberID) Command     { return Command{Op: OpHeartbeat, Member: id} }
func leave(id MemberID) Command         { return Command{Op: OpLeave, Member: id} }
func remove(id MemberID) Command        { return Command{Op: OpRemove, Member: id} }
func claimJoiner(l, j MemberID) Command { return Command{Op: OpClaimJoiner, Member: l, Peer: j} }
func complete(l, j MemberID) Command    { return Command{Op: OpCompleteHandover, Member: l, Peer: j} }
func abort(l, j MemberID) Command       { return Command{Op: OpAbortHandover, Member: l, Peer: j} }

// mustApply applies cmds in order at ring times 1000, 1001, ... after the ring's time, failing the
// test on the first refusal.
func mustApply(t testing.TB, r *Ring, cmds ...Command) *Ring {
	t.Helper()
	for _, c := range cmds {
		next, _, err := r.Apply(c, r.TimeMs()+1)
		if err != nil {
			t.Fatalf("apply %s %s: %v", c.Op, c.Member, err)
		}
		if err := checkInvariants(next); err != nil {
			t.Fatalf("after %s %s: %v", c.Op, c.Member, err)
		}
		r = next
	}
	return r
}

// zoo is a ring with a member in every state the tables need, built through Apply:
//
//	p, p2  PENDING
//	j      JOINING with its own tokens (joining by itself)
//	jr     JOINING, receiving from lp
//	a, a2  ACTIVE
//	l      LEAVING, not handing over
//	lp     LEAVING, handing over to jr
func zoo(t testing.TB) *Ring {
	t.Helper()
	r := New()
	r = mustApply(t, r, register("a"), register("a2"), register("j"), register("jr"), register("l"),
		register("lp"), register("p"), register("p2"))
	r = mustApply(t, r,
		claim("a", 100, 200), activate("a"),
		claim("a2", 300, 400), activate("a2"),
		claim("j", 500),
		claim("l", 600, 700), activate("l"), leave("l"),
		claim("lp", 800, 900), activate("lp"), leave("lp"),
		claimJoiner("lp", "jr"))
	return r
}

func state(t testing.TB, r *Ring, id MemberID) State {
	t.Helper()
	m, ok := r.Member(id)
	if !ok {
		t.Fatalf("member %s missing", id)
	}
	return m.State
}

// ---- comparing rings ----

// ringDump is every field of a Ring in comparable form, with empty slices normalised to nil.
type ringDump struct {
	Members   []Member
	Tokens    []Token
	Owners    []int32
	Ownership []float64
	NumOwners int
	TimeMs    int64
	Recent    []Applied
	Lease     CompactorLease
}

func nilIfEmpty[S ~[]E, E any](s S) S {
	if len(s) == 0 {
		return nil
	}
	return slices.Clone(s)
}

func dump(r *Ring) ringDump {
	d := ringDump{Tokens: nilIfEmpty(r.tokens), Owners: nilIfEmpty(r.owners),
		Ownership: nilIfEmpty(r.ownership), NumOwners: r.numOwners, TimeMs: r.timeMs, Recent: nilIfEmpty(r.recent),
		Lease: r.lease}
	for _, m := range r.members {
		m.Tokens = nilIfEmpty(m.Tokens)
		d.Members = append(d.Members, m)
	}
	return d
}

func ringsEqual(a, b *Ring) error {
	da, db := dump(a), dump(b)
	if reflect.DeepEqual(da, db) {
		return nil
	}
	return fmt.Errorf("rings differ:\n a: %+v\n b: %+v", da, db)
}

// sameExceptTime says whether after differs from before only in ring time (and, when withRecent, in
// the request memory).
func sameExceptTime(before, after *Ring, withRecent bool) error {
	db, da := dump(before), dump(after)
	da.TimeMs = db.TimeMs
	if withRecent {
		da.Recent = db.Recent
	}
	if reflect.DeepEqual(db, da) {
		return nil
	}
	return fmt.Errorf("refused command changed the ring:\n before: %+v\n after:  %+v", db, da)
}

// ---- invariants ----

// checkInvariants checks every invariant a committed ring holds (what Restore enforces plus the
// derived arrays), and that Restore reproduces the ring.
func checkInvariants(r *Ring) error {
	for i := range r.members {
		m := &r.members[i]
		if i > 0 && r.members[i-1].ID >= m.ID {
			return fmt.Errorf("members not sorted/unique at %d: %s, %s", i, r.members[i-1].ID, m.ID)
		}
		if err := validateMember(m.ID, m.RaftAddr, m.GRPCAddr, m.HTTPAddr, m.Zone); err != nil {
			return fmt.Errorf("member %s: %v", m.ID, err)
		}
		if !m.State.Valid() {
			return fmt.Errorf("member %s: state %s", m.ID, m.State)
		}
		for k := 1; k < len(m.Tokens); k++ {
			if m.Tokens[k] <= m.Tokens[k-1] {
				return fmt.Errorf("member %s: tokens not sorted/unique: %v", m.ID, m.Tokens)
			}
		}
		if cap(m.Tokens) != len(m.Tokens) {
			return fmt.Errorf("member %s: tokens have spare capacity %d > %d", m.ID, cap(m.Tokens), len(m.Tokens))
		}
		if m.State == PENDING && len(m.Tokens) > 0 {
			return fmt.Errorf("PENDING member %s owns %d tokens", m.ID, len(m.Tokens))
		}
		if m.HandoverPeer != "" {
			p, ok := r.find(m.HandoverPeer)
			if !ok {
				return fmt.Errorf("member %s hands over to unknown %s", m.ID, m.HandoverPeer)
			}
			peer := &r.members[p]
			if peer.HandoverPeer != m.ID || peer.ID == m.ID {
				return fmt.Errorf("hand-over not symmetric: %s -> %s -> %q", m.ID, peer.ID, peer.HandoverPeer)
			}
			leaver, joiner := m, peer
			if m.State == JOINING {
				leaver, joiner = peer, m
			}
			if leaver.State != LEAVING || joiner.State != JOINING || len(joiner.Tokens) > 0 {
				return fmt.Errorf("hand-over %s (%s) -> %s (%s, %d tokens)", leaver.ID, leaver.State,
					joiner.ID, joiner.State, len(joiner.Tokens))
			}
		}
	}
	// Every token has exactly one owner, and the derived arrays match the members.
	owner := map[Token]MemberID{}
	for _, m := range r.members {
		for _, t := range m.Tokens {
			if o, dup := owner[t]; dup {
				return fmt.Errorf("token %d owned by %s and %s", t, o, m.ID)
			}
			owner[t] = m.ID
		}
	}
	if len(r.tokens) != len(owner) || len(r.owners) != len(owner) {
		return fmt.Errorf("token arrays have %d/%d entries, members own %d", len(r.tokens), len(r.owners), len(owner))
	}
	for i, t := range r.tokens {
		if i > 0 && r.tokens[i-1] >= t {
			return fmt.Errorf("ring tokens not sorted at %d", i)
		}
		if got := r.members[r.owners[i]].ID; got != owner[t] {
			return fmt.Errorf("token %d: owners says %s, members say %s", t, got, owner[t])
		}
	}
	if len(r.ownership) != len(r.members) && !(len(r.members) == 0 && len(r.ownership) == 0) {
		return fmt.Errorf("ownership has %d entries for %d members", len(r.ownership), len(r.members))
	}
	sum, owners := 0.0, 0
	for i, f := range r.ownership {
		sum += f
		if f < 0 || f > 1 || (f > 0) != (len(r.members[i].Tokens) > 0) {
			return fmt.Errorf("member %s owns %v with %d tokens", r.members[i].ID, f, len(r.members[i].Tokens))
		}
		if f > 0 {
			owners++
		}
	}
	if len(r.tokens) > 0 && math.Abs(sum-1) > 1e-9 {
		return fmt.Errorf("ownership sums to %v", sum)
	}
	if owners != r.numOwners {
		return fmt.Errorf("numOwners %d, want %d", r.numOwners, owners)
	}
	if len(r.recent) > maxRecent {
		return fmt.Errorf("%d remembered requests", len(r.recent))
	}
	if err := checkLease(r.lease); err != nil {
		return err
	}
	back, err := Restore(r.Members(), r.TimeMs(), r.Recent())
	if err != nil {
		return fmt.Errorf("restore of a committed ring refused: %v", err)
	}
	if back, err = back.WithCompactorLease(r.CompactorLease()); err != nil {
		return fmt.Errorf("restore of a committed ring's lease refused: %v", err)
	}
	if err := ringsEqual(r, back); err != nil {
		return fmt.Errorf("restore does not reproduce the ring: %v", err)
	}
	return nil
}

// checkReachable checks invariants that hold for rings built by Apply from New (Restore accepts a
// little more: it does not know how a ring was built).
func checkReachable(r *Ring) error {
	for _, m := range r.members {
		switch {
		case (m.State == ACTIVE || m.State == LEAVING) && len(m.Tokens) == 0:
			return fmt.Errorf("%s member %s owns no tokens", m.State, m.ID)
		case m.State == JOINING && m.HandoverPeer == "" && len(m.Tokens) == 0:
			return fmt.Errorf("JOINING member %s neither receives nor owns tokens", m.ID)
		case m.HeartbeatMs > r.timeMs || m.RegisteredMs > m.HeartbeatMs:
			return fmt.Errorf("member %s: registered %d, heartbeat %d, ring time %d", m.ID, m.RegisteredMs, m.HeartbeatMs, r.timeMs)
		}
	}
	return nil
}

// deepCopy copies every array of r, so that a later comparison detects writes into r's arrays.
func deepCopy(r *Ring) *Ring {
	c := *r
	c.members = make([]Member, len(r.members))
	for i := range r.members {
		c.members[i] = r.members[i].clone()
	}
	c.tokens, c.owners, c.ownership, c.recent = slices.Clone(r.tokens), slices.Clone(r.owners),
		slices.Clone(r.ownership), slices.Clone(r.recent)
	return &c
}

// ---- random commands ----

// intSource is what the command generator draws from: *rand.Rand in property tests, the fuzzer's
// bytes in fuzz tests.
type intSource interface{ IntN(n int) int }

// byteSource turns fuzz input into choices; exhausted input reads as zeros.
type byteSource struct{ b []byte }

func (s *byteSource) IntN(n int) int {
	if len(s.b) == 0 || n <= 1 {
		return 0
	}
	v := int(s.b[0])
	s.b = s.b[1:]
	if n > 256 {
		if len(s.b) > 0 {
			v = v<<8 | int(s.b[0])
			s.b = s.b[1:]
		}
	}
	return v % n
}

func (s *byteSource) empty() bool { return len(s.b) == 0 }

var genIDs = []MemberID{"m0", "m1", "m2", "m3", "m4", "m5"}

// genCommand draws a command over a small universe of ids and tokens, so that collisions, restarts,
// hand-overs and refusals all happen often. Roughly one command in eight is malformed.
func genCommand(s intSource) Command {
	id := func() MemberID {
		if s.IntN(20) == 0 {
			return []MemberID{"", "-x", "..", "a b", "m9"}[s.IntN(5)]
		}
		return genIDs[s.IntN(len(genIDs))]
	}
	c := Command{Op: Op(1 + s.IntN(12)), Member: id()} // 12 is an unknown op
	switch c.Op {
	case OpRegister:
		c.RaftAddr = addr(c.Member)
		if s.IntN(10) == 0 {
			c.RaftAddr = []string{"10.9.9.9:1", "nohost", ":1", "h:99999"}[s.IntN(4)]
		}
		c.GRPCAddr, c.Zone = "10.0.0.1:9095", []string{"", "z1", "z2"}[s.IntN(3)]
		c.CommandVersion = []uint32{0, LeaseCommandVersion, 7}[s.IntN(3)]
	case OpHeartbeat:
		c.CommandVersion = []uint32{0, LeaseCommandVersion}[s.IntN(2)]
	case OpClaimTokens:
		c.Replace = s.IntN(3) == 0
		n := s.IntN(6)
		for range n {
			var tok Token
			switch s.IntN(8) {
			case 0:
				tok = 0
			case 1:
				tok = math.MaxUint32
			default:
				tok = Token(s.IntN(48))
			}
			c.Tokens = append(c.Tokens, tok)
		}
	case OpClaimJoiner, OpCompleteHandover, OpAbortHandover:
		c.Peer = id()
	case OpClaimCompactor:
		c.LeaseMs = []int64{0, 1, 5, 20, 60, MaxLeaseMs + 1}[s.IntN(6)]
	case OpHeartbeatBatch:
		if s.IntN(6) != 0 { // a batch names no member; sometimes it does (malformed)
			c.Member = ""
		}
		for range s.IntN(5) { // sometimes none (malformed)
			c.Beats = append(c.Beats, Beat{Member: id(), CommandVersion: []uint32{0, LeaseCommandVersion,
				HeartbeatBatchCommandVersion}[s.IntN(3)]})
		}
	}
	if s.IntN(8) == 0 { // a field the op does not use, or a missing one
		switch s.IntN(7) {
		case 6:
			c.Readers = []MemberID{c.Member}
		case 5:
			c.CommandVersion = LeaseCommandVersion
		case 4:
			c.LeaseMs = 10
		case 0:
			c.Peer = id()
		case 1:
			c.Tokens = Tokens{1}
		case 2:
			c.Zone = "z"
		case 3:
			c.Peer = ""
		}
	}
	if s.IntN(3) == 0 {
		c.RequestID = fmt.Sprintf("req-%d", s.IntN(12))
	}
	return c
}

// genStep draws a command and the leader-stamped time to apply it at (sometimes behind ring time).
func genStep(s intSource, r *Ring) (Command, int64) {
	c := genCommand(s)
	if (c.Op == OpCompleteHandover || c.Op == OpAbortHandover || c.Op == OpClaimJoiner) && s.IntN(2) == 0 {
		// Aim at a hand-over in progress, named either way round.
		for _, m := range r.members {
			if m.HandoverPeer != "" {
				c.Member, c.Peer = m.ID, m.HandoverPeer
				break
			}
		}
	}
	if c.Op == OpClaimCompactor {
		// The leader's attestation: usually every member (as a leader that checked writes it),
		// sometimes one short (a member registered after it looked), unsorted, or none.
		c.Readers = r.MemberIDs()
		switch k := s.IntN(8); {
		case k == 0 && len(c.Readers) > 0:
			i := s.IntN(len(c.Readers))
			c.Readers = slices.Delete(slices.Clone(c.Readers), i, i+1)
		case k == 1 && len(c.Readers) > 1:
			c.Readers = append(slices.Clone(c.Readers[1:]), c.Readers[0])
		case k == 2:
			c.Readers = nil
		}
	}
	now := r.TimeMs() + int64(s.IntN(40)) - 8
	return c, now
}

// applyChecked applies c to r and checks everything that must hold of any single Apply: the parent is
// unchanged, the outcome is a known code, a refusal changes nothing but time and request memory, a
// deduplicated request returns its first outcome, ring time is monotonic, and the invariants hold.
func applyChecked(r *Ring, c Command, now int64) (*Ring, error, error) {
	before := deepCopy(r)
	next, events, err := r.Apply(c, now)
	if e := ringsEqual(before, r); e != nil {
		return nil, err, fmt.Errorf("apply %+v wrote into the parent ring: %v", c, e)
	}
	if next.TimeMs() != max(r.TimeMs(), now) {
		return nil, err, fmt.Errorf("ring time %d after applying at %d to a ring at %d", next.TimeMs(), now, r.TimeMs())
	}
	if CodeOf(err) >= codeEnd {
		return nil, err, fmt.Errorf("unknown code for %v", err)
	}
	var first *Applied
	for i := range r.recent {
		if c.RequestID != "" && r.recent[i].RequestID == c.RequestID {
			first = &r.recent[i]
		}
	}
	if first != nil {
		if CodeOf(err) != first.Code || (err != nil && err.Error() != first.Message) {
			return nil, err, fmt.Errorf("retry of %s returned %v, first outcome was %+v", c.RequestID, err, *first)
		}
		if e := sameExceptTime(r, next, false); e != nil {
			return nil, err, fmt.Errorf("retry of %s applied again: %v", c.RequestID, e)
		}
	} else if err != nil {
		if len(events) > 0 {
			return nil, err, fmt.Errorf("refused %+v returned events %v", c, events)
		}
		if e := sameExceptTime(r, next, true); e != nil {
			return nil, err, fmt.Errorf("refused %+v (%v): %v", c, err, e)
		}
		if c.RequestID != "" && len(c.RequestID) <= MaxRequestIDLen {
			last := next.recent[len(next.recent)-1]
			if last.RequestID != c.RequestID || last.Code != CodeOf(err) {
				return nil, err, fmt.Errorf("refusal of %s not remembered: %+v", c.RequestID, last)
			}
		}
	}
	if e := checkInvariants(next); e != nil {
		return nil, err, fmt.Errorf("after %+v (err %v): %v", c, err, e)
	}
	if e := checkReachable(next); e != nil {
		return nil, err, fmt.Errorf("after %+v (err %v): %v", c, err, e)
	}
	return next, err, nil
}

func isErr(err, target error) bool { return errors.Is(err, target) }
