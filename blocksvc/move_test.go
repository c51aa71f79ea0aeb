package blocksvc

import (
	"errors"
	"hash/fnv"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/oklog/ulid/v2"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/prometheus/prometheus/tsdb"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"github.com/prometheus/prometheus/tsdb/chunks"
	"github.com/prometheus/prometheus/tsdb/index"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/raftingest/raftingest/blockspb"
	"github.com/raftingest/raftingest/storage"
)

// TestStoreBlock_ConcurrencyBoundedAndStallReleased: with one store slot, a stalled store holds
// it; another store waits for it and is refused ResourceExhausted when it does not come free
// within the idle timeout; once the stalled one timed out, a store succeeds.
func TestStoreBlock_ConcurrencyBoundedAndStallReleased(t *testing.T) {
	n := startNode(t, Config{IdleTimeout: 1500 * time.Millisecond, MaxConcurrentStores: 1}, nil)
	dir, meta := testBlock(t, t.TempDir(), "t1", 600, 240, 9)
	h, pieces := blockParts(t, "t1", dir)
	stalled := make(chan error, 1)
	go func() {
		// The header and a piece at once, another 700ms later, then nothing: the slot is held
		// until 700ms plus the idle timeout (2.2s); the other store gives up waiting at 1.7s.
		st, err := n.client.StoreBlock(t.Context())
		if err != nil {
			stalled <- err
			return
		}
		_ = st.Send(hdr(h))
		_ = st.Send(pc(pieces[0]))
		time.Sleep(700 * time.Millisecond)
		_ = st.Send(pc(pieces[1]))
		time.Sleep(3 * time.Second)
		_, err = st.CloseAndRecv()
		stalled <- err
	}()
	time.Sleep(200 * time.Millisecond) // the stalled store takes the slot
	_, err := Store(t.Context(), n.client, "t1", dir)
	if status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("a store while the only slot is held: %v, want ResourceExhausted", err)
	}
	if err := <-stalled; status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("the stalled store: %v, want DeadlineExceeded", err)
	}
	if present, err := Store(t.Context(), n.client, "t1", dir); err != nil || present {
		t.Fatalf("a store after the stalled one was released: present %v, %v", present, err)
	}
	sameFiles(t, dir, filepath.Join(n.bucketDir, "t1", meta.ULID.String()))
	requireEmpty(t, "staging", n.staging)
}

// leaverBucket writes blocks of two tenants (and a partial block, which must not move) into a
// filesystem bucket directory, as a leaver's flushes leave it.
func leaverBucket(t *testing.T) (dir string, blocks []string) {
	t.Helper()
	dir = t.TempDir()
	for i, tn := range []string{"t1", "t1", "t2"} {
		b, _ := testBlock(t, filepath.Join(dir, tn), tn, 10+i, 30, uint64(20+i))
		blocks = append(blocks, tn+"/"+filepath.Base(b))
	}
	p, _ := testBlock(t, filepath.Join(dir, "t2"), "t2", 3, 3, 99)
	if err := os.Remove(filepath.Join(p, storage.MetaFilename)); err != nil {
		t.Fatal(err)
	}
	return dir, blocks
}

// holds fails unless n's bucket holds exactly blocks, each byte for byte as in src.
func holds(t *testing.T, n *node, src string, blocks []string) {
	t.Helper()
	got, err := LocalBlocks(n.bucketDir)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(blocks) {
		t.Fatalf("%s holds %d blocks, want %d", n.addr, len(got), len(blocks))
	}
	for _, b := range blocks {
		sameFiles(t, filepath.Join(src, filepath.FromSlash(b)), filepath.Join(n.bucketDir, filepath.FromSlash(b)))
	}
}

