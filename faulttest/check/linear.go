package check

import (
	"fmt"
	"hash/fnv"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/anishathalye/porcupine"

	"github.com/raftingest/raftingest/ringstate"
)

// RingOp is one client operation on the ring in a run's history: a command (with a request id, so
// that retries are one operation and an unknown outcome can be looked up in the log) or a
// linearizable read of the ring.
type RingOp struct {
	Client int
	Read   bool
	Cmd    ringstate.Command // for commands
	Call   time.Time
	Return time.Time
	// Unknown: the client never learned the outcome (leadership lost, timeout, node gone).
	Unknown bool
	Code    ringstate.Code // the outcome when known
	// Digest is a read's result: RingDigest of the ring it returned.
	Digest string
}

// RingDigest is the part of a ring that client operations can observe and that does not depend on
// leader clocks: members with state, tokens and hand-over peer. Ring time and heartbeat stamps are
// left out, so the model need not know AppendedAt.
func RingDigest(r *ringstate.Ring) string {
	var b strings.Builder
	for _, m := range r.Members() {
		fmt.Fprintf(&b, "%s %s peer=%s tokens=%v\n", m.ID, m.State, m.HandoverPeer, m.Tokens)
	}
	return b.String()
}

func modelDigest(r *ringstate.Ring) string {
	var b strings.Builder
	b.WriteString(RingDigest(r))
	for _, a := range r.Recent() {
		fmt.Fprintf(&b, "req %s=%d\n", a.RequestID, a.Code)
	}
	return b.String()
}

type linInput struct {
	read bool
	cmd  ringstate.Command
}

type linOutput struct {
	code   ringstate.Code
	digest string
}

// RingModel is the porcupine model of the ring: its state is a *ringstate.Ring (immutable, so Step is
// pure) and a command's step is ringstate's Apply, whose outcome code must equal the one observed.
var RingModel = porcupine.Model{
	Init: func() interface{} { return ringstate.New() },
	Step: func(state, input, output interface{}) (bool, interface{}) {
		r := state.(*ringstate.Ring)
		in, out := input.(linInput), output.(linOutput)
		if in.read {
			return RingDigest(r) == out.digest, r
		}
		// Every request id occurs once in a history (a retried command is one operation), so the
		// model applies commands without their ids: the ring's request memory (up to 1024
		// outcomes, copied on every Apply) would make each of porcupine's cached states tens of
		// kilobytes. A real system that applied a retry twice still shows: the model applies once.
		cmd := in.cmd
		cmd.RequestID = ""
		next, _, err := r.Apply(cmd, 0)
		return ringstate.CodeOf(err) == out.code, next
	},
	Equal: func(a, b interface{}) bool {
		return modelDigest(a.(*ringstate.Ring)) == modelDigest(b.(*ringstate.Ring))
	},
	Hash: func(s interface{}) uint64 {
		h := fnv.New64a()
		h.Write([]byte(modelDigest(s.(*ringstate.Ring))))
		return h.Sum64()
	},
	DescribeOperation: func(input, output interface{}) string {
		in, out := input.(linInput), output.(linOutput)
		if in.read {
			return "read -> " + strings.ReplaceAll(strings.TrimSpace(out.digest), "\n", "; ")
		}
		c := in.cmd
		s := fmt.Sprintf("%s %s", c.Op, c.Member)
		if c.Peer != "" {
			s += " -> " + string(c.Peer)
		}
		if len(c.Tokens) > 0 {
			s += fmt.Sprintf(" %v", c.Tokens)
		}
		return fmt.Sprintf("%s [%s] -> code %d", s, c.RequestID, out.code)
	},
	DescribeState: func(s interface{}) string {
		return strings.ReplaceAll(strings.TrimSpace(RingDigest(s.(*ringstate.Ring))), "\n", "; ")
	},
}

