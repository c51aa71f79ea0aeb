package compact

import (
	"cmp"
	"slices"

	"github.com/oklog/ulid/v2"

	"github.com/raftingest/raftingest/storage"
)

// Block is one complete block of a tenant as the listings found it: its meta and the members
// whose buckets hold it (one entry, "", for a shared bucket). The same block (ULID) may be held by
// several members: a hand-over copies blocks.
type Block struct {
	Meta    storage.Meta
	Holders []string
}

// ID is the block's ULID.
func (b *Block) ID() ulid.ULID { return b.Meta.ULID }

// Group is what the planner treats as one block: the parts of one compaction (they share its
// storage.CompactionGroup hint and together hold its result, each series in replication-factor
// parts), or a single block written by a flush or another tool.
type Group struct {
	// Key is the compaction group's id, or the block's ULID for a block of its own.
	Key string
	// MinTime and MaxTime bound every part's samples: [MinTime, MaxTime), milliseconds.
	MinTime, MaxTime int64
	// Blocks are the parts, sorted by ULID.
	Blocks []Block
}

// Job is one merge: every group listed, all inside one aligned window of one block range, merged
// into one block (and placed, with node-local buckets, as one part per member).
type Job struct {
	Tenant string
	// Range is the block range (milliseconds) whose window the job fills: [WindowStart,
	// WindowStart+Range).
	Range, WindowStart int64
	// Groups are the inputs, sorted by MinTime then Key. At least two.
	Groups []Group
}

// Blocks returns every block of the job's groups.
func (j *Job) Blocks() []Block {
	var out []Block
	for _, g := range j.Groups {
		out = append(out, g.Blocks...)
	}
	return out
}

// Plan is what one run does for one tenant.
type Plan struct {
	// Expired are the groups retention deletes: their newest sample is older than now - retention.
	Expired []Group
	// Jobs are the merges, largest ranges first; no group is in two jobs, none is expired.
	Jobs []Job
}

// PlanInput is what Plan decides from.
type PlanInput struct {
	Tenant string
	// Blocks are the tenant's complete blocks as listed (ULIDs unique).
	Blocks []Block
	// Ranges are the block ranges in milliseconds, ascending, each a multiple of the previous.
	Ranges []int64
	// NowMs is the current time (Unix milliseconds).
	NowMs int64
	// CompleteAfterMs is how long after its end a window of a range above the first is complete:
	// every member could have flushed it (the flush period plus -compactor.completion-delay).
	CompleteAfterMs int64
	// RetentionMs deletes groups whose MaxTime (exclusive) is at or before NowMs - RetentionMs;
	// 0 keeps everything.
	RetentionMs int64
}

// GroupBlocks gathers blocks into groups (see Group), sorted by MinTime then Key.
func GroupBlocks(blocks []Block) []Group {
	byKey := map[string]*Group{}
	var keys []string
	for _, b := range blocks {
		key := storage.CompactionGroup(&b.Meta.BlockMeta)
		if key == "" {
			key = b.Meta.ULID.String()
		}
		g := byKey[key]
		if g == nil {
			g = &Group{Key: key, MinTime: b.Meta.MinTime, MaxTime: b.Meta.MaxTime}
			byKey[key] = g
			keys = append(keys, key)
		}
		g.MinTime, g.MaxTime = min(g.MinTime, b.Meta.MinTime), max(g.MaxTime, b.Meta.MaxTime)
		g.Blocks = append(g.Blocks, b)
	}
	out := make([]Group, 0, len(keys))
	for _, k := range keys {
		g := byKey[k]
		slices.SortFunc(g.Blocks, func(a, b Block) int { return a.Meta.ULID.Compare(b.Meta.ULID) })
		out = append(out, *g)
	}
	slices.SortFunc(out, func(a, b Group) int {
		return cmp.Or(cmp.Compare(a.MinTime, b.MinTime), cmp.Compare(a.Key, b.Key))
	})
	return out
}

// windowStart is the start of the aligned window of size r containing t (floor, also for t < 0).
func windowStart(t, r int64) int64 {
	w := t / r * r
	if t < 0 && w != t {
		w -= r
	}
	return w
}

// MakePlan decides one tenant's run. It is pure: the same input gives the same plan.
//
//   - Retention first: a group whose newest sample is older than NowMs - RetentionMs is deleted
//     whole (every part, from every holder) and takes part in nothing else.
//   - Then merges, from the largest range down: the groups that fit in one aligned window of the
//     range (MinTime and MaxTime-1 in it) and are not already in a job form a job when there are
//     at least two of them. A window of the first range (the flushed blocks' range: the replicas'
//     copies and repeated flushes of one range) is merged as soon as it has two groups; a window
//     of a larger range only once complete (its end + CompleteAfterMs <= NowMs), since members
//     that have not flushed it yet would leave blocks behind that need another merge.
//
// A group alone in its window is left as it is, so a finished compaction is not redone; a window
// holding a compaction's parts and anything else — a late flush, or the sources a crashed run did
// not delete — is merged again, which is how leftovers of a kill -9 disappear.
func MakePlan(in PlanInput) Plan {
	var p Plan
	groups := GroupBlocks(in.Blocks)
	live := groups[:0:0]
	for _, g := range groups {
		if in.RetentionMs > 0 && g.MaxTime <= in.NowMs-in.RetentionMs {
			p.Expired = append(p.Expired, g)
			continue
		}
		live = append(live, g)
	}
	taken := make([]bool, len(live))
	for level := len(in.Ranges) - 1; level >= 0; level-- {
		r := in.Ranges[level]
		windows := map[int64][]int{}
		var starts []int64
		for i, g := range live {
			if taken[i] || g.MaxTime <= g.MinTime {
				continue
			}
			ws := windowStart(g.MinTime, r)
			if g.MaxTime-1 >= ws+r {
				continue // spans more than one window of this range
			}
			if windows[ws] == nil {
				starts = append(starts, ws)
			}
			windows[ws] = append(windows[ws], i)
		}
		slices.Sort(starts)
		for _, ws := range starts {
			idx := windows[ws]
			if len(idx) < 2 {
				continue
			}
			if level > 0 && ws+r+in.CompleteAfterMs > in.NowMs {
				continue
			}
			j := Job{Tenant: in.Tenant, Range: r, WindowStart: ws}
			for _, i := range idx {
				taken[i] = true
				j.Groups = append(j.Groups, live[i])
			}
			p.Jobs = append(p.Jobs, j)
		}
	}
	return p
}
