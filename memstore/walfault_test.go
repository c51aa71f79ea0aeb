package memstore

import (
	"errors"
	"fmt"
	"maps"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/prometheus/model/labels"
	bolt "go.etcd.io/bbolt"

	"github.com/raftingest/raftingest/internal/tmpfs"
)

// Tests of the WAL's failing state: a commit that fails (ENOSPC, EIO) is never acknowledged,
// the Store refuses writes while the WAL fails, reads go on, and the WAL recovers by itself
// when a retry commits. The fault is injected in the committer (wal.injectFault) here; the
// real thing — bbolt on a full tmpfs — is TestWALFailure_FullTmpfs.

// faultSwitch is an injectable commit fault that tests turn on and off.
type faultSwitch struct{ err atomic.Pointer[error] }

func (f *faultSwitch) set(err error) {
	if err == nil {
		f.err.Store(nil)
		return
	}
	f.err.Store(&err)
}

func (f *faultSwitch) inject() error {
	if p := f.err.Load(); p != nil {
		return *p
	}
	return nil
}

// openFaulty opens a Store whose commits fail while the returned switch is on, with a short
// retry backoff. The fields are set before the first write, so the committer sees them.
func openFaulty(t testing.TB, cfg Config, reg prometheus.Registerer) (*Store, *faultSwitch) {
	t.Helper()
	st, err := Open(cfg, reg, testLogger())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	f := &faultSwitch{}
	st.wal.injectFault = f.inject
	st.wal.retryMin, st.wal.retryMax = time.Millisecond, 20*time.Millisecond
	return st, f
}

func enospc(path string) error {
	return &os.PathError{Op: "write", Path: path, Err: syscall.ENOSPC}
}

// waitWALHealthy polls WALError with a deadline.
func waitWALHealthy(t testing.TB, st *Store) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); st.WALError() != nil; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the WAL did not recover: %v", st.WALError())
		}
	}
}

func gaugeValue(t testing.TB, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	t.Fatalf("metric %s not registered", name)
	return 0
}

// requireNothingPending fails if a series of st still has reserved, invisible ops: after a
// recovery every orphan must have been committed and made visible.
func requireNothingPending(t testing.TB, st *Store) {
	t.Helper()
	for _, name := range st.Tenants() {
		st.tenant(name).series.forEach(func(ms *memSeries) bool {
			ms.mu.Lock()
			p := ms.hasPending()
			ms.mu.Unlock()
			if p {
				t.Errorf("tenant %s series %s has pending ops after recovery", name, ms.lset)
			}
			return true
		})
	}
}

