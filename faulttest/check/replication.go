package check

import (
	"fmt"
	"time"
)

// ReplicationResult is checker 2's figures.
type ReplicationResult struct {
	Checked int `json:"checked"`
	// UnderReplicated counts samples on fewer than Required of their owners (fail).
	UnderReplicated int        `json:"under_replicated"`
	FullyReplicated int        `json:"fully_replicated"` // on every owner
	Quorum          int        `json:"quorum"`
	Required        int        `json:"required"` // Quorum, unless Relaxed says why not
	Examples        []string   `json:"examples,omitempty"`
	Missing         []SampleID `json:"-"`
	// Relaxed, when set, says why Required is below Quorum; BelowQuorum then counts the samples on
	// at least Required but fewer than Quorum of their owners, as information, not a failure.
	Relaxed     string `json:"relaxed,omitempty"`
	BelowQuorum int    `json:"below_quorum,omitempty"`
}

// Valid is the verdict.
func (r *ReplicationResult) Valid() bool { return r.UnderReplicated == 0 }

func (r *ReplicationResult) String() string {
	v := "PASS"
	if !r.Valid() {
		v = "FAIL"
	}
	var s string
	if r.Relaxed == "" {
		s = fmt.Sprintf("%s checked=%d on-all-owners=%d under-quorum=%d", v, r.Checked, r.FullyReplicated, r.UnderReplicated)
	} else {
		missing := fmt.Sprintf("on-fewer-than-%d-owners", r.Required)
		if r.Required == 1 {
			missing = "on-no-owner"
		}
		s = fmt.Sprintf("%s checked=%d on-all-owners=%d %s=%d under-quorum=%d (information, not a failure: %s)",
			v, r.Checked, r.FullyReplicated, missing, r.UnderReplicated, r.BelowQuorum, r.Relaxed)
	}
	for _, e := range r.Examples {
		s += "\n    " + e
	}
	return s
}

// CheckReplication checks that every acknowledged sample is held by at least quorum of its current
// owners (the replication set of its series on the recovered ring). owners returns that set for a
// sample; holds reports whether an ingester returned the sample when read directly.
func CheckReplication(acked []SampleID, owners func(SampleID) []string, holds func(ingester string, id SampleID) bool, quorum int) ReplicationResult {
	return CheckReplicationRelaxed(acked, owners, holds, quorum, quorum, "")
}

// CheckReplicationRelaxed is CheckReplication requiring only required (< quorum) copies, for runs
// whose faults destroy one replica's data by design; why says so in the report, and the samples
// below quorum are counted as information.
func CheckReplicationRelaxed(acked []SampleID, owners func(SampleID) []string, holds func(ingester string, id SampleID) bool, quorum, required int, why string) ReplicationResult {
	res := ReplicationResult{Quorum: quorum, Required: required}
	if required < quorum {
		res.Relaxed = why
	}
	for _, id := range acked {
		res.Checked++
		os := owners(id)
		n := 0
		for _, o := range os {
			if holds(o, id) {
				n++
			}
		}
		if n == len(os) {
			res.FullyReplicated++
		}
		if n < quorum && n >= required {
			res.BelowQuorum++
		}
		if n < required {
			res.UnderReplicated++
			res.Missing = append(res.Missing, id)
			if len(res.Examples) < 5 {
				need := fmt.Sprintf("quorum %d", quorum)
				if res.Relaxed != "" {
					need = fmt.Sprintf("required %d", required)
				}
				res.Examples = append(res.Examples, fmt.Sprintf("%s on %d of owners %v, %s", id, n, os, need))
			}
		}
	}
	return res
}

// LivenessResult is checker 8's figures: how long after the final heal the cluster had a leader, an
// acknowledged write and converged state, against a bound.
type LivenessResult struct {
	Bound       time.Duration `json:"bound"`
	Leader      time.Duration `json:"leader"`      // -1: never
	Write       time.Duration `json:"first_write"` // -1: never (or not measured: see WriteMeasured)
	Converged   time.Duration `json:"converged"`   // -1: never
	WriteNeeded bool          `json:"write_measured"`
	// Why says what was still missing at the bound, when a milestone was not reached.
	Why string `json:"why,omitempty"`
}

// Valid is the verdict: each measured milestone reached within the bound.
func (r *LivenessResult) Valid() bool {
	ok := func(d time.Duration) bool { return d >= 0 && d <= r.Bound }
	return ok(r.Leader) && ok(r.Converged) && (!r.WriteNeeded || ok(r.Write))
}

func (r *LivenessResult) String() string {
	v := "PASS"
	if !r.Valid() {
		v = "FAIL"
	}
	f := func(d time.Duration) string {
		if d < 0 {
			return "never"
		}
		return d.Round(time.Millisecond).String()
	}
	s := fmt.Sprintf("%s after-heal: leader=%s converged=%s", v, f(r.Leader), f(r.Converged))
	if r.WriteNeeded {
		s += " first-acked-write=" + f(r.Write)
	}
	s += " bound=" + r.Bound.String()
	if r.Why != "" && !r.Valid() {
		s += " (at the bound: " + r.Why + ")"
	}
	return s
}

// CheckLiveness turns the milestone times after heal into durations (a zero time: never reached).
func CheckLiveness(heal, leader, write, converged time.Time, measureWrite bool, bound time.Duration) LivenessResult {
	d := func(t time.Time) time.Duration {
		if t.IsZero() {
			return -1
		}
		return max(t.Sub(heal), 0)
	}
	return LivenessResult{Bound: bound, Leader: d(leader), Write: d(write), Converged: d(converged), WriteNeeded: measureWrite}
}
