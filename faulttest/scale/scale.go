// Package scale is the 1,000-member proof of the ring (issue 16): the ring FSM (raftfsm.FSM over
// ringstate) on 5 real hashicorp/raft voters in 3 zones, inside a testing/synctest bubble, with
// hundreds to thousands of simulated ring members that register, claim balanced tokens, activate
// and heartbeat every -ring.heartbeat-period through the voters, as ingesters do. The voters talk
// over raft.InmemTransport with a modelled network (a round trip of 0.5 ms within a zone, 2 ms
// across) and an fsync of 2 ms on every log write, so latencies in virtual time are those of that
// model, not of this machine's CPU: the figures say what the protocol and the batching cost on
// such a network, not how fast this process runs.
//
// Run measures, in virtual time: the commit latency of every entry proposed (propose → applied on
// the leader: registrations, token claims, activations, heartbeat batches, removals), the
// acknowledgement latency of every heartbeat (sent → acknowledged, the batch window included),
// Raft entries per second with only heartbeats flowing at FirstSize members and at Members, the
// FSM snapshot of the full ring, its ownership spread; then it stops 1% of the members
// heartbeating, one at a time, and lets auto-forget (ringstate.Ring.AutoForget, as the leader runs
// it, with a holdoff between two forgets) remove each, checking every second that simulated
// writes keep a quorum and, at every forget, that no acknowledged write younger than the holdoff
// (not yet flushed) is left without a copy on a ring member.
//
// A member is a goroutine, not a process: its heartbeat goes to a voter of its zone, which hands
// it to the leader's batcher (raftfsm.HeartbeatBatcher) when it leads; a follower voter collects
// its members' heartbeats for Config.ForwardWindow and forwards them to the leader together, after
// a round trip, as one request (HeartbeatBatcher.SubmitAll). In a real cluster every node is one
// member and forwards its one heartbeat a period over gRPC; the leader coalesces what all of them
// send.
package scale

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"

	"github.com/raftingest/raftingest/raftfsm"
	"github.com/raftingest/raftingest/ringstate"
)

// Config is one scale run.
type Config struct {
	Members   int // ring size at the end of the growth (1,000 in make scale)
	FirstSize int // ring size of the first entry-rate measurement (100)
	Tokens    int // per member (128)
	Voters    int // Raft voters (5)
	Zones     int // zones, of voters and members (3)
	// HeartbeatPeriod and HeartbeatTimeout are -ring.heartbeat-period and -ring.heartbeat-timeout.
	HeartbeatPeriod, HeartbeatTimeout time.Duration
	// BatchWindow is -ring.heartbeat-batch-window; 0 sends every heartbeat as an entry of its own.
	BatchWindow time.Duration
	// ForwardWindow is how long a follower voter collects the heartbeats of its members before it
	// forwards them to the leader together, as one request (with batching; 50ms when 0).
	ForwardWindow time.Duration
	// MeasureFor is how long (virtual time) each entry-rate measurement lasts.
	MeasureFor time.Duration
	// Kill is how many members stop heartbeating, one after the other, for auto-forget: 0 is 1% of
	// Members (at least one), -1 none.
	Kill int
	// ForgetPeriods is -ring.auto-forget-unhealthy-periods; ForgetHoldoff the leader's wait between
	// two forgets (twice -ingester.flush-period in the real leader). A write older than the holdoff
	// counts as flushed to the bucket.
	ForgetPeriods int
	ForgetHoldoff time.Duration
	// WritesPerSecond simulated writes are issued on random keys during the kill phase.
	WritesPerSecond int
	Seed            int64
	Logf            func(format string, args ...any)
}

