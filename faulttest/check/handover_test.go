package check

import (
	"strings"
	"testing"
	"time"

	"github.com/raftingest/raftingest/ringstate"
)

// handoverCmds is a 3-member history up to the point where a (tokens 10, 20) is LEAVING: a and b
// ACTIVE, c PENDING. Entry i is appended at at(i); a's LEAVING commit is entry 8, at at(7).
func handoverCmds() []ringstate.Command {
	cmds := append(joinCmds("a", 10, 20), joinCmds("b", 30, 40)...)
	cmds = append(cmds, ringstate.Command{Op: ringstate.OpRegister, RequestID: "reg-c", Member: "c",
		RaftAddr: "10.0.0.3:1", GRPCAddr: "10.0.0.3:2", HTTPAddr: "10.0.0.3:3"})
	return append(cmds, ringstate.Command{Op: ringstate.OpLeave, RequestID: "leave-a", Member: "a"})
}

func hoCmd(op ringstate.Op, id string) ringstate.Command {
	return ringstate.Command{Op: op, RequestID: id, Member: "a", Peer: "c"}
}

var (
	claimAC    = hoCmd(ringstate.OpClaimJoiner, "claim-1")
	completeAC = hoCmd(ringstate.OpCompleteHandover, "complete-1")
	abortAC    = hoCmd(ringstate.OpAbortHandover, "abort-1")
)

// signalA is the harness's record of the SIGINT to a, sent between entry 7 (at(6)) and the LEAVING
// commit (at(7)), with a holding w0/1 and w0/2; reads are the reads after the outcome.
func signalA(reads ...MemberRead) LeaveRecord {
	return LeaveRecord{Member: "a", SignalAt: at(6).Add(time.Second / 2), Held: []SampleID{sid(0, 1), sid(0, 2)},
		HeldRead: true, Reads: reads}
}

func allAcked(SampleID) bool { return true }

func bucketOf(ids ...SampleID) func(SampleID) bool {
	return func(id SampleID) bool {
		for _, x := range ids {
			if x == id {
				return true
			}
		}
		return false
	}
}

func checkHandoverLog(t *testing.T, cmds []ringstate.Command, recs []LeaveRecord, bucket func(SampleID) bool) HandoverResult {
	t.Helper()
	ml := &MemberLog{Member: "b", Entries: cmdLog(t, cmds...)}
	return CheckHandovers([]*MemberLog{ml}, recs, allAcked, bucket)
}

func TestCheckHandovers_GoodHistoriesPass(t *testing.T) {
	t.Run("a hand-over that completes, the joiner read afterwards", func(t *testing.T) {
		cmds := append(handoverCmds(), claimAC, completeAC) // complete at at(9)
		r := checkHandoverLog(t, cmds, []LeaveRecord{signalA(MemberRead{Member: "c", At: at(10), Samples: []SampleID{sid(0, 1), sid(0, 2), sid(1, 9)}})}, bucketOf())
		if !r.Valid() || r.Completed != 1 || r.Leaves != 1 || r.SamplesJudged != 2 || r.OnSuccessor != 2 {
			t.Fatal(r.String())
		}
	})
	t.Run("an abort, a retry that completes, one sample only in the bucket", func(t *testing.T) {
		cmds := append(handoverCmds(), claimAC, abortAC, hoCmd(ringstate.OpClaimJoiner, "claim-2"), hoCmd(ringstate.OpCompleteHandover, "complete-2"))
		r := checkHandoverLog(t, cmds, []LeaveRecord{signalA(MemberRead{Member: "c", At: at(12), Samples: []SampleID{sid(0, 1)}})}, bucketOf(sid(0, 2)))
		if !r.Valid() || r.Claims != 2 || r.Completed != 1 || r.AbortedBy["abort-handover"] != 1 || r.InBucket != 1 {
			t.Fatal(r.String())
		}
	})
	t.Run("the leaver restarted mid hand-over resumes ACTIVE with its data", func(t *testing.T) {
		restart := joinCmds("a")[0] // register a again (a new request): the restart fix-up
		restart.RequestID = "reg-a-2"
		cmds := append(handoverCmds(), claimAC, restart)
		r := checkHandoverLog(t, cmds, []LeaveRecord{signalA(MemberRead{Member: "a", At: at(10), Samples: []SampleID{sid(0, 1), sid(0, 2)}})}, bucketOf())
		if !r.Valid() || r.Resumed != 1 || r.AbortedBy["leaver restarted"] != 1 {
			t.Fatal(r.String())
		}
	})
	t.Run("no joiner: the leaver flushes and removes itself, its samples in the bucket", func(t *testing.T) {
		cmds := append(handoverCmds(), ringstate.Command{Op: ringstate.OpRemove, RequestID: "rm-a", Member: "a"})
		r := checkHandoverLog(t, cmds, []LeaveRecord{signalA()}, bucketOf(sid(0, 1), sid(0, 2)))
		if !r.Valid() || r.Removed != 1 || r.InBucket != 2 {
			t.Fatal(r.String())
		}
	})
	t.Run("a signal whose leave never committed is counted, not failed", func(t *testing.T) {
		r := checkHandoverLog(t, joinCmds("a", 10), []LeaveRecord{signalA()}, bucketOf())
		if !r.Valid() || r.SignalsWithoutLeave != 1 {
			t.Fatal(r.String())
		}
	})
}

