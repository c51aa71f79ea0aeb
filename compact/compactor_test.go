package compact_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/oklog/ulid/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/prometheus/model/labels"
	promstorage "github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"github.com/prometheus/prometheus/tsdb/chunks"

	"github.com/raftingest/raftingest/compact"
	"github.com/raftingest/raftingest/ringstate"
	"github.com/raftingest/raftingest/storage"
	"github.com/raftingest/raftingest/tenant"
)

const (
	hour   = int64(3_600_000)
	t0     = int64(1_700_006_400_000) // a multiple of 24h: windows of every range start here
	rf     = 3
	scrape = int64(15_000)
)

var memberIDs = []string{"m0", "m1", "m2", "m3", "m4"}

// fiveMemberRing is a ring of 5 ACTIVE members with 64 random tokens each, built through Apply.
func fiveMemberRing(t *testing.T) *ringstate.Ring {
	t.Helper()
	rng := rand.New(rand.NewPCG(7, 7))
	r := ringstate.New()
	now := t0
	apply := func(c ringstate.Command) {
		t.Helper()
		now++
		var err error
		if r, _, err = r.Apply(c, now); err != nil {
			t.Fatal(err)
		}
	}
	for i, id := range memberIDs {
		mid := ringstate.MemberID(id)
		apply(ringstate.Command{Op: ringstate.OpRegister, Member: mid, RaftAddr: fmt.Sprintf("127.0.0.1:%d", 7000+i)})
		ts, err := r.FreeTokens(64, rng)
		if err != nil {
			t.Fatal(err)
		}
		apply(ringstate.Command{Op: ringstate.OpClaimTokens, Member: mid, Tokens: ts})
		apply(ringstate.Command{Op: ringstate.OpActivate, Member: mid})
	}
	return r
}

// dirBucket is a Bucket over a real filesystem bucket (<tenant>/<ULID>/...), as a member's Blocks
// server serves it: marked blocks are not listed, marks are written with storage.MarkForDeletion
// at the cluster's clock behind the lease's fence, and there are injectable failures.
type dirBucket struct {
	dir   string
	bkt   *storage.FilesystemBucket
	fence *atomic.Uint64 // the ring's current lease epoch
	now   func() time.Time
	mu    sync.Mutex
	// failStore and failDelete, when set, fail the call that makes them return true (a crash at
	// that step: nothing after it happens).
	failStore, failDelete func() bool
}

func (b *dirBucket) List(ctx context.Context) ([]compact.Listed, error) {
	var out []compact.Listed
	tenants, err := os.ReadDir(b.dir)
	if err != nil {
		return nil, err
	}
	for _, te := range tenants {
		blocks, err := os.ReadDir(filepath.Join(b.dir, te.Name()))
		if err != nil {
			return nil, err
		}
		for _, be := range blocks {
			data, err := os.ReadFile(filepath.Join(b.dir, te.Name(), be.Name(), storage.MetaFilename))
			if errors.Is(err, os.ErrNotExist) {
				continue // partial
			}
			if err != nil {
				return nil, err
			}
			if _, err := os.Stat(filepath.Join(b.dir, te.Name(), be.Name(), storage.DeletionMarkFilename)); err == nil {
				continue // marked for deletion, as the Blocks server's ListBlocks leaves it out
			}
			m, err := storage.ReadMeta(data)
			if err != nil {
				return nil, err
			}
			out = append(out, compact.Listed{Tenant: te.Name(), Meta: m})
		}
	}
	return out, nil
}

func copyDir(src, dst string) error {
	return filepath.WalkDir(src, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(dst, rel), 0o755)
		}
		in, err := os.Open(p)
		if err != nil {
			return err
		}
		defer in.Close()
		out, err := os.Create(filepath.Join(dst, rel))
		if err != nil {
			return err
		}
		if _, err := io.Copy(out, in); err != nil {
			out.Close()
			return err
		}
		return out.Close()
	})
}

func (b *dirBucket) Fetch(ctx context.Context, tenantID string, id ulid.ULID, parent string) (string, error) {
	dst := filepath.Join(parent, id.String())
	if err := copyDir(filepath.Join(b.dir, tenantID, id.String()), dst); err != nil {
		return "", err
	}
	return dst, nil
}

func (b *dirBucket) Store(ctx context.Context, tenantID, dir string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.failStore != nil && b.failStore() {
		return errors.New("injected crash before store")
	}
	final := filepath.Join(b.dir, tenantID, filepath.Base(dir))
	if _, err := os.Stat(final); err == nil {
		return nil
	}
	tmp := final + ".tmp"
	if err := copyDir(dir, tmp); err != nil {
		return err
	}
	return os.Rename(tmp, final)
}

