package ringstate

import (
	"fmt"
	"strings"
	"testing"
)

// ringAt builds a ring of ACTIVE members m0..m(n-1) with balanced tokens, then lets ring time run
// to nowMs in 5 s steps, every member but the silent ones heartbeating at each step (ring time
// must move as a clock does: a jump is coasted, see DESIGN.md "Health and coasting").
func ringAt(t *testing.T, n int, nowMs int64, silent ...int) *Ring {
	t.Helper()
	return runClock(t, growBalanced(t, n, 16, nil), n, nowMs, silent...)
}

// runClock lets ring time run to nowMs in 5 s steps, members m0..m(n-1) but the silent ones
// heartbeating at each step.
func runClock(t *testing.T, r *Ring, n int, nowMs int64, silent ...int) *Ring {
	t.Helper()
	quiet := map[int]bool{}
	for _, i := range silent {
		quiet[i] = true
	}
	for at := r.TimeMs() + 5000; ; at += 5000 {
		at = min(at, nowMs)
		for i := range n {
			if quiet[i] {
				continue
			}
			next, _, err := r.Apply(heartbeat(MemberID(fmt.Sprintf("m%04d", i))), at)
			if err != nil {
				t.Fatal(err)
			}
			r = next
		}
		if at == nowMs {
			return r
		}
	}
}

func TestAutoForget(t *testing.T) {
	const timeout, after = 60_000, 180_000
	// growBalanced stamps ring times 1..3n; the silent members' last heartbeats are from then.
	for _, tc := range []struct {
		name    string
		members int
		nowMs   int64
		silent  []int
		want    string // "" for none
	}{
		{"one member silent long enough, the rest healthy", 5, 1_000_000, []int{2}, "m0002"},
		{"silent, but not for long enough", 5, 150_000, []int{2}, ""},
		{"two silent on 5 at RF 3: each shares a set with the other", 5, 1_000_000, []int{1, 3}, ""},
		{"nobody silent", 5, 1_000_000, nil, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := ringAt(t, tc.members, tc.nowMs, tc.silent...)
			id, why, ok := r.AutoForget(3, timeout, after)
			if string(id) != tc.want || ok != (tc.want != "") {
				t.Fatalf("AutoForget = %q (%v) %q, want %q", id, ok, why, tc.want)
			}
			if ok {
				// Forgetting it leaves every natural replication set with RF-1 writable members.
				next, _, err := r.Apply(remove(id), r.TimeMs())
				if err != nil {
					t.Fatal(err)
				}
				for _, m := range next.Members() {
					if !m.Writable(next.TimeMs(), timeout) && !contains(tc.silent, m.ID) {
						t.Fatalf("%s not writable after forgetting %s", m.ID, id)
					}
				}
				t.Logf("forgot %s: %s", id, why)
			}
		})
	}
}

func contains(silent []int, id MemberID) bool {
	for _, i := range silent {
		if MemberID(fmt.Sprintf("m%04d", i)) == id {
			return true
		}
	}
	return false
}

// A member in a hand-over is never forgotten by the leader: the hand-over decides its fate.
func TestAutoForget_NotDuringAHandover(t *testing.T) {
	r := ringAt(t, 5, 1_000_000, 2)
	r = mustApply(t, r, register("spare"))
	r, _, err := r.Apply(Command{Op: OpLeave, Member: "m0002"}, r.TimeMs())
	if err != nil {
		t.Fatal(err)
	}
	r, _, err = r.Apply(claimJoiner("m0002", "spare"), r.TimeMs())
	if err != nil {
		t.Fatal(err)
	}
	if id, why, ok := r.AutoForget(3, 60_000, 180_000); ok {
		t.Fatalf("forgot %s during its hand-over: %s", id, why)
	}
}

