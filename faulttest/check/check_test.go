package check

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"

	"github.com/raftingest/raftingest/raftfsm"
	"github.com/raftingest/raftingest/ringstate"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func at(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }

func sid(w int, s uint64) SampleID { return SampleID{Writer: w, Seq: s} }

func TestCheckSet_CleanHistoryPasses(t *testing.T) {
	writes := []Write{
		{ID: sid(0, 1), Outcome: OutcomeOK, Invoke: at(1), Return: at(2)},
		{ID: sid(0, 2), Outcome: OutcomeUnknown, Invoke: at(2), Return: at(3)}, // recovered
		{ID: sid(0, 3), Outcome: OutcomeUnknown, Invoke: at(3), Return: at(4)}, // never applied: fine
		{ID: sid(0, 3), Outcome: OutcomeFail, Invoke: at(3), Return: at(4)},
		{ID: sid(1, 1), Outcome: OutcomeFail, Invoke: at(1), Return: at(2)},
	}
	periodic := []Read{{Invoke: at(3), Return: at(4), Samples: []SampleID{sid(0, 1)}}}
	final := Read{Invoke: at(10), Return: at(11), Samples: []SampleID{sid(0, 1), sid(0, 2)}}
	r := CheckSet(writes, periodic, final)
	if !r.Valid() || r.OK != 1 || r.Recovered != 1 || r.Attempted != 4 || r.Unknown != 2 || r.Failed != 1 {
		t.Fatalf("clean history: %s", r.String())
	}
}

func TestCheckSet_CatchesBrokenHistories(t *testing.T) {
	ok := func(w int, s uint64) Write {
		return Write{ID: sid(w, s), Outcome: OutcomeOK, Invoke: at(1), Return: at(2)}
	}
	cases := []struct {
		name     string
		writes   []Write
		periodic []Read
		final    []SampleID
		want     func(SetResult) bool
	}{
		{"a lost ack: acknowledged, not read back", []Write{ok(0, 1), ok(0, 2)}, nil, []SampleID{sid(0, 1)},
			func(r SetResult) bool { return r.Lost == 1 && r.LostIDs[0] == sid(0, 2) }},
		{"unexpected: read back but never written", []Write{ok(0, 1)}, nil, []SampleID{sid(0, 1), sid(7, 7)},
			func(r SetResult) bool { return r.Unexpected == 1 }},
		{"unexpected: a definitely failed write read back",
			[]Write{{ID: sid(0, 1), Outcome: OutcomeFail, Invoke: at(1), Return: at(2)}}, nil, []SampleID{sid(0, 1)},
			func(r SetResult) bool { return r.Unexpected == 1 }},
		{"duplicated: read back twice", []Write{ok(0, 1)}, nil, []SampleID{sid(0, 1), sid(0, 1)},
			func(r SetResult) bool { return r.Duplicated == 1 }},
		{"a sample seen by a read, then missing from a later read (a stale read)", []Write{ok(0, 1)},
			[]Read{{Invoke: at(3), Return: at(4), Samples: []SampleID{sid(0, 1)}},
				{Invoke: at(5), Return: at(6), Writers: []int{0}}},
			[]SampleID{sid(0, 1)},
			func(r SetResult) bool { return r.Vanished == 1 && r.VanishedIDs[0].Reappeared }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := CheckSet(c.writes, c.periodic, Read{Invoke: at(10), Return: at(11), Samples: c.final})
			if r.Valid() || !c.want(r) {
				t.Fatalf("checker missed it: %s", r.String())
			}
		})
	}
}

func TestCheckSet_ReadNotCoveringWriterIsNotVanish(t *testing.T) {
	w := []Write{{ID: sid(0, 1), Outcome: OutcomeOK, Invoke: at(1), Return: at(2)}}
	p := []Read{{Invoke: at(3), Return: at(4), Samples: []SampleID{sid(0, 1)}}, {Invoke: at(5), Return: at(6), Writers: []int{1}}}
	if r := CheckSet(w, p, Read{Invoke: at(9), Return: at(10), Samples: []SampleID{sid(0, 1)}}); !r.Valid() {
		t.Fatal(r.String())
	}
}

func member(id string, st ringstate.State, toks ...ringstate.Token) ringstate.Member {
	return ringstate.Member{ID: ringstate.MemberID(id), RaftAddr: "10.0.0.1:1", GRPCAddr: "10.0.0.1:2",
		HTTPAddr: "10.0.0.1:3", State: st, Tokens: toks}
}

func TestTokenChecker_CatchesDoubleOwnedToken(t *testing.T) {
	c := NewTokenChecker()
	c.Observe(RingStep{Member: "a", Index: 3, Op: ringstate.OpClaimTokens, Members: []ringstate.Member{
		member("n1", ringstate.ACTIVE, 10, 20), member("n2", ringstate.JOINING, 20, 30)}})
	if c.Valid() || !strings.Contains(c.Violations[0].What, "token 20 owned by both n1 and n2") {
		t.Fatalf("violations: %v", c.Violations)
	}
}

