package querier

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"github.com/prometheus/prometheus/util/annotations"
	"google.golang.org/grpc"

	"github.com/raftingest/raftingest/ingesterpb"
	"github.com/raftingest/raftingest/ringstate"
	"github.com/raftingest/raftingest/tenant"
)

// RingSource publishes the local ring snapshot; raftfsm.Node satisfies it. Ring may return nil
// before the first snapshot is applied.
type RingSource interface {
	Ring() *ringstate.Ring
}

// ErrTooManyIngesterFailures is wrapped by the error of a read that lost more ingesters than the
// replication factor tolerates: some series could be missing samples, so no answer is given.
var ErrTooManyIngesterFailures = errors.New("querier: too many ingesters failed")

// IngestersConfig is what NewIngesterQueryable and NewBlocksQueryable need.
type IngestersConfig struct {
	Ring    RingSource
	Clients ClientPool
	// ReplicationFactor is -distributor.replication-factor; capped by the ring's EffectiveRF.
	ReplicationFactor int
	// HeartbeatTimeout is -ring.heartbeat-timeout: members whose heartbeat is older (in ring time)
	// are not asked.
	HeartbeatTimeout time.Duration
	Logger           *slog.Logger
	metrics          *metrics
}

// source is what a member fan-out reads from each member: which RPC answers (both stream
// QueryStreamResponse with QueryStream's contract), which members are asked, and which members
// that are not asked use up the failure budget because they may hold data nobody else has.
type source struct {
	// name is the metrics' source label ("ingesters" or "blocks") and the errors' wording.
	name string
	// call opens the member's stream.
	call func(c ingesterpb.IngesterClient, ctx context.Context, req *ingesterpb.QueryRequest) (grpc.ServerStreamingClient[ingesterpb.QueryStreamResponse], error)
	// ask reports whether m is asked at ring time nowMs; missing whether an m not asked counts
	// against the failure budget.
	ask, missing func(m *ringstate.Member, nowMs, timeoutMs int64) bool
}

// ingestersSource reads the members' memory (QueryStream): the readable members (ACTIVE or LEAVING,
// healthy) are asked; an unhealthy ACTIVE or LEAVING member holds samples nobody reads.
var ingestersSource = source{
	name: "ingesters",
	call: func(c ingesterpb.IngesterClient, ctx context.Context, req *ingesterpb.QueryRequest) (grpc.ServerStreamingClient[ingesterpb.QueryStreamResponse], error) {
		return c.QueryStream(ctx, req)
	},
	ask: func(m *ringstate.Member, now, timeout int64) bool { return m.Readable(now, timeout) },
	missing: func(m *ringstate.Member, _, _ int64) bool {
		return m.State == ringstate.ACTIVE || m.State == ringstate.LEAVING
	},
}

// blocksSource reads the blocks of the members' node-local buckets (QueryBlocks): every healthy
// member is asked whatever its state, since blocks outlive the state that flushed them (a PENDING
// or JOINING member may hold blocks handed over to it, a LEAVING one still holds its own). An
// unhealthy ACTIVE, LEAVING or JOINING member may hold blocks nobody else has (a PENDING one has
// never flushed nor taken a hand-over).
var blocksSource = source{
	name: "blocks",
	call: func(c ingesterpb.IngesterClient, ctx context.Context, req *ingesterpb.QueryRequest) (grpc.ServerStreamingClient[ingesterpb.QueryStreamResponse], error) {
		return c.QueryBlocks(ctx, req)
	},
	ask: func(m *ringstate.Member, now, timeout int64) bool { return m.Healthy(now, timeout) },
	missing: func(m *ringstate.Member, _, _ int64) bool {
		return m.State == ringstate.ACTIVE || m.State == ringstate.LEAVING || m.State == ringstate.JOINING
	},
}

// MemberQueryable is a storage.Queryable over the members of the ring: every Select asks every
// member its source targets, in parallel, and merges the copies of each series into one without
// duplicate samples. NewIngesterQueryable reads the members' memory (QueryStream), NewBlocksQueryable
// the blocks of their node-local buckets (QueryBlocks); both share the streaming, the fetch limits
// and the replica merge below.
//
// Failures: floor(RF/2) members may be unhealthy or fail (RF capped by the ring's EffectiveRF); a
// write reached a quorum of RF/2+1 of its RF replicas, and each replica flushes its own copy of
// what it holds, so for RF=3 any one missing member still leaves a copy of every acknowledged
// sample, in memory or in blocks. More failures fail the read with ErrTooManyIngesterFailures.
// Safe for concurrent use.
type MemberQueryable struct {
	cfg IngestersConfig
	src source
}

