package memstore

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	bolt "go.etcd.io/bbolt"
)

// WALFileName is the bbolt file of the WAL inside Config.WALDir.
const WALFileName = "wal.bolt"

// walFormatVersion is the layout of the bbolt file itself (buckets and keys)
// and the newest record version in it, stored under meta/format. Records
// carry their own version byte. Format 1 and 2 files (records of versions up
// to 1 or 2) are upgraded to format 3 when opened, before anything is
// written: their records stay readable, and an older build then refuses the
// file instead of cutting version 3 records as a corrupt tail.
//
// A file that holds a record of a type added after format 3 (5: histograms,
// 7: exemplars) is raised to walFormatExtended in the transaction of its
// first such record: a format 3 build would take those records for a corrupt
// tail and cut them, so it must refuse the file instead. A file without them
// stays at format 3, which keeps a rollback to an older build open for a
// cluster that uses neither.
const walFormatVersion = 3

// walFormatExtended is format 3 whose version 3 records may also be of types
// 5 (histograms) and 7 (exemplars); see walFormatVersion.
const walFormatExtended byte = 4

// extendedType reports the record types that raise a file to walFormatExtended.
func extendedType(typ byte) bool { return typ == recHistograms || typ == recExemplars }

var (
	bucketWAL  = []byte("wal")
	bucketMeta = []byte("meta")
	keyFormat  = []byte("format")
)

const (
	// maxRecordBytes bounds how many entries the committer packs into one
	// record, so a corrupt record costs little and values stay small.
	maxRecordBytes = 64 << 10
	// truncateBatch is the number of records one truncation transaction
	// rewrites; small so that group commits are not held up behind it.
	truncateBatch = 1024
)

var (
	// ErrWALFailed is returned by the writes of a failed WAL commit (ENOSPC,
	// EIO) and by every write while the WAL is failing: nothing of them is
	// acknowledged. It wraps the cause. The failure is not permanent: the
	// committer retries the failed transaction with backoff, and writes are
	// accepted again as soon as a retry commits (Store.WALError is nil again).
	ErrWALFailed = errors.New("memstore: WAL failed")
	// ErrClosed is returned by calls on a closed Store.
	ErrClosed = errors.New("memstore: store closed")
)

// CorruptionError locates a corrupt WAL record: the bbolt file, bucket and
// key (sequence number), and what was wrong (Err wraps ErrCorruptRecord or
// ErrUnknownRecordVersion).
type CorruptionError struct {
	File   string
	Bucket string
	Seq    uint64
	Err    error
}

// Error names the file, bucket, sequence number and what was wrong.
func (e *CorruptionError) Error() string {
	return fmt.Sprintf("memstore: WAL file %s bucket %q record seq %d: %v", e.File, e.Bucket, e.Seq, e.Err)
}

// Unwrap returns Err (wrapping ErrCorruptRecord or ErrUnknownRecordVersion).
func (e *CorruptionError) Unwrap() error { return e.Err }

// walEntry is one queued WAL write. typ 0 is a waiter: done receives the
// outcome of the commit that covers every entry queued before it; or, with
// applies set and no done, a deferred apply (wal.applyLater).
type walEntry struct {
	typ     byte
	series  walSeries
	samples walSamples
	hists   walHistograms // recHistograms; the histograms are the Store's own copies
	chunks  walSeriesChunks
	// exemplars is a recExemplars entry's payload (owned copies: it is encoded at commit time).
	exemplars walExemplars
	done      chan error

	// applies are the reservations of a push whose wait failed: the committer
	// makes them visible once every entry queued before this one is committed.
	applies []applyRef
	// laterExemplars, like applies, are the exemplars of a push whose wait failed, stored once
	// every entry queued before this one is committed (wal.exemplarsLater).
	laterExemplars []walExemplars
	// orphan marks an entry kept for a retry after its pusher was answered
	// with an error (its commit failed, or it was queued while the WAL was
	// failing): its samples are then a private copy.
	orphan bool
}

// orphaned returns e as an orphan: samples copied, since the pusher's buffer
// is reused as soon as its push returns. Chunks, labels and applies are
// already the Store's own.
func (e walEntry) orphaned() walEntry {
	if !e.orphan && e.typ == recSamples {
		e.samples.Samples = slices.Clone(e.samples.Samples)
	}
	e.orphan = true
	return e
}

// walFailure is the state of a failing WAL: err is ErrWALFailed wrapping the
// cause of the first failed commit; since is when it failed.
type walFailure struct {
	err   error
	since time.Time
}

// Retry backoff of a failed commit: doubling from walRetryMin up to walRetryMax.
const (
	walRetryMin = 50 * time.Millisecond
	walRetryMax = 2 * time.Second
)

