package ingester

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/common/model"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/raftingest/raftingest/auth"
	"github.com/raftingest/raftingest/distributor"
	"github.com/raftingest/raftingest/ingesterpb"
	"github.com/raftingest/raftingest/lifecycle"
	"github.com/raftingest/raftingest/memstore"
	"github.com/raftingest/raftingest/overrides"
	"github.com/raftingest/raftingest/raftfsm"
	"github.com/raftingest/raftingest/ringpb"
	"github.com/raftingest/raftingest/ringstate"
	"github.com/raftingest/raftingest/ringview"
	"github.com/raftingest/raftingest/transfer"
	"github.com/raftingest/raftingest/transferpb"
)

// Server is one running ingester process. Create it with New, run it with Run.
type Server struct {
	cfg Config
	log *slog.Logger
	reg *prometheus.Registry
	// limits are the per-tenant limits: the flags' values, with -runtime-config.file's overrides.
	limits *overrides.Manager
	// tenantSeriesLimits gives tenants with a max_global_series_per_user override their own series
	// limit (limits.go); one value for the server's life, so the store's limit compares equal.
	tenantSeriesLimits *memstore.TenantSeriesLimits
	store              *memstore.Store
	node               *raftfsm.Node
	lc                 *lifecycle.Lifecycle
	dist               *distributor.Distributor
	pool               *distributor.GRPCClientPool
	grpc               *grpc.Server
	http               *http.Server
	grpcLn             net.Listener
	httpLn             net.Listener

	// front is s.http's handler: the start-up handler while New runs, the full mux after.
	front frontHandler
	// httpDone receives s.http's Serve result; the server starts in New.
	httpDone chan error
	// replay follows the WAL replay of New, for the start-up handler.
	replay *memstore.ReplayTracker

	// admin serves -admin.http-addr on adminLn (shutdown, flush, pprof); both nil when it is off.
	admin   *http.Server
	adminLn net.Listener

	ingest *ingesterService
	// auth is the cluster plane's mutual TLS and identities (-tls.*); nil without TLS.
	auth *auth.Authority
	// history is -debug.ring-history-file, or nil. Closed after the node's shutdown.
	history *raftfsm.HistoryFile

	storage  storageParts
	querier  querierParts
	transfer transferParts
	blocks   blocksParts // wire_blocks.go

	closeOnce sync.Once
}

