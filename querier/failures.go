package querier

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/prometheus/prometheus/model/labels"

	"github.com/raftingest/raftingest/ringstate"
)

// readFailures is the set of members one query could not read, shared by every member fan-out of
// the query (the members' memory and their blocks) through the context, like the limiter.
//
// Why one set for both sources: a sample acknowledged by a quorum lives, on each member that
// acknowledged it, either in its memory or in its blocks (both for the instant of a flush). It is
// lost to the query only if, on every one of those members, the source holding it failed. A budget
// of floor(RF/2) per source does not prevent that: with RF 3, a sample on m0 and m1 only, m0's blocks
// and m1's memory failing is one failure per source, within each budget, and the sample is gone.
// Counting the members that failed in either source against one budget of floor(RF/2) does: then
// some member that acknowledged the sample answered for both sources.
//
// The set is shared only between reads of the same selection (the same matchers) whose time ranges
// overlap: a failure in another selection does not lose any of this selection's samples, and where
// the ranges of the two sources do not overlap (-querier.query-store-after and
// -querier.query-ingesters-within split the query) each instant is read from one source only.
// Safe for concurrent use.
type readFailures struct {
	mu  sync.Mutex
	all []memberFailure
}

// memberFailure is one member a read could not count on: unhealthy in the ring, or its call failed.
type memberFailure struct {
	member     ringstate.MemberID
	zone       string // the member's ring zone: with zone awareness the budget counts zones
	addr       string
	source     string // ingestersSource.name or blocksSource.name
	selection  string // selectionKey of the read's matchers
	mint, maxt int64  // the read's range
	err        error  // nil: unhealthy in the ring, not asked
}

func (f memberFailure) String() string {
	if f.err == nil {
		return fmt.Sprintf("%s unhealthy (reading %s)", f.member, f.source)
	}
	return fmt.Sprintf("%s (%s) reading %s: %v", f.member, f.addr, f.source, f.err)
}

type readFailuresKey struct{}

// withReadFailures returns ctx carrying f: every member fan-out made with it shares f.
func withReadFailures(ctx context.Context, f *readFailures) context.Context {
	return context.WithValue(ctx, readFailuresKey{}, f)
}

// readFailuresFrom returns the query's failure set, or nil when ctx has none.
func readFailuresFrom(ctx context.Context) *readFailures {
	f, _ := ctx.Value(readFailuresKey{}).(*readFailures)
	return f
}

// add records failures.
func (f *readFailures) add(fs ...memberFailure) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.all = append(f.all, fs...)
}

// against returns the failures that count against a read of selection over [mint, maxt]: those of
// reads of the same selection over overlapping ranges, whatever their source, one per member (the
// first recorded), in member order.
func (f *readFailures) against(selection string, mint, maxt int64) []memberFailure {
	f.mu.Lock()
	defer f.mu.Unlock()
	seen := map[ringstate.MemberID]bool{}
	var out []memberFailure
	for _, x := range f.all {
		if x.selection != selection || x.maxt < mint || x.mint > maxt || seen[x.member] {
			continue
		}
		seen[x.member] = true
		out = append(out, x)
	}
	slices.SortFunc(out, func(a, b memberFailure) int { return strings.Compare(string(a.member), string(b.member)) })
	return out
}

// selectionKey identifies the series a read selects: its matchers, in a canonical order.
func selectionKey(ms []*labels.Matcher) string {
	parts := make([]string, len(ms))
	for i, m := range ms {
		parts[i] = m.String()
	}
	slices.Sort(parts)
	return strings.Join(parts, ",")
}

// budgetCost is what failures cost against the failure budget: one per member, or, with zone
// awareness, one per zone — a zone-aware write has at most one copy per zone, so however many
// members of one zone fail, at most one copy of any sample is out of reach.
func budgetCost(fs []memberFailure, zoneAware bool) int {
	if !zoneAware {
		return len(fs)
	}
	var zones []string
	for _, f := range fs {
		if !slices.Contains(zones, f.zone) {
			zones = append(zones, f.zone)
		}
	}
	return len(zones)
}