func (c *Config) defaults() {
	set := func(p *int, v int) {
		if *p == 0 {
			*p = v
		}
	}
	set(&c.Members, 1000)
	set(&c.FirstSize, 100)
	set(&c.Tokens, 128)
	set(&c.Voters, 5)
	set(&c.Zones, 3)
	set(&c.ForgetPeriods, 2)
	set(&c.WritesPerSecond, 50)
	switch {
	case c.Kill == 0:
		c.Kill = max(1, c.Members/100)
	case c.Kill < 0:
		c.Kill = 0
	}
	if c.HeartbeatPeriod == 0 {
		c.HeartbeatPeriod = 5 * time.Second
	}
	if c.HeartbeatTimeout == 0 {
		c.HeartbeatTimeout = time.Minute
	}
	if c.MeasureFor == 0 {
		c.MeasureFor = time.Minute
	}
	if c.ForwardWindow == 0 {
		c.ForwardWindow = 50 * time.Millisecond
	}
	if c.ForgetHoldoff == 0 {
		c.ForgetHoldoff = time.Minute
	}
	if c.Logf == nil {
		c.Logf = func(string, ...any) {}
	}
}

// The modelled network and disk.
const (
	rttSameZone  = 500 * time.Microsecond
	rttCrossZone = 2 * time.Millisecond
	fsyncTime    = 2 * time.Millisecond
	applyTimeout = 5 * time.Second
	replication  = 3
)

// Result is what a run measured; durations are virtual time.
type Result struct {
	Members int
	// CommitP99 and CommitMax are over every entry proposed (Commits of them).
	CommitP99, CommitMax time.Duration
	Commits              int
	// HeartbeatP99 is over every heartbeat acknowledged (Heartbeats), batch window included;
	// HeartbeatErrors counts the heartbeats not acknowledged or refused.
	HeartbeatP99    time.Duration
	Heartbeats      int
	HeartbeatErrors int
	SnapshotBytes   int
	Spread          float64
	// EntriesFirst and EntriesFull are Raft entries a second (every entry the leader applied) with
	// only heartbeats flowing, at FirstSize and at Members.
	EntriesFirst, EntriesFull float64
	// MaxBatch is the largest heartbeat batch proposed.
	MaxBatch int
	// Forwards is how many requests follower voters sent the leader, carrying ForwardedBeats
	// heartbeats.
	Forwards, ForwardedBeats int
	// CoReplicasMean and CoReplicasMax: how many members share a replication set with a member.
	CoReplicasMean float64
	CoReplicasMax  int
	// Killed and Forgotten, in order; ForgetAfter is each one's time from kill to forget.
	Killed, Forgotten []ringstate.MemberID
	ForgetAfter       []time.Duration
	// Writes issued in the kill phase, WritesNoQuorum of them with fewer than a quorum of live
	// replicas, WritesLost acknowledged ones left without a copy before they could be flushed.
	Writes, WritesNoQuorum, WritesLost int
	// Ring is the committed ring before the kills.
	Ring *ringstate.Ring
	// Errors the run found (a bound of the run itself broken: a forget of the wrong member, a
	// member never forgotten, a command refused).
	Errors           []string
	Virtual, WallRun time.Duration
}

// Run runs cfg in a synctest bubble of t and returns what it measured.
func Run(t *testing.T, cfg Config) *Result {
	cfg.defaults()
	var res *Result
	wall := time.Now()
	synctest.Test(t, func(t *testing.T) {
		c := newCluster(cfg)
		res = c.run()
		c.shutdown()
	})
	res.WallRun = time.Since(wall)
	return res
}

type voter struct {
	idx     int
	id      raft.ServerID
	zone    int
	r       *raft.Raft
	trans   *lagTransport
	fsm     *raftfsm.FSM
	batcher *raftfsm.HeartbeatBatcher // as leader: coalesces heartbeats into entries
	fwd     *raftfsm.HeartbeatBatcher // as follower: coalesces its members' heartbeats into one request
}

