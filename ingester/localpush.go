package ingester

import (
	"context"
	"sync"
	"unsafe"

	"github.com/prometheus/prometheus/model/labels"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/raftingest/raftingest/distributor"
	"github.com/raftingest/raftingest/ingesterpb"
	"github.com/raftingest/raftingest/memstore"
	tenantpkg "github.com/raftingest/raftingest/tenant"
)

// The allocation-free push path. ingesterService.Push decodes with the generated code (a Go object
// per series, label and sample, every string copied and UTF-8-checked) and builds owned labels for
// every series of every request; in the profile of the ingest benchmark that was ~37% of the
// ingester's CPU for the decode plus ~7% for the labels (bench/results/2026-11-21-small-ingester.cpu.pprof).
// Here a request stays in its wire bytes: PushRequestView decodes it into reused arenas with label
// strings aliasing the bytes, each series' labels are built in one reused buffer
// (ScratchBuilder.Overwrite), and memstore.Appender copies them only when it creates a series.
//
// Two ways in, same semantics as Push (same checks in the same order, same errors and codes):
//   - rawIngesterService.PushRaw, for gRPC from other nodes' distributors (ingesterpb.RegisterIngesterServerRaw
//     with ingesterpb.RawCodec on the server);
//   - localClient, for this node's own distributor: the replica that is this very node skips gRPC.

// pushScratch is the reusable state of one decoded push.
type pushScratch struct {
	view    ingesterpb.PushRequestView
	sb      labels.ScratchBuilder
	lset    labels.Labels
	samples []memstore.Sample
	// esb and exemplars convert a series' exemplars (exemplars.go).
	esb       labels.ScratchBuilder
	exemplars []memstore.Exemplar
}

var pushScratchPool = sync.Pool{New: func() any { return new(pushScratch) }}

// rawIngesterService serves Push through PushRaw (see ingesterpb.RawIngesterServer); QueryStream is
// ingesterService's.
type rawIngesterService struct {
	*ingesterService
}

var _ ingesterpb.RawIngesterServer = rawIngesterService{}

// PushRaw implements ingesterpb.RawIngesterServer: Push on the request's wire bytes.
func (s rawIngesterService) PushRaw(ctx context.Context, req []byte) (*ingesterpb.PushResponse, error) {
	sc := pushScratchPool.Get().(*pushScratch)
	defer sc.release()
	// The generated path decodes before the handler runs, so a malformed request fails first, with
	// gRPC's own code for a request it cannot unmarshal.
	if err := sc.view.Unmarshal(req); err != nil {
		return nil, status.Errorf(codes.Internal, "grpc: error unmarshalling request: %v", err)
	}
	tenant, err := ingesterpb.TenantFromIncomingContext(ctx)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	return s.pushView(tenant, sc, true)
}

// pushView is the body of Push after decoding and the tenant: the fence and the write check, then the store, under
// the same write gate as Push (drainWrites must wait for this path too, or a hand-over could miss
// samples acknowledged through it). With validate, each series' labels are checked as Push checks
// them (ingesterpb.ValidateLabelViews), and a refused one is skipped with ErrorCode_INVALID; without
// it they are trusted to hold the TimeSeries contract (this node's own distributor validated them)
// and only sorted.
func (s *ingesterService) pushView(tenant string, sc *pushScratch, validate bool) (*ingesterpb.PushResponse, error) {
	s.gate.RLock()
	defer s.gate.RUnlock()
	if err := s.fence.check(sc.view.RingIndex); err != nil {
		return nil, err
	}
	if ok, why := s.writable(); !ok {
		return nil, status.Error(codes.Unavailable, why)
	}
	// One arena for every sample of the request: Append reads them until Commit.
	sc.samples = sc.samples[:0]
	sc.samples = append(sc.samples, make([]memstore.Sample, sc.view.Samples())...)
	app := s.store.Appender(tenant)
	off := 0
	var invalid []*ingesterpb.SeriesError
	for i := range sc.view.Series {
		ts := &sc.view.Series[i]
		smps := sc.samples[off : off+len(ts.Samples) : off+len(ts.Samples)]
		off += len(ts.Samples)
		if validate {
			if err := ingesterpb.ValidateLabelViews(ts.Labels); err != nil {
				invalid = append(invalid, invalidSeries(i, err))
				app.Append(labels.EmptyLabels(), nil) // keeps the indexes of the store's refusals
				continue
			}
		}
		sc.sb.Reset()
		for _, l := range ts.Labels {
			sc.sb.Add(l.Name, l.Value)
		}
		if !validate {
			sc.sb.Sort() // validated labels are sorted already
		}
		sc.sb.Overwrite(&sc.lset) // aliases sc.sb's buffer until the next series: Append copies if it keeps it
		for j, sm := range ts.Samples {
			smps[j] = memstore.Sample{T: sm.TimestampMs, V: sm.Value}
		}
		if len(ts.Histograms) > 0 {
			hs, err := decodeHistograms(ts.Histograms)
			if err != nil {
				invalid = append(invalid, invalidSeries(i, err))
				app.Append(labels.EmptyLabels(), nil)
				continue
			}
			app.AppendSeries(sc.lset, smps, hs)
		} else {
			app.Append(sc.lset, smps)
		}
		// Exemplars travel with their series, a native histogram's too (remote-write 2.0 puts a
		// histogram's exemplars in its own series).
		if len(ts.Exemplars) > 0 {
			sc.appendExemplars(app, ts.Exemplars, validate)
		}
	}
	res, err := app.Commit()
	if err == nil && len(sc.view.Metadata) > 0 && s.metadata != nil {
		s.metadata.add(tenant, sc.view.Metadata)
	}
	return pushResponse(tenant, res, err, invalid)
}

