package ingester

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/tsdb/chunks"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/raftingest/raftingest/ingesterpb"
	"github.com/raftingest/raftingest/memstore"
	"github.com/raftingest/raftingest/tenant"
)

// ingesterService serves the Ingester gRPC API over the node's memstore.
type ingesterService struct {
	ingesterpb.UnimplementedIngesterServer
	store *memstore.Store
	// blocks reads the blocks of this node's own bucket for QueryBlocks; nil while storage is not
	// configured (set by wireStorage before the gRPC server starts, never changed after).
	blocks blockReader
	// writable says whether this member may take writes now, and if not, why. Only an ACTIVE member
	// does: a LEAVING one is handing its data over or flushing it, and a sample it accepted after
	// that started could miss the hand-over while counting towards the distributor's quorum.
	writable func() (bool, string)
	// fence refuses pushes placed by a ring older than this member's last ownership change
	// (fence.go); nil takes every push.
	fence *pushFence
	// gate is held for reading by every Push from its writable check until its samples are in the
	// store, and for writing by drainWrites: once the member left ACTIVE, drainWrites returns only
	// after every Push that passed the check has finished, so the hand-over streams them too.
	gate sync.RWMutex
	// metadata is the tenants' metric metadata (metadata.go); set before the gRPC server starts.
	metadata *metadataStore
}

// drainWrites waits until every Push in flight has finished. Call it after the member's state left
// ACTIVE in the applied ring (writable reports false): later Pushes are refused, so when it returns
// the store holds every sample this member will ever acknowledge.
func (s *ingesterService) drainWrites() {
	s.gate.Lock()
	s.gate.Unlock() //lint:ignore SA2001 an empty critical section is the point: it waits out the readers

}

// queryBatchSeries is how many series one QueryStream or QueryBlocks message carries at most:
// large enough to amortise the per-message cost; queryBatchBytes bounds the message's size.
const queryBatchSeries = 128

// Push stores a request's samples. A refused sample never stops the rest of the request; the
// refusals come back as per-series errors. A call error means the whole request failed. A series
// whose labels break the TimeSeries contract (ingesterpb.ValidateLabelViews: invalid names, values
// that are not UTF-8, unsorted or repeated names) is refused with ErrorCode_INVALID before the store
// sees it: the distributor never sends one, so it comes from another client or a bug. This generated
// path stores samples only: a server registered with RegisterIngesterServerRaw (every node) serves
// Push through PushRaw, which also takes exemplars and metadata (exemplars.go).
func (s *ingesterService) Push(ctx context.Context, req *ingesterpb.PushRequest) (*ingesterpb.PushResponse, error) {
	tenant, err := ingesterpb.TenantFromIncomingContext(ctx)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	s.gate.RLock()
	defer s.gate.RUnlock()
	if err := s.fence.check(req.GetRingIndex()); err != nil {
		return nil, err
	}
	if ok, why := s.writable(); !ok {
		return nil, status.Error(codes.Unavailable, why)
	}
	batch := make([]memstore.SeriesSamples, len(req.GetTimeseries()))
	var (
		b       labels.ScratchBuilder
		lc      ingesterpb.LabelChecker
		invalid []*ingesterpb.SeriesError
	)
	for i, ts := range req.GetTimeseries() {
		// An invalid series keeps its place in the batch with no samples, so that the store's
		// refusals keep the request's indexes.
		lc.Reset()
		for _, l := range ts.GetLabels() {
			lc.Add(l.GetName(), l.GetValue())
		}
		if err := lc.Done(); err != nil {
			invalid = append(invalid, invalidSeries(i, err))
			continue
		}
		b.Reset()
		for _, l := range ts.GetLabels() {
			b.Add(l.GetName(), l.GetValue())
		}
		smps := make([]memstore.Sample, len(ts.GetSamples()))
		for j, sm := range ts.GetSamples() {
			smps[j] = memstore.Sample{T: sm.GetTimestamp(), V: sm.GetValue()}
		}
		batch[i] = memstore.SeriesSamples{Labels: b.Labels(), Samples: smps}
	}
	res, err := s.store.Push(tenant, batch)
	return pushResponse(tenant, res, err, invalid)
}