func (b *dirBucket) MarkForDeletion(ctx context.Context, tenantID string, ids []ulid.ULID, epoch uint64) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if epoch != b.fence.Load() {
		return fmt.Errorf("epoch %d is not the lease's current epoch %d", epoch, b.fence.Load())
	}
	for _, id := range ids {
		if b.failDelete != nil && b.failDelete() {
			return errors.New("injected crash while marking")
		}
		if _, err := storage.MarkForDeletion(ctx, b.bkt, tenantID, id, b.now(), "test"); err != nil {
			return err
		}
	}
	return nil
}

// marked returns the member's blocks of tenantID that carry a deletion mark, by ULID.
func (b *dirBucket) marked(t *testing.T, tenantID string) []string {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(b.dir, tenantID))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		if _, err := os.Stat(filepath.Join(b.dir, tenantID, e.Name(), storage.DeletionMarkFilename)); err == nil {
			out = append(out, e.Name())
		}
	}
	return out
}

// series is one test series: its labels and its samples (one per scrape interval).
type series struct {
	lset labels.Labels
}

func testSeries(n int) []series {
	out := make([]series, n)
	for i := range out {
		out[i] = series{labels.FromStrings("__name__", "http_requests_total", "instance", fmt.Sprintf("host-%03d", i%40),
			"job", fmt.Sprintf("job-%d", i/40), "path", fmt.Sprintf("/p%d", i%7))}
	}
	return out
}

// chunksOf encodes the samples of series i in [mint, maxt) as XOR chunks of 120 samples: a counter
// growing by an irregular step, the same value at a timestamp whichever flush writes it.
func chunksOf(t *testing.T, i int, mint, maxt int64) []chunks.Meta {
	t.Helper()
	var out []chunks.Meta
	var c *chunkenc.XORChunk
	var app chunkenc.Appender
	for ts := mint; ts < maxt; ts += scrape {
		if c == nil || c.NumSamples() == 120 {
			c = chunkenc.NewXORChunk()
			var err error
			if app, err = c.Appender(); err != nil {
				t.Fatal(err)
			}
			out = append(out, chunks.Meta{Chunk: c, MinTime: ts})
		}
		k := uint64((ts - t0) / scrape)
		v := float64(i*1000) + float64(k*4) + float64((k*2654435761+uint64(i)*40503)>>7%4)
		app.Append(ts, v)
		out[len(out)-1].MaxTime = ts
	}
	return out
}

type cluster struct {
	t       *testing.T
	clock   atomic.Int64 // Unix ms: the last compactor's time, which marks carry
	root    string
	ring    *ringstate.Ring
	place   func(string, labels.Labels) []string
	buckets map[string]*dirBucket
	fence   atomic.Uint64
	queries map[string]*storage.BucketQueryable
	series  []series
	// stillPlaceable is the Cluster's StillPlaceable (nil: none).
	stillPlaceable func(ctx context.Context, members []string) error
	// ringTimeMs is the compactor's ring time (nil: its clock).
	ringTimeMs func() int64
	// freeBytes is the compactor's view of its work directory's free space (nil: statfs).
	freeBytes func(dir string) (free, total uint64, err error)
}

func newCluster(t *testing.T, nSeries int) *cluster {
	c := &cluster{t: t, root: t.TempDir(), ring: fiveMemberRing(t), buckets: map[string]*dirBucket{},
		queries: map[string]*storage.BucketQueryable{}, series: testSeries(nSeries)}
	c.place = compact.RingPlacement(c.ring, ringstate.Placement{RF: rf}, time.Minute.Milliseconds())
	c.fence.Store(1)
	for _, id := range memberIDs {
		dir := filepath.Join(c.root, id, "blocks")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		fsb, err := storage.NewFilesystemBucket(dir)
		if err != nil {
			t.Fatal(err)
		}
		c.buckets[id] = &dirBucket{dir: dir, bkt: fsb, fence: &c.fence, now: func() time.Time { return time.UnixMilli(c.clock.Load()) }}
		q := storage.NewBucketQueryable(fsb, dir, filepath.Join(c.root, id, "cache"), slog.New(slog.DiscardHandler))
		c.queries[id] = q
		t.Cleanup(func() { q.Close() })
	}
	return c
}

// flush writes, on every member, the block a flush of [mint, maxt) writes: the series whose
// replication set includes it. parts > 1 cuts a member's flush of the range into that many blocks
// over consecutive time slices (repeated flushes of one range).
func (c *cluster) flush(tenantID string, mint, maxt int64, parts map[string]int) {
	c.t.Helper()
	for _, id := range memberIDs {
		n := max(parts[id], 1)
		step := (maxt - mint) / int64(n)
		for p := range n {
			lo, hi := mint+int64(p)*step, mint+int64(p+1)*step
			var ss []storage.Series
			for i, s := range c.series {
				if slices.Contains(c.place(tenantID, s.lset), id) {
					ss = append(ss, storage.Series{Labels: s.lset, Chunks: chunksOf(c.t, i, lo, hi)})
				}
			}
			dir := filepath.Join(c.buckets[id].dir, tenantID)
			if err := os.MkdirAll(dir, 0o755); err != nil {
				c.t.Fatal(err)
			}
			if _, err := storage.WriteBlock(context.Background(), dir, ss, storage.BlockOptions{MinTime: lo, MaxTime: hi,
				Labels: map[string]string{storage.TenantLabel: tenantID, storage.IngesterLabel: id}}); err != nil {
				c.t.Fatal(err)
			}
		}
	}
}