func TestCheckHandovers_CatchesBrokenHistories(t *testing.T) {
	cases := []struct {
		name   string
		cmds   []ringstate.Command
		recs   []LeaveRecord
		bucket func(SampleID) bool
		want   string
	}{
		{"the joiner misses an acked sample the leaver held", append(handoverCmds(), claimAC, completeAC),
			[]LeaveRecord{signalA(MemberRead{Member: "c", At: at(10), Samples: []SampleID{sid(0, 1)}})}, bucketOf(),
			"1 acked samples it held when signalled are not on c or in the bucket: w0/2"},
		{"the joiner was read before the hand-over completed", append(handoverCmds(), claimAC, completeAC),
			[]LeaveRecord{signalA(MemberRead{Member: "c", At: at(8), Samples: []SampleID{sid(0, 1), sid(0, 2)}})}, bucketOf(),
			"c was not read after index 10"},
		{"a half hand-over left stuck: claimed, never completed nor aborted", append(handoverCmds(), claimAC),
			[]LeaveRecord{signalA()}, bucketOf(), "has neither completed nor aborted: stuck"},
		{"a leaver left LEAVING without a claim", handoverCmds(), []LeaveRecord{signalA()}, bucketOf(), "is still LEAVING: stuck"},
		{"a flushing leaver removed itself with a sample not in the bucket",
			append(handoverCmds(), ringstate.Command{Op: ringstate.OpRemove, RequestID: "rm-a", Member: "a"}),
			[]LeaveRecord{signalA()}, bucketOf(sid(0, 1)), "are not in the bucket: w0/2"},
		{"the leaver exited non-zero after handing over", append(handoverCmds(), claimAC, completeAC),
			[]LeaveRecord{func() LeaveRecord {
				r := signalA(MemberRead{Member: "c", At: at(10), Samples: []SampleID{sid(0, 1), sid(0, 2)}})
				r.Exited, r.ExitCode = true, 1
				return r
			}()}, bucketOf(), "its process exited with code 1, not 0"},
		{"a member left with no signal", append(handoverCmds(), claimAC, completeAC), nil, bucketOf(), "with no signal before it"},
		{"a SIGINTed member exited 0 without ever leaving the ring", append(handoverCmds(), claimAC, completeAC),
			[]LeaveRecord{signalA(MemberRead{Member: "c", At: at(10), Samples: []SampleID{sid(0, 1), sid(0, 2)}}),
				{Member: "b", SignalAt: at(11), HeldRead: true, Exited: true, ExitCode: 0}}, bucketOf(),
			"b: exited 0 after SIGINT"},
		{"the leaver was not read before the signal", append(handoverCmds(), claimAC, completeAC),
			[]LeaveRecord{{Member: "a", SignalAt: at(6).Add(time.Second / 2)}}, bucketOf(), "did not read the leaver before the signal"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := checkHandoverLog(t, c.cmds, c.recs, c.bucket)
			if r.Valid() || !strings.Contains(r.String(), c.want) {
				t.Fatalf("checker missed it (want %q):\n%s", c.want, r.String())
			}
		})
	}
}

