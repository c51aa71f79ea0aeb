package ringstate

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

// Compare two versions with:
//
//	go test -run '^$' -bench . -count 10 ./ringstate/ > new.txt   # and old.txt from the other version
//	benchstat old.txt new.txt

// benchRing builds a ring of n members with tokens tokens each, all ACTIVE and healthy at ring time;
// every tenth member is LEAVING or unhealthy when degraded.
func benchRing(tb testing.TB, n, tokens int, degraded bool) *Ring {
	tb.Helper()
	rng := rand.New(rand.NewPCG(42, 42))
	const now = 1_000_000
	owned := map[Token]bool{}
	ms := make([]Member, n)
	for i := range ms {
		ts, err := GenerateTokens(tokens, func(t Token) bool { return owned[t] }, rng)
		if err != nil {
			tb.Fatal(err)
		}
		for _, t := range ts {
			owned[t] = true
		}
		ms[i] = Member{ID: MemberID(fmt.Sprintf("ingester-%03d", i)), RaftAddr: fmt.Sprintf("10.0.%d.%d:9095", i/250, i%250),
			State: ACTIVE, Tokens: ts, HeartbeatMs: now}
		if degraded && i%10 == 3 {
			ms[i].State = LEAVING
		}
		if degraded && i%10 == 7 {
			ms[i].HeartbeatMs = now - 120_000
		}
	}
	r, err := Restore(ms, now, nil)
	if err != nil {
		tb.Fatal(err)
	}
	return r
}

func BenchmarkReplicationSet(b *testing.B) {
	for _, degraded := range []bool{false, true} {
		name := "100x128-rf3-healthy"
		if degraded {
			name = "100x128-rf3-10pct-unhealthy-or-leaving"
		}
		b.Run(name, func(b *testing.B) {
			r := benchRing(b, 100, 128, degraded)
			dst := make([]*Member, 0, 3)
			var h uint32
			b.ReportAllocs()
			for b.Loop() {
				h = h*1664525 + 1013904223
				dst = r.ReplicationSet(h, 3, 60_000, dst)
			}
		})
	}
}

// TestReplicationSet_DoesNotAllocateWithReusedDst backs the benchmark's claim with a test.
func TestReplicationSet_DoesNotAllocateWithReusedDst(t *testing.T) {
	for _, degraded := range []bool{false, true} {
		r := benchRing(t, 100, 128, degraded)
		dst := make([]*Member, 0, 3)
		var h uint32
		allocs := testing.AllocsPerRun(2000, func() {
			h = h*1664525 + 1013904223
			dst = r.ReplicationSet(h, 3, 60_000, dst)
		})
		if allocs != 0 {
			t.Errorf("degraded=%v: %v allocs per lookup", degraded, allocs)
		}
	}
}

// TestReplicationSet_FewWritableWithTokenlessMembersStopsEarly: with fewer writable members than
// rf and members that own no tokens (PENDING), the walk stops once every owner was seen instead of
// scanning every token; checked by equality with the model on a large ring.
func TestReplicationSet_FewWritableWithTokenlessMembers(t *testing.T) {
	ms := benchRing(t, 50, 128, false).Members()
	for i := range ms {
		if i > 1 {
			ms[i].State = LEAVING
		}
	}
	ms = append(ms, Member{ID: "zz-pending", RaftAddr: "h:1", State: PENDING})
	r, err := Restore(ms, 1_000_000, nil)
	if err != nil {
		t.Fatal(err)
	}
	got := r.ReplicationSet(12345, 3, 0, nil)
	if len(got) != 2 {
		t.Fatalf("set %v", ids(got))
	}
}

func BenchmarkApplyHeartbeat(b *testing.B) {
	r := benchRing(b, 100, 128, false)
	ids := make([]MemberID, r.Len())
	for i := range ids {
		ids[i] = r.MemberAt(i).ID
	}
	now := r.TimeMs()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		now++
		next, _, err := r.Apply(Command{Op: OpHeartbeat, Member: ids[i%len(ids)]}, now)
		if err != nil {
			b.Fatal(err)
		}
		r = next
		i++
	}
}

func BenchmarkApplyClaimTokens(b *testing.B) {
	r := benchRing(b, 100, 128, false)
	id := r.MemberAt(0).ID
	// Alternate between two token sets so every claim changes the ring (and rebuilds its index).
	var sets [2]Tokens
	for k := range sets {
		ts, err := r.FreeTokens(128, rand.New(rand.NewPCG(uint64(k), 1)))
		if err != nil {
			b.Fatal(err)
		}
		sets[k] = ts
	}
	now := r.TimeMs()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		now++
		next, _, err := r.Apply(Command{Op: OpClaimTokens, Member: id, Tokens: sets[i%2], Replace: true}, now)
		if err != nil {
			b.Fatal(err)
		}
		r = next
		i++
	}
}
