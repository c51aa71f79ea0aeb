package check

import (
	"fmt"
	"time"
)

// VoterDeath is what the voter-death nemesis saw of one voter killed and kept down: whether the
// leader replaced it — demoted it, and promoted a live non-voter so that the live voters are as
// many as before — and how long that took from the kill.
type VoterDeath struct {
	Member    string
	WasLeader bool
	// VotersBefore are the voters when it was killed; VotersAfter at the end of the wait (the
	// first configuration in which the replacement was complete, else the last one read).
	VotersBefore, VotersAfter []string
	Replaced                  bool
	After                     time.Duration // from the kill to the first configuration seen replaced
	Err                       string        // reading the configuration failed throughout
}

// VoterDeathResult judges the voter deaths of a run.
type VoterDeathResult struct {
	Deaths, Replaced int
	Slowest          time.Duration
	Problems         []string
}

// Valid is true when every killed voter was replaced within the bound CheckVoterDeaths was given.
func (r VoterDeathResult) Valid() bool { return len(r.Problems) == 0 }

func (r VoterDeathResult) String() string {
	v := "PASS"
	if !r.Valid() {
		v = "FAIL"
	}
	s := fmt.Sprintf("%s deaths=%d replaced=%d slowest=%s", v, r.Deaths, r.Replaced, r.Slowest.Round(100*time.Millisecond))
	for _, p := range firstN(r.Problems, 5) {
		s += "\n    " + p
	}
	return s
}

// CheckVoterDeaths checks that every killed voter was replaced within bound (the product's
// -raft.voter-replace-after plus the leader's reconcile period and an election, for a dead leader).
func CheckVoterDeaths(ds []VoterDeath, bound time.Duration) VoterDeathResult {
	res := VoterDeathResult{Deaths: len(ds)}
	for _, d := range ds {
		switch {
		case d.Err != "":
			res.Problems = append(res.Problems, fmt.Sprintf("%s: %s", d.Member, d.Err))
		case !d.Replaced:
			res.Problems = append(res.Problems, fmt.Sprintf("%s (leader %v) not replaced: voters %v when killed, %v at the end", d.Member, d.WasLeader, d.VotersBefore, d.VotersAfter))
		case d.After > bound:
			res.Problems = append(res.Problems, fmt.Sprintf("%s replaced after %s, over the bound of %s", d.Member, d.After.Round(100*time.Millisecond), bound))
		}
		if d.Replaced {
			res.Replaced++
			res.Slowest = max(res.Slowest, d.After)
		}
	}
	return res
}

// VotersReplaced reports whether voters (a configuration read after dead was killed) show dead
// replaced: dead is not a voter, and the voters that are not dead are at least as many as the
// live voters were (want). It counts every voter other than dead as live: sound for schedules
// that kill one voter at a time and heal it before the next (voter-death's), not beyond.
func VotersReplaced(voters []string, dead string, want int) bool {
	n := 0
	for _, v := range voters {
		if v == dead {
			return false
		}
		n++
	}
	return n >= want
}