// NewIngesterQueryable returns the fan-out over the members' memory. cfg.Ring and cfg.Clients are
// required.
func NewIngesterQueryable(cfg IngestersConfig) (*MemberQueryable, error) {
	return newMemberQueryable(cfg, ingestersSource)
}

// NewBlocksQueryable returns the fan-out over the blocks in the members' node-local buckets: the
// querier's long-term store when the bucket is not shared. cfg.Ring and cfg.Clients are required.
func NewBlocksQueryable(cfg IngestersConfig) (*MemberQueryable, error) {
	return newMemberQueryable(cfg, blocksSource)
}

func newMemberQueryable(cfg IngestersConfig, src source) (*MemberQueryable, error) {
	if cfg.Ring == nil || cfg.Clients == nil {
		return nil, errors.New("querier: IngestersConfig needs Ring and Clients")
	}
	if cfg.ReplicationFactor < 1 {
		return nil, fmt.Errorf("querier: replication factor %d: want at least 1", cfg.ReplicationFactor)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.metrics == nil {
		cfg.metrics = newMetrics(nil)
	}
	return &MemberQueryable{cfg: cfg, src: src}, nil
}

// Querier implements storage.Queryable. The querier answers for [mint, maxt] only: samples outside
// are trimmed even when a member's chunk holds them.
func (q *MemberQueryable) Querier(mint, maxt int64) (storage.Querier, error) {
	return &ingesterQuerier{q: q, mint: mint, maxt: maxt}, nil
}

type ingesterQuerier struct {
	q          *MemberQueryable
	mint, maxt int64
}

// anyName selects every series: QueryStream needs at least one matcher to be meaningful, and label
// queries without matchers ask for all series (as Cortex does).
var anyName = labels.MustNewMatcher(labels.MatchRegexp, labels.MetricName, ".+")

// Select implements storage.Querier. Series are always sorted by labels (merging needs it anyway).
// hints.Func "series" (the /series and label APIs) skips decoding chunks.
func (q *ingesterQuerier) Select(ctx context.Context, _ bool, hints *storage.SelectHints, ms ...*labels.Matcher) storage.SeriesSet {
	mint, maxt := q.mint, q.maxt
	labelsOnly := false
	limit := 0
	if hints != nil {
		mint, maxt = max(mint, hints.Start), min(maxt, hints.End)
		labelsOnly = hints.Func == "series"
		limit = hints.Limit
	}
	if mint > maxt {
		return storage.EmptySeriesSet()
	}
	set, err := q.q.fetch(ctx, mint, maxt, labelsOnly, ms)
	if err != nil {
		return storage.ErrSeriesSet(err)
	}
	if limit > 0 && len(set) > limit {
		set = set[:limit]
	}
	return &seriesSet{series: set, i: -1}
}

// LabelValues implements storage.Querier through a series selection (the ingester API has no label
// RPC); values come back sorted and unique. The per-query fetch limits do not apply: Mimir's
// ingesters answer label queries from their index, and Grafana's label browser asks for every
// label of a tenant, which a series limit would refuse.
func (q *ingesterQuerier) LabelValues(ctx context.Context, name string, hints *storage.LabelHints, ms ...*labels.Matcher) ([]string, annotations.Annotations, error) {
	ms = append(slices.Clone(ms), labels.MustNewMatcher(labels.MatchNotEqual, name, ""))
	set, err := q.q.fetch(withLimiter(ctx, nil), q.mint, q.maxt, true, ms)
	if err != nil {
		return nil, nil, err
	}
	seen := map[string]struct{}{}
	for _, s := range set {
		if v := s.lset.Get(name); v != "" {
			seen[v] = struct{}{}
		}
	}
	return limitSorted(seen, hints), nil, nil
}

// LabelNames implements storage.Querier through a series selection; names come back sorted and
// unique. The per-query fetch limits do not apply (see LabelValues).
func (q *ingesterQuerier) LabelNames(ctx context.Context, hints *storage.LabelHints, ms ...*labels.Matcher) ([]string, annotations.Annotations, error) {
	if len(ms) == 0 {
		ms = []*labels.Matcher{anyName}
	}
	set, err := q.q.fetch(withLimiter(ctx, nil), q.mint, q.maxt, true, ms)
	if err != nil {
		return nil, nil, err
	}
	seen := map[string]struct{}{}
	for _, s := range set {
		s.lset.Range(func(l labels.Label) { seen[l.Name] = struct{}{} })
	}
	return limitSorted(seen, hints), nil, nil
}

func limitSorted(seen map[string]struct{}, hints *storage.LabelHints) []string {
	out := make([]string, 0, len(seen))
	for v := range seen {
		out = append(out, v)
	}
	slices.Sort(out)
	if hints != nil && hints.Limit > 0 && len(out) > hints.Limit {
		out = out[:hints.Limit]
	}
	return out
}

// Close implements storage.Querier.
func (q *ingesterQuerier) Close() error { return nil }

// replicaResult is what one ingester answered.
type replicaResult struct {
	member ringstate.MemberID
	addr   string
	series []*ingesterpb.StreamSeries // without their chunks for a labels-only fetch
	err    error
}

// fetch asks every member the source targets for the tenant's series matching ms in [mint, maxt]
// and merges the copies into series sorted by labels.
//
// The query's limiter (limiterFrom(ctx)) counts every series and chunk as each stream's messages
// arrive; the first limit crossed cancels every stream and fails the fetch with its *LimitError,
// so no more than about one message per member is held beyond the limit. A labels-only fetch asks
// the members for no chunks (QueryRequest.labels_only) and counts series only.
func (q *MemberQueryable) fetch(ctx context.Context, mint, maxt int64, labelsOnly bool, ms []*labels.Matcher) ([]*mergedSeries, error) {
	lim := limiterFrom(ctx)
	tenantID, err := tenant.FromContext(ctx)
	if err != nil {
		return nil, err
	}
	if len(ms) == 0 {
		ms = []*labels.Matcher{anyName}
	}
	req := &ingesterpb.QueryRequest{StartTimestampMs: mint, EndTimestampMs: maxt, Matchers: toProtoMatchers(ms),
		LabelsOnly: labelsOnly}

	r := q.cfg.Ring.Ring()
	if r == nil {
		return nil, errors.New("querier: this node has no ring yet")
	}
	src := q.src
	rf := r.EffectiveRF(q.cfg.ReplicationFactor)
	maxErrors := rf / 2
	now, timeout := r.TimeMs(), q.cfg.HeartbeatTimeout.Milliseconds()
	var targets []ringstate.Member
	var unhealthy []string
	addrs := map[string]bool{}
	for _, m := range r.Members() {
		addrs[m.GRPCAddr] = true
		switch {
		case src.ask(&m, now, timeout):
			targets = append(targets, m)
		case src.missing(&m, now, timeout):
			// It holds data we cannot read: it uses up the failure budget like a failed call.
			unhealthy = append(unhealthy, string(m.ID))
		}
	}
	if p, ok := q.cfg.Clients.(*GRPCPool); ok {
		p.Retain(addrs)
	}
	if len(unhealthy) > maxErrors {
		q.cfg.metrics.quorumFailed(src.name)
		return nil, fmt.Errorf("%w: reading %s, %d unhealthy (%s), at most %d tolerated with replication factor %d",
			ErrTooManyIngesterFailures, src.name, len(unhealthy), strings.Join(unhealthy, ", "), maxErrors, rf)
	}
	budget := maxErrors - len(unhealthy)

	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	results := make([]replicaResult, len(targets))
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		failures int
	)
	for i, m := range targets {
		wg.Add(1)
		go func() {
			defer wg.Done()
			series, err := q.queryOne(ctx, lim, tenantID, m.GRPCAddr, req, labelsOnly)
			results[i] = replicaResult{member: m.ID, addr: m.GRPCAddr, series: series, err: err}
			if err != nil {
				if lim.Err() != nil {
					// The query crossed a limit (here or in another stream): not the member's fault.
					cancel(lim.Err())
					return
				}
				q.cfg.metrics.request(src.name, "error")
				mu.Lock()
				failures++
				if failures > budget {
					cancel(nil) // the read has failed: stop the others early
				}
				mu.Unlock()
				return
			}
			q.cfg.metrics.request(src.name, "success")
		}()
	}
	wg.Wait()
	if err := lim.Err(); err != nil {
		return nil, err
	}
	if err := context.Cause(ctx); err != nil && failures <= budget {
		// The caller's context ended (timeout, cancellation); not a member failure.
		return nil, err
	}
	if failures > budget {
		var msgs []string
		for _, res := range results {
			if res.err != nil && !errors.Is(res.err, context.Canceled) {
				msgs = append(msgs, fmt.Sprintf("%s (%s): %v", res.member, res.addr, res.err))
			}
		}
		q.cfg.metrics.quorumFailed(src.name)
		return nil, fmt.Errorf("%w: reading %s, %d of %d members asked failed and %d are unhealthy, at most %d tolerated with replication factor %d: %s",
			ErrTooManyIngesterFailures, src.name, failures, len(targets), len(unhealthy), maxErrors, rf, strings.Join(msgs, "; "))
	}
	for _, res := range results {
		if res.err != nil {
			q.cfg.Logger.Warn("member query failed; answering from the other replicas", "source", src.name,
				"member", res.member, "addr", res.addr, "tenant", tenantID, "err", res.err)
		}
	}
	return mergeReplicas(results, mint, maxt, labelsOnly)
}

