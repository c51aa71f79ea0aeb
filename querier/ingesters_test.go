package querier

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
	"go.uber.org/goleak"

	"github.com/raftingest/raftingest/ringstate"
	"github.com/raftingest/raftingest/tenant"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func newIngesterQueryable(t *testing.T, rf int, ring RingSource) *MemberQueryable {
	t.Helper()
	pool := NewGRPCPool(16 << 20)
	t.Cleanup(func() { pool.Close() })
	q, err := NewIngesterQueryable(IngestersConfig{Ring: ring, Clients: pool, ReplicationFactor: rf, HeartbeatTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return q
}

func selectAll(t *testing.T, q storage.Queryable, tenantID string, mint, maxt int64, ms ...*labels.Matcher) (map[string][]sample, []string, error) {
	t.Helper()
	qr, err := q.Querier(mint, maxt)
	if err != nil {
		return nil, nil, err
	}
	defer qr.Close()
	if len(ms) == 0 {
		ms = []*labels.Matcher{labels.MustNewMatcher(labels.MatchRegexp, "__name__", ".+")}
	}
	set := qr.Select(tenant.With(bg, tenantID), true, nil, ms...)
	if set.Err() != nil {
		return nil, nil, set.Err()
	}
	got, order := collect(t, set)
	return got, order, nil
}

// Replicas hold the same series with identical chunks (the normal case), with chunks cut at other
// samples (a replica restarted), or missing samples (a replica outside the write quorum): the merged
// series has every sample once, in time order.
func TestIngesterQueryable_MergesReplicasWithoutDuplicates(t *testing.T) {
	a, b, c := startFakeIngester(t), startFakeIngester(t), startFakeIngester(t)
	all := samplesRange(0, 599_000, 15_000) // 40 samples
	same := labels.FromStrings("__name__", "m", "series", "same")
	for _, f := range []*fakeIngester{a, b, c} {
		f.add("t1", same, xorChunks(t, all, 10)...)
	}
	cut := labels.FromStrings("__name__", "m", "series", "cut")
	a.add("t1", cut, xorChunks(t, all, 10)...)
	b.add("t1", cut, xorChunks(t, all, 7)...)
	// c missed every third sample.
	var holes []sample
	for i, s := range all {
		if i%3 != 0 {
			holes = append(holes, s)
		}
	}
	c.add("t1", cut, xorChunks(t, holes, 13)...)
	only := labels.FromStrings("__name__", "m", "series", "only-on-c")
	c.add("t1", only, xorChunks(t, all[:5], 120)...)
	other := labels.FromStrings("__name__", "m", "series", "other-tenant")
	a.add("t2", other, xorChunks(t, all, 120)...)

	q := newIngesterQueryable(t, 3, newRing(t, member{addr: a.addr, state: ringstate.ACTIVE},
		member{addr: b.addr, state: ringstate.ACTIVE}, member{addr: c.addr, state: ringstate.LEAVING}))
	got, order, err := selectAll(t, q, "t1", 0, 1_000_000)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][]sample{same.String(): all, cut.String(): all, only.String(): all[:5]}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("merged series:\n got %v\nwant %v", got, want)
	}
	if !slices.IsSortedFunc(order, strings.Compare) || len(order) != 3 {
		t.Fatalf("series order %v: want 3 series sorted by labels", order)
	}
	for _, f := range []*fakeIngester{a, b, c} {
		if len(f.tenants) != 1 || f.tenants[0] != "t1" {
			t.Fatalf("ingester %s was asked for tenants %v, want [t1]", f.addr, f.tenants)
		}
	}
}

