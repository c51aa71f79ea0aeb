package ringstate

import (
	"math"
	"testing"
)

func TestMember_Healthy_Boundaries(t *testing.T) {
	m := Member{HeartbeatMs: 1000}
	cases := []struct {
		rule           string
		now, timeout   int64
		healthy        bool
		writableActive bool
	}{
		{"fresh heartbeat is healthy", 1000, 100, true, true},
		{"exactly at timeout is healthy", 1100, 100, true, true},
		{"one ms past timeout is not", 1101, 100, false, false},
		{"heartbeat in the future is healthy", 900, 100, true, true},
		{"zero timeout disables the check", math.MaxInt64, 0, true, true},
		{"negative timeout disables the check", math.MaxInt64, -5, true, true},
	}
	for _, tc := range cases {
		t.Run(tc.rule, func(t *testing.T) {
			if got := m.Healthy(tc.now, tc.timeout); got != tc.healthy {
				t.Fatalf("Healthy(%d, %d) = %v", tc.now, tc.timeout, got)
			}
			a := m
			a.State = ACTIVE
			if a.Writable(tc.now, tc.timeout) != tc.writableActive || a.Readable(tc.now, tc.timeout) != tc.healthy {
				t.Fatal("Writable/Readable disagree with Healthy")
			}
		})
	}
	for _, s := range []State{PENDING, JOINING, LEAVING} {
		x := Member{State: s, HeartbeatMs: 1000}
		if x.Writable(1000, 100) {
			t.Errorf("%s member writable", s)
		}
		if x.Readable(1000, 100) != (s == LEAVING) {
			t.Errorf("%s member readable = %v", s, x.Readable(1000, 100))
		}
	}
}

// Regression: Healthy computed nowMs-HeartbeatMs in int64, which wraps negative for extreme
// timestamps (a restored heartbeat far in the past) and then reported a long-dead member healthy.
func TestMember_Healthy_NoOverflowAtExtremeTimes(t *testing.T) {
	cases := []struct {
		hb, now, timeout int64
		want             bool
	}{
		{math.MinInt64, math.MaxInt64, 1000, false},
		{-1, math.MaxInt64, 1000, false},
		{math.MinInt64, 0, math.MaxInt64, false},
		{math.MinInt64 + 1, 0, math.MaxInt64, true},
		{math.MaxInt64, math.MinInt64, 1, true},
		{0, math.MaxInt64, math.MaxInt64, true},
	}
	for _, tc := range cases {
		m := Member{HeartbeatMs: tc.hb}
		if got := m.Healthy(tc.now, tc.timeout); got != tc.want {
			t.Errorf("heartbeat %d, now %d, timeout %d: healthy = %v, want %v", tc.hb, tc.now, tc.timeout, got, tc.want)
		}
	}
}

// TestRing_Health_CoastsWhenRingTimeStops: a ring whose time stops advancing (no quorum, nothing
// applied) keeps every member exactly as healthy as it was, however long the wall clock runs.
func TestRing_Health_CoastsWhenRingTimeStops(t *testing.T) {
	r := mustApply(t, New(), register("a"), claim("a", 1), activate("a"), register("b"), claim("b", 2), activate("b"))
	r, _, _ = r.Apply(heartbeat("a"), 10_000) // a heartbeats at 10s; b's last heartbeat is older
	const timeout = 5_000
	before := r.CountByState(timeout)
	set := r.ReplicationSet(0, 2, timeout, nil)
	// Nothing is applied for an hour: ring time stays, so health stays.
	for range 3 {
		if got := r.CountByState(timeout); !mapsEqual(got, before) {
			t.Fatalf("counts changed without ring time moving: %v -> %v", before, got)
		}
	}
	if len(set) != 1 || set[0].ID != "a" {
		t.Fatalf("replication set %v", ids(set))
	}
	if before["ACTIVE"] != 1 || before["UNHEALTHY"] != 1 {
		t.Fatalf("counts %v", before)
	}
	// An entry stamped by a leader whose clock is behind does not move ring time either.
	r2, _, _ := r.Apply(heartbeat("ghost"), 1)
	if !mapsEqual(r2.CountByState(timeout), before) {
		t.Fatal("an older entry changed health")
	}
	// When ring time does move past the timeout, a goes unhealthy too.
	r3, _, _ := r.Apply(heartbeat("ghost"), 10_000+timeout+1)
	if got := r3.CountByState(timeout); got["UNHEALTHY"] != 2 {
		t.Fatalf("counts %v", got)
	}
}

func TestRing_CountByState_CountsUnhealthySeparately(t *testing.T) {
	r := zoo(t)
	// Everyone healthy with the check disabled.
	got := r.CountByState(0)
	want := map[string]int{"ACTIVE": 2, "LEAVING": 2, "PENDING": 2, "JOINING": 2, "UNHEALTHY": 0}
	if !mapsEqual(got, want) {
		t.Fatalf("counts %v, want %v", got, want)
	}
	// Move ring time on and heartbeat only a: every other member is UNHEALTHY, not its state.
	r, _, _ = r.Apply(heartbeat("a"), r.TimeMs()+1_000_000)
	got = r.CountByState(1000)
	want = map[string]int{"ACTIVE": 1, "LEAVING": 0, "PENDING": 0, "JOINING": 0, "UNHEALTHY": 7}
	if !mapsEqual(got, want) {
		t.Fatalf("counts %v, want %v", got, want)
	}
}

