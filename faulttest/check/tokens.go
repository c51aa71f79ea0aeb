package check

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"time"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"go.etcd.io/bbolt"

	"github.com/raftingest/raftingest/raftfsm"
	"github.com/raftingest/raftingest/ringstate"
)

// MemberLog is one member's Raft log as it stood after the run, with the snapshot it was compacted
// to (if any), so that it can be replayed from the state the first entry applies to.
type MemberLog struct {
	Member  string
	Entries []*raft.Log // ascending index, no gaps
	// Base is the ring at index BaseIndex, from which Entries[0] (at BaseIndex+1) applies. When the
	// log was compacted past the newest snapshot that precedes it, Base is the snapshot and entries
	// up to its index are skipped for replay (still compared for convergence).
	Base      *ringstate.Ring
	BaseIndex uint64
	// Commit is the highest index known committed on this member (0: unknown; all entries up to the
	// last common index of a converged cluster are then compared).
	Commit uint64
}

// ReadBoltLog reads a member's raft-boltdb log without touching the original: it copies
// <dataDir>/raft/raft.db to scratch (a directory) and opens the copy read-only, and loads the
// newest snapshot under <dataDir>/raft/snapshots that the log can be replayed from.
func ReadBoltLog(member, dataDir, scratch string) (*MemberLog, error) {
	src := filepath.Join(dataDir, "raft", "raft.db")
	dst := filepath.Join(scratch, member+"-raft.db")
	if err := copyFile(src, dst); err != nil {
		return nil, err
	}
	defer os.Remove(dst)
	store, err := raftboltdb.New(raftboltdb.Options{Path: dst, BoltOptions: &bbolt.Options{ReadOnly: true}})
	if err != nil {
		return nil, fmt.Errorf("check: open %s: %w", dst, err)
	}
	defer store.Close()
	ml, err := ReadLogStore(member, store)
	if err != nil {
		return nil, err
	}
	// Replay from the newest snapshot when there is one: entries at or below a snapshot's index may
	// be stale leftovers of an InstallSnapshot (hashicorp/raft keeps its older trailing entries and
	// never reads them again), so only the entries after it are authoritative.
	need := ml.NeedsBase()
	base, idx, err := loadSnapshot(filepath.Join(dataDir, "raft", "snapshots"), need)
	switch {
	case err != nil && need > 0:
		return nil, fmt.Errorf("check: %s: log %d..%d is contiguous only from %d: %w", member,
			ml.Entries[0].Index, ml.Entries[len(ml.Entries)-1].Index, need+1, err)
	case err == nil:
		ml.Base, ml.BaseIndex = base, idx
	}
	return ml, nil
}

// ReadLogStore reads every entry of a raft.LogStore (raft-boltdb or raft.InmemStore).
func ReadLogStore(member string, store raft.LogStore) (*MemberLog, error) {
	first, err := store.FirstIndex()
	if err != nil {
		return nil, err
	}
	last, err := store.LastIndex()
	if err != nil {
		return nil, err
	}
	ml := &MemberLog{Member: member, Base: ringstate.New()}
	if last == 0 {
		return ml, nil
	}
	for i := first; i <= last; i++ {
		l := new(raft.Log)
		if err := store.GetLog(i, l); err != nil {
			if errors.Is(err, raft.ErrLogNotFound) {
				// A follower that installed a snapshot keeps its older trailing entries and appends
				// after the snapshot's index: the gap is legitimate, ReplayNeedsBase reports it.
				continue
			}
			return nil, fmt.Errorf("check: %s: log entry %d (log %d..%d): %w", member, i, first, last, err)
		}
		ml.Entries = append(ml.Entries, l)
	}
	return ml, nil
}

