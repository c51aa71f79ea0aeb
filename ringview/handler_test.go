package ringview_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/raftingest/raftingest/ringstate"
	"github.com/raftingest/raftingest/ringview"
	"github.com/raftingest/raftingest/ringview/ringviewtest"
)

func get(t *testing.T, h http.Handler, method, target string, header map[string]string) *http.Response {
	t.Helper()
	req := httptest.NewRequest(method, target, nil)
	for k, v := range header {
		req.Header.Set(k, v)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec.Result()
}

func body(t *testing.T, resp *http.Response) string {
	t.Helper()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func ringHandler(t *testing.T) http.Handler {
	r := testRing(t)
	return ringview.Handler(func() *ringstate.Ring { return r }, timeoutMs)
}

func TestHandler_HTMLHasOneReadableRowPerMember(t *testing.T) {
	resp := get(t, ringHandler(t), http.MethodGet, "/ring", nil)
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "text/html; charset=utf-8" {
		t.Errorf("Content-Type %q", ct)
	}
	page, err := ringviewtest.ParsePage(body(t, resp))
	if err != nil {
		t.Fatal(err)
	}
	if page.Title != "raftingest ring" || page.MemberCount != 6 || page.RingTime != "2023-11-14T22:15:00Z" {
		t.Errorf("page header: title %q, %d members, ring time %q", page.Title, page.MemberCount, page.RingTime)
	}
	want := []ringviewtest.Row{
		{ID: "a", State: "ACTIVE", RingState: "ACTIVE", NumTokens: 1, Ownership: 0.25, OwnershipPct: "25.00%", HeartbeatAge: 0},
		{ID: "b", State: "ACTIVE", RingState: "ACTIVE", NumTokens: 1, Ownership: 0.25, OwnershipPct: "25.00%", HeartbeatAge: 10},
		{ID: "c", State: "UNHEALTHY", RingState: "LEAVING", Unhealthy: true, NumTokens: 1, Ownership: 0.25, OwnershipPct: "25.00%", HeartbeatAge: 10.001, Handover: "→ d", HandoverPeer: "d"},
		{ID: "d", State: "JOINING", RingState: "JOINING", NumTokens: 0, Ownership: 0, OwnershipPct: "0.00%", HeartbeatAge: 5, Handover: "← c", HandoverPeer: "c"},
		{ID: "e", State: "UNHEALTHY", RingState: "ACTIVE", Unhealthy: true, NumTokens: 1, Ownership: 0.25, OwnershipPct: "25.00%", HeartbeatAge: 50},
		{ID: "p", State: "PENDING", RingState: "PENDING", NumTokens: 0, Ownership: 0, OwnershipPct: "0.00%", HeartbeatAge: 0},
	}
	checkRows(t, page.Rows, want)
	if got := page.Rows[0]; got.GRPCAddr != "127.0.0.1:9001" || got.RaftAddr != "127.0.0.1:7001" ||
		got.HTTPAddr != "127.0.0.1:8001" || got.Zone != "zone-a" || got.Registered != "2023-11-14T21:15:00Z" {
		t.Errorf("row a cells: %+v", got.Cells)
	}
}

// checkRows compares the fields a person reads; shared with the browser test.
func checkRows(t *testing.T, got, want []ringviewtest.Row) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%d rows, want %d: %+v", len(got), len(want), got)
	}
	for i, w := range want {
		g := got[i]
		if g.ID != w.ID || g.State != w.State || g.RingState != w.RingState || g.Unhealthy != w.Unhealthy ||
			g.NumTokens != w.NumTokens || g.Ownership != w.Ownership || g.OwnershipPct != w.OwnershipPct ||
			g.HeartbeatAge != w.HeartbeatAge || g.Handover != w.Handover || g.HandoverPeer != w.HandoverPeer {
			t.Errorf("row %d:\n got %+v\nwant %+v", i, g, w)
		}
	}
}

func TestHandler_EscapesHostileZone(t *testing.T) {
	html := body(t, get(t, ringHandler(t), http.MethodGet, "/ring", nil))
	if strings.Contains(html, "<script>") {
		t.Fatalf("the zone's <script> reached the page unescaped:\n%s", html)
	}
	if !strings.Contains(html, "&lt;script&gt;") {
		t.Errorf("escaped zone not found in page")
	}
	rows, err := ringviewtest.ParseRows(html)
	if err != nil {
		t.Fatal(err)
	}
	// Escaped, not mangled: a parser reads back exactly the text that was stored.
	if rows[1].Zone != hostileZone {
		t.Errorf("zone reads back as %q, want %q", rows[1].Zone, hostileZone)
	}
}

