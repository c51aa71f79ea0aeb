package e2e

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	pc "github.com/raftingest/raftingest/internal/proccluster"
	"github.com/raftingest/raftingest/ringview/ringviewtest"
)

// TestProcess_RingPageInBrowser loads /ring from a running 3-node cluster in headless Chromium and
// reads every member's row from the rendered page, then checks /metrics carries the ring metrics.
func TestProcess_RingPageInBrowser(t *testing.T) {
	skipShort(t)
	ringviewtest.SkipWithoutBrowser(t)
	c := pc.New(t, fastFlags...)
	a := c.Start("a", "-bootstrap")
	waitActive(t, c, a.GRPCAddr, "a")
	b := c.Start("b", "-join", a.GRPCAddr)
	c.Start("c", "-join", a.GRPCAddr)
	v := waitActive(t, c, a.GRPCAddr, "a", "b", "c")

	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	dom, err := ringviewtest.DumpDOM(ctx, "http://"+b.HTTPAddr+"/ring")
	if err != nil {
		t.Fatal(err)
	}
	page, err := ringviewtest.ParsePage(dom)
	if err != nil {
		t.Fatal(err)
	}
	if page.MemberCount != 3 || len(page.Rows) != 3 {
		t.Fatalf("page shows %d members in %d rows, want 3", page.MemberCount, len(page.Rows))
	}
	for _, want := range v.Members {
		i := slices.IndexFunc(page.Rows, func(r ringviewtest.Row) bool { return r.ID == want.ID })
		if i < 0 {
			t.Fatalf("no row for %s in the rendered page", want.ID)
		}
		r := page.Rows[i]
		if r.State != "ACTIVE" || r.Unhealthy || r.NumTokens != 128 || r.GRPCAddr != want.GRPCAddr {
			t.Errorf("row %s: state %s unhealthy %v tokens %d grpc %s; want ACTIVE, healthy, 128, %s",
				r.ID, r.State, r.Unhealthy, r.NumTokens, r.GRPCAddr, want.GRPCAddr)
		}
	}

	code, body, err := pc.HTTPGet(b.HTTPAddr, "/metrics", "")
	if err != nil || code != 200 {
		t.Fatalf("/metrics: %d %v", code, err)
	}
	for _, want := range []string{
		`cortex_ring_members{name="ingester",state="ACTIVE"} 3`,
		`cortex_member_ring_tokens_owned{name="ingester"} 128`,
		`cortex_ring_tokens_owned{member="a",name="ingester"} 128`,
		`cortex_ring_member_ownership_percent{member="b",name="ingester"}`,
		`raftingest_raft_applied_index`,
		`raftingest_raft_term`,
		`raftingest_raft_leader 0`,
		`raftingest_raft_apply_duration_seconds_bucket`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}