// TestWALFailure_RefusesThenRecoversByItself: a failed commit answers the push with
// ErrWALFailed naming the cause and nothing of it becomes visible; while failing the Store
// refuses pushes and imports at once, WALError and raftingest_wal_failing say so, and reads go
// on; once the fault is gone a retry commits without any call from outside, the failed push's
// samples (committed by the retry) become visible, writes are accepted again, and a restart
// replays exactly what memory holds.
func TestWALFailure_RefusesThenRecoversByItself(t *testing.T) {
	dir := t.TempDir()
	reg := prometheus.NewRegistry()
	st, fault := openFaulty(t, testConfig(dir), reg)
	a, b, c := labels.FromStrings("__name__", "a"), labels.FromStrings("__name__", "b"), labels.FromStrings("__name__", "c")
	mustPush(t, st, "u", ser(a, Sample{1, 1}))

	fault.set(enospc(filepath.Join(dir, WALFileName)))
	_, err := st.Push("u", []SeriesSamples{ser(a, Sample{2, 2}), ser(b, Sample{1, 10})})
	if !errors.Is(err, ErrWALFailed) || !errors.Is(err, syscall.ENOSPC) || !strings.Contains(err.Error(), WALFileName) {
		t.Fatalf("push during a failing commit: %v, want ErrWALFailed wrapping ENOSPC and naming the file", err)
	}
	if werr := st.WALError(); !errors.Is(werr, ErrWALFailed) || !errors.Is(werr, syscall.ENOSPC) {
		t.Fatalf("WALError = %v, want the failure", werr)
	}
	if g := gaugeValue(t, reg, "raftingest_wal_failing"); g != 1 {
		t.Fatalf("raftingest_wal_failing = %v while failing, want 1", g)
	}
	// Reads go on, and show nothing of the failed push.
	if got := dump(t, st); len(got) != 1 || !samplesEqual(got["u/"+a.String()], []Sample{{1, 1}}) {
		t.Fatalf("memory while failing: %v, want only a@1", got)
	}
	// Refused at once, before anything is reserved.
	if _, err := st.Push("u", []SeriesSamples{ser(c, Sample{5, 5}), ser(a, Sample{3, 3})}); !errors.Is(err, ErrWALFailed) {
		t.Fatalf("push while failing: %v, want ErrWALFailed", err)
	}
	if err := st.ImportChunks("u", c, []Chunk{{MinTime: 7, MaxTime: 7, Encoding: 1, Data: xorChunk(Sample{7, 7})}}); !errors.Is(err, ErrWALFailed) {
		t.Fatalf("import while failing: %v, want ErrWALFailed", err)
	}
	if st.Stats("u").Series != 2 { // a, and b created by the failed push (its series record is retained)
		t.Fatalf("series %d, want 2: a push refused while failing must not create series", st.Stats("u").Series)
	}

	fault.set(nil)
	waitWALHealthy(t, st)
	if g := gaugeValue(t, reg, "raftingest_wal_failing"); g != 0 {
		t.Fatalf("raftingest_wal_failing = %v after recovery, want 0", g)
	}
	want := map[string][]Sample{
		"u/" + a.String(): {{1, 1}, {2, 2}},
		"u/" + b.String(): {{1, 10}},
	}
	requireSameData(t, want, dump(t, st))
	requireNothingPending(t, st)
	// Writes are accepted again; the client's retry of the failed push is idempotent.
	res := mustPush(t, st, "u", ser(a, Sample{2, 2}, Sample{4, 4}), ser(b, Sample{1, 10}))
	if res.Accepted != 3 || res.Duplicates != 2 {
		t.Fatalf("retry after recovery: %+v, want 3 accepted, 2 of them duplicates", res)
	}
	want["u/"+a.String()] = append(want["u/"+a.String()], Sample{4, 4})
	requireSameData(t, want, dump(t, st))
	st.Close()
	requireSameData(t, want, dump(t, mustOpen(t, testConfig(dir))))
}

// TestWALFailure_OrphanSamplesAreCopied: the pusher's sample buffer is its own again as soon as
// its push returns, even with an error, while the WAL still holds the entry for a retry: the
// retry must log (and memory show) the values pushed, not what the buffer holds by then.
func TestWALFailure_OrphanSamplesAreCopied(t *testing.T) {
	dir := t.TempDir()
	st, fault := openFaulty(t, testConfig(dir), nil)
	lset := labels.FromStrings("__name__", "m")
	buf := []Sample{{1, 1}, {2, 2}, {3, 3}}
	fault.set(errors.New("injected EIO"))
	app := st.Appender("u")
	app.Append(lset, buf)
	if _, err := app.Commit(); !errors.Is(err, ErrWALFailed) {
		t.Fatalf("commit: %v, want ErrWALFailed", err)
	}
	for i := range buf {
		buf[i] = Sample{-1, math.NaN()} // the caller reuses its buffer
	}
	fault.set(nil)
	waitWALHealthy(t, st)
	want := map[string][]Sample{"u/" + lset.String(): {{1, 1}, {2, 2}, {3, 3}}}
	requireSameData(t, want, dump(t, st))
	st.Close()
	requireSameData(t, want, dump(t, mustOpen(t, testConfig(dir))))
}