// invalidSeries is the per-series error of series i, refused by label validation before the store
// saw it.
func invalidSeries(i int, err error) *ingesterpb.SeriesError {
	return &ingesterpb.SeriesError{Index: uint32(i), Code: ingesterpb.ErrorCode_INVALID, Message: err.Error()}
}

// pushResponse turns a store push's outcome into the Push answer: a WAL failure fails the call
// (nothing of the request is acknowledged); refused samples become per-series errors, merged in
// index order with invalid, the series refused before the store (in index order).
func pushResponse(tenant string, res memstore.PushResult, err error, invalid []*ingesterpb.SeriesError) (*ingesterpb.PushResponse, error) {
	if err != nil {
		return nil, status.Errorf(codes.Internal, "push for tenant %q: %v", tenant, err)
	}
	resp := &ingesterpb.PushResponse{SamplesIngested: uint64(res.Accepted)}
	if n := len(res.Errors) + len(invalid); n > 0 {
		resp.Errors = make([]*ingesterpb.SeriesError, 0, n)
	}
	for _, e := range res.Errors {
		for len(invalid) > 0 && int(invalid[0].Index) < e.SeriesIndex {
			resp.Errors, invalid = append(resp.Errors, invalid[0]), invalid[1:]
		}
		resp.Errors = append(resp.Errors, &ingesterpb.SeriesError{
			Index:       uint32(e.SeriesIndex),
			Code:        errorCode(e.Err),
			Message:     e.Err.Error(),
			TimestampMs: e.T,
		})
	}
	resp.Errors = append(resp.Errors, invalid...)
	return resp, nil
}

func errorCode(err error) ingesterpb.ErrorCode {
	switch {
	case errors.Is(err, memstore.ErrSampleTooOld): // before OUT_OF_ORDER: it wraps ErrOutOfOrderSample
		return ingesterpb.ErrorCode_SAMPLE_TOO_OLD
	case errors.Is(err, memstore.ErrOutOfOrderSample):
		return ingesterpb.ErrorCode_OUT_OF_ORDER
	case errors.Is(err, memstore.ErrDuplicateSampleForTimestamp):
		return ingesterpb.ErrorCode_DUPLICATE_TIMESTAMP
	case errors.Is(err, memstore.ErrTooManySeries):
		return ingesterpb.ErrorCode_TOO_MANY_SERIES
	case errors.Is(err, memstore.ErrInvalidLabels), errors.Is(err, memstore.ErrInvalidHistogram):
		return ingesterpb.ErrorCode_INVALID
	}
	return ingesterpb.ErrorCode_INTERNAL
}

// QueryStream streams the tenant's matching series with their chunks (without them when the
// request is labels_only: the series and label APIs need only the label sets), in messages bounded
// as streamBatcher says.
func (s *ingesterService) QueryStream(req *ingesterpb.QueryRequest, stream ingesterpb.Ingester_QueryStreamServer) error {
	tenantID, ms, err := queryArgs(stream.Context(), req)
	if err != nil {
		return err
	}
	series, err := s.store.Select(tenantID, req.GetStartTimestampMs(), req.GetEndTimestampMs(), ms...)
	if err != nil {
		return status.Errorf(codes.InvalidArgument, "select for tenant %q: %v", tenantID, err)
	}
	b := streamBatcher{send: stream.Send}
	for _, sc := range series {
		n := len(sc.Chunks)
		if req.GetLabelsOnly() {
			n = 0
		}
		if err := b.add(toProtoLabels(sc.Labels), n, func(i int) *ingesterpb.Chunk {
			c := sc.Chunks[i]
			return &ingesterpb.Chunk{MinTimeMs: c.MinTime, MaxTimeMs: c.MaxTime, Encoding: uint32(c.Encoding), Data: c.Data}
		}); err != nil {
			return err
		}
	}
	return b.flush()
}

