package distributor

import (
	"encoding/binary"
	"fmt"
	"math"
	"slices"
	"strings"
	"unicode/utf8"
	"unsafe"
)

// Exemplars and metric metadata (remote-write 1.0 TimeSeries field 3 and WriteRequest field 3;
// 2.0's inline exemplars and per-series metadata).
//
// Both are decoded into arenas of the WriteRequest, with the same lifetime rule as labels (their
// strings alias the body) and within the same expansion bound (DecodeLimits.MaxExpansion): the
// arenas count in DecodedBytes and grow through WriteRequest.grow, so nothing allocates beyond what
// the body bounds. A series with exemplars is re-encoded for the ingesters (appendSeries writes its
// validated exemplars as TimeSeries field 3, prompb's layout, which ingesterpb.TimeSeries shares);
// a series without stays on the raw path.
//
// Metadata is routed apart from the series (pushMetadata): each entry to the replicas of its
// metric name's series {__name__="<metric_family_name>"} in the tenant, the placement Mimir's
// sharding by tenant and metric name gives, so that one metric's metadata always lands on the same
// RF members whichever series of the metric came with it, and a metadata-only request (Prometheus
// sends metadata in requests of its own) needs no series to be placed.

// MaxExemplarLabelRunes is the most UTF-8 runes an exemplar's label names and values may hold in
// all: Prometheus's and Mimir's exemplar.ExemplarMaxLabelSetLength (the OpenMetrics limit).
const MaxExemplarLabelRunes = 128

// DefaultMaxMetadataLength is Mimir's default of -validation.max-metadata-length.
const DefaultMaxMetadataLength = 1024

// Exemplar is one decoded exemplar of a series. Labels alias the body (see Label).
type Exemplar struct {
	Labels      []Label
	Value       float64
	TimestampMs int64

	labelStart, labelEnd int32 // offsets into the request's exemplar-label arena while decoding
}

// Metadata is one decoded metric metadata entry (prompb.MetricMetadata). Strings alias the body.
type Metadata struct {
	Type       uint8 // prompb.MetricMetadata_MetricType (0 unknown, 1 counter, 2 gauge, ...)
	MetricName string
	Help, Unit string

	series int32 // for a 2.0 entry, 1 + the index of the series it came with (its name is __name__)
	hash   uint32
	ok     bool // passed validation
}

// Sizes of the decoded structures, for the expansion bound.
const (
	exemplarBytes = int(unsafe.Sizeof(Exemplar{}))
	metadataBytes = int(unsafe.Sizeof(Metadata{}))
)

// SeriesExemplars returns the exemplars of s, a series of r.
func (r *WriteRequest) SeriesExemplars(s *Series) []Exemplar {
	return r.exemplars[s.exStart : int(s.exStart)+s.Exemplars : int(s.exStart)+s.Exemplars]
}

// MetricMetadata returns the request's metadata entries (2.0: one per metric name).
func (r *WriteRequest) MetricMetadata() []Metadata { return r.metadata }

func (r *WriteRequest) growExemplars() error {
	c, err := r.grow("exemplar", grewExemplars, len(r.exemplars), cap(r.exemplars), exemplarBytes)
	if err != nil {
		return err
	}
	r.exemplars = append(make([]Exemplar, 0, c), r.exemplars...)
	r.grown |= grewExemplars
	return nil
}

func (r *WriteRequest) growExLabels() error {
	c, err := r.grow("exemplar label", grewExLabels, len(r.exLabels), cap(r.exLabels), labelBytes)
	if err != nil {
		return err
	}
	r.exLabels = append(make([]Label, 0, c), r.exLabels...)
	r.grown |= grewExLabels
	return nil
}

func (r *WriteRequest) growMetadata() error {
	c, err := r.grow("metadata", grewMetadata, len(r.metadata), cap(r.metadata), metadataBytes)
	if err != nil {
		return err
	}
	r.metadata = append(make([]Metadata, 0, c), r.metadata...)
	r.grown |= grewMetadata
	return nil
}

func (r *WriteRequest) addExLabel(l Label) error {
	if len(r.exLabels) == cap(r.exLabels) {
		if err := r.growExLabels(); err != nil {
			return err
		}
	}
	r.exLabels = append(r.exLabels, l)
	return nil
}

