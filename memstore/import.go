package memstore

import (
	"bytes"
	"encoding/binary"
	"fmt"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
)

// ImportSeries is one series of an ImportBatch: its tenant, its labels and whole chunks in time
// order.
type ImportSeries struct {
	Tenant string
	Labels labels.Labels
	Chunks []Chunk
	// LastV, when HasLastV, is the value of the last sample of the last chunk (as ExportSeries
	// gives it): the import then decodes no chunk. Without it the last chunk is decoded whole.
	LastV    float64
	HasLastV bool
	// LabelsOwned says that Labels were built for this import alone (a fresh labels.Labels that
	// nothing else holds or changes, e.g. ScratchBuilder.Labels on a new builder output): the
	// Store may then keep them instead of copying them.
	LabelsOwned bool
}

// chunkChecker validates imported chunks, reusing one chunk and one iterator across calls. Not
// safe for concurrent use.
type chunkChecker struct {
	xc chunkenc.XORChunk
	it chunkenc.Iterator
}

// header does the checks that need no decoding (a histogram chunk is decoded whole: histogram.go): XOR encoding, a sample count of at least one,
// MinTime <= MaxTime (equal for a single sample), and the first sample's timestamp — a varint
// right after the 2-byte sample count in an XOR chunk — equal to MinTime.
func (cc *chunkChecker) header(c Chunk) error {
	if isHistEncoding(c.Encoding) {
		return checkHistChunk(c) // histogram.go: decoded whole
	}
	if c.Encoding != chunkenc.EncXOR {
		return fmt.Errorf("%w: encoding %s, only XOR is supported", ErrInvalidChunk, c.Encoding)
	}
	if len(c.Data) < 3 {
		return fmt.Errorf("%w: %d bytes, shorter than the 2-byte sample count and a first timestamp", ErrInvalidChunk, len(c.Data))
	}
	n := int(binary.BigEndian.Uint16(c.Data))
	if n == 0 {
		return fmt.Errorf("%w: no samples", ErrInvalidChunk)
	}
	if c.MinTime > c.MaxTime || (n == 1 && c.MinTime != c.MaxTime) {
		return fmt.Errorf("%w: %d samples cannot span [%d, %d]", ErrInvalidChunk, n, c.MinTime, c.MaxTime)
	}
	t, k := binary.Varint(c.Data[2:])
	if k <= 0 {
		return fmt.Errorf("%w: first timestamp does not decode", ErrInvalidChunk)
	}
	if t != c.MinTime {
		return fmt.Errorf("%w: first sample at %d but the chunk says it starts at %d", ErrInvalidChunk, t, c.MinTime)
	}
	return nil
}

// full checks the header, then decodes every sample of c: increasing timestamps, as many samples
// as the header says, the last one at MaxTime. It returns the last sample's value (the series'
// frontier after the chunk). A malformed chunk is an error, never a panic.
func (cc *chunkChecker) full(c Chunk) (lastV float64, err error) {
	if isHistEncoding(c.Encoding) {
		return 0, checkHistChunk(c) // no float value: the frontier is the chunk's last histogram
	}
	if err := cc.header(c); err != nil {
		return 0, err
	}
	var n int
	var prevT int64
	err = func() (err error) {
		// chunkenc trusts its input; a malformed chunk must not take the process down.
		defer func() {
			if p := recover(); p != nil {
				err = fmt.Errorf("%w: decoding panicked: %v", ErrInvalidChunk, p)
			}
		}()
		cc.xc.Reset(c.Data)
		cc.it = cc.xc.Iterator(cc.it)
		for cc.it.Next() == chunkenc.ValFloat {
			t, v := cc.it.At()
			if n > 0 && t <= prevT {
				return fmt.Errorf("%w: timestamps not increasing at sample %d (%d after %d)", ErrInvalidChunk, n, t, prevT)
			}
			prevT, lastV = t, v
			n++
		}
		if err := cc.it.Err(); err != nil {
			return fmt.Errorf("%w: %w", ErrInvalidChunk, err)
		}
		return nil
	}()
	cc.xc.Reset(nil) // do not pin c.Data
	if err != nil {
		return 0, err
	}
	if n != int(binary.BigEndian.Uint16(c.Data)) {
		return 0, fmt.Errorf("%w: %d samples decoded, header says %d", ErrInvalidChunk, n, binary.BigEndian.Uint16(c.Data))
	}
	if prevT != c.MaxTime {
		return 0, fmt.Errorf("%w: samples span [%d, %d] but the chunk says [%d, %d]", ErrInvalidChunk, c.MinTime, prevT, c.MinTime, c.MaxTime)
	}
	return lastV, nil
}

