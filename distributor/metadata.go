package distributor

import (
	"context"
	"fmt"
	"net/http"
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/raftingest/raftingest/ingesterpb"
	"github.com/raftingest/raftingest/ringstate"
)

// extraMetrics count exemplars and metadata, with Mimir's names.
type extraMetrics struct {
	receivedExemplars  *prometheus.CounterVec // {user}
	receivedMetadata   *prometheus.CounterVec // {user}
	discardedExemplars *prometheus.CounterVec // {user, reason}
	discardedMetadata  *prometheus.CounterVec // {user, reason}
}

func newExtraMetrics(reg prometheus.Registerer) (*extraMetrics, error) {
	m := &extraMetrics{
		receivedExemplars: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "cortex_distributor_received_exemplars_total",
			Help: "Exemplars received and forwarded to the ingesters with their series (valid ones, of tenants that store exemplars)."}, []string{"user"}),
		receivedMetadata: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "cortex_distributor_received_metadata_total",
			Help: "Metric metadata entries received and forwarded to the ingesters (valid ones)."}, []string{"user"}),
		discardedExemplars: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "cortex_discarded_exemplars_total",
			Help: "Exemplars refused by validation, by reason (Mimir's reasons)."}, []string{"user", "reason"}),
		discardedMetadata: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "cortex_discarded_metadata_total",
			Help: "Metric metadata entries refused by validation, by reason (Mimir's reasons)."}, []string{"user", "reason"}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.receivedExemplars, m.receivedMetadata, m.discardedExemplars, m.discardedMetadata} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return m, nil
}

// checkExemplars decides which exemplars of s, a series whose labels passed validation, go to the
// ingesters. None for a tenant that stores no exemplars (Deps.ExemplarsEnabled; Mimir drops them in
// the distributor when -ingester.max-global-exemplars-per-user is 0), unvalidated: an exemplar the
// tenant would not keep must not cost it its samples. Of the others, an invalid one (exemplarInvalid)
// is dropped and counted, and the series and its other exemplars are stored, as Mimir does since
// OpenTelemetry senders began to send empty exemplars: never a 400, which Prometheus does not retry.
// The kept exemplars are compacted to the front of the series' exemplars.
func (d *Distributor) checkExemplars(tenant string, req *WriteRequest, s *Series, b *timeBounds) {
	s.exemplarsSent = false
	if s.Exemplars == 0 || d.exemplarsEnabled == nil || !d.exemplarsEnabled(tenant) {
		return
	}
	exs := req.SeriesExemplars(s)
	kept := 0
	for i := range exs {
		if reason := exemplarInvalid(&exs[i], b); reason != "" {
			d.xm.discardedExemplars.WithLabelValues(tenant, reason).Inc()
			continue
		}
		exs[kept] = exs[i]
		kept++
	}
	s.Exemplars = kept
	if kept == 0 {
		return
	}
	s.exemplarsSent = true
	s.rewrite = true // a series with exemplars is re-encoded with the kept ones
	d.xm.receivedExemplars.WithLabelValues(tenant).Add(float64(kept))
}

