package memstore

import (
	"slices"

	"github.com/prometheus/prometheus/model/labels"
)

// postingsKey names one postings list during addBulk.
type postingsKey struct{ name, value string }

// addBulk adds n series under one lock, the i-th with the ref and labels at(i) gives (replay, a
// hand-over frame's new series). Refs mostly ascend across calls and within one, so nearly every
// insert is an append. Series of one tenant mostly share their label names in the same order, so
// the value map of the name at each position is remembered from the series before (one map
// lookup per label instead of two), and a value seen for the first time gets a one-element list
// cut from a slab shared by the call (capacity 1: a second ref copies it out, so lists never
// overlap).
//
// A ref that is not above its list's last one (two hand-over frames imported concurrently add
// their series in the other order than their refs were taken; a WAL whose series records are not
// in ref order) is not inserted on its own — slices.Insert per ref moved the list's tail once per
// ref, which at 1M series was most of a hand-over frame's postings time — but kept aside and
// merged into its list once at the end of the call: one pass over the tail per list.
func (p *postingsIndex) addBulk(n int, at func(i int) (uint64, labels.Labels)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	var (
		names   []string // names[i]: the label name at position i in the series before
		maps    []map[string][]uint64
		slab    []uint64
		late    map[postingsKey][]uint64
		lateAll []uint64
	)
	for i := range n {
		ref, lset := at(i)
		if k := len(p.all); k == 0 || p.all[k-1] < ref {
			p.all = append(p.all, ref)
		} else {
			lateAll = append(lateAll, ref)
		}
		pos := 0
		lset.Range(func(l labels.Label) {
			var vals map[string][]uint64
			if pos < len(names) && names[pos] == l.Name {
				vals = maps[pos]
			} else {
				vals = p.m[l.Name]
				if vals == nil {
					vals = map[string][]uint64{}
					p.m[l.Name] = vals
				}
				if pos < len(names) {
					names[pos], maps[pos] = l.Name, vals
				} else {
					names, maps = append(names, l.Name), append(maps, vals)
				}
			}
			pos++
			if list, ok := vals[l.Value]; ok {
				if k := len(list); k == 0 || list[k-1] < ref {
					vals[l.Value] = append(list, ref)
					return
				}
				if late == nil {
					late = map[postingsKey][]uint64{}
				}
				key := postingsKey{l.Name, l.Value}
				late[key] = append(late[key], ref)
				return
			}
			if len(slab) == cap(slab) {
				slab = make([]uint64, 0, min(n, 4096))
			}
			slab = append(slab, ref)
			vals[l.Value] = slab[len(slab)-1 : len(slab) : len(slab)]
		})
	}
	p.all = mergeRefs(p.all, lateAll)
	for key, refs := range late {
		vals := p.m[key.name]
		vals[key.value] = mergeRefs(vals[key.value], refs)
	}
}

// mergeRefs merges refs (any order) into the sorted, unique list and returns the sorted, unique
// result, reusing list's array when it has room. Only the part of list at or above refs' smallest
// is moved.
func mergeRefs(list, refs []uint64) []uint64 {
	if len(refs) == 0 {
		return list
	}
	slices.Sort(refs)
	refs = slices.Compact(refs)
	from, _ := slices.BinarySearch(list, refs[0])
	n := len(list)
	list = slices.Grow(list, len(refs))[:n+len(refs)]
	// From the back: list[from:n] and refs are both sorted; what is left of list[:a+1] when refs
	// run out is in place already.
	a, b := n-1, len(refs)-1
	for w := len(list) - 1; b >= 0; w-- {
		if a >= from && list[a] > refs[b] {
			list[w] = list[a]
			a--
		} else {
			list[w] = refs[b]
			b--
		}
	}
	tail := slices.Compact(list[from:]) // a ref that was in list already sits beside its twin
	return list[:from+len(tail)]
}
