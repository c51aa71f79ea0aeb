package check

import (
	"strings"
	"testing"
	"time"
)

func TestVotersReplaced(t *testing.T) {
	for _, tc := range []struct {
		voters []string
		want   int
		ok     bool
	}{
		{[]string{"a", "b", "c"}, 3, false},     // the dead voter c is still one
		{[]string{"a", "b"}, 3, false},          // demoted, not yet replaced
		{[]string{"a", "b", "d"}, 3, true},      // replaced by d
		{[]string{"a", "b"}, 2, true},           // no live non-voter left: as many as live nodes allow
		{[]string{"a", "b", "d", "e"}, 3, true}, // more is fine
	} {
		if got := VotersReplaced(tc.voters, "c", tc.want); got != tc.ok {
			t.Errorf("VotersReplaced(%v, c, %d) = %v, want %v", tc.voters, tc.want, got, tc.ok)
		}
	}
}

func TestCheckVoterDeaths(t *testing.T) {
	ok := VoterDeath{Member: "c", VotersBefore: []string{"a", "b", "c"}, VotersAfter: []string{"a", "b", "d"}, Replaced: true, After: 6 * time.Second}
	if r := CheckVoterDeaths([]VoterDeath{ok}, 14*time.Second); !r.Valid() || r.Replaced != 1 || !strings.HasPrefix(r.String(), "PASS") {
		t.Errorf("a replacement within the bound: %s", r)
	}
	slow := ok
	slow.After = 20 * time.Second
	never := VoterDeath{Member: "a", WasLeader: true, VotersBefore: []string{"a", "b", "d"}, VotersAfter: []string{"a", "b", "d"}}
	broken := VoterDeath{Member: "b", Err: "no leader"}
	r := CheckVoterDeaths([]VoterDeath{ok, slow, never, broken}, 14*time.Second)
	if r.Valid() || len(r.Problems) != 3 || r.Deaths != 4 || r.Replaced != 2 {
		t.Fatalf("%+v", r)
	}
	for _, want := range []string{"over the bound", "not replaced", "no leader"} {
		if !strings.Contains(r.String(), want) {
			t.Errorf("report lacks %q: %s", want, r)
		}
	}
}
