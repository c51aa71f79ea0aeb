package ingester

import (
	"context"
	"time"
	"unicode/utf8"

	"github.com/prometheus/prometheus/model/labels"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/raftingest/raftingest/ingesterpb"
	"github.com/raftingest/raftingest/memstore"
)

// Exemplars and metadata on the ingester: the store's exemplar limit from
// -ingester.max-global-exemplars-per-user (and each tenant's override), the metadata store, and the
// QueryExemplars and MetricsMetadata RPCs.

// maxExemplarsPerQuery bounds one QueryExemplars answer (the querier asks for no more either).
const maxExemplarsPerQuery = 100_000

// wireExemplarsAndMetadata gives the store its exemplar limit and the service its metadata store.
func (s *Server) wireExemplarsAndMetadata() error {
	s.store.SetExemplarLimit(s.exemplarLimit)
	now := s.cfg.Clock
	if now == nil {
		now = time.Now
	}
	md, err := newMetadataStore(s.cfg.SeriesLimits.Metadata, func() int {
		return s.localLimit(s.cfg.SeriesLimits.Metadata.MaxGlobalPerUser)
	}, now, s.reg)
	if err != nil {
		return err
	}
	s.ingest.metadata = md
	return nil
}

// localLimit converts a global per-tenant limit into this member's share as the series limit is
// (localSeriesLimit: global / N * RF, per zone with zone awareness). While the ring has no ACTIVE
// member it is the global limit itself: an upper bound, so that exemplars replayed from the WAL
// before the ring is known are not thrown away.
func (s *Server) localLimit(global int) int {
	if global <= 0 {
		return 0
	}
	l := localSeriesLimit(global, 0, s.cfg.Distributor.Placement(), s.cfg.Lifecycle.Zone, s.node.Ring(), s.cfg.Lifecycle.HeartbeatTimeout.Milliseconds()).Max
	if l <= 0 {
		return global
	}
	return l
}

// exemplarLimit is the store's memstore.ExemplarLimit: the tenant's max_global_exemplars_per_user
// (its override, else the flag's) as this member's share. Asked at every push with exemplars, so
// an override change resizes the tenant's store at its next push.
func (s *Server) exemplarLimit(tenant string) int {
	return s.localLimit(s.limits.For(tenant).MaxGlobalExemplarsPerUser)
}

// appendExemplars converts a series' exemplars and adds them to the push (after the series'
// samples: the store drops exemplars of a series it refused). With validate (a request from
// another node) an exemplar with labels that are not UTF-8 is skipped; this node's own distributor
// validated them.
func (sc *pushScratch) appendExemplars(app *memstore.Appender, exs []ingesterpb.ExemplarView, validate bool) {
	sc.exemplars = sc.exemplars[:0]
	for _, e := range exs {
		sc.esb.Reset()
		ok := true
		for _, l := range e.Labels {
			if validate && (!utf8.ValidString(l.Name) || !utf8.ValidString(l.Value)) {
				ok = false
				break
			}
			sc.esb.Add(l.Name, l.Value)
		}
		if !ok {
			continue
		}
		sc.esb.Sort()
		// Labels aliases the request; AppendExemplars copies what it keeps.
		sc.exemplars = append(sc.exemplars, memstore.Exemplar{Labels: sc.esb.Labels(), Value: e.Value, T: e.TimestampMs})
	}
	app.AppendExemplars(sc.lset, sc.exemplars)
}

// QueryExemplars implements ingesterpb.IngesterServer: the tenant's exemplars from this member's
// store, at most max_exemplars (bounded by maxExemplarsPerQuery), the newest kept.
func (s *ingesterService) QueryExemplars(ctx context.Context, req *ingesterpb.ExemplarQueryRequest) (*ingesterpb.ExemplarQueryResponse, error) {
	tenant, err := ingesterpb.TenantFromIncomingContext(ctx)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	if req.GetStartTimestampMs() > req.GetEndTimestampMs() {
		return nil, status.Errorf(codes.InvalidArgument, "start %d is after end %d", req.GetStartTimestampMs(), req.GetEndTimestampMs())
	}
	sets := make([][]*labels.Matcher, 0, len(req.GetMatcherSets()))
	for _, set := range req.GetMatcherSets() {
		ms, err := toMatchers(set.GetMatchers())
		if err != nil {
			return nil, status.Error(codes.InvalidArgument, err.Error())
		}
		if len(ms) > 0 {
			sets = append(sets, ms)
		}
	}
	limit := maxExemplarsPerQuery
	if m := int(req.GetMaxExemplars()); m > 0 && m < limit {
		limit = m
	}
	res, truncated, err := s.store.QueryExemplars(tenant, memstore.ExemplarQuery{Start: req.GetStartTimestampMs(), End: req.GetEndTimestampMs(), MatcherSets: sets, Max: limit})
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	out := &ingesterpb.ExemplarQueryResponse{Truncated: truncated, Series: make([]*ingesterpb.ExemplarSeries, 0, len(res))}
	for _, r := range res {
		es := &ingesterpb.ExemplarSeries{Labels: toProtoLabels(r.SeriesLabels), Exemplars: make([]*ingesterpb.Exemplar, 0, len(r.Exemplars))}
		for _, e := range r.Exemplars {
			es.Exemplars = append(es.Exemplars, &ingesterpb.Exemplar{Labels: toProtoLabels(e.Labels), Value: e.Value, Timestamp: e.Ts})
		}
		out.Series = append(out.Series, es)
	}
	return out, nil
}

// MetricsMetadata implements ingesterpb.IngesterServer: the tenant's metric metadata this member
// holds.
func (s *ingesterService) MetricsMetadata(ctx context.Context, req *ingesterpb.MetricsMetadataRequest) (*ingesterpb.MetricsMetadataResponse, error) {
	tenant, err := ingesterpb.TenantFromIncomingContext(ctx)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	if s.metadata == nil {
		return &ingesterpb.MetricsMetadataResponse{}, nil
	}
	return &ingesterpb.MetricsMetadataResponse{Metadata: s.metadata.query(tenant, int(req.GetLimit()), int(req.GetLimitPerMetric()), req.GetMetric())}, nil
}