// startMetadata validates req's metadata and starts storing each valid entry on the replicas of
// its metric name's series ({__name__="<name>"}) in the tenant, one request per member, beside the
// series' requests. A refused entry is a 400 of the push, added to out now (the other entries and
// the series are stored, as Mimir does). The requests carry copies of the strings, built before it
// returns. The returned wait (nil when nothing was sent) blocks until every send has answered or the
// remote timeout passed, and adds to its outcome an entry that no quorum of its replicas stored (a
// 5xx: retried).
func (d *Distributor) startMetadata(ctx context.Context, tenant string, req *WriteRequest, st *pushState, out *outcome) (wait func(*outcome)) {
	mds := req.metadata
	valid := 0
	for k := range mds {
		m := &mds[k]
		m.ok = false
		if r := validateMetadata(m, d.cfg.Limits.MaxMetadataLength); r != nil {
			d.xm.discardedMetadata.WithLabelValues(tenant, r.reason).Inc()
			out.fail4xx(r.msg)
			continue
		}
		m.ok = true
		valid++
	}
	if valid == 0 {
		return nil
	}
	ring, ringIndex := d.placementRing()
	if ring == nil {
		out.fail5xx("metric metadata: the ring is not known yet on this node; retry shortly")
		return nil
	}
	place := d.cfg.Placement()
	place.RF = ring.EffectiveRFFor(place)
	if place.RF == 0 {
		out.fail5xx("metric metadata: no ingester owns tokens in the ring")
		return nil
	}
	quorum := ringstate.Quorum(place.RF)
	timeoutMs := d.cfg.RingHeartbeatTimeout.Milliseconds()
	// Per entry, its replicas (indexes into targets); per target, its entries.
	var targets []*ringstate.Member
	reps := make([][]int, len(mds))
	var perTarget [][]int
	for k := range mds {
		m := &mds[k]
		if !m.ok {
			continue
		}
		name := [1]Label{{Name: "__name__", Value: m.MetricName}}
		m.hash = SeriesHash(tenant, name[:])
		st.repSet = ring.ReplicationSetFor(m.hash, place, timeoutMs, st.repSet[:0])
		if len(st.repSet) < quorum {
			out.fail5xx(fmt.Sprintf("metric metadata of %s: too few healthy ingesters: have %d, need quorum %d of RF %d", quoteTrunc(m.MetricName), len(st.repSet), quorum, place.RF))
			m.ok = false
			continue
		}
		for _, mem := range st.repSet {
			t := -1
			for i, x := range targets {
				if x == mem {
					t = i
				}
			}
			if t < 0 {
				targets = append(targets, mem)
				perTarget = append(perTarget, nil)
				t = len(targets) - 1
			}
			perTarget[t] = append(perTarget[t], k)
			reps[k] = append(reps[k], t)
		}
		d.xm.receivedMetadata.WithLabelValues(tenant).Inc()
	}
	if len(targets) == 0 {
		return nil
	}
	sendCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), d.cfg.RemoteTimeout)
	type result struct {
		t   int
		err error
	}
	results := make(chan result, len(targets))
	for t, mem := range targets {
		size := ingesterpb.RingIndexSize(ringIndex)
		for _, k := range perTarget[t] {
			size += metadataFieldSize(&mds[k])
		}
		buf := bufPool.Get(size)
		b := (*buf)[:0]
		for _, k := range perTarget[t] {
			b = appendMetadata(b, &mds[k])
		}
		b = ingesterpb.AppendRingIndex(b, ringIndex)
		if len(b) != size {
			panic(fmt.Sprintf("distributor: built a metadata request of %d bytes, sized %d", len(b), size)) // broken internal invariant
		}
		client, err := d.clients.GetClientFor(mem.GRPCAddr)
		if err != nil {
			bufPool.Put(buf)
			results <- result{t, err}
			continue
		}
		d.sends.Add(1)
		go func() {
			defer d.sends.Done()
			_, err := client.Push(sendCtx, tenant, &ingesterpb.RawPushRequest{Data: buf, Pool: bufPool})
			results <- result{t, err}
		}()
	}
	// What wait reads of the entries, copied: req's strings and arenas may be reused by then.
	type entry struct {
		name string
		reps []int
	}
	var entries []entry
	for k := range mds {
		if mds[k].ok {
			entries = append(entries, entry{strings.Clone(mds[k].MetricName), reps[k]})
		}
	}
	return func(out *outcome) {
		defer cancel()
		ok := make([]bool, len(targets))
		var lastErr error
		for range targets {
			r := <-results
			if r.err == nil {
				ok[r.t] = true
			} else {
				lastErr = r.err
			}
		}
		for _, e := range entries {
			acks := 0
			for _, t := range e.reps {
				if ok[t] {
					acks++
				}
			}
			if acks < quorum {
				out.fail5xx(fmt.Sprintf("metric metadata of %s: stored by %d of %d replicas, need quorum %d: %v", quoteTrunc(e.name), acks, len(e.reps), quorum, lastErr))
			}
		}
	}
}

// withMetadata is a push's answer with its metadata's outcome mo: an entry no quorum stored makes
// a push that succeeded or was refused with 400 a 5xx (retried: what was stored is idempotent);
// any other answer (429, 503, 5xx) stands.
func withMetadata(perr *PushError, mo *outcome) *PushError {
	if mo.n5xx == 0 {
		return perr
	}
	if perr == nil {
		return mo.err()
	}
	if perr.Status == http.StatusBadRequest {
		merged := mo.err()
		merged.Msg += "; " + perr.Msg
		return merged
	}
	return perr
}
