// Package e2e holds process-level tests: real bin/ingester and bin/ringctl processes on 127.0.0.1,
// real Raft over TCP, real bbolt files. They are skipped with -short.
package e2e

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	pc "github.com/raftingest/raftingest/internal/proccluster"
)

// fastFlags make a test cluster notice failures in seconds rather than minutes.
var fastFlags = []string{"-ring.heartbeat-period", "200ms", "-ring.heartbeat-timeout", "3s", "-ingester.join-after", "0s"}

func skipShort(t *testing.T) {
	if testing.Short() {
		t.Skip("process-level test; skipped with -short")
	}
}

// waitActive waits until every id is ACTIVE and healthy in the ring read through addr, and returns
// that ring.
func waitActive(t *testing.T, c *pc.Cluster, addr string, ids ...string) pc.RingView {
	t.Helper()
	var v pc.RingView
	pc.Eventually(t, 30*time.Second, fmt.Sprintf("%v ACTIVE", ids), func() (bool, string) {
		var err error
		if v, err = c.Ring(addr); err != nil {
			return false, err.Error()
		}
		for _, id := range ids {
			m, ok := v.Member(id)
			if !ok || m.State != "ACTIVE" || !m.Healthy {
				return false, fmt.Sprintf("%s: %+v (present %v)", id, m.State, ok)
			}
		}
		return true, ""
	})
	return v
}

func leaderOf(t *testing.T, c *pc.Cluster, addr string) string {
	t.Helper()
	var leader string
	pc.Eventually(t, 20*time.Second, "a leader", func() (bool, string) {
		s, err := c.Status(addr)
		if err != nil {
			return false, err.Error()
		}
		leader = s.Leader
		return leader != "", "no leader yet"
	})
	return leader
}

