package ingesterpb

import (
	"fmt"

	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/prompb"
)

// histArena holds the encoded histograms of a PushRequestView's series (TimeSeries field 4, the
// layout of prompb.Histogram): the messages alias the decoded bytes, and a request without
// histograms — the float path — costs nothing but an empty check.
type histArena struct {
	msgs   [][]byte
	series []int32 // series index of each message, ascending
	cur    int     // of's cursor: series are asked for in ascending order
}

func (a *histArena) reset() {
	clear(a.msgs)
	a.msgs, a.series, a.cur = a.msgs[:0], a.series[:0], 0
}

func (a *histArena) add(series int, m []byte) {
	a.msgs = append(a.msgs, m)
	a.series = append(a.series, int32(series))
}

// of returns the messages of series k (nil when it has none). Called for ascending k.
func (a *histArena) of(k int) [][]byte {
	if len(a.msgs) == 0 {
		return nil
	}
	lo := a.cur
	for lo < len(a.series) && int(a.series[lo]) < k {
		lo++
	}
	hi := lo
	for hi < len(a.series) && int(a.series[hi]) == k {
		hi++
	}
	a.cur = hi
	if lo == hi {
		return nil
	}
	return a.msgs[lo:hi:hi]
}

// DecodeHistogram decodes one TimeSeries field 4 message (prompb.Histogram): its timestamp and
// exactly one of an integer and a float histogram, owned by the caller (nothing aliases m).
func DecodeHistogram(m []byte) (int64, *histogram.Histogram, *histogram.FloatHistogram, error) {
	var ph prompb.Histogram
	if err := ph.Unmarshal(m); err != nil {
		return 0, nil, nil, fmt.Errorf("%w: TimeSeries.histograms: %v", ErrMalformedPush, err)
	}
	if ph.IsFloatHistogram() {
		return ph.Timestamp, nil, ph.ToFloatHistogram(), nil
	}
	return ph.Timestamp, ph.ToIntHistogram(), nil, nil
}
