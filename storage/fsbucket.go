package storage

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"

	"github.com/thanos-io/objstore"
	"github.com/thanos-io/objstore/providers/filesystem"
)

// ErrInvalidObjectKey refuses an object key (or an Iter directory) that is not a clean relative
// path: empty, absolute, with an empty, "." or ".." element, a backslash or a NUL byte. Such a key
// could name a file outside a filesystem bucket's directory.
var ErrInvalidObjectKey = errors.New("storage: invalid object key")

// ValidateObjectKey checks that key is a clean relative object key: "/"-separated elements, none
// of them empty, "." or "..", no backslash and no NUL byte. Every key is checked before a
// filesystem path is made from it. The error wraps ErrInvalidObjectKey and quotes the key.
func ValidateObjectKey(key string) error {
	switch {
	case key == "":
		return fmt.Errorf("%w: empty key", ErrInvalidObjectKey)
	case strings.HasPrefix(key, "/"):
		return fmt.Errorf("%w %q: absolute path", ErrInvalidObjectKey, key)
	case strings.ContainsAny(key, "\\\x00"):
		return fmt.Errorf("%w %q: backslash or NUL byte", ErrInvalidObjectKey, key)
	}
	for elem := range strings.SplitSeq(key, "/") {
		switch elem {
		case "":
			return fmt.Errorf("%w %q: empty path element", ErrInvalidObjectKey, key)
		case ".", "..":
			return fmt.Errorf("%w %q: path element %q", ErrInvalidObjectKey, key, elem)
		}
	}
	return nil
}

// FilesystemBucket is the filesystem backend (-blocks-storage.backend=filesystem): objstore's
// filesystem bucket, with two guarantees it lacks.
//
//   - Durable, atomic uploads. Upload writes the object to a temporary file next to it, fsyncs it,
//     renames it into place and fsyncs every directory from the object's up to the bucket's root,
//     so that the object and each directory entry on its way (chunks/ in the block's directory, the
//     block's in the tenant's, the tenant's in the root) survive a power loss once Upload returns —
//     whichever upload created them. The flusher drops data from memory and the WAL only after
//     UploadBlock returned, so a power loss after a flush loses nothing acknowledged. A crash
//     mid-upload leaves the old object or none, never a torn one (objstore's Upload truncates and
//     writes in place), plus at worst a hidden temporary file (".<name>.tmp-…", never listed).
//   - Keys are checked (ValidateObjectKey) before any path is made from them, and the path is
//     checked to stay inside the root: no key reaches a file outside the bucket.
//
// Safe for concurrent use.
type FilesystemBucket struct {
	fs   *filesystem.Bucket
	root string // absolute
	// sync fsyncs f, the temporary file of an object that will be renamed to path, or the
	// directory path. (*os.File).Sync unless a test counts the calls.
	sync func(path string, f *os.File) error
}

var _ objstore.Bucket = (*FilesystemBucket)(nil)

// tmpMarker is in the name of every temporary upload file: ".<object name>.tmp-<pid>-<n>".
const tmpMarker = ".tmp-"

var tmpCounter atomic.Uint64

// NewFilesystemBucket opens the filesystem bucket rooted at dir, creating the directory (and
// fsyncing its parent, so the root's own entry is durable) if missing.
func NewFilesystemBucket(dir string) (*FilesystemBucket, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("storage: filesystem bucket %q: %w", dir, err)
	}
	b := &FilesystemBucket{root: abs, sync: func(_ string, f *os.File) error { return f.Sync() }}
	if b.fs, err = filesystem.NewBucket(abs); err != nil {
		return nil, fmt.Errorf("storage: filesystem bucket %s: %w", abs, err)
	}
	if _, err := os.Stat(abs); errors.Is(err, fs.ErrNotExist) {
		if err := os.MkdirAll(abs, 0o755); err != nil {
			return nil, fmt.Errorf("storage: filesystem bucket %s: %w", abs, err)
		}
		if err := b.syncDir(filepath.Dir(abs)); err != nil {
			return nil, fmt.Errorf("storage: filesystem bucket %s: %w", abs, err)
		}
	}
	return b, nil
}

