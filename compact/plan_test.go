package compact

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/oklog/ulid/v2"
	"github.com/prometheus/prometheus/tsdb"

	"github.com/raftingest/raftingest/storage"
)

const (
	h  = int64(3_600_000)
	h2 = 2 * h
)

// blk is a listed block for the planner tables: name (its ULID is derived from it, so plans are
// readable), [min, max) in hours, and the compaction group it belongs to ("" for a flushed block).
func blk(name string, minH, maxH float64, group string, holders ...string) Block {
	var id ulid.ULID
	copy(id[:], fmt.Sprintf("%-16s", name))
	m := storage.Meta{BlockMeta: tsdb.BlockMeta{ULID: id, MinTime: int64(minH * float64(h)), MaxTime: int64(maxH * float64(h))}}
	if group != "" {
		m.Compaction.Hints = []string{storage.CompactionGroupHint + group}
	}
	return Block{Meta: m, Holders: holders}
}

func name(b Block) string { return strings.TrimSpace(string(b.Meta.ULID[:])) }

// describe renders a plan as "expired: a,b | c; job 2h@0: d,e | f": groups separated by |, the
// blocks of one group by commas.
func describe(p Plan) string {
	var parts []string
	var exp []string
	for _, g := range p.Expired {
		var bs []string
		for _, b := range g.Blocks {
			bs = append(bs, name(b))
		}
		exp = append(exp, strings.Join(bs, ","))
	}
	if len(exp) > 0 {
		parts = append(parts, "expired: "+strings.Join(exp, " | "))
	}
	for _, j := range p.Jobs {
		var gs []string
		for _, g := range j.Groups {
			var bs []string
			for _, b := range g.Blocks {
				bs = append(bs, name(b))
			}
			gs = append(gs, strings.Join(bs, ","))
		}
		parts = append(parts, fmt.Sprintf("job %dh@%d: %s", j.Range/h, j.WindowStart/h, strings.Join(gs, " | ")))
	}
	return strings.Join(parts, "; ")
}

