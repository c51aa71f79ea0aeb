package distributor

import (
	"errors"
	"fmt"

	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/pmetric"
	colmetricpb "go.opentelemetry.io/proto/otlp/collector/metrics/v1"
	"google.golang.org/protobuf/proto"
)

// otlpMaxNesting bounds how deep attribute values (arrays and maps of values, which nest without
// limit in OTLP's schema) may nest in an OTLP request. pdata's protobuf decoder recurses once per
// level with no limit of its own, and a body of 10 bytes a level grows its goroutine's stack by
// about 670: some 16 MB of body reaches Go's 1 GB stack limit, a fatal error no recover catches,
// and the whole node dies (found by review). Real attribute values nest a few levels at most.
const otlpMaxNesting = 64

// checkOTLPNesting refuses a protobuf ExportMetricsServiceRequest that nests deeper than
// otlpMaxNesting messages, before pdata decodes it: protobuf-go's decoder, into the OTLP project's
// own generated types, enforces a recursion limit and fails cleanly. It decodes the body once more
// (the structures are dropped right after), a cost only the OTLP path pays.
func checkOTLPNesting(body []byte) error {
	err := proto.UnmarshalOptions{RecursionLimit: otlpMaxNesting, DiscardUnknown: true}.Unmarshal(body, &colmetricpb.ExportMetricsServiceRequest{})
	if err != nil {
		return fmt.Errorf("decoding the OTLP ExportMetricsServiceRequest (messages may nest at most %d deep): %w", otlpMaxNesting, err)
	}
	return nil
}

// errTranslatedTooLarge is an OTLP request whose translation would pass a bound.
var errTranslatedTooLarge = errors.New("the OTLP request translates to too much")

// otlpEstimate bounds what translating md to Prometheus series makes, from md alone (it allocates
// nothing but the rendering of non-string attribute values): the series (one per number data
// point; a bucket per explicit bound plus +Inf, _sum and _count per histogram point; a quantile
// each plus _sum and _count per summary point; one per exponential histogram point; a target_info
// per resource) and their bytes (each carrying its point's attributes, the resource's attributes
// — an upper bound of what is promoted, job and instance — the metric's name with suffixes, and
// the label and sample structures; the resource's attributes on target_info, its identifying
// and promoted ones on every series). Translation repeats a point's attributes on every series it
// makes, so a small body can make a hundred times its size; the estimate is checked against
// the request bounds before anything is translated.
func otlpEstimate(md pmetric.Metrics, promoted []string) (series, bytes int) {
	const (
		perLabel  = 32 + 8 // a label's structure and encoding overhead
		perSeries = 64     // series and sample structures, encoding overhead
		suffix    = 32     // unit and type suffixes of a metric name
	)
	rms := md.ResourceMetrics()
	for i := 0; i < rms.Len(); i++ {
		rm := rms.At(i)
		attrs := rm.Resource().Attributes()
		allBytes, allLabels := attrsSize(attrs)
		series++ // target_info carries every resource attribute
		bytes += perSeries + allBytes + allLabels*perLabel
		// Every other series carries job and instance (from the identifying attributes) and the
		// promoted attributes only.
		resBytes, resLabels := 0, 0
		for _, k := range append([]string{"service.name", "service.namespace", "service.instance.id"}, promoted...) {
			if v, ok := attrs.Get(k); ok {
				resBytes += len(k) + len(v.AsString())
				resLabels++
			}
		}
		sms := rm.ScopeMetrics()
		for j := 0; j < sms.Len(); j++ {
			ms := sms.At(j).Metrics()
			for k := 0; k < ms.Len(); k++ {
				m := ms.At(k)
				name := len(m.Name()) + suffix
				add := func(attrs pcommon.Map, n int) {
					ab, al := attrsSize(attrs)
					series += n
					bytes += n * (perSeries + name + ab + resBytes + (al+resLabels+3)*perLabel)
				}
				switch m.Type() {
				case pmetric.MetricTypeGauge:
					for p := 0; p < m.Gauge().DataPoints().Len(); p++ {
						add(m.Gauge().DataPoints().At(p).Attributes(), 1)
					}
				case pmetric.MetricTypeSum:
					for p := 0; p < m.Sum().DataPoints().Len(); p++ {
						add(m.Sum().DataPoints().At(p).Attributes(), 1)
					}
				case pmetric.MetricTypeHistogram:
					for p := 0; p < m.Histogram().DataPoints().Len(); p++ {
						dp := m.Histogram().DataPoints().At(p)
						add(dp.Attributes(), dp.ExplicitBounds().Len()+3)
					}
				case pmetric.MetricTypeExponentialHistogram:
					for p := 0; p < m.ExponentialHistogram().DataPoints().Len(); p++ {
						add(m.ExponentialHistogram().DataPoints().At(p).Attributes(), 1)
					}
				case pmetric.MetricTypeSummary:
					for p := 0; p < m.Summary().DataPoints().Len(); p++ {
						dp := m.Summary().DataPoints().At(p)
						add(dp.Attributes(), dp.QuantileValues().Len()+2)
					}
				}
			}
		}
	}
	return series, bytes
}

// attrsSize is the bytes of attrs' keys and values as labels, and their number.
func attrsSize(attrs pcommon.Map) (bytes, n int) {
	attrs.Range(func(k string, v pcommon.Value) bool {
		n++
		bytes += len(k)
		switch v.Type() {
		case pcommon.ValueTypeStr:
			bytes += len(v.Str())
		case pcommon.ValueTypeBytes:
			bytes += (v.Bytes().Len() + 2) / 3 * 4 // base64
		case pcommon.ValueTypeSlice, pcommon.ValueTypeMap:
			bytes += len(v.AsString()) // JSON, as the translator renders it
		default:
			bytes += 24
		}
		return true
	})
	return bytes, n
}
