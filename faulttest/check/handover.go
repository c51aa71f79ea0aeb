package check

import (
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/hashicorp/raft"

	"github.com/raftingest/raftingest/ringstate"
)

// Checker 6, hand-over atomicity. Every hand-over is derived from the committed Raft log: a member
// committed LEAVING opens a *leave*; a claim-joiner commit pairs it with a joiner and opens a
// *hand-over*, which ends in exactly one of
//
//   - completed: the complete-handover commit of that pair, in which the joiner owns exactly the
//     tokens the leaver owned at the claim, is ACTIVE and unpaired, and the leaver is gone;
//   - aborted: the pair is unpaired by abort-handover, by a restart fix-up (register) of either
//     side, or by the removal of a side; the joiner is PENDING without tokens (or gone) and the
//     leaver, if still there, keeps the tokens it had at the claim;
//   - stuck: neither, at the end of the log (taken after the final recovery).
//
// While a hand-over is open, neither side's tokens may change: the tokens move in the completing
// commit and nowhere else. A leave ends when the leaver is gone (completed: a hand-over completed;
// removed: it flushed and removed itself, or an operator removed it) or ACTIVE again (resumed: it
// restarted and the register fix-up gave it its tokens back); a leave still open at the end is stuck.
//
// The data half needs what only the harness saw (LeaveRecord): the samples the leaver held when it
// was signalled, and reads of the member that holds them after the outcome. Every acknowledged sample
// the leaver held must afterwards be held by the joiner (completed), or by the leaver again
// (resumed), or be in the bucket (any outcome; the only place for it after a removal).

// MemberRead is one read of a member's samples (its gRPC QueryStream) by the harness.
type MemberRead struct {
	Member string    `json:"member"`
	At     time.Time `json:"at"` // when the read returned
	// Samples is every sample of the workload the member returned.
	Samples []SampleID `json:"-"`
}

// LeaveRecord is what the harness saw of one signal (SIGINT) that asked an ACTIVE member to leave.
type LeaveRecord struct {
	Member   string    `json:"member"`
	SignalAt time.Time `json:"signal_at"`
	// Held is the leaver's samples as its QueryStream returned them in a read that completed just
	// before SignalAt (HeldRead: that read succeeded). It covers everything the member held in memory
	// (WAL replay included) at that read; samples it received between the read and its LEAVING commit
	// are not in it, and are left to the set checker.
	Held     []SampleID `json:"-"`
	HeldRead bool       `json:"held_read"`
	// Reads are the harness's reads after the outcome: of the joiner once the leaver had handed over,
	// of the leaver once it resumed ACTIVE. The checker uses the first read of the member that must
	// hold the data taken at or after the outcome's commit.
	Reads []MemberRead `json:"reads,omitempty"`
	// Exited: the signalled process exited by itself (not killed by the harness), with ExitCode. A
	// member that left the ring — handed over, or flushed and removed itself — must exit 0.
	Exited   bool `json:"exited"`
	ExitCode int  `json:"exit_code"`
	// Note says what the harness did around this leave (the nemesis, restarts), for the report.
	Note string `json:"note,omitempty"`
}

// Handover is one claim-joiner pairing found in the log and how it ended.
type Handover struct {
	Leaver     string `json:"leaver"`
	Joiner     string `json:"joiner"`
	ClaimIndex uint64 `json:"claim_index"`
	EndIndex   uint64 `json:"end_index,omitempty"`
	// Outcome is "completed", "aborted" or "stuck"; How names the commit that ended it.
	Outcome string `json:"outcome"`
	How     string `json:"how,omitempty"`
	tokens  ringstate.Tokens
	endAt   time.Time
}

// Leave is one LEAVING period of a member found in the log.
type Leave struct {
	Leaver   string    `json:"leaver"`
	Index    uint64    `json:"index"` // the commit that made it LEAVING (the base index if it was LEAVING there)
	At       time.Time `json:"at"`    // that entry's AppendedAt (zero when unknown)
	EndIndex uint64    `json:"end_index,omitempty"`
	EndAt    time.Time `json:"end_at"`
	// Outcome is "completed" (handed over to Joiner), "removed", "resumed" or "stuck".
	Outcome   string `json:"outcome"`
	Joiner    string `json:"joiner,omitempty"`
	Handovers []int  `json:"handovers,omitempty"` // indexes into HandoverChecker.Handovers
}

