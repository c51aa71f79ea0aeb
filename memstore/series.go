package memstore

import (
	"github.com/prometheus/client_golang/prometheus"
	"math"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/value"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
)

// Sample is one float sample. T is a timestamp in int64 milliseconds since
// the Unix epoch; V may be any float64, including NaN and the Prometheus
// stale marker (samples are compared with math.Float64bits).
type Sample struct {
	T int64
	V float64
}

// Chunk is one encoded chunk of a series. Chunks handed out by the Store are
// read-only: Data of a closed chunk is shared with the Store and must never be
// modified; Data of a head chunk is a private copy.
type Chunk struct {
	MinTime  int64 // Timestamp of the first sample, int64 ms, inclusive.
	MaxTime  int64 // Timestamp of the last sample, int64 ms, inclusive.
	Encoding chunkenc.Encoding
	Data     []byte
}

// samplesPerChunk is where the head chunk is cut, as in Cortex/Prometheus: XOR
// compression gains little beyond it and queries decode whole chunks.
const samplesPerChunk = 120

// pendingOp is a reserved (validated, logged or being logged) but not yet
// visible append: either one sample or one imported chunk.
type pendingOp struct {
	s     Sample
	chunk *Chunk // non-nil for an imported chunk
}

// memSeries is one series of one tenant.
//
// Invariants, all guarded by mu:
//   - closed is sorted by time, non-overlapping, and ends before the head chunk.
//   - (lastT, lastV) is the newest reserved sample: the last pending one if any,
//     else the newest visible one. Validation compares against it, so a sample
//     is refused or accepted exactly as it will be applied.
//   - pending holds reserved ops in reservation order; op i (absolute index
//     appliedEnd+i) becomes visible only once its WAL record is committed.
//     Because a series' records are enqueued to the WAL in reservation order
//     while mu is held, and the committer commits in queue order, the commit of
//     op k implies the commit of every op before it: whoever observes its own
//     commit may apply the whole prefix up to its own reservation.
//
// Layout: one allocation per series, so its size class is paid by every
// series. The small fields share one word (hasLast, deleted, lastKind, pendStart), which
// keeps the struct at 184 bytes, the 192-byte size class (it was 200, in the
// 208-byte class); the out-of-order pointer brings it to 192, still that class.
// BenchmarkHeapPerSeries measures the whole series.
type memSeries struct {
	ref  uint64        // Immutable; unique within the Store (across tenants).
	lset labels.Labels // Immutable; owned (copied on creation).
	hash uint64        // Immutable; hash of lset under the Store's hash function.

	mu          sync.Mutex
	hasLast     bool
	deleted     bool               // Removed from the maps by Truncate; appenders must look up again.
	lastKind    uint8              // Kind of the newest reserved sample (kindFloat, or a histogram: histogram.go).
	pendStart   int32              // Ops pending[pendStart:] are reserved but not visible.
	closed      []Chunk            // Always XOR (imports refuse other encodings).
	head        *chunkenc.XORChunk // nil when there is no open chunk.
	headApp     chunkenc.Appender
	headMin     int64
	headMax     int64
	lastT       int64
	lastV       float64
	visLastV    float64     // Value of the newest visible sample (sent in hand-over frames).
	pending     []pendingOp // Reserved ops from pendStart on; see the invariants.
	reservedEnd uint64      // Absolute count of ops ever reserved.
	appliedEnd  uint64      // Absolute count of ops ever made visible.
	ooo         *oooData    // Out-of-order samples (ooo.go) and histogram state (histogram.go); nil until the first of either.
}

// appendClosed appends c to s.closed, growing the array by about a quarter
// instead of append's doubling: a series gains a chunk every 120 samples
// (half an hour at a 15 s interval) and keeps them until the flush, so a
// doubled array would carry up to half of it unused in every series for
// hours, while the copies a tighter growth costs are a few hundred bytes per
// chunk cut.
func (s *memSeries) appendClosed(c Chunk) {
	if len(s.closed) == cap(s.closed) {
		n := len(s.closed)
		grown := make([]Chunk, n, n+1+n/4)
		copy(grown, s.closed)
		s.closed = grown
	}
	s.closed = append(s.closed, c)
}

