package transfer

import (
	"errors"
	"fmt"
	"math"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/tsdb/chunkenc"

	"github.com/raftingest/raftingest/ingesterpb"
	"github.com/raftingest/raftingest/memstore"
	"github.com/raftingest/raftingest/tenant"
	"github.com/raftingest/raftingest/transferpb"
)

// A received SERIES frame is believed only after all of this holds, and nothing of it is imported
// before (the checksum only proves that the bytes are the sender's, not that the sender is right):
//
//   - the payload decodes (decodeSeries), holds at least one series, and is at most
//     Config.MaxRecvMsgSize;
//   - every tenant passes tenant.Validate (X-Scope-OrgID's rules: it names a directory of the
//     bucket when the joiner flushes), and tenants come in sorted order through the whole stream,
//     as the leaver walks them (memstore.Store.Tenants);
//   - every series' labels pass the Push rules (ingesterpb.LabelChecker: valid names, UTF-8
//     values, a metric name, no duplicate), since a label value that is not UTF-8 would fail every
//     QueryStream selecting it;
//   - every series has chunks, in time order without overlap, and every chunk decodes in full:
//     XOR, as many samples as its header says, strictly increasing timestamps from MinTime to
//     MaxTime; a version 2 series' last value is the last chunk's last sample, bit for bit.
//
// The first three are cheap and sequential (seriesChecker.check, on the receiving goroutine); the
// chunks are decoded on the import goroutines (checkChunks), each frame before its ImportBatch.

// ErrInvalidSeries refuses a frame whose payload decodes but holds a series the joiner must not
// store (see above).
var ErrInvalidSeries = errors.New("transfer: invalid series in frame")

// seriesChecker checks the decoded series of one stream, frame after frame (the tenant order spans
// frames). Not safe for concurrent use.
type seriesChecker struct {
	tenant string // the last tenant seen, when seen
	seen   bool
	lc     ingesterpb.LabelChecker
}

// check validates tenants, their order, labels and the presence of chunks of ss, one decoded frame.
func (c *seriesChecker) check(ss []Series) error {
	for i := range ss {
		s := &ss[i]
		if !c.seen || s.Tenant != c.tenant {
			if err := tenant.Validate(s.Tenant); err != nil {
				return fmt.Errorf("%w: series %d: tenant: %v", ErrInvalidSeries, i, err)
			}
			if c.seen && s.Tenant < c.tenant {
				return fmt.Errorf("%w: series %d: tenant %q after %q: tenants come in sorted order", ErrInvalidSeries, i, s.Tenant, c.tenant)
			}
			c.tenant, c.seen = s.Tenant, true
		}
		c.lc.Reset()
		s.Labels.Range(func(l labels.Label) { c.lc.Add(l.Name, l.Value) })
		if err := c.lc.Done(); err != nil {
			return fmt.Errorf("%w: series %d of tenant %q: %v", ErrInvalidSeries, i, s.Tenant, err)
		}
		if len(s.Chunks) == 0 {
			return fmt.Errorf("%w: series %d of tenant %q %s has no chunks", ErrInvalidSeries, i, s.Tenant, safeLabels(s.Labels))
		}
	}
	return nil
}

// checkChunks decodes every chunk of every series of ss in full (see above) and, for a series
// without a last value (version 1), sets it from the decode, so that the store decodes nothing
// again. A malformed chunk is an error, never a panic.
func checkChunks(ss []Series) error {
	var it chunkenc.Iterator
	for i := range ss {
		s := &ss[i]
		var lastV float64
		for j, c := range s.Chunks {
			if j > 0 && c.MinTime <= s.Chunks[j-1].MaxTime {
				return fmt.Errorf("%w: series %d of tenant %q %s: chunk %d [%d, %d] does not come after chunk %d [%d, %d]",
					ErrInvalidSeries, i, s.Tenant, safeLabels(s.Labels), j, c.MinTime, c.MaxTime, j-1, s.Chunks[j-1].MinTime, s.Chunks[j-1].MaxTime)
			}
			var err error
			if lastV, it, err = decodeChunkFast(c, it); err != nil {
				return fmt.Errorf("%w: series %d of tenant %q %s: chunk %d [%d, %d]: %v",
					ErrInvalidSeries, i, s.Tenant, safeLabels(s.Labels), j, c.MinTime, c.MaxTime, err)
			}
		}
		if s.HasLastV && math.Float64bits(s.LastV) != math.Float64bits(lastV) {
			return fmt.Errorf("%w: series %d of tenant %q %s: the frame gives the last value %v, its last chunk ends with %v",
				ErrInvalidSeries, i, s.Tenant, safeLabels(s.Labels), s.LastV, lastV)
		}
		s.LastV, s.HasLastV = lastV, true
	}
	return nil
}

