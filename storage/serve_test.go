package storage

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"github.com/prometheus/prometheus/tsdb/chunks"

	tenantctx "github.com/raftingest/raftingest/tenant"
)

// servedSeries is what SelectChunks gave for one series, copied out of the call.
type servedSeries struct {
	lset   labels.Labels
	chunks []chunks.Meta // bytes copied
}

func selectChunks(t *testing.T, q *BucketQueryable, ctx context.Context, mint, maxt int64, labelsOnly bool, ms ...*labels.Matcher) ([]servedSeries, error) {
	t.Helper()
	var out []servedSeries
	err := q.SelectChunks(ctx, mint, maxt, labelsOnly, ms, func(lset labels.Labels, chks []chunks.Meta) error {
		s := servedSeries{lset: lset.Copy()}
		for _, c := range chks {
			data := bytes.Clone(c.Chunk.Bytes())
			chk, err := chunkenc.FromData(c.Chunk.Encoding(), data)
			if err != nil {
				return err
			}
			s.chunks = append(s.chunks, chunks.Meta{MinTime: c.MinTime, MaxTime: c.MaxTime, Chunk: chk})
		}
		out = append(out, s)
		return nil
	})
	return out, err
}

// Three replicas flush the same series into three blocks of the same range, each cutting its
// chunks at other samples, and a later range is flushed twice into identical blocks. SelectChunks
// over a real filesystem bucket answers each label set once, in label order, with chunks that never
// overlap and hold exactly the union of the samples (each timestamp once); the later range's chunks,
// overlapped only by their exact copies, come through once, byte for byte as stored; labels-only reads the same label sets without
// chunks; a matcher narrows; another tenant sees nothing; a context that ended stops it.
func TestBucketQueryable_SelectChunks(t *testing.T) {
	const h = int64(3600_000)
	root := t.TempDir()
	bkt, err := NewFilesystemBucket(root)
	if err != nil {
		t.Fatal(err)
	}
	q := NewBucketQueryable(bkt, root, t.TempDir(), nil)
	defer q.Close()

	// Same samples, chunks of 120, 100 and 77 samples: the replicas' chunks overlap unequally.
	want := map[string]bool{}
	for _, per := range []int{120, 100, 77} {
		ss, w := testSeries(t, 20, 0, 2*h, 15_000, 0, 2*h)
		for i := range ss {
			ss[i].Chunks = xorChunks(t, samplesOf(t, ss[i].Chunks), per)
		}
		uploadSeries(t, bkt, "t1", ss, 0, 2*h)
		for k := range w {
			want[k] = true
		}
	}
	// The later range flushed twice (identical blocks): its chunks are exact copies, kept once as stored.
	later, wLater := testSeries(t, 20, 2*h, 3*h, 15_000, 2*h, 3*h)
	uploadSeries(t, bkt, "t1", later, 2*h, 3*h)
	uploadSeries(t, bkt, "t1", later, 2*h, 3*h)
	for k := range wLater {
		want[k] = true
	}
	stored := map[string][]byte{} // the later block's chunks, by series and min time
	for _, s := range later {
		for _, c := range s.Chunks {
			stored[fmt.Sprintf("%s@%d", s.Labels, c.MinTime)] = c.Chunk.Bytes()
		}
	}

	ctx := tenantctx.With(context.Background(), "t1")
	all := labels.MustNewMatcher(labels.MatchRegexp, "__name__", ".+")
	got, err := selectChunks(t, q, ctx, math.MinInt64, math.MaxInt64, false, all)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 20 {
		t.Fatalf("%d series, want 20", len(got))
	}
	samples := map[string]bool{}
	passedAsStored := 0
	for i, s := range got {
		if i > 0 && labels.Compare(got[i-1].lset, s.lset) >= 0 {
			t.Fatalf("series %s after %s: not sorted or repeated", s.lset, got[i-1].lset)
		}
		prevMax := int64(math.MinInt64)
		for _, c := range s.chunks {
			if c.MinTime <= prevMax {
				t.Fatalf("series %s: chunk [%d, %d] overlaps the previous one (ends %d)", s.lset, c.MinTime, c.MaxTime, prevMax)
			}
			prevMax = c.MaxTime
			if b, ok := stored[fmt.Sprintf("%s@%d", s.lset, c.MinTime)]; ok && bytes.Equal(b, c.Chunk.Bytes()) {
				passedAsStored++
			}
			it := c.Chunk.Iterator(nil)
			for it.Next() == chunkenc.ValFloat {
				ts, v := it.At()
				k := key(s.lset, sample{ts, v})
				if samples[k] {
					t.Fatalf("sample %s twice", k)
				}
				samples[k] = true
			}
			if it.Err() != nil {
				t.Fatal(it.Err())
			}
		}
	}
	requireSameKeys(t, want, samples)
	if passedAsStored != len(stored) {
		t.Fatalf("%d of the %d chunks only the later block holds came through as stored", passedAsStored, len(stored))
	}

	// Labels only: the same label sets, no chunk.
	lo, err := selectChunks(t, q, ctx, 0, 3*h, true, all)
	if err != nil {
		t.Fatal(err)
	}
	if len(lo) != len(got) {
		t.Fatalf("labels only: %d series, want %d", len(lo), len(got))
	}
	for i := range lo {
		if !labels.Equal(lo[i].lset, got[i].lset) || lo[i].chunks != nil {
			t.Fatalf("labels only: series %d is %s with %d chunks, want %s without", i, lo[i].lset, len(lo[i].chunks), got[i].lset)
		}
	}

	// A matcher and a range: one series, chunks reaching into [2h+1m, 2h+2m] only.
	one, err := selectChunks(t, q, ctx, 2*h+60_000, 2*h+120_000, false, labels.MustNewMatcher(labels.MatchEqual, "series", "s007"))
	if err != nil {
		t.Fatal(err)
	}
	if len(one) != 1 || one[0].lset.Get("series") != "s007" {
		t.Fatalf("series=s007 over [2h+1m, 2h+2m]: %v", one)
	}
	for _, c := range one[0].chunks {
		if c.MaxTime < 2*h+60_000 || c.MinTime > 2*h+120_000 {
			t.Fatalf("chunk [%d, %d] outside the range", c.MinTime, c.MaxTime)
		}
	}

	if other, err := selectChunks(t, q, tenantctx.With(context.Background(), "t2"), 0, 3*h, false, all); err != nil || len(other) != 0 {
		t.Fatalf("tenant t2: %d series, %v; want none", len(other), err)
	}
	if _, err := selectChunks(t, q, context.Background(), 0, 3*h, false, all); !errors.Is(err, ErrNoTenant) {
		t.Fatalf("no tenant: %v, want ErrNoTenant", err)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := selectChunks(t, q, cctx, 0, 3*h, false, all); !errors.Is(err, context.Canceled) {
		t.Fatalf("ended context: %v, want context.Canceled", err)
	}
	// fn's error stops the walk at once.
	stop := errors.New("stop")
	calls := 0
	err = q.SelectChunks(ctx, 0, 3*h, false, []*labels.Matcher{all}, func(labels.Labels, []chunks.Meta) error {
		calls++
		return stop
	})
	if !errors.Is(err, stop) || calls != 1 {
		t.Fatalf("fn's error: %v after %d calls, want stop after 1", err, calls)
	}
}

// samplesOf decodes chks.
func samplesOf(t *testing.T, chks []chunks.Meta) []sample {
	t.Helper()
	var out []sample
	for _, c := range chks {
		it := c.Chunk.Iterator(nil)
		for it.Next() == chunkenc.ValFloat {
			ts, v := it.At()
			out = append(out, sample{ts, v})
		}
		if it.Err() != nil {
			t.Fatal(it.Err())
		}
	}
	return out
}

// A block deleted by the compactor while a Select opens its blocks: the Select's sync returned it,
// then a concurrent sync that no longer lists it closed it, so opening it fails with
// tsdb.ErrClosing. SelectChunks syncs again and answers from what the bucket holds now (the block
// that replaced it), instead of failing the member's answer.
func TestBucketQueryable_SelectChunksRetriesABlockClosedUnderIt(t *testing.T) {
	const h = int64(3600_000)
	root := t.TempDir()
	bkt, err := NewFilesystemBucket(root)
	if err != nil {
		t.Fatal(err)
	}
	q := NewBucketQueryable(bkt, root, t.TempDir(), nil)
	defer q.Close()
	ss, want := testSeries(t, 5, 0, 2*h, 30_000, 0, 2*h)
	old := uploadSeries(t, bkt, "t1", ss, 0, 2*h)
	ctx := tenantctx.With(context.Background(), "t1")
	if _, err := q.Blocks(ctx, "t1"); err != nil { // opens the old block
		t.Fatal(err)
	}
	replacement := uploadSeries(t, bkt, "t1", ss, 0, 2*h) // the compactor's, durable before the deletion
	q.mu.Lock()
	oldBlock := q.blocks["t1"][old.ULID]
	q.mu.Unlock()

	hooked := 0 // the hook runs in this goroutine (the select's), never concurrently
	syncedHook.Store(&queryableHook{q: q, fn: func() {
		hooked++
		if hooked > 1 {
			return
		}
		// The compactor deletes the old block; another query's sync forgets and closes it.
		if err := os.RemoveAll(filepath.Join(root, "t1", old.ULID.String())); err != nil {
			t.Error(err)
		}
		if _, err := q.Blocks(ctx, "t1"); err != nil {
			t.Error(err)
		}
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) { // its Close runs in a goroutine
			ir, err := oldBlock.Index()
			if err != nil {
				break
			}
			ir.Close()
			if time.Now().After(deadline) {
				t.Error("the old block was not closed")
				break
			}
		}
	}})
	defer syncedHook.Store(nil)

	got, err := selectChunks(t, q, ctx, 0, 2*h, false, labels.MustNewMatcher(labels.MatchRegexp, "__name__", ".+"))
	if err != nil {
		t.Fatalf("a block closed under the select: %v", err)
	}
	if hooked != 2 {
		t.Fatalf("%d syncs, want 2 (the race, then the retry)", hooked)
	}
	samples := map[string]bool{}
	for _, s := range got {
		for _, c := range s.chunks {
			it := c.Chunk.Iterator(nil)
			for it.Next() == chunkenc.ValFloat {
				ts, v := it.At()
				samples[key(s.lset, sample{ts, v})] = true
			}
		}
	}
	requireSameKeys(t, want, samples)
	metas, err := q.Blocks(ctx, "t1")
	if err != nil || len(metas) != 1 || metas[0].ULID != replacement.ULID {
		t.Fatalf("blocks after the retry: %v (%v), want only the replacement %s", metas, err, replacement.ULID)
	}
}