func TestTokenChecker_CatchesIllegalTransitionAndPendingWithTokens(t *testing.T) {
	c := NewTokenChecker()
	c.Observe(RingStep{Member: "a", Index: 1, Members: []ringstate.Member{member("n1", ringstate.ACTIVE, 1)}})
	c.Observe(RingStep{Member: "a", Index: 2, Op: ringstate.OpHeartbeat, Members: []ringstate.Member{member("n1", ringstate.PENDING, 1)}})
	var illegal, pending bool
	for _, v := range c.Violations {
		illegal = illegal || strings.Contains(v.What, "ACTIVE -> PENDING")
		pending = pending || strings.Contains(v.What, "PENDING member n1 owns 1 tokens")
	}
	if !illegal || !pending {
		t.Fatalf("violations: %v", c.Violations)
	}
}

func TestTokenChecker_CatchesHalfHandover(t *testing.T) {
	c := NewTokenChecker()
	leaver, joiner := member("l", ringstate.LEAVING, 1, 2, 3), member("j", ringstate.JOINING)
	leaver.HandoverPeer, joiner.HandoverPeer = "j", "l"
	c.Observe(RingStep{Member: "a", Index: 1, Members: []ringstate.Member{leaver, joiner}})
	c.Observe(RingStep{Member: "a", Index: 2, Op: ringstate.OpCompleteHandover, Code: ringstate.CodeOK,
		Cmd:     ringstate.Command{Op: ringstate.OpCompleteHandover, Member: "l", Peer: "j"},
		Members: []ringstate.Member{member("j", ringstate.ACTIVE, 1, 2)}})
	if c.Valid() || !strings.Contains(c.Violations[0].What, "joiner has 2 tokens, leaver had 3") {
		t.Fatalf("violations: %v", c.Violations)
	}
}

// cmdLog builds a log of encoded commands, one per entry, at term 1.
func cmdLog(t *testing.T, cmds ...ringstate.Command) []*raft.Log {
	var out []*raft.Log
	for i, c := range cmds {
		b, err := raftfsm.EncodeCommand(c)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, &raft.Log{Index: uint64(i + 1), Term: 1, Type: raft.LogCommand, Data: b, AppendedAt: at(i)})
	}
	return out
}

func joinCmds(id string, toks ...ringstate.Token) []ringstate.Command {
	return []ringstate.Command{
		{Op: ringstate.OpRegister, RequestID: "reg-" + id, Member: ringstate.MemberID(id), RaftAddr: "10.0.0.1:1", GRPCAddr: "10.0.0.1:2", HTTPAddr: "10.0.0.1:3"},
		{Op: ringstate.OpClaimTokens, RequestID: "claim-" + id, Member: ringstate.MemberID(id), Tokens: toks},
		{Op: ringstate.OpActivate, RequestID: "act-" + id, Member: ringstate.MemberID(id)},
	}
}

func TestReadBoltLog_ReplaysARealLogCleanly(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "raft"), 0o755); err != nil {
		t.Fatal(err)
	}
	store, err := raftboltdb.NewBoltStore(filepath.Join(dir, "raft", "raft.db"))
	if err != nil {
		t.Fatal(err)
	}
	cmds := append(joinCmds("n1", 10, 20), joinCmds("n2", 20, 30)...) // n2's claim of 20 is refused
	cmds = append(cmds, ringstate.Command{Op: ringstate.OpClaimTokens, RequestID: "claim-n2b", Member: "n2", Tokens: ringstate.Tokens{30, 40}})
	logs := cmdLog(t, cmds...)
	if err := store.StoreLogs(logs); err != nil {
		t.Fatal(err)
	}
	store.Close()
	ml, err := ReadBoltLog("n1", dir, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	res, reps := CheckTokens([]*MemberLog{ml})
	if !res.Valid() || res.Entries != len(cmds) {
		t.Fatalf("%s", res.String())
	}
	if got := reps[0].Outcomes["claim-n2"].Code; got != ringstate.CodeTokenOwned {
		t.Fatalf("claim-n2 outcome %d, want CodeTokenOwned", got)
	}
	if o, ok := reps[0].Final.Owner(40); !ok || o != "n2" {
		t.Fatalf("token 40 owner %q", o)
	}
}

