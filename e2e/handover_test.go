package e2e

import (
	"context"
	"fmt"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"

	pc "github.com/raftingest/raftingest/internal/proccluster"
)

// handoverFlags make hand-overs span several frames and give the tests time to act between them.
var handoverFlags = []string{"-ingester.transfer-frame-bytes", "4096", "-ingester.transfer-timeout", "10s"}

// startHandoverCluster starts 3 ACTIVE ingesters with a writer running (nSeries series) and a 4th,
// d, that stays PENDING (-ingester.join-after 1h). extra goes to every node.
func startHandoverCluster(t *testing.T, nSeries int, extra ...string) (*pc.Cluster, []*pc.Node, *pc.Node, *writer) {
	t.Helper()
	c, a, b, cc := startCluster3(t, append(slicesClone(handoverFlags), extra...)...)
	d := c.Start("d", "-join", a.GRPCAddr, "-ingester.join-after", "1h")
	waitState(t, c, a.GRPCAddr, "d", "PENDING")
	w := startWriter(a.HTTPAddr, "", nSeries)
	t.Cleanup(w.Stop)
	w.waitRounds(t, 30)
	return c, []*pc.Node{a, b, cc}, d, w
}

func waitState(t *testing.T, c *pc.Cluster, addr, id, state string) pc.RingMember {
	t.Helper()
	var m pc.RingMember
	pc.Eventually(t, 60*time.Second, id+" "+state, func() (bool, string) {
		v, err := c.Ring(addr)
		if err != nil {
			return false, err.Error()
		}
		var ok bool
		m, ok = v.Member(id)
		return ok && m.State == state, fmt.Sprintf("%s: present %v, %+v", id, ok, m.State)
	})
	return m
}

// checkRing asserts the ring's invariants as a user sees them: every token owned by exactly one
// member, hand-over peers symmetric, and only legal states.
func checkRing(t *testing.T, c *pc.Cluster, addr string) pc.RingView {
	t.Helper()
	v, err := c.Ring(addr)
	if err != nil {
		t.Fatal(err)
	}
	owner := map[uint32]string{}
	for _, m := range v.Members {
		switch m.RingState { // State may say UNHEALTHY (stale heartbeat): the ring state is under it
		case "PENDING", "JOINING", "ACTIVE", "LEAVING":
		default:
			t.Fatalf("member %s in ring state %q (shown %q)", m.ID, m.RingState, m.State)
		}
		for _, tk := range m.Tokens {
			if o, dup := owner[tk]; dup {
				t.Fatalf("token %d owned by %s and %s", tk, o, m.ID)
			}
			owner[tk] = m.ID
		}
		if m.HandoverPeer != "" {
			p, ok := v.Member(m.HandoverPeer)
			if !ok || p.HandoverPeer != m.ID {
				t.Fatalf("hand-over peer of %s is %s, whose peer is %q", m.ID, m.HandoverPeer, p.HandoverPeer)
			}
		}
	}
	return v
}

func metricOf(t *testing.T, n *pc.Node, name string) float64 {
	t.Helper()
	_, body, err := pc.HTTPGet(n.HTTPAddr, "/metrics", "")
	if err != nil {
		return -1
	}
	return metricValue(body, name)
}

var handedOverRE = regexp.MustCompile(`msg="handed over".* chunks=(\d+)`)

// sentChunksInLog returns the chunks the leaver's "handed over" log line reports (its
// cortex_ingester_sent_chunks of the successful attempt: the process is gone before a scrape).
func sentChunksInLog(t *testing.T, n *pc.Node) float64 {
	t.Helper()
	m := handedOverRE.FindAllStringSubmatch(n.Log(), -1)
	if len(m) == 0 {
		t.Fatalf("%s logged no completed hand-over", n.ID)
	}
	v, _ := strconv.ParseFloat(m[len(m)-1][1], 64)
	return v
}

// checkAcked asserts that every sample the writer had acknowledged is on at least min of nodes, and
// that every node of all holds every sample of held (with its value): the samples a leaver held
// (leaverWatch), for its successor.
func checkAcked(t *testing.T, w *writer, min int, allowFailures bool, held map[sampleKey]float64, all []*pc.Node, nodes ...*pc.Node) {
	t.Helper()
	acked, failures, rounds := w.snapshot()
	if len(failures) > 0 && !allowFailures {
		t.Errorf("failed pushes during the test (%d rounds): %v", rounds, failures)
	}
	counts := copies(t, acked, "anonymous", nodes...)
	lost := 0
	for k := range acked {
		if counts[k] < min {
			lost++
			if lost < 4 {
				t.Errorf("acked sample %v on %d of %d nodes, want at least %d", k, counts[k], len(nodes), min)
			}
		}
	}
	if lost > 0 {
		t.Fatalf("%d of %d acked samples under-replicated", lost, len(acked))
	}
	requireHeld(t, held, insecureCreds, all...)
	t.Logf("%d samples acked in %d rounds, all present", len(acked), rounds)
}

