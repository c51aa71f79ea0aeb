package distributor

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"html/template"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/model"

	"github.com/raftingest/raftingest/ringstate"
)

// The HA tracker: deduplication of Prometheus HA pairs, as Cortex's (-distributor.ha-tracker.*), with
// the elected replica of each (tenant, cluster) kept in the Raft ring instead of Consul or etcd.
//
// A push whose first series carries both the cluster and the replica label belongs to that HA
// cluster: it is stored when its replica is the elected one, and answered 202 and dropped otherwise;
// the replica label is removed from every series of a stored push (the cluster label is kept). A push
// without both labels passes through untouched. Decisions read this member's applied ring
// (ringstate.Ring.HAReplica); changes are Raft commits (ringstate.OpHAElect) proposed through the
// node, decided at ring time by the log, so two distributors racing to elect different replicas
// agree on one winner.
//
// Stale reads. This member's ring may lag the leader's by the entries not applied here yet:
//   - It says R1 is elected and R1 sends: stored while R1's entry is fresh (below). If R2 was
//     elected meanwhile (R1 had stopped sending for the failover timeout, then came back), R1's
//     samples are stored for as long as the apply lag lasts, beside R2's: duplicates for
//     milliseconds, never a loss; Cortex's cache of the KV store has the same window. Once the entry
//     is stale by either clock (this member may be cut off from the leader, with R2 elected in
//     entries it cannot see), R1 is stored only after a refresh commits: the log decides.
//   - It says R1 is elected and R2 sends: dropped only while R1's entry was seen refreshed within
//     the failover timeout both by ring time and by this distributor's own clock (the moment it
//     last saw RefreshedMs change). The clock matters on a member cut off from the leader, whose
//     ring time stops: its entries would look fresh forever, and it would drop R2 for good after
//     R1 died. Past the timeout by either clock, it proposes the election of R2 and waits for the
//     log's answer; if nothing commits (no leader, no quorum, a rolling upgrade in progress) the push
//     gets 503, which Prometheus retries — Cortex answers a failed KV CAS with 5xx too. So a sample
//     is dropped with 202 only on a decision the log made at most one failover timeout ago.

// HATrackerConfig is -distributor.ha-tracker.*, Cortex's flags and defaults.
type HATrackerConfig struct {
	Enable                 bool          // -distributor.ha-tracker.enable
	ClusterLabel           string        // -distributor.ha-tracker.cluster
	ReplicaLabel           string        // -distributor.ha-tracker.replica
	UpdateTimeout          time.Duration // -distributor.ha-tracker.update-timeout
	UpdateTimeoutJitterMax time.Duration // -distributor.ha-tracker.update-timeout-jitter-max
	FailoverTimeout        time.Duration // -distributor.ha-tracker.failover-timeout
	MaxClusters            int           // -distributor.ha-tracker.max-clusters
}

// RegisterFlags registers the HA tracker's flags with Cortex's names and defaults.
func (c *HATrackerConfig) RegisterFlags(f *flag.FlagSet) {
	f.BoolVar(&c.Enable, "distributor.ha-tracker.enable", false, "Deduplicate Prometheus HA pairs: of the pushes carrying both the cluster and the replica label, store only the elected replica's (the others get 202 and are dropped) and remove the replica label. The elected replica of each tenant and cluster is kept in the Raft ring; needs every member to run a build that reads Raft command version 5 (pushes of HA pairs get 503 until then).")
	f.StringVar(&c.ClusterLabel, "distributor.ha-tracker.cluster", "cluster", "Label naming the HA cluster (Prometheus' external label shared by both replicas). It is kept on the stored series.")
	f.StringVar(&c.ReplicaLabel, "distributor.ha-tracker.replica", "__replica__", "Label naming the replica within its HA cluster. It is removed before storage.")
	f.DurationVar(&c.UpdateTimeout, "distributor.ha-tracker.update-timeout", 15*time.Second, "How often, at most, a distributor refreshes the elected replica's entry in the Raft ring while it keeps sending (plus a random jitter up to -distributor.ha-tracker.update-timeout-jitter-max), so a busy cluster does not flood Raft.")
	f.DurationVar(&c.UpdateTimeoutJitterMax, "distributor.ha-tracker.update-timeout-jitter-max", 5*time.Second, "Maximum random jitter added to -distributor.ha-tracker.update-timeout, so the distributors' refreshes spread out.")
	f.DurationVar(&c.FailoverTimeout, "distributor.ha-tracker.failover-timeout", 30*time.Second, "Another replica is elected only when the elected one's entry was last refreshed longer ago than this. Must exceed -distributor.ha-tracker.update-timeout plus its jitter by at least 1s.")
	f.IntVar(&c.MaxClusters, "distributor.ha-tracker.max-clusters", 100, "Maximum number of HA clusters per tenant (Mimir's limit); a push electing one more gets 400.")
}