// oneCopyBytes writes every series of [mint, maxt) once, as one block, and returns its size: what
// one copy of the data costs.
func (c *cluster) oneCopyBytes(mint, maxt int64) (int64, uint64) {
	c.t.Helper()
	var ss []storage.Series
	for i, s := range c.series {
		ss = append(ss, storage.Series{Labels: s.lset, Chunks: chunksOf(c.t, i, mint, maxt)})
	}
	m, err := storage.WriteBlock(context.Background(), c.t.TempDir(), ss, storage.BlockOptions{MinTime: mint, MaxTime: maxt})
	if err != nil {
		c.t.Fatal(err)
	}
	return m.BlockSize(), m.Stats.NumSamples
}

type sample struct {
	t int64
	v float64
}

// answer reads every series of tenantID through all members' buckets, merged as the querier
// merges replicas (each timestamp once).
func (c *cluster) answer(tenantID string) map[string][]sample {
	c.t.Helper()
	ctx := tenant.With(context.Background(), tenantID)
	var qs []promstorage.Querier
	for _, id := range memberIDs {
		q, err := c.queries[id].Querier(t0-hour, t0+100*hour)
		if err != nil {
			c.t.Fatal(err)
		}
		qs = append(qs, q)
	}
	m := promstorage.NewMergeQuerier(nil, qs, promstorage.ChainedSeriesMerge)
	defer m.Close()
	set := m.Select(ctx, true, nil, labels.MustNewMatcher(labels.MatchRegexp, "__name__", ".+"))
	out := map[string][]sample{}
	for set.Next() {
		s := set.At()
		it := s.Iterator(nil)
		var got []sample
		for it.Next() == chunkenc.ValFloat {
			ts, v := it.At()
			got = append(got, sample{ts, v})
		}
		if err := it.Err(); err != nil {
			c.t.Fatal(err)
		}
		out[s.Labels().String()] = got
	}
	if err := set.Err(); err != nil {
		c.t.Fatal(err)
	}
	return out
}

func sameAnswer(t *testing.T, what string, want, got map[string][]sample) {
	t.Helper()
	if len(want) != len(got) {
		t.Fatalf("%s: %d series, want %d", what, len(got), len(want))
	}
	for k, w := range want {
		if !slices.Equal(w, got[k]) {
			t.Fatalf("%s: series %s has %d samples, want %d (or they differ)", what, k, len(got[k]), len(w))
		}
	}
}

// blocksOf lists member id's complete blocks of tenantID.
func (c *cluster) blocksOf(id, tenantID string) []storage.Meta {
	c.t.Helper()
	ls, err := c.buckets[id].List(context.Background())
	if err != nil {
		c.t.Fatal(err)
	}
	var out []storage.Meta
	for _, l := range ls {
		if l.Tenant == tenantID {
			out = append(out, l.Meta)
		}
	}
	return out
}

