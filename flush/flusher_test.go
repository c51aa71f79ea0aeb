package flush

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"github.com/thanos-io/objstore"
	"github.com/thanos-io/objstore/providers/filesystem"

	"github.com/raftingest/raftingest/memstore"
	"github.com/raftingest/raftingest/storage"

	tenantctx "github.com/raftingest/raftingest/tenant"
)

const hour = int64(3600_000)

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

type env struct {
	dir   string
	store *memstore.Store
	root  string
	bkt   objstore.Bucket
	f     *Flusher
	now   atomic.Int64 // wall clock, ms
}

func newEnv(t *testing.T, wrap func(objstore.Bucket) objstore.Bucket, tune func(*Config)) *env {
	return newEnvTB(t, wrap, tune)
}

func newEnvB(b *testing.B) *env { return newEnvTB(b, nil, nil) }

func newEnvTB(t testing.TB, wrap func(objstore.Bucket) objstore.Bucket, tune func(*Config)) *env {
	t.Helper()
	e := &env{dir: t.TempDir(), root: t.TempDir()}
	cfg := memstore.DefaultConfig()
	cfg.WALDir = e.dir + "/wal"
	st, err := memstore.Open(cfg, nil, quiet())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	e.store = st
	fsb, err := filesystem.NewBucket(e.root)
	if err != nil {
		t.Fatal(err)
	}
	e.bkt = fsb
	if wrap != nil {
		e.bkt = wrap(fsb)
	}
	var fc Config
	fc.RegisterFlags(flagSet())
	fc.RetryMinBackoff, fc.RetryMaxBackoff = time.Millisecond, 10*time.Millisecond
	if tune != nil {
		tune(&fc)
	}
	e.f, err = New(fc, Deps{Store: st, Bucket: e.bkt, WorkDir: e.dir + "/flush", IngesterID: "i1",
		Registerer: prometheus.NewRegistry(), Logger: quiet(), Now: func() time.Time { return time.UnixMilli(e.now.Load()) }})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func (e *env) push(t *testing.T, tenant string, lset labels.Labels, from, to, step int64) map[string]bool {
	t.Helper()
	keys := map[string]bool{}
	var smps []memstore.Sample
	for ts := from; ts < to; ts += step {
		smps = append(smps, memstore.Sample{T: ts, V: float64(ts) / 7})
		keys[fmt.Sprintf("%s %d %x", lset, ts, math.Float64bits(float64(ts)/7))] = true
	}
	res, err := e.store.Push(tenant, []memstore.SeriesSamples{{Labels: lset, Samples: smps}})
	if err != nil || res.Refused > 0 {
		t.Fatalf("push: %v %+v", err, res.Errors)
	}
	return keys
}

// bucketSamples reads every sample of tenant from the bucket through the deduplicating reader.
func (e *env) bucketSamples(t *testing.T, tenant string) map[string]bool {
	t.Helper()
	q := storage.NewBucketQueryable(e.bkt, e.root, t.TempDir(), quiet())
	defer q.Close()
	return selectKeys(t, q, tenant)
}

func selectKeys(t *testing.T, q *storage.BucketQueryable, tenant string) map[string]bool {
	t.Helper()
	qr, err := q.Querier(math.MinInt64, math.MaxInt64)
	if err != nil {
		t.Fatal(err)
	}
	defer qr.Close()
	out := map[string]bool{}
	ss := qr.Select(tenantctx.With(context.Background(), tenant), false, nil, labels.MustNewMatcher(labels.MatchRegexp, "__name__", ".+"))
	for ss.Next() {
		it := ss.At().Iterator(nil)
		for it.Next() == chunkenc.ValFloat {
			ts, v := it.At()
			out[fmt.Sprintf("%s %d %x", ss.At().Labels(), ts, math.Float64bits(v))] = true
		}
	}
	if ss.Err() != nil {
		t.Fatal(ss.Err())
	}
	return out
}

// memSamples returns every sample of tenant in memory.
func memSamples(t *testing.T, st *memstore.Store, tenant string) map[string]bool {
	t.Helper()
	out := map[string]bool{}
	sel, err := st.Select(tenant, math.MinInt64, math.MaxInt64)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range sel {
		for _, c := range s.Chunks {
			ch, err := chunkenc.FromData(c.Encoding, c.Data)
			if err != nil {
				t.Fatal(err)
			}
			it := ch.Iterator(nil)
			for it.Next() == chunkenc.ValFloat {
				ts, v := it.At()
				out[fmt.Sprintf("%s %d %x", s.Labels, ts, math.Float64bits(v))] = true
			}
		}
	}
	return out
}

func missing(want, got map[string]bool) []string {
	var out []string
	for k := range want {
		if !got[k] {
			out = append(out, k)
		}
	}
	return out
}

func union(ms ...map[string]bool) map[string]bool {
	out := map[string]bool{}
	for _, m := range ms {
		for k := range m {
			out[k] = true
		}
	}
	return out
}

// The periodic flush writes the ranges that closed half a period ago, one aligned block per
// range, and drops them from memory; the open range stays. An idle series goes whole. Nothing
// is lost between bucket and memory, and flushing again writes nothing twice.
func TestFlushDue_ClosedRangesAndIdleSeries(t *testing.T) {
	e := newEnv(t, nil, nil)
	active := labels.FromStrings("__name__", "active")
	idle := labels.FromStrings("__name__", "idle")
	all := union(
		e.push(t, "t1", active, 0, 5*hour, 60_000), // 0h..5h
		e.push(t, "t1", idle, hour, 2*hour+hour/2, 60_000),
	)
	e.now.Store(5*hour + hour/2) // cutoff = align(4h30, 2h) = 4h; idle timeout 1h: idle ends 2h30
	res, err := e.f.FlushDue(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if res.Blocks != 2 {
		t.Fatalf("want 2 blocks ([0,2h) and [2h,4h)), got %+v", res)
	}
	inBucket := e.bucketSamples(t, "t1")
	for k := range inBucket {
		if strings.HasPrefix(k, `{__name__="active"}`) {
			var ts int64
			fmt.Sscanf(strings.Fields(k)[1], "%d", &ts)
			if ts >= 4*hour {
				t.Fatalf("sample of the open range in the bucket: %s", k)
			}
		}
	}
	inMem := memSamples(t, e.store, "t1")
	if m := missing(all, union(inBucket, inMem)); len(m) > 0 {
		t.Fatalf("%d samples lost, e.g. %s", len(m), m[0])
	}
	for k := range inMem {
		if strings.HasPrefix(k, `{__name__="idle"}`) {
			t.Fatalf("idle series still in memory: %s", k)
		}
	}
	if st := e.store.Stats("t1"); st.Series != 1 {
		t.Fatalf("want only the active series in memory, got %+v", st)
	}

	// Nothing new is due: no block. (The active series' chunk straddling 4h stays in memory, but
	// its part before 4h is not written again.)
	res, err = e.f.FlushDue(context.Background())
	if err != nil || res.Blocks != 0 {
		t.Fatalf("second flush: %+v %v, want no block", res, err)
	}

	// A forced flush takes the rest; memory is then empty and the bucket holds everything.
	if _, err := e.f.FlushAll(context.Background()); err != nil {
		t.Fatal(err)
	}
	if st := e.store.Stats("t1"); st.Series != 0 {
		t.Fatalf("memory after FlushAll: %+v", st)
	}
	got := e.bucketSamples(t, "t1")
	if m := missing(all, got); len(m) > 0 || len(got) != len(all) {
		t.Fatalf("bucket has %d samples, want %d; missing e.g. %v", len(got), len(all), m)
	}
}

// failingBucket fails every Upload of an index file while failing is set: a block upload breaks
// mid-way, after its chunks went up.
type failingBucket struct {
	objstore.Bucket
	failing  atomic.Bool
	failures atomic.Int64
}

func (b *failingBucket) Upload(ctx context.Context, name string, r io.Reader, opts ...objstore.ObjectUploadOption) error {
	if b.failing.Load() && strings.HasSuffix(name, "/index") {
		b.failures.Add(1)
		return errors.New("injected: bucket unavailable")
	}
	return b.Bucket.Upload(ctx, name, r, opts...)
}

// A bucket failing mid-upload: the flush retries with backoff; if it never succeeds the flush
// fails with the bucket's error, no partial block is left readable, and memory and the WAL keep
// every sample. Once the bucket recovers, retries succeed and nothing is lost.
func TestFlush_FailingBucketLosesNothing(t *testing.T) {
	var fb *failingBucket
	e := newEnv(t, func(b objstore.Bucket) objstore.Bucket { fb = &failingBucket{Bucket: b}; return fb }, nil)
	lset := labels.FromStrings("__name__", "m", "k", "v")
	all := e.push(t, "t1", lset, 0, 3*hour, 15_000)
	fb.failing.Store(true)

	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	_, err := e.f.FlushAll(ctx)
	cancel()
	if err == nil || !strings.Contains(err.Error(), "injected: bucket unavailable") {
		t.Fatalf("flush against a failing bucket: err %v, want the bucket's error", err)
	}
	if fb.failures.Load() < 2 {
		t.Fatalf("upload attempted %d times, want retries", fb.failures.Load())
	}
	if got := e.bucketSamples(t, "t1"); len(got) != 0 {
		t.Fatalf("%d samples readable from a failed upload", len(got))
	}
	if m := missing(all, memSamples(t, e.store, "t1")); len(m) > 0 {
		t.Fatalf("memory lost %d samples after a failed flush", len(m))
	}

	// Recover during the retries: after three more failed attempts.
	before := fb.failures.Load()
	go func() {
		for deadline := time.Now().Add(10 * time.Second); fb.failures.Load() < before+3 && time.Now().Before(deadline); {
			time.Sleep(time.Millisecond)
		}
		fb.failing.Store(false)
	}()
	ctx, cancel = context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := e.f.FlushAll(ctx); err != nil {
		t.Fatal(err)
	}
	got := e.bucketSamples(t, "t1")
	if m := missing(all, got); len(m) > 0 || len(got) != len(all) {
		t.Fatalf("bucket has %d samples, want %d", len(got), len(all))
	}
	if st := e.store.Stats("t1"); st.Series != 0 {
		t.Fatalf("memory after the flush succeeded: %+v", st)
	}
}

// Forced flushes while writers append: every acknowledged sample ends up in the bucket or in
// memory — none falls between a snapshot and the drop.
func TestFlushAll_ConcurrentAppendsLoseNothing(t *testing.T) {
	e := newEnv(t, nil, nil)
	var (
		mu    sync.Mutex
		acked = map[string]bool{}
		wg    sync.WaitGroup
		stop  atomic.Bool
	)
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			lset := labels.FromStrings("__name__", "c", "w", fmt.Sprint(w))
			for ts := int64(0); !stop.Load(); ts += 1000 {
				// Each push is a new series now and then, so series are created during flushes too.
				l := lset
				if ts%50_000 == 0 {
					l = labels.FromStrings("__name__", "c", "w", fmt.Sprint(w), "gen", fmt.Sprint(ts))
				}
				v := float64(ts)
				res, err := e.store.Push("t1", []memstore.SeriesSamples{{Labels: l, Samples: []memstore.Sample{{T: ts, V: v}}}})
				if err != nil || res.Refused > 0 {
					t.Errorf("push: %v %+v", err, res.Errors)
					return
				}
				mu.Lock()
				acked[fmt.Sprintf("%s %d %x", l, ts, math.Float64bits(v))] = true
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

// blockingBucket holds every Upload until release is closed, telling uploading when one starts.
type blockingBucket struct {
	objstore.Bucket
	uploading chan struct{}
	release   chan struct{}
	once      sync.Once
}

func (b *blockingBucket) Upload(ctx context.Context, name string, r io.Reader, opts ...objstore.ObjectUploadOption) error {
	b.once.Do(func() { close(b.uploading) })
	select {
	case <-b.release:
	case <-ctx.Done():
		return ctx.Err()
	}
	return b.Bucket.Upload(ctx, name, r, opts...)
}

// Progress reports the flush in progress — series written of those queued — and nothing once it
// is done; what a leaving member's /ready says.
func TestFlush_Progress(t *testing.T) {
	bb := &blockingBucket{uploading: make(chan struct{}), release: make(chan struct{})}
	e := newEnv(t, func(b objstore.Bucket) objstore.Bucket { bb.Bucket = b; return bb }, nil)
	for _, tenant := range []string{"t1", "t2"} {
		for i := range 3 {
			e.push(t, tenant, labels.FromStrings("__name__", "m", "i", fmt.Sprint(i)), 0, hour, 15_000)
		}
	}
	if _, _, ok := e.f.Progress(); ok {
		t.Fatal("progress reported with no flush running")
	}
	done := make(chan error, 1)
	go func() { _, err := e.f.FlushAll(context.Background()); done <- err }()
	<-bb.uploading
	written, total, ok := e.f.Progress()
	if !ok || total != 6 || written != 0 {
		t.Fatalf("during the first tenant's upload: %d of %d (%v), want 0 of 6", written, total, ok)
	}
	close(bb.release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if _, _, ok := e.f.Progress(); ok {
		t.Fatal("progress still reported after the flush")
	}
}
