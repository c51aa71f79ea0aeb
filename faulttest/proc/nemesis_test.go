package proc

import (
	"slices"
	"testing"
)

// cutsSymmetric checks that i is cut from j exactly when j is cut from i, and returns who each
// member still sees (itself included).
func cutsSymmetric(t *testing.T, cut [][]int) [][]int {
	t.Helper()
	n := len(cut)
	sees := make([][]int, n)
	for i := range n {
		for j := range n {
			if slices.Contains(cut[i], j) != slices.Contains(cut[j], i) {
				t.Fatalf("asymmetric cut between n%d and n%d: %v", i, j, cut)
			}
			if !slices.Contains(cut[i], j) {
				sees[i] = append(sees[i], j)
			}
		}
	}
	return sees
}

func TestBridgeCuts(t *testing.T) {
	cut, note, err := bridgeCuts([]int{3, 0, 4, 1, 2})
	if err != nil {
		t.Fatal(err)
	}
	sees := cutsSymmetric(t, cut)
	want := [][]int{{0, 3, 4}, {1, 2, 4}, {1, 2, 4}, {0, 3, 4}, {0, 1, 2, 3, 4}}
	if !slices.EqualFunc(sees, want, slices.Equal) {
		t.Fatalf("sees %v, want %v (%s)", sees, want, note)
	}
	if _, _, err := bridgeCuts([]int{0, 1}); err == nil {
		t.Fatal("bridge of 2 accepted")
	}
}

func TestMajoritiesRingCuts(t *testing.T) {
	for _, perm := range [][]int{{0, 1, 2, 3, 4}, {2, 4, 0, 3, 1}, {0, 1, 2, 3, 4, 5, 6}} {
		cut, note, err := majoritiesRingCuts(perm)
		if err != nil {
			t.Fatal(err)
		}
		sees := cutsSymmetric(t, cut)
		n := len(perm)
		for i, s := range sees {
			if len(s) < n/2+1 || len(s) == n || (n == 5 && len(s) != 3) {
				t.Fatalf("%v: n%d sees %v: not a partial majority (%s)", perm, i, s, note)
			}
			for j := range i {
				if slices.Equal(sees[j], s) {
					t.Fatalf("%v: n%d and n%d see the same majority %v", perm, i, j, s)
				}
			}
		}
	}
	if _, _, err := majoritiesRingCuts([]int{0, 1, 2}); err == nil {
		t.Fatal("majorities-ring of 3 accepted")
	}
}
