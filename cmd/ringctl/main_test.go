package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/raftingest/raftingest/auth"
	"github.com/raftingest/raftingest/ringpb"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeRing is a ringpb.RingServer that records every request and answers with canned responses or
// with the gRPC error set for the method. GetRing walks through rings, repeating the last one, so
// a test can script how the ring changes between polls.
type fakeRing struct {
	ringpb.UnimplementedRingServer

	mu       sync.Mutex
	calls    []string // method names in call order
	reqs     []any
	status   *ringpb.StatusResponse
	rings    []*ringpb.GetRingResponse
	ringIdx  int
	join     *ringpb.JoinResponse
	remove   *ringpb.RemovePeerResponse
	transfer *ringpb.TransferLeadershipResponse
	errs     map[string]error // method -> error to return
	queued   map[string][]error
	block    chan struct{} // when set, every call waits for it (or for the caller to give up)

	// auth, when set, is the server's Authority: callers records each call's principal, and with
	// operatorOnly every call but a ring or status read needs an operator's certificate.
	auth         *auth.Authority
	operatorOnly bool
	callers      []string

	// failGetRingAfter > 0 makes GetRing return failGetRing once it has answered that many times.
	failGetRingAfter int
	failGetRing      error
}

func (f *fakeRing) record(ctx context.Context, method string, req any) error {
	f.mu.Lock()
	f.calls = append(f.calls, method)
	f.reqs = append(f.reqs, req)
	caller := f.auth.Caller(ctx)
	f.callers = append(f.callers, caller.String())
	err := f.errs[method]
	if q := f.queued[method]; len(q) > 0 {
		err, f.queued[method] = q[0], q[1:]
	}
	block := f.block
	f.mu.Unlock()
	if err == nil && f.operatorOnly && method != "GetRing" && method != "Status" && caller.Kind != auth.Operator {
		return f.auth.Deny(caller, auth.RightOperator, strings.ToLower(method))
	}
	if block != nil {
		select {
		case <-block:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return err
}

func (f *fakeRing) Status(ctx context.Context, r *ringpb.StatusRequest) (*ringpb.StatusResponse, error) {
	if err := f.record(ctx, "Status", r); err != nil {
		return nil, err
	}
	return f.status, nil
}

func (f *fakeRing) GetRing(ctx context.Context, r *ringpb.GetRingRequest) (*ringpb.GetRingResponse, error) {
	if err := f.record(ctx, "GetRing", r); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.failGetRingAfter > 0 && f.ringIdx >= f.failGetRingAfter {
		return nil, f.failGetRing
	}
	resp := f.rings[min(f.ringIdx, len(f.rings)-1)]
	f.ringIdx++
	return resp, nil
}

func (f *fakeRing) Join(ctx context.Context, r *ringpb.JoinRequest) (*ringpb.JoinResponse, error) {
	if err := f.record(ctx, "Join", r); err != nil {
		return nil, err
	}
	return f.join, nil
}

func (f *fakeRing) RemovePeer(ctx context.Context, r *ringpb.RemovePeerRequest) (*ringpb.RemovePeerResponse, error) {
	if err := f.record(ctx, "RemovePeer", r); err != nil {
		return nil, err
	}
	return f.remove, nil
}

func (f *fakeRing) TransferLeadership(ctx context.Context, r *ringpb.TransferLeadershipRequest) (*ringpb.TransferLeadershipResponse, error) {
	if err := f.record(ctx, "TransferLeadership", r); err != nil {
		return nil, err
	}
	return f.transfer, nil
}

func (f *fakeRing) Leave(ctx context.Context, r *ringpb.LeaveRequest) (*ringpb.LeaveResponse, error) {
	if err := f.record(ctx, "Leave", r); err != nil {
		return nil, err
	}
	return &ringpb.LeaveResponse{}, nil
}

func (f *fakeRing) setErr(method string, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.errs == nil {
		f.errs = map[string]error{}
	}
	f.errs[method] = err
}

// queue makes the next calls of method fail with errs, in order, before errs[method] applies.
func (f *fakeRing) queue(method string, errs ...error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.queued == nil {
		f.queued = map[string][]error{}
	}
	f.queued[method] = append(f.queued[method], errs...)
}

// setGRPCAddr points member id, in every ring the fake answers, at addr: a leave asks the
// member itself, at its address in the ring.
func (f *fakeRing) setGRPCAddr(id, addr string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, r := range f.rings {
		for _, m := range r.GetMembers() {
			if m.GetId() == id {
				m.GrpcAddr = addr
			}
		}
	}
}

func (f *fakeRing) callsOf(method string) []any {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []any
	for i, m := range f.calls {
		if m == method {
			out = append(out, f.reqs[i])
		}
	}
	return out
}

const (
	ringTime = int64(1_700_000_100_000)
	q        = uint32(1 << 30)
)

func member(id string, st ringpb.State, hbAgeMs int64, peer string, tokens ...uint32) *ringpb.Member {
	n := id[len(id)-1:]
	return &ringpb.Member{
		Id: id, State: st, Tokens: tokens, HandoverPeer: peer, Zone: "zone-" + n,
		RaftAddr: "127.0.0.1:700" + n, GrpcAddr: "127.0.0.1:900" + n, HttpAddr: "127.0.0.1:800" + n,
		RegisteredMs: ringTime - 3_600_000, HeartbeatMs: ringTime - hbAgeMs,
	}
}

// cannedRing: ingester-1 owns half the space, ingester-2 is silent past the 30 s timeout, ingester-3
// is LEAVING and hands over to the JOINING ingester-4.
func cannedRing() *ringpb.GetRingResponse {
	return &ringpb.GetRingResponse{
		TimeMs: ringTime, AppliedIndex: 42, HeartbeatTimeoutMs: 30_000,
		CompactorLease: &ringpb.CompactorLease{Holder: "ingester-1", Epoch: 2, ExpiresMs: ringTime + 45_000},
		Members: []*ringpb.Member{
			member("ingester-1", ringpb.State_ACTIVE, 1_500, "", q, 3*q),
			member("ingester-2", ringpb.State_ACTIVE, 60_000, "", 2*q),
			member("ingester-3", ringpb.State_LEAVING, 0, "ingester-4", 0),
			member("ingester-4", ringpb.State_JOINING, 2_000, "ingester-3"),
		},
	}
}

func newFake() *fakeRing {
	return &fakeRing{
		status: &ringpb.StatusResponse{
			Id: "ingester-1", State: "Leader", LeaderId: "ingester-1", LeaderAddress: "127.0.0.1:7001",
			Term: 7, CommitIndex: 42, AppliedIndex: 41, LastLogIndex: 43, LastSnapshotIndex: 30,
			Servers: []*ringpb.Server{
				{Id: "ingester-1", Address: "127.0.0.1:7001", Voter: true, LastContactMs: -1},
				{Id: "ingester-2", Address: "127.0.0.1:7002", Voter: true, LastContactMs: 12},
				{Id: "ingester-4", Address: "127.0.0.1:7004", Voter: false, LastContactMs: 250},
			},
		},
		rings:    []*ringpb.GetRingResponse{cannedRing()},
		join:     &ringpb.JoinResponse{Index: 17, Voter: true},
		remove:   &ringpb.RemovePeerResponse{Index: 18},
		transfer: &ringpb.TransferLeadershipResponse{NewLeaderId: "ingester-2"},
	}
}

// serve starts a real gRPC server on 127.0.0.1:0 and returns its address.
func serve(t *testing.T, f *fakeRing) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer()
	ringpb.RegisterRingServer(s, f)
	go func() { _ = s.Serve(lis) }()
	t.Cleanup(s.Stop)
	return lis.Addr().String()
}

// runCLI runs the CLI with an empty environment (the caller's RINGCTL_ADDR must not leak in) and a
// fast leave poll.
func runCLI(t *testing.T, env map[string]string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	c := &cli{stdout: &out, stderr: &errb, getenv: func(k string) string { return env[k] }, poll: 10 * time.Millisecond}
	code = c.run(args)
	return code, out.String(), errb.String()
}

func mustCode(t *testing.T, want, got int, stdout, stderr string) {
	t.Helper()
	if got != want {
		t.Fatalf("exit %d, want %d\nstdout:\n%s\nstderr:\n%s", got, want, stdout, stderr)
	}
}

func decodeObject(t *testing.T, s string) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(s), &m); err != nil {
		t.Fatalf("not a JSON object: %v\n%s", err, s)
	}
	return m
}

