package transfer

// Unit tests of the Leaver and the Receiver on fakes (fake_test.go) in virtual time
// (testing/synctest). Their real-component twins: BenchmarkHandover (real memstores and gRPC) and
// e2e/handover_test.go (real processes).

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/raftingest/raftingest/memstore"
	"github.com/raftingest/raftingest/ringstate"
	"github.com/raftingest/raftingest/transferpb"
)

const (
	leaverID = ringstate.MemberID("l")
	joinerID = ringstate.MemberID("j")
	joinAddr = "127.0.0.1:9002"
)

func testConfig() Config {
	c := DefaultConfig()
	c.Timeout = 10 * time.Second
	c.FrameBytes = 1024
	c.ImportConcurrency = 4
	return c
}

// side is one member's half: its store, and its Leaver or Receiver.
type side struct {
	store *fakeStore
	m     *Metrics
	dir   string
}

// leavingRing returns a ring with the leaver LEAVING (tokens 1, 2, 3) and nothing else.
func leavingRing(t *testing.T) *memRing {
	r := newMemRing()
	r.addActive(t, leaverID, "127.0.0.1:9001", ringstate.Tokens{1, 2, 3})
	r.must(t, ringstate.Command{Op: ringstate.OpLeave, Member: leaverID})
	return r
}

func newTestLeaver(t *testing.T, cfg Config, r Ring, net *pipeNet, flush func(context.Context) error) (*Leaver, *side) {
	s := &side{store: newFakeStore()}
	s.m, _ = NewMetrics(nil)
	lv, err := NewLeaver(cfg, LeaverDeps{ID: leaverID, Ring: r, Store: s.store, Dial: net.Dial, Flush: flush,
		Metrics: s.m, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	return lv, s
}

// addJoiner registers the joiner PENDING and serves its Receiver on net.
func addJoiner(t *testing.T, cfg Config, r *memRing, net *pipeNet) (*Receiver, *side) {
	s := &side{store: newFakeStore(), dir: t.TempDir()}
	s.m, _ = NewMetrics(nil)
	rcv, err := NewReceiver(cfg, ReceiverDeps{ID: joinerID, Ring: r, Store: s.store, DataDir: s.dir, Metrics: s.m,
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	r.must(t, registerCmd(joinerID, joinAddr))
	net.register(joinAddr, rcv)
	return rcv, s
}

// countingFlush records the virtual time of each call and returns err.
type countingFlush struct {
	calls []time.Time
	err   error
}

func (f *countingFlush) flush(context.Context) error {
	f.calls = append(f.calls, time.Now())
	return f.err
}

func TestLeaver_NoJoiner_RetriesWithBackoffThenFlushes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := testConfig() // -ingester.max-transfer-retries 10 (default)
		r := leavingRing(t)
		fl := &countingFlush{}
		lv, s := newTestLeaver(t, cfg, r, newPipeNet(), fl.flush)
		s.store.add(t, 5)
		start := time.Now()
		if err := lv.Leave(t.Context()); err != nil {
			t.Fatalf("Leave: %v", err)
		}
		if got := testutil.ToFloat64(s.m.attempts.WithLabelValues("no_joiner")); got != float64(cfg.MaxRetries) {
			t.Fatalf("%v attempts without a joiner, want %d", got, cfg.MaxRetries)
		}
		// 100ms, 200ms, ..., 3.2s, then 5s thrice: the waits between 10 attempts.
		const want = 21300 * time.Millisecond
		if len(fl.calls) != 1 || fl.calls[0].Sub(start) != want {
			t.Fatalf("flush calls %v, want one at start+%s (after the last retry)", fl.calls, want)
		}
		if got := totalBackoff(cfg.MaxRetries); got != want {
			t.Fatalf("totalBackoff(%d) = %s, want %s", cfg.MaxRetries, got, want)
		}
	})
}

// A replacement that a rolling update starts at the same moment registers PENDING some seconds
// later: the leaver's retries must still be looking for it then, and hand over instead of flushing.
func TestLeaver_ReplacementRegisteringLate_GetsTheHandover(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := testConfig()
		r := leavingRing(t)
		net := newPipeNet()
		fl := &countingFlush{}
		lv, s := newTestLeaver(t, cfg, r, net, fl.flush)
		s.store.add(t, 50)
		joined := make(chan *side, 1)
		go func() {
			time.Sleep(15 * time.Second) // the new process starts, replays an empty WAL, registers
			_, js := addJoiner(t, cfg, r, net)
			joined <- js
		}()
		if err := lv.Leave(t.Context()); err != nil {
			t.Fatalf("Leave: %v", err)
		}
		if len(fl.calls) != 0 {
			t.Fatal("flushed although a joiner appeared")
		}
		if m := r.member(t, joinerID); m.State != ringstate.ACTIVE || len(m.Tokens) != 3 {
			t.Fatalf("joiner %s with %d tokens, want ACTIVE with the leaver's 3", m.State, len(m.Tokens))
		}
		if _, ok := r.Ring().Member(leaverID); ok {
			t.Fatal("leaver still in the ring")
		}
		if js := <-joined; js.store.len() != 50 || s.store.len() != 0 {
			t.Fatalf("joiner holds %d series, leaver %d; want 50 and 0", js.store.len(), s.store.len())
		}
	})
}