func TestHandler_JSONByAcceptOrQuery(t *testing.T) {
	for name, tc := range map[string]struct {
		target string
		header map[string]string
	}{
		"accept":         {"/ring", map[string]string{"Accept": "application/json"}},
		"accept-list":    {"/ring", map[string]string{"Accept": "text/html;q=0.9, application/json"}},
		"format=json":    {"/ring?format=json", nil},
		"query wins":     {"/ring?format=json", map[string]string{"Accept": "text/html"}},
		"accept+charset": {"/ring", map[string]string{"Accept": "application/json; charset=utf-8"}},
	} {
		t.Run(name, func(t *testing.T) {
			resp := get(t, ringHandler(t), http.MethodGet, tc.target, tc.header)
			if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
				t.Fatalf("Content-Type %q", ct)
			}
			var v ringview.View
			if err := json.Unmarshal([]byte(body(t, resp)), &v); err != nil {
				t.Fatal(err)
			}
			if v.TimeMs != ringTimeMs || len(v.Members) != 6 || v.Members[2].State != "UNHEALTHY" || v.Members[2].HandoverPeer != "d" {
				t.Errorf("decoded view: %+v", v)
			}
		})
	}
	// ?format=html overrides an Accept header asking for JSON.
	resp := get(t, ringHandler(t), http.MethodGet, "/ring?format=html", map[string]string{"Accept": "application/json"})
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/html") {
		t.Errorf("format=html: Content-Type %q", ct)
	}
}

func TestHandler_TokensOnRequest(t *testing.T) {
	html := body(t, get(t, ringHandler(t), http.MethodGet, "/ring", nil))
	if strings.Contains(html, `class="token-list"`) {
		t.Errorf("token list shown without ?tokens=true")
	}
	html = body(t, get(t, ringHandler(t), http.MethodGet, "/ring?tokens=true", nil))
	rows, err := ringviewtest.ParseRows(html)
	if err != nil {
		t.Fatal(err)
	}
	if got := rows[1].Cells["token-list"]; got != "2147483648" {
		t.Errorf("b's token list %q", got)
	}
}

func TestHandler_MethodsAndUnavailableRing(t *testing.T) {
	h := ringHandler(t)
	for _, m := range []string{http.MethodPost, http.MethodPut, http.MethodDelete, http.MethodPatch} {
		resp := get(t, h, m, "/ring", nil)
		if resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Allow") != "GET, HEAD" {
			t.Errorf("%s: status %d Allow %q, want 405 \"GET, HEAD\"", m, resp.StatusCode, resp.Header.Get("Allow"))
		}
	}
	if resp := get(t, h, http.MethodHead, "/ring", nil); resp.StatusCode != 200 {
		t.Errorf("HEAD: status %d", resp.StatusCode)
	}
	none := ringview.Handler(func() *ringstate.Ring { return nil }, timeoutMs)
	if resp := get(t, none, http.MethodGet, "/ring", nil); resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("no ring yet: status %d, want 503", resp.StatusCode)
	}
	empty := ringview.Handler(ringstate.New, timeoutMs)
	html := body(t, get(t, empty, http.MethodGet, "/ring", nil))
	page, err := ringviewtest.ParsePage(html)
	if err != nil || page.MemberCount != 0 || len(page.Rows) != 0 || !strings.Contains(html, `id="empty"`) {
		t.Errorf("empty ring page: %+v, %v", page, err)
	}
}

// With a Raft source the page has a Raft column and lists Raft servers that are not members; the
// JSON carries raft_role. Without one (the source cannot tell), neither appears.
func TestHandler_RaftRoles(t *testing.T) {
	r := testRing(t)
	known := true
	h := ringview.Handler(func() *ringstate.Ring { return r }, timeoutMs, ringview.WithRaftSource(
		func() (string, []ringview.RaftServer, bool) {
			return "b", []ringview.RaftServer{{ID: "a", Voter: true}, {ID: "b", Voter: true}, {ID: "x", Voter: false}}, known
		}))
	html := body(t, get(t, h, http.MethodGet, "/ring", nil))
	for _, want := range []string{"<th>Raft</th>", `<td class="raft-role">leader</td>`, `<td class="raft-role">voter</td>`,
		`<td class="raft-role">none</td>`, `<span class="raft-server" data-id="x">x (nonvoter)</span>`} {
		if !strings.Contains(html, want) {
			t.Errorf("page lacks %s", want)
		}
	}
	if _, err := ringviewtest.ParsePage(html); err != nil {
		t.Errorf("the page with a Raft column does not parse: %v", err)
	}
	var v ringview.View
	if err := json.Unmarshal([]byte(body(t, get(t, h, http.MethodGet, "/ring?format=json", nil))), &v); err != nil {
		t.Fatal(err)
	}
	if m, _ := v.Member("b"); m.RaftRole != ringview.RaftLeader {
		t.Errorf("JSON: b's raft_role %q, want leader", m.RaftRole)
	}
	known = false
	html = body(t, get(t, h, http.MethodGet, "/ring", nil))
	if strings.Contains(html, "raft-role") || strings.Contains(html, "<th>Raft</th>") {
		t.Errorf("Raft column shown while the roles are unknown")
	}
}
