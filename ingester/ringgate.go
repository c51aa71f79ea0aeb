package ingester

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
)

// caughtUpFunc is raftfsm.Node.CaughtUp: whether the local ring has applied the Raft log found on
// disk at start, and the two indexes.
type caughtUpFunc func() (ok bool, applied, target uint64)

// ringGate refuses, with 503, requests that would place or find samples by a ring older than the
// Raft state this node restarted with — pushes (the distributor picks owners from it) and queries
// (the querier picks the replicas to ask from it) — until the node has replayed its log. A push
// placed on that ring would go to members that no longer own the series, or be acked with fewer
// copies than the replication factor; a query would ask the wrong ingesters and miss data. 503 is
// retried by Prometheus' remote write and by query clients; the window is the time to hear from a
// leader (an election timeout or two after a restart). Paths under /prometheus/api/v1/ get the
// Prometheus API's JSON error body, others plain text.
func ringGate(caughtUp caughtUpFunc, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ok, applied, target := caughtUp()
		if ok {
			next.ServeHTTP(w, r)
			return
		}
		msg := notCaughtUpMessage(applied, target)
		w.Header().Set("Retry-After", "1")
		if strings.Contains(r.URL.Path, "/api/v1/") && strings.HasPrefix(r.URL.Path, "/prometheus/") {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusServiceUnavailable)
			_ = json.NewEncoder(w).Encode(map[string]string{"status": "error", "errorType": "unavailable", "error": msg})
			return
		}
		http.Error(w, msg, http.StatusServiceUnavailable)
	})
}

// notCaughtUpMessage says what a node that is not caught up waits for: a brand-new node has no
// Raft log and waits to be added to a cluster and to hear from its leader; a restarted one
// replays the log it holds up to what the leader says is committed.
func notCaughtUpMessage(applied, target uint64) string {
	switch {
	case target == 0:
		return "this node has no ring yet: it waits to be added to a cluster (-join, or 'ringctl join') and to hear from its leader; use another node"
	case applied < target:
		return fmt.Sprintf("this node is catching up with the ring: it has applied raft log entries up to %d of %d; retry, or use another node", applied, target)
	default:
		return fmt.Sprintf("this node has applied the raft log it holds (up to %d) and waits to hear the commit index from a leader; retry, or use another node", applied)
	}
}
