package raftfsm

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/raftingest/raftingest/auth"
	"github.com/raftingest/raftingest/ringpb"
	"github.com/raftingest/raftingest/ringstate"
)

// errorDomain marks gRPC errors whose ErrorInfo.Reason names one of our sentinels, so the client
// side of a forward rebuilds the same error type.
const errorDomain = "raftingest.raftfsm"

// hopsKey carries the forward count of Leave, whose request has no hops field.
const hopsKey = "x-raftingest-hops"

// sentinels maps ErrorInfo reasons to errors and gRPC codes, both ways. Order matters on the server
// side: the first sentinel err matches decides.
var sentinels = []struct {
	reason string
	err    error
	code   codes.Code
}{
	{"SHUTDOWN", ErrShutdown, codes.Unavailable},
	{"REMOVED", ErrRemovedFromCluster, codes.FailedPrecondition},
	{"UNKNOWN_OUTCOME", ErrUnknownOutcome, codes.Unknown},
	{"NO_LEADER", ErrNoLeader, codes.Unavailable},
	{"TOO_MANY_HOPS", ErrTooManyHops, codes.Aborted},
	{"UNKNOWN_PEER", ErrUnknownPeer, codes.NotFound},
	{"PEER_EXISTS", ErrPeerExists, codes.AlreadyExists},
	{"INVALID_PEER", ErrInvalidPeer, codes.InvalidArgument},
	{"LAST_VOTER", ErrLastVoter, codes.FailedPrecondition},
	{"NOT_PEER", ErrNotPeer, codes.FailedPrecondition},
	{"ADDRESS_CHANGE", ErrAddressChange, codes.PermissionDenied},
	{"UNKNOWN_MEMBER", ringstate.ErrUnknownMember, codes.NotFound},
	{"MEMBER_EXISTS", ringstate.ErrMemberExists, codes.AlreadyExists},
	{"INVALID_MEMBER", ringstate.ErrInvalidMember, codes.InvalidArgument},
	{"ILLEGAL_TRANSITION", ringstate.ErrIllegalTransition, codes.FailedPrecondition},
	{"TOKEN_OWNED", ringstate.ErrTokenOwned, codes.FailedPrecondition},
	{"INVALID_TOKENS", ringstate.ErrInvalidTokens, codes.InvalidArgument},
	{"JOINER_NOT_PENDING", ringstate.ErrJoinerNotPending, codes.FailedPrecondition},
	{"HANDOVER_MISMATCH", ringstate.ErrHandoverMismatch, codes.FailedPrecondition},
	{"HANDOVER_IN_PROGRESS", ringstate.ErrHandoverInProgress, codes.FailedPrecondition},
	{"INVALID_COMMAND", ringstate.ErrInvalidCommand, codes.InvalidArgument},
	{"OWNERSHIP_SPREAD", ringstate.ErrSpread, codes.FailedPrecondition},
}

// toStatus turns a Node error into a gRPC status error carrying the sentinel's reason. Context
// errors keep their gRPC codes; anything unrecognised is Internal.
func toStatus(err error) error {
	if err == nil {
		return nil
	}
	var re *redirectError
	if errors.As(err, &re) {
		st := status.New(codes.FailedPrecondition, err.Error())
		if d, derr := st.WithDetails(&errdetails.ErrorInfo{Reason: "REDIRECT", Domain: errorDomain,
			Metadata: map[string]string{redirectIDKey: re.id, redirectAddrKey: re.addr}}); derr == nil {
			st = d
		}
		return st.Err()
	}
	for _, s := range sentinels {
		if errors.Is(err, s.err) {
			code := s.code
			if s.err == ErrUnknownOutcome && errors.Is(err, context.DeadlineExceeded) {
				code = codes.DeadlineExceeded
			}
			st := status.New(code, err.Error())
			if d, derr := st.WithDetails(&errdetails.ErrorInfo{Reason: s.reason, Domain: errorDomain}); derr == nil {
				st = d
			}
			return st.Err()
		}
	}
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, err.Error())
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, err.Error())
	}
	return status.Error(codes.Internal, err.Error())
}

