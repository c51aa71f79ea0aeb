package main

import (
	"bytes"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/raftingest/raftingest/ringpb"
)

// listen returns the address of a TCP listener on 127.0.0.1 that accepts and closes connections,
// standing for a node's Raft port.
func listen(t *testing.T) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lis.Close() })
	go func() {
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	return lis.Addr().String()
}

// deadAddr is a 127.0.0.1 address nothing listens on (a listener opened and closed).
func deadAddr(t *testing.T) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close()
	return addr
}

func TestJoin_NothingListening_RefusedUnlessForce(t *testing.T) {
	f := newFake()
	addr := serve(t, f)
	ghost := deadAddr(t)
	// -timeout bounds how long join waits for something to listen (5 s at most).
	code, out, errOut := runCLI(t, nil, "-addr", addr, "-timeout", "1s", "join", "ghost", ghost)
	mustCode(t, 1, code, out, errOut)
	for _, want := range []string{"nothing answers at " + ghost, "connection refused, for 1s", "-raft.addr", "-force"} {
		if !strings.Contains(errOut, want) {
			t.Errorf("stderr lacks %q:\n%s", want, errOut)
		}
	}
	if n := len(f.callsOf("Join")); n != 0 {
		t.Fatalf("%d Join calls after a refused join, want 0", n)
	}
	code, out, errOut = runCLI(t, nil, "-addr", addr, "join", "ghost", ghost, "-force")
	mustCode(t, 0, code, out, errOut)
	if n := len(f.callsOf("Join")); n != 1 {
		t.Fatalf("%d Join calls with -force, want 1", n)
	}
}

func TestJoin_ExistingServer_SaysNothingChanged(t *testing.T) {
	f := newFake()
	addr := serve(t, f)
	// ingester-2 is a voter at 127.0.0.1:7002 in the fake's configuration; nothing listens there,
	// and none is needed: a repeated join adds nothing.
	f.join = &ringpb.JoinResponse{Index: 0, Voter: true}
	code, out, errOut := runCLI(t, nil, "-addr", addr, "join", "ingester-2", "127.0.0.1:7002")
	mustCode(t, 0, code, out, errOut)
	if want := "ingester-2 (raft 127.0.0.1:7002) is already a voter; nothing changed\n"; out != want {
		t.Errorf("output %q, want %q", out, want)
	}
	code, out, errOut = runCLI(t, nil, "-addr", addr, "-o", "json", "join", "ingester-2", "127.0.0.1:7002")
	mustCode(t, 0, code, out, errOut)
	if m := decodeObject(t, out); m["changed"] != false || m["voter"] != true {
		t.Errorf("json %v, want changed false", m)
	}
	// ingester-4 is a non-voter: -voter promotes it.
	f.join = &ringpb.JoinResponse{Index: 21, Voter: true}
	code, out, errOut = runCLI(t, nil, "-addr", addr, "join", "ingester-4", "127.0.0.1:7004", "-voter")
	mustCode(t, 0, code, out, errOut)
	if want := "promoted ingester-4 (raft 127.0.0.1:7004) to voter at index 21\n"; out != want {
		t.Errorf("output %q, want %q", out, want)
	}
}

func TestRemove_LiveMember_RefusedUnlessForce(t *testing.T) {
	f := newFake()
	addr := serve(t, f)
	// ingester-1 heartbeats (1.5 s ago, timeout 30 s): removing it would drop its data.
	code, out, errOut := runCLI(t, nil, "-addr", addr, "remove", "ingester-1")
	mustCode(t, 1, code, out, errOut)
	for _, want := range []string{"ingester-1 is alive (ACTIVE", "ringctl leave ingester-1", "-force"} {
		if !strings.Contains(errOut, want) {
			t.Errorf("stderr lacks %q:\n%s", want, errOut)
		}
	}
	if n := len(f.callsOf("RemovePeer")); n != 0 {
		t.Fatalf("%d RemovePeer calls for a live member, want 0", n)
	}
	if r := f.callsOf("GetRing"); len(r) != 1 || !r[0].(*ringpb.GetRingRequest).GetLinearizable() {
		t.Errorf("the liveness check must read the ring through the leader: %v", r)
	}
	// A LEAVING member with a fresh heartbeat is alive too: removing it cuts its hand-over.
	code, out, errOut = runCLI(t, nil, "-addr", addr, "remove", "ingester-3")
	mustCode(t, 1, code, out, errOut)
	if !strings.Contains(errOut, "ingester-3 is alive (LEAVING") {
		t.Errorf("stderr: %s", errOut)
	}
	code, out, errOut = runCLI(t, nil, "-addr", addr, "remove", "ingester-1", "-force")
	mustCode(t, 0, code, out, errOut)
	if reqs := f.callsOf("RemovePeer"); len(reqs) != 1 || reqs[0].(*ringpb.RemovePeerRequest).GetId() != "ingester-1" {
		t.Fatalf("RemovePeer calls %v, want one for ingester-1", reqs)
	}
	// A member whose liveness cannot be read is not removed without -force.
	f.setErr("GetRing", status.Error(codes.Unavailable, "raftfsm: no leader"))
	code, out, errOut = runCLI(t, nil, "-addr", addr, "remove", "ingester-2")
	mustCode(t, 1, code, out, errOut)
	if !strings.Contains(errOut, "cannot check whether ingester-2 is still alive") {
		t.Errorf("stderr: %s", errOut)
	}
}

