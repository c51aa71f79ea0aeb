package netns

import (
	"strings"
	"testing"
)

// TestHealRemovesRules checks that a heal leaves no fault table behind in any node.
func TestHealRemovesRules(t *testing.T) {
	if !Reexec(t) {
		return
	}
	nt, err := New(3)
	if err != nil {
		t.Fatal(err)
	}
	defer nt.Close()
	for i := range nt.Nodes {
		if err := nt.Apply(i, Rule{Peers: []int{(i + 1) % 3, (i + 2) % 3}, In: true, LossPercent: 30}); err != nil {
			t.Fatal(err)
		}
	}
	if err := nt.HealAll(); err != nil {
		t.Fatal(err)
	}
	for i := range nt.Nodes {
		out, err := nt.Command(i, "nft", "list", "ruleset").CombinedOutput()
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(out), "faulttest") {
			t.Fatalf("node %d still has rules after heal:\n%s", i, out)
		}
	}
}
