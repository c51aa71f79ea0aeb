// Package ringviewtest reads the /ring page the way a person's browser renders it, for tests: it runs
// a headless Chromium to dump the DOM of a URL and parses each member's row out of it. Unit tests of
// ringview use it against an httptest server; process-level tests use it against a real cluster.
//
// Only test code should import this package.
package ringviewtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/net/html"
)

// ChromiumPath is the browser DumpDOM runs: $RAFTINGEST_CHROMIUM when set, else where Debian's
// chromium package installs it. A variable so that tests can point it elsewhere.
var ChromiumPath = func() string {
	if p := os.Getenv("RAFTINGEST_CHROMIUM"); p != "" {
		return p
	}
	return "/usr/bin/chromium"
}()

// RequireBrowserEnv names the environment variable that turns a missing browser from a skip into a
// failure, so CI machines that are meant to have Chromium cannot silently skip the browser tests.
const RequireBrowserEnv = "RAFTINGEST_REQUIRE_BROWSER"

// ErrNoBrowser is returned by DumpDOM when Chromium is not installed.
var ErrNoBrowser = errors.New("ringviewtest: chromium is not installed")

// BrowserAvailable reports whether Chromium is installed.
func BrowserAvailable() bool {
	st, err := os.Stat(ChromiumPath)
	return err == nil && !st.IsDir() && st.Mode()&0o111 != 0
}

// TB is the part of testing.TB that SkipWithoutBrowser needs.
type TB interface {
	Helper()
	Skipf(format string, args ...any)
	Fatalf(format string, args ...any)
}

// SkipWithoutBrowser skips the test when Chromium is missing, unless RAFTINGEST_REQUIRE_BROWSER is
// set, in which case the test fails.
func SkipWithoutBrowser(t TB) {
	t.Helper()
	if BrowserAvailable() {
		return
	}
	if os.Getenv(RequireBrowserEnv) != "" {
		t.Fatalf("%s is set but Chromium is not installed at %s (apt-get install chromium)", RequireBrowserEnv, ChromiumPath)
		return
	}
	t.Skipf("Chromium is not installed at %s; install Debian's chromium package to run browser tests (set %s=1 to make this a failure)",
		ChromiumPath, RequireBrowserEnv)
}

// DumpDOM loads url in a fresh headless Chromium profile and returns the DOM after the page loaded
// (`--dump-dom`). It is bounded by ctx; when ctx has no deadline, a 60 s bound applies. Chromium runs
// in its own process group, which is killed when DumpDOM returns, so no renderer or zygote outlives
// the call.
func DumpDOM(ctx context.Context, url string) (string, error) {
	if !BrowserAvailable() {
		return "", fmt.Errorf("%w at %s", ErrNoBrowser, ChromiumPath)
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 60*time.Second)
		defer cancel()
	}
	profile, err := os.MkdirTemp("", "ringviewtest-chromium-")
	if err != nil {
		return "", fmt.Errorf("ringviewtest: chromium profile: %w", err)
	}
	defer os.RemoveAll(profile)

	cmd := exec.CommandContext(ctx, ChromiumPath,
		"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--disable-dev-shm-usage", "--user-data-dir="+profile, "--dump-dom", url)
	// A fresh HOME keeps Chromium from touching the real user's files (crash reports, caches).
	cmd.Env = append(os.Environ(), "HOME="+profile)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	killGroup := func() error {
		if cmd.Process == nil {
			return nil
		}
		// Negative pid: the whole group Chromium leads (browser, zygotes, renderers).
		return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
	cmd.Cancel = killGroup
	cmd.WaitDelay = 5 * time.Second
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err = cmd.Run()
	_ = killGroup() // children that outlived a clean exit
	if ctx.Err() != nil {
		return "", fmt.Errorf("ringviewtest: chromium --dump-dom %s: %w (stderr: %s)", url, ctx.Err(), lastLines(stderr.String(), 5))
	}
	if err != nil {
		return "", fmt.Errorf("ringviewtest: chromium --dump-dom %s: %w (stderr: %s)", url, err, lastLines(stderr.String(), 5))
	}
	if stdout.Len() == 0 {
		return "", fmt.Errorf("ringviewtest: chromium --dump-dom %s printed nothing (stderr: %s)", url, lastLines(stderr.String(), 5))
	}
	return stdout.String(), nil
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " | ")
}

// Row is one member's row of the /ring page as the browser rendered it: the text of each cell, plus
// the raw numbers the page carries in data-value attributes.
type Row struct {
	ID           string // data-id of the row
	State        string // lifecycle state or UNHEALTHY
	RingState    string
	Unhealthy    bool // the row has class "unhealthy" (highlighted)
	GRPCAddr     string
	RaftAddr     string
	HTTPAddr     string
	Zone         string
	NumTokens    int
	Ownership    float64 // fraction 0..1 (data-value)
	OwnershipPct string  // the cell text, e.g. "33.33%"
	HeartbeatAge float64 // seconds (data-value)
	Registered   string
	Handover     string // the cell text, e.g. "→ node-4"
	HandoverPeer string // data-peer
	Cells        map[string]string
}

