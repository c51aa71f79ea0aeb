package bench

import "testing"

func TestSelected(t *testing.T) {
	for _, tc := range []struct {
		only []string
		name string
		want bool
	}{
		{nil, "7 query", true},
		{[]string{"7"}, "7 query", true},
		{[]string{"query"}, "7 query", true},
		{[]string{"7 query"}, "7 query", true},
		{[]string{"6"}, "7 query", false},
		{[]string{"hand-over", "query"}, "6 hand-over", true},
		{[]string{"ingest"}, "2 ingest RF3", true},
		{[]string{"RF3"}, "2 ingest RF3", false},
	} {
		if got := selected(tc.only, tc.name); got != tc.want {
			t.Errorf("selected(%q, %q) = %v, want %v", tc.only, tc.name, got, tc.want)
		}
	}
}
