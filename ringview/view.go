// Package ringview shows the ring to people and to Prometheus: a View (the ring as JSON-ready
// values, judged for health at ring time), the GET /ring page (HTML table and JSON), and a Prometheus
// collector with Cortex's ring metric names.
//
// Everything here reads an immutable *ringstate.Ring and computes at request or scrape time, so there
// is no state to keep in step with the FSM and nothing to lock.
package ringview

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/raftingest/raftingest/ringstate"
)

// StateUnhealthy is the state shown for a member whose last heartbeat is older than the heartbeat
// timeout at ring time. It is derived, never stored: Cortex/dskit's ring page shows the same word.
const StateUnhealthy = "UNHEALTHY"

// View is the ring as shown on /ring and by `ringctl ring -o json`.
type View struct {
	// TimeMs is the ring time (Unix milliseconds) every member's health and heartbeat age is judged
	// against — never the viewer's clock, so a ring without quorum keeps showing the health it had.
	TimeMs int64 `json:"time_ms"`
	// HeartbeatTimeoutSeconds is the timeout used to judge health; 0 means the check is off.
	HeartbeatTimeoutSeconds float64 `json:"heartbeat_timeout_seconds"`
	// Members sorted by id. Never nil, so the JSON always has an array.
	Members []MemberView `json:"members"`
	// Compactor is who compacts the cluster's blocks: the ring's compactor lease.
	Compactor CompactorView `json:"compactor"`
	// RaftOnly lists the Raft servers that are not ring members (a node that joined Raft and has
	// not registered yet, or one removed from the ring and not yet from Raft), with their role:
	// an empty list when there are none, nil (JSON null) when the Raft configuration is not known
	// (WithRaft was not applied).
	RaftOnly []RaftServer `json:"raft_only"`
	// HandoverProgress is this node's own hand-over stream in flight, when it is a leaver
	// streaming (WithHandoverSource); absent otherwise. Only the leaver knows it: ask its /ring.
	HandoverProgress *HandoverProgress `json:"handover_progress,omitempty"`
	// AutoForget is what -ring.auto-forget-unhealthy-periods makes of each unhealthy member
	// (WithAutoForget); nil when auto-forget is off or not known.
	AutoForget []ForgetView `json:"auto_forget,omitempty"`
}

// ForgetView is auto-forget's verdict on one unhealthy member (ringstate.Ring.AutoForgetVerdicts).
type ForgetView struct {
	Member string `json:"member"`
	Next   bool   `json:"next"`
	Why    string `json:"why"`
}

// WithAutoForget adds auto-forget's verdicts on r's unhealthy members, judged as the leader
// decides: placement p, heartbeat timeout timeoutMs, forgotten after afterMs (0: off).
func (v *View) WithAutoForget(r *ringstate.Ring, p ringstate.Placement, timeoutMs, afterMs int64) {
	for _, f := range r.AutoForgetVerdicts(p, timeoutMs, afterMs) {
		v.AutoForget = append(v.AutoForget, ForgetView{Member: string(f.Member), Next: f.Next, Why: f.Why})
	}
}

// HandoverProgress is a leaver's hand-over stream in flight: what it has sent of what it holds.
type HandoverProgress struct {
	Member          string  `json:"member"`
	Joiner          string  `json:"joiner"`
	Series          int64   `json:"series"`
	SeriesTotal     int64   `json:"series_total"`
	Bytes           int64   `json:"bytes"`
	BytesTotalEst   int64   `json:"bytes_total_estimate"`
	SeriesPerS      float64 `json:"series_per_second"`
	TimeLeftSeconds float64 `json:"time_left_seconds"`
	ElapsedSeconds  float64 `json:"elapsed_seconds"`
}

// Describe is the progress in one line, for people.
func (p HandoverProgress) Describe() string {
	pct := 0.0
	if p.SeriesTotal > 0 {
		pct = 100 * float64(p.Series) / float64(p.SeriesTotal)
	}
	left := "unknown"
	if p.TimeLeftSeconds > 0 {
		left = "about " + time.Duration(p.TimeLeftSeconds*float64(time.Second)).Round(time.Second).String()
	}
	return fmt.Sprintf("%s → %s: %d of %d series (%.0f%%), %.1f of ~%.1f MB, %.0f series/s, %s left",
		p.Member, p.Joiner, p.Series, p.SeriesTotal, pct, float64(p.Bytes)/1e6, float64(p.BytesTotalEst)/1e6, p.SeriesPerS, left)
}