func keys(m map[string]any) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// field returns the value after "key:" on the line that starts with it, spaces collapsed.
func field(t *testing.T, out, key string) string {
	t.Helper()
	for _, line := range strings.Split(out, "\n") {
		if v, ok := strings.CutPrefix(line, key+":"); ok {
			return strings.Join(strings.Fields(v), " ")
		}
	}
	t.Fatalf("no %q line in:\n%s", key, out)
	return ""
}

// row returns the whitespace-separated cells of the table line whose first cell is id.
func row(t *testing.T, out, id string) []string {
	t.Helper()
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); len(f) > 0 && f[0] == id {
			return f
		}
	}
	t.Fatalf("no row %q in:\n%s", id, out)
	return nil
}

func TestStatus_Text(t *testing.T) {
	addr := serve(t, newFake())
	code, out, errOut := runCLI(t, nil, "-addr", addr, "status")
	mustCode(t, 0, code, out, errOut)
	t.Logf("output:\n%s", out)
	for key, want := range map[string]string{
		"id": "ingester-1", "raft state": "Leader", "leader": "ingester-1 (127.0.0.1:7001)", "term": "7",
		"commit index": "42", "applied index": "41", "last log index": "43", "last snapshot index": "30",
		"compactor": "ingester-1 (epoch 2, lease expires in 45s)",
	} {
		if got := field(t, out, key); got != want {
			t.Errorf("%s: %q, want %q", key, got, want)
		}
	}
	for id, want := range map[string][]string{
		"SERVER":     {"SERVER", "ADDRESS", "SUFFRAGE", "LAST", "CONTACT"},
		"ingester-1": {"ingester-1", "127.0.0.1:7001", "voter", "leader"},
		"ingester-2": {"ingester-2", "127.0.0.1:7002", "voter", "12ms", "ago"},
		"ingester-4": {"ingester-4", "127.0.0.1:7004", "non-voter", "250ms", "ago"},
	} {
		if got := row(t, out, id); !slices.Equal(got, want) {
			t.Errorf("row %s: %q, want %q", id, got, want)
		}
	}
}