// headChunkBytes is the initial capacity of a head chunk's byte slice
// (chunkenc.NewXORChunk's is 128). A chunk grows by doubling as samples
// arrive, so starting small keeps a young head chunk (a new series, the first
// samples after a cut) at what it holds; a full 120-sample chunk of 1-2 bytes
// a sample ends in the same 256-byte array either way, and Compact trims it
// when it is closed.
const headChunkBytes = 32

// newHeadChunk is chunkenc.NewXORChunk with headChunkBytes of capacity:
// FromData on the 2-byte header of an empty chunk builds the same XORChunk
// (count 0, no samples) around a slice of our choosing.
func newHeadChunk() *chunkenc.XORChunk {
	c, err := chunkenc.FromData(chunkenc.EncXOR, make([]byte, 2, headChunkBytes))
	if err != nil {
		panic("memstore: empty XOR chunk refused by chunkenc: " + err.Error()) // broken invariant of chunkenc
	}
	return c.(*chunkenc.XORChunk)
}

// appendResult classifies one sample against the series' frontier.
type appendResult uint8

const (
	appendOK appendResult = iota
	appendIdempotent
	appendDuplicate
	appendOutOfOrder
	appendOOO // accepted out of order, within the window (checkOOO)
)

// check classifies (t, v) against the newest reserved sample. Caller holds s.mu.
func (s *memSeries) check(t int64, v float64) appendResult {
	if !s.hasLast || t > s.lastT {
		return appendOK
	}
	if t == s.lastT {
		if float64bitsEqual(v, s.lastV) && s.lastKind == kindFloat {
			return appendIdempotent
		}
		return appendDuplicate
	}
	return appendOutOfOrder
}

// reserve moves the frontier to op. Caller holds s.mu and has checked op.
func (s *memSeries) reserve(op pendingOp) {
	s.lastKind = kindFloat
	if op.chunk != nil {
		s.lastT = op.chunk.MaxTime
		s.lastV = op.s.V // the chunk's last value, filled in by the caller
		if op.chunk.Encoding != chunkenc.EncXOR {
			s.histFrontierFromChunk(op.chunk)
		}
	} else {
		s.lastT, s.lastV = op.s.T, op.s.V
	}
	s.hasLast = true
	s.pending = append(s.pending, op)
	s.reservedEnd++
}

// applyUpTo makes every pending op with absolute index < end visible and
// returns how many chunks were created. Caller holds s.mu.
func (s *memSeries) applyUpTo(end uint64, maxAgeMs int64) (newChunks int) {
	if end <= s.appliedEnd {
		return 0
	}
	n := int(end - s.appliedEnd)
	ops := s.pending[s.pendStart : int(s.pendStart)+n]
	for _, op := range ops {
		if op.chunk == oooOp {
			newChunks += s.insertOOO(op.s)
			continue
		}
		if op.chunk == histOp {
			newChunks += s.applyHist(maxAgeMs)
			continue
		}
		if op.chunk != nil {
			s.closeHead()
			s.closeHistHead()
			s.appendClosed(*op.chunk)
			s.visLastV = op.s.V
			newChunks++
			continue
		}
		if s.appendVisible(op.s.T, op.s.V, maxAgeMs) {
			newChunks++
		}
	}
	clear(ops) // drop references to imported chunks
	s.pendStart += int32(n)
	if int(s.pendStart) == len(s.pending) {
		// Reuse the array from its start: a series' pending list is short-lived
		// and reusing it keeps the append path free of allocations. A larger
		// array (a push of many samples, an import) is let go: kept, it would
		// stay in the series for its whole life.
		if cap(s.pending) > maxKeptPending {
			s.pending = nil
		}
		s.pending, s.pendStart = s.pending[:0], 0
	}
	s.appliedEnd = end
	return newChunks
}

