package ingesterpb

import (
	"errors"
	"regexp"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestValidateLabelViews(t *testing.T) {
	l := func(kv ...string) []LabelView {
		var out []LabelView
		for i := 0; i < len(kv); i += 2 {
			out = append(out, LabelView{Name: kv[i], Value: kv[i+1]})
		}
		return out
	}
	cases := []struct {
		why    string
		ls     []LabelView
		reason string // "" when valid
	}{
		{"an ordinary series", l("__name__", "up", "instance", "h:9100", "job", "node"), ""},
		{"a metric name with colons (recording rules)", l("__name__", "job:up:sum"), ""},
		{"UTF-8 values are fine", l("__name__", "up", "city", "Zürich"), ""},
		{"no labels at all", nil, "missing_metric_name"},
		{"no __name__", l("job", "x"), "missing_metric_name"},
		{"metric name starting with a digit", l("__name__", "1up"), "metric_name_invalid"},
		{"empty metric name", l("__name__", ""), "metric_name_invalid"},
		{"label name with a dash", l("__name__", "up", "a-b", "x"), "label_invalid"},
		{"label name with a colon", l("__name__", "up", "a:b", "x"), "label_invalid"},
		{"empty label name", l("", "x", "__name__", "up"), "label_invalid"},
		{"empty label value", l("__name__", "up", "job", ""), "label_value_empty"},
		{"value not UTF-8: QueryStream could never marshal it (issue 12)", l("__name__", "up", "job", "\xff\xfe"), "label_value_invalid"},
		{"value with a truncated UTF-8 sequence", l("__name__", "up", "job", "caf\xc3"), "label_value_invalid"},
		{"unsorted names", l("job", "x", "__name__", "up"), "labels_not_sorted"},
		{"duplicate names", l("__name__", "up", "a", "1", "a", "2"), "duplicate_label_names"},
		{"__name__ twice", l("__name__", "a", "__name__", "b"), "duplicate_label_names"},
	}
	for _, tc := range cases {
		err := ValidateLabelViews(tc.ls)
		var c LabelChecker
		for _, lv := range tc.ls {
			c.Add(lv.Name, lv.Value)
		}
		if errC := c.Done(); (errC == nil) != (err == nil) || (err != nil && errC.Error() != err.Error()) {
			t.Errorf("%s: LabelChecker says %v, ValidateLabelViews %v", tc.why, errC, err)
		}
		if tc.reason == "" {
			if err != nil {
				t.Errorf("%s: refused: %v", tc.why, err)
			}
			continue
		}
		var le *LabelsError
		if !errors.As(err, &le) || le.Reason != tc.reason || !errors.Is(err, ErrInvalidLabels) {
			t.Errorf("%s: %v, want reason %s wrapping ErrInvalidLabels", tc.why, err, tc.reason)
			continue
		}
		if !utf8.ValidString(err.Error()) {
			t.Errorf("%s: message %q is not valid UTF-8: it could not travel in a PushResponse", tc.why, err)
		}
	}
}

var (
	metricNameRE = regexp.MustCompile(`^[a-zA-Z_:][a-zA-Z0-9_:]*$`)
	labelNameRE  = regexp.MustCompile(`^[a-zA-Z_][a-zA-Z0-9_]*$`)
)

// FuzzLabelNames: the table-driven checks are the regular expressions the rules are written as.
func FuzzLabelNames(f *testing.F) {
	for _, s := range []string{"", "a", "_", ":", "a:b", "0a", "a0", "__name__", "é", "a-b", "A_Z09"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if got, want := IsLegacyMetricName(s), metricNameRE.MatchString(s); got != want {
			t.Fatalf("IsLegacyMetricName(%q) = %v, regexp says %v", s, got, want)
		}
		if got, want := IsLegacyLabelName(s), labelNameRE.MatchString(s); got != want {
			t.Fatalf("IsLegacyLabelName(%q) = %v, regexp says %v", s, got, want)
		}
	})
}

// The ingester's Push path calls ValidateLabelViews once per series of every request arriving over
// gRPC: it must not allocate when the series is valid.
func TestValidateLabelViews_NoAllocs(t *testing.T) {
	ls := []LabelView{{"__name__", "node_cpu_seconds_total"}, {"cpu", "3"}, {"instance", "10.1.2.3:9100"},
		{"job", "node"}, {"mode", "idle"}, {"pod", strings.Repeat("p", 40)}}
	if n := testing.AllocsPerRun(100, func() {
		if err := ValidateLabelViews(ls); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Fatalf("%v allocations per valid series", n)
	}
}

// BenchmarkValidateLabelViews: the cost the gRPC Push path adds per series (10 labels).
//
//	go test -run '^$' -bench ValidateLabelViews -count 6 ./ingesterpb/ | tee new.txt; benchstat new.txt
func BenchmarkValidateLabelViews(b *testing.B) {
	ls := []LabelView{{"__name__", "bench_metric_7"}, {"cluster", "eu-west-1"}, {"env", "production"},
		{"group", "3"}, {"instance", "10.1.3.17:9100"}, {"job", "node"}, {"namespace", "monitoring"},
		{"pod", "node-exporter-767"}, {"region", "eu"}, {"series", "767"}}
	b.ReportAllocs()
	for b.Loop() {
		if err := ValidateLabelViews(ls); err != nil {
			b.Fatal(err)
		}
	}
}
