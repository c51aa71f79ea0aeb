package ringstate

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

func claimLease(id MemberID, ms int64) Command {
	return Command{Op: OpClaimCompactor, Member: id, LeaseMs: ms}
}

// attested is c with Readers naming every member of r, as a leader that found every member
// advertising LeaseCommandVersion proposes a claim.
func attested(r *Ring, c Command) Command {
	c.Readers = r.MemberIDs()
	return c
}

// TestApply_ClaimCompactor_Table is the lease's rule, case by case: granted when nobody holds it,
// when the claimant holds it (renewal, epoch kept), when it expired in ring time at apply, or when
// its holder is no longer a member; a new holder gets epoch+1; only an ACTIVE member may claim;
// every refusal changes nothing but ring time.
func TestApply_ClaimCompactor_Table(t *testing.T) {
	base := zoo(t) // a, a2 ACTIVE; j, jr JOINING; l, lp LEAVING; p, p2 PENDING
	t0 := base.TimeMs()
	held := func(t *testing.T, holder MemberID, at int64, ms int64) *Ring {
		t.Helper()
		r, _, err := base.Apply(attested(base, claimLease(holder, ms)), at)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	type want struct {
		err    error
		holder MemberID
		epoch  uint64
		expiry int64
	}
	for _, tc := range []struct {
		name string
		ring func(t *testing.T) *Ring
		cmd  Command
		at   int64
		want want
	}{
		{"no holder: granted, epoch 1", func(*testing.T) *Ring { return base }, claimLease("a", 1000), t0 + 10,
			want{holder: "a", epoch: 1, expiry: t0 + 1010}},
		{"renewal by the holder before expiry: epoch kept, expiry moved", func(t *testing.T) *Ring { return held(t, "a", t0+10, 1000) },
			claimLease("a", 1000), t0 + 500, want{holder: "a", epoch: 1, expiry: t0 + 1500}},
		{"renewal by the holder after expiry (nobody took it): epoch kept", func(t *testing.T) *Ring { return held(t, "a", t0+10, 1000) },
			claimLease("a", 1000), t0 + 5000, want{holder: "a", epoch: 1, expiry: t0 + 6000}},
		{"another member before expiry: refused", func(t *testing.T) *Ring { return held(t, "a", t0+10, 1000) },
			claimLease("a2", 1000), t0 + 1009, want{err: ErrLeaseHeld}},
		{"another member exactly at expiry: granted, epoch+1", func(t *testing.T) *Ring { return held(t, "a", t0+10, 1000) },
			claimLease("a2", 1000), t0 + 1010, want{holder: "a2", epoch: 2, expiry: t0 + 2010}},
		{"holder removed: granted before expiry", func(t *testing.T) *Ring {
			r := held(t, "a", t0+10, 100_000)
			r, _, err := r.Apply(remove("a"), t0+20)
			if err != nil {
				t.Fatal(err)
			}
			return r
		}, claimLease("a2", 1000), t0 + 30, want{holder: "a2", epoch: 2, expiry: t0 + 1030}},
		{"PENDING member: refused", func(*testing.T) *Ring { return base }, claimLease("p", 1000), t0 + 1, want{err: ErrIllegalTransition}},
		{"JOINING member: refused", func(*testing.T) *Ring { return base }, claimLease("j", 1000), t0 + 1, want{err: ErrIllegalTransition}},
		{"LEAVING member: refused", func(*testing.T) *Ring { return base }, claimLease("l", 1000), t0 + 1, want{err: ErrIllegalTransition}},
		{"holder that went LEAVING cannot renew", func(t *testing.T) *Ring {
			r, _, err := held(t, "a", t0+10, 1000).Apply(leave("a"), t0+20)
			if err != nil {
				t.Fatal(err)
			}
			return r
		}, claimLease("a", 1000), t0 + 30, want{err: ErrIllegalTransition}},
		{"unknown member: refused", func(*testing.T) *Ring { return base }, claimLease("zz", 1000), t0 + 1, want{err: ErrUnknownMember}},
		{"zero duration: refused", func(*testing.T) *Ring { return base }, claimLease("a", 0), t0 + 1, want{err: ErrInvalidCommand}},
		{"negative duration: refused", func(*testing.T) *Ring { return base }, claimLease("a", -5), t0 + 1, want{err: ErrInvalidCommand}},
		{"duration over MaxLeaseMs: refused", func(*testing.T) *Ring { return base }, claimLease("a", MaxLeaseMs+1), t0 + 1, want{err: ErrInvalidCommand}},
		{"a peer: refused", func(*testing.T) *Ring { return base }, Command{Op: OpClaimCompactor, Member: "a", Peer: "a2", LeaseMs: 10}, t0 + 1, want{err: ErrInvalidCommand}},
		{"a lease on another op: refused", func(*testing.T) *Ring { return base }, Command{Op: OpHeartbeat, Member: "a", LeaseMs: 10}, t0 + 1, want{err: ErrInvalidCommand}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := tc.ring(t)
			if tc.cmd.Op == OpClaimCompactor {
				tc.cmd = attested(r, tc.cmd)
			}
			next, err, bad := applyChecked(r, tc.cmd, tc.at)
			if bad != nil {
				t.Fatal(bad)
			}
			if tc.want.err != nil {
				if !errors.Is(err, tc.want.err) {
					t.Fatalf("err %v, want %v", err, tc.want.err)
				}
				if next.CompactorLease() != r.CompactorLease() {
					t.Fatalf("refusal changed the lease: %+v -> %+v", r.CompactorLease(), next.CompactorLease())
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got := next.CompactorLease()
			if wl := (CompactorLease{Holder: tc.want.holder, Epoch: tc.want.epoch, ExpiresMs: tc.want.expiry}); got != wl {
				t.Fatalf("lease %+v, want %+v", got, wl)
			}
			if !got.HeldBy(tc.want.holder, tc.at) || got.HeldBy(tc.want.holder, tc.want.expiry) {
				t.Fatalf("HeldBy wrong around expiry for %+v", got)
			}
			// A claim changes the lease only: members and their heartbeats stay as they were.
			if e := sameMembers(r, next); e != nil {
				t.Fatal(e)
			}
		})
	}
}

// sameMembers reports whether a and b differ in nothing but ring time, request memory and lease.
func sameMembers(a, b *Ring) error {
	da, db := dump(a), dump(b)
	da.TimeMs, da.Recent, da.Lease = db.TimeMs, db.Recent, db.Lease
	if fmt.Sprint(da) != fmt.Sprint(db) {
		return fmt.Errorf("claim changed more than the lease:\n before %+v\n after  %+v", da, db)
	}
	return nil
}

func TestApply_ClaimCompactor_RequestIDRetry(t *testing.T) {
	r := zoo(t)
	c := attested(r, claimLease("a", 1000))
	c.RequestID = "lease-1"
	r1, _, err := r.Apply(c, r.TimeMs()+1)
	if err != nil {
		t.Fatal(err)
	}
	// a2 takes it after expiry; a's retry of its old request must not take it back.
	r2, _, err := r1.Apply(attested(r1, claimLease("a2", 1000)), r1.TimeMs()+2000)
	if err != nil {
		t.Fatal(err)
	}
	r3, _, err := r2.Apply(c, r2.TimeMs()+1)
	if err != nil {
		t.Fatalf("retry returned %v, want its first outcome (ok)", err)
	}
	if l := r3.CompactorLease(); l.Holder != "a2" || l.Epoch != 2 {
		t.Fatalf("a retry re-applied the claim: %+v", l)
	}
}

func TestWithCompactorLease_RefusesBrokenLeases(t *testing.T) {
	for _, l := range []CompactorLease{{Holder: "a", Epoch: 0}, {Epoch: 3}, {Holder: "-bad", Epoch: 1}} {
		if _, err := New().WithCompactorLease(l); !errors.Is(err, ErrCorruptState) {
			t.Errorf("%+v: err %v, want ErrCorruptState", l, err)
		}
	}
	r, err := New().WithCompactorLease(CompactorLease{Holder: "gone", Epoch: 7, ExpiresMs: 5})
	if err != nil || r.CompactorLease().Epoch != 7 {
		t.Fatalf("a lease held by a non-member must restore: %v", err)
	}
}

// TestProperty_CompactorLease drives random claims, leaves, removals, restarts and time steps
// (including steps back) over 5 members, and checks after every Apply: two members never hold the
// lease at once by ring time (a grant to a new holder happens only at or after the previous
// holder's expiry, or once it is no longer a member), epochs strictly increase with each new
// holder and never change on a renewal, the lease survives Restore, and LeaseEverGranted is true
// exactly from the first grant on.
func TestProperty_CompactorLease(t *testing.T) {
	ids := []MemberID{"m0", "m1", "m2", "m3", "m4"}
	for seed := range uint64(60) {
		rng := rand.New(rand.NewPCG(seed, 99))
		r := New()
		for i, id := range ids {
			r = mustApply(t, r, register(id), claim(id, Token(100*(i+1))), activate(id))
		}
		grants := 0
		for step := range 300 {
			id := ids[rng.IntN(len(ids))]
			var c Command
			switch k := rng.IntN(20); {
			case k < 14:
				c = attested(r, claimLease(id, int64(1+rng.IntN(50))))
			case k < 16:
				c = leave(id)
			case k < 17:
				c = remove(id)
			case k < 19:
				c = register(id) // a restart: LEAVING goes back to ACTIVE; a removed member comes back PENDING
			default:
				c = claim(id, Token(100*(1+rng.IntN(len(ids))))+Token(rng.IntN(50)))
			}
			now := r.TimeMs() + int64(rng.IntN(30)) - 5
			prev := r.CompactorLease()
			next, err, bad := applyChecked(r, c, now)
			if bad != nil {
				t.Fatalf("seed %d step %d: %v", seed, step, bad)
			}
			if err == nil && c.Op == OpClaimCompactor {
				grants++
			}
			// The upgrade gate's test: true exactly once some claim was granted, whatever came after
			// (leaves, removal of the holder, refusals), and the same on a restored copy.
			if next.LeaseEverGranted() != (grants > 0) {
				t.Fatalf("seed %d step %d: LeaseEverGranted %v after %d grants", seed, step, next.LeaseEverGranted(), grants)
			}
			restored, err2 := Restore(next.Members(), next.TimeMs(), next.Recent())
			if err2 == nil {
				restored, err2 = restored.WithCompactorLease(next.CompactorLease())
			}
			if err2 != nil || restored.LeaseEverGranted() != (grants > 0) {
				t.Fatalf("seed %d step %d: restored as from a snapshot: %v (LeaseEverGranted after %d grants)", seed, step, err2, grants)
			}
			got := next.CompactorLease()
			at := next.TimeMs()
			switch {
			case got == prev:
			case got.Holder == prev.Holder:
				if got.Epoch != prev.Epoch || c.Op != OpClaimCompactor {
					t.Fatalf("seed %d step %d: renewal changed the epoch %d -> %d (by %s)", seed, step, prev.Epoch, got.Epoch, c.Op)
				}
			default:
				_, prevIsMember := r.Member(prev.Holder)
				if prev.Holder != "" && at < prev.ExpiresMs && prevIsMember {
					t.Fatalf("seed %d step %d: %s took the lease at ring time %d while %s held it until %d",
						seed, step, got.Holder, at, prev.Holder, prev.ExpiresMs)
				}
				if got.Epoch != prev.Epoch+1 {
					t.Fatalf("seed %d step %d: new holder %s got epoch %d after %d", seed, step, got.Holder, got.Epoch, prev.Epoch)
				}
				if m, _ := r.Member(got.Holder); m.State != ACTIVE {
					t.Fatalf("seed %d step %d: %s member %s got the lease", seed, step, m.State, got.Holder)
				}
			}
			r = next
		}
		if grants == 0 {
			t.Fatalf("seed %d: no claim was granted; the generator tests nothing", seed)
		}
	}
}

// advertising is c (a register or a heartbeat) advertising command version v.
func advertising(c Command, v uint32) Command {
	c.CommandVersion = v
	return c
}

// TestApply_ClaimCompactor_MixedVersions is the upgrade gate: a ring with a member that does not
// advertise LeaseCommandVersion (a build that halts on a claim entry) refuses a claim that does
// not name it among the readers (ErrMixedVersions, naming it), changing nothing but ring time;
// once it re-registers advertising the version the leader can name every member and the claim is
// granted. A register restates the version (a rollback to a build that does not advertise goes
// back to 0); a heartbeat that carries none keeps it.
func TestApply_ClaimCompactor_MixedVersions(t *testing.T) {
	r := New()
	r = mustApply(t, r, advertising(register("a"), LeaseCommandVersion), claim("a", 100), activate("a"))
	r = mustApply(t, r, register("b"), claim("b", 200), activate("b")) // b: an old build, advertises nothing
	if got := r.NotReading(LeaseCommandVersion); !slices.Equal(got, []MemberID{"b"}) {
		t.Fatalf("NotReading = %v, want [b]", got)
	}
	// What a leader could attest (a alone), and a claim naming nobody: both refused.
	for _, readers := range [][]MemberID{{"a"}, nil} {
		c := claimLease("a", 1000)
		c.Readers = readers
		next, err, bad := applyChecked(r, c, r.TimeMs()+1)
		if bad != nil {
			t.Fatal(bad)
		}
		if !errors.Is(err, ErrMixedVersions) || !strings.Contains(err.Error(), "b]") {
			t.Fatalf("readers %v: err %v, want ErrMixedVersions naming b", readers, err)
		}
		if CodeOf(err) != CodeMixedVersions {
			t.Fatalf("code %d, want CodeMixedVersions", CodeOf(err))
		}
		if next.CompactorLease() != (CompactorLease{}) {
			t.Fatalf("refused claim granted %+v", next.CompactorLease())
		}
	}
	// A heartbeat without a version keeps what the member said; b re-registers on the new build.
	r = mustApply(t, r, heartbeat("a"))
	if m, _ := r.Member("a"); m.CommandVersion != LeaseCommandVersion {
		t.Fatalf("a heartbeat without a version reset a's to %d", m.CommandVersion)
	}
	r = mustApply(t, r, advertising(register("b"), LeaseCommandVersion))
	if got := r.NotReading(LeaseCommandVersion); got != nil {
		t.Fatalf("NotReading = %v after b re-registered advertising %d", got, LeaseCommandVersion)
	}
	next, err, bad := applyChecked(r, attested(r, claimLease("a", 1000)), r.TimeMs()+1)
	if bad != nil || err != nil {
		t.Fatalf("claim once every member reads version %d: %v %v", LeaseCommandVersion, err, bad)
	}
	if l := next.CompactorLease(); l.Holder != "a" || l.Epoch != 1 {
		t.Fatalf("lease %+v", l)
	}
	// A reader that is not a member (removed since the leader looked) is harmless.
	c := claimLease("a", 1000)
	c.Readers = []MemberID{"a", "b", "gone"}
	if _, err, bad := applyChecked(next, c, next.TimeMs()+1); err != nil || bad != nil {
		t.Fatalf("claim naming a removed reader: %v %v", err, bad)
	}
	// b rolled back to a build that does not advertise: its register says so, and the gate closes.
	r = mustApply(t, next, register("b"))
	if got := r.NotReading(LeaseCommandVersion); !slices.Equal(got, []MemberID{"b"}) {
		t.Fatalf("NotReading = %v after b registered without a version", got)
	}
	// A heartbeat that advertises sets it too (the path by which a member whose register went
	// through an older leader, which drops the field, is known once a newer one leads).
	r = mustApply(t, r, advertising(heartbeat("b"), LeaseCommandVersion))
	if got := r.NotReading(LeaseCommandVersion); got != nil {
		t.Fatalf("NotReading = %v after b's heartbeat advertised %d", got, LeaseCommandVersion)
	}
}

// TestApply_VersionFields_OnlyWhereTheyBelong: a command version on an op other than register and
// heartbeat, readers on an op other than claim-compactor, and unsorted, duplicate or invalid
// readers are refused as invalid commands.
func TestApply_VersionFields_OnlyWhereTheyBelong(t *testing.T) {
	r := zoo(t)
	for _, c := range []Command{
		advertising(activate("a"), LeaseCommandVersion),
		advertising(leave("a"), LeaseCommandVersion),
		advertising(claimLease("a", 10), LeaseCommandVersion),
		{Op: OpHeartbeat, Member: "a", Readers: []MemberID{"a"}},
		{Op: OpClaimCompactor, Member: "a", LeaseMs: 10, Readers: []MemberID{"b", "a"}},
		{Op: OpClaimCompactor, Member: "a", LeaseMs: 10, Readers: []MemberID{"a", "a"}},
		{Op: OpClaimCompactor, Member: "a", LeaseMs: 10, Readers: []MemberID{"a", "-x"}},
		{Op: OpClaimCompactor, Member: "a", LeaseMs: 10, Readers: make([]MemberID, MaxReaders+1)},
	} {
		if _, err, bad := applyChecked(r, c, r.TimeMs()+1); bad != nil || !errors.Is(err, ErrInvalidCommand) {
			t.Errorf("%s %+v: err %v (%v), want ErrInvalidCommand", c.Op, c, err, bad)
		}
	}
}
