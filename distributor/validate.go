package distributor

import (
	"flag"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Limits are the per-series validation limits, with Mimir's flag names and defaults. They apply to
// every tenant alike (per-tenant overrides can come later without changing the flags).
type Limits struct {
	MaxLabelNamesPerSeries int           // -validation.max-label-names-per-series
	MaxLabelNameLength     int           // -validation.max-length-label-name (bytes)
	MaxLabelValueLength    int           // -validation.max-length-label-value (bytes)
	CreationGracePeriod    time.Duration // -validation.create-grace-period
	PastGracePeriod        time.Duration // -validation.past-grace-period: 0 = no bound
	MaxMetadataLength      int           // -validation.max-metadata-length (bytes of a metric name, help or unit)
	// MaxNativeHistogramBuckets is -validation.max-native-histogram-buckets (0: no limit), the
	// default of the tenants' max_native_histogram_buckets; ReduceNativeHistogramOverMaxBuckets is
	// -validation.reduce-native-histogram-over-max-buckets (decode_hist.go).
	MaxNativeHistogramBuckets           int
	ReduceNativeHistogramOverMaxBuckets bool
}

// DefaultPastGracePeriod is the default of -validation.past-grace-period. Mimir's default is 0 (no
// bound). Ours is finite so that the past is bounded out of the box, also for a tenant whose data
// is all old (the in-memory bound follows the tenant's newest sample, see Deps.OldestInMemory).
// 12h is an hour inside -querier.query-ingesters-within (13h): a sample accepted into memory is
// where queries look for it. It leaves room for senders catching up after hours of outage and for
// replays of recent history (the benchmark writes from 6h back).
const DefaultPastGracePeriod = 12 * time.Hour

// RegisterFlags registers the limits' flags with Mimir's defaults.
func (l *Limits) RegisterFlags(f *flag.FlagSet) {
	f.IntVar(&l.MaxLabelNamesPerSeries, "validation.max-label-names-per-series", 30, "Maximum number of labels (metric name included) a series may have.")
	f.IntVar(&l.MaxLabelNameLength, "validation.max-length-label-name", 1024, "Maximum length in bytes of a label name.")
	f.IntVar(&l.MaxLabelValueLength, "validation.max-length-label-value", 2048, "Maximum length in bytes of a label value.")
	f.IntVar(&l.MaxNativeHistogramBuckets, "validation.max-native-histogram-buckets", 0, "Maximum number of buckets (positive and negative) of a native histogram sample; 0 is no limit. A histogram over it has its resolution reduced until it fits (see -validation.reduce-native-histogram-over-max-buckets), or is refused with 400. Per tenant: max_native_histogram_buckets in the runtime configuration.")
	f.BoolVar(&l.ReduceNativeHistogramOverMaxBuckets, "validation.reduce-native-histogram-over-max-buckets", true, "Reduce the resolution of a native histogram with more buckets than -validation.max-native-histogram-buckets until it fits (refused only when it cannot fit: custom buckets, or schema -4 reached); false refuses it with 400.")
	f.DurationVar(&l.CreationGracePeriod, "validation.create-grace-period", 10*time.Minute, "How far in the future (against this node's clock) a sample's timestamp may be.")
	f.IntVar(&l.MaxMetadataLength, "validation.max-metadata-length", DefaultMaxMetadataLength, "Maximum length in bytes of a metric metadata entry's metric name, help and unit (each); a longer entry is refused with 400 naming the metric, the request's other data kept (Mimir's default).")
	f.DurationVar(&l.PastGracePeriod, "validation.past-grace-period", DefaultPastGracePeriod, "How far in the past (against this node's clock) a sample's timestamp may be; older samples are refused with 400 (sample_too_far_in_past), the series' other samples kept. 0 disables this bound (Mimir's default). Independently, a sample older than the oldest block range still in memory is refused (sample_out_of_bounds): ranges of -ingester.flush-period are flushed once they closed half a period ago, reckoned from the tenant's newest sample (not after now), as Prometheus' head does.")
}

// Validate checks the limits, naming the flags.
func (l *Limits) Validate() error {
	switch {
	case l.MaxLabelNamesPerSeries < 1:
		return fmt.Errorf("-validation.max-label-names-per-series=%d: want at least 1 (the metric name)", l.MaxLabelNamesPerSeries)
	case l.MaxLabelNameLength < len("__name__"):
		return fmt.Errorf("-validation.max-length-label-name=%d: want at least %d (the length of __name__)", l.MaxLabelNameLength, len("__name__"))
	case l.MaxLabelValueLength < 1:
		return fmt.Errorf("-validation.max-length-label-value=%d: want at least 1", l.MaxLabelValueLength)
	case l.CreationGracePeriod < 0:
		return fmt.Errorf("-validation.create-grace-period=%s: want zero or more", l.CreationGracePeriod)
	case l.MaxMetadataLength < 1:
		return fmt.Errorf("-validation.max-metadata-length=%d: want at least 1", l.MaxMetadataLength)
	case l.MaxNativeHistogramBuckets < 0:
		return fmt.Errorf("-validation.max-native-histogram-buckets=%d: want 0 (no limit) or more", l.MaxNativeHistogramBuckets)
	case l.PastGracePeriod < 0:
		return fmt.Errorf("-validation.past-grace-period=%s: want zero (no bound) or more", l.PastGracePeriod)
	}
	return nil
}

// Discard reasons: the `reason` label of cortex_discarded_samples_total. They are Mimir's, so that
// dashboards built for Mimir read ours.
const (
	reasonMissingMetricName    = "missing_metric_name"
	reasonInvalidMetricName    = "metric_name_invalid"
	reasonMaxLabelNames        = "max_label_names_per_series"
	reasonInvalidLabel         = "label_invalid"
	reasonLabelNameTooLong     = "label_name_too_long"
	reasonInvalidLabelValue    = "label_value_invalid"
	reasonLabelValueTooLong    = "label_value_too_long"
	reasonDuplicateLabelNames  = "duplicate_label_names"
	reasonTooFarInFuture       = "sample_too_far_in_future"
	reasonTooFarInPast         = "sample_too_far_in_past"
	reasonOutOfBounds          = "sample_out_of_bounds"
	reasonRateLimited          = "rate_limited"
	reasonIngesterClientError  = "ingester_refused" // a quorum of replicas refused it (out of order, ...)
	errIDPrefix                = " (err-raftingest-"
	maxRenderedSeries          = 512 // bytes of a series' labels shown in a message before "…"
	maxRenderedValue           = 200 // bytes of one label value shown in a message before "…"
	validationMsgSeriesPreface = ", series: "
)

// refusal is why a series (or some of its samples) was refused by validation: the discard reason
// (a metric label) and the message for the client.
type refusal struct {
	reason string
	msg    string
}

// isLegacyMetricName reports whether s matches [a-zA-Z_:][a-zA-Z0-9_:]*, without a regexp.
func isLegacyMetricName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '_' || c == ':' || (c|0x20 >= 'a' && c|0x20 <= 'z') || (i > 0 && c >= '0' && c <= '9') {
			continue
		}
		return false
	}
	return true
}

