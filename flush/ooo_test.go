package flush

import (
	"context"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/oklog/ulid/v2"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/tsdb"
	"github.com/prometheus/prometheus/tsdb/chunks"

	"github.com/raftingest/raftingest/memstore"
)

// Out-of-order samples that arrive after their range was flushed (FlushAll wrote everything) go
// into a new block of that range; the bucket then holds every sample once per timestamp, every
// block's series have sorted, non-overlapping chunks, and promtool analyzes each block.
func TestFlush_OutOfOrderSamplesGoIntoTheirBlocks(t *testing.T) {
	e := newEnv(t, nil, nil)
	e.store.SetOutOfOrderWindow(func(string) time.Duration { return 4 * time.Hour })
	lset := labels.FromStrings("__name__", "m", "job", "a")
	hour := int64(time.Hour / time.Millisecond)
	want := e.push(t, "t1", lset, 0, 3*hour, 15_000)
	if _, err := e.f.FlushAll(context.Background()); err != nil {
		t.Fatal(err)
	}
	// Out of order, in the first range [0, 2h), already flushed, and in the second one.
	var ooo []memstore.Sample
	for ts := int64(7_500); ts < 3*hour; ts += 600_000 {
		ooo = append(ooo, memstore.Sample{T: ts, V: -float64(ts)})
		want[fmt.Sprintf("%s %d %x", lset, ts, math.Float64bits(-float64(ts)))] = true
	}
	res, err := e.store.Push("t1", []memstore.SeriesSamples{{Labels: lset, Samples: ooo}})
	if err != nil || res.Refused > 0 || res.Accepted != len(ooo) {
		t.Fatalf("out-of-order push: %v %+v", err, res)
	}
	r, err := e.f.FlushAll(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if r.Blocks != 2 || r.Samples != len(ooo) {
		t.Fatalf("second flush: want 2 blocks with the %d out-of-order samples, got %+v", len(ooo), r)
	}
	if left := memSamples(t, e.store, "t1"); len(left) != 0 {
		t.Fatalf("memory after the flush: %d samples left", len(left))
	}
	got := e.bucketSamples(t, "t1")
	if m := missing(want, got); len(m) > 0 || len(got) != len(want) {
		t.Fatalf("bucket: %d samples, want %d; missing e.g. %v", len(got), len(want), m)
	}
	// A third flush writes nothing: the out-of-order samples were dropped with their mark.
	if r, err := e.f.FlushAll(context.Background()); err != nil || r.Blocks != 0 {
		t.Fatalf("third flush: %+v %v", r, err)
	}
	checkBlocks(t, filepath.Join(e.root, "t1"), 4)
}

// checkBlocks opens every block under dir with Prometheus's reader and checks that each series'
// chunks are sorted and do not overlap, and runs promtool tsdb analyze on each when installed.
func checkBlocks(t *testing.T, dir string, wantBlocks int) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, ent := range ents {
		if _, err := ulid.Parse(ent.Name()); err != nil || !ent.IsDir() {
			continue
		}
		n++
		b, err := tsdb.OpenBlock(nil, filepath.Join(dir, ent.Name()), nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		ir, err := b.Index()
		if err != nil {
			t.Fatal(err)
		}
		name, value := "", ""
		p, err := ir.Postings(context.Background(), name, value)
		if err != nil {
			t.Fatal(err)
		}
		var builder labels.ScratchBuilder
		var metas []chunks.Meta
		for p.Next() {
			if err := ir.Series(p.At(), &builder, &metas); err != nil {
				t.Fatal(err)
			}
			for i := 1; i < len(metas); i++ {
				if metas[i].MinTime <= metas[i-1].MaxTime {
					t.Fatalf("block %s: chunks %d and %d overlap", ent.Name(), i-1, i)
				}
			}
		}
		ir.Close()
		b.Close()
		if promtool, err := exec.LookPath("promtool"); err == nil {
			if out, err := exec.Command(promtool, "tsdb", "analyze", dir, ent.Name()).CombinedOutput(); err != nil {
				t.Fatalf("promtool tsdb analyze %s: %v\n%s", ent.Name(), err, out)
			}
		}
	}
	if n != wantBlocks {
		t.Fatalf("%d blocks under %s, want %d", n, dir, wantBlocks)
	}
}

// Out-of-order samples pushed while flushes run are never lost: each is in the bucket or in
// memory at the end.
func TestFlush_ConcurrentOutOfOrderLoseNothing(t *testing.T) {
	e := newEnv(t, nil, nil)
	e.store.SetOutOfOrderWindow(func(string) time.Duration { return time.Hour })
	var (
		mu    sync.Mutex
		acked = map[string]bool{}
		wg    sync.WaitGroup
		stop  atomic.Bool
	)
	for w := range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l := labels.FromStrings("__name__", "c", "w", fmt.Sprint(w))
			for ts := int64(100_000); !stop.Load(); ts += 1000 {
				smps := []memstore.Sample{{T: ts, V: float64(ts)}, {T: ts - 50_500, V: -float64(ts)}}
				res, err := e.store.Push("t1", []memstore.SeriesSamples{{Labels: l, Samples: smps}})
				if err != nil || res.Refused > 0 {
					t.Errorf("push: %v %+v", err, res.Errors)
					return
				}
				mu.Lock()
				for _, s := range smps {
					acked[fmt.Sprintf("%s %d %x", l, s.T, math.Float64bits(s.V))] = true
				}
				mu.Unlock()
			}
		}()
	}
	flushedOOO := 0
	for range 20 {
		time.Sleep(10 * time.Millisecond)
		r, err := e.f.FlushAll(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		flushedOOO += r.Samples
	}
	stop.Store(true)
	wg.Wait()
	mu.Lock()
	n := len(acked)
	mu.Unlock()
	if n < 200 || flushedOOO == 0 {
		t.Fatalf("%d samples acknowledged, %d flushed: the test exercised nothing", n, flushedOOO)
	}
	got := union(e.bucketSamples(t, "t1"), memSamples(t, e.store, "t1"))
	if m := missing(acked, got); len(m) > 0 {
		slices.Sort(m)
		t.Fatalf("%d of %d acknowledged samples lost, e.g. %s", len(m), len(acked), m[0])
	}
	// The WAL as a kill -9 would leave it (a copy of the fsynced file) replays, with the window at
	// 0, everything the bucket does not hold: the drops filtered no unflushed sample out of it.
	walCopy := t.TempDir()
	raw, err := os.ReadFile(filepath.Join(e.dir, "wal", memstore.WALFileName))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(walCopy, memstore.WALFileName), raw, 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := memstore.DefaultConfig()
	cfg.WALDir = walCopy
	replayed, err := memstore.Open(cfg, nil, quiet())
	if err != nil {
		t.Fatal(err)
	}
	defer replayed.Close()
	if m := missing(acked, union(e.bucketSamples(t, "t1"), memSamples(t, replayed, "t1"))); len(m) > 0 {
		slices.Sort(m)
		t.Fatalf("after a replay, %d of %d acknowledged samples lost, e.g. %s", len(m), len(acked), m[0])
	}
	// Once the writers stop, one more flush empties memory: out-of-order samples do not pile up.
	if _, err := e.f.FlushAll(context.Background()); err != nil {
		t.Fatal(err)
	}
	if left := memSamples(t, e.store, "t1"); len(left) != 0 {
		t.Fatalf("%d samples left in memory after a flush with nothing arriving", len(left))
	}
	if m := missing(acked, e.bucketSamples(t, "t1")); len(m) > 0 {
		t.Fatalf("%d of %d acknowledged samples not in the bucket after the last flush, e.g. %s", len(m), len(acked), m[0])
	}
}

