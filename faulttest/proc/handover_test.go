package proc

import (
	"slices"
	"testing"
)

// The Prometheus API's timestamps are parsed to exact milliseconds: a float would turn
// 1763718000.123 into ...122.99 and misname the sample.
func TestParseAPITime(t *testing.T) {
	for in, want := range map[string]int64{"1763718000.123": 1763718000123, "1763718000.1": 1763718000100,
		"1763718000": 1763718000000, "0.007": 7} {
		if got, err := parseAPITime(in); err != nil || got != want {
			t.Errorf("parseAPITime(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, bad := range []string{"1.0001", "x.1", "1.x", ""} {
		if _, err := parseAPITime(bad); err == nil {
			t.Errorf("parseAPITime(%q) accepted", bad)
		}
	}
}

// A leaver restarted as the spare must lose -bootstrap (on its wiped Raft directory it would found a
// second cluster) and its old -join, and carry exactly one -ingester.join-after.
func TestDropFlagAndSetFlag(t *testing.T) {
	args := []string{"-node.id", "n0", "-bootstrap", "-ingester.join-after", "0s", "-join", "a:1", "-ingester.join-after", "5s"}
	got := dropFlag(dropFlag(args, "-bootstrap", false), "-join", true)
	if want := []string{"-node.id", "n0", "-ingester.join-after", "0s", "-ingester.join-after", "5s"}; !slices.Equal(got, want) {
		t.Fatalf("dropFlag: %v, want %v", got, want)
	}
	n := &Node{args: got}
	setFlag(n, "-ingester.join-after", "1h")
	if want := []string{"-node.id", "n0", "-ingester.join-after", "1h"}; !slices.Equal(n.args, want) {
		t.Fatalf("setFlag: %v, want %v", n.args, want)
	}
}