func TestStatus_JSON(t *testing.T) {
	addr := serve(t, newFake())
	code, out, errOut := runCLI(t, nil, "status", "-addr", addr, "-o", "json")
	mustCode(t, 0, code, out, errOut)
	var got statusJSON
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatal(err)
	}
	m := decodeObject(t, out)
	wantKeys := []string{"applied_index", "commit_index", "compactor", "id", "last_log_index", "last_snapshot_index",
		"leader", "leader_address", "servers", "state", "term"}
	if !slices.Equal(keys(m), wantKeys) {
		t.Errorf("keys %v, want %v", keys(m), wantKeys)
	}
	if c := got.Compactor; c == nil || c.Holder != "ingester-1" || c.Epoch != 2 || !c.Held || c.ExpiresInSeconds != 45 {
		t.Errorf("compactor %+v, want ingester-1 at epoch 2 for 45s more", c)
	}
	if m["leader"] != "ingester-1" || m["leader_address"] != "127.0.0.1:7001" || m["term"] != 7.0 ||
		m["commit_index"] != 42.0 || m["applied_index"] != 41.0 || m["last_log_index"] != 43.0 {
		t.Errorf("values: %v", m)
	}
	servers := m["servers"].([]any)
	if len(servers) != 3 {
		t.Fatalf("servers: %v", servers)
	}
	s2 := servers[1].(map[string]any)
	if !slices.Equal(keys(s2), []string{"address", "id", "last_contact_ms", "voter"}) ||
		s2["id"] != "ingester-2" || s2["address"] != "127.0.0.1:7002" || s2["voter"] != true || s2["last_contact_ms"] != 12.0 {
		t.Errorf("server 2: %v", s2)
	}
	if s3 := servers[2].(map[string]any); s3["voter"] != false {
		t.Errorf("ingester-4 is a non-voter: %v", s3)
	}
}

func TestRing_Text(t *testing.T) {
	f := newFake()
	addr := serve(t, f)
	code, out, errOut := runCLI(t, nil, "-addr", addr, "ring")
	mustCode(t, 0, code, out, errOut)
	t.Logf("output:\n%s", out)
	want := map[string][]string{
		"ID": {"ID", "STATE", "RAFT", "ADDRESS", "ZONE", "TOKENS", "OWNERSHIP", "HEARTBEAT", "HAND-OVER"},
		// The fake's Raft configuration: ingester-1 leads, ingester-2 votes, ingester-4 does not,
		// ingester-3 is no Raft server.
		"ingester-1": {"ingester-1", "ACTIVE", "leader", "127.0.0.1:9001", "zone-1", "2", "50.00%", "1.5s", "ago", "-"},
		"ingester-2": {"ingester-2", "UNHEALTHY", "voter", "127.0.0.1:9002", "zone-2", "1", "25.00%", "1m0s", "ago", "-"},
		"ingester-3": {"ingester-3", "LEAVING", "none", "127.0.0.1:9003", "zone-3", "1", "25.00%", "0s", "ago", "→", "ingester-4"},
		"ingester-4": {"ingester-4", "JOINING", "nonvoter", "127.0.0.1:9004", "zone-4", "0", "0.00%", "2s", "ago", "←", "ingester-3"},
	}
	for id, w := range want {
		if got := row(t, out, id); !slices.Equal(got, w) {
			t.Errorf("row %s: %q, want %q", id, got, w)
		}
	}
	if strings.Contains(out, "tokens of") {
		t.Errorf("tokens listed without -tokens")
	}
	if !strings.Contains(out, "\ncompactor: ingester-1 (epoch 2, lease expires in 45s)\n") {
		t.Errorf("ring does not say who compacts:\n%s", out)
	}
	if strings.Contains(out, "auto-forget") {
		t.Errorf("auto-forget verdicts from a node whose auto-forget is off:\n%s", out)
	}
	if reqs := f.callsOf("GetRing"); len(reqs) != 1 || reqs[0].(*ringpb.GetRingRequest).GetLinearizable() {
		t.Errorf("want one local (non-linearizable) read, got %v", reqs)
	}

	code, out, errOut = runCLI(t, nil, "-addr", addr, "ring", "-tokens", "-linearizable")
	mustCode(t, 0, code, out, errOut)
	if !strings.Contains(out, "tokens of ingester-1 (2):\n1073741824 3221225472\n") ||
		!strings.Contains(out, "tokens of ingester-4 (0):\n\n") {
		t.Errorf("-tokens output:\n%s", out)
	}
	if reqs := f.callsOf("GetRing"); len(reqs) != 2 || !reqs[1].(*ringpb.GetRingRequest).GetLinearizable() {
		t.Errorf("-linearizable not sent: %v", reqs)
	}
}