func TestCheckConvergence_CatchesDivergence(t *testing.T) {
	a := &MemberLog{Member: "a", Entries: cmdLog(t, joinCmds("n1", 1)...)}
	b := &MemberLog{Member: "b", Entries: cmdLog(t, joinCmds("n1", 2)...)}
	_, reps := CheckTokens([]*MemberLog{a, b})
	r := CheckConvergence([]*MemberLog{a, b}, reps, []FSMObservation{{Member: "a", Applied: 3, Hash: "bogus"}},
		[]LeaderObservation{{Term: 2, Member: "a"}, {Term: 2, Member: "b"}, {Term: 3, Member: "b"}}, true)
	if r.Valid() || len(r.LogMismatches) != 1 || len(r.HashMismatches) < 2 || len(r.TwoLeaders) != 1 || len(r.Diverged) != 1 {
		t.Fatalf("%s", r.String())
	}
	// The same logs agree with themselves.
	_, reps = CheckTokens([]*MemberLog{a, {Member: "c", Entries: a.Entries}})
	if r := CheckConvergence([]*MemberLog{a, {Member: "c", Entries: a.Entries}}, reps,
		[]FSMObservation{{Member: "a", Applied: 3, Hash: reps[0].Hash[3]}}, nil, true); !r.Valid() {
		t.Fatalf("%s", r.String())
	}
}

func TestCheckRingLinearizable(t *testing.T) {
	reg := joinCmds("n1", 5)[0]
	after := func() string { r, _, _ := ringstate.New().Apply(reg, 0); return RingDigest(r) }()
	t.Run("write then read passes", func(t *testing.T) {
		ops := []RingOp{{Client: 0, Cmd: reg, Call: at(1), Return: at(2)},
			{Client: 1, Read: true, Call: at(3), Return: at(4), Digest: after}}
		if r := CheckRingLinearizable(ops, nil, "", time.Minute); !r.Valid() {
			t.Fatal(r.String())
		}
	})
	t.Run("stale read fails and saves the page", func(t *testing.T) {
		dir := t.TempDir()
		ops := []RingOp{{Client: 0, Cmd: reg, Call: at(1), Return: at(2)},
			{Client: 1, Read: true, Call: at(3), Return: at(4), Digest: RingDigest(ringstate.New())}}
		r := CheckRingLinearizable(ops, nil, dir, time.Minute)
		if r.Valid() || r.Result != "Illegal" || r.Page == "" {
			t.Fatal(r.String())
		}
		if st, err := os.Stat(r.Page); err != nil || st.Size() == 0 {
			t.Fatalf("page: %v", err)
		}
	})
	t.Run("unknown outcome resolved from the log", func(t *testing.T) {
		ops := []RingOp{{Client: 0, Cmd: reg, Call: at(1), Return: at(2), Unknown: true},
			{Client: 1, Read: true, Call: at(3), Return: at(4), Digest: after}}
		r := CheckRingLinearizable(ops, map[string]Committed{reg.RequestID: {Index: 1, Code: ringstate.CodeOK}}, "", time.Minute)
		if !r.Valid() || r.Resolved != 1 {
			t.Fatal(r.String())
		}
		// Not in the log: the command never happened, and a read that saw it is not linearizable.
		r = CheckRingLinearizable(ops, map[string]Committed{}, "", time.Minute)
		if r.Valid() || r.NotApplied != 1 {
			t.Fatal(r.String())
		}
	})
	t.Run("a wrong outcome code fails", func(t *testing.T) {
		ops := []RingOp{{Client: 0, Cmd: reg, Call: at(1), Return: at(2), Code: ringstate.CodeUnknownMember}}
		if r := CheckRingLinearizable(ops, nil, "", time.Minute); r.Valid() {
			t.Fatal(r.String())
		}
	})
}

func TestCheckReplication_CatchesUnderReplicated(t *testing.T) {
	held := map[string]map[SampleID]bool{"a": {sid(0, 1): true, sid(0, 2): true}, "b": {sid(0, 1): true}, "c": {}}
	r := CheckReplication([]SampleID{sid(0, 1), sid(0, 2)}, func(SampleID) []string { return []string{"a", "b", "c"} },
		func(i string, id SampleID) bool { return held[i][id] }, 2)
	if r.Valid() || r.UnderReplicated != 1 || r.Missing[0] != sid(0, 2) {
		t.Fatal(r.String())
	}
}

func TestCheckLiveness(t *testing.T) {
	if r := CheckLiveness(at(0), at(2), at(3), at(4), true, 10*time.Second); !r.Valid() {
		t.Fatal(r.String())
	}
	if r := CheckLiveness(at(0), at(2), time.Time{}, at(4), true, 10*time.Second); r.Valid() {
		t.Fatal("no write after heal passed: " + r.String())
	}
	if r := CheckLiveness(at(0), at(20), at(21), at(22), false, 10*time.Second); r.Valid() {
		t.Fatal("slow leader passed: " + r.String())
	}
}

