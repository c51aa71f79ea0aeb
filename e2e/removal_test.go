package e2e

import (
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	pc "github.com/raftingest/raftingest/internal/proccluster"
)

// raftServers returns the ids in the Raft configuration as seen through addr.
func raftServers(t *testing.T, c *pc.Cluster, addr string) []string {
	t.Helper()
	st, err := c.Status(addr)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, s := range st.Servers {
		ids = append(ids, s.ID)
	}
	slices.Sort(ids)
	return ids
}

// Regressions around removed nodes, with real processes and the DEFAULT heartbeat period:
//   - a node removed while running exits non-zero, saying to wipe <data>/raft (it used to retry
//     forever and ignore SIGTERM);
//   - a removed node restarted on its old data, with and without -join, exits non-zero saying to
//     wipe, and is neither re-added to Raft nor registered as a ghost in the ring.
func TestProcess_RemovedNodeExitsAndDoesNotRejoin(t *testing.T) {
	skipShort(t)
	c := pc.New(t, "-ingester.join-after", "0s") // default -ring.heartbeat-period (5s) and timeout
	a := c.Start("a", "-bootstrap")
	waitActive(t, c, a.GRPCAddr, "a")
	c.Start("b", "-join", a.GRPCAddr)
	d := c.Start("d", "-join", a.GRPCAddr)
	waitActive(t, c, a.GRPCAddr, "a", "b", "d")

	// -force: d is alive, which is the point (without it ringctl refuses, pointing to leave).
	if out, errOut, code := c.Ringctl("-addr", a.GRPCAddr, "remove", "d", "-force"); code != 0 {
		t.Fatalf("ringctl remove d: exit %d: %s%s", code, out, errOut)
	}
	code, err := d.Wait(30 * time.Second)
	if err != nil {
		t.Fatalf("d after ringctl remove: %v\n%s", err, d.Log())
	}
	wipe := filepath.Join(d.DataDir, "raft")
	if code == 0 || !strings.Contains(d.Log(), "wipe") || !strings.Contains(d.Log(), wipe) {
		t.Fatalf("d exited %d; want non-zero with a message to wipe %s:\n%s", code, wipe, d.Log())
	}
	before := waitActive(t, c, a.GRPCAddr, "a", "b")
	servers := raftServers(t, c, a.GRPCAddr)

	for _, tc := range []struct {
		name  string
		extra []string
	}{{"without -join", nil}, {"with -join", []string{"-join", a.GRPCAddr}}} {
		t.Run("restart "+tc.name, func(t *testing.T) {
			r := c.Add("d-"+strings.ReplaceAll(tc.name, " ", ""), append([]string{"-node.id", "d", "-data.dir", d.DataDir,
				"-raft.addr", d.RaftAddr}, tc.extra...)...)
			r.Start()
			code, err := r.Wait(40 * time.Second)
			if err != nil {
				t.Fatalf("restarted d: %v\n%s", err, r.Log())
			}
			t.Logf("restarted d:\n%s", r.Log())
			if code == 0 || !strings.Contains(r.Log(), "wipe") {
				t.Fatalf("restarted d exited %d; want non-zero saying to wipe:\n%s", code, r.Log())
			}
			if got := raftServers(t, c, a.GRPCAddr); !slices.Equal(got, servers) {
				t.Fatalf("raft servers %v, want %v", got, servers)
			}
			after := waitActive(t, c, a.GRPCAddr, "a", "b")
			if _, ok := after.Member("d"); ok || len(after.Members) != len(before.Members) {
				t.Fatalf("ring changed: %+v", after)
			}
		})
	}
}

// Regression (a bad node id became a Raft voter, then the process exited, leaving a dead voter):
// -node.id with a leading '_' is refused by flag validation (exit 2), and `ringctl join _x ADDR`
// is refused before any Raft change.
func TestProcess_BadNodeID_RefusedBeforeRaft(t *testing.T) {
	skipShort(t)
	c := pc.New(t, fastFlags...)
	a := c.Start("a", "-bootstrap")
	waitActive(t, c, a.GRPCAddr, "a")
	servers := raftServers(t, c, a.GRPCAddr)

	n := c.Start("badid", "-node.id", "_x", "-join", a.GRPCAddr)
	code, err := n.Wait(10 * time.Second)
	if err != nil || code != 2 || !strings.Contains(n.Log(), "-node.id") {
		t.Fatalf("-node.id _x: exit %d, %v; want 2 naming -node.id:\n%s", code, err, n.Log())
	}
	out, errOut, code := c.Ringctl("-addr", a.GRPCAddr, "join", "_x", "127.0.0.1:1")
	if code == 0 || !strings.Contains(errOut, "_x") {
		t.Fatalf("ringctl join _x: exit %d: %s%s", code, out, errOut)
	}
	if got := raftServers(t, c, a.GRPCAddr); !slices.Equal(got, servers) {
		t.Fatalf("raft servers %v, want %v", got, servers)
	}
}

// Regression (a node started with a duplicate id never exited: join retried every error forever):
// -join refused with AlreadyExists ends the process with exit 1 and the leader's message.
func TestProcess_DuplicateIDJoin_Exits(t *testing.T) {
	skipShort(t)
	c := pc.New(t, fastFlags...)
	a := c.Start("a", "-bootstrap")
	waitActive(t, c, a.GRPCAddr, "a")
	dup := c.Start("dup", "-node.id", "a", "-join", a.GRPCAddr)
	code, err := dup.Wait(20 * time.Second)
	if err != nil || code != 1 || !strings.Contains(dup.Log(), "refused") {
		t.Fatalf("duplicate id: exit %d, %v; want 1 with the refusal:\n%s", code, err, dup.Log())
	}
	waitActive(t, c, a.GRPCAddr, "a")
}

// Regression (SIGTERM while register cannot commit was ignored until a second signal): a node that
// was never added to any cluster exits 0 within 2s of a SIGTERM.
func TestProcess_SIGTERMUnjoinedNode_ExitsAtOnce(t *testing.T) {
	skipShort(t)
	c := pc.New(t, fastFlags...)
	lone := c.Start("lone")
	pc.Eventually(t, 20*time.Second, "lone started", func() (bool, string) {
		return strings.Contains(lone.Log(), "ingester started"), "not started yet"
	})
	time.Sleep(500 * time.Millisecond) // let its register start retrying
	lone.Signal(syscall.SIGTERM)
	code, err := lone.Wait(2 * time.Second)
	if err != nil || code != 0 {
		t.Fatalf("after SIGTERM: exit %d, %v; want 0 within 2s:\n%s", code, err, lone.Log())
	}
}
