package storage

import (
	"bytes"
	"context"
	"errors"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/oklog/ulid/v2"
	"github.com/thanos-io/objstore/providers/filesystem"

	"github.com/raftingest/raftingest/tenant"
)

// fsyncLog records the fsyncs of a FilesystemBucket: for each, the path synced (the object's
// final path for a file) and what that directory held at that moment.
type fsyncLog struct {
	mu     sync.Mutex
	events []fsyncEvent
	fail   func(path string, isDir bool) error
}

type fsyncEvent struct {
	path    string
	isDir   bool
	entries []string // for a directory: its entries when synced
	existed bool     // for a file: whether the final name existed already when its data was synced
}

func (l *fsyncLog) hook(path string, f *os.File) error {
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	ev := fsyncEvent{path: path, isDir: fi.IsDir()}
	if ev.isDir {
		ents, err := os.ReadDir(path)
		if err != nil {
			return err
		}
		for _, e := range ents {
			ev.entries = append(ev.entries, e.Name())
		}
	} else {
		_, err := os.Stat(path)
		ev.existed = err == nil
	}
	l.mu.Lock()
	l.events = append(l.events, ev)
	l.mu.Unlock()
	if l.fail != nil {
		if err := l.fail(path, ev.isDir); err != nil {
			return err
		}
	}
	return f.Sync()
}

// syncedWith reports whether dir was fsynced at a moment it held entry.
func (l *fsyncLog) syncedWith(dir, entry string) bool {
	for _, ev := range l.events {
		if ev.isDir && ev.path == dir && slices.Contains(ev.entries, entry) {
			return true
		}
	}
	return false
}

func newTestFSBucket(t *testing.T, root string) (*FilesystemBucket, *fsyncLog) {
	t.Helper()
	b, err := NewFilesystemBucket(root)
	if err != nil {
		t.Fatal(err)
	}
	l := &fsyncLog{}
	b.sync = l.hook
	return b, l
}

// writeTestBlock writes a small real block into a work directory and returns its dir and meta.
func writeTestBlock(t *testing.T) (string, Meta) {
	t.Helper()
	work := t.TempDir()
	ss, _ := testSeries(t, 5, 0, 3_600_000, 15_000, 0, 7_200_000)
	meta, err := WriteBlock(context.Background(), work, ss, BlockOptions{MinTime: 0, MaxTime: 7_200_000,
		Labels: map[string]string{TenantLabel: "t1"}})
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Join(work, meta.ULID.String()), meta
}

// TestFilesystemBucket_UploadBlockFsyncsFilesAndDirectories: when UploadBlock returns, every file
// of the block was fsynced before it got its name, and every directory entry on the way — each
// file's in the block's (or chunks/) directory, chunks/ in the block's, the block's in the
// tenant's, the tenant's in the root — was made durable by an fsync of its directory taken while
// it held the entry. (A power-loss test is not possible here: this checks the calls the
// durability argument rests on.)
func TestFilesystemBucket_UploadBlockFsyncsFilesAndDirectories(t *testing.T) {
	root := filepath.Join(t.TempDir(), "bucket")
	b, l := newTestFSBucket(t, root)
	dir, meta := writeTestBlock(t)
	if err := UploadBlock(context.Background(), b, "t1", dir, meta); err != nil {
		t.Fatal(err)
	}
	blockDir := filepath.Join(root, "t1", meta.ULID.String())
	files := 0
	for _, f := range meta.Thanos.Files {
		final := filepath.Join(blockDir, filepath.FromSlash(f.RelPath))
		var synced bool
		for _, ev := range l.events {
			if !ev.isDir && ev.path == final {
				synced = true
				if ev.existed {
					t.Errorf("%s: its data was fsynced after it got its final name", f.RelPath)
				}
			}
		}
		if !synced {
			t.Errorf("file %s never fsynced", f.RelPath)
		}
		if !l.syncedWith(filepath.Dir(final), filepath.Base(final)) {
			t.Errorf("the entry of %s in %s never made durable", f.RelPath, filepath.Dir(final))
		}
		files++
	}
	for _, e := range []struct{ dir, entry string }{
		{blockDir, ChunksDirname},
		{filepath.Join(root, "t1"), meta.ULID.String()},
		{root, "t1"},
	} {
		if !l.syncedWith(e.dir, e.entry) {
			t.Errorf("directory entry %s in %s never made durable", e.entry, e.dir)
		}
	}
	if files < 3 {
		t.Fatalf("block has %d files, want chunks, index and meta.json", files)
	}
	// The uploaded block is what was written, and no temporary file is left.
	for _, f := range meta.Thanos.Files {
		if f.RelPath == MetaFilename {
			continue
		}
		want, _ := os.ReadFile(filepath.Join(dir, filepath.FromSlash(f.RelPath)))
		got, err := os.ReadFile(filepath.Join(blockDir, filepath.FromSlash(f.RelPath)))
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("%s differs after upload (%v)", f.RelPath, err)
		}
	}
	requireNoTempFiles(t, root)
	t.Logf("%d fsyncs for a block of %d files", len(l.events), files)
}

