package ingester

import (
	"flag"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The README's flag table says what a flag defaults to; -help says what it does. They must agree:
// every flag the table names exists, and every default it gives is the registered one.
func TestREADME_FlagTableMatchesTheFlags(t *testing.T) {
	var cfg Config
	fs := flag.NewFlagSet("ingester", flag.ContinueOnError)
	cfg.RegisterFlags(fs)
	b, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	nameRE := regexp.MustCompile("`(-[a-z0-9.-]+)`")
	// Defaults the table writes for people rather than as -help prints them.
	human := map[string]string{
		"-node.id":                     "hostname",     // the machine's hostname, computed at start
		"-tls.operator-names":          "operator",     // applied when empty; -help says "(default \"operator\")"
		"-server.http-tls-client-auth": "NoClientCert", // empty means it; -help says so
	}
	rows := 0
	for _, line := range strings.Split(string(b), "\n") {
		if !strings.HasPrefix(line, "| `-") {
			continue
		}
		cells := strings.Split(line, " | ")
		if len(cells) < 3 {
			continue
		}
		rows++
		if strings.Contains(cells[0], "*") {
			continue // a family of flags (`-server.grpc.keepalive.*`), defaults given in words
		}
		var names []string
		for _, m := range nameRE.FindAllStringSubmatch(cells[0], -1) {
			names = append(names, m[1])
		}
		sep := ", "
		if strings.Contains(cells[0], " / ") {
			sep = " / "
		}
		defs := strings.Split(strings.ReplaceAll(cells[1], "`", ""), sep)
		if strings.TrimSpace(cells[1]) == "" {
			defs = make([]string, len(names))
		}
		if len(defs) != len(names) {
			t.Errorf("README row %q: %d flags, %d defaults", cells[0], len(names), len(defs))
			continue
		}
		for i, name := range names {
			f := fs.Lookup(strings.TrimPrefix(name, "-"))
			if f == nil {
				t.Errorf("README names flag %s, which the ingester does not have", name)
				continue
			}
			want := strings.TrimSpace(defs[i])
			if h, ok := human[name]; ok {
				if want != h {
					t.Errorf("README: %s defaults to %q, want %q there", name, want, h)
				}
				continue
			}
			if !sameDefault(want, f.DefValue) {
				t.Errorf("README: %s defaults to %q; -help says %q", name, want, f.DefValue)
			}
		}
	}
	if rows < 20 {
		t.Fatalf("found %d rows of the README's flag table: the parse is broken", rows)
	}
}

// sameDefault compares a README default with a flag's DefValue: equal strings; equal durations
// ("1m" and "1m0s"), or lists of them; equal numbers, where the README may give a byte size
// ("64 MiB") or a unit after the number ("10000 samples/s").
func sameDefault(readme, def string) bool {
	if readme == def {
		return true
	}
	if strings.Contains(readme, ",") {
		a, b := strings.Split(readme, ","), strings.Split(def, ",")
		if len(a) != len(b) {
			return false
		}
		for i := range a {
			if !sameDefault(strings.TrimSpace(a[i]), b[i]) {
				return false
			}
		}
		return true
	}
	if num, unit, ok := strings.Cut(readme, " "); ok {
		n, err := strconv.ParseFloat(num, 64)
		if err != nil {
			return false
		}
		switch unit {
		case "KiB":
			n *= 1 << 10
		case "MiB":
			n *= 1 << 20
		case "GiB":
			n *= 1 << 30
		}
		readme = strconv.FormatFloat(n, 'f', -1, 64)
	}
	if a, err := time.ParseDuration(readme); err == nil {
		if b, err := time.ParseDuration(def); err == nil {
			return a == b
		}
	}
	if a, err := strconv.ParseFloat(readme, 64); err == nil {
		if b, err := strconv.ParseFloat(def, 64); err == nil {
			return a == b
		}
	}
	return false
}
