package distributor

import (
	"sync"
	"time"
)

// rateLimiter is a token bucket per tenant, counted in samples: each tenant's bucket holds at most
// burst tokens and refills at rate tokens per second. The limit is local to this distributor (Mimir's
// "local" strategy): with N distributors a tenant may ingest up to N times the rate.
//
// Safe for concurrent use. Time comes from now, so tests drive it with a fake clock.
type rateLimiter struct {
	rate  float64 // tokens per second; 0 means unlimited
	burst float64
	now   func() time.Time

	mu      sync.Mutex
	buckets map[string]*bucket // keyed by tenant (a copied string: tenants outlive requests)
}

type bucket struct {
	tokens float64
	last   time.Time
}

func newRateLimiter(rate float64, burst int, now func() time.Time) *rateLimiter {
	return &rateLimiter{rate: rate, burst: float64(burst), now: now, buckets: map[string]*bucket{}}
}

// allow takes n tokens from tenant's bucket if it holds that many, and reports whether it did. A
// request for more than the burst is never allowed: the client must send smaller batches.
func (l *rateLimiter) allow(tenant string, n int) bool {
	if l.rate <= 0 || n <= 0 {
		return true
	}
	// The clock is read under the lock: readings taken before it could arrive out of order, and an
	// earlier reading processed after a later one would look like a backward step and be credited
	// again by the next call.
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	b, ok := l.buckets[tenant]
	if !ok {
		b = &bucket{tokens: l.burst, last: now}
		l.buckets[tenant] = b
	}
	if elapsed := now.Sub(b.last); elapsed > 0 {
		b.tokens = min(l.burst, b.tokens+elapsed.Seconds()*l.rate)
		b.last = now
	} else if elapsed < 0 {
		// The clock jumped back: refill nothing for the jump, but count from now on, rather than
		// refilling nothing until the clock is back where it was.
		b.last = now
	}
	if float64(n) > b.tokens {
		return false
	}
	b.tokens -= float64(n)
	return true
}