// Raft roles, for MemberView.RaftRole.
const (
	RaftLeader   = "leader"
	RaftVoter    = "voter"
	RaftNonvoter = "nonvoter"
	RaftNone     = "none" // a ring member that is not a Raft server
)

// RaftServer is one server of the Raft configuration as a node reports it.
type RaftServer struct {
	ID    string `json:"id"`
	Voter bool   `json:"voter"`
	// Role is RaftLeader, RaftVoter or RaftNonvoter; filled in by WithRaft.
	Role string `json:"role,omitempty"`
}

// WithRaft sets every member's RaftRole from the Raft configuration (servers) and the leader's id
// as one node reports them, and lists the servers that are not ring members in RaftOnly. The ring
// and the configuration are read separately, so they may disagree for a moment (a joiner in Raft
// before it registers).
func (v *View) WithRaft(leader string, servers []RaftServer) {
	role := func(s RaftServer) string {
		switch {
		case s.ID == leader && leader != "":
			return RaftLeader
		case s.Voter:
			return RaftVoter
		}
		return RaftNonvoter
	}
	in := map[string]RaftServer{}
	for _, s := range servers {
		in[s.ID] = s
	}
	members := map[string]bool{}
	for i := range v.Members {
		m := &v.Members[i]
		members[m.ID] = true
		if s, ok := in[m.ID]; ok {
			m.RaftRole = role(s)
		} else {
			m.RaftRole = RaftNone
		}
	}
	v.RaftOnly = []RaftServer{}
	for _, s := range servers {
		if !members[s.ID] {
			s.Role = role(s)
			v.RaftOnly = append(v.RaftOnly, s)
		}
	}
	slices.SortFunc(v.RaftOnly, func(a, b RaftServer) int { return strings.Compare(a.ID, b.ID) })
}

// CompactorView is the ring's compactor lease as people see it.
type CompactorView struct {
	// Holder is the member the lease was last granted to; empty when it never was.
	Holder string `json:"holder"`
	// Epoch fences block deletes: it grows by one with each new holder.
	Epoch uint64 `json:"epoch"`
	// Held is true while the lease is valid at ring time and its holder is still a member.
	Held bool `json:"held"`
	// ExpiresAt is the ring time the lease expires at, RFC 3339 in UTC; empty without a holder.
	ExpiresAt string `json:"expires_at"`
	// ExpiresInSeconds is ExpiresAt minus ring time: negative once expired.
	ExpiresInSeconds float64 `json:"expires_in_seconds"`
}

// BuildCompactor returns the view of the compactor lease of r at ring time.
func BuildCompactor(r *ringstate.Ring) CompactorView {
	l := r.CompactorLease()
	if l.Holder == "" {
		return CompactorView{}
	}
	_, member := r.Member(l.Holder)
	return CompactorView{
		Holder:           string(l.Holder),
		Epoch:            l.Epoch,
		Held:             member && l.HeldBy(l.Holder, r.TimeMs()),
		ExpiresAt:        time.UnixMilli(l.ExpiresMs).UTC().Format(time.RFC3339Nano),
		ExpiresInSeconds: float64(l.ExpiresMs-r.TimeMs()) / 1000,
	}
}

// Describe says who compacts, in one line for people ("none" when nobody does).
func (c CompactorView) Describe() string {
	switch {
	case c.Holder == "":
		return "none (no member has claimed the compactor lease)"
	case c.Held:
		return fmt.Sprintf("%s (epoch %d, lease expires in %s)", c.Holder, c.Epoch,
			time.Duration(c.ExpiresInSeconds*float64(time.Second)).Round(time.Millisecond))
	}
	return fmt.Sprintf("none: the lease of %s (epoch %d) expired %s ago", c.Holder, c.Epoch,
		time.Duration(-c.ExpiresInSeconds*float64(time.Second)).Round(time.Millisecond))
}

