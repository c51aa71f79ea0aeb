package blocksvc

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"

	"github.com/oklog/ulid/v2"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/tsdb"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"github.com/prometheus/prometheus/tsdb/chunks"
	"github.com/prometheus/prometheus/tsdb/index"

	"github.com/raftingest/raftingest/blockspb"
	"github.com/raftingest/raftingest/storage"
	"github.com/raftingest/raftingest/tenant"
)

// Errors of a received block. The server answers ErrInvalidBlock with InvalidArgument and
// ErrTooLarge with ResourceExhausted.
var (
	// ErrInvalidBlock: a header, a piece or the block itself does not check (see checkHeader,
	// blockWriter, verifyBlock).
	ErrInvalidBlock = errors.New("blocksvc: invalid block")
	// ErrTooLarge: the block is larger than the receiver's limit or its free disk space.
	ErrTooLarge = errors.New("blocksvc: block too large")
)

// header is a BlockHeader that passed checkHeader.
type header struct {
	tenant   string
	id       ulid.ULID
	meta     storage.Meta
	metaJSON []byte
	files    []storage.File // in the order their bytes come; never meta.json
	total    int64          // sum of the files' sizes
}

// blockFileRE matches the files a TSDB block is made of besides meta.json: its index, its chunk
// segments and its tombstones.
var blockFileRE = regexp.MustCompile(`^(index|chunks/[0-9]{6}|tombstones)$`)

// checkHeader checks everything a header claims before anything is written for it: the tenant
// (tenant.Validate: it names a directory of the bucket), the ULID, meta.json (it decodes, names the
// same ULID and carries the tenant label of the same tenant; when it lists the block's files,
// exactly the header's with the same sizes), and the files (at least the index, each the index, a
// chunk segment chunks/NNNNNN or the tombstones file, listed once, with a size ≥ 0), and their
// total against maxBytes.
func checkHeader(h *blockspb.BlockHeader, maxBytes int64) (*header, error) {
	if h == nil {
		return nil, fmt.Errorf("%w: the stream does not start with a header", ErrInvalidBlock)
	}
	out := &header{tenant: h.GetTenant()}
	if err := tenant.Validate(out.tenant); err != nil {
		return nil, fmt.Errorf("%w: tenant: %v", ErrInvalidBlock, err)
	}
	id, err := ulid.ParseStrict(h.GetUlid())
	if err != nil {
		return nil, fmt.Errorf("%w: ULID %q: %v", ErrInvalidBlock, trim(h.GetUlid()), err)
	}
	out.id = id
	if n := len(h.GetMetaJson()); n == 0 || n > maxMetaBytes {
		return nil, fmt.Errorf("%w: block %s: meta.json of %d bytes (want 1 to %d)", ErrInvalidBlock, id, n, maxMetaBytes)
	}
	if out.meta, err = storage.ReadMeta(h.GetMetaJson()); err != nil {
		return nil, fmt.Errorf("%w: block %s: %v", ErrInvalidBlock, id, err)
	}
	if out.meta.ULID != id {
		return nil, fmt.Errorf("%w: block %s: meta.json names block %s", ErrInvalidBlock, id, out.meta.ULID)
	}
	// The tenant label is what the bucket reader and the compactor trust a block's tenant by: a
	// block without it, or with another tenant's, would be served or merged as someone else's.
	switch t, ok := out.meta.Thanos.Labels[storage.TenantLabel]; {
	case !ok:
		return nil, fmt.Errorf("%w: block %s of tenant %q: meta.json has no %s label", ErrInvalidBlock, id, out.tenant, storage.TenantLabel)
	case t != out.tenant:
		return nil, fmt.Errorf("%w: block %s of tenant %q: meta.json labels it tenant %q", ErrInvalidBlock, id, out.tenant, trim(t))
	}
	out.metaJSON = h.GetMetaJson()
	files := h.GetFiles()
	if len(files) == 0 || len(files) > maxFilesInBlock {
		return nil, fmt.Errorf("%w: block %s: %d files (want 1 to %d)", ErrInvalidBlock, id, len(files), maxFilesInBlock)
	}
	seen := make(map[string]bool, len(files))
	for _, f := range files {
		rel, size := f.GetRelPath(), f.GetSizeBytes()
		if err := storage.ValidateObjectKey(rel); err != nil {
			return nil, fmt.Errorf("%w: block %s: file: %v", ErrInvalidBlock, id, err)
		}
		switch {
		case rel == storage.MetaFilename:
			return nil, fmt.Errorf("%w: block %s: meta.json is in the header, not in the files", ErrInvalidBlock, id)
		case rel == storage.DeletionMarkFilename:
			// A mark is the bucket's own state, never a block's content: a block received with one
			// would arrive marked and be swept from the receiver.
			return nil, fmt.Errorf("%w: block %s: %s is not a block file", ErrInvalidBlock, id, storage.DeletionMarkFilename)
		case strings.HasPrefix(rel, ".") || strings.Contains(rel, "/."):
			return nil, fmt.Errorf("%w: block %s: hidden file or directory in %q", ErrInvalidBlock, id, trim(rel))
		case seen[rel]:
			return nil, fmt.Errorf("%w: block %s: file %q listed twice", ErrInvalidBlock, id, trim(rel))
		case size < 0:
			return nil, fmt.Errorf("%w: block %s: file %q of %d bytes", ErrInvalidBlock, id, trim(rel), size)
		case size > maxBytes-out.total:
			return nil, fmt.Errorf("%w: block %s of tenant %q: its files add up to more than %d bytes (-blocks-storage.max-block-upload-bytes)",
				ErrTooLarge, id, out.tenant, maxBytes)
		}
		seen[rel] = true
		out.total += size
		out.files = append(out.files, storage.File{RelPath: rel, SizeBytes: size})
	}
	for rel := range seen {
		for d := rel; strings.Contains(d, "/"); {
			d = d[:strings.LastIndexByte(d, '/')]
			if seen[d] {
				return nil, fmt.Errorf("%w: block %s: %q is a file and a directory of %q", ErrInvalidBlock, id, trim(d), trim(rel))
			}
		}
	}
	for _, f := range out.files {
		if !blockFileRE.MatchString(f.RelPath) {
			// Only what verifyBlock checks may enter the bucket: anything else would be stored,
			// served and moved unread.
			return nil, fmt.Errorf("%w: block %s: %q is not a block file (index, chunks/NNNNNN or tombstones)", ErrInvalidBlock, id, trim(f.RelPath))
		}
	}
	if !seen[storage.IndexFilename] {
		return nil, fmt.Errorf("%w: block %s: no index file", ErrInvalidBlock, id)
	}
	if listed := out.meta.Thanos.Files; len(listed) > 0 {
		n := 0
		for _, f := range listed {
			if f.RelPath == storage.MetaFilename {
				continue
			}
			n++
			i := slices.IndexFunc(out.files, func(g storage.File) bool { return g.RelPath == f.RelPath })
			if i < 0 || out.files[i].SizeBytes != f.SizeBytes {
				return nil, fmt.Errorf("%w: block %s: meta.json lists file %q of %d bytes, the header does not", ErrInvalidBlock, id, trim(f.RelPath), f.SizeBytes)
			}
		}
		if n != len(out.files) {
			return nil, fmt.Errorf("%w: block %s: the header lists %d files, meta.json %d", ErrInvalidBlock, id, len(out.files), n)
		}
	}
	return out, nil
}

