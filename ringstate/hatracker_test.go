package ringstate

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
)

func elect(tenant, cluster, replica string, failoverMs int64, maxClusters int) Command {
	return Command{Op: OpHAElect, Member: "d1", HA: &HACommand{Tenant: tenant, Cluster: cluster, Replica: replica,
		FailoverMs: failoverMs, MaxClusters: maxClusters}}
}

func haGC(idleMs int64) Command {
	return Command{Op: OpHAGC, Member: "d1", HA: &HACommand{IdleMs: idleMs}}
}

// TestHA_ElectRules is the compare-and-set of OpHAElect, step by step at ring time: a new cluster
// elects the first replica; the elected one refreshes; another is refused until the elected one is
// older than the failover timeout (strictly), then takes over with a new ElectedMs.
func TestHA_ElectRules(t *testing.T) {
	const fo = 30_000
	r := New()
	type step struct {
		at                     int64
		cmd                    Command
		wantErr                error
		wantReplica            string
		wantElected, wantFresh int64
	}
	for i, s := range []step{
		{1000, elect("t", "c", "r1", fo, 10), nil, "r1", 1000, 1000},
		{2000, elect("t", "c", "r2", fo, 10), ErrHAReplicaElected, "r1", 1000, 1000},
		{16000, elect("t", "c", "r1", fo, 10), nil, "r1", 1000, 16000},                 // refresh
		{46000, elect("t", "c", "r2", fo, 10), ErrHAReplicaElected, "r1", 1000, 16000}, // exactly the timeout: not yet
		{46001, elect("t", "c", "r2", fo, 10), nil, "r2", 46001, 46001},                // failover
		{46002, elect("t", "c", "r1", fo, 10), ErrHAReplicaElected, "r2", 46001, 46001},
		{40000, elect("t", "c", "r2", fo, 10), nil, "r2", 46001, 46002}, // a stamp behind ring time applies at ring time
	} {
		next, ev, err := r.Apply(s.cmd, s.at)
		if !errors.Is(err, s.wantErr) || (s.wantErr == nil) != (err == nil) {
			t.Fatalf("step %d: err %v, want %v", i, err, s.wantErr)
		}
		if len(ev) != 0 {
			t.Fatalf("step %d: member events %v from an HA op", i, ev)
		}
		e, ok := next.HAReplica("t", "c")
		if !ok || e.Replica != s.wantReplica || e.ElectedMs != s.wantElected || e.RefreshedMs != s.wantFresh {
			t.Fatalf("step %d: entry %+v (present %v), want %s elected %d refreshed %d", i, e, ok, s.wantReplica,
				s.wantElected, s.wantFresh)
		}
		if err != nil && CodeOf(err) != CodeIllegalTransition {
			t.Fatalf("step %d: code %d, want CodeIllegalTransition", i, CodeOf(err))
		}
		r = next
	}
}

// TestHA_TenantLimitAndGlobalCap: a tenant cannot elect more clusters than the command's limit, an
// existing cluster keeps refreshing at the limit, and other tenants are unaffected.
func TestHA_TenantLimitAndGlobalCap(t *testing.T) {
	r := New()
	r = mustApply(t, r, elect("a", "c1", "x", 1000, 2), elect("a", "c2", "x", 1000, 2), elect("b", "c1", "x", 1000, 2))
	if _, _, err := r.Apply(elect("a", "c3", "x", 1000, 2), 5); !errors.Is(err, ErrHATooManyClusters) || CodeOf(err) != CodeInvalidCommand {
		t.Fatalf("third cluster of a: %v, want ErrHATooManyClusters", err)
	}
	if _, _, err := r.Apply(elect("a", "c1", "x", 1000, 2), 5); err != nil {
		t.Fatalf("refresh at the limit: %v", err)
	}
	if n := r.HAClusters("a"); n != 2 {
		t.Fatalf("HAClusters(a) = %d", n)
	}
	// The global cap, whatever the per-tenant limit says.
	entries := make([]HAReplica, MaxHAEntries)
	for i := range entries {
		entries[i] = HAReplica{Tenant: fmt.Sprintf("t%05d", i), Cluster: "c", Replica: "r", ElectedMs: 1, RefreshedMs: 1}
	}
	full, err := New().WithHA(entries)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := full.Apply(elect("new", "c", "r", 1000, MaxHAEntries), 2); !errors.Is(err, ErrHATooManyClusters) {
		t.Fatalf("beyond MaxHAEntries: %v", err)
	}
	if _, err := New().WithHA(append(entries, HAReplica{Tenant: "z", Cluster: "c", Replica: "r"})); !errors.Is(err, ErrCorruptState) {
		t.Fatalf("restore beyond MaxHAEntries: %v", err)
	}
}

