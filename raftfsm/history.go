package raftfsm

import (
	"bufio"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/raftingest/raftingest/ringstate"
)

// A ring-operation history is the Jepsen-style record of every ring command a node submits: an
// "invoke" event before the command is proposed or forwarded, and a "return" event with what the
// caller learned once the call returns. The fault tests merge the histories of all nodes with their
// own linearizable reads and check them with porcupine (faulttest/check.CheckRingLinearizable).
//
// Which commands are recorded, and where (the audit that every command reaching the Raft log is in
// some node's history):
//   - Node.Apply records every command its callers submit — the lifecycle (register, claim tokens,
//     activate, heartbeat, leave), the hand-over (claim joiner, complete and abort hand-over) — once
//     per call, whether the command is proposed here (leader) or forwarded. A command the leader
//     receives by forwarding (the Ring service's Apply) is not recorded again: its forwarder did.
//   - The Remove the leader proposes itself for a removed peer's ring member (RemovePeer from
//     ringctl remove, or a node's LeaveCluster) is recorded by that leader, with client
//     HistoryClientRemovePeer: its request id is made there, so no other node knows it.
//
// Nothing else proposes a ring command (no other call of raft.Apply with a command entry exists),
// so a history that holds every node's file holds every command of the log.
//
// Timestamps are the host's wall clock (time.Now), never Config's or the daemon's injectable clock:
// porcupine compares invoke and return times across processes, which all read the same host clock,
// and a skewed clock would order them wrongly.

// History event kinds.
const (
	HistoryInvoke = "invoke" // before the command is proposed or forwarded
	HistoryReturn = "return" // after the call returned
	// HistoryStart opens each process run's part of a file (OpenHistoryFile writes it): it marks
	// restarts, and tells ReadHistory that a malformed line before it is a line the previous run
	// was killed in the middle of writing.
	HistoryStart = "start"
)

// History outcomes of a return event.
const (
	// HistoryCommitted: the command was committed and Code is its outcome (OK or ringstate's
	// refusal) — the caller knows what happened.
	HistoryCommitted = "committed"
	// HistoryUnknown: the caller does not know whether the command was committed (no leader,
	// leadership lost, timeout, node shut down, refused before proposal). The checker resolves it
	// from the committed logs by request id.
	HistoryUnknown = "unknown"
)

// History clients: which path of the node submitted the command.
const (
	HistoryClientApply      = "apply"       // Node.Apply: the lifecycle, the hand-over, any other caller
	HistoryClientRemovePeer = "remove-peer" // the leader's Remove of a removed peer's ring member
)

// HistoryEvent is one line of a ring-operation history (JSON). An invoke and its return share Call.
type HistoryEvent struct {
	Ev     string `json:"ev"`     // HistoryInvoke or HistoryReturn
	Node   string `json:"node"`   // the recording node's id
	Client string `json:"client"` // HistoryClientApply or HistoryClientRemovePeer
	// Call pairs a return with its invoke: unique per process run and call (a nonce drawn at start
	// and a counter), so that histories appended across restarts of a node never collide.
	Call      string          `json:"call"`
	RequestID string          `json:"request_id,omitempty"`
	Cmd       *HistoryCommand `json:"cmd,omitempty"` // the command (invoke events)
	// Outcome, Code, Error and Index are set on return events: Code is the ringstate.Code when the
	// outcome is HistoryCommitted; Error is the error text otherwise; Index is the log index the
	// call returned (the entry's index, or 0).
	Outcome  string `json:"outcome,omitempty"`
	Code     int    `json:"code"`
	Error    string `json:"error,omitempty"`
	Index    uint64 `json:"index,omitempty"`
	UnixNano int64  `json:"unix_nano"` // host wall clock
}

// HistoryCommand is a ringstate.Command as a history writes it: the op by name, every field the op
// may carry (the request id is the event's).
type HistoryCommand struct {
	Op       string   `json:"op"`
	Member   string   `json:"member"`
	Peer     string   `json:"peer,omitempty"`
	RaftAddr string   `json:"raft_addr,omitempty"`
	GRPCAddr string   `json:"grpc_addr,omitempty"`
	HTTPAddr string   `json:"http_addr,omitempty"`
	Zone     string   `json:"zone,omitempty"`
	Tokens   []uint32 `json:"tokens,omitempty"`
	Replace  bool     `json:"replace,omitempty"`
	LeaseMs  int64    `json:"lease_ms,omitempty"`
	// CommandVersion and Readers: see ringstate.Command.
	CommandVersion uint32   `json:"command_version,omitempty"`
	Readers        []string `json:"readers,omitempty"`
	// HA: the HA tracker's ops' fields (ringstate.HACommand).
	HA *ringstate.HACommand `json:"ha,omitempty"`
}