// fromStatus rebuilds the error a remote node returned. A status carrying one of our reasons becomes
// an error that errors.Is matches against that sentinel (ErrUnknownOutcome and ErrNoLeader wrap
// it, so Retryable keeps working). Other failures are transport failures: for a call that changes
// state (write) they leave the outcome unknown; for a read they mean no leader was reachable.
func fromStatus(err error, write bool) error {
	st, ok := status.FromError(err)
	if !ok {
		return err
	}
	for _, d := range st.Details() {
		info, ok := d.(*errdetails.ErrorInfo)
		if !ok || info.GetDomain() != errorDomain {
			continue
		}
		if info.GetReason() == "REDIRECT" {
			return &redirectError{id: info.GetMetadata()[redirectIDKey], addr: info.GetMetadata()[redirectAddrKey], why: st.Message()}
		}
		for _, s := range sentinels {
			if s.reason == info.GetReason() {
				return &wireError{msg: st.Message(), sentinel: s.err}
			}
		}
	}
	switch st.Code() {
	case codes.Canceled:
		return fmt.Errorf("%w: %w", ErrUnknownOutcome, context.Canceled)
	case codes.DeadlineExceeded:
		if write {
			return fmt.Errorf("%w: %w", ErrUnknownOutcome, context.DeadlineExceeded)
		}
		return fmt.Errorf("%w: %w", ErrNoLeader, context.DeadlineExceeded)
	}
	if write {
		return fmt.Errorf("%w: forwarding to the leader: %w", ErrUnknownOutcome, err)
	}
	return fmt.Errorf("%w: forwarding to the leader: %w", ErrNoLeader, err)
}

// service implements ringpb.RingServer over a Node.
type service struct {
	ringpb.UnimplementedRingServer
	n     *Node
	leave func(ctx context.Context) error
}

// NewService returns the Ring gRPC service of node. Writes reach the leader: a follower forwards
// them (bounded by MaxForwardHops). leave is the daemon's graceful-shutdown hook, called by the
// Leave RPC when it names this node; nil makes Leave for this node Unimplemented.
//
// Errors are gRPC statuses: ringstate refusals (outside Apply) map to NotFound, AlreadyExists,
// InvalidArgument or FailedPrecondition with ringstate's message; no leader is Unavailable; an
// unknown outcome is Unknown (DeadlineExceeded when a deadline ran out). Each status carries an
// ErrorInfo naming the sentinel, so a forwarding Node rebuilds the same error. Apply refusals are
// not errors at all: ApplyResponse carries the code and message.
func NewService(node *Node, leave func(ctx context.Context) error) ringpb.RingServer {
	return &service{n: node, leave: leave}
}

func (s *service) Apply(ctx context.Context, req *ringpb.ApplyRequest) (*ringpb.ApplyResponse, error) {
	if req.GetCommand() == nil {
		return nil, status.Error(codes.InvalidArgument, "raftfsm: apply: no command")
	}
	if req.GetHops() > MaxForwardHops {
		return nil, toStatus(fmt.Errorf("%w: apply arrived after %d hops", ErrTooManyHops, req.GetHops()))
	}
	cmd := ringpb.ToCommand(req.GetCommand())
	if op := int32(req.GetCommand().GetOp()); op < 0 || op > 255 {
		return &ringpb.ApplyResponse{Code: uint32(ringstate.CodeInvalidCommand),
			Message: fmt.Sprintf("raftfsm: op %d out of range", op)}, nil
	}
	p := s.n.cfg.TLS.Caller(ctx)
	if err := s.n.authorizeCommand(p, &cmd); err != nil {
		return nil, err
	}
	ctx = withCaller(ctx, p)
	idx, err := s.n.apply(ctx, cmd, req.GetHops())
	if err != nil && !isRefusal(err) {
		return nil, toStatus(err)
	}
	resp := &ringpb.ApplyResponse{Index: idx}
	if err != nil {
		resp.Code, resp.Message = uint32(ringstate.CodeOf(err)), err.Error()
	}
	return resp, nil
}