// TestHA_GCRemovesOnlyIdleEntries: OpHAGC removes the entries refreshed at or before t-IdleMs.
func TestHA_GCRemovesOnlyIdleEntries(t *testing.T) {
	r := New()
	r, _, _ = r.Apply(elect("t", "old", "r", 1000, 10), 1000)
	r, _, _ = r.Apply(elect("t", "new", "r", 1000, 10), 5000)
	r, _, _ = r.Apply(elect("t", "edge", "r", 1000, 10), 3000)
	next, _, err := r.Apply(haGC(3000), 6000)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range next.HAReplicas() {
		got = append(got, e.Cluster)
	}
	if !slices.Equal(got, []string{"edge", "new"}) {
		t.Fatalf("after gc: %v, want [edge new]", got)
	}
	if len(r.HAReplicas()) != 3 {
		t.Fatal("gc modified the parent ring")
	}
	if n, _, _ := next.Apply(haGC(1), 6001); n.HALen() != 0 {
		t.Fatalf("gc of everything left %d", n.HALen())
	}
}

// TestHA_MalformedCommandsRefused: HA fields on other ops, missing or out-of-bound fields, hostile
// values: all refused with ErrInvalidCommand and nothing changes.
func TestHA_MalformedCommandsRefused(t *testing.T) {
	big := ""
	for range MaxHAValueLen + 1 {
		big += "x"
	}
	for name, c := range map[string]Command{
		"ha on heartbeat":   {Op: OpHeartbeat, Member: "d1", HA: &HACommand{IdleMs: 1}},
		"elect without ha":  {Op: OpHAElect, Member: "d1"},
		"gc without ha":     {Op: OpHAGC, Member: "d1"},
		"empty tenant":      elect("", "c", "r", 1, 1),
		"empty cluster":     elect("t", "", "r", 1, 1),
		"empty replica":     elect("t", "c", "", 1, 1),
		"long replica":      elect("t", "c", big, 1, 1),
		"control character": elect("t", "c\n", "r", 1, 1),
		"invalid utf8":      elect("t", "c", "\xff", 1, 1),
		"zero failover":     elect("t", "c", "r", 0, 1),
		"huge failover":     elect("t", "c", "r", MaxHAFailoverMs+1, 1),
		"zero max clusters": elect("t", "c", "r", 1, 0),
		"huge max clusters": elect("t", "c", "r", 1, MaxHAEntries+1),
		"elect with idle":   {Op: OpHAElect, Member: "d1", HA: &HACommand{Tenant: "t", Cluster: "c", Replica: "r", FailoverMs: 1, MaxClusters: 1, IdleMs: 1}},
		"gc with tenant":    {Op: OpHAGC, Member: "d1", HA: &HACommand{Tenant: "t", IdleMs: 1}},
		"gc zero idle":      haGC(0),
		"elect with peer":   {Op: OpHAElect, Member: "d1", Peer: "x", HA: &HACommand{Tenant: "t", Cluster: "c", Replica: "r", FailoverMs: 1, MaxClusters: 1}},
		"no member":         {Op: OpHAGC, HA: &HACommand{IdleMs: 1}},
	} {
		r := mustApply(t, New(), elect("t", "keep", "r", 1000, 10))
		next, _, err := r.Apply(c, 10)
		if !errors.Is(err, ErrInvalidCommand) {
			t.Errorf("%s: %v, want ErrInvalidCommand", name, err)
			continue
		}
		if !slices.Equal(next.HAReplicas(), r.HAReplicas()) {
			t.Errorf("%s: refused command changed the HA state", name)
		}
	}
}

