package ingester

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/raftingest/raftingest/raftfsm"
)

// -debug.ring-history-file makes the daemon record its lifecycle's ring commands: a node that
// starts and becomes ACTIVE has register, claim-tokens and activate in the file, each invoked
// before it returned committed with code 0, and its heartbeats after them.
func TestServer_RingHistoryFile_RecordsTheLifecycle(t *testing.T) {
	path := filepath.Join(t.TempDir(), "n0.ring-history.jsonl")
	startInProcess(t, 1, "-debug.ring-history-file", path)
	want := []string{"register", "claim-tokens", "activate", "heartbeat"}
	var missing string
	deadline := time.Now().Add(10 * time.Second)
	for {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		events, _, err := raftfsm.ReadHistory(bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		invoked := map[string]raftfsm.HistoryEvent{}
		ok := map[string]bool{}
		for _, ev := range events {
			if ev.Ev == raftfsm.HistoryStart {
				continue
			}
			if ev.Node != "n0" || ev.Client != raftfsm.HistoryClientApply {
				t.Fatalf("event %+v", ev)
			}
			switch ev.Ev {
			case raftfsm.HistoryInvoke:
				invoked[ev.Call] = ev
			case raftfsm.HistoryReturn:
				inv, found := invoked[ev.Call]
				if !found || inv.UnixNano > ev.UnixNano {
					t.Fatalf("return %+v without an earlier invoke", ev)
				}
				if ev.Outcome == raftfsm.HistoryCommitted && ev.Code == 0 && ev.Index > 0 {
					ok[inv.Cmd.Op] = true
				}
			}
		}
		missing = ""
		for _, op := range want {
			if !ok[op] {
				missing = op
				break
			}
		}
		if missing == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no committed %s in the history after 10s: %d events", missing, len(events))
		}
		time.Sleep(50 * time.Millisecond) // poll interval
	}
}
