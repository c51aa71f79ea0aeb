package check

import (
	"strings"
	"testing"
)

func TestCheckSameAnswer(t *testing.T) {
	a, b, c := SampleID{0, 1}, SampleID{0, 2}, SampleID{1, 1}
	for _, tc := range []struct {
		name    string
		answers []Answer
		valid   bool
		want    []string // substrings of String()
	}{
		{"all equal", []Answer{{Member: "n0", Samples: []SampleID{a, b, c}}, {Member: "n1", Samples: []SampleID{c, b, a}},
			{Member: "n2", Samples: []SampleID{b, a, c}}}, true, []string{"PASS members=3 answered=3 samples=3 reference=n0"}},
		{"one member misses a flushed sample", []Answer{{Member: "n0", Samples: []SampleID{a, b, c}}, {Member: "n1", Samples: []SampleID{a, b}}},
			false, []string{"FAIL", "n1: 2 samples (0 not in n0's answer", "1 of n0's missing, first w1/1"}},
		{"one member answers more", []Answer{{Member: "n0", Samples: []SampleID{a}}, {Member: "n1", Samples: []SampleID{a, c}}},
			false, []string{"n1: 2 samples (1 not in n0's answer, first w1/1"}},
		{"a duplicate is a difference", []Answer{{Member: "n0", Samples: []SampleID{a, b}}, {Member: "n1", Samples: []SampleID{a, a, b}}},
			false, []string{"1 not in n0's answer, first w0/1"}},
		{"a failed member fails it", []Answer{{Member: "n0", Samples: []SampleID{a}}, {Member: "n1", Err: "503 too many ingesters failed"}},
			false, []string{"answered=1", "n1: 503 too many ingesters failed"}},
		{"the first answer is the reference even after a failure", []Answer{{Member: "n0", Err: "boom"}, {Member: "n1", Samples: []SampleID{a}},
			{Member: "n2", Samples: []SampleID{a}}}, false, []string{"reference=n1", "members-that-differ=0"}},
		{"no member", nil, false, []string{"FAIL members=0"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := CheckSameAnswer(tc.answers)
			if r.Valid() != tc.valid {
				t.Errorf("Valid() = %v, want %v: %s", r.Valid(), tc.valid, r.String())
			}
			for _, w := range tc.want {
				if !strings.Contains(r.String(), w) {
					t.Errorf("String() = %q, want it to contain %q", r.String(), w)
				}
			}
		})
	}
}
