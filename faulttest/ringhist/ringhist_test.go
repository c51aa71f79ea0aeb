package ringhist

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/raftingest/raftingest/faulttest/check"
	"github.com/raftingest/raftingest/raftfsm"
	"github.com/raftingest/raftingest/ringstate"
)

// Check, fed with histories written by raftfsm.HistoryFile exactly as a node writes them, logs
// replayed by check.CheckTokens, and reads as the harness records them. Each broken history must
// fail; the sound one must pass.

var hist0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func ms(n int) time.Time { return hist0.Add(time.Duration(n) * time.Millisecond) }

// histWriter writes one node's history file, as one process run of the node (a second writer for
// the same node is a restart: it appends, with call ids of its own).
type histWriter struct {
	node  string
	nonce int
	h     *raftfsm.HistoryFile
	seq   int
}

var histRuns int

func newHistWriter(t *testing.T, dir, node string) *histWriter {
	h, err := raftfsm.OpenHistoryFile(Path(dir, node))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	histRuns++
	return &histWriter{node: node, nonce: histRuns, h: h}
}

// call records one call of cmd invoked at inv; ret < 0 means the process died before it returned;
// index 0 with ret >= 0 means the caller learned nothing (unknown).
func (w *histWriter) call(cmd ringstate.Command, inv, ret int, code ringstate.Code, index uint64) {
	w.seq++
	id := fmt.Sprintf("run%d/%d", w.nonce, w.seq)
	w.h.Record(raftfsm.HistoryEvent{Ev: raftfsm.HistoryInvoke, Node: w.node, Client: raftfsm.HistoryClientApply, Call: id,
		RequestID: cmd.RequestID, Cmd: raftfsm.NewHistoryCommand(cmd), UnixNano: ms(inv).UnixNano()})
	if ret < 0 {
		return
	}
	ev := raftfsm.HistoryEvent{Ev: raftfsm.HistoryReturn, Node: w.node, Client: raftfsm.HistoryClientApply, Call: id,
		RequestID: cmd.RequestID, Index: index, UnixNano: ms(ret).UnixNano()}
	if index > 0 {
		ev.Outcome, ev.Code = raftfsm.HistoryCommitted, int(code)
	} else {
		ev.Outcome, ev.Error = raftfsm.HistoryUnknown, "raftfsm: command outcome unknown"
	}
	w.h.Record(ev)
}

// logOf is a member's Raft log holding cmds at indexes 1.., replayed as the token checker does.
func logOf(t *testing.T, cmds ...ringstate.Command) []*check.Replay {
	t.Helper()
	ml := &check.MemberLog{Member: "n1", Base: ringstate.New()}
	for i, c := range cmds {
		data, err := raftfsm.EncodeCommand(c)
		if err != nil {
			t.Fatal(err)
		}
		ml.Entries = append(ml.Entries, &raft.Log{Index: uint64(i + 1), Term: 1, Type: raft.LogCommand, Data: data, AppendedAt: ms(i)})
	}
	_, reps := check.CheckTokens([]*check.MemberLog{ml})
	return reps
}

// read is a harness read invoked at inv, returning at ret the ring built by applying cmds (the
// ring a node served), at log index.
func read(t *testing.T, inv, ret int, index uint64, cmds ...ringstate.Command) Read {
	t.Helper()
	r := ringstate.New()
	for _, c := range cmds {
		r, _, _ = r.Apply(c, 0)
	}
	return Read{Op: check.RingOp{Read: true, Call: ms(inv), Return: ms(ret), Digest: check.RingDigest(r)}, Index: index}
}