// A periodic flush leaves the chunk straddling its cutoff whole in memory; an out-of-order sample
// that then arrives below the cutoff is written by the next periodic flush into a block of its
// range, alone: the straddling chunk's samples below the cutoff are not written twice. Over all
// flushes, the blocks hold each pushed sample exactly once.
func TestFlushDue_OutOfOrderBelowTheCutoffNotDuplicated(t *testing.T) {
	e := newEnv(t, nil, nil)
	e.store.SetOutOfOrderWindow(func(string) time.Duration { return 4 * time.Hour })
	lset := labels.FromStrings("__name__", "active")
	want := e.push(t, "t1", lset, 0, 5*hour, 90_000) // chunks of 120 samples span 3h: [3h, 5h) straddles 4h
	e.now.Store(5*hour + hour/2)                     // cutoff 4h
	written := 0
	r, err := e.f.FlushDue(context.Background())
	if err != nil || r.Blocks != 2 {
		t.Fatalf("first flush: %+v %v, want the blocks [0,2h) and [2h,4h)", r, err)
	}
	written += r.Samples
	ooo := []memstore.Sample{{T: 3*hour + hour/2 + 45_000, V: -1}, {T: 4*hour + hour/2 + 45_000, V: -2}}
	res, err := e.store.Push("t1", []memstore.SeriesSamples{{Labels: lset, Samples: ooo}})
	if err != nil || res.Refused > 0 {
		t.Fatalf("out-of-order push: %v %+v", err, res)
	}
	for _, s := range ooo {
		want[fmt.Sprintf("%s %d %x", lset, s.T, math.Float64bits(s.V))] = true
	}
	r, err = e.f.FlushDue(context.Background())
	if err != nil || r.Blocks != 1 || r.Samples != 1 {
		t.Fatalf("second periodic flush: %+v %v, want one block with the one out-of-order sample below 4h", r, err)
	}
	written += r.Samples
	r, err = e.f.FlushAll(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	written += r.Samples
	if written != len(want) {
		t.Fatalf("the flushes wrote %d samples, %d were pushed: some twice or lost", written, len(want))
	}
	got := e.bucketSamples(t, "t1")
	if m := missing(want, got); len(m) > 0 || len(got) != len(want) {
		t.Fatalf("bucket: %d samples, want %d; missing e.g. %v", len(got), len(want), m)
	}
	if st := e.store.Stats("t1"); st.Series != 0 {
		t.Fatalf("memory after FlushAll: %+v", st)
	}
}