// queryOne reads one member's stream, counting each message's series and chunks against lim
// before asking for the next; a limit crossed ends the call (its deferred cancel stops the stream).
// A labels-only fetch drops any chunks as they arrive (a member that predates labels_only sends them).
func (q *MemberQueryable) queryOne(ctx context.Context, lim *queryLimiter, tenantID, addr string, req *ingesterpb.QueryRequest, labelsOnly bool) ([]*ingesterpb.StreamSeries, error) {
	c, err := q.cfg.Clients.IngesterClient(addr)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := q.src.call(c, ingesterpb.WithTenant(ctx, tenantID), req)
	if err != nil {
		return nil, err
	}
	var (
		out     []*ingesterpb.StreamSeries
		b       labels.ScratchBuilder
		scratch labels.Labels // the series being counted, rebuilt in place (mergeReplicas builds the kept copy)
	)
	countSeries := lim.countsSeries()
	for {
		resp, err := stream.Recv()
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		for _, ss := range resp.GetSeries() {
			if countSeries {
				b.Reset()
				for _, l := range ss.GetLabels() {
					b.Add(l.GetName(), l.GetValue())
				}
				b.Sort()
				b.Overwrite(&scratch)
				if err := lim.AddSeries(scratch); err != nil {
					return nil, err
				}
			}
			if labelsOnly {
				ss.Chunks = nil
			} else if lim != nil {
				size := 0
				for _, c := range ss.GetChunks() {
					size += len(c.GetData())
				}
				if err := lim.AddChunks(len(ss.GetChunks()), size); err != nil {
					return nil, err
				}
			}
		}
		out = append(out, resp.GetSeries()...)
	}
}