func (r *WriteRequest) addExemplar(e Exemplar) error {
	if len(r.exemplars) == cap(r.exemplars) {
		if err := r.growExemplars(); err != nil {
			return err
		}
	}
	r.exemplars = append(r.exemplars, e)
	return nil
}

func (r *WriteRequest) addMetadata(m Metadata) error {
	if len(r.metadata) == cap(r.metadata) {
		if err := r.growMetadata(); err != nil {
			return err
		}
	}
	r.metadata = append(r.metadata, m)
	return nil
}

// decodeExemplar decodes a 1.0 Exemplar message (labels = 1, value = 2, timestamp = 3) into the
// exemplar arena, as prompb's generated code reads it (last scalar wins, unknown fields skipped).
func (r *WriteRequest) decodeExemplar(b []byte, base int) error {
	e := Exemplar{labelStart: int32(len(r.exLabels))}
	for i := 0; i < len(b); {
		start := i
		field, wire, j, err := tag(b, i, "Exemplar")
		if err != nil {
			return offset(err, base)
		}
		i = j
		switch field {
		case 1:
			if err := want(wire, 2, base+start, "Exemplar", "labels"); err != nil {
				return err
			}
			n, j, err := length(b, i)
			if err != nil {
				return offset(err, base)
			}
			l, _, err := decodeLabel(b[j:j+n], base+j)
			if err != nil {
				return err
			}
			if err := r.addExLabel(l); err != nil {
				return err
			}
			i = j + n
		case 2:
			if err := want(wire, 1, base+start, "Exemplar", "value"); err != nil {
				return err
			}
			if len(b)-i < 8 {
				return decodeError(base+i, "Exemplar.value: truncated double")
			}
			e.Value = math.Float64frombits(binary.LittleEndian.Uint64(b[i:]))
			i += 8
		case 3:
			if err := want(wire, 0, base+start, "Exemplar", "timestamp"); err != nil {
				return err
			}
			v, j, err := uvarint(b, i)
			if err != nil {
				return offset(err, base)
			}
			e.TimestampMs = int64(v)
			i = j
		default:
			if i, err = skip(b, i, wire); err != nil {
				return offset(err, base)
			}
		}
	}
	e.labelEnd = int32(len(r.exLabels))
	return r.addExemplar(e)
}

// decodeExemplarV2 decodes a 2.0 Exemplar message (labels_refs = 1, value = 2, timestamp = 3).
func (r *WriteRequest) decodeExemplarV2(b []byte, base int) error {
	e := Exemplar{labelStart: int32(len(r.exLabels))}
	refs := 0
	var name string
	addRef := func(v uint64, off int) error {
		if v >= uint64(len(r.symbols)) {
			return decodeError(off, "Exemplar.labels_refs: reference %d names no symbol: the request has %d symbols", v, len(r.symbols))
		}
		refs++
		if refs%2 == 1 {
			name = r.symbols[v]
			return nil
		}
		l := Label{Name: name, Value: r.symbols[v]}
		if err := r.rewrite(labelSize(l) + 6); err != nil {
			return err
		}
		return r.addExLabel(l)
	}
	for i := 0; i < len(b); {
		start := i
		field, wire, j, err := tag(b, i, "Exemplar")
		if err != nil {
			return offset(err, base)
		}
		i = j
		switch {
		case field == 1 && wire == 0:
			v, j, err := uvarint(b, i)
			if err != nil {
				return offset(err, base)
			}
			if err := addRef(uint64(uint32(v)), base+i); err != nil {
				return err
			}
			i = j
		case field == 1 && wire == 2:
			n, j, err := length(b, i)
			if err != nil {
				return offset(err, base)
			}
			for k, end := j, j+n; k < end; {
				v, next, err := uvarint(b[:end], k)
				if err != nil {
					return offset(err, base)
				}
				if err := addRef(uint64(uint32(v)), base+k); err != nil {
					return err
				}
				k = next
			}
			i = j + n
		case field == 1:
			return decodeError(base+start, "Exemplar.labels_refs: wrong wire type %d, want 0 or 2", wire)
		case field == 2:
			if err := want(wire, 1, base+start, "Exemplar", "value"); err != nil {
				return err
			}
			if len(b)-i < 8 {
				return decodeError(base+i, "Exemplar.value: truncated double")
			}
			e.Value = math.Float64frombits(binary.LittleEndian.Uint64(b[i:]))
			i += 8
		case field == 3:
			if err := want(wire, 0, base+start, "Exemplar", "timestamp"); err != nil {
				return err
			}
			v, j, err := uvarint(b, i)
			if err != nil {
				return offset(err, base)
			}
			e.TimestampMs = int64(v)
			i = j
		default:
			if i, err = skip(b, i, wire); err != nil {
				return offset(err, base)
			}
		}
	}
	if refs%2 != 0 {
		return decodeError(base, "Exemplar.labels_refs: %d references, want (name, value) pairs", refs)
	}
	if err := r.rewrite(2 + 6 + 9 + 11); err != nil { // the exemplar's tags, lengths, value and timestamp
		return err
	}
	e.labelEnd = int32(len(r.exLabels))
	return r.addExemplar(e)
}