// wal is the bbolt write-ahead log with a group-committing goroutine.
//
// Writers call enqueue (any goroutine, any time, in the order their records
// must be logged) and then wait on a waiter entry. The committer takes the
// whole queue, writes it as one bbolt transaction (one fsync), then signals
// the waiters in that batch. Entries are committed in queue order, and a
// waiter is signalled only after every entry queued before it is committed.
//
// A failed commit (ENOSPC, EIO) answers its waiters with ErrWALFailed and
// puts the WAL in the failing state (failure set): the batch's entries are
// kept (retained) and retried with backoff as the very same transaction —
// same keys, same bytes, so a retry is idempotent even if bbolt's failed
// commit reached the file after all — each retry on a freshly reopened bbolt
// file. Entries queued while failing are answered with the failure at once
// and kept too (held), to be committed after retained. Their reservations
// stay pending in memory, invisible, and keep their place in each series'
// order; a pusher answered with an error hands them to applyLater, and the
// committer makes them visible once committed. Nothing is ever acknowledged
// before its commit, and memory never shows a sample the WAL does not hold.
// See DESIGN.md, "Failure and recovery".
type wal struct {
	// dbMu guards the db field: the committer replaces it (reopen) holding
	// the write lock, and every transaction run outside the committer
	// goroutine (Truncate's rewrite, DropAll) holds the read lock. The
	// committer itself reads db without the lock: only it writes the field.
	dbMu    sync.RWMutex
	db      *bolt.DB
	path    string
	fsync   bool // Config.WALSync, to reopen the file alike.
	logger  *slog.Logger
	metrics *metrics

	mu      sync.Mutex
	queue   []walEntry
	err     error // Sticky: ErrClosed after close.
	closing bool
	wake    chan struct{}
	stopped chan struct{}

	// failure is non-nil while commits fail; read lock-free by the Store to
	// refuse writes early and by /ready.
	failure atomic.Pointer[walFailure]

	// Owned by the committer goroutine.
	spare    []walEntry
	series   []walSeries
	arena    []byte
	body     []byte // one record's payload before compression
	zbuf     []byte // snappy output scratch
	keys     []byte
	spans    []recSpan
	nextSeq  uint64
	retained []walEntry // Entries of the failed transaction, all orphans, in queue order.
	held     []walEntry // Orphans queued while failing, in queue order; committed after retained.

	// applyDeferred makes the deferred applies among committed entries
	// visible (the Store's applyDeferred). Set before start; called by the
	// committer with no lock held.
	applyDeferred func([]walEntry)
	// retryMin and retryMax bound the retry backoff (walRetryMin/Max; tests shorten them).
	retryMin, retryMax time.Duration

	// lastSeq is the newest committed sequence number.
	lastSeq atomic.Uint64
	// commits counts committed write transactions (fsyncs when syncing); used by tests.
	commits atomic.Uint64

	// releaseEvery is how many bytes of records the committer writes between
	// two releases of bbolt's mapped pages (releaseMapped): 0 releases after
	// every commit; negative never releases (tests, to show the bound fails
	// without it). Set before the first write. unreleased counts the bytes
	// committed since the last release (committer only).
	releaseEvery int64
	unreleased   int64

	// extFormat is set once meta/format is walFormatExtended: the committer raises it in the
	// transaction of the first histograms or exemplars record. Committer only after Open.
	extFormat bool

	// version is the record version the committer writes: recordVersion,
	// except in tests and benchmarks that write the old format (2) to
	// compare it or to test replay of it.
	version byte

	// beforeCommit, when set (tests only, before the first write), runs in the
	// committer before each write transaction.
	beforeCommit func()
	// injectFault, when set (tests only, before the first write), runs in the
	// committer before each write transaction; an error fails that commit as
	// if bbolt had returned it.
	injectFault func() error
}

type recSpan struct {
	start, end int
	typ        byte
}

var doneChanPool = sync.Pool{New: func() any { return make(chan error, 1) }}

// openWAL opens or creates <dir>/wal.bolt. A damaged bbolt file is never
// deleted: the error names the file and leaves it to the operator.
func openWAL(dir string, sync bool, compactMinBytes int64, logger *slog.Logger, m *metrics) (w *wal, err error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("memstore: creating WAL dir: %w", err)
	}
	path := filepath.Join(dir, WALFileName)
	if err := checkBoltFileSize(path); err != nil {
		return nil, err
	}
	// A leftover of a compaction that crashed before its rename: the original
	// file is intact and authoritative.
	if err := os.Remove(path + compactSuffix); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("memstore: removing stale %s%s: %w", path, compactSuffix, err)
	}
	db, err := openBolt(path, sync)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil && db != nil {
			db.Close()
		}
	}()
	if err := checkBoltSize(db, path); err != nil {
		return nil, err
	}
	extFormat := false
	err = catchBoltPanic(path, func() error {
		return db.Update(func(tx *bolt.Tx) error {
			meta, err := tx.CreateBucketIfNotExists(bucketMeta)
			if err != nil {
				return err
			}
			v := meta.Get(keyFormat)
			switch {
			case v == nil || (len(v) == 1 && v[0] >= 1 && v[0] < walFormatVersion):
				// New file, or format 1 or 2: upgrade (see walFormatVersion).
				if err := meta.Put(keyFormat, []byte{walFormatVersion}); err != nil {
					return err
				}
			case len(v) == 1 && v[0] == walFormatExtended:
				extFormat = true
			case len(v) != 1 || v[0] != walFormatVersion:
				return fmt.Errorf("%w: file format %v, this build reads formats 1 to %d", ErrUnknownRecordVersion, v, walFormatExtended)
			}
			_, err = tx.CreateBucketIfNotExists(bucketWAL)
			return err
		})
	})
	if err != nil {
		return nil, fmt.Errorf("memstore: initialising WAL file %s: %w (if the file is damaged, move it away to start with an empty WAL)", path, err)
	}
	if compactMinBytes > 0 {
		ndb, cerr := maybeCompact(db, path, sync, compactMinBytes, logger)
		if cerr != nil {
			db = nil // maybeCompact closed it
			return nil, cerr
		}
		db = ndb
	}
	return &wal{
		extFormat: extFormat,
		db:        db, path: path, fsync: sync, logger: logger, metrics: m,
		wake: make(chan struct{}, 1), stopped: make(chan struct{}),
		retryMin: walRetryMin, retryMax: walRetryMax, version: recordVersion,
		releaseEvery: walReleaseEvery,
	}, nil
}

const compactSuffix = ".compact"

// walReleaseEvery is the default of wal.releaseEvery: the committer releases
// bbolt's mapped pages (releaseMapped) once this many bytes of records are
// committed since the last release, which bounds the WAL's share of the
// resident set to about this much plus the pages one commit reads, whatever
// the file's size. TestWAL_MappedPagesBounded holds it to that bound;
// BenchmarkWALMappedRelease measured the choice (docs/memory.md).
const walReleaseEvery = 4 << 20

