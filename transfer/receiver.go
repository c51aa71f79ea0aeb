package transfer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/raftingest/raftingest/ringstate"
	"github.com/raftingest/raftingest/transferpb"
)

// MarkerFileName is the file, in the data directory, that marks the store as holding data received
// in a hand-over that has not completed. See Receiver.
const MarkerFileName = "handover-receiving.json"

// Receiver is the joining half of the hand-over: the Transfer gRPC service, and (Run) a watcher
// that aborts a hand-over whose leaver went silent and discards data of a hand-over that did not
// complete.
//
// Why discarding is "truncate everything": only an ACTIVE member takes writes, so everything in the
// store of a PENDING or receiving member was received in a hand-over. Before importing the first
// chunk the Receiver writes (and fsyncs) a marker file; it removes the marker once the ring shows
// the member ACTIVE (the hand-over completed: the data is its own). Whenever a marker exists and a
// linearizable read of the ring shows the member PENDING (aborted, or restarted: the ring's
// register fix-up turned JOINING into PENDING), the store is truncated entirely — memory and WAL —
// and the marker removed. A store that holds data without a marker is never truncated: the
// Receiver refuses hand-overs instead.
type Receiver struct {
	transferpb.UnimplementedTransferServer

	cfg    Config
	id     ringstate.MemberID
	ring   Ring
	store  Store
	marker string
	m      *Metrics
	log    *slog.Logger
	nonce  string
	seq    atomic.Uint64

	// sem admits one transfer or one settle at a time (buffered 1).
	sem chan struct{}
	// authorize and bulkLoad are ReceiverDeps.Authorize and BulkLoad; immutable.
	authorize func(ctx context.Context, leaver ringstate.MemberID) error
	bulkLoad  func() (end func())
	// lastFrame is when the last frame arrived or stream started, as nanoseconds since base. The
	// timeout that aborts a silent hand-over is measured on base's monotonic reading, so a step of
	// the host's wall clock neither aborts a live hand-over nor delays the abort of a dead one.
	lastFrame atomic.Int64
	base      time.Time
	// epochFloor is the highest epoch of a stream this process accepted (written under sem). A claim
	// is used by one stream only: a stream whose epoch is not above it belongs to an earlier,
	// aborted or completed claim (a stale attempt) and is refused. Raft indexes only grow, so a
	// newer claim always has a higher epoch.
	epochFloor atomic.Uint64

	// pairedPeer and pairedSince are the watcher's view of the current claim (Run's goroutine only).
	pairedPeer  ringstate.MemberID
	pairedSince time.Time
}

// ReceiverDeps are the Receiver's collaborators.
type ReceiverDeps struct {
	ID    ringstate.MemberID
	Ring  Ring
	Store Store
	// DataDir holds the marker file (MarkerFileName).
	DataDir string
	Metrics *Metrics
	Logger  *slog.Logger
	// Authorize, when set, is asked after a stream's first frame whether the stream's caller may
	// hand over as that frame's leaver (under mutual TLS: the caller's certificate names the
	// leaver); its error, a gRPC status, ends the stream before anything is imported. nil allows
	// every caller. Whether the ring pairs the leaver with this node is checked afterwards anyway.
	Authorize func(ctx context.Context, leaver ringstate.MemberID) error
	// BulkLoad, when set, is called when a stream's imports start and the function it returns (at
	// most once) when the last has ended, whatever the outcome (the ingester raises GOGC in between:
	// most of what an import allocates stays live). nil does nothing.
	BulkLoad func() (end func())
}

// NewReceiver validates cfg and returns a Receiver. Register it on a gRPC server and call Run.
func NewReceiver(cfg Config, d ReceiverDeps) (*Receiver, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if d.ID == "" || d.Ring == nil || d.Store == nil || d.Metrics == nil || d.DataDir == "" {
		return nil, errors.New("transfer: NewReceiver needs an id, a ring, a store, metrics and a data directory")
	}
	if d.Logger == nil {
		d.Logger = slog.Default()
	}
	return &Receiver{base: time.Now(), cfg: cfg, id: d.ID, ring: d.Ring, store: d.Store, marker: filepath.Join(d.DataDir, MarkerFileName),
		m: d.Metrics, log: d.Logger, nonce: newNonce(), sem: make(chan struct{}, 1), authorize: d.Authorize, bulkLoad: d.BulkLoad}, nil
}

