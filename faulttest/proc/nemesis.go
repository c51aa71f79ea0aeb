package proc

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/raftingest/raftingest/faulttest"
	"github.com/raftingest/raftingest/faulttest/check"
	"github.com/raftingest/raftingest/faulttest/netns"
)

// Fault kinds of the process tier.
const (
	KillOne    = "kill-one"    // kill -9 one node, restart it later
	KillLeader = "kill-leader" // kill -9 the Raft leader
	KillAll    = "kill-all"    // kill -9 every node at once, restart all
	// CrashBurst kills every node, restarts them all, and kills them all again 1–2s later (during
	// their WAL replay or election), three times over the window; the last restart is at the heal.
	CrashBurst      = "crash-burst"
	PauseShort      = "pause-short"       // SIGSTOP one node for half the election timeout
	PauseLong       = "pause-leader-long" // SIGSTOP the leader for several election timeouts
	IsolateOne      = "isolate-one"       // one node cut from the others, silent drop
	IsolateLeader   = "isolate-leader"    // the leader cut from the others, silent drop
	IsolateReject   = "isolate-reject"    // one node cut, connections refused (fail fast)
	OneWayLeader    = "one-way-leader"    // the leader's packets to the others dropped, theirs arrive
	Loss            = "packet-loss"       // 30% of packets between nodes dropped
	DistributorOnly = "grpc-only"         // one node's gRPC port cut from the others: Raft still flows
	WALTruncate     = "wal-truncate"      // kill -9 one node, truncate its WAL, restart
	WALBitFlip      = "wal-bitflip"       // kill -9 one node, flip bytes in its WAL, restart
	// RemoveRestart kills a follower, forgets it with `ringctl remove`, restarts it with its old
	// data; at heal, a node the cluster does not list has its Raft state wiped (as the product asks)
	// and rejoins with -join, keeping its WAL.
	RemoveRestart = "remove-restart-old-data"
	// LeaderTransferLoop asks a live member (`ringctl transfer-leadership`) to hand leadership away
	// every ~1.5s for the fault window; every call's outcome goes into the fault note.
	LeaderTransferLoop = "leader-transfer-loop"
	// Bridge splits the members into two halves that cannot reach each other; one bridge member
	// talks to both (Jepsen's bridge). Needs 3 members or more.
	Bridge = "bridge"
	// MajoritiesRing puts the members on a ring where each sees only its nearest neighbours, a
	// majority with itself, and a different majority from every other member (Jepsen's
	// majorities-ring). Needs 5 members or more: with 3 every member sees everyone.
	MajoritiesRing = "majorities-ring"
	// KillZone kills -9 every member of one zone — the Raft leader's, so the election happens too —
	// and restarts them at heal: a rack or zone lost. Needs Scenario.Zones.
	KillZone = "kill-zone"
	// KillVoter kills -9 a Raft voter that is not the leader and keeps it down for the window,
	// watching the leader's configuration until the voter is replaced (demoted, a live non-voter
	// promoted): a machine that dies for good. Restarted at heal (it rejoins as a non-voter).
	KillVoter = "kill-voter"
	// KillLeaderVoter is KillVoter for the leader: an election first, then the replacement.
	KillLeaderVoter = "kill-leader-voter"
)

// FlushOne asks one running member to flush everything in its memory to its bucket (POST
// /ingester/flush on its admin listener; the scenario exposes it). Not a fault but a step that
// moves acknowledged samples from memory into blocks while faults go on: with node-local buckets
// every member's querier must then find them in that member's bucket.
const FlushOne = "flush-one"

// FlushAll flushes every running member at once (as FlushOne does one): afterwards every sample
// acknowledged so far is only in blocks, each series in the buckets of the members that held it.
const FlushAll = "flush-all"

// StorageFaults are the storage-local scenario's mix: flushes among kills, pauses and partitions.
var StorageFaults = []string{FlushAll, FlushOne, KillOne, FlushAll, PauseShort, IsolateOne}

// TopologyFaults are the faults of the transfer-bridge-ring scenario (5 members).
var TopologyFaults = []string{LeaderTransferLoop, Bridge, MajoritiesRing}

// transferEvery is the period of LeaderTransferLoop's calls.
const transferEvery = 1500 * time.Millisecond

// AllFaults is the default mix.
var AllFaults = []string{KillOne, KillLeader, KillAll, CrashBurst, PauseShort, PauseLong, IsolateOne, IsolateLeader,
	IsolateReject, OneWayLeader, Loss, DistributorOnly}

