package memstore

import (
	"fmt"
	"math"
	"strconv"
	"testing"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/value"
)

// writeFixtureData writes the data of the WAL fixtures: pushes (NaN and stale markers
// included, several tenants, a refused and an idempotent sample) and imported chunks.
func writeFixtureData(t testing.TB, st *Store) {
	t.Helper()
	for p := range 200 {
		var batch []SeriesSamples
		for i := range 12 {
			v := float64(p*i) + 0.25
			switch (p + i) % 7 {
			case 0:
				v = math.NaN()
			case 1:
				v = math.Float64frombits(value.StaleNaN)
			}
			batch = append(batch, ser(labels.FromStrings("__name__", "m", "i", strconv.Itoa(i)), Sample{int64(p*15_000 + i), v}))
		}
		mustPush(t, st, fmt.Sprintf("tenant-%d", p%3), batch...)
	}
	for i := range 20 {
		var smps []Sample
		for j := range 250 {
			smps = append(smps, Sample{int64(j*1000 + i), float64(i*j) * 1.5})
		}
		src := mustOpen(t, testConfig(""))
		mustPush(t, src, "imp", ser(labels.FromStrings("__name__", "imported", "i", strconv.Itoa(i)), smps...))
		if err := src.ForEachSeries(func(tenant string, lset labels.Labels, chks []Chunk) error {
			return st.ImportChunks(tenant, lset, chks)
		}); err != nil {
			t.Fatal(err)
		}
	}
}