func TestRing_JSON(t *testing.T) {
	addr := serve(t, newFake())
	// Global flags after the command, in any order.
	code, out, errOut := runCLI(t, nil, "ring", "-o", "json", "-addr", addr)
	mustCode(t, 0, code, out, errOut)
	m := decodeObject(t, out)
	if !slices.Equal(keys(m), []string{"compactor", "heartbeat_timeout_seconds", "members", "raft_only", "time_ms"}) {
		t.Errorf("top-level keys %v", keys(m))
	}
	if c, _ := m["compactor"].(map[string]any); c["holder"] != "ingester-1" || c["epoch"] != 2.0 || c["held"] != true {
		t.Errorf("compactor %v", m["compactor"])
	}
	if m["time_ms"] != float64(ringTime) || m["heartbeat_timeout_seconds"] != 30.0 {
		t.Errorf("time/timeout: %v %v", m["time_ms"], m["heartbeat_timeout_seconds"])
	}
	members := m["members"].([]any)
	if len(members) != 4 {
		t.Fatalf("members: %v", members)
	}
	type want struct {
		state     string
		healthy   bool
		tokens    []any
		ownership float64
		age       float64
		peer      string
	}
	for i, w := range []want{
		{"ACTIVE", true, []any{float64(q), float64(3 * q)}, 0.5, 1.5, ""},
		{"UNHEALTHY", false, []any{float64(2 * q)}, 0.25, 60, ""},
		{"LEAVING", true, []any{0.0}, 0.25, 0, "ingester-4"},
		{"JOINING", true, []any{}, 0, 2, "ingester-3"},
	} {
		g := members[i].(map[string]any)
		if g["state"] != w.state || g["healthy"] != w.healthy || !slices.Equal(g["tokens"].([]any), w.tokens) ||
			g["ownership"] != w.ownership || g["heartbeat_age_seconds"] != w.age || g["handover_peer"] != w.peer {
			t.Errorf("member %d: %v, want %+v", i, g, w)
		}
	}
	if g := members[1].(map[string]any); g["ring_state"] != "ACTIVE" || g["id"] != "ingester-2" || g["grpc_addr"] != "127.0.0.1:9002" {
		t.Errorf("ingester-2: %v", g)
	}
	for i, role := range []string{"leader", "voter", "none", "nonvoter"} {
		if g := members[i].(map[string]any); g["raft_role"] != role {
			t.Errorf("member %d: raft_role %v, want %s", i, g["raft_role"], role)
		}
	}
	if ro, ok := m["raft_only"].([]any); !ok || len(ro) != 0 {
		t.Errorf("raft_only %v, want an empty list (every Raft server is a ring member)", m["raft_only"])
	}
}

// A Raft server that is not a ring member (a joiner before it registers) is listed under the table;
// a status that fails leaves the roles unknown but the ring shown.
func TestRing_RaftOnlyServersAndUnknownRoles(t *testing.T) {
	f := newFake()
	f.status.Servers = append(f.status.Servers, &ringpb.Server{Id: "ingester-9", Address: "127.0.0.1:7009", Voter: false, LastContactMs: 5})
	addr := serve(t, f)
	code, out, errOut := runCLI(t, nil, "-addr", addr, "ring")
	mustCode(t, 0, code, out, errOut)
	if !strings.Contains(out, "\nraft servers that are not ring members: ingester-9 (nonvoter)\n") {
		t.Errorf("output:\n%s", out)
	}
	f.setErr("Status", status.Error(codes.Unavailable, "raftfsm: shutting down"))
	code, out, errOut = runCLI(t, nil, "-addr", addr, "ring")
	mustCode(t, 0, code, out, errOut)
	if got := row(t, out, "ingester-1"); got[2] != "-" {
		t.Errorf("row ingester-1 %q: want the Raft role unknown (-)", got)
	}
	if !strings.Contains(errOut, "Raft roles unknown") {
		t.Errorf("stderr %q", errOut)
	}
}

