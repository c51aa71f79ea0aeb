package lifecycle

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/raftingest/raftingest/ringstate"
)

// fakeRing is an in-memory Raft node shared by any number of members: commands apply to one
// *ringstate.Ring under a mutex, stamped with time.Now() (virtual under synctest) as the leader's
// time. It can inject faults per op.
type fakeRing struct {
	mu        sync.Mutex
	ring      *ringstate.Ring
	changed   chan struct{}
	index     uint64
	calls     []ringstate.Command // every Apply call, in order, faults included
	committed []commit            // every command applied to the ring, in order
	events    []string            // committed non-heartbeat commands, LeaveCluster calls and test marks
	faults    map[ringstate.Op][]fault
	noQuorum  bool

	// gate holds calls of gateOp until gateN of them wait, then lets them all through: it forces
	// concurrent commands to be decided against the same ring.
	gateOp      ringstate.Op
	gateN       int
	gateRelease chan struct{}

	// before, when set, runs (without the lock) before each Apply call reaches the ring.
	before func(cmd ringstate.Command)

	// removed holds, per member, a channel closed when its node's removal from the Raft cluster is
	// confirmed (removeFromCluster); that node's Apply calls then fail without a leader, as a real
	// removed node's do.
	removed map[ringstate.MemberID]chan struct{}
}

var errRemovedFromCluster = errors.New("fake: removed from the raft cluster")

// removedCh returns member id's removal channel. Call with f.mu held.
func (f *fakeRing) removedCh(id ringstate.MemberID) chan struct{} {
	if f.removed == nil {
		f.removed = map[ringstate.MemberID]chan struct{}{}
	}
	ch, ok := f.removed[id]
	if !ok {
		ch = make(chan struct{})
		f.removed[id] = ch
	}
	return ch
}

// removeFromCluster confirms that member id's node was removed from the Raft cluster.
func (f *fakeRing) removeFromCluster(id ringstate.MemberID) {
	f.mu.Lock()
	defer f.mu.Unlock()
	close(f.removedCh(id))
}

func (f *fakeRing) isRemoved(id ringstate.MemberID) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	select {
	case <-f.removedCh(id):
		return true
	default:
		return false
	}
}

type commit struct {
	cmd ringstate.Command
	err error
}

type fault int

const (
	faultTransient fault = iota + 1 // not applied, error returned (no leader)
	faultLost                       // applied, but the caller gets an unknown-outcome error
)

var (
	errNoLeader = errors.New("fake: no leader")
	errLost     = errors.New("fake: leadership lost, outcome unknown")
)

func newFakeRing() *fakeRing {
	return &fakeRing{ring: ringstate.New(), changed: make(chan struct{}), faults: map[ringstate.Op][]fault{}}
}

// node returns the view of the fake that member id's lifecycle uses.
func (f *fakeRing) node(id ringstate.MemberID) *fakeNode { return &fakeNode{f: f, id: id} }

// inject makes the next calls of op fail with the given faults, in order.
func (f *fakeRing) inject(op ringstate.Op, fs ...fault) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.faults[op] = append(f.faults[op], fs...)
}

// gate holds the next n calls of op until all n have arrived.
func (f *fakeRing) gate(op ringstate.Op, n int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.gateOp, f.gateN, f.gateRelease = op, n, make(chan struct{})
}

func (f *fakeRing) setNoQuorum(v bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.noQuorum = v
}

func (f *fakeRing) mark(ev string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.events = append(f.events, ev)
}

func (f *fakeRing) Ring() *ringstate.Ring {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.ring
}

func (f *fakeRing) Changed() <-chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.changed
}

func (f *fakeRing) Apply(ctx context.Context, cmd ringstate.Command) (uint64, error) {
	f.mu.Lock()
	before := f.before
	f.mu.Unlock()
	if before != nil {
		before(cmd)
	}
	f.mu.Lock()
	f.calls = append(f.calls, cmd)
	if f.noQuorum {
		f.mu.Unlock()
		<-ctx.Done()
		return 0, fmt.Errorf("fake: no quorum: %w", ctx.Err())
	}
	if f.gateN > 0 && cmd.Op == f.gateOp {
		release := f.gateRelease
		if f.gateN--; f.gateN == 0 {
			close(release)
		}
		f.mu.Unlock()
		select {
		case <-release:
		case <-ctx.Done():
			return 0, ctx.Err()
		}
		f.mu.Lock()
	}
	var ft fault
	if q := f.faults[cmd.Op]; len(q) > 0 {
		ft, f.faults[cmd.Op] = q[0], q[1:]
	}
	if ft == faultTransient {
		f.mu.Unlock()
		return 0, errNoLeader
	}
	idx, err := f.applyLocked(cmd)
	f.mu.Unlock()
	if ft == faultLost {
		return 0, errLost
	}
	return idx, err
}

