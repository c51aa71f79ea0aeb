package memstore

import (
	"encoding/binary"
	"fmt"
	"math"

	"github.com/prometheus/prometheus/model/histogram"
)

// recHistograms is the record type of native histogram samples (WAL-FORMAT.md, "Histograms
// record (type 5)"): version 3 layout (compression byte), many series' entries. Type 6 is kept
// for a later histogram record; 7 and 8 belong to exemplars and metadata.
const recHistograms byte = 5

// walHistograms is a run of in-order histograms of one series.
type walHistograms struct {
	Ref        uint64
	Histograms []HistSample
}

// Histogram kinds in a histograms record.
const (
	histKindInt   byte = 1
	histKindFloat byte = 2
)

// appendHistogramsEntry appends one entry of a histograms record: ref, count, then each
// histogram with its timestamp as a delta from the previous one of the entry.
func appendHistogramsEntry(b []byte, ref uint64, hs []HistSample) []byte {
	b = binary.AppendUvarint(b, ref)
	b = binary.AppendUvarint(b, uint64(len(hs)))
	var prevT int64
	for _, h := range hs {
		b = binary.AppendUvarint(b, zigzag(h.T-prevT))
		prevT = h.T
		if h.H != nil {
			b = appendIntHistogram(b, h.H)
		} else {
			b = appendFloatHistogram(b, h.FH)
		}
	}
	return b
}

func appendSpans(b []byte, spans []histogram.Span) []byte {
	b = binary.AppendUvarint(b, uint64(len(spans)))
	for _, s := range spans {
		b = binary.AppendUvarint(b, zigzag(int64(s.Offset)))
		b = binary.AppendUvarint(b, uint64(s.Length))
	}
	return b
}

func appendF64(b []byte, v float64) []byte {
	return binary.BigEndian.AppendUint64(b, math.Float64bits(v))
}

func appendCustomValues(b []byte, cv []float64) []byte {
	b = binary.AppendUvarint(b, uint64(len(cv)))
	for _, v := range cv {
		b = appendF64(b, v)
	}
	return b
}

func appendIntHistogram(b []byte, h *histogram.Histogram) []byte {
	b = append(b, histKindInt, byte(h.CounterResetHint))
	b = binary.AppendUvarint(b, zigzag(int64(h.Schema)))
	b = appendF64(b, h.ZeroThreshold)
	b = binary.AppendUvarint(b, h.ZeroCount)
	b = binary.AppendUvarint(b, h.Count)
	b = appendF64(b, h.Sum)
	b = appendSpans(b, h.PositiveSpans)
	b = appendSpans(b, h.NegativeSpans)
	b = binary.AppendUvarint(b, uint64(len(h.PositiveBuckets)))
	for _, v := range h.PositiveBuckets {
		b = binary.AppendUvarint(b, zigzag(v))
	}
	b = binary.AppendUvarint(b, uint64(len(h.NegativeBuckets)))
	for _, v := range h.NegativeBuckets {
		b = binary.AppendUvarint(b, zigzag(v))
	}
	return appendCustomValues(b, h.CustomValues)
}

func appendFloatHistogram(b []byte, h *histogram.FloatHistogram) []byte {
	b = append(b, histKindFloat, byte(h.CounterResetHint))
	b = binary.AppendUvarint(b, zigzag(int64(h.Schema)))
	b = appendF64(b, h.ZeroThreshold)
	b = appendF64(b, h.ZeroCount)
	b = appendF64(b, h.Count)
	b = appendF64(b, h.Sum)
	b = appendSpans(b, h.PositiveSpans)
	b = appendSpans(b, h.NegativeSpans)
	b = binary.AppendUvarint(b, uint64(len(h.PositiveBuckets)))
	for _, v := range h.PositiveBuckets {
		b = appendF64(b, v)
	}
	b = binary.AppendUvarint(b, uint64(len(h.NegativeBuckets)))
	for _, v := range h.NegativeBuckets {
		b = appendF64(b, v)
	}
	return appendCustomValues(b, h.CustomValues)
}

// appendHistogramsRecord appends one histograms record holding hs to b.
func appendHistogramsRecord(b []byte, seq uint64, hs []walHistograms) []byte {
	body := binary.AppendUvarint(nil, uint64(len(hs)))
	for _, e := range hs {
		body = appendHistogramsEntry(body, e.Ref, e.Histograms)
	}
	var zbuf []byte
	return appendRecord(b, seq, recordVersion3, recHistograms, body, &zbuf)
}