func TestJoin(t *testing.T) {
	f := newFake()
	addr := serve(t, f)
	// -voter after the positional arguments. Something must listen at the new server's address.
	raft5, raft6 := listen(t), listen(t)
	code, out, errOut := runCLI(t, nil, "-addr", addr, "join", "ingester-5", raft5, "-voter")
	mustCode(t, 0, code, out, errOut)
	if want := "added ingester-5 (raft " + raft5 + ") as voter at index 17\n"; out != want {
		t.Errorf("output %q, want %q", out, want)
	}
	req := f.callsOf("Join")[0].(*ringpb.JoinRequest)
	if req.GetId() != "ingester-5" || req.GetRaftAddr() != raft5 || !req.GetVoter() || req.GetHops() != 0 {
		t.Errorf("request %v", req)
	}

	f.join = &ringpb.JoinResponse{Index: 19, Voter: false}
	code, out, errOut = runCLI(t, nil, "join", "-o", "json", "-addr", addr, "ingester-6", raft6)
	mustCode(t, 0, code, out, errOut)
	m := decodeObject(t, out)
	if !slices.Equal(keys(m), []string{"changed", "id", "index", "raft_addr", "voter"}) || m["id"] != "ingester-6" ||
		m["raft_addr"] != raft6 || m["voter"] != false || m["index"] != 19.0 || m["changed"] != true {
		t.Errorf("json %v", m)
	}
	if req := f.callsOf("Join")[1].(*ringpb.JoinRequest); req.GetVoter() {
		t.Errorf("voter sent without -voter")
	}
}

func TestRemoveAndTransferLeadership(t *testing.T) {
	f := newFake()
	addr := serve(t, f)
	code, out, errOut := runCLI(t, nil, "-addr", addr, "remove", "ingester-2")
	mustCode(t, 0, code, out, errOut)
	if want := "removed ingester-2 from the ring and the Raft configuration at index 18\n"; out != want {
		t.Errorf("remove: %q", out)
	}
	if req := f.callsOf("RemovePeer")[0].(*ringpb.RemovePeerRequest); req.GetId() != "ingester-2" {
		t.Errorf("remove request %v", req)
	}
	code, out, errOut = runCLI(t, nil, "-addr", addr, "-o", "json", "remove", "ingester-2")
	mustCode(t, 0, code, out, errOut)
	if m := decodeObject(t, out); !slices.Equal(keys(m), []string{"id", "index"}) || m["id"] != "ingester-2" || m["index"] != 18.0 {
		t.Errorf("remove json %v", m)
	}

	code, out, errOut = runCLI(t, nil, "-addr", addr, "transfer-leadership")
	mustCode(t, 0, code, out, errOut)
	if out != "leadership transferred to ingester-2 (from ingester-1)\n" {
		t.Errorf("transfer: %q", out)
	}
	f.transfer = &ringpb.TransferLeadershipResponse{NewLeaderId: "ingester-4"}
	code, out, errOut = runCLI(t, nil, "-addr", addr, "transfer-leadership", "ingester-4", "-o", "json")
	mustCode(t, 0, code, out, errOut)
	if m := decodeObject(t, out); !slices.Equal(keys(m), []string{"changed", "new_leader", "previous_leader"}) ||
		m["new_leader"] != "ingester-4" || m["previous_leader"] != "ingester-1" || m["changed"] != true {
		t.Errorf("transfer json %v", m)
	}
	reqs := f.callsOf("TransferLeadership")
	if reqs[0].(*ringpb.TransferLeadershipRequest).GetId() != "" || reqs[1].(*ringpb.TransferLeadershipRequest).GetId() != "ingester-4" {
		t.Errorf("transfer requests %v", reqs)
	}
}

// leaveScript is the ring as a leave proceeds: ACTIVE (the read that finds the leaver's address),
// ACTIVE, LEAVING, handing over, still handing over (no new line expected), gone.
func leaveScript() []*ringpb.GetRingResponse {
	step := func(ms ...*ringpb.Member) *ringpb.GetRingResponse {
		return &ringpb.GetRingResponse{TimeMs: ringTime, HeartbeatTimeoutMs: 30_000, Members: ms}
	}
	one := member("ingester-1", ringpb.State_ACTIVE, 0, "", q)
	return []*ringpb.GetRingResponse{
		step(one, member("ingester-3", ringpb.State_ACTIVE, 0, "", 3*q), member("ingester-4", ringpb.State_PENDING, 0, "")),
		step(one, member("ingester-3", ringpb.State_ACTIVE, 0, "", 3*q), member("ingester-4", ringpb.State_PENDING, 0, "")),
		step(one, member("ingester-3", ringpb.State_LEAVING, 0, "", 3*q), member("ingester-4", ringpb.State_PENDING, 0, "")),
		step(one, member("ingester-3", ringpb.State_LEAVING, 0, "ingester-4", 3*q), member("ingester-4", ringpb.State_JOINING, 0, "ingester-3")),
		step(one, member("ingester-3", ringpb.State_LEAVING, 0, "ingester-4", 3*q), member("ingester-4", ringpb.State_JOINING, 0, "ingester-3")),
		step(one, member("ingester-4", ringpb.State_ACTIVE, 0, "", 3*q)),
	}
}

