package distributor

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/prompb"
	writev2 "github.com/prometheus/prometheus/prompb/io/prometheus/write/v2"
)

// Native histograms on the write path.
//
// Remote-write 1.0 carries them in TimeSeries field 4 (prompb.Histogram), 2.0 in TimeSeries field
// 3 (writev2.Histogram, the same fields). Both are decoded with prompb's generated code (histograms
// are few next to float samples and each holds many numbers: the allocation-free decoder of labels
// and samples would gain little here) into Prometheus's histogram.Histogram or FloatHistogram, then
// validated (validateHistograms): histogram.Validate, and the bucket limit of
// -validation.max-native-histogram-buckets with Mimir's behaviour — a histogram with more buckets
// than the limit has its resolution reduced (ReduceResolution, schema by schema, down to -4) until
// it fits, and is refused when it cannot fit or when -validation.reduce-native-histogram-over-max-buckets
// is false. A 1.0 series whose histograms pass unchanged is forwarded as it came (its field 4 is
// the ingesters' TimeSeries field 4, decoded there by the same generated code); one the
// distributor changed (a reduced histogram, one dropped for its timestamp) and every 2.0 series
// are re-encoded (appendSeries writes the histograms back as field 4), so what an ingester stores
// is exactly what was validated.

// Histogram is one native histogram sample of a decoded series: exactly one of H and FH is set.
type Histogram struct {
	TimestampMs int64
	H           *histogram.Histogram
	FH          *histogram.FloatHistogram
}

// decodeHistogramV1 decodes one prompb.Histogram message m (found at offset base of the body).
// histogramFixedBytes is what one decoded histogram's objects take whatever its buckets: its
// Histogram in the series' slice and the histogram.Histogram (or FloatHistogram) it points to.
// Each span, bucket and custom bound adds 8 bytes (histogramCost). An empty histogram message is 2
// bytes on the wire: charged this, a body of them stops at the decode bound instead of becoming
// about 150 times its size.
const histogramFixedBytes = 200

// histogramCost is the memory a decoded histogram keeps.
func histogramCost(h *Histogram) int {
	n := 0
	if h.H != nil {
		n = len(h.H.PositiveSpans) + len(h.H.NegativeSpans) + len(h.H.PositiveBuckets) + len(h.H.NegativeBuckets) + len(h.H.CustomValues)
	} else if h.FH != nil {
		n = len(h.FH.PositiveSpans) + len(h.FH.NegativeSpans) + len(h.FH.PositiveBuckets) + len(h.FH.NegativeBuckets) + len(h.FH.CustomValues)
	}
	return histogramFixedBytes + 8*n
}

// chargeHistogram counts a decoded histogram against the decode bound, refusing the request
// (ErrTooLarge) when it does not fit. It is charged once decoded, by what it holds: one message's
// decode is bounded by the message (a few times its bytes), and the sum, which a body of many
// histograms could otherwise make grow without bound, is what the bound needs.
func (r *WriteRequest) chargeHistogram(h *Histogram) error {
	cost := histogramCost(h)
	if r.budget > 0 && r.arenaCost()+cost > r.budget {
		return fmt.Errorf("%w: decoding it would take more than %d bytes, %d times its decompressed size of %d bytes plus %d (over the bound at a native histogram of series %d): the request is made of empty or near-empty histograms",
			ErrTooLarge, r.budget, r.expansion, r.bodyLen, decodeSlackBytes, len(r.Series)+1)
	}
	r.histBytes += cost
	return nil
}

func decodeHistogramV1(m []byte, base int) (Histogram, error) {
	var ph prompb.Histogram
	if err := ph.Unmarshal(m); err != nil {
		return Histogram{}, decodeError(base, "TimeSeries.histograms: %v", err)
	}
	if ph.IsFloatHistogram() {
		return Histogram{TimestampMs: ph.Timestamp, FH: ph.ToFloatHistogram()}, nil
	}
	return Histogram{TimestampMs: ph.Timestamp, H: ph.ToIntHistogram()}, nil
}

// decodeHistogramV2 decodes one writev2.Histogram message m.
func decodeHistogramV2(m []byte, base int) (Histogram, error) {
	var ph writev2.Histogram
	if err := ph.Unmarshal(m); err != nil {
		return Histogram{}, decodeError(base, "TimeSeries.histograms: %v", err)
	}
	if ph.IsFloatHistogram() {
		return Histogram{TimestampMs: ph.Timestamp, FH: ph.ToFloatHistogram()}, nil
	}
	return Histogram{TimestampMs: ph.Timestamp, H: ph.ToIntHistogram()}, nil
}