// maxKeptPending is the largest pending array (in ops, 24 bytes each) a
// series keeps once every op is applied: enough for the usual one to a few
// samples a push without allocating.
const maxKeptPending = 4

// hasPending reports whether reserved ops await their WAL commit. Caller holds s.mu.
func (s *memSeries) hasPending() bool { return int(s.pendStart) < len(s.pending) }

func float64bitsEqual(a, b float64) bool { return math.Float64bits(a) == math.Float64bits(b) }

// appendVisible appends to the head chunk, cutting a new one at
// samplesPerChunk samples or when t is more than maxAgeMs past the head
// chunk's first sample. Caller holds s.mu and guarantees t > headMax.
func (s *memSeries) appendVisible(t int64, v float64, maxAgeMs int64) (cut bool) {
	if s.head == nil || s.head.NumSamples() >= samplesPerChunk || t-s.headMin > maxAgeMs {
		if s.ooo != nil && s.ooo.hist != nil && s.ooo.hist.head != nil {
			// A histogram head is open: a stale marker goes into it (histogram.go), any other
			// float closes it.
			if value.IsStaleNaN(v) {
				_, nc := s.appendStaleToHistHead(t, maxAgeMs)
				return nc > 0
			}
			s.closeHistHead()
		}
		s.closeHead()
		s.head = newHeadChunk()
		app, err := s.head.Appender()
		if err != nil {
			panic("memstore: XOR appender on a new chunk: " + err.Error()) // broken invariant of chunkenc
		}
		s.headApp = app
		s.headMin = t
		cut = true
	}
	s.headApp.Append(t, v)
	s.headMax = t
	s.visLastV = v
	return cut
}

// closeHead turns the head chunk into an immutable closed chunk. Caller holds s.mu.
func (s *memSeries) closeHead() {
	if s.head == nil {
		return
	}
	s.head.Compact()
	s.appendClosed(Chunk{MinTime: s.headMin, MaxTime: s.headMax, Encoding: chunkenc.EncXOR, Data: s.head.Bytes()})
	s.head, s.headApp = nil, nil
}

// chunksIn appends to dst the visible chunks overlapping [mint, maxt], the
// head chunk as a private copy, merged with the out-of-order samples when the
// series has some (mergedChunksIn). Caller holds s.mu.
func (s *memSeries) chunksIn(dst []Chunk, mint, maxt int64) []Chunk {
	if !s.oooEmpty() {
		return s.mergedChunksIn(dst, mint, maxt)
	}
	return s.inOrderChunksIn(dst, mint, maxt)
}

// mergedChunksIn is chunksIn for a series with out-of-order samples: its
// in-order and out-of-order chunks overlapping [mint, maxt] merged into sorted,
// non-overlapping chunks, one sample per timestamp. Caller holds s.mu.
func (s *memSeries) mergedChunksIn(dst []Chunk, mint, maxt int64) []Chunk {
	in := s.inOrderChunksIn(nil, mint, maxt)
	ooo := s.oooChunksIn(nil, mint, maxt)
	merged, err := mergeChunks(in, ooo)
	if err != nil {
		// Every chunk here was encoded by this Store or checked on import: a chunk that does not
		// decode is a broken invariant. Readers still get the in-order data.
		return append(dst, in...)
	}
	return append(dst, merged...)
}

// inOrderChunksIn appends to dst the visible in-order chunks overlapping
// [mint, maxt], the head chunk as a private copy. Caller holds s.mu.
func (s *memSeries) inOrderChunksIn(dst []Chunk, mint, maxt int64) []Chunk {
	for _, c := range s.closed {
		if c.MaxTime >= mint && c.MinTime <= maxt {
			dst = append(dst, c)
		}
	}
	if s.head != nil && s.headMax >= mint && s.headMin <= maxt {
		dst = append(dst, Chunk{MinTime: s.headMin, MaxTime: s.headMax, Encoding: chunkenc.EncXOR, Data: slices.Clone(s.head.Bytes())})
	}
	if c, ok := s.histHeadChunk(); ok && c.MaxTime >= mint && c.MinTime <= maxt {
		c.Data = slices.Clone(c.Data)
		dst = append(dst, c)
	}
	return dst
}

