// Package ringhist is checker 5 over the ring operations of the nodes themselves, shared by the
// in-process and process tiers of the fault tests.
//
// The ring's clients in those tiers are the nodes: their lifecycles (register, claim tokens,
// activate, heartbeat, leave), their hand-overs (claim joiner, complete and abort hand-over) and the
// leader's removal of a removed peer's member. A synthetic client cannot stand in for them: the
// leader refuses Register for a member id outside the Raft configuration, and a fake member would
// take writes. So every node records every command it submits, Jepsen-style — invoke before, return
// after — in its ring history file (ingester.Config.RingHistoryFile, -debug.ring-history-file;
// raftfsm.HistoryFile), and the harness reads the ring linearizably every ReadPeriod (Reader). After
// the run, Check merges the histories with the reads, resolves unknown outcomes from the replayed
// Raft logs and judges the whole with porcupine (check.CheckRingLinearizable).
package ringhist

import (
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"time"

	"github.com/raftingest/raftingest/faulttest/check"
	"github.com/raftingest/raftingest/raftfsm"
	"github.com/raftingest/raftingest/ringstate"
)

// LinTimeout bounds porcupine's search; a search that runs out is a failure, not a pass.
const LinTimeout = 60 * time.Second

// Path is node id's ring history file in the run directory runDir: outside the node's data
// directory, so that a wipe of its Raft state keeps it, and a restart of the node appends to it.
func Path(runDir, id string) string {
	return filepath.Join(runDir, id+".ring-history.jsonl")
}

// Read is one linearizable read of the ring by the harness.
type Read struct {
	// Op is the read as porcupine sees it: Read set, Call and Return the harness's wall clock,
	// Digest the ring's (check.RingDigest); Unknown when the read failed (it constrains nothing).
	Op check.RingOp
	// Index is the Raft log index the ring reflected (GetRingResponse.AppliedIndex): every entry at
	// or below it had taken effect by Op.Return. Zero: not known.
	Index uint64
}

// Result is the verdict of Check: porcupine's (check.LinResult) with what went into it. Its JSON
// form is the report's detail of the linearizable line.
type Result struct {
	check.LinResult
	// Nodes counts the history files found (a node that never started has none).
	Nodes int `json:"nodes"`
	// Events counts the invoke and return lines read from them.
	Events int `json:"events"`
	// Commands counts the ring commands after merging retries by request id; Retried, those of
	// them submitted more than once.
	Commands int `json:"commands"`
	Retried  int `json:"retried"`
	// TornLines are lines a kill -9 cut short mid-write (skipped; see raftfsm.ReadHistory).
	TornLines int `json:"torn_lines,omitempty"`
	// BoundedByLog are unknown operations whose open end was bounded by the first recorded
	// operation that returned having seen their entry's index.
	BoundedByLog int `json:"unknown_bounded_by_index,omitempty"`
	// Problems are histories that cannot be judged as recorded: unreadable files, one request id
	// with two commands or two outcomes. Any fails the check.
	Problems []string `json:"problems,omitempty"`
	// Took is the checker's own time: reading, merging and porcupine.
	Took time.Duration `json:"took"`
}

// Valid is the verdict: porcupine found the history linearizable and no history had a problem.
func (r *Result) Valid() bool { return r.LinResult.Valid() && len(r.Problems) == 0 }

// String is the report line: PASS or FAIL, porcupine's figures, then this package's, then up to
// five problems, one a line.
func (r *Result) String() string {
	s := r.LinResult.String()
	if len(r.Problems) > 0 && r.LinResult.Valid() {
		s = "FAIL" + strings.TrimPrefix(s, "PASS")
	}
	s += fmt.Sprintf(" nodes=%d events=%d commands=%d retried=%d bounded-by-index=%d took=%s", r.Nodes, r.Events, r.Commands,
		r.Retried, r.BoundedByLog, r.Took.Round(time.Millisecond))
	if r.TornLines > 0 {
		s += fmt.Sprintf(" torn-lines=%d", r.TornLines)
	}
	for i, p := range r.Problems {
		if i == 5 {
			s += fmt.Sprintf("\n    ... (+%d)", len(r.Problems)-i)
			break
		}
		s += "\n    " + p
	}
	return s
}

// observed is a log index some operation saw committed, and when it returned: every entry at or
// below index had taken effect by then.
type observed struct {
	index uint64
	at    time.Time
}

