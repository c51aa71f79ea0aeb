package ingester

import (
	"context"
	"math"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/prometheus/model/labels"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/raftingest/raftingest/ingesterpb"
	"github.com/raftingest/raftingest/memstore"
)

func memstoreTestConfig() memstore.Config { return memstore.DefaultConfig() }

func openTestStore(tb testing.TB, cfg memstore.Config) *memstore.Store {
	tb.Helper()
	st, err := memstore.Open(cfg, prometheus.NewRegistry(), nil)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = st.Close() })
	return st
}

func ingesterTenantCtx(tenant string) context.Context {
	return metadata.NewIncomingContext(context.Background(), metadata.Pairs(ingesterpb.TenantMetadataKey, tenant))
}

// pushCase is a request with every outcome a Push can have: new and existing series, accepted,
// idempotent, duplicate and out-of-order samples, invalid labels, unsorted labels, NaN values.
func pushCases() []*ingesterpb.PushRequest {
	l := func(kv ...string) []*ingesterpb.Label {
		var out []*ingesterpb.Label
		for i := 0; i < len(kv); i += 2 {
			out = append(out, &ingesterpb.Label{Name: kv[i], Value: kv[i+1]})
		}
		return out
	}
	s := func(tv ...float64) []*ingesterpb.Sample {
		var out []*ingesterpb.Sample
		for i := 0; i < len(tv); i += 2 {
			out = append(out, &ingesterpb.Sample{Timestamp: int64(tv[i]), Value: tv[i+1]})
		}
		return out
	}
	return []*ingesterpb.PushRequest{
		{Timeseries: []*ingesterpb.TimeSeries{
			{Labels: l("__name__", "a", "job", "x"), Samples: s(10, 1, 20, 2)},
			{Labels: l("job", "y", "__name__", "a"), Samples: s(10, math.NaN())}, // unsorted
			{Labels: l("__name__", "b", "__name__", "c"), Samples: s(10, 1)},     // duplicate name
			{Labels: l("__name__", "e")},                                         // no samples
		}},
		{Timeseries: []*ingesterpb.TimeSeries{
			{Labels: l("__name__", "a", "job", "x"), Samples: s(20, 2, 15, 3, 20, 5, 30, 3)}, // idempotent, ooo, dup, ok
			{Labels: l("__name__", "a", "job", "y"), Samples: s(20, 1)},
			{Labels: l("__name__", "d"), Samples: s(5, 1)},
		}},
	}
}

// TestPushRaw_SameAsPush: the generated Push and both raw paths (PushRaw, the local client) give the
// same answers and leave the same data, request after request. The gRPC paths validate labels
// (invalid series come back INVALID); the local client trusts its own distributor, so it is
// compared on requests that keep the TimeSeries contract, as every request a distributor sends.
func TestPushRaw_SameAsPush(t *testing.T) {
	writable := func() (bool, string) { return true, "" }
	ctx := ingesterTenantCtx("t")
	for _, tc := range []struct {
		name  string
		local bool
		reqs  []*ingesterpb.PushRequest
	}{
		{"every outcome, gRPC paths", false, pushCases()},
		{"valid requests, every path", true, validPushCases()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ref := &ingesterService{store: openTestStore(t, memstore.DefaultConfig()), writable: writable}
			viaRaw := &ingesterService{store: openTestStore(t, memstore.DefaultConfig()), writable: writable}
			viaLocal := &ingesterService{store: openTestStore(t, memstore.DefaultConfig()), writable: writable}
			stores := []*memstore.Store{viaRaw.store}
			if tc.local {
				stores = append(stores, viaLocal.store)
			}
			for i, req := range tc.reqs {
				raw, err := proto.Marshal(req)
				if err != nil {
					t.Fatal(err)
				}
				want, err := ref.Push(ctx, req)
				if err != nil {
					t.Fatal(err)
				}
				got, err := rawIngesterService{viaRaw}.PushRaw(ctx, raw)
				if err != nil {
					t.Fatal(err)
				}
				if !proto.Equal(want, got) {
					t.Fatalf("request %d: PushRaw answered %v, Push %v", i, got, want)
				}
				if !tc.local {
					continue
				}
				data := append([]byte(nil), raw...)
				got, err = newLocalClient(viaLocal).Push(context.Background(), "t", &ingesterpb.RawPushRequest{Data: &data})
				if err != nil {
					t.Fatal(err)
				}
				if !proto.Equal(want, got) {
					t.Fatalf("request %d: local client answered %v, Push %v", i, got, want)
				}
				clear(data) // the caller's bytes are gone: nothing may alias them
			}
			wantData := selectAll(t, ref.store)
			for _, st := range stores {
				got := selectAll(t, st)
				if len(got) != len(wantData) {
					t.Fatalf("%d series, want %d", len(got), len(wantData))
				}
				for k, v := range wantData {
					if got[k] != v {
						t.Fatalf("series %s: %d chunk bytes, want %d", k, got[k], v)
					}
				}
			}
		})
	}
}

