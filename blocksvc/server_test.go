package blocksvc

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"hash/crc32"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/oklog/ulid/v2"
	"github.com/prometheus/prometheus/tsdb/tombstones"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/raftingest/raftingest/blockspb"
	"github.com/raftingest/raftingest/storage"
)

// TestBlocks_StoreListFetchDelete: a real block of several pieces (its chunk segment is larger than
// PieceSize) goes to a member with Store, comes back byte for byte with Fetch, is listed with its
// meta, is answered already present when stored again, and is deleted only with the lease the
// AuthorizeDelete dependency accepts: DeleteBlocks marks it (deletion-mark.json, Thanos's format),
// after which it is no longer listed but still fetched; the sweeper leaves it until the deletion
// delay has passed on the injected clock and then removes everything of it.
func TestBlocks_StoreListFetchDelete(t *testing.T) {
	const leaseEpoch = 7
	var authCalls int
	n := startNode(t, Config{}, func(d *Deps) {
		d.AuthorizeDelete = func(_ context.Context, tenantID string, epoch uint64) error {
			authCalls++
			if tenantID != "team-a" {
				t.Errorf("AuthorizeDelete got tenant %q", tenantID)
			}
			if epoch != leaseEpoch {
				return status.Errorf(codes.FailedPrecondition, "stale lease epoch %d, the lease is at %d", epoch, leaseEpoch)
			}
			return nil
		}
	})
	ctx := t.Context()
	src := t.TempDir()
	dir, meta := testBlock(t, src, "team-a", 600, 240, 1)
	if fi, err := os.Stat(filepath.Join(dir, "chunks", "000001")); err != nil || fi.Size() <= PieceSize {
		t.Fatalf("the test block's chunk segment should span several pieces: %v, %v", fi, err)
	}

	present, err := Store(ctx, n.client, "team-a", dir)
	if err != nil || present {
		t.Fatalf("Store: present %v, err %v", present, err)
	}
	stored := filepath.Join(n.bucketDir, "team-a", meta.ULID.String())
	sameFiles(t, dir, stored)
	requireEmpty(t, "staging", n.staging)
	if got := metric(t, n.reg, "raftingest_blocks_received_total"); got != 1 {
		t.Fatalf("raftingest_blocks_received_total %v, want 1", got)
	}

	start := time.Now()
	present, err = Store(ctx, n.client, "team-a", dir)
	if err != nil || !present {
		t.Fatalf("second Store: present %v, err %v; want already present", present, err)
	}
	t.Logf("second Store of a %d-byte block answered already present in %s", meta.BlockSize(), time.Since(start))

	list, err := List(ctx, n.client, "")
	if err != nil || len(list) != 1 || list[0].Tenant != "team-a" || list[0].Meta.ULID != meta.ULID || list[0].Meta.Stats != meta.Stats {
		t.Fatalf("List: %+v, %v", list, err)
	}
	if list, err := List(ctx, n.client, "team-b"); err != nil || len(list) != 0 {
		t.Fatalf("List(team-b): %+v, %v", list, err)
	}

	fetchDir := t.TempDir()
	got, err := Fetch(ctx, n.client, "team-a", meta.ULID, fetchDir, 0)
	if err != nil || got != filepath.Join(fetchDir, meta.ULID.String()) {
		t.Fatalf("Fetch: %q, %v", got, err)
	}
	sameFiles(t, dir, got)
	if ents, _ := os.ReadDir(fetchDir); len(ents) != 1 {
		t.Fatalf("Fetch left %d entries in its parent directory, want the block alone", len(ents))
	}
	if _, err := Fetch(ctx, n.client, "team-a", ulid.Make(), fetchDir, 0); status.Code(err) != codes.NotFound {
		t.Fatalf("Fetch of an unknown block: %v, want NotFound", err)
	}

	if _, err := MarkForDeletion(ctx, n.client, "team-a", []ulid.ULID{meta.ULID}, leaseEpoch-1); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("DeleteBlocks with a stale epoch: %v, want FailedPrecondition", err)
	}
	if _, err := os.Stat(filepath.Join(stored, storage.DeletionMarkFilename)); !os.IsNotExist(err) {
		t.Fatalf("a refused delete marked the block: %v", err)
	}
	sameFiles(t, dir, stored)
	markedAt := n.clock.Now()
	marked, err := MarkForDeletion(ctx, n.client, "team-a", []ulid.ULID{meta.ULID, ulid.Make()}, leaseEpoch)
	if err != nil || marked != 1 {
		t.Fatalf("DeleteBlocks: %d, %v; want 1 marked (the absent one is not an error)", marked, err)
	}
	if authCalls != 2 {
		t.Fatalf("AuthorizeDelete called %d times, want 2", authCalls)
	}
	// The mark, in Thanos's format; the block itself untouched.
	raw, err := os.ReadFile(filepath.Join(stored, storage.DeletionMarkFilename))
	if err != nil {
		t.Fatalf("no deletion mark after DeleteBlocks: %v", err)
	}
	var mark map[string]any
	if err := json.Unmarshal(raw, &mark); err != nil || mark["id"] != meta.ULID.String() ||
		mark["deletion_time"] != float64(markedAt.Unix()) || mark["version"] != float64(1) {
		t.Fatalf("deletion-mark.json %s (%v): want id %s, deletion_time %d, version 1", raw, err, meta.ULID, markedAt.Unix())
	}
	for name, b := range files(t, dir) {
		if got, err := os.ReadFile(filepath.Join(stored, filepath.FromSlash(name))); err != nil || string(got) != string(b) {
			t.Fatalf("%s of the marked block changed or went: %v", name, err)
		}
	}
	if got := metric(t, n.reg, "raftingest_blocks_marked_for_deletion_total"); got != 1 {
		t.Fatalf("raftingest_blocks_marked_for_deletion_total %v, want 1", got)
	}
	// Marked again (a retried run): counted as marked, the first mark's time stands.
	n.clock.Advance(10 * time.Minute)
	if marked, err := MarkForDeletion(ctx, n.client, "team-a", []ulid.ULID{meta.ULID}, leaseEpoch); err != nil || marked != 1 {
		t.Fatalf("DeleteBlocks again: %d, %v; want 1", marked, err)
	}
	if again, _ := os.ReadFile(filepath.Join(stored, storage.DeletionMarkFilename)); string(again) != string(raw) {
		t.Fatalf("a second DeleteBlocks rewrote the mark: %s, was %s", again, raw)
	}
	// No longer offered to the compactor, still served (its files only, not the mark).
	if list, err := List(ctx, n.client, ""); err != nil || len(list) != 0 {
		t.Fatalf("List after DeleteBlocks: %+v, %v; want the marked block left out", list, err)
	}
	if got, err := Fetch(ctx, n.client, "team-a", meta.ULID, t.TempDir(), 0); err != nil {
		t.Fatalf("Fetch of a marked block: %v", err)
	} else {
		sameFiles(t, dir, got)
	}
	// A Store of the block it has marked: already present (its data is in the replacement).
	if present, err := Store(ctx, n.client, "team-a", dir); err != nil || !present {
		t.Fatalf("Store of a marked block: present %v, err %v; want already present", present, err)
	}

	// The sweeper: nothing before the delay has passed since the first mark, everything after.
	n.clock.Set(markedAt.Add(testDeletionDelay - time.Second))
	if swept, err := n.srv.Sweep(ctx); err != nil || swept != 0 {
		t.Fatalf("Sweep before the delay: %d, %v; want nothing deleted", swept, err)
	}
	for name := range files(t, dir) {
		if _, err := os.Stat(filepath.Join(stored, filepath.FromSlash(name))); err != nil {
			t.Fatalf("%s of the marked block went before the delay: %v", name, err)
		}
	}
	n.clock.Set(markedAt.Add(testDeletionDelay))
	if swept, err := n.srv.Sweep(ctx); err != nil || swept != 1 {
		t.Fatalf("Sweep after the delay: %d, %v; want the block deleted", swept, err)
	}
	requireEmpty(t, "bucket", n.bucketDir)
	if got := metric(t, n.reg, "cortex_compactor_blocks_cleaned_total"); got != 1 {
		t.Fatalf("cortex_compactor_blocks_cleaned_total %v, want 1", got)
	}
	if _, err := Fetch(ctx, n.client, "team-a", meta.ULID, t.TempDir(), 0); status.Code(err) != codes.NotFound {
		t.Fatalf("Fetch of a swept block: %v, want NotFound", err)
	}
	if swept, err := n.srv.Sweep(ctx); err != nil || swept != 0 {
		t.Fatalf("Sweep of an empty bucket: %d, %v", swept, err)
	}
}

