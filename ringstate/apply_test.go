package ringstate

import (
	"errors"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// subjects of the transition table: one member of zoo in each state it distinguishes.
var subjects = []struct {
	id   MemberID
	desc string
}{
	{"p", "PENDING"},
	{"j", "JOINING_own_tokens"},
	{"jr", "JOINING_receiving"},
	{"a", "ACTIVE"},
	{"l", "LEAVING"},
	{"lp", "LEAVING_handing_over"},
}

// TestApply_Transitions is the whole transition table: every op applied to a member in every state.
// want is the resulting state of the subject on success, or the sentinel of the refusal. Illegal
// transitions must be refused with a *TransitionError that wraps ErrIllegalTransition, and every
// refusal leaves the ring unchanged but for its time.
func TestApply_Transitions(t *testing.T) {
	type outcome struct {
		err   error // nil: accepted
		state State // the subject's state afterwards (accepted only)
	}
	ok := func(s State) outcome { return outcome{state: s} }
	no := func(e error) outcome { return outcome{err: e} }
	removed := outcome{state: -1}
	table := []struct {
		rule string
		cmd  func(id MemberID) Command
		want map[MemberID]outcome
	}{
		{"claim-tokens (join): only PENDING joins; a stale join claim never replaces a set",
			func(id MemberID) Command { return claim(id, 12345) },
			map[MemberID]outcome{"p": ok(JOINING), "j": no(ErrIllegalTransition), "jr": no(ErrHandoverInProgress),
				"a": no(ErrIllegalTransition), "l": no(ErrIllegalTransition), "lp": no(ErrHandoverInProgress)}},
		{"claim-tokens (replace): JOINING and ACTIVE replace their set, others refuse",
			func(id MemberID) Command { return resize(id, 12345) },
			map[MemberID]outcome{"p": no(ErrIllegalTransition), "j": ok(JOINING), "jr": no(ErrHandoverInProgress),
				"a": ok(ACTIVE), "l": no(ErrIllegalTransition), "lp": no(ErrHandoverInProgress)}},
		{"activate: JOINING with tokens goes ACTIVE; PENDING has no tokens; a receiver must complete",
			activate,
			map[MemberID]outcome{"p": no(ErrInvalidTokens), "j": ok(ACTIVE), "jr": no(ErrHandoverInProgress),
				"a": ok(ACTIVE), "l": no(ErrIllegalTransition), "lp": no(ErrIllegalTransition)}},
		{"heartbeat: accepted in every state, no state change",
			heartbeat,
			map[MemberID]outcome{"p": ok(PENDING), "j": ok(JOINING), "jr": ok(JOINING), "a": ok(ACTIVE),
				"l": ok(LEAVING), "lp": ok(LEAVING)}},
		{"leave: only ACTIVE (or LEAVING again) may leave",
			leave,
			map[MemberID]outcome{"p": no(ErrIllegalTransition), "j": no(ErrIllegalTransition),
				"jr": no(ErrIllegalTransition), "a": ok(LEAVING), "l": ok(LEAVING), "lp": ok(LEAVING)}},
		{"claim-joiner as leaver: only an unpaired LEAVING member claims (p2)",
			func(id MemberID) Command { return claimJoiner(id, "p2") },
			map[MemberID]outcome{"p": no(ErrIllegalTransition), "j": no(ErrIllegalTransition),
				"jr": no(ErrIllegalTransition), "a": no(ErrIllegalTransition), "l": ok(LEAVING),
				"lp": no(ErrHandoverInProgress)}},
		{"claim-joiner as joiner: only a PENDING member can be claimed (by l)",
			func(id MemberID) Command {
				if id == "l" {
					return claimJoiner("lp", "l")
				}
				return claimJoiner("l", id)
			},
			map[MemberID]outcome{"p": ok(JOINING), "j": no(ErrJoinerNotPending), "jr": no(ErrJoinerNotPending),
				"a": no(ErrJoinerNotPending), "l": no(ErrHandoverInProgress), "lp": no(ErrJoinerNotPending)}},
		{"complete-handover as leaver (to jr): only lp, which hands over to jr",
			func(id MemberID) Command {
				if id == "jr" {
					return complete("lp", "p")
				}
				return complete(id, "jr")
			},
			map[MemberID]outcome{"p": no(ErrHandoverMismatch), "j": no(ErrHandoverMismatch),
				"jr": no(ErrHandoverMismatch), "a": no(ErrHandoverMismatch), "l": no(ErrHandoverMismatch),
				"lp": removed}},
		{"complete-handover as joiner (from lp): only jr, which receives from lp",
			func(id MemberID) Command {
				if id == "lp" {
					return complete("l", "lp")
				}
				return complete("lp", id)
			},
			map[MemberID]outcome{"p": no(ErrHandoverMismatch), "j": no(ErrHandoverMismatch), "jr": ok(ACTIVE),
				"a": no(ErrHandoverMismatch), "l": no(ErrHandoverMismatch), "lp": no(ErrHandoverMismatch)}},
		{"abort-handover as joiner (from lp): jr goes back to PENDING; unpaired members are a no-op",
			func(id MemberID) Command {
				if id == "lp" {
					return abort("l", "lp")
				}
				return abort("lp", id)
			},
			map[MemberID]outcome{"p": ok(PENDING), "j": ok(JOINING), "jr": ok(PENDING), "a": ok(ACTIVE),
				"l": ok(LEAVING), "lp": ok(LEAVING)}},
		{"remove: any member may be removed",
			remove,
			map[MemberID]outcome{"p": removed, "j": removed, "jr": removed, "a": removed, "l": removed, "lp": removed}},
		{"register again with the same raft address: restart fix-ups",
			register,
			map[MemberID]outcome{"p": ok(PENDING), "j": ok(JOINING), "jr": ok(PENDING), "a": ok(ACTIVE),
				"l": ok(ACTIVE), "lp": ok(ACTIVE)}},
	}
	for _, tc := range table {
		for _, s := range subjects {
			want, listed := tc.want[s.id]
			if !listed {
				t.Fatalf("%s: no expectation for %s", tc.rule, s.desc)
			}
			t.Run(strings.Fields(tc.rule)[0]+"/"+s.desc, func(t *testing.T) {
				r := zoo(t)
				before := deepCopy(r)
				cmd := tc.cmd(s.id)
				next, events, err := r.Apply(cmd, r.TimeMs()+10)
				if e := ringsEqual(before, r); e != nil {
					t.Fatalf("parent ring modified: %v", e)
				}
				if e := checkInvariants(next); e != nil {
					t.Fatal(e)
				}
				if next.TimeMs() != r.TimeMs()+10 {
					t.Errorf("ring time %d, want %d", next.TimeMs(), r.TimeMs()+10)
				}
				if want.err != nil {
					if !errors.Is(err, want.err) {
						t.Fatalf("%s: err = %v, want %v", tc.rule, err, want.err)
					}
					if errors.Is(err, ErrIllegalTransition) {
						var te *TransitionError
						if !errors.As(err, &te) {
							t.Fatalf("illegal transition %v is not a *TransitionError", err)
						}
						if cmd.Op != OpClaimJoiner || te.Member == cmd.Member {
							if want := state(t, r, te.Member); te.From != want {
								t.Errorf("TransitionError.From = %s, member is %s", te.From, want)
							}
						}
					}
					if len(events) != 0 {
						t.Errorf("refusal returned events %v", events)
					}
					if e := sameExceptTime(r, next, false); e != nil {
						t.Fatal(e)
					}
					return
				}
				if err != nil {
					t.Fatalf("%s: %v", tc.rule, err)
				}
				if want == removed {
					if _, ok := next.Member(s.id); ok {
						t.Fatalf("%s still a member", s.id)
					}
					return
				}
				if got := state(t, next, s.id); got != want.state {
					t.Fatalf("state %s, want %s", got, want.state)
				}
				if e := checkReachable(next); e != nil {
					t.Fatal(e)
				}
			})
		}
	}
}

// TestLegalTransition_Table pins LegalTransition to Cortex's table.
func TestLegalTransition_Table(t *testing.T) {
	legalPairs := map[[2]State]bool{
		{PENDING, JOINING}: true, {JOINING, PENDING}: true, {JOINING, ACTIVE}: true,
		{PENDING, ACTIVE}: true, {ACTIVE, LEAVING}: true,
	}
	for from := ACTIVE; from <= JOINING; from++ {
		for to := ACTIVE; to <= JOINING; to++ {
			want := from == to || legalPairs[[2]State{from, to}]
			if got := LegalTransition(from, to); got != want {
				t.Errorf("LegalTransition(%s, %s) = %v, want %v", from, to, got, want)
			}
		}
	}
}

func TestApply_Register(t *testing.T) {
	t.Run("NewMemberIsPendingAtRingTime", func(t *testing.T) {
		r, events, err := New().Apply(register("n1"), 5000)
		if err != nil {
			t.Fatal(err)
		}
		m, _ := r.Member("n1")
		if m.State != PENDING || m.RegisteredMs != 5000 || m.HeartbeatMs != 5000 || len(m.Tokens) != 0 ||
			m.RaftAddr != addr("n1") || m.Zone != "z1" {
			t.Fatalf("member %+v", m)
		}
		if len(events) != 1 || events[0] != (Event{Kind: EventAdded, Member: "n1", From: PENDING, To: PENDING}) {
			t.Fatalf("events %v", events)
		}
	})
	t.Run("RestartUpdatesHeartbeatAndAddressesNotRegistration", func(t *testing.T) {
		r := mustApply(t, New(), register("n1"))
		c := register("n1")
		c.GRPCAddr, c.HTTPAddr, c.Zone = "10.0.0.2:1", "10.0.0.2:2", "z9"
		next, events, err := r.Apply(c, 9000)
		if err != nil {
			t.Fatal(err)
		}
		m, _ := next.Member("n1")
		if m.HeartbeatMs != 9000 || m.RegisteredMs != r.MemberAt(0).RegisteredMs || m.GRPCAddr != "10.0.0.2:1" ||
			m.HTTPAddr != "10.0.0.2:2" || m.Zone != "z9" {
			t.Fatalf("member %+v", m)
		}
		// A zone change is reported (fencing counts it as an ownership change for a token owner);
		// new addresses alone are not.
		if len(events) != 1 || events[0] != (Event{Kind: EventZoneChanged, Member: "n1", From: PENDING, To: PENDING}) {
			t.Fatalf("events %v, want one EventZoneChanged", events)
		}
		c.GRPCAddr = "10.0.0.3:1"
		if _, events, err = next.Apply(c, 9001); err != nil || len(events) != 0 {
			t.Fatalf("a restart with new addresses in the same zone: events %v, err %v", events, err)
		}
	})
	t.Run("RestartOfReceivingJoinerReturnsItToPendingAndUnpairsLeaver", func(t *testing.T) {
		r := mustApply(t, zoo(t), register("jr"))
		jr, _ := r.Member("jr")
		lp, _ := r.Member("lp")
		if jr.State != PENDING || jr.HandoverPeer != "" || lp.State != LEAVING || lp.HandoverPeer != "" {
			t.Fatalf("jr %+v, lp %+v", jr, lp)
		}
		// The leaver may now claim another joiner.
		mustApply(t, r, claimJoiner("lp", "p"))
	})
	t.Run("RestartOfLeaverMakesItActiveWithTokensAndReleasesJoiner", func(t *testing.T) {
		z := zoo(t)
		r := mustApply(t, z, register("lp"))
		lp, _ := r.Member("lp")
		jr, _ := r.Member("jr")
		if lp.State != ACTIVE || lp.HandoverPeer != "" || !equalTokens(lp.Tokens, Tokens{800, 900}) {
			t.Fatalf("lp %+v", lp)
		}
		if jr.State != PENDING || jr.HandoverPeer != "" {
			t.Fatalf("jr %+v", jr)
		}
		r = mustApply(t, z, register("l"))
		if l, _ := r.Member("l"); l.State != ACTIVE || !equalTokens(l.Tokens, Tokens{600, 700}) {
			t.Fatalf("l %+v", l)
		}
	})
	t.Run("RestartOfSelfJoiningMemberKeepsTokens", func(t *testing.T) {
		r := mustApply(t, zoo(t), register("j"))
		if j, _ := r.Member("j"); j.State != JOINING || !equalTokens(j.Tokens, Tokens{500}) {
			t.Fatalf("j %+v", j)
		}
	})
	t.Run("DifferentRaftAddressIsRefusedWithMemberExists", func(t *testing.T) {
		r := zoo(t)
		c := register("a")
		c.RaftAddr = "10.9.9.9:1"
		next, _, err := r.Apply(c, r.TimeMs()+1)
		if !errors.Is(err, ErrMemberExists) {
			t.Fatalf("err %v", err)
		}
		if e := sameExceptTime(r, next, false); e != nil {
			t.Fatal(e)
		}
	})
}

func TestApply_Register_RefusesInvalidMember(t *testing.T) {
	long := strings.Repeat("x", MaxIDLen+1)
	cases := []struct {
		name string
		edit func(c *Command)
	}{
		{"IDTooLong", func(c *Command) { c.Member = MemberID(long) }},
		{"IDWithSpace", func(c *Command) { c.Member = "a b" }},
		{"IDWithSlash", func(c *Command) { c.Member = "a/b" }},
		{"IDDot", func(c *Command) { c.Member = "." }},
		{"IDDotDot", func(c *Command) { c.Member = ".." }},
		{"IDLeadingDash", func(c *Command) { c.Member = "-h" }},
		{"IDInvalidUTF8", func(c *Command) { c.Member = "a\xff" }},
		{"IDControlChar", func(c *Command) { c.Member = "a\x00" }},
		{"NoRaftAddr", func(c *Command) { c.RaftAddr = "" }},
		{"RaftAddrNoPort", func(c *Command) { c.RaftAddr = "host" }},
		{"RaftAddrNoHost", func(c *Command) { c.RaftAddr = ":7000" }},
		{"RaftAddrEmptyPort", func(c *Command) { c.RaftAddr = "host:" }},
		{"RaftAddrPortNotNumber", func(c *Command) { c.RaftAddr = "host:raft" }},
		{"RaftAddrPortTooBig", func(c *Command) { c.RaftAddr = "host:65536" }},
		{"RaftAddrHostWithSpace", func(c *Command) { c.RaftAddr = "ho st:1" }},
		{"RaftAddrTooLong", func(c *Command) { c.RaftAddr = strings.Repeat("h", MaxAddrLen) + ":1" }},
		{"BadGRPCAddr", func(c *Command) { c.GRPCAddr = "nope" }},
		{"BadHTTPAddr", func(c *Command) { c.HTTPAddr = "nope" }},
		{"ZoneTooLong", func(c *Command) { c.Zone = strings.Repeat("z", MaxZoneLen+1) }},
		{"ZoneControlChar", func(c *Command) { c.Zone = "z\n" }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := zoo(t)
			c := register("newmember")
			tc.edit(&c)
			next, _, err := r.Apply(c, r.TimeMs()+1)
			if c.Member == "" {
				if !errors.Is(err, ErrInvalidCommand) {
					t.Fatalf("err %v", err)
				}
			} else if !errors.Is(err, ErrInvalidMember) {
				t.Fatalf("err %v, want ErrInvalidMember", err)
			}
			if e := sameExceptTime(r, next, false); e != nil {
				t.Fatal(e)
			}
		})
	}
	for _, id := range []MemberID{"a", "A.b-c_d", "ingester-7", "ingester.zone-a.svc", "été9", MemberID(strings.Repeat("x", MaxIDLen))} {
		if _, _, err := New().Apply(register(id), 1); err != nil {
			t.Errorf("valid id %q refused: %v", id, err)
		}
	}
	for _, a := range []string{"[::1]:7000", "localhost:0", "h.example.com:65535"} {
		c := register("v")
		c.RaftAddr = a
		if _, _, err := New().Apply(c, 1); err != nil {
			t.Errorf("valid address %q refused: %v", a, err)
		}
	}
}