func toProtoMatchers(ms []*labels.Matcher) []*ingesterpb.LabelMatcher {
	out := make([]*ingesterpb.LabelMatcher, len(ms))
	for i, m := range ms {
		var t ingesterpb.MatchType
		switch m.Type {
		case labels.MatchEqual:
			t = ingesterpb.MatchType_EQUAL
		case labels.MatchNotEqual:
			t = ingesterpb.MatchType_NOT_EQUAL
		case labels.MatchRegexp:
			t = ingesterpb.MatchType_REGEX_MATCH
		case labels.MatchNotRegexp:
			t = ingesterpb.MatchType_REGEX_NO_MATCH
		}
		out[i] = &ingesterpb.LabelMatcher{Type: t, Name: m.Name, Value: m.Value}
	}
	return out
}

// chunkRef is one decoded chunk of a merged series.
type chunkRef struct {
	mint, maxt int64
	enc        chunkenc.Encoding
	data       []byte
	chunk      chunkenc.Chunk // decoded by finish
}

// mergedSeries is one series with the chunks of every replica that had it. Immutable once built.
type mergedSeries struct {
	lset labels.Labels
	// chunks sorted by (mint, maxt); identical copies from several replicas kept once.
	chunks     []chunkRef
	mint, maxt int64 // the range the chunks are trimmed to
}