// TestBlocks_SweepFinishesAHalfSweptBlock: a sweep killed after meta.json went (the first thing
// it deletes) leaves the rest of the block and its mark; such a block is listed by nobody, and the
// next sweep deletes what is left. A block marked later than the delay allows stays.
func TestBlocks_SweepFinishesAHalfSweptBlock(t *testing.T) {
	n := startNode(t, Config{}, func(d *Deps) { d.AuthorizeDelete = func(context.Context, string, uint64) error { return nil } })
	ctx := t.Context()
	dirA, a := testBlock(t, t.TempDir(), "t1", 5, 20, 11)
	dirB, b := testBlock(t, t.TempDir(), "t1", 5, 20, 12)
	for _, d := range []string{dirA, dirB} {
		if _, err := Store(ctx, n.client, "t1", d); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := MarkForDeletion(ctx, n.client, "t1", []ulid.ULID{a.ULID}, 1); err != nil {
		t.Fatal(err)
	}
	n.clock.Advance(testDeletionDelay / 2)
	if _, err := MarkForDeletion(ctx, n.client, "t1", []ulid.ULID{b.ULID}, 1); err != nil {
		t.Fatal(err)
	}
	// The crash: meta.json of a gone, nothing else.
	if err := os.Remove(filepath.Join(n.bucketDir, "t1", a.ULID.String(), storage.MetaFilename)); err != nil {
		t.Fatal(err)
	}
	if list, err := List(ctx, n.client, ""); err != nil || len(list) != 0 {
		t.Fatalf("List: %+v, %v; want nothing (one half-swept, one marked)", list, err)
	}
	n.clock.Advance(testDeletionDelay / 2)
	if swept, err := n.srv.Sweep(ctx); err != nil || swept != 1 {
		t.Fatalf("Sweep: %d, %v; want the half-swept block finished", swept, err)
	}
	if _, err := os.Stat(filepath.Join(n.bucketDir, "t1", a.ULID.String())); !os.IsNotExist(err) {
		t.Fatalf("the half-swept block is still there: %v", err)
	}
	if _, err := os.Stat(filepath.Join(n.bucketDir, "t1", b.ULID.String(), storage.MetaFilename)); err != nil {
		t.Fatalf("the block marked half a delay ago was swept: %v", err)
	}
	n.clock.Advance(testDeletionDelay / 2)
	if swept, err := n.srv.Sweep(ctx); err != nil || swept != 1 {
		t.Fatalf("Sweep: %d, %v; want the second block deleted once its delay passed", swept, err)
	}
	requireEmpty(t, "bucket", n.bucketDir)
}

// TestBlocks_DeleteWithoutLeaseCheckRefused: a member without an AuthorizeDelete refuses every
// delete with FailedPrecondition and deletes nothing.
func TestBlocks_DeleteWithoutLeaseCheckRefused(t *testing.T) {
	n := startNode(t, Config{}, nil)
	dir, meta := testBlock(t, t.TempDir(), "t1", 3, 10, 2)
	if _, err := Store(t.Context(), n.client, "t1", dir); err != nil {
		t.Fatal(err)
	}
	_, err := MarkForDeletion(t.Context(), n.client, "t1", []ulid.ULID{meta.ULID}, 1)
	if status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("DeleteBlocks: %v, want FailedPrecondition", err)
	}
	sameFiles(t, dir, filepath.Join(n.bucketDir, "t1", meta.ULID.String()))
}