// uploadMeta is h's meta with the files the header listed, for storage.UploadBlock (which uploads
// the files its meta lists, then meta.json).
func (h *header) uploadMeta() storage.Meta {
	m := h.meta
	m.Thanos.Files = append(slices.Clone(h.files), storage.File{RelPath: storage.MetaFilename})
	return m
}

// trim bounds a string from a peer for an error message.
func trim(s string) string {
	if len(s) > 200 {
		return s[:200] + "…"
	}
	return s
}

// blockWriter writes the pieces of one block into dir, holding them to the header: pieces of the
// files in the header's order, each at the offset where the previous one ended, none past its
// file's size, none empty or larger than PieceSize. Not safe for concurrent use.
type blockWriter struct {
	dir      string
	h        *header
	fi       int   // the file being written (len(h.files): all done)
	off      int64 // bytes of files[fi] written
	f        *os.File
	received int64
}

func newBlockWriter(dir string, h *header) *blockWriter { return &blockWriter{dir: dir, h: h} }

// open creates files[fi] (its directory too) if it is not open.
func (w *blockWriter) open() error {
	if w.f != nil {
		return nil
	}
	p := filepath.Join(w.dir, filepath.FromSlash(w.h.files[w.fi].RelPath))
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	w.f = f
	return nil
}

// next closes files[fi], which must be complete, and moves to the next file.
func (w *blockWriter) next() error {
	if err := w.open(); err != nil { // an empty file still exists
		return err
	}
	err := w.f.Close()
	w.f = nil
	w.fi++
	w.off = 0
	return err
}

