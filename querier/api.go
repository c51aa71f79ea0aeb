package querier

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/timestamp"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/util/annotations"
	"github.com/prometheus/prometheus/util/httputil"

	"github.com/raftingest/raftingest/tenant"
)

// The handlers below mirror Prometheus' web/api/v1/api.go (v3.5) closely: same parameters, same
// validation order, same error types, messages and HTTP status codes, so that clients written for
// Prometheus (Grafana, promtool, client libraries) see no difference.

type errorType string

const (
	errorTimeout     errorType = "timeout"
	errorCanceled    errorType = "canceled"
	errorExec        errorType = "execution"
	errorBadData     errorType = "bad_data"
	errorInternal    errorType = "internal"
	errorUnavailable errorType = "unavailable"
)

// statusClientClosedConnection is nginx's 499, which Prometheus answers a cancelled query with.
const statusClientClosedConnection = 499

var errUnknownValue = errors.New("querier: unknown PromQL value type")

type apiError struct {
	typ errorType
	err error
}

type apiResult struct {
	data     any
	err      *apiError
	warnings annotations.Annotations
	// finalizer releases what data still refers to (a query's memory); called after encoding.
	finalizer func()
}

type apiFunc func(r *http.Request) apiResult

// queryData is the data of a query or query_range answer.
type queryData struct{ v parser.Value }

func invalidParamError(err error, parameter string) apiResult {
	return apiResult{err: &apiError{errorBadData, fmt.Errorf("invalid parameter %q: %w", parameter, err)}}
}

func returnAPIError(err error) *apiError {
	if err == nil {
		return nil
	}
	var eqc promql.ErrQueryCanceled
	var eqt promql.ErrQueryTimeout
	var es promql.ErrStorage
	switch {
	case IsLimitError(err):
		// A per-query fetch limit: 422, as Mimir answers it (checked first: the limit cancels
		// the ingesters' streams, and the cancellation must not turn it into a 499).
		return &apiError{errorExec, err}
	case errors.As(err, &eqc):
		return &apiError{errorCanceled, err}
	case errors.As(err, &eqt):
		return &apiError{errorTimeout, err}
	case errors.As(err, &es):
		return &apiError{errorInternal, err}
	}
	if errors.Is(err, context.Canceled) {
		return &apiError{errorCanceled, err}
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return &apiError{errorTimeout, err}
	}
	return &apiError{errorExec, err}
}

// route registers one API endpoint: the tenant, the concurrency limit, the latency metric, gzip, the
// allowed methods, and the JSON envelope.
func (q *Querier) route(mux *http.ServeMux, pattern, name string, f apiFunc) {
	mux.Handle(pattern, q.instrument(name, httputil.CompressionHandler{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodPost {
			w.Header().Set("Allow", "GET, POST")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		r, ok := q.authenticate(w, r)
		if !ok {
			return
		}
		// One limiter per request: every Select of the query counts against it.
		r = r.WithContext(withLimiter(r.Context(), q.newLimiter(r.Context())))
		release, err := q.acquire(r.Context())
		if err != nil {
			q.respondError(w, returnAPIError(err))
			return
		}
		defer release()
		if err := r.ParseForm(); err != nil {
			q.respondError(w, &apiError{errorBadData, fmt.Errorf("error parsing form values: %w", err)})
			return
		}
		res := f(r)
		if res.finalizer != nil {
			defer res.finalizer()
		}
		if res.err != nil {
			q.respondError(w, res.err)
			return
		}
		q.respond(w, r, res.data, res.warnings, r.FormValue("query"))
	})}))
}