// WALFaults corrupt the data of a stopped member.
var WALFaults = []string{WALTruncate, WALBitFlip}

type step struct {
	kind string
	at   time.Duration
	dur  time.Duration
}

// schedule draws the faults of a run from its seed: a calm first 4s, then faults of 2–5s with
// 1–3s of calm between them, ending 3s before the workload does.
func schedule(seed int64, kinds []string, workload time.Duration) []step {
	rng := rand.New(rand.NewPCG(uint64(seed), 1))
	var out []step
	if len(kinds) == 0 {
		return nil
	}
	for t := 4 * time.Second; ; {
		d := time.Duration(2000+rng.IntN(3000)) * time.Millisecond
		if t+d > workload-3*time.Second {
			return out
		}
		out = append(out, step{kind: kinds[rng.IntN(len(kinds))], at: t, dur: d})
		t += d + time.Duration(1000+rng.IntN(2000))*time.Millisecond
	}
}

type nemesis struct {
	c      *Cluster
	start  time.Time
	rng    *rand.Rand
	faults []faulttest.FaultWindow
	logf   func(string, ...any)

	// walVictim is the one member the WAL faults of a run damage, drawn at the first (walDrawn).
	// Destroying WAL data of two members could remove both copies of a sample written while the
	// third was down — beyond what replication factor 3 promises with no re-replication (repair) in
	// the product; one member losing its data, any number of times, must lose nothing acknowledged.
	walVictim   int
	walDrawn    bool
	walRestarts []check.WALRestart
	// voterDeaths are the KillVoter and KillLeaderVoter faults, for the voters checker.
	voterDeaths []check.VoterDeath

	// readBack, when set, reads every sample back from every member and the bucket; complete is
	// false when some member did not answer. After each kill of every member the nemesis takes
	// one complete read for checker 7 (crashes).
	readBack func(ctx context.Context) (ids []check.SampleID, complete bool)
	crashes  []check.CrashAll
}

// crashReadBound is how long the nemesis waits, after restarting every member, for a complete read.
const crashReadBound = 20 * time.Second

// crashRead records one kill of every member for checker 7: the first complete read after all
// were restarted at restarted, or why there was none.
func (n *nemesis) crashRead(ctx context.Context, kill, restarted time.Time) {
	ca := check.CrashAll{Kill: kill, Restarted: restarted}
	if n.readBack == nil {
		return
	}
	// The workload's context may be over already (a crash healed at its end): the read must happen
	// anyway, bounded by crashReadBound, or the checker would have nothing to check.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), crashReadBound)
	defer cancel()
	deadline := time.Now().Add(crashReadBound)
	for {
		inv := time.Now()
		ids, complete := n.readBack(ctx)
		if complete {
			ca.Read = check.Read{Invoke: inv, Return: time.Now(), Samples: ids}
			break
		}
		if ctx.Err() != nil || time.Now().After(deadline) {
			ca.NoRead = fmt.Sprintf("no complete read within %v of the restart", crashReadBound)
			break
		}
		select {
		case <-ctx.Done():
		case <-time.After(300 * time.Millisecond):
		}
	}
	n.crashes = append(n.crashes, ca)
}

func (n *nemesis) killAll() {
	for _, nd := range n.c.Nodes {
		nd.Kill()
	}
}

func (n *nemesis) startAll() error {
	var err error
	for i := range n.c.Nodes {
		err = errors.Join(err, n.c.Start(i))
	}
	return err
}

func (n *nemesis) others(x int) []int {
	var out []int
	for i := range n.c.Nodes {
		if i != x {
			out = append(out, i)
		}
	}
	return out
}

func (n *nemesis) pick(ctx context.Context, leader bool) int {
	if leader {
		if l := n.c.Leader(ctx); l >= 0 {
			return l
		}
	}
	return n.rng.IntN(len(n.c.Nodes))
}

func (n *nemesis) run(ctx context.Context, steps []step) {
	for _, s := range steps {
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Until(n.start.Add(s.at))):
		}
		n.inject(ctx, s)
	}
}

