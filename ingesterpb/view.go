package ingesterpb

import (
	"errors"
	"fmt"
	"math"
	"unsafe"

	"google.golang.org/protobuf/encoding/protowire"
)

// ErrMalformedPush wraps every error of PushRequestView.Unmarshal.
var ErrMalformedPush = errors.New("ingesterpb: malformed PushRequest")

// LabelView is one label of a decoded PushRequest.
//
// LIFETIME: Name and Value are "yolo" strings aliasing the bytes given to Unmarshal, not copies. They
// are valid only as long as those bytes are untouched; anything kept longer (a map key, a series'
// labels, an error kept past the request) must be copied first (strings.Clone, labels.Labels.Copy).
type LabelView struct {
	Name, Value string
}

// SampleView is one sample of a decoded PushRequest. Its layout (int64 then float64) is the same as
// memstore.Sample's on purpose, so that a conversion is a plain copy.
type SampleView struct {
	TimestampMs int64
	Value       float64
}

// SeriesView is one decoded TimeSeries. Its slices point into the PushRequestView's arenas and its
// strings into the decoded bytes (see LabelView).
type SeriesView struct {
	Labels  []LabelView
	Samples []SampleView
	// Exemplars are TimeSeries field 3 (exemplars_view.go); nil for a series without.
	Exemplars []ExemplarView
	// Histograms are the encoded prompb.Histogram messages of TimeSeries field 4, aliasing the
	// decoded bytes (raw_hist.go decodes them).
	Histograms [][]byte
}

// PushRequestView is a PushRequest decoded without allocating per series, label or sample: labels and
// samples go into two arenas reused from decode to decode, and label strings alias the input. It is
// the ingester's decoder for requests coming from a distributor; the generated PushRequest remains the
// reference (FuzzPushRequestView compares the two). Not safe for concurrent use; reuse one per
// goroutine (a sync.Pool of them).
type PushRequestView struct {
	Series []SeriesView
	// RingIndex is PushRequest.ring_index: write fencing's stamp, 0 when the request carries none.
	RingIndex uint64

	labels  []LabelView
	samples []SampleView
	ends    []int32 // per series: label end, sample end (pairs) while decoding
	hists   histArena

	// Metadata is PushRequest field 3 (exemplars_view.go).
	Metadata  []MetadataView
	exemplars []ExemplarView
	exLabels  []LabelView
}

// Reset empties r, keeping its capacity and dropping every reference into the last input.
func (r *PushRequestView) Reset() {
	clear(r.Series)
	clear(r.labels)
	r.Series, r.labels, r.samples, r.ends = r.Series[:0], r.labels[:0], r.samples[:0], r.ends[:0]
	r.hists.reset()
	r.RingIndex = 0
	if len(r.exemplars)+len(r.Metadata) > 0 {
		r.resetExtras()
	}
}

// Samples returns how many samples r holds in all.
func (r *PushRequestView) Samples() int { return len(r.samples) }

// ArenaBytes is the memory r's arenas hold (their capacity), kept across Reset: a pool of views
// drops one that grew too large rather than pin it.
func (r *PushRequestView) ArenaBytes() int {
	return cap(r.Series)*int(unsafe.Sizeof(SeriesView{})) + cap(r.labels)*int(unsafe.Sizeof(LabelView{})) +
		cap(r.samples)*int(unsafe.Sizeof(SampleView{})) + cap(r.ends)*4 + r.extrasBytes()
}