// HandoverChecker derives hand-overs and leaves from ring steps fed in index order (one member's
// log), and checks their atomicity as it goes. Not safe for concurrent use.
type HandoverChecker struct {
	Handovers  []Handover
	Leaves     []Leave
	Violations []Violation

	member    string
	prev      map[ringstate.MemberID]ringstate.Member
	open      []int                      // indexes into Handovers, claims not yet ended
	openLeave map[ringstate.MemberID]int // leaver -> index into Leaves
	completed map[ringstate.MemberID]int // leaver -> the Handover that completed its open leave
	moved     map[int]bool               // hand-overs already reported for tokens moving while open
	last      uint64                     // index of the last step
	finalRing map[ringstate.MemberID]ringstate.Member
}

// NewHandoverChecker starts from the ring base at baseIndex (nil: the empty ring at index 0). Pairs and
// LEAVING members already in base are open hand-overs and leaves whose start is not in the log.
func NewHandoverChecker(member string, base *ringstate.Ring, baseIndex uint64) *HandoverChecker {
	c := &HandoverChecker{member: member, prev: map[ringstate.MemberID]ringstate.Member{},
		openLeave: map[ringstate.MemberID]int{}, completed: map[ringstate.MemberID]int{}, moved: map[int]bool{},
		last: baseIndex}
	if base == nil {
		return c
	}
	for _, m := range base.Members() {
		c.prev[m.ID] = m
		if m.State == ringstate.LEAVING {
			c.openLeave[m.ID] = len(c.Leaves)
			c.Leaves = append(c.Leaves, Leave{Leaver: string(m.ID), Index: baseIndex, Outcome: "stuck"})
			if m.HandoverPeer != "" {
				c.open = append(c.open, len(c.Handovers))
				c.Leaves[len(c.Leaves)-1].Handovers = []int{len(c.Handovers)}
				c.Handovers = append(c.Handovers, Handover{Leaver: string(m.ID), Joiner: string(m.HandoverPeer),
					ClaimIndex: baseIndex, Outcome: "stuck", tokens: m.Tokens})
			}
		}
	}
	return c
}

func (c *HandoverChecker) bad(s *RingStep, format string, args ...any) {
	if len(c.Violations) < 100 {
		c.Violations = append(c.Violations, Violation{Member: s.Member, Index: s.Index, Op: s.Op.String(),
			What: fmt.Sprintf(format, args...)})
	}
}

