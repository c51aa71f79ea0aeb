package ringstate

import (
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"testing"
)

// foldSingles applies each beat as a single OpHeartbeat at now, as a member would have sent it
// before batching, and returns the ring and the members whose heartbeat was refused.
func foldSingles(t testing.TB, r *Ring, beats []Beat, now int64) (*Ring, map[MemberID]bool) {
	t.Helper()
	var refused map[MemberID]bool
	for _, b := range beats {
		next, _, err := r.Apply(Command{Op: OpHeartbeat, Member: b.Member, CommandVersion: b.CommandVersion}, now)
		if err != nil {
			if !errors.Is(err, ErrUnknownMember) {
				t.Fatalf("single heartbeat %s: %v", b.Member, err)
			}
			if refused == nil {
				refused = map[MemberID]bool{}
			}
			refused[b.Member] = true
		}
		r = next
	}
	return r, refused
}

// TestHeartbeatBatch_SameRingAsSingles: a batch at time t gives the ring its heartbeats give one by
// one at t, and reports as skipped exactly the heartbeats the singles would have had refused.
func TestHeartbeatBatch_SameRingAsSingles(t *testing.T) {
	base := zoo(t)
	now := base.TimeMs() + 5_000
	cases := []struct {
		name  string
		beats []Beat
		at    int64
	}{
		{"one", []Beat{{Member: "a"}}, now},
		{"every state", []Beat{{Member: "a"}, {Member: "a2"}, {Member: "j"}, {Member: "jr"}, {Member: "l"},
			{Member: "lp"}, {Member: "p"}, {Member: "p2"}}, now},
		{"unknown members skipped", []Beat{{Member: "ghost"}, {Member: "a"}, {Member: "zz"}}, now},
		{"only unknown", []Beat{{Member: "ghost"}}, now},
		{"invalid id is unknown", []Beat{{Member: "-x"}, {Member: "a2"}}, now},
		{"versions advertised", []Beat{{Member: "a", CommandVersion: 4}, {Member: "l", CommandVersion: 3}}, now},
		{"duplicate: later version wins", []Beat{{Member: "a", CommandVersion: 3}, {Member: "a", CommandVersion: 4},
			{Member: "a"}}, now},
		{"time in the past keeps ring time", []Beat{{Member: "a"}}, base.TimeMs() - 10_000},
		{"after an outage: heartbeats credited", []Beat{{Member: "a"}, {Member: "p"}}, base.TimeMs() + 5*MaxRingTimeGap},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, events, err := base.Apply(Command{Op: OpHeartbeatBatch, Beats: c.beats}, c.at)
			if err != nil {
				t.Fatalf("batch refused: %v", err)
			}
			if err := checkInvariants(got); err != nil {
				t.Fatal(err)
			}
			want, refused := foldSingles(t, base, c.beats, c.at)
			if err := ringsEqual(got, want); err != nil {
				t.Fatalf("batch and singles differ: %v", err)
			}
			if skipped := SkippedBeats(events); !maps.Equal(skipped, refused) {
				t.Fatalf("skipped %v, singles refused %v", skipped, refused)
			}
		})
	}
}

// TestHeartbeatBatch_Property: on random rings, at random times (some past an outage), random
// batches with unknown, duplicate and versioned beats give the ring of their singles, never touch
// the parent ring, and keep every invariant.
func TestHeartbeatBatch_Property(t *testing.T) {
	rng := rand.New(rand.NewPCG(16, 4))
	iters := 2000
	if raceEnabled {
		iters = 300
	}
	for i := range iters {
		r := randomRing(t, rng)
		before := deepCopy(r)
		ids := r.MemberIDs()
		n := 1 + rng.IntN(2*len(ids)+3)
		beats := make([]Beat, n)
		for k := range beats {
			if rng.IntN(5) == 0 {
				beats[k].Member = MemberID(fmt.Sprintf("gone%d", rng.IntN(3)))
			} else {
				beats[k].Member = ids[rng.IntN(len(ids))]
			}
			if rng.IntN(2) == 0 {
				beats[k].CommandVersion = uint32(1 + rng.IntN(5))
			}
		}
		at := r.TimeMs() + int64(rng.IntN(3*int(MaxRingTimeGap))) - 1_000
		got, events, err := r.Apply(Command{Op: OpHeartbeatBatch, Beats: beats}, at)
		if err != nil {
			t.Fatalf("iter %d: batch refused: %v", i, err)
		}
		if err := checkInvariants(got); err != nil {
			t.Fatalf("iter %d: %v", i, err)
		}
		if err := ringsEqual(r, before); err != nil {
			t.Fatalf("iter %d: the batch modified its parent ring: %v", i, err)
		}
		want, refused := foldSingles(t, r, beats, at)
		if err := ringsEqual(got, want); err != nil {
			t.Fatalf("iter %d: batch %v at %d: %v", i, beats, at, err)
		}
		if skipped := SkippedBeats(events); !maps.Equal(skipped, refused) {
			t.Fatalf("iter %d: skipped %v, singles refused %v", i, skipped, refused)
		}
	}
}

// TestHeartbeatBatch_Malformed: a batch with no beats, too many, or another op's fields is refused
// as a whole and changes nothing but ring time; beats on another op are refused too.
func TestHeartbeatBatch_Malformed(t *testing.T) {
	base := zoo(t)
	one := []Beat{{Member: "a"}}
	many := make([]Beat, MaxBeats+1)
	for i := range many {
		many[i].Member = "a"
	}
	cases := []struct {
		name string
		cmd  Command
	}{
		{"no beats", Command{Op: OpHeartbeatBatch}},
		{"too many beats", Command{Op: OpHeartbeatBatch, Beats: many}},
		{"member", Command{Op: OpHeartbeatBatch, Member: "a", Beats: one}},
		{"peer", Command{Op: OpHeartbeatBatch, Peer: "a", Beats: one}},
		{"address", Command{Op: OpHeartbeatBatch, RaftAddr: "10.0.0.1:1", Beats: one}},
		{"tokens", Command{Op: OpHeartbeatBatch, Tokens: Tokens{1}, Beats: one}},
		{"command version", Command{Op: OpHeartbeatBatch, CommandVersion: 4, Beats: one}},
		{"lease", Command{Op: OpHeartbeatBatch, LeaseMs: 1, Beats: one}},
		{"readers", Command{Op: OpHeartbeatBatch, Readers: []MemberID{"a"}, Beats: one}},
		{"beats on a heartbeat", Command{Op: OpHeartbeat, Member: "a", Beats: one}},
		{"beats on a register", Command{Op: OpRegister, Member: "q", RaftAddr: "10.0.0.9:1", Beats: one}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, events, err := base.Apply(c.cmd, base.TimeMs()+1)
			if !errors.Is(err, ErrInvalidCommand) {
				t.Fatalf("got %v, want ErrInvalidCommand", err)
			}
			if len(events) != 0 {
				t.Fatalf("events %v on a refusal", events)
			}
			if err := sameExceptTime(base, got, false); err != nil {
				t.Fatal(err)
			}
		})
	}
}