func TestTransferLeadership_ToTheLeader_SaysNothingChanged(t *testing.T) {
	f := newFake()
	addr := serve(t, f)
	code, out, errOut := runCLI(t, nil, "-addr", addr, "transfer-leadership", "ingester-1")
	mustCode(t, 0, code, out, errOut)
	if want := "ingester-1 is already the leader; nothing changed\n"; out != want {
		t.Errorf("output %q, want %q", out, want)
	}
	if n := len(f.callsOf("TransferLeadership")); n != 0 {
		t.Fatalf("%d TransferLeadership calls to the current leader, want 0", n)
	}
	code, out, errOut = runCLI(t, nil, "-addr", addr, "-o", "json", "transfer-leadership", "ingester-1")
	mustCode(t, 0, code, out, errOut)
	if m := decodeObject(t, out); m["changed"] != false || m["new_leader"] != "ingester-1" || m["previous_leader"] != "ingester-1" {
		t.Errorf("json %v", m)
	}
	// Asked for ingester-4, the leadership went elsewhere: said, exit 1.
	code, out, errOut = runCLI(t, nil, "-addr", addr, "transfer-leadership", "ingester-4")
	mustCode(t, 1, code, out, errOut)
	if !strings.Contains(errOut, "leadership went to ingester-2, not ingester-4 (from ingester-1)") {
		t.Errorf("stderr: %s", errOut)
	}
}

func TestLeave_QuietRetries_ShowProgress(t *testing.T) {
	f := newFake()
	step := func(ms ...*ringpb.Member) *ringpb.GetRingResponse {
		return &ringpb.GetRingResponse{TimeMs: ringTime, HeartbeatTimeoutMs: 30_000, Members: ms}
	}
	one := member("ingester-1", ringpb.State_ACTIVE, 0, "", q)
	leaving := step(one, member("ingester-3", ringpb.State_LEAVING, 0, "", 3*q))
	f.rings = []*ringpb.GetRingResponse{step(one, member("ingester-3", ringpb.State_ACTIVE, 0, "", 3*q))}
	for range 12 { // 12 polls LEAVING without a joiner, then gone
		f.rings = append(f.rings, leaving)
	}
	f.rings = append(f.rings, step(one))
	addr := serve(t, f)
	f.setGRPCAddr("ingester-3", addr)
	var outb, errb bytes.Buffer
	c := &cli{stdout: &outb, stderr: &errb, getenv: func(string) string { return "" }, poll: 10 * time.Millisecond, progress: 50 * time.Millisecond}
	code := c.run([]string{"-addr", addr, "leave", "ingester-3"})
	mustCode(t, 0, code, outb.String(), errb.String())
	var progress []string
	for _, l := range strings.Split(outb.String(), "\n") {
		if strings.HasPrefix(l, "ingester-3: still LEAVING") {
			progress = append(progress, l)
		}
	}
	// The first LEAVING poll prints the state; 11 quiet polls of 10 ms with a line every 50 ms.
	if len(progress) != 2 {
		t.Fatalf("%d progress lines, want 2:\n%s", len(progress), outb.String())
	}
	if !strings.Contains(progress[0], "PENDING member") || !strings.Contains(progress[0], "flushes") {
		t.Errorf("progress line does not say what it waits for: %q", progress[0])
	}
}

func TestWrongPort_NamesTheGRPCPort(t *testing.T) {
	web := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	t.Cleanup(web.Close)
	code, out, errOut := runCLI(t, nil, "-addr", strings.TrimPrefix(web.URL, "http://"), "status")
	mustCode(t, 1, code, out, errOut)
	if !strings.Contains(errOut, "HTTP port (-http.addr)") || !strings.Contains(errOut, "-grpc.addr") {
		t.Errorf("ringctl at an HTTP port: %s", errOut)
	}

	// A real Raft transport, as a node's -raft.addr serves it.
	trans, err := raft.NewTCPTransport("127.0.0.1:0", nil, 2, time.Second, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { trans.Close() })
	code, out, errOut = runCLI(t, nil, "-addr", string(trans.LocalAddr()), "ring")
	mustCode(t, 1, code, out, errOut)
	if !strings.Contains(errOut, "Raft port (-raft.addr)") || strings.Contains(errOut, "requires TLS") {
		t.Errorf("ringctl at a Raft port: %s", errOut)
	}
}