// inject applies one fault, waits its duration, heals it and records the window.
func (n *nemesis) inject(ctx context.Context, s step) {
	c := n.c
	fw := faulttest.FaultWindow{Kind: s.kind, Start: time.Since(n.start)}
	heal := func() {}
	var x int
	var err error
	switch s.kind {
	case KillOne, KillLeader:
		x = n.pick(ctx, s.kind == KillLeader)
		c.Nodes[x].Kill()
		heal = func() { err = c.Start(x) }
	case KillZone:
		x = n.pick(ctx, true)
		zone := c.Nodes[x].Zone
		var killed []int
		var ids []string
		for i, nd := range c.Nodes {
			if nd.Zone == zone {
				nd.Kill()
				killed = append(killed, i)
				ids = append(ids, nd.ID)
			}
		}
		fw.Note = fmt.Sprintf("zone %q: %s", zone, strings.Join(ids, ", "))
		heal = func() {
			for _, i := range killed {
				err = errors.Join(err, c.Start(i))
			}
		}
	case KillVoter, KillLeaderVoter:
		var d check.VoterDeath
		x, d = n.killVoter(ctx, s.kind == KillLeaderVoter, s.dur)
		n.voterDeaths = append(n.voterDeaths, d)
		fw.Note = fmt.Sprintf("voters %v; replaced=%v after %s; voters then %v", d.VotersBefore, d.Replaced, d.After.Round(100*time.Millisecond), d.VotersAfter)
		if d.Err != "" {
			err = errors.New(d.Err)
		}
		if x >= 0 {
			s.dur = 0 // killVoter waited out the window
			heal = func() { err = c.Start(x) }
		}
	case FlushOne:
		x = n.pick(ctx, false)
		fw.Note, err = c.Flush(ctx, x)
	case FlushAll:
		x = -1
		var notes, errs []string
		for i, nd := range c.Nodes {
			if !nd.Running() || nd.Paused() {
				continue
			}
			note, e := c.Flush(ctx, i)
			if e != nil {
				errs = append(errs, e.Error())
				continue
			}
			notes = append(notes, nd.ID+": "+note)
		}
		fw.Note = strings.Join(notes, "; ")
		if len(errs) > 0 {
			err = errors.New(strings.Join(errs, "; "))
		}
	case KillAll:
		x = -1
		killAt := time.Now()
		n.killAll()
		heal = func() {
			err = n.startAll()
			n.crashRead(ctx, killAt, time.Now())
		}
	case CrashBurst:
		x = -1
		killAt := time.Now()
		n.killAll()
		var kills []string
		for k := 0; k < 2 && ctx.Err() == nil; k++ {
			select {
			case <-ctx.Done():
			case <-time.After(s.dur / 3):
			}
			err = errors.Join(err, n.startAll())
			wait := time.Duration(1000+n.rng.IntN(1000)) * time.Millisecond
			select {
			case <-ctx.Done():
			case <-time.After(wait):
			}
			killAt = time.Now()
			n.killAll()
			kills = append(kills, fmt.Sprintf("killed again %v after the restart", wait))
		}
		fw.Note = strings.Join(kills, "; ")
		s.dur /= 3
		heal = func() {
			err = n.startAll()
			n.crashRead(ctx, killAt, time.Now())
		}
	case PauseShort, PauseLong:
		x = n.pick(ctx, s.kind == PauseLong)
		s.dur = electionTimeout / 2
		if s.kind == PauseLong {
			s.dur = 4 * electionTimeout
		}
		c.Nodes[x].Pause()
		heal = c.Nodes[x].Resume
	case IsolateOne, IsolateLeader, IsolateReject:
		x = n.pick(ctx, s.kind == IsolateLeader)
		err = c.Net.Apply(x, netns.Rule{Peers: n.others(x), In: true, Out: true, Reject: s.kind == IsolateReject})
		heal = func() { err = c.Net.Apply(x) }
	case OneWayLeader:
		x = n.pick(ctx, true)
		err = c.Net.Apply(x, netns.Rule{Peers: n.others(x), Out: true})
		heal = func() { err = c.Net.Apply(x) }
	case Loss:
		x = -1
		for i := range c.Nodes {
			if e := c.Net.Apply(i, netns.Rule{Peers: n.others(i), In: true, LossPercent: 30}); e != nil {
				err = e
			}
		}
		heal = func() { err = c.Net.HealAll() }
	case DistributorOnly:
		x = n.pick(ctx, false)
		err = c.Net.Apply(x, netns.Rule{Peers: n.others(x), In: true, Out: true, Ports: []int{grpcPort}})
		heal = func() { err = c.Net.Apply(x) }
	case LeaderTransferLoop:
		x = -1
		loopCtx, stop := context.WithCancel(ctx)
		done := make(chan []string)
		go func() { done <- n.transferLoop(loopCtx) }()
		heal = func() {
			stop()
			calls := <-done
			fw.Note = fmt.Sprintf("%d calls: %s", len(calls), strings.Join(calls, "; "))
		}
	case Bridge, MajoritiesRing:
		x = -1
		var cut [][]int
		if s.kind == Bridge {
			cut, fw.Note, err = bridgeCuts(n.rng.Perm(len(c.Nodes)))
		} else {
			cut, fw.Note, err = majoritiesRingCuts(n.rng.Perm(len(c.Nodes)))
		}
		for i, peers := range cut {
			if len(peers) > 0 {
				err = errors.Join(err, c.Net.Apply(i, netns.Rule{Peers: peers, In: true, Out: true}))
			}
		}
		heal = func() { err = c.Net.HealAll() }
	case RemoveRestart:
		x = n.pick(ctx, false)
		if l := c.Leader(ctx); l == x {
			x = (x + 1) % len(c.Nodes)
		}
		c.Nodes[x].Kill()
		via := (x + 1) % len(c.Nodes)
		// -force: x was killed a moment ago and its heartbeat is still fresh, so without it
		// ringctl would refuse to remove a member that looks alive.
		out, rerr := c.Ringctl(ctx, "-addr", c.Nodes[via].GRPCAddr, "remove", c.Nodes[x].ID, "-force").CombinedOutput()
		fw.Note = "ringctl remove: " + strings.TrimSpace(string(out))
		if rerr != nil {
			err = fmt.Errorf("ringctl remove %s: %v", c.Nodes[x].ID, rerr)
		}
		select {
		case <-ctx.Done():
		case <-time.After(s.dur / 2):
		}
		s.dur -= s.dur / 2
		if e := c.Start(x); e != nil { // with its old data: it must find out it was removed
			err = e
		}
		heal = func() {
			var note string
			note, err = c.Rejoin(ctx, x)
			fw.Note += "; at the heal: " + note
		}
	case WALTruncate, WALBitFlip:
		if !n.walDrawn {
			n.walVictim, n.walDrawn = n.pick(ctx, false), true
		}
		x = n.walVictim
		c.Nodes[x].Kill()
		fw.Note, err = corruptWAL(c.Nodes[x].DataDir, s.kind == WALBitFlip, n.rng)
		damage := s.kind + ": " + fw.Note
		heal = func() {
			r := n.restartDamaged(x, damage)
			n.walRestarts = append(n.walRestarts, r)
			fw.Note += "; " + r.Summary()
		}
	default:
		err = fmt.Errorf("unknown fault %q", s.kind)
	}
	if x >= 0 {
		fw.Targets = []string{c.Nodes[x].ID}
	} else {
		for _, nd := range c.Nodes {
			fw.Targets = append(fw.Targets, nd.ID)
		}
	}
	if err != nil {
		fw.Note += " inject error: " + err.Error()
		n.logf("nemesis %s: %v", s.kind, err)
	}
	select {
	case <-ctx.Done():
	case <-time.After(s.dur):
	}
	err = nil
	heal()
	if err != nil {
		fw.Note += " heal error: " + err.Error()
		n.logf("nemesis heal %s: %v", s.kind, err)
	}
	fw.End = time.Since(n.start)
	n.faults = append(n.faults, fw)
}