// TestWALFailure_RetryWritesTheSameBytes: a retry commits the failed transaction again as the
// very same keys and bytes — in record version 3 too, whose samples and series records are
// compressed (snappy's output is deterministic) — so that a retry is idempotent whatever the
// failed commit left in the file. The bytes of the failed attempt are captured as the committer
// was about to write them, and compared with the retry's and with what the file holds after it.
func TestWALFailure_RetryWritesTheSameBytes(t *testing.T) {
	for _, version := range []byte{recordVersion2, recordVersion3} {
		t.Run(fmt.Sprintf("v%d", version), func(t *testing.T) {
			dir := t.TempDir()
			st, fault := openFaulty(t, testConfig(dir), nil)
			st.wal.version = version
			var mu sync.Mutex
			var attempts []map[string]string // per commit attempt: key -> record
			st.wal.injectFault = func() error {
				w := st.wal // the committer goroutine: its fields are stable here
				recs := map[string]string{}
				for i, sp := range w.spans {
					recs[string(w.keys[i*8:i*8+8])] = string(w.arena[sp.start:sp.end])
				}
				mu.Lock()
				attempts = append(attempts, recs)
				mu.Unlock()
				return fault.inject()
			}
			// A push big enough for snappy to pay: new series and 1000 samples,
			// integers and floats, several samples for some series.
			var batch []SeriesSamples
			for i := range 500 {
				lset := labels.FromStrings("__name__", "m", "i", strconv.Itoa(i))
				batch = append(batch, ser(lset, Sample{1_700_000_000_000, float64(i * 4096)}, Sample{1_700_000_015_000, float64(i) / 3}))
			}
			fault.set(enospc(filepath.Join(dir, WALFileName)))
			if _, err := st.Push("u", batch); !errors.Is(err, ErrWALFailed) {
				t.Fatalf("push during a failing commit: %v, want ErrWALFailed", err)
			}
			fault.set(nil)
			waitWALHealthy(t, st)
			// The committer may have taken the queue in the middle of the push: the
			// failed transaction is then retried first and the rest follows as its
			// own transaction. Every attempt at the failed transaction's keys must
			// write exactly its bytes.
			mu.Lock()
			failed, same := attempts[0], 0
			for _, at := range attempts[1:] {
				overlap := false
				for k := range at {
					if _, ok := failed[k]; ok {
						overlap = true
					}
				}
				if !overlap {
					continue
				}
				if !maps.Equal(failed, at) {
					t.Errorf("a retry wrote %d records where the failed attempt wrote %d, or other bytes", len(at), len(failed))
				}
				same++
			}
			mu.Unlock()
			if same == 0 || len(failed) == 0 {
				t.Fatalf("no retry of the failed transaction (%d attempts)", len(attempts))
			}
			st.Close()
			db, err := bolt.Open(filepath.Join(dir, WALFileName), 0o600, &bolt.Options{ReadOnly: true})
			if err != nil {
				t.Fatal(err)
			}
			compressed := 0
			err = db.View(func(tx *bolt.Tx) error {
				b := tx.Bucket(bucketWAL)
				for k, v := range failed {
					got := b.Get([]byte(k))
					if string(got) != v {
						return fmt.Errorf("record %x in the file differs from the failed attempt's", k)
					}
					if got[0] != version {
						return fmt.Errorf("record %x has version %d, want %d", k, got[0], version)
					}
					if version == recordVersion3 && got[recordHeaderSize] == compSnappy {
						compressed++
					}
				}
				return nil
			})
			db.Close()
			if err != nil {
				t.Fatal(err)
			}
			if version == recordVersion3 && compressed == 0 {
				t.Fatal("no compressed record in the retried transaction: the test does not cover compression")
			}
			re := mustOpen(t, testConfig(dir))
			if got := re.Stats("u").Series; got != 500 {
				t.Fatalf("after replay %d series, want 500", got)
			}
			if r := re.ReplayReport(); r.Samples != 1000 || r.Corruption != nil {
				t.Fatalf("replay %+v, want 1000 samples", r)
			}
		})
	}
}