// Observe takes the ring after one committed command entry; at is the entry's AppendedAt.
func (c *HandoverChecker) Observe(s RingStep, at time.Time) {
	cur := make(map[ringstate.MemberID]ringstate.Member, len(s.Members))
	for _, m := range s.Members {
		cur[m.ID] = m
	}
	c.last = s.Index

	// 1. The open hand-overs: still paired (tokens must not move), or ended by this entry.
	still := c.open[:0]
	for _, k := range c.open {
		h := &c.Handovers[k]
		l, lok := cur[ringstate.MemberID(h.Leaver)]
		j, jok := cur[ringstate.MemberID(h.Joiner)]
		if lok && jok && string(l.HandoverPeer) == h.Joiner && string(j.HandoverPeer) == h.Leaver {
			if !c.moved[k] && (!slices.Equal(l.Tokens, h.tokens) || len(j.Tokens) > 0) {
				c.moved[k] = true
				c.bad(&s, "hand-over %s -> %s (claimed at %d) is still open, yet the leaver now holds %d tokens (%d at the claim) and the joiner %d: tokens must move only in the completing commit",
					h.Leaver, h.Joiner, h.ClaimIndex, len(l.Tokens), len(h.tokens), len(j.Tokens))
			}
			still = append(still, k)
			continue
		}
		h.EndIndex, h.endAt = s.Index, at
		if s.Op == ringstate.OpCompleteHandover && s.Code == ringstate.CodeOK &&
			string(s.Cmd.Member) == h.Leaver && string(s.Cmd.Peer) == h.Joiner {
			h.Outcome, h.How = "completed", "complete-handover"
			switch {
			case lok:
				c.bad(&s, "hand-over %s -> %s completed, but the leaver is still in the ring (%s, %d tokens)", h.Leaver, h.Joiner, l.State, len(l.Tokens))
			case !jok:
				c.bad(&s, "hand-over %s -> %s completed, but the joiner is not in the ring", h.Leaver, h.Joiner)
			case j.State != ringstate.ACTIVE || j.HandoverPeer != "":
				c.bad(&s, "hand-over %s -> %s completed, but the joiner is %s with peer %q", h.Leaver, h.Joiner, j.State, j.HandoverPeer)
			}
			if jok && !slices.Equal(j.Tokens, h.tokens) {
				c.bad(&s, "hand-over %s -> %s completed with the joiner holding %d tokens, the leaver held %d at the claim (%s): not exactly the leaver's tokens in one commit",
					h.Leaver, h.Joiner, len(j.Tokens), len(h.tokens), tokenDiff(h.tokens, j.Tokens))
			}
			c.completed[ringstate.MemberID(h.Leaver)] = k
			continue
		}
		h.Outcome, h.How = "aborted", describeEnd(&s, h)
		switch {
		case s.Op == ringstate.OpAbortHandover && s.Code == ringstate.CodeOK:
		case s.Op == ringstate.OpRegister && s.Code == ringstate.CodeOK && (string(s.Cmd.Member) == h.Leaver || string(s.Cmd.Member) == h.Joiner):
		case s.Op == ringstate.OpRemove && s.Code == ringstate.CodeOK && (string(s.Cmd.Member) == h.Leaver || string(s.Cmd.Member) == h.Joiner):
		default:
			c.bad(&s, "hand-over %s -> %s ended by %s of %s, which is neither a completion nor an abort", h.Leaver, h.Joiner, s.Op, s.Cmd.Member)
		}
		if jok && (j.State != ringstate.PENDING || len(j.Tokens) > 0 || j.HandoverPeer != "") {
			c.bad(&s, "hand-over %s -> %s aborted, but the joiner is %s with %d tokens and peer %q, not PENDING and empty",
				h.Leaver, h.Joiner, j.State, len(j.Tokens), j.HandoverPeer)
		}
		if lok && (!slices.Equal(l.Tokens, h.tokens) || l.HandoverPeer != "") {
			c.bad(&s, "hand-over %s -> %s aborted, but the leaver holds %d tokens (%d at the claim) with peer %q: an abort must leave the leaver's tokens where they were",
				h.Leaver, h.Joiner, len(l.Tokens), len(h.tokens), l.HandoverPeer)
		}
	}
	c.open = still

	// 2. Leaves: a member newly LEAVING opens one.
	for _, m := range s.Members {
		if m.State != ringstate.LEAVING {
			continue
		}
		if p, ok := c.prev[m.ID]; ok && p.State == ringstate.LEAVING {
			continue
		}
		if _, open := c.openLeave[m.ID]; open {
			continue
		}
		c.openLeave[m.ID] = len(c.Leaves)
		c.Leaves = append(c.Leaves, Leave{Leaver: string(m.ID), Index: s.Index, At: at, Outcome: "stuck"})
	}

	// 3. New pairs: a LEAVING member paired with a peer it was not paired with before.
	for _, m := range s.Members {
		if m.HandoverPeer == "" || m.State != ringstate.LEAVING {
			continue
		}
		if p, ok := c.prev[m.ID]; ok && p.HandoverPeer == m.HandoverPeer {
			continue
		}
		if s.Op != ringstate.OpClaimJoiner {
			c.bad(&s, "%s was paired with %s by %s, not by claim-joiner", m.ID, m.HandoverPeer, s.Op)
		}
		k := len(c.Handovers)
		c.Handovers = append(c.Handovers, Handover{Leaver: string(m.ID), Joiner: string(m.HandoverPeer),
			ClaimIndex: s.Index, Outcome: "stuck", tokens: m.Tokens})
		c.open = append(c.open, k)
		if li, ok := c.openLeave[m.ID]; ok {
			c.Leaves[li].Handovers = append(c.Leaves[li].Handovers, k)
		}
	}

	// 4. Leaves that ended here: the leaver is gone, or no longer LEAVING.
	ids := make([]ringstate.MemberID, 0, len(c.openLeave))
	for id := range c.openLeave {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		li := c.openLeave[id]
		m, ok := cur[id]
		if ok && m.State == ringstate.LEAVING {
			continue
		}
		lv := &c.Leaves[li]
		lv.EndIndex, lv.EndAt = s.Index, at
		switch k, done := c.completed[id]; {
		case !ok && done:
			lv.Outcome, lv.Joiner = "completed", c.Handovers[k].Joiner
		case !ok:
			lv.Outcome = "removed"
		default:
			lv.Outcome = "resumed"
			if m.State != ringstate.ACTIVE {
				c.bad(&s, "%s left LEAVING for %s: only a restart fix-up (back to ACTIVE) or removal may end a leave", id, m.State)
			}
		}
		delete(c.openLeave, id)
		delete(c.completed, id)
	}
	c.prev = cur
	c.finalRing = cur
}