func equalTokens(a, b Tokens) bool { return slices.Equal(a, b) }

func TestApply_ClaimTokens(t *testing.T) {
	t.Run("RefusesOwnedToken", func(t *testing.T) {
		r := zoo(t)
		next, _, err := r.Apply(claim("p", 7, 300, 9), r.TimeMs()+1)
		var te *TokenOwnedError
		if !errors.Is(err, ErrTokenOwned) || !errors.As(err, &te) {
			t.Fatalf("err %v", err)
		}
		if te.Token != 300 || te.Owner != "a2" || te.Member != "p" {
			t.Fatalf("TokenOwnedError %+v", te)
		}
		if e := sameExceptTime(r, next, false); e != nil {
			t.Fatal(e)
		}
	})
	t.Run("RefusesTokenOfLeaverAndReceiver", func(t *testing.T) {
		r := zoo(t)
		if _, _, err := r.Apply(claim("p", 800), 1); !errors.Is(err, ErrTokenOwned) {
			t.Fatalf("err %v", err)
		}
	})
	t.Run("ReclaimOfOwnTokensIsAccepted", func(t *testing.T) {
		r := zoo(t)
		next := mustApply(t, r, resize("a", 200, 100))
		if a, _ := next.Member("a"); !equalTokens(a.Tokens, Tokens{100, 200}) || a.State != ACTIVE {
			t.Fatalf("a %+v", a)
		}
	})
	t.Run("IdenticalReclaimEmitsNoEventAndSharesTokenArrays", func(t *testing.T) {
		r := zoo(t)
		next, events, err := r.Apply(resize("a", 100, 200), r.TimeMs()+1)
		if err != nil || len(events) != 0 {
			t.Fatalf("err %v, events %v", err, events)
		}
		if &next.tokens[0] != &r.tokens[0] {
			t.Fatal("identical re-claim rebuilt the token arrays")
		}
	})
	// The race the replace flag closes: a member decides to join on a ring that shows it PENDING,
	// and before its claim commits a leaver hands it tokens. The stale join claim must be refused,
	// not replace the tokens it received (that would move the leaver's data's ownership away).
	t.Run("StaleJoinClaimDoesNotReplaceHandedOverTokens", func(t *testing.T) {
		r := zoo(t)
		r = mustApply(t, r, claimJoiner("l", "p"))
		r = mustApply(t, r, complete("l", "p"))
		p, _ := r.Member("p")
		next, _, err := r.Apply(claim("p", 4242), r.TimeMs()+1)
		if !errors.Is(err, ErrIllegalTransition) {
			t.Fatalf("stale join claim: err %v, want ErrIllegalTransition", err)
		}
		if got, _ := next.Member("p"); !slices.Equal(got.Tokens, p.Tokens) || got.State != ACTIVE {
			t.Fatalf("p changed: %+v", got)
		}
	})
	t.Run("ActiveReclaimReplacesSetForNumTokensChange", func(t *testing.T) {
		r := zoo(t)
		next, events, err := r.Apply(resize("a", 100, 150, 250), r.TimeMs()+1)
		if err != nil {
			t.Fatal(err)
		}
		if a, _ := next.Member("a"); !equalTokens(a.Tokens, Tokens{100, 150, 250}) || a.State != ACTIVE {
			t.Fatalf("a %+v", a)
		}
		if _, ok := next.Owner(200); ok {
			t.Fatal("dropped token 200 still owned")
		}
		if o, _ := next.Owner(250); o != "a" {
			t.Fatalf("owner of 250: %s", o)
		}
		if len(events) != 1 || events[0].Kind != EventTokensChanged {
			t.Fatalf("events %v", events)
		}
	})
	t.Run("PendingClaimGoesJoiningAndUpdatesHeartbeat", func(t *testing.T) {
		r := zoo(t)
		next, events, err := r.Apply(claim("p", 3, 1, 2), r.TimeMs()+7)
		if err != nil {
			t.Fatal(err)
		}
		p, _ := next.Member("p")
		if p.State != JOINING || !equalTokens(p.Tokens, Tokens{1, 2, 3}) || p.HeartbeatMs != next.TimeMs() {
			t.Fatalf("p %+v", p)
		}
		if len(events) != 2 || events[0].Kind != EventTokensChanged ||
			events[1] != (Event{Kind: EventStateChanged, Member: "p", From: PENDING, To: JOINING}) {
			t.Fatalf("events %v", events)
		}
	})
	t.Run("DoesNotKeepTheCallersSlice", func(t *testing.T) {
		ts := Tokens{5, 6}
		r := mustApply(t, zoo(t), Command{Op: OpClaimTokens, Member: "p", Tokens: ts})
		ts[0] = 200 // a's token
		if p, _ := r.Member("p"); p.Tokens[0] != 5 {
			t.Fatal("ring aliases the command's token slice")
		}
	})
	for _, tc := range []struct {
		name string
		ts   Tokens
	}{
		{"RefusesEmptyList", nil},
		{"RefusesEmptyNonNilList", Tokens{}},
		{"RefusesDuplicateToken", Tokens{9, 4, 9}},
		{"RefusesHugeList", make(Tokens, MaxTokensPerMember+1)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := zoo(t)
			next, _, err := r.Apply(Command{Op: OpClaimTokens, Member: "p", Tokens: tc.ts}, r.TimeMs()+1)
			if !errors.Is(err, ErrInvalidTokens) {
				t.Fatalf("err %v", err)
			}
			if e := sameExceptTime(r, next, false); e != nil {
				t.Fatal(e)
			}
		})
	}
	t.Run("UnknownMember", func(t *testing.T) {
		if _, _, err := zoo(t).Apply(claim("ghost", 1), 1); !errors.Is(err, ErrUnknownMember) {
			t.Fatalf("err %v", err)
		}
	})
}