// validPushCases are pushCases without the series that break the TimeSeries contract.
func validPushCases() []*ingesterpb.PushRequest {
	var out []*ingesterpb.PushRequest
	for _, req := range pushCases() {
		keep := &ingesterpb.PushRequest{}
		for _, ts := range req.GetTimeseries() {
			var lc ingesterpb.LabelChecker
			for _, l := range ts.GetLabels() {
				lc.Add(l.GetName(), l.GetValue())
			}
			if lc.Done() == nil {
				keep.Timeseries = append(keep.Timeseries, ts)
			}
		}
		out = append(out, keep)
	}
	return out
}

func selectAll(t *testing.T, st *memstore.Store) map[string]int {
	t.Helper()
	series, err := st.Select("t", math.MinInt64, math.MaxInt64, labels.MustNewMatcher(labels.MatchRegexp, "__name__", ".+"))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int{}
	for _, s := range series {
		n := 0
		for _, c := range s.Chunks {
			n += len(c.Data)
		}
		out[s.Labels.String()] = n
	}
	return out
}

// TestPushRaw_Errors: the raw paths fail like the generated one: malformed request (Internal, as gRPC
// reports a request it cannot unmarshal), no tenant (InvalidArgument), not writable (Unavailable),
// done context (local client, as gRPC would not start the call).
func TestPushRaw_Errors(t *testing.T) {
	svc := &ingesterService{store: openTestStore(t, memstore.DefaultConfig()), writable: func() (bool, string) { return false, "leaving" }}
	raw, _ := proto.Marshal(pushCases()[0])
	check := func(name string, err error, want codes.Code) {
		t.Helper()
		if status.Code(err) != want {
			t.Errorf("%s: %v, want %s", name, err, want)
		}
	}
	_, err := rawIngesterService{svc}.PushRaw(ingesterTenantCtx("t"), []byte{0x0a, 0x7f})
	check("malformed", err, codes.Internal)
	_, err = rawIngesterService{svc}.PushRaw(context.Background(), raw)
	check("no tenant", err, codes.InvalidArgument)
	_, err = rawIngesterService{svc}.PushRaw(ingesterTenantCtx("t"), raw)
	check("not writable", err, codes.Unavailable)
	lc := newLocalClient(svc)
	data := append([]byte(nil), raw...)
	_, err = lc.Push(context.Background(), "t", &ingesterpb.RawPushRequest{Data: &data})
	check("local, not writable", err, codes.Unavailable)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err = lc.Push(ctx, "t", &ingesterpb.RawPushRequest{Data: &data})
	check("local, cancelled", err, codes.Canceled)
	bad := []byte{0x0a, 0x7f}
	_, err = lc.Push(context.Background(), "t", &ingesterpb.RawPushRequest{Data: &bad})
	check("local, malformed", err, codes.Internal)
	_, err = lc.Push(context.Background(), "../../outside", &ingesterpb.RawPushRequest{Data: &data})
	check("local, tenant out of the bucket", err, codes.InvalidArgument)
	_, err = rawIngesterService{svc}.PushRaw(ingesterTenantCtx(".."), raw)
	check("tenant ..", err, codes.InvalidArgument)
}