func (s *service) Join(ctx context.Context, req *ringpb.JoinRequest) (*ringpb.JoinResponse, error) {
	if req.GetHops() > MaxForwardHops {
		return nil, toStatus(fmt.Errorf("%w: join arrived after %d hops", ErrTooManyHops, req.GetHops()))
	}
	p := s.n.cfg.TLS.Caller(ctx)
	if err := s.n.authorizeJoin(p, req.GetId(), req.GetRaftAddr(), req.GetVoter()); err != nil {
		return nil, err
	}
	ctx = withCaller(ctx, p)
	idx, voter, err := s.n.addPeer(ctx, req.GetId(), req.GetRaftAddr(), req.GetVoter(), req.GetHops())
	if err != nil {
		return nil, toStatus(err)
	}
	return &ringpb.JoinResponse{Index: idx, Voter: voter}, nil
}

func (s *service) RemovePeer(ctx context.Context, req *ringpb.RemovePeerRequest) (*ringpb.RemovePeerResponse, error) {
	if req.GetHops() > MaxForwardHops {
		return nil, toStatus(fmt.Errorf("%w: remove peer arrived after %d hops", ErrTooManyHops, req.GetHops()))
	}
	p := s.n.cfg.TLS.Caller(ctx)
	if err := s.n.authorizeRemove(p, req.GetId()); err != nil {
		return nil, err
	}
	ctx = withCaller(ctx, p)
	idx, err := s.n.removePeer(ctx, req.GetId(), req.GetHops())
	if err != nil {
		return nil, toStatus(err)
	}
	return &ringpb.RemovePeerResponse{Index: idx}, nil
}

func (s *service) Status(ctx context.Context, _ *ringpb.StatusRequest) (*ringpb.StatusResponse, error) {
	if s.n.closed.Load() {
		return nil, toStatus(ErrShutdown)
	}
	st := s.n.Status()
	resp := &ringpb.StatusResponse{
		Id: st.ID, State: st.State, LeaderId: st.LeaderID, LeaderAddress: st.LeaderAddr, Term: st.Term,
		CommitIndex: st.CommitIndex, AppliedIndex: st.AppliedIndex, LastLogIndex: st.LastLogIndex,
		LastSnapshotIndex: st.LastSnapshotIndex,
	}
	for _, sv := range st.Servers {
		lc := int64(-1)
		if sv.LastContact >= 0 {
			lc = sv.LastContact.Milliseconds()
		}
		resp.Servers = append(resp.Servers, &ringpb.Server{Id: sv.ID, Address: sv.Address, Voter: sv.Voter, LastContactMs: lc})
	}
	return resp, nil
}

func (s *service) GetRing(ctx context.Context, req *ringpb.GetRingRequest) (*ringpb.GetRingResponse, error) {
	if req.GetHops() > MaxForwardHops {
		return nil, toStatus(fmt.Errorf("%w: get ring arrived after %d hops", ErrTooManyHops, req.GetHops()))
	}
	var (
		r   *ringstate.Ring
		idx uint64
	)
	if req.GetLinearizable() {
		var err error
		if r, idx, err = s.n.linearizableRing(ctx, req.GetHops()); err != nil {
			return nil, toStatus(err)
		}
	} else {
		st := s.n.fsm.state.Load()
		r, idx = st.ring, st.index
	}
	return &ringpb.GetRingResponse{
		TimeMs: r.TimeMs(), Members: ringpb.FromRing(r), AppliedIndex: idx,
		HeartbeatTimeoutMs: s.n.cfg.RingHeartbeatTimeout.Milliseconds(),
		CompactorLease:     ringpb.FromLease(r.CompactorLease()),
		AutoForgetAfterMs:  int64(s.n.cfg.AutoForgetPeriods) * s.n.cfg.RingHeartbeatTimeout.Milliseconds(),
		ReplicationFactor:  uint32(max(s.n.cfg.ReplicationFactor, 1)),
		ZoneAware:          s.n.cfg.ZoneAware,
	}, nil
}

