package transfer

// Issue 12 (hardening): every frame is validated before anything of it is imported; a stream
// nobody claimed never holds the hand-over slot; a stream that dribbles cannot hold it past its
// budget; a leaver does not send what its joiner must refuse.

import (
	"context"
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/raftingest/raftingest/memstore"
	"github.com/raftingest/raftingest/ringstate"
	"github.com/raftingest/raftingest/transferpb"
)

// goodSeries is one valid series of tenant with a two-chunk history.
func goodSeries(t testing.TB, tenant, name string) Series {
	return Series{Tenant: tenant, Labels: labels.FromStrings("__name__", name, "job", "j"),
		Chunks:   []memstore.Chunk{xorChunk(t, []int64{1, 2, 3}, []float64{1, 2, 3}), xorChunk(t, []int64{10, 11}, []float64{4, 5})},
		LastV:    5,
		HasLastV: true}
}

// framesOf seals one SERIES frame per element of payloads, then the trailer of tot.
func framesOf(epoch uint64, version uint32, tot Totals, payloads ...[]byte) []*transferpb.Frame {
	var out []*transferpb.Frame
	for i, p := range payloads {
		out = append(out, sealFrameVersion(&transferpb.Frame{Leaver: string(leaverID), Epoch: epoch, Seq: uint64(i),
			Kind: transferpb.FrameKind_FRAME_KIND_SERIES, Payload: p}, version))
	}
	return append(out, trailerFrame(leaverID, epoch, uint64(len(payloads)), tot))
}

func totalsOf(sss ...[]Series) Totals {
	var t Totals
	for _, ss := range sss {
		for i := range ss {
			t.add(&ss[i])
		}
	}
	return t
}

