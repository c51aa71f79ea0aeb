package memstore

// SeriesLimit is the per-tenant limit on in-memory series a Store enforces when a push creates a
// series: Max series per tenant (0: unlimited), and Source, what it comes from, for the refusal's
// message (a flag name, or how a global limit was converted). Replay and hand-over imports never
// apply it: they bring back acknowledged data.
type SeriesLimit struct {
	Max    int
	Source string
}

// SetSeriesLimit replaces the per-tenant series limit in force; Open starts with
// Config.MaxSeriesPerTenant. The ingester calls it when the ring changes, to apply
// -ingester.max-global-series-per-user converted to a local limit. Safe for concurrent use; series
// created before keep existing when the limit drops below their count.
func (st *Store) SetSeriesLimit(l SeriesLimit) { st.seriesLimit.Store(&l) }

// SeriesLimit returns the per-tenant series limit in force.
func (st *Store) SeriesLimit() SeriesLimit { return *st.seriesLimit.Load() }
