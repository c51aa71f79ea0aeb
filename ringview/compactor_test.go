package ringview_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/raftingest/raftingest/ringstate"
	"github.com/raftingest/raftingest/ringview"
)

// leaseRing is testRing with the compactor lease held by a for 30s more of ring time, at epoch 3.
func leaseRing(t *testing.T, l ringstate.CompactorLease) *ringstate.Ring {
	t.Helper()
	r, err := testRing(t).WithCompactorLease(l)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// TestCompactor_ViewJSONAndPage: /ring (HTML and JSON) says who compacts, the epoch and the expiry,
// judged at ring time; an expired lease and a holder that left are shown as nobody compacting.
func TestCompactor_ViewJSONAndPage(t *testing.T) {
	for _, tc := range []struct {
		name  string
		lease ringstate.CompactorLease
		want  ringview.CompactorView
		html  string
	}{
		{"never claimed", ringstate.CompactorLease{}, ringview.CompactorView{}, "Compactor: none (no member has claimed"},
		{"held", ringstate.CompactorLease{Holder: "a", Epoch: 3, ExpiresMs: ringTimeMs + 30_000},
			ringview.CompactorView{Holder: "a", Epoch: 3, Held: true, ExpiresAt: "2023-11-14T22:15:30Z", ExpiresInSeconds: 30},
			"Compactor: a (epoch 3, lease expires in 30s)"},
		{"expired", ringstate.CompactorLease{Holder: "a", Epoch: 3, ExpiresMs: ringTimeMs - 2_000},
			ringview.CompactorView{Holder: "a", Epoch: 3, ExpiresAt: "2023-11-14T22:14:58Z", ExpiresInSeconds: -2},
			"Compactor: none: the lease of a (epoch 3) expired 2s ago"},
		{"holder gone", ringstate.CompactorLease{Holder: "gone", Epoch: 4, ExpiresMs: ringTimeMs + 1_000},
			ringview.CompactorView{Holder: "gone", Epoch: 4, ExpiresAt: "2023-11-14T22:15:01Z", ExpiresInSeconds: 1},
			"Compactor: none: the lease of gone"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := leaseRing(t, tc.lease)
			if got := ringview.Build(r, timeoutMs).Compactor; got != tc.want {
				t.Fatalf("view %+v, want %+v", got, tc.want)
			}
			h := ringview.Handler(func() *ringstate.Ring { return r }, timeoutMs)
			resp := get(t, h, http.MethodGet, "/ring", map[string]string{"Accept": "application/json"})
			var v ringview.View
			if err := json.Unmarshal([]byte(body(t, resp)), &v); err != nil {
				t.Fatal(err)
			}
			if v.Compactor != tc.want {
				t.Fatalf("JSON compactor %+v, want %+v", v.Compactor, tc.want)
			}
			page := body(t, get(t, h, http.MethodGet, "/ring", nil))
			if !strings.Contains(page, `<p id="compactor" data-holder="`+tc.want.Holder+`"`) || !strings.Contains(page, tc.html) {
				t.Fatalf("page does not show %q:\n%s", tc.html, page)
			}
		})
	}
}
