package main

import (
	"net"
	"strings"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/raftingest/raftingest/raftfsm"
	"github.com/raftingest/raftingest/ringpb"
)

// redirect is the status a node answers under mutual TLS instead of forwarding to the leader,
// built as raftfsm builds it.
func redirect(t *testing.T, id, addr string) error {
	t.Helper()
	st, err := status.New(codes.FailedPrecondition, "raftfsm: ask another node: not the leader: ask "+id+" at "+addr).
		WithDetails(&errdetails.ErrorInfo{Reason: "REDIRECT", Domain: "raftingest.raftfsm",
			Metadata: map[string]string{"id": id, "grpc_addr": addr}})
	if err != nil {
		t.Fatal(err)
	}
	if gotID, gotAddr, ok := raftfsm.RedirectOf(st.Err()); !ok || gotID != id || gotAddr != addr {
		t.Fatalf("raftfsm.RedirectOf does not read the test's redirect: %q %q %v", gotID, gotAddr, ok)
	}
	return st.Err()
}

func TestRedirect_EveryCommandFollowsItToTheLeader(t *testing.T) {
	for _, tc := range []struct {
		method string
		args   []string
		want   string
	}{
		{"Status", []string{"status", "-o", "json"}, `"leader": "ingester-1"`},
		{"GetRing", []string{"ring", "-linearizable"}, "ingester-4"},
		{"Join", []string{"join", "ingester-5", "127.0.0.1:7005", "-force"}, "added ingester-5"},
		{"RemovePeer", []string{"remove", "ingester-2"}, "removed ingester-2"},
		{"TransferLeadership", []string{"transfer-leadership"}, "leadership transferred to ingester-2"},
	} {
		t.Run(tc.method, func(t *testing.T) {
			follower, leader := newFake(), newFake()
			followerAddr, leaderAddr := serve(t, follower), serve(t, leader)
			follower.setErr(tc.method, redirect(t, "ingester-1", leaderAddr))
			code, out, errOut := runCLI(t, nil, append([]string{"-addr", followerAddr}, tc.args...)...)
			mustCode(t, 0, code, out, errOut)
			if !strings.Contains(out, tc.want) || errOut != "" {
				t.Errorf("stdout %q, stderr %q", out, errOut)
			}
			if nf, nl := len(follower.callsOf(tc.method)), len(leader.callsOf(tc.method)); nf != 1 || nl != 1 {
				t.Errorf("%s: %d calls to the follower, %d to the leader; want 1 and 1", tc.method, nf, nl)
			}
		})
	}
}

// Nodes that disagree on who leads could pass a request around forever: ringctl stops after
// maxRedirects and says why.
func TestRedirect_GivesUpAfterMaxRedirects(t *testing.T) {
	f := newFake()
	addr := serve(t, f)
	f.setErr("RemovePeer", redirect(t, "ingester-1", addr))
	code, out, errOut := runCLI(t, nil, "-addr", addr, "remove", "ingester-2")
	mustCode(t, 1, code, out, errOut)
	if !strings.Contains(errOut, "gave up after 3 redirects") || !strings.Contains(errOut, "ask ingester-1 at "+addr) {
		t.Errorf("stderr %q", errOut)
	}
	if n := len(f.callsOf("RemovePeer")); n != maxRedirects+1 {
		t.Errorf("RemovePeer sent %d times, want %d", n, maxRedirects+1)
	}
}

// Right after an election a node may know the leader's id but not its address: ask again, a
// little later.
func TestRedirect_WithoutAddressRetriesTheSameNode(t *testing.T) {
	f := newFake()
	addr := serve(t, f)
	f.queue("Join", redirect(t, "ingester-1", ""), redirect(t, "ingester-1", ""))
	start := time.Now()
	code, out, errOut := runCLI(t, nil, "-addr", addr, "join", "ingester-5", "127.0.0.1:7005", "-force")
	mustCode(t, 0, code, out, errOut)
	if n := len(f.callsOf("Join")); n != 3 {
		t.Errorf("Join sent %d times, want 3", n)
	}
	if d := time.Since(start); d < 2*redirectWait {
		t.Errorf("retried after %s, want a pause of %s between tries", d, redirectWait)
	}

	// Never past -timeout.
	f.setErr("Join", redirect(t, "ingester-1", ""))
	code, out, errOut = runCLI(t, nil, "-addr", addr, "-timeout", "500ms", "join", "ingester-5", "127.0.0.1:7005", "-force")
	mustCode(t, 1, code, out, errOut)
	if !strings.Contains(errOut, "no answer from "+addr+" within 500ms") {
		t.Errorf("stderr %q", errOut)
	}
}

