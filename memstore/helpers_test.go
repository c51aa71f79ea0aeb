package memstore

import (
	"fmt"
	"io"
	"log/slog"
	"math"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
)

func testLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func testConfig(dir string) Config {
	cfg := DefaultConfig()
	cfg.WALDir = dir
	return cfg
}

func mustOpen(t testing.TB, cfg Config) *Store {
	t.Helper()
	st, err := Open(cfg, prometheus.NewRegistry(), testLogger())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func mustPush(t testing.TB, st *Store, tenant string, batch ...SeriesSamples) PushResult {
	t.Helper()
	res, err := st.Push(tenant, batch)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func ser(lset labels.Labels, smps ...Sample) SeriesSamples {
	return SeriesSamples{Labels: lset, Samples: smps}
}

// decodeChunks returns every sample of chunks in order.
func decodeChunks(t testing.TB, chks []Chunk) []Sample {
	t.Helper()
	var out []Sample
	for _, c := range chks {
		ch, err := chunkenc.FromData(c.Encoding, c.Data)
		if err != nil {
			t.Fatal(err)
		}
		it := ch.Iterator(nil)
		for it.Next() == chunkenc.ValFloat {
			ts, v := it.At()
			out = append(out, Sample{ts, v})
		}
		if err := it.Err(); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// dump returns every tenant's series as "tenant/labels" → samples.
func dump(t testing.TB, st *Store) map[string][]Sample {
	t.Helper()
	out := map[string][]Sample{}
	if err := st.ForEachSeries(func(tenant string, lset labels.Labels, chks []Chunk) error {
		out[tenant+"/"+lset.String()] = decodeChunks(t, chks)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

func samplesEqual(a, b []Sample) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].T != b[i].T || math.Float64bits(a[i].V) != math.Float64bits(b[i].V) {
			return false
		}
	}
	return true
}

func requireSameData(t testing.TB, want, got map[string][]Sample) {
	t.Helper()
	if len(want) != len(got) {
		t.Fatalf("series count: want %d, got %d", len(want), len(got))
	}
	for k, w := range want {
		if g := got[k]; !samplesEqual(w, g) {
			t.Fatalf("series %s: want %d samples %v..., got %d samples %v...", k, len(w), head(w), len(g), head(g))
		}
	}
}

func head(s []Sample) string {
	if len(s) > 3 {
		s = s[:3]
	}
	return fmt.Sprint(s)
}
