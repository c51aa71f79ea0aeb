package ingester

import (
	"runtime/debug"
	"testing"
)

// gcPercent reads the runtime's percentage without changing it.
func gcPercent() int {
	p := debug.SetGCPercent(100)
	debug.SetGCPercent(p)
	return p
}

func TestBulkLoadGC(t *testing.T) {
	orig := gcPercent()
	t.Cleanup(func() { debug.SetGCPercent(orig) })

	for _, tc := range []struct {
		name          string
		before, limit int
		during        int
	}{
		{"raised from the default", 100, 400, 400},
		{"raised from a lower GOGC", 50, 400, 400},
		{"a higher GOGC is left alone", 800, 400, 800},
		{"GOGC=off is left alone", -1, 400, -1},
		{"0 opens no window", 100, 0, 100},
	} {
		t.Run(tc.name, func(t *testing.T) {
			debug.SetGCPercent(tc.before)
			var w bulkLoadGC
			end1 := w.begin(tc.limit)
			if got := gcPercent(); got != tc.during {
				t.Fatalf("in the window: GOGC %d, want %d", got, tc.during)
			}
			end2 := w.begin(tc.limit) // an overlapping load
			end1()
			if got := gcPercent(); got != tc.during {
				t.Fatalf("one of two loads ended: GOGC %d, want still %d", got, tc.during)
			}
			end1() // a second call changes nothing
			if got := gcPercent(); got != tc.during {
				t.Fatalf("an end called twice closed the window early: GOGC %d, want %d", got, tc.during)
			}
			end2()
			if got := gcPercent(); got != tc.before {
				t.Fatalf("after the last load: GOGC %d, want %d restored", got, tc.before)
			}
		})
	}
}
