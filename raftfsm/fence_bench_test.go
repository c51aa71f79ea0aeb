package raftfsm

import (
	"fmt"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/raftingest/raftingest/ringstate"
)

// BenchmarkFSMApplyHeartbeat is the FSM's cost per heartbeat entry on a ring of 300 ACTIVE members
// of 128 tokens: the entry that dominates the log, and which must not pay for the ownership index.
func BenchmarkFSMApplyHeartbeat(b *testing.B) {
	f := NewFSM(nil)
	idx := uint64(0)
	apply := func(c ringstate.Command) {
		idx++
		data, err := EncodeCommand(c)
		if err != nil {
			b.Fatal(err)
		}
		res := f.Apply(&raft.Log{Index: idx, Type: raft.LogCommand, Data: data, AppendedAt: time.UnixMilli(int64(idx))}).(*ApplyResult)
		if res.Code != ringstate.CodeOK {
			b.Fatalf("%+v: %+v", c, res)
		}
	}
	const members, tokens = 300, 128
	for i := range members {
		id := ringstate.MemberID(fmt.Sprintf("m%03d", i))
		apply(ringstate.Command{Op: ringstate.OpRegister, Member: id, RaftAddr: fmt.Sprintf("127.0.0.1:%d", 1000+i)})
		var ts ringstate.Tokens
		for k := range tokens {
			ts = append(ts, ringstate.Token(uint32(k*members+i)*(1<<32/(members*tokens))+1))
		}
		apply(ringstate.Command{Op: ringstate.OpClaimTokens, Member: id, Tokens: ts})
		apply(ringstate.Command{Op: ringstate.OpActivate, Member: id})
	}
	entries := make([]*raft.Log, members)
	for i := range entries {
		data, _ := EncodeCommand(ringstate.Command{Op: ringstate.OpHeartbeat, Member: ringstate.MemberID(fmt.Sprintf("m%03d", i))})
		entries[i] = &raft.Log{Type: raft.LogCommand, Data: data}
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		idx++
		e := entries[i%members]
		e.Index, e.AppendedAt = idx, time.UnixMilli(int64(idx))
		f.Apply(e)
		i++
	}
}
