package sim

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/hashicorp/raft"

	"github.com/raftingest/raftingest/faulttest/check"
	"github.com/raftingest/raftingest/raftfsm"
	"github.com/raftingest/raftingest/ringstate"
)

// The ring the clients fight over: a few members and a small token space, so that token claims
// collide (the compare-and-set must refuse them) and hand-overs meet each other.
const (
	ringMembers = 5
	tokenSpace  = 48
)

// genCommand draws a ring command. Most are plausible lifecycle steps; refusals are outcomes like any
// other and must linearize too.
func genCommand(rng *rand.Rand, client int, seq int) ringstate.Command {
	m := func() ringstate.MemberID { return ringstate.MemberID(fmt.Sprintf("m%d", rng.IntN(ringMembers))) }
	cmd := ringstate.Command{RequestID: fmt.Sprintf("c%d-%d", client, seq), Member: m()}
	switch p := rng.IntN(100); {
	case p < 16:
		cmd.Op = ringstate.OpRegister
		cmd.RaftAddr, cmd.GRPCAddr, cmd.HTTPAddr = "127.0.0.1:7001", "127.0.0.1:7002", "127.0.0.1:7003"
		if rng.IntN(10) == 0 { // the same id with other addresses: refused
			cmd.RaftAddr = "127.0.0.1:7101"
		}
	case p < 36:
		cmd.Op = ringstate.OpClaimTokens
		cmd.Replace = rng.IntN(5) == 0
		n := 1 + rng.IntN(3)
		seen := map[ringstate.Token]bool{}
		for len(cmd.Tokens) < n {
			t := ringstate.Token(rng.IntN(tokenSpace) * 1000)
			if !seen[t] {
				seen[t] = true
				cmd.Tokens = append(cmd.Tokens, t)
			}
		}
		sortTokens(cmd.Tokens)
	case p < 52:
		cmd.Op = ringstate.OpActivate
	case p < 60:
		cmd.Op = ringstate.OpHeartbeat
	case p < 70:
		cmd.Op = ringstate.OpLeave
	case p < 80:
		cmd.Op, cmd.Peer = ringstate.OpClaimJoiner, m()
	case p < 88:
		cmd.Op, cmd.Peer = ringstate.OpCompleteHandover, m()
	case p < 93:
		cmd.Op, cmd.Peer = ringstate.OpAbortHandover, m()
	default:
		cmd.Op = ringstate.OpRemove
	}
	if cmd.Peer == cmd.Member && cmd.Peer != "" {
		cmd.Peer = ringstate.MemberID(fmt.Sprintf("m%d", (int(cmd.Member[1]-'0')+1)%ringMembers))
	}
	return cmd
}

func sortTokens(ts ringstate.Tokens) {
	for i := 1; i < len(ts); i++ {
		for j := i; j > 0 && ts[j] < ts[j-1]; j-- {
			ts[j], ts[j-1] = ts[j-1], ts[j]
		}
	}
}

// definite reports whether an Apply error means the command was certainly not appended.
func definite(err error) bool {
	return errors.Is(err, raft.ErrNotLeader) || errors.Is(err, raft.ErrEnqueueTimeout) ||
		errors.Is(err, raft.ErrLeadershipTransferInProgress)
}

// client runs one ring client until ctx is done: a command or a linearizable read at a time, each
// command retried with the same request id while its outcome is unknown.
func (c *cluster) client(ctx context.Context, id int) {
	rng := newRand(c.cfg.Seed, uint64(100+id))
	for seq := 0; ctx.Err() == nil; seq++ {
		sleep(ctx, time.Duration(50+rng.IntN(250))*time.Millisecond)
		if ctx.Err() != nil {
			return
		}
		if rng.IntN(5) == 0 {
			c.read(id)
			continue
		}
		c.command(id, genCommand(rng, id, seq), rng)
	}
}

func (c *cluster) record(op check.RingOp) {
	c.histMu.Lock()
	c.hist = append(c.hist, op)
	c.histMu.Unlock()
}

// command applies cmd through whichever node is leader, retrying up to 5 times. An attempt that
// failed before its entry was appended (not leader) leaves the outcome as it was; one that failed
// after (leadership lost, node shut down) makes it unknown until a later attempt learns it.
func (c *cluster) command(client int, cmd ringstate.Command, rng *rand.Rand) {
	data, err := raftfsm.EncodeCommand(cmd)
	if err != nil {
		panic(err) // the generator makes only encodable commands
	}
	op := check.RingOp{Client: client, Cmd: cmd, Call: time.Now()}
	unknown := false
	for attempt := 0; attempt < 5; attempt++ {
		if attempt > 0 {
			time.Sleep(time.Duration(100+rng.IntN(400)) * time.Millisecond)
		}
		target, ok := c.leader()
		if !ok {
			rs := c.running()
			if len(rs) == 0 {
				continue
			}
			target = rs[rng.IntN(len(rs))]
		}
		f := target.r.Apply(data, applyTimeout)
		if err := f.Error(); err != nil {
			if !definite(err) {
				unknown = true
			}
			continue
		}
		res := f.Response().(*raftfsm.ApplyResult)
		op.Return, op.Code = time.Now(), res.Code
		c.record(op)
		return
	}
	if unknown {
		op.Return, op.Unknown = time.Now(), true
		c.record(op)
	}
	// Every attempt was refused before it was appended: the command had no effect, nothing to record.
}

// read is a linearizable read of the ring: a barrier through the leader (it commits an entry in
// the leader's term and waits until the FSM applied it), then the leader's FSM.
func (c *cluster) read(client int) (string, error) {
	call := time.Now()
	l, ok := c.leader()
	if c.cfg.Bug == BugStaleReads {
		if rs := c.running(); len(rs) > 0 {
			l, ok = rs[int(call.UnixNano()/int64(time.Millisecond))%len(rs)], true
			d := check.RingDigest(l.fsm.Ring())
			c.record(check.RingOp{Client: client, Read: true, Call: call, Return: time.Now(), Digest: d})
			return d, nil
		}
	}
	if !ok {
		return "", errNoLeader
	}
	if err := l.r.Barrier(applyTimeout).Error(); err != nil {
		return "", err
	}
	d := check.RingDigest(l.fsm.Ring())
	c.record(check.RingOp{Client: client, Read: true, Call: call, Return: time.Now(), Digest: d})
	return d, nil
}
