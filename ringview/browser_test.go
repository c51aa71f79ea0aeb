package ringview_test

import (
	"context"
	"net"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/raftingest/raftingest/ringstate"
	"github.com/raftingest/raftingest/ringview"
	"github.com/raftingest/raftingest/ringview/ringviewtest"
)

// TestBrowser_ReadsEveryMemberRow renders /ring in a real headless Chromium and reads every member's
// row from the DOM the browser built, as a person would see it. Skipped without Chromium unless
// RAFTINGEST_REQUIRE_BROWSER is set.
func TestBrowser_ReadsEveryMemberRow(t *testing.T) {
	ringviewtest.SkipWithoutBrowser(t)
	r := testRing(t)
	srv := httptest.NewUnstartedServer(ringview.Handler(func() *ringstate.Ring { return r }, timeoutMs))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv.Listener = ln
	srv.Start()
	defer srv.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	dom, err := ringviewtest.DumpDOM(ctx, srv.URL+"/ring")
	if err != nil {
		t.Fatal(err)
	}
	page, err := ringviewtest.ParsePage(dom)
	if err != nil {
		t.Fatal(err)
	}
	if page.Title != "raftingest ring" || page.MemberCount != 6 {
		t.Errorf("title %q, member count %d", page.Title, page.MemberCount)
	}
	checkRows(t, page.Rows, []ringviewtest.Row{
		{ID: "a", State: "ACTIVE", RingState: "ACTIVE", NumTokens: 1, Ownership: 0.25, OwnershipPct: "25.00%", HeartbeatAge: 0},
		{ID: "b", State: "ACTIVE", RingState: "ACTIVE", NumTokens: 1, Ownership: 0.25, OwnershipPct: "25.00%", HeartbeatAge: 10},
		{ID: "c", State: "UNHEALTHY", RingState: "LEAVING", Unhealthy: true, NumTokens: 1, Ownership: 0.25, OwnershipPct: "25.00%", HeartbeatAge: 10.001, Handover: "→ d", HandoverPeer: "d"},
		{ID: "d", State: "JOINING", RingState: "JOINING", NumTokens: 0, Ownership: 0, OwnershipPct: "0.00%", HeartbeatAge: 5, Handover: "← c", HandoverPeer: "c"},
		{ID: "e", State: "UNHEALTHY", RingState: "ACTIVE", Unhealthy: true, NumTokens: 1, Ownership: 0.25, OwnershipPct: "25.00%", HeartbeatAge: 50},
		{ID: "p", State: "PENDING", RingState: "PENDING", NumTokens: 0, Ownership: 0, OwnershipPct: "0.00%", HeartbeatAge: 0},
	})
	// The hostile zone is text in the browser's DOM, not a script element.
	if strings.Contains(dom, "<script") {
		t.Errorf("the browser built a script element from the zone")
	}
	if page.Rows[1].Zone != hostileZone {
		t.Errorf("zone in the browser: %q, want %q", page.Rows[1].Zone, hostileZone)
	}
}