// requireHeld asserts that every node holds every sample of held with its value.
func requireHeld(t *testing.T, held map[sampleKey]float64, creds grpc.DialOption, nodes ...*pc.Node) {
	t.Helper()
	for _, n := range nodes {
		got, err := queryIngesterWith(context.Background(), n.GRPCAddr, "anonymous", "e2e_writes", creds)
		if err != nil {
			t.Fatalf("query %s: %v", n.ID, err)
		}
		missing := 0
		for k, v := range held {
			if gv, ok := got[k]; !ok || gv != v {
				missing++
				if missing < 4 {
					t.Errorf("%s misses sample %v = %v", n.ID, k, v)
				}
			}
		}
		if missing > 0 {
			t.Fatalf("%s misses %d of the %d samples it must hold", n.ID, missing, len(held))
		}
	}
}

// leaverWatch reads what a leaving member holds, so that a test can require its successor to hold
// all of it. That, and not "every sample acknowledged before the leave began", is what a hand-over
// must carry: a push is acknowledged once a quorum of its RF=3 replicas stored it, and the third
// replica's copy may still be in flight then. When that replica is the leaver, its copy can be
// refused without any fault: overtaken by the copy of the writer's next push (sent as soon as the
// quorum answered), it is out of order there (memstore refuses out-of-order samples by default;
// seen under CPU contention: 5 to 80 samples acked 1 to 2.5 s before the SIGINT, refused by the
// leaver as "out of order sample", present on both other replicas), or it arrives once the leaver
// is LEAVING and is refused (it spills, or the quorum stands without it). Such a sample is on the
// two other replicas, as acknowledged, and no hand-over can carry what the leaver never held.
//
// Every read is a subset of what the leaver held at that moment, and the leaver keeps every sample
// it stored until its hand-over completed (a sample is visible only once its WAL record is committed,
// memstore/DESIGN.md, so a killed leaver replays every sample a read showed), so the union of the
// reads is a subset of what it handed over: the check never asks for more than the truth.
// It starts with a read that must succeed just before the signal, then reads again every few
// milliseconds until stop, to also cover the pushes the leaver took up to its LEAVING commit.
type leaverWatch struct {
	mu    sync.Mutex
	held  map[sampleKey]float64
	stopc chan struct{}
	done  chan struct{}
}

// watchLeaver reads n's samples of e2e_writes now (it must answer, and hold some), then in the
// background until stop.
func watchLeaver(t *testing.T, n *pc.Node, creds grpc.DialOption) *leaverWatch {
	t.Helper()
	first, err := queryIngesterWith(context.Background(), n.GRPCAddr, "anonymous", "e2e_writes", creds)
	if err != nil || len(first) == 0 {
		t.Fatalf("read what leaver %s holds before it leaves: %d samples, err %v", n.ID, len(first), err)
	}
	lw := &leaverWatch{held: first, stopc: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(lw.done)
		for {
			select {
			case <-lw.stopc:
				return
			case <-time.After(10 * time.Millisecond):
			}
			// A short deadline: a stopped (SIGSTOP) leaver must not hold up stop.
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			got, err := queryIngesterWith(ctx, n.GRPCAddr, "anonymous", "e2e_writes", creds)
			cancel()
			if err != nil { // gone, restarting, stopped: nothing learned
				continue
			}
			lw.mu.Lock()
			for k, v := range got {
				lw.held[k] = v
			}
			lw.mu.Unlock()
		}
	}()
	t.Cleanup(func() { lw.stop() })
	return lw
}

// stop ends the reads and returns every sample the leaver was seen holding. Safe to call again.
func (lw *leaverWatch) stop() map[sampleKey]float64 {
	select {
	case <-lw.stopc:
	default:
		close(lw.stopc)
	}
	<-lw.done
	lw.mu.Lock()
	defer lw.mu.Unlock()
	return lw.held
}