var (
	regN1   = ringstate.Command{Op: ringstate.OpRegister, Member: "n1", RaftAddr: "10.0.0.1:9096", RequestID: "n1/a/1"}
	claimN1 = ringstate.Command{Op: ringstate.OpClaimTokens, Member: "n1", Tokens: ringstate.Tokens{10, 20}, RequestID: "n1/a/2"}
	actN1   = ringstate.Command{Op: ringstate.OpActivate, Member: "n1", RequestID: "n1/a/3"}
	beatN1  = ringstate.Command{Op: ringstate.OpHeartbeat, Member: "n1"}
	regN2   = ringstate.Command{Op: ringstate.OpRegister, Member: "n2", RaftAddr: "10.0.0.2:9096", RequestID: "n2/b/1"}
	leaveN1 = ringstate.Command{Op: ringstate.OpLeave, Member: "n1", RequestID: "n1/a/4"}
	claimJ  = ringstate.Command{Op: ringstate.OpClaimJoiner, Member: "n1", Peer: "n2", RequestID: "n1/transfer/x/1"}
	abortJ  = ringstate.Command{Op: ringstate.OpAbortHandover, Member: "n1", Peer: "n2", RequestID: "n1/transfer/x/2"}
)

// soundHistory writes the histories of a run: n1 joins; n2's register is invoked and n2 is killed
// before it returns (resolved from the log); n1's leave is retried after an unknown outcome; an
// unknown heartbeat; n1 claims n2 as its joiner and aborts. It returns the paths, the log's replay
// and the reads that a correct ring would serve.
func soundHistory(t *testing.T, dir string) ([]string, []*check.Replay, []Read) {
	n1, n2 := newHistWriter(t, dir, "n1"), newHistWriter(t, dir, "n2")
	n1.call(regN1, 0, 10, ringstate.CodeOK, 1)
	n1.call(claimN1, 20, 30, ringstate.CodeOK, 2)
	n1.call(actN1, 40, 50, ringstate.CodeOK, 3)
	n2.call(regN2, 45, -1, 0, 0) // killed: committed at index 4, as the log shows
	n1.call(beatN1, 55, 65, ringstate.CodeOK, 5)
	n1.call(leaveN1, 70, 90, 0, 0) // leadership lost: unknown
	n1.call(leaveN1, 95, 100, ringstate.CodeOK, 7)
	n1.call(beatN1, 101, 120, 0, 0) // unknown, no request id: dropped
	n1.call(claimJ, 130, 140, ringstate.CodeOK, 8)
	n1.call(abortJ, 150, 160, ringstate.CodeOK, 9)
	replays := logOf(t, regN1, claimN1, actN1, regN2, beatN1, leaveN1, leaveN1, claimJ, abortJ)
	reads := []Read{
		read(t, 52, 54, 3, regN1, claimN1, actN1),                   // n2's register may not be in yet
		read(t, 102, 104, 7, regN1, claimN1, actN1, regN2, leaveN1), // n2 is in by now
		read(t, 142, 144, 8, regN1, claimN1, actN1, regN2, leaveN1, claimJ),
		read(t, 170, 172, 9, regN1, claimN1, actN1, regN2, leaveN1, claimJ, abortJ),
	}
	return []string{Path(dir, "n1"), Path(dir, "n2"), Path(dir, "n3")}, replays, reads
}

func TestRingHistory_SoundRunPasses(t *testing.T) {
	dir := t.TempDir()
	paths, replays, reads := soundHistory(t, dir)
	r := Check(paths, reads, replays, dir)
	if !r.Valid() {
		t.Fatal(r.String())
	}
	// 8 commands after merging the retried leave, 1 retried, n2's register resolved from the log and
	// bounded by the read at index 7, the unknown heartbeat dropped, 4 reads; n3 never ran.
	if r.Nodes != 2 || r.Commands != 9 || r.Retried != 1 || r.Resolved != 1 || r.UnknownHeartbeats != 1 ||
		r.BoundedByLog != 1 || r.Reads != 4 || r.Checked != 12 || r.Page != "" {
		t.Fatalf("figures: %s", r.String())
	}
}