// TestProcess_RingLifecycle walks a 3-node cluster of real processes through the operations the
// ring issue names: bootstrap, -join, ringctl join, ring and status, kill -9 and UNHEALTHY, restart
// with the same tokens, kill -9 of the leader with ring changes continuing, ringctl remove, and a
// graceful SIGTERM leave.
func TestProcess_RingLifecycle(t *testing.T) {
	skipShort(t)
	c := pc.New(t, fastFlags...)
	a := c.Start("a", "-bootstrap")
	waitActive(t, c, a.GRPCAddr, "a")
	b := c.Start("b", "-join", a.GRPCAddr)
	cc := c.Start("c") // waits for ringctl join
	if out, errOut, code := c.Ringctl("-addr", a.GRPCAddr, "join", "c", cc.RaftAddr); code != 0 {
		t.Fatalf("ringctl join c: exit %d: %s%s", code, out, errOut)
	}
	v := waitActive(t, c, b.GRPCAddr, "a", "b", "c")

	// Every member owns 128 distinct tokens; no token has two owners; ownership sums to 1.
	owner := map[uint32]string{}
	sum := 0.0
	for _, m := range v.Members {
		if len(m.Tokens) != 128 {
			t.Errorf("%s owns %d tokens, want 128", m.ID, len(m.Tokens))
		}
		for _, tok := range m.Tokens {
			if o, dup := owner[tok]; dup {
				t.Errorf("token %d owned by %s and %s", tok, o, m.ID)
			}
			owner[tok] = m.ID
		}
		sum += m.Ownership
	}
	if math.Abs(sum-1) > 1e-6 {
		t.Errorf("ownership sums to %v, want 1", sum)
	}
	st, err := c.Status(cc.GRPCAddr)
	if err != nil {
		t.Fatal(err)
	}
	if st.Leader != "a" || len(st.Servers) != 3 {
		t.Fatalf("status: leader %q, %d servers; want a and 3: %+v", st.Leader, len(st.Servers), st)
	}
	for _, s := range st.Servers {
		if !s.Voter {
			t.Errorf("server %s is not a voter; 3 <= max voters", s.ID)
		}
	}

	// /ready is 200 on an ACTIVE member once its ring has caught up with the leader's commit index
	// (learned by polling; a node that joined moments ago may still be learning it); /ring answers
	// JSON and HTML.
	pc.Eventually(t, 10*time.Second, "/ready 200 on ACTIVE b", func() (bool, string) {
		code, body, err := pc.HTTPGet(b.HTTPAddr, "/ready", "")
		return err == nil && code == 200, fmt.Sprintf("%d %q %v", code, body, err)
	})
	if code, body, err := pc.HTTPGet(b.HTTPAddr, "/ring", "application/json"); err != nil || code != 200 || !json.Valid([]byte(body)) {
		t.Errorf("/ring JSON: %d %v %.200q", code, err, body)
	}

	// kill -9 c: after the heartbeat timeout the others see it UNHEALTHY.
	tokensC := mustMember(t, v, "c").Tokens
	cc.Kill()
	pc.Eventually(t, 20*time.Second, "c UNHEALTHY", func() (bool, string) {
		v, err := c.Ring(a.GRPCAddr)
		if err != nil {
			return false, err.Error()
		}
		m, _ := v.Member("c")
		return !m.Healthy && m.State == "UNHEALTHY", fmt.Sprintf("%+v", m.State)
	})
	// Restarted with its data directory, c resumes ACTIVE with the same tokens, without join-after.
	cc.Start("-ingester.join-after", "1h")
	v = waitActive(t, c, a.GRPCAddr, "c")
	if got := mustMember(t, v, "c").Tokens; !slices.Equal(got, tokensC) {
		t.Fatalf("c came back with other tokens: %d tokens, equal=%v", len(got), slices.Equal(got, tokensC))
	}

	// kill -9 the leader: a new leader is elected and ring changes go on under it.
	a.Kill()
	var newLeader string
	pc.Eventually(t, 30*time.Second, "a new leader", func() (bool, string) {
		s, err := c.Status(b.GRPCAddr)
		if err != nil {
			return false, err.Error()
		}
		newLeader = s.Leader
		return s.Leader != "" && s.Leader != "a", "leader " + s.Leader
	})
	d := c.Start("d", "-join", b.GRPCAddr+","+cc.GRPCAddr)
	waitActive(t, c, cc.GRPCAddr, "b", "c", "d")
	t.Logf("new leader %s; d joined under it", newLeader)

	// ringctl remove forgets the dead a, in the ring and in Raft — once its heartbeat is stale, as
	// an operator sees it (before that ringctl refuses a member that looks alive without -force).
	waitState(t, c, d.GRPCAddr, "a", "UNHEALTHY")
	if out, errOut, code := c.Ringctl("-addr", d.GRPCAddr, "remove", "a"); code != 0 {
		t.Fatalf("ringctl remove a: exit %d: %s%s", code, out, errOut)
	}
	pc.Eventually(t, 20*time.Second, "a gone", func() (bool, string) {
		v, err := c.Ring(b.GRPCAddr)
		if err != nil {
			return false, err.Error()
		}
		s, err := c.Status(b.GRPCAddr)
		if err != nil {
			return false, err.Error()
		}
		_, inRing := v.Member("a")
		inRaft := slices.ContainsFunc(s.Servers, func(s struct {
			ID      string `json:"id"`
			Address string `json:"address"`
			Voter   bool   `json:"voter"`
		}) bool {
			return s.ID == "a"
		})
		return !inRing && !inRaft, fmt.Sprintf("in ring %v, in raft %v", inRing, inRaft)
	})

	// SIGTERM d: it leaves the ring and Raft, and exits 0.
	d.Signal(syscall.SIGTERM)
	code, err := d.Wait(30 * time.Second)
	if err != nil || code != 0 {
		t.Fatalf("d after SIGTERM: exit %d, %v", code, err)
	}
	v, err = c.Ring(b.GRPCAddr)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := v.Member("d"); ok {
		t.Fatalf("d still in the ring after leaving: %+v", v)
	}
	if _, err := os.Stat(filepath.Join(d.DataDir, "raft")); !os.IsNotExist(err) {
		t.Errorf("d left gracefully but kept its raft state (stat: %v)", err)
	}
}

func mustMember(t *testing.T, v pc.RingView, id string) pc.RingMember {
	t.Helper()
	m, ok := v.Member(id)
	if !ok {
		t.Fatalf("%s not in ring %+v", id, v)
	}
	return m
}

