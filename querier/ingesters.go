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
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/raftingest/raftingest/histchunk"
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
	// ZoneAware is -ingester.ring.zone-awareness-enabled: the failure budget counts zones, not
	// members (budgetCost), and the replication factor is capped by the zones (EffectiveRFFor).
	ZoneAware bool
	// HeartbeatTimeout is -ring.heartbeat-timeout: members whose heartbeat is older (in ring time)
	// are not asked.
	HeartbeatTimeout time.Duration
	Logger           *slog.Logger
	metrics          *metrics
}

// source is what a member fan-out reads from each member: which RPC answers (both stream
// QueryStreamResponse with QueryStream's contract), which members are asked, and which members may
// hold the only copy of something in this source, so that their absence (unhealthy, or a failed
// call) uses up the failure budget.
type source struct {
	// name is the metrics' source label ("ingesters" or "blocks") and the errors' wording.
	name string
	// call opens the member's stream.
	call func(c ingesterpb.IngesterClient, ctx context.Context, req *ingesterpb.QueryRequest) (grpc.ServerStreamingClient[ingesterpb.QueryStreamResponse], error)
	// ask reports whether m is asked at ring time nowMs.
	ask func(m *ringstate.Member, nowMs, timeoutMs int64) bool
	// missing reports whether m's absence costs a copy: an unhealthy m that is not asked, or an
	// asked m whose call fails, counts against the failure budget only when missing(m). A member
	// asked that is not missing(m) is asked as a best effort: its failure is logged, not counted.
	missing func(m *ringstate.Member) bool
}

// holdsOnlyCopies reports whether m may hold the only copy of a sample, in memory or in its
// blocks: ACTIVE and LEAVING members only. The one statement about the other states, the same in
// docs/storage.md:
//
//   - PENDING holds no only copy. A fresh member has no data; one that was JOINING (a hand-over
//     aborted, or a restart, which turns JOINING back into PENDING) may hold blocks or chunks a
//     leaver sent it, but the leaver keeps its own until it exits, and it exits only once what it
//     holds is on members that stay (a completed hand-over makes the joiner ACTIVE, the flush
//     fallback sends its blocks to ACTIVE successors).
//   - JOINING holds no only copy either: a joiner claiming tokens of its own has no data, and one
//     receiving a hand-over receives copies of what its LEAVING peer still serves. CompleteHandover
//     makes it ACTIVE in the same commit that removes the leaver.
func holdsOnlyCopies(m *ringstate.Member) bool {
	return m.State == ringstate.ACTIVE || m.State == ringstate.LEAVING
}

// ingestersSource reads the members' memory (QueryStream): the readable members (ACTIVE or LEAVING,
// healthy) are asked; an unhealthy ACTIVE or LEAVING member holds samples nobody reads.
var ingestersSource = source{
	name: "ingesters",
	call: func(c ingesterpb.IngesterClient, ctx context.Context, req *ingesterpb.QueryRequest) (grpc.ServerStreamingClient[ingesterpb.QueryStreamResponse], error) {
		return c.QueryStream(ctx, req)
	},
	ask:     func(m *ringstate.Member, now, timeout int64) bool { return m.Readable(now, timeout) },
	missing: holdsOnlyCopies,
}

// blocksSource reads the blocks of the members' node-local buckets (QueryBlocks): every healthy
// member is asked whatever its state, since blocks outlive the state that flushed them (a PENDING or
// JOINING member may hold copies of blocks handed over to it; a LEAVING one still holds its own).
// Only an ACTIVE or LEAVING member's absence costs a copy (holdsOnlyCopies): the others are asked
// as a best effort.
var blocksSource = source{
	name: "blocks",
	call: func(c ingesterpb.IngesterClient, ctx context.Context, req *ingesterpb.QueryRequest) (grpc.ServerStreamingClient[ingesterpb.QueryStreamResponse], error) {
		return c.QueryBlocks(ctx, req)
	},
	ask:     func(m *ringstate.Member, now, timeout int64) bool { return m.Healthy(now, timeout) },
	missing: holdsOnlyCopies,
}

