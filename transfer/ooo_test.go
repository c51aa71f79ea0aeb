package transfer

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/tsdb/chunkenc"

	"github.com/raftingest/raftingest/memstore"
	"github.com/raftingest/raftingest/ringstate"
)

// storeSamples reads every sample of tenant in st, by series, checking that each series' chunks
// are sorted and do not overlap.
func storeSamples(t *testing.T, st *memstore.Store, tenant string) map[string][]memstore.Sample {
	t.Helper()
	sel, err := st.Select(tenant, math.MinInt64, math.MaxInt64)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]memstore.Sample{}
	for _, s := range sel {
		var smps []memstore.Sample
		for i, c := range s.Chunks {
			if i > 0 && c.MinTime <= s.Chunks[i-1].MaxTime {
				t.Fatalf("series %s: chunks %d and %d overlap", s.Labels, i-1, i)
			}
			ch, err := chunkenc.FromData(c.Encoding, c.Data)
			if err != nil {
				t.Fatal(err)
			}
			it := ch.Iterator(nil)
			for it.Next() == chunkenc.ValFloat {
				ts, v := it.At()
				if n := len(smps); n > 0 && ts <= smps[n-1].T {
					t.Fatalf("series %s: sample at %d after %d", s.Labels, ts, smps[n-1].T)
				}
				smps = append(smps, memstore.Sample{T: ts, V: v})
			}
		}
		out[s.Labels.String()] = smps
	}
	return out
}

// A hand-over over real gRPC of series holding out-of-order samples: the leaver merges them into
// its frames' chunks, the joiner's checks and bulk import accept them, and the joiner — live and
// after a WAL replay — holds exactly the leaver's samples.
func TestHandover_OutOfOrderSamples(t *testing.T) {
	cfg := DefaultConfig()
	ring := newMemRing()
	from, to := newBenchNode(t, "ing-a", ring, cfg), newBenchNode(t, "ing-b", ring, cfg)
	from.store.SetOutOfOrderWindow(func(string) time.Duration { return time.Hour })
	base := time.Now().Add(-time.Hour).UnixMilli()
	var want int
	for i := range 50 {
		lset := labels.FromStrings("__name__", "m", "i", fmt.Sprint(i))
		var in []memstore.Sample
		for k := range 200 {
			in = append(in, memstore.Sample{T: base + int64(k)*15_000, V: float64(k)})
		}
		var ooo []memstore.Sample
		for k := 199; k >= 0; k -= 3 { // newest first: every one out of order
			ooo = append(ooo, memstore.Sample{T: base + int64(k)*15_000 + 7_000, V: -float64(k)})
		}
		for _, smps := range [][]memstore.Sample{in, ooo} {
			res, err := from.store.Push("t1", []memstore.SeriesSamples{{Labels: lset, Samples: smps}})
			if err != nil || res.Refused > 0 {
				t.Fatalf("push: %v %+v", err, res.Errors)
			}
			want += len(smps)
		}
	}
	before := storeSamples(t, from.store, "t1")
	n := 0
	for _, s := range before {
		n += len(s)
	}
	if n != want {
		t.Fatalf("leaver holds %d samples, want %d", n, want)
	}
	ring.addActive(t, from.id, from.addr, ringstate.Tokens{1, 2, 3})
	ring.must(t, registerCmd(to.id, to.addr))
	ring.must(t, ringstate.Command{Op: ringstate.OpLeave, Member: from.id})
	if err := from.leaver.Leave(context.Background()); err != nil {
		t.Fatal(err)
	}
	if m := ring.member(t, to.id); m.State != ringstate.ACTIVE {
		t.Fatalf("joiner is %s after the hand-over", m.State)
	}
	got := storeSamples(t, to.store, "t1")
	checkSame := func(what string, got map[string][]memstore.Sample) {
		t.Helper()
		if len(got) != len(before) {
			t.Fatalf("%s: %d series, want %d", what, len(got), len(before))
		}
		for k, w := range before {
			g := got[k]
			if len(g) != len(w) {
				t.Fatalf("%s: series %s: %d samples, want %d", what, k, len(g), len(w))
			}
			for i := range w {
				if g[i] != w[i] {
					t.Fatalf("%s: series %s: sample %d is %v, want %v", what, k, i, g[i], w[i])
				}
			}
		}
	}
	checkSame("joiner", got)
	// The joiner's WAL replays to the same.
	if err := to.store.Close(); err != nil {
		t.Fatal(err)
	}
	mcfg := memstore.DefaultConfig()
	mcfg.WALDir = to.walDir
	st, err := memstore.Open(mcfg, prometheus.NewRegistry(), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	checkSame("joiner after replay", storeSamples(t, st, "t1"))
}