// NeedsBase returns the lowest index a snapshot must have for the log to be replayed from it: the
// index before the first entry of the last contiguous run (0 when the log is contiguous from 1).
func (ml *MemberLog) NeedsBase() uint64 {
	for k := len(ml.Entries) - 1; k >= 0; k-- {
		if k == 0 || ml.Entries[k].Index != ml.Entries[k-1].Index+1 {
			if k == 0 && ml.Entries[0].Index == 1 {
				return 0
			}
			return ml.Entries[k].Index - 1
		}
	}
	return 0
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("check: %w", err)
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return fmt.Errorf("check: %w", err)
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return fmt.Errorf("check: copy %s: %w", src, err)
	}
	return out.Close()
}

// loadSnapshot returns the ring of the newest snapshot in dir whose index is at least minIndex.
func loadSnapshot(dir string, minIndex uint64) (*ringstate.Ring, uint64, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, 0, fmt.Errorf("no snapshot to replay from: %w", err)
	}
	var best *raft.SnapshotMeta
	var bestDir string
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(dir, e.Name(), "meta.json"))
		if err != nil {
			continue
		}
		var m raft.SnapshotMeta
		if json.Unmarshal(b, &m) != nil || m.Index < minIndex {
			continue
		}
		if best == nil || m.Index > best.Index {
			best, bestDir = &m, filepath.Join(dir, e.Name())
		}
	}
	if best == nil {
		return nil, 0, errors.New("no snapshot at or after the log's start")
	}
	data, err := os.ReadFile(filepath.Join(bestDir, "state.bin"))
	if err != nil {
		return nil, 0, err
	}
	r, err := raftfsm.DecodeSnapshot(data)
	if err != nil {
		return nil, 0, fmt.Errorf("snapshot %s: %w", bestDir, err)
	}
	return r, best.Index, nil
}

// Violation is one broken invariant at one committed index of one member's log.
type Violation struct {
	Member string `json:"member"`
	Index  uint64 `json:"index"`
	Op     string `json:"op"`
	What   string `json:"what"`
}

func (v Violation) String() string {
	return fmt.Sprintf("%s@%d (%s): %s", v.Member, v.Index, v.Op, v.What)
}

// RingStep is the ring after one command entry: what the token checker looks at.
type RingStep struct {
	Member  string
	Index   uint64
	Op      ringstate.Op
	Cmd     ringstate.Command
	Code    ringstate.Code
	Members []ringstate.Member
}

// TokenChecker checks, after every entry, that every token has exactly one owner, that every member
// is in a legal state (the ring would pass ringstate.Restore), that every state change is a legal
// transition (or a restart fix-up by register), and that a completed hand-over moved exactly the
// leaver's tokens to the joiner in that one entry. Feed it with Observe, in index order, per member.
type TokenChecker struct {
	prev       map[string][]ringstate.Member // per log
	Entries    int
	Violations []Violation
}

// NewTokenChecker returns an empty checker.
func NewTokenChecker() *TokenChecker { return &TokenChecker{prev: map[string][]ringstate.Member{}} }

func (c *TokenChecker) bad(s *RingStep, format string, args ...any) {
	if len(c.Violations) < 100 {
		c.Violations = append(c.Violations, Violation{Member: s.Member, Index: s.Index, Op: s.Op.String(),
			What: fmt.Sprintf(format, args...)})
	}
}