// TestWALFailure_ConcurrentPushesNothingAckedLost flips the fault on and off while pushers write
// to shared and private series and WAL rewrites run: every acknowledged sample is in memory and in
// the replayed WAL,
// memory equals the replay, every sample there is one that was pushed (orphans committed by a
// retry included, never a stale buffer), and nothing stays pending.
func TestWALFailure_ConcurrentPushesNothingAckedLost(t *testing.T) {
	t.Run("in-order", func(t *testing.T) { testWALFailureConcurrent(t, false) })
	// Each push also sends an out-of-order sample of the pusher's own series (at -ts): reserved
	// without moving the frontier, applied later by the committer when a wait failed.
	t.Run("out-of-order", func(t *testing.T) { testWALFailureConcurrent(t, true) })
}

func testWALFailureConcurrent(t *testing.T, ooo bool) {
	dir := t.TempDir()
	cfg := testConfig(dir)
	cfg.WALSync = false // speed only: this test does not crash
	st, fault := openFaulty(t, cfg, nil)
	if ooo {
		st.SetOutOfOrderWindow(func(string) time.Duration { return time.Hour })
	}
	valueOf := func(g int, ts int64) float64 { return float64(ts)*2 + float64(g)/8 }
	var (
		wg     sync.WaitGroup
		mu     sync.Mutex
		acked  = map[string]map[int64]float64{}
		failed atomic.Int64
		stop   atomic.Bool
	)
	const pushers = 6
	for g := range pushers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			own := labels.FromStrings("__name__", "own", "g", fmt.Sprint(g))
			shared := labels.FromStrings("__name__", "shared", "k", fmt.Sprint(g%2))
			buf := make([]Sample, 3)
			for ts := int64(1); !stop.Load(); ts++ {
				// The same buffer for every push, rewritten at once: orphans must not alias it.
				buf[0] = Sample{ts, valueOf(g, ts)}
				buf[2] = Sample{-ts, valueOf(g, -ts)}
				app := st.Appender("u")
				if ooo {
					app.Append(own, []Sample{buf[0], buf[2]})
				} else {
					app.Append(own, buf[:1])
				}
				// Shared series: timestamps collide across pushers; only one value per ts wins.
				buf[1] = Sample{ts*pushers + int64(g), valueOf(g, ts*pushers+int64(g))}
				app.Append(shared, buf[1:2])
				res, err := app.Commit()
				buf[0], buf[1], buf[2] = Sample{-1, -1}, Sample{-1, -1}, Sample{-1, -1}
				if err != nil {
					if !errors.Is(err, ErrWALFailed) {
						t.Error(err)
						return
					}
					failed.Add(1)
					continue
				}
				mu.Lock()
				for i, e := range []struct {
					l labels.Labels
					s Sample
				}{{own, Sample{ts, valueOf(g, ts)}}, {shared, Sample{ts*pushers + int64(g), valueOf(g, ts*pushers+int64(g))}}, {own, Sample{-ts, valueOf(g, -ts)}}} {
					if i == 2 && !ooo {
						break
					}
					if i == 2 {
						i = 0 // the out-of-order sample is in the own series' Append
					}
					refused := false
					for _, se := range res.Errors {
						refused = refused || se.SeriesIndex == i
					}
					if !refused {
						k := "u/" + e.l.String()
						if acked[k] == nil {
							acked[k] = map[int64]float64{}
						}
						acked[k][e.s.T] = e.s.V
					}
				}
				mu.Unlock()
			}
		}()
	}
	// WAL rewrites (Truncate drops nothing here, but runs its transactions) race the committer's
	// reopen of the file before each retry.
	wg.Add(1)
	go func() {
		defer wg.Done()
		for !stop.Load() {
			if _, err := st.Truncate(math.MinInt64); err != nil {
				t.Error(err)
				return
			}
			time.Sleep(time.Millisecond)
		}
	}()
	rng := rand.New(rand.NewPCG(1, 2))
	for range 40 {
		if rng.IntN(2) == 0 {
			fault.set(enospc(filepath.Join(dir, WALFileName)))
		} else {
			fault.set(nil)
		}
		time.Sleep(time.Duration(1+rng.IntN(10)) * time.Millisecond)
	}
	fault.set(nil)
	stop.Store(true)
	wg.Wait()
	waitWALHealthy(t, st)
	requireNothingPending(t, st)
	mem := dump(t, st)
	for k, want := range acked {
		have := map[int64]float64{}
		for _, s := range mem[k] {
			have[s.T] = s.V
		}
		for ts, v := range want {
			if hv, ok := have[ts]; !ok || math.Float64bits(hv) != math.Float64bits(v) {
				t.Fatalf("acknowledged sample %s@%d=%v lost (memory: %v, present %v)", k, ts, v, hv, ok)
			}
		}
	}
	for k, smps := range mem {
		for _, s := range smps {
			g := int64(0)
			if strings.Contains(k, `"shared"`) {
				g = s.T % pushers
			} else {
				fmt.Sscanf(k[strings.Index(k, `g="`)+3:], "%d", &g)
			}
			if s.V != valueOf(int(g), s.T) {
				t.Fatalf("series %s holds %v, which was never pushed", k, s)
			}
		}
	}
	nAcked := 0
	for _, m := range acked {
		nAcked += len(m)
	}
	t.Logf("%d pushes refused while failing, %d samples acknowledged, %d series", failed.Load(), nAcked, len(mem))
	if failed.Load() == 0 || nAcked == 0 {
		t.Fatal("no push failed, or none succeeded: the test exercised nothing")
	}
	st.Close()
	requireSameData(t, mem, dump(t, mustOpen(t, cfg)))
}

