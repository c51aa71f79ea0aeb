package storage

import (
	"context"
	"errors"
	"maps"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/thanos-io/objstore"

	"github.com/raftingest/raftingest/internal/s3server"
)

// s3Config is the bucket configuration of srv's bucket, changed by mod.
func s3Config(srv *s3server.Server, mod func(*S3Config)) Config {
	c := Config{Backend: BackendS3, S3: S3Config{Endpoint: srv.Endpoint, BucketName: srv.Bucket,
		AccessKeyID: srv.AccessKey, SecretAccessKey: srv.SecretKey, Region: s3server.Region, Insecure: true}}
	if mod != nil {
		mod(&c.S3)
	}
	return c
}

// openS3 opens c's bucket as the ingester does (NewBucket), its errors naming the flags.
func openS3(t *testing.T, c Config) objstore.Bucket {
	t.Helper()
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	b, err := NewBucket(c, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := b.(s3Bucket); !ok {
		b = nameS3Flags(b, c.S3)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

// TestS3_BlocksRoundTrip runs the bucket's whole life against a real S3 server (versitygw on
// loopback): three replicas' copies of a range and a fourth with one more hour are uploaded with
// UploadBlock, land as <tenant>/<ULID>/{chunks/000001,index,meta.json} objects (read back from the
// server's disk), and BucketQueryable — downloading them, as it does for every backend but the
// filesystem — returns each series once with the union of the samples. A partial upload (no
// meta.json) is not read. Then DeletePartialBlock removes the partial block's objects, and a
// deletion mark and the sweep a complete block's.
func TestS3_BlocksRoundTrip(t *testing.T) {
	srv := s3server.Start(t, s3server.Options{})
	bkt := openS3(t, s3Config(srv, nil))
	ctx := context.Background()
	if err := CheckBucket(ctx, bkt); err != nil {
		t.Fatalf("CheckBucket of a good configuration: %v", err)
	}
	const h = int64(3600_000)
	ss, want := testSeries(t, 20, 0, 2*h, 30_000, 0, 2*h)
	var metas []Meta
	for range 3 {
		metas = append(metas, uploadSeries(t, bkt, "t1", ss, 0, 2*h))
	}
	more, wantMore := testSeries(t, 20, 0, 3*h, 30_000, 0, 3*h)
	metas = append(metas, uploadSeries(t, bkt, "t1", more, 0, 3*h))
	for k := range wantMore {
		want[k] = true
	}
	// On the server's disk: every file of every block, with the sizes meta.json lists.
	for _, m := range metas {
		for _, f := range m.Thanos.Files {
			p := filepath.Join(srv.BucketDir(""), "t1", m.ULID.String(), filepath.FromSlash(f.RelPath))
			st, err := os.Stat(p)
			if err != nil {
				t.Fatalf("block %s: %v", m.ULID, err)
			}
			if f.RelPath != MetaFilename && st.Size() != f.SizeBytes {
				t.Fatalf("%s: %d bytes on the server, meta.json says %d", p, st.Size(), f.SizeBytes)
			}
		}
	}
	// A partial block: everything but meta.json.
	other, _ := testSeries(t, 1, 0, h, 30_000, 0, h)
	dir := t.TempDir()
	pm, err := WriteBlock(ctx, dir, other, BlockOptions{MinTime: 0, MaxTime: h})
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range pm.Thanos.Files {
		if f.RelPath == MetaFilename {
			continue
		}
		if err := uploadFile(ctx, bkt, filepath.Join(dir, pm.ULID.String(), f.RelPath), "t1/"+pm.ULID.String()+"/"+f.RelPath); err != nil {
			t.Fatal(err)
		}
	}

	q := NewBucketQueryable(bkt, "", t.TempDir(), nil)
	defer q.Close()
	requireSameKeys(t, want, selectAll(t, q, "t1", math.MinInt64, math.MaxInt64))
	got, err := q.Blocks(ctx, "t1")
	if err != nil || len(got) != 4 {
		t.Fatalf("blocks of t1: %d (%v), want the 4 complete ones", len(got), err)
	}
	if got := selectAll(t, q, "nobody", 0, 10*h); len(got) != 0 {
		t.Fatalf("unknown tenant: %d samples", len(got))
	}

	// A missing object is still "not found" through the flag-naming wrapper.
	if _, err := bkt.Get(ctx, "t1/"+pm.ULID.String()+"/"+MetaFilename); err == nil || !bkt.IsObjNotFoundErr(err) {
		t.Fatalf("get of a missing object: %v, want not found", err)
	}

	if err := DeletePartialBlock(ctx, bkt, "t1", pm); err != nil {
		t.Fatal(err)
	}
	if err := bkt.Iter(ctx, "t1/"+pm.ULID.String()+"/", func(name string) error {
		return errors.New("left behind: " + name)
	}, objstore.WithRecursiveIter()); err != nil {
		t.Fatalf("partial block after DeletePartialBlock: %v", err)
	}
	// Marked, then swept after the delay: every object of the block goes.
	now := time.Now()
	if marked, err := MarkForDeletion(ctx, bkt, "t1", metas[0].ULID, now, "test"); err != nil || !marked {
		t.Fatalf("mark: %v %v", marked, err)
	}
	swept, err := SweepDeletionMarked(ctx, bkt, time.Minute, now.Add(2*time.Minute), nil)
	if err != nil || len(swept) != 1 || swept[0].ID != metas[0].ULID || swept[0].Partial {
		t.Fatalf("sweep: %v %v", swept, err)
	}
	if _, err := os.Stat(filepath.Join(srv.BucketDir(""), "t1", metas[0].ULID.String(), "index")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("swept block's index still on the server: %v", err)
	}
	// The remaining copies still answer the same.
	q2 := NewBucketQueryable(bkt, "", t.TempDir(), nil)
	defer q2.Close()
	requireSameKeys(t, want, selectAll(t, q2, "t1", math.MinInt64, math.MaxInt64))
}

// TestS3_BadConfigNamesTheFlag: each setting an operator can get wrong, against the real server
// (and the server killed, for an endpoint that does not answer), makes CheckBucket, an upload and
// a listing fail with an S3ConfigError naming the flag to fix, never showing the secret; the S3
// server's own words stay in the message.
func TestS3_BadConfigNamesTheFlag(t *testing.T) {
	srv := s3server.Start(t, s3server.Options{})
	down := s3server.Start(t, s3server.Options{})
	down.Kill()
	cases := []struct {
		name   string
		mod    func(*S3Config)
		flag   string
		server string // what the S3 server (or the network) said, kept in the message
	}{
		{"unknown access key", func(c *S3Config) { c.AccessKeyID = "AKNOBODY" }, "-blocks-storage.s3.access-key-id", "access key"},
		{"wrong secret", func(c *S3Config) { c.SecretAccessKey = "not-the-secret-0123456789" }, "-blocks-storage.s3.secret-access-key", "signature"},
		{"missing bucket", func(c *S3Config) { c.BucketName = "no-such-bucket" }, "-blocks-storage.s3.bucket-name", "bucket does not exist"},
		{"wrong region", func(c *S3Config) { c.Region = "eu-west-1" }, "-blocks-storage.s3.region", "region"},
		{"plain HTTP without -insecure", func(c *S3Config) { c.Insecure = false }, "-blocks-storage.s3.insecure", "HTTP response to HTTPS client"},
		{"endpoint down", func(c *S3Config) { c.Endpoint = down.Endpoint }, "-blocks-storage.s3.endpoint", "connection refused"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := s3Config(srv, tc.mod)
			bkt := openS3(t, c)
			// The client retries a connection that fails; bound it as the ingester bounds its check.
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			errs := map[string]error{
				"check":  CheckBucket(ctx, bkt),
				"upload": bkt.Upload(ctx, "t1/x", strings.NewReader("x")),
				"iter":   bkt.Iter(ctx, "t1/", func(string) error { return nil }),
			}
			for _, op := range slices.Sorted(maps.Keys(errs)) {
				err := errs[op]
				var ce *S3ConfigError
				if !errors.As(err, &ce) || ce.Flag != tc.flag {
					t.Fatalf("%s: %v (%T), want an S3ConfigError naming %s", op, err, err, tc.flag)
				}
				msg := err.Error()
				if !strings.Contains(msg, tc.flag) || !strings.Contains(strings.ToLower(msg), strings.ToLower(tc.server)) {
					t.Fatalf("%s: %q, want it to name %s and keep %q", op, msg, tc.flag, tc.server)
				}
				if strings.Contains(msg, c.S3.SecretAccessKey) {
					t.Fatalf("%s: the message shows the secret: %q", op, msg)
				}
			}
		})
	}
	// The server's own keys on the same server: nothing to complain about.
	if err := CheckBucket(context.Background(), openS3(t, s3Config(srv, nil))); err != nil {
		t.Fatal(err)
	}
}