// check validates the chunks of one imported series: every chunk's header
// (chunkChecker.header) and time order without overlap; with decodeLast, also a full decode of
// the last chunk — the one that sets the series' frontier, whose last value must be known for
// the idempotent-duplicate rule — returning that value. Other chunks are not decoded: hand-over
// frames and WAL records are checksummed, so what reaches here is what the sender's store held,
// and the sender gives the last value with the chunks (ImportSeries.LastV).
func (cc *chunkChecker) check(chunks []Chunk, decodeLast bool) (lastV float64, err error) {
	for i, c := range chunks {
		if i > 0 && c.MinTime <= chunks[i-1].MaxTime {
			return 0, fmt.Errorf("chunk %d [%d, %d] overlaps the previous one: %w", i, c.MinTime, c.MaxTime, ErrOutOfOrderSample)
		}
		if decodeLast && i == len(chunks)-1 {
			lastV, err = cc.full(c)
		} else {
			err = cc.header(c)
		}
		if err != nil {
			return 0, fmt.Errorf("chunk %d [%d, %d]: %w", i, c.MinTime, c.MaxTime, err)
		}
	}
	return lastV, nil
}

// ImportChunks adds whole chunks to a series of tenant (hand-over), creating the series if
// needed. It is ImportBatch of one series.
func (st *Store) ImportChunks(tenant string, lset labels.Labels, chunks []Chunk) error {
	return st.ImportBatch([]ImportSeries{{Tenant: tenant, Labels: lset, Chunks: chunks}})
}

// ImportBatch adds whole chunks to many series (hand-over: one received frame), creating the
// series if needed. Each series' chunks must be XOR, in time order, non-overlapping and newer than
// the series' newest sample; a chunk identical to one the series already has is skipped, so a
// retried import is idempotent. Every series is validated before anything is logged: an invalid
// label set or chunk fails the whole batch with nothing imported. The chunks are logged to the WAL
// (one chunks record per 64 KiB) and the call waits for the group commit that holds the batch's
// last record — usually one commit for the whole batch, more when the committer started while the
// batch was still being queued; the chunks become visible only after it. The per-tenant series
// limit does not apply (acknowledged data). A series refused after validation (chunks not newer
// than the data of a series that exists already) stops the batch with an error: the series before
// it are imported, none after it — unless a concurrent writer created the refused series while
// this batch was creating it, in which case new series of its tenant after it may be imported
// too; each series is imported whole or not at all. Labels (unless LabelsOwned) and chunk data
// are copied; batch is not retained. Safe for concurrent use.
//
// Series that none of the batch's tenant already has are created in bulk (bulk.go): a hand-over
// frame creates its series with a few locks and allocations per frame rather than per series.
func (st *Store) ImportBatch(batch []ImportSeries) error {
	if st.closed.Load() {
		return ErrClosed
	}
	if err := st.WALError(); err != nil {
		return err
	}
	var cc chunkChecker
	lastVs := make([]float64, len(batch))
	for i := range batch {
		s := &batch[i]
		if err := validateLabels(s.Labels); err != nil {
			return fmt.Errorf("importing chunks of tenant %q series %s: %w", s.Tenant, s.Labels, err)
		}
		if len(s.Chunks) == 0 {
			continue
		}
		v, err := cc.check(s.Chunks, !s.HasLastV)
		if s.HasLastV {
			v = s.LastV
		}
		if err != nil {
			return fmt.Errorf("importing chunks of tenant %q series %s: %w", s.Tenant, s.Labels, err)
		}
		lastVs[i] = v
	}
	var (
		th       *tenantHead
		applies  []applyRef
		firstErr error
		// Per tenant: new chunks to count once the batch is visible.
		counts = map[*tenantHead]int{}
		// The heads acquired, given back once the batch is committed and applied.
		held []*tenantHead
	)
	defer func() {
		for _, h := range held {
			st.releaseTenant(h)
		}
	}()
	for i := 0; i < len(batch) && firstErr == nil; {
		if len(batch[i].Chunks) == 0 {
			i++
			continue
		}
		if th == nil || th.name != batch[i].Tenant {
			th = st.acquireTenant(batch[i].Tenant)
			held = append(held, th)
		}
		j := i + 1
		for j < len(batch) && batch[j].Tenant == th.name {
			j++
		}
		var nc int
		applies, nc, firstErr = st.importRun(th, batch[i:j], lastVs[i:j], applies)
		counts[th] += nc
		i = j
	}
	if st.wal != nil && len(applies) > 0 {
		// The series reserved before a failure are logged and applied too: a reserved op
		// must never stay pending.
		if err := st.wal.sync(); err != nil {
			// Not acknowledged; what is or will be committed of it becomes visible then.
			st.wal.applyLater(applies)
			return err
		}
		for _, ap := range applies {
			ap.s.mu.Lock()
			counts[ap.th] += ap.s.applyUpTo(ap.end, st.maxAgeMs)
			ap.s.releasePendingSlab()
			ap.s.mu.Unlock()
		}
	}
	for th, nc := range counts {
		th.numChunks.Add(int64(nc))
		st.metrics.memChunks.Add(float64(nc))
	}
	return firstErr
}

