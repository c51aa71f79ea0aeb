package distributor

import (
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/raftingest/raftingest/ringstate"
)

// tenantIdleTimeout is how long after its last push a tenant's state is released: its metric
// series (cortex_distributor_received_samples_total{user}, ..._samples_in_total{user},
// cortex_discarded_samples_total{user,...}) are deleted, and its rate-limiter bucket is forgotten
// once it would be full again anyway. Mimir's distributor drops an inactive tenant's series after a
// comparable time (its active-users cleanup); without it, rotating tenant ids grow memory forever.
const tenantIdleTimeout = 15 * time.Minute

// tenantSweepPeriod is how often, at most, a push looks for idle tenants. The sweep runs in the
// push that finds it due: no goroutine, and no work at all while nobody pushes (then nothing grows).
const tenantSweepPeriod = time.Minute

// tenantTracker holds the per-tenant state of a distributor: when the tenant last pushed, whether
// its metric series may exist, and its token bucket (counted in samples: at most the tenant's
// burst, refilled at the rate the caller passes, which the global strategy derives from the ring;
// both may differ per tenant and change at runtime: -runtime-config.file).
//
// Safe for concurrent use. Time is an argument (the distributor's clock), so tests drive it.
type tenantTracker struct {
	idle time.Duration

	mu        sync.Mutex
	tenants   map[string]*tenantState // keyed by tenant (a header string: it does not alias a body)
	nextSweep time.Time
}

type tenantState struct {
	seen    time.Time // last push
	metrics bool      // the tenant's metric series may exist (set on push, cleared by the sweep)
	// newest is the newest sample timestamp (Unix ms) accepted for the tenant, math.MinInt64 for
	// none: the clock of the tenant's data, from which the oldest block range in memory is
	// reckoned (see Distributor.timeBounds). Updated without the lock.
	newest atomic.Int64

	hasBucket bool
	tokens    float64
	last      time.Time // of the last refill
	// rate and burst are the tenant's limits at its last allow, for the sweep.
	rate, burst float64
}

func newTenantTracker(idle time.Duration) *tenantTracker {
	return &tenantTracker{idle: idle, tenants: map[string]*tenantState{}}
}

// note records a push of tenant at now and returns the tenant's state. When a sweep is due it
// also returns the tenants idle for the idle timeout whose metric series must now be deleted, and
// forgets every tenant whose state is no longer needed: idle, metrics deleted, and no bucket or one
// that would be full by now at rate (so forgetting it grants nothing a kept bucket would not).
func (l *tenantTracker) note(tenant string, now time.Time) (ts *tenantState, idle []string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	t, ok := l.tenants[tenant]
	if !ok {
		t = newTenantState()
		l.tenants[tenant] = t
	}
	t.seen, t.metrics = now, true
	ts = t
	if now.Before(l.nextSweep) {
		return ts, nil
	}
	l.nextSweep = now.Add(tenantSweepPeriod)
	for name, t := range l.tenants {
		if now.Sub(t.seen) < l.idle {
			continue
		}
		if t.metrics {
			t.metrics = false
			idle = append(idle, name)
		}
		if !t.hasBucket || t.rate <= 0 || t.tokens+now.Sub(t.last).Seconds()*t.rate >= t.burst {
			delete(l.tenants, name)
		}
	}
	return ts, idle
}

func newTenantState() *tenantState {
	t := &tenantState{}
	t.newest.Store(math.MinInt64)
	return t
}

// observe raises the tenant's newest sample timestamp to t.
func (t *tenantState) observe(ms int64) {
	for {
		cur := t.newest.Load()
		if ms <= cur || t.newest.CompareAndSwap(cur, ms) {
			return
		}
	}
}

// len is the number of tenants with state.
func (l *tenantTracker) len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.tenants)
}

// allow takes n tokens from tenant's bucket of at most burst tokens, refilled at rate tokens per
// second, if it holds that many, and reports whether it did. A request for more than the burst is
// never allowed: the client must send smaller batches. rate must be above zero. A bucket fuller
// than a burst lowered since is cut to it.
func (l *tenantTracker) allow(tenant string, n int, rate float64, burstSize int, now time.Time) bool {
	burst := float64(burstSize)
	if n <= 0 {
		return true
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	t, ok := l.tenants[tenant]
	if !ok {
		t = newTenantState()
		t.seen, t.metrics = now, true
		l.tenants[tenant] = t
	}
	t.rate, t.burst = rate, burst
	if !t.hasBucket {
		t.hasBucket, t.tokens, t.last = true, burst, now
	}
	t.tokens = min(t.tokens, burst)
	if elapsed := now.Sub(t.last); elapsed > 0 {
		t.tokens = min(burst, t.tokens+elapsed.Seconds()*rate)
		t.last = now
	} else if elapsed < 0 {
		// The clock jumped back: refill nothing for the jump, but count from now on, rather than
		// refilling nothing until the clock is back where it was.
		t.last = now
	}
	if float64(n) > t.tokens {
		return false
	}
	t.tokens -= float64(n)
	return true
}

// noteTenant records a push of tenant, returns its state and, when the sweep finds tenants idle,
// deletes their metric series. The clock is read by the caller once per push.
func (d *Distributor) noteTenant(tenant string, now time.Time) *tenantState {
	ts, idle := d.tenants.note(tenant, now)
	for _, t := range idle {
		d.m.receivedSamples.DeleteLabelValues(t)
		d.m.samplesIn.DeleteLabelValues(t)
		d.m.discardedSamples.DeletePartialMatch(prometheus.Labels{"user": t})
	}
	if idle != nil {
		d.log.Debug("released the state of idle tenants", "tenants", len(idle), "idle_timeout", d.tenants.idle)
	}
	return ts
}

// distributorCount is the number of healthy distributors in one ring snapshot.
type distributorCount struct {
	ring *ringstate.Ring
	n    int
}

// rateLimit returns the rate this distributor enforces now for a tenant without runtime overrides, in samples per second (0:
// unlimited), and the number of distributors sharing -distributor.ingestion-rate-limit. With the
// global strategy that is every ACTIVE and healthy ring member (every member runs a distributor;
// Mimir counts its distributors' own ring the same way), at least one: this node counts even while
// it is not ACTIVE itself, and a ring not known yet is a cluster of one.
func (d *Distributor) rateLimit() (float64, int) { return d.shareOf(d.cfg.IngestionRateLimit) }

// shareOf is rateLimit for any limit: a tenant's, from its runtime overrides (Deps.Limits).
func (d *Distributor) shareOf(limit float64) (float64, int) {
	if limit <= 0 {
		return 0, 0
	}
	if d.cfg.IngestionRateStrategy != RateStrategyGlobal {
		return limit, 1
	}
	n := d.healthyDistributors()
	return limit / float64(n), n
}

// healthyDistributors counts the writable members of the current ring (cached per snapshot: rings
// are immutable), at least 1.
func (d *Distributor) healthyDistributors() int {
	r := d.ring.Ring()
	if c := d.distributors.Load(); c != nil && c.ring == r {
		return c.n
	}
	n := 0
	if r != nil {
		timeoutMs := d.cfg.RingHeartbeatTimeout.Milliseconds()
		for i := 0; i < r.Len(); i++ {
			if r.MemberAt(i).Writable(r.TimeMs(), timeoutMs) {
				n++
			}
		}
	}
	n = max(n, 1)
	if prev := d.distributors.Swap(&distributorCount{ring: r, n: n}); prev == nil || prev.n != n {
		d.m.rateLimit.Set(d.cfg.IngestionRateLimit / float64(n))
		d.m.healthyDistributors.Set(float64(n))
	}
	return n
}