// NewHistoryCommand converts cmd for a history line.
func NewHistoryCommand(cmd ringstate.Command) *HistoryCommand {
	hc := &HistoryCommand{Op: cmd.Op.String(), Member: string(cmd.Member), Peer: string(cmd.Peer),
		RaftAddr: cmd.RaftAddr, GRPCAddr: cmd.GRPCAddr, HTTPAddr: cmd.HTTPAddr, Zone: cmd.Zone,
		Replace: cmd.Replace, LeaseMs: cmd.LeaseMs, CommandVersion: cmd.CommandVersion}
	if cmd.HA != nil {
		ha := *cmd.HA
		hc.HA = &ha
	}
	for _, t := range cmd.Tokens {
		hc.Tokens = append(hc.Tokens, uint32(t))
	}
	for _, id := range cmd.Readers {
		hc.Readers = append(hc.Readers, string(id))
	}
	return hc
}

// Command returns the command of an invoke event, with the event's request id; it fails on an event
// without a command or with an op name ringstate does not know.
func (ev *HistoryEvent) Command() (ringstate.Command, error) {
	hc := ev.Cmd
	if hc == nil {
		return ringstate.Command{}, fmt.Errorf("raftfsm: history: %s event of call %s has no command", ev.Ev, ev.Call)
	}
	cmd := ringstate.Command{Member: ringstate.MemberID(hc.Member), Peer: ringstate.MemberID(hc.Peer),
		RaftAddr: hc.RaftAddr, GRPCAddr: hc.GRPCAddr, HTTPAddr: hc.HTTPAddr, Zone: hc.Zone,
		Replace: hc.Replace, LeaseMs: hc.LeaseMs, CommandVersion: hc.CommandVersion, RequestID: ev.RequestID}
	for _, id := range hc.Readers {
		cmd.Readers = append(cmd.Readers, ringstate.MemberID(id))
	}
	for op := ringstate.OpRegister; op <= ringstate.OpClaimCompactor; op++ {
		if op.String() == hc.Op {
			cmd.Op = op
		}
	}
	for _, op := range []ringstate.Op{ringstate.OpHAElect, ringstate.OpHAGC} {
		if op.String() == hc.Op {
			cmd.Op = op
		}
	}
	if hc.HA != nil {
		ha := *hc.HA
		cmd.HA = &ha
	}
	if cmd.Op == 0 {
		return ringstate.Command{}, fmt.Errorf("raftfsm: history: unknown op %q", hc.Op)
	}
	for _, t := range hc.Tokens {
		cmd.Tokens = append(cmd.Tokens, ringstate.Token(t))
	}
	return cmd, nil
}

// historyNonce and historySeq make Call ids unique per process run and call.
var (
	historyNonce = func() string {
		var b [6]byte
		_, _ = rand.Read(b[:])
		return hex.EncodeToString(b[:])
	}()
	historySeq atomic.Uint64
)

// historyCall is an invoke recorded by a node, waiting for its return.
type historyCall struct {
	id     string
	client string
	cmd    ringstate.Command
}

// historyInvoke records the invoke of cmd (when Config.History is set) and returns the call to pass
// to historyReturn. The invoke is recorded before the caller proposes or forwards anything.
func (n *Node) historyInvoke(client string, cmd ringstate.Command) *historyCall {
	if n.cfg.History == nil {
		return nil
	}
	c := &historyCall{id: fmt.Sprintf("%s/%d", historyNonce, historySeq.Add(1)), client: client, cmd: cmd}
	n.cfg.History(HistoryEvent{Ev: HistoryInvoke, Node: n.cfg.ID, Client: client, Call: c.id,
		RequestID: cmd.RequestID, Cmd: NewHistoryCommand(cmd), UnixNano: time.Now().UnixNano()})
	return c
}

// historyReturn records what the caller of c learned: committed with ringstate's code when the call
// returned an entry index with nil or a ringstate refusal, unknown otherwise (a refusal before
// anything was proposed, such as ErrNotPeer, is unknown too: the checker finds it in no log).
func (n *Node) historyReturn(c *historyCall, index uint64, err error) {
	if c == nil {
		return
	}
	ev := HistoryEvent{Ev: HistoryReturn, Node: n.cfg.ID, Client: c.client, Call: c.id,
		RequestID: c.cmd.RequestID, Index: index, UnixNano: time.Now().UnixNano()}
	if index > 0 && (err == nil || isRefusal(err)) {
		ev.Outcome, ev.Code = HistoryCommitted, int(ringstate.CodeOf(err))
	} else {
		ev.Outcome = HistoryUnknown
		if err != nil {
			ev.Error = err.Error()
		} else {
			ev.Error = "no entry index"
		}
	}
	n.cfg.History(ev)
}