// MemberQueryable is a storage.Queryable over the members of the ring: every Select asks every
// member its source targets, in parallel, and merges the copies of each series into one without
// duplicate samples. NewIngesterQueryable reads the members' memory (QueryStream), NewBlocksQueryable
// the blocks of their node-local buckets (QueryBlocks); both share the streaming, the fetch limits
// and the replica merge below.
//
// Failures: floor(RF/2) members that may hold the only copy of something (ACTIVE or LEAVING,
// holdsOnlyCopies) may be unhealthy or fail (RF capped by the ring's EffectiveRF); a write reached
// a quorum of RF/2+1 of its RF replicas, and each replica flushes its own copy of what it holds, so
// for RF=3 any one missing member still leaves a copy of every acknowledged sample, in memory or in
// blocks. The budget is one per query, not one per source: a member counts once whether its memory,
// its blocks or both failed, through the query's readFailures (see there for why). More failures
// fail the read with ErrTooManyIngesterFailures. The budget assumes every member that acknowledged
// a write is still in the ring: see docs/storage.md for a removed member. Safe for concurrent use.
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
// label of a tenant, which a series limit would refuse. Memory: the values are kept as a set while
// the members' messages arrive and the series themselves are dropped, so the querier holds the
// distinct values plus about one message per member, never every member's copy of every series.
func (q *ingesterQuerier) LabelValues(ctx context.Context, name string, hints *storage.LabelHints, ms ...*labels.Matcher) ([]string, annotations.Annotations, error) {
	ms = append(slices.Clone(ms), labels.MustNewMatcher(labels.MatchNotEqual, name, ""))
	var mu sync.Mutex
	seen := map[string]struct{}{}
	_, err := q.q.fanOut(withLimiter(ctx, nil), q.mint, q.maxt, true, ms, func(ss *ingesterpb.StreamSeries) {
		for _, l := range ss.GetLabels() {
			if l.GetName() == name && l.GetValue() != "" {
				mu.Lock()
				seen[l.GetValue()] = struct{}{}
				mu.Unlock()
			}
		}
	})
	if err != nil {
		return nil, nil, err
	}
	return limitSorted(seen, hints), nil, nil
}

