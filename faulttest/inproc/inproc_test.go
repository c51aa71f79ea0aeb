package inproc

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/raftingest/raftingest/faulttest"
)

// shortSet is the in-process tier's part of `go test` (and so of make test): one scenario per
// fault family, about 17s of wall time each under -race on 2 cores.
var shortSet = []Scenario{
	{Name: "latency", Faults: LatencyFaults},
	{Name: "partitions", Faults: PartitionFaults},
	{Name: "restarts", Faults: RestartFaults},
	{Name: "clock", Faults: ClockFaults},
}

// fullSet is the tier's part of make faulttest: the mixes on 3 and 5 nodes, then each family with
// longer workloads.
var fullSet = append([]Scenario{
	{Name: "mixed", Faults: AllFaults},
	{Name: "mixed-5", Nodes: 5, Faults: AllFaults},
	{Name: "clock-partitions", Faults: append(append([]string{}, ClockFaults...), PartitionFaults...)},
	{Name: "latency-restarts", Faults: append(append([]string{Bandwidth, RefuseOne}, LatencyFaults...), RestartFaults...)},
	{Name: "calm", Faults: []string{}},
}, shortSet...)

func workload(t *testing.T, def time.Duration) time.Duration {
	if s := os.Getenv("FAULTTEST_INPROC_WORKLOAD"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	return def
}

// TestInProcess runs the short set: a new seed every run, printed with every report;
// FAULTTEST_SEED replays, FAULTTEST_SCENARIO picks one scenario.
func TestInProcess(t *testing.T) {
	if testing.Short() {
		t.Skip("in-process tier: not in -short")
	}
	seeds, err := faulttest.Seeds(1)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("FAULTTEST_SEED=%d", seeds[0])
	wl := workload(t, 12*time.Second)
	for _, sc := range shortSet {
		sc.Seed, sc.Workload = seeds[0], wl
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

func runScenario(t *testing.T, sc Scenario) *faulttest.Report {
	t.Helper()
	rep, err := Run(context.Background(), Env{Base: os.Getenv("FAULTTEST_KEEP_DIR"), Logf: t.Logf}, sc)
	if rep != nil {
		t.Logf("FAULTTEST_SEED=%d\n%s", sc.Seed, rep.Text())
		if err := rep.Save(); err != nil {
			t.Error(err)
		}
	}
	if err != nil {
		t.Errorf("%s seed %d: %v", sc.Name, sc.Seed, err)
	}
	return rep
}

// TestMatrix runs the in-process matrix with new seeds until its share (a fifth) of
// FAULTTEST_DURATION is spent, or once with FAULTTEST_SEED; FAULTTEST_SCENARIO restricts it to one
// scenario. Only under make faulttest (FAULTTEST_MATRIX=1).
func TestMatrix(t *testing.T) {
	budget, on, err := faulttest.MatrixBudget(0.2)
	if err != nil {
		t.Fatal(err)
	}
	if !on {
		t.Skip("the matrix runs under make faulttest (FAULTTEST_MATRIX=1)")
	}
	deadline := time.Now().Add(budget)
	runs, failed := 0, 0
	for time.Now().Before(deadline) {
		seeds, err := faulttest.Seeds(1)
		if err != nil {
			t.Fatal(err)
		}
		for _, sc := range fullSet {
			sc.Seed, sc.Workload = seeds[0], workload(t, 30*time.Second)
			if f := os.Getenv("FAULTTEST_SCENARIO"); f != "" && f != sc.Name {
				continue
			}
			if time.Now().Add(sc.Workload).After(deadline) && runs > 0 {
				break
			}
			t.Run(fmt.Sprintf("%s/seed=%d", sc.Name, sc.Seed), func(t *testing.T) {
				if sc.KnownBug != "" && os.Getenv("FAULTTEST_RUN_KNOWN_BUGS") == "" {
					t.Skip("known product bug (FAULTTEST_RUN_KNOWN_BUGS=1 runs it): " + sc.KnownBug)
				}
				runs++
				if rep := runScenario(t, sc); rep == nil || !rep.Valid() {
					failed++
				}
			})
		}
		if os.Getenv("FAULTTEST_SEED") != "" {
			break
		}
	}
	t.Logf("in-process matrix: %d runs, %d failed", runs, failed)
}