// authenticate puts the request's tenant in its context: X-Scope-OrgID when multi-tenancy is
// enabled (401 without it, as Mimir answers), else the default tenant.
func (q *Querier) authenticate(w http.ResponseWriter, r *http.Request) (*http.Request, bool) {
	id := q.deps.DefaultTenant
	if q.deps.MultitenancyEnabled {
		id = r.Header.Get(TenantHeader)
		if id == "" {
			http.Error(w, "no org id: multi-tenancy is enabled (-auth.multitenancy-enabled) and the request has no "+TenantHeader+" header", http.StatusUnauthorized)
			return nil, false
		}
		if q.deps.ValidateTenant != nil {
			if err := q.deps.ValidateTenant(id); err != nil {
				http.Error(w, "invalid "+TenantHeader+" header: "+err.Error(), http.StatusBadRequest)
				return nil, false
			}
		}
	}
	return r.WithContext(tenant.With(r.Context(), id)), true
}

// errNoSlot is returned when a request waited -querier.timeout for a -querier.max-concurrent slot.
var errNoSlot = errors.New("query timed out waiting for one of the -querier.max-concurrent slots: too many queries in flight")

// acquire takes one of the -querier.max-concurrent slots, waiting at most -querier.timeout.
func (q *Querier) acquire(ctx context.Context) (func(), error) {
	q.metrics.inflight.Inc()
	select {
	case q.gate <- struct{}{}:
		return func() { <-q.gate; q.metrics.inflight.Dec() }, nil
	default:
	}
	t := time.NewTimer(q.cfg.Timeout)
	defer t.Stop()
	select {
	case q.gate <- struct{}{}:
		return func() { <-q.gate; q.metrics.inflight.Dec() }, nil
	case <-t.C:
		q.metrics.inflight.Dec()
		return nil, promql.ErrQueryTimeout(errNoSlot.Error())
	case <-ctx.Done():
		q.metrics.inflight.Dec()
		return nil, ctx.Err()
	}
}

type statusRecorder struct {
	http.ResponseWriter
	code int
}

func (s *statusRecorder) WriteHeader(code int) {
	s.code = code
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Flush() {
	if f, ok := s.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// instrument records cortex_querier_request_duration_seconds for route.
func (q *Querier) instrument(route string, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sr := &statusRecorder{ResponseWriter: w, code: http.StatusOK}
		defer func() {
			q.metrics.requestDuration.WithLabelValues(route, r.Method, strconv.Itoa(sr.code)).Observe(time.Since(start).Seconds())
		}()
		h.ServeHTTP(sr, r)
	})
}

