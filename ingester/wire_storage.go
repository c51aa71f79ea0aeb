package ingester

// This file wires long-term storage (the bucket) and flushing into the Server. It is owned by the
// read-path/storage work; the Server calls wireStorage in New, startStorage in Run and closeStorage
// when it closes.

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	promstorage "github.com/prometheus/prometheus/storage"
	"github.com/thanos-io/objstore"

	"github.com/raftingest/raftingest/flush"
	"github.com/raftingest/raftingest/storage"
)

// storageConfig holds the flags of the bucket and of flushing.
type storageConfig struct {
	Bucket storage.Config
	Flush  flush.Config
}

func (c *storageConfig) RegisterFlags(f *flag.FlagSet) {
	c.Bucket.RegisterFlags(f)
	c.Flush.RegisterFlags(f)
}

// Validate reads the S3 secret access key from its file or the environment when it comes from
// there (storage.Config.ResolveCredentials), then checks the bucket and flush flags. The filesystem
// bucket's default directory, <data.dir>/blocks, is filled in by setStorageDefaults (Config.Validate
// should call it; wireStorage does in any case).
func (c *storageConfig) Validate() error {
	if err := c.Bucket.ResolveCredentials(os.Getenv); err != nil {
		return errors.Join(err, c.Flush.Validate())
	}
	return errors.Join(c.Bucket.Validate(), c.Flush.Validate())
}

// setStorageDefaults fills in the defaults that depend on -data.dir.
func (c *Config) setStorageDefaults() {
	if c.Storage.Bucket.Filesystem.Dir == "" && c.DataDir != "" {
		c.Storage.Bucket.Filesystem.Dir = filepath.Join(c.DataDir, "blocks")
	}
}

// storageParts is what the storage wiring adds to the Server.
type storageParts struct {
	// Queryable reads the blocks in the bucket; nil while storage is not configured. The tenant
	// comes from the context of each Select/LabelNames/LabelValues: storage.WithTenant(ctx, t).
	Queryable promstorage.Queryable
	// FlushAll writes everything in memory to the bucket and drops it from memory and the WAL;
	// nil while storage is not configured.
	FlushAll func(ctx context.Context) error

	bucket    objstore.Bucket
	queryable *storage.BucketQueryable
	flusher   *flush.Flusher
	cancel    context.CancelFunc
	wg        sync.WaitGroup
}

func (s *Server) wireStorage(mux *http.ServeMux) error {
	// Normally done by Config.Validate (see setStorageDefaults); repeated here so a Config built
	// without it still gets the default rather than an error.
	s.cfg.setStorageDefaults()
	if err := s.cfg.Storage.Validate(); err != nil {
		return err
	}
	log := s.log.With("component", "storage")
	bkt, err := storage.NewBucket(s.cfg.Storage.Bucket, log)
	if err != nil {
		return err
	}
	s.storage.bucket = bkt
	f, err := flush.New(s.cfg.Storage.Flush, flush.Deps{
		Store: s.store, Bucket: bkt, WorkDir: filepath.Join(s.cfg.DataDir, "flush"),
		IngesterID: s.cfg.NodeID, Registerer: s.reg, Logger: s.log.With("component", "flush"),
		Now: s.cfg.Clock, // nil: time.Now
	})
	if err != nil {
		return err
	}
	s.storage.flusher = f
	s.storage.FlushAll = func(ctx context.Context) error {
		_, err := f.FlushAll(ctx)
		return err
	}
	s.storage.queryable = storage.NewBucketQueryable(bkt, s.cfg.Storage.Bucket.LocalDir(),
		filepath.Join(s.cfg.DataDir, "bucket-cache"), log)
	s.storage.Queryable = s.storage.queryable
	// Ingester.QueryBlocks serves this node's own bucket to the other members' queriers (they ask
	// when the bucket is node-local; with a shared one they read it themselves).
	if s.ingest != nil {
		s.ingest.blocks = s.storage.queryable
	}
	// POST /ingester/flush (the flusher's ServeHTTP) is served by the admin listener: adminHandler.
	return nil
}

func (s *Server) startStorage(ctx context.Context) {
	if s.storage.flusher == nil {
		return
	}
	ctx, cancel := context.WithCancel(ctx)
	s.storage.cancel = cancel
	s.storage.wg.Add(1)
	go func() {
		defer s.storage.wg.Done()
		s.storage.flusher.Run(ctx)
	}()
	if s.cfg.Storage.Bucket.Backend == storage.BackendS3 {
		// One listing at start says at once what a wrong S3 setting would otherwise say only at
		// the first flush. It does not stop the node: writes do not need the bucket.
		s.storage.wg.Add(1)
		go func() {
			defer s.storage.wg.Done()
			cctx, ccancel := context.WithTimeout(ctx, 30*time.Second)
			defer ccancel()
			if err := storage.CheckBucket(cctx, s.storage.bucket); err != nil && ctx.Err() == nil {
				s.log.Error("the blocks bucket does not answer as configured: flushes and reads of flushed blocks fail until it does",
					"component", "storage", "err", err)
			}
		}()
	}
}

// closeStorage stops the flush loop (a flush in progress is cancelled: its data stays in memory
// and the WAL) and closes the bucket reader and the bucket.
func (s *Server) closeStorage() {
	if s.storage.cancel != nil {
		s.storage.cancel()
	}
	s.storage.wg.Wait()
	if s.storage.queryable != nil {
		if err := s.storage.queryable.Close(); err != nil {
			s.log.Warn("close the bucket reader", "err", err)
		}
	}
	if s.storage.bucket != nil {
		if err := s.storage.bucket.Close(); err != nil {
			s.log.Warn("close the bucket", "err", fmt.Errorf("%s: %w", s.storage.bucket.Name(), err))
		}
	}
}
