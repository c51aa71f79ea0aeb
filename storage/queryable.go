package storage

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"

	"github.com/oklog/ulid/v2"
	"github.com/prometheus/prometheus/model/labels"
	promstorage "github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"github.com/prometheus/prometheus/tsdb/chunks"
	"github.com/prometheus/prometheus/util/annotations"
	"github.com/thanos-io/objstore"

	"github.com/raftingest/raftingest/tenant"
)

// ErrNoTenant is returned by a bucket querier whose context carries no tenant (see tenant.With).
var ErrNoTenant = tenant.ErrNoTenant

// BucketQueryable is a Prometheus Queryable over the blocks in a bucket. The tenant comes from
// the context of each call (tenant.With). The same series may be in several blocks — each replica
// flushes its own copy, and a range may be flushed more than once — and the querier merges them
// into one series per label set with each timestamp once (storage.ChainedSeriesMerge).
//
// Blocks are listed on every Select (a block uploaded a moment ago is seen at once) and opened
// lazily: in place when the bucket is a local directory, else downloaded once into the cache
// directory (blocks are immutable). Safe for concurrent use; Close releases the open blocks.
type BucketQueryable struct {
	bkt      objstore.BucketReader
	localDir string // bucket root when the backend is a local directory: blocks open in place
	cacheDir string
	logger   *slog.Logger
	pool     chunkenc.Pool

	mu     sync.Mutex
	blocks map[string]map[ulid.ULID]*tsdb.Block // tenant → open blocks
	closed bool
}

// NewBucketQueryable reads bkt. localDir is the bucket's root directory when it is a local
// filesystem bucket (blocks are opened there, not copied), else "". cacheDir receives
// downloaded blocks when localDir is "".
func NewBucketQueryable(bkt objstore.BucketReader, localDir, cacheDir string, logger *slog.Logger) *BucketQueryable {
	if logger == nil {
		logger = slog.Default()
	}
	return &BucketQueryable{bkt: bkt, localDir: localDir, cacheDir: cacheDir, logger: logger,
		pool: chunkenc.NewPool(), blocks: map[string]map[ulid.ULID]*tsdb.Block{}}
}

// Querier returns a querier over [mint, maxt] (int64 ms, inclusive) of the tenant named by each
// call's context.
func (q *BucketQueryable) Querier(mint, maxt int64) (promstorage.Querier, error) {
	return &bucketQuerier{q: q, mint: mint, maxt: maxt}, nil
}

// CountSelect tells what a Select of ms over [mint, maxt] (int64 ms, inclusive) of the tenant named
// by ctx would read from the bucket, without reading it: for every block overlapping the range, for
// every series of it matching ms with chunks in the range, it calls count with the series' labels,
// the number of those chunks, and — when withBytes — their size in bytes. A series in several
// blocks (each replica flushes its own copy) is reported once per block, as each is read. It stops
// at count's first error and returns it.
//
// It reads the blocks' indexes (and the chunks' headers when withBytes, in place for a local
// bucket) and retains nothing, so a caller can enforce fetch limits before any sample is loaded
// (the querier's -querier.max-fetched-* limits). lset is valid only during the call to count.
func (q *BucketQueryable) CountSelect(ctx context.Context, mint, maxt int64, withBytes bool, ms []*labels.Matcher,
	count func(lset labels.Labels, chunks, bytes int) error) error {
	id, err := tenant.FromContext(ctx)
	if err != nil {
		return err
	}
	bs, err := q.sync(ctx, id)
	if err != nil {
		return err
	}
	for _, b := range bs {
		if !b.OverlapsClosedInterval(mint, maxt) {
			continue
		}
		if err := countBlock(ctx, b, mint, maxt, withBytes, ms, count); err != nil {
			return err
		}
	}
	return nil
}

func countBlock(ctx context.Context, b *tsdb.Block, mint, maxt int64, withBytes bool, ms []*labels.Matcher,
	count func(labels.Labels, int, int) error) error {
	ir, err := b.Index()
	if err != nil {
		return fmt.Errorf("storage: index of block %s: %w", b.Meta().ULID, err)
	}
	defer ir.Close()
	var cr tsdb.ChunkReader
	if withBytes {
		if cr, err = b.Chunks(); err != nil {
			return fmt.Errorf("storage: chunks of block %s: %w", b.Meta().ULID, err)
		}
		defer cr.Close()
	}
	p, err := tsdb.PostingsForMatchers(ctx, ir, ms...)
	if err != nil {
		return fmt.Errorf("storage: postings of block %s: %w", b.Meta().ULID, err)
	}
	var (
		sb   labels.ScratchBuilder
		lset labels.Labels
		chks []chunks.Meta
	)
	for i := 0; p.Next(); i++ {
		if i%1024 == 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		if err := ir.Series(p.At(), &sb, &chks); err != nil {
			return fmt.Errorf("storage: series of block %s: %w", b.Meta().ULID, err)
		}
		n, size := 0, 0
		for _, c := range chks {
			if c.MaxTime < mint || c.MinTime > maxt {
				continue
			}
			n++
			if withBytes {
				chk, _, err := cr.ChunkOrIterable(c)
				if err != nil {
					return fmt.Errorf("storage: chunk of block %s: %w", b.Meta().ULID, err)
				}
				if chk != nil {
					size += len(chk.Bytes())
				}
			}
		}
		if n == 0 {
			continue
		}
		sb.Overwrite(&lset)
		if err := count(lset, n, size); err != nil {
			return err
		}
	}
	return p.Err()
}