// decodeHistograms decodes a histograms payload. Every count is bounded by the bytes left before
// anything is allocated for it; decoded histograms are fresh (nothing aliases the record).
func (r *record) decodeHistograms(d *decbuf) error {
	n := d.count("histograms entry count", 2)
	r.Histograms = r.Histograms[:0]
	for range n {
		ref := d.uvarint("histograms ref")
		nh := d.count("histogram count", 27) // the smallest encoded histogram
		if d.err != nil {
			return d.err
		}
		hs := make([]HistSample, 0, nh)
		var t int64
		for range nh {
			t += unzigzag(d.uvarint("histogram timestamp delta"))
			h := HistSample{T: t}
			switch kind := d.u8("histogram kind"); {
			case d.err != nil:
			case kind == histKindInt:
				h.H = d.intHistogram()
			case kind == histKindFloat:
				h.FH = d.floatHistogram()
			default:
				return fmt.Errorf("%w: histogram kind %d", ErrCorruptRecord, kind)
			}
			if d.err != nil {
				return d.err
			}
			hs = append(hs, h)
		}
		r.Histograms = append(r.Histograms, walHistograms{Ref: ref, Histograms: hs})
	}
	return d.err
}

func (d *decbuf) schema() int32 {
	s := unzigzag(d.uvarint("histogram schema"))
	if s < math.MinInt32 || s > math.MaxInt32 {
		d.fail("histogram schema")
		return 0
	}
	return int32(s)
}

func (d *decbuf) f64(what string) float64 { return math.Float64frombits(d.be64(what)) }

func (d *decbuf) spans(what string) []histogram.Span {
	n := d.count(what, 2)
	if n == 0 || d.err != nil {
		return nil
	}
	ss := make([]histogram.Span, n)
	for i := range ss {
		off := unzigzag(d.uvarint(what))
		l := d.uvarint(what)
		if off < math.MinInt32 || off > math.MaxInt32 || l > math.MaxUint32 {
			d.fail(what)
			return nil
		}
		ss[i] = histogram.Span{Offset: int32(off), Length: uint32(l)}
	}
	return ss
}

func (d *decbuf) customValues() []float64 {
	n := d.count("histogram custom values count", 8)
	if n == 0 || d.err != nil {
		return nil
	}
	cv := make([]float64, n)
	for i := range cv {
		cv[i] = d.f64("histogram custom value")
	}
	return cv
}

func (d *decbuf) intHistogram() *histogram.Histogram {
	h := &histogram.Histogram{CounterResetHint: histogram.CounterResetHint(d.u8("histogram counter reset hint"))}
	h.Schema = d.schema()
	h.ZeroThreshold = d.f64("histogram zero threshold")
	h.ZeroCount = d.uvarint("histogram zero count")
	h.Count = d.uvarint("histogram count")
	h.Sum = d.f64("histogram sum")
	h.PositiveSpans = d.spans("histogram positive spans")
	h.NegativeSpans = d.spans("histogram negative spans")
	h.PositiveBuckets = d.intBuckets("histogram positive buckets")
	h.NegativeBuckets = d.intBuckets("histogram negative buckets")
	h.CustomValues = d.customValues()
	return h
}

func (d *decbuf) intBuckets(what string) []int64 {
	n := d.count(what, 1)
	if n == 0 || d.err != nil {
		return nil
	}
	bs := make([]int64, n)
	for i := range bs {
		bs[i] = unzigzag(d.uvarint(what))
	}
	return bs
}

func (d *decbuf) floatHistogram() *histogram.FloatHistogram {
	h := &histogram.FloatHistogram{CounterResetHint: histogram.CounterResetHint(d.u8("histogram counter reset hint"))}
	h.Schema = d.schema()
	h.ZeroThreshold = d.f64("histogram zero threshold")
	h.ZeroCount = d.f64("histogram zero count")
	h.Count = d.f64("histogram count")
	h.Sum = d.f64("histogram sum")
	h.PositiveSpans = d.spans("histogram positive spans")
	h.NegativeSpans = d.spans("histogram negative spans")
	h.PositiveBuckets = d.floatBuckets("histogram positive buckets")
	h.NegativeBuckets = d.floatBuckets("histogram negative buckets")
	h.CustomValues = d.customValues()
	return h
}

func (d *decbuf) floatBuckets(what string) []float64 {
	n := d.count(what, 8)
	if n == 0 || d.err != nil {
		return nil
	}
	bs := make([]float64, n)
	for i := range bs {
		bs[i] = d.f64(what)
	}
	return bs
}

// keepHistogramsFrom keeps, in place and in order, the histograms with T >= before.
func keepHistogramsFrom(hs []HistSample, before int64) []HistSample {
	out := hs[:0]
	for _, h := range hs {
		if h.T >= before {
			out = append(out, h)
		}
	}
	return out
}

// filterHistograms keeps, in place, the live series' histograms at or after their bound.
func filterHistograms(r *record, isLive func(uint64) bool, bound func(uint64) int64) (changed, drop bool) {
	out := r.Histograms[:0]
	for _, e := range r.Histograms {
		if !isLive(e.Ref) {
			changed = true
			continue
		}
		n := len(e.Histograms)
		e.Histograms = keepHistogramsFrom(e.Histograms, bound(e.Ref))
		if len(e.Histograms) != n {
			changed = true
		}
		if len(e.Histograms) > 0 {
			out = append(out, e)
		}
	}
	r.Histograms = out
	return changed, len(out) == 0
}
