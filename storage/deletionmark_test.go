package storage

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/oklog/ulid/v2"
	"github.com/thanos-io/objstore"
)

// TestDeletionMark_MarkedBlockReadUntilSwept: over a real filesystem bucket (read in place) and an
// object store (read through the download cache), a block replaced by another is marked
// (deletion-mark.json in Thanos's format, meta.json and every file untouched) and is still read
// with every sample — beside its replacement, deduplicated — until a sweep after the deletion
// delay deletes it; a sweep before leaves it, and the reader then forgets it without a gap. Marks
// are idempotent (the first time stands), and a block without meta.json is not marked.
func TestDeletionMark_MarkedBlockReadUntilSwept(t *testing.T) {
	const h = int64(3600_000)
	const delay = 15 * time.Minute
	root := t.TempDir()
	fsb, err := NewFilesystemBucket(root)
	if err != nil {
		t.Fatal(err)
	}
	for _, bkt := range []objstore.Bucket{fsb, objstore.NewInMemBucket()} {
		t.Run(bkt.Name(), func(t *testing.T) {
			ctx := context.Background()
			local := ""
			if bkt == objstore.Bucket(fsb) {
				local = root
			}
			q := NewBucketQueryable(bkt, local, t.TempDir(), nil)
			defer q.Close()
			// The source covers 2h; the replacement (as a compaction would write it) the first hour
			// only, so that whatever is read of the second hour comes from the source alone.
			ss, want := testSeries(t, 8, 0, 2*h, 30_000, 0, 2*h)
			source := uploadSeries(t, bkt, "t1", ss, 0, 2*h)
			repl, _ := testSeries(t, 8, 0, h, 30_000, 0, h)
			uploadSeries(t, bkt, "t1", repl, 0, h)
			requireSameKeys(t, want, selectAll(t, q, "t1", math.MinInt64, math.MaxInt64))

			markedAt := time.Date(2026, 12, 7, 15, 0, 0, 0, time.UTC)
			if ok, err := MarkForDeletion(ctx, bkt, "t1", source.ULID, markedAt, "replaced"); err != nil || !ok {
				t.Fatalf("MarkForDeletion: %v, %v", ok, err)
			}
			m, found, err := ReadDeletionMark(ctx, bkt, "t1", source.ULID)
			if err != nil || !found || m.ID != source.ULID || m.DeletionTime != markedAt.Unix() || m.Version != 1 {
				t.Fatalf("ReadDeletionMark: %+v, %v, %v", m, found, err)
			}
			rc, err := bkt.Get(ctx, "t1/"+source.ULID.String()+"/"+DeletionMarkFilename)
			if err != nil {
				t.Fatal(err)
			}
			var raw map[string]any
			if err := json.NewDecoder(rc).Decode(&raw); err != nil {
				t.Fatal(err)
			}
			rc.Close()
			if raw["id"] != source.ULID.String() || raw["deletion_time"] != float64(markedAt.Unix()) || raw["version"] != float64(1) {
				t.Fatalf("deletion-mark.json %v: want Thanos's id, deletion_time (Unix seconds), version", raw)
			}
			// Marking again keeps the first mark; a block without meta.json gets none.
			if ok, err := MarkForDeletion(ctx, bkt, "t1", source.ULID, markedAt.Add(time.Hour), ""); err != nil || ok {
				t.Fatalf("second MarkForDeletion: %v, %v; want nothing written", ok, err)
			}
			if m2, _, _ := ReadDeletionMark(ctx, bkt, "t1", source.ULID); m2.DeletionTime != markedAt.Unix() {
				t.Fatalf("a second mark moved the deletion time to %d", m2.DeletionTime)
			}
			absent := ulid.Make()
			if ok, err := MarkForDeletion(ctx, bkt, "t1", absent, markedAt, ""); err != nil || ok {
				t.Fatalf("MarkForDeletion of an absent block: %v, %v", ok, err)
			}
			if ok, _ := bkt.Exists(ctx, "t1/"+absent.String()+"/"+DeletionMarkFilename); ok {
				t.Fatal("an absent block got a mark")
			}

			// Marked: still read, every sample once.
			requireSameKeys(t, want, selectAll(t, q, "t1", math.MinInt64, math.MaxInt64))
			if metas, err := q.Blocks(ctx, "t1"); err != nil || len(metas) != 2 {
				t.Fatalf("blocks of t1 while one is marked: %d (%v), want both", len(metas), err)
			}
			swept, err := SweepDeletionMarked(ctx, bkt, delay, markedAt.Add(delay-time.Second), nil)
			if err != nil || len(swept) != 0 {
				t.Fatalf("sweep before the delay: %v, %v", swept, err)
			}
			requireSameKeys(t, want, selectAll(t, q, "t1", math.MinInt64, math.MaxInt64))

			// Swept: the source's every object goes, the reader forgets it; the replacement stays.
			swept, err = SweepDeletionMarked(ctx, bkt, delay, markedAt.Add(delay), nil)
			if err != nil || len(swept) != 1 || swept[0].ID != source.ULID || swept[0].Tenant != "t1" {
				t.Fatalf("sweep after the delay: %+v, %v", swept, err)
			}
			err = bkt.Iter(ctx, "t1/"+source.ULID.String()+"/", func(name string) error {
				return errors.New("left after the sweep: " + name)
			}, objstore.WithRecursiveIter())
			if err != nil {
				t.Fatal(err)
			}
			got := selectAll(t, q, "t1", math.MinInt64, math.MaxInt64)
			if metas, err := q.Blocks(ctx, "t1"); err != nil || len(metas) != 1 || metas[0].ULID == source.ULID {
				t.Fatalf("blocks of t1 after the sweep: %+v (%v), want the replacement alone", metas, err)
			}
			for k := range got {
				if !want[k] {
					t.Fatalf("after the sweep: sample %s was never written", k)
				}
			}
			if len(got) != len(want)/2 {
				t.Fatalf("after the sweep %d samples, want the replacement's %d", len(got), len(want)/2)
			}
		})
	}
}