func TestLeaver_StreamFailsEveryTime_AbortsEachAttemptThenFlushes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := testConfig()
		cfg.MaxRetries = 3
		r := leavingRing(t)
		net := newPipeNet()
		fl := &countingFlush{}
		lv, s := newTestLeaver(t, cfg, r, net, fl.flush)
		s.store.add(t, 20)
		_, js := addJoiner(t, cfg, r, net)
		js.store.importErr = errInjected // the joiner's WAL fails
		if err := lv.Leave(t.Context()); err != nil {
			t.Fatalf("Leave: %v", err)
		}
		if n := len(r.ops(ringstate.OpClaimJoiner)); n != 3 {
			t.Fatalf("%d claims, want one per attempt (3)", n)
		}
		if got := testutil.ToFloat64(s.m.attempts.WithLabelValues("failed")); got != 3 {
			t.Fatalf("%v failed attempts, want 3", got)
		}
		if len(fl.calls) != 1 {
			t.Fatalf("%d flushes, want 1 after the last attempt", len(fl.calls))
		}
		if m := r.member(t, joinerID); m.State != ringstate.PENDING || m.HandoverPeer != "" {
			t.Fatalf("joiner %s paired with %q, want PENDING and free", m.State, m.HandoverPeer)
		}
		if js.store.len() != 0 {
			t.Fatalf("joiner kept %d series of failed attempts", js.store.len())
		}
	})
}

func TestLeaver_FallbackFails_ErrorAndStaysLeavingWithData(t *testing.T) {
	for _, tc := range []struct {
		name  string
		flush func(context.Context) error
		want  error
	}{
		{"flush fails", (&countingFlush{err: errInjected}).flush, errInjected},
		{"no storage configured", nil, ErrNoHandover},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				cfg := testConfig()
				cfg.MaxRetries = 2
				r := leavingRing(t)
				lv, s := newTestLeaver(t, cfg, r, newPipeNet(), tc.flush)
				s.store.add(t, 7)
				err := lv.Leave(t.Context())
				if !errors.Is(err, tc.want) {
					t.Fatalf("Leave: %v, want %v", err, tc.want)
				}
				if m := r.member(t, leaverID); m.State != ringstate.LEAVING || len(m.Tokens) != 3 {
					t.Fatalf("leaver %s with %d tokens, want LEAVING with 3", m.State, len(m.Tokens))
				}
				if s.store.len() != 7 {
					t.Fatalf("leaver holds %d series, want its 7 kept", s.store.len())
				}
			})
		})
	}
}