func TestApply_Activate_NeedsTokens(t *testing.T) {
	r := zoo(t)
	_, _, err := r.Apply(activate("p"), r.TimeMs()+1)
	if !errors.Is(err, ErrInvalidTokens) {
		t.Fatalf("activating a PENDING member without tokens: %v", err)
	}
}

func TestApply_ClaimJoiner(t *testing.T) {
	t.Run("TwoLeaversCanNeverClaimOneJoiner", func(t *testing.T) {
		r := mustApply(t, zoo(t), leave("a"), claimJoiner("l", "p"))
		next, _, err := r.Apply(claimJoiner("a", "p"), r.TimeMs()+1)
		if !errors.Is(err, ErrJoinerNotPending) {
			t.Fatalf("second leaver claimed the joiner: %v", err)
		}
		if e := sameExceptTime(r, next, false); e != nil {
			t.Fatal(e)
		}
	})
	t.Run("RetryBySameLeaverSucceedsAndChangesNothing", func(t *testing.T) {
		r := zoo(t)
		next, events, err := r.Apply(claimJoiner("lp", "jr"), r.TimeMs()+1)
		if err != nil || len(events) != 0 {
			t.Fatalf("err %v events %v", err, events)
		}
		if e := sameExceptTime(r, next, false); e != nil {
			t.Fatal(e)
		}
	})
	t.Run("ClaimsPendingJoiner", func(t *testing.T) {
		r := mustApply(t, zoo(t), claimJoiner("l", "p"))
		l, _ := r.Member("l")
		p, _ := r.Member("p")
		if l.HandoverPeer != "p" || p.HandoverPeer != "l" || p.State != JOINING || l.State != LEAVING {
			t.Fatalf("l %+v p %+v", l, p)
		}
	})
	t.Run("RefusesSelf", func(t *testing.T) {
		if _, _, err := zoo(t).Apply(claimJoiner("l", "l"), 1); !errors.Is(err, ErrInvalidCommand) {
			t.Fatalf("err %v", err)
		}
	})
	t.Run("UnknownJoiner", func(t *testing.T) {
		if _, _, err := zoo(t).Apply(claimJoiner("l", "ghost"), 1); !errors.Is(err, ErrUnknownMember) {
			t.Fatalf("err %v", err)
		}
	})
}

