package flush

import (
	"context"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
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
	for range 5 {
		if _, err := e.f.FlushAll(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	stop.Store(true)
	wg.Wait()
	got := union(e.bucketSamples(t, "t1"), memSamples(t, e.store, "t1"))
	if m := missing(acked, got); len(m) > 0 {
		t.Fatalf("%d of %d acknowledged samples lost, e.g. %s", len(m), len(acked), m[0])
	}
}