// Observe checks one step.
func (c *TokenChecker) Observe(s RingStep) {
	c.Entries++
	owner := map[ringstate.Token]ringstate.MemberID{}
	for i := range s.Members {
		m := &s.Members[i]
		if !m.State.Valid() {
			c.bad(&s, "member %s in illegal state %d", m.ID, m.State)
		}
		if m.State == ringstate.PENDING && len(m.Tokens) > 0 {
			c.bad(&s, "PENDING member %s owns %d tokens", m.ID, len(m.Tokens))
		}
		for _, t := range m.Tokens {
			if o, dup := owner[t]; dup {
				c.bad(&s, "token %d owned by both %s and %s", t, o, m.ID)
				continue
			}
			owner[t] = m.ID
		}
	}
	if _, err := ringstate.Restore(s.Members, 0, nil); err != nil {
		c.bad(&s, "ring invariants: %v", err)
	}
	prev := c.prev[s.Member]
	byID := func(ms []ringstate.Member, id ringstate.MemberID) (ringstate.Member, bool) {
		i := slices.IndexFunc(ms, func(m ringstate.Member) bool { return m.ID == id })
		if i < 0 {
			return ringstate.Member{}, false
		}
		return ms[i], true
	}
	for _, m := range s.Members {
		p, ok := byID(prev, m.ID)
		if !ok || p.State == m.State {
			continue
		}
		fixup := s.Op == ringstate.OpRegister && p.State == ringstate.LEAVING && m.State == ringstate.ACTIVE
		if !ringstate.LegalTransition(p.State, m.State) && !fixup {
			c.bad(&s, "member %s moved %s -> %s", m.ID, p.State, m.State)
		}
	}
	if s.Op == ringstate.OpCompleteHandover && s.Code == ringstate.CodeOK {
		leaver, lok := byID(prev, s.Cmd.Member)
		joiner, jok := byID(s.Members, s.Cmd.Peer)
		_, stillThere := byID(s.Members, s.Cmd.Member)
		switch {
		case !lok || !jok:
			c.bad(&s, "hand-over %s -> %s: a side is missing", s.Cmd.Member, s.Cmd.Peer)
		case stillThere:
			c.bad(&s, "hand-over %s -> %s: leaver still in the ring", s.Cmd.Member, s.Cmd.Peer)
		case !slices.Equal(leaver.Tokens, joiner.Tokens):
			c.bad(&s, "hand-over %s -> %s: joiner has %d tokens, leaver had %d", s.Cmd.Member, s.Cmd.Peer,
				len(joiner.Tokens), len(leaver.Tokens))
		}
	}
	c.prev[s.Member] = s.Members
}

// Valid is the verdict.
func (c *TokenChecker) Valid() bool { return len(c.Violations) == 0 }

// Replay is the outcome of replaying one member's log through the pure FSM.
type Replay struct {
	Member string
	// Hash[i] is the FSM state hash after applying the entry at index i (only indexes replayed).
	Hash map[uint64]string
	// Outcomes maps request id to the index and code of its first application.
	Outcomes map[string]Committed
	Final    *ringstate.Ring
	Last     uint64
	// Gap is set when the log is not contiguous after the base: the replay stopped there.
	Gap string
	// Undecodable counts command entries that did not decode (refused by every replica alike).
	Undecodable int
}

// Committed is a command's first outcome, found by request id.
type Committed struct {
	Index uint64
	Cmd   ringstate.Command
	Code  ringstate.Code
	// At, when known, is a time by which the command had taken effect (the earliest time any
	// replica applied its entry). It bounds the linearization point of a command whose client never
	// learned the outcome; without it the command is open-ended, which costs porcupine dearly.
	At time.Time
}

// ReplayLog replays ml through raftfsm.DecodeLog and ringstate's Apply at the ring time DecodeLog
// gives (the leader's stamp, else AppendedAt), exactly as the FSM does, calling obs (may be nil)
// after every command entry.
func ReplayLog(ml *MemberLog, obs func(RingStep)) *Replay {
	rp := &Replay{Member: ml.Member, Hash: map[uint64]string{}, Outcomes: map[string]Committed{}}
	r := ml.Base
	if r == nil {
		r = ringstate.New()
	}
	rp.Last = ml.BaseIndex
	// Commands compacted into the base snapshot are still known by request id: the ring remembers
	// the outcomes of its last requests, and the snapshot carries that memory.
	for _, a := range r.Recent() {
		if _, seen := rp.Outcomes[a.RequestID]; !seen {
			rp.Outcomes[a.RequestID] = Committed{Index: ml.BaseIndex, Code: a.Code}
		}
	}
	for _, l := range ml.Entries {
		if l.Index <= ml.BaseIndex {
			continue
		}
		if l.Index != rp.Last+1 {
			rp.Gap = fmt.Sprintf("entry %d follows %d: cannot replay past the gap", l.Index, rp.Last)
			break
		}
		rp.Last = l.Index
		if l.Type != raft.LogCommand {
			rp.Hash[l.Index] = StateHash(r)
			continue
		}
		cmd, nowMs, err := raftfsm.DecodeLog(l, r.TimeMs())
		if err != nil {
			rp.Undecodable++
			rp.Hash[l.Index] = StateHash(r)
			continue
		}
		next, _, aerr := r.Apply(cmd, nowMs)
		code := ringstate.CodeOf(aerr)
		if cmd.RequestID != "" {
			if _, seen := rp.Outcomes[cmd.RequestID]; !seen {
				rp.Outcomes[cmd.RequestID] = Committed{Index: l.Index, Cmd: cmd, Code: code}
			}
		}
		r = next
		rp.Hash[l.Index] = StateHash(r)
		if obs != nil {
			obs(RingStep{Member: ml.Member, Index: l.Index, Op: cmd.Op, Cmd: cmd, Code: code, Members: r.Members()})
		}
	}
	rp.Final = r
	return rp
}