// MemberView is one member as people see it.
type MemberView struct {
	ID string `json:"id"`
	// State is the lifecycle state, or StateUnhealthy when the heartbeat is stale at ring time.
	State string `json:"state"`
	// RingState is always the lifecycle state, so a reader can tell an unhealthy LEAVING member
	// from an unhealthy ACTIVE one.
	RingState string `json:"ring_state"`
	Healthy   bool   `json:"healthy"`
	RaftAddr  string `json:"raft_addr"`
	GRPCAddr  string `json:"grpc_addr"`
	HTTPAddr  string `json:"http_addr"`
	Zone      string `json:"zone"`
	// Tokens is the full sorted token list; never nil.
	Tokens    []uint32 `json:"tokens"`
	NumTokens int      `json:"num_tokens"`
	// Ownership is the fraction (0..1) of the hash space the member owns.
	Ownership float64 `json:"ownership"`
	// HeartbeatAgeSeconds is ring time minus the member's last heartbeat.
	HeartbeatAgeSeconds float64 `json:"heartbeat_age_seconds"`
	// RegisteredAt is the ring time of the first registration, RFC 3339 in UTC.
	RegisteredAt string `json:"registered_at"`
	// HandoverPeer is the other side of a hand-over in progress: for a LEAVING member the joiner it
	// streams to, for a JOINING member the leaver it receives from; empty otherwise.
	HandoverPeer string `json:"handover_peer"`
	// RaftRole is the member's place in the Raft configuration: RaftLeader, RaftVoter,
	// RaftNonvoter or RaftNone; empty (and absent from JSON) when the configuration is not known.
	RaftRole string `json:"raft_role,omitempty"`
}

// Build judges every member of r at ring time against heartbeatTimeoutMs (0 or less disables the
// health check, as ringstate.Member.Healthy does) and returns the view, members sorted by id.
// A nil ring gives an empty view.
func Build(r *ringstate.Ring, heartbeatTimeoutMs int64) View {
	v := View{
		HeartbeatTimeoutSeconds: float64(max(heartbeatTimeoutMs, 0)) / 1000,
		Members:                 []MemberView{},
	}
	if r == nil {
		return v
	}
	now := r.TimeMs()
	v.TimeMs = now
	v.Compactor = BuildCompactor(r)
	v.Members = make([]MemberView, r.Len())
	for i := range v.Members {
		m := r.MemberAt(i) // members are sorted by id by ringstate
		healthy := m.Healthy(now, heartbeatTimeoutMs)
		state := m.State.String()
		if !healthy {
			state = StateUnhealthy
		}
		tokens := make([]uint32, len(m.Tokens))
		for j, t := range m.Tokens {
			tokens[j] = uint32(t)
		}
		v.Members[i] = MemberView{
			ID:                  string(m.ID),
			State:               state,
			RingState:           m.State.String(),
			Healthy:             healthy,
			RaftAddr:            m.RaftAddr,
			GRPCAddr:            m.GRPCAddr,
			HTTPAddr:            m.HTTPAddr,
			Zone:                m.Zone,
			Tokens:              tokens,
			NumTokens:           len(tokens),
			Ownership:           r.Ownership(m.ID),
			HeartbeatAgeSeconds: float64(now-m.HeartbeatMs) / 1000,
			RegisteredAt:        time.UnixMilli(m.RegisteredMs).UTC().Format(time.RFC3339),
			HandoverPeer:        string(m.HandoverPeer),
		}
	}
	return v
}

// Time returns the ring time as a time.Time in UTC.
func (v View) Time() time.Time { return time.UnixMilli(v.TimeMs).UTC() }

// Member returns the member with the given id.
func (v View) Member(id string) (MemberView, bool) {
	for _, m := range v.Members {
		if m.ID == id {
			return m, true
		}
	}
	return MemberView{}, false
}

// Handover describes the hand-over a member takes part in, as an arrow and the peer: "→ joiner" for
// a leaver (tokens flow to the joiner), "← leaver" for a joiner, "" when there is none. The arrow is
// chosen from the ring state, because the relation itself is symmetric.
func (m MemberView) Handover() string {
	if m.HandoverPeer == "" {
		return ""
	}
	if m.RingState == ringstate.LEAVING.String() {
		return "→ " + m.HandoverPeer
	}
	return "← " + m.HandoverPeer
}

// HeartbeatAge returns the heartbeat age as a duration rounded to milliseconds, for display.
func (m MemberView) HeartbeatAge() time.Duration {
	return time.Duration(m.HeartbeatAgeSeconds * float64(time.Second)).Round(time.Millisecond)
}