// piece writes p. An error wrapping ErrInvalidBlock means the sender broke the order or a size;
// any other is local I/O.
func (w *blockWriter) piece(p *blockspb.FilePiece) error {
	if p == nil {
		return fmt.Errorf("%w: block %s: a second header", ErrInvalidBlock, w.h.id)
	}
	rel, data := p.GetRelPath(), p.GetData()
	if len(data) == 0 || len(data) > PieceSize {
		return fmt.Errorf("%w: block %s: piece of %q with %d bytes (want 1 to %d)", ErrInvalidBlock, w.h.id, trim(rel), len(data), PieceSize)
	}
	// Files whose bytes all came (or that are empty) end when a piece of another file comes.
	for w.fi < len(w.h.files) && w.off == w.h.files[w.fi].SizeBytes && rel != w.h.files[w.fi].RelPath {
		if err := w.next(); err != nil {
			return err
		}
	}
	if w.fi == len(w.h.files) {
		return fmt.Errorf("%w: block %s: piece of %q after every listed file is complete", ErrInvalidBlock, w.h.id, trim(rel))
	}
	cur := w.h.files[w.fi]
	switch {
	case rel != cur.RelPath:
		return fmt.Errorf("%w: block %s: piece of %q while %q has %d of its %d bytes (files come in the header's order)",
			ErrInvalidBlock, w.h.id, trim(rel), cur.RelPath, w.off, cur.SizeBytes)
	case p.GetOffset() != w.off:
		return fmt.Errorf("%w: block %s: piece of %q at offset %d, want %d (pieces come in order, without gaps)",
			ErrInvalidBlock, w.h.id, cur.RelPath, p.GetOffset(), w.off)
	case int64(len(data)) > cur.SizeBytes-w.off:
		return fmt.Errorf("%w: block %s: piece of %q ends at %d, past its size of %d bytes",
			ErrInvalidBlock, w.h.id, cur.RelPath, w.off+int64(len(data)), cur.SizeBytes)
	}
	if err := w.open(); err != nil {
		return err
	}
	if _, err := w.f.Write(data); err != nil {
		return fmt.Errorf("write %s: %w", cur.RelPath, err)
	}
	w.off += int64(len(data))
	w.received += int64(len(data))
	return nil
}

// finish checks that every file came whole, closes them and writes meta.json.
func (w *blockWriter) finish() error {
	for w.fi < len(w.h.files) {
		cur := w.h.files[w.fi]
		if w.off != cur.SizeBytes {
			return fmt.Errorf("%w: block %s: the stream ended with %q at %d of its %d bytes",
				ErrInvalidBlock, w.h.id, cur.RelPath, w.off, cur.SizeBytes)
		}
		if err := w.next(); err != nil {
			return err
		}
	}
	return os.WriteFile(filepath.Join(w.dir, storage.MetaFilename), w.h.metaJSON, 0o644)
}

// close releases the open file, if any (after an error).
func (w *blockWriter) close() {
	if w.f != nil {
		w.f.Close()
		w.f = nil
	}
}