// Chunks hold samples outside the querier's range: they must not leak into the answer, whether the
// range comes from Querier(mint, maxt) or from narrower Select hints.
func TestIngesterQueryable_TrimsToRange(t *testing.T) {
	a := startFakeIngester(t)
	all := samplesRange(0, 599_000, 15_000)
	ls := labels.FromStrings("__name__", "m")
	a.add("t", ls, xorChunks(t, all, 120)...) // one chunk spanning everything
	q := newIngesterQueryable(t, 1, newRing(t, member{addr: a.addr, state: ringstate.ACTIVE}))

	got, _, err := selectAll(t, q, "t", 100_000, 200_000)
	if err != nil {
		t.Fatal(err)
	}
	want := samplesRange(105_000, 195_000, 15_000)
	if fmt.Sprint(got[ls.String()]) != fmt.Sprint(want) {
		t.Fatalf("trimmed to querier range: got %v, want %v", got[ls.String()], want)
	}

	qr, _ := q.Querier(0, 1_000_000)
	set := qr.Select(tenant.With(bg, "t"), true, &storage.SelectHints{Start: 300_000, End: 330_000},
		labels.MustNewMatcher(labels.MatchEqual, "__name__", "m"))
	got, _ = collect(t, set)
	if want := samplesRange(300_000, 330_000, 15_000); fmt.Sprint(got[ls.String()]) != fmt.Sprint(want) {
		t.Fatalf("trimmed to hints: got %v, want %v", got[ls.String()], want)
	}

	// A range between two samples: the series has no sample there and yields none.
	got, _, err = selectAll(t, q, "t", 1_000, 2_000)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 0 {
		t.Fatalf("empty range: got %v", got)
	}
}

