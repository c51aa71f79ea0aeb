package transfer

import (
	"cmp"
	"context"
	crand "crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/raftingest/raftingest/memstore"
	"github.com/raftingest/raftingest/ringstate"
	"github.com/raftingest/raftingest/transferpb"
)

// errCannotHandOver marks a failure of the leaver's own store that no retry can change: a series a
// joiner would refuse (see validate.go: tenant or labels invalid, or larger than a frame).
var errCannotHandOver = errors.New("transfer: this member's data cannot be handed over")

// ErrNoHandover is returned by Leave when no hand-over succeeded within -ingester.max-transfer-retries
// attempts and there is no storage to flush to: the member must stay LEAVING with its tokens and WAL.
var ErrNoHandover = errors.New("transfer: no hand-over succeeded and no storage is configured to flush to")

// Dialer opens a Transfer client to a joiner's gRPC address; close releases it. Its streams must
// not keep a Frame (nor its payload) once Send returns, as gRPC's do (SendMsg marshals the
// message before it returns): the Leaver reuses the payload buffer for the next frame.
type Dialer func(ctx context.Context, addr string) (client transferpb.TransferClient, close func() error, err error)

// GRPCDialer dials addr with plaintext gRPC (the cluster's other gRPC clients do the same).
func GRPCDialer(_ context.Context, addr string) (transferpb.TransferClient, func() error, error) {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, nil, fmt.Errorf("dial joiner %s: %w", addr, err)
	}
	return transferpb.NewTransferClient(conn), conn.Close, nil
}

// Leaver is the sending half of the hand-over: Leave is the lifecycle's OnLeaving hook. Safe for
// sequential calls from one goroutine (the lifecycle calls OnLeaving on one worker at a time).
type Leaver struct {
	cfg   Config
	id    ringstate.MemberID
	ring  Ring
	store Store
	dial  Dialer
	// flush writes everything in memory to storage and drops it from memory and the WAL; nil when
	// no storage is configured.
	flush func(ctx context.Context) error
	// handOverBlocks sends the member's blocks to a claimed joiner; nil: none to send.
	handOverBlocks func(ctx context.Context, joiner ringstate.Member) error
	zoneAware      bool
	m              *Metrics
	log            *slog.Logger
	nonce          string
	seq            atomic.Uint64
	// current is the stream in flight, for Progress; nil when none.
	current atomic.Pointer[Progress]
}

// Progress is a hand-over stream in flight, as the leaver sees it: what it has sent of what it
// holds, and how fast. Published after every frame and cleared when the stream ends.
type Progress struct {
	Joiner      string `json:"joiner"`
	Series      int64  `json:"series"`
	SeriesTotal int64  `json:"series_total"`
	Bytes       int64  `json:"bytes"`
	// BytesTotalEst extrapolates the bytes sent per chunk to the chunks held.
	BytesTotalEst int64   `json:"bytes_total_estimate"`
	SeriesPerS    float64 `json:"series_per_second"`
	// TimeLeftSeconds is at the current rate; 0 when unknown.
	TimeLeftSeconds float64 `json:"time_left_seconds"`
	ElapsedSeconds  float64 `json:"elapsed_seconds"`
}

// Progress returns the hand-over stream in flight, if any.
func (l *Leaver) Progress() (Progress, bool) {
	p := l.current.Load()
	if p == nil {
		return Progress{}, false
	}
	return *p, true
}

// LeaverDeps are the Leaver's collaborators. Flush may be nil (no storage configured).
type LeaverDeps struct {
	ID    ringstate.MemberID
	Ring  Ring
	Store Store
	Dial  Dialer // nil: GRPCDialer
	Flush func(ctx context.Context) error
	// HandOverBlocks, when set, makes every block of this member's node-local bucket durable on the
	// joiner, and returns only then (nil) or with why not. Each attempt calls it once the joiner is
	// claimed and before the chunk stream, so that the joiner holds the blocks when it commits
	// CompleteHandover at the stream's end; an error fails the attempt (aborted, retried like a
	// failed stream). Blocks are immutable and the joiner answers blocks it has as already
	// present, so a retried attempt sends only what is missing. nil: no blocks to move (no storage,
	// or a shared bucket).
	HandOverBlocks func(ctx context.Context, joiner ringstate.Member) error
	// ZoneAware is -ingester.ring.zone-awareness-enabled: only a PENDING member of this member's own
	// zone may be claimed as joiner (see pickJoiner).
	ZoneAware bool
	Metrics   *Metrics
	Logger    *slog.Logger
}

