package check

import "testing"

func TestCheckCrashRecovery(t *testing.T) {
	writes := []Write{
		{ID: sid(0, 1), Outcome: OutcomeOK, Invoke: at(1), Return: at(2)},      // acked before the crash
		{ID: sid(0, 2), Outcome: OutcomeOK, Invoke: at(2), Return: at(3)},      // acked before the crash
		{ID: sid(1, 1), Outcome: OutcomeUnknown, Invoke: at(4), Return: at(6)}, // unknown: not required
		{ID: sid(1, 2), Outcome: OutcomeOK, Invoke: at(4), Return: at(5)},      // in flight at the kill
		{ID: sid(0, 3), Outcome: OutcomeOK, Invoke: at(8), Return: at(9)},      // after the restart
	}
	crash := CrashAll{Kill: at(5), Restarted: at(7), Read: Read{Invoke: at(8), Return: at(8)}}

	good := crash
	good.Read.Samples = []SampleID{sid(0, 1), sid(0, 2)}
	if r := CheckCrashRecovery(writes, []CrashAll{good}); !r.Valid() || r.AckedBefore != 2 || r.Checked != 1 {
		t.Fatalf("every sample acked before the crash came back, yet: %s", r.String())
	}

	// A WAL that lost its last acknowledged record: the checker must name it.
	lost := crash
	lost.Read.Samples = []SampleID{sid(0, 1)}
	r := CheckCrashRecovery(writes, []CrashAll{good, lost})
	if r.Valid() || r.Missing != 1 || len(r.MissingIDs) != 1 || r.MissingIDs[0] != sid(0, 2) {
		t.Fatalf("a sample acked before the crash is missing after replay, yet: %s", r.String())
	}

	// A read covering only writer 1 says nothing about writer 0.
	partial := crash
	partial.Read.Writers = []int{1}
	if r := CheckCrashRecovery(writes, []CrashAll{partial}); !r.Valid() || r.AckedBefore != 0 {
		t.Fatalf("a read not covering writer 0 judged it: %s", r.String())
	}

	// No read after the crash: unverified, so not a pass.
	none := crash
	none.NoRead = "no complete read within 20s of the restart"
	if r := CheckCrashRecovery(writes, []CrashAll{good, none}); r.Valid() || r.Checked != 1 || len(r.Unchecked) != 1 {
		t.Fatalf("a crash without a read passed or was not reported as unchecked: %s", r.String())
	}
}
