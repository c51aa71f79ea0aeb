package ingester

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func newFlags(t *testing.T) (*flag.FlagSet, *Config, *Recorder) {
	t.Helper()
	var cfg Config
	fs := flag.NewFlagSet("ingester", flag.ContinueOnError)
	cfg.RegisterFlags(fs)
	fs.String("config.file", "", "")
	return fs, &cfg, NewRecorder(fs, "join")
}

func writeFile(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "cfg.yaml")
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// Nested and flat keys, lists and booleans set the flags; the command line wins over the file.
func TestLoadConfigFile_SetsFlagsTheCommandLineDidNot(t *testing.T) {
	fs, cfg, _ := newFlags(t)
	p := writeFile(t, `
node.id: from-file
raft:
  addr: 127.0.0.1:19096
  max-voters: 3
join: [127.0.0.1:9195, 127.0.0.1:9197]
wal.sync: false
ring:
  heartbeat-period: 2s
`)
	if err := fs.Parse([]string{"-raft.max-voters", "7"}); err != nil {
		t.Fatal(err)
	}
	cmdline := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { cmdline[f.Name] = true })
	if err := LoadConfigFile(fs, p, cmdline); err != nil {
		t.Fatal(err)
	}
	if cfg.NodeID != "from-file" || cfg.RaftAddr != "127.0.0.1:19096" || cfg.Raft.MaxVoters != 7 ||
		strings.Join(cfg.Join, ",") != "127.0.0.1:9195,127.0.0.1:9197" || cfg.Store.WALSync || cfg.Lifecycle.HeartbeatPeriod.String() != "2s" {
		t.Fatalf("config after the file: node %q raft %q voters %d join %v wal.sync %v heartbeat %s",
			cfg.NodeID, cfg.RaftAddr, cfg.Raft.MaxVoters, cfg.Join, cfg.Store.WALSync, cfg.Lifecycle.HeartbeatPeriod)
	}
}

// Every mistake is named with the file, the line and the key, all at once.
func TestLoadConfigFile_Errors(t *testing.T) {
	fs, _, _ := newFlags(t)
	p := writeFile(t, "node.id: a\nnope: 1\nraft.max-voters: x\nnode:\n  id: b\nconfig.file: other.yaml\n")
	err := LoadConfigFile(fs, p, nil)
	if err == nil {
		t.Fatal("a bad file was accepted")
	}
	for _, want := range []string{
		p + ` line 2: unknown option "nope"`,
		p + " line 3: raft.max-voters:",
		p + " line 5: node.id is already set at line 1",
		p + ` line 6: unknown option "config.file"`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
	if err := LoadConfigFile(fs, filepath.Join(t.TempDir(), "absent.yaml"), nil); err == nil || !strings.Contains(err.Error(), "-config.file") {
		t.Errorf("a missing file: %v", err)
	}
	if err := LoadConfigFile(fs, writeFile(t, "node.id: [a\n"), nil); err == nil || !strings.Contains(err.Error(), "-config.file") {
		t.Errorf("malformed YAML: %v", err)
	}
	if err := LoadConfigFile(fs, writeFile(t, ""), nil); err != nil {
		t.Errorf("an empty file: %v", err)
	}
}

// -print.config's output loads back into the same configuration — lists given twice, a list whose
// default lives in code (-tls.operator-names), durations — with the secret masked and never
// printed; loading the mask back is refused, so a printed file cannot silently set the secret to it.
func TestPrintConfig_RoundTripsAndMasksSecrets(t *testing.T) {
	fs, cfg, rec := newFlags(t)
	if err := fs.Parse([]string{"-node.id", "n1", "-join", "127.0.0.1:9195", "-join", "127.0.0.1:9197", "-raft.max-voters", "3",
		"-blocks-storage.s3.secret-access-key", "hunter2", "-wal.sync=false", "-compactor.block-ranges", "2h,24h"}); err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	if err := PrintConfig(&out, fs, rec); err != nil {
		t.Fatal(err)
	}
	printed := out.String()
	if strings.Contains(printed, "hunter2") || !strings.Contains(printed, `blocks-storage.s3.secret-access-key: "`+SecretMask+`"`) {
		t.Fatalf("the secret is not masked:\n%s", printed)
	}
	if strings.Contains(printed, "tls.operator-names") {
		t.Errorf("-tls.operator-names printed empty: loading it back would empty the operator list")
	}
	fs2, _, _ := newFlags(t)
	if err := LoadConfigFile(fs2, writeFile(t, printed), nil); err == nil || !strings.Contains(err.Error(), "the mask -print.config writes") {
		t.Fatalf("a printed (masked) secret loaded back: %v", err)
	}
	var kept []string
	for _, line := range strings.Split(printed, "\n") {
		if !strings.HasPrefix(line, "blocks-storage.s3.secret-access-key:") {
			kept = append(kept, line)
		}
	}
	fs3, cfg3, _ := newFlags(t)
	if err := LoadConfigFile(fs3, writeFile(t, strings.Join(kept, "\n")), nil); err != nil {
		t.Fatalf("-print.config's output without the secret does not load: %v", err)
	}
	if cfg3.NodeID != cfg.NodeID || strings.Join(cfg3.Join, ",") != "127.0.0.1:9195,127.0.0.1:9197" || cfg3.Raft.MaxVoters != 3 ||
		cfg3.Store.WALSync || cfg3.Compactor.BlockRanges.String() != cfg.Compactor.BlockRanges.String() ||
		strings.Join(cfg3.TLS.OperatorNames, ",") != strings.Join(cfg.TLS.OperatorNames, ",") || len(cfg3.TLS.OperatorNames) == 0 {
		t.Fatalf("round trip: join %v operators %v voters %d", cfg3.Join, cfg3.TLS.OperatorNames, cfg3.Raft.MaxVoters)
	}
}
