package blocksvc

import (
	"context"
	"errors"
	"io"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/thanos-io/objstore"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/raftingest/raftingest/storage"
)

// withRegistry gives mv metrics registered on a fresh registry, and returns it.
func withRegistry(t *testing.T, mv *Mover) *prometheus.Registry {
	t.Helper()
	reg := prometheus.NewRegistry()
	m, err := NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	mv.Metrics = m
	return reg
}

// corruptChunks flips the last byte of a block's first chunk segment: its last chunk's CRC.
func corruptChunks(t *testing.T, blockDir string) {
	t.Helper()
	p := filepath.Join(blockDir, "chunks", "000001")
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)-1] ^= 0xff
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestMover_BlockRefusedNotTheMember: a block that members refuse because of the block itself is
// given up, not the members, and the other blocks move.
//
//   - Too large (above the receivers' -blocks-storage.max-block-upload-bytes): each member is
//     asked once, none is given up, every other block moves, and the move fails ErrStranded
//     naming the block, its size and the flag (the leaver stays LEAVING; raising the limit lets it
//     go). It used to give up each member in turn, so every later block was stranded too.
//   - Corrupt (it does not read here): the move leaves it behind (Moved.Abandoned) and succeeds
//     with every other block moved; it used to strand it, and the leave retried for ever.
//   - A hand-over whose joiner finds a block invalid (InvalidArgument) skips it the same way
//     instead of failing every attempt.
func TestMover_BlockRefusedNotTheMember(t *testing.T) {
	t.Run("too large", func(t *testing.T) {
		src := t.TempDir()
		big, _ := testBlock(t, filepath.Join(src, "t1"), "t1", 300, 240, 1)
		var small []string
		for i := range 3 {
			d, _ := testBlock(t, filepath.Join(src, "t2"), "t2", 10, 30, uint64(10+i))
			small = append(small, "t2/"+filepath.Base(d))
		}
		cfg := Config{MaxBlockUploadBytes: 50 << 10} // the big block's parts are ~250 KiB each
		a, b := startNode(t, cfg, nil), startNode(t, cfg, nil)
		mv := testMover(t, src)
		reg := withRegistry(t, mv)
		mv.WorkDir = filepath.Join(t.TempDir(), "work")
		mv.Attempts, mv.Backoff = 5, 2*time.Second // a retried refusal would take 30s per member
		start := time.Now()
		got, err := mv.Evacuate(t.Context(), rotatingPlacement(Target{"a", a.addr}, Target{"b", b.addr}))
		if !errors.Is(err, ErrStranded) || !strings.Contains(err.Error(), "t1/"+filepath.Base(big)) ||
			!strings.Contains(err.Error(), "too large") || !strings.Contains(err.Error(), "-blocks-storage.max-block-upload-bytes") {
			t.Fatalf("Evacuate: %v; want ErrStranded naming the big block, too large, and the flag", err)
		}
		if !strings.Contains(err.Error(), "1 of 4 blocks") {
			t.Fatalf("Evacuate: %v; want 1 of 4 blocks stranded", err)
		}
		if took := time.Since(start); took > 10*time.Second {
			t.Fatalf("Evacuate took %s: a refusal of the block itself was retried", took)
		}
		// Every series of the small blocks is on a or b, each once: nobody was given up.
		want := map[string]int{}
		for _, s := range small {
			addSeries(t, want, "t2", filepath.Join(src, filepath.FromSlash(s)))
		}
		have := map[string]int{}
		for _, n := range []*node{a, b} {
			ss, _ := seriesSamples(t, n.bucketDir)
			for s, k := range ss {
				have[s] += k
			}
		}
		if !maps.Equal(have, want) {
			t.Fatalf("a and b hold %d series, want exactly the %d of the small blocks", len(have), len(want))
		}
		if got.Copies < 3 {
			t.Fatalf("moved %+v: want the 3 small blocks' parts stored", got)
		}
		if n := metric(t, reg, "raftingest_blocks_unmovable_total"); n != 1 {
			t.Fatalf("raftingest_blocks_unmovable_total = %v, want 1", n)
		}
	})

	t.Run("corrupt", func(t *testing.T) {
		src, blocks := leaverBucket(t)
		corruptChunks(t, filepath.Join(src, filepath.FromSlash(blocks[1])))
		a := startNode(t, Config{}, nil)
		mv := testMover(t, src)
		reg := withRegistry(t, mv)
		mv.WorkDir = filepath.Join(t.TempDir(), "work")
		got, err := mv.Evacuate(t.Context(), rotatingPlacement(Target{"a", a.addr}))
		if err != nil {
			t.Fatalf("Evacuate: %v; want the leave to go on without the corrupt block", err)
		}
		if !slices.Equal(got.Abandoned, []string{blocks[1]}) || got.Blocks != 3 {
			t.Fatalf("Evacuate: %+v; want 3 blocks handled and %s abandoned", got, blocks[1])
		}
		holdsSeriesOf(t, a, src, []string{blocks[0], blocks[2]})
		if n := metric(t, reg, "raftingest_blocks_unmovable_total"); n != 1 {
			t.Fatalf("raftingest_blocks_unmovable_total = %v, want 1", n)
		}
	})

	t.Run("hand-over, the joiner finds it invalid", func(t *testing.T) {
		src, blocks := leaverBucket(t)
		corruptChunks(t, filepath.Join(src, filepath.FromSlash(blocks[0])))
		joiner := startNode(t, Config{}, nil)
		mv := testMover(t, src)
		mv.Attempts, mv.Backoff = 5, 2*time.Second
		start := time.Now()
		got, err := mv.HandOver(t.Context(), Target{ID: "j", Addr: joiner.addr})
		if err != nil || !slices.Equal(got.Abandoned, []string{blocks[0]}) || got.Copies != 2 {
			t.Fatalf("HandOver: %+v, %v; want the 2 good blocks handed over and %s abandoned", got, err, blocks[0])
		}
		if took := time.Since(start); took > 10*time.Second {
			t.Fatalf("HandOver took %s: an invalid block was retried", took)
		}
		holds(t, joiner, src, blocks[1:])
	})
}

