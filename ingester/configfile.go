package ingester

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// A configuration file (-config.file) is YAML whose keys are the flags' names, flat or nested at
// the dots, as Mimir users write theirs:
//
//	node.id: ingester-1
//	raft:
//	  addr: 10.0.0.1:9096
//	blocks-storage.s3:
//	  endpoint: s3.eu-west-1.amazonaws.com
//	join: [10.0.0.2:9095, 10.0.0.3:9095]   # a list is the flag's comma-separated value
//
// A flag given on the command line overrides the file. An unknown key, a key given twice, or a
// value its flag refuses is an error naming the file, the line and the key. -print.config prints
// the configuration in effect in the same form, secrets masked.

// Recorder wraps every flag of a FlagSet so that the value each was last set to, as text, is known
// afterwards: flag.Func values print nothing of their own, and -print.config must show them.
type Recorder struct {
	raw map[string]string
}

// NewRecorder wraps every flag of fs; call it after the flags are registered, before parsing.
// accumulating names the flags whose repetitions add up (-join a -join b): their recorded value is
// every repetition's, comma-joined; for the others the last one wins, as it does for the flag.
// The wrapped FlagSet must not print its defaults (PrintDefaults): use one of its own.
func NewRecorder(fs *flag.FlagSet, accumulating ...string) *Recorder {
	r := &Recorder{raw: map[string]string{}}
	fs.VisitAll(func(f *flag.Flag) {
		rv := recordingValue{Value: f.Value, name: f.Name, r: r, accumulate: slices.Contains(accumulating, f.Name)}
		if bf, ok := f.Value.(interface{ IsBoolFlag() bool }); ok && bf.IsBoolFlag() {
			f.Value = recordingBool{rv}
		} else {
			f.Value = rv
		}
	})
	return r
}

type recordingValue struct {
	flag.Value
	name       string
	r          *Recorder
	accumulate bool
}

func (v recordingValue) Set(s string) error {
	if err := v.Value.Set(s); err != nil {
		return err
	}
	if prev, ok := v.r.raw[v.name]; ok && v.accumulate && prev != "" {
		s = prev + "," + s
	}
	v.r.raw[v.name] = s
	return nil
}

// Secret passes a wrapped secret flag's marker through (SecretFlagNames).
func (v recordingValue) Secret() bool {
	sv, ok := v.Value.(secretValue)
	return ok && sv.Secret()
}

type recordingBool struct{ recordingValue }

func (recordingBool) IsBoolFlag() bool { return true }

// notInFile are the flags a configuration file cannot set: they say how to read the
// configuration, not what it is.
var notInFile = map[string]bool{"config.file": true, "print.config": true, "help": true, "h": true, "version": true}

// LoadConfigFile sets, from the YAML file at path, every flag of fs that the command line did not
// set (cmdline: the names it set).
func LoadConfigFile(fs *flag.FlagSet, path string, cmdline map[string]bool) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("-config.file: %w", err)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(b, &doc); err != nil {
		return fmt.Errorf("-config.file %s: %w", path, err)
	}
	if len(doc.Content) == 0 {
		return nil // an empty file sets nothing
	}
	type entry struct {
		key, value string
		line       int
	}
	var entries []entry
	var walk func(prefix string, n *yaml.Node) error
	walk = func(prefix string, n *yaml.Node) error {
		switch n.Kind {
		case yaml.MappingNode:
			for i := 0; i+1 < len(n.Content); i += 2 {
				k, v := n.Content[i], n.Content[i+1]
				key := k.Value
				if prefix != "" {
					key = prefix + "." + key
				}
				if err := walk(key, v); err != nil {
					return err
				}
			}
		case yaml.SequenceNode:
			parts := make([]string, 0, len(n.Content))
			for _, c := range n.Content {
				if c.Kind != yaml.ScalarNode {
					return fmt.Errorf("-config.file %s line %d: %s: a list holds plain values only", path, c.Line, prefix)
				}
				parts = append(parts, c.Value)
			}
			entries = append(entries, entry{prefix, strings.Join(parts, ","), n.Line})
		case yaml.ScalarNode:
			if prefix == "" {
				return fmt.Errorf("-config.file %s line %d: want a mapping of flag names to values", path, n.Line)
			}
			v := n.Value
			if n.Tag == "!!null" {
				v = ""
			}
			entries = append(entries, entry{prefix, v, n.Line})
		case yaml.AliasNode:
			return fmt.Errorf("-config.file %s line %d: %s: YAML aliases are not supported", path, n.Line, prefix)
		}
		return nil
	}
	if err := walk("", doc.Content[0]); err != nil {
		return err
	}
	seen := map[string]int{}
	var errs []error
	for _, e := range entries {
		if first, dup := seen[e.key]; dup {
			errs = append(errs, fmt.Errorf("-config.file %s line %d: %s is already set at line %d", path, e.line, e.key, first))
			continue
		}
		seen[e.key] = e.line
		f := fs.Lookup(e.key)
		if f == nil || notInFile[e.key] {
			errs = append(errs, fmt.Errorf("-config.file %s line %d: unknown option %q (the keys are the flags' names: see -help)", path, e.line, e.key))
			continue
		}
		if cmdline[e.key] {
			continue // the command line wins
		}
		if e.value == SecretMask && SecretFlagNames(fs)[e.key] {
			errs = append(errs, fmt.Errorf("-config.file %s line %d: %s is %q, the mask -print.config writes for a secret: put the secret itself (or use the flag's -file form), or drop the key", path, e.line, e.key, SecretMask))
			continue
		}
		if err := fs.Set(e.key, e.value); err != nil {
			errs = append(errs, fmt.Errorf("-config.file %s line %d: %s: %v", path, e.line, e.key, err))
		}
	}
	return errors.Join(errs...)
}

// PrintConfig writes the configuration in effect as a configuration file: every flag of fs that was
// set or has a default, flat keys in order, its value as last set (else its default), secrets
// masked (loading a masked secret back is refused). A flag neither set nor with a printable default
// (a list whose default lives in code, -tls.operator-names) is left out, so that loading the output
// back keeps its default rather than emptying it.
func PrintConfig(w io.Writer, fs *flag.FlagSet, r *Recorder) error {
	secrets := SecretFlagNames(fs)
	var names []string
	fs.VisitAll(func(f *flag.Flag) {
		if !notInFile[f.Name] {
			names = append(names, f.Name)
		}
	})
	slices.Sort(names)
	var b strings.Builder
	b.WriteString("# the configuration in effect (-print.config); load it with -config.file\n")
	for _, name := range names {
		f := fs.Lookup(name)
		v, set := r.raw[name]
		if !set {
			v = f.DefValue
			if v == "" {
				continue
			}
		}
		if secrets[name] && v != "" {
			v = SecretMask
		}
		fmt.Fprintf(&b, "%s: %s\n", name, strconv.Quote(v))
	}
	_, err := io.WriteString(w, b.String())
	return err
}