// TestBlocks_PartialBlockNeverListedOrServed: a block without meta.json (an upload that never
// finished) is not listed, not fetched, and a Store of the whole block completes it.
func TestBlocks_PartialBlockNeverListedOrServed(t *testing.T) {
	n := startNode(t, Config{}, nil)
	dir, meta := testBlock(t, t.TempDir(), "t1", 5, 20, 3)
	partial := filepath.Join(n.bucketDir, "t1", meta.ULID.String())
	if err := os.CopyFS(partial, os.DirFS(dir)); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(partial, storage.MetaFilename)); err != nil {
		t.Fatal(err)
	}
	if list, err := List(t.Context(), n.client, ""); err != nil || len(list) != 0 {
		t.Fatalf("List: %+v, %v; want the partial block left out", list, err)
	}
	if _, err := Fetch(t.Context(), n.client, "t1", meta.ULID, t.TempDir(), 0); status.Code(err) != codes.NotFound {
		t.Fatalf("Fetch of a partial block: %v, want NotFound", err)
	}
	if present, err := Store(t.Context(), n.client, "t1", dir); err != nil || present {
		t.Fatalf("Store over a partial block: present %v, %v", present, err)
	}
	sameFiles(t, dir, partial)
}

// rawStore sends parts on a StoreBlock stream as they are, then closes it (unless keepOpen waits
// first), and returns the answer's error.
func rawStore(ctx context.Context, c blockspb.BlocksClient, parts []*blockspb.BlockPart, wait time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	st, err := c.StoreBlock(ctx)
	if err != nil {
		return err
	}
	for _, p := range parts {
		if err := st.Send(p); err != nil {
			break // the server ended the call; its status comes with CloseAndRecv
		}
	}
	if wait > 0 {
		time.Sleep(wait)
	}
	_, err = st.CloseAndRecv()
	return err
}

// blockParts cuts the block in dir into the messages Store would send, for tampering.
func blockParts(t *testing.T, tenantID, dir string) (*blockspb.BlockHeader, []*blockspb.FilePiece) {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(dir, storage.MetaFilename))
	if err != nil {
		t.Fatal(err)
	}
	fs, err := LocalFiles(dir)
	if err != nil {
		t.Fatal(err)
	}
	h := &blockspb.BlockHeader{Tenant: tenantID, Ulid: filepath.Base(dir), MetaJson: raw}
	var pieces []*blockspb.FilePiece
	for _, f := range fs {
		h.Files = append(h.Files, &blockspb.BlockFile{RelPath: f.RelPath, SizeBytes: f.SizeBytes})
		b, err := os.ReadFile(filepath.Join(dir, filepath.FromSlash(f.RelPath)))
		if err != nil {
			t.Fatal(err)
		}
		for off := 0; off < len(b); off += PieceSize {
			pieces = append(pieces, &blockspb.FilePiece{RelPath: f.RelPath, Offset: int64(off), Data: b[off:min(off+PieceSize, len(b))]})
		}
	}
	return h, pieces
}