// Validate checks the flags, naming them (only when the tracker is enabled).
func (c *HATrackerConfig) Validate() error {
	if !c.Enable {
		return nil
	}
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if !model.LegacyValidation.IsValidLabelName(c.ClusterLabel) {
		bad("-distributor.ha-tracker.cluster=%q: want a label name ([a-zA-Z_][a-zA-Z0-9_]*)", c.ClusterLabel)
	}
	if !model.LegacyValidation.IsValidLabelName(c.ReplicaLabel) {
		bad("-distributor.ha-tracker.replica=%q: want a label name ([a-zA-Z_][a-zA-Z0-9_]*)", c.ReplicaLabel)
	}
	if c.ClusterLabel == c.ReplicaLabel {
		bad("-distributor.ha-tracker.cluster and -distributor.ha-tracker.replica are both %q: want two labels", c.ClusterLabel)
	}
	if c.UpdateTimeout <= 0 {
		bad("-distributor.ha-tracker.update-timeout=%s: want more than 0", c.UpdateTimeout)
	}
	if c.UpdateTimeoutJitterMax < 0 {
		bad("-distributor.ha-tracker.update-timeout-jitter-max=%s: want 0 or more", c.UpdateTimeoutJitterMax)
	}
	if min := c.UpdateTimeout + c.UpdateTimeoutJitterMax + time.Second; c.FailoverTimeout < min {
		bad("-distributor.ha-tracker.failover-timeout=%s: want at least -distributor.ha-tracker.update-timeout plus -distributor.ha-tracker.update-timeout-jitter-max plus 1s (%s), or a live replica would be failed over between two refreshes",
			c.FailoverTimeout, min)
	}
	if c.FailoverTimeout.Milliseconds() > ringstate.MaxHAFailoverMs {
		bad("-distributor.ha-tracker.failover-timeout=%s: at most %s", c.FailoverTimeout, time.Duration(ringstate.MaxHAFailoverMs)*time.Millisecond)
	}
	if c.MaxClusters < 1 || c.MaxClusters > ringstate.MaxHAEntries {
		bad("-distributor.ha-tracker.max-clusters=%d: want 1 to %d", c.MaxClusters, ringstate.MaxHAEntries)
	}
	return errors.Join(errs...)
}

// HAElector commits elections of the HA tracker. The raftfsm node satisfies it
// (raftfsm.Node.ElectHAReplica): a refusal is ringstate.ErrHAReplicaElected (with the entry that
// won) or ringstate.ErrHATooManyClusters; any other error means the outcome is unknown.
type HAElector interface {
	ElectHAReplica(ctx context.Context, tenant, cluster, replica string, failover time.Duration,
		maxClusters int) (ringstate.HAReplica, error)
}

// HATenantLimits are one tenant's HA tracker limits, from the runtime overrides (Mimir's
// accept_ha_samples, ha_cluster_label, ha_replica_label, ha_max_clusters). Accept false: the
// tenant's pushes pass through untouched. Empty labels and a 0 take the flags' values.
type HATenantLimits struct {
	Accept                     bool
	ClusterLabel, ReplicaLabel string
	MaxClusters                int
}

