package scale

import (
	"fmt"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/raftingest/raftingest/raftfsm"
	"github.com/raftingest/raftingest/ringstate"
)

// scaleMembers is the ring size of TestScale: $SCALE_MEMBERS (make scale: 1000), else 300 (about
// 10 s), or 200 under the race detector (about 40 s on 2 cores: two thirds of the CPU go to
// ringstate re-sorting every token at each join, on each of the 5 voters).
func scaleMembers(t testing.TB) int {
	if s := os.Getenv("SCALE_MEMBERS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 100 {
			t.Fatalf("SCALE_MEMBERS=%q: want a number of at least 100", s)
		}
		return n
	}
	if raceEnabled {
		return 200
	}
	return 300
}

// TestScale grows a ring to 100 and then to scaleMembers members on 5 voters in 3 zones, every
// member heartbeating, and checks the bounds of issue 16: ring commit p99 < 50 ms (virtual time),
// FSM snapshot < 4 MB, ownership spread ≤ 1.1, Raft entries a second flat (±20%) from 100 members to
// the full size; with 1% of the members stopped, auto-forget removes them one at a time and no
// simulated write loses its quorum or, before it could be flushed, its last copy.
func TestScale(t *testing.T) {
	n := scaleMembers(t)
	res := Run(t, Config{Members: n, FirstSize: 100, BatchWindow: raftfsm.DefaultHeartbeatBatchWindow, Seed: 16,
		Logf: t.Logf})
	report(t, res)
	for _, e := range res.Errors {
		t.Error(e)
	}
	if res.CommitP99 >= 50*time.Millisecond {
		t.Errorf("ring commit p99 %s, want < 50ms", res.CommitP99)
	}
	if res.SnapshotBytes >= 4<<20 {
		t.Errorf("FSM snapshot %d bytes, want < 4 MB", res.SnapshotBytes)
	}
	if res.Spread > 1.1 || res.Spread < 1 {
		t.Errorf("ownership spread %.4f, want 1 to 1.1", res.Spread)
	}
	if ratio := res.EntriesFull / res.EntriesFirst; res.EntriesFirst <= 0 || ratio < 0.8 || ratio > 1.2 {
		t.Errorf("Raft entries/s %.2f at 100 members, %.2f at %d: ratio %.2f, want 0.8 to 1.2", res.EntriesFirst,
			res.EntriesFull, n, ratio)
	}
	// The batches must be what keeps the rate flat: one entry per heartbeat would be n/5 a second.
	if perBeat := float64(n) / 5; res.EntriesFull > perBeat/4 {
		t.Errorf("%.2f entries/s at %d members: not far below one per heartbeat (%.0f/s)", res.EntriesFull, n, perBeat)
	}
	// Follower voters forward their members' heartbeats in batches: 1+λw a request for λ heartbeats a
	// second a voter and a 50ms window (1.4 at 200 members, 1.6 at 300, 3 at 1,000).
	if per := float64(res.ForwardedBeats) / float64(max(res.Forwards, 1)); res.Forwards == 0 || per < 1.2 {
		t.Errorf("%d forwards carried %d heartbeats (%.2f each), want more than 1.2 each", res.Forwards, res.ForwardedBeats, per)
	}
	if res.HeartbeatErrors > 0 || res.Heartbeats == 0 {
		t.Errorf("%d heartbeats acknowledged, %d failed; want all acknowledged", res.Heartbeats, res.HeartbeatErrors)
	}
	if want := max(1, n/100); len(res.Forgotten) != want || len(res.Killed) != want {
		t.Errorf("stopped %v, forgotten %v: want %d, one at a time", res.Killed, res.Forgotten, want)
	}
	for i := range res.Forgotten {
		if res.Forgotten[i] != res.Killed[i] {
			t.Errorf("forget %d: %s, but %s was stopped", i, res.Forgotten[i], res.Killed[i])
		}
	}
	if res.Writes == 0 || res.WritesNoQuorum > 0 || res.WritesLost > 0 {
		t.Errorf("%d simulated writes: %d without a quorum of live replicas, %d lost; want some writes, none failed",
			res.Writes, res.WritesNoQuorum, res.WritesLost)
	}
	// The ring the lookup benchmark measures is the one the cluster committed.
	built, err := BuildRing(n, 128, 3)
	if err != nil {
		t.Fatal(err)
	}
	if res.Ring == nil || built.Len() != res.Ring.Len() {
		t.Fatalf("BuildRing gave %d members, the cluster committed %v", built.Len(), res.Ring)
	}
	for i := range built.Len() {
		a, b := built.MemberAt(i), res.Ring.MemberAt(i)
		if a.ID != b.ID || a.Zone != b.Zone || fmt.Sprint(a.Tokens) != fmt.Sprint(b.Tokens) {
			t.Fatalf("member %d: BuildRing has %s (%s), the cluster %s (%s), or their tokens differ", i, a.ID, a.Zone, b.ID, b.Zone)
		}
	}
}

