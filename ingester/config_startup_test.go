package ingester

import (
	"flag"
	"strings"
	"testing"
)

// The README's address form ":PORT" used to pass validation, bootstrap Raft and exit a second later;
// now it is refused at start naming the flag and the fix. 0.0.0.0 stays allowed for -http.addr
// (serve every interface) but not for -grpc.addr, which members dial as advertised.
func TestConfig_AddressesWithoutAHostRefusedAtStart(t *testing.T) {
	for _, tc := range []struct {
		flag, value string
		refused     bool
	}{
		{"-grpc.addr", ":9095", true},
		{"-grpc.addr", "0.0.0.0:9095", true},
		{"-grpc.addr", "10.0.0.1:9095", false},
		{"-http.addr", ":8080", true},
		{"-http.addr", "0.0.0.0:8080", false},
	} {
		var cfg Config
		fs := flag.NewFlagSet("", flag.ContinueOnError)
		cfg.RegisterFlags(fs)
		if err := fs.Parse([]string{"-node.id", "a", tc.flag, tc.value}); err != nil {
			t.Fatal(err)
		}
		err := cfg.Validate()
		if refused := err != nil && strings.Contains(err.Error(), tc.flag+` "`+tc.value+`": give the host`); refused != tc.refused {
			t.Errorf("%s %s: refused %v, want %v (%v)", tc.flag, tc.value, refused, tc.refused, err)
		}
	}
}
