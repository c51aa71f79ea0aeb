package querier

import (
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"github.com/prometheus/prometheus/util/annotations"
)

// seriesSet iterates merged series in label order.
type seriesSet struct {
	series []*mergedSeries
	i      int
}

func (s *seriesSet) Next() bool {
	s.i++
	return s.i < len(s.series)
}

func (s *seriesSet) At() storage.Series                { return s.series[s.i] }
func (s *seriesSet) Err() error                        { return nil }
func (s *seriesSet) Warnings() annotations.Annotations { return nil }

// Labels implements storage.Series.
func (m *mergedSeries) Labels() labels.Labels { return m.lset }

// Iterator implements storage.Series: samples of every replica in time order, each timestamp once.
// Chunks are decoded sample by sample as the caller advances; finish has already trimmed them to
// the querier's range.
func (m *mergedSeries) Iterator(it chunkenc.Iterator) chunkenc.Iterator {
	switch len(m.chunks) {
	case 0:
		return chunkenc.NewNopIterator()
	case 1:
		return m.chunks[0].chunk.Iterator(it)
	}
	// The chain iterator walks sorted, disjoint chunks one after the other (comparing each sample
	// with the next chunk's first), and merges overlapping ones (replicas that cut chunks at
	// different samples) sample by sample, keeping one sample per timestamp.
	its := make([]chunkenc.Iterator, len(m.chunks))
	for i, c := range m.chunks {
		its[i] = c.chunk.Iterator(nil)
	}
	return storage.ChainSampleIteratorFromIterators(it, its)
}
