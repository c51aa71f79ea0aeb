package raftfsm

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/hashicorp/raft"

	"github.com/raftingest/raftingest/ringstate"
)

// TestHistory_EveryCommandInTheLogIsRecordedOnceByItsSubmitter is the audit of history.go as a
// test: on a real two-node cluster, a command applied through a follower is recorded by the
// follower only (not again by the leader that receives it forwarded), a refusal is recorded as
// committed with its code, the leader's own Remove of a removed peer's member is recorded by the
// leader, an invoke is recorded before the command reaches any replica, a call that learns nothing
// is recorded as unknown, and every command entry of the Raft log is some invoke of the history.
func TestHistory_EveryCommandInTheLogIsRecordedOnceByItsSubmitter(t *testing.T) {
	c := newCluster(t)
	path := filepath.Join(t.TempDir(), "history.jsonl")
	hf, err := OpenHistoryFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var early []string // invokes whose command some replica had already applied
	c.cfg.History = func(ev HistoryEvent) {
		if ev.Ev == HistoryInvoke && ev.Cmd != nil && ev.Cmd.Op == "register" {
			for _, n := range c.running() {
				if _, ok := n.node.Ring().Member(ringstate.MemberID(ev.Cmd.Member)); ok {
					mu.Lock()
					early = append(early, ev.Node+" saw "+ev.Cmd.Member)
					mu.Unlock()
				}
			}
		}
		hf.Record(ev)
	}
	c.cluster(2)
	f, l := c.follower(), c.leader()

	c.mustApply(f, ringstate.Command{Op: ringstate.OpRegister, Member: "x", RaftAddr: "127.0.0.1:9", RequestID: "reg-x"})
	if _, err := c.apply(f, ringstate.Command{Op: ringstate.OpLeave, Member: "x", RequestID: "leave-x"}); !errors.Is(err, ringstate.ErrIllegalTransition) {
		t.Fatalf("leave of a PENDING member: %v", err)
	}
	// x is a ring member backed by no Raft server: RemovePeer through the follower reaches the
	// leader, which proposes the Remove with a request id of its own.
	retry(t, "remove x", func(ctx context.Context) error { return f.node.RemovePeer(ctx, "x") })
	// A call that learns nothing: its context is over before it starts.
	dead, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := f.node.Apply(dead, ringstate.Command{Op: ringstate.OpHeartbeat, Member: ringstate.MemberID(f.id)}); err == nil {
		t.Fatal("apply with a cancelled context succeeded")
	}
	c.checkConsistent()
	// The leader's log, read now (the store is safe for concurrent use): checked against the
	// history below.
	var logged []ringstate.Command
	first, _ := l.node.store.FirstIndex()
	last, _ := l.node.store.LastIndex()
	for i := first; i <= last; i++ {
		var e raft.Log
		if err := l.node.store.GetLog(i, &e); err != nil || e.Type != raft.LogCommand {
			continue
		}
		cmd, err := DecodeCommand(e.Data)
		if err != nil {
			t.Fatalf("entry %d: %v", i, err)
		}
		logged = append(logged, cmd)
	}
	c.stop(f)
	c.stop(l)
	if err := hf.Close(); err != nil {
		t.Fatal(err)
	}

	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	events, torn, err := ReadHistory(bytes.NewReader(b))
	if err != nil || torn != 0 {
		t.Fatalf("read history: torn=%d err=%v", torn, err)
	}
	invokes := map[string]HistoryEvent{}
	returns := map[string]HistoryEvent{}
	byRequest := map[string][]HistoryEvent{}
	for _, ev := range events {
		switch ev.Ev {
		case HistoryInvoke:
			if _, dup := invokes[ev.Call]; dup {
				t.Fatalf("call %s invoked twice", ev.Call)
			}
			invokes[ev.Call] = ev
			if ev.RequestID != "" {
				byRequest[ev.RequestID] = append(byRequest[ev.RequestID], ev)
			}
		case HistoryStart:
			continue
		case HistoryReturn:
			inv, ok := invokes[ev.Call]
			if !ok {
				t.Fatalf("return of call %s before (or without) its invoke", ev.Call)
			}
			if ev.UnixNano < inv.UnixNano {
				t.Fatalf("call %s returned before it was invoked", ev.Call)
			}
			returns[ev.Call] = ev
		}
	}
	if len(early) > 0 {
		t.Fatalf("invokes recorded after the command was applied: %v", early)
	}
	// one returns the last call of request rid, which only its submitter f may have recorded (more
	// than once only when c.apply retried after an unknown outcome).
	one := func(rid string) (HistoryEvent, HistoryEvent) {
		t.Helper()
		invs := byRequest[rid]
		if len(invs) == 0 {
			t.Fatalf("request %s is not in the history", rid)
		}
		for _, inv := range invs {
			if inv.Node != f.id {
				t.Fatalf("request %s submitted through %s was recorded by %s too", rid, f.id, inv.Node)
			}
		}
		last := invs[len(invs)-1]
		return last, returns[last.Call]
	}
	inv, ret := one("reg-x")
	if inv.Node != f.id || inv.Client != HistoryClientApply || ret.Outcome != HistoryCommitted || ret.Code != 0 || ret.Index == 0 {
		t.Fatalf("forwarded register: invoke %+v return %+v", inv, ret)
	}
	if cmd, err := inv.Command(); err != nil || cmd.Op != ringstate.OpRegister || cmd.RaftAddr != "127.0.0.1:9" || cmd.RequestID != "reg-x" {
		t.Fatalf("register round trip: %+v %v", cmd, err)
	}
	_, ret = one("leave-x")
	if ret.Outcome != HistoryCommitted || ret.Code != int(ringstate.CodeIllegalTransition) {
		t.Fatalf("refused leave: %+v", ret)
	}
	// The leader's Remove: one committed OK (a retry of RemovePeer would find x gone: UnknownMember).
	// The cancelled heartbeat: one unknown outcome recorded by the follower.
	var removed, unknownBeats int
	for call, inv := range invokes {
		ret, ok := returns[call]
		if !ok {
			t.Fatalf("call %s (%s) has no return", call, inv.Cmd.Op)
		}
		if inv.Client == HistoryClientRemovePeer {
			if inv.Node != l.id || inv.Cmd.Op != "remove" || inv.Cmd.Member != "x" || !strings.HasPrefix(inv.RequestID, "raftfsm-remove-x-") {
				t.Fatalf("leader's remove: invoke %+v", inv)
			}
			if ret.Outcome == HistoryCommitted && ret.Code == 0 {
				removed++
			}
		}
		if inv.Cmd.Op == "heartbeat" && inv.Node == f.id && ret.Outcome == HistoryUnknown {
			unknownBeats++
			if ret.Error == "" || ret.Index != 0 {
				t.Fatalf("unknown outcome: %+v", ret)
			}
		}
	}
	if removed != 1 || unknownBeats != 1 {
		t.Fatalf("%d committed leader removes and %d unknown heartbeats recorded, want 1 and 1", removed, unknownBeats)
	}

	// Every command in the leader's log is an invoke of the history: nothing reaches the log
	// unrecorded. (Every command of this test carries a request id: retries share it.)
	for _, cmd := range logged {
		if len(byRequest[cmd.RequestID]) == 0 {
			t.Fatalf("%s %s (request %q) is in the log but in no history", cmd.Op, cmd.Member, cmd.RequestID)
		}
	}
	// n1 and n2 registered, x registered, x's leave refused, x removed, checkConsistent's heartbeat.
	if len(logged) < 6 {
		t.Fatalf("only %d command entries in the log", len(logged))
	}
}