// transferLoop calls `ringctl -addr <member> transfer-leadership` through a live member (running,
// not paused; the leader when one is known, since a follower forwards the call anyway) every
// transferEvery until ctx ends, and returns one outcome per call.
func (n *nemesis) transferLoop(ctx context.Context) []string {
	c := n.c
	var calls []string
	for {
		at := time.Since(n.start)
		var live []int
		for i, nd := range c.Nodes {
			if nd.Running() && !nd.Paused() {
				live = append(live, i)
			}
		}
		if len(live) == 0 {
			calls = append(calls, fmt.Sprintf("@%v no live member", at.Round(time.Millisecond)))
		} else {
			via := live[n.rng.IntN(len(live))]
			cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			out, err := c.Ringctl(cctx, "-addr", c.Nodes[via].GRPCAddr, "transfer-leadership").CombinedOutput()
			cancel()
			res := strings.TrimSpace(string(out))
			if err != nil {
				res = fmt.Sprintf("error (%v) %s", err, res)
			}
			calls = append(calls, fmt.Sprintf("@%v via %s: %s", at.Round(time.Millisecond), c.Nodes[via].ID, res))
		}
		select {
		case <-ctx.Done():
			return calls
		case <-time.After(transferEvery):
		}
	}
}

// bridgeCuts returns, for every member, the members it is cut from under Jepsen's bridge over
// the member order perm: the first half and the second half cannot reach each other, the member
// between them (perm[len/2]) reaches both.
func bridgeCuts(perm []int) ([][]int, string, error) {
	if len(perm) < 3 {
		return nil, "", fmt.Errorf("bridge needs 3 members or more, have %d", len(perm))
	}
	cut := make([][]int, len(perm))
	h := len(perm) / 2
	left, b, right := perm[:h], perm[h], perm[h+1:]
	for _, l := range left {
		cut[l] = append(cut[l], right...)
	}
	for _, r := range right {
		cut[r] = append(cut[r], left...)
	}
	return cut, fmt.Sprintf("halves %s | %s, bridge n%d", ids(left), ids(right), b), nil
}