// TestDeletionMark_InvalidMarkLeftAlone: a deletion-mark.json that does not decode, or names
// another block, is an error wrapping ErrInvalidDeletionMark, and the sweeper leaves that block
// (a person should look) while it deletes the others that are due.
func TestDeletionMark_InvalidMarkLeftAlone(t *testing.T) {
	ctx := context.Background()
	bkt := objstore.NewInMemBucket()
	ss, _ := testSeries(t, 2, 0, 3600_000, 30_000, 0, 3600_000)
	bad := uploadSeries(t, bkt, "t1", ss, 0, 3600_000)
	good := uploadSeries(t, bkt, "t1", ss, 0, 3600_000)
	other := uploadSeries(t, bkt, "t1", ss, 0, 3600_000)
	at := time.Unix(1_000_000, 0)
	for _, content := range []string{"{", `{"id":"` + other.ULID.String() + `","deletion_time":1,"version":1}`} {
		if err := bkt.Upload(ctx, "t1/"+bad.ULID.String()+"/"+DeletionMarkFilename, strings.NewReader(content)); err != nil {
			t.Fatal(err)
		}
		if _, _, err := ReadDeletionMark(ctx, bkt, "t1", bad.ULID); !errors.Is(err, ErrInvalidDeletionMark) {
			t.Fatalf("mark %q: %v, want ErrInvalidDeletionMark", content, err)
		}
	}
	if _, err := MarkForDeletion(ctx, bkt, "t1", good.ULID, at, ""); err != nil {
		t.Fatal(err)
	}
	swept, err := SweepDeletionMarked(ctx, bkt, time.Minute, at.Add(time.Hour), nil)
	if err != nil || len(swept) != 1 || swept[0].ID != good.ULID {
		t.Fatalf("sweep: %+v, %v; want the validly marked block alone", swept, err)
	}
	for _, id := range []ulid.ULID{bad.ULID, other.ULID} {
		if ok, _ := bkt.Exists(ctx, "t1/"+id.String()+"/"+MetaFilename); !ok {
			t.Fatalf("block %s was deleted", id)
		}
	}
}