// Under TLS the leader a redirect names must present that member's certificate.
func TestRedirect_UnderTLSChecksTheNamedMember(t *testing.T) {
	p := newPKI(t)
	follower, leader := newFake(), newFake()
	followerAddr := serveTLS(t, follower, p, "ingester-2")
	leaderAddr := serveTLS(t, leader, p, "ingester-1")
	args := append([]string{"-addr", followerAddr, "remove", "ingester-3", "-force"}, p.tlsArgs(t, "operator", p.operator)...)

	follower.setErr("RemovePeer", redirect(t, "ingester-1", leaderAddr))
	code, out, errOut := runCLI(t, nil, args...)
	mustCode(t, 0, code, out, errOut)
	if len(leader.callers) != 1 || leader.callers[0] != "operator operator" {
		t.Errorf("the leader saw %q: the operator's own identity must reach it", leader.callers)
	}

	follower.setErr("RemovePeer", redirect(t, "ingester-9", leaderAddr))
	code, out, errOut = runCLI(t, nil, args...)
	mustCode(t, 1, code, out, errOut)
	if !strings.Contains(errOut, `the server presented the certificate of member "ingester-1", not of "ingester-9"`) {
		t.Errorf("stderr %q", errOut)
	}
	if n := len(leader.callsOf("RemovePeer")); n != 1 {
		t.Errorf("the wrong member got the request: %d calls", n)
	}
}

// A leave goes to the member itself, at its address in the ring, not through -addr: under TLS a
// node does not forward it.
func TestLeave_AsksTheMemberDirectly(t *testing.T) {
	entry, leaver := newFake(), newFake()
	entryAddr, leaverAddr := serve(t, entry), serve(t, leaver)
	entry.setGRPCAddr("ingester-3", leaverAddr)
	code, out, errOut := runCLI(t, nil, "-addr", entryAddr, "leave", "ingester-3", "-wait=false")
	mustCode(t, 0, code, out, errOut)
	if out != "ingester-3: leave requested (via "+leaverAddr+")\n" {
		t.Errorf("stdout %q", out)
	}
	if n := len(entry.callsOf("Leave")); n != 0 {
		t.Errorf("-addr got %d Leave calls", n)
	}
	if reqs := leaver.callsOf("Leave"); len(reqs) != 1 || reqs[0].(*ringpb.LeaveRequest).GetId() != "ingester-3" {
		t.Errorf("the member got %v", reqs)
	}
	if n := len(entry.callsOf("GetRing")); n != 1 {
		t.Errorf("%d GetRing calls to -addr, want 1", n)
	}
}

// A member that does not answer cannot leave (it hands over its own data): say so, and how to
// forget a dead one.
func TestLeave_MemberUnreachable(t *testing.T) {
	f := newFake()
	addr := serve(t, f)
	dead := closedAddr(t)
	f.setGRPCAddr("ingester-3", dead)
	code, out, errOut := runCLI(t, nil, "-addr", addr, "leave", "ingester-3")
	mustCode(t, 1, code, out, errOut)
	want := "ringctl: leave: cannot reach member ingester-3 at " + dead + ", its gRPC address in the ring: connection refused; " +
		"a member leaves by handing over its own data, so it must be running (to forget a dead member: ringctl remove ingester-3)\n"
	if errOut != want {
		t.Errorf("stderr %q, want %q", errOut, want)
	}
	if n := len(f.callsOf("Leave")); n != 0 {
		t.Errorf("-addr got %d Leave calls", n)
	}
}

// Under TLS the leave reaches the member with the operator's identity, and only if the node at
// the member's address proves to be that member.
func TestLeave_UnderTLSReachesTheMemberAsTheOperator(t *testing.T) {
	p := newPKI(t)
	entry, leaver := newFake(), newFake()
	entryAddr := serveTLS(t, entry, p, "ingester-1")
	leaverAddr := serveTLS(t, leaver, p, "ingester-3")
	entry.setGRPCAddr("ingester-3", leaverAddr)
	args := append([]string{"-addr", entryAddr, "leave", "ingester-3", "-wait=false"}, p.tlsArgs(t, "operator", p.operator)...)
	code, out, errOut := runCLI(t, nil, args...)
	mustCode(t, 0, code, out, errOut)
	if got := leaver.callsOf("Leave"); len(got) != 1 || leaver.callers[0] != "operator operator" {
		t.Errorf("the member got %d Leave calls from %q", len(got), leaver.callers)
	}

	// The ring says ingester-4 is at the leaver's address: the certificate there says otherwise.
	entry.setGRPCAddr("ingester-4", leaverAddr)
	args[3] = "ingester-4"
	code, out, errOut = runCLI(t, nil, args...)
	mustCode(t, 1, code, out, errOut)
	if !strings.Contains(errOut, `the server presented the certificate of member "ingester-3", not of "ingester-4"`) {
		t.Errorf("stderr %q", errOut)
	}
}

// closedAddr is a loopback address nobody listens on.
func closedAddr(t *testing.T) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close()
	return addr
}