type cluster struct {
	cfg    Config
	start  time.Time
	voters []*voter
	rng    *rand.Rand

	mu         sync.Mutex
	commits    []time.Duration
	beats      []time.Duration
	beatErrs   int
	lastErr    error
	maxBatch   int
	forwards   int
	forwarded  int
	errs       []string
	lastStamp  int64
	memberStop map[int]context.CancelFunc

	wg sync.WaitGroup
}

func newCluster(cfg Config) *cluster {
	c := &cluster{cfg: cfg, start: time.Now(), rng: rand.New(rand.NewPCG(uint64(cfg.Seed), 16)),
		memberStop: map[int]context.CancelFunc{}}
	var servers []raft.Server
	for i := range cfg.Voters {
		v := &voter{idx: i, id: raft.ServerID(fmt.Sprintf("voter-%d", i)), zone: i % cfg.Zones}
		c.voters = append(c.voters, v)
		servers = append(servers, raft.Server{Suffrage: raft.Voter, ID: v.id, Address: raft.ServerAddress(v.id)})
	}
	for _, v := range c.voters {
		store := &syncStore{InmemStore: raft.NewInmemStore(), fsync: fsyncTime}
		snaps := raft.NewInmemSnapshotStore()
		_, inner := raft.NewInmemTransportWithTimeout(raft.ServerAddress(v.id), time.Second)
		v.trans = &lagTransport{InmemTransport: inner, rtt: func(target raft.ServerAddress) time.Duration {
			return c.rtt(v.zone, c.voterByAddr(target).zone)
		}}
		conf := c.raftConfig(v)
		if err := raft.BootstrapCluster(conf, store, store, snaps, v.trans, raft.Configuration{Servers: servers}); err != nil {
			panic(fmt.Sprintf("scale: bootstrap %s: %v", v.id, err)) // in-memory stores cannot fail here
		}
		v.fsm = raftfsm.NewFSM(nil)
		r, err := raft.NewRaft(conf, v.fsm, store, store, snaps, v.trans)
		if err != nil {
			panic(fmt.Sprintf("scale: start %s: %v", v.id, err))
		}
		v.r = r
		if cfg.BatchWindow > 0 {
			v.batcher = raftfsm.NewHeartbeatBatcher(cfg.BatchWindow, raftfsm.DefaultMaxBatchBeats, func(beats []ringstate.Beat) []raftfsm.BeatResult {
				return c.proposeBatch(v, beats)
			})
			v.fwd = raftfsm.NewHeartbeatBatcher(cfg.ForwardWindow, raftfsm.DefaultMaxBatchBeats, func(beats []ringstate.Beat) []raftfsm.BeatResult {
				return c.forward(v, beats)
			})
		}
	}
	for _, a := range c.voters {
		for _, b := range c.voters {
			if a != b {
				a.trans.Connect(raft.ServerAddress(b.id), b.trans.InmemTransport)
			}
		}
	}
	return c
}

func (c *cluster) raftConfig(v *voter) *raft.Config {
	conf := raft.DefaultConfig()
	conf.LocalID = v.id
	conf.HeartbeatTimeout = time.Second
	conf.ElectionTimeout = time.Second
	conf.LeaderLeaseTimeout = 500 * time.Millisecond
	conf.CommitTimeout = 50 * time.Millisecond
	conf.Logger = hclog.New(&hclog.LoggerOptions{Name: string(v.id), Level: hclog.Error, TimeFn: time.Now})
	return conf
}

func (c *cluster) voterByAddr(a raft.ServerAddress) *voter {
	for _, v := range c.voters {
		if raft.ServerAddress(v.id) == a {
			return v
		}
	}
	return c.voters[0]
}

func (c *cluster) rtt(a, b int) time.Duration {
	if a == b {
		return rttSameZone
	}
	return rttCrossZone
}

func (c *cluster) leader() *voter {
	for _, v := range c.voters {
		if v.r.State() == raft.Leader {
			return v
		}
	}
	return nil
}