// isLegacyLabelName reports whether s matches [a-zA-Z_][a-zA-Z0-9_]*. Prometheus 3 can be configured
// for UTF-8 names; like Mimir's default we accept only the legacy scheme for now.
func isLegacyLabelName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '_' || (c|0x20 >= 'a' && c|0x20 <= 'z') || (i > 0 && c >= '0' && c <= '9') {
			continue
		}
		return false
	}
	return true
}

// normalize prepares a series' labels the way Mimir does before validating and sharding them:
//
//   - labels with an empty value are dropped: in Prometheus a label with an empty value does not
//     exist (Prometheus' TSDB drops them too), so {a=""} and {} must be the same series, on the same
//     ingesters, with the same hash;
//   - labels are sorted by name if they are not already: the hash and the ingesters need one order,
//     and the remote-write spec says senders sort them, so this costs only one pass for well-behaved
//     clients. Duplicate names are not resolved here: validation refuses them.
//
// It reports whether it changed anything (the series must then be re-encoded, not forwarded raw).
func normalize(s *Series) bool {
	changed := false
	ls := s.Labels
	for i := 0; i < len(ls); i++ {
		if ls[i].Value == "" {
			ls = slices.DeleteFunc(ls, func(l Label) bool { return l.Value == "" })
			changed = true
			break
		}
	}
	sorted := true
	for i := 1; i < len(ls); i++ {
		if ls[i-1].Name > ls[i].Name {
			sorted = false
			break
		}
	}
	if !sorted {
		slices.SortStableFunc(ls, func(a, b Label) int { return strings.Compare(a.Name, b.Name) })
		changed = true
	}
	s.Labels = ls
	return changed
}

