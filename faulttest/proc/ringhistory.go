package proc

// Checker 5 in the process tier: the ring operations of every node, recorded by the nodes
// themselves (-debug.ring-history-file, raftfsm.HistoryFile), merged with the harness's own
// linearizable ring reads and judged by porcupine. The checker and the reader are
// faulttest/ringhist's, shared with the in-process tier; this file only ties them to the process
// cluster.

import (
	"context"

	"github.com/raftingest/raftingest/faulttest/ringhist"
)

// ringHistoryPath is node id's -debug.ring-history-file: in the run directory, outside the node's
// data directory, so that a wipe of its Raft state (Rejoin) keeps it, and a restart appends to it.
func ringHistoryPath(runDir, id string) string { return ringhist.Path(runDir, id) }

// startRingReader reads the ring linearizably every ringhist.ReadPeriod through a random node whose
// process runs and is not paused (a read through a paused one could only time out), until the
// returned reader is stopped (or ctx ends).
func startRingReader(ctx context.Context, c *Cluster, seed int64) *ringhist.Reader {
	return ringhist.StartReader(ctx, seed, func() []ringhist.Target {
		var up []ringhist.Target
		for _, n := range c.Nodes {
			if n.Running() && !n.Paused() {
				up = append(up, n)
			}
		}
		return up
	})
}