// A command compacted into the snapshot a log is replayed from is still resolved by request id:
// the snapshot's ring remembers its outcome. (Found by the simulated tier: without it, an unknown
// command committed before every member compacted looked never committed, and porcupine said
// Illegal.)
func TestReplayLog_ResolvesRequestsCompactedIntoTheBase(t *testing.T) {
	base, _, err := ringstate.New().Apply(joinCmds("n1", 1)[0], 0)
	if err != nil {
		t.Fatal(err)
	}
	rp := ReplayLog(&MemberLog{Member: "a", Base: base, BaseIndex: 40}, nil)
	if c, ok := rp.Outcomes["reg-n1"]; !ok || c.Code != ringstate.CodeOK || c.Index != 40 {
		t.Fatalf("outcome of reg-n1: %+v %v", c, ok)
	}
}

// The wal-corruption scenario requires one copy of each acked sample (a replica's WAL data is
// destroyed by design): a sample on no owner still fails, one on a single owner is counted as
// information.
func TestCheckReplicationRelaxed_CatchesSampleOnNoOwner(t *testing.T) {
	held := map[string]map[SampleID]bool{"a": {sid(0, 1): true, sid(0, 2): true}, "b": {sid(0, 1): true}, "c": {}}
	owners := func(SampleID) []string { return []string{"a", "b", "c"} }
	holds := func(i string, id SampleID) bool { return held[i][id] }
	r := CheckReplicationRelaxed([]SampleID{sid(0, 1), sid(0, 2)}, owners, holds, 2, 1, "a replica's WAL was moved aside")
	if !r.Valid() || r.BelowQuorum != 1 || !strings.Contains(r.String(), "information") {
		t.Fatal(r.String())
	}
	r = CheckReplicationRelaxed([]SampleID{sid(0, 1), sid(0, 3)}, owners, holds, 2, 1, "a replica's WAL was moved aside")
	if r.Valid() || r.UnderReplicated != 1 || r.Missing[0] != sid(0, 3) {
		t.Fatal("a sample on no owner passed: " + r.String())
	}
}

func TestCheckWALRestarts(t *testing.T) {
	const file = "/d/n1/wal/wal.bolt"
	truncated := "cannot start err=\"memstore: WAL file " + file + " is truncated: 10 bytes, but ...; the file was left untouched (restore it, or move it away to start with an empty WAL)\""
	good := []WALRestart{
		{Member: "n1", File: file, Damage: "flip", Started: true, TailCut: true},
		{Member: "n1", File: file, Damage: "truncate", Refused: true, Message: truncated, MovedTo: file + ".corrupt-1", UpAfterMove: true},
	}
	if r := CheckWALRestarts(good); !r.Valid() || r.OperatorSteps != 1 || r.TailCuts != 1 || r.Advising != 1 {
		t.Fatal(r.String())
	}
	for name, bad := range map[string]WALRestart{
		"error names no file":    {Member: "n1", File: file, Refused: true, Message: "cannot start: bad file", MovedTo: file + ".corrupt-1", UpAfterMove: true},
		"error says no reason":   {Member: "n1", File: file, Refused: true, Message: "cannot start: " + file, MovedTo: file + ".corrupt-1", UpAfterMove: true},
		"not up after the step":  {Member: "n1", File: file, Refused: true, Message: truncated, MovedTo: file + ".corrupt-1"},
		"neither up nor refused": {Member: "n1", File: file, Err: "neither served nor exited within 45s"},
	} {
		if r := CheckWALRestarts([]WALRestart{bad}); r.Valid() {
			t.Errorf("%s passed: %s", name, r.String())
		}
	}
}

// TestCheckConvergence_MemberBehindByAnEntry: members stopped one after another end at different
// indexes; a member whose log is a prefix of another's has converged, one whose state at its last
// index differs from the other's at that index has not.
func TestCheckConvergence_MemberBehindByAnEntry(t *testing.T) {
	full := cmdLog(t, append(joinCmds("n1", 1), joinCmds("n2", 2)...)...)
	long := &MemberLog{Member: "long", Entries: full}
	short := &MemberLog{Member: "short", Entries: full[:len(full)-1]}
	_, reps := CheckTokens([]*MemberLog{long, short})
	if r := CheckConvergence([]*MemberLog{long, short}, reps, nil, nil, true); !r.Valid() {
		t.Fatalf("a member one entry behind is not divergence: %s", r.String())
	}
	other := &MemberLog{Member: "other", Entries: cmdLog(t, append(joinCmds("n1", 1), joinCmds("n9", 9)...)...)[:len(full)-1]}
	_, reps = CheckTokens([]*MemberLog{long, other})
	if r := CheckConvergence([]*MemberLog{long, other}, reps, nil, nil, true); len(r.Diverged) != 1 {
		t.Fatalf("a shorter member in another state was not reported diverged: %s", r.String())
	}
}
