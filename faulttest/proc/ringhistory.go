package proc

// Checker 5 in the process tier: the ring operations of every node, recorded by the nodes
// themselves (-debug.ring-history-file, raftfsm.HistoryFile), merged with the harness's own
// linearizable ring reads and judged by porcupine (check.CheckRingLinearizable).
//
// The ring's clients here are the nodes: their lifecycles (register, claim tokens, activate,
// heartbeat, leave), their hand-overs (claim joiner, complete and abort hand-over) and the leader's
// removal of a removed peer's member. A synthetic client cannot stand in for them: the leader
// refuses Register for a member id outside the Raft configuration, and a fake member would take
// writes. So every node records every command it submits, Jepsen-style — invoke before, return
// after — and the harness reads the ring linearizably every ~300 ms.

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/raftingest/raftingest/faulttest/check"
	"github.com/raftingest/raftingest/raftfsm"
	"github.com/raftingest/raftingest/ringpb"
	"github.com/raftingest/raftingest/ringstate"
)

// ringReadPeriod is how often the harness reads the ring; ringReadTimeout bounds one read (a read
// through a paused or cut-off node gives up and is recorded as unknown: it constrains nothing).
const (
	ringReadPeriod  = 300 * time.Millisecond
	ringReadTimeout = 2 * time.Second
	// linTimeout bounds porcupine's search; a search that runs out is a failure, not a pass.
	linTimeout = 60 * time.Second
)

// ringHistoryPath is node id's -debug.ring-history-file: in the run directory, outside the node's
// data directory, so that a wipe of its Raft state (Rejoin) keeps it, and a restart appends to it.
func ringHistoryPath(runDir, id string) string {
	return filepath.Join(runDir, id+".ring-history.jsonl")
}

// ringRead is one linearizable read of the ring by the harness and the log index it reflected.
type ringRead struct {
	op    check.RingOp
	index uint64
}

// ringReader reads the ring with GetRing{Linearizable: true} every ringReadPeriod through a
// random running node (followers forward to the leader) and records each read.
type ringReader struct {
	c    *Cluster
	rng  *rand.Rand // used by the run goroutine only
	stop context.CancelFunc
	done chan struct{}

	mu    sync.Mutex
	reads []ringRead
}

// startRingReader starts reading until the returned reader is stopped (or ctx ends).
func startRingReader(ctx context.Context, c *Cluster, seed int64) *ringReader {
	ctx, cancel := context.WithCancel(ctx)
	rr := &ringReader{c: c, rng: rand.New(rand.NewPCG(uint64(seed), 5)), stop: cancel, done: make(chan struct{})}
	go rr.run(ctx)
	return rr
}

// Stop ends the reads and returns them, in the order they were made.
func (rr *ringReader) Stop() []ringRead {
	rr.stop()
	<-rr.done
	rr.mu.Lock()
	defer rr.mu.Unlock()
	return slices.Clone(rr.reads)
}

func (rr *ringReader) run(ctx context.Context) {
	defer close(rr.done)
	t := time.NewTicker(ringReadPeriod)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		var up []int
		for i, n := range rr.c.Nodes {
			if n.Running() && !n.Paused() {
				up = append(up, i)
			}
		}
		if len(up) == 0 {
			continue
		}
		i := up[rr.rng.IntN(len(up))]
		rd := rr.read(ctx, i)
		if ctx.Err() != nil {
			return // cut short by the stop, not by the cluster
		}
		rr.mu.Lock()
		rr.reads = append(rr.reads, rd)
		rr.mu.Unlock()
	}
}

// read makes one linearizable read through node i. Any failure is an unknown read.
func (rr *ringReader) read(ctx context.Context, i int) ringRead {
	rd := ringRead{op: check.RingOp{Read: true, Call: time.Now()}}
	cc, err := rr.c.Nodes[i].Conn()
	if err == nil {
		rctx, cancel := context.WithTimeout(ctx, ringReadTimeout)
		var resp *ringpb.GetRingResponse
		resp, err = ringpb.NewRingClient(cc).GetRing(rctx, &ringpb.GetRingRequest{Linearizable: true})
		cancel()
		if err == nil {
			var r *ringstate.Ring
			if r, err = ringpb.ToRing(resp.GetMembers(), resp.GetTimeMs()); err == nil {
				rd.op.Digest, rd.index = check.RingDigest(r), resp.GetAppliedIndex()
			}
		}
	}
	rd.op.Return = time.Now()
	rd.op.Unknown = err != nil
	return rd
}

// RingHistoryResult is checker 5's verdict in the process tier: porcupine's (check.LinResult) with
// what went into it.
type RingHistoryResult struct {
	check.LinResult
	Nodes    int `json:"nodes"`
	Events   int `json:"events"`
	Commands int `json:"commands"` // operations after merging retries by request id
	Retried  int `json:"retried"`  // of which submitted more than once
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

// Valid is the verdict.
func (r *RingHistoryResult) Valid() bool { return r.LinResult.Valid() && len(r.Problems) == 0 }

func (r *RingHistoryResult) String() string {
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

// checkRingHistory reads the nodes' history files (a missing file is a node that never submitted
// anything), merges them with the harness's reads, resolves unknown outcomes from the replayed
// logs by request id and runs porcupine; on failure the page is saved in dir.
func checkRingHistory(paths []string, reads []ringRead, replays []*check.Replay, dir string) RingHistoryResult {
	start := time.Now()
	var res RingHistoryResult
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
	res.LinResult = check.CheckRingLinearizable(ops, committed, dir, linTimeout)
	res.Took = time.Since(start)
	return res
}

// mergeRingHistory turns the nodes' events and the harness's reads into porcupine operations.
// Calls that share a request id are one operation (a retry is the same command: ringstate applies
// it once): it is invoked at the earliest invoke, and if any call learned the outcome, that is its
// outcome and it returns at the earliest such return — the command took effect after its first
// submission and before any call learned that it had. Calls without a request id (heartbeats) are
// operations of their own. It also returns every (index, return time) an operation observed.
func mergeRingHistory(events []raftfsm.HistoryEvent, reads []ringRead) (ops []check.RingOp, points []observed, problems []string, retried int) {
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
		op := rd.op
		op.Client = lanes.assign("harness", op)
		ops = append(ops, op)
		if !op.Unknown && rd.index > 0 {
			points = append(points, observed{index: rd.index, at: op.Return})
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