// floor(RF/2) members may fail or be unhealthy; one more fails the read rather than answer with
// samples missing.
func TestIngesterQueryable_ToleratesFloorHalfRFFailures(t *testing.T) {
	all := samplesRange(0, 60_000, 15_000)
	ls := labels.FromStrings("__name__", "m")
	cases := []struct {
		name    string
		rf      int
		members func(ok []*fakeIngester, failing *fakeIngester, dead string) []member
		wantErr bool
	}{
		{"rf3 one unreachable", 3, func(ok []*fakeIngester, _ *fakeIngester, dead string) []member {
			return []member{{addr: ok[0].addr}, {addr: ok[1].addr}, {addr: dead}}
		}, false},
		{"rf3 one returns errors", 3, func(ok []*fakeIngester, failing *fakeIngester, _ string) []member {
			return []member{{addr: ok[0].addr}, {addr: ok[1].addr}, {addr: failing.addr}}
		}, false},
		{"rf3 one unhealthy in the ring is skipped", 3, func(ok []*fakeIngester, _ *fakeIngester, dead string) []member {
			return []member{{addr: ok[0].addr}, {addr: ok[1].addr}, {addr: dead, stale: true}}
		}, false},
		{"rf3 two fail", 3, func(ok []*fakeIngester, failing *fakeIngester, dead string) []member {
			return []member{{addr: ok[0].addr}, {addr: failing.addr}, {addr: dead}}
		}, true},
		{"rf3 one unhealthy and one failing", 3, func(ok []*fakeIngester, failing *fakeIngester, dead string) []member {
			return []member{{addr: ok[0].addr}, {addr: failing.addr}, {addr: dead, stale: true}}
		}, true},
		{"rf5 two fail", 5, func(ok []*fakeIngester, failing *fakeIngester, dead string) []member {
			return []member{{addr: ok[0].addr}, {addr: ok[1].addr}, {addr: ok[2].addr}, {addr: failing.addr}, {addr: dead}}
		}, false},
		{"rf5 three fail", 5, func(ok []*fakeIngester, failing *fakeIngester, dead string) []member {
			return []member{{addr: ok[0].addr}, {addr: ok[1].addr}, {addr: failing.addr}, {addr: dead}, {addr: dead, stale: true}}
		}, true},
		{"rf3 capped to 1 by a one-member ring, which fails", 3, func(_ []*fakeIngester, failing *fakeIngester, _ string) []member {
			return []member{{addr: failing.addr}}
		}, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ok := []*fakeIngester{startFakeIngester(t), startFakeIngester(t), startFakeIngester(t)}
			for _, f := range ok {
				f.add("t", ls, xorChunks(t, all, 120)...)
			}
			failing := startFakeIngester(t)
			failing.fail = true
			ms := tc.members(ok, failing, deadAddr(t))
			for i := range ms {
				ms[i].state = ringstate.ACTIVE
			}
			q := newIngesterQueryable(t, tc.rf, newRing(t, ms...))
			got, _, err := selectAll(t, q, "t", 0, 60_000)
			if tc.wantErr {
				if !errors.Is(err, ErrTooManyIngesterFailures) {
					t.Fatalf("err %v, want ErrTooManyIngesterFailures", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if fmt.Sprint(got[ls.String()]) != fmt.Sprint(all) {
				t.Fatalf("got %v, want %v", got, all)
			}
		})
	}
}

// PENDING and JOINING members hold no readable data and are neither asked nor counted as failures.
func TestIngesterQueryable_SkipsNonReadableStates(t *testing.T) {
	a := startFakeIngester(t)
	ls := labels.FromStrings("__name__", "m")
	a.add("t", ls, xorChunks(t, samplesRange(0, 15_000, 15_000), 120)...)
	joining := startFakeIngester(t)
	joining.fail = true
	q := newIngesterQueryable(t, 3, newRing(t, member{addr: a.addr, state: ringstate.ACTIVE},
		member{addr: joining.addr, state: ringstate.JOINING}, member{addr: deadAddr(t), state: ringstate.PENDING}))
	got, _, err := selectAll(t, q, "t", 0, 15_000)
	if err != nil || len(got[ls.String()]) != 2 {
		t.Fatalf("got %v, %v; want 2 samples from the ACTIVE member", got, err)
	}
	if len(joining.tenants) != 0 {
		t.Fatalf("the JOINING member was asked %d times", len(joining.tenants))
	}
}

func TestIngesterQueryable_NoTenantFails(t *testing.T) {
	q := newIngesterQueryable(t, 1, newRing(t, member{addr: deadAddr(t), state: ringstate.ACTIVE}))
	qr, _ := q.Querier(0, 1)
	set := qr.Select(bg, true, nil, labels.MustNewMatcher(labels.MatchEqual, "__name__", "m"))
	if set.Next() || !errors.Is(set.Err(), tenant.ErrNoTenant) {
		t.Fatalf("err %v, want tenant.ErrNoTenant", set.Err())
	}
}

func TestIngesterQueryable_LabelNamesAndValues(t *testing.T) {
	a, b := startFakeIngester(t), startFakeIngester(t)
	s := xorChunks(t, samplesRange(0, 15_000, 15_000), 120)
	a.add("t", labels.FromStrings("__name__", "up", "job", "api", "zone", "a"), s...)
	b.add("t", labels.FromStrings("__name__", "up", "job", "db"), s...)
	b.add("t", labels.FromStrings("__name__", "errors", "job", "api", "code", "500"), s...)
	q := newIngesterQueryable(t, 2, newRing(t, member{addr: a.addr, state: ringstate.ACTIVE}, member{addr: b.addr, state: ringstate.ACTIVE}))
	qr, _ := q.Querier(0, 20_000)
	ctx := tenant.With(bg, "t")
	names, _, err := qr.LabelNames(ctx, nil)
	if err != nil || fmt.Sprint(names) != "[__name__ code job zone]" {
		t.Fatalf("label names: %v, %v", names, err)
	}
	names, _, err = qr.LabelNames(ctx, nil, labels.MustNewMatcher(labels.MatchEqual, "__name__", "up"))
	if err != nil || fmt.Sprint(names) != "[__name__ job zone]" {
		t.Fatalf("label names of up: %v, %v", names, err)
	}
	vals, _, err := qr.LabelValues(ctx, "job", nil)
	if err != nil || fmt.Sprint(vals) != "[api db]" {
		t.Fatalf("job values: %v, %v", vals, err)
	}
	vals, _, err = qr.LabelValues(ctx, "job", &storage.LabelHints{Limit: 1}, labels.MustNewMatcher(labels.MatchRegexp, "__name__", "u.*"))
	if err != nil || fmt.Sprint(vals) != "[api]" {
		t.Fatalf("job values of u.* limited to 1: %v, %v", vals, err)
	}
}