// New opens the data directory, starts the Raft node and binds the gRPC and HTTP listeners. It does
// not register the member in the ring: Run does. On error everything opened so far is closed.
func New(cfg Config, log *slog.Logger) (_ *Server, err error) {
	// The cleanup closes this local, not the named result: every error return sets the result to
	// nil, and closing that would turn a clear start-up error into a nil-pointer panic (found by the
	// fault tests' WAL-truncation nemesis: TestRegression_IngesterNewNilServerPanic).
	s := &Server{cfg: cfg, log: log, reg: prometheus.NewRegistry()}
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
	if a := cfg.HTTPServer.AdminAddr; a != "" {
		if s.adminLn, err = net.Listen("tcp", a); err != nil {
			return nil, fmt.Errorf("-admin.http-addr %s: %w", a, err)
		}
	}
	httpTLS, err := httpTLSConfig(cfg.HTTPServer)
	if err != nil {
		return nil, err
	}
	s.warnPlainHTTP()

	// The HTTP listener serves from here on, first with the start-up handler (starting.go): /ready
	// and /metrics show the WAL replay's progress, every other path answers 503. The full mux
	// replaces it at the end of New.
	httpLog := log.With("component", "http")
	s.replay = &memstore.ReplayTracker{}
	s.front.set(s.startingHandler())
	s.http = newHTTPServer(&s.front, httpTLS, httpLog)
	s.cfg.HTTPServer.setTimeouts(s.http, false)
	s.httpDone = make(chan error, 1)
	go func() { s.httpDone <- serveHTTP(s.http, s.httpLn) }()

	// The WAL is replayed before the member joins or resumes, so that it never takes writes or
	// serves reads with part of its acknowledged data missing.
	storeCfg := cfg.Store
	storeCfg.ReplayTracker = s.replay
	if s.store, err = memstore.Open(storeCfg, s.reg, log.With("component", "memstore")); err != nil {
		return nil, fmt.Errorf("open the series store in %s: %w", cfg.Store.WALDir, err)
	}

	if s.auth, err = auth.New(cfg.TLS, cfg.NodeID, s.reg, log.With("component", "auth")); err != nil {
		return nil, err
	}
	warnPlainClusterPlane(cfg, log)

	rcfg := cfg.Raft
	rcfg.TLS = s.auth
	rcfg.Logger = log.With("component", "raft")
	rcfg.Registerer = s.reg
	rcfg.Dial = cfg.Dial
	rcfg.Clock = cfg.Clock // nil: time.Now
	if cfg.RingHistoryFile != "" {
		if s.history, err = raftfsm.OpenHistoryFile(cfg.RingHistoryFile); err != nil {
			return nil, fmt.Errorf("-debug.ring-history-file: %w", err)
		}
		rcfg.History = s.history.Record
	}
	if s.node, err = raftfsm.NewNode(rcfg); err != nil {
		return nil, fmt.Errorf("start raft node %s: %w", cfg.NodeID, err)
	}

	if hb, lc := cfg.Lifecycle.HeartbeatTimeout, cfg.Lifecycle; hb > 0 && hb <= time.Duration(ringstate.MaxRingTimeGap)*time.Millisecond+lc.HeartbeatPeriod {
		// Not refused: short timeouts are how tests and small labs see failures quickly. But a forward
		// step of the leader's clock, or the end of a Raft outage, ages every heartbeat by up to
		// MaxRingTimeGap at once, and with a timeout this short every member then reads UNHEALTHY until
		// it heartbeats again: writes fail or spill to non-owners for that moment.
		log.Warn("-ring.heartbeat-timeout is not above 30s plus -ring.heartbeat-period: a clock step on the leader or the end of a raft outage can make every member UNHEALTHY until its next heartbeat",
			"ring_heartbeat_timeout", hb, "ring_heartbeat_period", lc.HeartbeatPeriod)
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

	s.ingest = &ingesterService{store: s.store, writable: s.writable, fence: newPushFence(cfg.NodeID, s.node.OwnershipIndex, s.reg)}
	s.pool = distributor.NewGRPCClientPool(cfg.Distributor.ClientIdleTimeout, log.With("component", "distributor"),
		append([]grpc.DialOption{grpc.WithDefaultCallOptions(grpc.MaxCallSendMsgSize(cfg.Distributor.MaxRecvMsgSize))},
			s.dialOptions()...)...)
	// This node's own replica is stored by a direct call, not a gRPC round trip to itself: the
	// profile of a single node under load spent 37% of its CPU re-decoding its own pushes.
	clients := distributor.WithLocalClient(s.pool, cfg.GRPCAddr, newLocalClient(s.ingest))
	if s.limits, err = overrides.New(cfg.RuntimeConfig, overrides.Limits{
		IngestionRate: cfg.Distributor.IngestionRateLimit, IngestionBurstSize: cfg.Distributor.IngestionBurstSize,
		MaxGlobalSeriesPerUser:    cfg.SeriesLimits.MaxGlobalSeriesPerUser,
		MaxGlobalExemplarsPerUser: cfg.SeriesLimits.MaxGlobalExemplarsPerUser,
		MaxFetchedSeriesPerQuery:  cfg.Querier.Config.MaxFetchedSeriesPerQuery, MaxFetchedChunksPerQuery: cfg.Querier.Config.MaxFetchedChunksPerQuery,
		MaxFetchedChunkBytesPerQuery: cfg.Querier.Config.MaxFetchedChunkBytesPerQuery,
		OutOfOrderTimeWindow:         model.Duration(cfg.Store.OutOfOrderTimeWindow),
		AcceptHASamples:              true, // -distributor.ha-tracker.enable turns the tracker on for every tenant
		HAClusterLabel:               cfg.Distributor.HATracker.ClusterLabel, HAReplicaLabel: cfg.Distributor.HATracker.ReplicaLabel,
		HAMaxClusters:             cfg.Distributor.HATracker.MaxClusters,
		MaxNativeHistogramBuckets: cfg.Distributor.Limits.MaxNativeHistogramBuckets,
	}, s.reg, log.With("component", "runtime-config")); err != nil {
		return nil, err
	}
	// Asked once per push: a reloaded out_of_order_time_window applies to the next push.
	s.store.SetOutOfOrderWindow(func(tenant string) time.Duration {
		return time.Duration(s.limits.For(tenant).OutOfOrderTimeWindow)
	})
	s.tenantSeriesLimits = s.newTenantSeriesLimits()
	if err := s.wireExemplarsAndMetadata(); err != nil { // exemplars.go
		return nil, err
	}
	if s.dist, err = distributor.New(cfg.Distributor, distributor.Deps{Ring: s.node, Clients: clients,
		Registerer: s.reg, Logger: log.With("component", "distributor"), Now: cfg.Clock,
		OldestInMemory: s.oldestInMemory, HA: s.node,
		HALimits: func(tenant string) distributor.HATenantLimits {
			l := s.limits.For(tenant)
			return distributor.HATenantLimits{Accept: l.AcceptHASamples, ClusterLabel: l.HAClusterLabel,
				ReplicaLabel: l.HAReplicaLabel, MaxClusters: l.HAMaxClusters}
		},
		Limits: func(tenant string) (float64, int) {
			l := s.limits.For(tenant)
			return l.IngestionRate, l.IngestionBurstSize
		},
		ExemplarsEnabled: func(tenant string) bool { return s.limits.For(tenant).MaxGlobalExemplarsPerUser > 0 },
	}); err != nil {
		return nil, fmt.Errorf("distributor: %w", err)
	}
	s.dist.SetMaxNativeHistogramBuckets(func(tenant string) int { return s.limits.For(tenant).MaxNativeHistogramBuckets })

	// Receive limits per method, keepalive, stream cap, panic recovery, rights: grpcserver.go.
	grpcOpts, err := s.grpcServerOptions()
	if err != nil {
		return nil, err
	}
	s.grpc = grpc.NewServer(grpcOpts...)
	ringpb.RegisterRingServer(s.grpc, raftfsm.NewService(s.node, func(context.Context) error { s.lc.Leave(); return nil }))
	ingesterpb.RegisterIngesterServerRaw(s.grpc, rawIngesterService{s.ingest})

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
	s.blocks.AuthorizeDelete = s.authorizeDelete // wire_compact.go: DeleteBlocks' compactor lease check
	mux.Handle("/ring", ringview.Handler(s.node.Ring, timeoutMs, ringview.WithRaftSource(s.raftRoles),
		ringview.WithHandoverSource(s.handoverProgress)))
	mux.Handle("/api/v1/push", ringGate(s.node.CaughtUp, s.dist))
	mux.Handle("/otlp/v1/metrics", ringGate(s.node.CaughtUp, s.dist.OTLPHandler()))
	mux.Handle("/metrics", promhttp.HandlerFor(s.reg, promhttp.HandlerOpts{Registry: s.reg}))
	mux.HandleFunc("/ready", s.ready)
	mux.Handle("/runtime_config", s.limits.Handler())
	// Shutdown, flush and pprof are on the admin listener only (admin.go).
	if s.adminLn != nil {
		s.admin = newHTTPServer(s.adminHandler(), httpTLS, httpLog.With("listener", "admin"))
		s.cfg.HTTPServer.setTimeouts(s.admin, true)
	}
	// -ingester.max-global-series-per-user as a local limit, kept up to date by Run (limits.go).
	s.applySeriesLimit()
	if err := s.registerSeriesLimitMetric(); err != nil {
		return nil, fmt.Errorf("series limit metric: %w", err)
	}
	if err := s.registerZoneMetric(); err != nil {
		return nil, fmt.Errorf("zone metric: %w", err)
	}
	s.front.set(mux)
	return s, nil
}

// Leave asks the member to leave the ring gracefully; Run returns when it has.
func (s *Server) Leave() { s.lc.Leave() }

// Node returns the Raft node, for tests and diagnostics.
func (s *Server) Node() *raftfsm.Node { return s.node }

// Registry returns the server's metrics registry.
func (s *Server) Registry() *prometheus.Registry { return s.reg }

// membershipCheckTimeout bounds the start-up check of a restarted node's membership: long enough
// for a cluster restarting as a whole to elect a leader, short enough not to hold up a node whose
// cluster has no quorum (the background check goes on, and the leader refuses a Register from a
// node outside its configuration anyway).
const membershipCheckTimeout = 15 * time.Second

// Run serves until the member has left the ring (nil) or ctx is cancelled (ctx.Err(), without
// leaving: an abrupt stop, as a crash would be). It also returns on a fatal condition: this node
// was removed from the cluster (an error wrapping lifecycle.ErrRemoved that names the raft
// directory to wipe), -join was refused (a duplicate or invalid id), or a server failed. It cancels
// and waits for every goroutine it started, and closes everything before returning.
func (s *Server) Run(ctx context.Context) error {
	defer s.close()
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() {
		cancel()
		wg.Wait()
	}()
	errc := make(chan error, 3)
	go func() { errc <- fmt.Errorf("grpc server: %w", s.grpc.Serve(s.grpcLn)) }()
	go func() { // started by New
		select {
		case err := <-s.httpDone:
			if !errors.Is(err, http.ErrServerClosed) {
				errc <- fmt.Errorf("http server: %w", err)
			}
		case <-ctx.Done():
		}
	}()
	if s.admin != nil {
		go func() {
			if err := serveHTTP(s.admin, s.adminLn); !errors.Is(err, http.ErrServerClosed) {
				errc <- fmt.Errorf("admin http server: %w", err)
			}
		}()
	}
	raftDir := filepath.Join(s.cfg.DataDir, "raft")
	joinErr := make(chan error, 1)
	if len(s.cfg.Join) > 0 {
		if s.node.ExistingState() {
			// A member already, or removed: a removed node must not be re-added over its stale log
			// (the check below tells which).
			s.log.Info("the data directory holds raft state: not asking to join again", "raft_dir", raftDir)
		} else {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := s.join(ctx); err != nil {
					joinErr <- err
				}
			}()
		}
	}
	s.startStorage(ctx)
	defer s.runCompactor(ctx)() // wire_compact.go: stopped before Run's other goroutines
	wg.Add(1)
	go func() { defer wg.Done(); s.watchSeriesLimit(ctx) }()
	wg.Add(1)
	go func() { defer wg.Done(); s.watchZones(ctx) }()
	wg.Add(1)
	go func() { defer wg.Done(); s.limits.Run(ctx) }()
	wg.Add(1)
	go func() { defer wg.Done(); s.ingest.metadata.run(ctx) }()
	wg.Add(1) // the leader removes HA entries idle for 30m (Cortex's idle age), whatever this node's flags
	go func() { defer wg.Done(); s.node.RunHAGC(ctx, 5*time.Minute, 30*time.Minute) }()
	adminAddr := s.cfg.HTTPServer.AdminAddr
	if adminAddr == "" {
		adminAddr = "off"
	}
	s.log.Info("ingester started", "member", s.cfg.NodeID, "raft", s.cfg.RaftAddr, "grpc", s.cfg.GRPCAddr,
		"http", s.cfg.HTTPAddr, "admin", adminAddr, "https", s.cfg.HTTPServer.TLSEnabled(), "data_dir", s.cfg.DataDir)

	if s.node.ExistingState() {
		cctx, ccancel := context.WithTimeout(ctx, membershipCheckTimeout)
		wg.Add(1)
		go func() { // a leave request ends the check early
			defer wg.Done()
			select {
			case <-s.lc.LeaveRequested():
				ccancel()
			case <-cctx.Done():
			}
		}()
		err := s.node.CheckMembership(cctx, s.cfg.Join)
		ccancel()
		switch {
		case errors.Is(err, raftfsm.ErrRemovedFromCluster):
			return s.removedError(raftDir)
		case err != nil && ctx.Err() == nil:
			s.log.Warn("could not confirm this node's membership with a leader; going on", "err", err)
		}
	}

	lcDone := make(chan error, 1)
	wg.Add(1)
	go func() {
		defer wg.Done()
		lcDone <- s.lc.Run(ctx)
	}()
	leaveCh := s.lc.LeaveRequested()
	for {
		select {
		case err := <-lcDone:
			if errors.Is(err, lifecycle.ErrRemoved) {
				return s.removedError(raftDir)
			}
			if err != nil {
				return err
			}
			// The member has left the ring and the Raft configuration. -ingester.final-sleep keeps
			// /metrics up a while for the last scrape (a second signal cancels ctx and cuts it).
			if d := s.cfg.Lifecycle.FinalSleep; d > 0 {
				s.log.Info("left the ring; serving /metrics until -ingester.final-sleep ends", "final_sleep", d)
				t := time.NewTimer(d)
				select {
				case <-t.C:
				case <-ctx.Done():
					t.Stop()
				}
			}
			// Its Raft state is now useless and harmful: a node must start from an empty Raft
			// directory to join again, so wipe it.
			s.close()
			if err := os.RemoveAll(raftDir); err != nil {
				return fmt.Errorf("left the ring, but could not wipe %s: %w", raftDir, err)
			}
			s.log.Info("left the ring and the raft cluster; raft state wiped", "dir", raftDir)
			return nil
		case <-s.node.Removed():
			return s.removedError(raftDir)
		case err := <-joinErr:
			return err
		case err := <-errc:
			return err
		case <-leaveCh:
			leaveCh = nil
			if !s.node.ExistingState() && !s.node.InConfiguration() {
				// Never added to any cluster: nothing was committed, nothing to hand over or leave.
				s.log.Info("leave requested before this node joined a cluster: nothing to leave", "member", s.cfg.NodeID)
				return nil
			}
		}
	}
}