// seriesIn returns the label sets in the block dir.
func seriesIn(t *testing.T, dir string) []string {
	t.Helper()
	fsb, err := storage.NewFilesystemBucket(filepath.Dir(filepath.Dir(dir)))
	if err != nil {
		t.Fatal(err)
	}
	q := storage.NewBucketQueryable(fsb, filepath.Dir(filepath.Dir(dir)), t.TempDir(), slog.New(slog.DiscardHandler))
	defer q.Close()
	qr, _ := q.Querier(0, 1<<62)
	defer qr.Close()
	set := qr.Select(tenant.With(context.Background(), filepath.Base(filepath.Dir(dir))), true, nil,
		labels.MustNewMatcher(labels.MatchRegexp, "__name__", ".+"))
	var out []string
	for set.Next() {
		out = append(out, set.At().Labels().String())
	}
	if err := set.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// checkPlaced checks the final state of tenantID: every member holds exactly one block per wanted
// window, holding exactly the series whose replication set includes it.
func (c *cluster) checkPlaced(tenantID string, windows [][2]int64) {
	c.t.Helper()
	for _, id := range memberIDs {
		bs := c.blocksOf(id, tenantID)
		if len(bs) != len(windows) {
			c.t.Fatalf("%s holds %d blocks of %s, want %d (one per window)", id, len(bs), tenantID, len(windows))
		}
		slices.SortFunc(bs, func(a, b storage.Meta) int { return int(a.MinTime - b.MinTime) })
		var want []string
		for _, s := range c.series {
			if slices.Contains(c.place(tenantID, s.lset), id) {
				want = append(want, s.lset.String())
			}
		}
		slices.Sort(want)
		for k, b := range bs {
			if b.MinTime < windows[k][0] || b.MaxTime > windows[k][1] {
				c.t.Fatalf("%s: block [%d, %d) outside window %v", id, b.MinTime, b.MaxTime, windows[k])
			}
			if b.Compaction.Level < 2 || storage.CompactionGroup(&b.BlockMeta) == "" || b.Thanos.Source != storage.SourceCompactor ||
				b.Thanos.Labels[storage.TenantLabel] != tenantID {
				c.t.Fatalf("%s: block %s is not recognisable as compacted: %+v", id, b.ULID, b)
			}
			got := seriesIn(c.t, filepath.Join(c.buckets[id].dir, tenantID, b.ULID.String()))
			slices.Sort(got)
			if !slices.Equal(got, want) {
				c.t.Fatalf("%s: block %s holds %d series, want exactly the %d it replicates", id, b.ULID, len(got), len(want))
			}
		}
	}
}

func (c *cluster) bucketBytes(tenantID string) int64 {
	var n int64
	for _, id := range memberIDs {
		for _, b := range c.blocksOf(id, tenantID) {
			n += b.BlockSize()
		}
	}
	return n
}

type fakeLease struct{}

func (fakeLease) IsLeader() bool { return true }
func (fakeLease) Claim(context.Context, time.Duration) (uint64, error) {
	return 0, errors.New("not used by RunOnce")
}

// deletionDelay is the compactors' -compactor.deletion-delay (the clock moves past it; nothing
// sleeps).
const deletionDelay = compact.DefaultDeletionDelay

// sweep runs every member's sweeper at now (Unix ms), as blocksvc's does, and returns how many
// blocks it deleted.
func (c *cluster) sweep(now int64) int {
	c.t.Helper()
	n := 0
	for _, id := range memberIDs {
		swept, err := storage.SweepDeletionMarked(context.Background(), c.buckets[id].bkt, deletionDelay, time.UnixMilli(now), nil)
		if err != nil {
			c.t.Fatal(err)
		}
		n += len(swept)
	}
	return n
}

// markedBlocks returns every member's marked blocks of tenantID ("member/ULID"), sorted.
func (c *cluster) markedBlocks(tenantID string) []string {
	var out []string
	for _, id := range memberIDs {
		for _, u := range c.buckets[id].marked(c.t, tenantID) {
			out = append(out, id+"/"+u)
		}
	}
	slices.Sort(out)
	return out
}

func (c *cluster) compactor(now int64, retention time.Duration, reg prometheus.Registerer) *compact.Compactor {
	c.t.Helper()
	c.clock.Store(now)
	cfg := compact.Config{Enabled: true, Interval: time.Hour, BlockRanges: compact.DefaultBlockRanges(),
		Retention: retention, LeaseDuration: time.Minute, CompletionDelay: 30 * time.Minute, DeletionDelay: deletionDelay}
	comp, err := compact.New(cfg, compact.Deps{
		Lease: fakeLease{},
		Cluster: func(context.Context) (compact.Cluster, error) {
			m := map[string]compact.Bucket{}
			for id, b := range c.buckets {
				m[id] = b
			}
			return compact.Cluster{Members: m, Place: c.place, StillPlaceable: c.stillPlaceable}, nil
		},
		WorkDir: filepath.Join(c.root, "work"), FlushPeriod: 2 * time.Hour, Registerer: reg,
		Now: func() time.Time { return time.UnixMilli(now) }, RingTimeMs: c.ringTimeMs,
		FreeBytes: c.freeBytes, MinFreeDiskPercent: 5,
	})
	if err != nil {
		c.t.Fatal(err)
	}
	return comp
}

// TestCompactor_FiveMembersRF3_MergesPlacesAndKeepsAnswers: 5 members, RF 3, node-local buckets.
// Every member flushed its replicas of two 2h ranges (one member flushed the first range twice).
// The first run deduplicates each 2h range into one block per member holding exactly the series
// it replicates; once the day is complete a second run merges the day into one block per member.
// The answer through all members is identical before, between and after, and the buckets hold,
// divided by RF, within 10% of one copy's bytes.
func TestCompactor_FiveMembersRF3_MergesPlacesAndKeepsAnswers(t *testing.T) {
	c := newCluster(t, 400)
	c.flush("t1", t0, t0+2*hour, map[string]int{"m0": 2})
	c.flush("t1", t0+2*hour, t0+4*hour, nil)
	before := c.answer("t1")
	if len(before) != 400 {
		t.Fatalf("%d series before compaction", len(before))
	}
	copyBytes, copySamples := c.oneCopyBytes(t0, t0+2*hour)
	copyBytes2, copySamples2 := c.oneCopyBytes(t0+2*hour, t0+4*hour)
	rawBytes := c.bucketBytes("t1")

	reg := prometheus.NewRegistry()
	start := time.Now()
	if err := c.compactor(t0+5*hour, 0, reg).RunOnce(context.Background(), 1); err != nil {
		t.Fatal(err)
	}
	t.Logf("dedup run: %s", time.Since(start))
	sameAnswer(t, "after deduplication", before, c.answer("t1"))
	c.checkPlaced("t1", [][2]int64{{t0, t0 + 2*hour}, {t0 + 2*hour, t0 + 4*hour}})
	after := c.bucketBytes("t1")
	ratio := float64(after) / rf / float64(copyBytes+copyBytes2)
	t.Logf("bytes: raw replicas %d, after %d; per copy %.3f of one copy's (%.2f bytes/sample vs %.2f)", rawBytes, after, ratio,
		float64(after)/rf/float64(copySamples+copySamples2), float64(copyBytes+copyBytes2)/float64(copySamples+copySamples2))
	if ratio < 0.9 || ratio > 1.1 {
		t.Fatalf("after compaction the buckets hold %.3f copies' bytes per RF, want within 10%% of one", ratio)
	}
	if got := testutil.ToFloat64(counter(t, reg, "cortex_compactor_runs_completed_total")); got != 1 {
		t.Fatalf("runs completed %v", got)
	}
	// 5 members' replicas of 2 windows, plus m0's second flush: marked, still on disk and read.
	if got := counterSum(t, reg, "cortex_compactor_blocks_marked_for_deletion_total"); got != 11 {
		t.Fatalf("blocks marked for deletion %v, want 11", got)
	}
	marked := c.markedBlocks("t1")
	if len(marked) != 11 {
		t.Fatalf("%d blocks carry a deletion mark, want the 11 sources: %v", len(marked), marked)
	}

	// Nothing more to do at the same time: a finished compaction is not redone, and the marked
	// sources beside the parts — which would make every window hold two groups — are ignored.
	ids := c.allIDs("t1")
	if err := c.compactor(t0+5*hour, 0, prometheus.NewRegistry()).RunOnce(context.Background(), 1); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(ids, c.allIDs("t1")) {
		t.Fatal("a second run at the same time rewrote blocks")
	}
	if got := c.markedBlocks("t1"); !slices.Equal(got, marked) {
		t.Fatalf("a second run marked %v, want only the first run's %v", got, marked)
	}

	// The sweepers: nothing before the delay has passed, every source after it, the answer whole.
	if n := c.sweep(t0 + 5*hour + deletionDelay.Milliseconds() - 1000); n != 0 {
		t.Fatalf("swept %d blocks before the deletion delay passed", n)
	}
	if n := c.sweep(t0 + 5*hour + deletionDelay.Milliseconds()); n != 11 {
		t.Fatalf("swept %d blocks once the deletion delay passed, want the 11 sources", n)
	}
	if got := c.markedBlocks("t1"); len(got) != 0 {
		t.Fatalf("marked blocks left after the sweep: %v", got)
	}
	sameAnswer(t, "after the sweep", before, c.answer("t1"))
	c.checkPlaced("t1", [][2]int64{{t0, t0 + 2*hour}, {t0 + 2*hour, t0 + 4*hour}})

	// The day is complete: one 24h merge, one block per member.
	if err := c.compactor(t0+27*hour, 0, prometheus.NewRegistry()).RunOnce(context.Background(), 1); err != nil {
		t.Fatal(err)
	}
	sameAnswer(t, "after the day's merge", before, c.answer("t1"))
	c.checkPlaced("t1", [][2]int64{{t0, t0 + 4*hour}})
	for _, id := range memberIDs {
		if l := c.blocksOf(id, "t1")[0].Compaction.Level; l != 3 {
			t.Fatalf("%s: the day's block has level %d, want 3", id, l)
		}
	}
}

func (c *cluster) allIDs(tenantID string) []string {
	var out []string
	for _, id := range memberIDs {
		for _, b := range c.blocksOf(id, tenantID) {
			out = append(out, id+"/"+b.ULID.String())
		}
	}
	slices.Sort(out)
	return out
}

// counterSum sums a counter's series over every label value.
func counterSum(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			var sum float64
			for _, m := range mf.GetMetric() {
				sum += m.GetCounter().GetValue()
			}
			return sum
		}
	}
	t.Fatalf("metric %s not found", name)
	return 0
}

