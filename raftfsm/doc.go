// Package raftfsm puts the pure ring model (ringstate) behind Raft: the FSM and its command codec,
// and a Node that owns hashicorp/raft with raft-boltdb, file snapshots and a TCP transport (mutual
// TLS when configured). The Node's files follow its concerns: node.go (start, shutdown, state and
// status), commands.go (proposing and admitting ring commands), forward.go (reaching the leader
// and members over gRPC), membership.go (join, remove, leadership transfer, leave), reconcile.go
// (voter management and removal detection), storewrap.go (transport and snapshot-store wrappers),
// recover.go (-raft.recover). DESIGN.md states the invariants.
package raftfsm
