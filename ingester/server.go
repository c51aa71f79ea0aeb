package ingester

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/raftingest/raftingest/distributor"
	"github.com/raftingest/raftingest/ingesterpb"
	"github.com/raftingest/raftingest/lifecycle"
	"github.com/raftingest/raftingest/memstore"
	"github.com/raftingest/raftingest/raftfsm"
	"github.com/raftingest/raftingest/ringpb"
	"github.com/raftingest/raftingest/ringstate"
	"github.com/raftingest/raftingest/ringview"
)

// Server is one running ingester process. Create it with New, run it with Run.
type Server struct {
	cfg    Config
	log    *slog.Logger
	reg    *prometheus.Registry
	store  *memstore.Store
	node   *raftfsm.Node
	lc     *lifecycle.Lifecycle
	dist   *distributor.Distributor
	pool   *distributor.GRPCClientPool
	grpc   *grpc.Server
	http   *http.Server
	grpcLn net.Listener
	httpLn net.Listener

	storage  storageParts
	querier  querierParts
	transfer transferParts

	closeOnce sync.Once
}

// New opens the data directory, starts the Raft node and binds the gRPC and HTTP listeners. It does
// not register the member in the ring: Run does. On error everything opened so far is closed.
func New(cfg Config, log *slog.Logger) (s *Server, err error) {
	s = &Server{cfg: cfg, log: log, reg: prometheus.NewRegistry()}
	defer func() {
		if err != nil {
			s.close()
		}
	}()
	s.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	if s.grpcLn, err = net.Listen("tcp", cfg.GRPCAddr); err != nil {
		return nil, fmt.Errorf("-grpc.addr %s: %w", cfg.GRPCAddr, err)
	}
	if s.httpLn, err = net.Listen("tcp", cfg.HTTPAddr); err != nil {
		return nil, fmt.Errorf("-http.addr %s: %w", cfg.HTTPAddr, err)
	}

	// The WAL is replayed before the member joins or resumes, so that it never takes writes or
	// serves reads with part of its acknowledged data missing.
	if s.store, err = memstore.Open(cfg.Store, s.reg, log.With("component", "memstore")); err != nil {
		return nil, fmt.Errorf("open the series store in %s: %w", cfg.Store.WALDir, err)
	}

	rcfg := cfg.Raft
	rcfg.Logger = log.With("component", "raft")
	rcfg.Registerer = s.reg
	if s.node, err = raftfsm.NewNode(rcfg); err != nil {
		return nil, fmt.Errorf("start raft node %s: %w", cfg.NodeID, err)
	}

	seed := uint64(time.Now().UnixNano())
	if s.lc, err = lifecycle.New(cfg.Lifecycle, s.node, log.With("component", "lifecycle"),
		rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))); err != nil {
		return nil, fmt.Errorf("lifecycle: %w", err)
	}

	timeoutMs := cfg.Lifecycle.HeartbeatTimeout.Milliseconds()
	s.reg.MustRegister(ringview.NewCollector(ringstate.MemberID(cfg.NodeID), s.node.Ring, timeoutMs, "ingester",
		ringview.WithNumTokens(cfg.Lifecycle.NumTokens)))
	if err := s.lc.RegisterMetrics(s.reg); err != nil {
		return nil, fmt.Errorf("lifecycle metrics: %w", err)
	}

	s.pool = distributor.NewGRPCClientPool(cfg.Distributor.ClientIdleTimeout, log.With("component", "distributor"),
		grpc.WithDefaultCallOptions(grpc.MaxCallSendMsgSize(cfg.Distributor.MaxRecvMsgSize)))
	if s.dist, err = distributor.New(cfg.Distributor, distributor.Deps{Ring: s.node, Clients: s.pool,
		Registerer: s.reg, Logger: log.With("component", "distributor")}); err != nil {
		return nil, fmt.Errorf("distributor: %w", err)
	}

	// An ingester's Push carries what a distributor got in one remote-write request, at most
	// -distributor.max-recv-msg-size; gRPC's default limit (4 MiB) would refuse large ones.
	s.grpc = grpc.NewServer(grpc.MaxRecvMsgSize(cfg.Distributor.MaxRecvMsgSize))
	ringpb.RegisterRingServer(s.grpc, raftfsm.NewService(s.node, func(context.Context) error { s.lc.Leave(); return nil }))
	ingesterpb.RegisterIngesterServer(s.grpc, &ingesterService{store: s.store, writable: s.writable})

	mux := http.NewServeMux()
	// Storage first: the querier reads its bucket and the hand-over falls back on its flush.
	if err := s.wireStorage(mux); err != nil {
		return nil, fmt.Errorf("storage: %w", err)
	}
	if err := s.wireQuerier(mux); err != nil {
		return nil, fmt.Errorf("querier: %w", err)
	}
	if err := s.wireTransfer(); err != nil {
		return nil, fmt.Errorf("transfer: %w", err)
	}
	mux.Handle("/ring", ringview.Handler(s.node.Ring, timeoutMs))
	mux.Handle("/api/v1/push", s.dist)
	mux.Handle("/metrics", promhttp.HandlerFor(s.reg, promhttp.HandlerOpts{Registry: s.reg}))
	mux.HandleFunc("/ready", s.ready)
	mux.HandleFunc("/ingester/shutdown", s.shutdown)
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	s.http = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	return s, nil
}