func (r *Receiver) requestID() string {
	return fmt.Sprintf("%s/receive/%s/%d", r.id, r.nonce, r.seq.Add(1))
}

type markerContent struct {
	Leaver string `json:"leaver"`
	Epoch  uint64 `json:"epoch"`
}

func (r *Receiver) readMarker() (markerContent, bool, error) {
	b, err := os.ReadFile(r.marker)
	if errors.Is(err, fs.ErrNotExist) {
		return markerContent{}, false, nil
	}
	if err != nil {
		return markerContent{}, false, fmt.Errorf("read hand-over marker %s: %w", r.marker, err)
	}
	var mc markerContent
	if err := json.Unmarshal(b, &mc); err != nil {
		// A torn marker still marks received data: its presence is what counts.
		return markerContent{}, true, nil
	}
	return mc, true, nil
}

// writeMarker writes the marker durably (temp file, fsync, rename, directory fsync) before any
// chunk is imported: a crash after the first import must find it.
func (r *Receiver) writeMarker(mc markerContent) error {
	b, _ := json.Marshal(mc)
	tmp := r.marker + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return fmt.Errorf("write hand-over marker: %w", err)
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return fmt.Errorf("write hand-over marker %s: %w", tmp, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("fsync hand-over marker %s: %w", tmp, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("close hand-over marker %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, r.marker); err != nil {
		return fmt.Errorf("rename hand-over marker to %s: %w", r.marker, err)
	}
	return syncDir(filepath.Dir(r.marker))
}

func (r *Receiver) removeMarker() error {
	if err := os.Remove(r.marker); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove hand-over marker: %w", err)
	}
	return syncDir(filepath.Dir(r.marker))
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("open %s to fsync it: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("fsync %s: %w", dir, err)
	}
	return nil
}

// storeEmpty reports whether the store holds no series.
func (r *Receiver) storeEmpty() bool {
	for _, t := range r.store.Tenants() {
		if r.store.Stats(t).Series > 0 {
			return false
		}
	}
	return true
}

// discard drops everything from the store (memory and WAL), then the marker. Caller holds sem.
func (r *Receiver) discard(why string) error {
	st, err := r.store.DropAll()
	if err != nil {
		return fmt.Errorf("discard partial hand-over data: %w", err)
	}
	if err := r.removeMarker(); err != nil {
		return err
	}
	r.log.Info("discarded data of a hand-over that did not complete", "member", r.id, "why", why,
		"series", st.SeriesRemoved, "chunks", st.ChunksRemoved, "wal_records_deleted", st.WALRecordsDeleted)
	return nil
}

// paired reports whether ring shows leaver handing over to this member.
func (r *Receiver) paired(ring *ringstate.Ring, leaver ringstate.MemberID) error {
	me, ok := ring.Member(r.id)
	if !ok {
		return fmt.Errorf("%s is not in the ring", r.id)
	}
	if me.State != ringstate.JOINING || me.HandoverPeer != leaver {
		return fmt.Errorf("the ring shows %s %s with hand-over peer %q, not JOINING from %s", r.id, me.State, me.HandoverPeer, leaver)
	}
	l, ok := ring.Member(leaver)
	if !ok || l.State != ringstate.LEAVING || l.HandoverPeer != r.id {
		return fmt.Errorf("the ring shows leaver %s %s with peer %q", leaver, l.State, l.HandoverPeer)
	}
	return nil
}

// TransferChunks receives one hand-over attempt. See the Transfer service in proto/transfer.proto.
//
// Nothing a stream does before the ring shows its leaver paired with this member holds the
// hand-over slot (sem): the first frame's checks, the wait for the claim's index and the pairing
// check come first, so that a stream nobody claimed — garbage, a stale attempt, an epoch the ring
// never reaches — cannot keep a real hand-over (or the watcher) waiting. Once it holds the slot, a
// stream is bounded by frameSource: -ingester.transfer-timeout per frame, and a budget for the
// whole stream that grows only with the bytes received.
func (r *Receiver) TransferChunks(st transferpb.Transfer_TransferChunksServer) error {
	ctx, cancel := context.WithCancel(st.Context())
	defer cancel()
	// Frames are read ahead of the receiving loop, up to ImportConcurrency of them: while every
	// import slot is busy the loop takes no frame, and without a buffer here gRPC's flow control
	// then stopped the leaver, whose walk stood still until the loop took a frame again — the two
	// sides took turns instead of working at once. At most ImportConcurrency more frames of at
	// most -ingester.transfer-max-recv-msg-size each are held (one -ingester.transfer-frame-bytes
	// each, normally).
	frames := make(chan *transferpb.Frame, r.cfg.ImportConcurrency)
	recvErr := make(chan error, 1)
	go func() {
		for {
			f, err := st.Recv()
			if err != nil {
				recvErr <- err
				return
			}
			select {
			case frames <- f:
			case <-ctx.Done():
				return
			}
		}
	}()
	src := &frameSource{r: r, ctx: ctx, frames: frames, recvErr: recvErr}
	first, err := src.next()
	if err != nil {
		if errors.Is(err, io.EOF) {
			return status.Error(codes.InvalidArgument, "transfer: empty stream: a hand-over is never empty (it ends with a trailer)")
		}
		if s, ok := status.FromError(err); ok && s.Code() != codes.Unknown {
			return err // from gRPC itself or its interceptors (a frame above the receive limit)
		}
		return status.Errorf(codes.Aborted, "transfer: %v", err)
	}
	if r.authorize != nil {
		if err := r.authorize(ctx, ringstate.MemberID(first.GetLeaver())); err != nil {
			return err
		}
	}
	if err := checkFrame(first); err != nil {
		return status.Error(codes.InvalidArgument, err.Error())
	}
	leaver, epoch := ringstate.MemberID(first.GetLeaver()), first.GetEpoch()
	log := r.log.With("member", r.id, "leaver", leaver, "epoch", epoch)
	stale := func() error {
		if floor := r.epochFloor.Load(); epoch <= floor {
			return status.Errorf(codes.FailedPrecondition, "transfer: refusing hand-over from %s: epoch %d is stale (%s already accepted a stream of epoch %d)",
				leaver, epoch, r.id, floor)
		}
		return nil
	}
	if err := stale(); err != nil {
		return err
	}
	// The claim was committed at index epoch; our ring may lag it by an apply.
	ring, err := r.ringAt(ctx, epoch)
	if err != nil {
		return status.Errorf(codes.Unavailable, "transfer: ring of %s did not reach the claim's index %d: %v", r.id, epoch, err)
	}
	if err := r.paired(ring, leaver); err != nil {
		return status.Errorf(codes.FailedPrecondition, "transfer: refusing hand-over from %s: %v", leaver, err)
	}
	// caught is closed once the local ring holds the claim: until then a frame cannot be checked
	// against it (see receive).
	caught := make(chan struct{})
	go func() {
		if r.ring.WaitApplied(ctx, epoch) == nil {
			close(caught)
		}
	}()

	// One transfer at a time; the watcher's settle takes the same slot.
	waited := false
	select {
	case r.sem <- struct{}{}:
	default:
		waited = true
		select {
		case r.sem <- struct{}{}:
		case <-time.After(r.cfg.Timeout):
			return status.Errorf(codes.Unavailable, "transfer: %s is busy with another hand-over", r.id)
		case <-ctx.Done():
			return status.FromContextError(ctx.Err()).Err()
		}
	}
	defer func() { <-r.sem }()
	r.lastFrame.Store(int64(time.Since(r.base)))
	// Checked again under the slot: another stream of this claim may have taken it meanwhile, or the
	// claim ended while we waited for it.
	if err := stale(); err != nil {
		return err
	}
	// The ring read above is as fresh as any when the slot was free; after a wait, or once the
	// local ring holds the claim, read again.
	select {
	case <-caught:
		ring = r.ring.Ring()
	default:
		if waited {
			if ring, err = r.ringAt(ctx, epoch); err != nil {
				return status.Errorf(codes.Unavailable, "transfer: ring of %s did not reach the claim's index %d: %v", r.id, epoch, err)
			}
		}
	}
	if err := r.paired(ring, leaver); err != nil {
		return status.Errorf(codes.FailedPrecondition, "transfer: refusing hand-over from %s: %v", leaver, err)
	}
	r.epochFloor.Store(epoch)

	res, err := r.receive(ctx, st, log, first, src, leaver, epoch, caught)
	if err == nil {
		return st.SendAndClose(res)
	}
	log.Warn("hand-over not completed", "err", err)
	r.afterFailure(leaver)
	if _, ok := status.FromError(err); ok && status.Code(err) != codes.Unknown {
		return err
	}
	return status.Errorf(codes.Aborted, "transfer to %s: %v", r.id, err)
}

// ringAt returns a ring that reflects at least index: a linearizable read (through the leader),
// else — no quorum, or the read is behind index — the local ring once it has applied index, within
// -ingester.transfer-timeout. The local ring of a follower learns of a commit only with the
// leader's next append, up to twice -raft.commit-timeout after it (50–100 ms by default): the
// claim is always committed by the time its stream starts, so the linearizable read spares the
// joiner that wait.
func (r *Receiver) ringAt(ctx context.Context, index uint64) (*ringstate.Ring, error) {
	lctx, cancel := context.WithTimeout(ctx, min(r.cfg.Timeout, attemptTimeout))
	ring, at, err := r.ring.LinearizableRing(lctx)
	cancel()
	if err == nil && at >= index {
		return ring, nil
	}
	wctx, wcancel := context.WithTimeout(ctx, r.cfg.Timeout)
	defer wcancel()
	if err := r.ring.WaitApplied(wctx, index); err != nil {
		return nil, err
	}
	return r.ring.Ring(), nil
}

// hasten makes the local ring apply index sooner when it has not yet: a follower learns of a
// commit only with the leader's next append, up to twice -raft.commit-timeout (50–100 ms by
// default) after it, and the joiner's ring must show it ACTIVE before it answers the leaver and
// is ready. A linearizable read appends a barrier through the leader (raftfsm: VerifyLeader and
// Barrier), and the barrier's replication carries the commit index to this member at once. Best
// effort, and beside the caller's own wait for the local ring, never instead of it: the read runs
// in the background until stop is called (a read stuck on a leader change takes none of the
// wait's time); stop ends it and returns once it has.
func (r *Receiver) hasten(ctx context.Context, index uint64) (stop func()) {
	done, cancel := context.WithCancel(ctx)
	cancel() // WaitApplied on an ended context only says whether index is applied already
	if r.ring.WaitApplied(done, index) == nil {
		return func() {}
	}
	lctx, lcancel := context.WithTimeout(ctx, min(r.cfg.Timeout, attemptTimeout))
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		_, _, _ = r.ring.LinearizableRing(lctx)
	}()
	return func() { lcancel(); <-finished }
}