// TestReceiver_ValidatesFramesBeforeImport: a frame whose checksum is right but whose content a
// store must not hold is refused with InvalidArgument before any of it reaches ImportBatch, the
// claim is aborted (joiner PENDING) and nothing is kept.
func TestReceiver_ValidatesFramesBeforeImport(t *testing.T) {
	garbledChunk := func(t testing.TB) memstore.Chunk {
		c := xorChunk(t, []int64{1, 2, 3, 4, 5, 6}, []float64{1, 2, 3, 4, 5, 6})
		c.Data = slices.Clone(c.Data[:len(c.Data)/2]) // header says 6 samples, half the bits are gone
		c.MaxTime = 6
		return c
	}
	cases := []struct {
		name, why string
		version   uint32
		series    func(t testing.TB) [][]Series // one element per frame
		text      string
	}{
		{"tenant out of the bucket", "a tenant names a directory of the bucket when the joiner flushes (issue 12)", FrameVersion,
			func(t testing.TB) [][]Series { return [][]Series{{goodSeries(t, "../../outside", "m")}} }, "tenant id"},
		{"empty tenant", "a series of no tenant", FrameVersion,
			func(t testing.TB) [][]Series { return [][]Series{{goodSeries(t, "", "m")}} }, "no org id"},
		{"label value not UTF-8", "QueryStream could never marshal it again, on any replica", FrameVersion,
			func(t testing.TB) [][]Series {
				s := goodSeries(t, "t", "m")
				s.Labels = labels.FromStrings("__name__", "m", "job", "\xff")
				return [][]Series{{s}}
			}, "UTF-8"},
		{"label name invalid", "the Push rules hold for handed-over series too", FrameVersion,
			func(t testing.TB) [][]Series {
				s := goodSeries(t, "t", "m")
				s.Labels = labels.FromStrings("__name__", "m", "a-b", "x")
				return [][]Series{{s}}
			}, "invalid label name"},
		{"no metric name", "the Push rules hold for handed-over series too", FrameVersion,
			func(t testing.TB) [][]Series {
				s := goodSeries(t, "t", "m")
				s.Labels = labels.FromStrings("job", "x")
				return [][]Series{{s}}
			}, "no metric name"},
		{"chunk does not decode (v2)", "v2 frames carry the last value, so the store would not decode anything itself", FrameVersion,
			func(t testing.TB) [][]Series {
				s := goodSeries(t, "t", "m")
				s.Chunks = []memstore.Chunk{xorChunk(t, []int64{-5}, []float64{0}), garbledChunk(t)}
				return [][]Series{{s}}
			}, "chunk 1"},
		{"chunk does not decode (v1)", "version 1 too", FrameVersion1,
			func(t testing.TB) [][]Series {
				s := goodSeries(t, "t", "m")
				s.Chunks = []memstore.Chunk{garbledChunk(t), xorChunk(t, []int64{100}, []float64{0})}
				return [][]Series{{s}}
			}, "chunk 0"},
		{"chunk of an unknown encoding", "the store holds XOR and native histogram chunks only", FrameVersion,
			func(t testing.TB) [][]Series {
				s := goodSeries(t, "t", "m")
				s.Chunks[0].Encoding = 9
				return [][]Series{{s}}
			}, "only XOR"},
		{"XOR bytes labelled a histogram chunk", "a histogram chunk is decoded whole and checked", FrameVersion,
			func(t testing.TB) [][]Series {
				s := goodSeries(t, "t", "m")
				s.Chunks[0].Encoding = 2
				return [][]Series{{s}}
			}, "invalid chunk"},
		{"chunks overlap", "chunks come in time order without overlap", FrameVersion,
			func(t testing.TB) [][]Series {
				s := goodSeries(t, "t", "m")
				s.Chunks[1] = xorChunk(t, []int64{3, 4}, []float64{4, 5})
				return [][]Series{{s}}
			}, "does not come after"},
		{"chunk lies about its time range", "MaxTime is where the frontier of the series moves", FrameVersion,
			func(t testing.TB) [][]Series {
				s := goodSeries(t, "t", "m")
				s.Chunks[1].MaxTime = 1 << 40
				return [][]Series{{s}}
			}, "last sample at 11"},
		{"last value lies", "the last value decides the idempotent-duplicate rule after the hand-over", FrameVersion,
			func(t testing.TB) [][]Series {
				s := goodSeries(t, "t", "m")
				s.LastV = math.NaN()
				return [][]Series{{s}}
			}, "last value"},
		{"series without chunks", "a leaver never sends one; its totals could not add up", FrameVersion,
			func(t testing.TB) [][]Series {
				s := goodSeries(t, "t", "m")
				s.Chunks, s.LastV = nil, 0
				return [][]Series{{s}}
			}, "no chunks"},
		{"frame without series", "a leaver never sends one; it can only pad a stream", FrameVersion,
			func(t testing.TB) [][]Series { return [][]Series{{}} }, "no series"},
		{"tenants out of order across frames", "the leaver walks tenants in sorted order", FrameVersion,
			func(t testing.TB) [][]Series {
				return [][]Series{{goodSeries(t, "b", "m")}, {goodSeries(t, "a", "m")}}
			}, "sorted order"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				r, rcv, js, epoch := claimed(t, testConfig())
				frames := tc.series(t)
				var payloads [][]byte
				for _, ss := range frames {
					payloads = append(payloads, encodeSeries(ss, tc.version))
				}
				_, err := send(t.Context(), rcv, false, framesOf(epoch, tc.version, totalsOf(frames...), payloads...)...)
				if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), tc.text) {
					t.Fatalf("%s: got %v, want InvalidArgument containing %q", tc.why, err, tc.text)
				}
				// The last frame is the bad one: the ones before it may have been imported (and are
				// discarded with the attempt), never a bad one.
				if want := len(frames) - 1; js.store.imports > want {
					t.Fatalf("%d imports for %d good frames: the bad frame reached the store", js.store.imports, want)
				}
				if js.store.len() != 0 {
					t.Fatalf("joiner kept %d series", js.store.len())
				}
				if j := r.member(t, joinerID); j.State != ringstate.PENDING || j.HandoverPeer != "" {
					t.Fatalf("joiner %s paired with %q, want PENDING", j.State, j.HandoverPeer)
				}
			})
		})
	}
}

// A version 1 frame's last values come from the receiver's own decode, so the store decodes
// nothing again; a version 2 frame's are checked against it.
func TestCheckChunks_SetsLastValueOfVersion1(t *testing.T) {
	s := goodSeries(t, "t", "m")
	s.HasLastV, s.LastV = false, 0
	ss := []Series{s}
	if err := checkChunks(ss); err != nil {
		t.Fatal(err)
	}
	if !ss[0].HasLastV || ss[0].LastV != 5 {
		t.Fatalf("last value %v (%v), want 5", ss[0].LastV, ss[0].HasLastV)
	}
}