// path validates key and returns its file path, which is checked to lie inside the root.
func (b *FilesystemBucket) path(key string) (string, error) {
	if err := ValidateObjectKey(key); err != nil {
		return "", err
	}
	p := filepath.Join(b.root, filepath.FromSlash(key))
	if rel, err := filepath.Rel(b.root, p); err != nil || rel == "." || rel == ".." || strings.HasPrefix(rel, ".."+string(filepath.Separator)) {
		return "", fmt.Errorf("%w %q: outside the bucket directory %s", ErrInvalidObjectKey, key, b.root)
	}
	return p, nil
}

// checkDir validates an Iter directory: "" (the root), or a key with an optional trailing "/".
func checkDir(dir string) error {
	if dir == "" {
		return nil
	}
	return ValidateObjectKey(strings.TrimSuffix(dir, objstore.DirDelim))
}

// Upload writes r to the object name durably and atomically (see FilesystemBucket). It is
// idempotent: the same name and bytes leave the same object.
func (b *FilesystemBucket) Upload(ctx context.Context, name string, r io.Reader, _ ...objstore.ObjectUploadOption) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	file, err := b.path(name)
	if err != nil {
		return err
	}
	dir := filepath.Dir(file)
	if err := b.mkdirs(dir); err != nil {
		return err
	}
	tmp, err := createTemp(dir, filepath.Base(file))
	if err != nil {
		return err
	}
	tmpName := tmp.Name()
	defer func() {
		if tmp != nil {
			tmp.Close()
		}
		if tmpName != "" {
			os.Remove(tmpName)
		}
	}()
	if _, err := io.Copy(tmp, r); err != nil {
		return fmt.Errorf("copy to %s: %w", file, err)
	}
	if err := b.sync(file, tmp); err != nil {
		return fmt.Errorf("fsync %s: %w", tmpName, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("close %s: %w", tmpName, err)
	}
	tmp = nil
	if err := os.Rename(tmpName, file); err != nil {
		return err
	}
	tmpName = ""
	// The new name, then every directory entry on the way to the root.
	for d := dir; ; d = filepath.Dir(d) {
		if err := b.syncDir(d); err != nil {
			return err
		}
		if d == b.root {
			return nil
		}
	}
}

// mkdirs creates dir (inside the root) and its missing parents. A path element that exists but is
// not a directory fails with ENOTDIR, naming it, as os.MkdirAll does.
func (b *FilesystemBucket) mkdirs(dir string) error {
	rel, err := filepath.Rel(b.root, dir)
	if err != nil {
		return err
	}
	cur := b.root
	if _, err := os.Stat(cur); errors.Is(err, fs.ErrNotExist) {
		if err := os.MkdirAll(cur, 0o755); err != nil { // the root was removed under us
			return err
		}
	}
	if rel == "." {
		return nil
	}
	for elem := range strings.SplitSeq(rel, string(filepath.Separator)) {
		cur = filepath.Join(cur, elem)
		err := os.Mkdir(cur, 0o755)
		if err == nil {
			continue
		}
		if !errors.Is(err, fs.ErrExist) {
			return err
		}
		fi, serr := os.Lstat(cur) // a symbolic link is refused too: it could lead out of the bucket
		if serr != nil {
			return serr
		}
		if !fi.IsDir() {
			return &os.PathError{Op: "mkdir", Path: cur, Err: syscall.ENOTDIR}
		}
	}
	return nil
}

