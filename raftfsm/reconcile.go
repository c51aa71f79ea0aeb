package raftfsm

import (
	"context"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/raft"

	"github.com/raftingest/raftingest/ringpb"
	"github.com/raftingest/raftingest/ringstate"
)

// poke wakes the background loop without blocking.
func (n *Node) poke() {
	select {
	case n.kick <- struct{}{}:
	default:
	}
}

// run is the node's one background goroutine: on a timer, on leadership and peer changes, and when
// poked, it checks whether this node was removed and, on the leader, reconciles voters.
func (n *Node) run() {
	defer n.wg.Done()
	t := time.NewTicker(n.cfg.ReconcileInterval)
	defer t.Stop()
	for {
		select {
		case <-n.stop:
			return
		case <-t.C:
		case <-n.kick:
		case <-n.observerCh:
		}
		ctx, cancel := context.WithTimeout(n.runCtx, n.cfg.ApplyTimeout)
		n.checkMembership(ctx)
		if n.raft.State() == raft.Leader {
			if n.leaderSince.IsZero() {
				n.leaderSince = time.Now()
			}
			n.reconcileVoters(ctx)
			n.autoForget(ctx)
		} else {
			n.leaderSince = time.Time{}
		}
		cancel()
	}
}

func (n *Node) checkMembership(ctx context.Context) {
	conf, _, err := n.configuration(ctx)
	if err != nil {
		return
	}
	inLocal := slices.ContainsFunc(conf.Servers, func(s raft.Server) bool { return s.ID == n.id })
	recent := n.raft.State() == raft.Leader || time.Since(n.raft.LastContact()) < 3*n.cfg.HeartbeatTimeout
	switch {
	case inLocal && recent && !n.confirmed.Load():
		n.hadState.Store(true)
		if n.removed.Swap(false) {
			n.logger.Info("this node is in the raft configuration again")
		}
	case n.confirmed.Load():
	case len(conf.Servers) == 0:
		// A new node waiting to be added.
	case !inLocal && n.hadState.Load():
		// Our own log says we were removed; it may lag (a node restarted mid catch-up whose log
		// ends before its own AddVoter). Only a leader confirms it.
		n.markRemoved(false)
		if n.leaderSaysRemoved(ctx, conf) {
			n.markRemoved(true)
		}
	default:
		// Either no word from a leader, or a configuration without us that we never saw ourselves
		// in (we may be catching up from an old entry, or have been added and removed between two
		// checks). A leader that removes a server stops replicating to it, often before the
		// removing entry reaches it, so our own log cannot be trusted to tell us: ask the peers. A
		// leader whose configuration lacks us is proof.
		if inLocal {
			n.hadState.Store(true)
		}
		if n.leaderSaysRemoved(ctx, conf) {
			n.markRemoved(true)
		}
	}
}

// leaderSaysRemoved asks the other servers of conf (and every other node this one knows a gRPC
// address for) for their status and reports whether one that leads has a configuration without
// this node.
func (n *Node) leaderSaysRemoved(ctx context.Context, conf raft.Configuration) bool {
	return n.askLeader(ctx, conf, nil) == verdictRemoved
}

type verdict int

const (
	verdictUnknown verdict = iota // no leader answered
	verdictMember                 // a leader lists this node
	verdictRemoved                // a leader does not list this node
)