func testMover(t *testing.T, bucketDir string) *Mover {
	t.Helper()
	m, err := NewMetrics(nil)
	if err != nil {
		t.Fatal(err)
	}
	return &Mover{BucketDir: bucketDir, Metrics: m, Attempts: 2, Backoff: 50 * time.Millisecond, Logger: slog.New(slog.DiscardHandler),
		Client: func(addr string) (blockspb.BlocksClient, error) {
			conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				return nil, err
			}
			t.Cleanup(func() { conn.Close() })
			return blockspb.NewBlocksClient(conn), nil
		}}
}

// TestMover_HandOver: every complete block of the leaver's bucket ends on the joiner, byte for
// byte, and nothing partial moves; a second hand-over (a retried attempt) finds them present.
func TestMover_HandOver(t *testing.T) {
	src, blocks := leaverBucket(t)
	joiner := startNode(t, Config{}, nil)
	mv := testMover(t, src)
	got, err := mv.HandOver(t.Context(), Target{ID: "j", Addr: joiner.addr})
	if err != nil || got.Blocks != 3 || got.Copies != 3 || got.AlreadyPresent != 0 {
		t.Fatalf("HandOver: %+v, %v", got, err)
	}
	holds(t, joiner, src, blocks)
	if got, err := mv.HandOver(t.Context(), Target{ID: "j", Addr: joiner.addr}); err != nil || got.AlreadyPresent != 3 || got.Bytes != 0 {
		t.Fatalf("second HandOver: %+v, %v; want every block already present", got, err)
	}
}

// seriesSamples reads every complete block of a filesystem bucket and returns, per tenant and
// series, how many samples it holds in all, and the blocks' ULIDs.
func seriesSamples(t *testing.T, bucketDir string) (map[string]int, []string) {
	t.Helper()
	blocks, err := LocalBlocks(bucketDir)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int{}
	var ids []string
	for _, lb := range blocks {
		ids = append(ids, lb.ID.String())
		addSeries(t, out, lb.Tenant, lb.Dir)
	}
	return out, ids
}

