package e2e

import (
	"strings"
	"syscall"
	"testing"
	"time"

	pc "github.com/raftingest/raftingest/internal/proccluster"
)

// TestProcess_FinalSleepKeepsMetricsAfterTheHandover: a leaver started with -ingester.final-sleep
// still answers /metrics after it has left the ring, with the chunks it handed over, so the last
// scrape sees the hand-over; then it exits 0. (Without the flag the process is gone by then, and
// the tests read the count from its log instead.)
func TestProcess_FinalSleepKeepsMetricsAfterTheHandover(t *testing.T) {
	skipShort(t)
	c, abc, d, w := startHandoverCluster(t, 20, "-ingester.final-sleep", "5s")
	a, cc := abc[0], abc[2]
	cc.Signal(syscall.SIGINT)
	pc.Eventually(t, 60*time.Second, "c left and sleeps", func() (bool, string) {
		return strings.Contains(cc.Log(), "serving /metrics until -ingester.final-sleep ends"), "no final-sleep line yet"
	})
	waitActive(t, c, a.GRPCAddr, "a", "b", "d")
	if !cc.Running() {
		t.Fatalf("c exited before its final sleep ended:\n%s", cc.Log())
	}
	sent := metricOf(t, cc, "cortex_ingester_sent_chunks")
	if sent <= 0 {
		t.Fatalf("c's /metrics after the hand-over: cortex_ingester_sent_chunks %v, want the chunks it sent", sent)
	}
	if recv := metricOf(t, d, "cortex_ingester_received_chunks"); recv != sent {
		t.Fatalf("c reports %v chunks sent, d %v received", sent, recv)
	}
	code, err := cc.Wait(30 * time.Second)
	if err != nil || code != 0 {
		t.Fatalf("c after its final sleep: exit %d, %v\n%s", code, err, cc.Log())
	}
	w.Stop()
}