// TestProcess_BadInput checks that each kind of bad input gets a clear error that names the problem,
// and leaves the ring unchanged.
func TestProcess_BadInput(t *testing.T) {
	skipShort(t)
	c := pc.New(t, fastFlags...)
	a := c.Start("a", "-bootstrap")
	before := waitActive(t, c, a.GRPCAddr, "a")

	cases := []struct {
		name     string
		args     []string
		wantCode int
		wantErr  string
	}{
		{"remove unknown member", []string{"-addr", a.GRPCAddr, "remove", "nobody"}, 1, "nobody"},
		{"join duplicate id with another address", []string{"-addr", a.GRPCAddr, "join", "a", "127.0.0.1:1"}, 1, "a"},
		{"join with a bad raft address", []string{"-addr", a.GRPCAddr, "join", "x", "not-an-address"}, 2, "not-an-address"},
		{"unknown command", []string{"-addr", a.GRPCAddr, "frobnicate"}, 2, "frobnicate"},
		{"unknown flag", []string{"-addr", a.GRPCAddr, "-bogus", "ring"}, 2, "bogus"},
		{"leave unknown member", []string{"-addr", a.GRPCAddr, "leave", "nobody", "-wait=false"}, 1, "nobody"},
		{"unreachable node", []string{"-addr", "127.0.0.1:1", "-timeout", "2s", "status"}, 1, "127.0.0.1:1"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			out, errOut, code := c.Ringctl(tc.args...)
			if code != tc.wantCode {
				t.Fatalf("exit %d, want %d; stdout %q stderr %q", code, tc.wantCode, out, errOut)
			}
			if !strings.Contains(errOut, tc.wantErr) {
				t.Fatalf("stderr %q does not name %q", errOut, tc.wantErr)
			}
		})
	}
	after, err := c.Ring(a.GRPCAddr)
	if err != nil {
		t.Fatal(err)
	}
	if len(after.Members) != len(before.Members) || !slices.Equal(mustMember(t, after, "a").Tokens, mustMember(t, before, "a").Tokens) {
		t.Fatalf("ring changed by bad input: before %+v after %+v", before, after)
	}

	// Flags: conflicts and malformed tokens files stop the process with exit 2 and a message
	// naming the flag or the file.
	bad := filepath.Join(c.Dir, "tokens.json")
	if err := os.WriteFile(bad, []byte(`{"tokens":[1,2,"x"]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	flagCases := []struct {
		name    string
		args    []string
		wantLog string
	}{
		{"bootstrap and join", []string{"-bootstrap", "-join", a.GRPCAddr}, "-bootstrap and -join"},
		{"malformed tokens file", []string{"-ring.tokens-file-path", bad}, bad},
		{"unspecified raft address", []string{"-raft.addr", "0.0.0.0:9999"}, "-raft.addr"},
		{"stray argument", []string{"extra"}, "extra"},
	}
	for _, tc := range flagCases {
		t.Run(tc.name, func(t *testing.T) {
			n := c.Start("bad-"+strings.ReplaceAll(tc.name, " ", "-"), tc.args...)
			code, err := n.Wait(10 * time.Second)
			if err != nil {
				t.Fatal(err)
			}
			if code != 2 {
				t.Fatalf("exit %d, want 2; log:\n%s", code, n.Log())
			}
			if !strings.Contains(n.Log(), tc.wantLog) {
				t.Fatalf("log does not name %q:\n%s", tc.wantLog, n.Log())
			}
		})
	}

	// -join to a node that is not a member of any cluster: the joiner says why, and nothing joins.
	lone := c.Start("lone")
	j := c.Start("j", "-join", lone.GRPCAddr)
	pc.Eventually(t, 15*time.Second, "join failure logged", func() (bool, string) {
		return strings.Contains(j.Log(), "join failed") && strings.Contains(j.Log(), "leader"), "no join failure in log yet"
	})
	if v, err := c.Ring(a.GRPCAddr); err != nil || len(v.Members) != 1 {
		t.Fatalf("ring changed: %+v %v", v, err)
	}
}

// TestProcess_LeaveLeaderViaRingctl moves leadership with ringctl, then makes the leader leave with
// `ringctl leave`: the CLI follows it until it is gone, the leader hands leadership over first, the
// process exits 0, and the remaining cluster keeps committing ring changes.
func TestProcess_LeaveLeaderViaRingctl(t *testing.T) {
	skipShort(t)
	c := pc.New(t, fastFlags...)
	a := c.Start("a", "-bootstrap")
	waitActive(t, c, a.GRPCAddr, "a")
	b := c.Start("b", "-join", a.GRPCAddr)
	cc := c.Start("c", "-join", a.GRPCAddr)
	waitActive(t, c, a.GRPCAddr, "a", "b", "c")

	if out, errOut, code := c.Ringctl("-addr", cc.GRPCAddr, "transfer-leadership", "b"); code != 0 {
		t.Fatalf("transfer-leadership b: exit %d: %s%s", code, out, errOut)
	}
	pc.Eventually(t, 10*time.Second, "b leads", func() (bool, string) {
		l := leaderOf(t, c, a.GRPCAddr)
		return l == "b", "leader " + l
	})

	out, errOut, code := c.Ringctl("-addr", a.GRPCAddr, "-timeout", "60s", "leave", "b")
	if code != 0 {
		t.Fatalf("ringctl leave b: exit %d: %s%s", code, out, errOut)
	}
	if !strings.Contains(out, "left the ring") {
		t.Errorf("ringctl leave did not report the end: %q", out)
	}
	if code, err := b.Wait(20 * time.Second); err != nil || code != 0 {
		t.Fatalf("b after ringctl leave: exit %d, %v", code, err)
	}
	l := leaderOf(t, c, a.GRPCAddr)
	if l == "b" || l == "" {
		t.Fatalf("leader after b left: %q", l)
	}
	st, err := c.Status(a.GRPCAddr)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Servers) != 2 {
		t.Fatalf("raft servers after b left: %+v", st.Servers)
	}
	d := c.Start("d", "-join", cc.GRPCAddr)
	v := waitActive(t, c, d.GRPCAddr, "a", "c", "d")
	if _, ok := v.Member("b"); ok {
		t.Fatalf("b still in the ring: %+v", v)
	}
}