// frameSource hands the receiving loop the stream's frames, in order, and bounds how long the
// leaver may make it wait (every wait after the first frame counts, time spent importing does not):
//
//   - for each frame: -ingester.transfer-timeout, as before (a leaver that went silent);
//   - for the whole stream: -ingester.transfer-timeout, plus as much again for every
//     -ingester.transfer-frame-bytes of payload received. A leaver streams its store as fast as
//     the network allows, each full frame earning the time the per-frame timer gives it; one that
//     dribbles (a tiny or empty frame every timeout−ε, or one byte at a time) exhausts the budget
//     after about one timeout and cannot hold the hand-over slot any longer.
//
// Used by one goroutine.
type frameSource struct {
	r       *Receiver
	ctx     context.Context
	frames  <-chan *transferpb.Frame
	recvErr <-chan error

	started  bool          // the first frame arrived
	waited   time.Duration // waiting for frames since the first one
	received int64         // payload bytes received, the first frame's included
	// ended is the receiving goroutine's last word (io.EOF or an error), once read: it comes after
	// every frame it read, which may still wait in frames (read ahead), so it is returned only
	// once frames is empty.
	ended error
}

// budget is the total wait the stream has earned so far.
func (fs *frameSource) budget() time.Duration {
	cfg := fs.r.cfg
	earned := float64(cfg.Timeout) * (1 + float64(fs.received)/float64(cfg.FrameBytes))
	return time.Duration(min(earned, float64(math.MaxInt64/2)))
}

