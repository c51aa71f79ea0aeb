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
