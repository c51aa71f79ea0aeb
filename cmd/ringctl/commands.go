package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/raftingest/raftingest/ringpb"
	"github.com/raftingest/raftingest/ringstate"
	"github.com/raftingest/raftingest/ringview"
)

// statusJSON is `ringctl status -o json`. Field names are a scripting contract.
type statusJSON struct {
	ID                string       `json:"id"`
	State             string       `json:"state"`
	Leader            string       `json:"leader"`
	LeaderAddress     string       `json:"leader_address"`
	Term              uint64       `json:"term"`
	CommitIndex       uint64       `json:"commit_index"`
	AppliedIndex      uint64       `json:"applied_index"`
	LastLogIndex      uint64       `json:"last_log_index"`
	LastSnapshotIndex uint64       `json:"last_snapshot_index"`
	Servers           []serverJSON `json:"servers"`
	// Compactor is the compactor lease in the answering node's ring; null when it could not be read.
	Compactor *ringview.CompactorView `json:"compactor"`
}

type serverJSON struct {
	ID            string `json:"id"`
	Address       string `json:"address"`
	Voter         bool   `json:"voter"`
	LastContactMs int64  `json:"last_contact_ms"` // -1 when unknown
}

func (c *cli) status(o *options, _ []string) error {
	ctx, cancel := rpcContext(o)
	defer cancel()
	resp, _, err := call(ctx, o, o.addr, "", o.timeout.d, func(ctx context.Context, cl ringpb.RingClient) (*ringpb.StatusResponse, error) {
		return cl.Status(ctx, &ringpb.StatusRequest{})
	})
	if err != nil {
		return err
	}
	out := statusJSON{
		ID: resp.GetId(), State: resp.GetState(), Leader: resp.GetLeaderId(), LeaderAddress: resp.GetLeaderAddress(),
		Term: resp.GetTerm(), CommitIndex: resp.GetCommitIndex(), AppliedIndex: resp.GetAppliedIndex(),
		LastLogIndex: resp.GetLastLogIndex(), LastSnapshotIndex: resp.GetLastSnapshotIndex(),
		Servers: make([]serverJSON, 0, len(resp.GetServers())),
	}
	for _, s := range resp.GetServers() {
		out.Servers = append(out.Servers, serverJSON{ID: s.GetId(), Address: s.GetAddress(), Voter: s.GetVoter(), LastContactMs: s.GetLastContactMs()})
	}
	// Who compacts is ring state, not Raft status: read it from the same node's ring. A failure
	// here does not hide the Raft status the operator asked for.
	compactor := "unknown"
	if v, err := getView(ctx, o, o.addr, false, o.timeout.d); err != nil {
		compactor = fmt.Sprintf("unknown (reading the ring: %v)", err)
	} else {
		out.Compactor = &v.Compactor
		compactor = v.Compactor.Describe()
	}
	if o.output == "json" {
		return c.printJSON(out)
	}
	leader := "(none: no leader known)"
	if out.Leader != "" || out.LeaderAddress != "" {
		leader = fmt.Sprintf("%s (%s)", orDash(out.Leader), orDash(out.LeaderAddress))
	}
	tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "id:\t%s\n", out.ID)
	fmt.Fprintf(tw, "raft state:\t%s\n", out.State)
	fmt.Fprintf(tw, "leader:\t%s\n", leader)
	fmt.Fprintf(tw, "term:\t%d\n", out.Term)
	fmt.Fprintf(tw, "commit index:\t%d\n", out.CommitIndex)
	fmt.Fprintf(tw, "applied index:\t%d\n", out.AppliedIndex)
	fmt.Fprintf(tw, "last log index:\t%d\n", out.LastLogIndex)
	fmt.Fprintf(tw, "last snapshot index:\t%d\n", out.LastSnapshotIndex)
	fmt.Fprintf(tw, "compactor:\t%s\n", compactor)
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(c.stdout)
	tw = tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SERVER\tADDRESS\tSUFFRAGE\tLAST CONTACT")
	for _, s := range out.Servers {
		suffrage := "non-voter"
		if s.Voter {
			suffrage = "voter"
		}
		contact := "-"
		if s.LastContactMs >= 0 {
			contact = (time.Duration(s.LastContactMs) * time.Millisecond).String() + " ago"
		}
		if s.ID == out.Leader {
			contact = "leader"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", s.ID, s.Address, suffrage, contact)
	}
	return tw.Flush()
}

