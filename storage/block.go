package storage

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/oklog/ulid/v2"
	"github.com/prometheus/prometheus/model/labels"
	promstorage "github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"github.com/prometheus/prometheus/tsdb/chunks"
	"github.com/prometheus/prometheus/tsdb/index"

	"github.com/raftingest/raftingest/histchunk"
)

// Names inside a block directory, as Prometheus and Thanos write them.
const (
	MetaFilename   = "meta.json"
	IndexFilename  = "index"
	ChunksDirname  = "chunks"
	TenantLabel    = "__org_id__" // Thanos external label naming the block's tenant (Cortex's name).
	IngesterLabel  = "__ingester_id__"
	SourceIngester = "receive" // Thanos source of blocks cut from ingested samples (Mimir ingesters use it too).
)

// ErrEmptyBlock is returned by WriteBlock when no sample falls in the block's range.
var ErrEmptyBlock = errors.New("storage: no samples in the block range")

// Meta is a block's meta.json: Prometheus' BlockMeta plus the Thanos section that Thanos and
// Mimir tools (thanos tools bucket, mimirtool, the compactors) require.
type Meta struct {
	tsdb.BlockMeta
	Thanos ThanosMeta `json:"thanos"`
}

// ThanosMeta is the "thanos" section of meta.json (thanos-io/thanos pkg/block/metadata).
type ThanosMeta struct {
	Labels       map[string]string `json:"labels"`
	Downsample   ThanosDownsample  `json:"downsample"`
	Source       string            `json:"source"`
	SegmentFiles []string          `json:"segment_files,omitempty"`
	Files        []File            `json:"files,omitempty"`
}

// ThanosDownsample is the downsampling resolution of a block; 0 for raw data.
type ThanosDownsample struct {
	Resolution int64 `json:"resolution"`
}

// File is one file of a block, relative to the block directory, with its size.
type File struct {
	RelPath   string `json:"rel_path"`
	SizeBytes int64  `json:"size_bytes,omitempty"`
}

// Series is one series to write into a block: its labels and its chunks, in time order,
// non-overlapping. Chunks must be XOR chunks (Chunk set).
type Series struct {
	Labels labels.Labels
	Chunks []chunks.Meta
}

// ClipChunks returns the parts of chks (time-ordered XOR or native histogram chunks) with samples in [mint, maxt)
// (int64 ms, maxt exclusive). A chunk entirely inside is returned as is (its bytes shared); a
// chunk straddling a bound is re-encoded with only its samples inside; chunks with nothing inside
// are left out.
func ClipChunks(chks []chunks.Meta, mint, maxt int64) ([]chunks.Meta, error) {
	var out []chunks.Meta
	for _, c := range chks {
		if c.MaxTime < mint || c.MinTime >= maxt {
			continue
		}
		if c.MinTime >= mint && c.MaxTime < maxt {
			out = append(out, c)
			continue
		}
		if e := c.Chunk.Encoding(); e == chunkenc.EncHistogram || e == chunkenc.EncFloatHistogram {
			hc, first, last, err := histchunk.Trim(c.Chunk, mint, maxt-1)
			if err != nil {
				return nil, fmt.Errorf("storage: chunk [%d, %d]: %w", c.MinTime, c.MaxTime, err)
			}
			if hc != nil {
				out = append(out, chunks.Meta{Chunk: hc, MinTime: first, MaxTime: last})
			}
			continue
		}
		nc := chunkenc.NewXORChunk()
		app, err := nc.Appender()
		if err != nil {
			return nil, fmt.Errorf("storage: new XOR appender: %w", err)
		}
		first, last, n := int64(0), int64(0), 0
		it := c.Chunk.Iterator(nil)
		for vt := it.Next(); vt != chunkenc.ValNone; vt = it.Next() {
			if vt != chunkenc.ValFloat {
				return nil, fmt.Errorf("storage: chunk [%d, %d]: sample of type %s, only floats are supported", c.MinTime, c.MaxTime, vt)
			}
			t, v := it.At()
			if t < mint {
				continue
			}
			if t >= maxt {
				break
			}
			if n == 0 {
				first = t
			}
			app.Append(t, v)
			last = t
			n++
		}
		if err := it.Err(); err != nil {
			return nil, fmt.Errorf("storage: decoding chunk [%d, %d]: %w", c.MinTime, c.MaxTime, err)
		}
		if n > 0 {
			nc.Compact()
			out = append(out, chunks.Meta{Chunk: nc, MinTime: first, MaxTime: last})
		}
	}
	return out, nil
}

