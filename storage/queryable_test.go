package storage

import (
	"context"
	"math"
	"path/filepath"
	"slices"
	"testing"

	"github.com/prometheus/prometheus/model/labels"
	promstorage "github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"github.com/thanos-io/objstore"
	"github.com/thanos-io/objstore/providers/filesystem"

	tenantctx "github.com/raftingest/raftingest/tenant"
)

// uploadSeries writes ss as one block of [mint, maxt) and uploads it for tenant.
func uploadSeries(t *testing.T, bkt objstore.Bucket, tenant string, ss []Series, mint, maxt int64) Meta {
	t.Helper()
	dir := t.TempDir()
	meta, err := WriteBlock(context.Background(), dir, ss, BlockOptions{MinTime: mint, MaxTime: maxt})
	if err != nil {
		t.Fatal(err)
	}
	if err := UploadBlock(context.Background(), bkt, tenant, filepath.Join(dir, meta.ULID.String()), meta); err != nil {
		t.Fatal(err)
	}
	return meta
}

// selectAll returns every sample the querier gives for tenant, failing on a timestamp twice
// within one series (a duplicate the merge should have dropped) or a series twice.
func selectAll(t *testing.T, q promstorage.Queryable, tenant string, mint, maxt int64) map[string]bool {
	t.Helper()
	qr, err := q.Querier(mint, maxt)
	if err != nil {
		t.Fatal(err)
	}
	defer qr.Close()
	got := map[string]bool{}
	seen := map[string]bool{}
	ss := qr.Select(tenantctx.With(context.Background(), tenant), true, nil, labels.MustNewMatcher(labels.MatchRegexp, "__name__", ".+"))
	for ss.Next() {
		s := ss.At()
		if seen[s.Labels().String()] {
			t.Fatalf("series %s returned twice", s.Labels())
		}
		seen[s.Labels().String()] = true
		it := s.Iterator(nil)
		prev := int64(math.MinInt64)
		for it.Next() == chunkenc.ValFloat {
			ts, v := it.At()
			if ts <= prev {
				t.Fatalf("series %s: timestamp %d after %d", s.Labels(), ts, prev)
			}
			prev = ts
			got[key(s.Labels(), sample{ts, v})] = true
		}
		if it.Err() != nil {
			t.Fatal(it.Err())
		}
	}
	if ss.Err() != nil {
		t.Fatal(ss.Err())
	}
	return got
}

// Three replicas flush the same series; their blocks overlap with identical samples, and one
// replica also has samples the others lack. The bucket querier returns each series once with the
// union of the samples, each timestamp once — read in place (filesystem) and downloaded (other
// backends). A block without meta.json (a failed upload) is not read, another tenant's neither.
func TestBucketQueryable_DeduplicatesReplicas(t *testing.T) {
	const h = int64(3600_000)
	root := t.TempDir()
	fsb, err := filesystem.NewBucket(root)
	if err != nil {
		t.Fatal(err)
	}
	mem := objstore.NewInMemBucket()
	for _, bkt := range []objstore.Bucket{fsb, mem} {
		ss, want := testSeries(t, 10, 0, 2*h, 30_000, 0, 2*h)
		for range 3 {
			uploadSeries(t, bkt, "t1", ss, 0, 2*h)
		}
		// A fourth copy, from a replica that also has the next hour.
		more, wantMore := testSeries(t, 10, 0, 3*h, 30_000, 0, 3*h)
		uploadSeries(t, bkt, "t1", more, 0, 3*h)
		for k := range wantMore {
			want[k] = true
		}
		// A partial block: everything but meta.json.
		other, _ := testSeries(t, 1, 5*h, 6*h, 30_000, 5*h, 6*h)
		dir := t.TempDir()
		pm, err := WriteBlock(context.Background(), dir, other, BlockOptions{MinTime: 5 * h, MaxTime: 6 * h})
		if err != nil {
			t.Fatal(err)
		}
		pm.Thanos.Files = slices.DeleteFunc(pm.Thanos.Files, func(f File) bool { return f.RelPath == MetaFilename })
		for _, f := range pm.Thanos.Files {
			if err := uploadFile(context.Background(), bkt, filepath.Join(dir, pm.ULID.String(), f.RelPath), "t1/"+pm.ULID.String()+"/"+f.RelPath); err != nil {
				t.Fatal(err)
			}
		}
		uploadSeries(t, bkt, "t2", other, 5*h, 6*h)

		local := ""
		if bkt == objstore.Bucket(fsb) {
			local = root
		}
		q := NewBucketQueryable(bkt, local, t.TempDir(), nil)
		requireSameKeys(t, want, selectAll(t, q, "t1", math.MinInt64, math.MaxInt64))
		if got := selectAll(t, q, "nobody", 0, 10*h); len(got) != 0 {
			t.Fatalf("unknown tenant: %d samples", len(got))
		}
		metas, err := q.Blocks(context.Background(), "t1")
		if err != nil || len(metas) != 4 {
			t.Fatalf("blocks of t1: %d (%v), want 4 complete ones", len(metas), err)
		}
		qr, _ := q.Querier(0, h)
		names, _, err := qr.LabelNames(tenantctx.With(context.Background(), "t1"), nil)
		if err != nil || !slices.Equal(names, []string{"__name__", "job", "series"}) {
			t.Fatalf("label names %v %v", names, err)
		}
		if ss := qr.Select(context.Background(), false, nil); ss.Next() || ss.Err() != ErrNoTenant {
			t.Fatalf("select without tenant: err %v, want ErrNoTenant", ss.Err())
		}
		qr.Close()
		if err := q.Close(); err != nil {
			t.Fatal(err)
		}
	}
}