// releaseMapped drops this process's mapping of the pages of db that bbolt
// has read (releaseMappedPages, a no-op outside Linux) and records the file's
// size. A failure is logged and costs only memory: the pages stay mapped,
// nothing of the WAL's contents or guarantees depends on it. The caller is
// the committer (db is then w.db, which only the committer replaces) or holds
// dbMu for reading (releaseMappedView). Concurrent calls are fine: each runs
// in its own read transaction and madvise is idempotent.
func (w *wal) releaseMapped(db *bolt.DB) {
	if w.releaseEvery < 0 {
		return
	}
	n, err := releaseMappedPages(db)
	if err != nil {
		w.logger.Warn("wal: releasing bbolt's mapped pages failed; they stay resident until the next try", "file", w.path, "err", err)
		return
	}
	w.metrics.walFileBytes.Set(float64(n))
}

// DefaultCompactMinBytes is the WAL file size from which Open compacts the
// file when more than half of it is free pages.
const DefaultCompactMinBytes = 64 << 20

func openBolt(path string, sync bool) (db *bolt.DB, err error) {
	err = catchBoltPanic(path, func() error {
		var err error
		db, err = bolt.Open(path, 0o600, &bolt.Options{
			Timeout: 5 * time.Second, // another process holding the flock
			NoSync:  !sync,
			// The freelist is written in every commit (one page more per commit)
			// rather than rebuilt on open: the rebuild walks every page in a
			// goroutine of bbolt's own, where a damaged page faults or panics
			// beyond our recover and kills the process.
			NoFreelistSync: false,
			FreelistType:   bolt.FreelistMapType,
		})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("memstore: opening WAL file %s: %w (the file was left untouched; move it away to start with an empty WAL)", path, err)
	}
	return db, nil
}

// maybeCompact rewrites the file when it is at least minBytes and more than
// half free: bbolt never shrinks a file, it only reuses free pages, so a WAL
// that once held a large backlog would keep its size forever. The copy is
// written to <path>.compact, fsynced, and renamed over the original (then the
// directory is fsynced), so a crash at any point leaves one complete file.
// On a failure before the rename the original stays in use.
func maybeCompact(db *bolt.DB, path string, sync bool, minBytes int64, logger *slog.Logger) (*bolt.DB, error) {
	fi, err := os.Stat(path)
	if err != nil || fi.Size() < minBytes {
		return db, nil
	}
	pageSize := int64(db.Info().PageSize)
	st := db.Stats()
	free := int64(st.FreePageN+st.PendingPageN) * pageSize
	if free*2 < fi.Size() {
		return db, nil
	}
	begin := time.Now()
	tmp := path + compactSuffix
	dst, err := bolt.Open(tmp, 0o600, &bolt.Options{Timeout: 5 * time.Second, NoSync: true})
	if err != nil {
		logger.Warn("wal compaction skipped", "file", path, "err", err)
		return db, nil
	}
	err = catchBoltPanic(path, func() error { return bolt.Compact(dst, db, 64<<20) })
	if err == nil {
		err = dst.Sync()
	}
	if cerr := dst.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(tmp)
		logger.Warn("wal compaction failed; keeping the original file", "file", path, "err", err)
		return db, nil
	}
	if err := db.Close(); err != nil {
		os.Remove(tmp)
		return nil, fmt.Errorf("memstore: closing WAL file %s for compaction: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return nil, fmt.Errorf("memstore: installing compacted WAL file %s: %w", path, err)
	}
	if d, err := os.Open(filepath.Dir(path)); err == nil {
		err = d.Sync()
		d.Close()
		if err != nil {
			return nil, fmt.Errorf("memstore: syncing WAL dir after compaction of %s: %w", path, err)
		}
	}
	after, _ := os.Stat(path)
	logger.Info("wal compacted", "file", path, "bytes_before", fi.Size(), "bytes_after", after.Size(), "duration", time.Since(begin))
	return openBolt(path, sync)
}

// checkBoltFileSize reads bbolt's two meta pages itself, before bbolt maps
// the file, and refuses a file shorter than the high-water mark of the newest
// valid meta page: bbolt would map past the end of the file and fault on the
// first access to a missing page. Meta layout (bbolt internal/common/meta.go,
// native byte order, after the 16-byte page header): magic u32, version u32,
// pageSize u32, flags u32, root bucket (pgid u64, sequence u64), freelist
// pgid u64, pgid (high-water mark, in pages) u64, txid u64, checksum u64 =
// FNV-64a of the meta bytes before it. A file with no valid meta page is left
// to bbolt, which refuses it with its own error.
func checkBoltFileSize(path string) error {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("memstore: opening WAL file %s: %w", path, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("memstore: stat WAL file %s: %w", path, err)
	}
	if fi.Size() == 0 {
		return nil // bbolt initialises an empty file
	}
	const (
		metaOff    = 16
		boltMagic  = 0xED0CDAED
		sumEnd     = metaOff + 56
		metaLength = sumEnd + 8
	)
	readMeta := func(off int64) (m boltMeta, ok bool) {
		b := make([]byte, metaLength)
		if _, err := f.ReadAt(b, off); err != nil {
			return m, false
		}
		ne := binary.NativeEndian
		if ne.Uint32(b[metaOff:]) != boltMagic {
			return m, false
		}
		h := fnv.New64a()
		h.Write(b[metaOff:sumEnd])
		if h.Sum64() != ne.Uint64(b[sumEnd:]) {
			return m, false
		}
		m.pageSize = int64(ne.Uint32(b[metaOff+8:]))
		m.hwm = int64(ne.Uint64(b[metaOff+40:])) * m.pageSize
		m.txid = ne.Uint64(b[metaOff+48:])
		return m, true
	}
	m0, ok0 := readMeta(0)
	// Meta page 1 sits one page in; if meta 0 is damaged, try the usual sizes.
	candidates := []int64{int64(os.Getpagesize()), 4096, 8192, 16384, 65536}
	if ok0 {
		candidates = []int64{m0.pageSize}
	}
	var m1 boltMeta
	var ok1 bool
	for _, ps := range candidates {
		if m1, ok1 = readMeta(ps); ok1 {
			break
		}
	}
	var hwm int64
	switch {
	case ok0 && ok1 && m1.txid > m0.txid:
		hwm = m1.hwm
	case ok0:
		hwm = m0.hwm
	case ok1:
		hwm = m1.hwm
	default:
		return nil
	}
	if fi.Size() < hwm {
		return fmt.Errorf("memstore: WAL file %s is truncated: %d bytes, but its bbolt meta page says the data extends to %d bytes; the file was left untouched (restore it, or move it away to start with an empty WAL)", path, fi.Size(), hwm)
	}
	return nil
}

type boltMeta struct {
	pageSize, hwm int64
	txid          uint64
}

// checkBoltSize refuses a file shorter than bbolt's high-water mark: bbolt
// would mmap past the end of the file and fault on the first access to a
// missing page (a truncated file, e.g. by a bad copy or a full disk).
func checkBoltSize(db *bolt.DB, path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("memstore: stat WAL file %s: %w", path, err)
	}
	var hwm int64
	if err := db.View(func(tx *bolt.Tx) error { hwm = tx.Size(); return nil }); err != nil {
		return fmt.Errorf("memstore: reading WAL file %s: %w", path, err)
	}
	if fi.Size() < hwm {
		return fmt.Errorf("memstore: WAL file %s is truncated: %d bytes, but its bbolt meta page says the data extends to %d bytes; the file was left untouched (restore it, or move it away to start with an empty WAL)", path, fi.Size(), hwm)
	}
	return nil
}

