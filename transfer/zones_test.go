package transfer

import (
	"testing"

	"github.com/raftingest/raftingest/ringstate"
)

// With zone awareness a leaver claims only a PENDING member of its own zone; without, any.
func TestPickJoiner_ZoneAware(t *testing.T) {
	r, err := ringstate.Restore([]ringstate.Member{
		{ID: "a1", RaftAddr: "10.0.0.1:7000", Zone: "a", State: ringstate.LEAVING, Tokens: ringstate.Tokens{10}, HeartbeatMs: 1000},
		{ID: "b9", RaftAddr: "10.0.0.2:7000", Zone: "b", State: ringstate.PENDING, HeartbeatMs: 1000},
		{ID: "a9", RaftAddr: "10.0.0.3:7000", Zone: "a", State: ringstate.PENDING, HeartbeatMs: 900},
		{ID: "c9", RaftAddr: "10.0.0.4:7000", Zone: "c", State: ringstate.PENDING, HeartbeatMs: 1000},
	}, 1000, nil)
	if err != nil {
		t.Fatal(err)
	}
	if j, ok := pickJoiner(r, "a1", true); !ok || j.ID != "a9" {
		t.Errorf("zone-aware: picked %v %v, want a9 (the only PENDING member of zone a, though its heartbeat is older)", j.ID, ok)
	}
	if j, ok := pickJoiner(r, "a1", false); !ok || j.ID != "b9" {
		t.Errorf("zone-unaware: picked %v %v, want b9 (newest heartbeat, lowest id)", j.ID, ok)
	}
	noA, err := ringstate.Restore(append(r.Members()[:1:1], r.Members()[2:]...), 1000, nil) // a1, b9, c9: no PENDING a
	if err != nil {
		t.Fatal(err)
	}
	if j, ok := pickJoiner(noA, "a1", true); ok {
		t.Errorf("zone-aware without a PENDING member of zone a: picked %s, want none (flush fallback)", j.ID)
	}
}