// haElectTimeout bounds one election; pushes waiting for it give up with their own context earlier.
const haElectTimeout = 10 * time.Second

type haKey struct{ tenant, cluster string }

// haKeyState is what this distributor remembers of one (tenant, cluster). Guarded by haTracker.mu.
type haKeyState struct {
	seenReplica   string    // the elected replica as last seen in this member's ring
	seenRefreshed int64     // its RefreshedMs as last seen
	seenAt        time.Time // when this distributor saw seenRefreshed change (its own clock)
	nextRefresh   time.Time // no refresh proposed before
	nextElect     time.Time // after a refused election: none proposed before
	inflight      *haCall   // the election or refresh being committed, if any
}

type haCall struct {
	done chan struct{}
	e    ringstate.HAReplica
	err  error
}

type haTracker struct {
	cfg     HATrackerConfig
	ring    RingSource
	elector HAElector
	limits  func(tenant string) HATenantLimits // nil: the flags' for every tenant
	now     func() time.Time
	log     *slog.Logger

	changes   *prometheus.CounterVec // {user, cluster}
	electedTS *prometheus.GaugeVec   // {user, cluster}
	cas       *prometheus.CounterVec // {user, cluster}
	deduped   *prometheus.CounterVec // {user, cluster}
	nonHA     *prometheus.CounterVec // {user}

	mu   sync.Mutex
	keys map[haKey]*haKeyState
	rnd  *rand.Rand
	wg   sync.WaitGroup // asynchronous refreshes
}

func newHATracker(cfg HATrackerConfig, ring RingSource, elector HAElector, limits func(string) HATenantLimits,
	now func() time.Time, log *slog.Logger, reg prometheus.Registerer) (*haTracker, error) {
	h := &haTracker{cfg: cfg, ring: ring, elector: elector, limits: limits, now: now, log: log, keys: map[haKey]*haKeyState{},
		rnd: rand.New(rand.NewPCG(uint64(now().UnixNano()), 0x4841)),
		changes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "cortex_ha_tracker_elected_replica_changes_total",
			Help: "Changes of the elected replica of an HA cluster, as this distributor saw them in its ring."}, []string{"user", "cluster"}),
		electedTS: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "cortex_ha_tracker_elected_replica_timestamp_seconds",
			Help: "Ring time of the last refresh of the elected replica's entry, as this distributor saw it."}, []string{"user", "cluster"}),
		cas: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "cortex_ha_tracker_kv_store_cas_total",
			Help: "Elections and refreshes this distributor proposed to the Raft ring (the KV store's CAS, in Cortex)."}, []string{"user", "cluster"}),
		deduped: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "cortex_distributor_deduped_samples_total",
			Help: "Samples dropped because they came from a replica of an HA cluster that is not the elected one."}, []string{"user", "cluster"}),
		nonHA: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "cortex_distributor_non_ha_samples_received_total",
			Help: "Samples received without both HA labels (they pass through the HA tracker untouched)."}, []string{"user"}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{h.changes, h.electedTS, h.cas, h.deduped, h.nonHA} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return h, nil
}

