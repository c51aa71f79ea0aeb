package memstore

import (
	"errors"
	"testing"

	"github.com/prometheus/prometheus/model/labels"
)

// TestAppender_LabelsMayAliasAReusedBuffer checks the copy rule: labels given to Append may live in a
// buffer the caller overwrites right after Append returns (here a ScratchBuilder's Overwrite buffer,
// as the ingester's decoder does); the series, the WAL and the refusals keep their own copies.
func TestAppender_LabelsMayAliasAReusedBuffer(t *testing.T) {
	dir := t.TempDir()
	st := mustOpen(t, testConfig(dir))
	var sb labels.ScratchBuilder
	var lset labels.Labels
	build := func(job string) labels.Labels {
		sb.Reset()
		sb.Add("job", job)
		sb.Add("__name__", "m")
		sb.Sort()
		sb.Overwrite(&lset) // every call reuses the same bytes
		return lset
	}
	app := st.Appender("t")
	app.Append(build("aaaa"), []Sample{{T: 10, V: 1}, {T: 20, V: 2}})
	app.Append(build("bbbb"), []Sample{{T: 10, V: 3}})
	app.Append(build("cccc"), nil) // index 2, nothing to do
	app.Append(build("aaaa"), []Sample{{T: 15, V: 9}, {T: 30, V: 4}})
	res, err := app.Commit()
	if err != nil {
		t.Fatal(err)
	}
	if res.Accepted != 4 || res.Refused != 1 || res.NewSeries != 2 || len(res.Errors) != 1 {
		t.Fatalf("result %+v", res)
	}
	e := res.Errors[0]
	if e.SeriesIndex != 3 || e.T != 15 || !errors.Is(e, ErrOutOfOrderSample) {
		t.Fatalf("error %+v", e)
	}
	build("zzzz") // overwrite the caller's buffer again
	if got := e.Labels.String(); got != `{__name__="m", job="aaaa"}` {
		t.Fatalf("refusal labels %s: they alias the caller's buffer", got)
	}
	want := map[string][]Sample{
		`t/{__name__="m", job="aaaa"}`: {{T: 10, V: 1}, {T: 20, V: 2}, {T: 30, V: 4}},
		`t/{__name__="m", job="bbbb"}`: {{T: 10, V: 3}},
	}
	requireSameData(t, want, dump(t, st))
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	st2 := mustOpen(t, testConfig(dir))
	requireSameData(t, want, dump(t, st2))
	if err := st2.Close(); err != nil {
		t.Fatal(err)
	}
	// A refused series (invalid labels) also reports a copy.
	st3 := mustOpen(t, testConfig(""))
	app = st3.Appender("t")
	sb.Reset()
	sb.Add("a", "1")
	sb.Add("a", "2")
	sb.Overwrite(&lset)
	app.Append(lset, []Sample{{T: 1, V: 1}})
	res, err = app.Commit()
	if err != nil || len(res.Errors) != 1 || !errors.Is(res.Errors[0], ErrInvalidLabels) {
		t.Fatalf("%+v %v", res, err)
	}
	build("zzzz")
	if got := res.Errors[0].Labels.String(); got != `{a="1", a="2"}` {
		t.Fatalf("refusal labels %s: they alias the caller's buffer", got)
	}
}

// TestAppender_Closed: an Appender of a closed Store commits ErrClosed.
func TestAppender_Closed(t *testing.T) {
	st := mustOpen(t, testConfig(""))
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	app := st.Appender("t")
	app.Append(labels.FromStrings("a", "b"), []Sample{{T: 1, V: 1}})
	if _, err := app.Commit(); !errors.Is(err, ErrClosed) {
		t.Fatalf("got %v, want ErrClosed", err)
	}
}

// BenchmarkAppenderScratchLabels is BenchmarkAppend's load with the labels of each series built in
// one reused buffer (ScratchBuilder.Overwrite) and pushed through an Appender, as the ingester does:
// no allocation per series once the series exist.
func BenchmarkAppenderScratchLabels(b *testing.B) {
	st := mustOpen(b, testConfig(""))
	batch := benchBatch(1000, 0)
	var sb labels.ScratchBuilder
	var lset labels.Labels
	var ts int64
	b.ReportAllocs()
	for b.Loop() {
		ts += 15_000
		app := st.Appender("t")
		for i := range batch {
			sb.Reset()
			batch[i].Labels.Range(func(l labels.Label) { sb.Add(l.Name, l.Value) })
			sb.Overwrite(&lset)
			batch[i].Samples[0] = Sample{T: ts, V: float64(ts)}
			app.Append(lset, batch[i].Samples)
		}
		if _, err := app.Commit(); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(batch)), "ns/sample")
}
