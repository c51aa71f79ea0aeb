package sim

import (
	"fmt"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/raftingest/raftingest/faulttest"
)

// simSeeds is how many seeds TestSim runs (each on a 3-node and a 5-node cluster):
// $FAULTTEST_SIM_SEEDS, else a number that keeps the test around a minute on 2 cores — a run of 60s
// of cluster time costs about 0.4s of wall time, about 2s under the race detector.
func simSeeds(t *testing.T) int {
	if s := os.Getenv("FAULTTEST_SIM_SEEDS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil {
			t.Fatalf("FAULTTEST_SIM_SEEDS=%q: %v", s, err)
		}
		return n
	}
	switch {
	case testing.Short():
		return 5
	case raceEnabled:
		return 15
	}
	return 100
}

// TestSim runs the mixed-fault scenario on new seeds every run (printed; FAULTTEST_SEED replays one).
func TestSim(t *testing.T) {
	seeds, err := faulttest.Seeds(simSeeds(t))
	if err != nil {
		t.Fatal(err)
	}
	wl := 60 * time.Second
	if d := os.Getenv("FAULTTEST_SIM_WORKLOAD"); d != "" {
		if wl, err = time.ParseDuration(d); err != nil {
			t.Fatal(err)
		}
	}
	for _, seed := range seeds {
		for _, sc := range []struct {
			name  string
			nodes int
		}{{"sim-mixed-3", 3}, {"sim-mixed-5", 5}} {
			t.Run(fmt.Sprintf("%s/seed=%d", sc.name, seed), func(t *testing.T) {
				rep := Run(t, Config{Scenario: sc.name, Seed: seed, Nodes: sc.nodes, Workload: wl})
				t.Logf("FAULTTEST_SEED=%d\n%s", seed, rep.Text())
				if err := rep.Save(); err != nil {
					t.Error(err)
				}
				if !rep.Valid() {
					t.Errorf("scenario %s failed; replay with FAULTTEST_SEED=%d; evidence in %s", sc.name, seed, rep.Kept)
				}
			})
		}
	}
}

// TestSim_CatchesInjectedBugs runs the harness against known-broken variants of the system and
// checks that the right checker fails: a harness that cannot fail proves nothing.
func TestSim_CatchesInjectedBugs(t *testing.T) {
	keep := t.TempDir()
	cases := []struct {
		bug, checker string
		faults       []string
	}{
		{BugStaleReads, "linearizable", []string{FaultIsolateLeader, FaultSplit, FaultIsolateOne}},
		{BugSkewedFSM, "convergence", []string{FaultIsolateOne}},
	}
	for _, c := range cases {
		t.Run(c.bug, func(t *testing.T) {
			caught := false
			for seed := int64(1); seed <= 5 && !caught; seed++ {
				rep := Run(t, Config{Scenario: "bug-" + c.bug, Seed: seed, Bug: c.bug, Faults: c.faults,
					Workload: 40 * time.Second, KeepDir: keep})
				for _, v := range rep.Verdicts {
					if v.Checker == c.checker && !v.Valid && v.Skipped == "" {
						caught = true
						t.Logf("seed %d: %s caught it:\n%s", seed, c.checker, rep.Text())
					}
				}
			}
			if !caught {
				t.Fatalf("%s did not catch %s in 5 seeds", c.checker, c.bug)
			}
		})
	}
}

// matrix is the simulated tier's part of make faulttest.
var matrix = []Config{
	{Scenario: "sim-mixed-3", Nodes: 3},
	{Scenario: "sim-mixed-5", Nodes: 5, Clients: 4},
	{Scenario: "sim-partitions-5", Nodes: 5, Faults: []string{FaultIsolateOne, FaultIsolateLeader, FaultSplit, FaultOneWay, FaultBridge}},
	{Scenario: "sim-restarts-3", Nodes: 3, Faults: []string{FaultRestartOne, FaultRestartLeader, FaultRestartAll, FaultLeaderTransfer}},
	{Scenario: "sim-snapshots-3", Nodes: 3, Faults: []string{FaultSnapshotIsolate, FaultRestartOne}},
	{Scenario: "sim-long-5", Nodes: 5, Workload: 4 * time.Minute},
}

// TestMatrix runs the simulated matrix with new seeds until its share of FAULTTEST_DURATION (15%;
// the in-process tier takes 20%, the processes 65%) is spent, or once with FAULTTEST_SEED. Only
// under make faulttest.
func TestMatrix(t *testing.T) {
	budget, on, err := faulttest.MatrixBudget(0.15)
	if err != nil {
		t.Fatal(err)
	}
	if !on {
		t.Skip("the matrix runs under make faulttest (FAULTTEST_MATRIX=1)")
	}
	deadline := time.Now().Add(budget)
	runs, failed := 0, 0
	for round := 0; time.Now().Before(deadline); round++ {
		seeds, err := faulttest.Seeds(1)
		if err != nil {
			t.Fatal(err)
		}
		for _, cfg := range matrix {
			cfg.Seed = seeds[0]
			t.Run(fmt.Sprintf("%s/seed=%d", cfg.Scenario, cfg.Seed), func(t *testing.T) {
				rep := Run(t, cfg)
				t.Logf("FAULTTEST_SEED=%d\n%s", cfg.Seed, rep.Text())
				if err := rep.Save(); err != nil {
					t.Error(err)
				}
				runs++
				if !rep.Valid() {
					failed++
					t.Errorf("%s failed; replay with FAULTTEST_SEED=%d; evidence in %s", cfg.Scenario, cfg.Seed, rep.Kept)
				}
			})
		}
		if os.Getenv("FAULTTEST_SEED") != "" {
			break
		}
	}
	t.Logf("sim matrix: %d runs, %d failed", runs, failed)
}
