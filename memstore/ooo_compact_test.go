package memstore

import (
	"math/rand/v2"
	"testing"
)

// TestOOO_CompactionBoundsTheDuplicateCheck: out-of-order samples spread over the window (each
// chunk cut from them overlaps every other) are compacted every oooCompactAfter chunks into sorted,
// non-overlapping ones, so a duplicate check decodes at most one merged chunk and the few newer
// ones; every accepted sample stays readable with its value, and a conflicting value is still
// refused after the compaction (the duplicate rule holds).
func TestOOO_CompactionBoundsTheDuplicateCheck(t *testing.T) {
	s := &memSeries{}
	rng := rand.New(rand.NewPCG(1, 2))
	want := map[int64]float64{}
	chunks := 0
	for len(want) < 40_000 {
		ts := rng.Int64N(1_000_000)
		if _, dup := want[ts]; dup {
			continue
		}
		want[ts] = float64(ts) / 7
		chunks += s.insertOOO(Sample{T: ts, V: float64(ts) / 7})
	}
	o := s.ooo
	if unmerged := len(o.chunks) - o.merged; unmerged > oooCompactAfter {
		t.Fatalf("%d chunks cut since the last compaction, want at most %d", unmerged, oooCompactAfter)
	}
	if chunks != len(o.chunks) {
		t.Errorf("insertOOO reported %d chunks in all, the series holds %d", chunks, len(o.chunks))
	}
	for i := 1; i < o.merged; i++ {
		if o.chunks[i].MinTime <= o.chunks[i-1].MaxTime {
			t.Fatalf("merged chunks %d and %d overlap: [%d, %d] and [%d, %d]", i-1, i,
				o.chunks[i-1].MinTime, o.chunks[i-1].MaxTime, o.chunks[i].MinTime, o.chunks[i].MaxTime)
		}
	}
	// A timestamp is covered by at most one merged chunk and the unmerged ones.
	for _, probe := range []int64{0, 123_456, 500_000, 999_999} {
		covering := 0
		for _, c := range o.chunks[:o.merged] {
			if c.MinTime <= probe && probe <= c.MaxTime {
				covering++
			}
		}
		if covering > 1 {
			t.Fatalf("%d merged chunks cover %d", covering, probe)
		}
	}
	n := 0
	for ts, v := range want {
		got, ok, _ := s.sampleAt(ts)
		if !ok || got != v {
			t.Fatalf("sample at %d: %v %v, want %v", ts, got, ok, v)
		}
		if n++; n > 2000 {
			break
		}
	}
	for ts := range want {
		if r, _ := s.checkOOO(ts, -1, 1<<40); r != appendDuplicate {
			t.Fatalf("a conflicting value at %d after compactions: %v, want appendDuplicate", ts, r)
		}
		break
	}
}
