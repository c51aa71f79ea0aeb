package faulttest

import (
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/raftingest/raftingest/faulttest/check"
)

// Leaders records who some node said was the Raft leader in which term, as a tier's poller sees it
// (the in-process and process tiers poll every node's status a few times a second). It feeds the
// convergence checker (at most one leader per term) and the report's election counts. Safe for
// concurrent use; the zero value is ready.
type Leaders struct {
	mu   sync.Mutex
	seen map[uint64]map[string]time.Duration // term -> leader -> first sighting, since the run's start
}

// Saw records that member claimed leadership in term, at the given time since the run's start.
// Only the first sighting of a (term, member) pair is kept.
func (l *Leaders) Saw(term uint64, member string, at time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.seen == nil {
		l.seen = map[uint64]map[string]time.Duration{}
	}
	if l.seen[term] == nil {
		l.seen[term] = map[string]time.Duration{}
	}
	if _, ok := l.seen[term][member]; !ok {
		l.seen[term][member] = at
	}
}

// Observations are the sightings for check.CheckConvergence.
func (l *Leaders) Observations() []check.LeaderObservation {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []check.LeaderObservation
	for term, ls := range l.seen {
		for id := range ls {
			out = append(out, check.LeaderObservation{Term: term, Member: id})
		}
	}
	return out
}

// Elections counts the terms with a leader after the first one seen (the leader from before the
// workload), and, of those, the unprovoked ones: whose leader appeared while no fault was active
// and none had healed within the last 5s — elections from CPU starvation or timeouts too short
// for the machine.
func (l *Leaders) Elections(faults []FaultWindow) (total, unprovoked int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	var terms []uint64
	for t := range l.seen {
		terms = append(terms, t)
	}
	slices.Sort(terms)
	for k, t := range terms {
		if k == 0 {
			continue
		}
		total++
		var first time.Duration = -1
		for _, at := range l.seen[t] {
			if first < 0 || at < first {
				first = at
			}
		}
		provoked := false
		for _, f := range faults {
			end := f.End
			if end == 0 {
				end = 1 << 62
			}
			if first >= f.Start && first <= end+5*time.Second {
				provoked = true
			}
		}
		if !provoked {
			unprovoked++
		}
	}
	return total, unprovoked
}

// ThroughputOf is the acknowledged writes per second before the first fault, from its start to the
// end of the last one, and from then to the final heal (healAt). With no faults, the whole run
// counts as "before".
func ThroughputOf(hist []check.Write, start time.Time, faults []FaultWindow, healAt time.Time) Throughput {
	rate := func(n int, dur time.Duration) float64 {
		if dur <= 0 {
			return 0
		}
		return float64(n) / dur.Seconds()
	}
	var tp Throughput
	if len(faults) == 0 {
		n := 0
		for _, w := range hist {
			if w.Outcome == check.OutcomeOK {
				n++
			}
		}
		tp.Before = rate(n, healAt.Sub(start))
		return tp
	}
	first, last := faults[0].Start, faults[len(faults)-1].End
	var b, d, a int
	for _, w := range hist {
		if w.Outcome != check.OutcomeOK {
			continue
		}
		switch at := w.Return.Sub(start); {
		case at < first:
			b++
		case at <= last:
			d++
		default:
			a++
		}
	}
	tp.Before = rate(b, first)
	tp.During = rate(d, last-first)
	tp.After = rate(a, healAt.Sub(start)-last)
	return tp
}

// WriteHistory writes the write history to path, one line per write with its outcome and its
// invoke and return times since start: the evidence a failed run keeps.
func WriteHistory(path string, hist []check.Write, start time.Time) error {
	var b strings.Builder
	for _, w := range hist {
		fmt.Fprintf(&b, "%s %s invoke=%s return=%s\n", w.ID, w.Outcome, w.Invoke.Sub(start), w.Return.Sub(start))
	}
	return os.WriteFile(path, []byte(b.String()), 0o644)
}

// LogMember names a member whose Raft log CheckLogs reads: its id and data directory.
type LogMember struct{ ID, DataDir string }

// CheckLogs reads every member's Raft log from its data directory (check.ReadBoltLog, copies under
// scratch), adds checkers 3 (tokens at every committed index) and 4 (convergence, with the leader
// sightings and whether the run converged) to the report — and a failed "raft-log" verdict per
// unreadable log — and returns the logs and their replays for the checkers that need them (hand-over
// atomicity, linearizability). Every process or server must be stopped first.
func (r *Report) CheckLogs(members []LogMember, scratch string, leaders []check.LeaderObservation, converged bool) ([]*check.MemberLog, []*check.Replay) {
	_ = os.MkdirAll(scratch, 0o755)
	var logs []*check.MemberLog
	for _, m := range members {
		ml, err := check.ReadBoltLog(m.ID, m.DataDir, scratch)
		if err != nil {
			r.Add("raft-log", false, fmt.Sprintf("FAIL %s: %v", m.ID, err), nil)
			continue
		}
		logs = append(logs, ml)
	}
	tok, replays := check.CheckTokens(logs)
	r.Add("tokens", tok.Valid(), tok.String(), tok)
	conv := check.CheckConvergence(logs, replays, nil, leaders, converged)
	r.Add("convergence", conv.Valid(), conv.String(), conv)
	return logs, replays
}