// decodeChunk decodes every sample of c and returns the last one's value. it is reused.
func decodeChunk(c memstore.Chunk, it chunkenc.Iterator) (lastV float64, _ chunkenc.Iterator, err error) {
	if c.Encoding == chunkenc.EncHistogram || c.Encoding == chunkenc.EncFloatHistogram {
		return decodeHistogramChunk(c, it) // xorcheck.go
	}
	if c.Encoding != chunkenc.EncXOR {
		return 0, it, fmt.Errorf("encoding %s, only XOR and native histogram chunks are stored", c.Encoding)
	}
	if c.MinTime > c.MaxTime {
		return 0, it, errors.New("starts after it ends")
	}
	if len(c.Data) < 2 {
		return 0, it, fmt.Errorf("%d bytes, shorter than the sample count", len(c.Data))
	}
	defer func() {
		// chunkenc trusts its input; a malformed chunk must not take the process down.
		if p := recover(); p != nil {
			err = fmt.Errorf("decoding panicked: %v", p)
		}
	}()
	xc := chunkenc.XORChunk{}
	xc.Reset(c.Data)
	want := xc.NumSamples()
	if want == 0 {
		return 0, it, errors.New("no samples")
	}
	it = xc.Iterator(it)
	n := 0
	var prevT int64
	for it.Next() == chunkenc.ValFloat {
		t, v := it.At()
		switch {
		case n == 0 && t != c.MinTime:
			return 0, it, fmt.Errorf("first sample at %d", t)
		case n > 0 && t <= prevT:
			return 0, it, fmt.Errorf("timestamps not increasing at sample %d (%d after %d)", n, t, prevT)
		}
		prevT, lastV = t, v
		n++
		if n > want {
			break
		}
	}
	if err := it.Err(); err != nil {
		return 0, it, err
	}
	if n != want {
		return 0, it, fmt.Errorf("%d samples decode, the header says %d", n, want)
	}
	if prevT != c.MaxTime {
		return 0, it, fmt.Errorf("last sample at %d", prevT)
	}
	return lastV, it, nil
}

// safeLabels renders lset for an error message: escaped (a label may be what is wrong with it) and
// bounded.
func safeLabels(lset labels.Labels) string {
	s := lset.String()
	if len(s) > 300 {
		s = s[:300] + "…"
	}
	return fmt.Sprintf("%q", s)
}

// frameOverhead bounds what a Frame message adds to its payload on the wire (version, leaver,
// epoch, seq, kind, the payload's tag and length, crc32c), beyond the leaver id's bytes.
const frameOverhead = 64

// checkSeriesFrame is everything the receiver believes of a SERIES frame, after checkFrame (version
// and checksum), before handing it to an import: all of the rules above but the chunks', which
// checkChunks checks. sc carries the order of tenants across the stream's frames.
func checkSeriesFrame(f *transferpb.Frame, maxSize int, sc *seriesChecker) ([]Series, error) {
	if n := len(f.GetPayload()) + len(f.GetLeaver()); n > maxSize {
		return nil, fmt.Errorf("%w: frame %d of %d bytes is larger than the limit of %d (-ingester.transfer-max-recv-msg-size)",
			ErrCorruptFrame, f.GetSeq(), n, maxSize)
	}
	ss, err := decodeSeries(f.GetPayload(), f.GetVersion())
	if err != nil {
		return nil, fmt.Errorf("frame %d: %w", f.GetSeq(), err)
	}
	if len(ss) == 0 {
		// The leaver sends a SERIES frame only with series in it; empty ones could only pad a stream.
		return nil, fmt.Errorf("%w: frame %d holds no series", ErrInvalidSeries, f.GetSeq())
	}
	if err := sc.check(ss); err != nil {
		return nil, fmt.Errorf("frame %d: %w", f.GetSeq(), err)
	}
	return ss, nil
}