// histProto returns h as the prompb message the ingesters read. prompb's From*Histogram leave
// out the custom bucket bounds (prompb.Histogram field 16): they are set here.
func histProto(h Histogram) prompb.Histogram {
	if h.H != nil {
		p := prompb.FromIntHistogram(h.TimestampMs, h.H)
		p.CustomValues = h.H.CustomValues
		return p
	}
	p := prompb.FromFloatHistogram(h.TimestampMs, h.FH)
	p.CustomValues = h.FH.CustomValues
	return p
}

// histogramsSize is the bytes appendHistograms adds for hs.
func histogramsSize(hs []Histogram) int {
	n := 0
	for _, h := range hs {
		p := histProto(h)
		m := p.Size()
		n += 1 + uvarintLen(uint64(m)) + m
	}
	return n
}

// appendHistograms appends hs as TimeSeries field 4 (tag 0x22) messages.
func appendHistograms(dst []byte, hs []Histogram) []byte {
	for _, h := range hs {
		p := histProto(h)
		m := p.Size()
		dst = append(dst, 0x22)
		dst = binary.AppendUvarint(dst, uint64(m))
		start := len(dst)
		dst = append(dst, make([]byte, m)...)
		if _, err := p.MarshalToSizedBuffer(dst[start:]); err != nil {
			panic("distributor: marshalling a histogram into its own size: " + err.Error()) // broken invariant of prompb
		}
	}
	return dst
}

// Native histogram limits (Mimir's flags).
const (
	reasonInvalidHistogram = "invalid_native_histogram"
	reasonHistogramBuckets = "max_native_histogram_buckets"
	minReducibleSchema     = -4 // exponential schemas go down to -4; custom buckets cannot be reduced
	errInvalidHistogramID  = "invalid-native-histogram)"
	errHistogramBucketsID  = "max-native-histogram-buckets)"
)

// histogramRefusalMsg is the refusal of a series' histogram at t for reason.
func histogramRefusalMsg(s *Series, reason, what string, t int64, id string) *refusal {
	return &refusal{reason, fmt.Sprintf("received a native histogram sample at %d that %s%s%s%s%s",
		t, what, validationMsgSeriesPreface, renderSeries(s.Labels), errIDPrefix, id)}
}

// validateHistograms checks s's histograms in place: a series with an invalid histogram is
// refused whole (as Mimir refuses the series), one over the bucket limit is reduced or refused.
// maxBuckets is the tenant's limit (0: none); reduce is
// -validation.reduce-native-histogram-over-max-buckets. It returns the refusal, if any, and how
// many histograms had their resolution reduced.
func validateHistograms(s *Series, maxBuckets int, reduce bool) (r *refusal, reduced int) {
	for i := range s.Hists {
		h := &s.Hists[i]
		schema := h.schema()
		if schema < histogram.ExponentialSchemaMin && !histogram.IsCustomBucketsSchema(schema) {
			return histogramRefusalMsg(s, reasonInvalidHistogram, fmt.Sprintf("has schema %d: native histogram schemas are %d to %d, or %d for custom buckets",
				schema, histogram.ExponentialSchemaMin, histogram.ExponentialSchemaMax, histogram.CustomBucketsSchema), h.TimestampMs, errInvalidHistogramID), reduced
		}
		// Validate before anything reads the buckets by the spans: ReduceResolution indexes the
		// buckets the spans claim, and spans claiming more than the message holds would panic it.
		var err error
		if h.H != nil {
			err = h.H.Validate()
		} else {
			err = h.FH.Validate()
		}
		if err != nil {
			return histogramRefusalMsg(s, reasonInvalidHistogram, "is invalid: "+err.Error(), h.TimestampMs, errInvalidHistogramID), reduced
		}
		if schema > histogram.ExponentialSchemaMax && !histogram.IsCustomBucketsSchema(schema) {
			// Finer than Prometheus's finest schema: reduced to it, as Mimir does.
			if h.H != nil {
				h.H = h.H.ReduceResolution(histogram.ExponentialSchemaMax)
			} else {
				h.FH = h.FH.ReduceResolution(histogram.ExponentialSchemaMax)
			}
			reduced++
		}
		if maxBuckets <= 0 {
			continue
		}
		n := bucketCount(*h)
		if n <= maxBuckets {
			continue
		}
		if !reduce {
			return histogramRefusalMsg(s, reasonHistogramBuckets, fmt.Sprintf("has %d buckets, more than the limit of %d (-validation.max-native-histogram-buckets, or the tenant's max_native_histogram_buckets)", n, maxBuckets),
				h.TimestampMs, errHistogramBucketsID), reduced
		}
		if err := reduceToFit(h, maxBuckets); err != nil {
			return histogramRefusalMsg(s, reasonHistogramBuckets, fmt.Sprintf("has %d buckets, more than the limit of %d (-validation.max-native-histogram-buckets, or the tenant's max_native_histogram_buckets), and %v", n, maxBuckets, err),
				h.TimestampMs, errHistogramBucketsID), reduced
		}
		reduced++
	}
	return nil, reduced
}