func TestLeave_FollowsProgressUntilGone(t *testing.T) {
	f := newFake()
	f.rings = leaveScript()
	addr := serve(t, f)
	f.setGRPCAddr("ingester-3", addr)
	code, out, errOut := runCLI(t, nil, "-addr", addr, "leave", "ingester-3")
	mustCode(t, 0, code, out, errOut)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	want := []string{
		"ingester-3: leave requested (via " + addr + ")",
		"ingester-3: ACTIVE",
		"ingester-3: LEAVING",
		"ingester-3: handing over to ingester-4",
		"ingester-3: left the ring after",
	}
	if len(lines) != len(want) {
		t.Fatalf("lines:\n%s", out)
	}
	for i, w := range want {
		if !strings.HasPrefix(lines[i], w) {
			t.Errorf("line %d: %q, want prefix %q", i, lines[i], w)
		}
	}
	if reqs := f.callsOf("Leave"); len(reqs) != 1 || reqs[0].(*ringpb.LeaveRequest).GetId() != "ingester-3" {
		t.Errorf("Leave requests %v (sent exactly once)", reqs)
	}
	if n := len(f.callsOf("GetRing")); n != 6 {
		t.Errorf("%d GetRing calls, want 6 (one per scripted step)", n)
	}
}

func TestLeave_JSONEvents(t *testing.T) {
	f := newFake()
	f.rings = leaveScript()
	addr := serve(t, f)
	f.setGRPCAddr("ingester-3", addr)
	code, out, errOut := runCLI(t, nil, "-addr", addr, "-o", "json", "leave", "ingester-3")
	mustCode(t, 0, code, out, errOut)
	var events []string
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		m := decodeObject(t, line)
		if m["member"] != "ingester-3" {
			t.Errorf("event for %v", m["member"])
		}
		if _, ok := m["elapsed_seconds"]; !ok {
			t.Errorf("no elapsed_seconds in %s", line)
		}
		ev := m["event"].(string)
		if s, ok := m["state"]; ok {
			ev += ":" + s.(string)
		}
		if p, ok := m["handover_peer"]; ok {
			ev += ">" + p.(string)
		}
		events = append(events, ev)
	}
	want := []string{"requested", "state:ACTIVE", "state:LEAVING", "handover:LEAVING>ingester-4", "removed"}
	if !slices.Equal(events, want) {
		t.Errorf("events %v, want %v", events, want)
	}
}

func TestLeave_NoWaitReturnsAfterRequest(t *testing.T) {
	f := newFake()
	addr := serve(t, f)
	f.setGRPCAddr("ingester-3", addr)
	code, out, errOut := runCLI(t, nil, "-addr", addr, "leave", "ingester-3", "-wait=false")
	mustCode(t, 0, code, out, errOut)
	if out != "ingester-3: leave requested (via "+addr+")\n" {
		t.Errorf("output %q", out)
	}
	if n := len(f.callsOf("GetRing")); n != 1 {
		t.Errorf("-wait=false read the ring %d times, want once (to find the member's address)", n)
	}
}

func TestLeave_TimeoutWhileStillInRing(t *testing.T) {
	f := newFake() // ingester-3 stays LEAVING forever
	addr := serve(t, f)
	f.setGRPCAddr("ingester-3", addr)
	start := time.Now()
	code, out, errOut := runCLI(t, nil, "-addr", addr, "leave", "ingester-3", "-timeout", "200ms")
	mustCode(t, 1, code, out, errOut)
	if !strings.Contains(errOut, "ringctl: leave: ingester-3 is still in the ring after 200ms (LEAVING, hand-over peer ingester-4)") {
		t.Errorf("stderr %q", errOut)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("took %s with -timeout 200ms", d)
	}
}

// The node we asked may be the one leaving: when it stops answering, follow from another member.
func TestLeave_FollowsFromAnotherNodeWhenTheFirstStops(t *testing.T) {
	other := newFake()
	otherAddr := serve(t, other)
	other.rings = []*ringpb.GetRingResponse{{TimeMs: ringTime, Members: []*ringpb.Member{member("ingester-1", ringpb.State_ACTIVE, 0, "", q)}}}

	leaving := newFake()
	m1 := member("ingester-1", ringpb.State_ACTIVE, 0, "", q)
	m1.GrpcAddr = otherAddr
	leaving.rings = []*ringpb.GetRingResponse{{TimeMs: ringTime, Members: []*ringpb.Member{m1, member("ingester-3", ringpb.State_LEAVING, 0, "", 3*q)}}}
	addr := serve(t, leaving)
	leaving.setGRPCAddr("ingester-3", addr)
	// After the read that finds it and the first poll, the leaving node refuses, as a node does
	// while it shuts down.
	leaving.failGetRingAfter = 2
	leaving.failGetRing = status.Error(codes.Unavailable, "transport: the node is shutting down")

	code, out, errOut := runCLI(t, nil, "-addr", addr, "leave", "ingester-3", "-timeout", "10s")
	mustCode(t, 0, code, out, errOut)
	if !strings.Contains(errOut, "following from "+otherAddr) {
		t.Errorf("stderr does not say where it follows from: %q", errOut)
	}
	if !strings.Contains(out, "ingester-3: left the ring") {
		t.Errorf("stdout %q", out)
	}
}