// mergeReplicas groups the replicas' series by labels and returns them sorted by labels.
func mergeReplicas(results []replicaResult, mint, maxt int64, labelsOnly bool) ([]*mergedSeries, error) {
	byHash := map[uint64][]*mergedSeries{}
	var all []*mergedSeries
	var b labels.ScratchBuilder
	for _, res := range results {
		for _, ss := range res.series {
			b.Reset()
			for _, l := range ss.GetLabels() {
				b.Add(l.GetName(), l.GetValue())
			}
			b.Sort()
			lset := b.Labels()
			h := lset.Hash()
			var m *mergedSeries
			for _, cand := range byHash[h] {
				if labels.Equal(cand.lset, lset) {
					m = cand
					break
				}
			}
			if m == nil {
				m = &mergedSeries{lset: lset, mint: mint, maxt: maxt}
				byHash[h] = append(byHash[h], m)
				all = append(all, m)
			}
			if labelsOnly {
				continue
			}
			for _, c := range ss.GetChunks() {
				if c.GetMaxTimeMs() < mint || c.GetMinTimeMs() > maxt {
					continue
				}
				m.chunks = append(m.chunks, chunkRef{mint: c.GetMinTimeMs(), maxt: c.GetMaxTimeMs(),
					enc: chunkenc.Encoding(c.GetEncoding()), data: c.GetData()})
			}
		}
	}
	for _, m := range all {
		if err := m.finish(); err != nil {
			return nil, err
		}
	}
	slices.SortFunc(all, func(a, b *mergedSeries) int { return labels.Compare(a.lset, b.lset) })
	return all, nil
}

// finish sorts the chunks, drops exact copies (replicas that received the same samples cut the same
// chunks), decodes the rest, and trims the chunks that straddle [mint, maxt]: a querier answers for
// its range only, and re-encoding the (at most two) boundary chunks keeps iteration free of checks.
func (m *mergedSeries) finish() error {
	slices.SortFunc(m.chunks, func(a, b chunkRef) int {
		if c := cmp.Compare(a.mint, b.mint); c != 0 {
			return c
		}
		if c := cmp.Compare(a.maxt, b.maxt); c != 0 {
			return c
		}
		return cmp.Compare(len(a.data), len(b.data))
	})
	out := m.chunks[:0]
	for _, c := range m.chunks {
		if n := len(out); n > 0 {
			last := out[n-1]
			if last.mint == c.mint && last.maxt == c.maxt && last.enc == c.enc && bytes.Equal(last.data, c.data) {
				continue
			}
		}
		chk, err := chunkenc.FromData(c.enc, c.data)
		if err != nil {
			return fmt.Errorf("querier: chunk [%d, %d] of series %s: %w", c.mint, c.maxt, m.lset, err)
		}
		c.chunk = chk
		if c.mint < m.mint || c.maxt > m.maxt {
			if c.chunk, err = trimChunk(chk, m.mint, m.maxt); err != nil {
				return fmt.Errorf("querier: chunk [%d, %d] of series %s: %w", c.mint, c.maxt, m.lset, err)
			}
			if c.chunk == nil {
				continue // no sample in range
			}
		}
		out = append(out, c)
	}
	m.chunks = out
	return nil
}

// trimChunk returns a chunk with the samples of chk in [mint, maxt], or nil if there are none. Only
// float (XOR) chunks are re-encoded; ingesters store nothing else, and another encoding is returned
// as is.
func trimChunk(chk chunkenc.Chunk, mint, maxt int64) (chunkenc.Chunk, error) {
	if chk.Encoding() != chunkenc.EncXOR {
		return chk, nil
	}
	out := chunkenc.NewXORChunk()
	app, err := out.Appender()
	if err != nil {
		return nil, err
	}
	it := chk.Iterator(nil)
	for vt := it.Seek(mint); vt == chunkenc.ValFloat; vt = it.Next() {
		t, v := it.At()
		if t > maxt {
			break
		}
		app.Append(t, v)
	}
	if err := it.Err(); err != nil {
		return nil, err
	}
	if out.NumSamples() == 0 {
		return nil, nil
	}
	return out, nil
}
