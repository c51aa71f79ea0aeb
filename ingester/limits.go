package ingester

// This file converts -ingester.max-global-series-per-user into the per-tenant series limit each
// ingester enforces (memstore.Store.SetSeriesLimit), from the ring, as Mimir does, and keeps it up
// to date as members come and go.

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/raftingest/raftingest/flush"
	"github.com/raftingest/raftingest/memstore"
	"github.com/raftingest/raftingest/ringstate"
)

// seriesLimitsConfig holds the global form of the per-tenant series limit.
type seriesLimitsConfig struct {
	// MaxGlobalSeriesPerUser is -ingester.max-global-series-per-user: a tenant's in-memory series
	// across the cluster (every replica counted once), 0: no global limit.
	MaxGlobalSeriesPerUser int
	// MaxGlobalExemplarsPerUser is -ingester.max-global-exemplars-per-user: a tenant's exemplars in
	// the cluster's circular stores, converted to this ingester's store size as the series limit is;
	// 0 (Mimir's default) stores none (exemplars.go).
	MaxGlobalExemplarsPerUser int
	// Metadata is the metric metadata store's flags (metadata.go).
	Metadata metadataConfig
}

// DefaultMaxGlobalSeriesPerUser is Mimir's default of -ingester.max-global-series-per-user.
const DefaultMaxGlobalSeriesPerUser = 150_000

func (c *seriesLimitsConfig) RegisterFlags(f *flag.FlagSet) {
	f.IntVar(&c.MaxGlobalSeriesPerUser, "ingester.max-global-series-per-user", DefaultMaxGlobalSeriesPerUser,
		"Maximum number of in-memory series per tenant across the cluster. Each ingester enforces it as a local limit, global / N * RF, with N the ACTIVE and healthy ring members and RF the effective replication factor (Mimir's conversion: series spread evenly over the ingesters, each stored RF times; with zone awareness, global * RF / zones / N with N the ACTIVE and healthy members of this member's zone), recomputed when the ring changes and ignored while no member is ACTIVE; the smaller of it and -ingester.max-series-per-tenant applies. A push creating a series over it is refused with 400 for that series. 0 to disable.")
	f.IntVar(&c.MaxGlobalExemplarsPerUser, "ingester.max-global-exemplars-per-user", 0,
		"Maximum number of exemplars a tenant keeps in memory across the cluster, in per-tenant circular stores (Prometheus's tsdb.CircularExemplarStorage: the newest are kept). Each ingester's store holds global / N * RF, converted as -ingester.max-global-series-per-user is and resized when the ring or the tenant's max_global_exemplars_per_user override changes. Exemplars are logged in the WAL, never flushed to blocks; a restart replays at most the newest 250000 per tenant (memstore.MaxReplayedExemplarsPerTenant: the limit is not known before the ring is). 0 (Mimir's default) stores none: the distributor drops them.")
	c.Metadata.RegisterFlags(f)
}

func (c *seriesLimitsConfig) Validate() error {
	if c.MaxGlobalExemplarsPerUser < 0 {
		return fmt.Errorf("-ingester.max-global-exemplars-per-user=%d: want zero (no exemplars stored) or more", c.MaxGlobalExemplarsPerUser)
	}
	if err := c.Metadata.Validate(); err != nil {
		return err
	}
	if c.MaxGlobalSeriesPerUser < 0 {
		return fmt.Errorf("-ingester.max-global-series-per-user=%d: want zero (no global limit) or more", c.MaxGlobalSeriesPerUser)
	}
	return nil
}

// localSeriesLimit is the per-tenant series limit one ingester enforces: the smaller non-zero of
// local (-ingester.max-series-per-tenant) and global converted to a local limit,
//
//	global / N * RF
//
// where N is the number of ACTIVE and healthy members of r (at ring time, against timeoutMs) and
// RF the effective replication factor (rf capped by the members owning tokens): a tenant's series
// spread evenly over the N ingesters, each stored RF times. Like Mimir, the global limit is ignored
// while N is 0 (the ring not known yet, or nobody ACTIVE: then no ingester takes writes anyway).
//
// Under zone-aware placement a series has one copy in each of RF zones of the Z that own tokens,
// so a zone holds RF/Z of the tenant's series, spread over its own writable members: the limit is
// global * RF / Z / Nzone, with Nzone the writable members of zone (this member's). A dead member's
// share stays in its zone; the other zones are not affected.
func localSeriesLimit(global, local int, place ringstate.Placement, zone string, r *ringstate.Ring, timeoutMs int64) memstore.SeriesLimit {
	lim := memstore.SeriesLimit{Max: local, Source: "-ingester.max-series-per-tenant"}
	if global <= 0 || r == nil {
		return lim
	}
	n, zones := 0, map[string]bool{}
	for i := 0; i < r.Len(); i++ {
		m := r.MemberAt(i)
		if len(m.Tokens) > 0 {
			zones[m.Zone] = true
		}
		if m.Writable(r.TimeMs(), timeoutMs) && (!place.ZoneAware || m.Zone == zone) {
			n++
		}
	}
	erf := r.EffectiveRFFor(place)
	if n == 0 || erf == 0 {
		return lim
	}
	var conv int
	var how string
	if place.ZoneAware && len(zones) > 0 {
		conv = int(float64(global) * float64(erf) / float64(len(zones)) / float64(n))
		how = fmt.Sprintf("-ingester.max-global-series-per-user=%d over %d zones at replication factor %d, across the %d ACTIVE ingesters of zone %q: %d * %d / %d / %d",
			global, len(zones), erf, n, zone, global, erf, len(zones), n)
	} else {
		conv = int(float64(global) / float64(n) * float64(erf))
		how = fmt.Sprintf("-ingester.max-global-series-per-user=%d across %d ACTIVE ingesters at replication factor %d: %d / %d * %d", global, n, erf, global, n, erf)
	}
	// At least 1: a tiny global limit over many members must not round down to 0, which the store
	// reads as no limit at all.
	conv = max(conv, 1)
	if local > 0 && local <= conv {
		return lim
	}
	return memstore.SeriesLimit{Max: conv, Source: how}
}