func TestUsageErrors_Exit2AndNameTheProblem(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "Usage:"},
		{[]string{"frobnicate"}, `ringctl: unknown command "frobnicate"`},
		{[]string{"ring", "-bogus"}, "ringctl: ring: flag provided but not defined: -bogus"},
		{[]string{"-bogus", "ring"}, "ringctl: flag provided but not defined: -bogus"},
		{[]string{"join", "ingester-5"}, "ringctl: join: missing RAFT_ADDR (usage: ringctl join ID RAFT_ADDR)"},
		{[]string{"join"}, "ringctl: join: missing ID"},
		{[]string{"join", "ingester-5", "foo"}, `ringctl: join: RAFT_ADDR "foo" is not host:port`},
		{[]string{"join", "bad id", "127.0.0.1:7005"}, `ringctl: join: ID "bad id" is not a member id`},
		{[]string{"join", "a", "127.0.0.1:1", "extra"}, `ringctl: join: unexpected argument "extra"`},
		{[]string{"leave"}, "ringctl: leave: missing ID"},
		{[]string{"remove", "a", "b"}, `ringctl: remove: unexpected argument "b"`},
		{[]string{"remove", "<x>"}, `ringctl: remove: ID "<x>" is not a member id`},
		{[]string{"status", "now"}, `ringctl: status: unexpected argument "now"`},
		{[]string{"transfer-leadership", "a", "b"}, `ringctl: transfer-leadership: unexpected argument "b"`},
		{[]string{"ring", "-o", "yaml"}, `ringctl: ring: -o "yaml": want text or json`},
		{[]string{"-addr", "nowhere", "status"}, `ringctl: status: -addr "nowhere" is not host:port`},
		{[]string{"status", "-timeout", "soon"}, `ringctl: status: invalid value "soon" for flag -timeout: want a duration`},
		{[]string{"status", "-timeout", "-1s"}, `invalid value "-1s" for flag -timeout: must be positive`},
		{[]string{"help", "nope"}, `ringctl: help: unknown command "nope"`},
	} {
		t.Run(strings.Join(tc.args, "_"), func(t *testing.T) {
			// Port 1 is never served: a usage error must not even try to connect.
			code, out, errOut := runCLI(t, map[string]string{addrEnv: "127.0.0.1:1"}, tc.args...)
			mustCode(t, 2, code, out, errOut)
			if !strings.Contains(errOut, tc.want) {
				t.Errorf("stderr %q does not contain %q", errOut, tc.want)
			}
			if strings.Contains(errOut, "cannot reach") {
				t.Errorf("a usage error tried to connect: %q", errOut)
			}
		})
	}
}

func TestServerErrors_Exit1WithServerMessage(t *testing.T) {
	f := newFake()
	addr := serve(t, f)
	msg := "ringstate: unknown member: remove ingester-9"
	for _, tc := range []struct {
		method string
		args   []string
	}{
		{"Status", []string{"status"}},
		{"GetRing", []string{"ring"}},
		{"Join", []string{"join", "ingester-9", "127.0.0.1:7009", "-force"}},
		{"Leave", []string{"leave", "ingester-9"}},
		{"RemovePeer", []string{"remove", "ingester-9"}},
		{"TransferLeadership", []string{"transfer-leadership"}},
	} {
		t.Run(tc.method, func(t *testing.T) {
			f.setErr(tc.method, status.Error(codes.NotFound, msg))
			code, out, errOut := runCLI(t, nil, append([]string{"-addr", addr}, tc.args...)...)
			mustCode(t, 1, code, out, errOut)
			want := "ringctl: " + tc.args[0] + ": " + msg + " (NotFound from " + addr + ")\n"
			if errOut != want {
				t.Errorf("stderr %q, want %q", errOut, want)
			}
			if n := len(f.callsOf(tc.method)); n != 1 {
				t.Errorf("%s called %d times: admin commands never retry", tc.method, n)
			}
			f.setErr(tc.method, nil)
			f.mu.Lock()
			f.calls, f.reqs = nil, nil
			f.mu.Unlock()
		})
	}
}

// A server-sent Unavailable (no leader) is reported as the server's answer, sent once, not as an
// unreachable node.
func TestServerUnavailable_NotRetried(t *testing.T) {
	f := newFake()
	addr := serve(t, f)
	f.setErr("RemovePeer", status.Error(codes.Unavailable, "raftfsm: no leader"))
	code, out, errOut := runCLI(t, nil, "-addr", addr, "remove", "ingester-2")
	mustCode(t, 1, code, out, errOut)
	if !strings.Contains(errOut, "raftfsm: no leader (Unavailable from "+addr+")") {
		t.Errorf("stderr %q", errOut)
	}
	if n := len(f.callsOf("RemovePeer")); n != 1 {
		t.Errorf("RemovePeer sent %d times", n)
	}
}

