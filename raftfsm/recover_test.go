package raftfsm

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/raftingest/raftingest/ringstate"
)

// A majority lost for good: n2 and n3 are gone, n1 alone cannot elect itself. Started with
// -raft.recover it becomes the only voter with the ring it had (every member, tokens and the
// entries it held), accepts commands, records the recovery, and a new node joins it. A restart
// with the flag still on is refused once the configuration has changed; one while it is still
// alone recovers nothing and runs.
func TestRecover_SurvivorOfALostMajority(t *testing.T) {
	c := newCluster(t)
	nodes := c.cluster(3)
	c.activateAll(nodes)
	var last uint64
	for i := range 5 {
		last = c.mustApply(nodes[i%3], ringstate.Command{Op: ringstate.OpHeartbeat, Member: ringstate.MemberID(nodes[i%3].id)})
	}
	n1, n2, n3 := nodes[0], nodes[1], nodes[2]
	if err := n1.node.WaitApplied(ctxT(t, 10*time.Second), last); err != nil {
		t.Fatal(err)
	}
	before := n1.node.Ring()
	for _, n := range []*testNode{n2, n3, n1} {
		c.stop(n)
	}

	// Without the flag, n1 alone never leads (its peers are gone).
	c.start(n1.id, false)
	time.Sleep(4 * c.cfg.ElectionTimeout) // long enough for several elections; it must win none
	if n1.node.IsLeader() {
		t.Fatal("n1 leads without a majority")
	}
	c.stop(n1)

	c.cfg.Recover = true
	c.start(n1.id, false)
	c.cfg.Recover = false
	if !poll(t, 10*time.Second, n1.node.IsLeader) {
		t.Fatal("n1 started with -raft.recover did not become leader")
	}
	conf, _, err := n1.node.configuration(ctxT(t, 5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if len(conf.Servers) != 1 || string(conf.Servers[0].ID) != n1.id {
		t.Fatalf("configuration after recovery: %+v, want n1 alone", conf.Servers)
	}
	got := n1.node.Ring()
	for _, m := range before.Members() {
		gm, ok := got.Member(m.ID)
		if !ok || gm.State != m.State || !slices.Equal(gm.Tokens, m.Tokens) {
			t.Fatalf("member %s after recovery: %+v (present %v), before %+v", m.ID, gm, ok, m)
		}
	}
	var rec recoveryRecord
	b, err := os.ReadFile(filepath.Join(n1.dir, "raft", recoveredFile))
	if err != nil || json.Unmarshal(b, &rec) != nil || strings.Join(rec.Removed, ",") != "n2,n3" || rec.ConfigIndex == 0 {
		t.Fatalf("recovery record %q (%v): want n2,n3 removed and the configuration index", b, err)
	}
	// The ring moves again: a command commits, and the dead members can be removed from it.
	c.mustApply(n1, ringstate.Command{Op: ringstate.OpHeartbeat, Member: ringstate.MemberID(n1.id)})
	if err := n1.node.RemovePeer(ctxT(t, 10*time.Second), n2.id); err != nil {
		t.Fatalf("remove dead n2 after recovery: %v", err)
	}

	// Restarted with the flag while still alone: nothing to recover, it runs.
	c.stop(n1)
	c.cfg.Recover = true
	c.start(n1.id, false)
	c.cfg.Recover = false
	if !poll(t, 10*time.Second, n1.node.IsLeader) {
		t.Fatal("n1 restarted alone with -raft.recover did not lead")
	}

	// A new node joins; the flag left on would now split the cluster: refused.
	n4, _ := c.join("n4", n1)
	if !poll(t, 10*time.Second, func() bool { return inConfig(n1.node, n4.id) }) {
		t.Fatal("n4 not in the configuration")
	}
	c.stop(n4)
	c.stop(n1)
	cfg := c.cfg
	cfg.ID, cfg.DataDir, cfg.RaftAddr, cfg.Recover = n1.id, n1.dir, n1.raftAddr, true
	if n, err := NewNode(cfg); err == nil {
		n.Shutdown()
		t.Fatal("-raft.recover accepted after the configuration changed since the recovery")
	} else if !strings.Contains(err.Error(), "already recovered at index") || !strings.Contains(err.Error(), "n4") ||
		!strings.Contains(err.Error(), "remove -raft.recover") {
		t.Fatalf("refusal does not say why: %v", err)
	}
	// Without the flag it starts (and leads with n4 back).
	c.start(n1.id, false)
	c.start(n4.id, false)
	c.leader()
}

// -raft.recover on a node with no Raft state is an operator error: refused, nothing created.
func TestRecover_NoStateRefused(t *testing.T) {
	cfg := fastConfig()
	cfg.ID, cfg.DataDir, cfg.RaftAddr, cfg.Recover = "n1", t.TempDir(), "127.0.0.1:0", true
	n, err := NewNode(cfg)
	if err == nil {
		n.Shutdown()
		t.Fatal("-raft.recover accepted without Raft state")
	}
	if !strings.Contains(err.Error(), "no Raft state") {
		t.Fatalf("error %v", err)
	}
}