// check decides a push: nil to store it (with the replica label blanked, which normalize then
// removes), or the answer: 202 (not the elected replica: dropped), 400 (too many clusters, or a label
// value too long for the ring), 503 (no election could be committed).
func (h *haTracker) check(ctx context.Context, tenant string, req *WriteRequest) *PushError {
	if len(req.Series) == 0 {
		return nil
	}
	clusterLabel, replicaLabel, maxClusters := h.cfg.ClusterLabel, h.cfg.ReplicaLabel, h.cfg.MaxClusters
	if h.limits != nil {
		l := h.limits(tenant)
		if !l.Accept {
			return nil
		}
		clusterLabel, replicaLabel = cmp.Or(l.ClusterLabel, clusterLabel), cmp.Or(l.ReplicaLabel, replicaLabel)
		maxClusters = cmp.Or(l.MaxClusters, maxClusters)
	}
	var cluster, replica string
	for _, l := range req.Series[0].Labels {
		switch l.Name {
		case clusterLabel:
			cluster = l.Value
		case replicaLabel:
			replica = l.Value
		}
	}
	if cluster == "" || replica == "" {
		h.nonHA.WithLabelValues(tenant).Add(float64(countSamples(req)))
		return nil
	}
	// The ring's own rule, checked before anything is proposed or counted: a value the ring refuses
	// would otherwise be answered 5xx and retried for ever, and one that is not valid UTF-8 made a
	// metric's WithLabelValues panic (found by review).
	if err := ringstate.CheckHAValues(tenant, cluster, replica); err != nil {
		return &PushError{Status: http.StatusBadRequest, Msg: fmt.Sprintf("HA tracker: %v (labels %s and %s of the first series)",
			err, clusterLabel, replicaLabel)}
	}
	// The labels alias the request body, which goes back to a pool after the push: the key map and
	// the elections must hold copies.
	cluster, replica = strings.Clone(cluster), strings.Clone(replica)
	accept, perr := h.decide(ctx, tenant, cluster, replica, maxClusters)
	if perr != nil {
		return perr
	}
	if !accept {
		n := countSamples(req)
		h.deduped.WithLabelValues(tenant, cluster).Add(float64(n))
		return &PushError{Status: http.StatusAccepted, Msg: fmt.Sprintf("HA tracker: replica %q of cluster %q is not the elected one; %d samples dropped",
			replica, cluster, n)}
	}
	for i := range req.Series {
		ls := req.Series[i].Labels
		for j := range ls {
			if ls[j].Name == replicaLabel {
				// normalize removes labels with an empty value and marks the series for re-encoding.
				ls[j].Value = ""
			}
		}
	}
	return nil
}

func countSamples(req *WriteRequest) int {
	n := 0
	for i := range req.Series {
		n += len(req.Series[i].Samples) + req.Series[i].Histograms
	}
	return n
}

// decide says whether replica's push is stored; see the package comment above for the rules.
func (h *haTracker) decide(ctx context.Context, tenant, cluster, replica string, maxClusters int) (bool, *PushError) {
	r := h.ring.Ring()
	if r == nil {
		return false, &PushError{Status: http.StatusServiceUnavailable, Msg: "HA tracker: the ring is not known yet"}
	}
	now := h.now()
	k := haKey{tenant, cluster}
	e, ok := r.HAReplica(tenant, cluster)
	h.mu.Lock()
	st := h.keys[k]
	if st == nil {
		if !ok && r.HAClusters(tenant) >= maxClusters {
			h.mu.Unlock()
			return false, tooMany(tenant, cluster, maxClusters, r.HAClusters(tenant))
		}
		st = &haKeyState{seenAt: now}
		h.keys[k] = st
		h.pruneLocked(r)
	}
	if ok {
		h.observeLocked(st, e, now)
	}
	switch {
	case ok && e.Replica == replica && fresh(st, e, r, now, h.cfg.FailoverTimeout):
		if st.inflight == nil && !now.Before(st.nextRefresh) && r.TimeMs()-e.RefreshedMs >= h.cfg.UpdateTimeout.Milliseconds() {
			st.nextRefresh = now.Add(h.cfg.UpdateTimeout + h.jitterLocked())
			h.startLocked(k, st, replica, maxClusters)
		}
		h.mu.Unlock()
		return true, nil
	case ok && e.Replica == replica:
		// The elected replica, but its entry is stale by one of the clocks: another replica may have
		// been elected in entries this member has not applied (it is cut off from the leader). Store
		// only once a refresh commits: the log says whether it is still the elected one.
	case ok:
		if fresh(st, e, r, now, h.cfg.FailoverTimeout) || now.Before(st.nextElect) {
			h.mu.Unlock()
			return false, nil
		}
	default:
		if n := r.HAClusters(tenant); n >= maxClusters {
			h.mu.Unlock()
			return false, tooMany(tenant, cluster, maxClusters, n)
		}
	}
	call := st.inflight
	if call == nil {
		call = h.startLocked(k, st, replica, maxClusters)
	}
	h.mu.Unlock()
	select {
	case <-call.done:
	case <-ctx.Done():
		return false, &PushError{Status: http.StatusServiceUnavailable, Msg: fmt.Sprintf("HA tracker: election for cluster %q: %v", cluster, ctx.Err())}
	}
	switch {
	case call.err == nil || errors.Is(call.err, ringstate.ErrHAReplicaElected):
		return call.e.Replica == replica, nil
	case errors.Is(call.err, ringstate.ErrHATooManyClusters), errors.Is(call.err, ringstate.ErrInvalidCommand):
		// Committed refusals: retrying the same push gives the same answer.
		return false, &PushError{Status: http.StatusBadRequest, Msg: "HA tracker: " + call.err.Error()}
	}
	return false, &PushError{Status: http.StatusServiceUnavailable, Msg: fmt.Sprintf("HA tracker: electing replica %q of cluster %q: %v",
		replica, cluster, call.err)}
}