func (c *cluster) waitLeader() *voter {
	for range 600 {
		if l := c.leader(); l != nil {
			return l
		}
		time.Sleep(100 * time.Millisecond)
	}
	panic("scale: no leader after 60s of virtual time")
}

func (c *cluster) fail(format string, args ...any) {
	c.mu.Lock()
	c.errs = append(c.errs, fmt.Sprintf(format, args...))
	c.mu.Unlock()
}

// stamp is the leader's ring-time stamp: its clock, never below the last stamp (the leader's
// ringClock does the same).
func (c *cluster) stamp() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.lastStamp = max(c.lastStamp, time.Now().UnixMilli())
	return c.lastStamp
}

// commit proposes a stamped entry on v and waits until v applied it, recording the latency.
func (c *cluster) commit(v *voter, data []byte) (uint64, *raftfsm.ApplyResult, error) {
	start := time.Now()
	f := v.r.Apply(data, applyTimeout)
	if err := f.Error(); err != nil {
		return 0, nil, err
	}
	d := time.Since(start)
	c.mu.Lock()
	c.commits = append(c.commits, d)
	c.mu.Unlock()
	res, ok := f.Response().(*raftfsm.ApplyResult)
	if !ok {
		return f.Index(), nil, fmt.Errorf("scale: apply response %T", f.Response())
	}
	return f.Index(), res, nil
}

// apply commits cmd through the leader, as ringctl or a lifecycle would (a follower forwards to
// it), and returns its outcome.
func (c *cluster) apply(cmd ringstate.Command) error {
	data, err := raftfsm.EncodeCommand(cmd)
	if err != nil {
		return err
	}
	for attempt := 0; ; attempt++ {
		l := c.waitLeader()
		stamped, err := raftfsm.StampCommand(data, c.stamp())
		if err != nil {
			return err
		}
		_, res, err := c.commit(l, stamped)
		if errors.Is(err, raft.ErrNotLeader) || errors.Is(err, raft.ErrLeadershipLost) {
			if attempt < 5 {
				continue
			}
		}
		if err != nil {
			return err
		}
		return res.Err()
	}
}

// proposeBatch is voter v's raftfsm.ProposeBeats: one OpHeartbeatBatch entry.
func (c *cluster) proposeBatch(v *voter, beats []ringstate.Beat) []raftfsm.BeatResult {
	c.mu.Lock()
	c.maxBatch = max(c.maxBatch, len(beats))
	c.mu.Unlock()
	data, err := raftfsm.EncodeHeartbeatBatch(beats, c.stamp())
	if err != nil {
		return raftfsm.BatchResults(beats, 0, nil, err)
	}
	idx, res, err := c.commit(v, data)
	if err != nil {
		return raftfsm.BatchResults(beats, idx, nil, err)
	}
	return raftfsm.BatchResults(beats, idx, res.Events, res.Err())
}

// forward is follower voter v's forwarding of its members' heartbeats: one request to the leader (a
// round trip) carrying all of them, which the leader's batcher takes together. In a real cluster a
// node forwards only its own heartbeat (it is one member); here many members share a voter.
func (c *cluster) forward(v *voter, beats []ringstate.Beat) []raftfsm.BeatResult {
	l := c.leader()
	if l == nil {
		return raftfsm.BatchResults(beats, 0, nil, errors.New("no leader"))
	}
	if l != v {
		time.Sleep(c.rtt(v.zone, l.zone))
		c.mu.Lock()
		c.forwards++
		c.forwarded += len(beats)
		c.mu.Unlock()
	}
	ctx, cancel := context.WithTimeout(context.Background(), c.cfg.HeartbeatPeriod)
	defer cancel()
	return l.batcher.SubmitAll(ctx, beats)
}

