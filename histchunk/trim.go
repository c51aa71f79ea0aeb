// Package histchunk re-encodes native histogram chunks (Prometheus chunkenc's histogram and float
// histogram encodings) for readers: the querier and the block writer trim chunks that straddle a
// range, as they re-encode XOR chunks. It depends on no package of ours, so that every reader may
// use it.
package histchunk

import (
	"errors"
	"fmt"

	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
)

// Trim returns a chunk of chk's encoding (a histogram or float histogram chunk)
// holding its samples in [mint, maxt] (int64 ms, inclusive), or nil when none is, with the
// timestamps of its first and last samples. The first kept
// sample keeps its counter reset hint (the chunk header's, when it is the chunk's first sample), so
// rate and increase read the trimmed chunk as they read the whole one. Readers use it where they
// re-encode XOR chunks that straddle a query's range.
func Trim(chk chunkenc.Chunk, mint, maxt int64) (_ chunkenc.Chunk, first, last int64, _ error) {
	var out chunkenc.Chunk
	switch chk.Encoding() {
	case chunkenc.EncHistogram:
		out = chunkenc.NewHistogramChunk()
	case chunkenc.EncFloatHistogram:
		out = chunkenc.NewFloatHistogramChunk()
	default:
		return nil, 0, 0, fmt.Errorf("encoding %s is not a histogram encoding", chk.Encoding())
	}
	app, err := out.Appender()
	if err != nil {
		return nil, 0, 0, err
	}
	it := chk.Iterator(nil)
	for vt := it.Seek(mint); vt != chunkenc.ValNone; vt = it.Next() {
		var t int64
		var nc chunkenc.Chunk
		switch vt {
		case chunkenc.ValHistogram:
			var h *histogram.Histogram
			t, h = it.AtHistogram(nil)
			if t > maxt {
				break
			}
			nc, _, app, err = app.AppendHistogram(nil, t, h, true)
		case chunkenc.ValFloatHistogram:
			var h *histogram.FloatHistogram
			t, h = it.AtFloatHistogram(nil)
			if t > maxt {
				break
			}
			nc, _, app, err = app.AppendFloatHistogram(nil, t, h, true)
		default:
			return nil, 0, 0, fmt.Errorf("a %v in a %s chunk", vt, chk.Encoding())
		}
		if t > maxt {
			break
		}
		if err != nil {
			return nil, 0, 0, fmt.Errorf("re-encoding a histogram chunk: %w", err)
		}
		if nc != nil {
			return nil, 0, 0, errors.New("re-encoding a histogram chunk: the appender cut a chunk in append-only mode")
		}
		if out.NumSamples() == 1 {
			first = t
		}
		last = t
	}
	if err := it.Err(); err != nil {
		return nil, 0, 0, err
	}
	if out.NumSamples() == 0 {
		return nil, 0, 0, nil
	}
	return out, first, last, nil
}