// Regression: claim-joiner named the other way round (joiner first) was taken for a retry and
// accepted, although the joiner had claimed nobody.
func TestApply_ClaimJoiner_ReversedPairIsNotARetry(t *testing.T) {
	r := zoo(t)
	next, _, err := r.Apply(claimJoiner("jr", "lp"), r.TimeMs()+1)
	if !errors.Is(err, ErrIllegalTransition) {
		t.Fatalf("claim-joiner(jr, lp) = %v, want ErrIllegalTransition", err)
	}
	if e := sameExceptTime(r, next, false); e != nil {
		t.Fatal(e)
	}
}

func TestApply_CompleteHandover(t *testing.T) {
	t.Run("MovesExactlyTheLeaversTokensAndRemovesLeaverInOneApply", func(t *testing.T) {
		r := zoo(t)
		before := map[Token]MemberID{}
		for _, tok := range r.tokens {
			before[tok], _ = r.Owner(tok)
		}
		next, events, err := r.Apply(complete("lp", "jr"), r.TimeMs()+1)
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := next.Member("lp"); ok {
			t.Fatal("leaver still a member")
		}
		jr, _ := next.Member("jr")
		if jr.State != ACTIVE || jr.HandoverPeer != "" || !equalTokens(jr.Tokens, Tokens{800, 900}) ||
			jr.HeartbeatMs != next.TimeMs() {
			t.Fatalf("jr %+v", jr)
		}
		if next.NumTokens() != len(before) {
			t.Fatalf("%d tokens, want %d", next.NumTokens(), len(before))
		}
		for tok, o := range before {
			got, _ := next.Owner(tok)
			want := o
			if o == "lp" {
				want = "jr"
			}
			if got != want {
				t.Errorf("token %d owned by %s, want %s", tok, got, want)
			}
		}
		if next.Ownership("jr") != r.Ownership("lp") {
			t.Errorf("jr owns %v, lp owned %v", next.Ownership("jr"), r.Ownership("lp"))
		}
		kinds := []EventKind{}
		for _, e := range events {
			kinds = append(kinds, e.Kind)
		}
		if len(kinds) != 3 || kinds[0] != EventTokensChanged || kinds[1] != EventStateChanged || kinds[2] != EventRemoved {
			t.Fatalf("events %v", events)
		}
	})
	t.Run("RetryAfterSuccessIsUnknownMember", func(t *testing.T) {
		r := mustApply(t, zoo(t), complete("lp", "jr"))
		if _, _, err := r.Apply(complete("lp", "jr"), r.TimeMs()+1); !errors.Is(err, ErrUnknownMember) {
			t.Fatalf("err %v", err)
		}
	})
	t.Run("ReversedPairIsMismatch", func(t *testing.T) {
		if _, _, err := zoo(t).Apply(complete("jr", "lp"), 1); !errors.Is(err, ErrHandoverMismatch) {
			t.Fatalf("err %v", err)
		}
	})
}

