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

// modelDigest is the model state's identity for porcupine's cache (Equal, Hash): everything of a
// ring that a later command's outcome or a later read can depend on. That is RingDigest plus each
// member's raft address, which decides whether a Register is refused as ErrMemberExists; without
// it two states that answer a Register differently would share a cache entry. Nothing else of a
// member is read by any precondition in ringstate's Apply (see RingModel).
func modelDigest(r *ringstate.Ring) string {
	var b strings.Builder
	b.WriteString(RingDigest(r))
	for _, m := range r.Members() {
		fmt.Fprintf(&b, "addr %s %s\n", m.ID, m.RaftAddr)
	}
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
//
// The model applies every command at ring time 0, while the real FSM applies it at its entry's
// leader-stamped time (and credits heartbeats across a gap longer than ringstate.MaxRingTimeGap).
// That is faithful because nothing the model compares depends on time, by inspection of ringstate's
// Apply (ops.go) and checked by TestRingModel_OutcomesDoNotDependOnTimeOrHeartbeats:
//   - ring time and health are read by no precondition: the refusals test membership, states,
//     hand-over peers, tokens and the raft address, never HeartbeatMs, RegisteredMs or the time;
//     health (Member.Healthy) is only read by lookups (ReplicationSet, CountByState), never by
//     Apply. Time is only written: HeartbeatMs, RegisteredMs, the ring time, and the heartbeat
//     credit of advance.
//   - so a heartbeat changes nothing but HeartbeatMs and ring time: its only observable is its own
//     code (OK, or UnknownMember once the member is gone). A heartbeat whose outcome nobody learned
//     and that has no request id (the lifecycle sends them without: a lost one is replaced by the
//     next, and ids would crowd the ring's request memory) cannot be resolved from the log — and
//     need not be: applied or not, it leaves the model's state equal (modelDigest), so dropping it
//     hides nothing (CheckRingLinearizable counts them).
//   - the digests a read is compared with (RingDigest) and the state identity (modelDigest) leave
//     time and heartbeats out.
//
// Heartbeats batched by the Raft leader (ringstate.OpHeartbeatBatch, raftfsm.HeartbeatBatcher) stay
// one operation each in a history: the client called Node.Apply with a single heartbeat and got its
// own outcome. The batch applies each of its heartbeats exactly as the single one at the entry's
// time (ringstate's TestHeartbeatBatch_*, including the unknown member's ErrUnknownMember, which
// the leader derives from the batch's EventHeartbeatSkipped), so the model applies the single one;
// the index returned is the batch's, shared by its heartbeats, and nothing here reads it. A batch
// recorded as an operation of its own (a client that proposes batches) is treated as a heartbeat:
// it changes nothing the model compares either.
//
// Should a ringstate change ever make an outcome depend on health (say, a claim-joiner that refuses
// an unhealthy joiner), that test fails, and the model must then apply each command at its entry's
// time (the log replay knows every entry's AppendedAt) and keep every heartbeat.
//
// The one op whose outcome does depend on time is the compactor lease claim (a lease expires in
// ring time). It changes only the lease, which no other op's precondition, RingDigest or
// modelDigest reads, so CheckRingLinearizable leaves claims out of the history (LeaseClaims)
// rather than judge them at time 0; and so does it with the HA tracker's ops (HAOps).
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
	Ops        int `json:"ops"`
	Reads      int `json:"reads"`
	Unknown    int `json:"unknown"`
	Resolved   int `json:"unknown_resolved_from_log"`
	NotApplied int `json:"unknown_never_committed"`
	// UnknownHeartbeats are heartbeats without a request id whose outcome nobody learned: dropped,
	// since applied or not they leave the model's state unchanged (see RingModel).
	UnknownHeartbeats int `json:"unknown_heartbeats_dropped,omitempty"`
	// LeaseClaims are compactor lease claims (OpClaimCompactor) left out of the history: their
	// outcome depends on ring time (a lease expires), which the model does not apply (see
	// RingModel), and nothing else reads the lease, so leaving them out hides no other outcome.
	// The lease's own rules are checked by ringstate's property tests and raftfsm's real-Raft tests.
	LeaseClaims int `json:"lease_claims_not_modelled,omitempty"`
	// HAOps are the HA tracker's ops (OpHAElect, OpHAGC) left out of the history for the same
	// reason: their outcome depends on ring time (the failover timeout, the idle time), and they
	// change only the HA state, which no other op's precondition, RingDigest or modelDigest reads.
	// Their rules are checked by ringstate's property tests, raftfsm's real-Raft tests and the
	// process tier's ha checker.
	HAOps int `json:"ha_ops_not_modelled,omitempty"`
	// TrimmedHeartbeats are heartbeats with a known outcome left out because the history was
	// longer than MaxLinearizableOps: they change nothing the model compares, so leaving them out
	// only loses the check of their own codes.
	TrimmedHeartbeats int    `json:"heartbeats_trimmed,omitempty"`
	Checked           int    `json:"checked"` // operations given to porcupine
	Result            string `json:"result"`  // porcupine: Ok, Illegal or Unknown (timed out)
	Page              string `json:"visualization,omitempty"`
	Err               string `json:"error,omitempty"`
}