// TestScale_UnbatchedGrows is the control: without batching the entry rate grows with the ring
// (one entry per heartbeat), which is what TestScale's flat rate is measured against.
func TestScale_UnbatchedGrows(t *testing.T) {
	res := Run(t, Config{Members: 100, FirstSize: 50, Tokens: 16, Kill: -1, MeasureFor: 30 * time.Second, Seed: 16})
	for _, e := range res.Errors {
		t.Error(e)
	}
	t.Logf("unbatched: %.2f entries/s at 50 members, %.2f at 100", res.EntriesFirst, res.EntriesFull)
	if res.EntriesFirst < 8 || res.EntriesFull < 1.6*res.EntriesFirst {
		t.Errorf("unbatched: %.2f entries/s at 50 members, %.2f at 100: want about 10 and 20", res.EntriesFirst, res.EntriesFull)
	}
}

func report(t *testing.T, r *Result) {
	t.Logf("members=%d commits=%d commit_p99=%s commit_max=%s heartbeats=%d heartbeat_ack_p99=%s max_batch=%d "+
		"forwards=%d carrying %d heartbeats (%.1f each) "+
		"snapshot_bytes=%d spread=%.4f entries/s: %.2f at 100, %.2f at %d; co-replicas per member mean %.0f max %d; "+
		"stopped %v forgotten %v after %v; writes=%d no_quorum=%d lost=%d; virtual %s wall %s",
		r.Members, r.Commits, r.CommitP99, r.CommitMax, r.Heartbeats, r.HeartbeatP99, r.MaxBatch,
		r.Forwards, r.ForwardedBeats, float64(r.ForwardedBeats)/float64(max(r.Forwards, 1)), r.SnapshotBytes, r.Spread,
		r.EntriesFirst, r.EntriesFull, r.Members, r.CoReplicasMean, r.CoReplicasMax, r.Killed, r.Forgotten, r.ForgetAfter,
		r.Writes, r.WritesNoQuorum, r.WritesLost, r.Virtual.Round(time.Second), r.WallRun.Round(time.Millisecond))
	if out := os.Getenv("SCALE_RESULT"); out != "" {
		line := fmt.Sprintf("members=%d commit_p99_ms=%.2f snapshot_bytes=%d ownership_spread=%.4f entries_per_s_100=%.2f entries_per_s_%d=%.2f\n",
			r.Members, float64(r.CommitP99)/1e6, r.SnapshotBytes, r.Spread, r.EntriesFirst, r.Members, r.EntriesFull)
		if err := os.WriteFile(out, []byte(line), 0o644); err != nil {
			t.Error(err)
		}
	}
}

// BenchmarkScaleLookup is the replication-set lookup (RF 3, with health) on the ring TestScale
// commits ($SCALE_MEMBERS members, 128 balanced tokens each, 3 zones): ns/op and allocations.
func BenchmarkScaleLookup(b *testing.B) {
	n := scaleMembers(b)
	r, err := BuildRing(n, 128, 3)
	if err != nil {
		b.Fatal(err)
	}
	dst := make([]*ringstate.Member, 0, replication)
	var h uint32
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		h = h*1664525 + 1013904223
		dst = r.ReplicationSet(h, replication, 60_000, dst)
	}
	if len(dst) != replication {
		b.Fatalf("replication set of %d members", len(dst))
	}
}

// TestScaleLookup_DoesNotAllocate backs the benchmark's 0 allocations with a test.
func TestScaleLookup_DoesNotAllocate(t *testing.T) {
	r, err := BuildRing(100, 128, 3) // allocations do not depend on the size; time does
	if err != nil {
		t.Fatal(err)
	}
	dst := make([]*ringstate.Member, 0, replication)
	var h uint32
	if a := testing.AllocsPerRun(5000, func() {
		h = h*1664525 + 1013904223
		dst = r.ReplicationSet(h, replication, 60_000, dst)
	}); a != 0 {
		t.Errorf("%v allocations per lookup", a)
	}
}
