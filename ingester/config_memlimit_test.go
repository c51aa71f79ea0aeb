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

func TestConfig_GOGCFlagsValidated(t *testing.T) {
	for _, tc := range []struct {
		flag  string
		set   func(*Config, int)
		value int
		ok    bool
	}{
		{"-runtime.gogc", func(c *Config, v int) { c.GOGC = v }, 0, true},
		{"-runtime.gogc", func(c *Config, v int) { c.GOGC = v }, 10, true},
		{"-runtime.gogc", func(c *Config, v int) { c.GOGC = v }, 10000, true},
		{"-runtime.gogc", func(c *Config, v int) { c.GOGC = v }, 9, false},
		{"-runtime.gogc", func(c *Config, v int) { c.GOGC = v }, -1, false},
		{"-runtime.gogc", func(c *Config, v int) { c.GOGC = v }, 10001, false},
		{"-runtime.bulk-load-gogc", func(c *Config, v int) { c.BulkLoadGOGC = v }, 0, true},
		{"-runtime.bulk-load-gogc", func(c *Config, v int) { c.BulkLoadGOGC = v }, 100, true},
		{"-runtime.bulk-load-gogc", func(c *Config, v int) { c.BulkLoadGOGC = v }, 99, false},
		{"-runtime.bulk-load-gogc", func(c *Config, v int) { c.BulkLoadGOGC = v }, -5, false},
		{"-runtime.bulk-load-gogc", func(c *Config, v int) { c.BulkLoadGOGC = v }, 10001, false},
	} {
		var cfg Config
		fs := flag.NewFlagSet("ingester", flag.ContinueOnError)
		cfg.RegisterFlags(fs)
		if cfg.GOGC != DefaultGOGC || cfg.BulkLoadGOGC != DefaultBulkLoadGOGC {
			t.Fatalf("defaults %d and %d, want %d and %d", cfg.GOGC, cfg.BulkLoadGOGC, DefaultGOGC, DefaultBulkLoadGOGC)
		}
		tc.set(&cfg, tc.value)
		err := cfg.Validate()
		named := err != nil && strings.Contains(err.Error(), tc.flag)
		if named == tc.ok {
			t.Errorf("%s=%d: Validate() = %v; want an error naming it: %v", tc.flag, tc.value, err, !tc.ok)
		}
	}
}