// TestMakePlan_Table: which blocks a run merges and deletes, case by case.
func TestMakePlan_Table(t *testing.T) {
	ranges := []int64{h2, 12 * h, 24 * h}
	for _, tc := range []struct {
		name      string
		blocks    []Block
		nowH      float64
		retention int64
		want      string
	}{
		{"nothing", nil, 100, 0, ""},
		{"one flushed block alone in its window: left as is",
			[]Block{blk("a", 0, 1.9, "")}, 100, 0, ""},
		{"three replicas' flushes of one 2h range: one dedup job right away, even before 12h is complete",
			[]Block{blk("r1", 0, 2, ""), blk("r2", 0, 2, ""), blk("r3", 0.1, 1.9, "")}, 3, 0, "job 2h@0: r1 | r2 | r3"},
		{"repeated flushes of one member in one range are merged too",
			[]Block{blk("f1", 2, 2.5, ""), blk("f2", 2.5, 4, "")}, 5, 0, "job 2h@2: f1 | f2"},
		{"a finished compaction (one group of parts) is not redone",
			[]Block{blk("p1", 0, 2, "g1"), blk("p2", 0, 2, "g1"), blk("p3", 0, 2, "g1")}, 5, 0, ""},
		{"a late flush beside a finished compaction: merged again with every part",
			[]Block{blk("p1", 0, 2, "g1"), blk("p2", 0, 2, "g1"), blk("late", 1, 2, "")}, 5, 0, "job 2h@0: p1,p2 | late"},
		{"a crashed run left its parts beside its sources: merged again (no lasting duplicate)",
			[]Block{blk("s1", 4, 6, ""), blk("s2", 4, 6, ""), blk("p1", 4, 6, "g9"), blk("p2", 4, 6, "g9")}, 7, 0,
			"job 2h@4: s1 | s2 | p1,p2"},
		{"two runs' outputs over the same sources are two groups: merged",
			[]Block{blk("x1", 0, 2, "gA"), blk("y1", 0, 2, "gB")}, 3, 0, "job 2h@0: x1 | y1"},
		{"two deduplicated 2h windows of an incomplete 12h window: nothing yet",
			[]Block{blk("w0", 0, 2, "g0"), blk("w1", 2, 4, "g1")}, 12.4, 0, ""},
		{"the same once 12h + delay have passed: one 12h job",
			[]Block{blk("w0", 0, 2, "g0"), blk("w1", 2, 4, "g1")}, 13, 0, "job 12h@0: w0 | w1"},
		{"a complete day: one 24h job over everything in it, replicas and deduplicated blocks alike",
			[]Block{blk("a", 0, 2, "g0"), blk("b", 12, 14, ""), blk("c", 12, 14, ""), blk("d", 22, 24, "")}, 26, 0,
			"job 24h@0: a | b | c | d"},
		{"largest complete window first; the incomplete next day still dedups its 2h window",
			[]Block{blk("a", 0, 2, "g0"), blk("b", 2, 4, "g1"), blk("n1", 24, 26, ""), blk("n2", 24, 26, "")}, 26, 0,
			"job 24h@0: a | b; job 2h@24: n1 | n2"},
		{"a block spanning two windows of a range waits for the larger range",
			[]Block{blk("wide", 1, 3, "g0"), blk("x", 2, 4, "")}, 5, 0, ""},
		{"retention: a group whose newest sample is older than now - retention is deleted whole, and merged with nothing",
			[]Block{blk("old1", 0, 2, "g0"), blk("old2", 0, 2, "g0"), blk("old3", 0, 2, ""), blk("new1", 48, 50, ""), blk("new2", 48, 50, "")},
			51, 49 * h, "expired: old3 | old1,old2; job 2h@48: new1 | new2"},
		{"retention 0 keeps everything",
			[]Block{blk("old", 0, 2, "")}, 1000, 0, ""},
		{"retention boundary: maxTime exactly now - retention is expired, one ms newer is not",
			[]Block{blk("edge", 0, 2, ""), blk("keep", 2, 3, "")}, 12, 10 * h, "expired: edge"},
		{"negative times are aligned down",
			[]Block{blk("n1", -2, -0.5, ""), blk("n2", -1.5, -0.1, "")}, 0, 0, "job 2h@-2: n1 | n2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := PlanInput{Tenant: "t", Blocks: tc.blocks, Ranges: ranges, NowMs: int64(tc.nowH * float64(h)),
				CompleteAfterMs: h2 / 4, RetentionMs: tc.retention}
			got := MakePlan(in)
			if d := describe(got); d != tc.want {
				t.Fatalf("plan\n got: %s\nwant: %s", d, tc.want)
			}
			// Determinism, and no block in two places.
			if d := describe(MakePlan(in)); d != tc.want {
				t.Fatalf("second plan differs: %s", d)
			}
			seen := map[ulid.ULID]bool{}
			for _, g := range append(slices.Clone(got.Expired), jobGroups(got.Jobs)...) {
				for _, b := range g.Blocks {
					if seen[b.Meta.ULID] {
						t.Fatalf("block %s planned twice", name(b))
					}
					seen[b.Meta.ULID] = true
				}
			}
		})
	}
}

func jobGroups(js []Job) []Group {
	var out []Group
	for _, j := range js {
		if len(j.Groups) < 2 {
			panic("a job of fewer than two groups")
		}
		out = append(out, j.Groups...)
	}
	return out
}

func TestDurationList_FlagAndValidate(t *testing.T) {
	var d DurationList
	if err := d.Set("2h, 12h,24h"); err != nil || d.String() != "2h0m0s,12h0m0s,24h0m0s" {
		t.Fatalf("%v %s", err, d.String())
	}
	if err := d.Set("12h,2h"); err == nil {
		t.Fatal("descending ranges accepted")
	}
	c := Config{Interval: 1, LeaseDuration: DefaultLeaseDuration, BlockRanges: DurationList{2 * 3600e9, 5 * 3600e9},
		DeletionDelay: DefaultDeletionDelay}
	if err := c.Validate(0); err == nil || !strings.Contains(err.Error(), "not a multiple") {
		t.Fatalf("ranges that do not nest: %v", err)
	}
	for _, d := range []time.Duration{0, -time.Second} {
		c.DeletionDelay = d
		if err := c.Validate(0); err == nil || !strings.Contains(err.Error(), "-compactor.deletion-delay must be positive") {
			t.Fatalf("-compactor.deletion-delay=%s: %v, want refused naming the flag", d, err)
		}
	}
	c.DeletionDelay = DefaultDeletionDelay
	c.BlockRanges = DefaultBlockRanges()
	if err := c.Validate(3600e9); err == nil || !strings.Contains(err.Error(), "-ingester.flush-period") {
		t.Fatalf("first range other than the flush period: %v", err)
	}
	if err := c.Validate(2 * 3600e9); err != nil {
		t.Fatal(err)
	}
}