// next returns the next frame, io.EOF at the end of the stream, or an error when the leaver is
// silent for -ingester.transfer-timeout or has used up the stream's budget.
func (fs *frameSource) next() (*transferpb.Frame, error) {
	got := func(f *transferpb.Frame) (*transferpb.Frame, error) {
		fs.r.lastFrame.Store(int64(time.Since(fs.r.base)))
		fs.received += int64(len(f.GetPayload()))
		fs.started = true
		return f, nil
	}
	select { // a frame already waiting is taken whatever the budget says
	case f := <-fs.frames:
		return got(f)
	default:
	}
	if fs.ended != nil {
		return nil, fs.ended
	}
	timeout, byBudget := fs.r.cfg.Timeout, false
	if fs.started {
		if left := fs.budget() - fs.waited; left < timeout {
			timeout, byBudget = left, true
		}
	}
	if timeout <= 0 {
		return nil, fs.slow()
	}
	start := time.Now()
	t := time.NewTimer(timeout)
	defer t.Stop()
	wasStarted := fs.started
	waited := func() {
		if wasStarted {
			fs.waited += time.Since(start)
		}
	}
	select {
	case f := <-fs.frames:
		waited()
		return got(f)
	case err := <-fs.recvErr:
		// Sent after the goroutine's last frame: a frame read ahead of it goes first.
		fs.ended = err
		select {
		case f := <-fs.frames:
			waited()
			return got(f)
		default:
		}
		return nil, err
	case <-t.C:
		waited()
		if byBudget {
			return nil, fs.slow()
		}
		return nil, fmt.Errorf("the leaver sent nothing for %s (-ingester.transfer-timeout)", fs.r.cfg.Timeout)
	case <-fs.ctx.Done():
		return nil, fs.ctx.Err()
	}
}