// queryBatchBytes bounds the bytes of one QueryStream or QueryBlocks message (label names and
// values, chunk data, and chunkOverheadBytes per chunk), besides queryBatchSeries: far below gRPC's
// message size limit (the querier's -querier.max-recv-msg-size), and what a QueryBlocks stream
// holds in memory (block chunks are copied out of the block files into the batch).
const queryBatchBytes = 1 << 20

// chunkOverheadBytes is what a chunk costs in a message besides its data: its times, its encoding
// and the protobuf framing, rounded up.
const chunkOverheadBytes = 32

// streamBatcher fills QueryStreamResponse messages and sends each when it holds queryBatchSeries
// series or queryBatchBytes bytes. A series whose chunks alone cross the byte bound is split: once
// the message is full it is sent and the series continues in the next one, its labels repeated
// with the following chunks. So a message holds at most queryBatchBytes plus one chunk plus one
// label set, whatever the series; the querier joins the parts by label set (and counts the series
// once: its limiter dedups label sets).
type streamBatcher struct {
	send func(*ingesterpb.QueryStreamResponse) error
	resp *ingesterpb.QueryStreamResponse // nil when empty
	size int                             // resp's bytes, as queryBatchBytes counts them
}

// add adds a series with labels lbls and n chunks, chunk(i) making the i-th: called in order, once
// each, only when the chunk goes into the batch (so a chunk is built, and copied, only when it is
// about to be held).
func (b *streamBatcher) add(lbls []*ingesterpb.Label, n int, chunk func(i int) *ingesterpb.Chunk) error {
	lsize := 0
	for _, l := range lbls {
		lsize += len(l.GetName()) + len(l.GetValue())
	}
	ss := b.start(lbls, lsize)
	for i := range n {
		if len(ss.Chunks) > 0 && b.size >= queryBatchBytes {
			// Full: send what the series has so far and continue it in the next message.
			if err := b.flush(); err != nil {
				return err
			}
			ss = b.start(lbls, lsize)
		}
		c := chunk(i)
		ss.Chunks = append(ss.Chunks, c)
		b.size += len(c.GetData()) + chunkOverheadBytes
	}
	if len(b.resp.Series) >= queryBatchSeries || b.size >= queryBatchBytes {
		return b.flush()
	}
	return nil
}

func (b *streamBatcher) start(lbls []*ingesterpb.Label, lsize int) *ingesterpb.StreamSeries {
	if b.resp == nil {
		b.resp = &ingesterpb.QueryStreamResponse{}
	}
	ss := &ingesterpb.StreamSeries{Labels: lbls}
	b.resp.Series = append(b.resp.Series, ss)
	b.size += lsize
	return ss
}

// flush sends the batch, if any.
func (b *streamBatcher) flush() error {
	if b.resp == nil {
		return nil
	}
	resp := b.resp
	b.resp, b.size = nil, 0
	return b.send(resp)
}

// blockReader reads the series of the blocks in this node's own bucket; storage.BucketQueryable
// is one (see its SelectChunks for the contract).
type blockReader interface {
	SelectChunks(ctx context.Context, mint, maxt int64, labelsOnly bool, ms []*labels.Matcher,
		fn func(lset labels.Labels, chks []chunks.Meta) error) error
}