func describeEnd(s *RingStep, h *Handover) string {
	switch {
	case s.Op == ringstate.OpAbortHandover:
		return "abort-handover"
	case s.Op == ringstate.OpRegister && string(s.Cmd.Member) == h.Leaver:
		return "leaver restarted"
	case s.Op == ringstate.OpRegister && string(s.Cmd.Member) == h.Joiner:
		return "joiner restarted"
	case s.Op == ringstate.OpRemove:
		return "remove " + string(s.Cmd.Member)
	}
	return s.Op.String() + " " + string(s.Cmd.Member)
}

// tokenDiff says which tokens differ between want and got, briefly.
func tokenDiff(want, got ringstate.Tokens) string {
	var missing, extra int
	for _, t := range want {
		if _, ok := slices.BinarySearch(got, t); !ok {
			missing++
		}
	}
	for _, t := range got {
		if _, ok := slices.BinarySearch(want, t); !ok {
			extra++
		}
	}
	return fmt.Sprintf("%d of the leaver's tokens missing, %d others", missing, extra)
}

// HandoverResult is checker 6's figures.
type HandoverResult struct {
	Log       string         `json:"log"` // the member whose log was replayed
	Leaves    int            `json:"leaves"`
	Claims    int            `json:"claims"`
	Completed int            `json:"completed"`
	Aborted   int            `json:"aborted"`
	AbortedBy map[string]int `json:"aborted_by,omitempty"`
	// Leaves ended otherwise than by a completed hand-over: the leaver removed (after flushing to
	// the bucket, or by an operator) or resumed ACTIVE after a restart.
	Removed int `json:"removed"`
	Resumed int `json:"resumed"`
	Stuck   int `json:"stuck"`
	// Signals without a leave in the log (the member was killed before it committed LEAVING).
	SignalsWithoutLeave int `json:"signals_without_leave"`
	// The data half: acknowledged samples the leavers held when signalled, and where they were
	// found afterwards (the member holding them — joiner, or leaver resumed — or else the bucket).
	SamplesJudged int `json:"samples_judged"`
	OnSuccessor   int `json:"on_successor"`
	InBucket      int `json:"in_bucket"`
	Missing       int `json:"missing"`

	Violations []Violation `json:"violations,omitempty"`
	Problems   []string    `json:"problems,omitempty"`
	Handovers  []Handover  `json:"handovers,omitempty"`
	LeaveList  []Leave     `json:"leave_list,omitempty"`
}

// Valid is the verdict: no violation, no stuck hand-over or leave, no data problem.
func (r *HandoverResult) Valid() bool {
	return len(r.Violations) == 0 && len(r.Problems) == 0 && r.Stuck == 0
}

func (r *HandoverResult) String() string {
	v := "PASS"
	if !r.Valid() {
		v = "FAIL"
	}
	var by []string
	for k, n := range r.AbortedBy {
		by = append(by, fmt.Sprintf("%s=%d", k, n))
	}
	sort.Strings(by)
	s := fmt.Sprintf("%s leaves=%d claims=%d completed=%d aborted=%d", v, r.Leaves, r.Claims, r.Completed, r.Aborted)
	if len(by) > 0 {
		s += " (" + strings.Join(by, " ") + ")"
	}
	s += fmt.Sprintf(" leaver-removed=%d leaver-resumed=%d stuck=%d signals-without-leave=%d acked-samples-judged=%d on-successor=%d in-bucket=%d missing=%d",
		r.Removed, r.Resumed, r.Stuck, r.SignalsWithoutLeave, r.SamplesJudged, r.OnSuccessor, r.InBucket, r.Missing)
	for i, x := range r.Violations {
		if i == 5 {
			break
		}
		s += "\n    " + x.String()
	}
	for _, p := range firstN(r.Problems, 5) {
		s += "\n    " + p
	}
	return s
}

