package ingester

// This file wires the hand-over protocol (transfer) into the Server. It is owned by the hand-over
// work; the Server calls wireTransfer in New (after the gRPC server exists) and closeTransfer when it
// closes.

import "flag"

// transferConfig holds the hand-over's flags.
type transferConfig struct{}

func (c *transferConfig) RegisterFlags(f *flag.FlagSet) {}

func (c *transferConfig) Validate() error { return nil }

// transferParts is what the transfer wiring adds to the Server.
type transferParts struct{}

func (s *Server) wireTransfer() error { return nil }

func (s *Server) closeTransfer() {}
