package ringviewtest

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"testing"
)

// fakeTB records what SkipWithoutBrowser decided.
type fakeTB struct{ skipped, failed string }

func (f *fakeTB) Helper()                           {}
func (f *fakeTB) Skipf(format string, args ...any)  { f.skipped = fmt.Sprintf(format, args...) }
func (f *fakeTB) Fatalf(format string, args ...any) { f.failed = fmt.Sprintf(format, args...) }

// Without a browser the test skips with a clear message, unless RAFTINGEST_REQUIRE_BROWSER makes
// the absence a failure.
func TestSkipWithoutBrowser_SkipsOrFailsOnRequire(t *testing.T) {
	saved := ChromiumPath
	t.Cleanup(func() { ChromiumPath = saved })
	ChromiumPath = filepath.Join(t.TempDir(), "no-chromium-here")

	t.Setenv(RequireBrowserEnv, "")
	var tb fakeTB
	SkipWithoutBrowser(&tb)
	if tb.skipped == "" || tb.failed != "" {
		t.Errorf("without the env var: skipped %q, failed %q", tb.skipped, tb.failed)
	}

	t.Setenv(RequireBrowserEnv, "1")
	tb = fakeTB{}
	SkipWithoutBrowser(&tb)
	if tb.failed == "" || tb.skipped != "" {
		t.Errorf("with %s=1: skipped %q, failed %q", RequireBrowserEnv, tb.skipped, tb.failed)
	}

	if _, err := DumpDOM(context.Background(), "http://127.0.0.1:1/"); !errors.Is(err, ErrNoBrowser) {
		t.Errorf("DumpDOM without a browser: %v", err)
	}
}

func TestParsePage_RefusesRowWithoutPromisedCell(t *testing.T) {
	dom := `<html><body><table><tr class="member" data-id="a"><td class="id">a</td></tr></table></body></html>`
	if _, err := ParseRows(dom); err == nil {
		t.Fatal("a row without its cells parsed without error")
	}
}
