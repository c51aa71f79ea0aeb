package ringpb

import (
	"github.com/raftingest/raftingest/ringstate"
)

// Hand-written conversions between the wire types and ringstate. The generated code in this package
// is produced by `make proto` from proto/ring.proto; this file is not generated.

// FromCommand converts a ring command to its wire form.
func FromCommand(c *ringstate.Command) *Command {
	return &Command{
		Op:        Op(c.Op),
		RequestId: c.RequestID,
		Member:    string(c.Member),
		Peer:      string(c.Peer),
		RaftAddr:  c.RaftAddr,
		GrpcAddr:  c.GRPCAddr,
		HttpAddr:  c.HTTPAddr,
		Zone:      c.Zone,
		Tokens:    fromTokens(c.Tokens),
		Replace:   c.Replace,
		LeaseMs:   c.LeaseMs,

		CommandVersion: c.CommandVersion,
		Readers:        fromIDs(c.Readers),
		Ha:             FromHACommand(c.HA),
	}
}

// ToCommand converts a wire command to a ring command. It does not validate: Ring.Apply does. A wire
// op outside ringstate.Op's range becomes op 0, which Apply refuses as unknown, rather than being
// truncated into a valid op.
func ToCommand(p *Command) ringstate.Command {
	op := ringstate.Op(0)
	if v := p.GetOp(); v > 0 && v <= 255 {
		op = ringstate.Op(v)
	}
	return ringstate.Command{
		Op:        op,
		RequestID: p.GetRequestId(),
		Member:    ringstate.MemberID(p.GetMember()),
		Peer:      ringstate.MemberID(p.GetPeer()),
		RaftAddr:  p.GetRaftAddr(),
		GRPCAddr:  p.GetGrpcAddr(),
		HTTPAddr:  p.GetHttpAddr(),
		Zone:      p.GetZone(),
		Tokens:    toTokens(p.GetTokens()),
		Replace:   p.GetReplace(),
		LeaseMs:   p.GetLeaseMs(),

		CommandVersion: p.GetCommandVersion(),
		Readers:        toIDs(p.GetReaders()),
		HA:             ToHACommand(p.GetHa()),
	}
}

// FromMember converts a member to its wire form.
func FromMember(m *ringstate.Member) *Member {
	return &Member{
		Id:           string(m.ID),
		RaftAddr:     m.RaftAddr,
		GrpcAddr:     m.GRPCAddr,
		HttpAddr:     m.HTTPAddr,
		Zone:         m.Zone,
		State:        State(m.State),
		Tokens:       fromTokens(m.Tokens),
		RegisteredMs: m.RegisteredMs,
		HeartbeatMs:  m.HeartbeatMs,
		HandoverPeer: string(m.HandoverPeer),

		CommandVersion: m.CommandVersion,
	}
}

// ToMember converts a wire member to a ring member.
func ToMember(p *Member) ringstate.Member {
	return ringstate.Member{
		ID:           ringstate.MemberID(p.GetId()),
		RaftAddr:     p.GetRaftAddr(),
		GRPCAddr:     p.GetGrpcAddr(),
		HTTPAddr:     p.GetHttpAddr(),
		Zone:         p.GetZone(),
		State:        ringstate.State(p.GetState()),
		Tokens:       toTokens(p.GetTokens()),
		RegisteredMs: p.GetRegisteredMs(),
		HeartbeatMs:  p.GetHeartbeatMs(),
		HandoverPeer: ringstate.MemberID(p.GetHandoverPeer()),

		CommandVersion: p.GetCommandVersion(),
	}
}

// FromRing converts every member of r to wire form.
func FromRing(r *ringstate.Ring) []*Member {
	out := make([]*Member, r.Len())
	for i := range out {
		out[i] = FromMember(r.MemberAt(i))
	}
	return out
}

// ToRing rebuilds a ring from wire members and a ring time, checking every invariant (see
// ringstate.Restore). The request memory is not part of the wire form and comes back empty.
func ToRing(members []*Member, timeMs int64) (*ringstate.Ring, error) {
	ms := make([]ringstate.Member, len(members))
	for i, m := range members {
		ms[i] = ToMember(m)
	}
	return ringstate.Restore(ms, timeMs, nil)
}

// FromLease converts a compactor lease to its wire form; nil for a lease never granted.
func FromLease(l ringstate.CompactorLease) *CompactorLease {
	if l == (ringstate.CompactorLease{}) {
		return nil
	}
	return &CompactorLease{Holder: string(l.Holder), Epoch: l.Epoch, ExpiresMs: l.ExpiresMs}
}

// ToLease converts a wire compactor lease (nil: none) to ringstate's.
func ToLease(p *CompactorLease) ringstate.CompactorLease {
	return ringstate.CompactorLease{Holder: ringstate.MemberID(p.GetHolder()), Epoch: p.GetEpoch(),
		ExpiresMs: p.GetExpiresMs()}
}

// RingFromResponse rebuilds the ring a GetRing answer describes, compactor lease included,
// checking every invariant (see ringstate.Restore and Ring.WithCompactorLease). The request memory
// is not part of the wire form and comes back empty.
func RingFromResponse(resp *GetRingResponse) (*ringstate.Ring, error) {
	r, err := ToRing(resp.GetMembers(), resp.GetTimeMs())
	if err != nil {
		return nil, err
	}
	return r.WithCompactorLease(ToLease(resp.GetCompactorLease()))
}

func fromTokens(ts ringstate.Tokens) []uint32 {
	if len(ts) == 0 {
		return nil
	}
	out := make([]uint32, len(ts))
	for i, t := range ts {
		out[i] = uint32(t)
	}
	return out
}

func toTokens(ts []uint32) ringstate.Tokens {
	if len(ts) == 0 {
		return nil
	}
	out := make(ringstate.Tokens, len(ts))
	for i, t := range ts {
		out[i] = ringstate.Token(t)
	}
	return out
}

func fromIDs(ids []ringstate.MemberID) []string {
	if len(ids) == 0 {
		return nil
	}
	out := make([]string, len(ids))
	for i, id := range ids {
		out[i] = string(id)
	}
	return out
}

func toIDs(ids []string) []ringstate.MemberID {
	if len(ids) == 0 {
		return nil
	}
	out := make([]ringstate.MemberID, len(ids))
	for i, id := range ids {
		out[i] = ringstate.MemberID(id)
	}
	return out
}
