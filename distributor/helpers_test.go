package distributor

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"net/http/httptest"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang/snappy"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/prometheus/prompb"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/raftingest/raftingest/ingesterpb"
	"github.com/raftingest/raftingest/ringstate"
)

// ---- rings ----

// staticRing is a RingSource holding one ring.
type staticRing struct {
	r atomic.Pointer[ringstate.Ring]
}

func (s *staticRing) Ring() *ringstate.Ring { return s.r.Load() }

func ringOf(r *ringstate.Ring) *staticRing {
	s := &staticRing{}
	s.r.Store(r)
	return s
}

// memberSpec describes a member of a test ring.
type memberSpec struct {
	id    string
	state ringstate.State // ACTIVE, LEAVING or JOINING (PENDING members own no tokens)
	stale bool            // no heartbeat since registration: unhealthy at the final ring time
	addr  string          // gRPC address; default addrOf(id)
}

// testRingTimeMs is the ring time of test rings; members heartbeat at it unless stale, and stale
// members last heartbeat at 1000, so with a 10s timeout they are unhealthy.
const (
	testRingTimeMs    = 100_000
	testHeartbeatTime = 10 * time.Second
)

// buildRing builds a ring through ringstate's Apply, as the FSM would: register, claim tokens,
// activate, then leave or stay JOINING as asked. Each member gets 64 tokens spread evenly and
// interleaved with the others', so every member owns about the same share of every series' walk.
func buildRing(t testing.TB, specs ...memberSpec) *ringstate.Ring {
	t.Helper()
	r := ringstate.New()
	apply := func(c ringstate.Command, at int64) {
		t.Helper()
		next, _, err := r.Apply(c, at)
		if err != nil {
			t.Fatalf("apply %s %s: %v", c.Op, c.Member, err)
		}
		r = next
	}
	const perMember = 64
	n := len(specs)
	for i, s := range specs {
		id := ringstate.MemberID(s.id)
		apply(ringstate.Command{Op: ringstate.OpRegister, Member: id, RaftAddr: fmt.Sprintf("127.0.0.1:%d", 7000+i),
			GRPCAddr: cmp.Or(s.addr, addrOf(s.id))}, 1000)
		var toks ringstate.Tokens
		for k := range perMember {
			toks = append(toks, ringstate.Token(uint32((k*n+i)*(math.MaxUint32/(perMember*n)))+1))
		}
		apply(ringstate.Command{Op: ringstate.OpClaimTokens, Member: id, Tokens: toks}, 1000)
		if s.state != ringstate.JOINING {
			apply(ringstate.Command{Op: ringstate.OpActivate, Member: id}, 1000)
		}
		if s.state == ringstate.LEAVING {
			apply(ringstate.Command{Op: ringstate.OpLeave, Member: id}, 1000)
		}
	}
	for _, s := range specs {
		if !s.stale {
			apply(ringstate.Command{Op: ringstate.OpHeartbeat, Member: ringstate.MemberID(s.id)}, testRingTimeMs)
		}
	}
	return r
}

func addrOf(id string) string { return "fake-" + id + ":9095" }

func active(ids ...string) []memberSpec {
	var out []memberSpec
	for _, id := range ids {
		out = append(out, memberSpec{id: id})
	}
	return out
}

// ---- fake ingesters ----

// fakeIngester is an in-memory ingester behind the IngesterClient interface. It decodes every
// request with the generated ingesterpb code (so the raw bytes the distributor builds are checked on
// every call), stores the series per tenant, and can fail, delay, or refuse series.
type fakeIngester struct {
	addr string

	mu      sync.Mutex
	calls   int
	stored  map[string][]*ingesterpb.TimeSeries     // by tenant
	meta    map[string][]*ingesterpb.MetricMetadata // by tenant
	callErr error                                   // fail every call with this error
	delay   time.Duration                           // answer after this long (or when ctx ends)
	hang    chan struct{}                           // if set, answer only once it is closed (or ctx ends)
	refuse  func(ts *ingesterpb.TimeSeries) *ingesterpb.SeriesError
}