// NewLeaver validates cfg and returns a Leaver.
func NewLeaver(cfg Config, d LeaverDeps) (*Leaver, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if d.ID == "" || d.Ring == nil || d.Store == nil || d.Metrics == nil {
		return nil, errors.New("transfer: NewLeaver needs an id, a ring, a store and metrics")
	}
	if d.Dial == nil {
		d.Dial = GRPCDialer
	}
	if d.Logger == nil {
		d.Logger = slog.Default()
	}
	return &Leaver{cfg: cfg, id: d.ID, ring: d.Ring, store: d.Store, dial: d.Dial, flush: d.Flush,
		handOverBlocks: d.HandOverBlocks, zoneAware: d.ZoneAware, m: d.Metrics, log: d.Logger, nonce: newNonce()}, nil
}

func newNonce() string {
	var b [8]byte
	if _, err := crand.Read(b[:]); err != nil {
		binary.LittleEndian.PutUint64(b[:], uint64(time.Now().UnixNano()))
	}
	return hex.EncodeToString(b[:])
}

func (l *Leaver) requestID() string {
	return fmt.Sprintf("%s/transfer/%s/%d", l.id, l.nonce, l.seq.Add(1))
}

// Leave makes this LEAVING member's data safe: it hands everything over to a PENDING member (then
// the member is no longer in the ring: CompleteHandover removed it) or, after
// -ingester.max-transfer-retries failed attempts, flushes it to storage. It returns nil only when
// the data is safe; an error means the member must stay LEAVING with its tokens and WAL (the
// lifecycle retries). It returns ctx's error when ctx ends.
func (l *Leaver) Leave(ctx context.Context) error {
	if l.cfg.MaxRetries > 0 {
		start := time.Now()
		err := l.handOver(ctx)
		if err == nil {
			l.m.shutdownDuration.WithLabelValues("transfer", "success").Observe(time.Since(start).Seconds())
			l.dropLocal()
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		l.m.shutdownDuration.WithLabelValues("transfer", "fail").Observe(time.Since(start).Seconds())
		l.log.Warn("hand-over failed, falling back on flushing to storage", "member", l.id,
			"attempts", l.cfg.MaxRetries, "err", err)
	}
	if l.flush == nil {
		return fmt.Errorf("%w (-ingester.max-transfer-retries=%d): staying LEAVING with tokens and WAL so that nothing is lost; "+
			"start a PENDING ingester (-ingester.join-after > 0) to take the hand-over, or stop this one with a second signal and restart it (it resumes ACTIVE from its WAL)",
			ErrNoHandover, l.cfg.MaxRetries)
	}
	start := time.Now()
	if err := l.flush(ctx); err != nil {
		l.m.shutdownDuration.WithLabelValues("flush", "fail").Observe(time.Since(start).Seconds())
		return fmt.Errorf("transfer: flush to storage while leaving: %w", err)
	}
	l.m.shutdownDuration.WithLabelValues("flush", "success").Observe(time.Since(start).Seconds())
	l.log.Info("flushed everything to storage", "member", l.id, "took", time.Since(start))
	return nil
}

// dropLocal forgets the handed-over data (memory and WAL): the joiner owns it now, and a restart of
// this process must not resurrect it as a stale copy. A failure only leaves a stale copy behind.
func (l *Leaver) dropLocal() {
	if _, err := l.store.DropAll(); err != nil {
		l.log.Warn("hand-over done, but could not delete the local copy from the WAL", "member", l.id, "err", err)
	}
}

// pickJoiner returns a PENDING, unpaired member other than self, the one with the newest heartbeat
// first (a dead PENDING member's heartbeat ages; claiming it would only fail the attempt). With zone
// awareness, only one in self's zone: the joiner takes self's tokens and its copies, and in another
// zone it would put a series' copy in a zone that may hold another copy already (a sample acked by
// self and that zone's member would then have both its copies in one zone). Without such a joiner
// the leave ends in the flush fallback, whose blocks go to zone-aware successors.
func pickJoiner(r *ringstate.Ring, self ringstate.MemberID, zoneAware bool) (ringstate.Member, bool) {
	me, _ := r.Member(self)
	var cands []ringstate.Member
	for _, m := range r.Members() {
		if m.ID != self && m.State == ringstate.PENDING && m.HandoverPeer == "" && (!zoneAware || m.Zone == me.Zone) {
			cands = append(cands, m)
		}
	}
	if len(cands) == 0 {
		return ringstate.Member{}, false
	}
	slices.SortFunc(cands, func(a, b ringstate.Member) int {
		return cmp.Or(cmp.Compare(b.HeartbeatMs, a.HeartbeatMs), cmp.Compare(a.ID, b.ID))
	})
	return cands[0], true
}

// handOver runs up to MaxRetries attempts: find and claim a joiner, stream, and learn the outcome.
func (l *Leaver) handOver(ctx context.Context) error {
	// The lifecycle calls us once its LEAVING commit returned; our local ring may lag it by an apply.
	if err := l.waitLeaving(ctx); err != nil {
		return err
	}
	var last error
	for attempt := range l.cfg.MaxRetries {
		if attempt > 0 {
			if err := sleep(ctx, backoff(attempt-1)); err != nil {
				return err
			}
		}
		r := l.ring.Ring()
		me, ok := r.Member(l.id)
		if !ok {
			return fmt.Errorf("transfer: %s is not in the ring (removed by an operator?)", l.id)
		}
		if me.State != ringstate.LEAVING {
			return fmt.Errorf("transfer: %s is %s, not LEAVING", l.id, me.State)
		}
		var joiner ringstate.Member
		if me.HandoverPeer != "" {
			// Paired by an earlier attempt whose abort did not commit: try that joiner again.
			joiner, ok = r.Member(me.HandoverPeer)
		} else {
			joiner, ok = pickJoiner(r, l.id, l.zoneAware)
		}
		if !ok {
			l.m.attempts.WithLabelValues("no_joiner").Inc()
			last = errors.New("no PENDING member to hand over to")
			if l.zoneAware {
				last = fmt.Errorf("no PENDING member of zone %q to hand over to (zone-aware: a joiner must be in the leaver's zone)", me.Zone)
			}
			l.log.Info("no PENDING member to hand over to yet", "member", l.id, "attempt", attempt+1,
				"of", l.cfg.MaxRetries, "retry_in", backoff(attempt))
			continue
		}
		epoch, err := applyRetry(ctx, l.ring, ringstate.Command{Op: ringstate.OpClaimJoiner, Member: l.id,
			Peer: joiner.ID, RequestID: l.requestID()})
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			l.m.attempts.WithLabelValues("claim_refused").Inc()
			last = fmt.Errorf("claim %s: %w", joiner.ID, err)
			l.log.Info("could not claim joiner", "member", l.id, "joiner", joiner.ID, "attempt", attempt+1, "err", err)
			continue
		}
		l.log.Info("claimed joiner, handing over", "member", l.id, "joiner", joiner.ID, "epoch", epoch,
			"attempt", attempt+1, "tokens", len(me.Tokens))
		if l.handOverBlocks != nil {
			if err = l.handOverBlocks(ctx, joiner); err != nil {
				err = fmt.Errorf("blocks: %w", err)
			}
		}
		if err == nil {
			err = l.stream(ctx, joiner, epoch)
		}
		if err == nil {
			l.m.attempts.WithLabelValues("ok").Inc()
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if errors.Is(err, errCannotHandOver) {
			// No attempt can succeed: release the joiner and fall back on flushing at once.
			if done, _ := l.abort(ctx, joiner.ID, me.Tokens); done {
				return nil // the joiner got no trailer and cannot have completed; but the ring is the truth
			}
			l.m.attempts.WithLabelValues("failed").Inc()
			l.log.Warn("this member holds data no joiner would accept; not retrying the hand-over", "member", l.id,
				"joiner", joiner.ID, "err", err)
			return err
		}
		// The stream failed, but the joiner may have committed CompleteHandover before its answer
		// was lost. Abort (a no-op if it completed) and read the ring after the abort to know.
		done, aerr := l.abort(ctx, joiner.ID, me.Tokens)
		if done {
			l.log.Info("hand-over completed although the stream reported an error", "member", l.id,
				"joiner", joiner.ID, "stream_err", err)
			l.m.attempts.WithLabelValues("ok").Inc()
			return nil
		}
		l.m.attempts.WithLabelValues("failed").Inc()
		last = fmt.Errorf("hand-over to %s (epoch %d): %w", joiner.ID, epoch, err)
		l.log.Warn("hand-over attempt failed, aborted", "member", l.id, "joiner", joiner.ID, "epoch", epoch,
			"attempt", attempt+1, "of", l.cfg.MaxRetries, "err", err, "abort_err", aerr)
	}
	if last == nil {
		last = errors.New("no attempt made")
	}
	return last
}

// waitLeaving waits (up to -ingester.transfer-timeout) until the local ring shows this member
// LEAVING or no longer holds it.
func (l *Leaver) waitLeaving(ctx context.Context) error {
	wctx, cancel := context.WithTimeout(ctx, l.cfg.Timeout)
	defer cancel()
	for {
		ch := l.ring.Changed()
		me, ok := l.ring.Ring().Member(l.id)
		if !ok || me.State == ringstate.LEAVING {
			return nil
		}
		select {
		case <-ch:
		case <-wctx.Done():
			return fmt.Errorf("transfer: the local ring still shows %s %s, not LEAVING: %w", l.id, me.State, wctx.Err())
		}
	}
}

// abort commits AbortHandover(self, joiner) and reports whether the ring, read after that commit,
// shows the hand-over completed instead: self gone and the joiner ACTIVE with all of tokens.
func (l *Leaver) abort(ctx context.Context, joiner ringstate.MemberID, tokens ringstate.Tokens) (bool, error) {
	actx, cancel := context.WithTimeout(ctx, l.cfg.Timeout)
	defer cancel()
	idx, err := applyRetry(actx, l.ring, ringstate.Command{Op: ringstate.OpAbortHandover, Member: l.id, Peer: joiner,
		RequestID: l.requestID()})
	if err != nil && !isRefusal(err) {
		return false, err
	}
	if err := l.ring.WaitApplied(actx, idx); err != nil {
		return false, err
	}
	r := l.ring.Ring()
	if _, present := r.Member(l.id); present {
		return false, err
	}
	j, ok := r.Member(joiner)
	if !ok || j.State != ringstate.ACTIVE {
		return false, err
	}
	for _, t := range tokens {
		if _, found := slices.BinarySearch(j.Tokens, t); !found {
			return false, err
		}
	}
	return true, nil
}

// progress logs a hand-over's progress every progressEvery, and publishes it after every frame.
type progress struct {
	log                      *slog.Logger
	start, last              time.Time
	totalSeries, totalChunks int64
	series, chunks, bytes    int64
	member, joiner           ringstate.MemberID
	publish                  func(Progress)
}

const progressEvery = 5 * time.Second

func (p *progress) report(final bool) {
	now := time.Now()
	el := now.Sub(p.start).Seconds()
	if p.publish != nil {
		rate := float64(p.series) / max(el, 1e-3)
		var left float64
		if rate > 0 && p.totalSeries > p.series {
			left = float64(p.totalSeries-p.series) / rate
		}
		est := p.bytes
		if p.chunks > 0 && p.totalChunks > p.chunks {
			est = p.bytes * p.totalChunks / p.chunks
		}
		p.publish(Progress{Joiner: string(p.joiner), Series: p.series, SeriesTotal: p.totalSeries, Bytes: p.bytes,
			BytesTotalEst: est, SeriesPerS: rate, TimeLeftSeconds: left, ElapsedSeconds: el})
	}
	if !final && now.Sub(p.last) < progressEvery {
		return
	}
	p.last = now
	rate := float64(p.series) / max(el, 1e-3)
	var left time.Duration
	if rate > 0 && p.totalSeries > p.series {
		left = time.Duration(float64(p.totalSeries-p.series) / rate * float64(time.Second)).Round(time.Second)
	}
	bytesTotal := p.bytes
	if p.chunks > 0 && p.totalChunks > p.chunks {
		bytesTotal = p.bytes * p.totalChunks / p.chunks
	}
	msg := "hand-over progress"
	if final {
		msg = "hand-over stream sent"
	}
	p.log.Info(msg, "member", p.member, "joiner", p.joiner,
		"series", p.series, "series_total", p.totalSeries, "chunks", p.chunks, "chunks_total", p.totalChunks,
		"bytes", p.bytes, "bytes_total_est", bytesTotal,
		"series_per_s", int64(rate), "mb_per_s", fmt.Sprintf("%.1f", float64(p.bytes)/1e6/max(el, 1e-3)),
		"time_left", left, "elapsed", now.Sub(p.start).Round(time.Millisecond))
}

// stream sends every series to the joiner and waits for its answer, which comes only after the
// joiner committed CompleteHandover.
func (l *Leaver) stream(ctx context.Context, joiner ringstate.Member, epoch uint64) error {
	if joiner.GRPCAddr == "" {
		return fmt.Errorf("joiner %s has no gRPC address in the ring", joiner.ID)
	}
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	client, closeConn, err := l.dial(sctx, joiner.GRPCAddr)
	if err != nil {
		return err
	}
	defer closeConn()
	st, err := client.TransferChunks(sctx)
	if err != nil {
		return fmt.Errorf("open stream to %s at %s: %w", joiner.ID, joiner.GRPCAddr, err)
	}
	p := &progress{log: l.log, start: time.Now(), last: time.Now(), member: l.id, joiner: joiner.ID,
		publish: func(pr Progress) { l.current.Store(&pr) }}
	defer l.current.Store(nil)
	for _, t := range l.store.Tenants() {
		s := l.store.Stats(t)
		p.totalSeries += s.Series
		p.totalChunks += s.Chunks
	}
	var (
		tot Totals
		seq uint64
	)
	// The joiner refuses a frame above its receive limit (the same flag here): a frame carries at
	// most this much payload.
	maxPayload := l.cfg.MaxRecvMsgSize - frameOverhead - len(l.id)
	send := func(kind transferpb.FrameKind, payload []byte) error {
		if err := sleep(sctx, l.cfg.TestDelay); err != nil {
			return err
		}
		f := sealFrame(&transferpb.Frame{Leaver: string(l.id), Epoch: epoch, Seq: seq, Kind: kind, Payload: payload})
		if err := st.Send(f); err != nil {
			return fmt.Errorf("send frame %d to %s: %w", seq, joiner.ID, err)
		}
		seq++
		l.m.sentBytes.Add(float64(len(payload)))
		return nil
	}
	// The walk (encoding frames) runs on a goroutine of its own, up to framesAhead frames ahead of
	// this one, which sends them: a Send that waits for the joiner (gRPC flow control) no longer
	// stops the walk, nor the walk the sending. Payload buffers go round between the two (a
	// stream does not keep a frame once Send returns, see Dialer): nothing is allocated per frame.
	type readyFrame struct {
		payload           []byte
		series, chunks    int
		seriesIn, chunkIn int64 // series and chunks walked so far, for the progress
	}
	const framesAhead = 2
	ready := make(chan readyFrame, framesAhead)
	free := make(chan []byte, framesAhead+1)
	for range framesAhead + 1 {
		free <- nil
	}
	wctx, wcancel := context.WithCancel(sctx)
	defer wcancel()
	walkErr := make(chan error, 1)
	go func() {
		defer close(ready)
		var (
			body           []byte
			n, nChunks     int
			series, chunks int64
			sc             seriesChecker
			one            [1]Series
		)
		// emit queues the first n series of body (body[:size]) as one frame, and keeps the rest.
		emit := func(size, n, nChunks int) error {
			var payload []byte
			select {
			case payload = <-free:
			case <-wctx.Done():
				return wctx.Err()
			}
			payload = binary.AppendUvarint(payload[:0], uint64(n))
			payload = append(payload, body[:size]...)
			body = body[:copy(body, body[size:])]
			select {
			case ready <- readyFrame{payload: payload, series: n, chunks: nChunks, seriesIn: series, chunkIn: chunks}:
				return nil
			case <-wctx.Done():
				return wctx.Err()
			}
		}
		err := l.store.ExportSeries(func(s *memstore.ImportSeries) error {
			// What the joiner would refuse is not sent: the whole hand-over could never complete.
			one[0] = *s
			if err := sc.check(one[:]); err != nil {
				return fmt.Errorf("%w: %v", errCannotHandOver, err)
			}
			start := len(body)
			body = appendSeries(body, s)
			if size := len(body) - start; size+binary.MaxVarintLen64 > maxPayload {
				return fmt.Errorf("%w: series %s of tenant %q takes %d bytes, more than a frame may hold (-ingester.transfer-max-recv-msg-size=%d)",
					errCannotHandOver, safeLabels(s.Labels), s.Tenant, size, l.cfg.MaxRecvMsgSize)
			}
			if len(body)+binary.MaxVarintLen64 > maxPayload {
				// This series does not fit beside the ones before it: they go first, alone.
				if err := emit(start, n, nChunks); err != nil {
					return err
				}
				n, nChunks = 0, 0
			}
			tot.add(s)
			n++
			nChunks += len(s.Chunks)
			series++
			chunks += int64(len(s.Chunks))
			if len(body) >= l.cfg.FrameBytes {
				err := emit(len(body), n, nChunks)
				n, nChunks = 0, 0
				return err
			}
			return nil
		})
		if err == nil && n > 0 {
			err = emit(len(body), n, nChunks)
		}
		walkErr <- err
	}()
	for fr := range ready {
		if err = send(transferpb.FrameKind_FRAME_KIND_SERIES, fr.payload); err != nil {
			break
		}
		l.m.sentSeries.Add(float64(fr.series))
		l.m.sentChunks.Add(float64(fr.chunks))
		p.bytes += int64(len(fr.payload))
		p.series, p.chunks = fr.seriesIn, fr.chunkIn
		p.report(false)
		free <- fr.payload
	}
	// A send error stops the walk; the walk's own error (it ended ready) is read either way, so
	// that tot is complete (written by the walk before it reports) when the trailer goes out.
	// A walk that found a series the joiner cannot take wins over a send error of a frame walked
	// before it: Leave flushes at once on errCannotHandOver instead of backing off and retrying.
	wcancel()
	if werr := <-walkErr; err == nil || errors.Is(werr, errCannotHandOver) {
		err = werr
	}
	if err == nil {
		err = send(transferpb.FrameKind_FRAME_KIND_TRAILER, encodeTrailer(tot))
	}
	if err != nil {
		// The joiner's own error, if it stopped the stream, is more useful than EOF.
		if _, rerr := st.CloseAndRecv(); rerr != nil {
			return fmt.Errorf("%w (joiner said: %v)", err, rerr)
		}
		return err
	}
	p.report(true)
	res, err := st.CloseAndRecv()
	if err != nil {
		return fmt.Errorf("hand-over to %s: %w", joiner.ID, err)
	}
	if got := (Totals{Series: res.GetSeries(), Chunks: res.GetChunks(), Bytes: res.GetBytes()}); got != tot {
		// The joiner committed CompleteHandover, so it owns the tokens now; a mismatch here is a
		// bug on one side, and nothing can be undone. Say so loudly.
		l.log.Error("joiner acknowledged other totals than were sent", "member", l.id, "joiner", joiner.ID,
			"sent", tot, "acknowledged", got)
	}
	l.log.Info("handed over", "member", l.id, "joiner", joiner.ID, "epoch", epoch, "series", tot.Series,
		"chunks", tot.Chunks, "bytes", tot.Bytes, "complete_index", res.GetCompleteIndex(), "took", time.Since(p.start))
	return nil
}