// The broken histories: each must fail, and save porcupine's page when porcupine is the one to say so.
func TestRingHistory_BrokenHistoriesFail(t *testing.T) {
	cases := []struct {
		name string
		// breakIt changes the sound run; it returns the reads and replays to check.
		breakIt    func(t *testing.T, dir string, reads []Read, replays []*check.Replay) ([]Read, []*check.Replay)
		porcupine  bool   // porcupine must say Illegal (else: a problem of the history)
		wantInText string // in the verdict's text
	}{
		{
			name: "stale read: a read invoked after the leave returned still sees n1 ACTIVE",
			breakIt: func(t *testing.T, dir string, reads []Read, replays []*check.Replay) ([]Read, []*check.Replay) {
				return append(reads, read(t, 180, 182, 9, regN1, claimN1, actN1, regN2)), replays
			},
			porcupine: true,
		},
		{
			name: "double-applied retry: the claim-joiner retried after the abort is applied again",
			breakIt: func(t *testing.T, dir string, reads []Read, replays []*check.Replay) ([]Read, []*check.Replay) {
				n1 := newHistWriter(t, dir, "n1")
				n1.call(claimJ, 161, 165, ringstate.CodeOK, 10) // the retry: same request id, deduplicated by a sound ring
				return append(reads, read(t, 180, 182, 10, regN1, claimN1, actN1, regN2, leaveN1, claimJ, abortJ,
					ringstate.Command{Op: ringstate.OpClaimJoiner, Member: "n1", Peer: "n2"})), replays
			},
			porcupine: true,
		},
		{
			name: "a command never committed is seen by a read",
			breakIt: func(t *testing.T, dir string, reads []Read, replays []*check.Replay) ([]Read, []*check.Replay) {
				// The same run with a log that lacks n2's register: the unknown invoke resolves to
				// "never committed", so the reads that show n2 are not linearizable.
				return reads, logOf(t, regN1, claimN1, actN1, beatN1, leaveN1, leaveN1, claimJ, abortJ)
			},
			porcupine: true,
		},
		{
			name: "a retry returned another outcome than the first call",
			breakIt: func(t *testing.T, dir string, reads []Read, replays []*check.Replay) ([]Read, []*check.Replay) {
				n1 := newHistWriter(t, dir, "n1")
				n1.call(abortJ, 161, 165, ringstate.CodeHandoverMismatch, 10)
				return reads, replays
			},
			wantInText: "different outcomes",
		},
		{
			name: "a corrupt history line",
			breakIt: func(t *testing.T, dir string, reads []Read, replays []*check.Replay) ([]Read, []*check.Replay) {
				f, err := os.OpenFile(Path(dir, "n2"), os.O_APPEND|os.O_WRONLY, 0)
				if err != nil {
					t.Fatal(err)
				}
				defer f.Close()
				if _, err := f.WriteString("{\"ev\":\"invoke\",oops\n"); err != nil {
					t.Fatal(err)
				}
				return reads, replays
			},
			wantInText: "line 3 is malformed", // n2: its start line, its register, the bad line
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			paths, replays, reads := soundHistory(t, dir)
			reads, replays = tc.breakIt(t, dir, reads, replays)
			r := Check(paths, reads, replays, dir)
			if r.Valid() {
				t.Fatalf("passed: %s", r.String())
			}
			if tc.porcupine && len(r.Problems) > 0 {
				t.Fatalf("want porcupine's verdict alone, the history has problems: %s", r.String())
			}
			if !strings.HasPrefix(r.String(), "FAIL") {
				t.Fatalf("verdict text does not say FAIL: %s", r.String())
			}
			if tc.porcupine {
				if r.Result != "Illegal" || r.Page != filepath.Join(dir, "linearizability.html") {
					t.Fatalf("want porcupine Illegal with its page: %s", r.String())
				}
				if st, err := os.Stat(r.Page); err != nil || st.Size() == 0 {
					t.Fatalf("page: %v", err)
				}
			}
			if tc.wantInText != "" && !strings.Contains(r.String(), tc.wantInText) {
				t.Fatalf("want %q in: %s", tc.wantInText, r.String())
			}
		})
	}
}
