package ingester

// This file wires the querier (Prometheus HTTP API, remote read) into the Server. It is owned by the
// read-path work; the Server calls wireQuerier in New with the HTTP mux, after wireStorage (the
// querier reads the store's Queryable), and closeQuerier when it closes.

import (
	"flag"
	"net/http"

	"github.com/raftingest/raftingest/distributor"
	"github.com/raftingest/raftingest/querier"
)

// querierConfig holds the querier's flags (-querier.*); see querier.Config.
type querierConfig struct {
	querier.Config
}

// RegisterFlags registers the -querier.* flags with their defaults.
func (c *querierConfig) RegisterFlags(f *flag.FlagSet) { c.Config.RegisterFlags(f) }

// Validate checks the -querier.* flags, naming them.
func (c *querierConfig) Validate() error { return c.Config.Validate() }

// querierParts is what the querier wiring adds to the Server.
type querierParts struct {
	q *querier.Querier
}

// wireQuerier mounts the Prometheus HTTP API and remote read under /prometheus/ on mux. Reads ask
// the ring's readable members (ACTIVE or LEAVING, healthy) for their memory, and read the blocks:
// from the bucket directly when it is shared (S3, -blocks-storage.filesystem.shared), else by asking
// every healthy member for the blocks of its own bucket (QueryBlocks), since each holds only its
// share; the tenant comes from X-Scope-OrgID under -auth.multitenancy-enabled, the
// distributor's default tenant otherwise, so reads see exactly what writes stored.
func (s *Server) wireQuerier(mux *http.ServeMux) error {
	q, err := querier.New(s.cfg.Querier.Config, querier.Deps{
		Ring:                s.node,
		ReplicationFactor:   s.cfg.Distributor.ReplicationFactor,
		ZoneAware:           s.cfg.Distributor.ZoneAware,
		HeartbeatTimeout:    s.cfg.Lifecycle.HeartbeatTimeout,
		Store:               s.storage.Queryable,
		NodeLocalStore:      !s.cfg.Storage.Bucket.Shared(),
		MultitenancyEnabled: s.cfg.Distributor.MultitenancyEnabled,
		DefaultTenant:       distributor.DefaultTenant,
		ValidateTenant:      distributor.ValidateTenantID,
		Registerer:          s.reg,
		Logger:              s.log.With("component", "querier"),
		Now:                 s.cfg.Clock,
		DialOptions:         s.dialOptions(),
		Limits: func(tenant string) (int, int, int) {
			l := s.limits.For(tenant)
			return l.MaxFetchedSeriesPerQuery, l.MaxFetchedChunksPerQuery, l.MaxFetchedChunkBytesPerQuery
		},
	})
	if err != nil {
		return err
	}
	s.querier.q = q
	qmux := http.NewServeMux()
	q.RegisterRoutes(qmux, "/prometheus")
	mux.Handle("/prometheus/", ringGate(s.node.CaughtUp, qmux))
	return nil
}

func (s *Server) closeQuerier() {
	if s.querier.q != nil {
		if err := s.querier.q.Close(); err != nil {
			s.log.Warn("close the querier", "err", err)
		}
	}
}
