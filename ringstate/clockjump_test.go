package ringstate

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

// TestApply_ClockJumps_AgesGrowByAtMostMaxRingTimeGap is the ring-time rule the leader's clock
// relies on (raftfsm/DESIGN.md, "Ring time and clocks"), over random sequences of entry times that
// mix ordinary steps, forward jumps of up to an hour and backward jumps of up to an hour. After every
// entry, for every member that did not heartbeat in it:
//
//	age' = age + min(max(step, 0), MaxRingTimeGap)     step = entry time - ring time before it
//
// exactly: a backward step ages nobody (no negative age, no heartbeat after ring time), a step up to
// MaxRingTimeGap ages everybody by the step, a longer one by MaxRingTimeGap. The member that
// heartbeats has age 0, and ring time is max(ring time, entry time).
func TestApply_ClockJumps_AgesGrowByAtMostMaxRingTimeGap(t *testing.T) {
	for seed := range uint64(200) {
		rng := rand.New(rand.NewPCG(seed, 0x5eed))
		if err := clockJumpRun(rng); err != nil {
			t.Fatalf("seed %d: %v", seed, err)
		}
	}
}

func clockJumpRun(rng *rand.Rand) error {
	const hour = int64(3_600_000)
	now := int64(1_700_000_000_000)
	r := New()
	ids := []MemberID{"a", "b", "c", "d"}
	for i, id := range ids {
		var err error
		if r, _, err = r.Apply(Command{Op: OpRegister, Member: id, RaftAddr: fmt.Sprintf("127.0.0.1:%d", 1000+i)}, now); err != nil {
			return err
		}
	}
	for step := 0; step < 300; step++ {
		var d int64
		switch rng.IntN(6) {
		case 0:
			d = rng.Int64N(hour) + 1 // forward jump
		case 1:
			d = -rng.Int64N(hour) - 1 // backward jump
		default:
			d = rng.Int64N(3000) // an ordinary gap
		}
		at := r.TimeMs() + d
		who := ids[rng.IntN(len(ids))]
		next, _, err := r.Apply(Command{Op: OpHeartbeat, Member: who}, at)
		if err != nil {
			return fmt.Errorf("step %d: heartbeat %s at %+d: %v", step, who, d, err)
		}
		if want := max(r.TimeMs(), at); next.TimeMs() != want {
			return fmt.Errorf("step %d: ring time %d, want %d", step, next.TimeMs(), want)
		}
		grow := min(max(d, 0), MaxRingTimeGap)
		for _, id := range ids {
			before, _ := r.Member(id)
			after, _ := next.Member(id)
			age0, age1 := r.TimeMs()-before.HeartbeatMs, next.TimeMs()-after.HeartbeatMs
			switch {
			case age1 < 0:
				return fmt.Errorf("step %d (%+dms): %s's heartbeat is %dms after ring time", step, d, id, -age1)
			case id == who && age1 != 0:
				return fmt.Errorf("step %d (%+dms): %s heartbeated but is %dms old", step, d, id, age1)
			case id != who && age1 != age0+grow:
				return fmt.Errorf("step %d (%+dms): %s aged from %dms to %dms, want %dms", step, d, id, age0, age1, age0+grow)
			}
		}
		r = next
	}
	return nil
}