// TestWALFailure_CloseWhileFailing: Close while the WAL cannot commit returns, drops the
// never-acknowledged entries, and the file reopens with what was acknowledged.
func TestWALFailure_CloseWhileFailing(t *testing.T) {
	dir := t.TempDir()
	st, fault := openFaulty(t, testConfig(dir), nil)
	lset := labels.FromStrings("__name__", "m")
	mustPush(t, st, "u", ser(lset, Sample{1, 1}))
	fault.set(errors.New("injected EIO"))
	if _, err := st.Push("u", []SeriesSamples{ser(lset, Sample{2, 2})}); !errors.Is(err, ErrWALFailed) {
		t.Fatalf("push: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- st.Close() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Close hangs while the WAL is failing")
	}
	if _, err := st.Push("u", []SeriesSamples{ser(lset, Sample{3, 3})}); !errors.Is(err, ErrClosed) {
		t.Fatalf("push after close: %v, want ErrClosed", err)
	}
	requireSameData(t, map[string][]Sample{"u/" + lset.String(): {{1, 1}}}, dump(t, mustOpen(t, testConfig(dir))))
}

// TestWALFailure_FullTmpfs is the real thing: the WAL on a small tmpfs filled to the brim. bbolt's
// commit fails with ENOSPC (its rollback leaves the file as it was); the push is refused, reads go
// on; once space is freed the WAL recovers by itself, and the file replays exactly what memory
// holds. Needs root (mount); skipped otherwise.
func TestWALFailure_FullTmpfs(t *testing.T) {
	mnt := tmpfs.Mount(t, 8<<20)
	walDir := filepath.Join(mnt, "wal")
	st, err := Open(testConfig(walDir), nil, testLogger())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() }) // before the unmount (cleanups run last-in first-out)
	st.wal.retryMin, st.wal.retryMax = time.Millisecond, 20*time.Millisecond
	before := writeSomeData(t, st, 20)

	filler := tmpfs.Fill(t, mnt)
	// A push that needs pages the file does not have yet: long label values.
	big := make([]SeriesSamples, 2000)
	for i := range big {
		big[i] = ser(labels.FromStrings("__name__", "big", "i", fmt.Sprint(i), "pad", strings.Repeat("x", 400)), Sample{1, float64(i)})
	}
	_, err = st.Push("big", big)
	if !errors.Is(err, ErrWALFailed) || !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("push into a full filesystem: %v, want ErrWALFailed wrapping ENOSPC", err)
	}
	t.Logf("push refused: %v", err)
	if _, err := st.Push("u", []SeriesSamples{ser(labels.FromStrings("__name__", "later"), Sample{1, 1})}); !errors.Is(err, ErrWALFailed) {
		t.Fatalf("push while failing: %v", err)
	}
	requireSameData(t, before, filterTenant(dump(t, st), "big", false))
	// Still failing after some retries: the disk is still full.
	time.Sleep(100 * time.Millisecond)
	if st.WALError() == nil {
		t.Fatal("the WAL recovered while the filesystem is still full")
	}

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	waitWALHealthy(t, st)
	requireNothingPending(t, st)
	mem := dump(t, st)
	if got := filterTenant(mem, "big", true); len(got) != len(big) {
		t.Fatalf("%d series of the refused push committed by the retry, want %d", len(got), len(big))
	}
	mustPush(t, st, "u", ser(labels.FromStrings("__name__", "after"), Sample{1, 1}))
	mem = dump(t, st)
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	re, err := Open(testConfig(walDir), nil, testLogger())
	if err != nil {
		t.Fatal(err)
	}
	defer re.Close()
	requireSameData(t, mem, dump(t, re))
}