// catchBoltPanic runs fn, converting a panic or a memory fault inside bbolt
// (which trusts its pages and panics or faults on damaged ones) into an error
// naming the file.
func catchBoltPanic(path string, fn func() error) (err error) {
	old := debug.SetPanicOnFault(true)
	defer debug.SetPanicOnFault(old)
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("memstore: WAL file %s is damaged: bbolt failed reading it: %v (the file was left untouched; move it away to start with an empty WAL: the replicas on other members hold its acknowledged samples)", path, p)
		}
	}()
	return fn()
}

// start launches the committer; nextSeq is the first unused sequence number.
func (w *wal) start(nextSeq uint64) {
	w.nextSeq = nextSeq
	w.lastSeq.Store(nextSeq - 1)
	go w.run()
}

// failed returns ErrWALFailed wrapping the cause while the WAL is failing, else nil.
func (w *wal) failed() error {
	if f := w.failure.Load(); f != nil {
		return f.err
	}
	return nil
}

// enqueue appends e to the commit queue. Callers that need a per-series
// order must call enqueue in that order (they do so under the series lock).
// It fails only after close; while the WAL is failing it still queues (the
// entry becomes an orphan, committed after the failed transaction), so that
// a reservation made just before a failure keeps its place in its series.
func (w *wal) enqueue(e walEntry) error {
	w.mu.Lock()
	if w.err != nil {
		err := w.err
		w.mu.Unlock()
		return err
	}
	w.queue = append(w.queue, e)
	w.mu.Unlock()
	return nil
}

// applyLater hands the reservations of a push whose sync failed to the
// committer, which applies them once everything queued before is committed.
// A failed sync says only that not all of the push's entries are committed
// yet: some may have been committed in an earlier transaction, the others
// are kept for a retry, and either way they must become visible once
// committed, as replay would make them. After close it does nothing (the
// Store is closed: nothing will read them).
func (w *wal) applyLater(aps []applyRef) {
	if len(aps) == 0 {
		return
	}
	if w.enqueue(walEntry{applies: slices.Clone(aps)}) == nil {
		select {
		case w.wake <- struct{}{}:
		default:
		}
	}
}

// sync waits until every entry enqueued before the call is committed, or
// returns the failure that stops them from being committed now; then the
// caller must hand its reservations to applyLater.
func (w *wal) sync() error {
	ch := doneChanPool.Get().(chan error)
	w.mu.Lock()
	if w.err != nil {
		err := w.err
		w.mu.Unlock()
		doneChanPool.Put(ch)
		return err
	}
	w.queue = append(w.queue, walEntry{done: ch})
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
	err := <-ch
	doneChanPool.Put(ch)
	return err
}

// close stops accepting entries, commits what is queued, stops the committer
// and closes the bbolt file. A WAL that is failing makes one last attempt;
// what it cannot commit was never acknowledged and is dropped with a warning.
func (w *wal) close() error {
	w.mu.Lock()
	w.closing = true
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
	<-w.stopped
	w.dbMu.Lock()
	defer w.dbMu.Unlock()
	return w.db.Close()
}

func (w *wal) run() {
	defer close(w.stopped)
	for {
		if len(w.retained) > 0 {
			if stop := w.retryFailed(); stop {
				return
			}
			continue
		}
		w.mu.Lock()
		for len(w.queue) == 0 && !w.closing {
			w.mu.Unlock()
			<-w.wake
			w.mu.Lock()
		}
		if len(w.queue) == 0 {
			w.err = ErrClosed
			w.mu.Unlock()
			return
		}
		batch := w.queue
		w.queue = w.spare[:0]
		w.mu.Unlock()

		if err := w.commit(batch); err != nil {
			w.fail(batch, err)
		} else {
			w.applyDeferred(batch)
			for i := range batch {
				if batch[i].done != nil {
					batch[i].done <- nil
				}
			}
		}
		clear(batch)
		w.spare = batch[:0]
	}
}

// fail handles a failed commit of batch: the WAL enters the failing state,
// the batch's entries are kept as orphans for the retry, and its waiters are
// answered with the failure.
func (w *wal) fail(batch []walEntry, cause error) {
	w.metrics.walCommitFailures.Inc()
	f := w.failure.Load()
	if f == nil {
		f = &walFailure{err: fmt.Errorf("%w: %w", ErrWALFailed, cause), since: time.Now()}
		w.failure.Store(f)
		w.metrics.walFailing.Set(1)
	}
	for i := range batch {
		if batch[i].done == nil {
			// Copied before any waiter is answered: a pusher's samples are its own
			// until its push returns.
			w.retained = append(w.retained, batch[i].orphaned())
		}
	}
	w.logger.Error("wal commit failed: refusing writes until a retry commits", "file", w.path, "err", cause,
		"entries_retained", len(w.retained))
	for i := range batch {
		if batch[i].done != nil {
			batch[i].done <- f.err
		}
	}
}