func (fs *frameSource) slow() error {
	return status.Errorf(codes.DeadlineExceeded, "transfer: the leaver sent %d payload bytes while %s waited %s for them: slower than -ingester.transfer-frame-bytes (%d) per -ingester.transfer-timeout (%s)",
		fs.received, fs.r.id, fs.waited.Round(time.Millisecond), fs.r.cfg.FrameBytes, fs.r.cfg.Timeout)
}

// afterFailure releases the leaver (AbortHandover; a no-op if the pair is already gone or the
// hand-over completed) and settles the store: discard if the ring now shows us PENDING. Caller
// holds sem.
func (r *Receiver) afterFailure(leaver ringstate.MemberID) {
	ctx, cancel := context.WithTimeout(context.Background(), r.cfg.Timeout)
	defer cancel()
	if _, err := applyRetry(ctx, r.ring, ringstate.Command{Op: ringstate.OpAbortHandover, Member: leaver, Peer: r.id,
		RequestID: r.requestID()}); err != nil && !isRefusal(err) {
		r.log.Warn("could not abort the hand-over; the watcher will try again", "member", r.id, "leaver", leaver, "err", err)
		return
	}
	r.settleLocked(ctx)
}

// receive imports every frame's series, checks the trailer, commits CompleteHandover and waits
// until the local ring shows it.
//
// caught is closed once the local ring has applied the claim (index epoch). Before that the local
// ring still shows this member PENDING, so frames are not checked against it: the pairing was
// checked on a linearizable read (ringAt), and an abort in the meantime is noticed at the next
// frame after the local ring catches up — or at the latest by CompleteHandover, which the ring
// refuses for a pair it no longer holds.
func (r *Receiver) receive(ctx context.Context, st transferpb.Transfer_TransferChunksServer, log *slog.Logger,
	f *transferpb.Frame, src *frameSource, leaver ringstate.MemberID, epoch uint64, caught <-chan struct{}) (*transferpb.TransferResult, error) {
	next := src.next
	// Leftovers of an earlier attempt go first; data of unknown origin is never discarded.
	_, hasMarker, err := r.readMarker()
	if err != nil {
		return nil, err
	}
	if hasMarker {
		if err := r.discard("leftover of an earlier attempt, before a new hand-over"); err != nil {
			return nil, err
		}
	} else if !r.storeEmpty() {
		return nil, status.Errorf(codes.FailedPrecondition,
			"transfer: %s holds series it did not receive in a hand-over (a WAL from an earlier life?); it will not mix a hand-over into them", r.id)
	}
	if err := r.writeMarker(markerContent{Leaver: string(leaver), Epoch: epoch}); err != nil {
		return nil, err
	}
	// The bulk-load window covers the imports only: it is closed once they are all done (below),
	// or on any return before that (after the deferred wg.Wait: defers run last-in first-out).
	endBulk := func() {}
	if r.bulkLoad != nil {
		end, ended := r.bulkLoad(), false
		endBulk = func() {
			if !ended {
				ended = true
				end()
			}
		}
	}
	defer endBulk()
	start := time.Now()
	log.Info("receiving hand-over")

	ictx, icancel := context.WithCancel(ctx)
	defer icancel()
	var (
		wg       sync.WaitGroup
		errOnce  sync.Once
		firstErr error
		slots    = make(chan struct{}, r.cfg.ImportConcurrency)
		got      Totals
		gotMu    sync.Mutex
	)
	fail := func(err error) {
		errOnce.Do(func() { firstErr = err; icancel() })
	}
	defer wg.Wait()
	wantSeq := uint64(0)
	var sc seriesChecker
	for {
		if err := checkFrame(f); err != nil {
			return nil, status.Error(codes.InvalidArgument, err.Error())
		}
		if ringstate.MemberID(f.GetLeaver()) != leaver || f.GetEpoch() != epoch || f.GetSeq() != wantSeq {
			return nil, status.Errorf(codes.InvalidArgument, "transfer: frame %d from %s epoch %d in a stream of %s epoch %d expecting frame %d",
				f.GetSeq(), f.GetLeaver(), f.GetEpoch(), leaver, epoch, wantSeq)
		}
		wantSeq++
		r.m.receivedBytes.Add(float64(len(f.GetPayload())))
		if f.GetKind() == transferpb.FrameKind_FRAME_KIND_TRAILER {
			break
		}
		if f.GetKind() != transferpb.FrameKind_FRAME_KIND_SERIES {
			return nil, status.Errorf(codes.InvalidArgument, "transfer: frame %d has unknown kind %d", f.GetSeq(), f.GetKind())
		}
		// An abort (by the watcher of the leaver, or the leaver restarting) ends the attempt early.
		select {
		case <-caught:
			if err := r.paired(r.ring.Ring(), leaver); err != nil {
				return nil, fmt.Errorf("hand-over no longer in the ring: %w", err)
			}
		default: // the local ring has not applied the claim yet (see above)
		}
		ss, err := checkSeriesFrame(f, r.cfg.MaxRecvMsgSize, &sc)
		if err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "transfer: %v", err)
		}
		if ictx.Err() != nil { // an import failed: nothing more is imported
			return nil, cmpErr(firstErr, ictx.Err())
		}
		// One ImportBatch (one WAL commit) per frame, after its chunks are checked (checkChunks);
		// up to ImportConcurrency frames at once, so that decoding and checking the next frame
		// overlaps the fsync of this one.
		select {
		case slots <- struct{}{}:
		case <-ictx.Done():
			return nil, cmpErr(firstErr, ictx.Err())
		}
		wg.Add(1)
		go func(ss []Series, seq uint64) {
			defer func() { <-slots; wg.Done() }()
			if err := checkChunks(ss); err != nil {
				fail(status.Errorf(codes.InvalidArgument, "transfer: frame %d: %v", seq, err))
				return
			}
			if err := r.store.ImportBatch(ss); err != nil {
				fail(fmt.Errorf("import frame of %d series: %w", len(ss), err))
				return
			}
			var t Totals
			for i := range ss {
				t.add(&ss[i])
			}
			r.m.receivedChunks.Add(float64(t.Chunks))
			r.m.receivedSeries.Add(float64(t.Series))
			gotMu.Lock()
			got.Series += t.Series
			got.Chunks += t.Chunks
			got.Bytes += t.Bytes
			gotMu.Unlock()
		}(ss, f.GetSeq())
		if f, err = next(); err != nil {
			if errors.Is(err, io.EOF) {
				return nil, status.Errorf(codes.InvalidArgument, "transfer: stream ended after frame %d without a trailer (truncated)", wantSeq-1)
			}
			return nil, cmpErr(firstErr, err)
		}
	}
	want, err := decodeTrailer(f.GetPayload())
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "transfer: trailer: %v", err)
	}
	wg.Wait()
	endBulk() // no import runs any more: the ring commits below run at the usual percentage
	if firstErr != nil {
		return nil, firstErr
	}
	if got != want {
		return nil, status.Errorf(codes.DataLoss, "transfer: received %+v, the leaver's trailer says %+v", got, want)
	}
	// The trailer is the last frame: the leaver closes its side next.
	if f, err := next(); !errors.Is(err, io.EOF) {
		if err == nil {
			return nil, status.Errorf(codes.InvalidArgument, "transfer: frame %d after the trailer", f.GetSeq())
		}
		return nil, err
	}
	log.Info("hand-over received and stored; completing it in the ring", "series", got.Series, "chunks", got.Chunks,
		"bytes", got.Bytes, "took", time.Since(start))
	if err := sleep(ctx, r.cfg.TestDelay); err != nil {
		return nil, err
	}
	cctx, ccancel := context.WithTimeout(ctx, r.cfg.Timeout)
	defer ccancel()
	idx, err := applyRetry(cctx, r.ring, ringstate.Command{Op: ringstate.OpCompleteHandover, Member: leaver, Peer: r.id,
		RequestID: r.requestID()})
	if err != nil {
		return nil, fmt.Errorf("commit CompleteHandover(%s, %s): %w", leaver, r.id, err)
	}
	stopHasten := r.hasten(cctx, idx)
	err = r.ring.WaitApplied(cctx, idx)
	stopHasten()
	if err != nil {
		return nil, fmt.Errorf("wait for CompleteHandover at index %d: %w", idx, err)
	}
	if me, ok := r.ring.Ring().Member(r.id); !ok || me.State != ringstate.ACTIVE {
		return nil, fmt.Errorf("after CompleteHandover at index %d the ring shows %s %s", idx, r.id, me.State)
	}
	if err := r.removeMarker(); err != nil {
		log.Warn("hand-over complete, but the marker stays until the watcher removes it", "err", err)
	}
	log.Info("hand-over complete: ACTIVE with the leaver's tokens", "complete_index", idx, "series", got.Series,
		"chunks", got.Chunks, "took", time.Since(start))
	return &transferpb.TransferResult{Series: got.Series, Chunks: got.Chunks, Bytes: got.Bytes, CompleteIndex: idx}, nil
}

