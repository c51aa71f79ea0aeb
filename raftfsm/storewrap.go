package raftfsm

import (
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
)

// contactTransport records when each peer last answered an AppendEntries (heartbeats included), so
// the leader can report last contact per server; hashicorp/raft keeps that private.
type contactTransport struct {
	*raft.NetworkTransport
	mu   sync.Mutex
	last map[raft.ServerID]time.Time
}

// AppendEntries forwards to the network transport and records a successful contact.
func (t *contactTransport) AppendEntries(id raft.ServerID, target raft.ServerAddress,
	args *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse) error {
	err := t.NetworkTransport.AppendEntries(id, target, args, resp)
	if err == nil {
		t.mu.Lock()
		t.last[id] = time.Now()
		t.mu.Unlock()
	}
	return err
}

func (t *contactTransport) lastContact(id raft.ServerID) (time.Time, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	v, ok := t.last[id]
	return v, ok
}

func (t *contactTransport) forget(id raft.ServerID) {
	t.mu.Lock()
	delete(t.last, id)
	t.mu.Unlock()
}

// indexingSnapshotStore remembers the index of the snapshot opened last. Raft opens a snapshot
// right before it hands its reader to FSM.Restore (at start and for InstallSnapshot), and the reader
// it passes hides the metadata, so this is how the FSM learns the index it restored to. (The
// leader also opens snapshots to send them; the window in which that could race a restore on the
// same node does not exist, since a leader does not restore.)
type indexingSnapshotStore struct {
	raft.SnapshotStore
	lastOpened atomic.Uint64
}

// Open opens snapshot id and records its index.
func (s *indexingSnapshotStore) Open(id string) (*raft.SnapshotMeta, io.ReadCloser, error) {
	meta, rc, err := s.SnapshotStore.Open(id)
	if err == nil {
		s.lastOpened.Store(meta.Index)
	}
	return meta, rc, err
}
