package bench

import (
	"encoding/binary"
	"math"
)

// Hand-rolled encoder for Prometheus remote-write 1.0 (prompb.WriteRequest). The generator must
// not be the bottleneck of a benchmark whose server decodes in about a microsecond per sample, so
// each series' labels are encoded once (labelBytes) and a request is assembled by copying those
// bytes and appending one small Sample message per sample. The wire layout, from prompb/types.proto
// and remote.proto:
//
//	WriteRequest { repeated TimeSeries timeseries = 1; }
//	TimeSeries   { repeated Label labels = 1; repeated Sample samples = 2; }
//	Label        { string name = 1; string value = 2; }
//	Sample       { double value = 1; int64 timestamp = 2; }
//
// TestEncode_MatchesPrompb checks the output against prompb's generated decoder.

const (
	tagTimeseries  = 1<<3 | 2 // WriteRequest.timeseries, length-delimited
	tagLabels      = 1<<3 | 2 // TimeSeries.labels
	tagSamples     = 2<<3 | 2 // TimeSeries.samples
	tagLabelName   = 1<<3 | 2 // Label.name
	tagLabelValue  = 2<<3 | 2 // Label.value
	tagSampleValue = 1<<3 | 1 // Sample.value, fixed64
	tagSampleTS    = 2 << 3   // Sample.timestamp, varint (wire type 0)
)

// encodeLabels appends the TimeSeries.labels fields for the name/value pairs in kv (sorted by
// name, as remote-write requires) to b.
func encodeLabels(b []byte, kv []string) []byte {
	for i := 0; i+1 < len(kv); i += 2 {
		n, v := kv[i], kv[i+1]
		l := 1 + uvarintLen(uint64(len(n))) + len(n) + 1 + uvarintLen(uint64(len(v))) + len(v)
		b = append(b, tagLabels)
		b = binary.AppendUvarint(b, uint64(l))
		b = append(b, tagLabelName)
		b = binary.AppendUvarint(b, uint64(len(n)))
		b = append(b, n...)
		b = append(b, tagLabelValue)
		b = binary.AppendUvarint(b, uint64(len(v)))
		b = append(b, v...)
	}
	return b
}

// sampleMsgLen is the encoded length of a Sample message body.
func sampleMsgLen(ts int64) int { return 1 + 8 + 1 + uvarintLen(uint64(ts)) }

// appendTimeSeries appends one WriteRequest.timeseries entry made of the pre-encoded labels and
// the samples (ts[i], vs[i]) to b.
func appendTimeSeries(b []byte, labelBytes []byte, ts []int64, vs []float64) []byte {
	body := len(labelBytes)
	for _, t := range ts {
		sl := sampleMsgLen(t)
		body += 1 + uvarintLen(uint64(sl)) + sl
	}
	b = append(b, tagTimeseries)
	b = binary.AppendUvarint(b, uint64(body))
	b = append(b, labelBytes...)
	for i, t := range ts {
		b = append(b, tagSamples)
		b = binary.AppendUvarint(b, uint64(sampleMsgLen(t)))
		b = append(b, tagSampleValue)
		b = binary.LittleEndian.AppendUint64(b, math.Float64bits(vs[i]))
		b = append(b, tagSampleTS)
		b = binary.AppendUvarint(b, uint64(t)) // int64 is encoded as its two's complement varint
	}
	return b
}

func uvarintLen(v uint64) int {
	n := 1
	for v >= 0x80 {
		v >>= 7
		n++
	}
	return n
}

// Remote-write 2.0 (io.prometheus.write.v2.Request), from prompb/io/prometheus/write/v2/types.proto:
//
//	Request    { repeated string symbols = 4; repeated TimeSeries timeseries = 5; }
//	TimeSeries { repeated uint32 labels_refs = 1 (packed); repeated Sample samples = 2; }
//	Sample     { double value = 1; int64 timestamp = 2; }
//
// A request's strings are sent once, in its symbols table, symbols[0] being "": v2Encoder builds
// the table as series are added, as Prometheus 3's sender does per request.
const (
	tagV2Symbols    = 4<<3 | 2
	tagV2Timeseries = 5<<3 | 2
	tagV2LabelRefs  = 1<<3 | 2
	tagV2Samples    = 2<<3 | 2
)

// v2Encoder assembles one remote-write 2.0 request. The zero value is ready; reset starts a new
// request, keeping the buffers.
type v2Encoder struct {
	ids    map[string]uint32
	syms   []string
	series []byte // the encoded TimeSeries fields, after which the symbols go in front
	refs   []byte // scratch: one series' packed references
}

func (e *v2Encoder) reset() {
	if e.ids == nil {
		e.ids = map[string]uint32{}
	}
	clear(e.ids)
	e.syms, e.series = e.syms[:0], e.series[:0]
	e.ref("")
}

// ref returns the symbol of s, adding it to the table.
func (e *v2Encoder) ref(s string) uint32 {
	if r, ok := e.ids[s]; ok {
		return r
	}
	r := uint32(len(e.syms))
	e.ids[s] = r
	e.syms = append(e.syms, s)
	return r
}

// appendSeries adds a series of labels kv (name, value pairs, sorted by name) and samples
// (ts[i], vs[i]).
func (e *v2Encoder) appendSeries(kv []string, ts []int64, vs []float64) {
	e.refs = e.refs[:0]
	for _, s := range kv {
		e.refs = binary.AppendUvarint(e.refs, uint64(e.ref(s)))
	}
	body := 1 + uvarintLen(uint64(len(e.refs))) + len(e.refs)
	for _, t := range ts {
		sl := sampleMsgLen(t)
		body += 1 + uvarintLen(uint64(sl)) + sl
	}
	b := append(e.series, tagV2Timeseries)
	b = binary.AppendUvarint(b, uint64(body))
	b = append(b, tagV2LabelRefs)
	b = binary.AppendUvarint(b, uint64(len(e.refs)))
	b = append(b, e.refs...)
	for i, t := range ts {
		b = append(b, tagV2Samples)
		b = binary.AppendUvarint(b, uint64(sampleMsgLen(t)))
		b = append(b, tagSampleValue)
		b = binary.LittleEndian.AppendUint64(b, math.Float64bits(vs[i]))
		b = append(b, tagSampleTS)
		b = binary.AppendUvarint(b, uint64(t))
	}
	e.series = b
}

// finish appends the whole request (symbols, then the series) to dst.
func (e *v2Encoder) finish(dst []byte) []byte {
	for _, s := range e.syms {
		dst = append(dst, tagV2Symbols)
		dst = binary.AppendUvarint(dst, uint64(len(s)))
		dst = append(dst, s...)
	}
	return append(dst, e.series...)
}