// claimed returns a ring where the leaver has claimed the joiner, the joiner's Receiver, and the
// claim's epoch.
func claimed(t *testing.T, cfg Config) (*memRing, *Receiver, *side, uint64) {
	r := leavingRing(t)
	rcv, js := addJoiner(t, cfg, r, newPipeNet())
	epoch := r.must(t, ringstate.Command{Op: ringstate.OpClaimJoiner, Member: leaverID, Peer: joinerID})
	return r, rcv, js, epoch
}

func seriesFrame(t *testing.T, leaver ringstate.MemberID, epoch, seq uint64, n int) (*transferpb.Frame, Totals) {
	return seriesFrameVersion(t, leaver, epoch, seq, n, FrameVersion)
}

func seriesFrameVersion(t *testing.T, leaver ringstate.MemberID, epoch, seq uint64, n int, version uint32) (*transferpb.Frame, Totals) {
	s := newFakeStore()
	s.add(t, n)
	var ss []Series
	var tot Totals
	_ = s.ExportSeries(func(s *memstore.ImportSeries) error {
		ss = append(ss, *s)
		tot.add(&ss[len(ss)-1])
		return nil
	})
	return sealFrameVersion(&transferpb.Frame{Leaver: string(leaver), Epoch: epoch, Seq: seq,
		Kind: transferpb.FrameKind_FRAME_KIND_SERIES, Payload: encodeSeries(ss, version)}, version), tot
}

func trailerFrame(leaver ringstate.MemberID, epoch, seq uint64, tot Totals) *transferpb.Frame {
	return sealFrame(&transferpb.Frame{Leaver: string(leaver), Epoch: epoch, Seq: seq,
		Kind: transferpb.FrameKind_FRAME_KIND_TRAILER, Payload: encodeTrailer(tot)})
}

// send streams frames to rcv and returns the stream's outcome; hang keeps the stream open without
// sending more until ctx ends.
func send(ctx context.Context, rcv *Receiver, hang bool, frames ...*transferpb.Frame) (*transferpb.TransferResult, error) {
	st, _ := pipeClient{rcv}.TransferChunks(ctx)
	for _, f := range frames {
		if err := st.Send(f); err != nil {
			break
		}
	}
	if hang {
		p := st.(*pipeClientStream).p
		<-p.done
		return p.res, p.err
	}
	return st.CloseAndRecv()
}

