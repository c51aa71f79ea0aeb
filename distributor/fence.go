package distributor

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/raftingest/raftingest/ingesterpb"
	"github.com/raftingest/raftingest/ringstate"
)

// Write fencing, the distributor's side (raftfsm/fence.go has the design). Every request to an
// ingester carries the applied Raft index of the ring its series were placed by. An ingester that
// has applied an ownership change after that index refuses the request whole (ingesterpb.FencedError,
// naming its ownership index); the distributor then waits, within the push's deadline, until its own
// ring reaches that index, places the refused request's series again on the fresh ring and sends
// each once to the member that takes the refusing member's place (fencedRetry). A refusal of the
// retry is a failure of that replica, as any other.

// IndexedRingSource is a RingSource that knows the Raft index of its ring and can wait for a later
// one: what write fencing needs. raftfsm.Node is one. With a RingSource that is not, requests go
// unstamped (index 0) and ingesters take them unfenced.
type IndexedRingSource interface {
	RingSource
	// RingIndex returns the ring and the applied index of the entry that produced it, together.
	RingIndex() (*ringstate.Ring, uint64)
	// WaitApplied blocks until the applied index is at least index, or ctx ends.
	WaitApplied(ctx context.Context, index uint64) error
}

// fencing is the distributor's fencing state.
type fencing struct {
	src     IndexedRingSource // nil: the ring source has no index; nothing is stamped
	retries *prometheus.CounterVec
}

func newFencing(ring RingSource, reg prometheus.Registerer) (fencing, error) {
	f := fencing{retries: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "raftingest_distributor_fenced_retries_total",
		Help: "Pushes to an ingester refused by write fencing (this distributor's ring was older than the ingester's last ownership change) and placed again on the fresher ring, by outcome: retried (sent again), ring_lagging (this node's ring did not reach the ingester's index within the remote timeout: those replicas failed).",
	}, []string{"outcome"})}
	f.src, _ = ring.(IndexedRingSource)
	if reg != nil {
		if err := reg.Register(f.retries); err != nil {
			return f, err
		}
	}
	return f, nil
}

// placementRing is the ring to place a push by, and the index to stamp its requests with (0 when
// the source has none).
func (d *Distributor) placementRing() (*ringstate.Ring, uint64) {
	if d.fence.src != nil {
		return d.fence.src.RingIndex()
	}
	return d.ring.Ring(), 0
}

// fencedAnswer is a fenced refusal waiting for its retry: the refusal's detail and error.
type fencedAnswer struct {
	f     *ingesterpb.FencedPush
	cause error
}

// retryGate keeps a push's fenced retries, which run beside its answer loop, from reading the
// push's series and scratch state (valid only until Push returns) once the push is decided. A
// retry waits for this node's ring without the lock (waiting holds it meanwhile), then places and
// copies its series under the lock unless the push was abandoned, and sends without it.
type retryGate struct {
	mu        sync.Mutex
	abandoned bool
	waiting   map[int]fencedAnswer // targets whose retry waits for the ring, by target index
	// waitCtx ends the retries' waits for the ring when the push is abandoned: they would only
	// find it so, and Distributor.Wait (shutdown) waits for them.
	waitCtx  context.Context
	stopWait context.CancelFunc
}

func newRetryGate() *retryGate {
	g := &retryGate{waiting: map[int]fencedAnswer{}}
	g.waitCtx, g.stopWait = context.WithCancel(context.Background())
	return g
}