// TestSweep_PartialBlockRemovedAfterTheDelay: a block directory without meta.json and without a
// deletion mark — a crash cut its upload short before meta.json, or a deletion short after it —
// is listed and read by nothing, and used to stay for ever. The sweeper deletes it once none of
// its objects was written for the delay; a partial block written recently (an upload in
// progress), and complete blocks, stay.
func TestSweep_PartialBlockRemovedAfterTheDelay(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	bkt, err := NewFilesystemBucket(root)
	if err != nil {
		t.Fatal(err)
	}
	ss, _ := testSeries(t, 2, 0, 3600_000, 30_000, 0, 3600_000)
	complete := uploadSeries(t, bkt, "t1", ss, 0, 3600_000)
	old := uploadSeries(t, bkt, "t1", ss, 0, 3600_000)
	fresh := uploadSeries(t, bkt, "t1", ss, 0, 3600_000)
	const delay = 15 * time.Minute
	now := time.Now()
	for _, id := range []ulid.ULID{old.ULID, fresh.ULID} {
		if err := bkt.Delete(ctx, "t1/"+id.String()+"/"+MetaFilename); err != nil {
			t.Fatal(err)
		}
	}
	// old's files were last written 16 minutes ago; fresh's just now.
	err = filepath.WalkDir(filepath.Join(root, "t1", old.ULID.String()), func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		return os.Chtimes(p, now.Add(-delay-time.Minute), now.Add(-delay-time.Minute))
	})
	if err != nil {
		t.Fatal(err)
	}
	swept, err := SweepDeletionMarked(ctx, bkt, delay, now, nil)
	if err != nil || len(swept) != 1 || swept[0].ID != old.ULID || !swept[0].Partial {
		t.Fatalf("sweep: %+v, %v; want the old partial block alone", swept, err)
	}
	err = bkt.Iter(ctx, "t1/"+old.ULID.String()+"/", func(name string) error {
		return errors.New("left after the sweep: " + name)
	}, objstore.WithRecursiveIter())
	if err != nil {
		t.Fatal(err)
	}
	if ok, _ := bkt.Exists(ctx, "t1/"+complete.ULID.String()+"/"+MetaFilename); !ok {
		t.Fatal("the complete block was deleted")
	}
	if ok, _ := bkt.Exists(ctx, "t1/"+fresh.ULID.String()+"/index"); !ok {
		t.Fatal("the recently written partial block was deleted")
	}
	// Once it too has been left alone for the delay, it goes.
	swept, err = SweepDeletionMarked(ctx, bkt, delay, now.Add(delay+time.Minute), nil)
	if err != nil || len(swept) != 1 || swept[0].ID != fresh.ULID {
		t.Fatalf("second sweep: %+v, %v; want the other partial block", swept, err)
	}
}

// hookBucket calls onExists before every Exists with the name asked for.
type hookBucket struct {
	objstore.Bucket
	onExists func(name string)
}

func (b *hookBucket) Exists(ctx context.Context, name string) (bool, error) {
	if b.onExists != nil {
		b.onExists(name)
	}
	return b.Bucket.Exists(ctx, name)
}