func TestReceiver_RefusesBadStreams(t *testing.T) {
	type env struct {
		epoch uint64
	}
	good := func(t *testing.T, e env) []*transferpb.Frame {
		f, tot := seriesFrame(t, leaverID, e.epoch, 0, 5)
		return []*transferpb.Frame{f, trailerFrame(leaverID, e.epoch, 1, tot)}
	}
	cases := []struct {
		name   string
		why    string
		frames func(t *testing.T, e env) []*transferpb.Frame
		code   codes.Code
		text   string
		// aborted: the receiver accepted the stream, so on failure it aborts the claim (joiner
		// PENDING, data discarded); otherwise the claim is untouched.
		aborted bool
	}{
		{"empty", "a hand-over is never empty: it ends with a trailer",
			func(*testing.T, env) []*transferpb.Frame { return nil }, codes.InvalidArgument, "empty stream", false},
		{"truncated", "a stream that ends without its trailer lost its tail",
			func(t *testing.T, e env) []*transferpb.Frame { return good(t, e)[:1] }, codes.InvalidArgument, "truncated", true},
		{"only a trailer of zero", "the totals must match what was stored: 0 != what the first frame says",
			func(t *testing.T, e env) []*transferpb.Frame {
				f, _ := seriesFrame(t, leaverID, e.epoch, 0, 5)
				return []*transferpb.Frame{f, trailerFrame(leaverID, e.epoch, 1, Totals{})}
			}, codes.DataLoss, "trailer says", true},
		{"trailer totals mismatch", "a frame lost on the way shows as other totals",
			func(t *testing.T, e env) []*transferpb.Frame {
				f, tot := seriesFrame(t, leaverID, e.epoch, 0, 5)
				tot.Series++
				tot.Chunks++
				return []*transferpb.Frame{f, trailerFrame(leaverID, e.epoch, 1, tot)}
			}, codes.DataLoss, "trailer says", true},
		{"not the hand-over peer", "only the member the ring pairs with the joiner may hand over to it",
			func(t *testing.T, e env) []*transferpb.Frame {
				f, tot := seriesFrame(t, "intruder", e.epoch, 0, 5)
				return []*transferpb.Frame{f, trailerFrame("intruder", e.epoch, 1, tot)}
			}, codes.FailedPrecondition, "refusing hand-over from intruder", false},
		{"other leaver mid-stream", "every frame must carry the first frame's leaver",
			func(t *testing.T, e env) []*transferpb.Frame {
				fs := good(t, e)
				f, _ := seriesFrame(t, "intruder", e.epoch, 1, 1)
				return []*transferpb.Frame{fs[0], f, fs[1]}
			}, codes.InvalidArgument, "from intruder", true},
		{"epoch changes mid-stream", "every frame must carry the claim's epoch",
			func(t *testing.T, e env) []*transferpb.Frame {
				fs := good(t, e)
				f, _ := seriesFrame(t, leaverID, e.epoch+1, 1, 1)
				return []*transferpb.Frame{fs[0], f, fs[1]}
			}, codes.InvalidArgument, "epoch", true},
		{"epoch the ring never reaches", "a claim the joiner cannot see is no claim",
			func(t *testing.T, e env) []*transferpb.Frame {
				f, tot := seriesFrame(t, leaverID, e.epoch+100, 0, 5)
				return []*transferpb.Frame{f, trailerFrame(leaverID, e.epoch+100, 1, tot)}
			}, codes.Unavailable, "did not reach the claim's index", false},
		{"gap in sequence", "a lost frame shows as a gap",
			func(t *testing.T, e env) []*transferpb.Frame {
				fs := good(t, e)
				return []*transferpb.Frame{fs[0], trailerFrame(leaverID, e.epoch, 2, Totals{Series: 5, Chunks: 5})}
			}, codes.InvalidArgument, "expecting frame 1", true},
		{"bad checksum", "a flipped bit is refused before the payload is believed",
			func(t *testing.T, e env) []*transferpb.Frame {
				fs := good(t, e)
				fs[0].Payload[len(fs[0].Payload)-1] ^= 1
				return fs
			}, codes.InvalidArgument, "corrupt frame", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				r, rcv, js, epoch := claimed(t, testConfig())
				_, err := send(t.Context(), rcv, false, tc.frames(t, env{epoch})...)
				if status.Code(err) != tc.code || !strings.Contains(err.Error(), tc.text) {
					t.Fatalf("%s: got %v, want %s containing %q", tc.why, err, tc.code, tc.text)
				}
				j := r.member(t, joinerID)
				if tc.aborted {
					if j.State != ringstate.PENDING || j.HandoverPeer != "" {
						t.Fatalf("after a refused stream the joiner is %s paired with %q, want PENDING", j.State, j.HandoverPeer)
					}
				} else if j.State != ringstate.JOINING || j.HandoverPeer != leaverID {
					t.Fatalf("a stream refused at the door changed the claim: joiner %s paired with %q", j.State, j.HandoverPeer)
				}
				if _, ok := r.Ring().Member(leaverID); !ok {
					t.Fatal("the leaver left the ring after a refused stream")
				}
				if js.store.len() != 0 {
					t.Fatalf("joiner kept %d series of a refused stream", js.store.len())
				}
				if _, err := os.Stat(filepath.Join(js.dir, MarkerFileName)); !errors.Is(err, os.ErrNotExist) {
					t.Fatalf("marker after a refused stream: %v", err)
				}
			})
		})
	}
}