// validateLabels checks a normalized series' labels against the limits, in Mimir's order, and
// returns the first refusal, or nil. Its messages name the series and the reason, so that the line
// Prometheus logs for a 400 is enough to find the offending target.
func validateLabels(ls []Label, lim *Limits) *refusal {
	name := ""
	for _, l := range ls {
		if l.Name == "__name__" {
			name = l.Value
			break
		}
	}
	if name == "" {
		return &refusal{reasonMissingMetricName,
			"received a series without a metric name (no __name__ label)" + validationMsgSeriesPreface + renderSeries(ls) + errIDPrefix + "missing-metric-name)"}
	}
	if !isLegacyMetricName(name) {
		return &refusal{reasonInvalidMetricName, fmt.Sprintf("received a series with an invalid metric name %s (want [a-zA-Z_:][a-zA-Z0-9_:]*)%s%s%smetric-name-invalid)",
			quoteTrunc(name), validationMsgSeriesPreface, renderSeries(ls), errIDPrefix)}
	}
	if len(ls) > lim.MaxLabelNamesPerSeries {
		return &refusal{reasonMaxLabelNames, fmt.Sprintf("received a series with %d labels, more than the limit of %d (-validation.max-label-names-per-series)%s%s%smax-label-names-per-series)",
			len(ls), lim.MaxLabelNamesPerSeries, validationMsgSeriesPreface, renderSeries(ls), errIDPrefix)}
	}
	for i, l := range ls {
		switch {
		case !isLegacyLabelName(l.Name):
			return &refusal{reasonInvalidLabel, fmt.Sprintf("received a series with an invalid label name %s (want [a-zA-Z_][a-zA-Z0-9_]*)%s%s%slabel-invalid)",
				quoteTrunc(l.Name), validationMsgSeriesPreface, renderSeries(ls), errIDPrefix)}
		case len(l.Name) > lim.MaxLabelNameLength:
			return &refusal{reasonLabelNameTooLong, fmt.Sprintf("received a series with a label name of %d bytes, longer than the limit of %d (-validation.max-length-label-name), label: %s%s%s%slabel-name-too-long)",
				len(l.Name), lim.MaxLabelNameLength, quoteTrunc(l.Name), validationMsgSeriesPreface, renderSeries(ls), errIDPrefix)}
		case !utf8.ValidString(l.Value):
			return &refusal{reasonInvalidLabelValue, fmt.Sprintf("received a series whose label %s has a value that is not valid UTF-8%s%s%slabel-value-invalid)",
				quoteTrunc(l.Name), validationMsgSeriesPreface, renderSeries(ls), errIDPrefix)}
		case len(l.Value) > lim.MaxLabelValueLength:
			return &refusal{reasonLabelValueTooLong, fmt.Sprintf("received a series whose label %s has a value of %d bytes, longer than the limit of %d (-validation.max-length-label-value)%s%s%slabel-value-too-long)",
				quoteTrunc(l.Name), len(l.Value), lim.MaxLabelValueLength, validationMsgSeriesPreface, renderSeries(ls), errIDPrefix)}
		case i > 0 && ls[i-1].Name == l.Name:
			return &refusal{reasonDuplicateLabelNames, fmt.Sprintf("received a series with the label name %s more than once%s%s%sduplicate-label-names)",
				quoteTrunc(l.Name), validationMsgSeriesPreface, renderSeries(ls), errIDPrefix)}
		}
	}
	return nil
}

// timeBounds are the timestamps a push accepts, in Unix ms: from lo to maxT, both included.
type timeBounds struct {
	maxT     int64 // now plus -validation.create-grace-period
	pastMinT int64 // now minus -validation.past-grace-period (math.MinInt64: no bound)
	memMinT  int64 // start of the oldest block range in memory (math.MinInt64: no bound)
	lo       int64 // max(pastMinT, memMinT)
	newest   int64 // the newest timestamp within them: the tenant's data's clock after this push
}

// timeBounds returns the bounds of a push of req at nowMs by the tenant of ts. The oldest block
// range in memory is reckoned at the time of the tenant's data — its newest sample so far or in
// req, within the other bounds and not after now (Deps.OldestInMemory says why).
func (d *Distributor) timeBounds(nowMs int64, ts *tenantState, req *WriteRequest) timeBounds {
	lim := &d.cfg.Limits
	b := timeBounds{maxT: nowMs + lim.CreationGracePeriod.Milliseconds(), pastMinT: math.MinInt64, memMinT: math.MinInt64}
	if lim.PastGracePeriod > 0 {
		b.pastMinT = nowMs - lim.PastGracePeriod.Milliseconds()
	}
	b.newest = ts.newest.Load()
	if d.oldestInMemory != nil {
		for i := range req.Series {
			for _, smp := range req.Series[i].Samples {
				if t := smp.TimestampMs; t > b.newest && t <= b.maxT && t >= b.pastMinT {
					b.newest = t
				}
			}
		}
		if b.newest != math.MinInt64 {
			b.memMinT = d.oldestInMemory(min(b.newest, nowMs))
		}
	}
	b.lo = max(b.pastMinT, b.memMinT)
	return b
}

// all reports whether every sample is within the bounds (the common case: one pass, no change).
func (b *timeBounds) all(smps []Sample) bool {
	for _, smp := range smps {
		if smp.TimestampMs > b.maxT || smp.TimestampMs < b.lo {
			return false
		}
	}
	return true
}

