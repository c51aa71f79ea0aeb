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
	// gate is held for reading by every Push from its writable check until its samples are in the
	// store, and for writing by drainWrites: once the member left ACTIVE, drainWrites returns only
	// after every Push that passed the check has finished, so the hand-over streams them too.
	gate sync.RWMutex
}

// drainWrites waits until every Push in flight has finished. Call it after the member's state left
// ACTIVE in the applied ring (writable reports false): later Pushes are refused, so when it returns
// the store holds every sample this member will ever acknowledge.
func (s *ingesterService) drainWrites() {
	s.gate.Lock()
	s.gate.Unlock() //lint:ignore SA2001 an empty critical section is the point: it waits out the readers

}

// queryBatchSeries is how many series one QueryStream message carries: large enough to amortise
// the per-message cost, small enough to stay far below gRPC's message size limit.
const queryBatchSeries = 128

// Push stores a request's samples. A refused sample never stops the rest of the request; the
// refusals come back as per-series errors. A call error means the whole request failed. A series
// whose labels break the TimeSeries contract (ingesterpb.ValidateLabelViews: invalid names, values
// that are not UTF-8, unsorted or repeated names) is refused with ErrorCode_INVALID before the store
// sees it: the distributor never sends one, so it comes from another client or a bug.
func (s *ingesterService) Push(ctx context.Context, req *ingesterpb.PushRequest) (*ingesterpb.PushResponse, error) {
	tenant, err := ingesterpb.TenantFromIncomingContext(ctx)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	s.gate.RLock()
	defer s.gate.RUnlock()
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
	case errors.Is(err, memstore.ErrOutOfOrderSample):
		return ingesterpb.ErrorCode_OUT_OF_ORDER
	case errors.Is(err, memstore.ErrDuplicateSampleForTimestamp):
		return ingesterpb.ErrorCode_DUPLICATE_TIMESTAMP
	case errors.Is(err, memstore.ErrTooManySeries):
		return ingesterpb.ErrorCode_TOO_MANY_SERIES
	case errors.Is(err, memstore.ErrInvalidLabels):
		return ingesterpb.ErrorCode_INVALID
	}
	return ingesterpb.ErrorCode_INTERNAL
}

// QueryStream streams the tenant's matching series with their chunks (without them when the
// request is labels_only: the series and label APIs need only the label sets).
func (s *ingesterService) QueryStream(req *ingesterpb.QueryRequest, stream ingesterpb.Ingester_QueryStreamServer) error {
	tenantID, ms, err := queryArgs(stream.Context(), req)
	if err != nil {
		return err
	}
	series, err := s.store.Select(tenantID, req.GetStartTimestampMs(), req.GetEndTimestampMs(), ms...)
	if err != nil {
		return status.Errorf(codes.InvalidArgument, "select for tenant %q: %v", tenantID, err)
	}
	resp := &ingesterpb.QueryStreamResponse{}
	for i, sc := range series {
		ss := &ingesterpb.StreamSeries{Labels: toProtoLabels(sc.Labels)}
		if !req.GetLabelsOnly() {
			for _, c := range sc.Chunks {
				ss.Chunks = append(ss.Chunks, &ingesterpb.Chunk{MinTimeMs: c.MinTime, MaxTimeMs: c.MaxTime,
					Encoding: uint32(c.Encoding), Data: c.Data})
			}
		}
		resp.Series = append(resp.Series, ss)
		if len(resp.Series) == queryBatchSeries || i == len(series)-1 {
			if err := stream.Send(resp); err != nil {
				return err
			}
			resp = &ingesterpb.QueryStreamResponse{}
		}
	}
	return nil
}

// queryBlocksBatchBytes bounds the chunk bytes of one QueryBlocks message (besides
// queryBatchSeries): block chunks are copied out of the block files into the batch, so the batch
// is what a stream holds in memory. A series is never split, so one series with more bytes than
// this goes alone in its message.
const queryBlocksBatchBytes = 1 << 20

// blockReader reads the series of the blocks in this node's own bucket; storage.BucketQueryable
// is one (see its SelectChunks for the contract).
type blockReader interface {
	SelectChunks(ctx context.Context, mint, maxt int64, labelsOnly bool, ms []*labels.Matcher,
		fn func(lset labels.Labels, chks []chunks.Meta) error) error
}

// QueryBlocks is QueryStream over the blocks of this node's own bucket: each label set once, in
// label order, its chunks from every block merged (never overlapping), passed as the blocks store
// them where no other block overlaps them. A node without storage (blocks nil) answers an empty
// stream. Batches are sent as they fill, so the stream holds at most one batch; a context that
// ends (the querier gave up or crossed a limit) stops the walk of the blocks.
func (s *ingesterService) QueryBlocks(req *ingesterpb.QueryRequest, stream ingesterpb.Ingester_QueryBlocksServer) error {
	tenantID, ms, err := queryArgs(stream.Context(), req)
	if err != nil {
		return err
	}
	if s.blocks == nil {
		return nil
	}
	resp := &ingesterpb.QueryStreamResponse{}
	size := 0
	err = s.blocks.SelectChunks(tenant.With(stream.Context(), tenantID), req.GetStartTimestampMs(), req.GetEndTimestampMs(),
		req.GetLabelsOnly(), ms, func(lset labels.Labels, chks []chunks.Meta) error {
			ss := &ingesterpb.StreamSeries{Labels: toProtoLabels(lset)}
			if len(chks) > 0 {
				ss.Chunks = make([]*ingesterpb.Chunk, len(chks))
			}
			for i, c := range chks {
				// Copied: a block's bytes are valid only during this call (the block may be closed
				// once the walk is over, before the last batch is sent).
				data := bytes.Clone(c.Chunk.Bytes())
				size += len(data)
				ss.Chunks[i] = &ingesterpb.Chunk{MinTimeMs: c.MinTime, MaxTimeMs: c.MaxTime,
					Encoding: uint32(c.Chunk.Encoding()), Data: data}
			}
			resp.Series = append(resp.Series, ss)
			if len(resp.Series) < queryBatchSeries && size < queryBlocksBatchBytes {
				return nil
			}
			if err := stream.Send(resp); err != nil {
				return err
			}
			resp, size = &ingesterpb.QueryStreamResponse{}, 0
			return nil
		})
	if err != nil {
		if st, ok := status.FromError(err); ok && st.Code() != codes.Unknown {
			return err // the stream's own error (Send on a cancelled stream)
		}
		if ctxErr := stream.Context().Err(); ctxErr != nil {
			return status.FromContextError(ctxErr).Err()
		}
		return status.Errorf(codes.Internal, "blocks of tenant %q: %v", tenantID, err)
	}
	if len(resp.Series) > 0 {
		return stream.Send(resp)
	}
	return nil
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