// HistoryFile appends HistoryEvents to a file as JSON lines: the daemon's -debug.ring-history-file.
// Each Record is one write(2) of one whole line to a file opened with O_APPEND, with no buffering in
// the process, so a line recorded before a command is submitted survives a kill -9 of the process
// (it is in the kernel's page cache). It is not fsynced: the history is for the fault tests, whose
// faults kill processes, not machines. Safe for concurrent use.
type HistoryFile struct {
	mu     sync.Mutex
	f      *os.File
	err    error // the first write error; later records are dropped
	closed bool
}

// OpenHistoryFile opens (creating it if needed) the history file at path for appending: a restarted
// node continues the same file. If the previous run was killed in the middle of a line (possible for
// a line longer than a page), that fragment is ended with a newline, and every run begins with a
// HistoryStart line, so that ReadHistory can tell such a fragment from corruption.
func OpenHistoryFile(path string) (*HistoryFile, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_APPEND|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("raftfsm: open ring history file: %w", err)
	}
	h := &HistoryFile{f: f}
	prefix := ""
	if st, err := f.Stat(); err == nil && st.Size() > 0 {
		var last [1]byte
		if _, err := f.ReadAt(last[:], st.Size()-1); err != nil {
			f.Close()
			return nil, fmt.Errorf("raftfsm: read the end of ring history file %s: %w", path, err)
		}
		if last[0] != '\n' {
			prefix = "\n"
		}
	}
	b, _ := json.Marshal(HistoryEvent{Ev: HistoryStart, Call: historyNonce, UnixNano: time.Now().UnixNano()})
	if _, err := f.Write(append([]byte(prefix), append(b, '\n')...)); err != nil {
		f.Close()
		return nil, fmt.Errorf("raftfsm: write ring history file %s: %w", path, err)
	}
	return h, nil
}

// Record appends ev as one line. It returns once the line is written (or failed; see Err); after
// Close or a write error it drops the event.
func (h *HistoryFile) Record(ev HistoryEvent) {
	b, err := json.Marshal(ev)
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed || h.err != nil {
		return
	}
	if err != nil {
		h.err = fmt.Errorf("raftfsm: encode ring history event: %w", err)
		return
	}
	if _, err := h.f.Write(append(b, '\n')); err != nil {
		h.err = fmt.Errorf("raftfsm: write ring history %s: %w", h.f.Name(), err)
	}
}

// Err returns the first error Record met, if any: the history is incomplete after it.
func (h *HistoryFile) Err() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.err
}

// Close closes the file; later Records are dropped. It returns the first write error, if any.
func (h *HistoryFile) Close() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return h.err
	}
	h.closed = true
	return errors.Join(h.err, h.f.Close())
}

// ReadHistory parses a history written by HistoryFile. A line a killed process left unfinished —
// the last line, or a malformed line followed by the next run's HistoryStart line — is skipped and
// counted in torn; any other malformed line is an error naming its line number. HistoryStart lines
// are returned with the other events.
func ReadHistory(r io.Reader) (events []HistoryEvent, torn int, err error) {
	br := bufio.NewReader(r)
	pending := 0 // the number of a malformed line not yet known to be torn
	for line := 1; ; line++ {
		b, rerr := br.ReadBytes('\n')
		if rerr != nil && rerr != io.EOF {
			return events, torn, fmt.Errorf("raftfsm: read ring history: %w", rerr)
		}
		if rerr == io.EOF && len(b) == 0 {
			if pending > 0 {
				// Ended by its newline, so not cut short by a kill: the writer writes a line and
				// its newline in one write(2).
				return events, torn, fmt.Errorf("raftfsm: ring history line %d is malformed and not the end of a run", pending)
			}
			return events, torn, nil
		}
		var ev HistoryEvent
		perr := json.Unmarshal(b, &ev)
		if perr == nil && ev.Ev != HistoryInvoke && ev.Ev != HistoryReturn && ev.Ev != HistoryStart {
			perr = fmt.Errorf("unknown event %q", ev.Ev)
		}
		switch {
		case pending > 0 && perr == nil && ev.Ev == HistoryStart:
			torn++
			pending = 0
		case pending > 0:
			return events, torn, fmt.Errorf("raftfsm: ring history line %d is malformed and not the end of a run", pending)
		}
		if perr != nil {
			if rerr == io.EOF { // the last line, without its newline
				return events, torn + 1, nil
			}
			pending = line
			continue
		}
		events = append(events, ev)
		if rerr == io.EOF {
			return events, torn, nil
		}
	}
}