func hdr(h *blockspb.BlockHeader) *blockspb.BlockPart {
	return &blockspb.BlockPart{Part: &blockspb.BlockPart_Header{Header: h}}
}

func pc(p *blockspb.FilePiece) *blockspb.BlockPart {
	return &blockspb.BlockPart{Part: &blockspb.BlockPart_Piece{Piece: p}}
}

// cloneHeader deep-copies h so a case can tamper with it.
func cloneHeader(h *blockspb.BlockHeader) *blockspb.BlockHeader {
	c := &blockspb.BlockHeader{Tenant: h.Tenant, Ulid: h.Ulid, MetaJson: append([]byte(nil), h.MetaJson...)}
	for _, f := range h.Files {
		c.Files = append(c.Files, &blockspb.BlockFile{RelPath: f.RelPath, SizeBytes: f.SizeBytes})
	}
	return c
}

// TestStoreBlock_HostileInput: each hostile or broken stream is refused with a clear status whose
// message names the problem, and leaves nothing in the bucket or the staging directory. A good
// stream afterwards is stored (the refusals held no slot or file).
func TestStoreBlock_HostileInput(t *testing.T) {
	n := startNode(t, Config{IdleTimeout: 500 * time.Millisecond, MaxConcurrentStores: 2}, nil)
	dir, meta := testBlock(t, t.TempDir(), "t1", 600, 240, 4)
	h, pieces := blockParts(t, "t1", dir)
	if len(pieces) < 3 {
		t.Fatalf("want a block of at least 3 pieces, got %d", len(pieces))
	}
	all := func(hh *blockspb.BlockHeader, ps []*blockspb.FilePiece) []*blockspb.BlockPart {
		out := []*blockspb.BlockPart{hdr(hh)}
		for _, p := range ps {
			out = append(out, pc(p))
		}
		return out
	}
	withHeader := func(mod func(*blockspb.BlockHeader)) []*blockspb.BlockPart {
		c := cloneHeader(h)
		mod(c)
		return all(c, pieces)
	}
	withPieces := func(mod func([]*blockspb.FilePiece) []*blockspb.FilePiece) []*blockspb.BlockPart {
		ps := make([]*blockspb.FilePiece, len(pieces))
		for i, p := range pieces {
			ps[i] = &blockspb.FilePiece{RelPath: p.RelPath, Offset: p.Offset, Data: p.Data}
		}
		return all(h, mod(ps))
	}
	otherMeta, _ := testBlock(t, t.TempDir(), "t1", 1, 2, 5)
	otherRaw, err := os.ReadFile(filepath.Join(otherMeta, storage.MetaFilename))
	if err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name  string
		parts []*blockspb.BlockPart
		wait  time.Duration
		code  codes.Code
		msg   string
	}{
		{"empty stream", nil, 0, codes.InvalidArgument, "empty stream"},
		{"piece before the header", []*blockspb.BlockPart{pc(pieces[0])}, 0, codes.InvalidArgument, "does not start with a header"},
		{"header claiming 1 TiB", withHeader(func(c *blockspb.BlockHeader) { c.Files[0].SizeBytes = 1 << 40 }), 0, codes.ResourceExhausted, "max-block-upload-bytes"},
		{"sizes overflowing int64", withHeader(func(c *blockspb.BlockHeader) {
			c.Files[0].SizeBytes = 1<<63 - 1
			c.Files[1].SizeBytes = 1<<63 - 1
		}), 0, codes.ResourceExhausted, "max-block-upload-bytes"},
		{"negative size", withHeader(func(c *blockspb.BlockHeader) { c.Files[0].SizeBytes = -1 }), 0, codes.InvalidArgument, "-1 bytes"},
		{"tenant ../x", withHeader(func(c *blockspb.BlockHeader) { c.Tenant = "../x" }), 0, codes.InvalidArgument, "tenant"},
		{"tenant empty", withHeader(func(c *blockspb.BlockHeader) { c.Tenant = "" }), 0, codes.InvalidArgument, "tenant"},
		{"meta.json of another tenant", withHeader(func(c *blockspb.BlockHeader) { c.Tenant = "t2" }), 0, codes.InvalidArgument, `labels it tenant "t1"`},
		{"rel_path with ..", withHeader(func(c *blockspb.BlockHeader) { c.Files[0].RelPath = "chunks/../../../x" }), 0, codes.InvalidArgument, "invalid object key"},
		{"absolute rel_path", withHeader(func(c *blockspb.BlockHeader) { c.Files[0].RelPath = "/etc/passwd" }), 0, codes.InvalidArgument, "absolute"},
		{"hidden directory", withHeader(func(c *blockspb.BlockHeader) { c.Files[0].RelPath = ".tmp/000001" }), 0, codes.InvalidArgument, "hidden"},
		{"hidden file", withHeader(func(c *blockspb.BlockHeader) { c.Files[0].RelPath = "chunks/.000001.tmp-1-1" }), 0, codes.InvalidArgument, "hidden"},
		{"meta.json as a file", withHeader(func(c *blockspb.BlockHeader) {
			c.Files = append(c.Files, &blockspb.BlockFile{RelPath: "meta.json", SizeBytes: 2})
		}), 0, codes.InvalidArgument, "meta.json is in the header"},
		{"deletion mark as a file", withHeader(func(c *blockspb.BlockHeader) {
			c.Files = append(c.Files, &blockspb.BlockFile{RelPath: storage.DeletionMarkFilename, SizeBytes: 1})
		}), 0, codes.InvalidArgument, "deletion-mark.json is not a block file"},
		{"file listed twice", withHeader(func(c *blockspb.BlockHeader) { c.Files = append(c.Files, c.Files[0]) }), 0, codes.InvalidArgument, "listed twice"},
		{"file and directory", withHeader(func(c *blockspb.BlockHeader) {
			c.Files = append(c.Files, &blockspb.BlockFile{RelPath: "chunks", SizeBytes: 1})
		}), 0, codes.InvalidArgument, "a file and a directory"},
		{"no index", withHeader(func(c *blockspb.BlockHeader) { c.Files = c.Files[:1] }), 0, codes.InvalidArgument, "no index"},
		{"bad ULID", withHeader(func(c *blockspb.BlockHeader) { c.Ulid = "not-a-ulid" }), 0, codes.InvalidArgument, "ULID"},
		{"meta.json naming another block", withHeader(func(c *blockspb.BlockHeader) { c.MetaJson = otherRaw }), 0, codes.InvalidArgument, "meta.json names block"},
		{"meta.json not JSON", withHeader(func(c *blockspb.BlockHeader) { c.MetaJson = []byte("{") }), 0, codes.InvalidArgument, "meta.json"},
		{"size other than meta.json lists", withHeader(func(c *blockspb.BlockHeader) { c.Files[1].SizeBytes-- }), 0, codes.InvalidArgument, "meta.json lists file"},
		{"piece past its size", withPieces(func(ps []*blockspb.FilePiece) []*blockspb.FilePiece {
			last := len(ps) - 1
			ps[last].Data = append(append([]byte(nil), ps[last].Data...), 0)
			return ps
		}), 0, codes.InvalidArgument, "past its size"},
		{"gap", withPieces(func(ps []*blockspb.FilePiece) []*blockspb.FilePiece {
			ps[1].Offset++
			return ps
		}), 0, codes.InvalidArgument, "without gaps"},
		{"pieces out of file order", withPieces(func(ps []*blockspb.FilePiece) []*blockspb.FilePiece {
			return append([]*blockspb.FilePiece{ps[len(ps)-1]}, ps[:len(ps)-1]...)
		}), 0, codes.InvalidArgument, "header's order"},
		{"piece larger than PieceSize", withPieces(func(ps []*blockspb.FilePiece) []*blockspb.FilePiece {
			ps[0].Data = append(append([]byte(nil), ps[0].Data...), ps[1].Data[:1]...)
			return ps
		}), 0, codes.InvalidArgument, "want 1 to"},
		{"empty piece", withPieces(func(ps []*blockspb.FilePiece) []*blockspb.FilePiece {
			return append([]*blockspb.FilePiece{{RelPath: ps[0].RelPath}}, ps...)
		}), 0, codes.InvalidArgument, "want 1 to"},
		{"second header", append(all(h, pieces[:1]), hdr(h)), 0, codes.InvalidArgument, "second header"},
		{"truncated stream", all(h, pieces[:len(pieces)-1]), 0, codes.InvalidArgument, "stream ended with"},
		{"corrupt chunk", withPieces(func(ps []*blockspb.FilePiece) []*blockspb.FilePiece {
			// The first chunk's bytes after the segment header, its length and encoding: its sample
			// count and first samples.
			d := append([]byte(nil), ps[0].Data...)
			for i := 10; i < 40; i++ {
				d[i] ^= 0xff
			}
			ps[0].Data = d
			return ps
		}), 0, codes.InvalidArgument, "chunk"},
		{"chunk claiming a sample more, checksum right", withPieces(func(ps []*blockspb.FilePiece) []*blockspb.FilePiece {
			// The first chunk: <uvarint length><encoding><data><crc32c of encoding and data>, after the
			// 8-byte segment header; its data starts with the sample count (big-endian uint16).
			d := append([]byte(nil), ps[0].Data...)
			l, n := binary.Uvarint(d[8:])
			start := 8 + n // the encoding byte
			end := start + 1 + int(l)
			d[start+2]++ // the count's low byte
			binary.BigEndian.PutUint32(d[end:], crc32.Checksum(d[start:end], crc32.MakeTable(crc32.Castagnoli)))
			ps[0].Data = d
			return ps
		}), 0, codes.InvalidArgument, "chunk 0"},
		{"meta.json counting other samples", withHeader(func(c *blockspb.BlockHeader) {
			var m map[string]any
			if err := json.Unmarshal(c.MetaJson, &m); err != nil {
				t.Fatal(err)
			}
			st := m["stats"].(map[string]any)
			st["numSamples"] = st["numSamples"].(float64) + 1
			c.MetaJson, _ = json.Marshal(m)
		}), 0, codes.InvalidArgument, "meta.json counts"},
		{"stalled stream", all(h, pieces[:1]), 2 * time.Second, codes.DeadlineExceeded, "stalled"},
		{"stalled before the header", nil, 2 * time.Second, codes.DeadlineExceeded, "stalled"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			err := rawStore(t.Context(), n.client, tc.parts, tc.wait)
			st, _ := status.FromError(err)
			if st.Code() != tc.code || !strings.Contains(st.Message(), tc.msg) {
				t.Fatalf("got %v (%s), want %s containing %q", st.Code(), st.Message(), tc.code, tc.msg)
			}
			t.Logf("refused in %s: %s", time.Since(start).Round(time.Millisecond), st.Message())
			requireEmpty(t, "bucket", n.bucketDir)
			requireEmpty(t, "staging", n.staging)
		})
	}
	if present, err := Store(t.Context(), n.client, "t1", dir); err != nil || present {
		t.Fatalf("a good Store after the refusals: present %v, %v", present, err)
	}
	sameFiles(t, dir, filepath.Join(n.bucketDir, "t1", meta.ULID.String()))
	if got := metric(t, n.reg, "raftingest_blocks_store_refused_total"); got < 20 {
		t.Fatalf("raftingest_blocks_store_refused_total %v, want one per refused case", got)
	}
}