func counter(t *testing.T, reg *prometheus.Registry, name string) prometheus.Collector {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			v := mf.GetMetric()[0]
			g := prometheus.NewGauge(prometheus.GaugeOpts{Name: "x"})
			if v.GetCounter() != nil {
				g.Set(v.GetCounter().GetValue())
			} else {
				g.Set(v.GetGauge().GetValue())
			}
			return g
		}
	}
	t.Fatalf("metric %s not found", name)
	return nil
}

// TestCompactor_CrashAtEveryStep_NoGapNoLastingDuplicate: a run that stops at any step — after
// some parts are stored, or after some sources are deleted — leaves every answer whole (the
// sources go only after every part is durable), and the next run leaves exactly one block per
// member with exactly its series (leftovers merged again).
func TestCompactor_CrashAtEveryStep_NoGapNoLastingDuplicate(t *testing.T) {
	for _, tc := range []struct {
		name  string
		crash func(c *cluster)
	}{
		{"stop after the second part is stored", func(c *cluster) {
			var n atomic.Int32
			for _, b := range c.buckets {
				b.failStore = func() bool { return n.Add(1) > 2 }
			}
		}},
		{"stop before any part is stored", func(c *cluster) {
			for _, b := range c.buckets {
				b.failStore = func() bool { return true }
			}
		}},
		{"stop after some sources are deleted", func(c *cluster) {
			var n atomic.Int32
			for _, b := range c.buckets {
				b.failDelete = func() bool { return n.Add(1) > 3 }
			}
		}},
		{"a stale epoch: every delete refused", func(c *cluster) { c.fence.Store(2) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newCluster(t, 120)
			c.flush("t1", t0, t0+2*hour, nil)
			before := c.answer("t1")
			tc.crash(c)
			if err := c.compactor(t0+3*hour, 0, prometheus.NewRegistry()).RunOnce(context.Background(), 1); err == nil {
				t.Fatal("the crashed run reported success")
			}
			sameAnswer(t, "after the crash", before, c.answer("t1"))
			for _, b := range c.buckets {
				b.failStore, b.failDelete = nil, nil
			}
			epoch := c.fence.Load()
			if err := c.compactor(t0+3*hour, 0, prometheus.NewRegistry()).RunOnce(context.Background(), epoch); err != nil {
				t.Fatal(err)
			}
			sameAnswer(t, "after the next run", before, c.answer("t1"))
			c.checkPlaced("t1", [][2]int64{{t0, t0 + 2*hour}})
			if d, err := os.ReadDir(filepath.Join(c.root, "work")); err == nil && len(d) > 0 {
				t.Fatalf("work dir left %d entries", len(d))
			}
		})
	}
}