// verifyBlock opens the block in dir as Prometheus does (tsdb.OpenBlock: meta.json, the index's
// table of contents, the chunk segments) and reads it whole: every series of the index, in label
// order, and every chunk of each, decoded sample by sample (as many samples as its header says,
// timestamps strictly increasing from the chunk's MinTime to its MaxTime, chunks of a series in
// time order, all inside the block's range). When meta.json counts series, chunks and samples the
// counts must agree. A malformed block is an error wrapping ErrInvalidBlock, never a panic.
func verifyBlock(ctx context.Context, dir string, meta storage.Meta) (err error) {
	defer func() {
		// The index and chunk readers trust their input; a hostile block must not take the process down.
		if p := recover(); p != nil {
			err = fmt.Errorf("%w: block %s: reading it panicked: %v", ErrInvalidBlock, meta.ULID, p)
		}
	}()
	b, err := tsdb.OpenBlock(nil, dir, nil, nil)
	if err != nil {
		return fmt.Errorf("%w: block %s does not open: %v", ErrInvalidBlock, meta.ULID, err)
	}
	defer b.Close()
	// A tombstone hides samples from readers of this block only: a merge or a split would drop it
	// (or resurrect the samples) and replicas would disagree. Blocks here never carry any.
	tr, err := b.Tombstones()
	if err != nil {
		return fmt.Errorf("%w: block %s: tombstones: %v", ErrInvalidBlock, meta.ULID, err)
	}
	n := tr.Total()
	tr.Close()
	if n > 0 {
		return fmt.Errorf("%w: block %s: %d tombstones (blocks moved between members carry none)", ErrInvalidBlock, meta.ULID, n)
	}
	ir, err := b.Index()
	if err != nil {
		return fmt.Errorf("%w: block %s: index: %v", ErrInvalidBlock, meta.ULID, err)
	}
	defer ir.Close()
	cr, err := b.Chunks()
	if err != nil {
		return fmt.Errorf("%w: block %s: chunks: %v", ErrInvalidBlock, meta.ULID, err)
	}
	defer cr.Close()
	k, v := index.AllPostingsKey()
	p, err := ir.Postings(ctx, k, v)
	if err != nil {
		return fmt.Errorf("%w: block %s: postings: %v", ErrInvalidBlock, meta.ULID, err)
	}
	var (
		builder               labels.ScratchBuilder
		chks                  []chunks.Meta
		prev                  labels.Labels
		it                    chunkenc.Iterator
		nSeries, nChk, nSmpls uint64
	)
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: block %s: %s", ErrInvalidBlock, meta.ULID, fmt.Sprintf(format, args...))
	}
	for p.Next() {
		if nSeries%1024 == 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		if err := ir.Series(p.At(), &builder, &chks); err != nil {
			return bad("series %d: %v", nSeries, err)
		}
		lset := builder.Labels()
		if nSeries > 0 && labels.Compare(prev, lset) >= 0 {
			return bad("series %d %s does not sort after %s", nSeries, trim(lset.String()), trim(prev.String()))
		}
		prev = lset
		nSeries++
		if len(chks) == 0 {
			return bad("series %s has no chunks", trim(lset.String()))
		}
		for j, m := range chks {
			if m.MinTime > m.MaxTime || m.MinTime < meta.MinTime || m.MaxTime >= meta.MaxTime {
				return bad("series %s: chunk %d [%d, %d] outside the block's range [%d, %d)", trim(lset.String()), j, m.MinTime, m.MaxTime, meta.MinTime, meta.MaxTime)
			}
			if j > 0 && m.MinTime <= chks[j-1].MaxTime {
				return bad("series %s: chunk %d [%d, %d] overlaps chunk %d ending at %d", trim(lset.String()), j, m.MinTime, m.MaxTime, j-1, chks[j-1].MaxTime)
			}
			c, iterable, err := cr.ChunkOrIterable(m)
			if err != nil {
				return bad("series %s: chunk %d: %v", trim(lset.String()), j, err)
			}
			if iterable != nil || c == nil {
				return bad("series %s: chunk %d is not a stored chunk", trim(lset.String()), j)
			}
			want := c.NumSamples()
			it = c.Iterator(it)
			n := 0
			var prevT int64
			for vt := it.Next(); vt != chunkenc.ValNone; vt = it.Next() {
				t := it.AtT()
				switch {
				case n == 0 && t != m.MinTime:
					return bad("series %s: chunk %d: first sample at %d, the index says %d", trim(lset.String()), j, t, m.MinTime)
				case n > 0 && t <= prevT:
					return bad("series %s: chunk %d: timestamps not increasing at sample %d", trim(lset.String()), j, n)
				}
				prevT = t
				n++
				if n > want {
					break
				}
			}
			if err := it.Err(); err != nil {
				return bad("series %s: chunk %d: %v", trim(lset.String()), j, err)
			}
			if n != want || n == 0 {
				return bad("series %s: chunk %d: %d samples decode, its header says %d", trim(lset.String()), j, n, want)
			}
			if prevT != m.MaxTime {
				return bad("series %s: chunk %d: last sample at %d, the index says %d", trim(lset.String()), j, prevT, m.MaxTime)
			}
			nChk++
			nSmpls += uint64(n)
		}
	}
	if err := p.Err(); err != nil {
		return bad("postings: %v", err)
	}
	if s := meta.Stats; s.NumSeries != 0 || s.NumChunks != 0 || s.NumSamples != 0 {
		if s.NumSeries != nSeries || s.NumChunks != nChk || s.NumSamples != nSmpls {
			return bad("meta.json counts %d series, %d chunks, %d samples; the block holds %d, %d, %d",
				s.NumSeries, s.NumChunks, s.NumSamples, nSeries, nChk, nSmpls)
		}
	}
	return nil
}