// absorb takes the queue while the WAL is failing: its data entries join
// held as orphans and its waiters are answered with the failure at once. It
// reports whether close was called.
func (w *wal) absorb() (closing bool) {
	w.mu.Lock()
	q := w.queue
	w.queue = w.spare[:0]
	closing = w.closing
	w.mu.Unlock()
	ferr := w.failed()
	for i := range q {
		if q[i].done != nil {
			q[i].done <- ferr
		} else {
			w.held = append(w.held, q[i].orphaned())
		}
	}
	clear(q)
	w.spare = q[:0]
	return closing
}

// retryFailed retries the retained transaction with doubling backoff until it
// commits, then commits held likewise, then leaves the failing state (false).
// Writes arriving meanwhile are answered with the failure (absorb). Once
// close is called it makes one last attempt and, if that fails too, drops
// the orphans (never acknowledged), answers every waiter with ErrClosed and
// returns true.
func (w *wal) retryFailed() (stop bool) {
	backoff := w.retryMin
	timer := time.NewTimer(backoff)
	defer timer.Stop()
	attempts := 1 // the commit that failed
	lastLog := time.Now()
	for {
		fired := false
		select {
		case <-w.wake:
		case <-timer.C:
			fired = true
		}
		closing := w.absorb()
		if !fired && !closing {
			continue
		}
		var err error
		for {
			attempts++
			if err = w.retry(); err != nil || len(w.held) == 0 {
				break
			}
			// retained is committed; held goes next, as its own transaction.
			w.retained, w.held = w.held, w.retained[:0]
		}
		if err == nil {
			f := w.failure.Swap(nil)
			w.metrics.walFailing.Set(0)
			w.logger.Warn("wal recovered: a retried commit succeeded; accepting writes again", "file", w.path,
				"attempts", attempts, "failing_for", time.Since(f.since).Round(time.Millisecond), "first_err", f.err)
			return false
		}
		w.metrics.walCommitFailures.Inc()
		if closing {
			n := len(w.retained) + len(w.held)
			clear(w.retained)
			clear(w.held)
			w.retained, w.held = w.retained[:0], w.held[:0]
			w.mu.Lock()
			w.err = ErrClosed
			q := w.queue
			w.queue = nil
			w.mu.Unlock()
			for i := range q {
				if q[i].done != nil {
					q[i].done <- ErrClosed
				}
			}
			w.logger.Warn("wal closed while failing: dropping entries that were never committed nor acknowledged",
				"file", w.path, "entries", n, "err", err)
			return true
		}
		if time.Since(lastLog) >= 10*time.Second {
			lastLog = time.Now()
			w.logger.Warn("wal commit retry failed; still refusing writes", "file", w.path, "attempts", attempts,
				"failing_for", time.Since(w.failure.Load().since).Round(time.Second), "err", err)
		}
		backoff = min(2*backoff, w.retryMax)
		timer.Reset(backoff)
	}
}

// retry reopens the bbolt file and commits retained as one transaction: the
// same entries as the failed commit, encoded from the same sequence number,
// so the retry writes the same keys with the same bytes whatever the failed
// commit left behind. On success the deferred applies among them run and
// retained is emptied.
func (w *wal) retry() error {
	if err := w.reopen(); err != nil {
		return err
	}
	if err := w.commit(w.retained); err != nil {
		return err
	}
	w.applyDeferred(w.retained)
	clear(w.retained)
	w.retained = w.retained[:0]
	return nil
}

// reopen closes the bbolt file and opens it again, so that a retry starts
// from what the file holds, as a restart would, whatever state the failed
// commit left bbolt in (bbolt rolls a failed commit back, but a failed mmap
// resize leaves its handle unusable). Nothing is replayed: memory already
// holds exactly the committed records' data plus the retained entries'
// pending, invisible reservations. On an error the handle stays closed
// (bbolt then refuses every transaction with ErrDatabaseNotOpen) until a
// later reopen succeeds.
func (w *wal) reopen() error {
	w.dbMu.Lock()
	defer w.dbMu.Unlock()
	if err := w.db.Close(); err != nil {
		w.logger.Warn("wal: closing the bbolt file before a retry", "file", w.path, "err", err)
	}
	if err := checkBoltFileSize(w.path); err != nil {
		return err
	}
	db, err := openBolt(w.path, w.fsync)
	if err != nil {
		return err
	}
	if err := checkBoltSize(db, w.path); err != nil {
		db.Close()
		return err
	}
	w.db = db
	return nil
}

// commit encodes batch into records and writes them in one transaction.
func (w *wal) commit(batch []walEntry) error {
	if w.encode(batch) == 0 {
		return nil // only waiters: everything before them is already committed
	}
	return w.write()
}