// importSeries reserves and logs s's chunks in its series (created if needed). Without a WAL the
// chunks are visible at once and nc counts the chunks made; with a WAL, ap says what to apply
// after the commit (ap.s nil when nothing was reserved).
func (st *Store) importSeries(th *tenantHead, s *ImportSeries, lastV float64) (ap applyRef, nc int, err error) {
	// No series limit: the chunks were acknowledged by the leaver, and like a replay an import
	// never drops acknowledged data for a limit (it may be lower here, or the ring smaller).
	ms, _, err := st.lockSeries(th, s.Labels, st.hashFn(s.Labels), 0, 0)
	if err != nil {
		return ap, 0, fmt.Errorf("importing chunks of tenant %q series %s: %w", s.Tenant, s.Labels, err)
	}
	defer ms.mu.Unlock()
	first := 0
	for first < len(s.Chunks) && ms.hasLast && s.Chunks[first].MinTime <= ms.lastT {
		c := s.Chunks[first]
		if !ms.hasVisibleChunk(c) {
			return ap, 0, fmt.Errorf("importing chunks of tenant %q series %s: chunk %d [%d, %d] is not after the newest sample at %d: %w",
				s.Tenant, s.Labels, first, c.MinTime, c.MaxTime, ms.lastT, ErrOutOfOrderSample)
		}
		first++
	}
	if first == len(s.Chunks) {
		return ap, 0, nil
	}
	own := make([]Chunk, len(s.Chunks)-first)
	for k, c := range s.Chunks[first:] {
		own[k] = Chunk{MinTime: c.MinTime, MaxTime: c.MaxTime, Encoding: c.Encoding, Data: bytes.Clone(c.Data)}
	}
	for k := range own {
		// Only the last chunk's value is the frontier; the ones before it are passed over at once.
		ms.reserve(pendingOp{s: Sample{T: own[k].MaxTime, V: lastV}, chunk: &own[k]})
	}
	if st.wal == nil {
		return ap, ms.applyUpTo(ms.reservedEnd, st.maxAgeMs), nil
	}
	if err := st.wal.enqueue(walEntry{typ: recChunks, chunks: walSeriesChunks{Ref: ms.ref, Chunks: own, LastV: lastV}}); err != nil {
		return ap, 0, err
	}
	return applyRef{s: ms, end: ms.reservedEnd, th: th}, 0, nil
}

// ExportSeries calls fn for every series of every tenant that has visible chunks, with all its
// chunks in time order and the value of its newest visible sample (HasLastV set), ready for
// ImportBatch on another Store (hand-over). As with ForEachSeries, fn runs without Store locks
// held and series created meanwhile may or may not be visited. s, its Chunks list and the data of
// a head chunk (the open one, last) are reused across calls and valid only during fn — the walk
// allocates nothing per series; the data of the other chunks is shared with the Store, read-only,
// and may be kept. A non-nil error from fn stops the walk and is returned.
func (st *Store) ExportSeries(fn func(s *ImportSeries) error) error {
	var s ImportSeries
	return st.walk(true, func(tenant string, ms *memSeries, chks []Chunk, lastV float64) error {
		s = ImportSeries{Tenant: tenant, Labels: ms.lset, Chunks: chks, LastV: lastV, HasLastV: true}
		return fn(&s)
	})
}
