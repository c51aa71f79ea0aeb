package memstore

// SeriesLimit is the per-tenant limit on in-memory series a Store enforces when a push creates a
// series: Max series per tenant (0: unlimited), and Source, what it comes from, for the refusal's
// message (a flag name, or how a global limit was converted). Replay and hand-over imports never
// apply it: they bring back acknowledged data.
type SeriesLimit struct {
	Max    int
	Source string
	// Tenants, when set, gives some tenants their own limit (runtime overrides); the others get Max.
	Tenants *TenantSeriesLimits
}

// TenantSeriesLimits looks up a tenant's own series limit: For reports ok false for a tenant
// without one. It is asked once per push, so a change of the overrides applies to the next push.
type TenantSeriesLimits struct {
	For func(tenant string) (SeriesLimit, bool)
}

// limitFor is the limit that applies to tenant's pushes now.
func (st *Store) limitFor(tenant string) SeriesLimit {
	l := *st.seriesLimit.Load()
	if l.Tenants != nil && l.Tenants.For != nil {
		if tl, ok := l.Tenants.For(tenant); ok {
			return tl
		}
	}
	return l
}

// SetSeriesLimit replaces the per-tenant series limit in force; Open starts with
// Config.MaxSeriesPerTenant. The ingester calls it when the ring changes, to apply
// -ingester.max-global-series-per-user converted to a local limit. Safe for concurrent use; series
// created before keep existing when the limit drops below their count.
func (st *Store) SetSeriesLimit(l SeriesLimit) { st.seriesLimit.Store(&l) }

// SeriesLimit returns the per-tenant series limit in force.
func (st *Store) SeriesLimit() SeriesLimit { return *st.seriesLimit.Load() }