func TestApply_AbortHandover(t *testing.T) {
	t.Run("JoinerBackToPendingLeaverStaysLeavingUnpaired", func(t *testing.T) {
		r := mustApply(t, zoo(t), abort("lp", "jr"))
		jr, _ := r.Member("jr")
		lp, _ := r.Member("lp")
		if jr.State != PENDING || jr.HandoverPeer != "" || lp.State != LEAVING || lp.HandoverPeer != "" {
			t.Fatalf("jr %+v lp %+v", jr, lp)
		}
	})
	t.Run("IsIdempotent", func(t *testing.T) {
		r := mustApply(t, zoo(t), abort("lp", "jr"))
		next, events, err := r.Apply(abort("lp", "jr"), r.TimeMs()+1)
		if err != nil || len(events) != 0 {
			t.Fatalf("second abort: err %v events %v", err, events)
		}
		if e := sameExceptTime(r, next, false); e != nil {
			t.Fatal(e)
		}
		if &next.members[0] != &r.members[0] {
			t.Error("a no-op abort copied the members")
		}
	})
	t.Run("AfterCompleteIsNoOp", func(t *testing.T) {
		r := mustApply(t, zoo(t), complete("lp", "jr"))
		next, _, err := r.Apply(abort("lp", "jr"), r.TimeMs()+1)
		if err != nil {
			t.Fatal(err)
		}
		if state(t, next, "jr") != ACTIVE {
			t.Fatal("abort after complete changed the joiner")
		}
	})
	t.Run("NeitherMemberIsUnknownMember", func(t *testing.T) {
		if _, _, err := zoo(t).Apply(abort("x1", "x2"), 1); !errors.Is(err, ErrUnknownMember) {
			t.Fatalf("err %v", err)
		}
	})
	t.Run("AfterLeaverRemovedIsNoOp", func(t *testing.T) {
		r := mustApply(t, zoo(t), remove("lp"))
		mustApply(t, r, abort("lp", "jr"))
	})
}