// heartbeat sends member i's heartbeat through a voter of its zone: handed to the leader's batcher
// directly when that voter leads, else through the voter's forwarding batcher; proposed as an entry
// of its own when batching is off. It returns when the heartbeat is acknowledged, refused or the
// period is over.
func (c *cluster) heartbeat(ctx context.Context, i int) {
	sent := time.Now()
	ctx, cancel := context.WithTimeout(ctx, c.cfg.HeartbeatPeriod)
	defer cancel()
	var err error
	l := c.leader()
	switch {
	case l == nil:
		err = errors.New("no leader")
	default:
		via := c.via(i)
		beat := ringstate.Beat{Member: MemberID(i), CommandVersion: ringstate.HeartbeatBatchCommandVersion}
		switch {
		case l.batcher != nil && via == l:
			err = l.batcher.Submit(ctx, beat).Err
		case l.batcher != nil:
			err = via.fwd.Submit(ctx, beat).Err
		default:
			if via != l {
				time.Sleep(c.rtt(via.zone, l.zone))
			}
			err = c.apply(ringstate.Command{Op: ringstate.OpHeartbeat, Member: MemberID(i),
				CommandVersion: ringstate.HeartbeatBatchCommandVersion})
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if err != nil {
		if ctx.Err() != nil && errors.Is(ctx.Err(), context.Canceled) {
			return // killed while sending
		}
		c.beatErrs++
		c.lastErr = fmt.Errorf("heartbeat %s: %w", MemberID(i), err)
		return
	}
	c.beats = append(c.beats, time.Since(sent))
}

// via is the voter member i sends its heartbeats to: one of its zone's, the members of a zone
// spread over them.
func (c *cluster) via(i int) *voter {
	var zone []*voter
	for _, v := range c.voters {
		if v.zone == i%c.cfg.Zones {
			zone = append(zone, v)
		}
	}
	if len(zone) == 0 {
		return c.voters[i%len(c.voters)]
	}
	return zone[(i/c.cfg.Zones)%len(zone)]
}

// startMember starts member i heartbeating every period, from a random phase.
func (c *cluster) startMember(i int) {
	ctx, cancel := context.WithCancel(context.Background())
	c.mu.Lock()
	c.memberStop[i] = cancel
	phase := time.Duration(c.rng.Int64N(int64(c.cfg.HeartbeatPeriod)))
	c.mu.Unlock()
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		t := time.NewTimer(phase)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			next := time.Now().Add(c.cfg.HeartbeatPeriod)
			c.heartbeat(ctx, i)
			t.Reset(max(time.Until(next), 0))
		}
	}()
}

func (c *cluster) stopMember(i int) {
	c.mu.Lock()
	cancel := c.memberStop[i]
	delete(c.memberStop, i)
	c.mu.Unlock()
	if cancel != nil {
		cancel()
	}
}

// join registers member i, claims balanced tokens computed from the leader's committed ring and
// activates it, then starts its heartbeats.
func (c *cluster) join(i int) error {
	if err := c.apply(register(i, c.cfg.Zones)); err != nil {
		return err
	}
	c.startMember(i)
	ts, err := c.waitLeader().fsm.Ring().BalancedTokens(c.cfg.Tokens)
	if err != nil {
		return err
	}
	if err := c.apply(ringstate.Command{Op: ringstate.OpClaimTokens, Member: MemberID(i), Tokens: ts}); err != nil {
		return err
	}
	return c.apply(ringstate.Command{Op: ringstate.OpActivate, Member: MemberID(i)})
}

// entriesPerSecond is the leader's applied entries a second over d, with nothing but heartbeats
// flowing.
func (c *cluster) entriesPerSecond(d time.Duration) float64 {
	l := c.waitLeader()
	from := l.r.AppliedIndex()
	time.Sleep(d)
	if c.leader() != l {
		c.fail("leadership changed while measuring the entry rate")
	}
	return float64(l.r.AppliedIndex()-from) / d.Seconds()
}

