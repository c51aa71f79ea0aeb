package blocksvc

import (
	"context"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/oklog/ulid/v2"

	"github.com/raftingest/raftingest/blockspb"
	"github.com/raftingest/raftingest/storage"
	"github.com/raftingest/raftingest/tenant"
)

// Info is one complete block in a member's bucket.
type Info struct {
	Tenant string
	Meta   storage.Meta
}

// List returns the complete blocks (with meta.json) in c's bucket, of tenantID or of every tenant
// when "". Every entry is checked (tenant, ULID, meta.json decoding and naming that ULID): an
// entry that does not check is an error, not silently dropped.
func List(ctx context.Context, c blockspb.BlocksClient, tenantID string) ([]Info, error) {
	st, err := c.ListBlocks(ctx, &blockspb.ListBlocksRequest{Tenant: tenantID})
	if err != nil {
		return nil, fmt.Errorf("blocksvc: list blocks: %w", err)
	}
	var out []Info
	for {
		resp, err := st.Recv()
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("blocksvc: list blocks: %w", err)
		}
		for _, b := range resp.GetBlocks() {
			if err := tenant.Validate(b.GetTenant()); err != nil || (tenantID != "" && b.GetTenant() != tenantID) {
				return nil, fmt.Errorf("blocksvc: list blocks of tenant %q: the member listed tenant %q", tenantID, trim(b.GetTenant()))
			}
			id, err := ulid.ParseStrict(b.GetUlid())
			if err != nil {
				return nil, fmt.Errorf("blocksvc: list blocks: ULID %q: %w", trim(b.GetUlid()), err)
			}
			m, err := storage.ReadMeta(b.GetMetaJson())
			if err != nil {
				return nil, fmt.Errorf("blocksvc: list blocks: block %s of tenant %q: %w", id, b.GetTenant(), err)
			}
			if m.ULID != id {
				return nil, fmt.Errorf("blocksvc: list blocks: block %s of tenant %q: its meta.json names %s", id, b.GetTenant(), m.ULID)
			}
			out = append(out, Info{Tenant: b.GetTenant(), Meta: m})
		}
	}
}

