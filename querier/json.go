package querier

// The Prometheus HTTP API's JSON, byte for byte. Prometheus encodes responses with json-iterator
// (ConfigCompatibleWithStandardLibrary, so HTML-escaped strings) and custom encoders for PromQL
// values (web/api/v1/json_codec.go, util/jsonutil/marshal.go). json-iterator is not a dependency of
// ours, so this file ports those encoders onto append-style functions; api_test.go pins the
// envelope byte for byte, and e2e TestQuery_OracleAgainstPrometheus compares whole answers with
// Debian's Prometheus on the same data.

import (
	"math"
	"strconv"
	"unicode/utf8"

	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/promql/parser"
)

// appendTimestamp writes a millisecond timestamp as seconds, the way jsonutil.MarshalTimestamp does:
// an integer part and, only when non-zero, a three-digit fraction.
func appendTimestamp(b []byte, t int64) []byte {
	if t < 0 {
		b = append(b, '-')
		t = -t
	}
	b = strconv.AppendInt(b, t/1000, 10)
	if frac := t % 1000; frac != 0 {
		b = append(b, '.')
		if frac < 100 {
			b = append(b, '0')
		}
		if frac < 10 {
			b = append(b, '0')
		}
		b = strconv.AppendInt(b, frac, 10)
	}
	return b
}

// appendFloat writes a sample value as a JSON string, the way jsonutil.MarshalFloat does: shortest
// representation, exponent only below 1e-6 or from 1e21, and NaN, +Inf, -Inf spelled as Go does.
func appendFloat(b []byte, f float64) []byte {
	b = append(b, '"')
	format := byte('f')
	if abs := math.Abs(f); abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		format = 'e'
	}
	b = strconv.AppendFloat(b, f, format, -1, 64)
	return append(b, '"')
}

const hexDigits = "0123456789abcdef"

// htmlSafe reports the ASCII bytes json-iterator writes unescaped when it escapes HTML.
var htmlSafe = func() (set [utf8.RuneSelf]bool) {
	for c := 0x20; c < utf8.RuneSelf; c++ {
		set[c] = c != '"' && c != '\\' && c != '<' && c != '>' && c != '&'
	}
	return set
}()

// appendString writes s as a JSON string exactly as json-iterator's WriteStringWithHTMLEscaped does:
// \n \r \t \" \\ short escapes, other control bytes and < > & as \u00xx (lower-case hex), invalid
// UTF-8 bytes as \ufffd, and U+2028/U+2029 escaped.
func appendString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if htmlSafe[c] {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '\\', '"':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i++
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xF])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// appendLabels writes a label set as a JSON object in label order.
func appendLabels(b []byte, ls labels.Labels) []byte {
	b = append(b, '{')
	first := true
	ls.Range(func(l labels.Label) {
		if !first {
			b = append(b, ',')
		}
		first = false
		b = appendString(b, l.Name)
		b = append(b, ':')
		b = appendString(b, l.Value)
	})
	return append(b, '}')
}

// appendStrings writes a JSON array of strings.
func appendStrings(b []byte, ss []string) []byte {
	b = append(b, '[')
	for i, s := range ss {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendString(b, s)
	}
	return append(b, ']')
}

// appendHistogram writes a native histogram the way jsonutil.MarshalHistogram does.
func appendHistogram(b []byte, h *histogram.FloatHistogram) []byte {
	b = append(b, `{"count":`...)
	b = appendFloat(b, h.Count)
	b = append(b, `,"sum":`...)
	b = appendFloat(b, h.Sum)
	found := false
	it := h.AllBucketIterator()
	for it.Next() {
		bucket := it.At()
		if bucket.Count == 0 {
			continue // Prometheus leaves empty buckets out.
		}
		if !found {
			b = append(b, `,"buckets":[`...)
		} else {
			b = append(b, ',')
		}
		found = true
		boundaries := 2 // open interval
		switch {
		case bucket.LowerInclusive && bucket.UpperInclusive:
			boundaries = 3
		case bucket.LowerInclusive:
			boundaries = 1
		case bucket.UpperInclusive:
			boundaries = 0
		}
		b = append(b, '[')
		b = strconv.AppendInt(b, int64(boundaries), 10)
		b = append(b, ',')
		b = appendFloat(b, bucket.Lower)
		b = append(b, ',')
		b = appendFloat(b, bucket.Upper)
		b = append(b, ',')
		b = appendFloat(b, bucket.Count)
		b = append(b, ']')
	}
	if found {
		b = append(b, ']')
	}
	return append(b, '}')
}