// TestMover_EvacuateWithoutRoomToSplit: a leaver whose disk has no room to split a block (a
// common reason to drain it) sends it whole to every member that takes one of its series, and the
// leave completes: each series is on its member, nothing was written to the work directory. It
// used to hit ENOSPC on every retry and never leave.
func TestMover_EvacuateWithoutRoomToSplit(t *testing.T) {
	src, _ := bigLeaverBucket(t)
	a, b := startNode(t, Config{}, nil), startNode(t, Config{}, nil)
	nodes := map[string]*node{"a": a, "b": b}
	place := rotatingPlacement(Target{"a", a.addr}, Target{"b", b.addr})
	mv := testMover(t, src)
	mv.WorkDir = filepath.Join(t.TempDir(), "work")
	mv.MinFreeDiskPercent = 5
	mv.statFS = func(string) (fsStat, error) { return fsStat{free: 1 << 20, total: 10 << 30}, nil }
	got, err := mv.Evacuate(t.Context(), place)
	if err != nil || got.Whole != 3 || got.Blocks != 3 {
		t.Fatalf("Evacuate: %+v, %v; want the 3 blocks sent whole", got, err)
	}
	want, _ := seriesSamples(t, src)
	held := map[string]map[string]int{}
	for id, n := range nodes {
		held[id], _ = seriesSamples(t, n.bucketDir)
	}
	for s, k := range want {
		tn, ls, _ := strings.Cut(s, " ")
		lset := parseMetric(t, ls)
		exp, _ := place(tn, lset, func(string) bool { return false })
		if held[exp.ID][s] != k {
			t.Fatalf("series %s: %d samples on %s, want %d", s, held[exp.ID][s], exp.ID, k)
		}
	}
	requireEmpty(t, "work directory", mv.WorkDir)

	// With room, the same bucket is split (nothing sent whole).
	mv.statFS = func(string) (fsStat, error) { return fsStat{free: 8 << 30, total: 10 << 30}, nil }
	c := startNode(t, Config{}, nil)
	if got, err := mv.Evacuate(t.Context(), rotatingPlacement(Target{"c", c.addr})); err != nil || got.Whole != 0 {
		t.Fatalf("Evacuate with room: %+v, %v; want every block split", got, err)
	}
}