// Fetch downloads block id of tenantID from c into parentDir/<ULID>, verified; it returns that
// path. The block is received into a hidden directory of parentDir under the same checks as
// StoreBlock (header against maxBytes — the configured -blocks-storage.max-block-upload-bytes; 0
// or less: DefaultMaxBlockUploadBytes — and the free space, keeping DefaultMinFreeDiskPercent of
// the filesystem free, pieces in order,
// sizes, the block opening with every chunk decoding) and renamed into place only then; a
// directory parentDir/<ULID> already there is replaced (blocks are immutable: it held the same
// block, or a broken copy). Nothing is left behind on error. Each message must come within
// DefaultIdleTimeout.
func Fetch(ctx context.Context, c blockspb.BlocksClient, tenantID string, id ulid.ULID, parentDir string, maxBytes int64) (string, error) {
	if maxBytes <= 0 {
		maxBytes = DefaultMaxBlockUploadBytes
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // ends the call, and so a Recv in progress, before src stops
	st, err := c.FetchBlock(ctx, &blockspb.FetchBlockRequest{Tenant: tenantID, Ulid: id.String()})
	if err != nil {
		return "", fmt.Errorf("blocksvc: fetch block %s of tenant %q: %w", id, tenantID, err)
	}
	src := startRecv(st.Recv, DefaultIdleTimeout)
	defer src.stop()
	first, err := src.next(ctx)
	if err != nil {
		return "", fmt.Errorf("blocksvc: fetch block %s of tenant %q: %w", id, tenantID, err)
	}
	h, err := checkHeader(first.GetHeader(), maxBytes)
	if err != nil {
		return "", fmt.Errorf("blocksvc: fetch block %s of tenant %q: %w", id, tenantID, err)
	}
	if h.tenant != tenantID || h.id != id {
		return "", fmt.Errorf("blocksvc: fetch block %s of tenant %q: %w: the member sent block %s of tenant %q", id, tenantID, ErrInvalidBlock, h.id, h.tenant)
	}
	if err := os.MkdirAll(parentDir, 0o755); err != nil {
		return "", fmt.Errorf("blocksvc: fetch block %s: %w", id, err)
	}
	if err := checkFreeSpace(statFS, parentDir, h.total, DefaultMinFreeDiskPercent); err != nil {
		return "", fmt.Errorf("blocksvc: fetch block %s of tenant %q: %w", id, tenantID, err)
	}
	tmp, err := os.MkdirTemp(parentDir, "."+id.String()+".fetch-")
	if err != nil {
		return "", fmt.Errorf("blocksvc: fetch block %s: %w", id, err)
	}
	defer os.RemoveAll(tmp) // a no-op once renamed
	if _, err := receiveBlock(ctx, src, tmp, h); err != nil {
		return "", fmt.Errorf("blocksvc: fetch block %s of tenant %q: %w", id, tenantID, err)
	}
	dst := filepath.Join(parentDir, id.String())
	if err := os.RemoveAll(dst); err != nil {
		return "", fmt.Errorf("blocksvc: fetch block %s: replacing %s: %w", id, dst, err)
	}
	if err := os.Rename(tmp, dst); err != nil {
		return "", fmt.Errorf("blocksvc: fetch block %s: %w", id, err)
	}
	return dst, nil
}

// LocalFiles returns the files of the block in dir that a Store sends: every regular file but
// meta.json, its deletion mark (the bucket's state, not the block's content) and hidden ones (a
// crashed upload's temporary files), as "/"-separated paths with their sizes, sorted.
func LocalFiles(dir string) ([]storage.File, error) {
	var files []storage.File
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == dir {
			return nil
		}
		if strings.HasPrefix(d.Name(), ".") {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if d.IsDir() {
			return nil
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		if rel == storage.MetaFilename || rel == storage.DeletionMarkFilename {
			return nil
		}
		if !d.Type().IsRegular() {
			return fmt.Errorf("%s is not a regular file", p)
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		files = append(files, storage.File{RelPath: rel, SizeBytes: fi.Size()})
		return nil
	})
	if err != nil {
		return nil, err
	}
	slices.SortFunc(files, func(a, b storage.File) int { return strings.Compare(a.RelPath, b.RelPath) })
	return files, nil
}

// Store sends the complete block in dir (named by its ULID, holding meta.json) of tenantID to c, and
// returns when c has it durably in its bucket (alreadyPresent: c had it before). The files sent are
// LocalFiles(dir); a file whose size changes while it is sent fails the call.
func Store(ctx context.Context, c blockspb.BlocksClient, tenantID, dir string) (alreadyPresent bool, err error) {
	raw, err := os.ReadFile(filepath.Join(dir, storage.MetaFilename))
	if err != nil {
		return false, fmt.Errorf("blocksvc: store block %s: %w", dir, err)
	}
	meta, err := storage.ReadMeta(raw)
	if err != nil {
		return false, fmt.Errorf("blocksvc: store block %s: %w", dir, err)
	}
	if filepath.Base(dir) != meta.ULID.String() {
		return false, fmt.Errorf("blocksvc: store block %s: its meta.json names block %s", dir, meta.ULID)
	}
	files, err := LocalFiles(dir)
	if err != nil {
		return false, fmt.Errorf("blocksvc: store block %s: %w", dir, err)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st, err := c.StoreBlock(ctx)
	if err != nil {
		return false, fmt.Errorf("blocksvc: store block %s of tenant %q: %w", meta.ULID, tenantID, err)
	}
	hdr := &blockspb.BlockHeader{Tenant: tenantID, Ulid: meta.ULID.String(), MetaJson: raw}
	for _, f := range files {
		hdr.Files = append(hdr.Files, &blockspb.BlockFile{RelPath: f.RelPath, SizeBytes: f.SizeBytes})
	}
	err = st.Send(&blockspb.BlockPart{Part: &blockspb.BlockPart_Header{Header: hdr}})
	buf := make([]byte, PieceSize)
	for i := 0; err == nil && i < len(files); i++ {
		err = sendLocalFile(st, dir, files[i], buf)
	}
	if err != nil && err != io.EOF {
		// The receiver's own status, if it ended the call, says more than the send error.
		if _, rerr := st.CloseAndRecv(); rerr != nil {
			return false, fmt.Errorf("blocksvc: store block %s of tenant %q: %w (receiver: %v)", meta.ULID, tenantID, err, rerr)
		}
		return false, fmt.Errorf("blocksvc: store block %s of tenant %q: %w", meta.ULID, tenantID, err)
	}
	// io.EOF: the receiver answered early (it had the block); its answer is in CloseAndRecv.
	resp, err := st.CloseAndRecv()
	if err != nil {
		return false, fmt.Errorf("blocksvc: store block %s of tenant %q: %w", meta.ULID, tenantID, err)
	}
	return resp.GetAlreadyPresent(), nil
}

// sendLocalFile sends one file in pieces of len(buf). io.EOF means the receiver ended the call.
func sendLocalFile(st blockspb.Blocks_StoreBlockClient, dir string, f storage.File, buf []byte) error {
	fh, err := os.Open(filepath.Join(dir, filepath.FromSlash(f.RelPath)))
	if err != nil {
		return err
	}
	defer fh.Close()
	var off int64
	for off < f.SizeBytes {
		n, err := io.ReadFull(fh, buf[:min(int64(len(buf)), f.SizeBytes-off)])
		if err != nil {
			return fmt.Errorf("%s at %d of %d bytes: %w", f.RelPath, off, f.SizeBytes, err)
		}
		// Send marshals the message before it returns: buf may be reused at once.
		if err := st.Send(&blockspb.BlockPart{Part: &blockspb.BlockPart_Piece{Piece: &blockspb.FilePiece{
			RelPath: f.RelPath, Offset: off, Data: buf[:n]}}}); err != nil {
			return err
		}
		off += int64(n)
	}
	if n, _ := fh.Read(buf[:1]); n > 0 {
		return fmt.Errorf("%s grew past %d bytes while it was sent", f.RelPath, f.SizeBytes)
	}
	return nil
}

// MarkForDeletion asks c (DeleteBlocks, fenced by the compactor lease epoch) to delete blocks ids
// of tenantID: c marks each durably before it answers (storage.MarkForDeletion), keeps serving
// them, and deletes them for real -compactor.deletion-delay later (Server.Sweep). marked counts the
// blocks c holds complete and now has marked (a block marked before included).
func MarkForDeletion(ctx context.Context, c blockspb.BlocksClient, tenantID string, ids []ulid.ULID, leaseEpoch uint64) (marked int, err error) {
	if len(ids) > maxDeleteIDs {
		return 0, fmt.Errorf("blocksvc: mark %d blocks for deletion in one call: at most %d", len(ids), maxDeleteIDs)
	}
	req := &blockspb.DeleteBlocksRequest{Tenant: tenantID, LeaseEpoch: leaseEpoch}
	for _, id := range ids {
		req.Ulids = append(req.Ulids, id.String())
	}
	resp, err := c.DeleteBlocks(ctx, req)
	if err != nil {
		return 0, fmt.Errorf("blocksvc: mark %d blocks of tenant %q for deletion (lease epoch %d): %w", len(ids), tenantID, leaseEpoch, err)
	}
	return int(resp.GetDeleted()), nil
}