// TestSweep_RacingUploadOfTheSameULID: a stale partial block is being swept when a store of the
// same ULID (a hand-over or Mover retry re-sends a block under its ULID) uploads it anew. The
// sweep judges and deletes under the block's lock, which the store holds while it clears the
// leftovers and uploads, so the stored block ends complete. Without the lock the sweep deleted, file
// by file, what the upload had just written: meta.json went, or a meta.json stayed with files
// missing — a block acknowledged as durable, lost.
func TestSweep_RacingUploadOfTheSameULID(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	fsb, err := NewFilesystemBucket(root)
	if err != nil {
		t.Fatal(err)
	}
	const delay = 15 * time.Minute
	now := time.Now()
	ss, _ := testSeries(t, 4, 0, 3600_000, 30_000, 0, 3600_000)
	local := t.TempDir()
	meta, err := WriteBlock(ctx, local, ss, BlockOptions{MinTime: 0, MaxTime: 3600_000})
	if err != nil {
		t.Fatal(err)
	}
	blockDir := filepath.Join(local, meta.ULID.String())
	// A partial upload of the block, left 16 minutes ago: everything but meta.json.
	if err := UploadBlock(ctx, fsb, "t1", blockDir, meta); err != nil {
		t.Fatal(err)
	}
	if err := fsb.Delete(ctx, "t1/"+meta.ULID.String()+"/"+MetaFilename); err != nil {
		t.Fatal(err)
	}
	err = filepath.WalkDir(filepath.Join(root, "t1", meta.ULID.String()), func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		return os.Chtimes(p, now.Add(-delay-time.Minute), now.Add(-delay-time.Minute))
	})
	if err != nil {
		t.Fatal(err)
	}

	var locks BlockLocks
	stored := make(chan error, 1)
	started, metaAsked := false, 0
	bkt := &hookBucket{Bucket: fsb}
	bkt.onExists = func(name string) {
		// The sweep asks for meta.json when it judges the block partial, and again when it
		// deletes it (DeleteBlock): the store comes in between.
		if !strings.HasSuffix(name, "/"+MetaFilename) {
			return
		}
		if metaAsked++; metaAsked != 2 {
			return
		}
		started = true
		// The store, as blocksvc's StoreBlock does it: under the block's lock, leftovers first.
		go func() {
			unlock := locks.Lock("t1", meta.ULID)
			defer unlock()
			if _, err := DeleteBlock(ctx, fsb, "t1", meta.ULID); err != nil {
				stored <- err
				return
			}
			stored <- UploadBlock(ctx, fsb, "t1", blockDir, meta)
		}()
		// Give the store time to run, if nothing holds it back.
		time.Sleep(300 * time.Millisecond)
	}
	if _, err := SweepDeletionMarkedLocked(ctx, bkt, delay, now, nil, &locks); err != nil {
		t.Fatalf("sweep: %v", err)
	}
	if !started {
		t.Fatal("the sweep never looked at the partial block")
	}
	if err := <-stored; err != nil {
		t.Fatalf("store: %v", err)
	}
	for _, f := range meta.Thanos.Files {
		if ok, err := fsb.Exists(ctx, "t1/"+meta.ULID.String()+"/"+f.RelPath); err != nil || !ok {
			t.Fatalf("after the sweep and the store, %s of the stored block is missing (%v)", f.RelPath, err)
		}
	}
}

// TestSweep_NoRequestPerCompleteBlock: a sweep of a bucket of complete, unmarked blocks reads no
// block's objects (it used to ask each block for its mark and its meta.json on every sweep).
func TestSweep_NoRequestPerCompleteBlock(t *testing.T) {
	ctx := context.Background()
	bkt := objstore.NewInMemBucket()
	ss, _ := testSeries(t, 2, 0, 3600_000, 30_000, 0, 3600_000)
	for range 5 {
		uploadSeries(t, bkt, "t1", ss, 0, 3600_000)
	}
	counted := &countingBucket{Bucket: bkt}
	swept, err := SweepDeletionMarked(ctx, counted, time.Minute, time.Now().Add(time.Hour), nil)
	if err != nil || len(swept) != 0 {
		t.Fatalf("sweep: %+v, %v; want nothing swept", swept, err)
	}
	if counted.reads != 0 {
		t.Fatalf("the sweep made %d requests for single objects (Get, Exists, Attributes), want 0", counted.reads)
	}
}

// countingBucket counts requests for single objects.
type countingBucket struct {
	objstore.Bucket
	reads int
}

func (b *countingBucket) Get(ctx context.Context, name string) (io.ReadCloser, error) {
	b.reads++
	return b.Bucket.Get(ctx, name)
}

func (b *countingBucket) Exists(ctx context.Context, name string) (bool, error) {
	b.reads++
	return b.Bucket.Exists(ctx, name)
}

func (b *countingBucket) Attributes(ctx context.Context, name string) (objstore.ObjectAttributes, error) {
	b.reads++
	return b.Bucket.Attributes(ctx, name)
}
