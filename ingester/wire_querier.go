package ingester

// This file wires the querier (Prometheus HTTP API, remote read) into the Server. It is owned by the
// read-path work; the Server calls wireQuerier in New with the HTTP mux.

import (
	"flag"
	"net/http"
)

// querierConfig holds the querier's flags.
type querierConfig struct{}

func (c *querierConfig) RegisterFlags(f *flag.FlagSet) {}

func (c *querierConfig) Validate() error { return nil }

// querierParts is what the querier wiring adds to the Server.
type querierParts struct{}

func (s *Server) wireQuerier(mux *http.ServeMux) error { return nil }

func (s *Server) closeQuerier() {}
