package querier

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"

	"github.com/raftingest/raftingest/ringstate"
)

// With zone awareness the failure budget counts zones: RF 3 over 3 zones of two members each
// reads completely with a whole zone lost (one member unreachable, the other unhealthy in the
// ring), where a zone-unaware read refuses (two members); and members of two zones lost fail the
// read either way.
func TestIngesterQueryable_ZoneAwareToleratesAZone(t *testing.T) {
	all := samplesRange(0, 60_000, 15_000)
	ls := labels.FromStrings("__name__", "m")
	cases := []struct {
		name      string
		zoneAware bool
		lose      func(zone string, i int) (dead, stale bool)
		wantErr   bool
	}{
		{"zone c down, zone-aware", true, func(z string, i int) (bool, bool) { return z == "c" && i == 0, z == "c" && i == 1 }, false},
		{"zone c down, zone-unaware", false, func(z string, i int) (bool, bool) { return z == "c" && i == 0, z == "c" && i == 1 }, true},
		{"one member each of zones b and c, zone-aware", true, func(z string, i int) (bool, bool) { return z == "b" && i == 0, z == "c" && i == 0 }, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dead := deadAddr(t)
			var ms []member
			for _, z := range []string{"a", "b", "c"} {
				for i := range 2 {
					d, stale := tc.lose(z, i)
					m := member{zone: z, state: ringstate.ACTIVE, stale: stale}
					if d || stale {
						m.addr = dead
						if stale {
							m.addr = fmt.Sprintf("127.0.0.1:%d", 1+len(ms)) // never asked
						}
					} else {
						f := startFakeIngester(t)
						f.add("t", ls, xorChunks(t, all, 120)...)
						m.addr = f.addr
					}
					ms = append(ms, m)
				}
			}
			pool := NewGRPCPool(16 << 20)
			t.Cleanup(func() { pool.Close() })
			q, err := NewIngesterQueryable(IngestersConfig{Ring: newRing(t, ms...), Clients: pool, ReplicationFactor: 3,
				ZoneAware: tc.zoneAware, HeartbeatTimeout: 10 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			got, _, err := selectAll(t, q, "t", 0, 60_000)
			if tc.wantErr {
				if !errors.Is(err, ErrTooManyIngesterFailures) {
					t.Fatalf("err %v, want ErrTooManyIngesterFailures", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if fmt.Sprint(got[ls.String()]) != fmt.Sprint(all) {
				t.Fatalf("got %v, want %v", got, all)
			}
		})
	}
}