func cmpErr(first, other error) error {
	if first != nil {
		return first
	}
	return other
}

// BlocksActivity tells the watcher that blocks are arriving from member from (StoreBlock
// progress: a header or a piece received): while the ring shows this member JOINING and paired
// with from, it counts as a Transfer frame, so a claim is not aborted as silent while its leaver
// hands over a bucket that takes longer than -ingester.transfer-timeout to send (the leaver sends
// its blocks after ClaimJoiner and before the chunk stream). Activity from any other member
// counts for nothing: a claim whose leaver died is still aborted. from is "" when the caller is
// not identified (no mutual TLS): it counts whenever this member is paired, since only its
// hand-over peer stores blocks on a JOINING member (the compactor and leavers without a joiner
// place blocks on ACTIVE members only). Cheap: one read of the local ring. Safe for concurrent use.
func (r *Receiver) BlocksActivity(from ringstate.MemberID) {
	me, ok := r.ring.Ring().Member(r.id)
	if !ok || me.State != ringstate.JOINING || me.HandoverPeer == "" || (from != "" && from != me.HandoverPeer) {
		return
	}
	r.lastFrame.Store(int64(time.Since(r.base)))
}

// Run watches the ring until ctx ends: it aborts a claim whose leaver stays silent for
// -ingester.transfer-timeout and settles the store's hand-over data (see Receiver). Call once.
func (r *Receiver) Run(ctx context.Context) {
	tick := time.NewTicker(max(r.cfg.Timeout/10, 100*time.Millisecond))
	defer tick.Stop()
	for {
		changed := r.ring.Changed()
		r.watch(ctx)
		select {
		case <-ctx.Done():
			return
		case <-changed:
		case <-tick.C:
		}
	}
}