// LinResult is checker 5's figures.
type LinResult struct {
	Ops        int    `json:"ops"`
	Reads      int    `json:"reads"`
	Unknown    int    `json:"unknown"`
	Resolved   int    `json:"unknown_resolved_from_log"`
	NotApplied int    `json:"unknown_never_committed"`
	Result     string `json:"result"` // porcupine: Ok, Illegal or Unknown (timed out)
	Page       string `json:"visualization,omitempty"`
	Err        string `json:"error,omitempty"`
}

// Valid is the verdict: porcupine found a linearization. A check that timed out is not a pass.
func (r *LinResult) Valid() bool { return r.Result == string(porcupine.Ok) && r.Err == "" }

func (r *LinResult) String() string {
	v := "PASS"
	if !r.Valid() {
		v = "FAIL"
	}
	s := fmt.Sprintf("%s porcupine=%s ops=%d reads=%d unknown=%d (resolved-from-log=%d never-committed=%d)",
		v, r.Result, r.Ops, r.Reads, r.Unknown, r.Resolved, r.NotApplied)
	if r.Page != "" {
		s += " page=" + r.Page
	}
	if r.Err != "" {
		s += " error=" + r.Err
	}
	return s
}

// MaxLinearizableOps bounds the history CheckRingLinearizable accepts: porcupine's search is
// exponential in the worst case and its memory grows with the states it caches.
const MaxLinearizableOps = 8000

// CheckRingLinearizable checks the ring operations against RingModel with porcupine. An operation
// whose outcome the client did not learn is resolved from the committed log by its request id
// (committed maps request id to its first application, from ReplayLog): committed, it takes the
// logged outcome and an open-ended return; never committed, it is dropped (it had no effect, as the
// request id guarantees). When the history is not linearizable and dir is not empty, porcupine's
// HTML page is written to dir/linearizability.html.
func CheckRingLinearizable(ops []RingOp, committed map[string]Committed, dir string, timeout time.Duration) LinResult {
	var res LinResult
	var hist []porcupine.Operation
	var end int64
	for _, op := range ops {
		end = max(end, op.Return.UnixNano(), op.Call.UnixNano())
	}
	for _, op := range ops {
		res.Ops++
		if op.Read {
			res.Reads++
			if op.Unknown {
				continue // a read that returned nothing constrains nothing
			}
			hist = append(hist, porcupine.Operation{ClientId: op.Client, Input: linInput{read: true},
				Output: linOutput{digest: op.Digest}, Call: op.Call.UnixNano(), Return: op.Return.UnixNano()})
			continue
		}
		ret, code := op.Return.UnixNano(), op.Code
		if op.Unknown {
			res.Unknown++
			if op.Cmd.RequestID == "" {
				res.Err = fmt.Sprintf("unknown outcome of %s %s without a request id", op.Cmd.Op, op.Cmd.Member)
				continue
			}
			c, ok := committed[op.Cmd.RequestID]
			if !ok {
				res.NotApplied++
				continue
			}
			res.Resolved++
			ret, code = end+1, c.Code
			if !c.At.IsZero() {
				ret = max(c.At.UnixNano(), op.Call.UnixNano())
			}
		}
		hist = append(hist, porcupine.Operation{ClientId: op.Client, Input: linInput{cmd: op.Cmd},
			Output: linOutput{code: code}, Call: op.Call.UnixNano(), Return: ret})
	}
	if len(hist) > MaxLinearizableOps {
		res.Result = string(porcupine.Unknown)
		res.Err = fmt.Sprintf("history of %d operations is longer than the %d this checker takes", len(hist), MaxLinearizableOps)
		return res
	}
	result, info := porcupine.CheckOperationsVerbose(RingModel, hist, timeout)
	res.Result = string(result)
	if result != porcupine.Ok && dir != "" {
		if err := os.MkdirAll(dir, 0o755); err == nil {
			p := filepath.Join(dir, "linearizability.html")
			if err := porcupine.VisualizePath(RingModel, info, p); err == nil {
				res.Page = p
			}
		}
	}
	return res
}
