package distributor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/prometheus/prompb"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/pmetric"
	"go.opentelemetry.io/collector/pdata/pmetric/pmetricotlp"

	"github.com/raftingest/raftingest/ringstate"
)

// fakeElector commits elections into the env's static ring through ringstate's Apply, at a ring
// time that follows the env's clock (from testRingTimeMs), heartbeating every member first so that
// they stay writable. fail, when set, makes every election fail without committing (no leader).
type fakeElector struct {
	t     testing.TB
	ring  *staticRing
	clock *fakeClock

	mu    sync.Mutex
	calls int
	fail  error
	// refuse, when set, answers every election instead of the ring: a leader whose log says
	// another replica is elected (ringstate.ErrHAReplicaElected with that entry).
	refuse func(tenant, cluster string, ringMs int64) ringstate.HAReplica
}

func (f *fakeElector) ringMs() int64 {
	return testRingTimeMs + f.clock.Now().Sub(testNow()).Milliseconds()
}

func (f *fakeElector) ElectHAReplica(_ context.Context, tenant, cluster, replica string, failover time.Duration,
	maxClusters int) (ringstate.HAReplica, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	if f.fail != nil {
		return ringstate.HAReplica{}, f.fail
	}
	if f.refuse != nil {
		return f.refuse(tenant, cluster, f.ringMs()), ringstate.ErrHAReplicaElected
	}
	r, at := f.ring.Ring(), f.ringMs()
	for _, id := range r.MemberIDs() {
		r, _, _ = r.Apply(ringstate.Command{Op: ringstate.OpHeartbeat, Member: id}, at)
	}
	r, _, err := r.Apply(ringstate.Command{Op: ringstate.OpHAElect, Member: "d", HA: &ringstate.HACommand{Tenant: tenant,
		Cluster: cluster, Replica: replica, FailoverMs: failover.Milliseconds(), MaxClusters: maxClusters}}, at)
	f.ring.r.Store(r)
	e, _ := r.HAReplica(tenant, cluster)
	return e, err
}

func (f *fakeElector) numCalls() int { f.mu.Lock(); defer f.mu.Unlock(); return f.calls }

// heartbeat keeps the members writable at the clock's ring time without an election (the Raft
// leader's lifecycle traffic, in a real cluster).
func (f *fakeElector) heartbeat() {
	f.mu.Lock()
	defer f.mu.Unlock()
	r := f.ring.Ring()
	for _, id := range r.MemberIDs() {
		r, _, _ = r.Apply(ringstate.Command{Op: ringstate.OpHeartbeat, Member: id}, f.ringMs())
	}
	f.ring.r.Store(r)
}

func haConfig() Config {
	cfg := defaultConfig()
	cfg.HATracker.Enable = true
	cfg.HATracker.UpdateTimeoutJitterMax = 0 // deterministic refreshes
	cfg.HATracker.FailoverTimeout = 20 * time.Second
	cfg.HATracker.MaxClusters = 2
	return cfg
}

func newHAEnv(t *testing.T, cfg Config) (*testEnv, *fakeElector) {
	t.Helper()
	el := &fakeElector{t: t}
	e := newEnvDeps(t, cfg, func(d *Deps) { d.HA = el }, active("a", "b", "c")...)
	el.ring, el.clock = e.ring, e.clock
	t.Cleanup(e.d.waitHA)
	return e, el
}

func haSeries(cluster, replica string, v float64, off time.Duration) prompb.TimeSeries {
	ls := []string{"__name__", "up", "job", "j"}
	if cluster != "" {
		ls = append(ls, "cluster", cluster)
	}
	if replica != "" {
		ls = append(ls, "__replica__", replica)
	}
	return series(lbls(ls...), sample(v, off))
}

// stored returns the series every fake ingester stored for the default tenant (deduplicated).
func stored(e *testEnv) []string {
	seen := map[string]bool{}
	var out []string
	for _, id := range []string{"a", "b", "c"} {
		for _, s := range e.pool.ing(id).series(DefaultTenant) {
			if !seen[s] {
				seen[s] = true
				out = append(out, s)
			}
		}
	}
	return out
}