// fresh reports whether entry e, as this member's ring r holds it, was refreshed within the failover
// timeout both by ring time and by this distributor's clock (since it saw RefreshedMs change).
func fresh(st *haKeyState, e ringstate.HAReplica, r *ringstate.Ring, now time.Time, failover time.Duration) bool {
	return now.Sub(st.seenAt) <= failover && r.TimeMs()-e.RefreshedMs <= failover.Milliseconds()
}

func tooMany(tenant, cluster string, limit, n int) *PushError {
	return &PushError{Status: http.StatusBadRequest, Msg: fmt.Sprintf("HA tracker: too many HA clusters for tenant %q (limit: %d, has %d): cluster %q refused",
		tenant, limit, n, cluster)}
}

func (h *haTracker) jitterLocked() time.Duration {
	if h.cfg.UpdateTimeoutJitterMax <= 0 {
		return 0
	}
	return time.Duration(h.rnd.Int64N(int64(h.cfg.UpdateTimeoutJitterMax)))
}

// observeLocked records what this member's ring says of a key.
func (h *haTracker) observeLocked(st *haKeyState, e ringstate.HAReplica, now time.Time) {
	if e.RefreshedMs < st.seenRefreshed {
		return // an older ring than one already seen (read before an election completed)
	}
	if st.seenReplica != "" && st.seenReplica != e.Replica {
		h.changes.WithLabelValues(e.Tenant, e.Cluster).Inc()
	}
	st.seenReplica = e.Replica
	if e.RefreshedMs != st.seenRefreshed {
		st.seenRefreshed, st.seenAt = e.RefreshedMs, now
		h.electedTS.WithLabelValues(e.Tenant, e.Cluster).Set(float64(e.RefreshedMs) / 1000)
	}
}

// startLocked proposes the election (or refresh) of replica for k in the background and records it
// as the key's call in flight.
func (h *haTracker) startLocked(k haKey, st *haKeyState, replica string, maxClusters int) *haCall {
	call := &haCall{done: make(chan struct{})}
	st.inflight = call
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		h.cas.WithLabelValues(k.tenant, k.cluster).Inc() // outside h.mu: nothing run under the lock may panic
		ctx, cancel := context.WithTimeout(context.Background(), haElectTimeout)
		call.e, call.err = h.elector.ElectHAReplica(ctx, k.tenant, k.cluster, replica, h.cfg.FailoverTimeout, maxClusters)
		cancel()
		now := h.now()
		h.mu.Lock()
		st.inflight = nil
		switch {
		case call.err == nil:
			h.observeLocked(st, call.e, now)
		case errors.Is(call.err, ringstate.ErrHAReplicaElected):
			// The log says another replica is elected and fresh: no new attempt for an update timeout,
			// nor past the moment that entry goes stale by ring time (a refusal near the failover
			// bound must not keep dropping the other replica for a whole update timeout after it).
			wait := h.cfg.UpdateTimeout
			if call.e.Replica != "" {
				h.observeLocked(st, call.e, now)
				if r := h.ring.Ring(); r != nil {
					left := h.cfg.FailoverTimeout - time.Duration(r.TimeMs()-call.e.RefreshedMs)*time.Millisecond
					wait = max(0, min(wait, left))
				}
			}
			st.nextElect = now.Add(wait)
		case errors.Is(call.err, ringstate.ErrHATooManyClusters):
			delete(h.keys, k)
			h.forgetMetricsLocked(k)
		default:
			h.log.Warn("HA tracker: election failed", "tenant", k.tenant, "cluster", k.cluster, "replica", replica, "err", call.err)
		}
		h.mu.Unlock()
		close(call.done)
	}()
	return call
}