// A kill -9 in the middle of a line (possible for a line longer than a page) leaves a fragment
// without its newline: the last line of the file, or, once the node restarted, a line that the next
// run's start line follows. Either is skipped and counted; every whole line is read. Any other
// malformed line is an error.
func TestReadHistory_TornLines(t *testing.T) {
	path := filepath.Join(t.TempDir(), "h")
	claim := HistoryEvent{Ev: HistoryInvoke, Node: "n1", Call: "a/1", RequestID: "r1",
		Cmd: NewHistoryCommand(ringstate.Command{Op: ringstate.OpClaimTokens, Member: "n1", Tokens: ringstate.Tokens{3, 9}}), UnixNano: 1}
	run := func(tail string, evs ...HistoryEvent) {
		t.Helper()
		h, err := OpenHistoryFile(path)
		if err != nil {
			t.Fatal(err)
		}
		for _, ev := range evs {
			h.Record(ev)
		}
		if err := h.Close(); err != nil {
			t.Fatal(err)
		}
		h.Record(HistoryEvent{Ev: HistoryInvoke, Call: "after-close"}) // dropped, not a panic
		f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if _, err := f.WriteString(tail); err != nil {
			t.Fatal(err)
		}
	}
	// Run 1 is killed while writing its third line; run 2 restarts and is killed the same way.
	run(`{"ev":"invoke","node":"n1","ca`, claim, HistoryEvent{Ev: HistoryReturn, Node: "n1", Call: "a/1", Outcome: HistoryCommitted, Index: 4, UnixNano: 2})
	run(`{"ev":"ret`, HistoryEvent{Ev: HistoryInvoke, Node: "n1", Call: "b/1", Cmd: NewHistoryCommand(ringstate.Command{Op: ringstate.OpHeartbeat, Member: "n1"}), UnixNano: 3})
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	events, torn, err := ReadHistory(bytes.NewReader(b))
	if err != nil || torn != 2 {
		t.Fatalf("torn %d err %v\n%s", torn, err, b)
	}
	var kinds []string
	for _, ev := range events {
		kinds = append(kinds, ev.Ev)
	}
	if got := strings.Join(kinds, ","); got != "start,invoke,return,start,invoke" {
		t.Fatalf("events %s", got)
	}
	cmd, err := events[1].Command()
	if err != nil || cmd.Op != ringstate.OpClaimTokens || len(cmd.Tokens) != 2 || cmd.Tokens[1] != 9 || cmd.RequestID != "r1" {
		t.Fatalf("claim round trip: %+v %v", cmd, err)
	}
	for name, bad := range map[string]string{
		"malformed line inside a run":          "{\"ev\":\"start\"}\nnot json\n{\"ev\":\"invoke\"}\n",
		"malformed last line with its newline": "{\"ev\":\"start\"}\nnot json\n",
		"unknown event":                        "{\"ev\":\"start\"}\n{\"ev\":\"teleport\"}\n",
	} {
		if _, _, err := ReadHistory(strings.NewReader(bad)); err == nil || !strings.Contains(err.Error(), "line 2") {
			t.Errorf("%s: %v", name, err)
		}
	}
	if _, err := (&HistoryEvent{Ev: HistoryInvoke, Cmd: &HistoryCommand{Op: "teleport"}}).Command(); err == nil {
		t.Fatal("unknown op accepted")
	}
}