func p99(ds []time.Duration) (time.Duration, time.Duration) {
	if len(ds) == 0 {
		return 0, 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[(len(s)*99+99)/100-1], s[len(s)-1]
}

func (c *cluster) run() *Result {
	cfg := c.cfg
	res := &Result{Members: cfg.Members}
	c.waitLeader()
	timeoutMs := cfg.HeartbeatTimeout.Milliseconds()
	grow := func(from, to int) bool {
		for i := from; i < to; i++ {
			if err := c.join(i); err != nil {
				c.fail("join %s: %v", MemberID(i), err)
				return false
			}
		}
		// Every member has heartbeated at least once from its steady phase.
		time.Sleep(cfg.HeartbeatPeriod + cfg.BatchWindow + time.Second)
		return true
	}
	if !grow(0, cfg.FirstSize) {
		return c.finish(res)
	}
	res.EntriesFirst = c.entriesPerSecond(cfg.MeasureFor)
	cfg.Logf("%d members: %.2f entries/s", cfg.FirstSize, res.EntriesFirst)
	if !grow(cfg.FirstSize, cfg.Members) {
		return c.finish(res)
	}
	res.EntriesFull = c.entriesPerSecond(cfg.MeasureFor)
	cfg.Logf("%d members: %.2f entries/s", cfg.Members, res.EntriesFull)

	l := c.waitLeader()
	r := l.fsm.Ring()
	res.Ring = r
	for i := range r.Len() {
		if m := r.MemberAt(i); m.State != ringstate.ACTIVE || !m.Healthy(r.TimeMs(), timeoutMs) {
			c.fail("member %s is %s, heartbeat %dms old, before any kill", m.ID, m.State, r.TimeMs()-m.HeartbeatMs)
		}
	}
	if r.Len() != cfg.Members {
		c.fail("ring has %d members, want %d", r.Len(), cfg.Members)
	}
	res.Spread = Spread(r)
	snap, err := raftfsm.EncodeSnapshot(r)
	if err != nil {
		c.fail("encode snapshot: %v", err)
	}
	res.SnapshotBytes = len(snap)
	if err := l.r.Snapshot().Error(); err != nil {
		c.fail("raft snapshot of the full ring: %v", err)
	}
	res.CoReplicasMean, res.CoReplicasMax = CoReplicas(r, replication)

	c.killPhase(res)
	return c.finish(res)
}

type write struct {
	at     time.Time
	copies []ringstate.MemberID
}

// killPhase stops cfg.Kill members one after the other; after each, it waits for auto-forget to
// remove it (deciding every second, as the leader's loop does, honouring the holdoff), while
// simulated writes check that every key keeps a quorum of live replicas.
func (c *cluster) killPhase(res *Result) {
	cfg := c.cfg
	timeoutMs := cfg.HeartbeatTimeout.Milliseconds()
	afterMs := int64(cfg.ForgetPeriods) * timeoutMs
	killed := map[ringstate.MemberID]bool{}
	forgotten := map[ringstate.MemberID]bool{}
	var writes []write
	dst := make([]*ringstate.Member, 0, replication)
	issue := func(n int) {
		r := c.waitLeader().fsm.Ring()
		for range n {
			res.Writes++
			set := r.ReplicationSet(c.rng.Uint32(), replication, timeoutMs, dst)
			var live []ringstate.MemberID
			for _, m := range set {
				if !killed[m.ID] {
					live = append(live, m.ID)
				}
			}
			if len(live) < ringstate.Quorum(replication) {
				res.WritesNoQuorum++
				continue
			}
			if len(live) == replication && c.rng.IntN(5) == 0 {
				// Acknowledged by a quorum only: one replica missed it.
				j := c.rng.IntN(len(live))
				live = slices.Delete(live, j, j+1)
			}
			writes = append(writes, write{at: time.Now(), copies: live})
		}
	}
	issue(20 * cfg.WritesPerSecond)
	lastForget := time.Now().Add(-cfg.ForgetHoldoff)
	deadline := time.Duration(afterMs)*time.Millisecond + cfg.ForgetHoldoff + 2*cfg.HeartbeatPeriod + 10*time.Second
	alive := make([]int, cfg.Members)
	for i := range alive {
		alive[i] = i
	}
	for range cfg.Kill {
		k := c.rng.IntN(len(alive))
		victim := alive[k]
		alive = slices.Delete(alive, k, k+1)
		id := MemberID(victim)
		c.stopMember(victim)
		killed[id] = true
		killedAt := time.Now()
		res.Killed = append(res.Killed, id)
		for {
			time.Sleep(time.Second)
			issue(cfg.WritesPerSecond)
			if time.Since(killedAt) > deadline {
				c.fail("%s not forgotten %s after it stopped", id, deadline)
				return
			}
			if time.Since(lastForget) < cfg.ForgetHoldoff {
				continue
			}
			l := c.waitLeader()
			r := l.fsm.Ring()
			cand, why, ok := r.AutoForget(replication, timeoutMs, afterMs)
			if !ok {
				continue
			}
			if cand != id {
				c.fail("auto-forget picked %s (%s), not %s, the one member stopped", cand, why, id)
				return
			}
			before := r.Len()
			if err := c.apply(ringstate.Command{Op: ringstate.OpRemove, Member: cand}); err != nil {
				c.fail("remove %s: %v", cand, err)
				return
			}
			lastForget = time.Now()
			forgotten[cand] = true
			res.Forgotten = append(res.Forgotten, cand)
			res.ForgetAfter = append(res.ForgetAfter, time.Since(killedAt))
			if after := c.waitLeader().fsm.Ring(); after.Len() != before-1 {
				c.fail("forgetting %s took the ring from %d to %d members", cand, before, after.Len())
			}
			// No acknowledged write that may not be flushed yet is left without a copy on a member
			// still in the ring.
			for _, w := range writes {
				if time.Since(w.at) >= cfg.ForgetHoldoff {
					continue
				}
				if !slices.ContainsFunc(w.copies, func(m ringstate.MemberID) bool { return !forgotten[m] }) {
					res.WritesLost++
				}
			}
			cfg.Logf("forgot %s %s after it stopped: %s", cand, time.Since(killedAt).Round(time.Second), why)
			break
		}
	}
	r := c.waitLeader().fsm.Ring()
	for id := range killed {
		if _, ok := r.Member(id); ok {
			c.fail("%s stopped and still in the ring", id)
		}
	}
	if r.Len() != cfg.Members-cfg.Kill {
		c.fail("ring has %d members after the kills, want %d", r.Len(), cfg.Members-cfg.Kill)
	}
}

func (c *cluster) finish(res *Result) *Result {
	c.mu.Lock()
	defer c.mu.Unlock()
	res.CommitP99, res.CommitMax = p99(c.commits)
	res.Commits = len(c.commits)
	res.HeartbeatP99, _ = p99(c.beats)
	res.Heartbeats = len(c.beats)
	res.HeartbeatErrors = c.beatErrs
	if c.lastErr != nil {
		res.Errors = append(res.Errors, fmt.Sprintf("%d heartbeats failed, the last: %v", c.beatErrs, c.lastErr))
	}
	res.MaxBatch = c.maxBatch
	res.Forwards, res.ForwardedBeats = c.forwards, c.forwarded
	res.Errors = append(res.Errors, c.errs...)
	res.Virtual = time.Since(c.start)
	return res
}

func (c *cluster) shutdown() {
	c.mu.Lock()
	for i, cancel := range c.memberStop {
		cancel()
		delete(c.memberStop, i)
	}
	c.mu.Unlock()
	c.wg.Wait()
	for _, v := range c.voters {
		if v.fwd != nil {
			v.fwd.Close()
		}
	}
	for _, v := range c.voters {
		if v.batcher != nil {
			v.batcher.Close()
		}
	}
	for _, v := range c.voters {
		_ = v.r.Shutdown().Error()
		_ = v.trans.Close()
	}
}