func TestReceiver_GoodStream_CompletesAndRefusesAStaleEpochAfterwards(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r, rcv, js, epoch := claimed(t, testConfig())
		f, tot := seriesFrame(t, leaverID, epoch, 0, 5)
		res, err := send(t.Context(), rcv, false, f, trailerFrame(leaverID, epoch, 1, tot))
		if err != nil {
			t.Fatal(err)
		}
		if got := (Totals{res.GetSeries(), res.GetChunks(), res.GetBytes()}); got != tot || js.store.len() != 5 {
			t.Fatalf("result %+v, store %d series; want %+v and 5", got, js.store.len(), tot)
		}
		if j := r.member(t, joinerID); j.State != ringstate.ACTIVE || len(j.Tokens) != 3 {
			t.Fatalf("joiner %s with %d tokens", j.State, len(j.Tokens))
		}

		// The same joiner, PENDING again (say, its tokens moved on), claimed anew; a stale attempt
		// of the old claim arrives: refused, and the new claim is untouched.
		r.must(t, ringstate.Command{Op: ringstate.OpRemove, Member: joinerID}, registerCmd(joinerID, joinAddr),
			registerCmd(leaverID, "127.0.0.1:9001"),
			ringstate.Command{Op: ringstate.OpClaimTokens, Member: leaverID, Tokens: ringstate.Tokens{7}},
			ringstate.Command{Op: ringstate.OpActivate, Member: leaverID},
			ringstate.Command{Op: ringstate.OpLeave, Member: leaverID},
			ringstate.Command{Op: ringstate.OpClaimJoiner, Member: leaverID, Peer: joinerID})
		js.store.DropAll()
		_, err = send(t.Context(), rcv, false, f, trailerFrame(leaverID, epoch, 1, tot))
		if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "stale") {
			t.Fatalf("stale epoch: %v, want FailedPrecondition naming it stale", err)
		}
		if j := r.member(t, joinerID); j.State != ringstate.JOINING || j.HandoverPeer != leaverID {
			t.Fatalf("a stale stream changed the claim: %s paired with %q", j.State, j.HandoverPeer)
		}
	})
}

// A leaver that claimed the joiner and then went silent — before the stream, or in the middle of
// it — is aborted by the joiner itself after -ingester.transfer-timeout: back to PENDING, data
// discarded.
func TestReceiver_SilentLeaver_JoinerAbortsAfterTimeout(t *testing.T) {
	for _, midStream := range []bool{false, true} {
		name := map[bool]string{false: "claimed, no stream", true: "mid-stream"}[midStream]
		t.Run(name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				cfg := testConfig()
				r, rcv, js, epoch := claimed(t, cfg)
				ctx, cancel := context.WithCancel(t.Context())
				done := make(chan struct{})
				go func() { rcv.Run(ctx); close(done) }()
				start := time.Now()
				var streamErr error
				streamDone := make(chan struct{})
				if midStream {
					f, _ := seriesFrame(t, leaverID, epoch, 0, 5)
					go func() {
						_, streamErr = send(ctx, rcv, true, f)
						close(streamDone)
					}()
				} else {
					close(streamDone)
				}
				time.Sleep(cfg.Timeout - time.Second)
				synctest.Wait()
				if j := r.member(t, joinerID); j.State != ringstate.JOINING {
					t.Fatalf("joiner %s before the timeout, want JOINING", j.State)
				}
				// The stream's own timer fires at Timeout; the watcher checks every Timeout/10.
				time.Sleep(time.Second + cfg.Timeout/10 + time.Millisecond)
				synctest.Wait()
				if j := r.member(t, joinerID); j.State != ringstate.PENDING || j.HandoverPeer != "" {
					t.Fatalf("joiner %s paired with %q %s after the claim, want PENDING", j.State, j.HandoverPeer, time.Since(start))
				}
				<-streamDone
				if midStream && status.Code(streamErr) != codes.Aborted {
					t.Fatalf("the silent stream ended with %v, want Aborted", streamErr)
				}
				if js.store.len() != 0 {
					t.Fatalf("joiner kept %d series of the silent hand-over", js.store.len())
				}
				if _, ok := r.Ring().Member(leaverID); !ok {
					t.Fatal("leaver gone")
				}
				cancel()
				<-done
			})
		})
	}
}