// encode encodes the data entries of batch into records from sequence
// number nextSeq on: their bytes in arena, their extents in spans, their
// keys in keys. It returns the number of records.
func (w *wal) encode(batch []walEntry) int {
	w.arena, w.spans = w.arena[:0], w.spans[:0]
	// Every series entry of the batch goes into one series record, first: a
	// series record may move ahead of other records (invariant 1 only needs it
	// before its own series' samples and chunks), and without it a batch of new
	// series would alternate series and samples/chunks entries, one record each.
	w.series = w.series[:0]
	for i := range batch {
		if batch[i].typ == recSeries {
			w.series = append(w.series, batch[i].series)
		}
	}
	if len(w.series) > 0 {
		w.body = appendSeriesBody(w.body[:0], w.series)
		w.arena = appendRecord(w.arena, w.nextSeq, w.version, recSeries, w.body, &w.zbuf)
		w.spans = append(w.spans, recSpan{start: 0, end: len(w.arena), typ: recSeries})
		clear(w.series) // do not pin labels
	}
	// skip reports entries a samples or chunks record packs across.
	skip := func(typ byte) bool { return typ == 0 || typ == recSeries }
	// (Histograms entries pack like samples entries into their own records, below.)
	for i := 0; i < len(batch); {
		e := &batch[i]
		start := len(w.arena)
		seq := w.nextSeq + uint64(len(w.spans)) // the key this record will get
		switch e.typ {
		case 0, recSeries:
			i++
			continue
		case recSamples:
			// Consecutive samples entries share one record up to maxRecordBytes
			// of body (before compression), encoded into the reused body buffer.
			// The count is written as a fixed 5-byte uvarint (continuation bits
			// set), filled in after the entries: still a valid uvarint, so the
			// decoder needs no special case.
			w.body = append(w.body[:0], 0, 0, 0, 0, 0)
			var enc samplesEncoder
			n := 0
			for ; i < len(batch) && (batch[i].typ == recSamples || skip(batch[i].typ)) && len(w.body) < maxRecordBytes; i++ {
				if batch[i].typ == recSamples {
					if w.version >= recordVersion3 {
						w.body = enc.appendEntry(w.body, batch[i].samples.Ref, batch[i].samples.Samples)
					} else {
						w.body = appendSamplesEntry(w.body, batch[i].samples.Ref, batch[i].samples.Samples)
					}
					n++
				}
			}
			putUvarint5(w.body[:5], uint64(n))
			w.arena = appendRecord(w.arena, seq, w.version, recSamples, w.body, &w.zbuf)
		case recExemplars:
			// Consecutive exemplars entries share one record up to maxRecordBytes, like samples.
			w.body = append(w.body[:0], 0, 0, 0, 0, 0)
			n := 0
			for ; i < len(batch) && (batch[i].typ == recExemplars || skip(batch[i].typ)) && len(w.body) < maxRecordBytes; i++ {
				if batch[i].typ == recExemplars {
					w.body = appendExemplarsEntry(w.body, &batch[i].exemplars)
					n++
				}
			}
			putUvarint5(w.body[:5], uint64(n))
			w.arena = appendRecord(w.arena, seq, w.version, recExemplars, w.body, &w.zbuf)
		case recChunks:
			// Consecutive chunks entries (one group per imported series) share
			// one record up to maxRecordBytes, like samples.
			w.body = append(w.body[:0], 0, 0, 0, 0, 0)
			n := 0
			for ; i < len(batch) && (batch[i].typ == recChunks || skip(batch[i].typ)) && len(w.body) < maxRecordBytes; i++ {
				if batch[i].typ == recChunks {
					sc := &batch[i].chunks
					w.body = appendChunksGroup(w.body, sc.Ref, sc.LastV, sc.Chunks)
					n++
				}
			}
			putUvarint5(w.body[:5], uint64(n))
			w.arena = appendRecord(w.arena, seq, w.version, recChunks, w.body, &w.zbuf)
		case recHistograms:
			w.body = append(w.body[:0], 0, 0, 0, 0, 0)
			n := 0
			for ; i < len(batch) && (batch[i].typ == recHistograms || skip(batch[i].typ)) && len(w.body) < maxRecordBytes; i++ {
				if batch[i].typ == recHistograms {
					w.body = appendHistogramsEntry(w.body, batch[i].hists.Ref, batch[i].hists.Histograms)
					n++
				}
			}
			putUvarint5(w.body[:5], uint64(n))
			w.arena = appendRecord(w.arena, seq, recordVersion3, recHistograms, w.body, &w.zbuf)
		default:
			panic(fmt.Sprintf("memstore: WAL entry of type %d", e.typ)) // broken internal invariant
		}
		w.spans = append(w.spans, recSpan{start: start, end: len(w.arena), typ: e.typ})
	}
	w.keys = w.keys[:0]
	seq := w.nextSeq
	for range w.spans {
		w.keys = binary.BigEndian.AppendUint64(w.keys, seq)
		seq++
	}
	return len(w.spans)
}

// write commits the records encode left in arena, spans and keys in one
// bbolt transaction.
func (w *wal) write() error {
	seq := w.nextSeq + uint64(len(w.spans))
	if w.beforeCommit != nil {
		w.beforeCommit()
	}
	begin := time.Now()
	hasExt := false
	for _, sp := range w.spans {
		hasExt = hasExt || extendedType(sp.typ)
	}
	var err error
	if w.injectFault != nil {
		err = w.injectFault()
	}
	if err == nil {
		err = w.db.Update(func(tx *bolt.Tx) error {
			b := tx.Bucket(bucketWAL)
			if b == nil {
				return fmt.Errorf("bucket %q missing", bucketWAL)
			}
			b.FillPercent = 1.0 // keys only ever grow: pack leaves full
			if !w.extFormat && hasExt {
				meta := tx.Bucket(bucketMeta)
				if meta == nil {
					return fmt.Errorf("bucket %q missing", bucketMeta)
				}
				if err := meta.Put(keyFormat, []byte{walFormatExtended}); err != nil {
					return err
				}
			}
			for i, sp := range w.spans {
				if err := b.Put(w.keys[i*8:i*8+8], w.arena[sp.start:sp.end]); err != nil {
					return err
				}
			}
			return nil
		})
	}
	if err != nil {
		return fmt.Errorf("committing %d records from seq %d to %s: %w", len(w.spans), w.nextSeq, w.path, err)
	}
	w.metrics.walCommitDuration.Observe(time.Since(begin).Seconds())
	w.extFormat = w.extFormat || hasExt
	w.commits.Add(1)
	w.nextSeq = seq
	w.lastSeq.Store(seq - 1)
	for _, sp := range w.spans {
		w.metrics.walRecords.WithLabelValues(recordTypeName(sp.typ)).Inc()
	}
	w.metrics.walBytes.Add(float64(len(w.arena)))
	// The commit read the B+tree's right edge (branch pages, the last leaf and
	// the records it copies when it rewrites that leaf) through bbolt's
	// mapping; without a release every page of the file ends up resident.
	w.unreleased += int64(len(w.arena))
	if w.unreleased >= w.releaseEvery {
		w.unreleased = 0
		w.releaseMapped(w.db)
	}
	if cap(w.arena) > 16<<20 {
		w.arena = nil // do not pin a huge buffer after a burst
	}
	if cap(w.body) > 16<<20 {
		w.body, w.zbuf = nil, nil
	}
	return nil
}