func (f *fakeIngester) Push(ctx context.Context, tenant string, req *ingesterpb.RawPushRequest) (*ingesterpb.PushResponse, error) {
	var pr ingesterpb.PushRequest
	err := proto.Unmarshal(*req.Data, &pr)
	if req.Pool != nil {
		req.Pool.Put(req.Data) // ownership came to us; a real transport does this when done
	}
	f.mu.Lock()
	f.calls++
	delay, callErr, refuse, hang := f.delay, f.callErr, f.refuse, f.hang
	f.mu.Unlock()
	if err != nil {
		return nil, fmt.Errorf("fake ingester %s: request does not decode as a PushRequest: %w", f.addr, err)
	}
	if delay > 0 {
		select {
		case <-time.After(delay):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if hang != nil {
		select {
		case <-hang:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if callErr != nil {
		return nil, callErr
	}
	resp := &ingesterpb.PushResponse{}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.stored == nil {
		f.stored = map[string][]*ingesterpb.TimeSeries{}
	}
	if f.meta == nil {
		f.meta = map[string][]*ingesterpb.MetricMetadata{}
	}
	f.meta[tenant] = append(f.meta[tenant], pr.Metadata...)
	for i, ts := range pr.Timeseries {
		if refuse != nil {
			if e := refuse(ts); e != nil {
				e.Index = uint32(i)
				resp.Errors = append(resp.Errors, e)
				continue
			}
		}
		f.stored[tenant] = append(f.stored[tenant], ts)
		resp.SamplesIngested += uint64(len(ts.Samples))
	}
	return resp, nil
}

func (f *fakeIngester) set(fn func(f *fakeIngester)) { f.mu.Lock(); fn(f); f.mu.Unlock() }

func (f *fakeIngester) numCalls() int { f.mu.Lock(); defer f.mu.Unlock(); return f.calls }

// series returns the stored series of tenant rendered as strings, sorted.
func (f *fakeIngester) series(tenant string) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, ts := range f.stored[tenant] {
		out = append(out, renderPB(ts))
	}
	sort.Strings(out)
	return out
}

func renderPB(ts *ingesterpb.TimeSeries) string {
	var ls []Label
	for _, l := range ts.Labels {
		ls = append(ls, Label{l.Name, l.Value})
	}
	s := renderSeries(ls)
	for _, smp := range ts.Samples {
		s += fmt.Sprintf(" %d@%v", smp.Timestamp, smp.Value)
	}
	// Native histograms travel in TimeSeries field 4, which ingester.proto leaves to the raw
	// decoder (the generated code keeps it as an unknown field).
	for b := ts.ProtoReflect().GetUnknown(); len(b) > 0; {
		num, typ, n := protowire.ConsumeTag(b)
		b = b[n:]
		if num == 4 && typ == protowire.BytesType {
			m, n := protowire.ConsumeBytes(b)
			b = b[n:]
			t, h, fh, err := ingesterpb.DecodeHistogram(m)
			switch {
			case err != nil:
				s += " histogram:" + err.Error()
			case h != nil:
				s += fmt.Sprintf(" %d@%s", t, h)
			default:
				s += fmt.Sprintf(" %d@%s", t, fh)
			}
			continue
		}
		b = b[protowire.ConsumeFieldValue(num, typ, b):]
	}
	return s
}

// fakePool is a ClientPool of fake ingesters, created on demand by address.
type fakePool struct {
	mu   sync.Mutex
	ings map[string]*fakeIngester
}

func newFakePool() *fakePool { return &fakePool{ings: map[string]*fakeIngester{}} }

func (p *fakePool) GetClientFor(addr string) (IngesterClient, error) { return p.get(addr), nil }

func (p *fakePool) get(addr string) *fakeIngester {
	p.mu.Lock()
	defer p.mu.Unlock()
	f, ok := p.ings[addr]
	if !ok {
		f = &fakeIngester{addr: addr}
		p.ings[addr] = f
	}
	return f
}

func (p *fakePool) ing(id string) *fakeIngester { return p.get(addrOf(id)) }

// totalCalls is the number of Push calls over every fake.
func (p *fakePool) totalCalls() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, f := range p.ings {
		n += f.numCalls()
	}
	return n
}

// replicasOf counts on how many fakes a series (rendered) is stored for tenant.
func (p *fakePool) replicasOf(tenant, rendered string) int {
	p.mu.Lock()
	ings := make([]*fakeIngester, 0, len(p.ings))
	for _, f := range p.ings {
		ings = append(ings, f)
	}
	p.mu.Unlock()
	n := 0
	for _, f := range ings {
		if slices.Contains(f.series(tenant), rendered) {
			n++
		}
	}
	return n
}

// ---- distributors and requests ----

// fakeClock is a settable clock.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time          { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) Advance(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }
func newClock(t time.Time) *fakeClock        { return &fakeClock{t: t} }
func testNow() time.Time                     { return time.UnixMilli(1_700_000_000_000) }
func testLogger() *slog.Logger               { return slog.New(slog.DiscardHandler) }
func ts(offset time.Duration) int64          { return testNow().Add(offset).UnixMilli() }
func lbls(kv ...string) []prompb.Label       { return pairs(kv) }
func pairs(kv []string) (out []prompb.Label) {
	for i := 0; i+1 < len(kv); i += 2 {
		out = append(out, prompb.Label{Name: kv[i], Value: kv[i+1]})
	}
	return out
}

func defaultConfig() Config {
	var c Config
	fs := newFlagSet()
	c.RegisterFlags(fs)
	c.RingHeartbeatTimeout = testHeartbeatTime
	c.IngestionRateLimit = 0
	return c
}

type testEnv struct {
	d     *Distributor
	pool  *fakePool
	ring  *staticRing
	clock *fakeClock
	reg   *prometheus.Registry
	srv   *httptest.Server
}

func newEnv(t testing.TB, cfg Config, specs ...memberSpec) *testEnv {
	t.Helper()
	return newEnvDeps(t, cfg, nil, specs...)
}

// newEnvDeps is newEnv with the Deps changed by tweak (when not nil) before New.
func newEnvDeps(t testing.TB, cfg Config, tweak func(*Deps), specs ...memberSpec) *testEnv {
	t.Helper()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	e := &testEnv{pool: newFakePool(), ring: ringOf(buildRing(t, specs...)), clock: newClock(testNow()), reg: prometheus.NewRegistry()}
	deps := Deps{Ring: e.ring, Clients: e.pool, Registerer: e.reg, Logger: testLogger(), Now: e.clock.Now}
	if tweak != nil {
		tweak(&deps)
	}
	d, err := New(cfg, deps)
	if err != nil {
		t.Fatal(err)
	}
	e.d = d
	e.srv = newHTTPServer(d)
	t.Cleanup(func() { e.srv.Close(); d.Wait() })
	return e
}

func newHTTPServer(h http.Handler) *httptest.Server { return httptest.NewServer(h) }

// encode builds a snappy-compressed remote-write body.
func encode(t testing.TB, series ...prompb.TimeSeries) []byte {
	t.Helper()
	wr := prompb.WriteRequest{Timeseries: series}
	b, err := wr.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return snappy.Encode(nil, b)
}

func series(ls []prompb.Label, samples ...prompb.Sample) prompb.TimeSeries {
	return prompb.TimeSeries{Labels: ls, Samples: samples}
}

func sample(v float64, offset time.Duration) prompb.Sample {
	return prompb.Sample{Value: v, Timestamp: ts(offset)}
}

// post sends body to the env's push endpoint with the remote-write headers (plus extra ones,
// "Header: value"; an empty value deletes the header) and returns the status and body.
func (e *testEnv) post(t testing.TB, body []byte, headers ...string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, e.srv.URL+"/api/v1/push", strings.NewReader(string(body)))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Encoding", "snappy")
	req.Header.Set("Content-Type", "application/x-protobuf")
	req.Header.Set("X-Prometheus-Remote-Write-Version", "0.1.0")
	for _, h := range headers {
		k, v, _ := strings.Cut(h, ": ")
		if v == "" {
			req.Header.Del(k)
		} else {
			req.Header.Set(k, v)
		}
	}
	resp, err := e.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	// Pushes to the last replicas may still run after the answer (once a quorum is known); tests look
	// at every replica, so wait for them.
	defer e.d.Wait()
	msg, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, strings.TrimSpace(string(msg))
}