// Page is what ParsePage reads from the whole /ring page.
type Page struct {
	Title       string
	RingTime    string // datetime attribute of #ring-time
	MemberCount int    // text of #member-count
	Rows        []Row
}

// ParseRows returns every member row (`tr.member`) of a /ring page, in page order.
func ParseRows(dom string) ([]Row, error) {
	p, err := ParsePage(dom)
	if err != nil {
		return nil, err
	}
	return p.Rows, nil
}

// ParsePage parses a /ring page: title, ring time, member count and rows. It fails when a row lacks
// a cell the page promises, so a renamed class breaks tests instead of reading as empty.
func ParsePage(dom string) (Page, error) {
	doc, err := html.Parse(strings.NewReader(dom))
	if err != nil {
		return Page{}, fmt.Errorf("ringviewtest: parse DOM: %w", err)
	}
	var p Page
	var walkErr error
	var walk func(n *html.Node)
	walk = func(n *html.Node) {
		if n.Type == html.ElementNode {
			switch {
			case n.Data == "title" && p.Title == "":
				p.Title = text(n)
			case attr(n, "id") == "ring-time":
				p.RingTime = attr(n, "datetime")
			case attr(n, "id") == "member-count":
				c, err := strconv.Atoi(text(n))
				if err != nil && walkErr == nil {
					walkErr = fmt.Errorf("ringviewtest: #member-count %q: %w", text(n), err)
				}
				p.MemberCount = c
			case n.Data == "tr" && hasClass(n, "member"):
				row, err := parseRow(n)
				if err != nil && walkErr == nil {
					walkErr = err
				}
				p.Rows = append(p.Rows, row)
				return
			}
		}
		for c := n.FirstChild; c != nil; c = c.NextSibling {
			walk(c)
		}
	}
	walk(doc)
	return p, walkErr
}

// required lists the cell classes every member row has.
var required = []string{"id", "state", "ring-state", "grpc-addr", "raft-addr", "http-addr", "zone",
	"tokens", "ownership", "heartbeat-age", "registered", "handover"}

func parseRow(tr *html.Node) (Row, error) {
	row := Row{ID: attr(tr, "data-id"), Unhealthy: hasClass(tr, "unhealthy"), Cells: map[string]string{}}
	values := map[string]string{}
	for td := tr.FirstChild; td != nil; td = td.NextSibling {
		if td.Type != html.ElementNode || td.Data != "td" {
			continue
		}
		class := attr(td, "class")
		row.Cells[class] = text(td)
		values[class] = attr(td, "data-value")
		if class == "handover" {
			row.HandoverPeer = attr(td, "data-peer")
		}
	}
	for _, c := range required {
		if _, ok := row.Cells[c]; !ok {
			return row, fmt.Errorf("ringviewtest: row %q has no td.%s", row.ID, c)
		}
	}
	row.State, row.RingState = row.Cells["state"], row.Cells["ring-state"]
	row.GRPCAddr, row.RaftAddr, row.HTTPAddr = row.Cells["grpc-addr"], row.Cells["raft-addr"], row.Cells["http-addr"]
	row.Zone, row.Registered, row.Handover = row.Cells["zone"], row.Cells["registered"], row.Cells["handover"]
	row.OwnershipPct = row.Cells["ownership"]
	var err error
	if row.NumTokens, err = strconv.Atoi(values["tokens"]); err != nil {
		return row, fmt.Errorf("ringviewtest: row %q: tokens data-value %q: %w", row.ID, values["tokens"], err)
	}
	if row.Ownership, err = strconv.ParseFloat(values["ownership"], 64); err != nil {
		return row, fmt.Errorf("ringviewtest: row %q: ownership data-value %q: %w", row.ID, values["ownership"], err)
	}
	if row.HeartbeatAge, err = strconv.ParseFloat(values["heartbeat-age"], 64); err != nil {
		return row, fmt.Errorf("ringviewtest: row %q: heartbeat-age data-value %q: %w", row.ID, values["heartbeat-age"], err)
	}
	return row, nil
}

func attr(n *html.Node, key string) string {
	for _, a := range n.Attr {
		if a.Key == key {
			return a.Val
		}
	}
	return ""
}

func hasClass(n *html.Node, class string) bool {
	for _, c := range strings.Fields(attr(n, "class")) {
		if c == class {
			return true
		}
	}
	return false
}

// text returns the node's text content with whitespace runs collapsed, as a reader sees it.
func text(n *html.Node) string {
	var b strings.Builder
	var walk func(*html.Node)
	walk = func(n *html.Node) {
		if n.Type == html.TextNode {
			b.WriteString(n.Data)
		}
		for c := n.FirstChild; c != nil; c = c.NextSibling {
			walk(c)
		}
	}
	walk(n)
	return strings.Join(strings.Fields(b.String()), " ")
}