// askLeader asks the servers of conf, the seeds (gRPC addresses) and every other node whose gRPC
// address this node knows, in turn, for their status, until one that leads answers; it reports
// whether that leader's configuration lists this node.
func (n *Node) askLeader(ctx context.Context, conf raft.Configuration, seeds []string) verdict {
	seen := map[string]bool{}
	var addrs []string
	add := func(a string) {
		if a != "" && !seen[a] {
			seen[a] = true
			addrs = append(addrs, a)
		}
	}
	for _, s := range conf.Servers {
		if s.ID != n.id {
			if a, err := n.grpcAddr(string(s.ID)); err == nil {
				add(a)
			}
		}
	}
	for _, a := range seeds {
		add(a)
	}
	n.addrMu.Lock()
	ids := make([]string, 0, len(n.lastGRPC))
	for id := range n.lastGRPC {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		if id != n.cfg.ID {
			add(n.lastGRPC[id])
		}
	}
	self := n.lastGRPC[n.cfg.ID]
	n.addrMu.Unlock()
	for _, addr := range addrs {
		if addr == self || ctx.Err() != nil {
			continue
		}
		c, err := n.conns.get(addr)
		if err != nil {
			continue
		}
		pctx, cancel := context.WithTimeout(ctx, min(time.Second, n.cfg.HeartbeatTimeout))
		st, err := c.Status(pctx, &ringpb.StatusRequest{})
		cancel()
		if err != nil || st.GetState() != raft.Leader.String() || st.GetId() == n.cfg.ID {
			continue
		}
		if slices.ContainsFunc(st.GetServers(), func(sv *ringpb.Server) bool { return sv.GetId() == n.cfg.ID }) {
			return verdictMember
		}
		return verdictRemoved
	}
	return verdictUnknown
}