// decodeMetadata decodes a 1.0 MetricMetadata message (type = 1, metric_family_name = 2, help = 4,
// unit = 5).
func (r *WriteRequest) decodeMetadata(b []byte, base int) error {
	var m Metadata
	for i := 0; i < len(b); {
		start := i
		field, wire, j, err := tag(b, i, "MetricMetadata")
		if err != nil {
			return offset(err, base)
		}
		i = j
		switch field {
		case 1:
			if err := want(wire, 0, base+start, "MetricMetadata", "type"); err != nil {
				return err
			}
			v, j, err := uvarint(b, i)
			if err != nil {
				return offset(err, base)
			}
			m.Type = metricType(v)
			i = j
		case 2, 4, 5:
			if err := want(wire, 2, base+start, "MetricMetadata", [...]string{2: "metric_family_name", 4: "help", 5: "unit"}[field]); err != nil {
				return err
			}
			n, j, err := length(b, i)
			if err != nil {
				return offset(err, base)
			}
			v := yolo(b[j : j+n])
			switch field {
			case 2:
				m.MetricName = v
			case 4:
				m.Help = v
			default:
				m.Unit = v
			}
			i = j + n
		default:
			if i, err = skip(b, i, wire); err != nil {
				return offset(err, base)
			}
		}
	}
	return r.addMetadata(m)
}

// metricType maps an enum value to the types prompb knows (0 to 7); others are unknown (0), as an
// unknown enum value reads in Prometheus.
func metricType(v uint64) uint8 {
	if v > 7 {
		return 0
	}
	return uint8(v)
}

// decodeMetadataV2 decodes a 2.0 Metadata message (type = 1, help_ref = 3, unit_ref = 4) of the
// series about to be appended. An entry of type unknown without help or unit says nothing (2.0
// senders write one for every series) and is dropped.
func (r *WriteRequest) decodeMetadataV2(b []byte, base int) error {
	m := Metadata{series: int32(len(r.Series)) + 1}
	for i := 0; i < len(b); {
		start := i
		field, wire, j, err := tag(b, i, "Metadata")
		if err != nil {
			return offset(err, base)
		}
		i = j
		switch field {
		case 1, 3, 4:
			if err := want(wire, 0, base+start, "Metadata", [...]string{1: "type", 3: "help_ref", 4: "unit_ref"}[field]); err != nil {
				return err
			}
			v, j, err := uvarint(b, i)
			if err != nil {
				return offset(err, base)
			}
			if field == 1 {
				m.Type = metricType(v)
			} else {
				ref := uint64(uint32(v))
				var sym string // reference 0 without symbols is the empty string (proto3's default)
				switch {
				case ref < uint64(len(r.symbols)):
					sym = r.symbols[ref]
				case ref != 0:
					return decodeError(base+i, "Metadata: reference %d names no symbol: the request has %d symbols", ref, len(r.symbols))
				}
				if field == 3 {
					m.Help = sym
				} else {
					m.Unit = sym
				}
			}
			i = j
		default:
			if i, err = skip(b, i, wire); err != nil {
				return offset(err, base)
			}
		}
	}
	if m.Type == 0 && m.Help == "" && m.Unit == "" {
		return nil
	}
	return r.addMetadata(m)
}

