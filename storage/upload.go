package storage

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/oklog/ulid/v2"
	"github.com/thanos-io/objstore"

	"github.com/raftingest/raftingest/tenant"
)

// BlockKey returns the object key of file rel (a "/"-separated path inside the block directory,
// e.g. "chunks/000001") of block id of tenantID: <tenant>/<ULID>/<rel>. The tenant must pass
// tenant.Validate (the X-Scope-OrgID rules: one path element, never "." or "..") and rel must be a
// clean relative path (ValidateObjectKey); errors wrap tenant.ErrInvalid or ErrInvalidObjectKey.
func BlockKey(tenantID string, id ulid.ULID, rel string) (string, error) {
	if err := tenant.Validate(tenantID); err != nil {
		return "", fmt.Errorf("%w: tenant: %w", ErrInvalidObjectKey, err)
	}
	if err := ValidateObjectKey(rel); err != nil {
		return "", fmt.Errorf("block %s of tenant %q: file: %w", id, tenantID, err)
	}
	key := tenantID + "/" + id.String() + "/" + rel
	if err := ValidateObjectKey(key); err != nil {
		return "", err
	}
	return key, nil
}

// UploadBlock uploads the block in localDir (named by its ULID) to <tenant>/<ULID>/ in bkt: the
// chunk segments, the index, then meta.json last, as the Thanos shipper does, so that readers
// never see a block without all its files. Every key is built by BlockKey, before anything is
// uploaded: an invalid tenant or file path uploads nothing. With the filesystem bucket every file
// and directory entry is fsynced when it returns (FilesystemBucket). Uploads are idempotent (same
// names, same bytes): a failed upload is retried by calling UploadBlock again.
func UploadBlock(ctx context.Context, bkt objstore.Bucket, tenantID, localDir string, meta Meta) error {
	// meta.json last.
	var ordered []string
	for _, f := range meta.Thanos.Files {
		if f.RelPath != MetaFilename {
			ordered = append(ordered, f.RelPath)
		}
	}
	ordered = append(ordered, MetaFilename)
	keys := make([]string, len(ordered))
	for i, rel := range ordered {
		k, err := BlockKey(tenantID, meta.ULID, rel)
		if err != nil {
			return fmt.Errorf("storage: uploading block %s of tenant %q: %w", meta.ULID, tenantID, err)
		}
		keys[i] = k
	}
	for i, rel := range ordered {
		if err := uploadFile(ctx, bkt, filepath.Join(localDir, filepath.FromSlash(rel)), keys[i]); err != nil {
			return fmt.Errorf("storage: uploading block %s of tenant %q to bucket %s: %w", meta.ULID, tenantID, bkt.Name(), err)
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
// meta.json first, so the block reads as partial while the rest goes. Keys are built by BlockKey;
// an invalid one is an error and nothing is deleted for it.
func DeletePartialBlock(ctx context.Context, bkt objstore.Bucket, tenantID string, meta Meta) error {
	var errs []error
	del := func(rel string) {
		name, err := BlockKey(tenantID, meta.ULID, rel)
		if err != nil {
			errs = append(errs, err)
			return
		}
		if err := bkt.Delete(ctx, name); err != nil && !bkt.IsObjNotFoundErr(err) {
			errs = append(errs, err)
		}
	}
	del(MetaFilename)
	for _, f := range meta.Thanos.Files {
		if f.RelPath != MetaFilename {
			del(f.RelPath)
		}
	}
	return errors.Join(errs...)
}