// seriesLimitFor is localSeriesLimit for this member: its placement and zone.
func (s *Server) seriesLimitFor(global int) memstore.SeriesLimit {
	return localSeriesLimit(global, s.cfg.Store.MaxSeriesPerTenant, s.cfg.Distributor.Placement(), s.cfg.Lifecycle.Zone,
		s.node.Ring(), s.cfg.Lifecycle.HeartbeatTimeout.Milliseconds())
}

// applySeriesLimit sets the store's series limit from the current ring and returns it. A tenant
// whose runtime overrides give it its own max_global_series_per_user gets that converted the same
// way, from the ring at its push (tenantSeriesLimits).
func (s *Server) applySeriesLimit() memstore.SeriesLimit {
	lim := s.seriesLimitFor(s.cfg.SeriesLimits.MaxGlobalSeriesPerUser)
	lim.Tenants = s.tenantSeriesLimits
	if prev := s.store.SeriesLimit(); prev != lim {
		s.store.SetSeriesLimit(lim)
		s.log.Info("per-tenant series limit", "limit", lim.Max, "from", lim.Source)
	}
	return lim
}

// registerSeriesLimitMetric exposes the limit in force.
func (s *Server) registerSeriesLimitMetric() error {
	g := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "raftingest_ingester_max_series_per_tenant",
		Help: "The per-tenant series limit this ingester enforces now: the smaller of -ingester.max-series-per-tenant and -ingester.max-global-series-per-user / ACTIVE ingesters * replication factor (0: unlimited).",
	}, func() float64 { return float64(s.store.SeriesLimit().Max) })
	if err := s.reg.Register(g); err != nil {
		var are prometheus.AlreadyRegisteredError
		if !errors.As(err, &are) {
			return err
		}
	}
	return nil
}

// watchSeriesLimit recomputes the series limit each time the ring changes, until ctx ends. The
// exemplar stores are resized then too, and every -runtime-config.reload-period, so that a
// tenant's changed max_global_exemplars_per_user applies even while it sends no exemplars (a
// tenant set to 0 has its exemplars dropped by the distributor: its store is freed here).
func (s *Server) watchSeriesLimit(ctx context.Context) {
	period := s.cfg.RuntimeConfig.ReloadPeriod
	if period <= 0 {
		period = 10 * time.Second
	}
	tick := time.NewTicker(period)
	defer tick.Stop()
	for {
		ch := s.node.Changed()
		s.applySeriesLimit()
		s.store.ApplyExemplarLimits()
		select {
		case <-ctx.Done():
			return
		case <-ch:
		case <-tick.C:
		}
	}
}

// oldestInMemory is the distributor's Deps.OldestInMemory: the start of the oldest block range the
// flusher keeps in memory at atMs (its cutoff), so that pushes older than that are refused.
func (s *Server) oldestInMemory(atMs int64) int64 {
	return flush.CutoffAt(s.cfg.Storage.Flush.FlushPeriod, atMs)
}

// newTenantSeriesLimits returns the lookup of tenants' own series limits: a tenant whose runtime
// overrides set max_global_series_per_user to another value than the flag's gets it converted to a
// local limit from the current ring, as the flag is; the others report ok false.
func (s *Server) newTenantSeriesLimits() *memstore.TenantSeriesLimits {
	def := s.cfg.SeriesLimits.MaxGlobalSeriesPerUser
	return &memstore.TenantSeriesLimits{For: func(tenant string) (memstore.SeriesLimit, bool) {
		g := s.limits.For(tenant).MaxGlobalSeriesPerUser
		if g == def {
			return memstore.SeriesLimit{}, false
		}
		lim := s.seriesLimitFor(g)
		lim.Source = "the tenant's runtime override, " + strings.Replace(lim.Source, "-ingester.max-global-series-per-user", "max_global_series_per_user", 1)
		return lim, true
	}}
}