// oooDropMode says which out-of-order samples a drop removes below its bound.
type oooDropMode uint8

const (
	oooKeep   oooDropMode = iota // none
	oooSealed                    // those a flush snapshot sealed (DropFlushedSeries)
	oooAll                       // all (Truncate, DropAll)
)

// dropBefore removes visible chunks whose MaxTime < before, and the
// out-of-order samples older than before that mode says, and reports the
// number of chunks removed and whether the series is now empty (nothing
// visible, nothing pending). Caller holds s.mu.
func (s *memSeries) dropBefore(before int64, mode oooDropMode) (removed int, empty bool) {
	i := 0
	for i < len(s.closed) && s.closed[i].MaxTime < before {
		i++
	}
	if i > 0 {
		removed = i
		s.closed = slices.Clone(s.closed[i:]) // release the dropped chunks' memory
	}
	if s.head != nil && s.headMax < before && !s.hasPending() {
		s.head, s.headApp = nil, nil
		removed++
	}
	if hh := s.histHead(); hh != nil && s.headMax < before && !s.hasPending() {
		s.ooo.hist.head, s.ooo.hist.app = nil, nil
		removed++
	}
	if mode != oooKeep {
		removed += s.dropOOOBefore(before, mode == oooSealed)
	}
	return removed, len(s.closed) == 0 && s.head == nil && s.histHead() == nil && !s.hasPending() && s.oooEmpty()
}

// stripeLock is padded so that neighbouring locks do not share a cache line
// (Prometheus tsdb/head.go stripeLock).
type stripeLock struct {
	sync.RWMutex
	_ [40]byte
}

// seriesHashmap finds a series by label hash; colliding label sets live in
// conflicts (Prometheus tsdb/head.go seriesHashmap).
type seriesHashmap struct {
	unique    map[uint64]*memSeries
	conflicts map[uint64][]*memSeries
}

func (m *seriesHashmap) get(hash uint64, lset labels.Labels) *memSeries {
	if s, ok := m.unique[hash]; ok && labels.Equal(s.lset, lset) {
		return s
	}
	for _, s := range m.conflicts[hash] {
		if labels.Equal(s.lset, lset) {
			return s
		}
	}
	return nil
}

// set stores s, which must not be in the map yet under equal labels.
func (m *seriesHashmap) set(hash uint64, s *memSeries) {
	if _, ok := m.unique[hash]; !ok {
		m.unique[hash] = s
		return
	}
	if m.conflicts == nil {
		m.conflicts = make(map[uint64][]*memSeries)
	}
	m.conflicts[hash] = append(m.conflicts[hash], s)
}

func (m *seriesHashmap) del(hash uint64, ref uint64) {
	u, ok := m.unique[hash]
	if !ok {
		return
	}
	if u.ref == ref {
		c := m.conflicts[hash]
		if len(c) == 0 {
			delete(m.unique, hash)
			return
		}
		m.unique[hash] = c[0]
		c = c[1:]
		if len(c) == 0 {
			delete(m.conflicts, hash)
		} else {
			m.conflicts[hash] = c
		}
		return
	}
	c := slices.DeleteFunc(slices.Clone(m.conflicts[hash]), func(s *memSeries) bool { return s.ref == ref })
	if len(c) == 0 {
		delete(m.conflicts, hash)
	} else {
		m.conflicts[hash] = c
	}
}

// stripeSize is the number of lock stripes per tenant. Power of two.
const stripeSize = 512

// stripeSeries holds a tenant's series by ref and by label hash. Stripe i of
// series is guarded by locks[ref&mask], stripe j of hashes by locks[hash&mask];
// no code holds two stripe locks at once.
type stripeSeries struct {
	series []map[uint64]*memSeries
	hashes []seriesHashmap
	locks  []stripeLock
}