// schema is h's schema.
func (h Histogram) schema() int32 {
	if h.H != nil {
		return h.H.Schema
	}
	return h.FH.Schema
}

// bucketCount is the number of positive and negative buckets of h, as Mimir counts them.
func bucketCount(h Histogram) int {
	if h.H != nil {
		return len(h.H.PositiveBuckets) + len(h.H.NegativeBuckets)
	}
	return len(h.FH.PositiveBuckets) + len(h.FH.NegativeBuckets)
}

var errCannotReduce = errors.New("its resolution cannot be reduced enough (custom buckets cannot be merged; exponential schemas stop at -4)")

// reduceToFit lowers h's schema one step at a time until it has at most maxBuckets buckets, as
// Mimir's distributor does (ReduceResolution keeps the counts, merging neighbouring buckets).
func reduceToFit(h *Histogram, maxBuckets int) error {
	schema := func() int32 {
		if h.H != nil {
			return h.H.Schema
		}
		return h.FH.Schema
	}
	if histogram.IsCustomBucketsSchema(schema()) {
		return errCannotReduce
	}
	for bucketCount(*h) > maxBuckets {
		s := schema()
		if s <= minReducibleSchema {
			return errCannotReduce
		}
		if h.H != nil {
			h.H = h.H.ReduceResolution(s - 1)
		} else {
			h.FH = h.FH.ReduceResolution(s - 1)
		}
	}
	return nil
}

// histogramsInBounds drops, in place, the histograms of s outside b, as filterSamples does float
// samples, and returns the refusals.
func histogramsInBounds(s *Series, b *timeBounds, lim *Limits) []timeRefusal {
	all := true
	for _, h := range s.Hists {
		if h.TimestampMs > b.maxT || h.TimestampMs < b.lo {
			all = false
			break
		}
	}
	if all {
		return nil
	}
	// Reuse filterSamples's rules and messages on the timestamps alone.
	smps := make([]Sample, len(s.Hists))
	for i, h := range s.Hists {
		smps[i] = Sample{TimestampMs: h.TimestampMs, Value: float64(i)}
	}
	tmp := Series{Labels: s.Labels, Samples: smps}
	out := filterSamples(&tmp, b, lim)
	kept := s.Hists[:0]
	for _, smp := range tmp.Samples {
		kept = append(kept, s.Hists[int(smp.Value)])
	}
	s.Hists = kept
	return out
}

// writtenHistograms is the number of histograms of r that a quorum of their replicas stored.
func (r *WriteRequest) writtenHistograms() int {
	n := 0
	for i := range r.Series {
		if s := &r.Series[i]; s.state == seriesDone {
			n += len(s.Hists)
		}
	}
	return n
}

// SetMaxNativeHistogramBuckets sets the per-tenant bucket limit of native histograms (the
// runtime overrides' max_native_histogram_buckets); nil means -validation.max-native-histogram-buckets
// for every tenant. Call before the first push.
func (d *Distributor) SetMaxNativeHistogramBuckets(f func(tenant string) int) { d.histBuckets = f }

// maxHistogramBuckets is tenant's native histogram bucket limit (0: none).
func (d *Distributor) maxHistogramBuckets(tenant string) int {
	if d.histBuckets != nil {
		return d.histBuckets(tenant)
	}
	return d.cfg.Limits.MaxNativeHistogramBuckets
}
