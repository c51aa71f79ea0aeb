package lifecycle

import (
	"flag"
	"strings"
	"testing"
)

// -ingester.ring.instance-zone and its alias -ring.zone set one value; zone awareness without a
// zone is refused at start, naming the flag.
func TestConfig_ZoneFlags(t *testing.T) {
	for _, args := range [][]string{{"-ingester.ring.instance-zone=zone-a"}, {"-ring.zone=zone-a"}} {
		var c Config
		fs := flag.NewFlagSet("t", flag.ContinueOnError)
		c.RegisterFlags(fs)
		if err := fs.Parse(args); err != nil {
			t.Fatal(err)
		}
		if c.Zone != "zone-a" || c.ZoneAwarenessEnabled {
			t.Errorf("%v: zone %q, awareness %v; want zone-a, off", args, c.Zone, c.ZoneAwarenessEnabled)
		}
	}

	c := DefaultConfig()
	c.ID, c.RaftAddr = "m1", "127.0.0.1:7000"
	c.ZoneAwarenessEnabled = true
	err := c.Validate()
	if err == nil || !strings.Contains(err.Error(), "-ingester.ring.instance-zone") || !strings.Contains(err.Error(), "-ingester.ring.zone-awareness-enabled") {
		t.Fatalf("zone awareness without a zone: err %v, want one naming both flags", err)
	}
	c.Zone = "zone-a"
	if err := c.Validate(); err != nil {
		t.Fatalf("zone awareness with a zone: %v", err)
	}
}
