package storage

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/oklog/ulid/v2"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/tsdb"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"github.com/prometheus/prometheus/tsdb/chunks"
	"github.com/prometheus/prometheus/tsdb/index"
)

// SourceCompactor is the Thanos source of blocks the in-cluster compactor writes.
const SourceCompactor = "compactor"

// CompactionGroupHint prefixes the compaction hint (meta.json compaction.hints) that names the
// compaction a block came out of. A compaction with node-local buckets writes its result as one
// part per member (each holding the series that member replicates); the parts share this hint, so
// the compactor's planner reads them as one block, and tells them from another compaction's output
// over the same sources (a re-run after a crash) by the hint's unique id.
const CompactionGroupHint = "raftingest-compaction-group="

// ErrUnreadableBlock wraps every SplitBlock error that comes from reading the source block (it does
// not open, or an index entry or a chunk does not read or fails its CRC), as opposed to writing the
// parts: the block is corrupt where it lies, and splitting it again will not help.
var ErrUnreadableBlock = errors.New("storage: the block does not read")

// leaveGroupSep separates a compaction group from the leave that moved some of its series.
const leaveGroupSep = "/leave-"

// LeaveGroup is the compaction group of the parts one leave (move) splits a block of group orig
// into: orig with the move's id, "<orig>/leave-<move>". A leave's parts must not keep orig: a
// group alone in its window is never merged again (compact's planner), so copies a leave puts in
// the wrong place — duplicates of a retried move, a series missing a member after two leaves at
// once — would stay for ever. With a group of their own the window holds two groups, and the next
// run merges them once into one group placed on each series' replication set, which then settles.
// An earlier leave's suffix is dropped first, so the name does not grow with each leave.
func LeaveGroup(orig string, move ulid.ULID) string {
	base, _, _ := strings.Cut(orig, leaveGroupSep)
	return base + leaveGroupSep + move.String()
}

// SplitOptions describe the parts SplitBlock writes.
type SplitOptions struct {
	// Tenant is the blocks' tenant: their Thanos label __org_id__.
	Tenant string
	// Place returns the parts a series goes to (for node-local buckets, the members of its
	// replication set); a series may go to several parts, but not to none and not twice to one:
	// either is an error naming the series (a series is never dropped — the sources are deleted
	// once the parts are stored). It is called once per series, in the block's index order.
	Place func(lset labels.Labels) []string
	// Group is the compaction's unique id, written as the parts' CompactionGroupHint.
	Group string
	// Logger may be nil.
	Logger *slog.Logger
}