func (q *Querier) respond(w http.ResponseWriter, r *http.Request, data any, warnings annotations.Annotations, query string) {
	warn, info := warnings.AsStrings(query, 10, 10)
	buf, err := appendData(make([]byte, 0, 1024), data)
	if err != nil {
		q.log.Error("error marshaling response", "url", r.URL, "err", err)
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	b := appendSuccess(make([]byte, 0, len(buf)+64), buf, warn, info)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	if n, err := w.Write(b); err != nil {
		q.log.Debug("error writing response", "url", r.URL, "bytesWritten", n, "err", err)
	}
}

func appendData(b []byte, data any) ([]byte, error) {
	switch d := data.(type) {
	case *queryData:
		return appendQueryData(b, d.v)
	case []string:
		return appendStrings(b, d), nil
	case []labels.Labels:
		b = append(b, '[')
		for i, ls := range d {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendLabels(b, ls)
		}
		return append(b, ']'), nil
	case json.RawMessage:
		return append(b, d...), nil
	}
	return b, fmt.Errorf("querier: cannot encode %T", data)
}

func (q *Querier) respondError(w http.ResponseWriter, apiErr *apiError) {
	b := appendError(nil, apiErr.typ, apiErr.err.Error())
	var code int
	switch apiErr.typ {
	case errorBadData:
		code = http.StatusBadRequest
	case errorExec:
		code = http.StatusUnprocessableEntity
	case errorCanceled:
		code = statusClientClosedConnection
	case errorTimeout, errorUnavailable:
		code = http.StatusServiceUnavailable
	default:
		code = http.StatusInternalServerError
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_, _ = w.Write(b)
}

func extractQueryOpts(r *http.Request) (promql.QueryOpts, error) {
	var duration time.Duration
	if s := r.FormValue("lookback_delta"); s != "" {
		d, err := parseDuration(s)
		if err != nil {
			return nil, fmt.Errorf("error parsing lookback delta duration: %w", err)
		}
		duration = d
	}
	return promql.NewPrometheusQueryOpts(r.FormValue("stats") == "all", duration), nil
}

func (q *Querier) query(r *http.Request) (result apiResult) {
	limit, err := parseLimitParam(r.FormValue("limit"))
	if err != nil {
		return invalidParamError(err, "limit")
	}
	ts, err := parseTimeParam(r, "time", q.now())
	if err != nil {
		return invalidParamError(err, "time")
	}
	ctx := r.Context()
	if to := r.FormValue("timeout"); to != "" {
		timeout, err := parseDuration(to)
		if err != nil {
			return invalidParamError(err, "timeout")
		}
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, q.now().Add(timeout))
		defer cancel()
	}
	opts, err := extractQueryOpts(r)
	if err != nil {
		return apiResult{err: &apiError{errorBadData, err}}
	}
	qry, err := q.engine.NewInstantQuery(ctx, q.queryable, opts, r.FormValue("query"), ts)
	if err != nil {
		return invalidParamError(err, "query")
	}
	return q.exec(ctx, r, qry, limit)
}

func (q *Querier) queryRange(r *http.Request) (result apiResult) {
	limit, err := parseLimitParam(r.FormValue("limit"))
	if err != nil {
		return invalidParamError(err, "limit")
	}
	start, err := parseTime(r.FormValue("start"))
	if err != nil {
		return invalidParamError(err, "start")
	}
	end, err := parseTime(r.FormValue("end"))
	if err != nil {
		return invalidParamError(err, "end")
	}
	if end.Before(start) {
		return invalidParamError(errors.New("end timestamp must not be before start time"), "end")
	}
	step, err := parseDuration(r.FormValue("step"))
	if err != nil {
		return invalidParamError(err, "step")
	}
	if step <= 0 {
		return invalidParamError(errors.New("zero or negative query resolution step widths are not accepted. Try a positive integer"), "step")
	}
	// For safety, limit the number of returned points per timeseries (Prometheus' rule).
	if end.Sub(start)/step > 11000 {
		return apiResult{err: &apiError{errorBadData, errors.New("exceeded maximum resolution of 11,000 points per timeseries. Try decreasing the query resolution (?step=XX)")}}
	}
	ctx := r.Context()
	if to := r.FormValue("timeout"); to != "" {
		timeout, err := parseDuration(to)
		if err != nil {
			return invalidParamError(err, "timeout")
		}
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	opts, err := extractQueryOpts(r)
	if err != nil {
		return apiResult{err: &apiError{errorBadData, err}}
	}
	qry, err := q.engine.NewRangeQuery(ctx, q.queryable, opts, r.FormValue("query"), start, end, step)
	if err != nil {
		return invalidParamError(err, "query")
	}
	return q.exec(ctx, r, qry, limit)
}

func (q *Querier) exec(ctx context.Context, r *http.Request, qry promql.Query, limit int) apiResult {
	res := qry.Exec(httputil.ContextFromRequest(ctx, r))
	if res.Err != nil {
		return apiResult{err: returnAPIError(res.Err), warnings: res.Warnings, finalizer: qry.Close}
	}
	warnings := res.Warnings
	if limit > 0 {
		truncated := false
		switch v := res.Value.(type) {
		case promql.Matrix:
			if len(v) > limit {
				res.Value, truncated = v[:limit], true
			}
		case promql.Vector:
			if len(v) > limit {
				res.Value, truncated = v[:limit], true
			}
		}
		if truncated {
			warnings = warnings.Add(errors.New("results truncated due to limit"))
		}
	}
	return apiResult{data: &queryData{res.Value}, warnings: warnings, finalizer: qry.Close}
}

// labelsParams are the parameters the labels and label-values endpoints share.
type labelsParams struct {
	limit       int
	start, end  time.Time
	matcherSets [][]*labels.Matcher
}

// parseLabelsParams parses limit, start, end and match[] as Prometheus's labels endpoints do; a
// non-nil result is the error answer.
func parseLabelsParams(r *http.Request) (labelsParams, *apiResult) {
	var p labelsParams
	var err error
	if p.limit, err = parseLimitParam(r.FormValue("limit")); err != nil {
		res := invalidParamError(err, "limit")
		return p, &res
	}
	if p.start, err = parseTimeParam(r, "start", MinTime); err != nil {
		res := invalidParamError(err, "start")
		return p, &res
	}
	if p.end, err = parseTimeParam(r, "end", MaxTime); err != nil {
		res := invalidParamError(err, "end")
		return p, &res
	}
	if p.matcherSets, err = parseMatchersParam(r.Form["match[]"]); err != nil {
		return p, &apiResult{err: &apiError{errorBadData, err}}
	}
	return p, nil
}

// clampLabelsRange applies -store.max-labels-query-length to the range of a series, label names or
// label values request, with Mimir's rule (clampToMaxLabelQueryLength): only the start moves,
//
//   - neither start nor end given: start = now - limit (end stays open: samples stamped in the
//     future are rare and cheap);
//   - only end given: start = end - limit;
//   - only start given: start = max(start, now - limit);
//   - both given: start = max(start, end - limit).
//
// A limit of 0 leaves the range alone (Prometheus' all time when unset).
func (q *Querier) clampLabelsRange(start, end time.Time) time.Time {
	limit := q.cfg.MaxLabelsQueryLength
	if limit <= 0 {
		return start
	}
	unsetStart, unsetEnd := start.Equal(MinTime), end.Equal(MaxTime)
	switch {
	case unsetStart && unsetEnd:
		return q.now().Add(-limit)
	case unsetStart:
		return end.Add(-limit)
	case unsetEnd:
		if earliest := q.now().Add(-limit); earliest.After(start) {
			return earliest
		}
	default:
		if earliest := end.Add(-limit); earliest.After(start) {
			return earliest
		}
	}
	return start
}

func (q *Querier) labelNames(r *http.Request) apiResult {
	p, bad := parseLabelsParams(r)
	if bad != nil {
		return *bad
	}
	limit, start, end, matcherSets := p.limit, q.clampLabelsRange(p.start, p.end), p.end, p.matcherSets
	hints := &storage.LabelHints{Limit: toHintLimit(limit)}
	ctx, cancel := context.WithTimeout(r.Context(), q.cfg.Timeout)
	defer cancel()
	qr, err := q.queryable.Querier(timestamp.FromTime(start), timestamp.FromTime(end))
	if err != nil {
		return apiResult{err: returnAPIError(err)}
	}
	defer qr.Close()
	var (
		names    []string
		warnings annotations.Annotations
	)
	if len(matcherSets) > 1 {
		set := map[string]struct{}{}
		for _, ms := range matcherSets {
			vals, w, err := qr.LabelNames(ctx, hints, ms...)
			if err != nil {
				return apiResult{err: returnAPIError(err), warnings: warnings}
			}
			warnings.Merge(w)
			for _, v := range vals {
				set[v] = struct{}{}
			}
		}
		names = make([]string, 0, len(set))
		for k := range set {
			names = append(names, k)
		}
		slices.Sort(names)
	} else {
		var ms []*labels.Matcher
		if len(matcherSets) == 1 {
			ms = matcherSets[0]
		}
		names, warnings, err = qr.LabelNames(ctx, hints, ms...)
		if err != nil {
			return apiResult{err: &apiError{errorExec, err}, warnings: warnings}
		}
	}
	if names == nil {
		names = []string{}
	}
	if limit > 0 && len(names) > limit {
		names = names[:limit]
		warnings = warnings.Add(errors.New("results truncated due to limit"))
	}
	return apiResult{data: names, warnings: warnings}
}

func (q *Querier) labelValues(r *http.Request) apiResult {
	name := r.PathValue("name")
	if strings.HasPrefix(name, "U__") {
		name = model.UnescapeName(name, model.ValueEncodingEscaping)
	}
	if !model.UTF8Validation.IsValidLabelName(name) {
		return apiResult{err: &apiError{errorBadData, fmt.Errorf("invalid label name: %q", name)}}
	}
	p, bad := parseLabelsParams(r)
	if bad != nil {
		return *bad
	}
	limit, start, end, matcherSets := p.limit, q.clampLabelsRange(p.start, p.end), p.end, p.matcherSets
	hints := &storage.LabelHints{Limit: toHintLimit(limit)}
	ctx, cancel := context.WithTimeout(r.Context(), q.cfg.Timeout)
	defer cancel()
	qr, err := q.queryable.Querier(timestamp.FromTime(start), timestamp.FromTime(end))
	if err != nil {
		return apiResult{err: &apiError{errorExec, err}}
	}
	defer qr.Close()
	var (
		vals     []string
		warnings annotations.Annotations
	)
	if len(matcherSets) > 1 {
		set := map[string]struct{}{}
		for _, ms := range matcherSets {
			vs, w, err := qr.LabelValues(ctx, name, hints, ms...)
			if err != nil {
				return apiResult{err: &apiError{errorExec, err}, warnings: warnings}
			}
			warnings.Merge(w)
			for _, v := range vs {
				set[v] = struct{}{}
			}
		}
		vals = make([]string, 0, len(set))
		for v := range set {
			vals = append(vals, v)
		}
	} else {
		var ms []*labels.Matcher
		if len(matcherSets) == 1 {
			ms = matcherSets[0]
		}
		vals, warnings, err = qr.LabelValues(ctx, name, hints, ms...)
		if err != nil {
			return apiResult{err: &apiError{errorExec, err}, warnings: warnings}
		}
		if vals == nil {
			vals = []string{}
		}
	}
	slices.Sort(vals)
	if limit > 0 && len(vals) > limit {
		vals = vals[:limit]
		warnings = warnings.Add(errors.New("results truncated due to limit"))
	}
	return apiResult{data: vals, warnings: warnings}
}

func (q *Querier) series(r *http.Request) apiResult {
	if len(r.Form["match[]"]) == 0 {
		return apiResult{err: &apiError{errorBadData, errors.New("no match[] parameter provided")}}
	}
	limit, err := parseLimitParam(r.FormValue("limit"))
	if err != nil {
		return invalidParamError(err, "limit")
	}
	start, err := parseTimeParam(r, "start", MinTime)
	if err != nil {
		return invalidParamError(err, "start")
	}
	end, err := parseTimeParam(r, "end", MaxTime)
	if err != nil {
		return invalidParamError(err, "end")
	}
	matcherSets, err := parseMatchersParam(r.Form["match[]"])
	if err != nil {
		return invalidParamError(err, "match[]")
	}
	start = q.clampLabelsRange(start, end)
	ctx, cancel := context.WithTimeout(r.Context(), q.cfg.Timeout)
	defer cancel()
	qr, err := q.queryable.Querier(timestamp.FromTime(start), timestamp.FromTime(end))
	if err != nil {
		return apiResult{err: returnAPIError(err)}
	}
	defer qr.Close()
	hints := &storage.SelectHints{
		Start: timestamp.FromTime(start),
		End:   timestamp.FromTime(end),
		Func:  "series", // no such function: it tells storage that samples are not needed
		Limit: toHintLimit(limit),
	}
	var set storage.SeriesSet
	if len(matcherSets) > 1 {
		var sets []storage.SeriesSet
		for _, ms := range matcherSets {
			sets = append(sets, qr.Select(ctx, true, hints, ms...))
		}
		set = storage.NewMergeSeriesSet(sets, 0, storage.ChainedSeriesMerge)
	} else {
		set = qr.Select(ctx, false, hints, matcherSets[0]...)
	}
	metrics := []labels.Labels{}
	warnings := set.Warnings()
	for set.Next() {
		metrics = append(metrics, set.At().Labels())
		if limit > 0 && len(metrics) > limit {
			metrics = metrics[:limit]
			warnings.Add(errors.New("results truncated due to limit"))
			return apiResult{data: metrics, warnings: warnings}
		}
	}
	if set.Err() != nil {
		return apiResult{err: returnAPIError(set.Err()), warnings: warnings}
	}
	return apiResult{data: metrics, warnings: warnings}
}

// buildInfo answers /status/buildinfo, which Grafana probes to learn what it talks to.
func (q *Querier) buildInfo(*http.Request) apiResult {
	b, err := json.Marshal(struct {
		Application string `json:"application"`
		Version     string `json:"version"`
		Revision    string `json:"revision"`
		Branch      string `json:"branch"`
		BuildUser   string `json:"buildUser"`
		BuildDate   string `json:"buildDate"`
		GoVersion   string `json:"goVersion"`
	}{Application: "raftingest", Version: Version, GoVersion: runtime.Version()})
	if err != nil {
		return apiResult{err: &apiError{errorInternal, err}}
	}
	return apiResult{data: json.RawMessage(b)}
}

// Version is what /status/buildinfo reports; the build may set it with -ldflags -X.
var Version = "0.1.0"

// metadata and queryExemplars: exemplars.go.

var (
	// MinTime and MaxTime are Prometheus' defaults for the start and end of optional time ranges.
	MinTime = time.Unix(math.MinInt64/1000+62135596801, 0).UTC()
	MaxTime = time.Unix(math.MaxInt64/1000-62135596801, 999999999).UTC()

	minTimeFormatted = MinTime.Format(time.RFC3339Nano)
	maxTimeFormatted = MaxTime.Format(time.RFC3339Nano)
)

func parseTimeParam(r *http.Request, name string, def time.Time) (time.Time, error) {
	val := r.FormValue(name)
	if val == "" {
		return def, nil
	}
	t, err := parseTime(val)
	if err != nil {
		return time.Time{}, fmt.Errorf("invalid time value for '%s': %w", name, err)
	}
	return t, nil
}

func parseTime(s string) (time.Time, error) {
	if t, err := strconv.ParseFloat(s, 64); err == nil {
		s, ns := math.Modf(t)
		ns = math.Round(ns*1000) / 1000
		return time.Unix(int64(s), int64(ns*float64(time.Second))).UTC(), nil
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	switch s {
	case minTimeFormatted:
		return MinTime, nil
	case maxTimeFormatted:
		return MaxTime, nil
	}
	return time.Time{}, fmt.Errorf("cannot parse %q to a valid timestamp", s)
}

func parseDuration(s string) (time.Duration, error) {
	if d, err := strconv.ParseFloat(s, 64); err == nil {
		ts := d * float64(time.Second)
		if ts > float64(math.MaxInt64) || ts < float64(math.MinInt64) {
			return 0, fmt.Errorf("cannot parse %q to a valid duration. It overflows int64", s)
		}
		return time.Duration(ts), nil
	}
	if d, err := model.ParseDuration(s); err == nil {
		return time.Duration(d), nil
	}
	return 0, fmt.Errorf("cannot parse %q to a valid duration", s)
}

func parseMatchersParam(matchers []string) ([][]*labels.Matcher, error) {
	sets, err := parser.ParseMetricSelectors(matchers)
	if err != nil {
		return nil, err
	}
OUTER:
	for _, ms := range sets {
		for _, m := range ms {
			if m != nil && !m.Matches("") {
				continue OUTER
			}
		}
		return nil, errors.New("match[] must contain at least one non-empty matcher")
	}
	return sets, nil
}

func parseLimitParam(s string) (int, error) {
	if s == "" {
		return 0, nil
	}
	limit, err := strconv.Atoi(s)
	if err != nil {
		return 0, err
	}
	if limit < 0 {
		return 0, errors.New("limit must be non-negative")
	}
	return limit, nil
}

func toHintLimit(limit int) int {
	if limit > 0 && limit < math.MaxInt {
		return limit + 1
	}
	return limit
}