// logNeverHeld logs how many samples acknowledged before the leave began are on none of the
// leaver's reads nor on its successor: those whose leaver copy was refused (see leaverWatch). They
// are still checked to be on a quorum of the remaining members by the caller.
func logNeverHeld(t *testing.T, w *writer, before time.Time, held map[sampleKey]float64, successor *pc.Node, creds grpc.DialOption) {
	t.Helper()
	early := w.ackedBefore(before)
	got := copiesWith(t, early, "anonymous", creds, successor)
	n := 0
	for k := range early {
		if _, ok := held[k]; !ok && got[k] == 0 {
			n++
		}
	}
	t.Logf("leaver held %d samples, all on %s; %d samples acked before it left were never on it (its copy refused: out of order or LEAVING)", len(held), successor.ID, n)
}

// TestProcess_HandoverOnSIGINT: SIGINT one of three ACTIVE ingesters while a PENDING one waits: the
// PENDING one ends ACTIVE with exactly the leaver's tokens and all its samples, the leaver exits 0,
// sent chunks equal received chunks, and writes never fail (spill).
func TestProcess_HandoverOnSIGINT(t *testing.T) {
	skipShort(t)
	c, abc, d, w := startHandoverCluster(t, 50)
	a, b, cc := abc[0], abc[1], abc[2]
	v := checkRing(t, c, a.GRPCAddr)
	leaverTokens := mustMember(t, v, "c").Tokens

	lw := watchLeaver(t, cc, insecureCreds)
	sigAt := time.Now()
	cc.Signal(syscall.SIGINT)
	code, err := cc.Wait(60 * time.Second)
	if err != nil || code != 0 {
		t.Fatalf("leaver exit code %d, err %v; log:\n%s", code, err, cc.Log())
	}
	held := lw.stop()
	v = waitActive(t, c, a.GRPCAddr, "a", "b", "d")
	if _, ok := v.Member("c"); ok {
		t.Fatal("leaver still in the ring")
	}
	dm := mustMember(t, v, "d")
	if !slices.Equal(dm.Tokens, leaverTokens) {
		t.Fatalf("d owns %d tokens, want exactly the leaver's %d", len(dm.Tokens), len(leaverTokens))
	}
	checkRing(t, c, a.GRPCAddr)
	w.waitRounds(t, w.ackedCount()/50+20) // writes go on with d ACTIVE
	w.Stop()
	checkAcked(t, w, 2, false, held, []*pc.Node{d}, a, b, d)
	logNeverHeld(t, w, sigAt, held, d, insecureCreds)
	sent, recv := sentChunksInLog(t, cc), metricOf(t, d, "cortex_ingester_received_chunks")
	if sent == 0 || sent != recv {
		t.Fatalf("leaver sent %v chunks, joiner received %v", sent, recv)
	}
	t.Logf("hand-over moved %v chunks", sent)
}

// TestProcess_HandoverKill kills -9 the leaver or the joiner at several points of a slowed-down
// hand-over (-ingester.transfer-test-delay): no acked sample is lost, every token keeps exactly one
// owner, every member ends in a legal state, and after a restart a second SIGINT completes the
// hand-over.
func TestProcess_HandoverKill(t *testing.T) {
	skipShort(t)
	cases := []struct {
		name   string
		victim string  // "leaver" or "joiner"
		frames float64 // kill once this many 4 KiB frames are sent; -1: after the joiner got the trailer
	}{
		{"leaver after the first frame", "leaver", 1},
		{"leaver mid-stream", "leaver", 3},
		{"joiner mid-stream", "joiner", 2},
		{"joiner after the trailer, before CompleteHandover", "joiner", -1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, abc, d, w := startHandoverCluster(t, 120, "-ingester.transfer-test-delay", "400ms")
			a, b, leaver := abc[0], abc[1], abc[2]
			lw := watchLeaver(t, leaver, insecureCreds) // read through the kill and the restart too
			sigAt := time.Now()
			leaver.Signal(syscall.SIGINT)
			pc.Eventually(t, 60*time.Second, "the kill point", func() (bool, string) {
				if tc.frames < 0 {
					return regexp.MustCompile(`hand-over received and stored`).MatchString(d.Log()), "trailer not received yet"
				}
				got := metricOf(t, leaver, "raftingest_transfer_sent_bytes_total")
				return got >= tc.frames*4096, fmt.Sprintf("%v bytes sent", got)
			})
			victim := leaver
			if tc.victim == "joiner" {
				victim = d
			}
			victim.Kill()
			checkRing(t, c, a.GRPCAddr)
			victim.Start()
			switch tc.victim {
			case "leaver":
				// Restarted while LEAVING: ACTIVE again with its tokens and WAL; the joiner back to
				// PENDING, its partial data discarded.
				waitActive(t, c, a.GRPCAddr, "a", "b", "c")
				waitState(t, c, a.GRPCAddr, "d", "PENDING")
				pc.Eventually(t, 30*time.Second, "partial data discarded on d", func() (bool, string) {
					return regexp.MustCompile(`discarded data of a hand-over`).MatchString(d.Log()), "not yet"
				})
				checkRing(t, c, a.GRPCAddr)
				leaver.Signal(syscall.SIGINT) // leave again: this time it completes
			case "joiner":
				// The leaver retries (the restarted joiner is PENDING again) and completes.
			}
			if code, err := leaver.Wait(90 * time.Second); err != nil || code != 0 {
				t.Fatalf("leaver exit %d, %v", code, err)
			}
			held := lw.stop()
			v := waitActive(t, c, a.GRPCAddr, "a", "b", "d")
			if _, ok := v.Member("c"); ok {
				t.Fatal("leaver still in the ring")
			}
			checkRing(t, c, a.GRPCAddr)
			w.Stop()
			checkAcked(t, w, 2, false, held, []*pc.Node{d}, a, b, d)
			logNeverHeld(t, w, sigAt, held, d, insecureCreds)
		})
	}
}

