package ingester

import (
	"fmt"
	"net/http"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// frontHandler is the HTTP server's handler, swapped once: New serves the start-up handler while it
// replays the WAL and starts the Raft node, so that an operator watching a long replay (tens of
// seconds for a large WAL) sees its progress on /ready and /metrics instead of a port that accepts
// connections and never answers; New installs the full mux when everything is ready to serve.
type frontHandler struct{ h atomic.Pointer[http.Handler] }

func (f *frontHandler) set(h http.Handler) { f.h.Store(&h) }

func (f *frontHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	(*f.h.Load()).ServeHTTP(w, r)
}

// startingHandler serves /metrics (the registry fills in as New registers each part: the WAL's
// metrics, raftingest_wal_replay_progress_ratio among them, come first) and answers every other
// path, /ready included, 503 with what the node is doing. Pushes get the same 503, which remote
// write clients retry.
func (s *Server) startingHandler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(s.reg, promhttp.HandlerOpts{Registry: s.reg}))
	mux.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Retry-After", "5")
		http.Error(w, fmt.Sprintf("not ready: ingester %s is starting: %s", s.cfg.NodeID, s.startingStatus()),
			http.StatusServiceUnavailable)
	})
	return mux
}

// startingStatus says which step of New the node is in.
func (s *Server) startingStatus() string {
	if p := s.replay.Progress(); !p.Done {
		return p.Describe()
	}
	return "WAL replayed, starting the raft node and the servers"
}