func TestHATracker_ElectedReplicaStoredWithoutReplicaLabel_OtherDropped202(t *testing.T) {
	e, el := newHAEnv(t, haConfig())
	if code, msg := e.post(t, encode(t, haSeries("c1", "r1", 1, 0))); code != http.StatusOK {
		t.Fatalf("first push of r1: %d %s", code, msg)
	}
	code, msg := e.post(t, encode(t, haSeries("c1", "r2", 2, 0), haSeries("c1", "r2", 3, time.Millisecond)))
	if code != http.StatusAccepted || !strings.Contains(msg, "not the elected") {
		t.Fatalf("push of r2: %d %s, want 202", code, msg)
	}
	got := stored(e)
	if len(got) != 1 || strings.Contains(got[0], "__replica__") || !strings.Contains(got[0], `cluster="c1"`) {
		t.Fatalf("stored %v, want r1's one series, with the cluster label and without the replica label", got)
	}
	if v := testutil.ToFloat64(e.d.ha.deduped.WithLabelValues(DefaultTenant, "c1")); v != 2 {
		t.Fatalf("deduped samples %v, want 2", v)
	}
	if el.numCalls() != 1 {
		t.Fatalf("%d elections, want 1 (r2 is dropped on the ring's word, no proposal)", el.numCalls())
	}
	if e, ok := e.ring.Ring().HAReplica(DefaultTenant, "c1"); !ok || e.Replica != "r1" {
		t.Fatalf("ring entry %+v", e)
	}
}

func TestHATracker_PushesWithoutBothLabelsPassThroughUntouched(t *testing.T) {
	e, el := newHAEnv(t, haConfig())
	for _, s := range []prompb.TimeSeries{haSeries("", "", 1, 0), haSeries("c1", "", 2, 0), haSeries("", "r1", 3, 0)} {
		if code, msg := e.post(t, encode(t, s)); code != http.StatusOK {
			t.Fatalf("%d %s", code, msg)
		}
	}
	got := strings.Join(stored(e), "\n")
	if el.numCalls() != 0 || !strings.Contains(got, `__replica__="r1"`) || len(stored(e)) != 3 {
		t.Fatalf("%d elections, stored:\n%s", el.numCalls(), got)
	}
	if v := testutil.ToFloat64(e.d.ha.nonHA.WithLabelValues(DefaultTenant)); v != 3 {
		t.Fatalf("non-HA samples %v, want 3", v)
	}
}

func TestHATracker_RefreshAtMostOncePerUpdateTimeout(t *testing.T) {
	cfg := haConfig()
	e, el := newHAEnv(t, cfg)
	for i := range 20 {
		if code, msg := e.post(t, encode(t, haSeries("c1", "r1", float64(i), time.Duration(i)*time.Millisecond))); code != http.StatusOK {
			t.Fatalf("%d %s", code, msg)
		}
		e.clock.Advance(500 * time.Millisecond) // 10s in all: less than the update timeout
		el.heartbeat()
	}
	e.d.waitHA()
	if n := el.numCalls(); n != 1 {
		t.Fatalf("%d proposals within one update timeout, want 1", n)
	}
	e.clock.Advance(cfg.HATracker.UpdateTimeout)
	el.heartbeat()
	for i := range 5 {
		e.post(t, encode(t, haSeries("c1", "r1", float64(100+i), time.Second+time.Duration(i)*time.Millisecond)))
	}
	e.d.waitHA()
	if n := el.numCalls(); n != 2 {
		t.Fatalf("%d proposals after the update timeout, want 2", n)
	}
	if en, _ := e.ring.Ring().HAReplica(DefaultTenant, "c1"); en.RefreshedMs == en.ElectedMs {
		t.Fatalf("entry %+v was not refreshed", en)
	}
}