// TestProcess_TwoLeaversOnePending: two ACTIVE ingesters leave at once with one PENDING member:
// one hands over, the other, finding no PENDING member, flushes to storage and leaves. Writes go on
// throughout and nothing acked is lost (the flushed copy is in the bucket; the other replicas hold
// every sample in memory).
func TestProcess_TwoLeaversOnePending(t *testing.T) {
	skipShort(t)
	// Fewer retries keep the loser's search short; the flush follows.
	c, abc, d, w := startHandoverCluster(t, 40, "-ingester.max-transfer-retries", "3")
	a, b, cc := abc[0], abc[1], abc[2]
	sigAt := time.Now()
	b.Signal(syscall.SIGINT)
	cc.Signal(syscall.SIGINT)
	for _, n := range []*pc.Node{b, cc} {
		if code, err := n.Wait(90 * time.Second); err != nil || code != 0 {
			t.Fatalf("%s exit %d, %v", n.ID, code, err)
		}
	}
	handed, flushed := 0, 0
	for _, n := range []*pc.Node{b, cc} {
		if handedOverRE.MatchString(n.Log()) {
			handed++
		}
		if regexp.MustCompile(`flushed everything to storage`).MatchString(n.Log()) {
			flushed++
		}
	}
	if handed != 1 || flushed != 1 {
		t.Fatalf("%d handed over and %d flushed, want 1 and 1", handed, flushed)
	}
	waitActive(t, c, a.GRPCAddr, "a", "d")
	checkRing(t, c, a.GRPCAddr)
	w.Stop()
	// While both leave, only a is ACTIVE and writable (d is JOINING): RF=3 writes cannot reach a
	// quorum then, so failed pushes are expected; acked ones must survive.
	// With two ACTIVE members left, RF is 2; every acked sample is on both... except those only the
	// flushed leaver held in memory beside a: a still has them (RF=3 wrote to a, b and c).
	// (a's own copy is in-process and was never seen overtaken by the next push's, as a leaver's
	// gRPC copy was, see leaverWatch; if it were, a would have refused it as out of order and this
	// would need to allow for a's refusals, cortex_ingester_ingested_samples_failures_total on a.)
	checkAcked(t, w, 1, true, w.ackedBefore(sigAt), []*pc.Node{a}, a, d)
}