// TestStoreBlock_RefusedWhileLeaving: once the member is leaving (Deps.Accepting says so, or
// StopAccepting was called) StoreBlock answers FailedPrecondition — for a block it holds already
// too, which it must not call durable here — and nothing enters the bucket. It used to accept
// blocks whatever the member's state, so a block stored after a leaver listed its bucket left
// with it.
func TestStoreBlock_RefusedWhileLeaving(t *testing.T) {
	var leaving atomic.Bool
	n := startNode(t, Config{}, func(d *Deps) {
		d.Accepting = func() error {
			if leaving.Load() {
				return errors.New("the ring shows this member LEAVING")
			}
			return nil
		}
	})
	held, _ := testBlock(t, t.TempDir(), "t1", 5, 30, 1)
	if _, err := Store(t.Context(), n.client, "t1", held); err != nil {
		t.Fatal(err)
	}
	leaving.Store(true)
	other, meta := testBlock(t, t.TempDir(), "t1", 5, 30, 2)
	for _, dir := range []string{held, other} {
		present, err := Store(t.Context(), n.client, "t1", dir)
		if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "LEAVING") {
			t.Fatalf("a store while leaving: present %v, %v; want FailedPrecondition saying why", present, err)
		}
	}
	if _, err := os.Stat(filepath.Join(n.bucketDir, "t1", meta.ULID.String())); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("the refused block is in the bucket: %v", err)
	}
	requireEmpty(t, "staging", n.staging)

	// StopAccepting, whatever Accepting says.
	leaving.Store(false)
	if err := n.srv.StopAccepting(t.Context(), "test: leaving"); err != nil {
		t.Fatal(err)
	}
	if _, err := Store(t.Context(), n.client, "t1", other); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("a store after StopAccepting: %v, want FailedPrecondition", err)
	}
	if got := metric(t, n.reg, "raftingest_blocks_store_refused_total"); got != 3 {
		t.Fatalf("refused stores %v, want 3", got)
	}
}