// QueryBlocks is QueryStream over the blocks of this node's own bucket: series in label order, each
// label set in one message or, when its chunks alone cross the message byte bound, in consecutive
// messages (streamBatcher); its chunks from every block merged (never overlapping), passed as the
// blocks store them where no other block overlaps them. Batches are sent as they fill, so the
// stream holds at most one batch; a context that ends (the querier gave up or crossed a limit)
// stops the walk of the blocks.
//
// Every node has a bucket (node-local by default, wireStorage), and its blocks hold copies the
// querier counts on: a node whose bucket is not wired (blocks nil) answers Unavailable, so that
// the querier counts it as a failed member, never as one that holds nothing.
func (s *ingesterService) QueryBlocks(req *ingesterpb.QueryRequest, stream ingesterpb.Ingester_QueryBlocksServer) error {
	tenantID, ms, err := queryArgs(stream.Context(), req)
	if err != nil {
		return err
	}
	if s.blocks == nil {
		return status.Error(codes.Unavailable, "this member serves no blocks: its bucket is not configured")
	}
	b := streamBatcher{send: stream.Send}
	err = s.blocks.SelectChunks(tenant.With(stream.Context(), tenantID), req.GetStartTimestampMs(), req.GetEndTimestampMs(),
		req.GetLabelsOnly(), ms, func(lset labels.Labels, chks []chunks.Meta) error {
			return b.add(toProtoLabels(lset), len(chks), func(i int) *ingesterpb.Chunk {
				c := chks[i]
				// Copied: a block's bytes are valid only during this call (the block may be closed
				// once the walk is over, before the last batch is sent).
				return &ingesterpb.Chunk{MinTimeMs: c.MinTime, MaxTimeMs: c.MaxTime,
					Encoding: uint32(c.Chunk.Encoding()), Data: bytes.Clone(c.Chunk.Bytes())}
			})
		})
	if err != nil {
		if st, ok := status.FromError(err); ok && st.Code() != codes.Unknown {
			return err // the stream's own error (Send on a cancelled stream)
		}
		if ctxErr := stream.Context().Err(); ctxErr != nil {
			return status.FromContextError(ctxErr).Err()
		}
		if errors.Is(err, tenant.ErrInvalid) {
			// Bad input, not the member's failure (queryArgs validates the tenant already; this
			// keeps the code right should the bucket's rules be stricter).
			return status.Errorf(codes.InvalidArgument, "blocks of tenant %q: %v", tenantID, err)
		}
		return status.Errorf(codes.Internal, "blocks of tenant %q: %v", tenantID, err)
	}
	return b.flush()
}

// queryArgs checks a query where it enters: the tenant from the gRPC metadata, the matchers, the
// range. Its errors are gRPC statuses.
func queryArgs(ctx context.Context, req *ingesterpb.QueryRequest) (string, []*labels.Matcher, error) {
	tenantID, err := ingesterpb.TenantFromIncomingContext(ctx)
	if err != nil {
		return "", nil, status.Error(codes.InvalidArgument, err.Error())
	}
	ms, err := toMatchers(req.GetMatchers())
	if err != nil {
		return "", nil, status.Error(codes.InvalidArgument, err.Error())
	}
	if req.GetStartTimestampMs() > req.GetEndTimestampMs() {
		return "", nil, status.Errorf(codes.InvalidArgument, "start %d is after end %d", req.GetStartTimestampMs(), req.GetEndTimestampMs())
	}
	return tenantID, ms, nil
}

func toProtoLabels(lset labels.Labels) []*ingesterpb.Label {
	out := make([]*ingesterpb.Label, 0, lset.Len())
	lset.Range(func(l labels.Label) {
		out = append(out, &ingesterpb.Label{Name: l.Name, Value: l.Value})
	})
	return out
}

func toMatchers(pms []*ingesterpb.LabelMatcher) ([]*labels.Matcher, error) {
	out := make([]*labels.Matcher, 0, len(pms))
	for _, pm := range pms {
		var t labels.MatchType
		switch pm.GetType() {
		case ingesterpb.MatchType_EQUAL:
			t = labels.MatchEqual
		case ingesterpb.MatchType_NOT_EQUAL:
			t = labels.MatchNotEqual
		case ingesterpb.MatchType_REGEX_MATCH:
			t = labels.MatchRegexp
		case ingesterpb.MatchType_REGEX_NO_MATCH:
			t = labels.MatchNotRegexp
		default:
			return nil, fmt.Errorf("matcher on %q: unknown match type %d", pm.GetName(), pm.GetType())
		}
		m, err := labels.NewMatcher(t, pm.GetName(), pm.GetValue())
		if err != nil {
			return nil, fmt.Errorf("matcher %s%s%q: %w", pm.GetName(), t, pm.GetValue(), err)
		}
		out = append(out, m)
	}
	return out, nil
}