// Unmarshal decodes a PushRequest from b, resetting r first. It accepts exactly what the generated
// code (google.golang.org/protobuf) accepts and reads the same values, with one deliberate exception:
// label names and values are NOT checked to be valid UTF-8 here (proto3 `string` fields are, by the
// generated code). A request from this node's own distributor is trusted as it is (it refuses such
// series before forwarding them: distributor DESIGN.md, "Validation"); one that arrives over gRPC is
// checked series by series with ValidateLabelViews, which refuses only the offending series and
// costs a single pass over the label bytes. Unknown fields (including a known field number with another wire
// type, which the generated code also keeps as unknown) are skipped.
//
// Label strings alias b (see LabelView). On error r holds a partial decode that must not be used.
func (r *PushRequestView) Unmarshal(b []byte) error {
	r.Reset()
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return malformed("PushRequest", protowire.ParseError(n))
		}
		b = b[n:]
		if num == 1 && typ == protowire.BytesType {
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return malformed("PushRequest.timeseries", protowire.ParseError(n))
			}
			if err := r.decodeSeries(v); err != nil {
				return err
			}
			b = b[n:]
			continue
		}
		if num == 3 && typ == protowire.BytesType {
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return malformed("PushRequest.metadata", protowire.ParseError(n))
			}
			if err := r.decodeMetadata(v); err != nil {
				return err
			}
			b = b[n:]
			continue
		}
		if num == RingIndexFieldNumber && typ == protowire.VarintType {
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return malformed("PushRequest.ring_index", protowire.ParseError(n))
			}
			r.RingIndex = v // the last one wins, as in the generated code
			b = b[n:]
			continue
		}
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			return malformed("PushRequest", protowire.ParseError(n))
		}
		b = b[n:]
	}
	if len(r.labels) > math.MaxInt32 || len(r.samples) > math.MaxInt32 {
		return fmt.Errorf("%w: too many labels or samples", ErrMalformedPush)
	}
	// The arenas are complete: point every series into them.
	lo, so := int32(0), int32(0)
	for k := range r.Series {
		le, se := r.ends[2*k], r.ends[2*k+1]
		r.Series[k] = SeriesView{Labels: r.labels[lo:le:le], Samples: r.samples[so:se:se], Histograms: r.hists.of(k)}
		lo, so = le, se
	}
	if len(r.exemplars) > 0 {
		r.finishExemplars()
	}
	return nil
}

func malformed(where string, err error) error {
	return fmt.Errorf("%w: %s: %v", ErrMalformedPush, where, err)
}

func (r *PushRequestView) decodeSeries(b []byte) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return malformed("TimeSeries", protowire.ParseError(n))
		}
		b = b[n:]
		if (num == 1 || num == 2) && typ == protowire.BytesType {
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return malformed("TimeSeries", protowire.ParseError(n))
			}
			if num == 1 {
				l, err := decodeLabelView(v)
				if err != nil {
					return err
				}
				r.labels = append(r.labels, l)
			} else {
				s, err := decodeSampleView(v)
				if err != nil {
					return err
				}
				r.samples = append(r.samples, s)
			}
			b = b[n:]
			continue
		}
		if num == 3 && typ == protowire.BytesType {
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return malformed("TimeSeries.exemplars", protowire.ParseError(n))
			}
			if err := r.decodeExemplar(v, int32(len(r.Series))); err != nil {
				return err
			}
			b = b[n:]
			continue
		}
		if num == 4 && typ == protowire.BytesType {
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return malformed("TimeSeries.histograms", protowire.ParseError(n))
			}
			r.hists.add(len(r.Series), v)
			b = b[n:]
			continue
		}
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			return malformed("TimeSeries", protowire.ParseError(n))
		}
		b = b[n:]
	}
	r.Series = append(r.Series, SeriesView{})
	r.ends = append(r.ends, int32(len(r.labels)), int32(len(r.samples)))
	return nil
}

func decodeLabelView(b []byte) (LabelView, error) {
	var l LabelView
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return l, malformed("Label", protowire.ParseError(n))
		}
		b = b[n:]
		if (num == 1 || num == 2) && typ == protowire.BytesType {
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return l, malformed("Label", protowire.ParseError(n))
			}
			if num == 1 {
				l.Name = yolo(v)
			} else {
				l.Value = yolo(v)
			}
			b = b[n:]
			continue
		}
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			return l, malformed("Label", protowire.ParseError(n))
		}
		b = b[n:]
	}
	return l, nil
}

func decodeSampleView(b []byte) (SampleView, error) {
	var s SampleView
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return s, malformed("Sample", protowire.ParseError(n))
		}
		b = b[n:]
		switch {
		case num == 1 && typ == protowire.Fixed64Type:
			v, n := protowire.ConsumeFixed64(b)
			if n < 0 {
				return s, malformed("Sample.value", protowire.ParseError(n))
			}
			s.Value = math.Float64frombits(v)
			b = b[n:]
		case num == 2 && typ == protowire.VarintType:
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return s, malformed("Sample.timestamp", protowire.ParseError(n))
			}
			s.TimestampMs = int64(v)
			b = b[n:]
		default:
			n = protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return s, malformed("Sample", protowire.ParseError(n))
			}
			b = b[n:]
		}
	}
	return s, nil
}

// yolo returns a string aliasing b without copying (see LabelView for the lifetime rule).
func yolo(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(&b[0], len(b))
}