// BlockOptions describe the block WriteBlock writes.
type BlockOptions struct {
	// MinTime and MaxTime bound the samples written: [MinTime, MaxTime), int64 ms. Samples
	// outside are left out (chunks straddling a bound are re-encoded).
	MinTime, MaxTime int64
	// Labels are the Thanos external labels of the block (meta.json thanos.labels).
	Labels map[string]string
}

// WriteBlock writes series as one Prometheus TSDB block (index format v2, chunks/000001...)
// in a new directory parentDir/<ULID> and returns its meta. The block's minTime/maxTime are its
// first sample's timestamp and its last one's plus one, as Prometheus sets them. series need
// not be sorted; each label set must appear once. Nothing is left behind on error. It returns
// ErrEmptyBlock when no sample falls in range.
func WriteBlock(ctx context.Context, parentDir string, series []Series, opts BlockOptions) (meta Meta, err error) {
	if opts.MinTime >= opts.MaxTime {
		return meta, fmt.Errorf("storage: block range [%d, %d) is empty", opts.MinTime, opts.MaxTime)
	}
	type entry struct {
		lset labels.Labels
		chks []chunks.Meta
	}
	entries := make([]entry, 0, len(series))
	mint, maxt := int64(math.MaxInt64), int64(math.MinInt64)
	var stats tsdb.BlockStats
	for _, s := range series {
		cl, err := ClipChunks(s.Chunks, opts.MinTime, opts.MaxTime)
		if err != nil {
			return meta, fmt.Errorf("series %s: %w", s.Labels, err)
		}
		if len(cl) == 0 {
			continue
		}
		for i, c := range cl {
			if i > 0 && c.MinTime <= cl[i-1].MaxTime {
				return meta, fmt.Errorf("storage: series %s: chunk [%d, %d] overlaps the previous one ending at %d", s.Labels, c.MinTime, c.MaxTime, cl[i-1].MaxTime)
			}
			stats.NumSamples += uint64(c.Chunk.NumSamples())
		}
		mint, maxt = min(mint, cl[0].MinTime), max(maxt, cl[len(cl)-1].MaxTime)
		stats.NumChunks += uint64(len(cl))
		entries = append(entries, entry{s.Labels, cl})
	}
	if len(entries) == 0 {
		return meta, ErrEmptyBlock
	}
	slices.SortFunc(entries, func(a, b entry) int { return labels.Compare(a.lset, b.lset) })
	for i := 1; i < len(entries); i++ {
		if labels.Equal(entries[i-1].lset, entries[i].lset) {
			return meta, fmt.Errorf("storage: series %s given twice", entries[i].lset)
		}
	}
	stats.NumSeries = uint64(len(entries))

	id := ulid.MustNew(ulid.Timestamp(time.Now()), rand.Reader)
	dir := filepath.Join(parentDir, id.String())
	tmp := dir + ".tmp"
	defer func() {
		if err != nil {
			os.RemoveAll(tmp)
		}
	}()
	if err := os.MkdirAll(tmp, 0o755); err != nil {
		return meta, fmt.Errorf("storage: creating block dir: %w", err)
	}

	cw, err := chunks.NewWriter(filepath.Join(tmp, ChunksDirname))
	if err != nil {
		return meta, fmt.Errorf("storage: chunks writer in %s: %w", tmp, err)
	}
	for i := range entries {
		if err := cw.WriteChunks(entries[i].chks...); err != nil {
			cw.Close()
			return meta, fmt.Errorf("storage: writing chunks of %s: %w", entries[i].lset, err)
		}
	}
	if err := cw.Close(); err != nil {
		return meta, fmt.Errorf("storage: closing chunks writer: %w", err)
	}

	iw, err := index.NewWriter(ctx, filepath.Join(tmp, IndexFilename))
	if err != nil {
		return meta, fmt.Errorf("storage: index writer in %s: %w", tmp, err)
	}
	symbols := map[string]struct{}{}
	for _, e := range entries {
		e.lset.Range(func(l labels.Label) {
			symbols[l.Name] = struct{}{}
			symbols[l.Value] = struct{}{}
		})
	}
	sorted := make([]string, 0, len(symbols))
	for s := range symbols {
		sorted = append(sorted, s)
	}
	slices.Sort(sorted)
	for _, s := range sorted {
		if err := iw.AddSymbol(s); err != nil {
			iw.Close()
			return meta, fmt.Errorf("storage: index symbol: %w", err)
		}
	}
	for i, e := range entries {
		if err := iw.AddSeries(promstorage.SeriesRef(i+1), e.lset, e.chks...); err != nil {
			iw.Close()
			return meta, fmt.Errorf("storage: index series %s: %w", e.lset, err)
		}
	}
	if err := iw.Close(); err != nil {
		return meta, fmt.Errorf("storage: closing index writer: %w", err)
	}

	meta = Meta{
		BlockMeta: tsdb.BlockMeta{
			ULID: id, MinTime: mint, MaxTime: maxt + 1, Stats: stats, Version: 1,
			Compaction: tsdb.BlockMetaCompaction{Level: 1, Sources: []ulid.ULID{id}},
		},
		Thanos: ThanosMeta{Labels: opts.Labels, Downsample: ThanosDownsample{Resolution: 0}, Source: SourceIngester},
	}
	if meta.Thanos.Labels == nil {
		meta.Thanos.Labels = map[string]string{}
	}
	segs, err := os.ReadDir(filepath.Join(tmp, ChunksDirname))
	if err != nil {
		return meta, fmt.Errorf("storage: listing chunk segments: %w", err)
	}
	for _, s := range segs {
		fi, err := s.Info()
		if err != nil {
			return meta, err
		}
		meta.Thanos.SegmentFiles = append(meta.Thanos.SegmentFiles, s.Name())
		meta.Thanos.Files = append(meta.Thanos.Files, File{RelPath: ChunksDirname + "/" + s.Name(), SizeBytes: fi.Size()})
	}
	fi, err := os.Stat(filepath.Join(tmp, IndexFilename))
	if err != nil {
		return meta, err
	}
	meta.Thanos.Files = append(meta.Thanos.Files, File{RelPath: IndexFilename, SizeBytes: fi.Size()}, File{RelPath: MetaFilename})
	if err := writeMeta(tmp, meta); err != nil {
		return meta, err
	}
	if err := os.Rename(tmp, dir); err != nil {
		return meta, fmt.Errorf("storage: renaming block dir: %w", err)
	}
	return meta, nil
}

func writeMeta(dir string, m Meta) error {
	b, err := json.MarshalIndent(m, "", "\t")
	if err != nil {
		return fmt.Errorf("storage: encoding meta.json: %w", err)
	}
	f, err := os.Create(filepath.Join(dir, MetaFilename))
	if err != nil {
		return fmt.Errorf("storage: writing meta.json: %w", err)
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return fmt.Errorf("storage: writing meta.json: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("storage: syncing meta.json: %w", err)
	}
	return f.Close()
}

// ReadMeta decodes a meta.json and checks what readers rely on.
func ReadMeta(b []byte) (Meta, error) {
	var m Meta
	if err := json.Unmarshal(b, &m); err != nil {
		return m, fmt.Errorf("storage: decoding meta.json: %w", err)
	}
	if m.Version != 1 {
		return m, fmt.Errorf("storage: meta.json of %s: version %d, want 1", m.ULID, m.Version)
	}
	return m, nil
}

// BlockSize returns the bytes of a block's files as its meta lists them.
func (m Meta) BlockSize() int64 {
	var n int64
	for _, f := range m.Thanos.Files {
		n += f.SizeBytes
	}
	return n
}