// call is one Node.Apply (or leader Remove) call: its invoke and, unless the process died first,
// its return.
type call struct {
	inv raftfsm.HistoryEvent
	ret *raftfsm.HistoryEvent
}

// Check reads the nodes' history files (paths; a missing file is a node that never submitted
// anything), merges them with the harness's reads, resolves unknown outcomes from the replayed logs
// by request id (replays: the second result of check.CheckTokens over every member's log) and runs
// porcupine, bounded by LinTimeout; when the history is not linearizable, porcupine's page is saved
// as dir/linearizability.html. The files must be complete: call it once every node that wrote them
// has stopped.
func Check(paths []string, reads []Read, replays []*check.Replay, dir string) Result {
	start := time.Now()
	var res Result
	var events []raftfsm.HistoryEvent
	for _, p := range paths {
		f, err := os.Open(p)
		if os.IsNotExist(err) {
			continue
		}
		if err != nil {
			res.Problems = append(res.Problems, err.Error())
			continue
		}
		evs, torn, err := raftfsm.ReadHistory(f)
		f.Close()
		if err != nil {
			res.Problems = append(res.Problems, fmt.Sprintf("%s: %v", p, err))
		}
		res.TornLines += torn
		res.Nodes++
		events = append(events, evs...)
	}
	res.Events = len(events)
	ops, points, problems, retried := mergeRingHistory(events, reads)
	res.Problems = append(res.Problems, problems...)
	res.Retried = retried
	for _, op := range ops {
		if !op.Read {
			res.Commands++
		}
	}
	committed, bounded := resolveFromLogs(ops, replays, points)
	res.BoundedByLog = bounded
	res.LinResult = check.CheckRingLinearizable(ops, committed, dir, LinTimeout)
	res.Took = time.Since(start)
	return res
}