// getView fetches the ring from addr (or from the node it redirects to) and judges it with the
// node's own heartbeat timeout.
func getView(ctx context.Context, o *options, addr string, linearizable bool, timeout time.Duration) (ringview.View, error) {
	resp, addr, err := call(ctx, o, addr, "", timeout, func(ctx context.Context, cl ringpb.RingClient) (*ringpb.GetRingResponse, error) {
		return cl.GetRing(ctx, &ringpb.GetRingRequest{Linearizable: linearizable})
	})
	if err != nil {
		return ringview.View{}, err
	}
	r, err := ringpb.RingFromResponse(resp)
	if err != nil {
		return ringview.View{}, fmt.Errorf("%s sent a ring that breaks an invariant: %v", addr, err)
	}
	v := ringview.Build(r, resp.GetHeartbeatTimeoutMs())
	if after := resp.GetAutoForgetAfterMs(); after > 0 {
		v.WithAutoForget(r, ringstate.Placement{RF: int(resp.GetReplicationFactor()), ZoneAware: resp.GetZoneAware()},
			resp.GetHeartbeatTimeoutMs(), after)
	}
	return v, nil
}

func (c *cli) ring(o *options, _ []string) error {
	ctx, cancel := rpcContext(o)
	defer cancel()
	v, err := getView(ctx, o, o.addr, o.linearizable, o.timeout.d)
	if err != nil {
		return err
	}
	// The Raft roles come from the same node's status, a second read: a failure there does not
	// hide the ring the operator asked for, the roles are then shown as unknown.
	st, _, err := call(ctx, o, o.addr, "", o.timeout.d, func(ctx context.Context, cl ringpb.RingClient) (*ringpb.StatusResponse, error) {
		return cl.Status(ctx, &ringpb.StatusRequest{})
	})
	if err == nil && len(st.GetServers()) > 0 {
		servers := make([]ringview.RaftServer, len(st.GetServers()))
		for i, s := range st.GetServers() {
			servers[i] = ringview.RaftServer{ID: s.GetId(), Voter: s.GetVoter()}
		}
		v.WithRaft(st.GetLeaderId(), servers)
	} else if err != nil {
		fmt.Fprintf(c.stderr, "ringctl: ring: Raft roles unknown: %v\n", err)
	}
	if o.output == "json" {
		return c.printJSON(v)
	}
	tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tSTATE\tRAFT\tADDRESS\tZONE\tTOKENS\tOWNERSHIP\tHEARTBEAT\tHAND-OVER")
	for _, m := range v.Members {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%.2f%%\t%s ago\t%s\n", m.ID, m.State, orDash(m.RaftRole), orDash(m.GRPCAddr), orDash(m.Zone),
			m.NumTokens, m.Ownership*100, m.HeartbeatAge(), orDash(m.Handover()))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(v.RaftOnly) > 0 {
		parts := make([]string, len(v.RaftOnly))
		for i, s := range v.RaftOnly {
			parts[i] = fmt.Sprintf("%s (%s)", s.ID, s.Role)
		}
		fmt.Fprintf(c.stdout, "\nraft servers that are not ring members: %s\n", strings.Join(parts, ", "))
	}
	fmt.Fprintf(c.stdout, "\ncompactor: %s\n", v.Compactor.Describe())
	for _, f := range v.AutoForget {
		fmt.Fprintf(c.stdout, "auto-forget %s: %s\n", f.Member, f.Why)
	}
	if o.tokens {
		for _, m := range v.Members {
			toks := make([]string, len(m.Tokens))
			for i, t := range m.Tokens {
				toks[i] = fmt.Sprint(t)
			}
			fmt.Fprintf(c.stdout, "\ntokens of %s (%d):\n%s\n", m.ID, len(toks), strings.Join(toks, " "))
		}
	}
	return nil
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func (c *cli) join(o *options, args []string) error {
	id, raftAddr := args[0], args[1]
	if err := checkID("ID", id); err != nil {
		return err
	}
	if err := checkHostPort(raftAddr); err != nil {
		return usagef("RAFT_ADDR %q is not host:port", raftAddr)
	}
	ctx, cancel := rpcContext(o)
	defer cancel()
	// What the configuration holds now tells a repeated join (which changes nothing) from a new
	// server. A new server must answer at RAFT_ADDR: a voter nobody runs counts against the quorum
	// from the moment it is added, so a typo in the address could cost the cluster its majority.
	st, _, err := call(ctx, o, o.addr, "", o.timeout.d, func(ctx context.Context, cl ringpb.RingClient) (*ringpb.StatusResponse, error) {
		return cl.Status(ctx, &ringpb.StatusRequest{})
	})
	if err != nil {
		return err
	}
	var before *ringpb.Server
	for _, s := range st.GetServers() {
		if s.GetId() == id {
			before = s
		}
	}
	// The same id at another address is the leader's to refuse (the id is taken).
	if before == nil && !o.force {
		if err := probeRaftAddr(raftAddr, min(joinDialTimeout, o.timeout.d)); err != nil {
			return fmt.Errorf("nothing answers at %s (%v): start the node first (RAFT_ADDR is its -raft.addr), or pass -force if this machine cannot reach the nodes' Raft addresses", raftAddr, err)
		}
	}
	resp, _, err := call(ctx, o, o.addr, "", o.timeout.d, func(ctx context.Context, cl ringpb.RingClient) (*ringpb.JoinResponse, error) {
		return cl.Join(ctx, &ringpb.JoinRequest{Id: id, RaftAddr: raftAddr, Voter: o.voter})
	})
	if err != nil {
		return err
	}
	changed := before == nil || before.GetVoter() != resp.GetVoter()
	if o.output == "json" {
		return c.printJSON(struct {
			ID       string `json:"id"`
			RaftAddr string `json:"raft_addr"`
			Voter    bool   `json:"voter"`
			Index    uint64 `json:"index"`
			Changed  bool   `json:"changed"`
		}{id, raftAddr, resp.GetVoter(), resp.GetIndex(), changed})
	}
	kind := "non-voter"
	if resp.GetVoter() {
		kind = "voter"
	}
	switch {
	case !changed:
		_, err = fmt.Fprintf(c.stdout, "%s (raft %s) is already a %s; nothing changed\n", id, raftAddr, kind)
	case before != nil:
		_, err = fmt.Fprintf(c.stdout, "promoted %s (raft %s) to voter at index %d\n", id, raftAddr, resp.GetIndex())
	default:
		_, err = fmt.Fprintf(c.stdout, "added %s (raft %s) as %s at index %d\n", id, raftAddr, kind, resp.GetIndex())
	}
	return err
}

// probeRaftAddr checks that something accepts TCP connections at addr within timeout, dialling
// again every 100 ms: a node started a moment ago may not listen yet (a script that starts a node
// and joins it at once). It cannot tell a Raft port from any other listener; it catches the
// address nobody runs.
func probeRaftAddr(addr string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		conn, err := net.DialTimeout("tcp", addr, max(time.Until(deadline), 10*time.Millisecond))
		if err == nil {
			return conn.Close()
		}
		if time.Until(deadline) < 100*time.Millisecond {
			var op *net.OpError
			if errors.As(err, &op) && op.Err != nil {
				err = op.Err
			}
			return fmt.Errorf("%w, for %s", err, timeout)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (c *cli) remove(o *options, args []string) error {
	id := args[0]
	if err := checkID("ID", id); err != nil {
		return err
	}
	ctx, cancel := rpcContext(o)
	defer cancel()
	// A live member that is removed exits at once: its in-memory samples are neither handed over
	// nor flushed (other replicas keep their copies, but the member's own are gone), and its
	// tokens vanish without a successor. That is what leave is for; remove is for the dead.
	if !o.force {
		v, err := getView(ctx, o, o.addr, true, o.timeout.d)
		var unreachable *unreachableError
		if errors.As(err, &unreachable) {
			return err // -force would not help
		}
		if err != nil {
			return fmt.Errorf("cannot check whether %s is still alive: %w; pass -force to remove it without the check", id, err)
		}
		if m, ok := v.Member(id); ok && m.Healthy {
			return fmt.Errorf("%s is alive (%s, last heartbeat %s ago): removing it makes it exit without handing over or flushing its in-memory samples; "+
				"to take it out gracefully run 'ringctl leave %s'; to remove it anyway pass -force", id, m.State, m.HeartbeatAge(), id)
		}
	}
	resp, _, err := call(ctx, o, o.addr, "", o.timeout.d, func(ctx context.Context, cl ringpb.RingClient) (*ringpb.RemovePeerResponse, error) {
		return cl.RemovePeer(ctx, &ringpb.RemovePeerRequest{Id: id})
	})
	if err != nil {
		return err
	}
	if o.output == "json" {
		return c.printJSON(struct {
			ID    string `json:"id"`
			Index uint64 `json:"index"`
		}{id, resp.GetIndex()})
	}
	_, err = fmt.Fprintf(c.stdout, "removed %s from the ring and the Raft configuration at index %d\n", id, resp.GetIndex())
	return err
}

func (c *cli) transferLeadership(o *options, args []string) error {
	var id string
	if len(args) == 1 {
		id = args[0]
		if err := checkID("ID", id); err != nil {
			return err
		}
	}
	ctx, cancel := rpcContext(o)
	defer cancel()
	st, _, err := call(ctx, o, o.addr, "", o.timeout.d, func(ctx context.Context, cl ringpb.RingClient) (*ringpb.StatusResponse, error) {
		return cl.Status(ctx, &ringpb.StatusRequest{})
	})
	if err != nil {
		return err
	}
	before := st.GetLeaderId()
	report := func(newLeader string, changed bool, text string) error {
		if o.output == "json" {
			return c.printJSON(struct {
				NewLeader      string `json:"new_leader"`
				PreviousLeader string `json:"previous_leader"`
				Changed        bool   `json:"changed"`
			}{newLeader, before, changed})
		}
		_, err := fmt.Fprintln(c.stdout, text)
		return err
	}
	if id != "" && id == before {
		return report(id, false, fmt.Sprintf("%s is already the leader; nothing changed", id))
	}
	resp, _, err := call(ctx, o, o.addr, "", o.timeout.d, func(ctx context.Context, cl ringpb.RingClient) (*ringpb.TransferLeadershipResponse, error) {
		return cl.TransferLeadership(ctx, &ringpb.TransferLeadershipRequest{Id: id})
	})
	if err != nil {
		return err
	}
	got := resp.GetNewLeaderId()
	// The node answers once someone else leads; these guard against a leadership that moved
	// again meanwhile, which the operator must hear about.
	var problem error
	switch {
	case got == before:
		problem = fmt.Errorf("leadership stayed with %s", got)
	case id != "" && got != id:
		problem = fmt.Errorf("leadership went to %s, not %s (from %s)", got, id, orDash(before))
	}
	if o.output == "json" {
		if err := report(got, got != before, ""); err != nil {
			return err
		}
		return problem
	}
	if problem != nil {
		return problem
	}
	return report(got, true, fmt.Sprintf("leadership transferred to %s (from %s)", got, orDash(before)))
}

// leaveEvent is one line of `ringctl leave -o json` (one JSON object per line, as it happens).
type leaveEvent struct {
	Event          string  `json:"event"` // requested, state, handover, progress, removed
	Member         string  `json:"member"`
	State          string  `json:"state,omitempty"`
	RingState      string  `json:"ring_state,omitempty"`
	HandoverPeer   string  `json:"handover_peer,omitempty"`
	ElapsedSeconds float64 `json:"elapsed_seconds"`
	Via            string  `json:"via,omitempty"`
	// Handover is the leaver's own account of its stream (progress events, when its /ring answers).
	Handover *ringview.HandoverProgress `json:"handover_progress,omitempty"`
}

// fetchHandoverProgress asks a leaver's /ring (plain HTTP, at its -http.addr in the ring) for its
// hand-over stream in flight. Best effort: only the leaver knows it, and an HTTPS or unreachable
// listener just leaves the numbers out.
func fetchHandoverProgress(httpAddr string, timeout time.Duration) (ringview.HandoverProgress, bool) {
	if httpAddr == "" {
		return ringview.HandoverProgress{}, false
	}
	cl := http.Client{Timeout: timeout}
	resp, err := cl.Get("http://" + httpAddr + "/ring?format=json")
	if err != nil {
		return ringview.HandoverProgress{}, false
	}
	defer resp.Body.Close()
	var v ringview.View
	if resp.StatusCode != http.StatusOK || json.NewDecoder(io.LimitReader(resp.Body, 4<<20)).Decode(&v) != nil || v.HandoverProgress == nil {
		return ringview.HandoverProgress{}, false
	}
	return *v.HandoverProgress, true
}

// leave sends one Leave request to the member itself, then follows the member in the ring until it
// is gone. The request itself is never repeated. Following reads the ring from -addr first and,
// when that node stops answering (it may be the very node that is leaving, and it exits at the
// end), from the other members' gRPC addresses, saying so on stderr.
//
// The member is asked directly, at the gRPC address the ring shows for it, TLS or not: under
// mutual TLS a node does not forward a leave to another member (the member would see the node's
// identity instead of the operator's). A member the ring does not know is asked of -addr, which
// answers NotFound.
func (c *cli) leave(o *options, args []string) error {
	id := args[0]
	if err := checkID("ID", id); err != nil {
		return err
	}
	total := defaultLeaveTimeout
	if o.timeout.set {
		total = o.timeout.d
	}
	rpcTimeout := min(total, defaultTimeout)
	start := time.Now()
	deadline := start.Add(total)
	emit := func(ev leaveEvent, text string) {
		ev.Member = id
		ev.ElapsedSeconds = time.Since(start).Round(time.Millisecond).Seconds()
		if o.output == "json" {
			b, _ := json.Marshal(ev)
			fmt.Fprintf(c.stdout, "%s\n", b)
			return
		}
		fmt.Fprintln(c.stdout, text)
	}

	target, member := o.addr, ""
	ctx, cancel := context.WithTimeout(context.Background(), rpcTimeout)
	v, err := getView(ctx, o, o.addr, false, rpcTimeout)
	cancel()
	if err != nil {
		return err
	}
	if m, ok := v.Member(id); ok && m.GRPCAddr != "" {
		target, member = m.GRPCAddr, id
	}
	ctx, cancel = context.WithTimeout(context.Background(), rpcTimeout)
	_, via, err := call(ctx, o, target, member, rpcTimeout, func(ctx context.Context, cl ringpb.RingClient) (*ringpb.LeaveResponse, error) {
		return cl.Leave(ctx, &ringpb.LeaveRequest{Id: id})
	})
	cancel()
	var unreachable *unreachableError
	if member != "" && errors.As(err, &unreachable) {
		return fmt.Errorf("cannot reach member %s at %s, its gRPC address in the ring: %s; a member leaves by handing over its own data, so it must be running (to forget a dead member: ringctl remove %s)",
			id, target, unreachable.reason, id)
	}
	if err != nil {
		return err
	}
	emit(leaveEvent{Event: "requested", Via: via}, fmt.Sprintf("%s: leave requested (via %s)", id, via))
	if !o.wait {
		return nil
	}

	candidates := []string{o.addr}
	current := 0
	lastErr := ""
	var last *ringview.MemberView
	// quiet is how long, counted in polls, nothing was printed while following: past c.progress,
	// a line says what the member is still doing (the hand-over's retries alone take about 21 s).
	var quiet time.Duration
	for {
		remaining := time.Until(deadline)
		if remaining <= 0 {
			state := "not seen yet"
			if last != nil {
				state = last.State
				if last.HandoverPeer != "" {
					state += ", hand-over peer " + last.HandoverPeer
				}
			}
			if lastErr != "" && last == nil {
				state = lastErr
			}
			return fmt.Errorf("%s is still in the ring after %s (%s); the leave goes on — follow it with 'ringctl ring'",
				id, total, state)
		}
		ctx, cancel := context.WithTimeout(context.Background(), min(remaining, rpcTimeout))
		addr := candidates[current]
		v, err := getView(ctx, o, addr, false, min(remaining, rpcTimeout))
		cancel()
		if err != nil {
			next := (current + 1) % len(candidates)
			if msg := err.Error(); msg != lastErr {
				if next != current {
					fmt.Fprintf(c.stderr, "ringctl: leave: %v; following from %s\n", err, candidates[next])
				} else {
					fmt.Fprintf(c.stderr, "ringctl: leave: %v; retrying every %s until %s\n", err, c.poll, total)
				}
				lastErr = msg
			}
			current = next
		} else {
			lastErr = ""
			m, ok := v.Member(id)
			if !ok {
				emit(leaveEvent{Event: "removed", Via: addr},
					fmt.Sprintf("%s: left the ring after %s", id, time.Since(start).Round(100*time.Millisecond)))
				return nil
			}
			said := false
			if last == nil || m.State != last.State {
				said = true
				emit(leaveEvent{Event: "state", State: m.State, RingState: m.RingState, HandoverPeer: m.HandoverPeer},
					fmt.Sprintf("%s: %s", id, m.State))
			}
			if (last == nil && m.HandoverPeer != "") || (last != nil && m.HandoverPeer != last.HandoverPeer) {
				text := fmt.Sprintf("%s: handing over to %s", id, m.HandoverPeer)
				if m.HandoverPeer == "" {
					text = fmt.Sprintf("%s: hand-over to %s ended without completing; looking for another joiner or flushing", id, last.HandoverPeer)
				}
				said = true
				emit(leaveEvent{Event: "handover", State: m.State, RingState: m.RingState, HandoverPeer: m.HandoverPeer}, text)
			}
			if quiet += c.poll; said {
				quiet = 0
			} else if c.progress > 0 && quiet >= c.progress {
				quiet = 0
				ev := leaveEvent{Event: "progress", State: m.State, RingState: m.RingState, HandoverPeer: m.HandoverPeer}
				text := leaveProgress(m, time.Since(start))
				if m.HandoverPeer != "" {
					if p, ok := fetchHandoverProgress(m.HTTPAddr, min(time.Second, c.progress)); ok {
						ev.Handover = &p
						text = fmt.Sprintf("%s: handing over %s", m.ID, strings.TrimPrefix(p.Describe(), m.ID+" "))
					}
				}
				emit(ev, text)
			}
			last = &m
			candidates = followCandidates(o.addr, v, m)
			current = indexOf(candidates, addr)
		}
		if wait := min(c.poll, time.Until(deadline)); wait > 0 {
			t := time.NewTimer(wait)
			<-t.C
		}
	}
}

// leaveProgress says what a leaving member is still doing, for a leave that has been quiet a while.
func leaveProgress(m ringview.MemberView, elapsed time.Duration) string {
	so := elapsed.Round(time.Second)
	switch {
	case m.HandoverPeer != "":
		return fmt.Sprintf("%s: still handing over to %s (%s so far)", m.ID, m.HandoverPeer, so)
	case m.RingState == ringstate.LEAVING.String():
		return fmt.Sprintf("%s: still LEAVING (%s so far): no joiner has taken its data yet; it keeps asking for a PENDING member, then flushes its data to the bucket and leaves", m.ID, so)
	default:
		return fmt.Sprintf("%s: still %s (%s so far): the leave has not started yet", m.ID, m.State, so)
	}
}

// followCandidates lists where to read the ring from while following a leave: -addr first, then
// every other member's gRPC address, the leaver's last because it exits when it is done.
func followCandidates(first string, v ringview.View, leaver ringview.MemberView) []string {
	out := []string{first}
	for _, m := range v.Members {
		if m.GRPCAddr != "" && m.GRPCAddr != first && m.ID != leaver.ID {
			out = append(out, m.GRPCAddr)
		}
	}
	if leaver.GRPCAddr != "" && leaver.GRPCAddr != first {
		out = append(out, leaver.GRPCAddr)
	}
	return out
}

func indexOf(s []string, x string) int {
	for i, v := range s {
		if v == x {
			return i
		}
	}
	return 0
}