// Finish ends the log: hand-overs and leaves still open are stuck. It then judges the data of every
// leave against the harness's records (see LeaveRecord): acked says whether a sample was
// acknowledged, inBucket whether it is in the bucket.
func (c *HandoverChecker) Finish(records []LeaveRecord, acked func(SampleID) bool, inBucket func(SampleID) bool) HandoverResult {
	res := HandoverResult{Log: c.member, Violations: c.Violations, AbortedBy: map[string]int{}}
	stuckAt := Violation{Member: c.member, Index: c.last, Op: "end of log"}
	for _, h := range c.Handovers {
		res.Claims++
		switch h.Outcome {
		case "completed":
			res.Completed++
		case "aborted":
			res.Aborted++
			res.AbortedBy[h.How]++
		default:
			res.Stuck++
			v := stuckAt
			v.What = fmt.Sprintf("hand-over %s -> %s claimed at %d has neither completed nor aborted: stuck", h.Leaver, h.Joiner, h.ClaimIndex)
			res.Violations = append(res.Violations, v)
		}
	}
	for _, lv := range c.Leaves {
		res.Leaves++
		switch lv.Outcome {
		case "removed":
			res.Removed++
		case "resumed":
			res.Resumed++
		case "stuck":
			res.Stuck++
			v := stuckAt
			v.What = fmt.Sprintf("%s, LEAVING since index %d, is still LEAVING: stuck", lv.Leaver, lv.Index)
			res.Violations = append(res.Violations, v)
		}
	}
	for _, m := range c.finalRing {
		if m.State == ringstate.JOINING && m.HandoverPeer != "" {
			if _, ok := c.finalRing[m.HandoverPeer]; !ok {
				v := stuckAt
				v.What = fmt.Sprintf("%s is JOINING from %s, which is not in the ring: stuck", m.ID, m.HandoverPeer)
				res.Violations = append(res.Violations, v)
				res.Stuck++
			}
		}
	}
	res.Handovers, res.LeaveList = c.Handovers, c.Leaves
	c.judgeData(&res, records, acked, inBucket)
	return res
}