// LabelNames implements storage.Querier through a series selection; names come back sorted and
// unique. The per-query fetch limits do not apply, and memory holds the set of names only (see
// LabelValues).
func (q *ingesterQuerier) LabelNames(ctx context.Context, hints *storage.LabelHints, ms ...*labels.Matcher) ([]string, annotations.Annotations, error) {
	if len(ms) == 0 {
		ms = []*labels.Matcher{anyName}
	}
	var mu sync.Mutex
	seen := map[string]struct{}{}
	_, err := q.q.fanOut(withLimiter(ctx, nil), q.mint, q.maxt, true, ms, func(ss *ingesterpb.StreamSeries) {
		mu.Lock()
		defer mu.Unlock()
		for _, l := range ss.GetLabels() {
			seen[l.GetName()] = struct{}{}
		}
	})
	if err != nil {
		return nil, nil, err
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
	// counted: err uses up the failure budget (the member may hold the only copy of something).
	counted bool
	// cancelled: err is this fetch's own cancellation (another member crossed the budget) or the
	// caller's, not the member's failure: neither counted, nor logged, nor in the error's message.
	cancelled bool
}

// fetch asks every member the source targets for the tenant's series matching ms in [mint, maxt]
// and merges the copies into series sorted by labels.
//
// The query's limiter (limiterFrom(ctx)) counts every series and chunk as each stream's messages
// arrive; the first limit crossed cancels every stream and fails the fetch with its *LimitError,
// so no more than about one message per member is held beyond the limit. A labels-only fetch asks
// the members for no chunks (QueryRequest.labels_only) and counts series only.
//
// Each call reads eagerly: when it returns, every member's stream has ended. NewQueryable relies on
// it (memory is read before blocks).
func (q *MemberQueryable) fetch(ctx context.Context, mint, maxt int64, labelsOnly bool, ms []*labels.Matcher) ([]*mergedSeries, error) {
	results, err := q.fanOut(ctx, mint, maxt, labelsOnly, ms, nil)
	if err != nil {
		return nil, err
	}
	return mergeReplicas(results, mint, maxt, labelsOnly)
}

// fanOut asks every member the source targets for the tenant's series matching ms in [mint, maxt],
// in parallel, and returns each member's answer. When each is not nil, it is called (concurrently,
// from every member's stream) with every series as it arrives, and the results hold no series.
//
// The failure budget is floor(RF/2) members per query (readFailuresFrom(ctx), or this call's own
// when ctx has none): the unhealthy members that may hold only copies and the failed calls of such
// members are added to the query's failures, and the read fails when the failures against its
// selection and range, from this source or the other, exceed the budget.
func (q *MemberQueryable) fanOut(ctx context.Context, mint, maxt int64, labelsOnly bool, ms []*labels.Matcher, each func(*ingesterpb.StreamSeries)) ([]replicaResult, error) {
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
	rf := r.EffectiveRFFor(ringstate.Placement{RF: q.cfg.ReplicationFactor, ZoneAware: q.cfg.ZoneAware})
	maxErrors := rf / 2 // members, or zones when zone-aware (budgetCost)
	zoneOf := map[ringstate.MemberID]string{}
	failures := readFailuresFrom(ctx)
	if failures == nil {
		failures = &readFailures{} // this read alone
	}
	sel := selectionKey(ms)
	now, timeout := r.TimeMs(), q.cfg.HeartbeatTimeout.Milliseconds()
	var (
		targets   []ringstate.Member
		unhealthy []memberFailure
	)
	addrs := map[string]bool{}
	for _, m := range r.Members() {
		addrs[m.GRPCAddr] = true
		zoneOf[m.ID] = m.Zone
		switch {
		case src.ask(&m, now, timeout):
			targets = append(targets, m)
		case src.missing(&m):
			// It may hold data nobody else has and cannot be read: it uses up the budget.
			unhealthy = append(unhealthy, memberFailure{member: m.ID, zone: m.Zone, addr: m.GRPCAddr, source: src.name,
				selection: sel, mint: mint, maxt: maxt})
		}
	}
	if p, ok := q.cfg.Clients.(*GRPCPool); ok {
		p.Retain(addrs)
	}
	failures.add(unhealthy...)
	before := failures.against(sel, mint, maxt)
	if budgetCost(before, q.cfg.ZoneAware) > maxErrors {
		return nil, q.tooManyFailures(before, maxErrors, rf)
	}
	failedBefore := map[ringstate.MemberID]bool{}
	for _, f := range before {
		failedBefore[f.member] = true
	}

	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	results := make([]replicaResult, len(targets))
	var (
		wg        sync.WaitGroup
		mu        sync.Mutex
		newFailed []memberFailure // counted failures of members not among before
	)
	for i, m := range targets {
		wg.Add(1)
		go func() {
			defer wg.Done()
			series, err := q.queryOne(ctx, lim, tenantID, m.GRPCAddr, req, labelsOnly, each)
			results[i] = replicaResult{member: m.ID, addr: m.GRPCAddr, series: series, err: err}
			if err == nil {
				q.cfg.metrics.request(src.name, "success")
				return
			}
			if lim.Err() != nil {
				// The query crossed a limit (here or in another stream): not the member's fault.
				cancel(lim.Err())
				results[i].cancelled = true
				return
			}
			if ctx.Err() != nil && isCancellation(err) {
				// Stopped by this fetch (the budget was crossed) or by the caller: not the member's
				// failure. A gRPC status does not wrap context.Canceled, hence isCancellation.
				results[i].cancelled = true
				return
			}
			q.cfg.metrics.request(src.name, "error")
			if !src.missing(&m) {
				return // a best-effort member: logged below, never counted
			}
			results[i].counted = true
			mu.Lock()
			if !failedBefore[m.ID] {
				newFailed = append(newFailed, memberFailure{member: m.ID, zone: m.Zone})
			}
			if budgetCost(append(slices.Clone(before), newFailed...), q.cfg.ZoneAware) > maxErrors {
				cancel(nil) // the read has failed: stop the others early
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
	if err := lim.Err(); err != nil {
		return nil, err
	}
	var counted []memberFailure
	for _, res := range results {
		if res.counted {
			counted = append(counted, memberFailure{member: res.member, zone: zoneOf[res.member], addr: res.addr, source: src.name,
				selection: sel, mint: mint, maxt: maxt, err: res.err})
		}
	}
	failures.add(counted...)
	if after := failures.against(sel, mint, maxt); budgetCost(after, q.cfg.ZoneAware) > maxErrors {
		return nil, q.tooManyFailures(after, maxErrors, rf)
	}
	if err := context.Cause(ctx); err != nil {
		// The caller's context ended (timeout, cancellation); not a member failure.
		return nil, err
	}
	for _, res := range results {
		if res.err != nil && !res.cancelled {
			q.cfg.Logger.Warn("member query failed; answering from the other replicas", "source", src.name,
				"member", res.member, "addr", res.addr, "tenant", tenantID, "counted", res.counted, "err", res.err)
		}
	}
	return results, nil
}

// isCancellation reports whether err is a context's end, as a Go error or as a gRPC status.
func isCancellation(err error) bool {
	switch status.Code(err) {
	case codes.Canceled, codes.DeadlineExceeded:
		return true
	}
	return errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}

// tooManyFailures counts and returns the error of a read refused for the failures fs.
func (q *MemberQueryable) tooManyFailures(fs []memberFailure, maxErrors, rf int) error {
	q.cfg.metrics.quorumFailed(q.src.name)
	msgs := make([]string, len(fs))
	for i, f := range fs {
		msgs[i] = f.String()
	}
	if q.cfg.ZoneAware {
		return fmt.Errorf("%w: reading %s, members of %d zones that may hold the only copy of a sample failed or are unhealthy, at most %d zones tolerated with zone-aware replication factor %d: %s",
			ErrTooManyIngesterFailures, q.src.name, budgetCost(fs, true), maxErrors, rf, strings.Join(msgs, "; "))
	}
	return fmt.Errorf("%w: reading %s, %d members that may hold the only copy of a sample failed or are unhealthy, at most %d tolerated with replication factor %d: %s",
		ErrTooManyIngesterFailures, q.src.name, len(fs), maxErrors, rf, strings.Join(msgs, "; "))
}

// queryOne reads one member's stream, counting each message's series and chunks against lim
// before asking for the next; a limit crossed ends the call (its deferred cancel stops the stream).
// A labels-only fetch drops any chunks as they arrive (a member that predates labels_only sends them).
// When each is not nil every series goes to it and none is returned.
//
// A member may split one series across messages (its labels repeated with the next chunks, when
// the series alone crosses the member's message size bound): the limiter counts the label set once
// (it dedups series by hash) and every chunk once, and mergeReplicas joins the parts by label set.
func (q *MemberQueryable) queryOne(ctx context.Context, lim *queryLimiter, tenantID, addr string, req *ingesterpb.QueryRequest, labelsOnly bool, each func(*ingesterpb.StreamSeries)) ([]*ingesterpb.StreamSeries, error) {
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
		if each != nil {
			for _, ss := range resp.GetSeries() {
				each(ss)
			}
			continue
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

// trimChunk returns a chunk with the samples of chk in [mint, maxt], or nil if there are none. Float
// (XOR) and native histogram chunks are re-encoded; another encoding is returned as is.
func trimChunk(chk chunkenc.Chunk, mint, maxt int64) (chunkenc.Chunk, error) {
	if e := chk.Encoding(); e == chunkenc.EncHistogram || e == chunkenc.EncFloatHistogram {
		out, _, _, err := histchunk.Trim(chk, mint, maxt)
		return out, err
	}
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