// timeRefusal is the refusal of the samples of one series dropped for one reason.
type timeRefusal struct {
	refusal
	dropped int
}

// filterSamples removes, in place, the samples outside b, and returns one refusal per reason that
// dropped some, naming the first sample dropped for it. The other samples of the series are kept
// and stored, as Mimir does. Reasons, checked in Mimir's order: too far in the future, too far in
// the past (-validation.past-grace-period), older than the oldest range in memory.
func filterSamples(s *Series, b *timeBounds, lim *Limits) []timeRefusal {
	const future, past, bounds = 0, 1, 2
	var first [3]int64
	var n [3]int
	kept := s.Samples[:0]
	for _, smp := range s.Samples {
		why := -1
		switch t := smp.TimestampMs; {
		case t > b.maxT:
			why = future
		case t < b.pastMinT:
			why = past
		case t < b.memMinT:
			why = bounds
		}
		if why < 0 {
			kept = append(kept, smp)
			continue
		}
		if n[why] == 0 {
			first[why] = smp.TimestampMs
		}
		n[why]++
	}
	s.Samples = kept
	var out []timeRefusal
	series := validationMsgSeriesPreface + renderSeries(s.Labels)
	if n[future] > 0 {
		out = append(out, timeRefusal{refusal{reasonTooFarInFuture, fmt.Sprintf("received a sample whose timestamp %d is more than %s (-validation.create-grace-period) in the future%s%ssample-too-far-in-future)",
			first[future], lim.CreationGracePeriod, series, errIDPrefix)}, n[future]})
	}
	if n[past] > 0 {
		out = append(out, timeRefusal{refusal{reasonTooFarInPast, fmt.Sprintf("received a sample whose timestamp %d is more than %s (-validation.past-grace-period) in the past%s%ssample-too-far-in-past)",
			first[past], lim.PastGracePeriod, series, errIDPrefix)}, n[past]})
	}
	if n[bounds] > 0 {
		out = append(out, timeRefusal{refusal{reasonOutOfBounds, fmt.Sprintf("received a sample whose timestamp %d is older than %d, the start of the oldest block range still in memory (ranges of -ingester.flush-period are flushed to storage once they closed half a period ago)%s%ssample-out-of-bounds)",
			first[bounds], b.memMinT, series, errIDPrefix)}, n[bounds]})
	}
	return out
}

// renderSeries renders labels as Prometheus does, {__name__="x", a="b"}, bounded in size so that a
// series with huge labels cannot make a huge error message. The result is a fresh string (it does not
// alias the body) and is valid UTF-8 whatever the labels hold.
func renderSeries(ls []Label) string {
	var b strings.Builder
	b.WriteByte('{')
	for i, l := range ls {
		if b.Len() > maxRenderedSeries {
			b.WriteString(", …")
			break
		}
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(truncateValid(l.Name, maxRenderedValue))
		b.WriteByte('=')
		b.WriteString(quoteTrunc(l.Value))
	}
	b.WriteByte('}')
	return b.String()
}

// quoteTrunc quotes s (escaping invalid UTF-8), cut to maxRenderedValue bytes with "…" when longer.
func quoteTrunc(s string) string {
	if len(s) > maxRenderedValue {
		return strconv.Quote(s[:maxRenderedValue]) + "…"
	}
	return strconv.Quote(s)
}

func truncateValid(s string, n int) string {
	if len(s) > n {
		s = s[:n] + "…"
	}
	return strings.ToValidUTF8(s, "\uFFFD")
}

// Tenant ids: the rules of dskit's tenant.ValidTenantID, which Mimir applies to X-Scope-OrgID.
const maxTenantIDLength = 150

// ValidateTenantID checks a tenant id from X-Scope-OrgID: 1 to 150 characters from a-z A-Z 0-9 and
// !-_.*'(), and neither "." nor "..". (The rules keep tenant ids usable as directory names.)
func ValidateTenantID(s string) error {
	if s == "" {
		return fmt.Errorf("no org id")
	}
	if len(s) > maxTenantIDLength {
		return fmt.Errorf("tenant id %s is too long: %d characters, at most %d", quoteTrunc(s), len(s), maxTenantIDLength)
	}
	if s == "." || s == ".." {
		return fmt.Errorf("tenant id %q is not allowed", s)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case strings.IndexByte("!-_.*'()", c) >= 0:
		default:
			return fmt.Errorf("tenant id %s has an invalid character %q at byte %d: allowed are a-z, A-Z, 0-9 and !-_.*'()", quoteTrunc(s), rune(c), i)
		}
	}
	return nil
}
