package compact_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/raftingest/raftingest/compact"
	"github.com/raftingest/raftingest/ringstate"
	"github.com/raftingest/raftingest/storage"
)

// ringOf builds, through Apply, a ring of ACTIVE members ids with 64 random tokens each.
func ringOf(t *testing.T, ids ...string) *ringstate.Ring {
	t.Helper()
	rng := rand.New(rand.NewPCG(11, 11))
	r := ringstate.New()
	for i, id := range ids {
		mid := ringstate.MemberID(id)
		r = applyAll(t, r, ringstate.Command{Op: ringstate.OpRegister, Member: mid, RaftAddr: fmt.Sprintf("127.0.0.1:%d", 7100+i)})
		ts, err := r.FreeTokens(64, rng)
		if err != nil {
			t.Fatal(err)
		}
		r = applyAll(t, r, ringstate.Command{Op: ringstate.OpClaimTokens, Member: mid, Tokens: ts},
			ringstate.Command{Op: ringstate.OpActivate, Member: mid})
	}
	return r
}

func applyAll(t *testing.T, r *ringstate.Ring, cmds ...ringstate.Command) *ringstate.Ring {
	t.Helper()
	for _, c := range cmds {
		var err error
		if r, _, err = r.Apply(c, max(r.TimeMs(), t0)+1); err != nil {
			t.Fatalf("%s %s: %v", c.Op, c.Member, err)
		}
	}
	return r
}

// TestPlacement_ExactlyEffectiveRFWritableMembersOrAnError: every series is placed on exactly
// EffectiveRF distinct ACTIVE, healthy members, or the placement fails naming the series and the
// members that cannot take it — never a short placement (the spill ReplicationSet does for
// writes). RingPlacement then places the series nowhere, which SplitBlock refuses.
func TestPlacement_ExactlyEffectiveRFWritableMembersOrAnError(t *testing.T) {
	const timeout = int64(60_000)
	three := ringOf(t, "a", "b", "c")
	five := ringOf(t, "a", "b", "c", "d", "e")
	leaving := func(r *ringstate.Ring, id string) *ringstate.Ring {
		return applyAll(t, r, ringstate.Command{Op: ringstate.OpLeave, Member: ringstate.MemberID(id)})
	}
	// c stops heartbeating: the others' heartbeats move ring time past the timeout.
	stale := three
	for range 5 {
		stale = applyAll(t, stale, ringstate.Command{Op: ringstate.OpHeartbeat, Member: "a"},
			ringstate.Command{Op: ringstate.OpHeartbeat, Member: "b"})
		var err error
		if stale, _, err = stale.Apply(ringstate.Command{Op: ringstate.OpHeartbeat, Member: "a"}, stale.TimeMs()+20_000); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		name    string
		ring    *ringstate.Ring
		rf      int
		want    int    // members per series; 0: the placement must fail
		wantErr string // in the error
		never   string // a member no series may be placed on
	}{
		{"3 members, RF 3", three, 3, 3, "", ""},
		{"3 members, RF 3, one LEAVING", leaving(three, "c"), 3, 0, "c is LEAVING", ""},
		{"3 members, RF 3, one unhealthy", stale, 3, 0, "c is unhealthy", ""},
		{"5 members, RF 3, one LEAVING", leaving(five, "c"), 3, 3, "", "c"},
		{"2 members, RF 3: effective RF 2", ringOf(t, "a", "b"), 3, 2, "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			place := compact.Placement(tc.ring, ringstate.Placement{RF: tc.rf}, timeout)
			ringPlace := compact.RingPlacement(tc.ring, ringstate.Placement{RF: tc.rf}, timeout)
			for _, s := range testSeries(200) {
				got, err := place("t1", s.lset)
				if tc.want == 0 {
					if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !strings.Contains(err.Error(), s.lset.String()) {
						t.Fatalf("%s: placed on %v (err %v); want an error naming the series and %q", s.lset, got, err, tc.wantErr)
					}
					if p := ringPlace("t1", s.lset); p != nil {
						t.Fatalf("RingPlacement placed %s on %v, want nowhere", s.lset, p)
					}
					continue
				}
				if err != nil {
					t.Fatal(err)
				}
				if len(got) != tc.want || len(slices.Compact(slices.Sorted(slices.Values(got)))) != tc.want ||
					slices.Contains(got, tc.never) {
					t.Fatalf("%s placed on %v, want %d distinct members, not %q", s.lset, got, tc.want, tc.never)
				}
				for _, id := range got {
					if m, _ := tc.ring.Member(ringstate.MemberID(id)); !m.Writable(tc.ring.TimeMs(), timeout) {
						t.Fatalf("%s placed on %s, which is %s", s.lset, id, m.State)
					}
				}
				if p := ringPlace("t1", s.lset); !slices.Equal(p, got) {
					t.Fatalf("RingPlacement %v, Placement %v", p, got)
				}
			}
		})
	}
}