// TestStoreTimeout_CoversTheReceiversWaits: the sender waits at least as long as a receiver with
// the default configuration may take without failing a store: a store slot (up to the idle
// timeout), then the idle timeout plus the size at the minimum rate. It used to give up after 30s
// plus a second per MiB, so a small store queued at a busy member failed and the member was given
// up.
func TestStoreTimeout_CoversTheReceiversWaits(t *testing.T) {
	cfg := DefaultConfig()
	for _, n := range []int64{0, 1 << 10, 1 << 20, 100 << 20, 10 << 30} {
		recv := cfg.IdleTimeout + cfg.IdleTimeout + time.Duration(float64(n)/float64(cfg.MinStoreRate)*float64(time.Second))
		if got := storeTimeout(n); got <= recv {
			t.Errorf("storeTimeout(%d) = %s, want more than the receiver's %s", n, got, recv)
		}
	}
}

// TestStopAccepting_BoundedByItsContext: StopAccepting waits for a store that accepted its block,
// but not past its context (a local upload that hangs must not hang the leave); stores stay
// refused, and a later call returns once the store ended.
func TestStopAccepting_BoundedByItsContext(t *testing.T) {
	n := startNode(t, Config{}, nil)
	n.srv.commit.RLock() // a store between its last check and the end of its upload
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	if err := n.srv.StopAccepting(ctx, "test"); err == nil || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("StopAccepting with a store hanging: %v, want the context's error", err)
	}
	if err := n.srv.accepting(); err == nil {
		t.Fatal("stores are accepted after a StopAccepting that timed out")
	}
	n.srv.commit.RUnlock()
	if err := n.srv.StopAccepting(t.Context(), "test"); err != nil {
		t.Fatalf("StopAccepting once the store ended: %v", err)
	}
}