// TestHATracker_FailoverOnlyAfterTimeout: r2 is dropped while r1 keeps refreshing; once r1 stops
// for longer than the failover timeout, r2's next push elects it and is stored, and r1 is dropped.
func TestHATracker_FailoverOnlyAfterTimeout(t *testing.T) {
	cfg := haConfig()
	e, el := newHAEnv(t, cfg)
	e.post(t, encode(t, haSeries("c1", "r1", 1, 0)))
	e.clock.Advance(cfg.HATracker.FailoverTimeout / 2)
	el.heartbeat()
	if code, _ := e.post(t, encode(t, haSeries("c1", "r2", 2, 0))); code != http.StatusAccepted {
		t.Fatalf("r2 within the failover timeout: %d, want 202", code)
	}
	e.clock.Advance(cfg.HATracker.FailoverTimeout)
	el.heartbeat()
	if code, msg := e.post(t, encode(t, haSeries("c1", "r2", 3, time.Second))); code != http.StatusOK {
		t.Fatalf("r2 after the failover timeout: %d %s, want 200", code, msg)
	}
	if code, _ := e.post(t, encode(t, haSeries("c1", "r1", 4, 2*time.Second))); code != http.StatusAccepted {
		t.Fatalf("r1 after the failover: %d, want 202", code)
	}
	if en, _ := e.ring.Ring().HAReplica(DefaultTenant, "c1"); en.Replica != "r2" {
		t.Fatalf("entry %+v, want r2", en)
	}
	if v := testutil.ToFloat64(e.d.ha.changes.WithLabelValues(DefaultTenant, "c1")); v != 1 {
		t.Fatalf("elected replica changes %v, want 1", v)
	}
	got := strings.Join(stored(e), "\n")
	if !strings.Contains(got, "@1") || !strings.Contains(got, "@3") || strings.Contains(got, "@2") ||
		strings.Contains(got, "@4") || strings.Contains(got, "__replica__") {
		t.Fatalf("stored\n%s\nwant samples 1 (r1) and 3 (r2) only, without the replica label", got)
	}
}

// TestHATracker_NoCommitMeans503NeverDrop: with the ring frozen (this member cut off from the
// leader: elections fail, ring time stops), r1's entry looks fresh by ring time forever; once this
// distributor's own clock says r1's entry has not changed for the failover timeout, r2's pushes get
// 503 (retried by Prometheus), not 202: a sample is dropped only on a decision of the log.
func TestHATracker_NoCommitMeans503NeverDrop(t *testing.T) {
	cfg := haConfig()
	e, el := newHAEnv(t, cfg)
	e.post(t, encode(t, haSeries("c1", "r1", 1, 0)))
	el.mu.Lock()
	el.fail = errors.New("raftfsm: no leader")
	el.mu.Unlock()
	if code, _ := e.post(t, encode(t, haSeries("c1", "r2", 2, 0))); code != http.StatusAccepted {
		t.Fatalf("r2 while r1 is fresh: %d, want 202", code)
	}
	e.clock.Advance(cfg.HATracker.FailoverTimeout + time.Second) // the ring does not move
	if code, msg := e.post(t, encode(t, haSeries("c1", "r2", 3, time.Second))); code != http.StatusServiceUnavailable {
		t.Fatalf("r2 with r1 stale by the local clock and no commit possible: %d %s, want 503", code, msg)
	}
	// Nor is r1, the elected replica in this member's frozen ring: another may have been elected in
	// entries it cannot see. 503 until a refresh commits.
	if code, msg := e.post(t, encode(t, haSeries("c1", "r1", 4, time.Second))); code != http.StatusServiceUnavailable {
		t.Fatalf("r1 with its entry stale by the local clock and no commit possible: %d %s, want 503", code, msg)
	}
	el.mu.Lock()
	el.fail = nil
	el.mu.Unlock()
	if code, msg := e.post(t, encode(t, haSeries("c1", "r1", 5, 2*time.Second))); code != http.StatusOK {
		t.Fatalf("r1 once commits work again: %d %s, want 200 (refreshed)", code, msg)
	}
	el.mu.Lock()
	el.fail = errors.New("raftfsm: no leader")
	el.mu.Unlock()
	// A new cluster cannot be elected either: 503.
	if code, _ := e.post(t, encode(t, haSeries("c2", "x", 1, 0))); code != http.StatusServiceUnavailable {
		t.Fatalf("new cluster without commits: %d, want 503", code)
	}
}