// Valid is the verdict: porcupine found a linearization. A check that timed out is not a pass.
func (r *LinResult) Valid() bool { return r.Result == string(porcupine.Ok) && r.Err == "" }

func (r *LinResult) String() string {
	v := "PASS"
	if !r.Valid() {
		v = "FAIL"
	}
	s := fmt.Sprintf("%s porcupine=%s ops=%d reads=%d checked=%d unknown=%d (resolved-from-log=%d never-committed=%d heartbeats-dropped=%d)",
		v, r.Result, r.Ops, r.Reads, r.Checked, r.Unknown, r.Resolved, r.NotApplied, r.UnknownHeartbeats)
	if r.LeaseClaims > 0 {
		s += fmt.Sprintf(" lease-claims-not-modelled=%d", r.LeaseClaims)
	}
	if r.HAOps > 0 {
		s += fmt.Sprintf(" ha-ops-not-modelled=%d", r.HAOps)
	}
	if r.TrimmedHeartbeats > 0 {
		s += fmt.Sprintf(" heartbeats-trimmed-for-length=%d", r.TrimmedHeartbeats)
	}
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
// request id guarantees). A heartbeat without a request id whose outcome is unknown is dropped (see
// RingModel); any other unknown command without a request id is an error. Every request id must
// occur in at most one operation (merge a client's retries first). A history longer than
// MaxLinearizableOps loses its heartbeats first (counted), and fails if still too long: it is never
// skipped silently. When the history is not linearizable and dir is not empty, porcupine's HTML
// page is written to dir/linearizability.html.
func CheckRingLinearizable(ops []RingOp, committed map[string]Committed, dir string, timeout time.Duration) LinResult {
	var res LinResult
	var hist []porcupine.Operation
	var end int64
	for _, op := range ops {
		end = max(end, op.Return.UnixNano(), op.Call.UnixNano())
	}
	seen := map[string]bool{}
	for _, op := range ops {
		res.Ops++
		if id := op.Cmd.RequestID; !op.Read && id != "" {
			// The model applies commands without their ids (see RingModel), so one id in two
			// operations would apply a command twice that the ring applied once.
			if seen[id] && res.Err == "" {
				res.Err = fmt.Sprintf("request id %s in more than one operation (merge retries first)", id)
			}
			seen[id] = true
		}
		if !op.Read && op.Cmd.Op == ringstate.OpClaimCompactor {
			res.LeaseClaims++
			continue
		}
		if !op.Read && ringstate.IsHAOp(op.Cmd.Op) {
			res.HAOps++
			continue
		}
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
			if op.Cmd.RequestID == "" && isHeartbeat(&op.Cmd) {
				res.UnknownHeartbeats++
				continue
			}
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
		kept := hist[:0:0]
		for _, o := range hist {
			if in := o.Input.(linInput); !in.read && isHeartbeat(&in.cmd) {
				res.TrimmedHeartbeats++
				continue
			}
			kept = append(kept, o)
		}
		hist = kept
	}
	res.Checked = len(hist)
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

// isHeartbeat reports whether cmd records liveness only: a heartbeat or a batch of them.
func isHeartbeat(cmd *ringstate.Command) bool {
	return cmd.Op == ringstate.OpHeartbeat || cmd.Op == ringstate.OpHeartbeatBatch
}