// The ring never produces these (its Apply moves tokens only in complete-handover), so they are fed
// as ring steps: a hand-over whose tokens move in two commits, and one that completes with part of the
// leaver's tokens, and an abort that leaves the joiner JOINING.
func TestHandoverChecker_CatchesTokensMovedOutsideOneCommit(t *testing.T) {
	paired := func(lt, jt []ringstate.Token) []ringstate.Member {
		l, j := member("a", ringstate.LEAVING, lt...), member("c", ringstate.JOINING, jt...)
		l.HandoverPeer, j.HandoverPeer = "c", "a"
		return []ringstate.Member{l, member("b", ringstate.ACTIVE, 9), j}
	}
	steps := func(mid []ringstate.Member, end RingStep) []RingStep {
		out := []RingStep{
			{Member: "b", Index: 1, Op: ringstate.OpLeave, Members: []ringstate.Member{member("a", ringstate.LEAVING, 1, 2, 3), member("b", ringstate.ACTIVE, 9), member("c", ringstate.PENDING)}},
			{Member: "b", Index: 2, Op: ringstate.OpClaimJoiner, Cmd: claimAC, Members: paired([]ringstate.Token{1, 2, 3}, nil)},
		}
		if mid != nil {
			out = append(out, RingStep{Member: "b", Index: 3, Op: ringstate.OpHeartbeat, Members: mid})
		}
		end.Member, end.Index = "b", 4
		return append(out, end)
	}
	complete := func(jt ...ringstate.Token) RingStep {
		return RingStep{Op: ringstate.OpCompleteHandover, Code: ringstate.CodeOK, Cmd: completeAC,
			Members: []ringstate.Member{member("b", ringstate.ACTIVE, 9), member("c", ringstate.ACTIVE, jt...)}}
	}
	cases := []struct {
		name  string
		steps []RingStep
		want  string
	}{
		{"tokens moved in two commits", steps(paired([]ringstate.Token{3}, []ringstate.Token{1, 2}), complete(1, 2, 3)),
			"tokens must move only in the completing commit"},
		{"completed with part of the leaver's tokens", steps(nil, complete(1, 2)),
			"joiner holding 2 tokens, the leaver held 3 at the claim (1 of the leaver's tokens missing, 0 others)"},
		{"the leaver still in the ring after completing", steps(nil, RingStep{Op: ringstate.OpCompleteHandover, Code: ringstate.CodeOK, Cmd: completeAC,
			Members: []ringstate.Member{member("a", ringstate.LEAVING, 1, 2, 3), member("b", ringstate.ACTIVE, 9), member("c", ringstate.ACTIVE, 1, 2, 3)}}),
			"the leaver is still in the ring"},
		{"an abort that leaves the joiner JOINING", steps(nil, RingStep{Op: ringstate.OpAbortHandover, Code: ringstate.CodeOK, Cmd: abortAC,
			Members: []ringstate.Member{member("a", ringstate.LEAVING, 1, 2, 3), member("b", ringstate.ACTIVE, 9), member("c", ringstate.JOINING)}}),
			"not PENDING and empty"},
		{"a pair undone by a heartbeat", steps(nil, RingStep{Op: ringstate.OpHeartbeat, Code: ringstate.CodeOK, Cmd: ringstate.Command{Op: ringstate.OpHeartbeat, Member: "b"},
			Members: []ringstate.Member{member("a", ringstate.LEAVING, 1, 2, 3), member("b", ringstate.ACTIVE, 9), member("c", ringstate.PENDING)}}),
			"neither a completion nor an abort"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			hc := NewHandoverChecker("b", nil, 0)
			for _, s := range c.steps {
				hc.Observe(s, at(int(s.Index)))
			}
			r := hc.Finish(nil, allAcked, bucketOf())
			found := false
			for _, v := range r.Violations {
				found = found || strings.Contains(v.What, c.want)
			}
			if r.Valid() || !found {
				t.Fatalf("checker missed it (want %q):\n%s", c.want, r.String())
			}
		})
	}
}

// A hand-over open in the snapshot a log is replayed from is judged like one claimed in the log: here
// it never ends, so it is stuck.
func TestCheckHandovers_PairInTheBaseSnapshotIsTracked(t *testing.T) {
	base := ringstate.New()
	for i, c := range append(handoverCmds(), claimAC) {
		var err error
		if base, _, err = base.Apply(c, int64(i)); err != nil {
			t.Fatal(err)
		}
	}
	ml := &MemberLog{Member: "b", Base: base, BaseIndex: 10}
	r := CheckHandovers([]*MemberLog{ml}, nil, allAcked, bucketOf())
	if r.Valid() || r.Stuck != 2 {
		t.Fatal(r.String())
	}
}
