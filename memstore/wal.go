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
// carry their own version byte. Format 1 files (records of version 1 only)
// are upgraded to format 2 when opened: their records stay readable, and an
// older build then refuses the file instead of cutting version 2 records as
// a corrupt tail.
const walFormatVersion = 2

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
	// ErrWALFailed is returned by every write after a WAL commit failed: the
	// WAL may then miss records that later ones depend on, so the Store stops
	// acknowledging writes until it is reopened.
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
// outcome of the commit that covers every entry queued before it.
type walEntry struct {
	typ     byte
	series  walSeries
	samples walSamples
	chunks  walSeriesChunks
	done    chan error
}

// wal is the bbolt write-ahead log with a group-committing goroutine.
//
// Writers call enqueue (any goroutine, any time, in the order their records
// must be logged) and then wait on a waiter entry. The committer takes the
// whole queue, writes it as one bbolt transaction (one fsync), then signals
// the waiters in that batch. Entries are committed in queue order, and a
// waiter is signalled only after every entry queued before it is committed.
type wal struct {
	db      *bolt.DB
	path    string
	logger  *slog.Logger
	metrics *metrics

	mu      sync.Mutex
	queue   []walEntry
	err     error // Sticky: first commit failure, or ErrClosed after close.
	closing bool
	wake    chan struct{}
	stopped chan struct{}

	// Owned by the committer goroutine.
	spare   []walEntry
	series  []walSeries
	arena   []byte
	keys    []byte
	spans   []recSpan
	nextSeq uint64

	// lastSeq is the newest committed sequence number.
	lastSeq atomic.Uint64
	// commits counts committed write transactions (fsyncs when syncing); used by tests.
	commits atomic.Uint64

	// beforeCommit, when set (tests only, before the first write), runs in the
	// committer before each write transaction.
	beforeCommit func()
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
	err = catchBoltPanic(path, func() error {
		return db.Update(func(tx *bolt.Tx) error {
			meta, err := tx.CreateBucketIfNotExists(bucketMeta)
			if err != nil {
				return err
			}
			v := meta.Get(keyFormat)
			switch {
			case v == nil || (len(v) == 1 && v[0] == 1):
				// New file, or format 1: upgrade (see walFormatVersion).
				if err := meta.Put(keyFormat, []byte{walFormatVersion}); err != nil {
					return err
				}
			case len(v) != 1 || v[0] != walFormatVersion:
				return fmt.Errorf("%w: file format %v, this build reads formats 1 and %d", ErrUnknownRecordVersion, v, walFormatVersion)
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
		db: db, path: path, logger: logger, metrics: m,
		wake: make(chan struct{}, 1), stopped: make(chan struct{}),
	}, nil
}

const compactSuffix = ".compact"

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

// enqueue appends e to the commit queue. Callers that need a per-series
// order must call enqueue in that order (they do so under the series lock).
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

// sync waits until every entry enqueued before the call is committed.
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
// and closes the bbolt file.
func (w *wal) close() error {
	w.mu.Lock()
	w.closing = true
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
	<-w.stopped
	return w.db.Close()
}

func (w *wal) run() {
	defer close(w.stopped)
	for {
		w.mu.Lock()
		for len(w.queue) == 0 && !w.closing {
			w.mu.Unlock()
			<-w.wake
			w.mu.Lock()
		}
		if len(w.queue) == 0 {
			if w.err == nil {
				w.err = ErrClosed
			}
			w.mu.Unlock()
			return
		}
		batch := w.queue
		w.queue = w.spare[:0]
		err := w.err
		w.mu.Unlock()

		if err == nil {
			if err = w.commit(batch); err != nil {
				w.metrics.walCommitFailures.Inc()
				w.logger.Error("wal commit failed; refusing writes until reopened", "file", w.path, "err", err)
				err = fmt.Errorf("%w: %w", ErrWALFailed, err)
				w.mu.Lock()
				w.err = err
				w.mu.Unlock()
			}
		}
		for i := range batch {
			if batch[i].done != nil {
				batch[i].done <- err
			}
		}
		clear(batch)
		w.spare = batch[:0]
	}
}

// commit encodes batch into records and writes them in one transaction.
func (w *wal) commit(batch []walEntry) error {
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
		w.arena = appendSeriesRecord(w.arena, w.nextSeq, w.series)
		w.spans = append(w.spans, recSpan{start: 0, end: len(w.arena), typ: recSeries})
		clear(w.series) // do not pin labels
	}
	// skip reports entries a samples or chunks record packs across.
	skip := func(typ byte) bool { return typ == 0 || typ == recSeries }
	for i := 0; i < len(batch); {
		e := &batch[i]
		start := len(w.arena)
		seq := w.nextSeq + uint64(len(w.spans)) // the key this record will get
		switch e.typ {
		case 0, recSeries:
			i++
			continue
		case recSamples:
			// Consecutive samples entries share one record up to maxRecordBytes;
			// encoded in place to avoid building a []walSamples.
			w.arena = append(w.arena, recordVersion, recSamples)
			countAt := len(w.arena)
			w.arena = append(w.arena, 0, 0, 0, 0, 0) // room for a uvarint count < 2^35
			n := 0
			for ; i < len(batch) && (batch[i].typ == recSamples || skip(batch[i].typ)) && len(w.arena)-start < maxRecordBytes; i++ {
				if batch[i].typ == recSamples {
					w.arena = appendSamplesEntry(w.arena, batch[i].samples.Ref, batch[i].samples.Samples)
					n++
				}
			}
			// Write the count as a fixed 5-byte uvarint (continuation bits set):
			// still a valid uvarint, so the decoder needs no special case.
			putUvarint5(w.arena[countAt:countAt+5], uint64(n))
			w.arena = finishRecord(w.arena, start, seq)
		case recChunks:
			// Consecutive chunks entries (one group per imported series) share
			// one record up to maxRecordBytes, encoded in place like samples.
			w.arena = append(w.arena, recordVersion, recChunks)
			countAt := len(w.arena)
			w.arena = append(w.arena, 0, 0, 0, 0, 0)
			n := 0
			for ; i < len(batch) && (batch[i].typ == recChunks || skip(batch[i].typ)) && len(w.arena)-start < maxRecordBytes; i++ {
				if batch[i].typ == recChunks {
					sc := &batch[i].chunks
					w.arena = appendChunksGroup(w.arena, sc.Ref, sc.LastV, sc.Chunks)
					n++
				}
			}
			putUvarint5(w.arena[countAt:countAt+5], uint64(n))
			w.arena = finishRecord(w.arena, start, seq)
		default:
			panic(fmt.Sprintf("memstore: WAL entry of type %d", e.typ)) // broken internal invariant
		}
		w.spans = append(w.spans, recSpan{start: start, end: len(w.arena), typ: e.typ})
	}
	if len(w.spans) == 0 {
		return nil // only waiters: everything before them is already committed
	}
	w.keys = w.keys[:0]
	seq := w.nextSeq
	for range w.spans {
		w.keys = binary.BigEndian.AppendUint64(w.keys, seq)
		seq++
	}
	if w.beforeCommit != nil {
		w.beforeCommit()
	}
	begin := time.Now()
	err := w.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketWAL)
		b.FillPercent = 1.0 // keys only ever grow: pack leaves full
		for i, sp := range w.spans {
			if err := b.Put(w.keys[i*8:i*8+8], w.arena[sp.start:sp.end]); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	w.metrics.walCommitDuration.Observe(time.Since(begin).Seconds())
	w.commits.Add(1)
	w.nextSeq = seq
	w.lastSeq.Store(seq - 1)
	for _, sp := range w.spans {
		w.metrics.walRecords.WithLabelValues(recordTypeName(sp.typ)).Inc()
	}
	w.metrics.walBytes.Add(float64(len(w.arena)))
	if cap(w.arena) > 16<<20 {
		w.arena = nil // do not pin a huge buffer after a burst
	}
	return nil
}

// putUvarint5 writes v < 2^35 as exactly 5 uvarint bytes.
func putUvarint5(b []byte, v uint64) {
	for i := range 4 {
		b[i] = byte(v) | 0x80
		v >>= 7
	}
	b[4] = byte(v)
}

// replayVisitor receives each decoded record; r is reused across calls.
type replayVisitor func(seq uint64, r *record) error

// replay calls fn for every record in key order. On the first record that
// fails to decode it stops, deletes that record and every later one, and
// returns the CorruptionError (after a successful cut) alongside the next
// unused sequence number. A non-CorruptionError error means the WAL could
// not be read at all.
func (w *wal) replay(fn replayVisitor) (nextSeq uint64, corrupt *CorruptionError, err error) {
	var r record
	err = catchBoltPanic(w.path, func() error {
		return w.db.View(func(tx *bolt.Tx) error {
			c := tx.Bucket(bucketWAL).Cursor()
			for k, v := c.First(); k != nil; k, v = c.Next() {
				if len(k) != 8 {
					corrupt = &CorruptionError{File: w.path, Bucket: string(bucketWAL), Seq: nextSeq,
						Err: fmt.Errorf("%w: key %x is not an 8-byte sequence number (after seq %d)", ErrCorruptRecord, k, nextSeq)}
					return nil
				}
				seq := binary.BigEndian.Uint64(k)
				if err := decodeRecord(seq, v, &r); err != nil {
					corrupt = &CorruptionError{File: w.path, Bucket: string(bucketWAL), Seq: seq, Err: err}
					return nil
				}
				if err := fn(seq, &r); err != nil {
					return err
				}
				nextSeq = seq + 1
			}
			return nil
		})
	})
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
		return w.db.Update(func(tx *bolt.Tx) error {
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
			return w.db.Update(func(tx *bolt.Tx) error {
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
	}
	return deleted, rewritten, nil
}

// dropAll deletes every record with seq <= upto in one transaction: the
// bucket is deleted and created again, and the records after upto (committed
// since the caller read it) are copied into the new one. bbolt frees the old
// bucket's pages without the records being read or decoded.
func (w *wal) dropAll(upto uint64) (deleted int, err error) {
	err = catchBoltPanic(w.path, func() error {
		return w.db.Update(func(tx *bolt.Tx) error {
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
	return deleted, nil
}

// newSeriesEntry is the queue entry of a new series' record.
func newSeriesEntry(ref uint64, tenant string, lset labels.Labels) walEntry {
	return walEntry{typ: recSeries, series: walSeries{Ref: ref, Tenant: tenant, Labels: lset}}
}