// releaseMappedView is releaseMapped for callers other than the committer
// (replay, Truncate's rewrite, DropAll): after they read much of the file.
func (w *wal) releaseMappedView() {
	w.dbMu.RLock()
	defer w.dbMu.RUnlock()
	w.releaseMapped(w.db)
}

// update runs fn in a write transaction for a caller other than the
// committer (replay's cut, Truncate, DropAll), holding dbMu for reading so
// that the committer cannot reopen the file underneath it.
func (w *wal) update(fn func(*bolt.Tx) error) error {
	w.dbMu.RLock()
	defer w.dbMu.RUnlock()
	return w.db.Update(fn)
}

// view is update's read-only twin.
func (w *wal) view(fn func(*bolt.Tx) error) error {
	w.dbMu.RLock()
	defer w.dbMu.RUnlock()
	return w.db.View(fn)
}

// putUvarint5 writes v < 2^35 as exactly 5 uvarint bytes.
func putUvarint5(b []byte, v uint64) {
	for i := range 4 {
		b[i] = byte(v) | 0x80
		v >>= 7
	}
	b[4] = byte(v)
}

// replayRecord is one record on its way through replay: read by the
// cursor goroutine, decoded by a decode worker, handed in key order to the
// visitor, then reused. Reference counted: the visitor holds one reference
// while it runs and may retain more for asynchronous users (the Store's
// apply workers); each holder releases once, and at zero the record goes
// back to the free list for the next key.
type replayRecord struct {
	rec   record
	seq   uint64
	raw   []byte // the bbolt value (mmap, valid during the read transaction)
	err   error  // decode error: this record is corrupt
	fault any    // a panic or memory fault while reading raw: the file is damaged
	ready chan struct{}
	refs  atomic.Int32
	free  chan *replayRecord

	// parts is the visitor's per-worker scratch (the Store's replay
	// routing), reused with the record.
	parts []replayPart
}

// retain takes n more references to r.
func (r *replayRecord) retain(n int) { r.refs.Add(int32(n)) }

// release drops one reference; the last one returns r to the free list.
func (r *replayRecord) release() {
	if r.refs.Add(-1) == 0 {
		r.free <- r // never blocks: the channel holds every record
	}
}

// replayVisitor receives each decoded record, in key order, holding one
// reference to it that replay releases when the visitor returns.
type replayVisitor func(r *replayRecord) error

// replayInFlight is how many records replay reads ahead of the visitor per
// decode worker; it bounds replay's memory (a record decodes to at most a
// few hundred KiB) while keeping every worker busy.
const replayInFlight = 8

// replay calls fn for every record in key order, decoding records on
// `workers` goroutines ahead of it (decoding — checksum, decompression,
// varints — is independent per record; only the visitor's order matters).
// On the first record that fails to decode it stops, deletes that record
// and every later one, and returns the CorruptionError (after a successful
// cut) alongside the next unused sequence number. A non-CorruptionError
// error means the WAL could not be read at all.
func (w *wal) replay(workers int, fn replayVisitor) (nextSeq uint64, corrupt *CorruptionError, err error) {
	workers = max(workers, 1)
	total := workers * replayInFlight
	free := make(chan *replayRecord, total)
	for range total {
		free <- &replayRecord{ready: make(chan struct{}, 1), free: free}
	}
	err = catchBoltPanic(w.path, func() error {
		return w.view(func(tx *bolt.Tx) error {
			// The cursor goroutine reads keys in order and hands each value to a
			// decode worker and, in the same order, to this goroutine (ordered);
			// stop ends it early. Every goroutine that reads bbolt's mmap
			// (cursor, decoders) has exited before View returns: wg.
			ordered := make(chan *replayRecord, total)
			jobs := make(chan *replayRecord, total)
			stop := make(chan struct{})
			var wg sync.WaitGroup
			var badKey *CorruptionError
			var readPanic atomic.Value
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer close(ordered)
				defer close(jobs)
				defer func() {
					if p := recover(); p != nil {
						readPanic.Store(fmt.Sprint(p))
					}
				}()
				old := debug.SetPanicOnFault(true)
				defer debug.SetPanicOnFault(old)
				c := tx.Bucket(bucketWAL).Cursor()
				for k, v := c.First(); k != nil; k, v = c.Next() {
					if len(k) != 8 {
						badKey = &CorruptionError{File: w.path, Bucket: string(bucketWAL),
							Err: fmt.Errorf("%w: key %x is not an 8-byte sequence number", ErrCorruptRecord, k)}
						return
					}
					var r *replayRecord
					select {
					case r = <-free:
					case <-stop:
						return
					}
					r.seq, r.raw, r.err, r.fault = binary.BigEndian.Uint64(k), v, nil, nil
					r.refs.Store(1)
					jobs <- r
					ordered <- r
				}
			}()
			for range workers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					old := debug.SetPanicOnFault(true)
					defer debug.SetPanicOnFault(old)
					for r := range jobs {
						// decodeRecord never panics on any input; a panic here is a
						// fault reading bbolt's mmap (a damaged or truncated file),
						// which fails the replay with the file untouched, as a fault
						// in bbolt's own reads does.
						func() {
							defer func() { r.fault = recover() }()
							r.err = decodeRecord(r.seq, r.raw, &r.rec)
						}()
						r.raw = nil
						r.ready <- struct{}{}
					}
				}()
			}
			var ferr error
			for r := range ordered {
				<-r.ready
				if ferr == nil && corrupt == nil {
					if r.fault != nil {
						ferr = fmt.Errorf("memstore: WAL file %s is damaged: reading record seq %d failed: %v (the file was left untouched; move it away to start with an empty WAL)", w.path, r.seq, r.fault)
						close(stop)
					} else if r.err != nil {
						corrupt = &CorruptionError{File: w.path, Bucket: string(bucketWAL), Seq: r.seq, Err: r.err}
						close(stop)
					} else if ferr = fn(r); ferr != nil {
						close(stop)
					} else {
						nextSeq = r.seq + 1
					}
				}
				r.release()
			}
			wg.Wait()
			if p := readPanic.Load(); p != nil {
				return fmt.Errorf("memstore: WAL file %s is damaged: bbolt failed reading it: %v (the file was left untouched; move it away to start with an empty WAL)", w.path, p)
			}
			if corrupt == nil && ferr == nil && badKey != nil {
				badKey.Seq = nextSeq
				badKey.Err = fmt.Errorf("%w (after seq %d)", badKey.Err, nextSeq)
				corrupt = badKey
			}
			return ferr
		})
	})
	// Replay read every record through the mapping.
	w.releaseMappedView()
	if err != nil {
		return 0, nil, err
	}
	if corrupt == nil {
		return max(nextSeq, 1), nil, nil
	}
	// Cut the tail: a record after a damaged one may depend on it (a series
	// record), and Prometheus' WAL repair does the same.
	var cut int
	err = catchBoltPanic(w.path, func() error {
		return w.update(func(tx *bolt.Tx) error {
			b := tx.Bucket(bucketWAL)
			var dels [][]byte
			c := b.Cursor()
			from := binary.BigEndian.AppendUint64(nil, nextSeq)
			for k, _ := c.Seek(from); k != nil; k, _ = c.Next() {
				if bytes.Compare(k, from) >= 0 {
					dels = append(dels, bytes.Clone(k))
				}
			}
			for _, k := range dels {
				if err := b.Delete(k); err != nil {
					return err
				}
			}
			cut = len(dels)
			return nil
		})
	})
	if err != nil {
		return 0, corrupt, fmt.Errorf("memstore: cutting corrupt WAL tail of %s: %w", w.path, err)
	}
	w.logger.Warn("wal corruption: deleted the corrupt record and everything after it", "file", w.path,
		"bucket", corrupt.Bucket, "seq", corrupt.Seq, "records_deleted", cut, "err", corrupt.Err)
	return max(nextSeq, corrupt.Seq+uint64(cut)+1, 1), corrupt, nil
}