// A leaver of an older build sends version 1 frames (no last values): the joiner still accepts
// them, and its store decodes the last chunks itself (memstore.ImportSeries.HasLastV false).
func TestReceiver_AcceptsVersion1Frames(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r, rcv, js, epoch := claimed(t, testConfig())
		f, tot := seriesFrameVersion(t, leaverID, epoch, 0, 5, FrameVersion1)
		if _, err := send(t.Context(), rcv, false, f, trailerFrame(leaverID, epoch, 1, tot)); err != nil {
			t.Fatal(err)
		}
		if js.store.len() != 5 {
			t.Fatalf("store holds %d series, want 5", js.store.len())
		}
		if j := r.member(t, joinerID); j.State != ringstate.ACTIVE {
			t.Fatalf("joiner %s", j.State)
		}
	})
}

// bulkStore records, at each ImportBatch, how many bulk-load windows are open.
type bulkStore struct {
	*fakeStore
	open     *int // written only before the first import and after the last
	mu       sync.Mutex
	atImport []int
}

func (s *bulkStore) ImportBatch(b []memstore.ImportSeries) error {
	s.mu.Lock()
	s.atImport = append(s.atImport, *s.open)
	s.mu.Unlock()
	return s.fakeStore.ImportBatch(b)
}

// The receiver opens its bulk-load window (the ingester raises GOGC in it) around the imports of
// a stream and closes it whatever the outcome: after a refused stream, and after a completed one
// once its imports are done, before CompleteHandover (the member then takes writes).
func TestReceiver_BulkLoadWindowAroundTheImport(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := leavingRing(t)
		open, begins := 0, 0
		var stateAtEnd ringstate.State // the joiner's state in the ring when the window closed
		st := &bulkStore{fakeStore: newFakeStore(), open: &open}
		m, _ := NewMetrics(nil)
		rcv, err := NewReceiver(testConfig(), ReceiverDeps{ID: joinerID, Ring: r, Store: st, DataDir: t.TempDir(), Metrics: m,
			Logger: slog.New(slog.DiscardHandler), BulkLoad: func() func() {
				open++
				begins++
				return func() {
					open--
					stateAtEnd = r.member(t, joinerID).State
				}
			}})
		if err != nil {
			t.Fatal(err)
		}
		r.must(t, registerCmd(joinerID, joinAddr))
		epoch := r.must(t, ringstate.Command{Op: ringstate.OpClaimJoiner, Member: leaverID, Peer: joinerID})

		// A stream without its trailer is refused after its frame was imported.
		f0, _ := seriesFrame(t, leaverID, epoch, 0, 5)
		if _, err := send(t.Context(), rcv, false, f0); status.Code(err) != codes.InvalidArgument {
			t.Fatalf("truncated stream: %v, want InvalidArgument", err)
		}
		if begins != 1 || open != 0 || !slices.Equal(st.atImport, []int{1}) {
			t.Fatalf("refused stream: %d windows opened, %d still open, open at imports %v; want 1, 0, [1]", begins, open, st.atImport)
		}

		// The leaver aborts and claims the joiner again: a new epoch, a complete stream.
		r.must(t, ringstate.Command{Op: ringstate.OpAbortHandover, Member: leaverID, Peer: joinerID})
		epoch = r.must(t, ringstate.Command{Op: ringstate.OpClaimJoiner, Member: leaverID, Peer: joinerID})
		f, tot := seriesFrame(t, leaverID, epoch, 0, 5)
		if _, err := send(t.Context(), rcv, false, f, trailerFrame(leaverID, epoch, 1, tot)); err != nil {
			t.Fatal(err)
		}
		if begins != 2 || open != 0 || !slices.Equal(st.atImport, []int{1, 1}) {
			t.Fatalf("completed stream: %d windows opened, %d still open, open at imports %v; want 2, 0, [1 1]", begins, open, st.atImport)
		}
		if stateAtEnd != ringstate.JOINING {
			t.Fatalf("the window closed with the joiner %s; want it closed after the imports, before CompleteHandover", stateAtEnd)
		}
	})
}