// CheckMembership asks the cluster whether this node — restarted on existing Raft state — is
// still a member, so that a node removed by an operator (ringctl remove) exits at start instead of
// taking part with a stale log. It asks the seeds (gRPC addresses, e.g. -join) and every node it
// knows from its configuration, snapshot and stored log, every 200ms until a leader answers.
//
// It returns nil when a leader lists this node, when this node leads, or when it started without
// Raft state (a new node); ErrRemovedFromCluster, confirmed, when a leader's configuration lacks
// it; and ctx's error when no leader answered before ctx ended (undecided: the background check
// keeps asking, and the leader refuses a Register from a node outside its configuration anyway).
func (n *Node) CheckMembership(ctx context.Context, seeds []string) error {
	if !n.existing {
		return nil
	}
	t := time.NewTicker(200 * time.Millisecond)
	defer t.Stop()
	for {
		if err := n.Err(); err != nil {
			return err
		}
		if n.IsLeader() {
			return nil
		}
		conf, _, err := n.configuration(ctx)
		if err == nil {
			switch n.askLeader(ctx, conf, seeds) {
			case verdictMember:
				return nil
			case verdictRemoved:
				n.markRemoved(true)
				return ErrRemovedFromCluster
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-n.stop:
			return ErrShutdown
		case <-t.C:
		}
	}
}

// markRemoved records that this node is not in the Raft configuration. Only a confirmed removal
// (a leader said so, or our own LeaveCluster committed) is final; one seen only in our own log is a
// warning, since that log may lag.
func (n *Node) markRemoved(confirmed bool) {
	dir := filepath.Join(n.cfg.DataDir, "raft")
	if !confirmed {
		if !n.removed.Swap(true) && !n.leaving.Load() {
			n.logger.Warn("this node's raft configuration does not list it (removed, or still catching up?); "+
				"asking the leader", "raft_dir", dir)
		}
		return
	}
	n.removed.Store(true)
	if n.confirmed.Swap(true) {
		return
	}
	if n.leaving.Load() {
		n.logger.Info("this node left the raft cluster")
		return
	}
	n.logger.Error("this node was removed from the raft cluster; wipe its raft data before it rejoins",
		"raft_dir", dir)
	n.removedOnce.Do(func() { close(n.removedCh) })
}

// reconcileVoters promotes one non-voter when there are fewer than -raft.max-voters voters. A
// voter that answers is never demoted: voters above the limit were asked for (JoinRequest.voter)
// and stay. At or above the limit, replaceSilentVoter replaces one the leader has not heard from
// for -raft.voter-replace-after (above the limit, only demoting it).
//
// Pick: the lowest id among non-voters this leader heard from recently (a successful AppendEntries
// within three Raft heartbeat timeouts) whose ring member is ACTIVE and healthy; when no non-voter
// is in the ring at all (a cluster not using the ring lifecycle), the lowest id among those heard
// from recently. Ring health alone lags by -ring.heartbeat-timeout: a non-voter that died seconds
// ago still looks healthy there, and promoting it would add a dead voter. A non-voter in the ring
// but not ACTIVE and healthy is not promoted either: it may be about to leave.
func (n *Node) reconcileVoters(ctx context.Context) {
	n.confMu.Lock()
	defer n.confMu.Unlock()
	conf, prev, err := n.configuration(ctx)
	if err != nil {
		return
	}
	voters := 0
	var nonvoters []raft.Server
	for _, s := range conf.Servers {
		if s.Suffrage == raft.Voter {
			voters++
		} else {
			nonvoters = append(nonvoters, s)
		}
	}
	recent := func(id raft.ServerID) bool {
		t, ok := n.trans.lastContact(id)
		return ok && time.Since(t) < 3*n.cfg.HeartbeatTimeout
	}
	if voters >= n.cfg.MaxVoters || len(nonvoters) == 0 {
		if n.cfg.VoterReplaceAfter > 0 && n.replaceSilentVoter(ctx, conf, prev, nonvoters, recent) {
			return
		}
		if voters <= n.cfg.MaxVoters {
			n.swapLeftover = "" // the swap was finished some other way (a late commit, a removal)
		} else if n.swapLeftover != "" {
			n.trimVoters(ctx, conf, prev)
			return
		}
		if voters == n.cfg.MaxVoters && len(nonvoters) > 0 {
			n.spreadVoters(ctx, conf, prev, nonvoters, recent)
		}
		return
	}
	pick := pickPromotion(nonvoters, n.fsm.Ring(), n.cfg.RingHeartbeatTimeout.Milliseconds(), "", votersOf(conf, ""), recent)
	if pick == nil {
		n.logger.Debug("no non-voter fit for promotion", "voters", voters, "max_voters", n.cfg.MaxVoters)
		return
	}
	timeout := n.timeout(ctx)
	f := n.raft.AddVoter(pick.ID, pick.Address, prev, timeout)
	if err := wait(ctx, f, timeout); err != nil {
		n.logger.Warn("promoting non-voter failed", "peer", string(pick.ID), "err", err)
		return
	}
	n.logger.Info("promoted non-voter to voter", "peer", string(pick.ID), "voters", voters+1,
		"max_voters", n.cfg.MaxVoters, "index", f.Index())
	n.metrics.voterChange("promoted", "fill")
	n.poke() // another may be due
}

// silentVoters returns the voters other than self the leader has not heard from for after (a voter
// never heard from counts from when this node became leader), and how many voters answer (self
// included).
func silentVoters(conf raft.Configuration, self raft.ServerID, lastContact func(raft.ServerID) (time.Time, bool),
	leaderSince, now time.Time, after time.Duration) (silent []raft.Server, answering int) {
	for _, s := range conf.Servers {
		if s.Suffrage != raft.Voter {
			continue
		}
		if s.ID == self {
			answering++
			continue
		}
		last := leaderSince
		if t, ok := lastContact(s.ID); ok && t.After(last) {
			last = t
		}
		if now.Sub(last) >= after {
			silent = append(silent, s)
		} else {
			answering++
		}
	}
	slices.SortFunc(silent, func(a, b raft.Server) int { return strings.Compare(string(a.ID), string(b.ID)) })
	return silent, answering
}

// replaceSilentVoter replaces one voter the leader has not heard from for -raft.voter-replace-after:
// it promotes a healthy non-voter (preferably in the silent voter's zone), then demotes the silent
// one to non-voter — two configuration changes, one after the other, so the voter count never drops
// below what it was and the quorum grows by at most one. It does nothing unless the voters that
// answer, with the one promoted, are a majority of the larger configuration: a cluster that could
// not commit the change anyway is left alone. With more voters than -raft.max-voters (a demotion
// failed after its promotion) it only demotes. A silent voter that comes back is a non-voter and is
// promoted again only when a voter slot is free.
//
// It reports whether some voter is silent (whether or not it could be replaced), so that the caller
// does not rebalance zones meanwhile.
func (n *Node) replaceSilentVoter(ctx context.Context, conf raft.Configuration, prev uint64, nonvoters []raft.Server, recent func(raft.ServerID) bool) bool {
	silent, answering := silentVoters(conf, n.id, n.trans.lastContact, n.leaderSince, time.Now(), n.cfg.VoterReplaceAfter)
	if len(silent) == 0 {
		return false
	}
	voters := answering + len(silent)
	victim := silent[0]
	demote := func(index uint64) {
		timeout := n.timeout(ctx)
		f := n.raft.DemoteVoter(victim.ID, index, timeout)
		if err := wait(ctx, f, timeout); err != nil {
			n.logger.Warn("demoting a silent voter failed", "peer", string(victim.ID), "err", err)
			return
		}
		n.logger.Warn("demoted a voter the leader has not heard from to non-voter", "peer", string(victim.ID),
			"silent_for_at_least", n.cfg.VoterReplaceAfter.String(), "index", f.Index())
		n.metrics.voterChange("demoted", "unreachable")
		n.poke()
	}
	if voters > n.cfg.MaxVoters {
		demote(prev)
		return true
	}
	if answering+1 < (voters+1)/2+1 {
		n.logger.Debug("silent voter not replaced: too few voters answer to commit the change", "peer", string(victim.ID),
			"voters", voters, "answering", answering)
		return true
	}
	zone := ""
	if m, ok := n.fsm.Ring().Member(ringstate.MemberID(victim.ID)); ok {
		zone = m.Zone
	}
	pick := pickPromotion(nonvoters, n.fsm.Ring(), n.cfg.RingHeartbeatTimeout.Milliseconds(), zone, votersOf(conf, victim.ID), recent)
	if pick == nil {
		n.logger.Debug("silent voter not replaced: no healthy non-voter", "peer", string(victim.ID))
		return true
	}
	timeout := n.timeout(ctx)
	f := n.raft.AddVoter(pick.ID, pick.Address, prev, timeout)
	if err := wait(ctx, f, timeout); err != nil {
		n.logger.Warn("promoting a non-voter in place of a silent voter failed", "peer", string(pick.ID), "silent", string(victim.ID), "err", err)
		return true
	}
	n.logger.Warn("promoted a non-voter in place of a voter the leader has not heard from", "peer", string(pick.ID),
		"silent", string(victim.ID), "zone", zone, "index", f.Index())
	n.metrics.voterChange("promoted", "replace_unreachable")
	demote(f.Index())
	return true
}

// pickPromotion picks the non-voter to promote (see reconcileVoters); recent reports whether the
// leader heard from a server recently. Among the fit ones: a member in zone first, when zone is not
// empty (a dead voter's replacement stays in its zone); then one whose zone has the fewest of
// voters (the voters that stay), so that voters spread over zones — with 3 zones, no two of 3
// voters (no three of 5) share one while another zone has a fit non-voter; then the lowest id. A
// member's zone is its ring member's; voters not in the ring count in no zone.
func pickPromotion(nonvoters []raft.Server, r *ringstate.Ring, timeoutMs int64, zone string, voters []raft.Server, recent func(raft.ServerID) bool) *raft.Server {
	slices.SortFunc(nonvoters, func(a, b raft.Server) int { return strings.Compare(string(a.ID), string(b.ID)) })
	perZone := voterZones(r, voters)
	anyInRing := false
	var (
		fit     *raft.Server
		fitLoad int
	)
	for i, s := range nonvoters {
		m, ok := r.Member(ringstate.MemberID(s.ID))
		if !ok {
			continue
		}
		anyInRing = true
		if m.Writable(r.TimeMs(), timeoutMs) && recent(s.ID) {
			if zone != "" && m.Zone == zone {
				return &nonvoters[i]
			}
			if load := perZone[m.Zone]; fit == nil || load < fitLoad {
				fit, fitLoad = &nonvoters[i], load
			}
		}
	}
	if fit != nil {
		return fit
	}
	if !anyInRing {
		for i, s := range nonvoters {
			if recent(s.ID) {
				return &nonvoters[i]
			}
		}
	}
	return nil
}

// votersOf returns conf's voters other than except.
func votersOf(conf raft.Configuration, except raft.ServerID) []raft.Server {
	var out []raft.Server
	for _, s := range conf.Servers {
		if s.Suffrage == raft.Voter && s.ID != except {
			out = append(out, s)
		}
	}
	return out
}

// voterZones counts voters per ring zone; voters not in the ring are not counted.
func voterZones(r *ringstate.Ring, voters []raft.Server) map[string]int {
	out := map[string]int{}
	for _, v := range voters {
		if m, ok := r.Member(ringstate.MemberID(v.ID)); ok {
			out[m.Zone]++
		}
	}
	return out
}

// pickZoneSwap decides whether voters are badly spread over zones and how to fix it with one swap:
// a fit non-voter (ACTIVE, healthy, heard from recently) in a zone with at least two fewer voters
// than the most crowded zone is promoted, and a voter of the most crowded zone other than self (the
// leader) is demoted — the highest id, for determinism. It returns nils when the spread is fine:
// no zone has two more voters than a zone a fit non-voter is in. Voters not in the ring are left
// alone, and nothing is swapped unless every voter was heard from recently (a silent voter is
// replaceSilentVoter's to handle). With 3 zones and 3 voters this ends at one voter per zone, with
// 5 at 2+2+1.
func pickZoneSwap(voters, nonvoters []raft.Server, self raft.ServerID, r *ringstate.Ring, timeoutMs int64, recent func(raft.ServerID) bool) (promote, demote *raft.Server) {
	for _, v := range voters {
		if v.ID != self && !recent(v.ID) {
			return nil, nil
		}
	}
	perZone := voterZones(r, voters)
	crowded, most := "", -1
	for z, c := range perZone {
		if c > most || c == most && z < crowded {
			crowded, most = z, c
		}
	}
	if most < 2 {
		return nil, nil
	}
	slices.SortFunc(nonvoters, func(a, b raft.Server) int { return strings.Compare(string(a.ID), string(b.ID)) })
	for i, s := range nonvoters {
		m, ok := r.Member(ringstate.MemberID(s.ID))
		if !ok || !m.Writable(r.TimeMs(), timeoutMs) || !recent(s.ID) {
			continue
		}
		if perZone[m.Zone]+2 > most {
			continue
		}
		if promote == nil || perZone[m.Zone] < perZone[zoneOf(r, promote.ID)] {
			promote = &nonvoters[i]
		}
	}
	if promote == nil {
		return nil, nil
	}
	for i, v := range voters {
		if v.ID == self || zoneOf(r, v.ID) != crowded {
			continue
		}
		if _, ok := r.Member(ringstate.MemberID(v.ID)); !ok {
			continue
		}
		if demote == nil || v.ID > demote.ID {
			demote = &voters[i]
		}
	}
	if demote == nil {
		return nil, nil
	}
	return promote, demote
}

func zoneOf(r *ringstate.Ring, id raft.ServerID) string {
	m, _ := r.Member(ringstate.MemberID(id))
	return m.Zone
}

// spreadVoters makes one pickZoneSwap swap: it promotes the non-voter first and then demotes the
// crowded voter, two configuration changes, so the voter count never drops below -raft.max-voters.
func (n *Node) spreadVoters(ctx context.Context, conf raft.Configuration, prev uint64, nonvoters []raft.Server, recent func(raft.ServerID) bool) {
	r := n.fsm.Ring()
	promote, demote := pickZoneSwap(votersOf(conf, ""), nonvoters, n.id, r, n.cfg.RingHeartbeatTimeout.Milliseconds(), recent)
	if promote == nil {
		return
	}
	timeout := n.timeout(ctx)
	f := n.raft.AddVoter(promote.ID, promote.Address, prev, timeout)
	if err := wait(ctx, f, timeout); err != nil {
		n.logger.Warn("promoting a non-voter to spread voters over zones failed", "peer", string(promote.ID), "err", err)
		return
	}
	n.metrics.voterChange("promoted", "zone_spread")
	d := n.raft.DemoteVoter(demote.ID, f.Index(), timeout)
	if err := wait(ctx, d, timeout); err != nil {
		// One voter too many until trimVoters, on this leader, finishes the swap.
		n.swapLeftover = demote.ID
		n.logger.Warn("demoting a voter to spread voters over zones failed", "peer", string(demote.ID), "err", err)
		return
	}
	n.metrics.voterChange("demoted", "zone_spread")
	n.logger.Info("moved a voter to a zone with fewer voters", "promoted", string(promote.ID), "promoted_zone", zoneOf(r, promote.ID),
		"demoted", string(demote.ID), "demoted_zone", zoneOf(r, demote.ID), "index", d.Index())
	n.poke()
}

// trimVoters finishes a zone swap whose demotion failed on this leader: spreadVoters promotes
// before it demotes, and when the demotion fails the configuration keeps one voter too many. It
// demotes exactly the voter that swap meant to (swapLeftover), never another: voters beyond
// -raft.max-voters that an operator asked for (ringctl join -voter) stay. A swap whose leader lost
// office between its two changes keeps its extra voter until that node leads again (rare: the
// demotion follows the promotion at once; the extra voter costs a larger quorum, not safety).
func (n *Node) trimVoters(ctx context.Context, conf raft.Configuration, prev uint64) {
	var victim *raft.Server
	for i, s := range conf.Servers {
		if s.ID == n.swapLeftover && s.Suffrage == raft.Voter && s.ID != n.id {
			victim = &conf.Servers[i]
		}
	}
	if victim == nil {
		n.swapLeftover = ""
		return
	}
	timeout := n.timeout(ctx)
	f := n.raft.DemoteVoter(victim.ID, prev, timeout)
	if err := wait(ctx, f, timeout); err != nil {
		n.logger.Warn("demoting a voter beyond -raft.max-voters failed", "peer", string(victim.ID), "err", err)
		return
	}
	n.swapLeftover = ""
	n.metrics.voterChange("demoted", "over_max")
	n.logger.Info("demoted a voter beyond -raft.max-voters", "peer", string(victim.ID), "zone", zoneOf(n.fsm.Ring(), victim.ID), "index", f.Index())
	n.poke()
}

// autoForget forgets, as the leader, at most one member that -ring.auto-forget-unhealthy-periods
// allows (ringstate.Ring.AutoForget decides, on the ring every committed entry is applied to), as
// RemovePeer does: from the ring and from the Raft configuration — and none within
// AutoForgetHoldoff of this leadership or of the last removal through this node.
func (n *Node) autoForget(ctx context.Context) {
	if n.cfg.AutoForgetPeriods <= 0 || n.cfg.RingHeartbeatTimeout <= 0 {
		return
	}
	// The holdoff counts from this leadership and from the last removal through this node (a new
	// leader does not know the old one's, so it waits a whole holdoff first).
	since := n.leaderSince
	if last := n.lastRemoval.Load().(time.Time); last.After(since) {
		since = last
	}
	if n.cfg.AutoForgetHoldoff > 0 && time.Since(since) < n.cfg.AutoForgetHoldoff {
		return
	}
	if err := n.barrier(ctx); err != nil {
		return
	}
	timeout := n.cfg.RingHeartbeatTimeout.Milliseconds()
	p := ringstate.Placement{RF: max(n.cfg.ReplicationFactor, 1), ZoneAware: n.cfg.ZoneAware}
	id, why, ok := n.fsm.Ring().AutoForgetFor(p, timeout, int64(n.cfg.AutoForgetPeriods)*timeout)
	if !ok {
		return
	}
	if _, err := n.removePeer(ctx, string(id), 0); err != nil {
		n.logger.Warn("auto-forget: removing a silent member failed", "member", string(id), "err", err)
		return
	}
	n.logger.Warn("auto-forget: forgot a silent member (-ring.auto-forget-unhealthy-periods)", "member", string(id), "why", why)
	n.metrics.autoForgotten.Inc()
	n.poke()
}