// finishExtras points every exemplar into its label arena, names each 2.0 metadata entry after its
// series' metric and keeps one entry per metric name (2.0 repeats it on every series of a metric).
func (r *WriteRequest) finishExtras() {
	for k := range r.exemplars {
		e := &r.exemplars[k]
		e.Labels = r.exLabels[e.labelStart:e.labelEnd:e.labelEnd]
	}
	if !r.v2 || len(r.metadata) == 0 {
		return
	}
	for k := range r.metadata {
		m := &r.metadata[k]
		if m.series > 0 && int(m.series) <= len(r.Series) {
			for _, l := range r.labels[r.Series[m.series-1].labelStart:r.Series[m.series-1].labelEnd] {
				if l.Name == "__name__" {
					m.MetricName = l.Value
				}
			}
		}
	}
	// One entry per metric name, the first sent: a stable sort keeps the order among equals.
	slices.SortStableFunc(r.metadata, func(a, b Metadata) int { return strings.Compare(a.MetricName, b.MetricName) })
	r.metadata = slices.CompactFunc(r.metadata, func(a, b Metadata) bool { return a.MetricName == b.MetricName })
}

// Discard reasons of exemplars and metadata, Mimir's.
const (
	reasonExemplarLabelsMissing = "exemplar_labels_missing"
	reasonExemplarLabelsTooLong = "exemplar_labels_too_long"
	reasonExemplarTimestamp     = "exemplar_timestamp_invalid"
	reasonExemplarLabelInvalid  = "exemplar_label_invalid"
	// The time bounds of exemplars (Mimir: exemplar_too_far_in_future, exemplar_too_old).
	reasonExemplarTooFarInFuture = "exemplar_too_far_in_future"
	reasonExemplarTooOld         = "exemplar_too_old"
	reasonMetadataMissingName    = "missing_metric_name"
	reasonMetadataNameTooLong    = "metric_name_too_long"
	reasonMetadataHelpTooLong    = "help_too_long"
	reasonMetadataUnitTooLong    = "unit_too_long"
)

// exemplarInvalid checks one exemplar as Mimir does (validateExemplar, validateExemplarTimestamp):
// labels present, valid names and UTF-8 values, at most MaxExemplarLabelRunes runes in all, a
// timestamp, and that timestamp within the push's time bounds (not after now plus
// -validation.create-grace-period, not before what memory still holds or the past grace period:
// an exemplar from the far future would make every later one of its series out of order and stay
// in the WAL for ever). It returns the discard reason, "" for a valid exemplar.
func exemplarInvalid(e *Exemplar, b *timeBounds) string {
	if len(e.Labels) == 0 {
		return reasonExemplarLabelsMissing
	}
	if e.TimestampMs == 0 {
		return reasonExemplarTimestamp
	}
	if e.TimestampMs > b.maxT {
		return reasonExemplarTooFarInFuture
	}
	if e.TimestampMs < b.lo {
		return reasonExemplarTooOld
	}
	runes := 0
	for _, l := range e.Labels {
		if !isLegacyLabelName(l.Name) || !utf8.ValidString(l.Value) {
			return reasonExemplarLabelInvalid
		}
		runes += utf8.RuneCountInString(l.Name) + utf8.RuneCountInString(l.Value)
	}
	if runes > MaxExemplarLabelRunes {
		return reasonExemplarLabelsTooLong
	}
	return ""
}

// validateMetadata checks one metadata entry as Mimir does: a metric name, and the name, help and
// unit each at most maxLen bytes (-validation.max-metadata-length).
func validateMetadata(m *Metadata, maxLen int) *refusal {
	name := quoteTrunc(m.MetricName)
	switch {
	case m.MetricName == "":
		return &refusal{reasonMetadataMissingName, "received metric metadata without a metric name" + errIDPrefix + "metadata-missing-metric-name)"}
	case len(m.MetricName) > maxLen:
		return &refusal{reasonMetadataNameTooLong, fmt.Sprintf("received metric metadata whose metric name is %d bytes long, more than the %d allowed (-validation.max-metadata-length), metric %s%smetric-name-too-long)", len(m.MetricName), maxLen, name, errIDPrefix)}
	case len(m.Help) > maxLen:
		return &refusal{reasonMetadataHelpTooLong, fmt.Sprintf("received metric metadata whose help is %d bytes long, more than the %d allowed (-validation.max-metadata-length), metric %s%shelp-too-long)", len(m.Help), maxLen, name, errIDPrefix)}
	case len(m.Unit) > maxLen:
		return &refusal{reasonMetadataUnitTooLong, fmt.Sprintf("received metric metadata whose unit is %d bytes long, more than the %d allowed (-validation.max-metadata-length), metric %s%sunit-too-long)", len(m.Unit), maxLen, name, errIDPrefix)}
	case !utf8.ValidString(m.MetricName) || !utf8.ValidString(m.Help) || !utf8.ValidString(m.Unit):
		return &refusal{reasonMetadataMissingName, "received metric metadata that is not valid UTF-8, metric " + name + errIDPrefix + "metadata-invalid)"}
	}
	return nil
}