// abandon marks the push decided: no retry reads its state after abandon returns. Each retry still
// waiting for the ring is handed to late (on the caller's goroutine, under the lock: the state is
// still valid), which sends it again in the background as a fenced answer arriving after the
// decision is. A nil gate (no retry started) does nothing.
func (g *retryGate) abandon(late func(t int, a fencedAnswer)) {
	if g == nil {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	g.abandoned = true
	g.stopWait()
	for t, a := range g.waiting {
		late(t, a)
	}
	clear(g.waiting)
}

// enter takes the lock for a retry of target t that is done waiting, unless the push was abandoned
// (then the retry does nothing more: abandon dealt with it). A nil gate (a background retry, on the
// push's goroutine) always enters.
func (g *retryGate) enter(t int) bool {
	if g == nil {
		return true
	}
	g.mu.Lock()
	if g.abandoned {
		g.mu.Unlock()
		return false
	}
	delete(g.waiting, t)
	return true
}

func (g *retryGate) leave() {
	if g != nil {
		g.mu.Unlock()
	}
}

// startFencedRetry runs fencedRetry for fenced answer r in a goroutine that delivers its answer to
// results, marked retried, as r's: results has room for it, since r was taken from it.
func (d *Distributor) startFencedRetry(ctx context.Context, deadline time.Time, tenant string, req *WriteRequest, st *pushState,
	r targetResult, f *ingesterpb.FencedPush, gate *retryGate, results chan<- targetResult) {
	gate.mu.Lock()
	gate.waiting[r.t] = fencedAnswer{f, r.err}
	gate.mu.Unlock()
	d.sends.Add(1)
	go func() {
		defer d.sends.Done()
		resp := d.fencedRetry(ctx, deadline, tenant, req, st, r.t, f, r.err, false, gate)
		if resp != nil {
			results <- targetResult{t: r.t, resp: resp, retried: true}
		}
	}()
}

// fencedRetry answers for target t, whose request was refused by fencing with detail f, with the
// outcome of placing its series again on a ring at or after f's ownership index. It waits for the
// retried sends, bounded by deadline ctx. With a gate it runs beside the push's answer loop and
// reads the push's state only inside the gate (see retryGate), and returns nil when the push was
// decided before it got there; without one it runs on the push's goroutine.
//
// Accounting: a series keeps the replication set it was placed on, with t's place taken by the
// member of its fresh set that replaces t: t itself when t is still in the fresh set (the change
// was elsewhere on the ring), else the k-th member of the fresh set that was not in the old one, t
// being the k-th member of the old set that is not in the fresh one (so two refused members of the
// same set never count the same newcomer twice). A series whose fresh set has no such newcomer (it
// shrank) fails on that replica. The answer is a PushResponse in t's own series order, so that
// apply counts it as t's: quorum stays that of the push's placement, each acknowledgement from a
// member that owns the series on the fresh ring or had not applied the change when it acknowledged.
//
// With background, the push is decided already and nobody waits for the answer: the series are
// sent again only if the ring is at the index already (no wait), without waiting for the answers
// (nil is returned), so that they keep their RF copies as a slow replica's would.
func (d *Distributor) fencedRetry(parent context.Context, deadline time.Time, tenant string, req *WriteRequest, st *pushState, t int,
	f *ingesterpb.FencedPush, cause error, background bool, gate *retryGate) *ingesterpb.PushResponse {
	ctx, cancel := context.WithDeadline(context.WithoutCancel(parent), deadline)
	cancelled := false
	defer func() {
		if !cancelled {
			cancel()
		}
	}()
	failAll := func(n int, msg string) *ingesterpb.PushResponse {
		resp := &ingesterpb.PushResponse{Errors: make([]*ingesterpb.SeriesError, n)}
		for k := range n {
			resp.Errors[k] = &ingesterpb.SeriesError{Index: uint32(k), Code: ingesterpb.ErrorCode_INTERNAL, Message: msg}
		}
		return resp
	}
	wait := d.fence.src.WaitApplied
	if background {
		wait = func(context.Context, uint64) error {
			if _, i := d.fence.src.RingIndex(); i < f.GetOwnershipIndex() {
				return fmt.Errorf("at index %d", i)
			}
			return nil
		}
	}
	waitCtx := ctx
	if gate != nil {
		var stop context.CancelFunc
		waitCtx, stop = context.WithDeadline(gate.waitCtx, deadline)
		defer stop()
	}
	werr := wait(waitCtx, f.GetOwnershipIndex())
	if !gate.enter(t) {
		return nil
	}
	entered := true
	defer func() {
		if entered {
			gate.leave()
		}
	}()
	idx := st.order[st.offsets[t]:st.offsets[t+1]]
	if werr != nil {
		d.fence.retries.WithLabelValues("ring_lagging").Inc()
		return failAll(len(idx), fmt.Sprintf("%v; this distributor's ring did not reach index %d in time: %v", cause, f.GetOwnershipIndex(), werr))
	}
	d.fence.retries.WithLabelValues("retried").Inc()
	ring, index := d.fence.src.RingIndex()
	// The same placement rule as the push's (zone awareness included), on the fresh ring.
	place := d.cfg.Placement()
	place.RF = ring.EffectiveRFFor(place)
	timeoutMs := d.cfg.RingHeartbeatTimeout.Milliseconds()
	refused := st.targets[t].ID

	// Place every series of t's request: subs are the substitutes, groups[j] the positions in t's
	// request (k) and the series (req index) sent to subs[j].
	type group struct{ ks, series []int32 }
	var subs []*ringstate.Member
	var groups []group
	resp := &ingesterpb.PushResponse{}
	var fresh []*ringstate.Member
	for k, i := range idx {
		s := &req.Series[i]
		fresh = ring.ReplicationSetFor(s.hash, place, timeoutMs, fresh[:0])
		old := st.replicas[s.repOff : s.repOff+int32(s.nrep)]
		sub := substitute(refused, old, st.targets, fresh)
		if sub == nil {
			resp.Errors = append(resp.Errors, &ingesterpb.SeriesError{Index: uint32(k), Code: ingesterpb.ErrorCode_INTERNAL,
				Message: fmt.Sprintf("%v; on the ring at index %d no member takes %s's place for this series", cause, index, refused)})
			continue
		}
		j := 0
		for j < len(subs) && subs[j].ID != sub.ID {
			j++
		}
		if j == len(subs) {
			subs, groups = append(subs, sub), append(groups, group{})
		}
		groups[j].ks = append(groups[j].ks, int32(k))
		groups[j].series = append(groups[j].series, i)
	}

	// Send each group once, stamped with the fresh index, and wait for every answer.
	type answer struct {
		resp *ingesterpb.PushResponse
		err  error
	}
	answers := make([]answer, len(subs))
	var wg sync.WaitGroup
	for j, m := range subs {
		buf := buildRequest(req, groups[j].series, index)
		client, err := d.clients.GetClientFor(m.GRPCAddr)
		if err != nil {
			bufPool.Put(buf)
			answers[j].err = err
			continue
		}
		wg.Add(1)
		d.sends.Add(1)
		go func() {
			defer wg.Done()
			defer d.sends.Done()
			r, err := client.Push(ctx, tenant, &ingesterpb.RawPushRequest{Data: buf, Pool: bufPool})
			if err != nil {
				d.m.appendFailures.WithLabelValues(m.GRPCAddr, callErrorClass(err)).Inc()
			}
			answers[j] = answer{r, err}
		}()
	}
	// Every series' bytes are copied: the push's state is not read again.
	gate.leave()
	entered = false
	if background {
		cancelled = true
		go func() { wg.Wait(); cancel() }()
		return nil
	}
	wg.Wait()
	for j, a := range answers {
		ks := groups[j].ks
		if a.err != nil {
			code := ingesterpb.ErrorCode_INTERNAL
			if status.Code(a.err) == codes.InvalidArgument {
				code = ingesterpb.ErrorCode_INVALID
			}
			for _, k := range ks {
				resp.Errors = append(resp.Errors, &ingesterpb.SeriesError{Index: uint32(k), Code: code,
					Message: fmt.Sprintf("retried on %s after %s fenced the push: %v", subs[j].ID, refused, a.err)})
			}
			continue
		}
		for _, e := range a.resp.GetErrors() {
			if int(e.GetIndex()) >= len(ks) {
				continue
			}
			e.Index = uint32(ks[e.GetIndex()])
			resp.Errors = append(resp.Errors, e)
		}
	}
	return resp
}

// substitute is the member that takes refused's place in a series' fresh replication set (see
// fencedRetry): refused itself when still there, else the newcomer of the same rank among the
// members that left the set; nil when there is none. old are the series' target indices in targets.
func substitute(refused ringstate.MemberID, old []int32, targets []*ringstate.Member, fresh []*ringstate.Member) *ringstate.Member {
	inOld := func(id ringstate.MemberID) bool {
		for _, o := range old {
			if targets[o].ID == id {
				return true
			}
		}
		return false
	}
	inFresh := func(id ringstate.MemberID) bool {
		for _, m := range fresh {
			if m.ID == id {
				return true
			}
		}
		return false
	}
	for _, m := range fresh {
		if m.ID == refused {
			return m
		}
	}
	rank := 0
	for _, o := range old {
		id := targets[o].ID
		if id == refused {
			break
		}
		if !inFresh(id) {
			rank++
		}
	}
	for _, m := range fresh {
		if !inOld(m.ID) {
			if rank == 0 {
				return m
			}
			rank--
		}
	}
	return nil
}

// fenced returns the detail of a fenced refusal this distributor can act on (its ring source has
// an index to catch up with).
func (d *Distributor) fenced(err error) (*ingesterpb.FencedPush, bool) {
	if err == nil || d.fence.src == nil {
		return nil, false
	}
	return ingesterpb.AsFenced(err)
}

// undecided reports whether any series of target t's request still waits for its quorum: only then
// is a fenced request worth placing again (a decided series is as a failed replica would leave it).
func (d *Distributor) undecided(t int, req *WriteRequest, st *pushState) bool {
	for _, i := range st.order[st.offsets[t]:st.offsets[t+1]] {
		if req.Series[i].state == seriesPending {
			return true
		}
	}
	return false
}
