package inproc

import (
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/raftingest/raftingest/faulttest"
)

// regressions are scenarios with a fixed schedule, each named after the product bug it found.
var regressions = []Scenario{
	{
		// The leader's clock steps forward by 90s three times (and back at each heal). Its ring-time
		// stamps follow the step (raftfsm's ringClock passes forward jumps through) and ringstate
		// credits only the part beyond MaxRingTimeGap (30s), so every heartbeat ages by 30s at once.
		// Found by TestMatrix mixed-5 seed 594437279261 when the tier ran with a 15s
		// -ring.heartbeat-timeout: members read UNHEALTHY until their next heartbeat and writes
		// spilled to non-owners (under quorum on the recovered ring). The product's answer is the
		// configuration rule — keep the timeout above 30s plus the heartbeat period (the default is
		// 1m; ingester.New warns below it) — and this scenario, at the tier's 1m, must show no
		// member UNHEALTHY and every acked sample on a quorum of its owners.
		Name: "clock-step-spill", Nodes: 5, Workload: 12 * time.Second,
		Fixed: []Step{{Kind: ClockJumpFwd, At: 2 * time.Second, Dur: 2 * time.Second},
			{Kind: ClockJumpFwd, At: 5 * time.Second, Dur: 2 * time.Second},
			{Kind: ClockJumpFwd, At: 8 * time.Second, Dur: 2 * time.Second}},
	},
}

// TestRegressions runs the regression scenarios; one whose bug is still open is skipped unless
// FAULTTEST_RUN_KNOWN_BUGS=1.
func TestRegressions(t *testing.T) {
	if testing.Short() {
		t.Skip("in-process tier: not in -short")
	}
	seeds, err := faulttest.Seeds(1)
	if err != nil {
		t.Fatal(err)
	}
	for _, sc := range regressions {
		sc.Seed = seeds[0]
		if f := os.Getenv("FAULTTEST_SCENARIO"); f != "" && f != sc.Name {
			continue
		}
		t.Run(fmt.Sprintf("%s/seed=%d", sc.Name, sc.Seed), func(t *testing.T) {
			if sc.KnownBug != "" && os.Getenv("FAULTTEST_RUN_KNOWN_BUGS") == "" {
				t.Skip("known product bug, scenario kept as its regression test (FAULTTEST_RUN_KNOWN_BUGS=1 runs it): " + sc.KnownBug)
			}
			runScenario(t, sc)
		})
	}
}