// TestStoreBlock_ClearsLeftoversOfTheULID: a store of a block whose ULID has leftovers in the
// bucket — a deletion cut short (its mark and a stray file stayed) or an upload cut short — starts
// clean: the stored block is exactly the one sent, and unmarked. The mark used to stay, and the
// block the sender was told is durable was deleted at the next sweep.
func TestStoreBlock_ClearsLeftoversOfTheULID(t *testing.T) {
	n := startNode(t, Config{}, nil)
	dir, meta := testBlock(t, t.TempDir(), "t1", 20, 60, 5)
	left := filepath.Join(n.bucketDir, "t1", meta.ULID.String())
	if err := os.MkdirAll(filepath.Join(left, "chunks"), 0o755); err != nil {
		t.Fatal(err)
	}
	for name, body := range map[string]string{
		storage.DeletionMarkFilename: `{"id":"` + meta.ULID.String() + `","deletion_time":1,"version":1}`,
		"chunks/000009":              "stray",
	} {
		if err := os.WriteFile(filepath.Join(left, filepath.FromSlash(name)), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if present, err := Store(t.Context(), n.client, "t1", dir); err != nil || present {
		t.Fatalf("Store: present %v, %v", present, err)
	}
	sameFiles(t, dir, left)
	blocks, err := LocalBlocks(n.bucketDir)
	if err != nil || len(blocks) != 1 || blocks[0].ID != meta.ULID {
		t.Fatalf("listed %v, %v; want the stored block, unmarked", blocks, err)
	}
}

func parseMetric(t *testing.T, s string) labels.Labels {
	t.Helper()
	lset, err := parser.ParseMetric(s)
	if err != nil {
		t.Fatal(err)
	}
	return lset
}

// blockingUploads holds every Upload of a meta.json until release is closed, after telling
// reached.
type blockingUploads struct {
	objstore.Bucket
	reached chan struct{}
	release chan struct{}
}

func (b *blockingUploads) Upload(ctx context.Context, name string, r io.Reader, opts ...objstore.ObjectUploadOption) error {
	if strings.HasSuffix(name, "/"+storage.MetaFilename) {
		close(b.reached)
		<-b.release
	}
	return b.Bucket.Upload(ctx, name, r, opts...)
}

// TestStopAccepting_RacingAStore: StopAccepting called while a store is still receiving its block
// returns at once, and that store is then refused (FailedPrecondition) with nothing left in the
// bucket; called while a store uploads its accepted block into the bucket, it returns only once
// the block is complete there — so a leaver's listing after it sees the block, or the block was
// refused.
func TestStopAccepting_RacingAStore(t *testing.T) {
	t.Run("mid-stream", func(t *testing.T) {
		n := startNode(t, Config{}, nil)
		dir, meta := testBlock(t, t.TempDir(), "t1", 200, 240, 3)
		h, pieces := blockParts(t, "t1", dir)
		st, err := n.client.StoreBlock(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if err := st.Send(hdr(h)); err != nil {
			t.Fatal(err)
		}
		if err := st.Send(pc(pieces[0])); err != nil {
			t.Fatal(err)
		}
		time.Sleep(100 * time.Millisecond) // the header and a piece are received
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		defer cancel()
		if err := n.srv.StopAccepting(ctx, "test: leaving"); err != nil {
			t.Fatalf("StopAccepting while a store receives: %v, want it to return at once", err)
		}
		for _, p := range pieces[1:] {
			if err := st.Send(pc(p)); err != nil {
				break // the server may end the call early; CloseAndRecv has its answer
			}
		}
		if _, err := st.CloseAndRecv(); status.Code(err) != codes.FailedPrecondition {
			t.Fatalf("the store that was receiving: %v, want FailedPrecondition", err)
		}
		if _, err := os.Stat(filepath.Join(n.bucketDir, "t1", meta.ULID.String())); !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("the refused block is in the bucket: %v", err)
		}
	})
	t.Run("mid-upload", func(t *testing.T) {
		bu := &blockingUploads{reached: make(chan struct{}), release: make(chan struct{})}
		n := startNode(t, Config{}, func(d *Deps) { bu.Bucket = d.Bucket; d.Bucket = bu })
		dir, meta := testBlock(t, t.TempDir(), "t1", 20, 60, 4)
		stored := make(chan error, 1)
		go func() {
			_, err := Store(t.Context(), n.client, "t1", dir)
			stored <- err
		}()
		<-bu.reached
		stopped := make(chan error, 1)
		go func() { stopped <- n.srv.StopAccepting(t.Context(), "test: leaving") }()
		select {
		case err := <-stopped:
			t.Fatalf("StopAccepting returned (%v) while a store was uploading its block", err)
		case <-time.After(300 * time.Millisecond):
		}
		close(bu.release)
		if err := <-stopped; err != nil {
			t.Fatalf("StopAccepting: %v", err)
		}
		// The block is complete in the bucket the moment StopAccepting returns.
		sameFiles(t, dir, filepath.Join(n.bucketDir, "t1", meta.ULID.String()))
		if err := <-stored; err != nil {
			t.Fatalf("the store that was uploading: %v, want success", err)
		}
	})
}

// TestCheckFreeSpace_KeepsHeadroom: Fetch refuses a block that would leave less than
// minFreePct of the filesystem free, not only one that does not fit at all (the compactor's
// fetches share the disk with the WAL and the flushes).
func TestCheckFreeSpace_KeepsHeadroom(t *testing.T) {
	stat := func(string) (fsStat, error) { return fsStat{free: 100 << 20, total: 1 << 30}, nil }
	if err := checkFreeSpace(stat, "/x", 40<<20, 5); err != nil {
		t.Fatalf("40 MiB with 100 MiB free and 51 MiB kept: %v, want it accepted", err)
	}
	if err := checkFreeSpace(stat, "/x", 60<<20, 5); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("60 MiB with 100 MiB free and 51 MiB kept: %v, want ErrTooLarge", err)
	}
	if err := checkFreeSpace(func(string) (fsStat, error) { return fsStat{}, errors.New("no statfs") }, "/x", 1<<40, 5); err != nil {
		t.Fatalf("a filesystem that cannot tell: %v, want no refusal", err)
	}
}