func newStripeSeries() *stripeSeries {
	s := &stripeSeries{
		series: make([]map[uint64]*memSeries, stripeSize),
		hashes: make([]seriesHashmap, stripeSize),
		locks:  make([]stripeLock, stripeSize),
	}
	for i := range s.series {
		s.series[i] = map[uint64]*memSeries{}
		s.hashes[i] = seriesHashmap{unique: map[uint64]*memSeries{}}
	}
	return s
}

func (s *stripeSeries) getByHash(hash uint64, lset labels.Labels) *memSeries {
	l := &s.locks[hash&(stripeSize-1)]
	l.RLock()
	ms := s.hashes[hash&(stripeSize-1)].get(hash, lset)
	l.RUnlock()
	return ms
}

func (s *stripeSeries) getByRef(ref uint64) *memSeries {
	l := &s.locks[ref&(stripeSize-1)]
	l.RLock()
	ms := s.series[ref&(stripeSize-1)][ref]
	l.RUnlock()
	return ms
}

// getOrCreate returns the series with lset, locked (ms.mu held), creating it
// with create (called under the hash stripe's write lock, so at most once per
// label set) if it does not exist. A new series is locked before it becomes
// findable and onCreated runs before it is unlocked: the WAL series record is
// enqueued there, so no appender can enqueue samples of the series before its
// series record. The caller must check ms.deleted and unlock ms.mu.
func (s *stripeSeries) getOrCreate(hash uint64, lset labels.Labels, create func() (*memSeries, error), onCreated func(*memSeries)) (*memSeries, bool, error) {
	if ms := s.getByHash(hash, lset); ms != nil {
		ms.mu.Lock()
		return ms, false, nil
	}
	i := hash & (stripeSize - 1)
	s.locks[i].Lock()
	if ms := s.hashes[i].get(hash, lset); ms != nil {
		s.locks[i].Unlock()
		ms.mu.Lock()
		return ms, false, nil
	}
	ms, err := create()
	if err != nil {
		s.locks[i].Unlock()
		return nil, false, err
	}
	ms.mu.Lock()
	s.hashes[i].set(hash, ms)
	s.locks[i].Unlock()
	j := ms.ref & (stripeSize - 1)
	s.locks[j].Lock()
	s.series[j][ms.ref] = ms
	s.locks[j].Unlock()
	onCreated(ms)
	return ms, true, nil
}

// remove deletes ms from both maps. Caller holds no stripe lock.
func (s *stripeSeries) remove(ms *memSeries) {
	i := ms.hash & (stripeSize - 1)
	s.locks[i].Lock()
	s.hashes[i].del(ms.hash, ms.ref)
	s.locks[i].Unlock()
	j := ms.ref & (stripeSize - 1)
	s.locks[j].Lock()
	delete(s.series[j], ms.ref)
	s.locks[j].Unlock()
}

// forEach calls fn for every series, outside the stripe locks.
func (s *stripeSeries) forEach(fn func(*memSeries) bool) {
	var buf []*memSeries
	for i := range s.series {
		s.locks[i].RLock()
		buf = buf[:0]
		for _, ms := range s.series[i] {
			buf = append(buf, ms)
		}
		s.locks[i].RUnlock()
		for _, ms := range buf {
			if !fn(ms) {
				return
			}
		}
	}
}

// tenantHead is the in-memory state of one tenant. Created once, never removed
// while the Store is open.
type tenantHead struct {
	name     string
	series   *stripeSeries
	postings *postingsIndex

	numSeries atomic.Int64
	numChunks atomic.Int64
	// users counts the holders that may create series in this head (Appenders, imports): taken
	// under Store.tenantsMu by acquireTenant, given back by releaseTenant. A head leaves the
	// Store's map only while it has no series and no users, under tenantsMu's write lock, so a
	// series is never created in a head that is no longer in the map.
	users atomic.Int64

	// Per-tenant children of the Store's metric vectors, resolved once.
	ingested, failed, created, removed, oooAppended prometheus.Counter
}

func newTenantHead(name string) *tenantHead {
	return &tenantHead{name: name, series: newStripeSeries(), postings: newPostingsIndex()}
}
