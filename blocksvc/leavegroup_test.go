package blocksvc

import (
	"testing"

	"github.com/oklog/ulid/v2"
	"github.com/prometheus/prometheus/tsdb"

	"github.com/raftingest/raftingest/compact"
	"github.com/raftingest/raftingest/storage"
)

// TestLeaveGroup_PlannerMergesOnceThenSettles: what compact's planner does with the parts a leave
// writes. A compaction's parts (group G, one per member) alone in their window are never merged
// again. A leave's parts of G (storage.LeaveGroup: "G/leave-<move>"), beside G's other parts, make
// the window hold two groups — or three after a retried move or a second leave — and the window
// is merged once, in one job; the merged result is a group of its own alone in the window, and
// the next plan leaves it (no endless re-merge). Parts that kept G, as leaves wrote them before,
// were never revisited, so their duplicates and misplaced copies stayed for ever.
func TestLeaveGroup_PlannerMergesOnceThenSettles(t *testing.T) {
	const h = int64(3600_000)
	ranges := []int64{2 * h, 12 * h}
	now := int64(48 * h)
	part := func(group string) compact.Block {
		m := storage.Meta{BlockMeta: tsdb.BlockMeta{ULID: ulid.Make(), MinTime: 0, MaxTime: 2 * h,
			Compaction: tsdb.BlockMetaCompaction{Level: 2, Hints: []string{storage.CompactionGroupHint + group}}}}
		return compact.Block{Meta: m, Holders: []string{"x"}}
	}
	plan := func(blocks ...compact.Block) compact.Plan {
		return compact.MakePlan(compact.PlanInput{Tenant: "t1", Blocks: blocks, Ranges: ranges, NowMs: now, CompleteAfterMs: h})
	}
	g := ulid.Make().String()
	orig := []compact.Block{part(g), part(g), part(g)} // on A, B and the leaver

	if p := plan(orig...); len(p.Jobs) != 0 {
		t.Fatalf("a compaction's parts alone: %d jobs, want 0 (a finished compaction is not redone)", len(p.Jobs))
	}
	// As leaves used to write them: the leaver's part re-sent under G (twice: a retried move).
	if p := plan(append(orig[:2:2], part(g), part(g))...); len(p.Jobs) != 0 {
		t.Fatalf("parts that kept G: %d jobs (the planner never revisits them: the reason for LeaveGroup)", len(p.Jobs))
	}

	m1, m2 := ulid.Make(), ulid.Make()
	if lg := storage.LeaveGroup(storage.LeaveGroup(g, m1), m2); lg != g+"/leave-"+m2.String() {
		t.Fatalf("LeaveGroup of a leave's group: %q, want the first group with the last move only", lg)
	}
	for name, blocks := range map[string][]compact.Block{
		"one leave":                  append(orig[:2:2], part(storage.LeaveGroup(g, m1)), part(storage.LeaveGroup(g, m1))),
		"a retried leave":            append(orig[:2:2], part(storage.LeaveGroup(g, m1)), part(storage.LeaveGroup(g, m2))),
		"two leaves, the second one": append(orig[:1:1], part(storage.LeaveGroup(g, m1)), part(storage.LeaveGroup(storage.LeaveGroup(g, m1), m2))),
	} {
		p := plan(blocks...)
		if len(p.Jobs) != 1 || len(p.Jobs[0].Blocks()) != len(blocks) {
			t.Fatalf("%s: plan %+v; want one job merging all %d parts", name, p, len(blocks))
		}
		// The merge writes one part per member under a fresh group; the sources are marked and
		// no longer listed.
		merged := ulid.Make().String()
		if p := plan(part(merged), part(merged), part(merged)); len(p.Jobs) != 0 {
			t.Fatalf("%s: after the merge: %d jobs, want 0 (the window settles)", name, len(p.Jobs))
		}
	}
}