// watch is one round of Run.
func (r *Receiver) watch(ctx context.Context) {
	select {
	case r.sem <- struct{}{}:
	default:
		return // a transfer is running: it watches itself
	}
	defer func() { <-r.sem }()
	me, ok := r.ring.Ring().Member(r.id)
	if ok && me.State == ringstate.JOINING && me.HandoverPeer != "" {
		now := time.Now()
		if r.pairedPeer != me.HandoverPeer {
			r.pairedPeer, r.pairedSince = me.HandoverPeer, now
		}
		since := r.pairedSince
		if last := r.base.Add(time.Duration(r.lastFrame.Load())); last.After(since) {
			since = last
		}
		if now.Sub(since) > r.cfg.Timeout {
			r.log.Warn("claimed by a leaver that sends nothing; aborting the hand-over", "member", r.id,
				"leaver", me.HandoverPeer, "timeout", r.cfg.Timeout)
			actx, cancel := context.WithTimeout(ctx, attemptTimeout)
			_, err := applyRetry(actx, r.ring, ringstate.Command{Op: ringstate.OpAbortHandover, Member: me.HandoverPeer,
				Peer: r.id, RequestID: r.requestID()})
			cancel()
			if err != nil {
				r.log.Warn("abort of a silent hand-over failed, retrying", "member", r.id, "leaver", me.HandoverPeer, "err", err)
			}
			r.pairedSince = now
		}
		return
	}
	r.pairedPeer = ""
	r.settleLocked(ctx)
}

