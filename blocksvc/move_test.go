package blocksvc

import (
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/oklog/ulid/v2"
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

// TestMover_Evacuate: every block goes to every target; a target that cannot take blocks (down)
// is replaced by a spare, block by block; with every member down the move fails ErrStranded and
// says which block, so the leaver stays; without targets the spares are the targets.
func TestMover_Evacuate(t *testing.T) {
	src, blocks := leaverBucket(t)
	a, b, spare := startNode(t, Config{}, nil), startNode(t, Config{}, nil), startNode(t, Config{}, nil)
	down := startNode(t, Config{}, nil)
	down.stop()

	mv := testMover(t, src)
	got, err := mv.Evacuate(t.Context(), []Target{{"a", a.addr}, {"down", down.addr}, {"b", b.addr}}, []Target{{"spare", spare.addr}})
	if err != nil || got.Blocks != 3 || got.Copies != 9 {
		t.Fatalf("Evacuate: %+v, %v; want 3 blocks on 3 members each", got, err)
	}
	for _, n := range []*node{a, b, spare} {
		holds(t, n, src, blocks)
	}

	t.Run("every member down", func(t *testing.T) {
		start := time.Now()
		_, err := mv.Evacuate(t.Context(), []Target{{"down", down.addr}}, []Target{{"down2", down.addr}})
		if !errors.Is(err, ErrStranded) || !strings.Contains(err.Error(), "3 of 3 blocks") {
			t.Fatalf("Evacuate to dead members: %v, want ErrStranded for 3 of 3 blocks", err)
		}
		t.Logf("refused after %s: %v", time.Since(start).Round(time.Millisecond), err)
	})
	t.Run("no targets: the spares take it", func(t *testing.T) {
		c := startNode(t, Config{}, nil)
		if got, err := mv.Evacuate(t.Context(), nil, []Target{{"c", c.addr}}); err != nil || got.Copies != 3 {
			t.Fatalf("Evacuate without targets: %+v, %v", got, err)
		}
		holds(t, c, src, blocks)
	})
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
	got, err := mv.Evacuate(t.Context(), []Target{{"t", target.addr}}, nil)
	if err != nil || got.Copies != 2 {
		t.Fatalf("Evacuate: %+v, %v; want the 2 remaining blocks moved", got, err)
	}
	holds(t, target, src, blocks[1:])
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
	got, err = mv.Evacuate(t.Context(), []Target{{"t", target.addr}}, nil)
	if err != nil || got.Blocks != 2 || got.Copies != 1 {
		t.Fatalf("Evacuate: %+v, %v; want 2 listed, only the one still unmarked moved", got, err)
	}
	holds(t, target, src, blocks[1:2])
}