// Regression: abort-hand-over naming the joiner first unpaired the two but left the joiner JOINING
// with no leaver and no tokens — claimable by nobody, activatable never.
func TestApply_AbortHandover_ReversedPairDoesNotStrandJoiner(t *testing.T) {
	r := zoo(t)
	next, _, err := r.Apply(abort("jr", "lp"), r.TimeMs()+1)
	if !errors.Is(err, ErrHandoverMismatch) {
		t.Fatalf("abort(jr, lp) = %v, want ErrHandoverMismatch", err)
	}
	if e := sameExceptTime(r, next, false); e != nil {
		t.Fatal(e)
	}
	if e := checkReachable(next); e != nil {
		t.Fatal(e)
	}
}

func TestApply_Remove(t *testing.T) {
	t.Run("LeaverMidHandoverReturnsJoinerToPending", func(t *testing.T) {
		r := mustApply(t, zoo(t), remove("lp"))
		if jr, _ := r.Member("jr"); jr.State != PENDING || jr.HandoverPeer != "" {
			t.Fatalf("jr %+v", jr)
		}
		if _, ok := r.Owner(800); ok {
			t.Fatal("removed leaver's token still owned")
		}
	})
	t.Run("JoinerMidHandoverLeavesLeaverLeavingUnpaired", func(t *testing.T) {
		r := mustApply(t, zoo(t), remove("jr"))
		if lp, _ := r.Member("lp"); lp.State != LEAVING || lp.HandoverPeer != "" {
			t.Fatalf("lp %+v", lp)
		}
	})
	t.Run("FreesTokensForOthers", func(t *testing.T) {
		r := mustApply(t, zoo(t), remove("a"), claim("p", 100, 200))
		if o, _ := r.Owner(100); o != "p" {
			t.Fatalf("owner %s", o)
		}
	})
	t.Run("UnknownMember", func(t *testing.T) {
		if _, _, err := zoo(t).Apply(remove("ghost"), 1); !errors.Is(err, ErrUnknownMember) {
			t.Fatalf("err %v", err)
		}
	})
	t.Run("EmitsRemovedWithLastState", func(t *testing.T) {
		r := zoo(t)
		_, events, _ := r.Apply(remove("a"), r.TimeMs()+1)
		if len(events) != 1 || events[0] != (Event{Kind: EventRemoved, Member: "a", From: ACTIVE, To: ACTIVE}) {
			t.Fatalf("events %v", events)
		}
	})
}