// removedError is Run's error for a node removed from the cluster by an operator.
func (s *Server) removedError(raftDir string) error {
	return fmt.Errorf("%w: wipe %s before this node rejoins, then start it with -join or add it with `ringctl join`",
		lifecycle.ErrRemoved, raftDir)
}

// join asks the members named by -join, in turn, to add this node to the Raft configuration, until
// one accepts or ctx ends (nil). A refusal no retry can change — this id is taken by another node,
// the id or address is invalid, or this node's certificate lacks the right — is returned: the process must exit and say so.
func (s *Server) join(ctx context.Context) error {
	backoff := 200 * time.Millisecond
	for {
		for _, addr := range s.cfg.Join {
			err := s.joinVia(ctx, addr)
			if err == nil {
				return nil
			}
			if c := status.Code(err); c == codes.AlreadyExists || c == codes.InvalidArgument || c == codes.PermissionDenied {
				return fmt.Errorf("-join via %s refused: %s", addr, status.Convert(err).Message())
			}
			s.log.Warn("join failed", "via", addr, "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// joinVia asks the member at addr to add this node. Under TLS a follower does not forward the
// request but names the leader (raftfsm.RedirectOf): the request follows, a few times at most.
func (s *Server) joinVia(ctx context.Context, addr string) error {
	for redirects := 0; ; redirects++ {
		err := s.joinOnce(ctx, addr)
		_, next, ok := raftfsm.RedirectOf(err)
		if !ok || next == "" || redirects == 3 {
			return err
		}
		s.log.Debug("join redirected to the leader", "via", addr, "leader", next)
		addr = next
	}
}

func (s *Server) joinOnce(ctx context.Context, addr string) error {
	conn, err := grpc.NewClient(addr, s.dialOptions()...)
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

// dialOptions are the options of every gRPC client this node opens to another member
// (distributor pushes, queries, -join, hand-over streams): the transport credentials — mutual TLS
// expecting at each address the member the ring has there, or plain without -tls.* — and a context
// dialer through Config.Dial when it is set.
func (s *Server) dialOptions() []grpc.DialOption {
	opts := []grpc.DialOption{s.auth.DialOption(s.node.MemberAt)}
	if dial := s.cfg.Dial; dial != nil {
		opts = append(opts, grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
			return dial(ctx, "tcp", addr)
		}))
	}
	return opts
}

// transferDialer is the hand-over's dialer: nil (transfer.GRPCDialer, plain) without Config.Dial
// and TLS, else a client with dialOptions.
func (s *Server) transferDialer() transfer.Dialer {
	if s.cfg.Dial == nil && s.auth == nil {
		return nil
	}
	return func(_ context.Context, addr string) (transferpb.TransferClient, func() error, error) {
		conn, err := grpc.NewClient(addr, s.dialOptions()...)
		if err != nil {
			return nil, nil, fmt.Errorf("dial joiner %s: %w", addr, err)
		}
		return transferpb.NewTransferClient(conn), conn.Close, nil
	}
}

// drainWrites waits until the member's state has left ACTIVE in the applied ring (so that Push
// refuses new writes), then until every Push in flight has finished.
func (s *Server) drainWrites(ctx context.Context) error {
	for {
		ch := s.node.Changed()
		if s.lc.State() != ringstate.ACTIVE {
			break
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	s.ingest.drainWrites()
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
	if ok, applied, target := s.node.CaughtUp(); !ok {
		http.Error(w, fmt.Sprintf("not ready: replaying the raft log (applied %d of %d)", applied, target), http.StatusServiceUnavailable)
		return
	}
	if err := s.store.WALError(); err != nil {
		// Pushes are answered 5xx until the WAL's own retry commits; reads go on.
		http.Error(w, fmt.Sprintf("not ready: the WAL cannot commit, writes are refused until a retry succeeds: %v", err), http.StatusServiceUnavailable)
		return
	}
	if s.lc.Ready() {
		fmt.Fprintln(w, "ready")
		return
	}
	msg := fmt.Sprintf("not ready: member %s is %s", s.cfg.NodeID, s.lc.State())
	if p, ok := s.handoverProgress(); ok {
		msg += "; handing over " + strings.TrimPrefix(p.Describe(), s.cfg.NodeID+" ")
	}
	if s.storage.flusher != nil {
		if done, total, ok := s.storage.flusher.Progress(); ok {
			msg += fmt.Sprintf("; flushing: %d of %d series written", done, total)
		}
	}
	http.Error(w, msg, http.StatusServiceUnavailable)
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
		if s.admin != nil {
			// A profile in progress (/debug/pprof/profile?seconds=N) gets 2s to finish, then is cut.
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			_ = s.admin.Shutdown(ctx)
			cancel()
			_ = s.admin.Close()
		} else if s.adminLn != nil {
			s.adminLn.Close()
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
		if s.history != nil {
			if err := s.history.Close(); err != nil {
				s.log.Warn("ring history incomplete", "file", s.cfg.RingHistoryFile, "err", err)
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

// raftRoles is the Raft configuration and leader as this node knows them, for the /ring page. A
// node with no configuration yet (not joined) cannot tell.
func (s *Server) raftRoles() (leader string, servers []ringview.RaftServer, ok bool) {
	st := s.node.Status()
	if len(st.Servers) == 0 {
		return "", nil, false
	}
	servers = make([]ringview.RaftServer, len(st.Servers))
	for i, srv := range st.Servers {
		servers[i] = ringview.RaftServer{ID: srv.ID, Voter: srv.Voter}
	}
	return st.LeaderID, servers, true
}

// handoverProgress is this member's hand-over stream in flight, for the /ring page.
func (s *Server) handoverProgress() (ringview.HandoverProgress, bool) {
	if s.transfer.leaver == nil {
		return ringview.HandoverProgress{}, false
	}
	p, ok := s.transfer.leaver.Progress()
	if !ok {
		return ringview.HandoverProgress{}, false
	}
	return ringview.HandoverProgress{Member: s.cfg.NodeID, Joiner: p.Joiner, Series: p.Series, SeriesTotal: p.SeriesTotal,
		Bytes: p.Bytes, BytesTotalEst: p.BytesTotalEst, SeriesPerS: p.SeriesPerS, TimeLeftSeconds: p.TimeLeftSeconds,
		ElapsedSeconds: p.ElapsedSeconds}, true
}