func mapsEqual(a, b map[string]int) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

func ids(ms []*Member) []MemberID {
	out := make([]MemberID, len(ms))
	for i, m := range ms {
		out[i] = m.ID
	}
	return out
}

// Regression (health did not coast on recovery): after a quorum outage longer than the heartbeat
// timeout, ring time jumped by the whole outage at the first new entry, and every member whose own
// heartbeat had not committed yet turned UNHEALTHY at once — cortex#157 at recovery. A jump of more
// than MaxRingTimeGap now advances heartbeat ages by at most MaxRingTimeGap.
func TestRing_Apply_OutageGap_HealthCoasts(t *testing.T) {
	const timeout = 60_000 // the default -ring.heartbeat-timeout
	const t0 = 1_000_000
	cases := []struct {
		rule string
		gap  int64 // from the last entry before the outage to the first after it
		// ages (ms) of a fresh member and of one already stale before the gap, after it
		wantFresh, wantStale int64
	}{
		{"normal gap between entries: ages advance by the gap", 5_000, 5_000, timeout + 1_000 + 5_000},
		{"gap exactly at the cap is not an outage", MaxRingTimeGap, MaxRingTimeGap, timeout + 1_000 + MaxRingTimeGap},
		{"2-minute outage: ages advance by the cap only", 120_000, MaxRingTimeGap, timeout + 1_000 + MaxRingTimeGap},
		{"1-hour outage: ages advance by the cap only", 3_600_000, MaxRingTimeGap, timeout + 1_000 + MaxRingTimeGap},
	}
	for _, tc := range cases {
		t.Run(tc.rule, func(t *testing.T) {
			// stale last heartbeated timeout+1s before t0, and other kept the cluster committing
			// with heartbeats every 20s since (no gap above the cap); fresh registered at t0.
			r := mustApplyAt(t, New(), t0-timeout-1_000, register("stale"), register("other"))
			for at := int64(t0 - timeout - 1_000 + 20_000); at < t0; at += 20_000 {
				r = mustApplyAt(t, r, at, heartbeat("other"))
			}
			r = mustApplyAt(t, r, t0, register("fresh"), heartbeat("other"))
			if m, _ := r.Member("stale"); m.Healthy(r.TimeMs(), timeout) {
				t.Fatal("setup: stale member is healthy")
			}
			before := deepCopy(r)
			// The first entry after the gap is "other"'s heartbeat.
			next := mustApplyAt(t, r, t0+tc.gap, heartbeat("other"))
			if err := ringsEqual(r, before); err != nil {
				t.Fatalf("Apply wrote into its receiver: %v", err)
			}
			if err := checkInvariants(next); err != nil {
				t.Fatal(err)
			}
			if next.TimeMs() != t0+tc.gap {
				t.Fatalf("ring time %d, want %d", next.TimeMs(), t0+tc.gap)
			}
			fresh, _ := next.Member("fresh")
			stale, _ := next.Member("stale")
			other, _ := next.Member("other")
			if age := next.TimeMs() - fresh.HeartbeatMs; age != tc.wantFresh {
				t.Errorf("fresh member's age %dms, want %dms", age, tc.wantFresh)
			}
			if age := next.TimeMs() - stale.HeartbeatMs; age != tc.wantStale {
				t.Errorf("stale member's age %dms, want %dms", age, tc.wantStale)
			}
			if other.HeartbeatMs != next.TimeMs() {
				t.Errorf("the heartbeating member's heartbeat %d, want ring time %d", other.HeartbeatMs, next.TimeMs())
			}
			if tc.gap > timeout && !fresh.Healthy(next.TimeMs(), timeout) {
				t.Errorf("a member healthy before the outage is UNHEALTHY at the first entry after it")
			}
			if stale.Healthy(next.TimeMs(), timeout) {
				t.Errorf("a member stale before the outage turned healthy")
			}
			// A refused command credits the same way: every replica applies the gap identically.
			refused, _, err := r.Apply(activate("nobody"), t0+tc.gap)
			if err == nil {
				t.Fatal("activate of an unknown member accepted")
			}
			if f, _ := refused.Member("fresh"); f.HeartbeatMs != fresh.HeartbeatMs {
				t.Errorf("refused command credited %d, accepted one %d", f.HeartbeatMs, fresh.HeartbeatMs)
			}
		})
	}
}

func mustApplyAt(t *testing.T, r *Ring, now int64, cmds ...Command) *Ring {
	t.Helper()
	for _, c := range cmds {
		next, _, err := r.Apply(c, now)
		if err != nil {
			t.Fatalf("%s %s: %v", c.Op, c.Member, err)
		}
		r = next
	}
	return r
}