// TestCompactor_Retention: blocks whose newest sample is older than now - retention are deleted
// from every member (replicas and compacted parts alike); newer ones stay and are compacted.
func TestCompactor_Retention(t *testing.T) {
	c := newCluster(t, 60)
	c.flush("old", t0, t0+2*hour, nil)
	c.flush("t1", t0, t0+2*hour, nil)
	c.flush("t1", t0+48*hour, t0+50*hour, nil)
	reg := prometheus.NewRegistry()
	if err := c.compactor(t0+51*hour, 30*time.Hour, reg).RunOnce(context.Background(), 1); err != nil {
		t.Fatal(err)
	}
	for _, id := range memberIDs {
		if bs := c.blocksOf(id, "old"); len(bs) != 0 {
			t.Fatalf("%s still holds %d expired blocks of tenant old", id, len(bs))
		}
	}
	c.checkPlaced("t1", [][2]int64{{t0 + 48*hour, t0 + 50*hour}})
	for reason, want := range map[string]float64{"retention": 10, "compaction": 5} {
		m, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		var got float64
		for _, mf := range m {
			for _, s := range mf.GetMetric() {
				if mf.GetName() == "cortex_compactor_blocks_marked_for_deletion_total" && s.GetLabel()[0].GetValue() == reason {
					got = s.GetCounter().GetValue()
				}
			}
		}
		if got != want {
			t.Fatalf("blocks marked for deletion for %s: %v, want %v", reason, got, want)
		}
	}
	if n := c.sweep(t0 + 51*hour + deletionDelay.Milliseconds()); n != 15 {
		t.Fatalf("swept %d blocks after the delay, want the 10 expired and the 5 merged", n)
	}
	for _, id := range memberIDs {
		var left []string
		err := filepath.WalkDir(filepath.Join(c.buckets[id].dir, "old"), func(p string, d os.DirEntry, err error) error {
			if err == nil && !d.IsDir() {
				left = append(left, p)
			}
			if errors.Is(err, os.ErrNotExist) {
				return nil
			}
			return err
		})
		if err != nil || len(left) > 0 {
			t.Fatalf("%s still holds files of the expired tenant after the sweep: %v (%v)", id, left, err)
		}
	}
	if a := c.answer("t1"); len(a) != 60 {
		t.Fatalf("%d series left", len(a))
	}
	for k, s := range c.answer("t1") {
		if s[0].t < t0+48*hour {
			t.Fatalf("%s: expired sample at %d still answered", k, s[0].t)
		}
	}
}