// forgetMetricsLocked deletes k's per-cluster metric series, so that cluster names a tenant sends
// over time (per-deploy names, or on purpose) do not grow every distributor's registry for ever:
// they are bounded as the keys are (pruneLocked).
func (h *haTracker) forgetMetricsLocked(k haKey) {
	for _, v := range []interface{ DeleteLabelValues(...string) bool }{h.changes, h.electedTS, h.cas, h.deduped} {
		v.DeleteLabelValues(k.tenant, k.cluster)
	}
}

// pruneLocked forgets keys the ring does not hold and nothing is electing, once there are clearly
// more of them than the ring holds (the ring's entries are bounded; what tenants send is not).
func (h *haTracker) pruneLocked(r *ringstate.Ring) {
	if len(h.keys) <= 2*r.HALen()+1024 {
		return
	}
	for k, st := range h.keys {
		if _, ok := r.HAReplica(k.tenant, k.cluster); !ok && st.inflight == nil {
			delete(h.keys, k)
			h.forgetMetricsLocked(k)
		}
	}
}

// HATrackerHandler serves /distributor/ha_tracker, Cortex's page: the elected replica of every HA
// cluster in the ring, with the ring time of its election and last refresh.
func HATrackerHandler(src RingSource) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		r := src.Ring()
		type row struct {
			ringstate.HAReplica
			Elected, Refreshed string
			Age                time.Duration
		}
		var rows []row
		var nowMs int64
		if r != nil {
			nowMs = r.TimeMs()
			for _, e := range r.HAReplicas() {
				rows = append(rows, row{HAReplica: e, Elected: time.UnixMilli(e.ElectedMs).UTC().Format(time.RFC3339),
					Refreshed: time.UnixMilli(e.RefreshedMs).UTC().Format(time.RFC3339),
					Age:       time.Duration(nowMs-e.RefreshedMs) * time.Millisecond})
			}
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		if err := haPage.Execute(w, struct {
			Rows []row
			Now  string
		}{rows, time.UnixMilli(nowMs).UTC().Format(time.RFC3339)}); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
		}
	})
}

var haPage = template.Must(template.New("ha").Parse(`<!DOCTYPE html>
<html><head><title>HA tracker</title></head><body>
<h1>HA tracker: elected replicas</h1>
<p>Ring time {{.Now}}. {{len .Rows}} HA clusters.</p>
<table border="1" cellpadding="4">
<tr><th>Tenant</th><th>Cluster</th><th>Elected replica</th><th>Elected at</th><th>Last refresh</th><th>Refresh age</th></tr>
{{range .Rows}}<tr><td>{{.Tenant}}</td><td>{{.Cluster}}</td><td>{{.Replica}}</td><td>{{.Elected}}</td><td>{{.Refreshed}}</td><td>{{.Age}}</td></tr>
{{end}}</table></body></html>
`))

// waitHA blocks until the HA tracker's elections in flight have finished (tests).
func (d *Distributor) waitHA() {
	if d.ha != nil {
		d.ha.wg.Wait()
	}
}