// A frame above -ingester.transfer-max-recv-msg-size is refused even when it reaches the receiver
// without the gRPC server's limit (which refuses it first in a real server).
func TestReceiver_RefusesFrameAboveLimit(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := testConfig()
		cfg.MaxRecvMsgSize = 4 * cfg.FrameBytes
		_, rcv, js, epoch := claimed(t, cfg)
		var ss []Series
		for i := 0; len(encodeSeries(ss, FrameVersion)) <= cfg.MaxRecvMsgSize; i++ {
			ss = append(ss, goodSeries(t, "t", "m"+strings.Repeat("x", i%50)+string(rune('a'+i%26))))
		}
		_, err := send(t.Context(), rcv, false, framesOf(epoch, FrameVersion, totalsOf(ss), encodeSeries(ss, FrameVersion))...)
		if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "transfer-max-recv-msg-size") {
			t.Fatalf("got %v, want InvalidArgument naming the limit", err)
		}
		if js.store.imports != 0 {
			t.Fatal("an oversized frame was imported")
		}
	})
}

// TestReceiver_UnclaimedStreamsDoNotHoldTheSlot: streams nobody claimed — an epoch the ring never
// reaches (waiting up to the timeout for it), an unpaired leaver — wait and fail without the
// hand-over slot, so the real hand-over that arrives meanwhile goes through at once. Before, each
// such stream held the slot while it waited, and a real one behind it waited out the timeout and
// was refused as busy.
func TestReceiver_UnclaimedStreamsDoNotHoldTheSlot(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := testConfig()
		r, rcv, js, epoch := claimed(t, cfg)
		farFuture, _ := seriesFrame(t, leaverID, epoch+1_000_000, 0, 1)
		errs := make(chan error, 3)
		for range 3 {
			go func() { _, err := send(t.Context(), rcv, true, farFuture); errs <- err }()
		}
		synctest.Wait() // the three wait for an index the ring never reaches
		start := time.Now()
		f, tot := seriesFrame(t, leaverID, epoch, 0, 5)
		if _, err := send(t.Context(), rcv, false, f, trailerFrame(leaverID, epoch, 1, tot)); err != nil {
			t.Fatalf("the real hand-over behind unclaimed streams: %v", err)
		}
		if waited := time.Since(start); waited != 0 {
			t.Fatalf("the real hand-over waited %s for the slot", waited)
		}
		if js.store.len() != 5 || r.member(t, joinerID).State != ringstate.ACTIVE {
			t.Fatalf("joiner holds %d series and is %s", js.store.len(), r.member(t, joinerID).State)
		}
		for range 3 {
			if err := <-errs; status.Code(err) != codes.Unavailable {
				t.Fatalf("unclaimed stream: %v, want Unavailable", err)
			}
		}
	})
}

// TestReceiver_SlowDrip_BoundedByTheStreamBudget: a paired leaver that sends a tiny frame every
// timeout−1s never trips the per-frame timer. Before, it held the hand-over slot (and kept the
// joiner JOINING: the watcher skips while a transfer runs) for as long as it cared to; now the
// stream's budget — one timeout, plus one per -ingester.transfer-frame-bytes received — ends it
// with DeadlineExceeded after about one timeout, the claim is aborted and nothing is kept.
func TestReceiver_SlowDrip_BoundedByTheStreamBudget(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := testConfig()
		r, rcv, js, epoch := claimed(t, cfg)
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		st, _ := pipeClient{rcv}.TransferChunks(ctx)
		done := st.(*pipeClientStream).p.done
		start := time.Now()
		sent := 0
		var took time.Duration
	drip:
		for seq := uint64(0); ; seq++ {
			s := goodSeries(t, "t", "drip")
			s.Labels = labels.FromStrings("__name__", "drip", "seq", fmt.Sprint(seq))
			f := sealFrame(&transferpb.Frame{Leaver: string(leaverID), Epoch: epoch, Seq: seq,
				Kind: transferpb.FrameKind_FRAME_KIND_SERIES, Payload: encodeSeries([]Series{s}, FrameVersion)})
			if err := st.Send(f); err != nil {
				break
			}
			sent++
			if time.Since(start) > 10*cfg.Timeout {
				t.Fatalf("still streaming after %s (%d frames): the drip holds the slot", time.Since(start), sent)
			}
			select {
			case <-done:
				took = time.Since(start)
				break drip
			case <-time.After(cfg.Timeout - time.Second):
			}
		}
		_, err := st.CloseAndRecv()
		if status.Code(err) != codes.DeadlineExceeded || !strings.Contains(err.Error(), "slower than") {
			t.Fatalf("drip ended with %v, want DeadlineExceeded saying it is too slow", err)
		}
		// ~100 payload bytes per frame earn 10s×100/1024 each: the budget runs out in the second wait.
		if took == 0 || took > 2*cfg.Timeout {
			t.Fatalf("the drip held the stream for %s (%d frames), want about one timeout (%s)", took, sent, cfg.Timeout)
		}
		synctest.Wait()
		if j := r.member(t, joinerID); j.State != ringstate.PENDING || js.store.len() != 0 {
			t.Fatalf("after the drip: joiner %s with %d series, want PENDING and empty", j.State, js.store.len())
		}
		select { // the slot is free
		case rcv.sem <- struct{}{}:
			<-rcv.sem
		default:
			t.Fatal("the hand-over slot is still held")
		}
		t.Logf("drip of %d frames ended after %s: %v", sent, took, err)
	})
}