func TestApply_Heartbeat(t *testing.T) {
	t.Run("UsesRingTime", func(t *testing.T) {
		r := zoo(t)
		next := mustApply(t, r, heartbeat("a"))
		if a, _ := next.Member("a"); a.HeartbeatMs != next.TimeMs() {
			t.Fatalf("heartbeat %d, ring time %d", a.HeartbeatMs, next.TimeMs())
		}
		// An entry stamped by a leader whose clock is behind records ring time, not its own.
		back, _, err := next.Apply(heartbeat("a2"), 5)
		if err != nil {
			t.Fatal(err)
		}
		if a2, _ := back.Member("a2"); a2.HeartbeatMs != next.TimeMs() {
			t.Fatalf("heartbeat %d, want ring time %d", a2.HeartbeatMs, next.TimeMs())
		}
	})
	t.Run("SharesTokenArrays", func(t *testing.T) {
		r := zoo(t)
		next := mustApply(t, r, heartbeat("a"))
		if &next.tokens[0] != &r.tokens[0] || &next.owners[0] != &r.owners[0] || &next.ownership[0] != &r.ownership[0] {
			t.Fatal("heartbeat rebuilt the token arrays")
		}
		a0, _ := r.Member("a")
		a1, _ := next.Member("a")
		if &a0.Tokens[0] != &a1.Tokens[0] {
			t.Fatal("heartbeat copied the member's tokens")
		}
	})
}

func TestApply_RingTimeNeverGoesBackwards(t *testing.T) {
	r := mustApply(t, New(), register("a"))
	t0 := r.TimeMs()
	for _, now := range []int64{t0 - 1, 0, -1 << 62, t0} {
		next, _, _ := r.Apply(heartbeat("a"), now)
		if next.TimeMs() != t0 {
			t.Fatalf("applying at %d moved ring time from %d to %d", now, t0, next.TimeMs())
		}
		// Refused commands keep it too.
		next, _, _ = r.Apply(heartbeat("ghost"), now)
		if next.TimeMs() != t0 {
			t.Fatalf("refusal at %d moved ring time to %d", now, next.TimeMs())
		}
	}
	next, _, _ := r.Apply(heartbeat("ghost"), t0+100)
	if next.TimeMs() != t0+100 {
		t.Fatal("a refused command must still advance ring time")
	}
}

func TestApply_RequestID(t *testing.T) {
	t.Run("RetryReturnsFirstOutcomeWithoutApplyingAgain", func(t *testing.T) {
		r := zoo(t)
		c := claim("p", 77)
		c.RequestID = "req-1"
		r1, _, err := r.Apply(c, r.TimeMs()+1)
		if err != nil {
			t.Fatal(err)
		}
		// Meanwhile p's tokens changed; a retry must not claim 77 again.
		r2 := mustApply(t, r1, resize("p", 78))
		r3, events, err := r2.Apply(c, r2.TimeMs()+1)
		if err != nil || len(events) != 0 {
			t.Fatalf("retry: err %v events %v", err, events)
		}
		if e := sameExceptTime(r2, r3, false); e != nil {
			t.Fatal(e)
		}
	})
	t.Run("RetryOfRefusalReturnsSameError", func(t *testing.T) {
		r := zoo(t)
		c := claim("p", 100)
		c.RequestID = "req-2"
		r1, _, err1 := r.Apply(c, r.TimeMs()+1)
		r2 := mustApply(t, r1, remove("a")) // token 100 is free now
		_, _, err2 := r2.Apply(c, r2.TimeMs()+1)
		if !errors.Is(err1, ErrTokenOwned) || !errors.Is(err2, ErrTokenOwned) || err1.Error() != err2.Error() {
			t.Fatalf("first %v, retry %v", err1, err2)
		}
		if CodeOf(err2) != CodeTokenOwned {
			t.Fatalf("code %d", CodeOf(err2))
		}
	})
	t.Run("MemoryIsBoundedOldestDropped", func(t *testing.T) {
		r := mustApply(t, New(), register("a"))
		for i := range maxRecent + 10 {
			c := heartbeat("a")
			c.RequestID = "hb-" + itoa(i)
			r, _, _ = r.Apply(c, r.TimeMs()+1)
		}
		if len(r.Recent()) != maxRecent {
			t.Fatalf("%d remembered", len(r.Recent()))
		}
		if got := r.Recent()[0].RequestID; got != "hb-10" {
			t.Fatalf("oldest remembered %s, want hb-10", got)
		}
		// hb-5 was forgotten: applying it again is a fresh command (it heartbeats again).
		c := heartbeat("a")
		c.RequestID = "hb-5"
		next, _, err := r.Apply(c, r.TimeMs()+1)
		if err != nil {
			t.Fatal(err)
		}
		if a, _ := next.Member("a"); a.HeartbeatMs != next.TimeMs() {
			t.Fatal("forgotten request was not applied")
		}
		if got := next.Recent()[maxRecent-1].RequestID; got != "hb-5" {
			t.Fatalf("newest %s", got)
		}
	})
	t.Run("SiblingsDoNotShareMemory", func(t *testing.T) {
		// Two rings derived from one parent must not write into a shared request array.
		r := mustApply(t, New(), register("a"))
		for i := range 5 {
			c := heartbeat("a")
			c.RequestID = "x" + itoa(i)
			r, _, _ = r.Apply(c, r.TimeMs()+1)
		}
		c1, c2 := heartbeat("a"), heartbeat("a")
		c1.RequestID, c2.RequestID = "left", "right"
		left, _, _ := r.Apply(c1, r.TimeMs()+1)
		right, _, _ := r.Apply(c2, r.TimeMs()+1)
		if l, rr := left.Recent(), right.Recent(); l[len(l)-1].RequestID != "left" || rr[len(rr)-1].RequestID != "right" {
			t.Fatalf("left %v right %v", l, rr)
		}
		if len(r.Recent()) != 5 {
			t.Fatal("parent memory changed")
		}
	})
	t.Run("TooLongIsRefusedAndNotRemembered", func(t *testing.T) {
		r := zoo(t)
		c := heartbeat("a")
		c.RequestID = strings.Repeat("r", MaxRequestIDLen+1)
		next, _, err := r.Apply(c, r.TimeMs()+1)
		if !errors.Is(err, ErrInvalidCommand) {
			t.Fatalf("err %v", err)
		}
		if e := sameExceptTime(r, next, false); e != nil {
			t.Fatal(e)
		}
	})
}