// majoritiesRingCuts returns, for every member, the members it is cut from under Jepsen's
// majorities-ring over the ring order perm: each member sees its nearest neighbours on the ring,
// enough to make a majority with itself, and nobody else; no two members see the same majority.
func majoritiesRingCuts(perm []int) ([][]int, string, error) {
	n := len(perm)
	if n < 5 {
		return nil, "", fmt.Errorf("majorities-ring needs 5 members or more, have %d", n)
	}
	reach := (n/2 + 1) / 2 // neighbours each side: 1 + 2*reach members is a majority
	cut := make([][]int, n)
	var views []string
	for k, m := range perm {
		sees := []int{m}
		for d := 1; d < n; d++ {
			o := perm[(k+d)%n]
			if d <= reach || n-d <= reach {
				sees = append(sees, o)
			} else {
				cut[m] = append(cut[m], o)
			}
		}
		views = append(views, fmt.Sprintf("n%d sees %s", m, ids(sees)))
	}
	return cut, "ring " + ids(perm) + ": " + strings.Join(views, ", "), nil
}

func ids(xs []int) string {
	var s []string
	for _, x := range xs {
		s = append(s, fmt.Sprintf("n%d", x))
	}
	return "{" + strings.Join(s, ",") + "}"
}

// walStartBound is how long a restarted member has to serve or exit.
const walStartBound = 45 * time.Second

// restartDamaged starts member x after its WAL file was damaged and plays the operator as
// docs/faulttest.md and the README tell them: when the member refuses to start with an error naming
// its WAL file, move the file aside to wal.bolt.corrupt-<n> (never delete it: it is the user's data,
// and may be restored) and start the member again, with an empty WAL; its replicas elsewhere still
// hold what it had.
func (n *nemesis) restartDamaged(x int, damage string) check.WALRestart {
	c, nd := n.c, n.c.Nodes[x]
	r := check.WALRestart{Member: nd.ID, File: walFile(nd.DataDir), Damage: damage}
	if err := c.Start(x); err != nil {
		r.Err = err.Error()
		return r
	}
	up, exited := c.waitServing(x, walStartBound)
	log := lastStartLog(nd.LogPath)
	switch {
	case up:
		r.Started = true
		r.TailCut = strings.Contains(log, "wal corruption: deleted the corrupt record")
		return r
	case !exited:
		r.Err = fmt.Sprintf("neither served nor exited within %v", walStartBound)
		return r
	}
	r.Refused, r.Message = true, startError(log)
	if !strings.Contains(r.Message, r.File) {
		// Not a WAL refusal as far as an operator can tell: they would not touch the file.
		r.Err = "exited at start without naming its WAL file"
		return r
	}
	moved, err := moveAside(r.File)
	if err != nil {
		r.Err = err.Error()
		return r
	}
	r.MovedTo = moved
	if err := c.Start(x); err != nil {
		r.Err = err.Error()
		return r
	}
	if up, _ := c.waitServing(x, walStartBound); up {
		r.UpAfterMove = true
	} else {
		r.Err = "did not serve after the operator step: " + startError(lastStartLog(nd.LogPath))
	}
	return r
}

func walFile(dataDir string) string { return filepath.Join(dataDir, "wal", "wal.bolt") }