// TestCompactor_CrashBetweenMarkAndSweep: a run that marked its sources and then died (kill -9:
// nothing after the marks happens, the marks are durable) leaves every answer whole; the next
// runs, by a new compactor before the deletion delay has passed, neither merge the marked sources
// again nor touch the result; a sweep killed after it deleted some sources' meta.json is finished
// by the next one; once the delay has passed the sweepers leave exactly the placed result.
func TestCompactor_CrashBetweenMarkAndSweep(t *testing.T) {
	c := newCluster(t, 120)
	c.flush("t1", t0, t0+2*hour, map[string]int{"m1": 2})
	before := c.answer("t1")
	markedAt := t0 + 3*hour
	if err := c.compactor(markedAt, 0, prometheus.NewRegistry()).RunOnce(context.Background(), 1); err != nil {
		t.Fatal(err)
	}
	marked := c.markedBlocks("t1")
	if len(marked) != 6 {
		t.Fatalf("marked %v, want the 6 flushed blocks", marked)
	}
	sameAnswer(t, "right after the marks", before, c.answer("t1"))
	ids := c.allIDs("t1")

	// The process is gone; a new compactor (a restart, or another lease holder) runs twice before
	// the delay is over.
	for _, at := range []int64{markedAt + 1000, markedAt + deletionDelay.Milliseconds() - 1000} {
		reg := prometheus.NewRegistry()
		if err := c.compactor(at, 0, reg).RunOnce(context.Background(), 1); err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(ids, c.allIDs("t1")) || !slices.Equal(marked, c.markedBlocks("t1")) {
			t.Fatalf("a run at %d after the crash changed the blocks", at-markedAt)
		}
		if got := counterSum(t, reg, "cortex_compactor_blocks_marked_for_deletion_total"); got != 0 {
			t.Fatalf("a run after the crash marked %v blocks", got)
		}
		if n := c.sweep(at); n != 0 {
			t.Fatalf("swept %d blocks %dms after they were marked", n, at-markedAt)
		}
		sameAnswer(t, "before the delay", before, c.answer("t1"))
	}

	// A sweep killed half-way: two marked sources lost their meta.json (the first thing deleted).
	for _, mb := range marked[:2] {
		member, id, _ := strings.Cut(mb, "/")
		if err := os.Remove(filepath.Join(c.buckets[member].dir, "t1", id, storage.MetaFilename)); err != nil {
			t.Fatal(err)
		}
	}
	sameAnswer(t, "after a half sweep", before, c.answer("t1"))
	if n := c.sweep(markedAt + deletionDelay.Milliseconds()); n != 6 {
		t.Fatalf("swept %d blocks once the delay passed, want the 6 sources (2 of them half swept)", n)
	}
	if got := c.markedBlocks("t1"); len(got) != 0 {
		t.Fatalf("marked blocks left: %v", got)
	}
	for _, mb := range marked {
		member, id, _ := strings.Cut(mb, "/")
		if _, err := os.Stat(filepath.Join(c.buckets[member].dir, "t1", id)); !os.IsNotExist(err) {
			t.Fatalf("source %s is still on disk after the sweep: %v", mb, err)
		}
	}
	sameAnswer(t, "after the sweep", before, c.answer("t1"))
	c.checkPlaced("t1", [][2]int64{{t0, t0 + 2*hour}})
}

// TestCompactor_MemberLeavingDuringTheJob_NothingMarked: a member of the placement starts leaving
// while the merge is placed (it may have listed its blocks to move them before its part landed,
// and would exit with it): the job fails before marking anything, so every source stays; once
// the ring is settled the next run merges again and marks the sources.
func TestCompactor_MemberLeavingDuringTheJob_NothingMarked(t *testing.T) {
	c := newCluster(t, 120)
	c.flush("t1", t0, t0+2*hour, nil)
	before := c.answer("t1")
	var asked [][]string
	c.stillPlaceable = func(_ context.Context, members []string) error {
		asked = append(asked, slices.Clone(members))
		if slices.Contains(members, "m2") {
			return errors.New("member m2 is LEAVING")
		}
		return nil
	}
	err := c.compactor(t0+5*hour, 0, nil).RunOnce(context.Background(), 1)
	if err == nil || !strings.Contains(err.Error(), "m2 is LEAVING") {
		t.Fatalf("RunOnce with m2 leaving: %v, want the job failed naming m2", err)
	}
	if len(asked) != 1 || !slices.Equal(asked[0], memberIDs) {
		t.Fatalf("StillPlaceable asked %v, want once with every member of the placement %v", asked, memberIDs)
	}
	if marked := c.markedBlocks("t1"); len(marked) != 0 {
		t.Fatalf("sources marked although a part's member was leaving: %v", marked)
	}
	sameAnswer(t, "after the failed job", before, c.answer("t1"))

	c.stillPlaceable = nil
	if err := c.compactor(t0+5*hour, 0, nil).RunOnce(context.Background(), 1); err != nil {
		t.Fatal(err)
	}
	if marked := c.markedBlocks("t1"); len(marked) == 0 {
		t.Fatal("the next run marked nothing")
	}
	sameAnswer(t, "after the next run", before, c.answer("t1"))
}