func requireNoTempFiles(t *testing.T, root string) {
	t.Helper()
	_ = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err == nil && strings.Contains(d.Name(), tmpMarker) {
			t.Errorf("temporary file left: %s", p)
		}
		return nil
	})
}

// TestFilesystemBucket_FsyncFailureFailsUpload: an fsync that fails fails the upload, so the
// flusher keeps the data in memory and the WAL; a file whose data could not be synced never gets
// its name, and no temporary file stays.
func TestFilesystemBucket_FsyncFailureFailsUpload(t *testing.T) {
	eio := errors.New("injected EIO")
	for _, tc := range []struct {
		name      string
		failDir   bool
		wantFinal bool // whether the object may exist afterwards (renamed before the failing dir sync)
	}{
		{"file fsync fails: no object", false, false},
		{"directory fsync fails: upload fails", true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			b, l := newTestFSBucket(t, root)
			l.fail = func(_ string, isDir bool) error {
				if isDir == tc.failDir {
					return eio
				}
				return nil
			}
			err := b.Upload(context.Background(), "t1/obj", strings.NewReader("data"))
			if !errors.Is(err, eio) {
				t.Fatalf("Upload = %v, want the fsync error", err)
			}
			if _, serr := os.Stat(filepath.Join(root, "t1", "obj")); (serr == nil) != tc.wantFinal {
				t.Fatalf("object exists = %v after the failed upload, want %v", serr == nil, tc.wantFinal)
			}
			requireNoTempFiles(t, root)
			// UploadBlock reports it, naming the tenant.
			dir, meta := writeTestBlock(t)
			if err := UploadBlock(context.Background(), b, "t1", dir, meta); !errors.Is(err, eio) || !strings.Contains(err.Error(), `"t1"`) {
				t.Fatalf("UploadBlock = %v, want the fsync error naming the tenant", err)
			}
		})
	}
}

