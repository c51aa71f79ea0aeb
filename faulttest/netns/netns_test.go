package netns

import (
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"
)

func TestRefusesOutsideDriverNamespace(t *testing.T) {
	if InDriverNamespace() {
		t.Skip("running inside a driver namespace")
	}
	if _, err := New(2); err != ErrNotIsolated {
		t.Fatalf("New outside the driver namespace: %v, want ErrNotIsolated", err)
	}
	if err := (&Net{Nodes: []*Node{{Name: "x"}}}).Apply(0, Rule{Peers: []int{0}, In: true}); err != ErrNotIsolated {
		t.Fatalf("Apply outside the driver namespace: %v", err)
	}
}

// TestPartitionRules builds a two-node network and checks a drop rule cuts TCP between them, a
// reject rule makes connects fail fast, and healing restores it.
func TestPartitionRules(t *testing.T) {
	if !Reexec(t) {
		return
	}
	nt, err := New(2)
	if err != nil {
		t.Fatal(err)
	}
	defer nt.Close()
	if _, err := exec.LookPath("python3"); err != nil {
		t.Skip("python3 (the test's TCP server) not installed")
	}
	srv := nt.Command(1, "python3", "-m", "http.server", "7000", "--bind", nt.Nodes[1].IP)
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = srv.Process.Kill(); _ = srv.Wait() }()
	dial := func() (time.Duration, error) {
		start := time.Now()
		out, err := nt.Command(0, "sh", "-c", "timeout 3 bash -c 'exec 3<>/dev/tcp/"+nt.Nodes[1].IP+"/7000'").CombinedOutput()
		if err != nil {
			return time.Since(start), &net.OpError{Op: "dial", Err: errString(strings.TrimSpace(string(out)) + err.Error())}
		}
		return time.Since(start), nil
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, err := dial(); err == nil {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("no connectivity before faults: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err := nt.Apply(0, Rule{Peers: []int{1}, In: true, Out: true, Reject: true}); err != nil {
		t.Fatal(err)
	}
	if d, err := dial(); err == nil || d > 2*time.Second {
		t.Fatalf("reject: dial took %v, err %v; want a fast failure", d, err)
	}
	if err := nt.Apply(0, Rule{Peers: []int{1}, In: true, Out: true}); err != nil {
		t.Fatal(err)
	}
	if d, err := dial(); err == nil || d < 2500*time.Millisecond {
		t.Fatalf("drop: dial took %v, err %v; want a hang then failure", d, err)
	}
	if err := nt.HealAll(); err != nil {
		t.Fatal(err)
	}
	if _, err := dial(); err != nil {
		t.Fatalf("after heal: %v", err)
	}
}

type errString string

func (e errString) Error() string { return string(e) }