// exemplarsSize is the size of s's exemplars as TimeSeries field 3 entries (what appendExemplars
// writes).
func exemplarsSize(exs []Exemplar) int {
	n := 0
	for i := range exs {
		m := exemplarSize(&exs[i])
		n += 1 + uvarintLen(uint64(m)) + m
	}
	return n
}

func exemplarSize(e *Exemplar) int {
	n := 0
	for _, l := range e.Labels {
		m := labelSize(l)
		n += 1 + uvarintLen(uint64(m)) + m
	}
	if e.Value != 0 || math.Signbit(e.Value) {
		n += 9
	}
	if e.TimestampMs != 0 {
		n += 1 + uvarintLen(uint64(e.TimestampMs))
	}
	return n
}

// appendExemplars appends exs as TimeSeries field 3 entries (prompb.Exemplar's canonical encoding).
func appendExemplars(dst []byte, exs []Exemplar) []byte {
	for i := range exs {
		e := &exs[i]
		dst = append(dst, 0x1a)
		dst = binary.AppendUvarint(dst, uint64(exemplarSize(e)))
		for _, l := range e.Labels {
			dst = append(dst, 0x0a)
			dst = binary.AppendUvarint(dst, uint64(labelSize(l)))
			dst = appendLabelFields(dst, l)
		}
		if e.Value != 0 || math.Signbit(e.Value) {
			dst = append(dst, 0x11)
			dst = binary.LittleEndian.AppendUint64(dst, math.Float64bits(e.Value))
		}
		if e.TimestampMs != 0 {
			dst = append(dst, 0x18)
			dst = binary.AppendUvarint(dst, uint64(e.TimestampMs))
		}
	}
	return dst
}

func appendLabelFields(dst []byte, l Label) []byte {
	if l.Name != "" {
		dst = append(dst, 0x0a)
		dst = binary.AppendUvarint(dst, uint64(len(l.Name)))
		dst = append(dst, l.Name...)
	}
	if l.Value != "" {
		dst = append(dst, 0x12)
		dst = binary.AppendUvarint(dst, uint64(len(l.Value)))
		dst = append(dst, l.Value...)
	}
	return dst
}

// metadataSize is the size of m's MetricMetadata message.
func metadataSize(m *Metadata) int {
	n := 0
	if m.Type != 0 {
		n += 2
	}
	for _, s := range [...]string{m.MetricName, m.Help, m.Unit} {
		if s != "" {
			n += 1 + uvarintLen(uint64(len(s))) + len(s)
		}
	}
	return n
}

// metadataFieldSize is the size of m as a PushRequest field 3.
func metadataFieldSize(m *Metadata) int {
	s := metadataSize(m)
	return 1 + uvarintLen(uint64(s)) + s
}

// appendMetadata appends m as a PushRequest field 3 (prompb.WriteRequest.metadata).
func appendMetadata(dst []byte, m *Metadata) []byte {
	dst = append(dst, 0x1a)
	dst = binary.AppendUvarint(dst, uint64(metadataSize(m)))
	if m.Type != 0 {
		dst = append(dst, 0x08, m.Type)
	}
	for k, s := range [...]string{m.MetricName, m.Help, m.Unit} {
		if s != "" {
			dst = append(dst, [...]byte{0x12, 0x22, 0x2a}[k])
			dst = binary.AppendUvarint(dst, uint64(len(s)))
			dst = append(dst, s...)
		}
	}
	return dst
}

// sentExemplars is the exemplars that go to the ingesters with s: none unless validated for a
// tenant that stores them.
func sentExemplars(req *WriteRequest, s *Series) []Exemplar {
	if !s.exemplarsSent {
		return nil
	}
	return req.SeriesExemplars(s)
}

// writtenExemplars is the number of exemplars of r's series that a quorum stored (the series' own
// outcome: exemplars travel with their series).
func (r *WriteRequest) writtenExemplars() int {
	n := 0
	for i := range r.Series {
		if s := &r.Series[i]; s.state == seriesDone && s.exemplarsSent {
			n += s.Exemplars
		}
	}
	return n
}
