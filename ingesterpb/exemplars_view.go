package ingesterpb

import (
	"fmt"
	"math"
	"unsafe"

	"google.golang.org/protobuf/encoding/protowire"
)

// Exemplars (TimeSeries field 3) and metric metadata (PushRequest field 3) in PushRequestView.
// They are decoded into arenas of their own, only when a request has them, so that the float
// path's decode loop gains one field check and nothing else: a series' exemplars are found at the
// end of the decode from the series index each one carries (they arrive in series order).

// ExemplarView is one exemplar of a decoded series. Labels alias the input (see LabelView).
type ExemplarView struct {
	Labels      []LabelView
	Value       float64
	TimestampMs int64

	series, lo, hi int32 // while decoding: its series' index and its labels in the arena
}

// MetadataView is one decoded MetricMetadata. Strings alias the input (see LabelView).
type MetadataView struct {
	Type             MetricType
	MetricFamilyName string
	Help, Unit       string
}

func (r *PushRequestView) resetExtras() {
	clear(r.exemplars)
	clear(r.exLabels)
	clear(r.Metadata)
	r.exemplars, r.exLabels, r.Metadata = r.exemplars[:0], r.exLabels[:0], r.Metadata[:0]
}

func (r *PushRequestView) extrasBytes() int {
	return cap(r.exemplars)*int(unsafe.Sizeof(ExemplarView{})) + cap(r.exLabels)*int(unsafe.Sizeof(LabelView{})) +
		cap(r.Metadata)*int(unsafe.Sizeof(MetadataView{}))
}

// Exemplars returns how many exemplars r holds in all.
func (r *PushRequestView) Exemplars() int { return len(r.exemplars) }

func (r *PushRequestView) decodeExemplar(b []byte, series int32) error {
	e := ExemplarView{series: series, lo: int32(len(r.exLabels))}
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return malformed("Exemplar", protowire.ParseError(n))
		}
		b = b[n:]
		switch {
		case num == 1 && typ == protowire.BytesType:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return malformed("Exemplar.labels", protowire.ParseError(n))
			}
			l, err := decodeLabelView(v)
			if err != nil {
				return err
			}
			r.exLabels = append(r.exLabels, l)
			b = b[n:]
		case num == 2 && typ == protowire.Fixed64Type:
			v, n := protowire.ConsumeFixed64(b)
			if n < 0 {
				return malformed("Exemplar.value", protowire.ParseError(n))
			}
			e.Value = math.Float64frombits(v)
			b = b[n:]
		case num == 3 && typ == protowire.VarintType:
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return malformed("Exemplar.timestamp", protowire.ParseError(n))
			}
			e.TimestampMs = int64(v)
			b = b[n:]
		default:
			n = protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return malformed("Exemplar", protowire.ParseError(n))
			}
			b = b[n:]
		}
	}
	if len(r.exLabels) > math.MaxInt32 {
		return fmt.Errorf("%w: too many exemplar labels", ErrMalformedPush)
	}
	e.hi = int32(len(r.exLabels))
	r.exemplars = append(r.exemplars, e)
	return nil
}

// finishExemplars points every exemplar into the label arena and every series to its exemplars.
func (r *PushRequestView) finishExemplars() {
	for k := range r.exemplars {
		e := &r.exemplars[k]
		e.Labels = r.exLabels[e.lo:e.hi:e.hi]
	}
	for k := 0; k < len(r.exemplars); {
		s := r.exemplars[k].series
		j := k
		for j < len(r.exemplars) && r.exemplars[j].series == s {
			j++
		}
		if int(s) < len(r.Series) {
			r.Series[s].Exemplars = r.exemplars[k:j:j]
		}
		k = j
	}
}

func (r *PushRequestView) decodeMetadata(b []byte) error {
	var m MetadataView
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return malformed("MetricMetadata", protowire.ParseError(n))
		}
		b = b[n:]
		switch {
		case num == 1 && typ == protowire.VarintType:
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return malformed("MetricMetadata.type", protowire.ParseError(n))
			}
			m.Type = MetricType(int32(v))
			b = b[n:]
		case (num == 2 || num == 4 || num == 5) && typ == protowire.BytesType:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return malformed("MetricMetadata", protowire.ParseError(n))
			}
			switch num {
			case 2:
				m.MetricFamilyName = yolo(v)
			case 4:
				m.Help = yolo(v)
			default:
				m.Unit = yolo(v)
			}
			b = b[n:]
		default:
			n = protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return malformed("MetricMetadata", protowire.ParseError(n))
			}
			b = b[n:]
		}
	}
	r.Metadata = append(r.Metadata, m)
	return nil
}