// TestCompactor_NoSpace_JobNotStarted: a job whose worst-case writes (3 times its sources) would
// leave less than the headroom free on the work directory's filesystem — the data disk, beside the
// WAL — does not start: nothing fetched, stored or marked, the run fails naming the space; with
// room the same job runs.
func TestCompactor_NoSpace_JobNotStarted(t *testing.T) {
	c := newCluster(t, 120)
	c.flush("t1", t0, t0+2*hour, nil)
	before := c.answer("t1")
	ids := c.allIDs("t1")
	var src int64
	for id := range c.buckets {
		for _, m := range c.blocksOf(id, "t1") {
			src += m.BlockSize()
		}
	}
	const total = 100 << 30 // a 100 GiB filesystem: 5% headroom is 5 GiB
	headroom := uint64(total / 20)
	c.freeBytes = func(string) (uint64, uint64, error) { return headroom + 3*uint64(src) - 1, total, nil }
	err := c.compactor(t0+5*hour, 0, nil).RunOnce(context.Background(), 1)
	if !errors.Is(err, compact.ErrNoSpace) || !strings.Contains(err.Error(), "min-free-disk-percent") {
		t.Fatalf("RunOnce one byte short of room: %v, want ErrNoSpace naming the flag", err)
	}
	if marked := c.markedBlocks("t1"); len(marked) != 0 {
		t.Fatalf("sources marked by a job that had no room: %v", marked)
	}
	if got := c.allIDs("t1"); !slices.Equal(got, ids) {
		t.Fatalf("blocks changed by a job that had no room: %v, want %v", got, ids)
	}
	if ents, _ := os.ReadDir(filepath.Join(c.root, "work")); len(ents) != 0 {
		t.Fatalf("the job wrote into its work directory: %v", ents)
	}
	sameAnswer(t, "after the refused job", before, c.answer("t1"))

	c.freeBytes = func(string) (uint64, uint64, error) { return headroom + 3*uint64(src), total, nil }
	if err := c.compactor(t0+5*hour, 0, nil).RunOnce(context.Background(), 1); err != nil {
		t.Fatalf("RunOnce with exactly enough room: %v", err)
	}
	if marked := c.markedBlocks("t1"); len(marked) == 0 {
		t.Fatal("the job with room marked nothing")
	}
	sameAnswer(t, "after the job", before, c.answer("t1"))
}

// TestCompactor_RetentionAndCompletenessInRingTime: the compactor judges retention and whether a
// range is complete by ring time, not by its member's clock: a clock 40 days ahead expires nothing
// that ring time keeps (it used to delete a retention's worth of data early), and a clock behind
// ring time does not hold back a range that ring time says is complete.
func TestCompactor_RetentionAndCompletenessInRingTime(t *testing.T) {
	t.Run("local clock ahead", func(t *testing.T) {
		c := newCluster(t, 60)
		c.flush("t1", t0, t0+2*hour, nil)
		c.ringTimeMs = func() int64 { return t0 + 5*hour }
		reg := prometheus.NewRegistry()
		if err := c.compactor(t0+40*24*hour, 30*24*time.Hour, reg).RunOnce(context.Background(), 1); err != nil {
			t.Fatal(err)
		}
		if got := testutil.ToFloat64(counterVec(t, reg, "cortex_compactor_blocks_marked_for_deletion_total", "retention")); got != 0 {
			t.Fatalf("%v blocks marked by retention with ring time 5h after them and a 30-day retention", got)
		}
		c.checkPlaced("t1", [][2]int64{{t0, t0 + 2*hour}})
	})
	t.Run("local clock behind", func(t *testing.T) {
		c := newCluster(t, 60)
		c.flush("t1", t0, t0+2*hour, nil)
		c.flush("t1", t0+2*hour, t0+4*hour, nil)
		c.ringTimeMs = func() int64 { return t0 + 5*hour }
		if err := c.compactor(t0+5*hour, 0, nil).RunOnce(context.Background(), 1); err != nil {
			t.Fatal(err)
		}
		c.checkPlaced("t1", [][2]int64{{t0, t0 + 2*hour}, {t0 + 2*hour, t0 + 4*hour}})
		// The day is complete in ring time (its end 3h ago), not by the member's clock (5h into it).
		c.ringTimeMs = func() int64 { return t0 + 27*hour }
		if err := c.compactor(t0+5*hour, 0, nil).RunOnce(context.Background(), 1); err != nil {
			t.Fatal(err)
		}
		c.checkPlaced("t1", [][2]int64{{t0, t0 + 4*hour}})
	})
}

// counterVec returns the child of a counter vector with one label value.
func counterVec(t *testing.T, reg *prometheus.Registry, name, value string) prometheus.Collector {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if len(m.GetLabel()) == 1 && m.GetLabel()[0].GetValue() == value {
				c := prometheus.NewCounter(prometheus.CounterOpts{Name: "x"})
				c.Add(m.GetCounter().GetValue())
				return c
			}
		}
	}
	t.Fatalf("no %s{%s}", name, value)
	return nil
}