// mergeRingHistory turns the nodes' events and the harness's reads into porcupine operations.
// Calls that share a request id are one operation (a retry is the same command: ringstate applies
// it once): it is invoked at the earliest invoke, and if any call learned the outcome, that is its
// outcome and it returns at the earliest such return — the command took effect after its first
// submission and before any call learned that it had. Calls without a request id (heartbeats) are
// operations of their own. It also returns every (index, return time) an operation observed.
func mergeRingHistory(events []raftfsm.HistoryEvent, reads []Read) (ops []check.RingOp, points []observed, problems []string, retried int) {
	calls := map[string]*call{}
	var order []string
	for _, ev := range events {
		switch ev.Ev {
		case raftfsm.HistoryInvoke:
			if _, dup := calls[ev.Call]; dup {
				problems = append(problems, fmt.Sprintf("call %s of %s invoked twice", ev.Call, ev.Node))
				continue
			}
			calls[ev.Call] = &call{inv: ev}
			order = append(order, ev.Call)
		case raftfsm.HistoryReturn:
			c, ok := calls[ev.Call]
			if !ok || c.ret != nil {
				problems = append(problems, fmt.Sprintf("return of call %s of %s without one invoke", ev.Call, ev.Node))
				continue
			}
			c.ret = &ev
		}
	}
	type merged struct {
		op     check.RingOp
		node   string
		codes  map[ringstate.Code]bool
		last   time.Time // the latest time anything was heard of it
		nCalls int
	}
	byKey := map[string]*merged{}
	var keys []string
	for _, id := range order {
		c := calls[id]
		cmd, err := c.inv.Command()
		if err != nil {
			problems = append(problems, fmt.Sprintf("%s: %v", c.inv.Node, err))
			continue
		}
		invoked := time.Unix(0, c.inv.UnixNano)
		key := "call:" + id
		if cmd.RequestID != "" {
			key = "req:" + cmd.RequestID
		}
		m, ok := byKey[key]
		if !ok {
			m = &merged{op: check.RingOp{Cmd: cmd, Call: invoked, Unknown: true}, node: c.inv.Node, codes: map[ringstate.Code]bool{}, last: invoked}
			byKey[key] = m
			keys = append(keys, key)
		} else if !reflect.DeepEqual(m.op.Cmd, cmd) {
			problems = append(problems, fmt.Sprintf("request id %s names two commands: %s %s and %s %s", cmd.RequestID,
				m.op.Cmd.Op, m.op.Cmd.Member, cmd.Op, cmd.Member))
			continue
		}
		m.nCalls++
		m.op.Call = minTime(m.op.Call, invoked)
		if c.ret == nil {
			continue // the process died before the call returned: unknown
		}
		returned := time.Unix(0, c.ret.UnixNano)
		if returned.After(m.last) {
			m.last = returned
		}
		if c.ret.Outcome != raftfsm.HistoryCommitted {
			continue
		}
		code := ringstate.Code(c.ret.Code)
		m.codes[code] = true
		if c.ret.Index > 0 {
			points = append(points, observed{index: c.ret.Index, at: returned})
		}
		if m.op.Unknown || returned.Before(m.op.Return) {
			m.op.Unknown, m.op.Return, m.op.Code = false, returned, code
		}
	}
	for _, k := range keys {
		m := byKey[k]
		if len(m.codes) > 1 {
			problems = append(problems, fmt.Sprintf("request id %s (%s %s) returned %d different outcomes: a retry was not deduplicated",
				m.op.Cmd.RequestID, m.op.Cmd.Op, m.op.Cmd.Member, len(m.codes)))
		}
		if m.nCalls > 1 {
			retried++
		}
		if m.op.Unknown {
			m.op.Return = m.last
		}
		ops = append(ops, m.op)
	}
	lanes := newLanes()
	for i := range ops {
		ops[i].Client = lanes.assign(byKey[keys[i]].node, ops[i])
	}
	for _, rd := range reads {
		op := rd.Op
		op.Client = lanes.assign("harness", op)
		ops = append(ops, op)
		if !op.Unknown && rd.Index > 0 {
			points = append(points, observed{index: rd.Index, at: op.Return})
		}
	}
	return ops, points, problems, retried
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

// lanes gives porcupine client ids: one row of the visualisation per node and concurrent call, so
// that a node's overlapping calls (lifecycle, heartbeat, hand-over) do not share a row.
type lanes struct {
	next  int
	byKey map[string][]lane
}

type lane struct {
	id   int
	free time.Time // when its last operation returned (zero: never, an unknown operation)
}

func newLanes() *lanes { return &lanes{byKey: map[string][]lane{}} }

// assign must see each key's operations in order of invocation (histories and reads are).
func (l *lanes) assign(key string, op check.RingOp) int {
	ls := l.byKey[key]
	for i := range ls {
		if !ls[i].free.IsZero() && !ls[i].free.After(op.Call) {
			ls[i].free = op.Return
			if op.Unknown {
				ls[i].free = time.Time{}
			}
			return ls[i].id
		}
	}
	nl := lane{id: l.next, free: op.Return}
	if op.Unknown {
		nl.free = time.Time{}
	}
	l.next++
	l.byKey[key] = append(ls, nl)
	return nl.id
}

// resolveFromLogs maps every request id found in the replayed logs to its first committed outcome
// (the lowest index any member's log has it at; a member's replay also knows the ids its base
// snapshot remembers). For the unknown operations of ops it bounds when the command took effect: by
// the earliest return of any operation that observed an index at or above the entry's (a command
// or read that returned with index J saw every entry up to J committed). Without such an operation
// the command stays open-ended. An entry found only in one member's uncommitted tail (a leader
// killed at the very end) is taken as committed and open-ended: nothing is recorded after it, so
// porcupine can place it last.
func resolveFromLogs(ops []check.RingOp, replays []*check.Replay, points []observed) (map[string]check.Committed, int) {
	committed := map[string]check.Committed{}
	for _, rp := range replays {
		for id, o := range rp.Outcomes {
			if prev, ok := committed[id]; !ok || o.Index < prev.Index {
				committed[id] = o
			}
		}
	}
	// suffix[k] is the earliest return among points[k:], points sorted by index.
	sort.Slice(points, func(i, j int) bool { return points[i].index < points[j].index })
	suffix := make([]time.Time, len(points))
	for k := len(points) - 1; k >= 0; k-- {
		suffix[k] = points[k].at
		if k+1 < len(points) && suffix[k+1].Before(suffix[k]) {
			suffix[k] = suffix[k+1]
		}
	}
	bounded := 0
	for _, op := range ops {
		if op.Read || !op.Unknown || op.Cmd.RequestID == "" {
			continue
		}
		c, ok := committed[op.Cmd.RequestID]
		if !ok || c.Index == 0 {
			continue
		}
		k := sort.Search(len(points), func(i int) bool { return points[i].index >= c.Index })
		if k < len(points) {
			c.At = suffix[k]
			committed[op.Cmd.RequestID] = c
			bounded++
		}
	}
	return committed, bounded
}
