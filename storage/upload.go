package storage

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"

	"github.com/thanos-io/objstore"
)

// UploadBlock uploads the block in localDir (named by its ULID) to <tenant>/<ULID>/ in bkt: the
// chunk segments, the index, then meta.json last, as the Thanos shipper does, so that readers
// never see a block without all its files. Uploads are idempotent (same names, same bytes): a
// failed upload is retried by calling UploadBlock again.
func UploadBlock(ctx context.Context, bkt objstore.Bucket, tenant, localDir string, meta Meta) error {
	prefix := path.Join(tenant, meta.ULID.String())
	files := append([]File(nil), meta.Thanos.Files...)
	// meta.json last.
	ordered := make([]string, 0, len(files))
	for _, f := range files {
		if f.RelPath != MetaFilename {
			ordered = append(ordered, f.RelPath)
		}
	}
	ordered = append(ordered, MetaFilename)
	for _, rel := range ordered {
		if err := uploadFile(ctx, bkt, filepath.Join(localDir, filepath.FromSlash(rel)), path.Join(prefix, rel)); err != nil {
			return fmt.Errorf("storage: uploading block %s of tenant %q to bucket %s: %w", meta.ULID, tenant, bkt.Name(), err)
		}
	}
	return nil
}

func uploadFile(ctx context.Context, bkt objstore.Bucket, src, dst string) error {
	f, err := os.Open(src)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := bkt.Upload(ctx, dst, f); err != nil {
		return fmt.Errorf("%s: %w", dst, err)
	}
	return nil
}

// DeletePartialBlock removes what a failed upload left of block id of tenant, best effort:
// meta.json first, so the block reads as partial while the rest goes.
func DeletePartialBlock(ctx context.Context, bkt objstore.Bucket, tenant string, meta Meta) error {
	prefix := path.Join(tenant, meta.ULID.String())
	var errs []error
	del := func(name string) {
		if err := bkt.Delete(ctx, name); err != nil && !bkt.IsObjNotFoundErr(err) {
			errs = append(errs, err)
		}
	}
	del(path.Join(prefix, MetaFilename))
	for _, f := range meta.Thanos.Files {
		if f.RelPath != MetaFilename {
			del(path.Join(prefix, f.RelPath))
		}
	}
	return errors.Join(errs...)
}
