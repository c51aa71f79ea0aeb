package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/prometheus/prompb"

	pc "github.com/raftingest/raftingest/internal/proccluster"
)

// TestProcess_TenantsAndBadInput runs against a real 3-node cluster with multi-tenancy on: tenants
// are isolated, and each kind of bad input gets the status Prometheus expects with a message that
// names the series and the reason, while the good series of the same request are stored.
func TestProcess_TenantsAndBadInput(t *testing.T) {
	skipShort(t)
	_, a, b, cc := startCluster3(t, "-auth.multitenancy-enabled=true")
	now := time.Now().UnixMilli()
	good := func(name string, ts int64, v float64) prompb.TimeSeries {
		return series([]string{"__name__", name, "job", "e2e"}, prompb.Sample{Timestamp: ts, Value: v})
	}

	// Tenants are isolated.
	if code, body, err := push(a.HTTPAddr, "tenant-a", &prompb.WriteRequest{Timeseries: []prompb.TimeSeries{good("e2e_writes", now, 1)}}); err != nil || code/100 != 2 {
		t.Fatalf("push as tenant-a: %d %q %v", code, body, err)
	}
	for _, n := range []string{b.GRPCAddr, cc.GRPCAddr} {
		// The push was acknowledged at quorum: the third replica may store it a moment later.
		pc.Eventually(t, 5*time.Second, "tenant-a reads its sample from "+n, func() (bool, string) {
			gotA, err := queryIngester(context.Background(), n, "tenant-a", "e2e_writes")
			return err == nil && len(gotA) == 1, fmt.Sprintf("%v %v", gotA, err)
		})
		gotB, err := queryIngester(context.Background(), n, "tenant-b", "e2e_writes")
		if err != nil || len(gotB) != 0 {
			t.Fatalf("tenant-b sees tenant-a's data on %s: %v %v", n, gotB, err)
		}
	}

	huge := strings.Repeat("x", 5000)
	cases := []struct {
		name       string
		tenant     string
		req        *prompb.WriteRequest
		raw        []byte
		encoding   string
		wantCode   int
		wantInBody []string
		stored     string // a good series of the same request that must be stored
	}{
		{name: "no tenant header", tenant: "", req: &prompb.WriteRequest{Timeseries: []prompb.TimeSeries{good("e2e_x", now, 1)}},
			wantCode: 401, wantInBody: []string{"org"}},
		{name: "garbage body", tenant: "t", raw: []byte("this is not snappy"), encoding: "snappy", wantCode: 400},
		{name: "wrong content encoding", tenant: "t", raw: []byte("x"), encoding: "gzip", wantCode: 415, wantInBody: []string{"gzip"}},
		{name: "huge label value", tenant: "t", req: &prompb.WriteRequest{Timeseries: []prompb.TimeSeries{
			series([]string{"__name__", "e2e_huge", "v", huge}, prompb.Sample{Timestamp: now, Value: 1}),
			good("e2e_ok_huge", now, 1)}},
			wantCode: 400, wantInBody: []string{"e2e_huge", "length"}, stored: "e2e_ok_huge"},
		{name: "duplicate label name", tenant: "t", req: &prompb.WriteRequest{Timeseries: []prompb.TimeSeries{
			series([]string{"__name__", "e2e_dup", "a", "1", "a", "2"}, prompb.Sample{Timestamp: now, Value: 1}),
			good("e2e_ok_dup", now, 1)}},
			wantCode: 400, wantInBody: []string{"e2e_dup", "duplicate"}, stored: "e2e_ok_dup"},
		{name: "no metric name", tenant: "t", req: &prompb.WriteRequest{Timeseries: []prompb.TimeSeries{
			series([]string{"job", "x"}, prompb.Sample{Timestamp: now, Value: 1}), good("e2e_ok_noname", now, 1)}},
			wantCode: 400, wantInBody: []string{"metric name"}, stored: "e2e_ok_noname"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var code int
			var body string
			var err error
			if tc.raw != nil {
				code, body, err = pushRaw(a.HTTPAddr, tc.tenant, tc.raw, tc.encoding)
			} else {
				code, body, err = push(a.HTTPAddr, tc.tenant, tc.req)
			}
			if err != nil {
				t.Fatal(err)
			}
			if code != tc.wantCode {
				t.Fatalf("status %d, want %d: %s", code, tc.wantCode, body)
			}
			for _, w := range tc.wantInBody {
				if !strings.Contains(strings.ToLower(body), strings.ToLower(w)) {
					t.Fatalf("message %q does not mention %q", body, w)
				}
			}
			if tc.stored != "" {
				// A 2xx or 400 answer means each accepted series is on a quorum of its replicas;
				// the third copy may still be on its way.
				if n := storedOn(t, tc.tenant, tc.stored, a, b, cc); n < 2 {
					t.Fatalf("the good series %s of the request is on %d replicas, want a quorum of 2", tc.stored, n)
				}
			}
		})
	}

	// Out of order and conflicting duplicates: refused per series with 400 naming the series; an
	// identical duplicate (a retry) is accepted; the other series of the request are stored.
	first := &prompb.WriteRequest{Timeseries: []prompb.TimeSeries{good("e2e_ooo", now, 1), good("e2e_dupts", now, 1)}}
	if code, body, err := push(a.HTTPAddr, "t", first); err != nil || code/100 != 2 {
		t.Fatalf("first push: %d %q %v", code, body, err)
	}
	if code, body, err := push(a.HTTPAddr, "t", first); err != nil || code/100 != 2 {
		t.Fatalf("identical retry must be accepted: %d %q %v", code, body, err)
	}
	second := &prompb.WriteRequest{Timeseries: []prompb.TimeSeries{
		good("e2e_ooo", now-1000, 2), good("e2e_dupts", now, 3), good("e2e_after", now, 4)}}
	code, body, err := push(a.HTTPAddr, "t", second)
	if err != nil {
		t.Fatal(err)
	}
	if code != 400 || !strings.Contains(body, "e2e_ooo") || !strings.Contains(body, "e2e_dupts") {
		t.Fatalf("out-of-order and duplicate: status %d body %q; want 400 naming both series", code, body)
	}
	t.Logf("out-of-order/duplicate message: %s", strings.TrimSpace(body))
	if n := storedOn(t, "t", "e2e_after", a, b, cc); n < 2 {
		t.Fatalf("the good series of the refused request is on %d replicas, want a quorum of 2", n)
	}
	for _, n := range []*pc.Node{a, b, cc} {
		got, _ := queryIngester(context.Background(), n.GRPCAddr, "t", "e2e_dupts")
		if v, ok := got[sampleKey{"__name__=e2e_dupts,job=e2e", now}]; ok && v != 1 {
			t.Fatalf("the conflicting duplicate replaced the stored value on %s: %v", n.ID, got)
		}
	}
	if n := storedOn(t, "t", "e2e_dupts", a, b, cc); n < 2 {
		t.Fatalf("the first e2e_dupts sample is on %d replicas, want a quorum of 2", n)
	}
}

