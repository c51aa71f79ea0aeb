package querier

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/timestamp"
	"github.com/prometheus/prometheus/promql/parser"

	"github.com/raftingest/raftingest/ingesterpb"
	"github.com/raftingest/raftingest/ringstate"
	"github.com/raftingest/raftingest/tenant"
)

// The exemplar and metadata APIs (/api/v1/query_exemplars, /api/v1/metadata), answered from the
// members' memory. Exemplars of a series are on its RF replicas and the series of a selector on
// many members, metadata of a metric on the replicas of its name: both ask every readable member
// (the members Select asks, ingestersSource), with Select's failure budget (floor(RF/2) members
// that may hold the only copy), and merge the answers without duplicates.

// maxExemplarsPerQuery bounds the exemplars one query_exemplars answer holds (each member is
// asked for at most as many; the newest are kept).
const maxExemplarsPerQuery = 100_000

// memberCall asks every member Select's fan-out would ask, in parallel, and returns the members'
// errors within the failure budget (logged), or ErrTooManyIngesterFailures beyond it.
func (q *MemberQueryable) memberCall(ctx context.Context, what string, call func(ctx context.Context, c ingesterpb.IngesterClient) error) error {
	tenantID, err := tenant.FromContext(ctx)
	if err != nil {
		return err
	}
	r := q.cfg.Ring.Ring()
	if r == nil {
		return errors.New("querier: this node has no ring yet")
	}
	rf := r.EffectiveRFFor(ringstate.Placement{RF: q.cfg.ReplicationFactor, ZoneAware: q.cfg.ZoneAware})
	maxErrors := rf / 2
	now, timeout := r.TimeMs(), q.cfg.HeartbeatTimeout.Milliseconds()
	var targets []ringstate.Member
	var failed []memberFailure
	for _, m := range r.Members() {
		switch {
		case q.src.ask(&m, now, timeout):
			targets = append(targets, m)
		case q.src.missing(&m):
			failed = append(failed, memberFailure{member: m.ID, zone: m.Zone, addr: m.GRPCAddr, source: what})
		}
	}
	var (
		wg sync.WaitGroup
		mu sync.Mutex
	)
	octx := ingesterpb.WithTenant(ctx, tenantID)
	for _, m := range targets {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := q.cfg.Clients.IngesterClient(m.GRPCAddr)
			if err == nil {
				err = call(octx, c)
			}
			if err == nil {
				return
			}
			q.cfg.Logger.Warn("member "+what+" failed; answering from the other replicas", "member", m.ID, "addr", m.GRPCAddr, "tenant", tenantID, "err", err)
			if q.src.missing(&m) {
				mu.Lock()
				failed = append(failed, memberFailure{member: m.ID, zone: m.Zone, addr: m.GRPCAddr, source: what, err: err})
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return err
	}
	if budgetCost(failed, q.cfg.ZoneAware) > maxErrors {
		return q.tooManyFailures(failed, maxErrors, rf)
	}
	return nil
}

// exemplarSeries is one series of the merged answer.
type exemplarSeries struct {
	labels labels.Labels
	seen   map[string]bool // exemplars already kept, by timestamp, value and labels
	ex     []exemplarOut
}

type exemplarOut struct {
	labels labels.Labels
	value  float64
	ts     int64
}

func protoLabels(ls []*ingesterpb.Label) labels.Labels {
	b := labels.NewScratchBuilder(len(ls))
	for _, l := range ls {
		b.Add(l.GetName(), l.GetValue())
	}
	b.Sort()
	return b.Labels()
}

// queryExemplars answers /query_exemplars (query, start, end) as Prometheus does: for each selector
// of the query, the exemplars of the matching series in the range, series in label order, each
// one's exemplars in time order; the copies of the replicas merged into one.
func (q *Querier) queryExemplars(r *http.Request) apiResult {
	start, err := parseTimeParam(r, "start", MinTime)
	if err != nil {
		return invalidParamError(err, "start")
	}
	end, err := parseTimeParam(r, "end", MaxTime)
	if err != nil {
		return invalidParamError(err, "end")
	}
	if end.Before(start) {
		return invalidParamError(errors.New("end timestamp must not be before start timestamp"), "end")
	}
	expr, err := parser.ParseExpr(r.FormValue("query"))
	if err != nil {
		return apiResult{err: &apiError{errorBadData, err}}
	}
	selectors := parser.ExtractSelectors(expr)
	if len(selectors) < 1 {
		return apiResult{data: json.RawMessage(`[]`)}
	}
	req := &ingesterpb.ExemplarQueryRequest{StartTimestampMs: timestamp.FromTime(start), EndTimestampMs: timestamp.FromTime(end),
		MaxExemplars: maxExemplarsPerQuery}
	for _, ms := range selectors {
		req.MatcherSets = append(req.MatcherSets, &ingesterpb.ExemplarMatchers{Matchers: toProtoMatchers(ms)})
	}
	ctx, cancel := context.WithTimeout(r.Context(), q.cfg.Timeout)
	defer cancel()
	var (
		mu        sync.Mutex
		bySeries  = map[string]*exemplarSeries{}
		total     int
		truncated bool
	)
	err = q.members.memberCall(ctx, "exemplars", func(ctx context.Context, c ingesterpb.IngesterClient) error {
		resp, err := c.QueryExemplars(ctx, req)
		if err != nil {
			return err
		}
		mu.Lock()
		defer mu.Unlock()
		truncated = truncated || resp.GetTruncated()
		for _, s := range resp.GetSeries() {
			ls := protoLabels(s.GetLabels())
			key := ls.String()
			es := bySeries[key]
			if es == nil {
				es = &exemplarSeries{labels: ls, seen: map[string]bool{}}
				bySeries[key] = es
			}
			for _, e := range s.GetExemplars() {
				if total >= 2*maxExemplarsPerQuery {
					// Each member bounds its own answer; the merge of many members is bounded here,
					// so that a large cluster cannot make one query hold members × the bound.
					truncated = true
					break
				}
				el := protoLabels(e.GetLabels())
				k := strconv.FormatInt(e.GetTimestamp(), 10) + " " + strconv.FormatUint(math.Float64bits(e.GetValue()), 16) + " " + el.String()
				if es.seen[k] {
					continue
				}
				es.seen[k] = true
				es.ex = append(es.ex, exemplarOut{labels: el, value: e.GetValue(), ts: e.GetTimestamp()})
				total++
			}
		}
		return nil
	})
	if err != nil {
		return apiResult{err: returnAPIError(err)}
	}
	series := make([]*exemplarSeries, 0, len(bySeries))
	for _, es := range bySeries {
		sort.SliceStable(es.ex, func(i, j int) bool { return es.ex[i].ts < es.ex[j].ts })
		series = append(series, es)
	}
	sort.Slice(series, func(i, j int) bool { return labels.Compare(series[i].labels, series[j].labels) < 0 })
	res := apiResult{data: json.RawMessage(appendExemplarResults(nil, series))}
	if truncated || total > maxExemplarsPerQuery {
		res.warnings.Add(fmt.Errorf("exemplars truncated: a member held more than %d for this query, or the members together more than %d", maxExemplarsPerQuery, 2*maxExemplarsPerQuery))
	}
	return res
}

// appendExemplarResults writes Prometheus's query_exemplars data: [{"seriesLabels": {...},
// "exemplars": [{"labels": {...}, "value": "1", "timestamp": 1.5}]}].
func appendExemplarResults(b []byte, series []*exemplarSeries) []byte {
	b = append(b, '[')
	for i, s := range series {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"seriesLabels":`...)
		b = appendLabels(b, s.labels)
		b = append(b, `,"exemplars":[`...)
		for k, e := range s.ex {
			if k > 0 {
				b = append(b, ',')
			}
			b = append(b, `{"labels":`...)
			b = appendLabels(b, e.labels)
			b = append(b, `,"value":`...)
			b = appendFloat(b, e.value)
			b = append(b, `,"timestamp":`...)
			b = appendTimestamp(b, e.ts)
			b = append(b, '}')
		}
		b = append(b, "]}"...)
	}
	return append(b, ']')
}

// metricTypeNames are the metadata types as Prometheus's API spells them.
var metricTypeNames = map[ingesterpb.MetricType]string{
	ingesterpb.MetricType_METRIC_TYPE_UNKNOWN: "unknown", ingesterpb.MetricType_METRIC_TYPE_COUNTER: "counter",
	ingesterpb.MetricType_METRIC_TYPE_GAUGE: "gauge", ingesterpb.MetricType_METRIC_TYPE_HISTOGRAM: "histogram",
	ingesterpb.MetricType_METRIC_TYPE_GAUGEHISTOGRAM: "gaugehistogram", ingesterpb.MetricType_METRIC_TYPE_SUMMARY: "summary",
	ingesterpb.MetricType_METRIC_TYPE_INFO: "info", ingesterpb.MetricType_METRIC_TYPE_STATESET: "stateset",
}

type metadataOut struct{ typ, help, unit string }

// metadata answers /metadata (limit, limit_per_metric, metric) as Prometheus does: {"<metric>":
// [{"type": "counter", "help": "...", "unit": ""}]}, the members' answers merged without
// duplicates; limit bounds the metrics, limit_per_metric the entries of each (negative or absent:
// no bound).
func (q *Querier) metadata(r *http.Request) apiResult {
	limit, err := metadataLimit(r.FormValue("limit"))
	if err != nil {
		return invalidParamError(err, "limit")
	}
	perMetric, err := metadataLimit(r.FormValue("limit_per_metric"))
	if err != nil {
		return invalidParamError(err, "limit_per_metric")
	}
	metric := r.FormValue("metric")
	ctx, cancel := context.WithTimeout(r.Context(), q.cfg.Timeout)
	defer cancel()
	var mu sync.Mutex
	merged := map[string][]metadataOut{}
	req := &ingesterpb.MetricsMetadataRequest{Metric: metric}
	err = q.members.memberCall(ctx, "metadata", func(ctx context.Context, c ingesterpb.IngesterClient) error {
		resp, err := c.MetricsMetadata(ctx, req)
		if err != nil {
			return err
		}
		mu.Lock()
		defer mu.Unlock()
		for _, m := range resp.GetMetadata() {
			typ, ok := metricTypeNames[m.GetType()]
			if !ok {
				typ = "unknown"
			}
			e := metadataOut{typ: typ, help: m.GetHelp(), unit: m.GetUnit()}
			if !slices.Contains(merged[m.GetMetricFamilyName()], e) {
				merged[m.GetMetricFamilyName()] = append(merged[m.GetMetricFamilyName()], e)
			}
		}
		return nil
	})
	if err != nil {
		return apiResult{err: returnAPIError(err)}
	}
	names := make([]string, 0, len(merged))
	for n := range merged {
		names = append(names, n)
	}
	sort.Strings(names)
	if limit >= 0 && len(names) > limit {
		names = names[:limit]
	}
	b := []byte{'{'}
	for i, n := range names {
		if i > 0 {
			b = append(b, ',')
		}
		es := merged[n]
		sort.Slice(es, func(i, j int) bool {
			return strings.Join([]string{es[i].typ, es[i].help, es[i].unit}, "\x00") < strings.Join([]string{es[j].typ, es[j].help, es[j].unit}, "\x00")
		})
		if perMetric >= 0 && len(es) > perMetric {
			es = es[:perMetric]
		}
		b = appendString(b, n)
		b = append(b, ":["...)
		for k, e := range es {
			if k > 0 {
				b = append(b, ',')
			}
			b = append(b, `{"type":`...)
			b = appendString(b, e.typ)
			b = append(b, `,"help":`...)
			b = appendString(b, e.help)
			b = append(b, `,"unit":`...)
			b = appendString(b, e.unit)
			b = append(b, '}')
		}
		b = append(b, ']')
	}
	b = append(b, '}')
	return apiResult{data: json.RawMessage(b)}
}

// metadataLimit parses a limit of /metadata: absent or negative is no bound (-1), as Prometheus.
func metadataLimit(s string) (int, error) {
	if s == "" {
		return -1, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil {
		return 0, fmt.Errorf("cannot parse %q to a valid limit", s)
	}
	if n < 0 {
		return -1, nil
	}
	return n, nil
}