// StateHash is the per-entry FSM state hash used for convergence: every member field (tokens,
// states, addresses, heartbeat and registration times), ring time, and the request memory's length
// and newest entries. It is cheaper than RingHash, which encodes the whole request memory, so it
// can be taken after every applied entry.
func StateHash(r *ringstate.Ring) string {
	h := sha256.New()
	fmt.Fprintf(h, "t=%d\n", r.TimeMs())
	for _, m := range r.Members() {
		fmt.Fprintf(h, "%s|%s|%s|%s|%s|%d|%v|%d|%d|%s\n", m.ID, m.RaftAddr, m.GRPCAddr, m.HTTPAddr, m.Zone, m.State,
			m.Tokens, m.RegisteredMs, m.HeartbeatMs, m.HandoverPeer)
	}
	rec := r.Recent()
	fmt.Fprintf(h, "recent=%d\n", len(rec))
	for _, a := range rec[max(0, len(rec)-8):] {
		fmt.Fprintf(h, "%s=%d %s\n", a.RequestID, a.Code, a.Message)
	}
	return hex.EncodeToString(h.Sum(nil)[:8])
}

// RingHash is the full FSM state hash: SHA-256 of the deterministic snapshot encoding (members, ring time,
// request memory), short hex.
func RingHash(r *ringstate.Ring) string {
	b, err := raftfsm.EncodeSnapshot(r)
	if err != nil {
		return "unencodable:" + err.Error()
	}
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:8])
}

// TokenResult is checker 3's figures.
type TokenResult struct {
	Members    int         `json:"members"`
	Entries    int         `json:"entries_checked"`
	Violations []Violation `json:"violations,omitempty"`
}

// Valid is the verdict.
func (r *TokenResult) Valid() bool { return len(r.Violations) == 0 }

func (r *TokenResult) String() string {
	v := "PASS"
	if !r.Valid() {
		v = "FAIL"
	}
	s := fmt.Sprintf("%s members=%d entries-checked=%d violations=%d", v, r.Members, r.Entries, len(r.Violations))
	for i, x := range r.Violations {
		if i == 5 {
			break
		}
		s += "\n    " + x.String()
	}
	return s
}

// CheckTokens replays every member's log and checks the token invariants after every entry.
func CheckTokens(logs []*MemberLog) (TokenResult, []*Replay) {
	c := NewTokenChecker()
	var reps []*Replay
	sorted := slices.Clone(logs)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].Member < sorted[j].Member })
	for _, ml := range sorted {
		rp := ReplayLog(ml, c.Observe)
		if rp.Gap != "" {
			c.Violations = append(c.Violations, Violation{Member: ml.Member, Index: rp.Last, What: rp.Gap})
		}
		reps = append(reps, rp)
	}
	return TokenResult{Members: len(logs), Entries: c.Entries, Violations: c.Violations}, reps
}