func (s *service) TransferLeadership(ctx context.Context, req *ringpb.TransferLeadershipRequest) (*ringpb.TransferLeadershipResponse, error) {
	if req.GetHops() > MaxForwardHops {
		return nil, toStatus(fmt.Errorf("%w: transfer arrived after %d hops", ErrTooManyHops, req.GetHops()))
	}
	p := s.n.cfg.TLS.Caller(ctx)
	if err := s.n.authorizeOperator(p, "transfer raft leadership"); err != nil {
		return nil, err
	}
	ctx = withCaller(ctx, p)
	id, err := s.n.transfer(ctx, req.GetId(), req.GetHops())
	if err != nil {
		return nil, toStatus(err)
	}
	return &ringpb.TransferLeadershipResponse{NewLeaderId: id}, nil
}

func (s *service) Leave(ctx context.Context, req *ringpb.LeaveRequest) (*ringpb.LeaveResponse, error) {
	p := s.n.cfg.TLS.Caller(ctx)
	if !(p.Kind == auth.Node && p.Name == req.GetId()) {
		if err := s.n.authorizeOperator(p, fmt.Sprintf("make member %q leave the ring", req.GetId())); err != nil {
			return nil, err
		}
	}
	if req.GetId() == s.n.cfg.ID {
		if s.leave == nil {
			return nil, status.Error(codes.Unimplemented, "raftfsm: this node has no leave hook")
		}
		if err := s.leave(ctx); err != nil {
			return nil, toStatus(err)
		}
		return &ringpb.LeaveResponse{}, nil
	}
	hops := 0
	if md, ok := metadata.FromIncomingContext(ctx); ok {
		if v := md.Get(hopsKey); len(v) > 0 {
			hops, _ = strconv.Atoi(v[0])
		}
	}
	if hops+1 > MaxForwardHops {
		return nil, toStatus(fmt.Errorf("%w: leave %s arrived after %d hops", ErrTooManyHops, req.GetId(), hops))
	}
	m, ok := s.n.fsm.Ring().Member(ringstate.MemberID(req.GetId()))
	if !ok {
		return nil, status.Errorf(codes.NotFound, "raftfsm: leave: %s is not a ring member", req.GetId())
	}
	if m.GRPCAddr == "" {
		return nil, status.Errorf(codes.FailedPrecondition, "raftfsm: leave: member %s has no gRPC address", req.GetId())
	}
	if s.n.cfg.TLS != nil {
		// A forward would reach the member with this node's identity, which has no right to make
		// another member leave: the operator asks the member itself.
		return nil, toStatus(&redirectError{id: req.GetId(), addr: m.GRPCAddr,
			why: fmt.Sprintf("%s does not forward leave requests under mutual TLS", s.n.cfg.ID)})
	}
	c, err := s.n.conns.get(m.GRPCAddr)
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "raftfsm: leave: dial %s at %s: %v", req.GetId(), m.GRPCAddr, err)
	}
	ctx = metadata.AppendToOutgoingContext(ctx, hopsKey, strconv.Itoa(hops+1))
	return c.Leave(ctx, req)
}

// connCache keeps one gRPC client connection per address for forwarding. grpc.NewClient connects
// lazily and reconnects by itself, so a cached connection stays usable across leader restarts.
type connCache struct {
	mu     sync.Mutex
	conns  map[string]*grpc.ClientConn
	closed bool
	// opts are added to every connection (Config.Dial's context dialer); immutable.
	opts []grpc.DialOption
}

func newConnCache(opts ...grpc.DialOption) *connCache {
	return &connCache{conns: map[string]*grpc.ClientConn{}, opts: opts}
}

func (c *connCache) get(addr string) (ringpb.RingClient, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, ErrShutdown
	}
	if cc, ok := c.conns[addr]; ok {
		return ringpb.NewRingClient(cc), nil
	}
	cc, err := grpc.NewClient(addr, append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, c.opts...)...)
	if err != nil {
		return nil, err
	}
	c.conns[addr] = cc
	return ringpb.NewRingClient(cc), nil
}

func (c *connCache) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	for a, cc := range c.conns {
		_ = cc.Close()
		delete(c.conns, a)
	}
}
