package ringstate

import (
	"slices"
)

// haBlockMax bounds the entries of one haTable block; a block that would grow past it is split in
// two halves. A refresh, the HA tracker's most frequent commit (one per cluster per
// -distributor.ha-tracker.update-timeout), copies one block and the block index: at MaxHAEntries
// that is about 10 KB per commit instead of the whole table's 640 KB.
const haBlockMax = 128

// haTable is the HA entries sorted by (tenant, cluster) — a persistent sorted sequence. It is
// split into blocks, each non-empty, sorted, and holding at most haBlockMax entries; every entry
// of a block sorts before every entry of the next. Rings share tables, blocks and the block
// index read-only: a change builds a new index and copies only the block it touches, so an older
// ring (a snapshot being written, a reader's view) never sees it.
//
// The block layout depends on the history of inserts (a split happens where a block filled up),
// so two rings with the same entries may hold different layouts: anything that compares or
// encodes rings goes through all(), never through the blocks.
type haTable struct {
	blocks [][]HAReplica
	n      int
}

// haTableOf builds a table of sorted (strictly increasing) entries, in full blocks.
func haTableOf(sorted []HAReplica) haTable {
	var t haTable
	for len(sorted) > 0 {
		k := min(len(sorted), haBlockMax)
		t.blocks = append(t.blocks, slices.Clone(sorted[:k]))
		sorted = sorted[k:]
		t.n += k
	}
	return t
}

func (t haTable) len() int { return t.n }

// all returns every entry in order, in a new slice.
func (t haTable) all() []HAReplica {
	if t.n == 0 {
		return nil
	}
	out := make([]HAReplica, 0, t.n)
	for _, b := range t.blocks {
		out = append(out, b...)
	}
	return out
}

// find returns where (tenant, cluster) is, or would be inserted: block b and index i in it, and
// whether it is there. An insertion point past every entry is the end of the last block; in an
// empty table it is (0, 0).
func (t haTable) find(tenant, cluster string) (b, i int, ok bool) {
	if len(t.blocks) == 0 {
		return 0, 0, false
	}
	// The first block whose last entry does not sort before the key holds it if anything does.
	b, _ = slices.BinarySearchFunc(t.blocks, 0, func(blk []HAReplica, _ int) int {
		if compareHA(blk[len(blk)-1], tenant, cluster) < 0 {
			return -1
		}
		return 1
	})
	if b == len(t.blocks) {
		last := len(t.blocks) - 1
		return last, len(t.blocks[last]), false
	}
	i, ok = slices.BinarySearchFunc(t.blocks[b], tenant, func(e HAReplica, tn string) int { return compareHA(e, tn, cluster) })
	return b, i, ok
}

// at returns the entry at (b, i), a position find reported as present.
func (t haTable) at(b, i int) HAReplica { return t.blocks[b][i] }

// set returns a table with the entry at (b, i), a position find reported as present, replaced
// by e (the same tenant and cluster).
func (t haTable) set(b, i int, e HAReplica) haTable {
	blk := slices.Clone(t.blocks[b])
	blk[i] = e
	return t.withBlocks(b, 1, blk)
}

// insert returns a table with e inserted at (b, i), the insertion point find reported.
func (t haTable) insert(b, i int, e HAReplica) haTable {
	if len(t.blocks) == 0 {
		return haTable{blocks: [][]HAReplica{{e}}, n: 1}
	}
	blk := slices.Insert(slices.Clone(t.blocks[b]), i, e)
	var nt haTable
	if len(blk) > haBlockMax {
		h := len(blk) / 2
		nt = t.withBlocks(b, 1, slices.Clip(blk[:h]), blk[h:])
	} else {
		nt = t.withBlocks(b, 1, slices.Clip(blk))
	}
	nt.n = t.n + 1
	return nt
}

// withBlocks returns a table whose index replaces the del blocks from b on with repl (a new index;
// the other blocks are shared). The entry count is t's: callers that change it set it.
func (t haTable) withBlocks(b, del int, repl ...[]HAReplica) haTable {
	idx := make([][]HAReplica, 0, len(t.blocks)-del+len(repl))
	idx = append(idx, t.blocks[:b]...)
	idx = append(idx, repl...)
	idx = append(idx, t.blocks[b+del:]...)
	return haTable{blocks: idx, n: t.n}
}

// deleteFunc returns a table without the entries del reports, rebuilt in full blocks (GC is rare:
// one sweep per idle period), or t itself when del reports none.
func (t haTable) deleteFunc(del func(HAReplica) bool) haTable {
	if !slices.ContainsFunc(t.blocks, func(blk []HAReplica) bool { return slices.ContainsFunc(blk, del) }) {
		return t
	}
	return haTableOf(slices.DeleteFunc(t.all(), del))
}

// countTenant is the number of entries of tenant: they are contiguous, from find(tenant, "") on.
func (t haTable) countTenant(tenant string) int {
	b, i, _ := t.find(tenant, "")
	n := 0
	for ; b < len(t.blocks); b, i = b+1, 0 {
		blk := t.blocks[b]
		for ; i < len(blk); i++ {
			if blk[i].Tenant != tenant {
				return n
			}
			n++
		}
	}
	return n
}