// createTemp creates an empty, hidden temporary file for the object base in dir.
func createTemp(dir, base string) (*os.File, error) {
	for {
		name := filepath.Join(dir, fmt.Sprintf(".%s%s%d-%d", base, tmpMarker, os.Getpid(), tmpCounter.Add(1)))
		f, err := os.OpenFile(name, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
		if errors.Is(err, fs.ErrExist) {
			continue // a leftover of a crashed process with our pid
		}
		return f, err
	}
}

// syncDir fsyncs the directory dir, making its entries durable.
func (b *FilesystemBucket) syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := b.sync(dir, d); err != nil {
		return fmt.Errorf("fsync directory %s: %w", dir, err)
	}
	return nil
}

// isTemp reports whether an Iter entry is a temporary upload file.
func isTemp(name string) bool {
	base := name[strings.LastIndexByte(name, '/')+1:]
	return strings.HasPrefix(base, ".") && strings.Contains(base, tmpMarker)
}

// Delete removes the object name (and the directories it leaves empty, as objstore does).
func (b *FilesystemBucket) Delete(ctx context.Context, name string) error {
	if _, err := b.path(name); err != nil {
		return err
	}
	return b.fs.Delete(ctx, name)
}

// Iter calls f for each entry in dir (see objstore.BucketReader), skipping temporary upload files.
func (b *FilesystemBucket) Iter(ctx context.Context, dir string, f func(string) error, options ...objstore.IterOption) error {
	if err := checkDir(dir); err != nil {
		return err
	}
	return b.fs.Iter(ctx, dir, func(name string) error {
		if isTemp(name) {
			return nil
		}
		return f(name)
	}, options...)
}

// IterWithAttributes is Iter with attributes (see objstore.BucketReader).
func (b *FilesystemBucket) IterWithAttributes(ctx context.Context, dir string, f func(objstore.IterObjectAttributes) error, options ...objstore.IterOption) error {
	if err := checkDir(dir); err != nil {
		return err
	}
	return b.fs.IterWithAttributes(ctx, dir, func(a objstore.IterObjectAttributes) error {
		if isTemp(a.Name) {
			return nil
		}
		return f(a)
	}, options...)
}

// SupportedIterOptions returns objstore's filesystem options.
func (b *FilesystemBucket) SupportedIterOptions() []objstore.IterOptionType {
	return b.fs.SupportedIterOptions()
}

// Get returns a reader of the object name.
func (b *FilesystemBucket) Get(ctx context.Context, name string) (io.ReadCloser, error) {
	if _, err := b.path(name); err != nil {
		return nil, err
	}
	return b.fs.Get(ctx, name)
}

// GetRange returns a reader of length bytes of the object name from off.
func (b *FilesystemBucket) GetRange(ctx context.Context, name string, off, length int64) (io.ReadCloser, error) {
	if _, err := b.path(name); err != nil {
		return nil, err
	}
	return b.fs.GetRange(ctx, name, off, length)
}

// Exists reports whether the object name exists.
func (b *FilesystemBucket) Exists(ctx context.Context, name string) (bool, error) {
	if _, err := b.path(name); err != nil {
		return false, err
	}
	return b.fs.Exists(ctx, name)
}

// Attributes returns the size and modification time of the object name.
func (b *FilesystemBucket) Attributes(ctx context.Context, name string) (objstore.ObjectAttributes, error) {
	if _, err := b.path(name); err != nil {
		return objstore.ObjectAttributes{}, err
	}
	return b.fs.Attributes(ctx, name)
}

// IsObjNotFoundErr reports whether err means the object does not exist.
func (b *FilesystemBucket) IsObjNotFoundErr(err error) bool { return b.fs.IsObjNotFoundErr(err) }

// IsAccessDeniedErr reports whether err means access was denied (never, on a filesystem).
func (b *FilesystemBucket) IsAccessDeniedErr(err error) bool { return b.fs.IsAccessDeniedErr(err) }

// Provider is objstore.FILESYSTEM.
func (b *FilesystemBucket) Provider() objstore.ObjProvider { return b.fs.Provider() }

// Name returns the bucket's root directory.
func (b *FilesystemBucket) Name() string { return b.fs.Name() }

// Close does nothing.
func (b *FilesystemBucket) Close() error { return b.fs.Close() }
