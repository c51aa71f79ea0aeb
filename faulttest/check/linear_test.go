package check

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/raftingest/raftingest/ringstate"
)

// randomCommand draws a ring command over a few members and a small token space, so that claims
// collide, hand-overs pair and unpair, and members come and go; addresses sometimes conflict.
func randomCommand(rng *rand.Rand, k int) ringstate.Command {
	ids := []ringstate.MemberID{"a", "b", "c", "d"}
	m := ids[rng.IntN(len(ids))]
	p := ids[rng.IntN(len(ids))]
	c := ringstate.Command{Member: m, RequestID: fmt.Sprintf("r%d", k)}
	switch rng.IntN(10) {
	case 0, 1:
		c.Op, c.RaftAddr = ringstate.OpRegister, fmt.Sprintf("10.0.0.%d:1", rng.IntN(2))
	case 2:
		c.Op, c.Replace = ringstate.OpClaimTokens, rng.IntN(4) == 0
		for range 1 + rng.IntN(3) {
			c.Tokens = append(c.Tokens, ringstate.Token(rng.IntN(12)))
		}
	case 3:
		c.Op = ringstate.OpActivate
	case 4:
		c.Op = ringstate.OpHeartbeat
	case 5:
		c.Op = ringstate.OpLeave
	case 6:
		c.Op, c.Peer = ringstate.OpClaimJoiner, p
	case 7:
		c.Op, c.Peer = ringstate.OpCompleteHandover, p
	case 8:
		c.Op, c.Peer = ringstate.OpAbortHandover, p
	default:
		c.Op = ringstate.OpRemove
	}
	return c
}

// TestRingModel_OutcomesDoNotDependOnTimeOrHeartbeats is the proof RingModel relies on, as a test:
// applying the same commands at real, jumping ring times (gaps longer than MaxRingTimeGap, so the
// heartbeat credit happens, and times that go backwards) gives the same outcome codes and the same
// modelDigest after every command as applying them at time 0, as the model does — and leaving out
// any heartbeats changes neither the other commands' codes nor the digests. If a ringstate change
// ever makes an outcome depend on health or time, this fails and the model must learn entry times.
func TestRingModel_OutcomesDoNotDependOnTimeOrHeartbeats(t *testing.T) {
	seeds := 100 // about 1.5s under -race
	if testing.Short() {
		seeds = 20
	}
	differ := 0 // runs in which the timed ring's heartbeat stamps really differ from the model's
	for seed := range seeds {
		rng := rand.New(rand.NewPCG(uint64(seed), 7))
		timed, model, noBeats := ringstate.New(), ringstate.New(), ringstate.New()
		now := int64(1_700_000_000_000)
		for k := range 150 {
			cmd := randomCommand(rng, k)
			switch rng.IntN(8) {
			case 0:
				now += ringstate.MaxRingTimeGap + rng.Int64N(10*ringstate.MaxRingTimeGap) // an outage: heartbeat credit
			case 1:
				now -= rng.Int64N(5_000) // a new leader with a slower clock
			default:
				now += rng.Int64N(2_000)
			}
			var terr, merr error
			timed, _, terr = timed.Apply(cmd, now)
			unid := cmd
			unid.RequestID = "" // the model applies without ids (RingModel.Step)
			model, _, merr = model.Apply(unid, 0)
			if ringstate.CodeOf(terr) != ringstate.CodeOf(merr) {
				t.Fatalf("seed %d command %d (%s %s -> %s %v): code %d at time %d, %d at time 0",
					seed, k, cmd.Op, cmd.Member, cmd.Peer, cmd.Tokens, ringstate.CodeOf(terr), now, ringstate.CodeOf(merr))
			}
			if cmd.Op != ringstate.OpHeartbeat || rng.IntN(2) == 0 {
				var nerr error
				noBeats, _, nerr = noBeats.Apply(unid, 0)
				if cmd.Op != ringstate.OpHeartbeat && ringstate.CodeOf(nerr) != ringstate.CodeOf(merr) {
					t.Fatalf("seed %d command %d (%s %s): code %d without some heartbeats, %d with them",
						seed, k, cmd.Op, cmd.Member, ringstate.CodeOf(nerr), ringstate.CodeOf(merr))
				}
			}
			md := modelDigest(model)
			if got := modelDigest(stripRecent(t, timed)); got != md {
				t.Fatalf("seed %d command %d (%s %s): digest at real times\n%s\nat time 0\n%s", seed, k, cmd.Op, cmd.Member, got, md)
			}
			if got := modelDigest(noBeats); got != md {
				t.Fatalf("seed %d command %d (%s %s): digest without some heartbeats\n%s\nwith them\n%s", seed, k, cmd.Op, cmd.Member, got, md)
			}
		}
		for _, m := range timed.Members() {
			if mm, ok := model.Member(m.ID); ok && mm.HeartbeatMs != m.HeartbeatMs {
				differ++
				break
			}
		}
	}
	// The test has teeth only if the timed rings really carry other times than the model's.
	if differ == 0 {
		t.Fatal("no run ended with a member whose heartbeat differs between the timed ring and the model")
	}
}