// moveAside renames p to the first free p.corrupt-<n>, n from 1.
func moveAside(p string) (string, error) {
	for k := 1; ; k++ {
		dst := fmt.Sprintf("%s.corrupt-%d", p, k)
		if _, err := os.Lstat(dst); errors.Is(err, os.ErrNotExist) {
			return dst, os.Rename(p, dst)
		} else if err != nil {
			return "", err
		}
	}
}

// lastStartLog is what the node's log holds since its last start.
func lastStartLog(path string) string {
	b, _ := os.ReadFile(path)
	s := string(b)
	if i := strings.LastIndex(s, "=== start "); i >= 0 {
		s = s[i:]
	}
	return s
}

// startError is the error a node that exited at start logged: its "cannot start" line, else its
// last line before the exit marker.
func startError(log string) string {
	var last string
	for _, l := range strings.Split(log, "\n") {
		switch {
		case strings.Contains(l, `msg="cannot start"`):
			return l
		case l == "", strings.HasPrefix(l, "=== "):
		default:
			last = l
		}
	}
	return last
}

// corruptWAL truncates the WAL file of a stopped member at a random point of its second half, or
// flips 8 random bytes of it, and says what it did.
func corruptWAL(dataDir string, flip bool, rng *rand.Rand) (string, error) {
	p := walFile(dataDir)
	st, err := os.Stat(p)
	if err != nil {
		return "", err
	}
	size := st.Size()
	if size < 2 {
		return "", fmt.Errorf("%s: %d bytes", p, size)
	}
	if !flip {
		at := size/2 + rng.Int64N(size/2)
		return fmt.Sprintf("truncated %s from %d to %d bytes", p, size, at), os.Truncate(p, at)
	}
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		return "", err
	}
	defer f.Close()
	var offs []int64
	for range 8 {
		off := rng.Int64N(size)
		b := []byte{0}
		if _, err := f.ReadAt(b, off); err != nil {
			return "", err
		}
		b[0] ^= byte(1 + rng.IntN(255))
		if _, err := f.WriteAt(b, off); err != nil {
			return "", err
		}
		offs = append(offs, off)
	}
	return fmt.Sprintf("flipped bytes of %s (%d bytes) at %v", p, size, offs), f.Sync()
}

// killVoter kills a voter (the leader, or another voter) and waits up to window for the leader's
// configuration to show it replaced, returning the victim's index (-1 when none could be chosen)
// and what it saw.
func (n *nemesis) killVoter(ctx context.Context, leader bool, window time.Duration) (int, check.VoterDeath) {
	c := n.c
	voters := func() (string, []string, error) {
		l := c.Leader(ctx)
		if l < 0 {
			return "", nil, errors.New("no leader")
		}
		st, err := c.Status(ctx, l)
		if err != nil {
			return "", nil, err
		}
		var vs []string
		for _, srv := range st.GetServers() {
			if srv.GetVoter() {
				vs = append(vs, srv.GetId())
			}
		}
		return st.GetLeaderId(), vs, nil
	}
	d := check.VoterDeath{WasLeader: leader}
	lid, vs, err := voters()
	if err != nil {
		d.Err = "choosing a voter: " + err.Error()
		return -1, d
	}
	d.VotersBefore = vs
	var pick []string
	for _, v := range vs {
		if (v == lid) == leader {
			pick = append(pick, v)
		}
	}
	if len(pick) == 0 {
		d.Err = fmt.Sprintf("no voter to kill among %v (leader %s)", vs, lid)
		return -1, d
	}
	d.Member = pick[n.rng.IntN(len(pick))]
	x := slices.IndexFunc(c.Nodes, func(nd *Node) bool { return nd.ID == d.Member })
	if x < 0 {
		d.Err = "voter " + d.Member + " is not a node of the run"
		return -1, d
	}
	c.Nodes[x].Kill()
	killed := time.Now()
	running := 0
	for _, nd := range c.Nodes {
		if nd.Running() {
			running++
		}
	}
	want := min(len(vs), running) // the voters a replacement restores, as far as live nodes allow
	for time.Since(killed) < window && ctx.Err() == nil {
		if _, now, err := voters(); err == nil {
			d.VotersAfter = now
			if check.VotersReplaced(now, d.Member, want) {
				d.Replaced, d.After = true, time.Since(killed)
				break
			}
		}
		select {
		case <-ctx.Done():
		case <-time.After(200 * time.Millisecond):
		}
	}
	if rest := window - time.Since(killed); rest > 0 { // stay dead for the whole window, replaced or not
		select {
		case <-ctx.Done():
		case <-time.After(rest):
		}
	}
	return x, d
}