// TestHATracker_MaxClustersRefusedWith400WithoutProposing: a tenant's clusters beyond
// -distributor.ha-tracker.max-clusters get 400, decided from the ring without a proposal.
func TestHATracker_MaxClustersRefusedWith400WithoutProposing(t *testing.T) {
	e, el := newHAEnv(t, haConfig()) // max 2
	for _, c := range []string{"c1", "c2"} {
		if code, msg := e.post(t, encode(t, haSeries(c, "r", 1, 0))); code != http.StatusOK {
			t.Fatalf("%s: %d %s", c, code, msg)
		}
	}
	for i := range 10 {
		code, msg := e.post(t, encode(t, haSeries("hostile-"+string(rune('a'+i)), "r", 1, 0)))
		if code != http.StatusBadRequest || !strings.Contains(msg, "too many HA clusters") {
			t.Fatalf("third cluster: %d %s, want 400", code, msg)
		}
	}
	if el.numCalls() != 2 || e.ring.Ring().HALen() != 2 {
		t.Fatalf("%d proposals, %d entries; want 2 and 2", el.numCalls(), e.ring.Ring().HALen())
	}
	long := strings.Repeat("x", ringstate.MaxHAValueLen+1)
	if code, _ := e.post(t, encode(t, haSeries("c1", long, 1, 0))); code != http.StatusBadRequest {
		t.Fatalf("replica of %d bytes: %d, want 400", len(long), code)
	}
}

func TestHATrackerConfig_Validate(t *testing.T) {
	for name, tc := range map[string]struct {
		mut  func(c *HATrackerConfig)
		want string
	}{
		"defaults":          {func(c *HATrackerConfig) {}, ""},
		"same labels":       {func(c *HATrackerConfig) { c.ReplicaLabel = c.ClusterLabel }, "want two labels"},
		"bad cluster label": {func(c *HATrackerConfig) { c.ClusterLabel = "1x" }, "-distributor.ha-tracker.cluster="},
		"failover too short": {func(c *HATrackerConfig) { c.FailoverTimeout = c.UpdateTimeout + c.UpdateTimeoutJitterMax },
			"-distributor.ha-tracker.failover-timeout="},
		"max clusters 0": {func(c *HATrackerConfig) { c.MaxClusters = 0 }, "-distributor.ha-tracker.max-clusters=0"},
	} {
		c := defaultConfig().HATracker
		c.Enable = true
		tc.mut(&c)
		err := c.Validate()
		if (tc.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%s: %v, want %q", name, err, tc.want)
		}
	}
}

// TestHATracker_PerTenantOverrides: a tenant whose overrides refuse HA samples passes through; one
// with its own labels and cluster limit is deduplicated on those.
func TestHATracker_PerTenantOverrides(t *testing.T) {
	cfg := haConfig()
	el := &fakeElector{t: t}
	e := newEnvDeps(t, cfg, func(d *Deps) {
		d.HA = el
		d.HALimits = func(tenant string) HATenantLimits {
			if tenant == "off" {
				return HATenantLimits{Accept: false}
			}
			return HATenantLimits{Accept: true, ClusterLabel: "job", ReplicaLabel: "cluster", MaxClusters: 1}
		}
	}, active("a", "b", "c")...)
	el.ring, el.clock = e.ring, e.clock
	t.Cleanup(e.d.waitHA)
	ctx := context.Background()
	req := func(cluster, replica string) *WriteRequest {
		return &WriteRequest{Series: []Series{{Labels: []Label{{"__name__", "up"}, {"cluster", replica}, {"job", cluster}},
			Samples: []Sample{{TimestampMs: ts(0), Value: 1}}}}}
	}
	if err := e.d.ha.check(ctx, "off", req("j", "r1")); err != nil {
		t.Fatalf("tenant without HA: %v", err)
	}
	if el.numCalls() != 0 {
		t.Fatal("a tenant that does not accept HA samples proposed an election")
	}
	r1 := req("j", "r1")
	if err := e.d.ha.check(ctx, "on", r1); err != nil {
		t.Fatalf("r1: %v", err)
	}
	if v := r1.Series[0].Labels[1].Value; v != "" {
		t.Fatalf("the tenant's replica label (cluster) kept %q", v)
	}
	if err := e.d.ha.check(ctx, "on", req("j", "r2")); err == nil || err.Status != http.StatusAccepted {
		t.Fatalf("r2: %v, want 202", err)
	}
	if err := e.d.ha.check(ctx, "on", req("j2", "r1")); err == nil || err.Status != http.StatusBadRequest {
		t.Fatalf("second cluster beyond the tenant's limit of 1: %v, want 400", err)
	}
}