// TestHA_RestoreRefusesBrokenState: WithHA keeps the invariants Apply keeps.
func TestHA_RestoreRefusesBrokenState(t *testing.T) {
	ok := HAReplica{Tenant: "t", Cluster: "c", Replica: "r", ElectedMs: 1, RefreshedMs: 2}
	for name, es := range map[string][]HAReplica{
		"duplicate":          {ok, ok},
		"elected after":      {{Tenant: "t", Cluster: "c", Replica: "r", ElectedMs: 3, RefreshedMs: 2}},
		"empty replica":      {{Tenant: "t", Cluster: "c"}},
		"control characters": {{Tenant: "t\x00", Cluster: "c", Replica: "r"}},
	} {
		if _, err := New().WithHA(es); !errors.Is(err, ErrCorruptState) {
			t.Errorf("%s: %v, want ErrCorruptState", name, err)
		}
	}
	r, err := New().WithHA([]HAReplica{{Tenant: "u", Cluster: "a", Replica: "r"}, ok})
	if err != nil || r.HAReplicas()[0].Tenant != "t" {
		t.Fatalf("unsorted input: %v %+v", err, r.HAReplicas())
	}
}

// TestHA_Property_AtMostOneReplicaPerClusterAndFailoverOnlyAfterTimeout drives random elections,
// refreshes and GCs from several racing proposers and checks, after every command, against a model:
// the elected replica changes only when the previous one was refreshed more than the failover
// timeout earlier (or the entry was absent); per-tenant counts stay within the limit; the parent
// ring is never modified; and a refused command changes nothing.
func TestHA_Property_AtMostOneReplicaPerClusterAndFailoverOnlyAfterTimeout(t *testing.T) {
	const fo, limit = 5000, 3
	for seed := range uint64(50) {
		rng := rand.New(rand.NewPCG(seed, 7))
		r := New()
		now := int64(1)
		for step := range 500 {
			now += int64(rng.IntN(3000))
			var c Command
			tenant := fmt.Sprintf("t%d", rng.IntN(2))
			cluster := fmt.Sprintf("c%d", rng.IntN(5))
			if rng.IntN(20) == 0 {
				c = haGC(int64(1 + rng.IntN(20000)))
			} else {
				c = elect(tenant, cluster, fmt.Sprintf("r%d", rng.IntN(2)), fo, limit)
			}
			before := r.HAReplicas()
			prev, had := r.HAReplica(tenant, cluster)
			next, _, err := r.Apply(c, now)
			if !slices.Equal(r.HAReplicas(), before) {
				t.Fatalf("seed %d step %d: parent modified", seed, step)
			}
			if err != nil {
				if !slices.Equal(next.HAReplicas(), before) {
					t.Fatalf("seed %d step %d: refused %v changed the state", seed, step, err)
				}
			} else if c.Op == OpHAElect {
				e, ok := next.HAReplica(tenant, cluster)
				switch {
				case !ok || e.Replica != c.HA.Replica:
					t.Fatalf("seed %d step %d: granted election of %s left %+v", seed, step, c.HA.Replica, e)
				case had && prev.Replica != e.Replica && next.TimeMs()-prev.RefreshedMs <= fo:
					t.Fatalf("seed %d step %d: failover from %+v at %d, within the timeout", seed, step, prev, next.TimeMs())
				case had && prev.Replica == e.Replica && e.ElectedMs != prev.ElectedMs:
					t.Fatalf("seed %d step %d: a refresh moved ElectedMs", seed, step)
				}
			}
			if errors.Is(err, ErrHAReplicaElected) && (!had || next.TimeMs()-prev.RefreshedMs > fo) {
				t.Fatalf("seed %d step %d: refused although the elected one is stale: %+v at %d", seed, step, prev, next.TimeMs())
			}
			for _, tn := range []string{"t0", "t1"} {
				if n := next.HAClusters(tn); n > limit {
					t.Fatalf("seed %d step %d: tenant %s has %d clusters", seed, step, tn, n)
				}
			}
			if _, err := New().WithHA(next.HAReplicas()); err != nil {
				t.Fatalf("seed %d step %d: state does not restore: %v", seed, step, err)
			}
			r = next
		}
	}
}