// Close closes every open block. Queriers must be closed first.
func (q *BucketQueryable) Close() error {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.closed = true
	var errs []error
	for _, bs := range q.blocks {
		for _, b := range bs {
			errs = append(errs, b.Close())
		}
	}
	q.blocks = map[string]map[ulid.ULID]*tsdb.Block{}
	return errors.Join(errs...)
}

// Blocks returns the metas of tenant's complete blocks in the bucket, opening any new ones.
func (q *BucketQueryable) Blocks(ctx context.Context, tenant string) ([]tsdb.BlockMeta, error) {
	bs, err := q.sync(ctx, tenant)
	if err != nil {
		return nil, err
	}
	out := make([]tsdb.BlockMeta, 0, len(bs))
	for _, b := range bs {
		out = append(out, b.Meta())
	}
	return out, nil
}

// sync lists tenant's blocks and returns them open, opening (downloading) new ones. A block
// without meta.json is partial and skipped.
func (q *BucketQueryable) sync(ctx context.Context, tenant string) ([]*tsdb.Block, error) {
	if tenant == "" || strings.ContainsAny(tenant, `/\`) || tenant == "." || tenant == ".." {
		return nil, fmt.Errorf("storage: invalid tenant %q", tenant)
	}
	var ids []ulid.ULID
	err := q.bkt.Iter(ctx, tenant+"/", func(name string) error {
		id, err := ulid.Parse(strings.TrimSuffix(strings.TrimPrefix(name, tenant+"/"), "/"))
		if err == nil {
			ids = append(ids, id)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("storage: listing blocks of tenant %q: %w", tenant, err)
	}
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return nil, errors.New("storage: bucket queryable closed")
	}
	have := q.blocks[tenant]
	if have == nil {
		have = map[ulid.ULID]*tsdb.Block{}
		q.blocks[tenant] = have
	}
	var missing []ulid.ULID
	listed := map[ulid.ULID]bool{}
	for _, id := range ids {
		// A compactor deletes meta.json first: in a local bucket, a block without it is being (or was
		// half) deleted and is forgotten like an unlisted one, not kept open for ever.
		if q.localDir != "" {
			if _, err := os.Stat(filepath.Join(q.localDir, tenant, id.String(), MetaFilename)); err != nil {
				continue
			}
		}
		listed[id] = true
		if have[id] == nil {
			missing = append(missing, id)
		}
	}
	// Blocks deleted from the bucket (by a compactor) are forgotten; closing waits for readers.
	for id, b := range have {
		if !listed[id] {
			delete(have, id)
			go b.Close()
		}
	}
	q.mu.Unlock()

	for _, id := range missing {
		b, err := q.open(ctx, tenant, id)
		if errors.Is(err, errPartial) {
			continue
		}
		if err != nil {
			return nil, err
		}
		q.mu.Lock()
		if q.closed || q.blocks[tenant][id] != nil {
			b.Close()
		} else {
			q.blocks[tenant][id] = b
		}
		q.mu.Unlock()
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	out := make([]*tsdb.Block, 0, len(q.blocks[tenant]))
	for _, b := range q.blocks[tenant] {
		out = append(out, b)
	}
	return out, nil
}

var errPartial = errors.New("storage: partial block")

func (q *BucketQueryable) open(ctx context.Context, tenant string, id ulid.ULID) (*tsdb.Block, error) {
	prefix := path.Join(tenant, id.String())
	ok, err := q.bkt.Exists(ctx, path.Join(prefix, MetaFilename))
	if err != nil {
		return nil, fmt.Errorf("storage: block %s of tenant %q: %w", id, tenant, err)
	}
	if !ok {
		return nil, errPartial
	}
	dir := ""
	if q.localDir != "" {
		dir = filepath.Join(q.localDir, tenant, id.String())
	} else {
		dir = filepath.Join(q.cacheDir, tenant, id.String())
		if _, err := os.Stat(filepath.Join(dir, MetaFilename)); err != nil {
			if err := q.download(ctx, prefix, dir); err != nil {
				return nil, fmt.Errorf("storage: downloading block %s of tenant %q: %w", id, tenant, err)
			}
		}
	}
	b, err := tsdb.OpenBlock(q.logger, dir, q.pool, nil)
	if err != nil {
		return nil, fmt.Errorf("storage: opening block %s of tenant %q in %s: %w", id, tenant, dir, err)
	}
	return b, nil
}

// download copies the block at prefix into dir: every file but meta.json into dir.tmp, then
// meta.json, then a rename, so a cached block with meta.json is complete.
func (q *BucketQueryable) download(ctx context.Context, prefix, dir string) error {
	tmp := dir + ".tmp"
	if err := os.RemoveAll(tmp); err != nil {
		return err
	}
	var names []string
	if err := q.bkt.Iter(ctx, prefix+"/", func(name string) error {
		names = append(names, name)
		return nil
	}, objstore.WithRecursiveIter()); err != nil {
		return err
	}
	for _, name := range names {
		if path.Base(name) == MetaFilename {
			continue
		}
		if err := DownloadObject(ctx, q.bkt, name, filepath.Join(tmp, filepath.FromSlash(strings.TrimPrefix(name, prefix+"/")))); err != nil {
			return err
		}
	}
	if err := DownloadObject(ctx, q.bkt, path.Join(prefix, MetaFilename), filepath.Join(tmp, MetaFilename)); err != nil {
		return err
	}
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	return os.Rename(tmp, dir)
}

// DownloadObject copies object name of bkt into the file dst, creating its directory. The file is
// not synced: callers download into a scratch directory and rename it into place, or verify it.
func DownloadObject(ctx context.Context, bkt objstore.BucketReader, name, dst string) error {
	rc, err := bkt.Get(ctx, name)
	if err != nil {
		return err
	}
	defer rc.Close()
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	f, err := os.Create(dst)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, rc); err != nil {
		f.Close()
		return fmt.Errorf("%s: %w", name, err)
	}
	return f.Close()
}

// bucketQuerier serves one query's calls. Each call lists the tenant's blocks, opens block
// queriers on those overlapping [mint, maxt] and merges them; they stay open until Close, since
// the series sets it returns are read lazily.
type bucketQuerier struct {
	q          *BucketQueryable
	mint, maxt int64

	mu   sync.Mutex
	open []promstorage.Querier
}

func (bq *bucketQuerier) merged(ctx context.Context) (promstorage.Querier, error) {
	id, err := tenant.FromContext(ctx)
	if err != nil {
		return nil, err
	}
	bs, err := bq.q.sync(ctx, id)
	if err != nil {
		return nil, err
	}
	var qs []promstorage.Querier
	for _, b := range bs {
		if !b.OverlapsClosedInterval(bq.mint, bq.maxt) {
			continue
		}
		sq, err := tsdb.NewBlockQuerier(b, bq.mint, bq.maxt)
		if err != nil {
			for _, q := range qs {
				q.Close()
			}
			return nil, fmt.Errorf("storage: querier on block %s of tenant %q: %w", b.Meta().ULID, id, err)
		}
		qs = append(qs, sq)
	}
	m := promstorage.NewMergeQuerier(nil, qs, promstorage.ChainedSeriesMerge)
	bq.mu.Lock()
	bq.open = append(bq.open, m)
	bq.mu.Unlock()
	return m, nil
}

// Select returns the tenant's series matching ms with samples in [mint, maxt], one series per
// label set, each timestamp once.
func (bq *bucketQuerier) Select(ctx context.Context, sortSeries bool, hints *promstorage.SelectHints, ms ...*labels.Matcher) promstorage.SeriesSet {
	m, err := bq.merged(ctx)
	if err != nil {
		return promstorage.ErrSeriesSet(err)
	}
	// More than one block: the merge needs each block's series sorted, and returns them sorted.
	return m.Select(ctx, sortSeries, hints, ms...)
}

// LabelValues returns the sorted values of name in the tenant's blocks.
func (bq *bucketQuerier) LabelValues(ctx context.Context, name string, hints *promstorage.LabelHints, ms ...*labels.Matcher) ([]string, annotations.Annotations, error) {
	m, err := bq.merged(ctx)
	if err != nil {
		return nil, nil, err
	}
	return m.LabelValues(ctx, name, hints, ms...)
}

// LabelNames returns the sorted label names in the tenant's blocks.
func (bq *bucketQuerier) LabelNames(ctx context.Context, hints *promstorage.LabelHints, ms ...*labels.Matcher) ([]string, annotations.Annotations, error) {
	m, err := bq.merged(ctx)
	if err != nil {
		return nil, nil, err
	}
	return m.LabelNames(ctx, hints, ms...)
}

// Close releases the block queriers opened by this querier's calls.
func (bq *bucketQuerier) Close() error {
	bq.mu.Lock()
	defer bq.mu.Unlock()
	var errs []error
	for _, q := range bq.open {
		errs = append(errs, q.Close())
	}
	bq.open = nil
	return errors.Join(errs...)
}
