package ingester

import (
	"runtime/debug"
	"sync"
)

// bulkLoadGC raises the garbage collector's percentage (GOGC) while a joiner imports a hand-over
// and restores it when the imports end (-runtime.bulk-load-gogc, docs/memory.md).
//
// Why: the joiner's heap grows from nothing to the leaver's whole store, and a collection starts
// whenever the heap has grown by GOGC percent of what was live after the last one. At 100 that is
// at every doubling, and each collection marks everything imported so far again while most of what
// it finds is still live: at 1M series collections took 31% of the joiner's CPU (docs/handover.md).
// At 400 there are less than half as many (log 5 against log 2 per growth). The price is the peak:
// the heap may now reach five times what was live at the last collection before the next one; with
// f the part of an import's allocations that is garbage (frame payloads, decoded frames, the chunk
// and pending slabs let go after the commit; about half for series with several chunks), the peak
// is about (1+p)/(1+p·(1-f)) times the live heap, p = percent/100: 1.7 at 400 against 1.3 at 100,
// for f = 0.5. A soft memory limit (GOMEMLIMIT, -runtime.memory-limit-ratio) still makes the
// collector run before the limit, whatever the percentage. The WAL replay gets no window: its head
// chunks grow by doubling, so most of what it allocates is garbage and the peak would grow more.
//
// A percentage already at or above the window's (GOGC=off included) is left alone. Windows may
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