// TestCompactor_MemberLeaving_JobFailsBeforeStoringOrMarking is the scenario of the review: 3
// members, RF 3, every member flushed its replica of a 2h range; while the run goes on, one member
// is LEAVING, so only 2 members can take each series. The run fails, naming a series and the
// leaver; no bucket gains a block and no source is marked for deletion (before the fix every
// merged series went to 2 members and all 3 source copies were marked). Once the ring is
// settled again the same data compacts onto all 3.
func TestCompactor_MemberLeaving_JobFailsBeforeStoringOrMarking(t *testing.T) {
	ids := []string{"a", "b", "c"}
	ring := ringOf(t, ids...)
	ss := testSeries(60)
	root := t.TempDir()
	var fence atomic.Uint64
	fence.Store(1)
	buckets := map[string]*dirBucket{}
	for _, id := range ids {
		dir := filepath.Join(root, id, "blocks")
		if err := os.MkdirAll(filepath.Join(dir, "t1"), 0o755); err != nil {
			t.Fatal(err)
		}
		fsb, err := storage.NewFilesystemBucket(dir)
		if err != nil {
			t.Fatal(err)
		}
		buckets[id] = &dirBucket{dir: dir, bkt: fsb, fence: &fence, now: func() time.Time { return time.UnixMilli(t0 + 5*hour) }}
		// RF 3 over 3 members: every member replicates every series. Two flushes of the range on
		// each member (a restart in between), so there is something to merge.
		for p := range int64(2) {
			lo, hi := t0+p*hour, t0+(p+1)*hour
			var series []storage.Series
			for i, s := range ss {
				series = append(series, storage.Series{Labels: s.lset, Chunks: chunksOf(t, i, lo, hi)})
			}
			if _, err := storage.WriteBlock(context.Background(), filepath.Join(dir, "t1"), series, storage.BlockOptions{
				MinTime: lo, MaxTime: hi, Labels: map[string]string{storage.TenantLabel: "t1", storage.IngesterLabel: id}}); err != nil {
				t.Fatal(err)
			}
		}
	}
	blocksOf := func() map[string][]string {
		out := map[string][]string{}
		for _, id := range ids {
			ents, err := os.ReadDir(filepath.Join(buckets[id].dir, "t1"))
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range ents {
				out[id] = append(out[id], e.Name())
			}
		}
		return out
	}
	run := func(r *ringstate.Ring) error {
		cfg := compact.Config{Enabled: true, Interval: time.Hour, BlockRanges: compact.DefaultBlockRanges(),
			LeaseDuration: time.Minute, CompletionDelay: 30 * time.Minute, DeletionDelay: deletionDelay}
		comp, err := compact.New(cfg, compact.Deps{
			Lease: fakeLease{},
			Cluster: func(context.Context) (compact.Cluster, error) {
				m := map[string]compact.Bucket{}
				for id, b := range buckets {
					m[id] = b
				}
				return compact.Cluster{Members: m, Place: compact.RingPlacement(r, ringstate.Placement{RF: rf}, time.Minute.Milliseconds())}, nil
			},
			WorkDir: filepath.Join(root, "work"), FlushPeriod: 2 * time.Hour,
			Now: func() time.Time { return time.UnixMilli(t0 + 5*hour) },
		})
		if err != nil {
			t.Fatal(err)
		}
		return comp.RunOnce(context.Background(), 1)
	}

	before := blocksOf()
	cLeaving := applyAll(t, ring, ringstate.Command{Op: ringstate.OpLeave, Member: "c"})
	err := run(cLeaving)
	if err == nil || !strings.Contains(err.Error(), "placed on no part") {
		t.Fatalf("run with c LEAVING: %v; want the job to fail on a series it cannot place", err)
	}
	if diff := blocksOf(); !mapsEqual(before, diff) {
		t.Fatalf("a failed job changed the buckets:\n before %v\n after  %v", before, diff)
	}
	for _, id := range ids {
		if m := buckets[id].marked(t, "t1"); len(m) > 0 {
			t.Fatalf("a failed job marked %s's blocks %v for deletion", id, m)
		}
	}
	if _, perr := compact.Placement(cLeaving, ringstate.Placement{RF: rf}, time.Minute.Milliseconds())("t1", ss[0].lset); perr == nil ||
		!strings.Contains(perr.Error(), "c is LEAVING") {
		t.Fatalf("Placement's reason: %v", perr)
	}

	// The ring settled (c came back ACTIVE, as a restart of a leaver does): the run compacts.
	if err := run(applyAll(t, cLeaving, ringstate.Command{Op: ringstate.OpRegister, Member: "c", RaftAddr: "127.0.0.1:7102"})); err != nil {
		t.Fatal(err)
	}
	for _, id := range ids {
		if m := buckets[id].marked(t, "t1"); len(m) != 2 {
			t.Fatalf("%s: %d sources marked after the settled run, want its 2", id, len(m))
		}
		if n := len(blocksOf()[id]); n != 3 {
			t.Fatalf("%s holds %d blocks, want its 2 marked sources and the merged part", id, n)
		}
	}
}

func mapsEqual(a, b map[string][]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if !slices.Equal(v, b[k]) {
			return false
		}
	}
	return true
}