// A leaver that streams at full speed earns its time: with the per-frame gap well below the
// timeout and full frames, a stream much longer than the timeout completes.
func TestReceiver_LongFullSpeedStream_Completes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := testConfig()
		r, rcv, js, epoch := claimed(t, cfg)
		st, _ := pipeClient{rcv}.TransferChunks(t.Context())
		start := time.Now()
		var tot Totals
		seq := uint64(0)
		for ; time.Since(start) < 5*cfg.Timeout; seq++ {
			var ss []Series
			for i := 0; len(encodeSeries(ss, FrameVersion)) < cfg.FrameBytes; i++ {
				s := goodSeries(t, "t", "m")
				s.Labels = labels.FromStrings("__name__", "m", "i", fmt.Sprint(i), "seq", fmt.Sprint(seq))
				ss = append(ss, s)
			}
			tot = addTotals(tot, totalsOf(ss))
			if err := st.Send(sealFrame(&transferpb.Frame{Leaver: string(leaverID), Epoch: epoch, Seq: seq,
				Kind: transferpb.FrameKind_FRAME_KIND_SERIES, Payload: encodeSeries(ss, FrameVersion)})); err != nil {
				t.Fatalf("frame %d after %s: %v", seq, time.Since(start), err)
			}
			time.Sleep(cfg.Timeout / 2) // slow, but each frame is full
		}
		if err := st.Send(trailerFrame(leaverID, epoch, seq, tot)); err != nil {
			t.Fatal(err)
		}
		if _, err := st.CloseAndRecv(); err != nil {
			t.Fatalf("a full-speed stream of %s: %v", time.Since(start), err)
		}
		if r.member(t, joinerID).State != ringstate.ACTIVE || uint64(js.store.len()) != tot.Series {
			t.Fatalf("joiner %s with %d series, want ACTIVE with %d", r.member(t, joinerID).State, js.store.len(), tot.Series)
		}
	})
}

func addTotals(a, b Totals) Totals {
	return Totals{Series: a.Series + b.Series, Chunks: a.Chunks + b.Chunks, Bytes: a.Bytes + b.Bytes}
}

// A leaver whose store holds a series no joiner may accept (here a tenant that would escape the
// bucket, stored before tenants were checked at the ingester's gRPC boundary) does not retry a
// hand-over that cannot succeed: it releases the joiner and flushes at once.
func TestLeaver_UnsendableSeries_FlushesWithoutRetrying(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := testConfig()
		r := leavingRing(t)
		net := newPipeNet()
		fl := &countingFlush{}
		lv, s := newTestLeaver(t, cfg, r, net, fl.flush)
		s.store.add(t, 3)
		bad := goodSeries(t, "../../outside", "m")
		s.store.series[seriesKey(bad.Tenant, bad.Labels)] = bad
		_, js := addJoiner(t, cfg, r, net)
		if err := lv.Leave(t.Context()); err != nil {
			t.Fatalf("Leave: %v", err)
		}
		if n := len(r.ops(ringstate.OpClaimJoiner)); n != 1 || len(fl.calls) != 1 {
			t.Fatalf("%d claims and %d flushes, want one attempt then the flush", n, len(fl.calls))
		}
		if m := r.member(t, joinerID); m.State != ringstate.PENDING || js.store.len() != 0 {
			t.Fatalf("joiner %s with %d series, want PENDING and empty", m.State, js.store.len())
		}
	})
}

