package memstore

import (
	"slices"
	"sort"
	"sync"

	"github.com/prometheus/prometheus/model/labels"
)

// postingsIndex maps label name → value → series refs of one tenant.
// Safe for concurrent use; mu is a leaf lock (nothing is locked under it).
//
// Invariant: every list is sorted ascending and unique; all holds every series
// ref of the tenant; a (name, value) list exists only while non-empty.
type postingsIndex struct {
	mu  sync.RWMutex
	m   map[string]map[string][]uint64
	all []uint64
}

func newPostingsIndex() *postingsIndex {
	return &postingsIndex{m: map[string]map[string][]uint64{}}
}

// insertSorted inserts ref into the sorted list l. Refs are allocated in
// increasing order, so the common case is an append.
func insertSorted(l []uint64, ref uint64) []uint64 {
	if n := len(l); n == 0 || l[n-1] < ref {
		return append(l, ref)
	}
	i, found := slices.BinarySearch(l, ref)
	if found {
		return l
	}
	return slices.Insert(l, i, ref)
}

func (p *postingsIndex) add(ref uint64, lset labels.Labels) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.all = insertSorted(p.all, ref)
	lset.Range(func(l labels.Label) {
		vals := p.m[l.Name]
		if vals == nil {
			vals = map[string][]uint64{}
			p.m[l.Name] = vals
		}
		vals[l.Value] = insertSorted(vals[l.Value], ref)
	})
}

// addSorted adds series, mostly sorted by ascending ref, under one lock (addBulk).
func (p *postingsIndex) addSorted(series []*memSeries) {
	p.addBulk(len(series), func(i int) (uint64, labels.Labels) { return series[i].ref, series[i].lset })
}

// delete removes a batch of series at once: each affected list is filtered
// once, so removing many series costs O(affected postings), not O(n²).
func (p *postingsIndex) delete(removed map[uint64]labels.Labels) {
	if len(removed) == 0 {
		return
	}
	drop := func(ref uint64) bool { _, ok := removed[ref]; return ok }
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(removed) == len(p.all) && !slices.ContainsFunc(p.all, func(ref uint64) bool { return !drop(ref) }) {
		// Everything goes (DropAll): start afresh instead of filtering every list.
		p.m, p.all = map[string]map[string][]uint64{}, nil
		return
	}
	type nv struct{ n, v string }
	affected := map[nv]struct{}{}
	for _, lset := range removed {
		lset.Range(func(l labels.Label) { affected[nv{l.Name, l.Value}] = struct{}{} })
	}
	for k := range affected {
		vals := p.m[k.n]
		l := slices.DeleteFunc(vals[k.v], drop)
		if len(l) == 0 {
			delete(vals, k.v)
			if len(vals) == 0 {
				delete(p.m, k.n)
			}
		} else {
			vals[k.v] = l
		}
	}
	p.all = slices.DeleteFunc(p.all, drop)
}

// labelNames returns the sorted label names present in the tenant.
func (p *postingsIndex) labelNames() []string {
	p.mu.RLock()
	defer p.mu.RUnlock()
	names := make([]string, 0, len(p.m))
	for n := range p.m {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// labelValues returns the sorted values of name.
func (p *postingsIndex) labelValues(name string) []string {
	p.mu.RLock()
	defer p.mu.RUnlock()
	vals := make([]string, 0, len(p.m[name]))
	for v := range p.m[name] {
		vals = append(vals, v)
	}
	sort.Strings(vals)
	return vals
}

// selectRefs returns the sorted refs of the series matching every matcher,
// with Prometheus semantics: a matcher that matches the empty string also
// selects series that lack the label. No matchers selects every series. The
// result is a fresh slice owned by the caller.
func (p *postingsIndex) selectRefs(ms []*labels.Matcher) []uint64 {
	p.mu.RLock()
	defer p.mu.RUnlock()
	if len(ms) == 0 {
		return slices.Clone(p.all)
	}
	// Matchers that need the full list go last: intersecting a small set first
	// keeps the work proportional to the selective matchers.
	ordered := make([]*labels.Matcher, 0, len(ms))
	for _, m := range ms {
		if !m.Matches("") {
			ordered = append(ordered, m)
		}
	}
	for _, m := range ms {
		if m.Matches("") {
			ordered = append(ordered, m)
		}
	}
	var res []uint64
	for i, m := range ordered {
		vals := p.m[m.Name]
		var cur []uint64
		if m.Matches("") {
			// Everything except series whose value for the label does not match.
			var excl [][]uint64
			for v, refs := range vals {
				if !m.Matches(v) {
					excl = append(excl, refs)
				}
			}
			base := p.all
			if i > 0 {
				base = res
			}
			cur = subtractSorted(base, mergeSorted(excl))
			res = cur
			continue
		}
		if m.Type == labels.MatchEqual {
			cur = vals[m.Value]
		} else {
			var incl [][]uint64
			for v, refs := range vals {
				if m.Matches(v) {
					incl = append(incl, refs)
				}
			}
			cur = mergeSorted(incl)
		}
		if i == 0 {
			res = slices.Clone(cur)
		} else {
			res = intersectSorted(res, cur)
		}
		if len(res) == 0 {
			return nil
		}
	}
	return res
}

// mergeSorted returns the sorted union of sorted lists, as a fresh slice
// unless there is at most one list (then it may alias it; callers only read).
func mergeSorted(ls [][]uint64) []uint64 {
	switch len(ls) {
	case 0:
		return nil
	case 1:
		return ls[0]
	}
	n := 0
	for _, l := range ls {
		n += len(l)
	}
	out := make([]uint64, 0, n)
	for _, l := range ls {
		out = append(out, l...)
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// intersectSorted returns a∩b in a fresh slice.
func intersectSorted(a, b []uint64) []uint64 {
	out := make([]uint64, 0, min(len(a), len(b)))
	for i, j := 0, 0; i < len(a) && j < len(b); {
		switch {
		case a[i] < b[j]:
			i++
		case a[i] > b[j]:
			j++
		default:
			out = append(out, a[i])
			i++
			j++
		}
	}
	return out
}

// subtractSorted returns a\b in a fresh slice.
func subtractSorted(a, b []uint64) []uint64 {
	out := make([]uint64, 0, len(a))
	j := 0
	for _, x := range a {
		for j < len(b) && b[j] < x {
			j++
		}
		if j < len(b) && b[j] == x {
			continue
		}
		out = append(out, x)
	}
	return out
}
