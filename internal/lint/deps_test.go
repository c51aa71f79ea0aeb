// Package lint holds tests that keep the project's shape: which of our packages may import which.
package lint

import (
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/raftingest/raftingest"

// allowed lists, for each of our packages that has a rule, the packages of ours it may import
// (directly). Packages not listed may import anything of ours except cmd/. The direction is the one
// DESIGN.md draws: ringstate at the bottom, the lifecycle and presentation over it, the wiring on top.
var allowed = map[string][]string{
	"ringstate": {},
	"ringpb":    {"ringstate"},
	"raftfsm":   {"ringstate", "ringpb", "auth"},
	// Who is on the other end of a connection: a leaf, imported by whatever checks identities.
	"auth":      {},
	"lifecycle": {"ringstate"},
	"ringview":  {"ringstate"},
	"memstore":  {},
	"tenant":    {},
	// The read and write paths see the ring and the ingesters only through their own interfaces:
	// never the Raft node or the store directly.
	"distributor": {"ringstate", "ingesterpb"},
	"querier":     {"ringstate", "ingesterpb", "tenant", "distributor", "histchunk"},
	"storage":     {"tenant", "histchunk"},
	"histchunk":   {},
	"flush":       {"memstore", "storage"},
	// The hand-over checks frames with the rules a Push is checked with (ingesterpb, tenant).
	"transfer": {"ringstate", "transferpb", "memstore", "ingesterpb", "tenant"},
	// Moving blocks between members' buckets sees blocks only (storage, its wire format, tenant
	// ids): who moves what where (the ring) is decided by its callers.
	"blocksvc": {"blockspb", "storage", "tenant"},
	// The compactor reaches buckets and the lease through its own interfaces (the ingester adapts
	// blocksvc and raftfsm); it reads the ring and the series hash only to place merged blocks as
	// the distributor places writes.
	"compact": {"storage", "ringstate", "distributor"},
}

func TestDependencyDirection(t *testing.T) {
	out, err := exec.Command("go", "list", "-f", "{{.ImportPath}} {{join .Imports \" \"}}", module+"/...").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	seen := 0
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		fields := strings.Fields(line)
		pkg := strings.TrimPrefix(strings.TrimPrefix(fields[0], module), "/")
		rules, ruled := allowed[pkg]
		if ruled {
			seen++
		}
		for _, imp := range fields[1:] {
			if !strings.HasPrefix(imp, module+"/") {
				if pkg == "ringstate" && strings.Contains(strings.SplitN(imp, "/", 2)[0], ".") {
					t.Errorf("ringstate imports %s: it may import only the standard library", imp)
				}
				continue
			}
			ours := strings.TrimPrefix(imp, module+"/")
			if strings.HasPrefix(ours, "cmd/") {
				t.Errorf("%s imports %s: nothing imports cmd/", pkg, ours)
			}
			if ruled && !contains(rules, ours) {
				t.Errorf("%s imports %s: allowed are %v", pkg, ours, rules)
			}
		}
	}
	if seen < 3 {
		t.Fatalf("only %d ruled packages listed; is the module path right?", seen)
	}
}

func contains(xs []string, x string) bool {
	for _, v := range xs {
		if v == x {
			return true
		}
	}
	return false
}