func filterTenant(m map[string][]Sample, tenant string, keep bool) map[string][]Sample {
	out := map[string][]Sample{}
	for k, v := range m {
		if strings.HasPrefix(k, tenant+"/") == keep {
			out[k] = v
		}
	}
	return out
}

// TestBbolt_ENOSPCRollsBackInProcess documents what the recovery design relies on in bbolt
// v1.5.0: a commit that fails with ENOSPC is rolled back (bbolt's Commit calls rollback: the
// freelist is reloaded from the last valid meta page), the same handle commits again once space is
// back, and the file holds every committed transaction and nothing of the failed one. (The WAL
// reopens the file before each retry anyway: a failed mmap resize would leave the handle unusable.)
func TestBbolt_ENOSPCRollsBackInProcess(t *testing.T) {
	mnt := tmpfs.Mount(t, 4<<20)
	path := filepath.Join(mnt, "b.bolt")
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() }) // the handle open at the end, before the unmount
	put := func(key string, n int) error {
		return db.Update(func(tx *bolt.Tx) error {
			b, err := tx.CreateBucketIfNotExists([]byte("b"))
			if err != nil {
				return err
			}
			return b.Put([]byte(key), make([]byte, n))
		})
	}
	if err := put("small", 100); err != nil {
		t.Fatal(err)
	}
	filler := tmpfs.Fill(t, mnt)
	if err := put("big", 2<<20); !errors.Is(err, syscall.ENOSPC) && !strings.Contains(fmt.Sprint(err), "no space left") {
		t.Fatalf("commit on a full filesystem: %v, want ENOSPC", err)
	}
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	if err := put("after", 100); err != nil {
		t.Fatalf("commit on the same handle after space came back: %v", err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	db, err = bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte("b"))
		if b.Get([]byte("small")) == nil || b.Get([]byte("after")) == nil || b.Get([]byte("big")) != nil {
			return fmt.Errorf("keys after reopen: small %v after %v big %v",
				b.Get([]byte("small")) != nil, b.Get([]byte("after")) != nil, b.Get([]byte("big")) != nil)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}