// SplitBlock reads the block in dir (as tsdb's compactor wrote it) and writes, for every part name
// Place returns for any of its series, one block in parentDir/<part>/<ULID> holding exactly the
// series placed there, with every chunk as it is in dir. Each part's meta.json is Thanos-style, as
// WriteBlock's (tenant label, files), with the compaction of the block in dir: its level, sources
// and parents, the hint naming opts.Group, and source SourceCompactor, so that the parts are
// recognised as one compacted block. It returns each part's meta by part name; on error nothing it
// wrote is left behind.
//
// Memory: the chunks are not copied (they point into the block's memory-mapped files while it is
// open); what is held is one label set and one chunk-meta slice per series of the block.
func SplitBlock(ctx context.Context, dir, parentDir string, opts SplitOptions) (_ map[string]Meta, err error) {
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	b, err := tsdb.OpenBlock(logger, dir, chunkenc.NewPool(), nil)
	if err != nil {
		return nil, fmt.Errorf("storage: split: opening block %s: %w: %w", dir, ErrUnreadableBlock, err)
	}
	defer b.Close()
	src := b.Meta()
	ir, err := b.Index()
	if err != nil {
		return nil, fmt.Errorf("storage: split: index of %s: %w: %w", dir, ErrUnreadableBlock, err)
	}
	defer ir.Close()
	cr, err := b.Chunks()
	if err != nil {
		return nil, fmt.Errorf("storage: split: chunks of %s: %w: %w", dir, ErrUnreadableBlock, err)
	}
	defer cr.Close()

	parts := map[string][]Series{}
	allName, allValue := index.AllPostingsKey()
	p, err := ir.Postings(ctx, allName, allValue)
	if err != nil {
		return nil, fmt.Errorf("storage: split: postings of %s: %w: %w", dir, ErrUnreadableBlock, err)
	}
	var builder labels.ScratchBuilder
	for p.Next() {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		var metas []chunks.Meta
		if err := ir.Series(p.At(), &builder, &metas); err != nil {
			return nil, fmt.Errorf("storage: split: series %d of %s: %w: %w", p.At(), dir, ErrUnreadableBlock, err)
		}
		lset := builder.Labels()
		for i := range metas {
			c, it, err := cr.ChunkOrIterable(metas[i])
			if err != nil {
				return nil, fmt.Errorf("storage: split: chunk of %s in %s: %w: %w", lset, dir, ErrUnreadableBlock, err)
			}
			if it != nil || c == nil {
				return nil, fmt.Errorf("storage: split: %s in %s has a chunk that is not stored whole", lset, dir)
			}
			metas[i].Chunk = c
		}
		placed := opts.Place(lset)
		if len(placed) == 0 {
			return nil, fmt.Errorf("storage: split: series %s of %s is placed on no part (refusing to drop it: "+
				"its placement found no complete set of members for it)", lset, dir)
		}
		for i, part := range placed {
			for _, prev := range placed[:i] {
				if prev == part {
					return nil, fmt.Errorf("storage: split: series %s of %s is placed twice on part %q", lset, dir, part)
				}
			}
			parts[part] = append(parts[part], Series{Labels: lset, Chunks: metas})
		}
	}
	if err := p.Err(); err != nil {
		return nil, fmt.Errorf("storage: split: postings of %s: %w: %w", dir, ErrUnreadableBlock, err)
	}

	out := make(map[string]Meta, len(parts))
	defer func() {
		if err != nil {
			for part := range parts {
				os.RemoveAll(filepath.Join(parentDir, part))
			}
		}
	}()
	for part, series := range parts {
		pdir := filepath.Join(parentDir, part)
		if err := os.MkdirAll(pdir, 0o755); err != nil {
			return nil, fmt.Errorf("storage: split: %w", err)
		}
		m, err := WriteBlock(ctx, pdir, series, BlockOptions{MinTime: src.MinTime, MaxTime: src.MaxTime,
			Labels: map[string]string{TenantLabel: opts.Tenant}})
		if errors.Is(err, ErrEmptyBlock) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("storage: split: part %q: %w", part, err)
		}
		m.Compaction = tsdb.BlockMetaCompaction{
			Level:   src.Compaction.Level,
			Sources: src.Compaction.Sources,
			Parents: src.Compaction.Parents,
			Hints:   []string{CompactionGroupHint + opts.Group},
		}
		m.Thanos.Source = SourceCompactor
		if err := writeMeta(filepath.Join(pdir, m.ULID.String()), m); err != nil {
			return nil, fmt.Errorf("storage: split: part %q: %w", part, err)
		}
		out[part] = m
	}
	return out, nil
}

// BlockSeries calls fn with the labels of every series of the block in dir, in index order,
// reading only its index. An error reading the block wraps ErrUnreadableBlock.
func BlockSeries(ctx context.Context, dir string, fn func(labels.Labels)) error {
	ir, err := index.NewFileReader(filepath.Join(dir, "index"), index.DecodePostingsRaw)
	if err != nil {
		return fmt.Errorf("storage: index of %s: %w: %w", dir, ErrUnreadableBlock, err)
	}
	defer ir.Close()
	allName, allValue := index.AllPostingsKey()
	p, err := ir.Postings(ctx, allName, allValue)
	if err != nil {
		return fmt.Errorf("storage: postings of %s: %w: %w", dir, ErrUnreadableBlock, err)
	}
	var (
		builder labels.ScratchBuilder
		metas   []chunks.Meta
	)
	for p.Next() {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := ir.Series(p.At(), &builder, &metas); err != nil {
			return fmt.Errorf("storage: series %d of %s: %w: %w", p.At(), dir, ErrUnreadableBlock, err)
		}
		fn(builder.Labels())
	}
	if err := p.Err(); err != nil {
		return fmt.Errorf("storage: postings of %s: %w: %w", dir, ErrUnreadableBlock, err)
	}
	return nil
}

// CompactionGroup returns the compaction group a block belongs to: the id its CompactionGroupHint
// names, or "" for a block written by a flush or by another tool (a group of its own).
func CompactionGroup(m *tsdb.BlockMeta) string {
	for _, h := range m.Compaction.Hints {
		if g, ok := strings.CutPrefix(h, CompactionGroupHint); ok && g != "" {
			return g
		}
	}
	return ""
}
