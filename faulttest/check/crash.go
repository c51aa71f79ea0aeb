package check

import (
	"fmt"
	"time"
)

// CrashAll is one kill -9 of every member at once and the first complete read after all of them
// were restarted: Kill is when the first member was killed, Read the read. Every sample
// acknowledged before Kill must be in Read — it can only come from the members' WALs, since every
// process died and nothing was flushed in between that the read would not also see.
type CrashAll struct {
	Kill time.Time
	// Restarted is when the last member was started again; Read was invoked after it.
	Restarted time.Time
	Read      Read
	// NoRead says why no complete read was taken after this crash (the members did not all answer
	// within the bound): the crash is unverified, and the checker fails.
	NoRead string
}

// CrashResult is the figures of checker 7, crash recovery.
type CrashResult struct {
	Crashes int `json:"crashes"`
	// Checked counts crashes with a read after the restart; AckedBefore sums the samples
	// acknowledged before each of them.
	Checked     int        `json:"checked"`
	AckedBefore int        `json:"acked_before_crash"`
	Missing     int        `json:"missing_after_replay"`
	MissingIDs  []SampleID `json:"missing_ids,omitempty"`
	// RecoveryMax is the longest time from a crash's last restart to its complete read.
	RecoveryMax time.Duration `json:"recovery_max"`
	Unchecked   []string      `json:"unchecked,omitempty"`
}

// Valid is the verdict: every crash of every member was followed by a complete read, and no sample
// acknowledged before the crash was missing from it. A crash without a read fails: the members did
// not all serve within the bound, and a pass would claim a recovery nobody checked.
func (r *CrashResult) Valid() bool { return r.Missing == 0 && len(r.Unchecked) == 0 }

func (r *CrashResult) String() string {
	v := "PASS"
	if !r.Valid() {
		v = "FAIL"
	}
	s := fmt.Sprintf("%s kill-all=%d checked=%d acked-before-crash=%d missing-after-wal-replay=%d read-after-restart-max=%s",
		v, r.Crashes, r.Checked, r.AckedBefore, r.Missing, r.RecoveryMax.Round(time.Millisecond))
	if r.Missing > 0 {
		s += " first-missing=" + firstIDs(r.MissingIDs, 5)
	}
	if len(r.Unchecked) > 0 {
		s += fmt.Sprintf(" unchecked=%v", r.Unchecked)
	}
	return s
}

// CheckCrashRecovery is checker 7: after each kill -9 of every member, the first complete read taken
// once all were restarted holds every sample whose write was acknowledged before the kill (the
// acknowledgement returned before Kill). Writes acknowledged later, or with unknown outcomes, are
// the set checker's business.
func CheckCrashRecovery(writes []Write, crashes []CrashAll) CrashResult {
	res := CrashResult{Crashes: len(crashes)}
	for i, c := range crashes {
		if c.NoRead != "" {
			res.Unchecked = append(res.Unchecked, fmt.Sprintf("#%d: %s", i+1, c.NoRead))
			continue
		}
		res.Checked++
		res.RecoveryMax = max(res.RecoveryMax, c.Read.Invoke.Sub(c.Restarted))
		have := make(map[SampleID]bool, len(c.Read.Samples))
		for _, id := range c.Read.Samples {
			have[id] = true
		}
		for _, w := range writes {
			if w.Outcome != OutcomeOK || !w.Return.Before(c.Kill) || !c.Read.covers(w.ID.Writer) {
				continue
			}
			res.AckedBefore++
			if !have[w.ID] {
				res.Missing++
				res.MissingIDs = append(res.MissingIDs, w.ID)
			}
		}
	}
	sortIDs(res.MissingIDs)
	return res
}