// addSeries adds the samples of each series of the block in dir to out, keyed "tenant labels".
func addSeries(t *testing.T, out map[string]int, tenantID, dir string) {
	t.Helper()
	b, err := tsdb.OpenBlock(nil, dir, chunkenc.NewPool(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	ir, err := b.Index()
	if err != nil {
		t.Fatal(err)
	}
	defer ir.Close()
	cr, err := b.Chunks()
	if err != nil {
		t.Fatal(err)
	}
	defer cr.Close()
	n, v := index.AllPostingsKey()
	p, err := ir.Postings(t.Context(), n, v)
	if err != nil {
		t.Fatal(err)
	}
	var sb labels.ScratchBuilder
	for p.Next() {
		var metas []chunks.Meta
		if err := ir.Series(p.At(), &sb, &metas); err != nil {
			t.Fatal(err)
		}
		for _, m := range metas {
			c, _, err := cr.ChunkOrIterable(m)
			if err != nil {
				t.Fatal(err)
			}
			out[tenantID+" "+sb.Labels().String()] += c.NumSamples()
		}
	}
	if err := p.Err(); err != nil {
		t.Fatal(err)
	}
}

// holdsSeriesOf fails unless n's bucket holds exactly the series (and samples) of blocks of src.
func holdsSeriesOf(t *testing.T, n *node, src string, blocks []string) {
	t.Helper()
	want := map[string]int{}
	for _, b := range blocks {
		tn, _, _ := strings.Cut(b, "/")
		addSeries(t, want, tn, filepath.Join(src, filepath.FromSlash(b)))
	}
	got, _ := seriesSamples(t, n.bucketDir)
	if !maps.Equal(got, want) {
		t.Fatalf("%s holds %d series, want the %d of %v", n.addr, len(got), len(want), blocks)
	}
}

// rotatingPlacement is a Placement over members: a series' candidates are members rotated by
// the hash of its tenant and labels, the first not skipped takes it.
func rotatingPlacement(members ...Target) Placement {
	return func(tenant string, lset labels.Labels, skip func(string) bool) (Target, bool) {
		h := fnv.New32a()
		h.Write([]byte(tenant + " " + lset.String()))
		start := int(h.Sum32() % uint32(len(members)))
		for k := range members {
			t := members[(start+k)%len(members)]
			if !skip(t.ID) {
				return t, true
			}
		}
		return Target{}, false
	}
}

// bigLeaverBucket writes three blocks of two tenants, large enough that a block's index overhead
// does not dominate its bytes.
func bigLeaverBucket(t *testing.T) (dir string, bytes int64) {
	t.Helper()
	dir = t.TempDir()
	for i, tn := range []string{"t1", "t1", "t2"} {
		testBlock(t, filepath.Join(dir, tn), tn, 300+i, 240, uint64(40+i))
	}
	blocks, err := LocalBlocks(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range blocks {
		bytes += b.Bytes
	}
	return dir, bytes
}

// TestMover_Evacuate: each series of the leaver's blocks is stored exactly once more, on the
// member the placement chooses for it — a member that cannot take blocks (down) is skipped and
// its series go to the next candidate — and the move writes about one copy of the leaver's bytes
// (it used to send every block whole to every target: N−1 copies). With every member down the
// move fails ErrStranded and says which blocks, so the leaver stays.
func TestMover_Evacuate(t *testing.T) {
	src, srcBytes := bigLeaverBucket(t)
	want, srcIDs := seriesSamples(t, src)
	a, b, c := startNode(t, Config{}, nil), startNode(t, Config{}, nil), startNode(t, Config{}, nil)
	down := startNode(t, Config{}, nil)
	down.stop()
	nodes := map[string]*node{"a": a, "b": b, "c": c}
	place := rotatingPlacement(Target{"a", a.addr}, Target{"down", down.addr}, Target{"b", b.addr}, Target{"c", c.addr})

	mv := testMover(t, src)
	mv.WorkDir = filepath.Join(t.TempDir(), "work")
	got, err := mv.Evacuate(t.Context(), place)
	if err != nil || got.Blocks != 3 {
		t.Fatalf("Evacuate: %+v, %v; want 3 blocks moved", got, err)
	}
	// Every series once, on the member the placement names with "down" skipped.
	onMember := map[string]string{}
	for id, n := range nodes {
		ss, _ := seriesSamples(t, n.bucketDir)
		for s, samples := range ss {
			if prev, ok := onMember[s]; ok {
				t.Fatalf("series %s is on %s and %s: want it once", s, prev, id)
			}
			onMember[s] = id
			if samples != want[s] {
				t.Fatalf("series %s on %s: %d samples, want %d", s, id, samples, want[s])
			}
		}
	}
	if len(onMember) != len(want) {
		t.Fatalf("%d series moved, want %d", len(onMember), len(want))
	}
	skipDown := func(id string) bool { return id == "down" }
	for s := range want {
		tn, ls, _ := strings.Cut(s, " ")
		lset, err := parser.ParseMetric(ls)
		if err != nil {
			t.Fatal(err)
		}
		if exp, _ := place(tn, lset, skipDown); onMember[s] != exp.ID {
			t.Fatalf("series %s is on %s, want %s", s, onMember[s], exp.ID)
		}
	}
	// About one copy: the parts repeat each block's symbols and postings a little.
	if got.Bytes < srcBytes || float64(got.Bytes) > 1.25*float64(srcBytes) {
		t.Fatalf("the move sent %d bytes for %d bytes of blocks: want about one copy (at most 1.25x)", got.Bytes, srcBytes)
	}
	t.Logf("sent %d bytes in %d parts for %d bytes in %d blocks (%.2fx)", got.Bytes, got.Copies, srcBytes, got.Blocks,
		float64(got.Bytes)/float64(srcBytes))
	// The parts get a compaction group of this move's own, "<the source block's group>/leave-<move>"
	// (one move id for all), so the planner merges each window once more and removes what a leave
	// put in the wrong place; keeping the source's group left the window looking compacted.
	moves := map[string]bool{}
	for _, n := range nodes {
		blocks, err := LocalBlocks(n.bucketDir)
		if err != nil {
			t.Fatal(err)
		}
		for _, lb := range blocks {
			raw, err := os.ReadFile(filepath.Join(lb.Dir, storage.MetaFilename))
			if err != nil {
				t.Fatal(err)
			}
			m, err := storage.ReadMeta(raw)
			if err != nil {
				t.Fatal(err)
			}
			g := storage.CompactionGroup(&m.BlockMeta)
			base, move, ok := strings.Cut(g, "/leave-")
			if _, err := ulid.ParseStrict(move); !ok || err != nil || !slices.Contains(srcIDs, base) {
				t.Fatalf("part %s has compaction group %q, want <one of the source blocks' %v>/leave-<move ULID>", lb.ID, g, srcIDs)
			}
			moves[move] = true
		}
	}
	if len(moves) != 1 {
		t.Fatalf("the parts name %d moves, want 1: %v", len(moves), moves)
	}
	requireEmpty(t, "work directory", mv.WorkDir)

	t.Run("every member down", func(t *testing.T) {
		start := time.Now()
		_, err := mv.Evacuate(t.Context(), rotatingPlacement(Target{"down", down.addr}, Target{"down2", down.addr}))
		if !errors.Is(err, ErrStranded) || !strings.Contains(err.Error(), "3 of 3 blocks") {
			t.Fatalf("Evacuate to dead members: %v, want ErrStranded for 3 of 3 blocks", err)
		}
		t.Logf("refused after %s: %v", time.Since(start).Round(time.Millisecond), err)
	})
}

// TestMover_EvacuateSkipsALeavingMember: a member that refuses blocks because it is leaving too
// (FailedPrecondition) is asked once, not Attempts times, and its series go to the next candidate.
func TestMover_EvacuateSkipsALeavingMember(t *testing.T) {
	src, _ := leaverBucket(t)
	want, _ := seriesSamples(t, src)
	leaving := startNode(t, Config{}, nil)
	if err := leaving.srv.StopAccepting(t.Context(), "test: leaving"); err != nil {
		t.Fatal(err)
	}
	a := startNode(t, Config{}, nil)
	mv := testMover(t, src)
	mv.WorkDir = filepath.Join(t.TempDir(), "work")
	mv.Attempts, mv.Backoff = 5, 2*time.Second // a retried refusal would take 30s
	start := time.Now()
	if _, err := mv.Evacuate(t.Context(), rotatingPlacement(Target{"leaving", leaving.addr}, Target{"a", a.addr})); err != nil {
		t.Fatalf("Evacuate: %v", err)
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Fatalf("Evacuate took %s: a member that refuses blocks was retried", took)
	}
	got, _ := seriesSamples(t, a.bucketDir)
	if !maps.Equal(got, want) {
		t.Fatalf("a holds %d series, want every one of the %d", len(got), len(want))
	}
	requireEmpty(t, "the leaving member's bucket", leaving.bucketDir)
	if n := metric(t, leaving.reg, "raftingest_blocks_store_refused_total"); n < 1 {
		t.Fatalf("refused stores on the leaving member: %v, want at least 1", n)
	}
}

// TestMover_BlockLandingDuringTheMoveMoves: a block that lands in the leaver's bucket after the
// move listed it (a compacted part stored on this member just before it refused blocks) is moved
// too, by a hand-over and by a leave: the move lists the bucket again until a pass finds nothing
// new. Listing once left it on the leaver, which exited with it.
func TestMover_BlockLandingDuringTheMoveMoves(t *testing.T) {
	for _, how := range []string{"handover", "leave"} {
		t.Run(how, func(t *testing.T) {
			src, _ := leaverBucket(t)
			target := startNode(t, Config{}, nil)
			mv := testMover(t, src)
			mv.WorkDir = filepath.Join(t.TempDir(), "work")
			client := mv.Client
			landed := false
			mv.Client = func(addr string) (blockspb.BlocksClient, error) {
				if !landed { // while the first block is being stored
					landed = true
					testBlock(t, filepath.Join(src, "t2"), "t2", 5, 30, 77)
				}
				return client(addr)
			}
			var err error
			var got Moved
			if how == "handover" {
				got, err = mv.HandOver(t.Context(), Target{"j", target.addr})
			} else {
				got, err = mv.Evacuate(t.Context(), rotatingPlacement(Target{"j", target.addr}))
			}
			if err != nil || got.Blocks != 4 {
				t.Fatalf("%s: %+v, %v; want the 3 blocks listed first and the one that landed", how, got, err)
			}
			want, _ := seriesSamples(t, src)
			have, _ := seriesSamples(t, target.bucketDir)
			if !maps.Equal(have, want) {
				t.Fatalf("the target holds %d series, want the %d of the leaver's 4 blocks", len(have), len(want))
			}
		})
	}
}

// TestMover_BlockCompactedAwayMeanwhile: a block deleted from the leaver's bucket while it is being
// moved (the compactor replaced it: meta.json goes first) is skipped, not held against the target
// and not reported stranded; the other blocks still move.
func TestMover_BlockCompactedAwayMeanwhile(t *testing.T) {
	src, blocks := leaverBucket(t)
	target := startNode(t, Config{}, nil)
	mv := testMover(t, src)
	client := mv.Client
	first := true
	mv.Client = func(addr string) (blockspb.BlocksClient, error) {
		if first { // the first block goes while it is offered for the first time
			first = false
			if err := os.Remove(filepath.Join(src, filepath.FromSlash(blocks[0]), storage.MetaFilename)); err != nil {
				t.Fatal(err)
			}
		}
		return client(addr)
	}
	got, err := mv.Evacuate(t.Context(), rotatingPlacement(Target{"t", target.addr}))
	if err != nil || got.Copies != 2 {
		t.Fatalf("Evacuate: %+v, %v; want the 2 remaining blocks moved", got, err)
	}
	holdsSeriesOf(t, target, src, blocks[1:])
}

// TestMover_MarkedBlockNotMoved: a block marked for deletion (its replacement is durable on the
// members of its series' replication sets) is not moved by a hand-over or a leave, and a block
// marked after the leave listed the bucket is skipped like one deleted meanwhile; the others move.
func TestMover_MarkedBlockNotMoved(t *testing.T) {
	src, blocks := leaverBucket(t)
	bkt, err := storage.NewFilesystemBucket(src)
	if err != nil {
		t.Fatal(err)
	}
	mark := func(b string) {
		t.Helper()
		tn, id, _ := strings.Cut(b, "/")
		if ok, err := storage.MarkForDeletion(t.Context(), bkt, tn, ulid.MustParse(id), time.Now(), "test"); err != nil || !ok {
			t.Fatalf("marking %s: %v, %v", b, ok, err)
		}
	}
	mark(blocks[0])
	joiner := startNode(t, Config{}, nil)
	mv := testMover(t, src)
	got, err := mv.HandOver(t.Context(), Target{ID: "j", Addr: joiner.addr})
	if err != nil || got.Blocks != 2 || got.Copies != 2 {
		t.Fatalf("HandOver: %+v, %v; want the 2 unmarked blocks moved", got, err)
	}
	holds(t, joiner, src, blocks[1:])

	// blocks[2] is marked after the leave listed the bucket, while blocks[1] is being stored.
	target := startNode(t, Config{}, nil)
	client := mv.Client
	first := true
	mv.Client = func(addr string) (blockspb.BlocksClient, error) {
		if first {
			first = false
			mark(blocks[2])
		}
		return client(addr)
	}
	got, err = mv.Evacuate(t.Context(), rotatingPlacement(Target{"t", target.addr}))
	if err != nil || got.Blocks != 2 || got.Copies != 1 {
		t.Fatalf("Evacuate: %+v, %v; want 2 listed, only the one still unmarked moved", got, err)
	}
	holdsSeriesOf(t, target, src, blocks[1:2])
}