func (f *fakeRing) applyLocked(cmd ringstate.Command) (uint64, error) {
	next, _, err := f.ring.Apply(cmd, time.Now().UnixMilli())
	f.ring = next
	f.index++
	f.committed = append(f.committed, commit{cmd, err})
	if cmd.Op != ringstate.OpHeartbeat {
		ev := cmd.Op.String() + " " + string(cmd.Member)
		if cmd.Peer != "" {
			ev += " " + string(cmd.Peer)
		}
		if err != nil {
			ev += " refused"
		}
		f.events = append(f.events, ev)
	}
	close(f.changed)
	f.changed = make(chan struct{})
	return f.index, err
}

// commit applies cmd as another actor would (a leaver, an operator), with no faults.
func (f *fakeRing) commit(t *testing.T, cmd ringstate.Command) {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, err := f.applyLocked(cmd); err != nil {
		t.Fatalf("commit %s %s: %v", cmd.Op, cmd.Member, err)
	}
}

// member returns id as the ring holds it.
func (f *fakeRing) member(t *testing.T, id ringstate.MemberID) ringstate.Member {
	t.Helper()
	m, ok := f.Ring().Member(id)
	if !ok {
		t.Fatalf("%s is not in the ring", id)
	}
	return m
}

// eventList returns the recorded events.
func (f *fakeRing) eventList() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.events...)
}

// callsOf returns every Apply call of op by member.
func (f *fakeRing) callsOf(id ringstate.MemberID, op ringstate.Op) []ringstate.Command {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []ringstate.Command
	for _, c := range f.calls {
		if c.Member == id && c.Op == op {
			out = append(out, c)
		}
	}
	return out
}

// committedOf returns the commands of op by member applied to the ring, with their outcomes.
func (f *fakeRing) committedOf(id ringstate.MemberID, op ringstate.Op) []commit {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []commit
	for _, c := range f.committed {
		if c.cmd.Member == id && c.cmd.Op == op {
			out = append(out, c)
		}
	}
	return out
}

// checkInvariants fails the test if a token has two owners (rebuilding the ring from its members
// checks every invariant of a committed ring).
func (f *fakeRing) checkInvariants(t *testing.T) {
	t.Helper()
	r := f.Ring()
	if _, err := ringstate.Restore(r.Members(), r.TimeMs(), r.Recent()); err != nil {
		t.Fatalf("ring breaks an invariant: %v", err)
	}
}

// fakeNode is one member's handle on the shared fake: LeaveCluster is per node.
type fakeNode struct {
	f  *fakeRing
	id ringstate.MemberID
}

func (n *fakeNode) Ring() *ringstate.Ring    { return n.f.Ring() }
func (n *fakeNode) Changed() <-chan struct{} { return n.f.Changed() }
func (n *fakeNode) Apply(ctx context.Context, cmd ringstate.Command) (uint64, error) {
	if n.f.isRemoved(n.id) {
		return 0, errNoLeader
	}
	return n.f.Apply(ctx, cmd)
}

func (n *fakeNode) WaitApplied(ctx context.Context, index uint64) error {
	for {
		n.f.mu.Lock()
		ch, idx := n.f.changed, n.f.index
		n.f.mu.Unlock()
		if idx >= index {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (n *fakeNode) Err() error {
	if n.f.isRemoved(n.id) {
		return errRemovedFromCluster
	}
	return nil
}

func (n *fakeNode) Removed() <-chan struct{} {
	n.f.mu.Lock()
	defer n.f.mu.Unlock()
	return n.f.removedCh(n.id)
}

func (n *fakeNode) LeaveCluster(ctx context.Context) error {
	n.f.mu.Lock()
	if n.f.noQuorum {
		n.f.mu.Unlock()
		<-ctx.Done()
		return fmt.Errorf("fake: no quorum: %w", ctx.Err())
	}
	defer n.f.mu.Unlock()
	n.f.events = append(n.f.events, "leave-cluster "+string(n.id))
	return nil
}

var _ Ring = (*fakeNode)(nil)

// logBuffer collects log output from several goroutines.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// count returns how many log lines contain every one of subs.
func (b *logBuffer) count(subs ...string) int {
	n := 0
	for line := range strings.SplitSeq(b.String(), "\n") {
		ok := line != ""
		for _, s := range subs {
			ok = ok && strings.Contains(line, s)
		}
		if ok {
			n++
		}
	}
	return n
}