// stripRecent returns r without its request memory, which the model never has.
func stripRecent(t *testing.T, r *ringstate.Ring) *ringstate.Ring {
	t.Helper()
	out, err := ringstate.Restore(r.Members(), r.TimeMs(), nil)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// Heartbeats without a request id whose outcome is unknown are dropped (applied or not, they change
// nothing the model compares); any other command without an id and an unknown outcome cannot be
// resolved and fails the check; one request id in two operations fails it too.
func TestCheckRingLinearizable_UnknownsWithoutRequestID(t *testing.T) {
	reg := ringstate.Command{Op: ringstate.OpRegister, Member: "n1", RaftAddr: "10.0.0.1:1", RequestID: "reg"}
	after := func() string { r, _, _ := ringstate.New().Apply(reg, 0); return RingDigest(r) }()
	beat := ringstate.Command{Op: ringstate.OpHeartbeat, Member: "n1"}
	ops := []RingOp{{Client: 0, Cmd: reg, Call: at(1), Return: at(2)},
		{Client: 1, Cmd: beat, Call: at(3), Unknown: true},
		{Client: 2, Read: true, Call: at(4), Return: at(5), Digest: after}}
	if r := CheckRingLinearizable(ops, nil, "", time.Minute); !r.Valid() || r.UnknownHeartbeats != 1 || r.Checked != 2 {
		t.Fatal(r.String())
	}
	leave := ringstate.Command{Op: ringstate.OpLeave, Member: "n1"}
	bad := append(ops[:2:2], RingOp{Client: 1, Cmd: leave, Call: at(3), Unknown: true})
	if r := CheckRingLinearizable(bad, nil, "", time.Minute); r.Valid() {
		t.Fatal("an unresolvable leave passed: " + r.String())
	}
	twice := append(ops[:1:1], RingOp{Client: 1, Cmd: reg, Call: at(3), Return: at(4)})
	if r := CheckRingLinearizable(twice, nil, "", time.Minute); r.Valid() {
		t.Fatal("one request id in two operations passed: " + r.String())
	}
}

// A compactor lease claim is left out of the model's history (its outcome depends on ring time,
// which the model does not apply): a takeover granted after the first holder's lease expired would
// be refused at time 0. The registers and reads around it are still judged.
func TestCheckRingLinearizable_LeaseClaimsNotModelled(t *testing.T) {
	reg := ringstate.Command{Op: ringstate.OpRegister, Member: "n1", RaftAddr: "10.0.0.1:1", RequestID: "reg"}
	after := func() string { r, _, _ := ringstate.New().Apply(reg, 0); return RingDigest(r) }()
	claim := ringstate.Command{Op: ringstate.OpClaimCompactor, Member: "n1", LeaseMs: 3000, RequestID: "claim"}
	ops := []RingOp{{Client: 0, Cmd: reg, Call: at(1), Return: at(2)},
		// Observed OK (granted in the real ring); the model at time 0 would refuse it (n1 is PENDING).
		{Client: 1, Cmd: claim, Call: at(3), Return: at(4), Code: ringstate.CodeOK},
		{Client: 2, Read: true, Call: at(5), Return: at(6), Digest: after}}
	r := CheckRingLinearizable(ops, nil, "", time.Minute)
	if !r.Valid() || r.LeaseClaims != 1 || r.Checked != 2 || !strings.Contains(r.String(), "lease-claims-not-modelled=1") {
		t.Fatal(r.String())
	}
	// The read is still judged: a wrong digest fails with the claim left out.
	ops[2].Digest = "n1 ACTIVE peer= tokens=[]\n"
	if r := CheckRingLinearizable(ops, nil, "", time.Minute); r.Valid() {
		t.Fatal("a wrong read passed: " + r.String())
	}
}

// A history longer than MaxLinearizableOps loses its heartbeats (counted) and is checked; one that
// is still too long fails: it is never skipped.
func TestCheckRingLinearizable_LongHistories(t *testing.T) {
	reg := ringstate.Command{Op: ringstate.OpRegister, Member: "n1", RaftAddr: "10.0.0.1:1", RequestID: "reg"}
	ops := []RingOp{{Client: 0, Cmd: reg, Call: at(1), Return: at(2)}}
	for i := range MaxLinearizableOps {
		ops = append(ops, RingOp{Client: 1, Cmd: ringstate.Command{Op: ringstate.OpHeartbeat, Member: "n1"},
			Call: at(3).Add(time.Duration(2*i) * time.Microsecond), Return: at(3).Add(time.Duration(2*i+1) * time.Microsecond)})
	}
	r := CheckRingLinearizable(ops, nil, "", time.Minute)
	if !r.Valid() || r.TrimmedHeartbeats != MaxLinearizableOps || r.Checked != 1 {
		t.Fatal(r.String())
	}
	var reads []RingOp
	for i := range MaxLinearizableOps + 1 {
		reads = append(reads, RingOp{Client: 2, Read: true, Call: at(3).Add(time.Duration(2*i) * time.Microsecond),
			Return: at(3).Add(time.Duration(2*i+1) * time.Microsecond), Digest: ""})
	}
	if r := CheckRingLinearizable(reads, nil, "", time.Minute); r.Valid() || r.Err == "" {
		t.Fatal("an over-long history passed: " + r.String())
	}
}

// Batched heartbeats: a heartbeat acknowledged through a batch is judged as the single heartbeat
// its client sent (OK for a member, ErrUnknownMember for one the ring does not know, as the batch
// reports it); a batch recorded as an operation of its own is a heartbeat too: dropped when its
// outcome is unknown, and changing nothing a read compares when known.
func TestCheckRingLinearizable_BatchedHeartbeats(t *testing.T) {
	reg := ringstate.Command{Op: ringstate.OpRegister, Member: "n1", RaftAddr: "10.0.0.1:1", RequestID: "reg"}
	after := func() string { r, _, _ := ringstate.New().Apply(reg, 0); return RingDigest(r) }()
	batch := ringstate.Command{Op: ringstate.OpHeartbeatBatch, Beats: []ringstate.Beat{{Member: "n1"}, {Member: "ghost"}}}
	ops := []RingOp{{Client: 0, Cmd: reg, Call: at(1), Return: at(2)},
		// Two clients' heartbeats carried by one batch entry: each gets its own outcome.
		{Client: 1, Cmd: ringstate.Command{Op: ringstate.OpHeartbeat, Member: "n1"}, Call: at(3), Return: at(5)},
		{Client: 2, Cmd: ringstate.Command{Op: ringstate.OpHeartbeat, Member: "ghost"}, Call: at(3), Return: at(5),
			Code: ringstate.CodeUnknownMember},
		{Client: 3, Cmd: batch, Call: at(3), Return: at(5)},
		{Client: 4, Cmd: batch, Call: at(3), Unknown: true},
		{Client: 5, Read: true, Call: at(6), Return: at(7), Digest: after}}
	if r := CheckRingLinearizable(ops, nil, "", time.Minute); !r.Valid() || r.UnknownHeartbeats != 1 || r.Checked != 5 {
		t.Fatal(r.String())
	}
	// The ghost's heartbeat observed OK is not linearizable: the model refuses it.
	ops[2].Code = ringstate.CodeOK
	if r := CheckRingLinearizable(ops, nil, "", time.Minute); r.Valid() {
		t.Fatal("an acknowledged heartbeat of an unknown member passed: " + r.String())
	}
}

// The HA tracker's ops are left out of the model's history too: a failover granted in the real
// ring (the elected replica refreshed more than the failover timeout earlier) is refused at time 0.
func TestCheckRingLinearizable_HAOpsNotModelled(t *testing.T) {
	reg := ringstate.Command{Op: ringstate.OpRegister, Member: "n1", RaftAddr: "10.0.0.1:1", RequestID: "reg"}
	after := func() string { r, _, _ := ringstate.New().Apply(reg, 0); return RingDigest(r) }()
	elect := func(replica string) ringstate.Command {
		return ringstate.Command{Op: ringstate.OpHAElect, Member: "n1", HA: &ringstate.HACommand{Tenant: "t", Cluster: "c",
			Replica: replica, FailoverMs: 1000, MaxClusters: 1}}
	}
	ops := []RingOp{{Client: 0, Cmd: reg, Call: at(1), Return: at(2)},
		{Client: 1, Cmd: elect("r1"), Call: at(3), Return: at(4), Code: ringstate.CodeOK},
		// Granted in the real ring after the failover timeout; at time 0 the model would refuse it.
		{Client: 1, Cmd: elect("r2"), Call: at(5), Return: at(6), Code: ringstate.CodeOK},
		{Client: 2, Read: true, Call: at(7), Return: at(8), Digest: after}}
	r := CheckRingLinearizable(ops, nil, "", time.Minute)
	if !r.Valid() || r.HAOps != 2 || r.Checked != 2 || !strings.Contains(r.String(), "ha-ops-not-modelled=2") {
		t.Fatal(r.String())
	}
}