// judgeData matches every leave of the log with the harness's record of the signal that caused it
// (the latest signal to that member at or before the LEAVING commit's AppendedAt: the leader stamps
// it after the signal was sent, on the same machine's clock) and checks where the leaver's
// acknowledged samples went.
func (c *HandoverChecker) judgeData(res *HandoverResult, records []LeaveRecord, acked func(SampleID) bool, inBucket func(SampleID) bool) {
	byMember := map[string][]int{}
	for i, r := range records {
		byMember[r.Member] = append(byMember[r.Member], i)
	}
	for _, is := range byMember {
		sort.Slice(is, func(a, b int) bool { return records[is[a]].SignalAt.Before(records[is[b]].SignalAt) })
	}
	used := map[int]bool{}
	for _, lv := range c.Leaves {
		if lv.At.IsZero() {
			res.Problems = append(res.Problems, fmt.Sprintf("%s: leave at index %d has no time in the log (LEAVING in the base snapshot): its data cannot be matched to a signal", lv.Leaver, lv.Index))
			continue
		}
		ri := -1
		for _, i := range byMember[lv.Leaver] {
			if !records[i].SignalAt.After(lv.At) {
				ri = i
			}
		}
		if ri < 0 {
			res.Problems = append(res.Problems, fmt.Sprintf("%s: LEAVING at index %d (%s) with no signal before it", lv.Leaver, lv.Index, lv.At.Format(time.RFC3339Nano)))
			continue
		}
		if used[ri] {
			res.Problems = append(res.Problems, fmt.Sprintf("%s: LEAVING again at index %d without a new signal", lv.Leaver, lv.Index))
			continue
		}
		used[ri] = true
		rec := &records[ri]
		if lv.Outcome == "stuck" {
			continue // a violation already
		}
		if rec.Exited && rec.ExitCode != 0 && (lv.Outcome == "completed" || lv.Outcome == "removed") {
			res.Problems = append(res.Problems, fmt.Sprintf("%s: left the ring at index %d (%s), but its process exited with code %d, not 0",
				lv.Leaver, lv.EndIndex, lv.Outcome, rec.ExitCode))
		}
		if !rec.HeldRead {
			res.Problems = append(res.Problems, fmt.Sprintf("%s: leave at index %d: the harness did not read the leaver before the signal", lv.Leaver, lv.Index))
			continue
		}
		var holder string
		switch lv.Outcome {
		case "completed":
			holder = lv.Joiner
		case "resumed":
			holder = lv.Leaver
		}
		var read *MemberRead
		if holder != "" {
			for i := range rec.Reads {
				if rec.Reads[i].Member == holder && !rec.Reads[i].At.Before(lv.EndAt) {
					read = &rec.Reads[i]
					break
				}
			}
			if read == nil {
				res.Problems = append(res.Problems, fmt.Sprintf("%s: leave at index %d ended %s, but %s was not read after index %d: its data is not shown safe",
					lv.Leaver, lv.Index, lv.Outcome, holder, lv.EndIndex))
				continue
			}
		}
		has := map[SampleID]bool{}
		if read != nil {
			for _, id := range read.Samples {
				has[id] = true
			}
		}
		var missing []SampleID
		for _, id := range rec.Held {
			if !acked(id) {
				continue
			}
			res.SamplesJudged++
			switch {
			case has[id]:
				res.OnSuccessor++
			case inBucket(id):
				res.InBucket++
			default:
				missing = append(missing, id)
			}
		}
		if len(missing) > 0 {
			res.Missing += len(missing)
			where := "in the bucket"
			if holder != "" {
				where = "on " + holder + " or in the bucket"
			}
			sortIDs(missing)
			res.Problems = append(res.Problems, fmt.Sprintf("%s: leave at index %d ended %s at %d: %d acked samples it held when signalled are not %s: %s",
				lv.Leaver, lv.Index, lv.Outcome, lv.EndIndex, len(missing), where, firstIDs(missing, 5)))
		}
	}
	for _, is := range byMember {
		for _, i := range is {
			if used[i] {
				continue
			}
			res.SignalsWithoutLeave++
			// A process that exited 0 by itself after SIGINT claims to have left gracefully; with no
			// LEAVING commit for it, it left nothing: a graceful shutdown that skipped the ring (its
			// tokens orphaned, its data neither handed over nor flushed). The harness kills a leaver
			// only after it saw it LEAVING, so a kill cannot explain the missing commit either.
			if rec := records[i]; rec.Exited && rec.ExitCode == 0 {
				res.Problems = append(res.Problems, fmt.Sprintf("%s: exited 0 after SIGINT at %s but the log has no LEAVING commit for it",
					rec.Member, rec.SignalAt.Format(time.RFC3339Nano)))
			}
		}
	}
}

// CheckHandovers replays one member's log — the one reaching furthest back (lowest base index),
// then furthest forward; the convergence checker shows the logs agree — through the pure FSM and
// judges every hand-over and leave in it (see HandoverChecker), then the data of each leave against
// the harness's records. An empty list of logs is a failure: nothing was shown.
func CheckHandovers(logs []*MemberLog, records []LeaveRecord, acked func(SampleID) bool, inBucket func(SampleID) bool) HandoverResult {
	var best *MemberLog
	lastOf := func(ml *MemberLog) uint64 {
		if len(ml.Entries) == 0 {
			return ml.BaseIndex
		}
		return ml.Entries[len(ml.Entries)-1].Index
	}
	for _, ml := range logs {
		if best == nil || ml.BaseIndex < best.BaseIndex || (ml.BaseIndex == best.BaseIndex && lastOf(ml) > lastOf(best)) {
			best = ml
		}
	}
	if best == nil {
		return HandoverResult{Problems: []string{"no raft log to derive hand-overs from"}}
	}
	c := NewHandoverChecker(best.Member, best.Base, best.BaseIndex)
	if best.Base != nil {
		c.finalRing = map[ringstate.MemberID]ringstate.Member{}
		for _, m := range best.Base.Members() {
			c.finalRing[m.ID] = m
		}
	}
	at := map[uint64]time.Time{}
	for _, l := range best.Entries {
		if l.Type == raft.LogCommand {
			at[l.Index] = l.AppendedAt
		}
	}
	rp := ReplayLog(best, func(s RingStep) { c.Observe(s, at[s.Index]) })
	res := c.Finish(records, acked, inBucket)
	if rp.Gap != "" {
		res.Problems = append(res.Problems, best.Member+": "+rp.Gap)
	}
	return res
}