func TestUnreachable_Exit1FastWithClearMessage(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close() // nobody listens there now
	for _, args := range [][]string{{"status"}, {"ring", "-o", "json"}, {"remove", "x"}, {"leave", "x"}} {
		start := time.Now()
		code, out, errOut := runCLI(t, nil, append([]string{"-addr", addr}, args...)...)
		mustCode(t, 1, code, out, errOut)
		want := "ringctl: " + args[0] + ": cannot reach " + addr + ": connection refused (is the node running? -addr)\n"
		if errOut != want {
			t.Errorf("stderr %q, want %q", errOut, want)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("%s took %s to fail against a closed port", args[0], d)
		}
	}
}

func TestDeadline_Exit1NamesTheTimeout(t *testing.T) {
	f := newFake()
	f.block = make(chan struct{})
	defer close(f.block)
	addr := serve(t, f)
	code, out, errOut := runCLI(t, nil, "-addr", addr, "-timeout", "100ms", "status")
	mustCode(t, 1, code, out, errOut)
	if !strings.Contains(errOut, "ringctl: status: no answer from "+addr+" within 100ms") {
		t.Errorf("stderr %q", errOut)
	}
}

func TestHelp(t *testing.T) {
	for _, args := range [][]string{{"help"}, {"-h"}, {"--help"}} {
		code, out, errOut := runCLI(t, nil, args...)
		mustCode(t, 0, code, out, errOut)
		for _, cmd := range commands {
			if !strings.Contains(out, "\n  "+cmd.name) || !strings.Contains(out, cmd.example) {
				t.Errorf("%v: usage lacks %s or its example", args, cmd.name)
			}
		}
	}
	for _, args := range [][]string{{"help", "join"}, {"join", "-h"}} {
		code, out, errOut := runCLI(t, nil, args...)
		mustCode(t, 0, code, out, errOut)
		if !strings.HasPrefix(out, "Usage: ringctl join ID RAFT_ADDR") || !strings.Contains(out, "-voter") {
			t.Errorf("%v:\n%s", args, out)
		}
	}
}

func TestAddr_EnvOverridesDefaultAndFlagOverridesEnv(t *testing.T) {
	addr := serve(t, newFake())
	code, out, errOut := runCLI(t, map[string]string{addrEnv: addr}, "status", "-o", "json")
	mustCode(t, 0, code, out, errOut)
	code, out, errOut = runCLI(t, map[string]string{addrEnv: "127.0.0.1:1"}, "-addr", addr, "status")
	mustCode(t, 0, code, out, errOut)
}

// run is the real entry point main calls; one pass through it with the process environment.
func TestRun_EntryPoint(t *testing.T) {
	addr := serve(t, newFake())
	t.Setenv(addrEnv, addr)
	var out, errb bytes.Buffer
	if code := run([]string{"transfer-leadership"}, &out, &errb); code != 0 || out.String() != "leadership transferred to ingester-2 (from ingester-1)\n" {
		t.Errorf("exit %d, stdout %q, stderr %q", code, out.String(), errb.String())
	}
}

// TestRing_AutoForgetVerdicts: with the node's auto-forget on (its GetRing says after how long and
// its placement), ringctl ring says what auto-forget makes of each unhealthy member, in text and
// JSON.
func TestRing_AutoForgetVerdicts(t *testing.T) {
	f := newFake()
	resp := cannedRing()
	resp.Members = []*ringpb.Member{
		member("ingester-1", ringpb.State_ACTIVE, 1_500, "", q),
		member("ingester-2", ringpb.State_ACTIVE, 60_000, "", 2*q),
		member("ingester-3", ringpb.State_ACTIVE, 1_000, "", 3*q),
	}
	resp.AutoForgetAfterMs, resp.ReplicationFactor = 120_000, 3
	f.rings = []*ringpb.GetRingResponse{resp}
	addr := serve(t, f)
	code, out, errOut := runCLI(t, nil, "-addr", addr, "ring")
	mustCode(t, 0, code, out, errOut)
	if !strings.Contains(out, "\nauto-forget ingester-2: waits: heartbeat 60s old, forgotten after 120s\n") {
		t.Errorf("no auto-forget verdict for the silent member:\n%s", out)
	}
	code, out, errOut = runCLI(t, nil, "-addr", addr, "ring", "-o", "json")
	mustCode(t, 0, code, out, errOut)
	if !strings.Contains(out, `"auto_forget"`) || !strings.Contains(out, `"member": "ingester-2"`) {
		t.Errorf("json lacks the verdicts:\n%s", out)
	}
}