// Two silent members that share no replication set (owners in the cyclic order m0..m5, RF 3: m0
// and m3 are never within 3 consecutive owners): one at a time, the one silent longest first, then
// the other on the ring that results.
func TestAutoForget_OneAtATimeLongestSilentFirst(t *testing.T) {
	r := New()
	for i := range 6 {
		id := MemberID(fmt.Sprintf("m%04d", i))
		var ts Tokens
		for k := range 4 {
			ts = append(ts, Token(k*1000+i*100))
		}
		r = mustApply(t, r, register(id), claim(id, ts...), activate(id))
	}
	r = runClock(t, r, 6, 100_000, 0, 3) // both silent from the start...
	r = runClock(t, r, 6, 150_000, 0)    // ...m3 heartbeats once more at 150 s
	r = runClock(t, r, 6, 1_000_000, 0, 3)
	id, why, ok := r.AutoForget(3, 60_000, 180_000)
	if !ok || id != "m0000" {
		t.Fatalf("first: %q %v %q, want m0000 (silent longer)", id, ok, why)
	}
	r = mustApply(t, r, remove(id))
	if id, why, ok := r.AutoForget(3, 60_000, 180_000); !ok || id != "m0003" {
		t.Fatalf("second: %q %v %q, want m0003", id, ok, why)
	}
}

// Below 3 replicas nothing is forgotten: at RF 1 a member holds the only copy of its samples, at
// RF 2 a write acknowledged by both may have no copy but the silent member's pair.
func TestAutoForget_NeedsThreeReplicas(t *testing.T) {
	r := ringAt(t, 5, 1_000_000, 2)
	for _, rf := range []int{1, 2} {
		if id, why, ok := r.AutoForget(rf, 60_000, 180_000); ok {
			t.Errorf("RF %d: forgot %s (%s)", rf, id, why)
		}
	}
	if _, _, ok := r.AutoForget(3, 60_000, 180_000); !ok {
		t.Fatal("RF 3: the silent member is not forgotten (the test ring is wrong)")
	}
}

// TestAutoForgetVerdicts: every unhealthy member gets one verdict, and the picked one agrees with
// AutoForgetFor; a member silent for less than afterMs waits; off means none.
func TestAutoForgetVerdicts(t *testing.T) {
	r := growBalanced(t, 6, 16, nil)
	// Every 10s (under MaxRingTimeGap, so no heartbeat credit) all heartbeat but m0001 after 10s
	// and m0004 after 90s: at 110s m0001 is 100s silent, m0004 20s.
	for at := int64(10_000); at <= 110_000; at += 10_000 {
		for _, id := range []MemberID{"m0000", "m0001", "m0002", "m0003", "m0004", "m0005"} {
			if (id == "m0001" && at > 10_000) || (id == "m0004" && at > 90_000) {
				continue
			}
			next, _, err := r.Apply(heartbeat(id), at)
			if err != nil {
				t.Fatal(err)
			}
			r = next
		}
	}
	p := Placement{RF: 3}
	if v := r.AutoForgetVerdicts(p, 10_000, 0); v != nil {
		t.Fatalf("off: %+v", v)
	}
	vs := r.AutoForgetVerdicts(p, 10_000, 30_000)
	got := map[MemberID]ForgetVerdict{}
	for _, v := range vs {
		got[v.Member] = v
	}
	pick, _, ok := r.AutoForgetFor(p, 10_000, 30_000)
	if len(vs) != 2 {
		t.Fatalf("verdicts %+v, want one for each of the 2 unhealthy members", vs)
	}
	if w := got["m0004"]; w.Next || !strings.Contains(w.Why, "waits: heartbeat 20s old, forgotten after 30s") {
		t.Errorf("m0004: %+v", w)
	}
	if w := got["m0001"]; ok && pick == "m0001" && !w.Next {
		t.Errorf("m0001 is AutoForgetFor's pick but its verdict is %+v", w)
	} else if !ok && !strings.Contains(w.Why, "blocked") {
		t.Errorf("m0001: no pick, verdict %+v, want blocked", w)
	}
}