// rewrite filters every record with seq <= upto through keep, in
// transactions of truncateBatch records: keep returns drop=true to delete the
// record, or changed=true after modifying r in place to rewrite it under the
// same key (so order is preserved). Each transaction is atomic and filtering
// is idempotent, so a crash midway leaves a valid, partially truncated WAL.
func (w *wal) rewrite(upto uint64, keep func(r *record) (changed, drop bool)) (deleted, rewritten int, err error) {
	var r record
	var buf []byte
	from := binary.BigEndian.AppendUint64(nil, 1)
	for done := false; !done; {
		err = catchBoltPanic(w.path, func() error {
			return w.update(func(tx *bolt.Tx) error {
				b := tx.Bucket(bucketWAL)
				type put struct{ k, v []byte }
				var dels [][]byte
				var puts []put
				c := b.Cursor()
				n := 0
				k, v := c.Seek(from)
				for ; k != nil && n < truncateBatch; k, v = c.Next() {
					if len(k) != 8 || binary.BigEndian.Uint64(k) > upto {
						done = true
						break
					}
					n++
					seq := binary.BigEndian.Uint64(k)
					if err := decodeRecord(seq, v, &r); err != nil {
						// Replay cut corrupt records on open; one found now is new damage:
						// leave it for the next replay to report.
						w.logger.Warn("wal truncation skipped a corrupt record", "file", w.path, "seq", seq, "err", err)
						continue
					}
					r.seq = seq
					changed, drop := keep(&r)
					switch {
					case drop:
						dels = append(dels, bytes.Clone(k))
					case changed:
						buf = encodeRecord(buf[:0], seq, &r)
						puts = append(puts, put{bytes.Clone(k), bytes.Clone(buf)})
					}
				}
				if k == nil {
					done = true
				} else if !done {
					from = bytes.Clone(k)
				}
				for _, k := range dels {
					if err := b.Delete(k); err != nil {
						return err
					}
				}
				for _, p := range puts {
					if err := b.Put(p.k, p.v); err != nil {
						return err
					}
				}
				deleted += len(dels)
				rewritten += len(puts)
				return nil
			})
		})
		if err != nil {
			return deleted, rewritten, fmt.Errorf("memstore: truncating WAL %s: %w", w.path, err)
		}
		// The transaction read up to truncateBatch records through the mapping.
		w.releaseMappedView()
	}
	return deleted, rewritten, nil
}

// dropAll deletes every record with seq <= upto in one transaction: the
// bucket is deleted and created again, and the records after upto (committed
// since the caller read it) are copied into the new one. bbolt frees the old
// bucket's pages without the records being read or decoded.
func (w *wal) dropAll(upto uint64) (deleted int, err error) {
	err = catchBoltPanic(w.path, func() error {
		return w.update(func(tx *bolt.Tx) error {
			type kv struct{ k, v []byte }
			var keep []kv
			c := tx.Bucket(bucketWAL).Cursor()
			from := binary.BigEndian.AppendUint64(nil, upto+1)
			for k, v := c.First(); k != nil; k, v = c.Next() {
				if bytes.Compare(k, from) >= 0 {
					keep = append(keep, kv{bytes.Clone(k), bytes.Clone(v)})
				} else {
					deleted++
				}
			}
			if err := tx.DeleteBucket(bucketWAL); err != nil {
				return err
			}
			b, err := tx.CreateBucket(bucketWAL)
			if err != nil {
				return err
			}
			b.FillPercent = 1.0
			for _, e := range keep {
				if err := b.Put(e.k, e.v); err != nil {
					return err
				}
			}
			return nil
		})
	})
	if err != nil {
		return 0, fmt.Errorf("memstore: emptying WAL %s: %w", w.path, err)
	}
	w.releaseMappedView() // the records after upto were read and copied
	return deleted, nil
}

// newSeriesEntry is the queue entry of a new series' record.
func newSeriesEntry(ref uint64, tenant string, lset labels.Labels) walEntry {
	return walEntry{typ: recSeries, series: walSeries{Ref: ref, Tenant: tenant, Labels: lset}}
}
