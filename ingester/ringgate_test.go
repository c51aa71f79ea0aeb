package ingester

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestRingGate_RefusesUntilCaughtUp: while the node has not replayed its Raft log, a push and a
// query get 503 naming the indexes (JSON in the Prometheus API's shape for the API), and reach the
// handler once it has. Regression for stale-ring-push-during-replay (faulttest/proc): a restarted
// node's distributor placed a push on the ring of its unfinished replay and acked it with one copy.
func TestRingGate_RefusesUntilCaughtUp(t *testing.T) {
	caught := false
	served := 0
	h := ringGate(func() (bool, uint64, uint64) { return caught, 3, 84 }, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		served++
		w.WriteHeader(http.StatusNoContent)
	}))

	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/api/v1/push", strings.NewReader("x")))
	if rec.Code != http.StatusServiceUnavailable || !strings.Contains(rec.Body.String(), "up to 3 of 84") || served != 0 {
		t.Fatalf("push before the replay: %d %q (served %d), want 503 naming the indexes", rec.Code, rec.Body.String(), served)
	}
	if rec.Header().Get("Retry-After") == "" {
		t.Error("no Retry-After on the 503")
	}

	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/prometheus/api/v1/query?query=up", nil))
	var body struct{ Status, ErrorType, Error string }
	if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil || rec.Code != http.StatusServiceUnavailable ||
		body.Status != "error" || body.ErrorType != "unavailable" || !strings.Contains(body.Error, "84") {
		t.Fatalf("query before the replay: %d %q (%v), want a Prometheus API error", rec.Code, rec.Body.String(), err)
	}

	caught = true
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/api/v1/push", strings.NewReader("x")))
	if rec.Code != http.StatusNoContent || served != 1 {
		t.Fatalf("push after the replay: %d, served %d", rec.Code, served)
	}
}

// What the 503 says matches what the node waits for: a brand-new node (no log) to be added and to
// hear from a leader; a restarted one to replay its log, then the leader's commit index.
func TestNotCaughtUpMessage(t *testing.T) {
	for _, tc := range []struct {
		applied, target uint64
		want            string
	}{
		{0, 0, "waits to be added to a cluster (-join, or 'ringctl join')"},
		{3, 84, "catching up with the ring: it has applied raft log entries up to 3 of 84"},
		{84, 84, "waits to hear the commit index from a leader"},
	} {
		if got := notCaughtUpMessage(tc.applied, tc.target); !strings.Contains(got, tc.want) {
			t.Errorf("applied %d target %d: %q, want it to say %q", tc.applied, tc.target, got, tc.want)
		}
	}
}
