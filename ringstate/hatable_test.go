package ringstate

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
)

// checkHATable checks haTable's layout invariants: blocks non-empty and at most haBlockMax long,
// entries strictly increasing across the whole table, n their count.
func checkHATable(t *testing.T, tb haTable) {
	t.Helper()
	n := 0
	var prev *HAReplica
	for bi, blk := range tb.blocks {
		if len(blk) == 0 || len(blk) > haBlockMax {
			t.Fatalf("block %d holds %d entries, want 1..%d", bi, len(blk), haBlockMax)
		}
		for i := range blk {
			if prev != nil && compareHA(*prev, blk[i].Tenant, blk[i].Cluster) >= 0 {
				t.Fatalf("block %d entry %d (%s/%s) does not sort after %s/%s", bi, i, blk[i].Tenant, blk[i].Cluster, prev.Tenant, prev.Cluster)
			}
			prev = &blk[i]
			n++
		}
	}
	if n != tb.n {
		t.Fatalf("n = %d, blocks hold %d", tb.n, n)
	}
}

// A property test against a plain sorted slice: random inserts, refreshes, lookups and GC sweeps
// leave the table equal to the model, its layout valid, and every older table (rings share them)
// unchanged.
func TestHATable_MatchesSortedSlice(t *testing.T) {
	for seed := range uint64(20) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			rnd := rand.New(rand.NewPCG(seed, 7))
			var tb haTable
			var model []HAReplica
			type snap struct {
				tb   haTable
				want []HAReplica
			}
			var olds []snap
			for step := range 3000 {
				e := HAReplica{Tenant: fmt.Sprintf("t%02d", rnd.IntN(30)), Cluster: fmt.Sprintf("c%03d", rnd.IntN(200)),
					Replica: fmt.Sprint("r", rnd.IntN(3)), ElectedMs: int64(step), RefreshedMs: int64(step)}
				mi, mok := slices.BinarySearchFunc(model, e, func(a, b HAReplica) int { return compareHA(a, b.Tenant, b.Cluster) })
				b, i, ok := tb.find(e.Tenant, e.Cluster)
				if ok != mok {
					t.Fatalf("step %d: find(%s/%s) ok=%v, model %v", step, e.Tenant, e.Cluster, ok, mok)
				}
				switch {
				case rnd.IntN(100) == 0:
					cut := int64(step - 500)
					tb = tb.deleteFunc(func(e HAReplica) bool { return e.RefreshedMs <= cut })
					model = slices.DeleteFunc(model, func(e HAReplica) bool { return e.RefreshedMs <= cut })
				case ok:
					if got := tb.at(b, i); got != model[mi] {
						t.Fatalf("step %d: at = %+v, model %+v", step, got, model[mi])
					}
					e.ElectedMs = model[mi].ElectedMs
					tb = tb.set(b, i, e)
					model[mi] = e
				default:
					tb = tb.insert(b, i, e)
					model = slices.Insert(model, mi, e)
				}
				checkHATable(t, tb)
				if got := tb.all(); !slices.Equal(got, model) {
					t.Fatalf("step %d: table %d entries differs from model %d", step, len(got), len(model))
				}
				tenant := fmt.Sprintf("t%02d", rnd.IntN(30))
				want := 0
				for _, m := range model {
					if m.Tenant == tenant {
						want++
					}
				}
				if got := tb.countTenant(tenant); got != want {
					t.Fatalf("step %d: countTenant(%s) = %d, want %d", step, tenant, got, want)
				}
				if step%100 == 0 {
					olds = append(olds, snap{tb, slices.Clone(model)})
				}
			}
			for k, o := range olds {
				if !slices.Equal(o.tb.all(), o.want) {
					t.Fatalf("table %d, kept from earlier, was changed by later ops", k)
				}
			}
		})
	}
}

// A refresh copies one block and the index, sharing every other block with the ring before it.
func TestHATable_SetSharesOtherBlocks(t *testing.T) {
	var es []HAReplica
	for i := range MaxHAEntries {
		es = append(es, HAReplica{Tenant: "t", Cluster: fmt.Sprintf("c%05d", i), Replica: "r"})
	}
	tb := haTableOf(es)
	b, i, ok := tb.find("t", "c04321")
	if !ok {
		t.Fatal("entry not found")
	}
	e := tb.at(b, i)
	e.RefreshedMs = 99
	nt := tb.set(b, i, e)
	for k := range tb.blocks {
		same := &tb.blocks[k][0] == &nt.blocks[k][0]
		if same != (k != b) {
			t.Fatalf("block %d shared=%v after a set in block %d", k, same, b)
		}
	}
	if got := tb.at(b, i).RefreshedMs; got != 0 {
		t.Fatalf("the older table sees the refresh: RefreshedMs %d", got)
	}
}

// BenchmarkHARefresh is one refresh commit's HA work at MaxHAEntries (the ring's cap).
func BenchmarkHARefresh(b *testing.B) {
	r := New()
	var es []HAReplica
	for i := range MaxHAEntries {
		es = append(es, HAReplica{Tenant: fmt.Sprintf("t%03d", i/100), Cluster: fmt.Sprintf("c%03d", i%100), Replica: "r"})
	}
	r, err := r.WithHA(es)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for i := range b.N {
		e := es[i%len(es)]
		next, _, err := r.Apply(Command{Op: OpHAElect, Member: "d", HA: &HACommand{Tenant: e.Tenant, Cluster: e.Cluster,
			Replica: "r", FailoverMs: 30_000, MaxClusters: 100}}, int64(i))
		if err != nil {
			b.Fatal(err)
		}
		r = next
	}
}