// TestProcess_SingleNodeCluster writes to a cluster of one: the replication factor is capped at one
// member, the cap is logged, and the samples are stored.
func TestProcess_SingleNodeCluster(t *testing.T) {
	skipShort(t)
	c := pc.New(t, fastFlags...)
	a := c.Start("a", "-bootstrap")
	waitActive(t, c, a.GRPCAddr, "a")
	now := time.Now().UnixMilli()
	req := &prompb.WriteRequest{Timeseries: []prompb.TimeSeries{
		series([]string{"__name__", "e2e_writes", "job", "single"}, prompb.Sample{Timestamp: now, Value: 42})}}
	if code, body, err := push(a.HTTPAddr, "", req); err != nil || code/100 != 2 {
		t.Fatalf("push to a single node: %d %q %v", code, body, err)
	}
	got, err := queryIngester(context.Background(), a.GRPCAddr, "anonymous", "e2e_writes")
	if err != nil || got[sampleKey{"__name__=e2e_writes,job=single", now}] != 42 {
		t.Fatalf("sample not stored: %v %v", got, err)
	}
	if !strings.Contains(a.Log(), "replication factor") {
		t.Errorf("the capped replication factor is not logged:\n%s", a.Log())
	}
}

// storedOn counts the nodes holding exactly one sample of the tenant's metric name.
func storedOn(t *testing.T, tenant, name string, nodes ...*pc.Node) int {
	t.Helper()
	n := 0
	for _, node := range nodes {
		got, err := queryIngester(context.Background(), node.GRPCAddr, tenant, name)
		if err != nil {
			t.Fatalf("query %s: %v", node.ID, err)
		}
		if len(got) == 1 {
			n++
		}
	}
	return n
}
