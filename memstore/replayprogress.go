package memstore

import (
	"encoding/binary"
	"fmt"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
)

// ReplayTracker follows the WAL replay of one Open while it runs, for readiness checks and logs:
// Open blocks until the replay is over, and a large WAL takes tens of seconds, during which an
// operator otherwise sees nothing. The caller makes one, passes it as Config.ReplayTracker and reads
// Progress from any goroutine. The zero value is ready to use.
//
// Progress is counted in WAL sequence numbers: the records of the WAL are keyed by consecutive
// sequence numbers from the first kept one (older ones are gone after a truncation), so the
// position of the record being replayed in [first, last] is how far the replay has come. Records
// differ in size, so the fraction is an estimate of the time left, not an exact one.
type ReplayTracker struct {
	state    atomic.Int32 // replayNotStarted, replayRunning, replayDone
	startNs  atomic.Int64
	endNs    atomic.Int64
	firstSeq atomic.Uint64
	lastSeq  atomic.Uint64
	seq      atomic.Uint64 // the last record handed to the replay
	records  atomic.Int64
}

const (
	replayNotStarted int32 = iota
	replayRunning
	replayDone
)

// ReplayProgress is a ReplayTracker's reading.
type ReplayProgress struct {
	// Running is true from the start of the replay until it has rebuilt memory; Done once it has.
	// Both are false before the replay starts (and for a store without a WAL, forever).
	Running, Done bool
	// FirstSeq and LastSeq are the sequence numbers of the WAL's first and last record when the
	// replay started (both 0 for an empty WAL); Seq is that of the last record replayed.
	FirstSeq, LastSeq, Seq uint64
	// Records is the number of records replayed so far.
	Records int64
	// Elapsed is the time since the replay started (its whole duration once Done).
	Elapsed time.Duration
}

// Fraction is how far the replay has come, in [0, 1]: 1 once it is done or when the WAL is empty.
func (p ReplayProgress) Fraction() float64 {
	if p.Done || p.LastSeq < p.FirstSeq || p.LastSeq == 0 {
		return 1
	}
	if !p.Running || p.Seq < p.FirstSeq {
		return 0
	}
	return min(1, float64(p.Seq-p.FirstSeq+1)/float64(p.LastSeq-p.FirstSeq+1))
}

// ETA estimates the time left from the rate so far; 0 when done or when nothing is known yet.
func (p ReplayProgress) ETA() time.Duration {
	f := p.Fraction()
	if !p.Running || f <= 0 || f >= 1 {
		return 0
	}
	return time.Duration(float64(p.Elapsed) * (1 - f) / f)
}

// Describe is the progress in one line for logs and /ready, such as
// "replaying the WAL: 41% (record 120345 of 118001..405002, 2301 replayed), 12s elapsed, ETA 17s".
func (p ReplayProgress) Describe() string {
	switch {
	case p.Done:
		return fmt.Sprintf("WAL replayed: %d records in %s", p.Records, p.Elapsed.Round(time.Millisecond))
	case !p.Running:
		return "opening the WAL"
	case p.LastSeq == 0:
		return "replaying the WAL: it is empty"
	}
	s := fmt.Sprintf("replaying the WAL: %.0f%% (record %d of %d..%d, %d replayed), %s elapsed",
		100*p.Fraction(), p.Seq, p.FirstSeq, p.LastSeq, p.Records, p.Elapsed.Round(time.Second))
	if eta := p.ETA(); eta > 0 {
		s += fmt.Sprintf(", ETA %s", eta.Round(time.Second))
	}
	return s
}

// Progress reads the tracker. Safe for concurrent use with the replay; a nil tracker reads as
// not started.
func (t *ReplayTracker) Progress() ReplayProgress {
	if t == nil {
		return ReplayProgress{}
	}
	st := t.state.Load()
	p := ReplayProgress{Running: st == replayRunning, Done: st == replayDone,
		FirstSeq: t.firstSeq.Load(), LastSeq: t.lastSeq.Load(), Seq: t.seq.Load(), Records: t.records.Load()}
	if st != replayNotStarted {
		end := time.Now().UnixNano()
		if st == replayDone {
			end = t.endNs.Load()
		}
		p.Elapsed = time.Duration(end - t.startNs.Load())
	}
	return p
}

func (t *ReplayTracker) start(first, last uint64, now time.Time) {
	if t == nil {
		return
	}
	t.firstSeq.Store(first)
	t.lastSeq.Store(last)
	t.startNs.Store(now.UnixNano())
	t.state.Store(replayRunning)
}

func (t *ReplayTracker) advance(seq uint64, records int64) {
	if t == nil {
		return
	}
	t.seq.Store(seq)
	t.records.Store(records)
}

func (t *ReplayTracker) finish(now time.Time) {
	if t == nil {
		return
	}
	t.endNs.Store(now.UnixNano())
	t.state.Store(replayDone)
}

// seqRange returns the sequence numbers of the WAL's first and last records (0, 0 when it has
// none). Two cursor seeks: cheap next to the replay it sizes.
func (w *wal) seqRange() (first, last uint64, err error) {
	err = catchBoltPanic(w.path, func() error {
		return w.view(func(tx *bolt.Tx) error {
			c := tx.Bucket(bucketWAL).Cursor()
			if k, _ := c.First(); len(k) == 8 {
				first = binary.BigEndian.Uint64(k)
			}
			if k, _ := c.Last(); len(k) == 8 {
				last = binary.BigEndian.Uint64(k)
			}
			return nil
		})
	})
	return first, last, err
}