// TestStoreBlock_ProgressPerMessage: Deps.Progress is called with the call's context for every
// message a store receives (header and pieces), so a hand-over's watcher sees the leaver's blocks
// arrive.
func TestStoreBlock_ProgressPerMessage(t *testing.T) {
	var calls atomic.Int64
	n := startNode(t, Config{}, func(d *Deps) {
		d.Progress = func(ctx context.Context) {
			if ctx == nil {
				t.Error("Progress without the call's context")
			}
			calls.Add(1)
		}
	})
	dir, _ := testBlock(t, t.TempDir(), "t1", 600, 240, 9)
	_, pieces := blockParts(t, "t1", dir)
	if _, err := Store(t.Context(), n.client, "t1", dir); err != nil {
		t.Fatal(err)
	}
	if got, want := calls.Load(), int64(1+len(pieces)); got != want {
		t.Fatalf("Progress called %d times, want %d (the header and %d pieces)", got, want, len(pieces))
	}
}

// blockSize is the bytes a header of the block in dir declares (its files but meta.json).
func blockSize(t *testing.T, dir string) int64 {
	t.Helper()
	fs, err := LocalFiles(dir)
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	for _, f := range fs {
		n += f.SizeBytes
	}
	return n
}

// TestStoreBlock_ReservesConcurrentStoresAndKeepsHeadroom: a store reserves the space it declared
// (twice: staging and bucket share the filesystem) until it ends, so a second store that would
// fit in what the filesystem shows free, but not beside the first one's reservation and the
// headroom (-blocks-storage.min-free-disk-percent of the filesystem), is refused ResourceExhausted;
// once the first ended, it is stored. A block that fits the free space only by eating into the
// headroom is refused. Neither reservations nor headroom existed: each store saw the same free
// space, and a peer could fill the disk the WAL uses.
func TestStoreBlock_ReservesConcurrentStoresAndKeepsHeadroom(t *testing.T) {
	first, _ := testBlock(t, t.TempDir(), "t1", 600, 240, 11)
	second, meta2 := testBlock(t, t.TempDir(), "t1", 600, 240, 12)
	size := max(blockSize(t, first), blockSize(t, second))
	total := uint64(1000 * size) // 5% headroom: 50 blocks
	var free atomic.Uint64
	n := startNode(t, Config{MinFreeDiskPercent: 5}, func(d *Deps) {
		d.statFS = func(string) (fsStat, error) {
			return fsStat{free: free.Load(), total: total, id: [2]int32{1, 2}}, nil
		}
	})

	free.Store(uint64(50*size + 3*size)) // room beyond the headroom for one store (2 × size), not two
	h, pieces := blockParts(t, "t1", first)
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
	time.Sleep(200 * time.Millisecond) // the first store has reserved its space
	_, err = Store(t.Context(), n.client, "t1", second)
	if status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "reserved by stores in progress") {
		t.Fatalf("a second store beside a reservation: %v, want ResourceExhausted naming the reservation", err)
	}
	for _, p := range pieces[1:] {
		if err := st.Send(pc(p)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := st.CloseAndRecv(); err != nil {
		t.Fatalf("the first store: %v", err)
	}
	if present, err := Store(t.Context(), n.client, "t1", second); err != nil || present {
		t.Fatalf("the second store once the first ended: present %v, %v", present, err)
	}
	sameFiles(t, second, filepath.Join(n.bucketDir, "t1", meta2.ULID.String()))

	// Headroom: 1.5 blocks beyond it, a store needs 2.
	free.Store(uint64(50*size + 3*size/2))
	third, _ := testBlock(t, t.TempDir(), "t1", 600, 240, 13)
	if _, err := Store(t.Context(), n.client, "t1", third); status.Code(err) != codes.ResourceExhausted ||
		!strings.Contains(err.Error(), "kept free") {
		t.Fatalf("a store into the headroom: %v, want ResourceExhausted naming the headroom", err)
	}
	requireEmpty(t, "staging", n.staging)
}

// TestStoreBlock_WholeStoreDeadline: a peer that sends every message within the idle timeout but
// trickles them so that the store takes longer than the idle timeout plus its size at the minimum
// rate is cut off (DeadlineExceeded) and its slot released: a store used to be bounded per message
// only, so one message every 59s held a slot for ever.
func TestStoreBlock_WholeStoreDeadline(t *testing.T) {
	n := startNode(t, Config{IdleTimeout: 600 * time.Millisecond, MaxConcurrentStores: 1, MinStoreRate: 1 << 40}, nil)
	dir, meta := testBlock(t, t.TempDir(), "t1", 600, 240, 14)
	h, pieces := blockParts(t, "t1", dir)
	st, err := n.client.StoreBlock(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_ = st.Send(hdr(h))
	for i := 0; time.Since(start) < 2*time.Second; i++ {
		time.Sleep(300 * time.Millisecond) // always within the idle timeout
		if i < len(pieces)-1 {
			if st.Send(pc(pieces[i])) != nil {
				break
			}
		}
	}
	_, err = st.CloseAndRecv()
	if status.Code(err) != codes.DeadlineExceeded || !strings.Contains(err.Error(), "not received within") {
		t.Fatalf("a trickling store: %v, want DeadlineExceeded for the whole store", err)
	}
	if present, err := Store(t.Context(), n.client, "t1", dir); err != nil || present {
		t.Fatalf("a store after the trickling one was cut: present %v, %v", present, err)
	}
	sameFiles(t, dir, filepath.Join(n.bucketDir, "t1", meta.ULID.String()))
	requireEmpty(t, "staging", n.staging)
}

// TestFetch_ConfiguredMaximum: Fetch refuses a block larger than the maximum it is given (the
// configured -blocks-storage.max-block-upload-bytes), before writing a byte; it used to check
// DefaultMaxBlockUploadBytes whatever the configuration.
func TestFetch_ConfiguredMaximum(t *testing.T) {
	n := startNode(t, Config{}, nil)
	dir, meta := testBlock(t, t.TempDir(), "t1", 50, 30, 15)
	if _, err := Store(t.Context(), n.client, "t1", dir); err != nil {
		t.Fatal(err)
	}
	size := blockSize(t, dir)
	into := t.TempDir()
	if _, err := Fetch(t.Context(), n.client, "t1", meta.ULID, into, size-1); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("Fetch of a %d-byte block with a maximum of %d: %v, want ErrTooLarge", size, size-1, err)
	}
	requireEmpty(t, "the fetch directory", into)
	if _, err := Fetch(t.Context(), n.client, "t1", meta.ULID, into, size); err != nil {
		t.Fatalf("Fetch within the maximum: %v", err)
	}
}

// rewriteMeta applies mod to the meta.json of the block in dir.
func rewriteMeta(t *testing.T, dir string, mod func(*storage.Meta)) {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(dir, storage.MetaFilename))
	if err != nil {
		t.Fatal(err)
	}
	m, err := storage.ReadMeta(raw)
	if err != nil {
		t.Fatal(err)
	}
	mod(&m)
	if raw, err = json.Marshal(m); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, storage.MetaFilename), raw, 0o644); err != nil {
		t.Fatal(err)
	}
}

