package proc

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/raftingest/raftingest/storage"
)

// bucketBlocks counts, over the bucket directories dirs (Cluster.BucketDirs), the complete blocks
// (with meta.json) and those a compaction wrote (compaction level above 1: a merge of the replicas'
// or of smaller ranges' blocks), so that a scenario run with the compactor can show it compacted.
func bucketBlocks(dirs []string) (blocks, merged int, err error) {
	for _, dir := range dirs {
		metas, gerr := filepath.Glob(filepath.Join(dir, "*", "*", storage.MetaFilename))
		if gerr != nil {
			return blocks, merged, gerr
		}
		for _, p := range metas {
			b, rerr := os.ReadFile(p)
			if errors.Is(rerr, os.ErrNotExist) {
				continue // deleted between the glob and the read: a compaction's source going
			}
			if rerr != nil {
				return blocks, merged, rerr
			}
			m, perr := storage.ReadMeta(b)
			if perr != nil {
				return blocks, merged, fmt.Errorf("%s: %w", p, perr)
			}
			blocks++
			if m.Compaction.Level > 1 {
				merged++
			}
		}
	}
	return blocks, merged, nil
}
