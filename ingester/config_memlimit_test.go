package ingester

import (
	"flag"
	"math"
	"strings"
	"testing"
)

func TestConfig_MemoryLimitRatioValidated(t *testing.T) {
	for _, tc := range []struct {
		ratio float64
		ok    bool
	}{{0, true}, {0.5, true}, {DefaultMemoryLimitRatio, true}, {1, true}, {-0.1, false}, {1.01, false}, {math.NaN(), false}, {math.Inf(1), false}} {
		var cfg Config
		fs := flag.NewFlagSet("ingester", flag.ContinueOnError)
		cfg.RegisterFlags(fs)
		if cfg.MemoryLimitRatio != DefaultMemoryLimitRatio {
			t.Fatalf("default %v, want %v", cfg.MemoryLimitRatio, DefaultMemoryLimitRatio)
		}
		cfg.MemoryLimitRatio = tc.ratio
		err := cfg.Validate()
		named := err != nil && strings.Contains(err.Error(), "-runtime.memory-limit-ratio")
		if named == tc.ok {
			t.Errorf("ratio %v: Validate() = %v; want an error naming -runtime.memory-limit-ratio: %v", tc.ratio, err, !tc.ok)
		}
	}
}