// TestProcess_HandoverLeaverPaused: the leaver is stopped with SIGSTOP in the middle of its stream
// (it hangs without closing anything, as a stuck process or a VM pause would). The joiner aborts
// on its own after -ingester.transfer-timeout (3s here) and is PENDING again with the partial data
// discarded; after SIGCONT the leaver's stream fails, it aborts (a no-op now), retries and
// completes the hand-over. No acked sample is lost and the ring's invariants hold throughout.
func TestProcess_HandoverLeaverPaused(t *testing.T) {
	skipShort(t)
	c, abc, d, w := startHandoverCluster(t, 120, "-ingester.transfer-test-delay", "400ms",
		"-ingester.transfer-timeout", "3s")
	a, b, leaver := abc[0], abc[1], abc[2]
	lw := watchLeaver(t, leaver, insecureCreds)
	sigAt := time.Now()
	leaver.Signal(syscall.SIGINT)
	pc.Eventually(t, 60*time.Second, "the stream under way", func() (bool, string) {
		got := metricOf(t, leaver, "raftingest_transfer_sent_bytes_total")
		return got >= 2*4096, fmt.Sprintf("%v bytes sent", got)
	})
	leaver.Signal(syscall.SIGSTOP)
	stopped := time.Now()
	t.Cleanup(func() { leaver.Signal(syscall.SIGCONT) }) // never leave a stopped process behind
	waitState(t, c, a.GRPCAddr, "d", "PENDING")
	pc.Eventually(t, 30*time.Second, "partial data discarded on d", func() (bool, string) {
		return regexp.MustCompile(`discarded data of a hand-over`).MatchString(d.Log()), "not yet"
	})
	t.Logf("joiner aborted and back to PENDING %s after the leaver stopped", time.Since(stopped).Round(100*time.Millisecond))
	v := checkRing(t, c, a.GRPCAddr)
	if m := mustMember(t, v, "c"); m.RingState != "LEAVING" || m.HandoverPeer != "" {
		t.Fatalf("paused leaver is %s paired with %q, want LEAVING and unpaired", m.RingState, m.HandoverPeer)
	}
	leaver.Signal(syscall.SIGCONT)
	if code, err := leaver.Wait(90 * time.Second); err != nil || code != 0 {
		t.Fatalf("leaver exit %d, %v; log:\n%s", code, err, leaver.Log())
	}
	held := lw.stop()
	if !handedOverRE.MatchString(leaver.Log()) && !regexp.MustCompile(`flushed everything to storage`).MatchString(leaver.Log()) {
		t.Fatalf("leaver exited 0 without handing over or flushing; log:\n%s", leaver.Log())
	}
	v = waitActive(t, c, a.GRPCAddr, "a", "b", "d")
	if _, ok := v.Member("c"); ok {
		t.Fatal("leaver still in the ring")
	}
	checkRing(t, c, a.GRPCAddr)
	w.Stop()
	checkAcked(t, w, 2, true, held, []*pc.Node{d}, a, b, d)
	logNeverHeld(t, w, sigAt, held, d, insecureCreds)
}

// TestProcess_FlushedHandoverQueryable: with no PENDING member the leaver flushes instead of
// handing over. The flushed blocks are in its bucket, and the bucket read through
// storage.NewBucketQueryable (what the querier uses for long-term storage) returns every sample
// the leaver held, with its value.
func TestProcess_FlushedHandoverQueryable(t *testing.T) {
	skipShort(t)
	_, a, _, cc := startCluster3(t, append(slicesClone(handoverFlags), "-ingester.max-transfer-retries", "2")...)
	const name = "e2e_leave_flush"
	want := storageWriteSeries(t, a.HTTPAddr, "", name, 40, 60) // RF=3 on 3 nodes: c holds all
	// The push returned after a quorum (2 of 3); c's copy may land a moment later.
	pc.Eventually(t, 10*time.Second, "c holds every sample", func() (bool, string) {
		held, err := queryIngester(t.Context(), cc.GRPCAddr, "anonymous", name)
		return err == nil && len(held) == len(want), fmt.Sprintf("%d of %d samples, err %v", len(held), len(want), err)
	})

	cc.Signal(syscall.SIGINT)
	if code, err := cc.Wait(60 * time.Second); err != nil || code != 0 {
		t.Fatalf("leaver exit %d, %v; log:\n%s", code, err, cc.Log())
	}
	if !regexp.MustCompile(`flushed everything to storage`).MatchString(cc.Log()) {
		t.Fatalf("leaver did not flush; log:\n%s", cc.Log())
	}
	bucket := filepath.Join(cc.DataDir, "blocks")
	if len(storageBlockDirs(t, bucket, "anonymous")) == 0 {
		t.Fatalf("no block in %s after the flush", bucket)
	}
	got := bucketSamples(t, bucket, name)
	storageRequireSamples(t, "the leaver's flushed blocks read through storage.NewBucketQueryable", want, got)
	t.Logf("%d samples of %d series flushed by the leaver and read back from its bucket", len(got), 40)
}
