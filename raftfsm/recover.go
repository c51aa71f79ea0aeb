package raftfsm

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/raft"
)

// Disaster recovery: a majority of voters lost for good (two of three machines gone) leaves the
// survivors unable to elect a leader, and the ring frozen, forever. -raft.recover is the way back
// that Consul and rqlite offer with peers.json, on hashicorp/raft's RecoverCluster: a survivor
// started with it replays its own log and snapshot into a fresh FSM, snapshots the result, and
// writes a new configuration in which it is the only voter; it then starts as usual and elects
// itself. Whatever the lost majority committed that this node never received is gone; what this
// node had — committed or not — is kept. The dead members stay in the ring until the operator
// removes them (`ringctl remove`, allowed once their heartbeats are stale); new nodes then join.
//
// The flag is a one-shot. Left on, a later restart would split a cluster that has grown again into
// two, so the recovery writes recoveredFile (the index of the configuration it wrote) and a start
// with the flag refuses once the configuration has changed since: the cluster runs again and the
// flag must go. A start whose configuration is already this node alone recovers nothing and runs.

// recoveredFile records, in DataDir/raft, the last recovery this node made.
const recoveredFile = "recovered.json"

// recoveryRecord is the content of recoveredFile.
type recoveryRecord struct {
	// ConfigIndex is the index of the snapshot the recovery wrote, which holds the single-voter
	// configuration: any configuration change after it has a higher index.
	ConfigIndex uint64 `json:"config_index"`
	// Removed are the servers of the configuration it replaced, this node excepted.
	Removed []string `json:"removed_servers"`
	Time    string   `json:"time"`
}

// latestConfiguration reads the newest Raft configuration in logs and snaps, and its index: the
// last configuration entry of the log, else the newest snapshot's.
func latestConfiguration(logs raft.LogStore, snaps raft.SnapshotStore) (raft.Configuration, uint64, error) {
	var conf raft.Configuration
	var index uint64
	metas, err := snaps.List()
	if err != nil {
		return conf, 0, fmt.Errorf("list snapshots: %w", err)
	}
	if len(metas) > 0 {
		conf, index = metas[0].Configuration, metas[0].ConfigurationIndex
	}
	first, err := logs.FirstIndex()
	if err != nil {
		return conf, 0, fmt.Errorf("read first log index: %w", err)
	}
	last, err := logs.LastIndex()
	if err != nil {
		return conf, 0, fmt.Errorf("read last log index: %w", err)
	}
	for i := max(first, index+1); first != 0 && i <= last; i++ {
		var l raft.Log
		if err := logs.GetLog(i, &l); err != nil {
			return conf, 0, fmt.Errorf("read log entry %d: %w", i, err)
		}
		if l.Type == raft.LogConfiguration {
			conf, index = raft.DecodeConfiguration(l.Data), i
		}
	}
	return conf, index, nil
}

// recoverAlone runs -raft.recover before NewRaft (see above). It returns without change when the
// configuration is already this node alone.
func (n *Node) recoverAlone(rc *raft.Config, dir string) error {
	conf, confIndex, err := latestConfiguration(n.store, n.snaps)
	if err != nil {
		return fmt.Errorf("-raft.recover: %w", err)
	}
	self := raft.Server{Suffrage: raft.Voter, ID: n.id, Address: n.trans.LocalAddr()}
	if len(conf.Servers) == 1 && conf.Servers[0] == self {
		n.logger.Warn("-raft.recover: the Raft configuration is already this node alone: nothing to recover; remove the flag",
			"config_index", confIndex)
		return nil
	}
	path := filepath.Join(dir, recoveredFile)
	if b, err := os.ReadFile(path); err == nil {
		var rec recoveryRecord
		if err := json.Unmarshal(b, &rec); err != nil {
			return fmt.Errorf("-raft.recover: %s: %w (it records the last recovery; move it away only if you mean to recover again)", path, err)
		}
		if confIndex > rec.ConfigIndex {
			return fmt.Errorf("-raft.recover: this node already recovered at index %d (%s), and the Raft configuration has changed since (index %d: %s): the cluster runs again, so recovering once more would split it; remove -raft.recover (only if a majority is lost for good again, move %s away and start with the flag)",
				rec.ConfigIndex, rec.Time, confIndex, describeServers(conf.Servers), path)
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("-raft.recover: read %s: %w", path, err)
	}
	var removed []string
	for _, s := range conf.Servers {
		if s.ID != n.id {
			removed = append(removed, string(s.ID))
		}
	}
	slices.Sort(removed)
	n.logger.Warn("-raft.recover: rebuilding a one-voter Raft configuration from this node's own log; entries the lost majority committed without this node are gone",
		"id", n.cfg.ID, "raft_addr", string(self.Address), "previous_configuration", describeServers(conf.Servers), "config_index", confIndex)
	// RecoverCluster replays into an FSM of its own and snapshots it; NewRaft restores n.fsm from
	// that snapshot.
	if err := raft.RecoverCluster(rc, NewFSM(n.logger), n.store, n.store, n.snaps, n.trans,
		raft.Configuration{Servers: []raft.Server{self}}); err != nil {
		return fmt.Errorf("-raft.recover: %w", err)
	}
	// RecoverCluster leaves everything in one snapshot (the log compacted away) whose
	// configuration is the new one: a later configuration change has a higher index than it.
	metas, err := n.snaps.List()
	if err != nil || len(metas) == 0 {
		return fmt.Errorf("-raft.recover: the recovery is done, but its snapshot does not list (restart without -raft.recover): %v", err)
	}
	last := metas[0].Index
	rec := recoveryRecord{ConfigIndex: last, Removed: removed, Time: time.Now().UTC().Format(time.RFC3339)}
	b, _ := json.MarshalIndent(rec, "", "  ")
	if err := writeFileSync(path, append(b, '\n')); err != nil {
		return fmt.Errorf("-raft.recover: the recovery is done, but recording it failed (restart without -raft.recover): %w", err)
	}
	n.logger.Warn("-raft.recover: recovered; this node is the only voter. Remove the dead members with 'ringctl remove ID' once their heartbeats are stale, add new nodes, and restart this node without -raft.recover",
		"removed_servers", strings.Join(removed, ","), "config_index", last)
	return nil
}

func describeServers(ss []raft.Server) string {
	parts := make([]string, 0, len(ss))
	for _, s := range ss {
		parts = append(parts, fmt.Sprintf("%s@%s (%s)", s.ID, s.Address, strings.ToLower(s.Suffrage.String())))
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}

// writeFileSync writes path through a temporary file, fsyncs it and renames it into place.
func writeFileSync(path string, data []byte) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	d, err := os.Open(filepath.Dir(path))
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