// TestHATrackerHandler_ListsEntriesEscaped: /distributor/ha_tracker lists every elected replica;
// label values a tenant chose are escaped.
func TestHATrackerHandler_ListsEntriesEscaped(t *testing.T) {
	r, err := ringstate.New().WithHA([]ringstate.HAReplica{{Tenant: "t", Cluster: "<script>x</script>", Replica: "r1",
		ElectedMs: 1000, RefreshedMs: 2000}, {Tenant: "u", Cluster: "c", Replica: "r2", ElectedMs: 1, RefreshedMs: 1}})
	if err != nil {
		t.Fatal(err)
	}
	srv := newHTTPServer(HATrackerHandler(ringOf(r)))
	defer srv.Close()
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	page := string(body)
	if strings.Contains(page, "<script>") || !strings.Contains(page, "&lt;script&gt;") ||
		!strings.Contains(page, "<td>u</td><td>c</td><td>r2</td>") || !strings.Contains(page, "2 HA clusters") {
		t.Fatalf("page:\n%s", page)
	}
}

// TestHATracker_BadValuesRefusedWith400AndNothingHangs: a cluster or replica value the ring would
// refuse (not valid UTF-8, a control character) is answered 400 before anything is proposed or
// counted. Before, invalid UTF-8 made a metric panic with the tracker's lock held, and every later
// HA push to that distributor hung; a control character got 503, retried for ever (review).
func TestHATracker_BadValuesRefusedWith400AndNothingHangs(t *testing.T) {
	e, el := newHAEnv(t, haConfig())
	for _, bad := range []string{"bad\xff", "eu\tw1"} {
		code, msg := e.post(t, encode(t, haSeries(bad, "r1", 1, 0)))
		if code != http.StatusBadRequest || !strings.Contains(msg, "printable") {
			t.Fatalf("cluster %q: %d %s, want 400", bad, code, msg)
		}
		code, msg = e.post(t, encode(t, haSeries("c1", bad, 1, 0)))
		if code != http.StatusBadRequest {
			t.Fatalf("replica %q: %d %s, want 400", bad, code, msg)
		}
	}
	if el.numCalls() != 0 {
		t.Fatalf("%d elections proposed for refused values", el.numCalls())
	}
	done := make(chan int, 1)
	go func() { code, _ := e.post(t, encode(t, haSeries("c1", "r1", 1, 0))); done <- code }()
	select {
	case code := <-done:
		if code != http.StatusOK {
			t.Fatalf("a valid HA push after the refused ones: %d", code)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a valid HA push after the refused ones hangs")
	}
}

// TestHATracker_OTLPNonElectedReplicaGetsAnOTLPSuccess: over OTLP, the non-elected replica's push
// is dropped as over remote-write, but answered 200 with an empty ExportMetricsServiceResponse: a
// 2xx whose body is a google.rpc.Status made the Collector's decoder fail and retry.
func TestHATracker_OTLPNonElectedReplicaGetsAnOTLPSuccess(t *testing.T) {
	cfg := haConfig()
	cfg.HATracker.ReplicaLabel = "replica"
	e, _ := newHAEnv(t, cfg)
	e.srv.Config.Handler = e.d.OTLPHandler()
	push := func(replica string) (int, []byte) {
		md := pmetric.NewMetrics()
		g := md.ResourceMetrics().AppendEmpty().ScopeMetrics().AppendEmpty().Metrics().AppendEmpty()
		g.SetName("queue.length")
		dp := g.SetEmptyGauge().DataPoints().AppendEmpty()
		dp.SetTimestamp(pcommon.NewTimestampFromTime(testNow()))
		dp.SetIntValue(1)
		dp.Attributes().PutStr("cluster", "c1")
		dp.Attributes().PutStr("replica", replica)
		body, _ := pmetricotlp.NewExportRequestFromMetrics(md).MarshalProto()
		code, _, resp := postOTLP(t, e, body, "application/x-protobuf", "")
		return code, resp
	}
	if code, resp := push("r1"); code != http.StatusOK {
		t.Fatalf("elected replica: %d %q", code, resp)
	}
	code, resp := push("r2")
	if code != http.StatusOK || len(resp) != 0 {
		t.Fatalf("non-elected replica: %d %q, want 200 with an empty ExportMetricsServiceResponse", code, resp)
	}
	if v := testutil.ToFloat64(e.d.ha.deduped.WithLabelValues(DefaultTenant, "c1")); v != 1 {
		t.Fatalf("deduped samples %v, want 1", v)
	}
}

// TestHATracker_PrunedKeysTakeTheirMetricSeries: keys the ring no longer holds are pruned once
// there are clearly more of them than the ring holds, and their per-cluster metric series go with
// them: cluster names sent over time must not grow every distributor's registry for ever.
func TestHATracker_PrunedKeysTakeTheirMetricSeries(t *testing.T) {
	e, _ := newHAEnv(t, haConfig())
	h := e.d.ha
	h.mu.Lock()
	for i := range 1100 {
		k := haKey{DefaultTenant, fmt.Sprintf("gone-%d", i)}
		h.keys[k] = &haKeyState{}
		h.deduped.WithLabelValues(k.tenant, k.cluster).Inc()
		h.cas.WithLabelValues(k.tenant, k.cluster).Inc()
	}
	h.pruneLocked(e.ring.Ring())
	n := len(h.keys)
	h.mu.Unlock()
	if n != 0 {
		t.Fatalf("%d keys left after pruning keys the ring does not hold", n)
	}
	if c := testutil.CollectAndCount(h.deduped) + testutil.CollectAndCount(h.cas); c != 0 {
		t.Fatalf("%d per-cluster metric series left for pruned keys", c)
	}
}

// TestHATracker_RefusedElectionWaitsNoLongerThanTheEntryStaysFresh: this member's ring shows r1's
// entry stale, but the leader's log says r1 was refreshed 2s before the failover bound and refuses
// r2's election. r2 is dropped (202) without a new proposal until that entry goes stale by ring
// time — 2s, not the 15s update timeout — and its next push after that proposes again.
func TestHATracker_RefusedElectionWaitsNoLongerThanTheEntryStaysFresh(t *testing.T) {
	cfg := haConfig()
	e, el := newHAEnv(t, cfg)
	if code, msg := e.post(t, encode(t, haSeries("c1", "r1", 1, 0))); code != http.StatusOK {
		t.Fatalf("r1: %d %s", code, msg)
	}
	e.d.waitHA()
	e.clock.Advance(cfg.HATracker.FailoverTimeout + time.Second)
	el.heartbeat()
	left := 2 * time.Second
	el.mu.Lock()
	el.refuse = func(tenant, cluster string, ringMs int64) ringstate.HAReplica {
		return ringstate.HAReplica{Tenant: tenant, Cluster: cluster, Replica: "r1",
			RefreshedMs: ringMs - (cfg.HATracker.FailoverTimeout - left).Milliseconds()}
	}
	el.mu.Unlock()
	calls := el.numCalls()
	if code, _ := e.post(t, encode(t, haSeries("c1", "r2", 2, time.Second))); code != http.StatusAccepted {
		t.Fatalf("r2 refused by the log: %d, want 202", code)
	}
	if n := el.numCalls(); n != calls+1 {
		t.Fatalf("%d proposals for r2's first push, want 1", n-calls)
	}
	e.clock.Advance(left / 2)
	el.heartbeat()
	if code, _ := e.post(t, encode(t, haSeries("c1", "r2", 3, 2*time.Second))); code != http.StatusAccepted {
		t.Fatalf("r2 while the log's r1 entry is fresh: %d, want 202", code)
	}
	if n := el.numCalls(); n != calls+1 {
		t.Fatalf("r2 proposed again %v after a refusal whose entry stays fresh %v", left/2, left)
	}
	el.mu.Lock()
	el.refuse = nil // r1 has really stopped: the log now elects r2
	el.mu.Unlock()
	e.clock.Advance(left/2 + 500*time.Millisecond) // past the entry's staleness, well within the update timeout
	el.heartbeat()
	if code, msg := e.post(t, encode(t, haSeries("c1", "r2", 4, 3*time.Second))); code != http.StatusOK {
		t.Fatalf("r2 once the log's r1 entry went stale: %d %s, want 200 (elected)", code, msg)
	}
	if n := el.numCalls(); n != calls+2 {
		t.Fatalf("%d proposals after the entry went stale, want 2 in all", n-calls)
	}
	if en, _ := e.ring.Ring().HAReplica(DefaultTenant, "c1"); en.Replica != "r2" {
		t.Fatalf("entry %+v, want r2", en)
	}
}