// maxPooledScratchBytes bounds what a pooled pushScratch keeps of its arenas between requests:
// one exceptionally large (or hostile) request must not pin its decode arenas for every later one.
const maxPooledScratchBytes = 16 << 20

// release drops every reference into the request and returns sc to its pool.
func (sc *pushScratch) release() {
	sc.view.Reset()
	sc.lset = labels.EmptyLabels()
	clear(sc.exemplars)
	sc.exemplars = sc.exemplars[:0]
	if cap(sc.samples)*int(unsafe.Sizeof(memstore.Sample{})) > maxPooledScratchBytes {
		sc.samples = nil
	}
	if sc.view.ArenaBytes() > maxPooledScratchBytes {
		sc.view = ingesterpb.PushRequestView{}
	}
	pushScratchPool.Put(sc)
}

// localClient is the distributor.IngesterClient of this node's own ingester: a push to it is a
// function call, with the same outcome a gRPC call to this node would have.
type localClient struct {
	svc *ingesterService
}

// newLocalClient returns the in-process client of svc, for distributor.WithLocalClient.
func newLocalClient(svc *ingesterService) distributor.IngesterClient { return localClient{svc: svc} }

// Push implements distributor.IngesterClient. It owns req.Data and gives it back to req.Pool when done,
// as gRPC would.
func (c localClient) Push(ctx context.Context, tenant string, req *ingesterpb.RawPushRequest) (*ingesterpb.PushResponse, error) {
	defer func() {
		if req.Pool != nil && req.Data != nil {
			req.Pool.Put(req.Data)
		}
	}()
	// gRPC would not start a call whose context is already done.
	if err := ctx.Err(); err != nil {
		return nil, status.FromContextError(err).Err()
	}
	if tenant == "" {
		return nil, status.Error(codes.InvalidArgument, ingesterpb.ErrNoTenant.Error())
	}
	if err := tenantpkg.Validate(tenant); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "ingester: tenant: %v", err)
	}
	sc := pushScratchPool.Get().(*pushScratch)
	defer sc.release()
	var data []byte
	if req.Data != nil {
		data = *req.Data
	}
	if err := sc.view.Unmarshal(data); err != nil {
		return nil, status.Errorf(codes.Internal, "grpc: error unmarshalling request: %v", err)
	}
	return c.svc.pushView(tenant, sc, false)
}

// decodeHistograms decodes a series' native histograms (TimeSeries field 4). The memstore
// validates each one (histogram.Validate) as it appends it.
func decodeHistograms(msgs [][]byte) ([]memstore.HistSample, error) {
	hs := make([]memstore.HistSample, len(msgs))
	for k, m := range msgs {
		t, h, fh, err := ingesterpb.DecodeHistogram(m)
		if err != nil {
			return nil, err
		}
		hs[k] = memstore.HistSample{T: t, H: h, FH: fh}
	}
	return hs, nil
}