// A series that does not fit beside the ones before it in a frame goes into the next one alone;
// one larger than a frame may be cannot be handed over (flush).
func TestLeaver_FramesStayBelowTheReceiveLimit(t *testing.T) {
	big := func(t testing.TB, name string, n int) Series {
		var ts []int64
		var vs []float64
		for i := range n { // irregular values: about 8 bytes a sample in XOR
			ts, vs = append(ts, int64(i)*1000+int64(i*i%7)), append(vs, math.Sqrt(float64(i*7919+13)))
		}
		var chunks []memstore.Chunk
		for i := 0; i < n; i += 120 {
			chunks = append(chunks, xorChunk(t, ts[i:min(i+120, n)], vs[i:min(i+120, n)]))
		}
		return Series{Tenant: "t", Labels: labels.FromStrings("__name__", name), Chunks: chunks}
	}
	t.Run("split", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			cfg := testConfig()
			cfg.FrameBytes, cfg.MaxRecvMsgSize = 1024, 4096
			r := leavingRing(t)
			net := newPipeNet()
			fl := &countingFlush{}
			lv, s := newTestLeaver(t, cfg, r, net, fl.flush)
			for _, name := range []string{"a", "b", "c", "d"} {
				sr := big(t, name, 300)
				if n := len(encodeSeries([]Series{sr}, FrameVersion)); n < 2100 || n > 4000 {
					t.Fatalf("a series of %d bytes: want one that fits a frame alone, never two", n)
				}
				s.store.series[seriesKey("t", sr.Labels)] = sr
			}
			_, js := addJoiner(t, cfg, r, net)
			if err := lv.Leave(t.Context()); err != nil || len(fl.calls) != 0 {
				t.Fatalf("Leave: %v, %d flushes", err, len(fl.calls))
			}
			if js.store.len() != 4 || r.member(t, joinerID).State != ringstate.ACTIVE {
				t.Fatalf("joiner holds %d series, %s", js.store.len(), r.member(t, joinerID).State)
			}
		})
	})
	t.Run("too large", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			cfg := testConfig()
			cfg.FrameBytes, cfg.MaxRecvMsgSize = 1024, 4096
			r := leavingRing(t)
			net := newPipeNet()
			fl := &countingFlush{}
			lv, s := newTestLeaver(t, cfg, r, net, fl.flush)
			sr := big(t, "huge", 1200)
			s.store.series[seriesKey("t", sr.Labels)] = sr
			addJoiner(t, cfg, r, net)
			if err := lv.Leave(t.Context()); err != nil || len(fl.calls) != 1 || len(r.ops(ringstate.OpClaimJoiner)) != 1 {
				t.Fatalf("Leave: %v, %d flushes after %d claims; want one claim then a flush", err, len(fl.calls), len(r.ops(ringstate.OpClaimJoiner)))
			}
		})
	})
}

// A frame holds up to -ingester.transfer-frame-bytes plus one series: the receive limit must leave
// room for that.
func TestConfig_MaxRecvMsgSizeAboveFrames(t *testing.T) {
	c := DefaultConfig()
	if err := c.Validate(); err != nil {
		t.Fatalf("defaults: %v", err)
	}
	c.MaxRecvMsgSize = 2*c.FrameBytes - 1
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "-ingester.transfer-max-recv-msg-size") {
		t.Fatalf("limit below two frames: %v, want an error naming the flag", err)
	}
}

// The real store's export is what the joiner's checks expect, tenants in sorted order included
// (memstore walks Store.Tenants, sorted): a leaver built on it never refuses its own data, and a
// joiner accepts every frame of it. The fake store's twin.
func TestExportSeries_RealStorePassesTheJoinersChecks(t *testing.T) {
	st, err := memstore.Open(memstore.DefaultConfig(), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	for _, tenant := range []string{"zeta", "alpha", "mid-1", "Alpha"} {
		for i := range 30 {
			lset := labels.FromStrings("__name__", "up", "i", fmt.Sprint(i), "tenant_label", tenant)
			smps := make([]memstore.Sample, 0, 300)
			for j := range 300 {
				smps = append(smps, memstore.Sample{T: int64(j) * 15_000, V: float64(i * j)})
			}
			if res, err := st.Push(tenant, []memstore.SeriesSamples{{Labels: lset, Samples: smps}}); err != nil || len(res.Errors) > 0 {
				t.Fatal(err, res.Errors)
			}
		}
	}
	var sc seriesChecker
	n := 0
	err = st.ExportSeries(func(s *memstore.ImportSeries) error {
		one := []Series{*s}
		one[0].Chunks = slices.Clone(s.Chunks)
		if err := sc.check(one); err != nil {
			return err
		}
		n++
		return checkChunks(one)
	})
	if err != nil || n != 120 {
		t.Fatalf("exported %d series: %v", n, err)
	}
}