// treeOf lists every path under dir.
func treeOf(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	if err := filepath.WalkDir(dir, func(p string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		out = append(out, p)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestFilesystemBucket_RefusesKeysOutsideTheBucket: a key that is not a clean relative path is
// refused by every method with ErrInvalidObjectKey before any path is made from it, and nothing
// is written, read or deleted outside (or inside) the bucket.
func TestFilesystemBucket_RefusesKeysOutsideTheBucket(t *testing.T) {
	top := t.TempDir()
	root := filepath.Join(top, "a", "b", "bucket")
	b, _ := newTestFSBucket(t, root)
	victim := filepath.Join(top, "a", "victim")
	if err := os.WriteFile(victim, []byte("keep"), 0o644); err != nil {
		t.Fatal(err)
	}
	before := treeOf(t, top)
	ctx := context.Background()
	for _, key := range []string{
		"../../outside/01ARZ3NDEKTSV4RRFFQ69G5FAV/meta.json",
		"../victim", "../../victim",
		"t/../../../victim",
		"/etc/passwd", "/" + victim,
		"t//x", "t/./x", "./x", "t/x/", "",
		`..\victim`, "t/x\x00y",
	} {
		if err := b.Upload(ctx, key, strings.NewReader("evil")); !errors.Is(err, ErrInvalidObjectKey) {
			t.Errorf("Upload(%q) = %v, want ErrInvalidObjectKey", key, err)
		}
		if _, err := b.Get(ctx, key); !errors.Is(err, ErrInvalidObjectKey) {
			t.Errorf("Get(%q) = %v, want ErrInvalidObjectKey", key, err)
		}
		if _, err := b.GetRange(ctx, key, 0, 1); !errors.Is(err, ErrInvalidObjectKey) {
			t.Errorf("GetRange(%q) = %v, want ErrInvalidObjectKey", key, err)
		}
		if _, err := b.Exists(ctx, key); !errors.Is(err, ErrInvalidObjectKey) {
			t.Errorf("Exists(%q) = %v, want ErrInvalidObjectKey", key, err)
		}
		if _, err := b.Attributes(ctx, key); !errors.Is(err, ErrInvalidObjectKey) {
			t.Errorf("Attributes(%q) = %v, want ErrInvalidObjectKey", key, err)
		}
		if err := b.Delete(ctx, key); !errors.Is(err, ErrInvalidObjectKey) {
			t.Errorf("Delete(%q) = %v, want ErrInvalidObjectKey", key, err)
		}
	}
	for _, dir := range []string{"..", "../", "../..", "/", "/tmp/", "t/../.."} {
		if err := b.Iter(ctx, dir, func(string) error { return nil }); !errors.Is(err, ErrInvalidObjectKey) {
			t.Errorf("Iter(%q) = %v, want ErrInvalidObjectKey", dir, err)
		}
	}
	if after := treeOf(t, top); !slices.Equal(before, after) {
		t.Fatalf("the tree changed:\nbefore %v\nafter  %v", before, after)
	}
	if got, _ := os.ReadFile(victim); string(got) != "keep" {
		t.Fatalf("victim file changed: %q", got)
	}
	// Good keys work, and Iter lists them (never a temporary file).
	if err := b.Upload(ctx, "t1/x", strings.NewReader("ok")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "t1", ".y"+tmpMarker+"1-1"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	var names []string
	if err := b.Iter(ctx, "t1/", func(n string) error { names = append(names, n); return nil }); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(names, []string{"t1/x"}) {
		t.Fatalf("Iter(t1/) = %v, want [t1/x]", names)
	}
	rc, err := b.Get(ctx, "t1/x")
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(rc)
	rc.Close()
	if string(got) != "ok" {
		t.Fatalf("Get = %q", got)
	}
}

// TestUploadBlock_InvalidTenantWritesNothing: a tenant such as "../../outside" (which a gRPC push
// could carry before tenants were validated at the ingester) makes UploadBlock fail with an error
// naming it, before anything is uploaded — with the filesystem bucket and with objstore's own
// (standing for any backend: the check is UploadBlock's) — and nothing appears outside the bucket.
func TestUploadBlock_InvalidTenantWritesNothing(t *testing.T) {
	dir, meta := writeTestBlock(t)
	for _, raw := range []bool{false, true} {
		top := t.TempDir()
		root := filepath.Join(top, "data", "blocks")
		if err := os.MkdirAll(root, 0o755); err != nil {
			t.Fatal(err)
		}
		before := treeOf(t, top)
		var bkt interface {
			Name() string
		}
		for _, tn := range []string{"../../outside", "..", ".", "a/b", "", "/abs", `a\b`} {
			var err error
			if raw {
				fsb, ferr := filesystem.NewBucket(root)
				if ferr != nil {
					t.Fatal(ferr)
				}
				bkt = fsb
				err = UploadBlock(context.Background(), fsb, tn, dir, meta)
			} else {
				fsb, ferr := NewFilesystemBucket(root)
				if ferr != nil {
					t.Fatal(ferr)
				}
				bkt = fsb
				err = UploadBlock(context.Background(), fsb, tn, dir, meta)
			}
			if !errors.Is(err, ErrInvalidObjectKey) || !errors.Is(err, tenant.ErrInvalid) {
				t.Errorf("%s: UploadBlock(tenant %q) = %v, want ErrInvalidObjectKey and tenant.ErrInvalid", bkt.Name(), tn, err)
			}
		}
		if after := treeOf(t, top); !slices.Equal(before, after) {
			t.Fatalf("raw=%v: the tree changed:\nbefore %v\nafter  %v", raw, before, after)
		}
	}
	// A file path of the block that is not clean is refused too.
	bad := meta
	bad.Thanos.Files = append(slices.Clone(meta.Thanos.Files), File{RelPath: "../../escape"})
	b, _ := newTestFSBucket(t, filepath.Join(t.TempDir(), "bucket"))
	if err := UploadBlock(context.Background(), b, "t1", dir, bad); !errors.Is(err, ErrInvalidObjectKey) {
		t.Fatalf("UploadBlock with file ../../escape = %v, want ErrInvalidObjectKey", err)
	}
	if err := DeletePartialBlock(context.Background(), b, "../../outside", meta); !errors.Is(err, ErrInvalidObjectKey) {
		t.Fatalf("DeletePartialBlock(../../outside) = %v, want ErrInvalidObjectKey", err)
	}
}

// TestFilesystemBucket_NotADirectory: a path element that is a file fails the upload naming it
// (the flusher's error says "not a directory", as with os.MkdirAll).
func TestFilesystemBucket_NotADirectory(t *testing.T) {
	root := t.TempDir()
	b, _ := newTestFSBucket(t, root)
	if err := os.WriteFile(filepath.Join(root, "t2"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	err := b.Upload(context.Background(), "t2/"+ulid.Make().String()+"/index", strings.NewReader("x"))
	if err == nil || !strings.Contains(err.Error(), "not a directory") || !strings.Contains(err.Error(), "t2") {
		t.Fatalf("Upload under a file: %v, want 'not a directory' naming t2", err)
	}
}

func TestValidateObjectKey(t *testing.T) {
	for key, ok := range map[string]bool{
		"t/01ARZ3NDEKTSV4RRFFQ69G5FAV/chunks/000001": true,
		"a": true, "a.b/c..d/...": true, "x/.hidden": true,
		"": false, "/a": false, "a/": false, "a//b": false, ".": false, "..": false, "a/./b": false,
		"a/../b": false, "../a": false, `a\b`: false, "a\x00": false,
	} {
		if err := ValidateObjectKey(key); (err == nil) != ok {
			t.Errorf("ValidateObjectKey(%q) = %v, want ok=%v", key, err, ok)
		}
	}
}

// FuzzObjectKeys: a key ValidateObjectKey accepts is clean (path.Clean leaves it as is), relative,
// and joined to a root it names a path strictly inside that root; a key BlockKey builds starts
// with the tenant as its own first element and passes ValidateObjectKey.
func FuzzObjectKeys(f *testing.F) {
	for _, s := range [][2]string{
		{"t1", "chunks/000001"}, {"../../outside", "meta.json"}, {"..", "index"}, {"a/b", "x"},
		{"t", "../x"}, {"t", "/abs"}, {"t", "a//b"}, {"t", `a\b`}, {"t", "."}, {"", ""}, {"t.", "..."},
	} {
		f.Add(s[0], s[1])
	}
	id := ulid.MustParse("01ARZ3NDEKTSV4RRFFQ69G5FAV")
	f.Fuzz(func(t *testing.T, tenantID, rel string) {
		for _, key := range []string{rel, tenantID + "/" + rel} {
			if ValidateObjectKey(key) != nil {
				continue
			}
			if path.Clean(key) != key || path.IsAbs(key) {
				t.Fatalf("accepted key %q is not clean and relative", key)
			}
			const root = "/bucket/root"
			if p := filepath.Join(root, filepath.FromSlash(key)); !strings.HasPrefix(p, root+"/") {
				t.Fatalf("accepted key %q leads to %s, outside %s", key, p, root)
			}
		}
		key, err := BlockKey(tenantID, id, rel)
		if err != nil {
			if !errors.Is(err, ErrInvalidObjectKey) {
				t.Fatalf("BlockKey error %v does not wrap ErrInvalidObjectKey", err)
			}
			return
		}
		if tenant.Validate(tenantID) != nil || ValidateObjectKey(key) != nil {
			t.Fatalf("BlockKey(%q, %q) = %q accepted what it must refuse", tenantID, rel, key)
		}
		if first, _, _ := strings.Cut(key, "/"); first != tenantID {
			t.Fatalf("BlockKey(%q, %q) = %q: first element %q is not the tenant", tenantID, rel, key, first)
		}
	})
}
