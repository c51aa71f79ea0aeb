package storage

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/prometheus/model/labels"
)

// TestSplitBlock_EachPartHoldsExactlyItsSeries: every series goes to the parts Place names, with
// every sample; each part's meta.json keeps the source's compaction (level, sources) with the
// group hint and the compactor's source, so CompactionGroup recognises it.
func TestSplitBlock_EachPartHoldsExactlyItsSeries(t *testing.T) {
	ss, want := testSeries(t, 30, 0, 3_600_000, 15_000, 0, 3_600_000)
	src := t.TempDir()
	m, err := WriteBlock(context.Background(), src, ss, BlockOptions{MinTime: 0, MaxTime: 2 * 3_600_000})
	if err != nil {
		t.Fatal(err)
	}
	// Series sNNN go to part p(NNN % 3) and p((NNN+1) % 3); s000 also to "solo"; none to "never".
	place := func(lset labels.Labels) []string {
		n := int(lset.Get("series")[3] - '0')
		out := []string{"p" + string(rune('0'+n%3)), "p" + string(rune('0'+(n+1)%3))}
		if lset.Get("series") == "s000" {
			out = append(out, "solo")
		}
		return out
	}
	parent := t.TempDir()
	parts, err := SplitBlock(context.Background(), filepath.Join(src, m.ULID.String()), parent,
		SplitOptions{Tenant: "t1", Place: place, Group: "g1"})
	if err != nil {
		t.Fatal(err)
	}
	if len(parts) != 4 {
		t.Fatalf("%d parts, want p0 p1 p2 solo", len(parts))
	}
	union := map[string]bool{}
	for name, pm := range parts {
		got := readBlock(t, filepath.Join(parent, name, pm.ULID.String()))
		for k := range got {
			union[k] = true
			lset := k[:strings.Index(k, "} ")+1]
			if !strings.Contains(lset, `series="s`) {
				t.Fatalf("part %s: sample %s", name, k)
			}
		}
		for k := range want {
			n := int(k[strings.Index(k, `series="s`)+len(`series="s`)+2] - '0')
			inPart := name == "p"+string(rune('0'+n%3)) || name == "p"+string(rune('0'+(n+1)%3)) ||
				(name == "solo" && strings.Contains(k, `series="s000"`))
			if got[k] != inPart {
				t.Fatalf("part %s holds %s: %v, want %v", name, k, got[k], inPart)
			}
		}
		if CompactionGroup(&pm.BlockMeta) != "g1" || pm.Thanos.Source != SourceCompactor || pm.Thanos.Labels[TenantLabel] != "t1" ||
			pm.Compaction.Level != m.Compaction.Level || len(pm.Compaction.Sources) != 1 || pm.Compaction.Sources[0] != m.ULID {
			t.Fatalf("part %s meta %+v", name, pm)
		}
		data, err := os.ReadFile(filepath.Join(parent, name, pm.ULID.String(), MetaFilename))
		if err != nil {
			t.Fatal(err)
		}
		if back, err := ReadMeta(data); err != nil || CompactionGroup(&back.BlockMeta) != "g1" {
			t.Fatalf("part %s meta.json on disk: %v %+v", name, err, back.Compaction)
		}
	}
	requireSameKeys(t, want, union)
}

// TestBucketQueryable_ForgetsABlockWhoseMetaIsGone: a compactor deletes meta.json first; a local
// bucket's reader forgets such a block at its next listing (it does not keep serving a block that
// is being, or was half, deleted), and serves the rest.
func TestBucketQueryable_ForgetsABlockWhoseMetaIsGone(t *testing.T) {
	root := t.TempDir()
	bkt, err := NewFilesystemBucket(root)
	if err != nil {
		t.Fatal(err)
	}
	a, wantA := testSeries(t, 5, 0, 600_000, 15_000, 0, 600_000)
	b, _ := testSeries(t, 5, 600_000, 1_200_000, 15_000, 600_000, 1_200_000)
	uploadSeries(t, bkt, "t1", a, 0, 2*3_600_000)
	mb := uploadSeries(t, bkt, "t1", b, 0, 2*3_600_000)
	q := NewBucketQueryable(bkt, root, t.TempDir(), nil)
	defer q.Close()
	if got := selectAll(t, q, "t1", 0, 1<<40); len(got) != 2*len(wantA) {
		t.Fatalf("%d samples from both blocks, want %d", len(got), 2*len(wantA))
	}
	if err := os.Remove(filepath.Join(root, "t1", mb.ULID.String(), MetaFilename)); err != nil {
		t.Fatal(err)
	}
	requireSameKeys(t, wantA, selectAll(t, q, "t1", 0, 1<<40))
	if bs, err := q.Blocks(context.Background(), "t1"); err != nil || len(bs) != 1 {
		t.Fatalf("blocks open after the delete began: %d (%v)", len(bs), err)
	}
}

// TestSplitBlock_SeriesPlacedNowhereOrTwice_IsAnError: a series Place puts on no part is not
// dropped — SplitBlock fails naming it, and leaves nothing behind (the compactor then stores and
// deletes nothing); a series put twice on one part fails the same way.
func TestSplitBlock_SeriesPlacedNowhereOrTwice_IsAnError(t *testing.T) {
	ss, _ := testSeries(t, 10, 0, 3_600_000, 15_000, 0, 3_600_000)
	src := t.TempDir()
	m, err := WriteBlock(context.Background(), src, ss, BlockOptions{MinTime: 0, MaxTime: 2 * 3_600_000})
	if err != nil {
		t.Fatal(err)
	}
	for name, tc := range map[string]struct {
		place func(labels.Labels) []string
		want  string
	}{
		"nowhere": {func(lset labels.Labels) []string {
			if lset.Get("series") == "s004" {
				return nil
			}
			return []string{"a", "b"}
		}, `series="s004"`},
		"twice": {func(lset labels.Labels) []string {
			if lset.Get("series") == "s007" {
				return []string{"a", "b", "a"}
			}
			return []string{"a", "b"}
		}, `series="s007"`},
	} {
		t.Run(name, func(t *testing.T) {
			parent := t.TempDir()
			parts, err := SplitBlock(context.Background(), filepath.Join(src, m.ULID.String()), parent,
				SplitOptions{Tenant: "t1", Place: tc.place, Group: "g1"})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("parts %v, err %v; want an error naming %s", parts, err, tc.want)
			}
			if ents, _ := os.ReadDir(parent); len(ents) != 0 {
				t.Fatalf("left behind: %v", ents)
			}
		})
	}
}