func itoa(i int) string { return strconv.Itoa(i) }

func TestApply_RefusesFieldsTheOpDoesNotUse(t *testing.T) {
	cases := []struct {
		name string
		cmd  Command
	}{
		{"NoMember", Command{Op: OpHeartbeat}},
		{"UnknownOp", Command{Op: 42, Member: "a"}},
		{"ZeroOp", Command{Member: "a"}},
		{"RegisterWithPeer", Command{Op: OpRegister, Member: "n", RaftAddr: "h:1", Peer: "a"}},
		{"RegisterWithTokens", Command{Op: OpRegister, Member: "n", RaftAddr: "h:1", Tokens: Tokens{1}}},
		{"ClaimWithPeer", Command{Op: OpClaimTokens, Member: "p", Peer: "a", Tokens: Tokens{1}}},
		{"ClaimWithAddress", Command{Op: OpClaimTokens, Member: "p", RaftAddr: "h:1", Tokens: Tokens{1}}},
		{"ClaimWithZone", Command{Op: OpClaimTokens, Member: "p", Zone: "z", Tokens: Tokens{1}}},
		{"ReplaceOnActivate", Command{Op: OpActivate, Member: "a", Replace: true}},
		{"ReplaceOnRegister", Command{Op: OpRegister, Member: "n", RaftAddr: "127.0.0.1:1", Replace: true}},
		{"ActivateWithTokens", Command{Op: OpActivate, Member: "j", Tokens: Tokens{1}}},
		{"HeartbeatWithPeer", Command{Op: OpHeartbeat, Member: "a", Peer: "a2"}},
		{"HeartbeatWithAddress", Command{Op: OpHeartbeat, Member: "a", GRPCAddr: "h:1"}},
		{"LeaveWithHTTPAddr", Command{Op: OpLeave, Member: "a", HTTPAddr: "h:1"}},
		{"RemoveWithTokens", Command{Op: OpRemove, Member: "a", Tokens: Tokens{1}}},
		{"ClaimJoinerWithoutPeer", Command{Op: OpClaimJoiner, Member: "l"}},
		{"ClaimJoinerWithTokens", Command{Op: OpClaimJoiner, Member: "l", Peer: "p", Tokens: Tokens{1}}},
		{"CompleteWithZone", Command{Op: OpCompleteHandover, Member: "lp", Peer: "jr", Zone: "z"}},
		{"AbortSelf", Command{Op: OpAbortHandover, Member: "lp", Peer: "lp"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := zoo(t)
			next, _, err := r.Apply(tc.cmd, r.TimeMs()+1)
			if !errors.Is(err, ErrInvalidCommand) {
				t.Fatalf("err %v, want ErrInvalidCommand", err)
			}
			if CodeOf(err) != CodeInvalidCommand {
				t.Fatalf("code %d", CodeOf(err))
			}
			if e := sameExceptTime(r, next, false); e != nil {
				t.Fatal(e)
			}
		})
	}
}

func TestCodes_RoundTrip(t *testing.T) {
	for c := CodeOK; c < codeEnd; c++ {
		err := ErrorOf(c, "msg")
		if c == CodeOK {
			if err != nil {
				t.Fatal("ErrorOf(CodeOK) != nil")
			}
			continue
		}
		if CodeOf(err) != c || !errors.Is(err, codeErrs[c]) || err.Error() != "msg" {
			t.Errorf("code %d: CodeOf %d, err %v", c, CodeOf(err), err)
		}
	}
	if CodeOf(errors.New("other")) != CodeInvalidCommand || CodeOf(ErrorOf(200, "x")) != CodeInvalidCommand {
		t.Error("foreign errors and unknown codes must map to CodeInvalidCommand")
	}
	if !errors.Is(ErrorOf(200, "x"), ErrInvalidCommand) {
		t.Error("unknown code must unwrap to ErrInvalidCommand")
	}
	if CodeOf(&TransitionError{}) != CodeIllegalTransition || CodeOf(&TokenOwnedError{}) != CodeTokenOwned {
		t.Error("typed errors")
	}
	if len(codeErrs) != int(codeEnd) {
		t.Fatal("codeErrs out of step with the codes")
	}
}

func TestOpAndState_Strings(t *testing.T) {
	if OpRegister.String() != "register" || OpRemove.String() != "remove" || Op(0).String() != "Op(0)" || Op(99).String() != "Op(99)" {
		t.Error("Op.String")
	}
	for s := ACTIVE; s <= JOINING; s++ {
		got, err := ParseState(strings.ToLower(s.String()))
		if err != nil || got != s || !s.Valid() {
			t.Errorf("ParseState(%s) = %v, %v", s, got, err)
		}
	}
	if _, err := ParseState("UNHEALTHY"); err == nil {
		t.Error("UNHEALTHY is not a state")
	}
	if State(7).Valid() || State(-1).Valid() || State(7).String() != "State(7)" {
		t.Error("invalid states")
	}
}