func appendSample(b []byte, s promql.Sample) []byte {
	b = append(b, `{"metric":`...)
	b = appendLabels(b, s.Metric)
	if s.H == nil {
		b = append(b, `,"value":[`...)
		b = appendTimestamp(b, s.T)
		b = append(b, ',')
		b = appendFloat(b, s.F)
	} else {
		b = append(b, `,"histogram":[`...)
		b = appendTimestamp(b, s.T)
		b = append(b, ',')
		b = appendHistogram(b, s.H)
	}
	return append(b, "]}"...)
}

func appendSeries(b []byte, s promql.Series) []byte {
	b = append(b, `{"metric":`...)
	b = appendLabels(b, s.Metric)
	for i, p := range s.Floats {
		if i == 0 {
			b = append(b, `,"values":[`...)
		} else {
			b = append(b, ',')
		}
		b = append(b, '[')
		b = appendTimestamp(b, p.T)
		b = append(b, ',')
		b = appendFloat(b, p.F)
		b = append(b, ']')
	}
	if len(s.Floats) > 0 {
		b = append(b, ']')
	}
	for i, p := range s.Histograms {
		if i == 0 {
			b = append(b, `,"histograms":[`...)
		} else {
			b = append(b, ',')
		}
		b = append(b, '[')
		b = appendTimestamp(b, p.T)
		b = append(b, ',')
		b = appendHistogram(b, p.H)
		b = append(b, ']')
	}
	if len(s.Histograms) > 0 {
		b = append(b, ']')
	}
	return append(b, '}')
}

// appendValue writes a PromQL result value. Scalars and strings use their own MarshalJSON, as
// Prometheus' encoder does (it has no custom encoder for them).
func appendValue(b []byte, v parser.Value) ([]byte, error) {
	switch v := v.(type) {
	case promql.Vector:
		b = append(b, '[')
		for i, s := range v {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendSample(b, s)
		}
		return append(b, ']'), nil
	case promql.Matrix:
		b = append(b, '[')
		for i, s := range v {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendSeries(b, s)
		}
		return append(b, ']'), nil
	case promql.Scalar:
		raw, err := v.MarshalJSON()
		return append(b, raw...), err
	case promql.String:
		raw, err := v.MarshalJSON()
		return append(b, raw...), err
	}
	return b, errUnknownValue
}

// appendQueryData writes the data of a query or query_range answer.
func appendQueryData(b []byte, v parser.Value) ([]byte, error) {
	b = append(b, `{"resultType":`...)
	b = appendString(b, string(v.Type()))
	b = append(b, `,"result":`...)
	b, err := appendValue(b, v)
	return append(b, '}'), err
}

// appendSuccess wraps data (already encoded) in the success envelope; warnings and infos are left
// out when empty, as Prometheus' omitempty does.
func appendSuccess(b, data []byte, warnings, infos []string) []byte {
	b = append(b, `{"status":"success","data":`...)
	b = append(b, data...)
	if len(warnings) > 0 {
		b = append(b, `,"warnings":`...)
		b = appendStrings(b, warnings)
	}
	if len(infos) > 0 {
		b = append(b, `,"infos":`...)
		b = appendStrings(b, infos)
	}
	return append(b, '}')
}

// appendError writes the error envelope.
func appendError(b []byte, typ errorType, msg string) []byte {
	b = append(b, `{"status":"error","errorType":`...)
	b = appendString(b, string(typ))
	b = append(b, `,"error":`...)
	b = appendString(b, msg)
	return append(b, '}')
}
