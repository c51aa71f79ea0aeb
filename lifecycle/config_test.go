package lifecycle

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestConfig_RegisterFlagsDefaults(t *testing.T) {
	var c Config
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	c.RegisterFlags(fs)
	for name, want := range map[string]string{
		"ring.num-tokens":                "128",
		"ring.heartbeat-period":          "5s",
		"ring.heartbeat-timeout":         "1m0s",
		"ring.tokens-file-path":          "",
		"ingester.join-after":            "0s",
		"ingester.final-sleep":           "0s",
		"ring.token-generation-strategy": "balanced",
		"ring.zone":                      "",
	} {
		f := fs.Lookup(name)
		if f == nil {
			t.Fatalf("flag -%s not registered", name)
		}
		if f.DefValue != want {
			t.Errorf("-%s default %q, want %q", name, f.DefValue, want)
		}
	}
	if err := fs.Parse([]string{"-ring.num-tokens=7", "-ingester.join-after=30s"}); err != nil {
		t.Fatal(err)
	}
	if c.NumTokens != 7 || c.JoinAfter != 30*time.Second {
		t.Fatalf("flags not bound: %+v", c)
	}
}

func TestConfig_Validate(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	for _, tc := range []struct {
		name   string
		modify func(*Config)
		want   []string // substrings of the error; none: valid
	}{
		{"defaults are valid", func(*Config) {}, nil},
		{"missing tokens file is fine: it is created at the first claim", func(c *Config) {
			c.TokensFilePath = filepath.Join(dir, "absent.json")
		}, nil},
		{"well-formed tokens file", func(c *Config) { c.TokensFilePath = write("ok.json", `{"tokens":[3,1,2]}`) }, nil},
		{"zero tokens", func(c *Config) { c.NumTokens = 0 }, []string{"-ring.num-tokens"}},
		{"too many tokens bloat every command and snapshot", func(c *Config) { c.NumTokens = MaxNumTokens + 1 }, []string{"-ring.num-tokens", "4096"}},
		{"zero heartbeat period", func(c *Config) { c.HeartbeatPeriod = 0 }, []string{"-ring.heartbeat-period"}},
		{"timeout not above period makes healthy members look unhealthy", func(c *Config) {
			c.HeartbeatTimeout = c.HeartbeatPeriod
		}, []string{"-ring.heartbeat-timeout", "-ring.heartbeat-period", "unhealthy"}},
		{"negative join-after", func(c *Config) { c.JoinAfter = -time.Second }, []string{"-ingester.join-after"}},
		{"negative final sleep", func(c *Config) { c.FinalSleep = -time.Second }, []string{"-ingester.final-sleep"}},
		{"random tokens", func(c *Config) { c.TokenGeneration = TokensRandom }, nil},
		{"unknown token strategy", func(c *Config) { c.TokenGeneration = "spread-minimizing" }, []string{"-ring.token-generation-strategy", "spread-minimizing", "balanced or random"}},
		{"no id", func(c *Config) { c.ID = "" }, []string{"Config.ID"}},
		{"malformed json names the path", func(c *Config) { c.TokensFilePath = write("bad.json", `{"tokens":[1,`) }, []string{"-ring.tokens-file-path", "bad.json", "malformed"}},
		{"empty token list names the path", func(c *Config) { c.TokensFilePath = write("empty.json", `{"tokens":[]}`) }, []string{"empty.json", "no tokens"}},
		{"duplicate token names the path and the token", func(c *Config) { c.TokensFilePath = write("dup.json", `{"tokens":[5,9,5]}`) }, []string{"dup.json", "token 5 twice"}},
		{"a directory is not a tokens file", func(c *Config) { c.TokensFilePath = dir }, []string{"-ring.tokens-file-path", dir}},
		{"every problem is reported at once", func(c *Config) { c.NumTokens = -1; c.JoinAfter = -1 }, []string{"-ring.num-tokens", "-ingester.join-after"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := testConfig("a")
			tc.modify(&c)
			err := c.Validate()
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatalf("Validate: %v, want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate accepted it, want an error containing %q", tc.want)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func TestNew_RefusesInvalidConfig(t *testing.T) {
	c := testConfig("a")
	c.NumTokens = 0
	if _, err := New(c, newFakeRing().node("a"), nil, nil); err == nil || !strings.Contains(err.Error(), "-ring.num-tokens") {
		t.Fatalf("New: %v, want the Validate error", err)
	}
}