// settleLocked decides the fate of marked hand-over data from a linearizable read of the ring:
// PENDING → discard; ACTIVE or JOINING with own tokens → keep (the data is the member's own);
// otherwise (still receiving, not in the ring, no quorum) → decide later. A local read is not
// enough: right after a restart the local ring replays old entries and may show PENDING from
// before the claim although the hand-over completed. Caller holds sem.
func (r *Receiver) settleLocked(ctx context.Context) {
	_, hasMarker, err := r.readMarker()
	if err != nil {
		r.log.Warn("cannot read the hand-over marker", "member", r.id, "err", err)
		return
	}
	if !hasMarker {
		return
	}
	lctx, cancel := context.WithTimeout(ctx, attemptTimeout)
	ring, _, err := r.ring.LinearizableRing(lctx)
	cancel()
	if err != nil {
		return // no quorum yet: the next round tries again
	}
	me, ok := ring.Member(r.id)
	switch {
	case !ok:
	case me.State == ringstate.PENDING:
		if err := r.discard("the ring shows this member PENDING: the hand-over was aborted or this member restarted"); err != nil {
			r.log.Error("cannot discard partial hand-over data", "member", r.id, "err", err)
		}
	case me.State == ringstate.ACTIVE || (me.State == ringstate.JOINING && me.HandoverPeer == ""):
		if err := r.removeMarker(); err != nil {
			r.log.Warn("cannot remove the hand-over marker", "member", r.id, "err", err)
			return
		}
		r.log.Info("hand-over data kept: this member is ACTIVE with the leaver's tokens", "member", r.id)
	}
}
