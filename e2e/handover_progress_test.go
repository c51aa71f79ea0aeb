package e2e

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	pc "github.com/raftingest/raftingest/internal/proccluster"
	"github.com/raftingest/raftingest/ringview"
)

// TestProcess_HandoverProgressShown: while a leaver streams (slowed, many frames), its /ring page
// and JSON show what it has sent of what it holds, to whom, and how fast, and `ringctl leave`
// prints the numbers in its progress lines; once the hand-over is done, the leaver is gone.
func TestProcess_HandoverProgressShown(t *testing.T) {
	skipShort(t)
	c, abc, d, w := startHandoverCluster(t, 120, "-ingester.transfer-test-delay", "300ms")
	w.Stop()
	cc := abc[2]
	type result struct {
		out, errOut string
		code        int
	}
	done := make(chan result, 1)
	go func() {
		// A short progress interval is not a flag: ringctl prints every 5 s, longer than this
		// hand-over's frames take, so the test reads the JSON events instead of waiting for a line.
		out, errOut, code := c.Ringctl("-addr", abc[0].GRPCAddr, "-o", "json", "leave", "c")
		done <- result{out, errOut, code}
	}()
	var seen ringview.HandoverProgress
	pc.Eventually(t, 60*time.Second, "c's /ring shows its stream", func() (bool, string) {
		_, body, err := pc.HTTPGet(cc.HTTPAddr, "/ring?format=json", "")
		if err != nil {
			return false, err.Error()
		}
		var v ringview.View
		if err := json.Unmarshal([]byte(body), &v); err != nil || v.HandoverProgress == nil {
			return false, "no handover_progress"
		}
		seen = *v.HandoverProgress
		return seen.Series > 0 && seen.Series < seen.SeriesTotal, seen.Describe()
	})
	if seen.Joiner != d.ID || seen.Member != "c" || seen.Bytes <= 0 || seen.SeriesPerS <= 0 {
		t.Fatalf("progress %+v, want c streaming to %s", seen, d.ID)
	}
	_, page, _ := pc.HTTPGet(cc.HTTPAddr, "/ring", "")
	if !strings.Contains(page, `id="handover-progress"`) || !strings.Contains(page, "c → "+d.ID) {
		t.Errorf("the /ring page does not show the hand-over:\n%s", page)
	}
	var r result
	select {
	case r = <-done:
	case <-time.After(2 * time.Minute):
		t.Fatal("ringctl leave did not end")
	}
	if r.code != 0 || !strings.Contains(r.out, `"event":"removed"`) {
		t.Fatalf("ringctl leave: exit %d\n%s\n%s", r.code, r.out, r.errOut)
	}
	waitActive(t, c, abc[0].GRPCAddr, "a", "b", d.ID)
}
