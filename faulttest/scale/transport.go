package scale

import (
	"io"
	"time"

	"github.com/hashicorp/raft"
)

// lagTransport is a raft.InmemTransport whose RPCs take a network round trip of virtual time: the
// sender sleeps the round trip to the target before the call, which models a request and its
// response each taking half of it. Pipelined replication is switched off (one AppendEntries in
// flight per follower, each carrying every entry pending), so that the sleep is in the path of
// every entry.
type lagTransport struct {
	*raft.InmemTransport
	rtt func(target raft.ServerAddress) time.Duration
}

func (t *lagTransport) AppendEntriesPipeline(raft.ServerID, raft.ServerAddress) (raft.AppendPipeline, error) {
	return nil, raft.ErrPipelineReplicationNotSupported
}

func (t *lagTransport) AppendEntries(id raft.ServerID, target raft.ServerAddress, args *raft.AppendEntriesRequest,
	resp *raft.AppendEntriesResponse) error {
	time.Sleep(t.rtt(target))
	return t.InmemTransport.AppendEntries(id, target, args, resp)
}

func (t *lagTransport) RequestVote(id raft.ServerID, target raft.ServerAddress, args *raft.RequestVoteRequest,
	resp *raft.RequestVoteResponse) error {
	time.Sleep(t.rtt(target))
	return t.InmemTransport.RequestVote(id, target, args, resp)
}

func (t *lagTransport) RequestPreVote(id raft.ServerID, target raft.ServerAddress, args *raft.RequestPreVoteRequest,
	resp *raft.RequestPreVoteResponse) error {
	time.Sleep(t.rtt(target))
	return t.InmemTransport.RequestPreVote(id, target, args, resp)
}

func (t *lagTransport) InstallSnapshot(id raft.ServerID, target raft.ServerAddress, args *raft.InstallSnapshotRequest,
	resp *raft.InstallSnapshotResponse, data io.Reader) error {
	time.Sleep(t.rtt(target))
	return t.InmemTransport.InstallSnapshot(id, target, args, resp, data)
}

func (t *lagTransport) TimeoutNow(id raft.ServerID, target raft.ServerAddress, args *raft.TimeoutNowRequest,
	resp *raft.TimeoutNowResponse) error {
	time.Sleep(t.rtt(target))
	return t.InmemTransport.TimeoutNow(id, target, args, resp)
}

// syncStore is a raft.InmemStore whose log writes take an fsync of virtual time, as raft-boltdb's
// do on disk.
type syncStore struct {
	*raft.InmemStore
	fsync time.Duration
}

func (s *syncStore) StoreLog(l *raft.Log) error {
	time.Sleep(s.fsync)
	return s.InmemStore.StoreLog(l)
}

func (s *syncStore) StoreLogs(ls []*raft.Log) error {
	time.Sleep(s.fsync)
	return s.InmemStore.StoreLogs(ls)
}