// Leave asks the member to leave the ring gracefully; Run returns when it has.
func (s *Server) Leave() { s.lc.Leave() }

// Node returns the Raft node, for tests and diagnostics.
func (s *Server) Node() *raftfsm.Node { return s.node }

// Registry returns the server's metrics registry.
func (s *Server) Registry() *prometheus.Registry { return s.reg }

// Run serves until the member has left the ring (nil) or ctx is cancelled (ctx.Err(), without leaving:
// an abrupt stop, as a crash would be). It closes everything before returning.
func (s *Server) Run(ctx context.Context) error {
	defer s.close()
	errc := make(chan error, 3)
	go func() { errc <- fmt.Errorf("grpc server: %w", s.grpc.Serve(s.grpcLn)) }()
	go func() {
		if err := s.http.Serve(s.httpLn); !errors.Is(err, http.ErrServerClosed) {
			errc <- fmt.Errorf("http server: %w", err)
		}
	}()
	if len(s.cfg.Join) > 0 {
		go s.join(ctx)
	}
	s.startStorage(ctx)
	s.log.Info("ingester started", "member", s.cfg.NodeID, "raft", s.cfg.RaftAddr, "grpc", s.cfg.GRPCAddr,
		"http", s.cfg.HTTPAddr, "data_dir", s.cfg.DataDir)
	lcDone := make(chan error, 1)
	go func() { lcDone <- s.lc.Run(ctx) }()
	select {
	case err := <-lcDone:
		if err != nil {
			return err
		}
		// The member has left the ring and the Raft configuration. Its Raft state is now useless and
		// harmful: a node must start from an empty Raft directory to join again, so wipe it.
		s.close()
		dir := filepath.Join(s.cfg.DataDir, "raft")
		if err := os.RemoveAll(dir); err != nil {
			return fmt.Errorf("left the ring, but could not wipe %s: %w", dir, err)
		}
		s.log.Info("left the ring and the raft cluster; raft state wiped", "dir", dir)
		return nil
	case err := <-errc:
		return err
	}
}

// join asks the members named by -join, in turn, to add this node to the Raft configuration, until
// one accepts or ctx ends. A node whose data directory already holds Raft state is a member already;
// asking again is harmless (the leader treats a known id and address as done).
func (s *Server) join(ctx context.Context) {
	backoff := 200 * time.Millisecond
	for {
		for _, addr := range s.cfg.Join {
			err := s.joinVia(ctx, addr)
			if err == nil {
				return
			}
			s.log.Warn("join failed", "via", addr, "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

func (s *Server) joinVia(ctx context.Context, addr string) error {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	resp, err := ringpb.NewRingClient(conn).Join(ctx, &ringpb.JoinRequest{Id: s.cfg.NodeID, RaftAddr: s.cfg.RaftAddr})
	if err != nil {
		return err
	}
	s.log.Info("joined the cluster", "via", addr, "voter", resp.GetVoter(), "index", resp.GetIndex())
	return nil
}

// writable reports whether this member takes writes: only when it is ACTIVE in the applied ring.
func (s *Server) writable() (bool, string) {
	if st := s.lc.State(); !s.lc.Ready() {
		return false, fmt.Sprintf("ingester %s is %s, not ACTIVE: it takes no writes", s.cfg.NodeID, st)
	}
	return true, ""
}

func (s *Server) ready(w http.ResponseWriter, _ *http.Request) {
	if s.lc.Ready() {
		fmt.Fprintln(w, "ready")
		return
	}
	http.Error(w, fmt.Sprintf("not ready: member %s is %s", s.cfg.NodeID, s.lc.State()), http.StatusServiceUnavailable)
}

func (s *Server) shutdown(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "use POST to make this ingester leave the ring", http.StatusMethodNotAllowed)
		return
	}
	s.lc.Leave()
	w.WriteHeader(http.StatusAccepted)
	fmt.Fprintf(w, "member %s is leaving the ring\n", s.cfg.NodeID)
}

// close stops the servers and the Raft node. Safe to call more than once.
func (s *Server) close() {
	s.closeOnce.Do(func() {
		if s.http != nil {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			_ = s.http.Shutdown(ctx)
			cancel()
		} else if s.httpLn != nil {
			s.httpLn.Close()
		}
		if s.grpc != nil {
			stopped := make(chan struct{})
			go func() { s.grpc.GracefulStop(); close(stopped) }()
			select {
			case <-stopped:
			case <-time.After(2 * time.Second):
				s.grpc.Stop()
			}
		} else if s.grpcLn != nil {
			s.grpcLn.Close()
		}
		s.closeQuerier()
		s.closeTransfer()
		if s.dist != nil {
			s.dist.Wait()
		}
		if s.pool != nil {
			s.pool.Close()
		}
		if s.node != nil {
			if err := s.node.Shutdown(); err != nil {
				s.log.Warn("raft shutdown", "err", err)
			}
		}
		s.closeStorage()
		if s.store != nil {
			if err := s.store.Close(); err != nil {
				s.log.Warn("close the series store", "err", err)
			}
		}
	})
}
