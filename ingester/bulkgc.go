package ingester

import (
	"runtime/debug"
	"sync"
)

// bulkLoadGC raises the garbage collector's percentage (GOGC) while the store is loaded in bulk —
// the WAL replay at start, a hand-over's import on a joiner — and restores it when the last load
// ends (-runtime.bulk-load-gogc).
//
// Why: during a bulk load nearly everything allocated stays live (series, labels, chunk bytes,
// postings, all kept), so the collections GOGC=100 starts at every doubling of the heap mark the
// whole store again and free little; at 1M series they were a sixth of the joiner's CPU
// (docs/handover.md). The bound on memory barely moves: the heap grows by what the load keeps,
// and a collection is started once the garbage made since the last one reaches percent/100 of what
// was live then; since the load's garbage (frame buffers, decode scratch) is a small part of what it
// allocates, the heap stays close to what the load keeps. A soft memory limit (GOMEMLIMIT,
// -runtime.memory-limit-ratio) still makes the collector run before the limit whatever the
// percentage.
//
// A percentage already at or above the window's (GOGC=off included) is left alone. Loads may
// overlap (several servers in one test process share the runtime): the first raises, the last
// restores what the first found.
type bulkLoadGC struct {
	mu    sync.Mutex
	open  int
	saved int  // the percentage the first open load found
	set   bool // whether the first open load changed it
}

// processBulkGC is the runtime's one window: the percentage is the process's, not a server's.
var processBulkGC bulkLoadGC

// begin opens a window at percent (0: no window) and returns the function that closes it; the
// returned function is safe to call more than once.
func (w *bulkLoadGC) begin(percent int) (end func()) {
	if percent <= 0 {
		return func() {}
	}
	w.mu.Lock()
	if w.open == 0 {
		prev := debug.SetGCPercent(percent)
		w.saved, w.set = prev, true
		if prev < 0 || prev >= percent {
			debug.SetGCPercent(prev)
			w.set = false
		}
	}
	w.open++
	w.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			w.mu.Lock()
			defer w.mu.Unlock()
			if w.open--; w.open == 0 && w.set {
				debug.SetGCPercent(w.saved)
				w.set = false
			}
		})
	}
}