// listFile adds the file rel of the block in dir, as it is on disk, to its meta.json's files.
func listFile(t *testing.T, dir, rel string) {
	t.Helper()
	fi, err := os.Stat(filepath.Join(dir, filepath.FromSlash(rel)))
	if err != nil {
		t.Fatal(err)
	}
	rewriteMeta(t, dir, func(m *storage.Meta) {
		m.Thanos.Files = append(m.Thanos.Files, storage.File{RelPath: rel, SizeBytes: fi.Size()})
	})
}

// TestStoreBlock_OnlyCheckedFilesAndTheTenantLabel: a block is refused (InvalidArgument, nothing
// stored) when it carries a file that is neither its index, a chunk segment nor its tombstones —
// even listed in its meta.json: it would be stored, served and moved unchecked — when its
// tombstones file holds a tombstone (samples hidden on this replica only), and when its meta.json
// has no tenant label (the bucket reader and the compactor take a block's tenant from it). Each
// used to be accepted.
func TestStoreBlock_OnlyCheckedFilesAndTheTenantLabel(t *testing.T) {
	n := startNode(t, Config{}, nil)
	for _, tc := range []struct {
		name, want string
		mod        func(t *testing.T, dir string)
	}{
		{"an extra file", `"extra/notes.txt" is not a block file`, func(t *testing.T, dir string) {
			if err := os.MkdirAll(filepath.Join(dir, "extra"), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, "extra", "notes.txt"), []byte("unchecked"), 0o644); err != nil {
				t.Fatal(err)
			}
			listFile(t, dir, "extra/notes.txt")
		}},
		{"a chunk segment with another name", `"chunks/1" is not a block file`, func(t *testing.T, dir string) {
			if err := os.Rename(filepath.Join(dir, "chunks", "000001"), filepath.Join(dir, "chunks", "1")); err != nil {
				t.Fatal(err)
			}
			rewriteMeta(t, dir, func(m *storage.Meta) {
				for i := range m.Thanos.Files {
					if m.Thanos.Files[i].RelPath == "chunks/000001" {
						m.Thanos.Files[i].RelPath = "chunks/1"
					}
				}
			})
		}},
		{"a tombstone", "1 tombstones", func(t *testing.T, dir string) {
			ts := tombstones.NewMemTombstones()
			ts.AddInterval(1, tombstones.Interval{Mint: 0, Maxt: 1000})
			if _, err := tombstones.WriteFile(nil, dir, ts); err != nil {
				t.Fatal(err)
			}
			listFile(t, dir, "tombstones")
		}},
		{"no tenant label", "has no __org_id__ label", func(t *testing.T, dir string) {
			rewriteMeta(t, dir, func(m *storage.Meta) { delete(m.Thanos.Labels, storage.TenantLabel) })
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir, meta := testBlock(t, t.TempDir(), "t1", 20, 30, 21)
			tc.mod(t, dir)
			_, err := Store(t.Context(), n.client, "t1", dir)
			if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("store: %v, want InvalidArgument containing %q", err, tc.want)
			}
			if _, err := os.Stat(filepath.Join(n.bucketDir, "t1", meta.ULID.String())); !errors.Is(err, fs.ErrNotExist) {
				t.Fatalf("the refused block is in the bucket: %v", err)
			}
			requireEmpty(t, "staging", n.staging)
		})
	}
	// An empty tombstones file (what tsdb's compactor writes) is a block file like any other.
	dir, meta := testBlock(t, t.TempDir(), "t1", 20, 30, 22)
	if _, err := tombstones.WriteFile(nil, dir, tombstones.NewMemTombstones()); err != nil {
		t.Fatal(err)
	}
	listFile(t, dir, "tombstones")
	if _, err := Store(t.Context(), n.client, "t1", dir); err != nil {
		t.Fatalf("a block with an empty tombstones file: %v", err)
	}
	sameFiles(t, dir, filepath.Join(n.bucketDir, "t1", meta.ULID.String()))
}
