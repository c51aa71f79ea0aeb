package lifecycle

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/raftingest/raftingest/ringstate"
)

// writeTokensFile replaces the file at path with ts, atomically: the tokens are written to a temporary
// file in the same directory, synced, and renamed over path, so a crash leaves either the old file or
// the new one, never a torn one that Validate would refuse at the next start.
func writeTokensFile(path string, ts ringstate.Tokens) (err error) {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("lifecycle: write -ring.tokens-file-path %s: %w", path, err)
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			os.Remove(tmp)
		}
	}()
	if _, err = f.Write(ringstate.FormatTokensFile(ts)); err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(tmp, 0o644)
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		return fmt.Errorf("lifecycle: write -ring.tokens-file-path %s: %w", path, err)
	}
	// Make the rename itself durable. Best effort: some filesystems refuse to sync a directory.
	if d, derr := os.Open(dir); derr == nil {
		d.Sync()
		d.Close()
	}
	return nil
}
