package ingester

// This file wires long-term storage (the bucket) and flushing into the Server. It is owned by the
// read-path/storage work; the Server calls wireStorage in New, startStorage in Run and closeStorage
// when it closes.

import (
	"context"
	"flag"
	"net/http"

	promstorage "github.com/prometheus/prometheus/storage"
)

// storageConfig holds the flags of the bucket and of flushing.
type storageConfig struct{}

func (c *storageConfig) RegisterFlags(f *flag.FlagSet) {}

func (c *storageConfig) Validate() error { return nil }

// storageParts is what the storage wiring adds to the Server.
type storageParts struct {
	// Queryable reads the blocks in the bucket; nil while storage is not configured.
	Queryable promstorage.Queryable
	// FlushAll writes everything in memory to the bucket and drops it from memory and the WAL;
	// nil while storage is not configured.
	FlushAll func(ctx context.Context) error
}

func (s *Server) wireStorage(mux *http.ServeMux) error { return nil }

func (s *Server) startStorage(ctx context.Context) {}

func (s *Server) closeStorage() {}
